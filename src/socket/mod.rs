//! The socket layer: one client connection as the rest of its shard sees it ([`Connection`]),
//! the bytes waiting to be written to it ([`send_queue`]), and the fan-out's writes batched
//! across many sockets ([`fanout_writer`]).
//!
//! This is the only place that writes to a client's file descriptor outside the socket's own
//! task. It knows frames and close requests, not shards: nothing here imports `shard`,
//! `session` or `runtime`.

pub mod connection;
pub mod fanout_writer;
pub mod send_queue;

pub use connection::{CloseRequest, Connection, PresenceIdentity, Subscription};
