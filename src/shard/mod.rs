//! The shard: one core's share of the node. Each shard owns its connections, its channel table
//! and the presence rosters of the channels whose home it is; shards share nothing mutable and
//! talk through the [`mesh`] with typed [`ShardMsg`]s.
//!
//! The work is split by concern, one file each, all `impl Shard`:
//!
//! | file | what |
//! | --- | --- |
//! | [`msg`] | the messages between shards |
//! | [`mesh`] | the bounded channels that carry them |
//! | [`inbox`] | what a shard does with each message |
//! | [`gather`] | one typed scatter-gather with a deadline (shards and nodes) |
//! | [`publish`] | publishing, the per-shard fan-out queue, delivering to local subscribers |
//! | [`membership`] | subscribe, leave, presence join and leave |
//! | [`lifecycle`] | the tick: liveness sweep, reload pickup, drain |
//! | [`queries`] | what the HTTP API asks: counts, users, terminate, metrics |
//! | [`cluster_side`] | what the shard sends to and takes from the other nodes (wire types end here) |
//! | [`cluster_queries`] | counts asked of and answered for the other nodes |
//! | `remote_state` | the other nodes' members and channels, as kept here |
//! | [`webhook_events`] | occupancy and subscription counts for webhooks |
//! | [`cache`] | cache channels: each shard's last events, the replay to new subscribers |
//! | `subscription_counts` | cluster-wide subscription counts: the channel event and the webhook |
//! | [`users`] | signed-in users: sign-in and out, online sets at users' home shards, watchlists |
//! | `cluster_users` | signed-in users to and from the other nodes (wire types end here too) |
//!
//! A `Shard` is built without sockets ([`Shard::new`]); the per-core runtime (`runtime`) gives it
//! a listener, a mesh and a tick. Tests build shards the same way.

pub mod cache;
pub mod cluster_queries;
pub mod cluster_side;
pub mod gather;
mod inbox;
pub mod lifecycle;
pub mod membership;
pub mod mesh;
pub mod msg;
pub mod publish;
pub mod queries;
mod remote_state;
mod subscription_counts;
mod webhook_events;
// Added at the end for the users feature (issue 11).
mod cluster_users;
pub mod users;

use crate::app::{App, AppRegistry};
use crate::channels::cache::ChannelCache;
use crate::channels::presence::PresenceRosters;
use crate::channels::table::ChannelTable;
use crate::config::Config;
use crate::protocol::SocketId;
use crate::socket::Connection;
use ahash::AHashMap;
pub use gather::Gathered;
use mesh::{Mesh, MeshEnds};
pub use msg::ShardMsg;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// State shared by the whole process, read by the shards: set once, or flags.
#[derive(Debug, Default)]
pub struct ProcessState {
    /// Set to ask every shard to stop gracefully.
    pub stop: Arc<AtomicBool>,
    /// Shards whose listener is accepting.
    pub listening: AtomicUsize,
    /// Total shards of this process.
    pub shards: AtomicUsize,
    /// Shards that have closed their connections and settled with their peers (on stop).
    pub drained: AtomicUsize,
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

/// What a shard is made of, besides its sockets.
pub struct ShardParts {
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
    /// The Redis link, when clustered.
    pub cluster: Option<Arc<crate::cluster::link::Link>>,
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
    /// Process-wide flags.
    pub process: Arc<ProcessState>,
    apps: RefCell<Arc<AppRegistry>>,
    apps_generation: Cell<u64>,
    connections: RefCell<AHashMap<u64, Rc<Connection>>>,
    channels: RefCell<ChannelTable<Rc<Connection>>>,
    presence: RefCell<PresenceRosters>,
    mesh: OnceCell<Mesh>,
    pending: RefCell<gather::Pending>,
    deliveries: publish::DeliveryQueue,
    cluster: cluster_side::ClusterSide,
    webhooks: webhook_events::WebhookSide,
    cache: RefCell<ChannelCache>,
    users: users::UserSide,
    now: Cell<Instant>,
    next_counter: Cell<u64>,
}

impl Shard {
    /// A shard with no sockets and no mesh yet (see [`Shard::attach_mesh`]).
    pub fn new(parts: ShardParts) -> Rc<Shard> {
        Rc::new(Shard {
            id: parts.id,
            shards: parts.shards,
            channels: RefCell::new(ChannelTable::new(parts.apps.len())),
            deliveries: publish::DeliveryQueue::new(
                parts.config.server.fanout_queue_jobs,
                parts.config.server.fanout_queue_writes,
            ),
            config: parts.config,
            apps: RefCell::new(parts.apps),
            apps_generation: Cell::new(0),
            process: parts.process,
            connections: RefCell::new(AHashMap::new()),
            presence: RefCell::new(PresenceRosters::default()),
            mesh: OnceCell::new(),
            pending: RefCell::new(gather::Pending::default()),
            cluster: cluster_side::ClusterSide::new(parts.cluster),
            webhooks: webhook_events::WebhookSide::new(parts.webhooks),
            cache: RefCell::default(),
            users: users::UserSide::default(),
            now: Cell::new(Instant::now()),
            next_counter: Cell::new(1),
        })
    }

    /// Connects this shard's ends of the mesh (inside its executor) and starts its fan-out task:
    /// from here on it takes messages from its peers.
    pub fn attach_mesh(self: &Rc<Self>, ends: MeshEnds) {
        let weak = Rc::downgrade(self);
        let mesh = Mesh::start(ends, move |msg| {
            let shard = weak.upgrade();
            async move {
                if let Some(shard) = shard {
                    shard.handle_message(msg).await;
                }
            }
        });
        let _ = self.mesh.set(mesh);
        publish::spawn_deliveries(self.clone());
    }

    /// The apps (a short borrow: never hold it across an `await`, or a reload waits for it).
    pub fn apps(&self) -> std::cell::Ref<'_, Arc<AppRegistry>> {
        self.apps.borrow()
    }

    /// The current version of app `index` (after reloads), if this shard knows it yet.
    pub fn app(&self, index: u32) -> Option<Arc<App>> {
        if let Some(app) = self.apps().get(index) {
            return Some(app.clone());
        }
        // A peer that applied a reload first may name an app this shard has not seen: pick the
        // reload up now rather than at the next tick.
        self.apply_reloaded_apps();
        self.apps().get(index).cloned()
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

    /// Adds a new connection to this shard's table.
    pub fn register(&self, conn: Rc<Connection>) {
        self.watch_signin_deadline(&conn);
        self.connections.borrow_mut().insert(conn.local_id(), conn);
    }

    /// Removes a closed connection: leaves its channels and presence rosters, signs it out.
    pub fn unregister(&self, conn: &Rc<Connection>) {
        self.connections.borrow_mut().remove(&conn.local_id());
        self.sign_out(conn);
        for subscription in conn.take_subscriptions() {
            crate::console::tap::left_on_close(
                conn.app.id(),
                &subscription.channel,
                conn.socket_id,
            );
            self.leave_channel(conn, subscription);
        }
    }

    /// The other shards of this node.
    fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        self.mesh.get().into_iter().flat_map(|m| m.peers())
    }

    fn send_to(&self, peer: usize, msg: ShardMsg) {
        if let Some(mesh) = self.mesh.get() {
            mesh.send(peer, msg);
        }
    }

    /// The connection with `socket` id on this shard, if it is still open and of `app`.
    fn connection(&self, socket: SocketId, app: u32) -> Option<Rc<Connection>> {
        let conn = self.connections.borrow().get(&socket.counter()).cloned();
        conn.filter(|c| c.socket_id == socket && c.app.index == app)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod users_tests;
