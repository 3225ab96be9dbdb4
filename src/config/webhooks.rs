//! Webhook settings: delivery (batching, retries, spool), receivers, their filters and headers.

use super::*;

/// Delivery settings shared by every app's webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Milliseconds events wait to be sent together in one request.
    pub batch_window_ms: u64,
    /// Most events in one request.
    pub max_batch_size: usize,
    /// Milliseconds `channel_vacated` and `member_removed` wait; a re-occupation or re-join
    /// within it cancels both events (page reloads).
    pub grace_ms: u64,
    /// Seconds a failing request is retried (exponential backoff) before it is dead-lettered.
    pub retry_for_secs: u64,
    /// Milliseconds one request may take.
    pub timeout_ms: u64,
    /// Directory of the spool files that keep pending webhooks across restarts.
    pub spool_dir: String,
    /// Largest spool file, in bytes. The spool is the receiver's queue: when it is full, new
    /// batches are dropped (counted in `warren_webhooks_batches_dropped_total`, logged).
    pub spool_max_bytes: u64,
    /// Milliseconds a graceful stop waits for the receivers to take the last batches (what they
    /// do not take stays in the spool for the next start).
    pub stop_flush_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_window_ms: 50,
            max_batch_size: 50,
            grace_ms: 3000,
            retry_for_secs: 300,
            timeout_ms: 5000,
            spool_dir: "warren-data/webhooks".into(),
            spool_max_bytes: 64 * 1024 * 1024,
            stop_flush_ms: 3000,
        }
    }
}

/// The webhook event names (PROTOCOL.md §6.3).
pub const WEBHOOK_EVENTS: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "subscription_count",
    "cache_miss",
];

/// Request headers Warren sets itself on every webhook request (compared case-insensitively): a
/// receiver's configured `headers` may not name them, so that each is sent exactly once and the
/// signature the SDKs check is Warren's (`X-Pusher-*`), and the framing is Warren's (the rest).
pub const RESERVED_WEBHOOK_HEADERS: [&str; 7] = [
    "Content-Type",
    "X-Pusher-Key",
    "X-Pusher-Signature",
    "Content-Length",
    "Transfer-Encoding",
    "Host",
    "Connection",
];

impl WebhookSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("webhooks.{k}");
        let positive = [
            ("max_batch_size", self.max_batch_size as u64),
            ("timeout_ms", self.timeout_ms),
            ("spool_max_bytes", self.spool_max_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key(name), "must be greater than 0"));
            }
        }
        if self.spool_dir.is_empty() {
            return Err(ConfigError::new(key("spool_dir"), "must not be empty"));
        }
        Ok(())
    }
}

/// Checks one configured webhook header: a valid HTTP field name (RFC 9110 token) that Warren
/// does not set itself, and a value without control characters (no header injection).
pub(super) fn validate_webhook_header(
    key: String,
    name: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(ConfigError::new(key, "is not a valid HTTP header name"));
    }
    if let Some(reserved) = RESERVED_WEBHOOK_HEADERS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(ConfigError::new(
            key,
            format!(
                "{reserved} is set by Warren on every webhook request and cannot be configured"
            ),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ConfigError::new(
            key,
            "must not contain control characters (CR, LF, ...)",
        ));
    }
    Ok(())
}

/// One webhook receiver of an app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http://` or `https://` URL that receives `POST`s.
    pub url: String,
    /// Event names sent to this URL; empty for all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only events of channels matching this filter.
    #[serde(default)]
    pub filter: WebhookFilter,
    /// Extra request headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Which channels' events a webhook target receives: those whose name starts with
/// `channel_prefix` and ends with `channel_suffix` (each, when given).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFilter {
    /// Channel name prefix, e.g. `presence-`.
    #[serde(default)]
    pub channel_prefix: Option<String>,
    /// Channel name suffix, e.g. `-admin`.
    #[serde(default)]
    pub channel_suffix: Option<String>,
}

impl WebhookFilter {
    /// Whether events of `channel` pass the filter.
    pub fn matches(&self, channel: &str) -> bool {
        self.channel_prefix
            .as_deref()
            .is_none_or(|prefix| channel.starts_with(prefix))
            && self
                .channel_suffix
                .as_deref()
                .is_none_or(|suffix| channel.ends_with(suffix))
    }
}
