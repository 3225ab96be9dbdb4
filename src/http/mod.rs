//! Plain HTTP on the WebSocket port: the request head ([`request`]), the keep-alive server loop
//! ([`server`]), responses, and routing to the Pusher REST API ([`api`]) under `/apps/{id}/...`,
//! the health and readiness probes and `/metrics`.
//!
//! This layer talks to the node only through the shard's query and publish functions, in the
//! shard's own types; it never sees the cluster's wire types.

pub mod api;
mod channels;
pub mod events;
mod publish;
pub mod request;
pub mod server;

use crate::shard::Shard;
use request::RequestHead;
use std::time::{SystemTime, UNIX_EPOCH};

/// A refused API request: its status and plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Plain-text body (the SDKs surface it verbatim).
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, message)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Largest request body accepted when no app says otherwise (Pusher's 1 MiB); each app's
/// `max_request_body_bytes` applies to its requests, beyond it the answer is 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An HTTP response, written by the connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Headers beyond `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The response with `headers` added.
    pub fn with_headers(mut self, headers: &[(&'static str, &str)]) -> Response {
        self.headers.extend(
            headers
                .iter()
                .map(|(name, value)| (*name, value.to_string())),
        );
        self
    }

    /// The response as HTTP/1.1 bytes; `close` adds `Connection: close`.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let extra: String = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}{}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// `/metrics`: every shard's counters summed, in the Prometheus text format.
async fn metrics(shard: &Shard) -> Response {
    let total = shard.metrics_snapshot().await;
    let text = crate::metrics::render(&total, &shard.process_facts());
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        headers: Vec::new(),
        body: text.into_bytes(),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Answers one HTTP request.
pub async fn respond(shard: &Shard, head: &RequestHead, body: &[u8]) -> Response {
    if api::is_api_path(&head.path) {
        return api::handle(shard, head, body).await;
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/health") => Response::text(200, "OK"),
        ("GET", "/metrics") => metrics(shard).await,
        ("GET", "/ready") if !shard.process.all_listening() => {
            Response::text(503, "NOT READY: not every shard is listening")
        }
        ("GET", "/ready") if !shard.cluster_linked() => {
            Response::text(503, "NOT READY: the cluster link to Redis is down")
        }
        ("GET", "/ready") => Response::text(200, "READY"),
        ("GET", path) if path.starts_with("/app/") => {
            Response::text(400, "WebSocket endpoint: connect with a WebSocket upgrade")
        }
        _ => Response::text(404, "Not found"),
    }
}
