//! Several nodes joined through Redis pub/sub (see `docs/architecture.md`, "Cluster").
//!
//! - [`link`]: the Redis connections, on two OS threads beside the shards.
//! - [`envelope`]: what nodes say to each other.
//! - [`registry`]: which nodes are alive, from what was last heard of them while the link was up.
//! - [`replay_log`]: the publisher's bounded log of this node's numbered envelopes.
//! - [`sequence`]: each other node's numbered envelopes put in order, repeats dropped.
//!
//! The task on shard 0 that receives the bus and keeps the registry is `runtime::bridge`; the
//! shard's side is `shard::cluster_side`. Nothing here imports the shard.
//!
//! What each node keeps is its own: its sockets, its channel table, and a replica of the other
//! nodes' presence members, built from their join/leave messages and snapshots. Counts that are
//! not replicated (subscriptions, occupied channels) are asked for across the bus when the HTTP
//! API needs them.

pub mod envelope;
pub mod link;
pub mod registry;
pub mod replay_log;
pub mod sequence;
