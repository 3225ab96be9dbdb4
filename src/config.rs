//! Configuration: the TOML file (or the embedded default), `WARREN_*` environment overrides and
//! command-line flags, merged in that order into one validated [`Config`].
//!
//! Nothing here touches the network or the runtime; a bad configuration is refused with a
//! [`ConfigError`] that names the key and the reason.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

mod env;
mod features;
mod summary;
mod validate;
mod webhooks;

use env::{apply_env_override, check_env_added_apps, in_application_order};
pub use features::*;
pub use webhooks::*;

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
    /// Socket writes each shard's fan-out queue may hold (a delivery counts its channel's local
    /// subscribers); at the bound, as at `fanout_queue_jobs`.
    pub fanout_queue_writes: usize,
    /// Connections each shard closes per second on a graceful stop (0: all at once); see
    /// docs/deployment.md for how it adds to `shutdown_grace` and systemd's `TimeoutStopSec`.
    pub drain_rate: usize,
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
            fanout_queue_writes: 1_000_000,
            drain_rate: 2_000,
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

#[cfg(test)]
mod tests;
