//! The WebSocket transport: the upgrade handshake and frame decoding and encoding (via
//! tungstenite's frame header codec).
//!
//! This module knows bytes and frames, not Pusher: `protocol` gives meaning to the text frames.

pub mod frame;
pub mod handshake;
