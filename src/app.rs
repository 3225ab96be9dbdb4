//! Tenants: each [`App`] carries its credentials and limits; the [`AppRegistry`] finds an app by
//! key (WebSocket path) or by id (HTTP API path).
//!
//! The registry is immutable after start-up and shared read-only by every shard. The only
//! mutable part of an app is its node-wide connection counter, an atomic touched once per
//! connection open and close (never per message).

use crate::config::{AppConfig, Config};
use ahash::AHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One tenant of the server.
#[derive(Debug)]
pub struct App {
    /// Position in the registry; a compact handle used in channel-table keys.
    pub index: u32,
    /// Credentials, switches and limits as configured.
    pub config: AppConfig,
    /// Connections currently open on this node (shared with the app's later versions after a
    /// configuration reload).
    connections: Arc<AtomicU64>,
    /// HTTP API event budget: the current second (high 32 bits) and events counted in it.
    backend_events: Arc<AtomicU64>,
    /// Removed by a reload: kept only so that indices stay stable; unreachable by key or id.
    pub removed: bool,
}

impl App {
    /// Numeric app id (as text).
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Public key.
    pub fn key(&self) -> &str {
        &self.config.key
    }

    /// Secret used for HMAC signatures.
    pub fn secret(&self) -> &str {
        &self.config.secret
    }

    /// Reserves a connection slot; `false` when the app is at its connection limit.
    pub fn try_acquire_connection(&self) -> bool {
        let limit = self.config.max_connections.unwrap_or(u64::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Releases a slot taken by [`App::try_acquire_connection`].
    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts `events` HTTP API events in second `now_secs` against the app's per-second limit;
    /// `false` (and nothing counted) when they would exceed it. Always `true` without a limit.
    pub fn try_accept_backend_events(&self, events: u32, now_secs: u64) -> bool {
        let Some(limit) = self.config.max_backend_events_per_second else {
            return true;
        };
        let second = now_secs & 0xffff_ffff;
        self.backend_events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let count = if packed >> 32 == second {
                    packed & 0xffff_ffff
                } else {
                    0
                };
                (count + u64::from(events) <= u64::from(limit))
                    .then_some((second << 32) | (count + u64::from(events)))
            })
            .is_ok()
    }

    /// Connections currently open on this node.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }
}

/// All apps of the node, looked up by key or id.
#[derive(Debug)]
pub struct AppRegistry {
    apps: Vec<Arc<App>>,
    by_key: AHashMap<String, u32>,
    by_id: AHashMap<String, u32>,
}

impl AppRegistry {
    /// Builds the registry from a validated configuration.
    pub fn new(config: &Config) -> Self {
        let apps: Vec<Arc<App>> = config
            .apps
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Arc::new(App {
                    index: i as u32,
                    config: c.clone(),
                    connections: Arc::default(),
                    backend_events: Arc::default(),
                    removed: false,
                })
            })
            .collect();
        AppRegistry::from_apps(apps)
    }

    fn from_apps(apps: Vec<Arc<App>>) -> Self {
        let live = || apps.iter().filter(|a| !a.removed);
        let by_key = live().map(|a| (a.config.key.clone(), a.index)).collect();
        let by_id = live().map(|a| (a.config.id.clone(), a.index)).collect();
        AppRegistry {
            apps,
            by_key,
            by_id,
        }
    }

    /// The registry after a configuration reload: an app keeps its index (and its counters)
    /// when its id stays; a removed app stays as a disabled tombstone so indices never move; new
    /// apps are appended.
    pub fn reloaded(&self, config: &Config) -> AppRegistry {
        let mut apps: Vec<Arc<App>> = self
            .apps
            .iter()
            .map(|old| {
                let fresh = config.apps.iter().find(|c| c.id == old.config.id);
                Arc::new(App {
                    index: old.index,
                    config: fresh.cloned().unwrap_or_else(|| old.config.clone()),
                    connections: old.connections.clone(),
                    backend_events: old.backend_events.clone(),
                    removed: fresh.is_none(),
                })
            })
            .collect();
        for added in config.apps.iter().filter(|c| self.by_id(&c.id).is_none()) {
            apps.push(Arc::new(App {
                index: apps.len() as u32,
                config: added.clone(),
                connections: Arc::default(),
                backend_events: Arc::default(),
                removed: false,
            }));
        }
        AppRegistry::from_apps(apps)
    }

    /// Number of app slots (removed ones included).
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether there is no app at all.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The app with this public key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key).map(|&i| &self.apps[i as usize])
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id).map(|&i| &self.apps[i as usize])
    }

    /// The app at this registry index; `None` for an index this registry has not seen (a peer
    /// shard that applied a newer reload may name one).
    pub fn get(&self, index: u32) -> Option<&Arc<App>> {
        self.apps.get(index as usize)
    }

    /// Every app slot, in configuration order (removed apps included: check `removed`).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_is_enforced_and_released() {
        let mut config = Config::embedded_default();
        config.apps[0].max_connections = Some(2);
        let registry = AppRegistry::new(&config);
        let app = registry.by_key("app-key").unwrap();
        assert!(app.try_acquire_connection());
        assert!(app.try_acquire_connection());
        assert!(!app.try_acquire_connection());
        app.release_connection();
        assert!(app.try_acquire_connection());
        assert_eq!(app.connection_count(), 2);
        assert!(registry.by_id("1").is_some());
        assert!(registry.by_key("nope").is_none());
    }

    #[test]
    fn a_reload_keeps_indices_and_counters() {
        let mut config = Config::embedded_default();
        let mut second = config.apps[0].clone();
        second.id = "2".into();
        second.key = "k2".into();
        config.apps.push(second.clone());
        let registry = AppRegistry::new(&config);
        assert!(registry.by_key("app-key").unwrap().try_acquire_connection());
        // Change app 1's secret, remove app 2, add app 3.
        let mut next = Config::embedded_default();
        next.apps[0].secret = "rotated".into();
        let mut third = second;
        third.id = "3".into();
        third.key = "k3".into();
        next.apps.push(third);
        let reloaded = registry.reloaded(&next);
        let one = reloaded.by_id("1").unwrap();
        assert_eq!(
            (one.index, one.secret(), one.connection_count()),
            (0, "rotated", 1)
        );
        assert!(reloaded.by_key("k2").is_none() && reloaded.get(1).unwrap().removed);
        assert_eq!(reloaded.by_key("k3").unwrap().index, 2);
        assert_eq!(reloaded.len(), 3);
    }

    #[test]
    fn backend_event_limit_counts_per_second() {
        let mut config = Config::embedded_default();
        let registry = AppRegistry::new(&config);
        assert!(registry
            .get(0)
            .unwrap()
            .try_accept_backend_events(1_000_000, 5));
        config.apps[0].max_backend_events_per_second = Some(10);
        let registry = AppRegistry::new(&config);
        let app = registry.get(0).unwrap();
        assert!(app.try_accept_backend_events(6, 100));
        assert!(!app.try_accept_backend_events(5, 100));
        assert!(app.try_accept_backend_events(4, 100));
        assert!(!app.try_accept_backend_events(1, 100));
        assert!(app.try_accept_backend_events(10, 101));
    }
}
