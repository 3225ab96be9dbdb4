//! The messages shards send each other over the [`super::mesh`]. Every cross-shard action is one
//! of these; nothing else crosses a shard boundary but immutable, shared data.
//!
//! Node-level facts from other cluster nodes arrive here already translated into shard terms
//! (app indices, [`RemoteMember`]s): the cluster's wire types stop at `shard::cluster_side`.

use super::Shard;
use crate::channels::presence::Joined;
use crate::protocol::inbound::PresenceMember;
use crate::protocol::outbound::WatchlistChange;
use crate::protocol::SocketId;
use crate::ws::frame::SharedFrame;
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

/// An answer in transit between shards (its type is known to the asker; see `shard::gather`).
pub type Reply = Box<dyn Any + Send>;

/// A question in transit: run on each peer shard.
pub type Job = Arc<dyn Fn(&Shard) -> Reply + Send + Sync>;

/// A presence member that another cluster node has, in this node's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    /// App registry index on this node.
    pub app: u32,
    /// Presence channel name.
    pub channel: Box<str>,
    /// The user id as a string.
    pub user_id: String,
    /// The user id exactly as the client sent it (JSON).
    pub user_id_json: String,
    /// The member's `user_info` (JSON), if any.
    pub user_info: Option<String>,
}

/// Messages between shards.
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
        /// Whether the frame becomes its cache channel's last event (see `shard::cache`).
        cached: bool,
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
    /// A scatter-gather question from shard `from` (see [`super::gather`]): run `job` here and
    /// send its result back as [`ShardMsg::Reply`].
    Request {
        /// The asking shard.
        from: usize,
        /// The question's id at the asking shard.
        id: u64,
        /// What to compute on this shard.
        job: Job,
    },
    /// An answer to question `id` (from a peer shard, or from another node via shard 0).
    Reply {
        /// The question's id.
        id: u64,
        /// The answer, of the type the question names.
        reply: Reply,
    },
    /// To a channel's home shard: another node's user joined or left it.
    RemotePresence {
        /// The other node.
        node: Arc<str>,
        /// The member.
        member: RemoteMember,
        /// Joined (true) or left.
        joined: bool,
    },
    /// To every shard: `node`'s members and occupied channels homed there (replaces what was
    /// known).
    NodeState {
        /// The other node.
        node: Arc<str>,
        /// Its members.
        presence: Vec<RemoteMember>,
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
    /// To a cache channel's home shard: a subscriber on the sending shard found nothing cached
    /// (the home de-duplicates the `cache_miss` webhook).
    CacheMissed {
        /// App registry index.
        app: u32,
        /// Cache channel.
        channel: Arc<str>,
    },
    /// To a channel's home shard: another node now has `subscriptions` of it.
    RemoteSubscriptionCount {
        /// The other node.
        node: Arc<str>,
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Arc<str>,
        /// Its subscriptions there.
        subscriptions: usize,
    },
    /// To the user's home shard: one more socket of this node signed in as `user`.
    UserSignedIn {
        /// App registry index.
        app: u32,
        /// The user id.
        user: Arc<str>,
    },
    /// To the user's home shard: one socket of this node signed in as `user` is gone.
    UserSignedOut {
        /// App registry index.
        app: u32,
        /// The user id.
        user: Arc<str>,
    },
    /// From a user's home shard to every shard: `user` came online or went offline (send
    /// `watchlist_events` to the watchers).
    WatchlistChanged {
        /// App registry index.
        app: u32,
        /// The user id.
        user: Arc<str>,
        /// Online or offline.
        change: WatchlistChange,
    },
    /// To a home shard: the statuses of `ids` (homed there) for the watchlist of `socket`.
    WatchlistQuery {
        /// The asking shard.
        from: usize,
        /// App registry index.
        app: u32,
        /// Watched user ids homed at the receiver.
        ids: Vec<Arc<str>>,
        /// The socket that signed in.
        socket: SocketId,
    },
    /// From a home shard: the answer to a [`ShardMsg::WatchlistQuery`].
    WatchlistStatuses {
        /// App registry index.
        app: u32,
        /// The socket that signed in.
        socket: SocketId,
        /// Watched ids online.
        online: Vec<Arc<str>>,
        /// Watched ids offline.
        offline: Vec<Arc<str>>,
    },
    /// To the user's home shard: another node's first socket of `user` signed in (or its last
    /// left).
    RemoteUser {
        /// The other node.
        node: Arc<str>,
        /// App registry index.
        app: u32,
        /// The user id.
        user: Arc<str>,
        /// Signed in (true) or gone.
        online: bool,
    },
    /// To every shard: `node`'s signed-in users homed there (replaces what was known).
    NodeUsers {
        /// The other node.
        node: Arc<str>,
        /// (app index, user id).
        users: Vec<(u32, Arc<str>)>,
    },
}

impl ShardMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ShardMsg::Deliver { .. } => "deliver",
            ShardMsg::PresenceJoin { .. } => "presence_join",
            ShardMsg::PresenceJoined { .. } => "presence_joined",
            ShardMsg::PresenceLeave { .. } => "presence_leave",
            ShardMsg::Request { .. } => "request",
            ShardMsg::Reply { .. } => "reply",
            ShardMsg::RemotePresence { .. } => "remote_presence",
            ShardMsg::NodeState { .. } => "node_state",
            ShardMsg::RemoteOccupancy { .. } => "remote_occupancy",
            ShardMsg::NodeGone { .. } => "node_gone",
            ShardMsg::Nodes { .. } => "nodes",
            ShardMsg::Occupancy { .. } => "occupancy",
            ShardMsg::SubscriptionDelta { .. } => "subscription_delta",
            ShardMsg::CacheMissed { .. } => "cache_missed",
            ShardMsg::RemoteSubscriptionCount { .. } => "remote_subscription_count",
            ShardMsg::UserSignedIn { .. } => "user_signed_in",
            ShardMsg::UserSignedOut { .. } => "user_signed_out",
            ShardMsg::WatchlistChanged { .. } => "watchlist_changed",
            ShardMsg::WatchlistQuery { .. } => "watchlist_query",
            ShardMsg::WatchlistStatuses { .. } => "watchlist_statuses",
            ShardMsg::RemoteUser { .. } => "remote_user",
            ShardMsg::NodeUsers { .. } => "node_users",
        }
    }
}
