//! The other cluster nodes' state as this shard keeps it: which nodes are alive, their presence
//! members in the rosters of the channels homed here, their occupied channels; and the member
//! events their changes cause for this node's sockets. Everything arrives already in shard terms
//! (see [`super::cluster_side`]).

use super::msg::RemoteMember;
use super::Shard;
use crate::channels::presence::MemberEvent;
use crate::protocol::outbound;
use crate::webhooks::WebhookEvent;
use crate::ws::frame::shared_text_frame;
use std::sync::Arc;

impl Shard {
    pub(super) fn set_live_nodes(&self, nodes: Vec<Arc<str>>) {
        *self.cluster.remote_nodes.borrow_mut() = nodes;
    }

    /// At each shard: `node` is gone; its members leave and its channels are vacated.
    pub(super) fn forget_node(&self, node: &str) {
        let events = self.presence.borrow_mut().drop_node(node);
        let vacated = self.webhooks.occupancy.borrow_mut().drop_node(node);
        self.drop_node_subscription_counts(node, self.is_cluster_leader());
        if self.is_cluster_leader() {
            self.emit_removals(&events);
            for (app, channel) in vacated {
                let channel = channel.into();
                self.emit_webhook(app, WebhookEvent::ChannelVacated { channel });
            }
        }
        self.announce_member_events(events);
        self.forget_node_users(node);
    }

    /// Whether this node sends the webhooks no live node caused (a dead node's members leaving):
    /// the live node with the smallest id does.
    fn is_cluster_leader(&self) -> bool {
        let Some(link) = self.link() else {
            return true;
        };
        self.cluster
            .remote_nodes
            .borrow()
            .iter()
            .all(|n| **n > *link.node_id)
    }

    fn emit_removals(&self, events: &[MemberEvent]) {
        for event in events {
            if let MemberEvent::Removed {
                app,
                channel,
                user_id_json,
            } = event
            {
                let user_id = serde_json::from_str::<serde_json::Value>(user_id_json)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_default();
                let channel = channel.to_string();
                self.emit_webhook(*app, WebhookEvent::MemberRemoved { channel, user_id });
            }
        }
    }

    /// Sends member events caused by other nodes to this node's sockets, through every shard's
    /// fan-out queue (this one's included).
    fn announce_member_events(&self, events: Vec<MemberEvent>) {
        for event in events {
            let (app, channel, text) = match event {
                MemberEvent::Added {
                    app,
                    channel,
                    user_id_json,
                    user_info_json,
                } => {
                    let text =
                        outbound::member_added(&channel, &user_id_json, user_info_json.as_deref());
                    (app, channel, text)
                }
                MemberEvent::Removed {
                    app,
                    channel,
                    user_id_json,
                } => (
                    app,
                    channel.clone(),
                    outbound::member_removed(&channel, &user_id_json),
                ),
            };
            self.publish_frame(app, Arc::from(&*channel), shared_text_frame(&text), None);
        }
    }

    /// At a channel's home shard: another node's user joined or left.
    pub(super) fn apply_remote_presence(
        &self,
        node: &Arc<str>,
        member: &RemoteMember,
        joined: bool,
    ) {
        let mut presence = self.presence.borrow_mut();
        let event = if joined {
            presence.remote_join(
                member.app,
                &member.channel,
                node,
                &member.user_id,
                &member.user_id_json,
                member.user_info.as_deref(),
            )
        } else {
            presence.remote_leave(member.app, &member.channel, node, &member.user_id)
        };
        drop(presence);
        self.announce_member_events(event.into_iter().collect());
    }

    /// At each shard: `node`'s members and occupied channels homed here replace what was known
    /// of it, with member events only for real changes.
    pub(super) fn replace_node_state(
        &self,
        node: &Arc<str>,
        members: &[RemoteMember],
        occupied: &[(u32, Box<str>)],
    ) {
        self.webhooks
            .occupancy
            .borrow_mut()
            .replace_node(node, occupied);
        let known = self.presence.borrow().node_members(node);
        let mut events = Vec::new();
        let mut presence = self.presence.borrow_mut();
        for (app, channel, user_id) in known {
            let still = members
                .iter()
                .any(|m| m.app == app && *m.channel == *channel && m.user_id == user_id);
            if !still {
                events.extend(presence.remote_leave(app, &channel, node, &user_id));
            }
        }
        for m in members {
            events.extend(presence.remote_join(
                m.app,
                &m.channel,
                node,
                &m.user_id,
                &m.user_id_json,
                m.user_info.as_deref(),
            ));
        }
        drop(presence);
        self.announce_member_events(events);
    }
}
