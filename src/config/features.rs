//! Settings of the optional features: the debug console and the damping of refused clients.

use super::*;

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
