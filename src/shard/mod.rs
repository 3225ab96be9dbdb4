//! The shard runtime: one glommio executor per core, each owning its connections, its channel
//! table and the presence rosters of the channels whose home it is. Shards share nothing mutable;
//! they talk through the [`mesh`] with [`ShardMsg`]s.
//!
//! A publish is encoded once into a [`SharedFrame`]; the publishing shard hands the same bytes to
//! every other shard and writes them to its own subscribers.

pub mod mesh;
pub mod query;
mod remote;
mod webhook_events;

use crate::app::{App, AppRegistry};
use crate::channels::home_shard;
use crate::channels::presence::{Joined, PresenceRosters};
use crate::channels::table::ChannelTable;
use crate::config::Config;
use crate::connection::{self, Connection};
use crate::protocol::inbound::PresenceMember;
use crate::protocol::outbound::{self, EventData};
use crate::protocol::{codes, SocketId};
use crate::webhooks::WebhookEvent;
use crate::ws::frame::{shared_text_frame, SharedFrame};
use ahash::AHashMap;
use glommio::net::TcpListener;
use mesh::{Mesh, MeshEnds};
use std::cell::{Cell, OnceCell, RefCell};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each shard refreshes its clock and checks for a stop request.
const TICK: Duration = Duration::from_millis(100);

/// Liveness sweeps run every this many ticks.
const TICKS_PER_SWEEP: u32 = 10;

/// Writes between two cooperative yields while fanning out to a large channel.
const WRITES_PER_YIELD: usize = 256;

/// Messages between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Write `frame` to the local subscribers of `channel`, except `except`.
    Deliver {
        /// App registry index.
        app: u32,
        /// Channel name.
        channel: Arc<str>,
        /// The encoded frame, shared by every shard.
        frame: SharedFrame,
        /// Socket that must not receive it (the sender of a client event).
        except: Option<SocketId>,
        /// When the publish was made (for the publish-to-write latency metric).
        published_at: Instant,
    },
    /// To the home shard: `socket` joins presence `channel` as `member`.
    PresenceJoin {
        /// App registry index.
        app: u32,
        /// Presence channel name.
        channel: Arc<str>,
        /// The member data from `channel_data`.
        member: PresenceMember,
        /// The joining socket (its shard gets the answer).
        socket: SocketId,
    },
    /// From the home shard: the outcome of `socket`'s join.
    PresenceJoined {
        /// App registry index.
        app: u32,
        /// Presence channel name.
        channel: Arc<str>,
        /// The socket that asked.
        socket: SocketId,
        /// Member (with the roster) or full.
        outcome: Joined,
    },
    /// A scatter-gather question from shard `from`, to be answered with [`ShardMsg::Answer`].
    Query {
        /// The asking shard.
        from: usize,
        /// The question's id at the asking shard.
        id: u64,
        /// The question.
        query: query::Query,
    },
    /// This shard's answer to question `id`.
    Answer {
        /// The question's id.
        id: u64,
        /// The answer.
        answer: query::Answer,
    },
    /// To a channel's home shard: another node's user joined or left it.
    RemotePresence {
        /// The other node.
        node: Arc<str>,
        /// The member.
        entry: crate::cluster::envelope::PresenceEntry,
        /// Joined (true) or left.
        joined: bool,
    },
    /// To every shard: `node`'s members and occupied channels homed there (replaces what was
    /// known).
    NodeState {
        /// The other node.
        node: Arc<str>,
        /// Its members.
        presence: Vec<crate::cluster::envelope::PresenceEntry>,
        /// Its occupied channels (app index, channel).
        occupied: Vec<(u32, Box<str>)>,
    },
    /// To a channel's home shard: another node's first subscriber came or its last left.
    RemoteOccupancy {
        /// The other node.
        node: Arc<str>,
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Arc<str>,
        /// Occupied (true) or vacated.
        occupied: bool,
    },
    /// To every shard: `node` is gone; drop its members.
    NodeGone {
        /// The node.
        node: Arc<str>,
    },
    /// To every shard: the other nodes now alive.
    Nodes {
        /// Their ids.
        nodes: Vec<Arc<str>>,
    },
    /// To the shard that asked: one node's answer to a cross-node query.
    RemoteAnswer {
        /// Question id.
        id: u64,
        /// That node's counts.
        counts: Vec<crate::cluster::envelope::RemoteCount>,
    },
    /// To the home shard: this node's `shard` got its first subscriber of `channel` (or lost its
    /// last), for occupancy webhooks.
    Occupancy {
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Arc<str>,
        /// Occupied (true) or vacated.
        occupied: bool,
    },
    /// To the home shard: `delta` subscriptions to `channel` on the sending shard, for the
    /// `subscription_count` webhook.
    SubscriptionDelta {
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Arc<str>,
        /// +1 or -1.
        delta: i64,
    },
    /// To the home shard: one socket of `user_id` left presence `channel`.
    PresenceLeave {
        /// App registry index.
        app: u32,
        /// Presence channel name.
        channel: Arc<str>,
        /// The member's user id.
        user_id: String,
        /// The socket that left (excluded from `member_removed`).
        socket: SocketId,
    },
}

/// State shared by the whole process, read by the shards: set once, or flags.
#[derive(Debug, Default)]
pub struct ProcessState {
    /// Set to ask every shard to stop gracefully.
    pub stop: Arc<AtomicBool>,
    /// Shards whose listener is accepting.
    pub listening: AtomicUsize,
    /// Total shards of this process.
    pub shards: AtomicUsize,
    /// The app registry of the latest configuration reload, picked up by every shard.
    pub reloaded_apps: std::sync::Mutex<Option<Arc<AppRegistry>>>,
    /// Bumped at every reload; a shard whose generation differs picks up `reloaded_apps`.
    pub apps_generation: std::sync::atomic::AtomicU64,
}

impl ProcessState {
    /// Whether every shard accepts connections.
    pub fn all_listening(&self) -> bool {
        let shards = self.shards.load(Ordering::Acquire);
        shards > 0 && self.listening.load(Ordering::Acquire) == shards
    }
}

/// Everything a shard thread needs to start.
pub struct ShardSetup {
    /// Index of this shard.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The apps, shared read-only.
    pub apps: Arc<AppRegistry>,
    /// Process-wide flags.
    pub process: Arc<ProcessState>,
    /// This shard's ends of the mesh.
    pub mesh: MeshEnds,
    /// This shard's listening socket (bound with `SO_REUSEPORT`).
    pub listener: OwnedFd,
    /// The Redis link, when clustered.
    pub cluster: Option<Arc<crate::cluster::link::Link>>,
    /// For shard 0 of a clustered node: what the Redis subscriber receives.
    pub cluster_inbound: Option<std::sync::mpsc::Receiver<crate::cluster::link::Inbound>>,
    /// Where webhook events go, when any app has webhooks.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// One shard's state. Lives in an `Rc` on its executor; never leaves its thread.
pub struct Shard {
    /// Index of this shard.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The apps, as of the last configuration reload this shard applied.
    apps: RefCell<Arc<AppRegistry>>,
    /// The reload generation `apps` reflects.
    apps_generation: Cell<u64>,
    /// Process-wide flags.
    pub process: Arc<ProcessState>,
    connections: RefCell<AHashMap<u64, Rc<Connection>>>,
    channels: RefCell<ChannelTable<Rc<Connection>>>,
    presence: RefCell<PresenceRosters>,
    mesh: OnceCell<Mesh>,
    queries: RefCell<query::PendingQueries>,
    cluster: Option<Arc<crate::cluster::link::Link>>,
    remote_nodes: RefCell<Vec<Arc<str>>>,
    remote_queries: RefCell<remote::PendingRemote>,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    occupancy: RefCell<crate::channels::occupancy::Occupancy>,
    subscription_counts: RefCell<crate::channels::subscription_count::SubscriptionCounts>,
    now: Cell<Instant>,
    next_counter: Cell<u64>,
}

/// Counts frames handed to sockets and, for publishes, how long after the publish.
fn record_delivery(app: u32, sent: usize, bytes: usize, published_at: Option<Instant>) {
    crate::metrics::with(|m| {
        m.messages_out(app, sent, bytes);
        if let Some(at) = published_at {
            m.publish_latency(at.elapsed().as_secs_f64());
        }
    });
}

/// Runs one shard until the process is asked to stop and its connections have closed.
pub async fn run(setup: ShardSetup) {
    let shard = Rc::new(Shard {
        id: setup.id,
        shards: setup.shards,
        channels: RefCell::new(ChannelTable::new(setup.apps.len())),
        config: setup.config,
        apps: RefCell::new(setup.apps),
        apps_generation: Cell::new(0),
        process: setup.process,
        connections: RefCell::new(AHashMap::new()),
        presence: RefCell::new(PresenceRosters::default()),
        mesh: OnceCell::new(),
        queries: RefCell::new(query::PendingQueries::default()),
        cluster: setup.cluster,
        remote_nodes: RefCell::new(Vec::new()),
        remote_queries: RefCell::new(remote::PendingRemote::default()),
        webhooks: setup.webhooks,
        occupancy: RefCell::new(Default::default()),
        subscription_counts: RefCell::new(Default::default()),
        now: Cell::new(Instant::now()),
        next_counter: Cell::new(1),
    });
    let weak = Rc::downgrade(&shard);
    let mesh = Mesh::start(setup.mesh, move |msg| {
        let shard = weak.upgrade();
        async move {
            if let Some(shard) = shard {
                shard.handle_message(msg).await;
            }
        }
    });
    let _ = shard.mesh.set(mesh);
    // SAFETY: the fd is a listening TCP socket whose ownership `OwnedFd` hands over here; nothing
    // else closes or uses it.
    let listener = unsafe { TcpListener::from_raw_fd(setup.listener.into_raw_fd()) };
    if let (Some(inbound), Some(cluster)) = (setup.cluster_inbound, &shard.config.cluster) {
        let timeout = Duration::from_secs(cluster.node_timeout);
        glommio::spawn_local(crate::cluster::bridge::run(shard.clone(), inbound, timeout)).detach();
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener));
    shard.process.listening.fetch_add(1, Ordering::AcqRel);
    tracing::debug!(shard = shard.id, "shard listening");
    shard.tick_until_stopped().await;
    drop(acceptor);
    shard.process.listening.fetch_sub(1, Ordering::AcqRel);
    shard.drain().await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(connection::io::serve(shard.clone(), stream)).detach();
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait for connections to close.
                tracing::warn!(shard = shard.id, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Shard {
    /// The apps (a short borrow: never hold it across an `await`, or a reload waits for it).
    pub fn apps(&self) -> std::cell::Ref<'_, Arc<AppRegistry>> {
        self.apps.borrow()
    }

    /// The current version of app `index` (after reloads).
    pub fn app(&self, index: u32) -> Arc<App> {
        self.apps().by_index(index).clone()
    }

    /// The shard's coarse clock (refreshed every 100 ms).
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// A fresh socket id owned by this shard.
    pub fn new_socket_id(&self) -> SocketId {
        let counter = self.next_counter.get();
        self.next_counter.set(counter + 1);
        SocketId::new(self.id, counter, rand::random::<u32>() >> 1)
    }

    /// Connections currently open on this shard.
    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    async fn tick_until_stopped(&self) {
        let mut ticks = 0u32;
        while !self.process.stop.load(Ordering::Acquire) {
            glommio::timer::sleep(TICK).await;
            self.now.set(Instant::now());
            ticks += 1;
            if ticks.is_multiple_of(TICKS_PER_SWEEP) {
                self.sweep_liveness();
            }
            self.send_due_subscription_counts();
            self.apply_reloaded_apps();
        }
    }

    /// Picks up the app registry of a configuration reload (checked every tick; the lock is
    /// taken only when there is one): closes the connections of removed (4001) and disabled
    /// (4003) apps, and makes room for added apps. Waits for the next tick while some task still
    /// borrows the current registry.
    fn apply_reloaded_apps(&self) {
        let generation = self.process.apps_generation.load(Ordering::Acquire);
        if generation == self.apps_generation.get() {
            return;
        }
        let Some(fresh) = self
            .process
            .reloaded_apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let Ok(mut apps) = self.apps.try_borrow_mut() else {
            return;
        };
        *apps = fresh.clone();
        drop(apps);
        self.apps_generation.set(generation);
        self.channels.borrow_mut().ensure_apps(fresh.len());
        let open: Vec<Rc<Connection>> = self.connections.borrow().values().cloned().collect();
        for conn in open {
            let app = fresh.by_index(conn.app.index);
            if app.removed {
                conn.send_error(
                    Some(codes::APP_NOT_FOUND),
                    "App removed from the configuration",
                );
                conn.close(codes::APP_NOT_FOUND, "App removed");
            } else if !app.config.enabled {
                conn.send_error(Some(codes::APP_DISABLED), "Application disabled");
                conn.close(codes::APP_DISABLED, "Application disabled");
            }
        }
        tracing::debug!(shard = self.id, generation, "applied reloaded apps");
    }

    fn sweep_liveness(&self) {
        let now = self.now();
        let activity = Duration::from_secs(self.config.server.activity_timeout);
        let pong = Duration::from_secs(self.config.server.pong_timeout);
        for conn in self.connections.borrow().values() {
            conn.check_liveness(now, activity, pong);
        }
    }

    /// Closes every connection with 4200 and waits (up to the grace period) for them to finish.
    async fn drain(&self) {
        let open: Vec<Rc<Connection>> = self.connections.borrow().values().cloned().collect();
        tracing::info!(
            shard = self.id,
            connections = open.len(),
            "closing connections for shutdown"
        );
        for conn in open {
            conn.close(
                crate::protocol::codes::SHUTTING_DOWN,
                "Server shutting down",
            );
        }
        let deadline = Instant::now() + Duration::from_secs(self.config.server.shutdown_grace + 1);
        while self.connection_count() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds a new connection to this shard's table.
    pub fn register(&self, conn: Rc<Connection>) {
        self.connections.borrow_mut().insert(conn.local_id(), conn);
    }

    /// Removes a closed connection: leaves its channels and presence rosters.
    pub async fn unregister(&self, conn: &Rc<Connection>) {
        self.connections.borrow_mut().remove(&conn.local_id());
        for subscription in conn.take_subscriptions() {
            crate::console::tap::left_on_close(
                conn.app.id(),
                &subscription.channel,
                conn.socket_id,
            );
            self.leave_channel(conn, subscription).await;
        }
    }

    /// Adds `conn` to the local subscribers of `channel`.
    pub fn add_local_subscriber(&self, conn: &Rc<Connection>, channel: &str) {
        let count = self.channels.borrow_mut().subscribe(
            conn.app.index,
            channel,
            conn.local_id(),
            conn.clone(),
        );
        if count == 1 {
            self.shard_occupancy_changed(conn.app.index, channel, true);
        }
        self.subscription_count_changed(conn.app.index, channel, 1);
    }

    /// Takes `conn` out of a channel it was subscribed to (or joining), leaving the presence
    /// roster too.
    pub async fn leave_channel(
        &self,
        conn: &Rc<Connection>,
        subscription: connection::Subscription,
    ) {
        let app = conn.app.index;
        if subscription.active {
            let left =
                self.channels
                    .borrow_mut()
                    .unsubscribe(app, &subscription.channel, conn.local_id());
            if left == 0 {
                self.shard_occupancy_changed(app, &subscription.channel, false);
            }
            self.subscription_count_changed(app, &subscription.channel, -1);
        }
        if let Some(identity) = subscription.presence {
            let channel: Arc<str> = Arc::from(&*subscription.channel);
            self.presence_leave(app, channel, identity.user_id, conn.socket_id)
                .await;
        }
    }

    /// Publishes `event` with string `data` to each of `channels` of `app` on every node,
    /// skipping the socket `except`: the in-process entry point of the HTTP API. One frame is
    /// encoded per channel and shared by every shard.
    ///
    /// Returns once every shard of this node has written (or queued) the frames, so that a
    /// publish made after this one returns, on any shard, reaches each socket after it.
    pub async fn publish(
        &self,
        app: &App,
        channels: &[&str],
        event: &str,
        data: &str,
        except: Option<SocketId>,
    ) {
        self.publish_event(app, channels, event, EventData::Text(data), None, except)
            .await;
        if self.shards > 1 {
            self.gather(query::Query::Barrier).await;
        }
    }

    /// Hands an encoded frame to every other shard and writes it to this shard's subscribers.
    pub async fn publish_frame(
        &self,
        app: u32,
        channel: Arc<str>,
        frame: SharedFrame,
        except: Option<SocketId>,
    ) {
        let published_at = Instant::now();
        self.deliver_on_peers(app, &channel, &frame, except, published_at);
        self.deliver_local(app, &channel, &frame, except, published_at)
            .await;
    }

    /// Hands `frame` to every other shard for its subscribers of `channel`.
    fn deliver_on_peers(
        &self,
        app: u32,
        channel: &Arc<str>,
        frame: &SharedFrame,
        except: Option<SocketId>,
        published_at: Instant,
    ) {
        if let Some(mesh) = self.mesh.get() {
            for peer in mesh.peers() {
                let channel = channel.clone();
                let frame = frame.clone();
                mesh.send(
                    peer,
                    ShardMsg::Deliver {
                        app,
                        channel,
                        frame,
                        except,
                        published_at,
                    },
                );
            }
        }
    }

    /// Writes `frame` to this shard's subscribers of `channel` in one go (for rare events such as
    /// presence changes; publishes use [`Shard::deliver_local`], which yields).
    fn deliver_now(&self, app: u32, channel: &str, frame: &SharedFrame) {
        if let Some(local) = self.channels.borrow().get(app, channel) {
            for conn in local.subscribers() {
                conn.send_shared(frame);
            }
            record_delivery(app, local.len(), frame.len(), None);
        }
    }

    /// Writes `frame` to this shard's subscribers of `channel`, yielding now and then on large
    /// channels so other connections keep being served.
    async fn deliver_local(
        &self,
        app: u32,
        channel: &str,
        frame: &SharedFrame,
        except: Option<SocketId>,
        published_at: Instant,
    ) {
        let mut sent = 0;
        let snapshot: Vec<Rc<Connection>> = {
            let table = self.channels.borrow();
            let Some(local) = table.get(app, channel) else {
                return;
            };
            if local.len() <= WRITES_PER_YIELD {
                for conn in local.subscribers() {
                    if Some(conn.socket_id) != except {
                        conn.send_shared(frame);
                        sent += 1;
                    }
                }
                record_delivery(app, sent, frame.len(), Some(published_at));
                return;
            }
            local.subscribers().cloned().collect()
        };
        for (i, conn) in snapshot.iter().enumerate() {
            if Some(conn.socket_id) != except {
                conn.send_shared(frame);
                sent += 1;
            }
            if i % WRITES_PER_YIELD == WRITES_PER_YIELD - 1 {
                glommio::yield_if_needed().await;
            }
        }
        record_delivery(app, sent, frame.len(), Some(published_at));
    }

    /// Starts `conn`'s join of presence `channel` at the channel's home shard; the answer comes
    /// back as [`ShardMsg::PresenceJoined`].
    pub async fn presence_join(&self, conn: &Connection, channel: &str, member: PresenceMember) {
        let app = conn.app.index;
        let channel: Arc<str> = Arc::from(channel);
        let home = home_shard(app, &channel, self.shards);
        if home == self.id {
            self.home_join(app, channel, member, conn.socket_id).await;
        } else {
            self.send_to(
                home,
                ShardMsg::PresenceJoin {
                    app,
                    channel,
                    member,
                    socket: conn.socket_id,
                },
            );
        }
    }

    async fn presence_leave(&self, app: u32, channel: Arc<str>, user_id: String, socket: SocketId) {
        let home = home_shard(app, &channel, self.shards);
        if home == self.id {
            self.home_leave(app, channel, &user_id, socket).await;
        } else {
            self.send_to(
                home,
                ShardMsg::PresenceLeave {
                    app,
                    channel,
                    user_id,
                    socket,
                },
            );
        }
    }

    /// Runs `local` here when this shard is `channel`'s home, else sends the home the message
    /// `remote` builds.
    pub(super) fn at_home(
        &self,
        app: u32,
        channel: &str,
        local: impl FnOnce(&Self),
        remote: impl FnOnce(Arc<str>) -> ShardMsg,
    ) {
        let home = home_shard(app, channel, self.shards);
        if home == self.id {
            local(self);
        } else {
            self.send_to(home, remote(Arc::from(channel)));
        }
    }

    fn send_to(&self, peer: usize, msg: ShardMsg) {
        if let Some(mesh) = self.mesh.get() {
            mesh.send(peer, msg);
        }
    }

    async fn handle_message(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver {
                app,
                channel,
                frame,
                except,
                published_at,
            } => {
                self.deliver_local(app, &channel, &frame, except, published_at)
                    .await
            }
            ShardMsg::PresenceJoin {
                app,
                channel,
                member,
                socket,
            } => self.home_join(app, channel, member, socket).await,
            ShardMsg::PresenceJoined {
                app,
                channel,
                socket,
                outcome,
            } => self.finish_presence_join(app, &channel, socket, outcome),
            ShardMsg::PresenceLeave {
                app,
                channel,
                user_id,
                socket,
            } => self.home_leave(app, channel, &user_id, socket).await,
            ShardMsg::Query { from, id, query } => {
                let answer = self.answer_query(&query);
                self.send_to(from, ShardMsg::Answer { id, answer });
            }
            ShardMsg::RemotePresence {
                node,
                entry,
                joined,
            } => self.apply_remote_presence(&node, &entry, joined),
            ShardMsg::NodeState {
                node,
                presence,
                occupied,
            } => self.replace_node_state(&node, &presence, &occupied),
            ShardMsg::RemoteOccupancy {
                node,
                app,
                channel,
                occupied,
            } => self
                .occupancy
                .borrow_mut()
                .remote_changed(app, &channel, &node, occupied),
            message @ (ShardMsg::NodeGone { .. } | ShardMsg::Nodes { .. }) => {
                self.apply_node_message(message)
            }
            ShardMsg::RemoteAnswer { id, counts } => self.record_remote_answer(id, counts),
            ShardMsg::Occupancy {
                app,
                channel,
                occupied,
            } => self.home_occupancy_changed(app, &channel, occupied),
            ShardMsg::SubscriptionDelta {
                app,
                channel,
                delta,
            } => self.home_subscription_count_changed(app, &channel, delta),
            ShardMsg::Answer { id, answer } => {
                query::PendingQueries::record_answer(&self.queries, id, answer)
            }
        }
    }

    /// At the home shard: adds the member and answers the joining socket's shard with the roster
    /// *before* anything else can happen to this channel here, then announces a new user.
    ///
    /// The order matters. The roster and the answer are produced with no `await` in between,
    /// so every member event computed after this roster is sent to the joining socket's shard
    /// after the answer (one ordered channel per pair of shards) and reaches the socket once it
    /// is subscribed; the joining socket's own `member_added` is excluded by socket id.
    async fn home_join(
        &self,
        app: u32,
        channel: Arc<str>,
        member: PresenceMember,
        socket: SocketId,
    ) {
        let max_members = self.apps().by_index(app).config.max_presence_members;
        let outcome = self
            .presence
            .borrow_mut()
            .join(app, &channel, &member, max_members);
        let (first_socket, first_local) = match &outcome {
            Joined::Member {
                first_socket,
                first_local,
                ..
            } => (*first_socket, *first_local),
            Joined::Full => (false, false),
        };
        if socket.shard() == self.id {
            self.finish_presence_join(app, &channel, socket, outcome);
        } else {
            let channel = channel.clone();
            self.send_to(
                socket.shard(),
                ShardMsg::PresenceJoined {
                    app,
                    channel,
                    socket,
                    outcome,
                },
            );
        }
        if first_local {
            self.share_presence_change(
                app,
                &channel,
                &member.user_id,
                &member.user_id_json,
                member.user_info_json.as_deref(),
                true,
            );
        }
        if first_socket {
            self.emit_webhook(
                app,
                WebhookEvent::MemberAdded {
                    channel: channel.to_string(),
                    user_id: member.user_id.clone(),
                },
            );
            let text = outbound::member_added(
                &channel,
                &member.user_id_json,
                member.user_info_json.as_deref(),
            );
            self.publish_frame(app, channel, shared_text_frame(&text), Some(socket))
                .await;
        }
    }

    /// At the home shard: removes one socket of a member; announces the user's departure when it
    /// was their last.
    async fn home_leave(&self, app: u32, channel: Arc<str>, user_id: &str, socket: SocketId) {
        let left = self.presence.borrow_mut().leave(app, &channel, user_id);
        if left.last_local {
            // Receivers of a leave need only the user id.
            let user_id_json = serde_json::to_string(user_id).expect("strings serialize");
            self.share_presence_change(app, &channel, user_id, &user_id_json, None, false);
        }
        if let Some(user_id_json) = left.member_removed {
            self.emit_webhook(
                app,
                WebhookEvent::MemberRemoved {
                    channel: channel.to_string(),
                    user_id: user_id.to_string(),
                },
            );
            let text = outbound::member_removed(&channel, &user_id_json);
            self.publish_frame(app, channel, shared_text_frame(&text), Some(socket))
                .await;
        }
    }

    /// At the joining socket's shard: completes (or refuses) the subscription.
    fn finish_presence_join(&self, app: u32, channel: &str, socket: SocketId, outcome: Joined) {
        let conn = self.connections.borrow().get(&socket.counter()).cloned();
        let Some(conn) = conn.filter(|c| c.socket_id == socket && c.app.index == app) else {
            return;
        };
        match outcome {
            Joined::Member { roster_json, .. } => {
                if conn.activate_subscription(channel) {
                    self.add_local_subscriber(&conn, channel);
                    conn.send_text(&outbound::presence_subscription_succeeded(
                        channel,
                        &roster_json,
                    ));
                }
            }
            Joined::Full => {
                if conn.subscription(channel).is_some_and(|s| !s.active) {
                    conn.remove_subscription(channel);
                    let max = self.apps().by_index(app).config.max_presence_members;
                    conn.send_text(&outbound::subscription_error(
                        channel,
                        "LimitReached",
                        &format!("The presence channel is full (at most {max} members)"),
                        crate::protocol::codes::OVER_CAPACITY,
                    ));
                }
            }
        }
    }
}
