//! The socket layer: one client connection as the rest of its shard sees it ([`Connection`]) and
//! the bytes waiting to be written to it ([`send_queue`]).
//!
//! This is the only place that writes to a client's file descriptor outside the socket's own
//! task. It knows frames and close requests, not shards: nothing here imports `shard`,
//! `session` or `runtime`.

pub mod connection;
pub mod send_queue;

pub use connection::{CloseRequest, Connection, PresenceIdentity, Subscription};
