//! What a shard does for the cluster: forwarding its publishes and presence changes to the other
//! nodes, and taking in what they send. This file and [`super::cluster_queries`] are the only ones
//! of the shard that know the cluster's wire types ([`crate::cluster::envelope`]): what they hand
//! the rest of the shard is in shard terms ([`RemoteMember`], app indices; the replicas are kept
//! by [`super::remote_state`]). Without a cluster link every function here is a no-op.

use super::msg::{RemoteMember, ShardMsg};
use super::Shard;
use crate::app::App;
use crate::channels::home_shard;
use crate::cluster::envelope::{Body, PresenceEntry, WireData};
use crate::cluster::link::Link;
use crate::protocol::inbound::PresenceMember;
use crate::protocol::outbound::EventData;
use crate::protocol::SocketId;
use std::cell::RefCell;
use std::sync::Arc;

/// A shard's view of the cluster: the link, and which other nodes are alive.
pub(super) struct ClusterSide {
    link: Option<Arc<Link>>,
    pub(super) remote_nodes: RefCell<Vec<Arc<str>>>,
}

impl ClusterSide {
    pub(super) fn new(link: Option<Arc<Link>>) -> Self {
        ClusterSide {
            link,
            remote_nodes: RefCell::new(Vec::new()),
        }
    }
}

/// The part of a node's snapshot one shard keeps: presence members and occupied channels.
type NodeStatePart = (Vec<RemoteMember>, Vec<(u32, Box<str>)>);

/// What one shard contributes to this node's snapshot.
type LocalState = (Vec<PresenceEntry>, Vec<(String, String)>);

impl From<EventData<'_>> for WireData {
    fn from(data: EventData<'_>) -> Self {
        match data {
            EventData::Text(text) => WireData::Text(text.to_string()),
            EventData::JsonString(literal) => WireData::JsonString(literal.to_string()),
            EventData::Json(json) => WireData::Json(json.to_string()),
            EventData::Absent => WireData::Absent,
        }
    }
}

fn event_data(data: &WireData) -> EventData<'_> {
    match data {
        WireData::Text(text) => EventData::Text(text),
        WireData::JsonString(literal) => EventData::JsonString(literal),
        WireData::Json(json) => EventData::Json(json),
        WireData::Absent => EventData::Absent,
    }
}

impl Shard {
    pub(super) fn link(&self) -> Option<&Arc<Link>> {
        self.cluster.link.as_ref()
    }

    fn app_id(&self, app: u32) -> Option<String> {
        self.app(app).map(|a| a.id().to_string())
    }

    /// Hands a publish to the other nodes (one envelope for all channels).
    pub(super) fn share_publish(
        &self,
        app: &App,
        channels: &[&str],
        event: &str,
        data: EventData<'_>,
        user_id: Option<&str>,
        except: Option<SocketId>,
    ) {
        let Some(link) = self.link() else { return };
        link.publish(Body::Publish {
            app: app.id().to_string(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            event: event.to_string(),
            data: data.into(),
            user_id: user_id.map(str::to_string),
            except: except.map(|s| s.to_string()),
        });
    }

    /// Tells the other nodes that this node's first socket of a user joined (or its last left)
    /// a presence channel.
    pub(super) fn share_presence_change(
        &self,
        app: u32,
        channel: &str,
        member: &PresenceMember,
        joined: bool,
    ) {
        let (Some(link), Some(app)) = (self.link(), self.app_id(app)) else {
            return;
        };
        let entry = PresenceEntry {
            app,
            channel: channel.to_string(),
            user_id: member.user_id.clone(),
            user_id_json: member.user_id_json.clone(),
            user_info: member.user_info_json.clone(),
        };
        link.publish(if joined {
            Body::PresenceJoin(entry)
        } else {
            Body::PresenceLeave(entry)
        });
    }

    /// Tells the other nodes that this node's first subscriber of a channel came (or its last
    /// left).
    pub(super) fn share_occupancy_change(&self, app: u32, channel: &str, occupied: bool) {
        let (Some(link), Some(app)) = (self.link(), self.app_id(app)) else {
            return;
        };
        link.publish(Body::Occupancy {
            app,
            channel: channel.to_string(),
            occupied,
        });
    }

    /// Tells the other nodes to close `user_id`'s connections.
    pub(super) fn share_terminate(&self, app: &App, user_id: &str) {
        if let Some(link) = self.link() {
            link.publish(Body::Terminate {
                app: app.id().to_string(),
                user_id: user_id.to_string(),
            });
        }
    }

    /// Publishes this node's presence members and occupied channels (and, with `ask`, asks every
    /// node for theirs). Sent only when every shard answered: a partial snapshot would make the
    /// others drop members that are still here.
    pub async fn announce(&self, ask: bool) {
        let Some(link) = self.link().cloned() else {
            return;
        };
        let gathered = self.gather(|shard| shard.local_state()).await;
        match gathered.complete() {
            Ok(parts) => {
                let (presence, occupied) =
                    parts
                        .into_iter()
                        .fold((Vec::new(), Vec::new()), |(mut p, mut o), (sp, so)| {
                            p.extend(sp);
                            o.extend(so);
                            (p, o)
                        });
                link.publish(Body::Snapshot { presence, occupied });
                self.announce_users(&link).await;
            }
            Err(missing) => {
                tracing::warn!(
                    missing,
                    "snapshot not sent: some shards did not answer in time"
                )
            }
        }
        // Subscription counts are not in the snapshot: each home shard shares its own.
        let _ = self
            .gather(|shard| shard.share_all_subscription_counts())
            .await;
        if ask {
            link.publish(Body::Hello);
        }
    }

    fn local_state(&self) -> LocalState {
        let apps = self.apps();
        let app_id = |index: u32| apps.get(index).map(|a| a.id().to_string());
        let presence = self
            .presence
            .borrow()
            .local_entries()
            .into_iter()
            .filter_map(|(app, channel, user_id, user_id_json, user_info)| {
                Some(PresenceEntry {
                    app: app_id(app)?,
                    channel: channel.into(),
                    user_id,
                    user_id_json,
                    user_info,
                })
            })
            .collect();
        let occupied = self
            .webhooks
            .occupancy
            .borrow()
            .local_channels()
            .into_iter()
            .filter_map(|(app, channel)| Some((app_id(app)?, channel.into())))
            .collect();
        (presence, occupied)
    }

    /// A node is gone: every shard forgets its presence members.
    pub fn node_gone(&self, node: Arc<str>) {
        self.to_every_shard(|| ShardMsg::NodeGone { node: node.clone() });
        self.forget_node(&node);
    }

    /// Tells every shard which other nodes are alive (for cross-node queries).
    pub fn share_live_nodes(&self, nodes: Vec<Arc<str>>) {
        self.to_every_shard(|| ShardMsg::Nodes {
            nodes: nodes.clone(),
        });
        self.set_live_nodes(nodes);
    }

    fn to_every_shard(&self, message: impl Fn() -> ShardMsg) {
        for peer in self.peers().collect::<Vec<_>>() {
            self.send_to(peer, message());
        }
    }

    /// Translates a wire presence entry into this node's terms (`None` for an unknown app).
    fn remote_member(&self, entry: PresenceEntry) -> Option<RemoteMember> {
        let app = self.apps().by_id(&entry.app)?.index;
        Some(RemoteMember {
            app,
            channel: entry.channel.into(),
            user_id: entry.user_id,
            user_id_json: entry.user_id_json,
            user_info: entry.user_info,
        })
    }

    /// Handles one envelope from another node (on shard 0).
    pub async fn handle_envelope(&self, node: Arc<str>, body: Body) {
        match body {
            Body::Publish {
                app,
                channels,
                event,
                data,
                user_id,
                except,
            } => {
                let Some(app) = self.apps().by_id(&app).map(|a| a.index) else {
                    return;
                };
                let except = except.as_deref().and_then(SocketId::parse);
                let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
                let data = event_data(&data);
                self.publish_here(app, &channels, &event, data, user_id.as_deref(), except);
            }
            Body::PresenceJoin(entry) => self.route_remote_presence(node, entry, true),
            Body::PresenceLeave(entry) => self.route_remote_presence(node, entry, false),
            Body::Snapshot { presence, occupied } => self.route_snapshot(node, presence, occupied),
            Body::Occupancy {
                app,
                channel,
                occupied,
            } => self.route_remote_occupancy(node, &app, &channel, occupied),
            Body::Hello => self.announce(false).await,
            Body::Query { id, shard, query } => {
                self.answer_remote_query(&node, id, shard, query).await
            }
            Body::Answer {
                to,
                shard,
                id,
                counts,
            } => self.route_remote_answer(&to, shard, id, counts),
            Body::Terminate { app, user_id } => {
                let app = self.apps().by_id(&app).map(|a| a.index);
                if let Some(app) = app {
                    self.terminate_on_every_shard(app, &user_id).await;
                }
            }
            Body::Heartbeat | Body::Goodbye | Body::Link(_) => {}
            Body::SubscriptionCount {
                app,
                channel,
                subscriptions,
            } => self.route_remote_subscription_count(node, &app, &channel, subscriptions),
            Body::UserOnline(entry) => self.route_remote_user(node, entry, true),
            Body::UserOffline(entry) => self.route_remote_user(node, entry, false),
            Body::UserSnapshot { users } => self.route_user_snapshot(node, users),
        }
    }

    fn route_remote_presence(&self, node: Arc<str>, entry: PresenceEntry, joined: bool) {
        let Some(member) = self.remote_member(entry) else {
            return;
        };
        let (app, channel) = (member.app, member.channel.clone());
        let here = |home: &Self| home.apply_remote_presence(&node, &member, joined);
        let there = |_| ShardMsg::RemotePresence {
            node: node.clone(),
            member: member.clone(),
            joined,
        };
        self.at_home(app, &channel, here, there);
    }

    fn route_remote_occupancy(&self, node: Arc<str>, app: &str, channel: &str, occupied: bool) {
        let Some(app) = self.apps().by_id(app).map(|a| a.index) else {
            return;
        };
        let here = |home: &Self| home.remote_occupancy_changed(&node, app, channel, occupied);
        let there = |channel| ShardMsg::RemoteOccupancy {
            node: node.clone(),
            app,
            channel,
            occupied,
        };
        self.at_home(app, channel, here, there);
    }

    fn route_remote_subscription_count(
        &self,
        node: Arc<str>,
        app: &str,
        channel: &str,
        subscriptions: usize,
    ) {
        let Some(app) = self.apps().by_id(app).map(|a| a.index) else {
            return;
        };
        let here = |home: &Self| home.remote_subscription_count(&node, app, channel, subscriptions);
        let there = |channel| ShardMsg::RemoteSubscriptionCount {
            node: node.clone(),
            app,
            channel,
            subscriptions,
        };
        self.at_home(app, channel, here, there);
    }

    /// Tells the other nodes that this node now has `subscriptions` of `channel`.
    pub(super) fn share_subscription_count(&self, app: u32, channel: &str, subscriptions: usize) {
        let (Some(link), Some(app)) = (self.link(), self.app_id(app)) else {
            return;
        };
        link.publish(Body::SubscriptionCount {
            app,
            channel: channel.to_string(),
            subscriptions,
        });
    }

    fn route_snapshot(
        &self,
        node: Arc<str>,
        presence: Vec<PresenceEntry>,
        occupied: Vec<(String, String)>,
    ) {
        let mut parts: Vec<NodeStatePart> = (0..self.shards).map(|_| Default::default()).collect();
        for member in presence.into_iter().filter_map(|e| self.remote_member(e)) {
            parts[home_shard(member.app, &member.channel, self.shards)]
                .0
                .push(member);
        }
        for (app, channel) in occupied {
            if let Some(app) = self.apps().by_id(&app).map(|a| a.index) {
                parts[home_shard(app, &channel, self.shards)]
                    .1
                    .push((app, channel.into()));
            }
        }
        for (shard, (presence, occupied)) in parts.into_iter().enumerate() {
            if shard == self.id {
                self.replace_node_state(&node, &presence, &occupied);
            } else {
                let node = node.clone();
                let message = ShardMsg::NodeState {
                    node,
                    presence,
                    occupied,
                };
                self.send_to(shard, message);
            }
        }
    }

    /// The process-wide figures `/metrics` reports beside the shards' counters.
    pub fn process_facts(&self) -> crate::metrics::ProcessFacts {
        crate::metrics::ProcessFacts {
            app_ids: self.apps().iter().map(|a| a.id().to_string()).collect(),
            cluster: self.link().map(|link| link.facts()),
            webhooks: self.webhooks.sink().map(|w| w.stats.facts()),
        }
    }

    /// Settles what a crashed earlier run of this node owes its webhook receivers, by the
    /// cluster rule (docs/architecture.md, Webhooks): called once `node_timeout` has passed
    /// since the node joined; discarded when another node is alive (it reported them), else
    /// replayed. Runs on the blocking pool: the webhook inlet may make it wait.
    pub async fn settle_owed_webhooks(&self, other_nodes_alive: bool) {
        if let Some(webhooks) = self.webhooks.sink().cloned() {
            glommio::executor()
                .spawn_blocking(move || webhooks.settle_owed(other_nodes_alive))
                .await;
        }
    }

    /// Whether the cluster link is up (always true without a cluster).
    pub fn cluster_linked(&self) -> bool {
        self.link()
            .is_none_or(|l| l.connected.load(std::sync::atomic::Ordering::Acquire))
    }
}
