//! What a shard does for the cluster: forwarding its publishes and presence changes to the other
//! nodes, applying theirs, and asking them for counts. Compiled in always; without a cluster
//! link every function here is a no-op or answers for this node alone.

use super::query::{Answer, Query};
use super::{Shard, ShardMsg};
use crate::app::App;
use crate::channels::home_shard;
use crate::channels::presence::MemberEvent;
use crate::cluster::envelope::{Body, PresenceEntry, RemoteCount, RemoteQuery, WireData};
use crate::protocol::outbound::{self, EventData};
use crate::protocol::SocketId;
use crate::ws::frame::shared_text_frame;
use ahash::AHashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The part of a node's snapshot one shard keeps: presence members and occupied channels.
type NodeStatePart = (Vec<PresenceEntry>, Vec<(u32, Box<str>)>);

/// Cross-node questions this shard waits on.
#[derive(Default)]
pub(super) struct PendingRemote {
    next_id: u64,
    waiting: AHashMap<u64, RemoteWaiting>,
}

struct RemoteWaiting {
    remaining: usize,
    counts: Vec<RemoteCount>,
    waker: Option<Waker>,
}

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
    /// Publishes an event to `channels` on every shard of this node and, when clustered, on
    /// every other node: one frame per channel here, one envelope for the cluster.
    pub async fn publish_event(
        &self,
        app: &App,
        channels: &[&str],
        event: &str,
        data: EventData<'_>,
        user_id: Option<&str>,
        except: Option<SocketId>,
    ) {
        for channel in channels {
            let text = outbound::channel_event(event, channel, data, user_id);
            self.publish_frame(
                app.index,
                Arc::from(*channel),
                shared_text_frame(&text),
                except,
            )
            .await;
        }
        if let Some(link) = &self.cluster {
            link.publish(Body::Publish {
                app: app.id().to_string(),
                channels: channels.iter().map(|c| c.to_string()).collect(),
                event: event.to_string(),
                data: data.into(),
                user_id: user_id.map(str::to_string),
                except: except.map(|s| s.to_string()),
            });
        }
    }

    /// Tells the other nodes that this node's first socket of a user joined (or its last left)
    /// a presence channel.
    pub(super) fn share_presence_change(
        &self,
        app: u32,
        channel: &str,
        user_id: &str,
        user_id_json: &str,
        user_info_json: Option<&str>,
        joined: bool,
    ) {
        let Some(link) = &self.cluster else { return };
        let entry = PresenceEntry {
            app: self.apps().by_index(app).id().to_string(),
            channel: channel.to_string(),
            user_id: user_id.to_string(),
            user_id_json: user_id_json.to_string(),
            user_info: user_info_json.map(str::to_string),
        };
        link.publish(if joined {
            Body::PresenceJoin(entry)
        } else {
            Body::PresenceLeave(entry)
        });
    }

    /// Publishes this node's presence members (and, with `ask`, asks every node for theirs).
    pub async fn announce(&self, ask: bool) {
        let Some(link) = &self.cluster else { return };
        let (mut presence, mut occupied) = (Vec::new(), Vec::new());
        for answer in self.gather(Query::LocalState).await {
            if let Answer::LocalState {
                presence: p,
                occupied: o,
            } = answer
            {
                presence.extend(p);
                occupied.extend(o);
            }
        }
        link.publish(Body::Snapshot { presence, occupied });
        if ask {
            link.publish(Body::Hello);
        }
    }

    /// A node is gone: every shard forgets its presence members.
    pub fn node_gone(&self, node: Arc<str>) {
        self.to_every_shard(|| ShardMsg::NodeGone { node: node.clone() });
    }

    /// Tells every shard which other nodes are alive (for cross-node queries).
    pub fn share_live_nodes(&self, nodes: Vec<Arc<str>>) {
        self.to_every_shard(|| ShardMsg::Nodes {
            nodes: nodes.clone(),
        });
    }

    fn to_every_shard(&self, message: impl Fn() -> ShardMsg) {
        if let Some(mesh) = self.mesh.get() {
            for peer in mesh.peers() {
                mesh.send(peer, message());
            }
        }
        // This shard's own copy is applied at once (it needs no await).
        self.apply_node_message(message());
    }

    /// Applies `NodeGone` and `Nodes` (the only messages `to_every_shard` sends).
    pub(super) fn apply_node_message(&self, message: ShardMsg) {
        match message {
            ShardMsg::NodeGone { node } => {
                let events = self.presence.borrow_mut().drop_node(&node);
                let vacated = self.occupancy.borrow_mut().drop_node(&node);
                if self.is_cluster_leader() {
                    self.emit_removals(&events);
                    for (app, channel) in vacated {
                        let channel = channel.into();
                        self.emit_webhook(
                            app,
                            crate::webhooks::WebhookEvent::ChannelVacated { channel },
                        );
                    }
                }
                self.announce_member_events(events);
            }
            ShardMsg::Nodes { nodes } => *self.remote_nodes.borrow_mut() = nodes,
            _ => {}
        }
    }

    /// Whether this node sends the webhooks no live node caused (a dead node's members leaving):
    /// the live node with the smallest id does.
    fn is_cluster_leader(&self) -> bool {
        let Some(link) = &self.cluster else {
            return true;
        };
        self.remote_nodes
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
                self.emit_webhook(
                    *app,
                    crate::webhooks::WebhookEvent::MemberRemoved {
                        channel: channel.to_string(),
                        user_id,
                    },
                );
            }
        }
    }

    /// Sends member events caused by other nodes to this node's sockets. They are queued as
    /// deliveries to every shard (this one included, through its own mesh handling).
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
                } => {
                    let text = outbound::member_removed(&channel, &user_id_json);
                    (app, channel, text)
                }
            };
            let frame = shared_text_frame(&text);
            let channel: Arc<str> = Arc::from(&*channel);
            self.deliver_on_peers(app, &channel, &frame, None, std::time::Instant::now());
            self.deliver_now(app, &channel, &frame);
        }
    }

    /// At a channel's home shard: another node's user joined or left.
    pub(super) fn apply_remote_presence(
        &self,
        node: &Arc<str>,
        entry: &PresenceEntry,
        joined: bool,
    ) {
        let Some(app) = self.apps().by_id(&entry.app).cloned() else {
            return;
        };
        let event = if joined {
            self.presence.borrow_mut().remote_join(
                app.index,
                &entry.channel,
                node,
                &entry.user_id,
                &entry.user_id_json,
                entry.user_info.as_deref(),
            )
        } else {
            self.presence
                .borrow_mut()
                .remote_leave(app.index, &entry.channel, node, &entry.user_id)
        };
        self.announce_member_events(event.into_iter().collect());
    }

    /// At each shard: `node`'s members and occupied channels homed here replace what was known
    /// of it, with member events only for real changes.
    pub(super) fn replace_node_state(
        &self,
        node: &Arc<str>,
        entries: &[PresenceEntry],
        occupied: &[(u32, Box<str>)],
    ) {
        self.occupancy.borrow_mut().replace_node(node, occupied);
        let known = self.presence.borrow().node_members(node);
        let fresh: Vec<(u32, &PresenceEntry)> = entries
            .iter()
            .filter_map(|e| self.apps().by_id(&e.app).map(|a| (a.index, e)))
            .collect();
        let mut events = Vec::new();
        for (app, channel, user_id) in known {
            let still = fresh
                .iter()
                .any(|(a, e)| *a == app && *e.channel == *channel && e.user_id == user_id);
            if !still {
                events.extend(
                    self.presence
                        .borrow_mut()
                        .remote_leave(app, &channel, node, &user_id),
                );
            }
        }
        for (app, entry) in fresh {
            events.extend(self.presence.borrow_mut().remote_join(
                app,
                &entry.channel,
                node,
                &entry.user_id,
                &entry.user_id_json,
                entry.user_info.as_deref(),
            ));
        }
        self.announce_member_events(events);
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
                let Some(app) = self.apps().by_id(&app).cloned() else {
                    return;
                };
                let except = except.as_deref().and_then(SocketId::parse);
                for channel in &channels {
                    let text = outbound::channel_event(
                        &event,
                        channel,
                        event_data(&data),
                        user_id.as_deref(),
                    );
                    self.publish_frame(
                        app.index,
                        Arc::from(channel.as_str()),
                        shared_text_frame(&text),
                        except,
                    )
                    .await;
                }
            }
            Body::PresenceJoin(entry) => self.route_remote_presence(node, entry, true),
            Body::PresenceLeave(entry) => self.route_remote_presence(node, entry, false),
            Body::Snapshot { presence, occupied } => self.route_snapshot(node, presence, occupied),
            Body::Occupancy {
                app,
                channel,
                occupied,
            } => {
                let Some(app) = self.apps().by_id(&app).map(|a| a.index) else {
                    return;
                };
                let here = |home: &Self| {
                    let mut occupancy = home.occupancy.borrow_mut();
                    occupancy.remote_changed(app, &channel, &node, occupied);
                };
                let there = |channel| ShardMsg::RemoteOccupancy {
                    node: node.clone(),
                    app,
                    channel,
                    occupied,
                };
                self.at_home(app, &channel, here, there);
            }
            Body::Hello => self.announce(false).await,
            Body::Query { id, shard, query } => {
                self.answer_remote_query(&node, id, shard, query).await
            }
            Body::Answer {
                to,
                shard,
                id,
                counts,
            } => {
                let mine = self.cluster.as_ref().is_some_and(|l| l.node_id == to);
                if mine {
                    if shard == self.id {
                        self.record_remote_answer(id, counts);
                    } else {
                        self.send_to(shard, ShardMsg::RemoteAnswer { id, counts });
                    }
                }
            }
            Body::Terminate { app, user_id } => {
                let app = self.apps().by_id(&app).map(|a| a.index);
                if let Some(app) = app {
                    self.gather(Query::TerminateUser { app, user_id }).await;
                }
            }
            Body::Heartbeat | Body::Goodbye => {}
        }
    }

    fn route_remote_presence(&self, node: Arc<str>, entry: PresenceEntry, joined: bool) {
        let Some(app) = self.apps().by_id(&entry.app).map(|a| a.index) else {
            return;
        };
        let channel = entry.channel.clone();
        let here = |home: &Self| home.apply_remote_presence(&node, &entry, joined);
        let there = |_| ShardMsg::RemotePresence {
            node: node.clone(),
            entry: entry.clone(),
            joined,
        };
        self.at_home(app, &channel, here, there);
    }

    fn route_snapshot(
        &self,
        node: Arc<str>,
        presence: Vec<PresenceEntry>,
        occupied: Vec<(String, String)>,
    ) {
        let mut parts: Vec<NodeStatePart> = (0..self.shards).map(|_| Default::default()).collect();
        for entry in presence {
            if let Some(app) = self.apps().by_id(&entry.app) {
                parts[home_shard(app.index, &entry.channel, self.shards)]
                    .0
                    .push(entry);
            }
        }
        for (app, channel) in occupied {
            if let Some(app) = self.apps().by_id(&app) {
                parts[home_shard(app.index, &channel, self.shards)]
                    .1
                    .push((app.index, channel.into()));
            }
        }
        for (shard, (presence, occupied)) in parts.into_iter().enumerate() {
            if shard == self.id {
                self.replace_node_state(&node, &presence, &occupied);
            } else {
                self.send_to(
                    shard,
                    ShardMsg::NodeState {
                        node: node.clone(),
                        presence,
                        occupied,
                    },
                );
            }
        }
    }

    /// Tells the other nodes that this node's first subscriber of a channel came (or its last
    /// left).
    pub(super) fn share_occupancy_change(&self, app: u32, channel: &str, occupied: bool) {
        if let Some(link) = &self.cluster {
            let app = self.apps().by_index(app).id().to_string();
            link.publish(Body::Occupancy {
                app,
                channel: channel.to_string(),
                occupied,
            });
        }
    }

    async fn answer_remote_query(&self, node: &str, id: u64, shard: usize, query: RemoteQuery) {
        let (Some(link), Some(local)) = (&self.cluster, self.local_query(&query)) else {
            return;
        };
        let counts = super::query::merge_counts(self.gather(local).await)
            .into_iter()
            .filter(|(_, c)| c.subscriptions > 0)
            .map(|(channel, c)| RemoteCount {
                channel: channel.to_string(),
                subscriptions: c.subscriptions,
            })
            .collect();
        link.publish(Body::Answer {
            to: node.to_string(),
            shard,
            id,
            counts,
        });
    }

    fn local_query(&self, query: &RemoteQuery) -> Option<Query> {
        Some(match query {
            RemoteQuery::ChannelCounts { app, channels } => Query::ChannelCounts {
                app: self.apps().by_id(app)?.index,
                channels: channels.iter().map(|c| Arc::from(c.as_str())).collect(),
            },
            RemoteQuery::ListChannels { app, prefix } => Query::ListChannels {
                app: self.apps().by_id(app)?.index,
                prefix: prefix.clone(),
            },
        })
    }

    /// Asks every other live node and returns their subscription counts (what arrived within
    /// the cluster's query timeout). Empty without a cluster.
    pub async fn gather_remote(&self, query: RemoteQuery) -> Vec<RemoteCount> {
        let Some(link) = &self.cluster else {
            return Vec::new();
        };
        let nodes = self.remote_nodes.borrow().len();
        if nodes == 0 {
            return Vec::new();
        }
        let id = {
            let mut pending = self.remote_queries.borrow_mut();
            pending.next_id += 1;
            let id = pending.next_id;
            pending.waiting.insert(
                id,
                RemoteWaiting {
                    remaining: nodes,
                    counts: Vec::new(),
                    waker: None,
                },
            );
            id
        };
        link.publish(Body::Query {
            id,
            shard: self.id,
            query,
        });
        let limit = Duration::from_millis(
            self.config
                .cluster
                .as_ref()
                .map_or(1000, |c| c.query_timeout_ms),
        );
        let answered = poll_fn(|cx| {
            let mut pending = self.remote_queries.borrow_mut();
            let waiting = pending.waiting.get_mut(&id).expect("present until taken");
            if waiting.remaining == 0 {
                Poll::Ready(())
            } else {
                waiting.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let timer = glommio::timer::sleep(limit);
        futures_lite::future::or(answered, timer).await;
        let done = self.remote_queries.borrow_mut().waiting.remove(&id);
        done.map_or_else(Vec::new, |d| d.counts)
    }

    pub(super) fn record_remote_answer(&self, id: u64, counts: Vec<RemoteCount>) {
        let mut pending = self.remote_queries.borrow_mut();
        if let Some(waiting) = pending.waiting.get_mut(&id) {
            waiting.counts.extend(counts);
            waiting.remaining = waiting.remaining.saturating_sub(1);
            if waiting.remaining == 0 {
                if let Some(waker) = waiting.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Closes `user_id`'s connections on every node.
    pub async fn terminate_everywhere(&self, app: &App, user_id: &str) -> usize {
        if let Some(link) = &self.cluster {
            link.publish(Body::Terminate {
                app: app.id().to_string(),
                user_id: user_id.to_string(),
            });
        }
        self.gather(Query::TerminateUser {
            app: app.index,
            user_id: user_id.to_string(),
        })
        .await
        .iter()
        .map(|a| match a {
            Answer::Terminated(n) => *n,
            _ => 0,
        })
        .sum()
    }

    /// The process-wide figures `/metrics` reports beside the shards' counters.
    pub fn process_facts(&self) -> crate::metrics::ProcessFacts {
        use std::sync::atomic::Ordering::Relaxed;
        crate::metrics::ProcessFacts {
            app_ids: self.apps().iter().map(|a| a.id().to_string()).collect(),
            cluster: self.cluster.as_ref().map(|link| {
                let s = &link.stats;
                (
                    link.connected.load(Relaxed),
                    s.published.load(Relaxed),
                    s.received.load(Relaxed),
                    s.dropped.load(Relaxed),
                    s.reconnects.load(Relaxed),
                )
            }),
            webhooks: self.webhooks.as_ref().map(|w| {
                let s = &w.stats;
                (
                    s.pending.load(Relaxed),
                    s.delivered.load(Relaxed),
                    s.failed_attempts.load(Relaxed),
                    s.dead_lettered.load(Relaxed),
                    s.spool_full.load(Relaxed),
                )
            }),
        }
    }

    /// Whether the cluster link is up (always true without a cluster).
    pub fn cluster_linked(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|l| l.connected.load(std::sync::atomic::Ordering::Acquire))
    }
}
