//! The rules a running server relies on, checked per section; each error names its key.

use super::*;

impl DampingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
            ("fanout_queue_writes", self.fanout_queue_writes),
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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    pub(super) fn validate_limits(&self, index: usize) -> Result<(), ConfigError> {
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

    pub(super) fn validate(&self, index: usize) -> Result<(), ConfigError> {
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
