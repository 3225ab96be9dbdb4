//! What the console shows and sends, taken from Warren's own public surfaces over loopback, as
//! an operator's script would: `/metrics` for connections per shard, the signed HTTP API for
//! channels, subscriber counts and presence members, and for the test event. The console thus
//! needs no access to the shards' state and adds nothing to their work while closed.

use crate::auth::request::signed_query;
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one call to the server may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most presence channels whose members one state snapshot lists.
const MAX_PRESENCE_CHANNELS: usize = 20;

/// The credentials the console signs with, one per app.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// App id.
    pub id: String,
    /// App key.
    pub key: String,
    /// App secret (never sent to the page).
    pub secret: String,
}

/// Connections of one shard.
#[derive(Debug, Serialize)]
pub struct ShardConnections {
    /// Shard index.
    pub shard: String,
    /// Open connections.
    pub connections: u64,
}

/// One occupied channel.
#[derive(Debug, Serialize)]
pub struct ChannelState {
    /// Channel name.
    pub name: String,
    /// Subscribed connections (all nodes).
    pub subscription_count: u64,
    /// Presence members' user ids (presence channels only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
}

/// One app's part of the state.
#[derive(Debug, Serialize)]
pub struct AppState {
    /// App id.
    pub id: String,
    /// App key.
    pub key: String,
    /// Occupied channels, by name; an error text when the API did not answer.
    pub channels: Vec<ChannelState>,
    /// Why the channels could not be listed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything the console's state panel shows.
#[derive(Debug, Serialize)]
pub struct State {
    /// Connections per shard of this node.
    pub shards: Vec<ShardConnections>,
    /// Apps with their channels.
    pub apps: Vec<AppState>,
    /// Console viewers connected now.
    pub viewers: usize,
    /// Events the console's log dropped at its bound since the start.
    pub log_dropped: u64,
}

/// A client of the server's loopback address.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: String,
    agent: ureq::Agent,
}

impl Upstream {
    /// For the server listening on `addr` (an unspecified address is reached over 127.0.0.1).
    pub fn new(addr: SocketAddr) -> Upstream {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Upstream {
            base: format!("http://{host}:{}", addr.port()),
            agent: ureq::AgentBuilder::new().timeout(CALL_TIMEOUT).build(),
        }
    }

    /// A full state snapshot.
    pub fn state(&self, apps: &[AppCredentials]) -> State {
        State {
            shards: self.shard_connections().unwrap_or_default(),
            apps: apps.iter().map(|app| self.app_state(app)).collect(),
            viewers: super::tap::viewers(),
            log_dropped: super::tap::dropped_total(),
        }
    }

    /// Publishes `event` on `channel` through the signed HTTP API; the API's status and body.
    pub fn trigger(
        &self,
        app: &AppCredentials,
        channel: &str,
        event: &str,
        data: &str,
    ) -> (u16, String) {
        let body =
            serde_json::json!({ "name": event, "channels": [channel], "data": data }).to_string();
        let path = format!("/apps/{}/events", app.id);
        let query = signed_query(
            "POST",
            &path,
            &app.key,
            &app.secret,
            now_secs(),
            body.as_bytes(),
            &[],
        );
        let url = format!("{}{path}?{query}", self.base);
        let answer = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body);
        match answer {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(error) => (502, format!("the server did not answer: {error}")),
        }
    }

    fn shard_connections(&self) -> Result<Vec<ShardConnections>, String> {
        let text = self
            .agent
            .get(&format!("{}/metrics", self.base))
            .call()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("warren_connections{shard=\"")?;
                let (shard, value) = rest.split_once("\"} ")?;
                Some(ShardConnections {
                    shard: shard.to_string(),
                    connections: value.trim().parse().ok()?,
                })
            })
            .collect())
    }

    fn app_state(&self, app: &AppCredentials) -> AppState {
        let (channels, error) = match self.channels(app) {
            Ok(channels) => (channels, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        AppState {
            id: app.id.clone(),
            key: app.key.clone(),
            channels,
            error,
        }
    }

    fn channels(&self, app: &AppCredentials) -> Result<Vec<ChannelState>, String> {
        let listing = self.signed_get(
            app,
            &format!("/apps/{}/channels", app.id),
            &[("info", "subscription_count")],
        )?;
        let mut channels: Vec<ChannelState> = listing["channels"]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(name, info)| ChannelState {
                        name: name.clone(),
                        subscription_count: info["subscription_count"].as_u64().unwrap_or(0),
                        members: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        for channel in channels
            .iter_mut()
            .filter(|c| c.name.starts_with("presence-"))
            .take(MAX_PRESENCE_CHANNELS)
        {
            let users = self.signed_get(
                app,
                &format!("/apps/{}/channels/{}/users", app.id, channel.name),
                &[],
            )?;
            channel.members = Some(
                users["users"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|u| u["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            );
        }
        Ok(channels)
    }

    fn signed_get(
        &self,
        app: &AppCredentials,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, String> {
        let query = signed_query("GET", path, &app.key, &app.secret, now_secs(), b"", params);
        let response = self
            .agent
            .get(&format!("{}{path}?{query}", self.base))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        serde_json::from_reader(response.into_reader()).map_err(|e| format!("GET {path}: {e}"))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
