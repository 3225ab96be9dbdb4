//! The Pusher Channels protocol (version 7): close and error codes, channel and event names,
//! decoding of client messages and encoding of server messages. Pure functions over bytes and
//! strings; nothing here does I/O.

pub mod codes;
pub mod inbound;
pub mod names;
pub mod outbound;
pub mod signin;
pub mod socket_id;

pub use socket_id::SocketId;
