//! Warren: a self-hosted real-time push server that speaks the Pusher Channels protocol.
//!
//! The crate is a library so that the binary, the tests and the load harness can all start a
//! server in-process: [`server::Server::start`] takes a [`config::Config`] and returns a handle.
//! See `docs/architecture.md` for how the modules fit together.

pub mod app;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod console;
pub mod damping;
pub mod deadline;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod session;
pub mod shard;
pub mod socket;
pub mod users;
pub mod webhooks;
pub mod ws;
