//! Configuration: the TOML file (or the embedded default), `WARREN_*` environment overrides and
//! command-line flags, merged in that order into one validated [`Config`].
//!
//! Nothing here touches the network or the runtime; a bad configuration is refused with a
//! [`ConfigError`] that names the key and the reason.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

mod summary;

/// The configuration compiled into the binary, used when no `--config` is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/warren.default.toml");

/// The secret of the embedded default app; a warning is logged while any app uses it.
pub const DEFAULT_SECRET: &str = "app-secret";

/// Prefix of the environment variables that override configuration keys.
const ENV_PREFIX: &str = "WARREN_";

/// Separator between path segments in an environment override (`WARREN_SERVER__PORT`).
const ENV_PATH_SEPARATOR: &str = "__";

/// The whole, validated configuration of one Warren node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings: sockets, shards, timeouts, buffers.
    #[serde(default)]
    pub server: ServerConfig,
    /// The tenants served by this node.
    pub apps: Vec<AppConfig>,
    /// Joining other nodes through Redis; absent for a single node (nothing about Redis starts).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// How webhooks are batched, retried and spooled (the targets are per app).
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// The debug console (off unless enabled, with an admin token).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// How clients refused after the WebSocket upgrade are slowed down (`damping`).
    #[serde(default)]
    pub damping: DampingConfig,
}

/// The debug console: a page and an event stream on their own address, behind an admin token.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether the console listens at all (off by default).
    pub enabled: bool,
    /// The admin token every console request must carry (`Authorization: Bearer …` or
    /// `?token=…`); at least [`CONSOLE_TOKEN_MIN_CHARS`] characters when enabled.
    pub token: String,
    /// Address the console listens on; keep it private (loopback, or a management network).
    pub bind: String,
    /// Port of the console (its own, apart from the client port).
    pub port: u16,
}

/// Shortest admin token the console accepts.
pub const CONSOLE_TOKEN_MIN_CHARS: usize = 16;

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            token: String::new(),
            bind: "127.0.0.1".into(),
            port: 6002,
        }
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.token.chars().count() < CONSOLE_TOKEN_MIN_CHARS {
            return Err(ConfigError::new(
                "console.token",
                format!("the console needs an admin token of at least {CONSOLE_TOKEN_MIN_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

/// Damping of refusals after the upgrade (4001, 4003, 4004, 4005, 4007): clients such as
/// webman's `push.js` reconnect at once whatever the close code, so the close is held back.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DampingConfig {
    /// Milliseconds a refused client waits on its open socket before the close; 0 turns damping
    /// off (the close is sent at once, as before).
    pub refusal_delay_ms: u64,
    /// Refusals of one address within `window_secs` from which on it is answered the cheap way:
    /// no `pusher:error` frame, no close handshake, and `repeat_delay_ms` instead.
    pub repeat_after: u32,
    /// Milliseconds a repeated refusal is held before the close.
    pub repeat_delay_ms: u64,
    /// Seconds over which refusals of one address are counted.
    pub window_secs: u64,
    /// Addresses remembered per shard; when full, the least recently refused one is forgotten
    /// (counted in `warren_refusal_addresses_evicted_total`).
    pub table_size: usize,
    /// Refused sockets held open at once per shard; beyond it a refusal is closed at once
    /// (counted as `treatment="over_capacity"`).
    pub max_held: usize,
}

impl Default for DampingConfig {
    fn default() -> Self {
        DampingConfig {
            refusal_delay_ms: 2_000,
            repeat_after: 3,
            repeat_delay_ms: 10_000,
            window_secs: 60,
            table_size: 4096,
            max_held: 1024,
        }
    }
}

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
    fn validate(&self) -> Result<(), ConfigError> {
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
fn validate_webhook_header(key: String, name: &str, value: &str) -> Result<(), ConfigError> {
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

/// Settings of the Redis-backed cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub redis_url: String,
    /// Prefix of the Redis channel names, so several clusters can share one Redis.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// Seconds without hearing from a node before its presence members and subscriptions are
    /// dropped.
    #[serde(default = "default_node_timeout")]
    pub node_timeout: u64,
    /// Seconds between a node's heartbeats.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: u64,
    /// Milliseconds a cross-node query (channel counts) waits for the other nodes' answers.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) for Redis Cluster; `redis_url`
    /// must then name the cluster node that owns the bus channel's slot.
    #[serde(default)]
    pub sharded_pubsub: bool,
    /// Seconds of this node's ordered envelopes kept for re-publishing: while Redis is away
    /// (queued) and after (for nodes that ask for what they missed). Beyond it, envelopes are
    /// dropped, counted and logged.
    #[serde(default = "default_outage_buffer_secs")]
    pub outage_buffer_secs: u64,
    /// Bytes of encoded envelopes that buffer may hold at most (the oldest go first).
    #[serde(default = "default_outage_buffer_bytes")]
    pub outage_buffer_bytes: usize,
}

fn default_cluster_prefix() -> String {
    "warren".into()
}
fn default_node_timeout() -> u64 {
    10
}
fn default_heartbeat_interval() -> u64 {
    2
}
fn default_query_timeout_ms() -> u64 {
    1000
}
fn default_outage_buffer_secs() -> u64 {
    20
}
fn default_outage_buffer_bytes() -> usize {
    64 << 20
}

/// Settings of the server process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// Port for WebSocket clients and the HTTP API.
    pub port: u16,
    /// Number of shards; 0 means one per available CPU.
    pub shards: usize,
    /// Optional path prefix in front of `/app/{key}` (e.g. `/ws`).
    pub path_prefix: String,
    /// Seconds of client silence before the server pings; advertised to clients.
    pub activity_timeout: u64,
    /// Seconds to wait for any frame after a ping before closing with 4201.
    pub pong_timeout: u64,
    /// Largest inbound WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// Send-queue budget of one connection, in bytes; beyond it the connection is closed (4100).
    pub send_queue_bytes: usize,
    /// Seconds a new TCP connection may take to send its request head.
    pub handshake_timeout: u64,
    /// Seconds given to clients to finish the close handshake on shutdown.
    pub shutdown_grace: u64,
    /// Listen backlog of each shard's socket.
    pub listen_backlog: i32,
    /// io_uring registered memory per shard, in KiB (counts against RLIMIT_MEMLOCK).
    pub io_memory_kib: usize,
    /// Proxies (e.g. nginx) whose `X-Real-IP` / `X-Forwarded-For` name the client in logs.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Milliseconds a question to every shard of the node waits for the answers; a shard that
    /// does not answer in time makes the answer partial (the HTTP API then says 503).
    pub gather_timeout_ms: u64,
    /// Most channels one connection may be subscribed to; beyond it a subscribe is refused with
    /// `pusher:subscription_error` (`LimitReached`).
    pub max_channels_per_connection: usize,
    /// Deliveries each shard may hold waiting to be written (its fan-out queue); at the bound,
    /// HTTP publishes are answered 429 and peers' deliveries wait (see docs/architecture.md).
    pub fanout_queue_jobs: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "0.0.0.0".into(),
            port: 6001,
            shards: 0,
            path_prefix: String::new(),
            activity_timeout: 120,
            pong_timeout: 30,
            max_message_bytes: 64 * 1024,
            send_queue_bytes: 1024 * 1024,
            handshake_timeout: 10,
            shutdown_grace: 3,
            listen_backlog: 4096,
            io_memory_kib: 64,
            trusted_proxies: Vec::new(),
            gather_timeout_ms: 2000,
            max_channels_per_connection: 1000,
            fanout_queue_jobs: 4096,
        }
    }
}

impl ServerConfig {
    /// The number of shards to start: the configured value, or one per available CPU.
    pub fn effective_shards(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// One tenant: credentials, switches and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Numeric app id, as used in the HTTP API path (`id = "1"` and `id = 1` both work).
    #[serde(deserialize_with = "string_or_integer")]
    pub id: String,
    /// Public key, as used in the WebSocket path and in signatures.
    pub key: String,
    /// Secret for HMAC signatures.
    pub secret: String,
    /// A disabled app refuses connections with 4003.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most simultaneous connections on this node; `None` for no limit.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Whether clients may send `client-` events.
    #[serde(default = "yes")]
    pub enable_client_events: bool,
    /// Client events one connection may send per second.
    #[serde(default = "default_client_event_rate")]
    pub max_client_events_per_second: u32,
    /// Largest event `data`, in bytes.
    #[serde(default = "default_event_payload")]
    pub max_event_payload_bytes: usize,
    /// Longest channel name, in bytes (200, what the server SDKs check; at most
    /// [`MAX_CHANNEL_NAME_LENGTH_CEILING`]).
    #[serde(default = "default_channel_name_length")]
    pub max_channel_name_length: usize,
    /// Longest event name, in bytes (200, what the SDKs and soketi check; at most
    /// [`MAX_EVENT_NAME_LENGTH_CEILING`]).
    #[serde(default = "default_event_name_length")]
    pub max_event_name_length: usize,
    /// Most channels one HTTP API event may target (100, as Pusher).
    #[serde(default = "default_channels_per_event")]
    pub max_channels_per_event: usize,
    /// Largest HTTP API request body, in bytes (1 MiB; at most
    /// [`MAX_REQUEST_BODY_BYTES_CEILING`]). Beyond it: 413.
    #[serde(default = "default_request_body_bytes")]
    pub max_request_body_bytes: usize,
    /// Most distinct users in one presence channel.
    #[serde(default = "default_presence_members")]
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes of JSON.
    #[serde(default = "default_presence_user_info")]
    pub max_presence_user_info_bytes: usize,
    /// Most events in one `batch_events` request.
    #[serde(default = "default_batch_size")]
    pub max_batch_size: usize,
    /// Events the HTTP API accepts per second for this app on this node (`events` and
    /// `batch_events` together); `None` for no limit. Beyond it: 429.
    #[serde(default)]
    pub max_backend_events_per_second: Option<u32>,
    /// Where this app's webhooks go.
    #[serde(default)]
    pub webhooks: Vec<WebhookTarget>,
    /// Whether `subscription_count` webhooks are sent (non-presence channels).
    #[serde(default)]
    pub enable_subscription_count_webhooks: bool,
    /// Whether subscribers of non-presence channels get `pusher_internal:subscription_count`
    /// on every change of the channel's count (Pusher's dashboard switch).
    #[serde(default)]
    pub enable_subscription_count_events: bool,
    /// Seconds a connection has to sign in (or subscribe to a private or presence channel)
    /// before it is closed with 4009 (Pusher's "authorized connections"); `None`: no limit.
    #[serde(default)]
    pub signin_timeout_secs: Option<u64>,
    /// Seconds a cache channel's last event is kept (30 minutes, as Pusher).
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// Most cache channels with a kept event (or miss marker) on this node; the oldest go first.
    #[serde(default = "default_cache_channels")]
    pub max_cache_channels: usize,
    /// Most bytes of kept cache-channel events on this node; the oldest go first.
    #[serde(default = "default_cache_bytes")]
    pub max_cache_bytes: usize,
    /// Whose message shapes this app's clients expect (`"pusher"`, the default, or
    /// `"workbunny"`); see `docs/migrating.md`.
    #[serde(default)]
    pub compat: Compat,
}

/// The message shapes an app's clients are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// Pusher Channels: `data` is a JSON-encoded string (pusher-js, Laravel Echo, webman's and
    /// workbunny 2.x's `push.js`).
    #[default]
    Pusher,
    /// workbunny/webman-push-server 3.x: `pusher:connection_established` data is a JSON object
    /// and a client event's object `data` is relayed as an object (its `push.js` does not parse
    /// them). pusher-js and Laravel Echo accept these shapes too.
    Workbunny,
}

/// Highest `max_channel_name_length` accepted. Names over 200 bytes are refused by the server
/// SDKs themselves, so a larger limit only serves clients that build their own requests.
pub const MAX_CHANNEL_NAME_LENGTH_CEILING: usize = 1024;

/// Highest `max_event_name_length` accepted.
pub const MAX_EVENT_NAME_LENGTH_CEILING: usize = 1024;

/// Highest `max_request_body_bytes` accepted; the HTTP reader never buffers more than this.
pub const MAX_REQUEST_BODY_BYTES_CEILING: usize = 16 * 1024 * 1024;

/// Accepts a TOML string or integer as text.
fn string_or_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    })
}

fn default_batch_size() -> usize {
    10
}

fn yes() -> bool {
    true
}
fn default_client_event_rate() -> u32 {
    10
}
fn default_event_payload() -> usize {
    10 * 1024
}
fn default_channel_name_length() -> usize {
    200
}
fn default_event_name_length() -> usize {
    200
}
fn default_channels_per_event() -> usize {
    100
}
fn default_request_body_bytes() -> usize {
    1024 * 1024
}
fn default_cache_ttl() -> u64 {
    30 * 60
}
fn default_cache_channels() -> usize {
    10_000
}
fn default_cache_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_presence_members() -> usize {
    100
}
fn default_presence_user_info() -> usize {
    1024
}

/// Values given on the command line; each one, when present, wins over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`
    pub bind: Option<String>,
    /// `--port`
    pub port: Option<u16>,
    /// `--shards`
    pub shards: Option<usize>,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is: a key path such as `apps[0].id`, a file name, or an env variable.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads the file at `path` (or the embedded default), applies the `WARREN_*` variables of
    /// `env` and then `overrides`, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::new(p.display().to_string(), e.to_string()))?,
            None => DEFAULT_CONFIG_TOML.to_string(),
        };
        let mut tree: toml::Value = toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                path.map_or("<embedded default>".into(), |p| p.display().to_string()),
                e.to_string(),
            )
        })?;
        for (name, value) in in_application_order(env) {
            apply_env_override(&mut tree, &name, &value)?;
        }
        check_env_added_apps(&tree)?;
        let mut config: Config = tree
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("config", e.to_string()))?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// The embedded default configuration, validated.
    pub fn embedded_default() -> Config {
        Config::load(None, std::iter::empty(), &Overrides::default())
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates a TOML document (no environment, no overrides).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::new("config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, overrides: &Overrides) {
        if let Some(bind) = &overrides.bind {
            self.server.bind = bind.clone();
        }
        if let Some(port) = overrides.port {
            self.server.port = port;
        }
        if let Some(shards) = overrides.shards {
            self.server.shards = shards;
        }
    }

    /// Checks every rule a running server relies on; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.webhooks.validate()?;
        self.console.validate()?;
        self.damping.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.apps.is_empty() {
            return Err(ConfigError::new("apps", "at least one app is required"));
        }
        let mut ids = ahash::AHashSet::new();
        let mut keys = ahash::AHashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            app.validate(i)?;
            if !ids.insert(app.id.as_str()) {
                return Err(ConfigError::new(
                    format!("apps[{i}].id"),
                    "duplicate app id",
                ));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(ConfigError::new(
                    format!("apps[{i}].key"),
                    "duplicate app key",
                ));
            }
        }
        Ok(())
    }

    /// The largest `max_request_body_bytes` of any app: what the HTTP reader must be ready to
    /// buffer before it knows which app a request is for.
    pub fn largest_request_body(&self) -> usize {
        self.apps
            .iter()
            .map(|a| a.max_request_body_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Whether any app still uses the published default secret.
    pub fn uses_default_secret(&self) -> bool {
        self.apps.iter().any(|a| a.secret == DEFAULT_SECRET)
    }
}

impl DampingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("repeat_after", self.repeat_after as u64),
            ("window_secs", self.window_secs),
            ("table_size", self.table_size as u64),
            ("max_held", self.max_held as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("damping.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("server.{k}");
        if self.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::new(key("bind"), "must be an IP address"));
        }
        if self.shards > 1024 {
            return Err(ConfigError::new(key("shards"), "at most 1024 shards"));
        }
        if !self.path_prefix.is_empty()
            && (!self.path_prefix.starts_with('/') || self.path_prefix.ends_with('/'))
        {
            return Err(ConfigError::new(
                key("path_prefix"),
                "must start with '/' and not end with '/' (e.g. \"/ws\")",
            ));
        }
        let positive = [
            ("activity_timeout", self.activity_timeout as usize),
            ("pong_timeout", self.pong_timeout as usize),
            ("handshake_timeout", self.handshake_timeout as usize),
            ("listen_backlog", self.listen_backlog.max(0) as usize),
            ("io_memory_kib", self.io_memory_kib),
            ("gather_timeout_ms", self.gather_timeout_ms as usize),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
            ),
            ("fanout_queue_jobs", self.fanout_queue_jobs),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key(name), "must be greater than 0"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                key("max_message_bytes"),
                "must be at least 1024",
            ));
        }
        if self.send_queue_bytes < self.max_message_bytes {
            return Err(ConfigError::new(
                key("send_queue_bytes"),
                "must be at least max_message_bytes",
            ));
        }
        Ok(())
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if redis::parse_redis_url(&self.redis_url).is_none()
            || !self.redis_url.starts_with("redis://")
        {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "must be a redis://host[:port][/db] URL",
            ));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new("cluster.prefix", "must not be empty"));
        }
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::new(
                "cluster.heartbeat_interval",
                "must be greater than 0",
            ));
        }
        if self.node_timeout < 2 * self.heartbeat_interval {
            return Err(ConfigError::new(
                "cluster.node_timeout",
                "must be at least twice heartbeat_interval",
            ));
        }
        if self.query_timeout_ms == 0 {
            return Err(ConfigError::new(
                "cluster.query_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.outage_buffer_secs == 0 {
            return Err(ConfigError::new(
                "cluster.outage_buffer_secs",
                "must be greater than 0",
            ));
        }
        if self.outage_buffer_bytes < 64 << 10 {
            return Err(ConfigError::new(
                "cluster.outage_buffer_bytes",
                "must be at least 65536",
            ));
        }
        Ok(())
    }
}

impl AppConfig {
    /// The limits users may set, each within 1 and its ceiling.
    fn validate_limits(&self, index: usize) -> Result<(), ConfigError> {
        let limits = [
            (
                "max_channel_name_length",
                self.max_channel_name_length,
                MAX_CHANNEL_NAME_LENGTH_CEILING,
            ),
            (
                "max_event_name_length",
                self.max_event_name_length,
                MAX_EVENT_NAME_LENGTH_CEILING,
            ),
            (
                "max_channels_per_event",
                self.max_channels_per_event,
                10_000,
            ),
            (
                "max_request_body_bytes",
                self.max_request_body_bytes,
                MAX_REQUEST_BODY_BYTES_CEILING,
            ),
            ("cache_ttl_secs", self.cache_ttl_secs as usize, 24 * 3600),
            ("max_cache_channels", self.max_cache_channels, usize::MAX),
            ("max_cache_bytes", self.max_cache_bytes, usize::MAX),
        ];
        for (name, value, ceiling) in limits {
            if value == 0 || value > ceiling {
                return Err(ConfigError::new(
                    format!("apps[{index}].{name}"),
                    format!("must be between 1 and {ceiling}"),
                ));
            }
        }
        if self.signin_timeout_secs == Some(0) {
            return Err(ConfigError::new(
                format!("apps[{index}].signin_timeout_secs"),
                "must be greater than 0 (leave it out for no limit)",
            ));
        }
        Ok(())
    }

    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("apps[{index}].{k}");
        if self.id.is_empty() || !self.id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new(
                key("id"),
                format!(
                    "must be numeric (the server SDKs refuse other ids), got {:?}",
                    self.id
                ),
            ));
        }
        let credential_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':' && b != b'/')
        };
        if !credential_ok(&self.key) {
            return Err(ConfigError::new(
                key("key"),
                "must be non-empty printable ASCII without ':' or '/'",
            ));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::new(key("secret"), "must not be empty"));
        }
        self.validate_limits(index)?;
        if self.max_event_payload_bytes == 0 {
            return Err(ConfigError::new(
                key("max_event_payload_bytes"),
                "must be greater than 0",
            ));
        }
        if self.max_presence_members == 0 {
            return Err(ConfigError::new(
                key("max_presence_members"),
                "must be greater than 0",
            ));
        }
        for (t, target) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("apps[{index}].webhooks[{t}].{k}");
            if !(target.url.starts_with("http://") || target.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    key("url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if let Some(unknown) = target
                .events
                .iter()
                .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
            {
                return Err(ConfigError::new(
                    key("events"),
                    format!(
                        "unknown event {unknown:?} (known: {})",
                        WEBHOOK_EVENTS.join(", ")
                    ),
                ));
            }
            for (name, value) in &target.headers {
                validate_webhook_header(key(&format!("headers.{name}")), name, value)?;
            }
        }
        Ok(())
    }
}

/// Applies one `WARREN_A__B__0__C=value` variable to the TOML tree; other variables are ignored.
///
/// Variables without the double-underscore separator (`WARREN_PORT`, `WARREN_LOG`) belong to the
/// command-line flags and are not configuration paths.
fn apply_env_override(tree: &mut toml::Value, name: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !path.contains(ENV_PATH_SEPARATOR) {
        return Ok(());
    }
    let segments: Vec<String> = path
        .split(ENV_PATH_SEPARATOR)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let bad = |reason: &str| ConfigError::new(name, reason);
    let (last, parents) = segments.split_last().ok_or_else(|| bad("empty path"))?;
    let mut node = tree;
    for segment in parents {
        node = child_mut(node, segment).ok_or_else(|| bad("no such configuration section"))?;
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| bad("the parent of this key is not a section"))?;
    let value = match table.get(last.as_str()) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        _ => parse_env_value(raw),
    };
    table.insert(last.clone(), value);
    Ok(())
}

/// The `WARREN_*` variables sorted so that array entries come in index order
/// (`WARREN_APPS__2__…` after `WARREN_APPS__1__…`, `__10__` after `__9__`): an entry can only be
/// appended after the one before it exists, whatever order the environment lists them in.
fn in_application_order(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort_by_cached_key(|(name, _)| {
        name.split(ENV_PATH_SEPARATOR)
            .map(|segment| match segment.parse::<u64>() {
                Ok(index) => (0, index, String::new()),
                Err(_) => (1, 0, segment.to_string()),
            })
            .collect::<Vec<_>>()
    });
    vars
}

/// The fields an app cannot do without; an app added from the environment must set each one.
const REQUIRED_APP_FIELDS: [&str; 3] = ["id", "key", "secret"];

/// Refuses an app that lacks a required field with a message naming the variables to set
/// (serde alone would say "missing field `id` in `apps`", without the index).
fn check_env_added_apps(tree: &toml::Value) -> Result<(), ConfigError> {
    let Some(apps) = tree.get("apps").and_then(toml::Value::as_array) else {
        return Ok(());
    };
    for (index, app) in apps.iter().enumerate() {
        let Some(app) = app.as_table() else { continue };
        if let Some(missing) = REQUIRED_APP_FIELDS
            .iter()
            .find(|field| !app.contains_key(**field))
        {
            let vars = REQUIRED_APP_FIELDS
                .map(|f| format!("{ENV_PREFIX}APPS__{index}__{}", f.to_ascii_uppercase()))
                .join(", ");
            return Err(ConfigError::new(
                format!("apps[{index}].{missing}"),
                format!("missing; an app needs id, key and secret (from the environment: {vars})"),
            ));
        }
    }
    Ok(())
}

/// The child `segment` of a table, or entry `segment` of an array (one past the end appends a
/// new, empty table, so that apps can be added from the environment).
fn child_mut<'a>(node: &'a mut toml::Value, segment: &str) -> Option<&'a mut toml::Value> {
    match node {
        toml::Value::Table(table) => Some(
            table
                .entry(segment.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default())),
        ),
        toml::Value::Array(items) => {
            let index: usize = segment.parse().ok()?;
            if index == items.len() {
                items.push(toml::Value::Table(Default::default()));
            }
            items.get_mut(index)
        }
        _ => None,
    }
}

/// Reads an environment value as a TOML literal (number, boolean) or, failing that, a string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_has_one_app_with_soketi_credentials() {
        let config = Config::embedded_default();
        assert_eq!(config.server.port, 6001);
        assert_eq!(config.apps.len(), 1);
        assert_eq!(config.apps[0].id, "1");
        assert_eq!(config.apps[0].key, "app-key");
        assert!(config.uses_default_secret());
    }

    #[test]
    fn environment_overrides_nested_keys_and_keeps_strings_as_strings() {
        let vars = env(&[
            ("WARREN_SERVER__PORT", "7000"),
            ("WARREN_APPS__0__SECRET", "12345"),
            ("WARREN_APPS__0__ENABLE_CLIENT_EVENTS", "false"),
            ("WARREN_PORT", "ignored: belongs to the flag"),
            ("HOME", "/root"),
        ]);
        let config = Config::load(None, vars, &Overrides::default()).unwrap();
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.apps[0].secret, "12345");
        assert!(!config.apps[0].enable_client_events);
    }

    #[test]
    fn environment_can_add_an_app() {
        let vars = env(&[
            ("WARREN_APPS__1__ID", "2"),
            ("WARREN_APPS__1__KEY", "k2"),
            ("WARREN_APPS__1__SECRET", "s2"),
        ]);
        let config = Config::load(None, vars, &Overrides::default()).unwrap();
        assert_eq!(config.apps[1].key, "k2");
        assert_eq!(config.apps[1].id, "2");
    }

    #[test]
    fn environment_adds_apps_in_index_order_whatever_the_listing_order() {
        let vars = env(&[
            ("WARREN_APPS__2__SECRET", "s3"),
            ("WARREN_APPS__2__KEY", "k3"),
            ("WARREN_APPS__2__ID", "3"),
            ("WARREN_APPS__1__ID", "2"),
            ("WARREN_APPS__1__KEY", "k2"),
            ("WARREN_APPS__1__SECRET", "s2"),
        ]);
        let config = Config::load(None, vars, &Overrides::default()).unwrap();
        let keys: Vec<&str> = config.apps.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["app-key", "k2", "k3"]);
    }

    #[test]
    fn an_app_added_from_the_environment_without_its_id_names_the_variables() {
        let vars = env(&[("WARREN_APPS__1__KEY", "k2")]);
        let err = Config::load(None, vars, &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "apps[1].id");
        assert!(
            err.reason
                .contains("WARREN_APPS__1__ID, WARREN_APPS__1__KEY, WARREN_APPS__1__SECRET"),
            "{err}"
        );
    }

    #[test]
    fn console_is_off_by_default_and_needs_a_long_token() {
        assert!(!Config::embedded_default().console.enabled);
        let short = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[console]\nenabled = true\ntoken = \"short\"\n";
        let err = Config::from_toml_str(short).unwrap_err();
        assert_eq!(err.key, "console.token");
        let long = short.replace("\"short\"", "\"0123456789abcdef\"");
        assert!(Config::from_toml_str(&long).unwrap().console.enabled);
    }

    #[test]
    fn flags_win_over_environment() {
        let overrides = Overrides {
            port: Some(9000),
            shards: Some(3),
            bind: Some("127.0.0.1".into()),
        };
        let config =
            Config::load(None, env(&[("WARREN_SERVER__PORT", "7000")]), &overrides).unwrap();
        assert_eq!(config.server.port, 9000);
        assert_eq!(config.server.effective_shards(), 3);
        assert_eq!(config.server.bind, "127.0.0.1");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                r#"[[apps]]
id = "abc"
key = "k"
secret = "s""#,
                "apps[0].id",
            ),
            (
                r#"[[apps]]
id = "1"
key = "a:b"
secret = "s""#,
                "apps[0].key",
            ),
            (
                r#"[server]
bind = "nowhere"
[[apps]]
id = "1"
key = "k"
secret = "s""#,
                "server.bind",
            ),
            ("apps = []", "apps"),
            (
                r#"[[apps]]
id = "1"
key = "k"
secret = "s"
[[apps]]
id = "1"
key = "k2"
secret = "s""#,
                "apps[1].id",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn cluster_section_is_optional_and_checked() {
        let base = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        assert!(Config::from_toml_str(base).unwrap().cluster.is_none());
        let ok = format!("{base}[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\n");
        let cluster = Config::from_toml_str(&ok).unwrap().cluster.unwrap();
        assert_eq!(
            (cluster.prefix.as_str(), cluster.node_timeout),
            ("warren", 10)
        );
        let bad = format!("{base}[cluster]\nredis_url = \"http://x\"\n");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "cluster.redis_url"
        );
        let bad = format!("{base}[cluster]\nredis_url = \"redis://x\"\nnode_timeout = 1\n");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "cluster.node_timeout"
        );
        assert_eq!(
            (cluster.outage_buffer_secs, cluster.outage_buffer_bytes),
            (20, 64 << 20)
        );
        let bad = format!("{base}[cluster]\nredis_url = \"redis://x\"\noutage_buffer_secs = 0\n");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "cluster.outage_buffer_secs"
        );
    }

    #[test]
    fn webhook_targets_are_checked() {
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let ok = format!("{app}webhooks = [{{ url = \"https://x/hook\", events = [\"member_added\"], filter = {{ channel_prefix = \"presence-\" }} }}]\n");
        let config = Config::from_toml_str(&ok).unwrap();
        assert_eq!(
            config.apps[0].webhooks[0].filter.channel_prefix.as_deref(),
            Some("presence-")
        );
        assert_eq!(config.webhooks.grace_ms, 3000);
        let bad = format!("{app}webhooks = [{{ url = \"ftp://x\" }}]\n");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "apps[0].webhooks[0].url"
        );
        let bad = format!("{app}webhooks = [{{ url = \"http://x\", events = [\"nope\"] }}]\n");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "apps[0].webhooks[0].events"
        );
    }

    #[test]
    fn limits_default_to_pushers_values_and_are_checked() {
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let config = Config::from_toml_str(app).unwrap();
        let a = &config.apps[0];
        assert_eq!(
            (
                a.max_channel_name_length,
                a.max_event_name_length,
                a.max_channels_per_event,
                a.max_request_body_bytes,
            ),
            (200, 200, 100, 1024 * 1024)
        );
        assert_eq!((a.cache_ttl_secs, a.signin_timeout_secs), (1800, None));
        assert!(!a.enable_subscription_count_events);
        assert_eq!(config.largest_request_body(), 1024 * 1024);
        let raised = format!("{app}max_channel_name_length = 400\nmax_event_name_length = 300\nmax_channels_per_event = 500\nmax_request_body_bytes = 4194304\nsignin_timeout_secs = 30\n");
        let config = Config::from_toml_str(&raised).unwrap();
        assert_eq!(config.apps[0].max_channel_name_length, 400);
        assert_eq!(config.largest_request_body(), 4 * 1024 * 1024);
        for (line, key) in [
            ("max_channel_name_length = 0", "max_channel_name_length"),
            ("max_channel_name_length = 1025", "max_channel_name_length"),
            ("max_event_name_length = 0", "max_event_name_length"),
            ("max_channels_per_event = 0", "max_channels_per_event"),
            (
                "max_request_body_bytes = 16777217",
                "max_request_body_bytes",
            ),
            ("cache_ttl_secs = 0", "cache_ttl_secs"),
            ("max_cache_bytes = 0", "max_cache_bytes"),
            ("signin_timeout_secs = 0", "signin_timeout_secs"),
        ] {
            let err = Config::from_toml_str(&format!("{app}{line}\n")).unwrap_err();
            assert_eq!(err.key, format!("apps[0].{key}"), "{line}: {err}");
        }
    }

    #[test]
    fn webhook_filters_match_prefix_and_suffix() {
        let filter = |prefix: Option<&str>, suffix: Option<&str>| WebhookFilter {
            channel_prefix: prefix.map(str::to_string),
            channel_suffix: suffix.map(str::to_string),
        };
        assert!(filter(None, None).matches("anything"));
        assert!(filter(Some("presence-"), None).matches("presence-room"));
        assert!(!filter(Some("presence-"), None).matches("private-room"));
        assert!(filter(None, Some("-admin")).matches("private-team-admin"));
        assert!(!filter(None, Some("-admin")).matches("private-admin-team"));
        let both = filter(Some("private-"), Some("-admin"));
        assert!(both.matches("private-x-admin"));
        assert!(!both.matches("presence-x-admin") && !both.matches("private-x"));
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let text = format!("{app}webhooks = [{{ url = \"http://x\", events = [\"cache_miss\"], filter = {{ channel_suffix = \"-admin\" }} }}]\n");
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(
            config.apps[0].webhooks[0].filter.channel_suffix.as_deref(),
            Some("-admin")
        );
    }

    #[test]
    fn webhook_headers_may_not_name_the_ones_warren_sets() {
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let with_headers = |headers: &str| {
            format!("{app}webhooks = [{{ url = \"http://a\" }}, {{ url = \"http://b\", headers = {{ {headers} }} }}]\n")
        };
        let ok = Config::from_toml_str(&with_headers(
            "X-Custom = \"v\", Authorization = \"Bearer t\"",
        ))
        .unwrap();
        assert_eq!(ok.apps[0].webhooks[1].headers["X-Custom"], "v");
        for name in [
            "X-Pusher-Signature",
            "x-pusher-key",
            "CONTENT-TYPE",
            "Content-Length",
            "host",
        ] {
            let err =
                Config::from_toml_str(&with_headers(&format!("\"{name}\" = \"v\""))).unwrap_err();
            assert_eq!(
                err.key,
                format!("apps[0].webhooks[1].headers.{name}"),
                "{err}"
            );
            assert!(err.to_string().contains("set by Warren"), "{err}");
        }
        for (header, why) in [
            (
                "\"X-A\" = \"v\\r\\nX-Pusher-Key: forged\"",
                "control characters",
            ),
            ("\"X A\" = \"v\"", "header name"),
        ] {
            let err = Config::from_toml_str(&with_headers(header)).unwrap_err();
            assert!(err.key.starts_with("apps[0].webhooks[1].headers."), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
        let bad = format!("[webhooks]\nmax_batch_size = 0\n{app}");
        assert_eq!(
            Config::from_toml_str(&bad).unwrap_err().key,
            "webhooks.max_batch_size"
        );
    }

    #[test]
    fn compat_defaults_to_pusher_and_names_bad_values() {
        let base = "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\n";
        let config = Config::from_toml_str(base).unwrap();
        assert_eq!(config.apps[0].compat, Compat::Pusher);
        let config = Config::from_toml_str(&format!("{base}compat = \"workbunny\"\n")).unwrap();
        assert_eq!(config.apps[0].compat, Compat::Workbunny);
        let error = Config::from_toml_str(&format!("{base}compat = \"soketi\"\n")).unwrap_err();
        assert!(error.to_string().contains("compat"), "{error}");
    }

    #[test]
    fn damping_is_on_by_default_and_checked() {
        let base = "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\n";
        let config = Config::from_toml_str(base).unwrap();
        assert_eq!(config.damping.refusal_delay_ms, 2_000);
        let error =
            Config::from_toml_str(&format!("{base}[damping]\ntable_size = 0\n")).unwrap_err();
        assert!(error.to_string().contains("damping.table_size"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_toml_str(
            "[server]\nprot = 1\n[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"",
        )
        .unwrap_err();
        assert!(err.reason.contains("prot"), "{err}");
    }

    #[test]
    fn bad_environment_path_is_refused() {
        let err = Config::load(
            None,
            env(&[("WARREN_SERVER__PORT__X", "1")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "WARREN_SERVER__PORT__X");
    }
}
