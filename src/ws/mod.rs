//! The WebSocket transport: the HTTP/1.1 upgrade handshake, frame decoding and encoding (via
//! tungstenite's frame header codec), and the per-connection send queue with its byte budget.
//!
//! This module knows bytes and frames, not Pusher: `protocol` gives meaning to the text frames.

pub mod frame;
pub mod handshake;
pub mod send_queue;
