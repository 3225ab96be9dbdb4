//! The human-readable summary that `warren --check-config` prints: what the server would listen
//! on, how many shards it would run, each app's id and key, the cluster link and the webhook
//! receivers.
//!
//! It never contains a secret: app secrets and the console's token are left out, a password in
//! the Redis URL or in a webhook URL is replaced by `***`, and of the extra webhook headers
//! (often tokens) only the names are shown.

use super::{AppConfig, Config, WebhookTarget};
use std::fmt::Write;

/// What replaces a password (or a lone user-info token) in a printed URL.
const REDACTED: &str = "***";

impl Config {
    /// The multi-line summary printed by `--check-config` (no secrets; see the module docs).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let server = &self.server;
        let _ = writeln!(out, "configuration OK");
        let _ = writeln!(out, "listen: {}:{}", server.bind, server.port);
        let _ = writeln!(
            out,
            "websocket path: {}/app/{{key}}",
            server.path_prefix.trim_end_matches('/')
        );
        let _ = writeln!(
            out,
            "shards: {}{}",
            server.effective_shards(),
            if server.shards == 0 {
                " (one per CPU)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "apps: {}", self.apps.len());
        for app in &self.apps {
            write_app(&mut out, app);
        }
        match &self.cluster {
            Some(cluster) => {
                let _ = writeln!(
                    out,
                    "cluster: redis {} (prefix \"{}\"{})",
                    redact_url(&cluster.redis_url),
                    cluster.prefix,
                    if cluster.sharded_pubsub {
                        ", sharded pub/sub"
                    } else {
                        ""
                    }
                );
            }
            None => {
                let _ = writeln!(out, "cluster: off (single node)");
            }
        }
        if self.console.enabled {
            let _ = writeln!(
                out,
                "console: http://{}:{}/console (admin token set)",
                self.console.bind, self.console.port
            );
        } else {
            let _ = writeln!(out, "console: off");
        }
        out
    }
}

/// One app's line and, below it, one line per webhook receiver.
fn write_app(out: &mut String, app: &AppConfig) {
    let mut switches = Vec::new();
    if !app.enabled {
        switches.push("disabled".to_string());
    }
    if !app.enable_client_events {
        switches.push("no client events".to_string());
    }
    if let Some(max) = app.max_connections {
        switches.push(format!("max {max} connections"));
    }
    let switches = if switches.is_empty() {
        String::new()
    } else {
        format!(" ({})", switches.join(", "))
    };
    let _ = writeln!(out, "  app id {} key {}{}", app.id, app.key, switches);
    if app.webhooks.is_empty() {
        let _ = writeln!(out, "    webhooks: none");
    }
    for target in &app.webhooks {
        write_webhook(out, target);
    }
}

/// A webhook receiver: its URL (password hidden), its event and channel filters, header names.
fn write_webhook(out: &mut String, target: &WebhookTarget) {
    let events = if target.events.is_empty() {
        "all events".to_string()
    } else {
        target.events.join(", ")
    };
    let _ = write!(out, "    webhook {} ({events}", redact_url(&target.url));
    if let Some(prefix) = &target.filter.channel_prefix {
        let _ = write!(out, "; channels \"{prefix}*\"");
    }
    if !target.headers.is_empty() {
        let names: Vec<&str> = target.headers.keys().map(String::as_str).collect();
        let _ = write!(out, "; headers {} (values hidden)", names.join(", "));
    }
    let _ = writeln!(out, ")");
}

/// `scheme://user:password@host/...` with the password (or a lone user-info token, which is
/// how Redis takes a bare password) replaced by `***`; other URLs unchanged.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user_info = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    format!("{scheme}://{user_info}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[server]
bind = "127.0.0.1"
port = 7001
shards = 3
path_prefix = "/ws"

[[apps]]
id = "1"
key = "key-one"
secret = "secret-one-xyz"

[[apps]]
id = 2
key = "key-two"
secret = "secret-two-xyz"
enable_client_events = false

[[apps.webhooks]]
url = "https://hook:hookpass-xyz@example.test/pusher?x=1"
events = ["member_added"]
filter = { channel_prefix = "presence-" }
headers = { "X-Token" = "token-xyz" }

[cluster]
redis_url = "redis://default:redispass-xyz@10.0.0.5:6379/0"

[console]
enabled = true
token = "console-token-xyz-0123"
"#;

    #[test]
    fn summary_names_listen_address_shards_apps_cluster_and_webhooks() {
        let summary = Config::from_toml_str(CONFIG).unwrap().summary();
        for expected in [
            "listen: 127.0.0.1:7001",
            "websocket path: /ws/app/{key}",
            "shards: 3",
            "apps: 2",
            "app id 1 key key-one",
            "app id 2 key key-two (no client events)",
            "webhook https://hook:***@example.test/pusher?x=1 (member_added; channels \"presence-*\"; headers X-Token (values hidden))",
            "cluster: redis redis://default:***@10.0.0.5:6379/0 (prefix \"warren\")",
            "console: http://127.0.0.1:6002/console (admin token set)",
        ] {
            assert!(summary.contains(expected), "{expected:?} not in\n{summary}");
        }
    }

    #[test]
    fn summary_never_contains_a_secret() {
        let summary = Config::from_toml_str(CONFIG).unwrap().summary();
        assert!(!summary.contains("-xyz"), "a secret leaked:\n{summary}");
    }

    #[test]
    fn redaction_handles_bare_passwords_and_plain_urls() {
        assert_eq!(redact_url("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("http://example.test/a@b"),
            "http://example.test/a@b"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
