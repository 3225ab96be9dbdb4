//! Admission of an upgraded WebSocket client (PROTOCOL.md §1): the path names an app key, the
//! protocol version is supported, the app exists and is enabled, and it has room for one more
//! connection. A refusal carries the Pusher close code the client gets.

use crate::app::App;
use crate::http::request::RequestHead;
use crate::protocol::codes;
use crate::shard::Shard;
use std::sync::Arc;

/// Why a client was refused after the upgrade: the Pusher error/close code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The 4xxx code (`pusher:error` code and close code alike).
    pub code: u16,
    /// What the client is told.
    pub message: String,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Checks the path, protocol version and app; reserves a connection slot.
pub fn admit(shard: &Shard, head: &RequestHead) -> Result<Arc<App>, Refusal> {
    let prefix = &shard.config.server.path_prefix;
    let key = head
        .path
        .strip_prefix(prefix.as_str())
        .and_then(|p| p.strip_prefix("/app/"))
        .filter(|k| !k.is_empty() && !k.contains('/'))
        .ok_or_else(|| {
            let message = format!("Invalid path {}: expected {prefix}/app/{{key}}", head.path);
            Refusal::new(codes::BAD_PATH, message)
        })?;
    // pusher-js sends protocol=7; older clients 5 or 6. A missing protocol is accepted, as
    // soketi and Reverb do (PROTOCOL.md §1.3 leaves the hosted behaviour UNCONFIRMED).
    if let Some(protocol) = head.query_param("protocol") {
        if !matches!(protocol.parse::<u32>(), Ok(5..=7)) {
            let message = format!("Unsupported protocol version {protocol}");
            return Err(Refusal::new(codes::UNSUPPORTED_PROTOCOL, message));
        }
    }
    let app = shard.apps().by_key(key).cloned().ok_or_else(|| {
        let message = format!("App key {key} not in this cluster");
        Refusal::new(codes::APP_NOT_FOUND, message)
    })?;
    if !app.config.enabled {
        return Err(Refusal::new(codes::APP_DISABLED, "Application disabled"));
    }
    if !app.try_acquire_connection() {
        let message = "Application is over connection quota";
        return Err(Refusal::new(codes::OVER_CONNECTION_QUOTA, message));
    }
    Ok(app)
}
