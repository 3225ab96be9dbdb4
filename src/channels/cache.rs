//! Cache channels (PROTOCOL.md §2.8): the last event of each `cache-`, `private-cache-`,
//! `private-encrypted-cache-` and `presence-cache-` channel, kept for a TTL (30 minutes by
//! default, as on the hosted service) and sent to each new subscriber right after
//! `subscription_succeeded`; `pusher:cache_miss` (and one `cache_miss` webhook) when there is
//! none.
//!
//! Every shard keeps a table of its own, updated in its fan-out order (so a replay is exact
//! against the live deliveries, see `shard::cache`), and every node keeps its own (a publish is
//! stored on every node it reaches), so a subscriber on any node finds what was published on any
//! other. Entries hold the complete encoded WebSocket frame ([`CachedFrame`]), the very
//! allocation every shard delivered: the shards' tables share the bytes, and a replay is one
//! send of a shared buffer.
//!
//! Bounds, per app and shard ([`CacheLimits`]): at most `max_channels` channels and `max_bytes`
//! bytes (channel name + frame + a fixed per-entry overhead). At a bound the entries stored longest ago
//! are evicted first (counted in `warren_cache_evictions_total`); an event larger than
//! `max_bytes` on its own is not stored and removes the channel's older entry, so a replay never
//! shows an event older than the last one published.
//!
//! After a miss the channel keeps a small marker for one TTL, so the `cache_miss` webhook goes
//! once per channel and TTL, not once per subscriber (the hosted service de-duplicates too);
//! markers count against the same bounds.

use crate::config::AppConfig;
use crate::metrics;
use ahash::AHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an event stays cached unless the app says otherwise: 30 minutes, the hosted
/// service's TTL (soketi and sockudo use an hour).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

/// Bytes charged for each entry on top of its channel name and frame (map slots, order index).
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// One app's cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// How long an entry lives.
    pub ttl: Duration,
    /// Most channels with an entry (events and miss markers).
    pub max_channels: usize,
    /// Most bytes of entries.
    pub max_bytes: usize,
}

impl CacheLimits {
    /// The limits each shard applies to `app`: its TTL and its node-wide bounds (every shard
    /// keeps every cache channel; the frames' bytes are shared between the shards, so a node holds
    /// them once).
    pub fn for_app(app: &AppConfig) -> CacheLimits {
        CacheLimits {
            ttl: Duration::from_secs(app.cache_ttl_secs),
            max_channels: app.max_cache_channels,
            max_bytes: app.max_cache_bytes,
        }
    }
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            ttl: DEFAULT_TTL,
            max_channels: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An encoded channel event as the cache keeps it: the WebSocket frame every subscriber was
/// sent (shared), and where its JSON text starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFrame {
    /// The whole frame (header and payload), as written to sockets.
    pub frame: Arc<[u8]>,
    /// Offset of the payload (the JSON text) in `frame`.
    pub text_at: usize,
}

impl CachedFrame {
    /// The event's JSON text (empty if the offset or the bytes are wrong).
    pub fn text(&self) -> &str {
        self.frame
            .get(self.text_at..)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("")
    }
}

#[derive(Debug)]
struct Entry {
    /// The cached frame; `None` for a miss marker.
    frame: Option<CachedFrame>,
    expires_at: Instant,
    seq: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct AppCache {
    entries: AHashMap<Box<str>, Entry>,
    /// Store order (sequence → channel): the front is the oldest, the first to expire or go.
    order: BTreeMap<u64, Box<str>>,
    next_seq: u64,
    bytes: usize,
}

impl AppCache {
    fn insert(&mut self, channel: &str, frame: Option<CachedFrame>, expires_at: Instant) {
        self.remove(channel);
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = entry_bytes(channel, frame.as_ref());
        self.bytes += bytes;
        self.order.insert(seq, channel.into());
        self.entries.insert(
            channel.into(),
            Entry {
                frame,
                expires_at,
                seq,
                bytes,
            },
        );
    }

    fn remove(&mut self, channel: &str) -> Option<Entry> {
        let entry = self.entries.remove(channel)?;
        self.order.remove(&entry.seq);
        self.bytes -= entry.bytes;
        Some(entry)
    }

    /// Removes the oldest entry; its channel, or `None` when empty.
    fn pop_oldest(&mut self) -> Option<Box<str>> {
        let (_, channel) = self.order.pop_first()?;
        if let Some(entry) = self.entries.remove(&channel) {
            self.bytes -= entry.bytes;
        }
        Some(channel)
    }

    /// Evicts the oldest entries until one of `incoming` bytes fits; how many went.
    fn make_room(&mut self, incoming: usize, limits: &CacheLimits) -> usize {
        let mut evicted = 0;
        while !self.entries.is_empty()
            && (self.entries.len() >= limits.max_channels
                || self.bytes + incoming > limits.max_bytes)
        {
            self.pop_oldest();
            evicted += 1;
        }
        evicted
    }

    /// Removes entries expired at `now`; how many went.
    fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((_, channel)) = self.order.first_key_value() {
            if self
                .entries
                .get(channel)
                .is_some_and(|e| e.expires_at > now)
            {
                break;
            }
            self.pop_oldest();
            expired += 1;
        }
        expired
    }
}

fn entry_bytes(channel: &str, frame: Option<&CachedFrame>) -> usize {
    channel.len() + frame.map_or(0, |f| f.frame.len()) + ENTRY_OVERHEAD_BYTES
}

/// What a new subscriber of a cache channel gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Send this frame (the last event) right after `subscription_succeeded`.
    Event(CachedFrame),
    /// Send `pusher:cache_miss`; `webhook` says whether this miss also sends the `cache_miss`
    /// webhook (the first miss of the channel within a TTL).
    Miss {
        /// Whether to send the `cache_miss` webhook.
        webhook: bool,
    },
}

/// What `GET /channels/{name}?info=cache` reports about a cached event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// The cached event's `data` string (what the publisher sent; empty when it had none).
    pub data: String,
    /// Whole seconds the entry still lives (at least 1 while it is there).
    pub ttl_secs: u64,
}

/// The cache of the channels whose home is this shard, per app.
#[derive(Debug, Default)]
pub struct ChannelCache {
    apps: AHashMap<u32, AppCache>,
}

impl ChannelCache {
    /// Stores `frame` (an encoded channel event) as the last event of `channel`, replacing any
    /// earlier one or miss marker, evicting the oldest entries if the app is at a bound.
    pub fn store(
        &mut self,
        app: u32,
        channel: &str,
        frame: CachedFrame,
        now: Instant,
        limits: &CacheLimits,
    ) {
        let cache = self.apps.entry(app).or_default();
        cache.remove(channel);
        let bytes = entry_bytes(channel, Some(&frame));
        if bytes > limits.max_bytes || limits.max_channels == 0 {
            count_evictions(1);
            self.drop_if_empty(app);
            return;
        }
        cache.expire(now);
        count_evictions(cache.make_room(bytes, limits));
        cache.insert(channel, Some(frame), now + limits.ttl);
    }

    /// What a new subscriber of `channel` gets; records a miss marker on the first miss.
    pub fn replay(
        &mut self,
        app: u32,
        channel: &str,
        now: Instant,
        limits: &CacheLimits,
    ) -> Replay {
        let cache = self.apps.entry(app).or_default();
        match cache.entries.get(channel) {
            Some(entry) if entry.expires_at > now => {
                return match &entry.frame {
                    Some(frame) => Replay::Event(frame.clone()),
                    None => Replay::Miss { webhook: false },
                }
            }
            Some(_) => {
                cache.remove(channel);
            }
            None => {}
        }
        let bytes = entry_bytes(channel, None);
        if bytes <= limits.max_bytes && limits.max_channels > 0 {
            cache.expire(now);
            count_evictions(cache.make_room(bytes, limits));
            cache.insert(channel, None, now + limits.ttl);
        }
        self.drop_if_empty(app);
        Replay::Miss { webhook: true }
    }

    /// The cached event of `channel` for the HTTP API; `None` when there is none (`cache: null`).
    pub fn info(&self, app: u32, channel: &str, now: Instant) -> Option<CacheInfo> {
        let entry = self.apps.get(&app)?.entries.get(channel)?;
        let frame = entry.frame.as_ref()?.text();
        let left = entry.expires_at.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        Some(CacheInfo {
            data: frame_data(frame),
            ttl_secs: left.as_secs_f64().ceil() as u64,
        })
    }

    /// Removes every entry expired at `now`; call it from a periodic timer (e.g. every
    /// 10 seconds). Returns how many went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let expired = self.apps.values_mut().map(|c| c.expire(now)).sum();
        self.apps.retain(|_, c| !c.entries.is_empty());
        expired
    }

    /// (entries, bytes) kept for `app`.
    pub fn usage(&self, app: u32) -> (usize, usize) {
        self.apps
            .get(&app)
            .map_or((0, 0), |c| (c.entries.len(), c.bytes))
    }

    fn drop_if_empty(&mut self, app: u32) {
        if self.apps.get(&app).is_some_and(|c| c.entries.is_empty()) {
            self.apps.remove(&app);
        }
    }
}

fn count_evictions(n: usize) {
    if n > 0 {
        metrics::with(|m| m.cache_evicted(n));
    }
}

/// The `data` string of an encoded channel event (empty when absent or not a string).
fn frame_data(frame: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(default)]
        data: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Frame>(frame)
        .ok()
        .and_then(|f| f.data)
    {
        Some(serde_json::Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::outbound::{channel_event, EventData};

    fn frame(channel: &str, data: &str) -> CachedFrame {
        text_frame(&channel_event("e", channel, EventData::Text(data), None))
    }

    fn text_frame(text: &str) -> CachedFrame {
        CachedFrame {
            frame: Arc::from(text.as_bytes()),
            text_at: 0,
        }
    }

    fn limits() -> CacheLimits {
        CacheLimits {
            ttl: Duration::from_secs(60),
            ..CacheLimits::default()
        }
    }

    #[test]
    fn app_limits_are_the_apps() {
        let mut app = crate::config::Config::embedded_default().apps[0].clone();
        app.max_cache_channels = 10;
        app.max_cache_bytes = 1000;
        let limits = CacheLimits::for_app(&app);
        assert_eq!(limits.ttl, DEFAULT_TTL);
        assert_eq!((limits.max_channels, limits.max_bytes), (10, 1000));
    }

    #[test]
    fn replays_the_last_event_until_the_ttl() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        cache.store(0, "cache-a", frame("cache-a", "1"), t0, &limits());
        let last = frame("cache-a", "2");
        cache.store(0, "cache-a", last.clone(), t0, &limits());
        assert_eq!(
            cache.replay(0, "cache-a", t0 + Duration::from_secs(59), &limits()),
            Replay::Event(last)
        );
        assert_eq!(cache.usage(0).0, 1);
        assert_eq!(
            cache.replay(0, "cache-a", t0 + Duration::from_secs(60), &limits()),
            Replay::Miss { webhook: true }
        );
        // Other apps are other caches.
        assert_eq!(
            cache.replay(1, "cache-a", t0, &limits()),
            Replay::Miss { webhook: true }
        );
    }

    #[test]
    fn a_miss_sends_the_webhook_once_per_ttl_until_an_event_is_stored() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        assert_eq!(
            cache.replay(0, "cache-m", t0, &limits()),
            Replay::Miss { webhook: true }
        );
        assert_eq!(
            cache.replay(0, "cache-m", t0 + Duration::from_secs(30), &limits()),
            Replay::Miss { webhook: false }
        );
        assert_eq!(cache.info(0, "cache-m", t0), None);
        assert_eq!(
            cache.replay(0, "cache-m", t0 + Duration::from_secs(61), &limits()),
            Replay::Miss { webhook: true }
        );
        let event = frame("cache-m", "x");
        cache.store(0, "cache-m", event.clone(), t0, &limits());
        assert_eq!(
            cache.replay(0, "cache-m", t0, &limits()),
            Replay::Event(event)
        );
    }

    #[test]
    fn info_reports_data_and_seconds_left() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        cache.store(0, "cache-i", frame("cache-i", r#"{"p":1}"#), t0, &limits());
        let info = cache
            .info(0, "cache-i", t0 + Duration::from_millis(10_500))
            .unwrap();
        assert_eq!(info.data, r#"{"p":1}"#);
        assert_eq!(info.ttl_secs, 50);
        assert_eq!(cache.info(0, "cache-i", t0 + Duration::from_secs(60)), None);
        assert_eq!(cache.info(0, "cache-none", t0), None);
        let absent = channel_event("e", "cache-j", EventData::Absent, None);
        cache.store(0, "cache-j", text_frame(&absent), t0, &limits());
        assert_eq!(cache.info(0, "cache-j", t0).unwrap().data, "");
    }

    #[test]
    fn bounds_evict_the_oldest_entries_first() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        let few = CacheLimits {
            max_channels: 2,
            ..limits()
        };
        cache.store(0, "cache-1", frame("cache-1", "a"), t0, &few);
        cache.store(0, "cache-2", frame("cache-2", "b"), t0, &few);
        // Re-storing a channel moves it to the back.
        cache.store(0, "cache-1", frame("cache-1", "c"), t0, &few);
        let before = metrics::with(|m| m.snapshot(Default::default()).cache_evictions);
        cache.store(0, "cache-3", frame("cache-3", "d"), t0, &few);
        let after = metrics::with(|m| m.snapshot(Default::default()).cache_evictions);
        assert_eq!(after - before, 1);
        assert!(cache.info(0, "cache-2", t0).is_none());
        assert!(cache.info(0, "cache-1", t0).is_some() && cache.info(0, "cache-3", t0).is_some());
        assert_eq!(cache.usage(0).0, 2);

        let one_kib = frame("cache-b", &"x".repeat(1024));
        let small = CacheLimits {
            max_bytes: 2 * entry_bytes("cache-b", Some(&one_kib)),
            ..limits()
        };
        let mut cache = ChannelCache::default();
        for name in ["cache-b", "cache-c", "cache-d"] {
            cache.store(0, name, frame(name, &"x".repeat(1024)), t0, &small);
        }
        assert!(cache.info(0, "cache-b", t0).is_none());
        assert_eq!(cache.usage(0).0, 2);
        assert!(cache.usage(0).1 <= small.max_bytes);
    }

    #[test]
    fn an_event_over_the_byte_bound_is_not_kept_nor_is_the_older_one() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        let tiny = CacheLimits {
            max_bytes: 400,
            ..limits()
        };
        cache.store(0, "cache-t", frame("cache-t", "small"), t0, &tiny);
        cache.store(0, "cache-t", frame("cache-t", &"x".repeat(500)), t0, &tiny);
        assert_eq!(cache.info(0, "cache-t", t0), None);
        assert_eq!(cache.usage(0), (0, 0));
        let none = CacheLimits {
            max_channels: 0,
            ..tiny
        };
        assert_eq!(
            cache.replay(0, "cache-t", t0, &none),
            Replay::Miss { webhook: true }
        );
        assert!(cache.apps.is_empty());
    }

    #[test]
    fn sweep_removes_expired_entries_and_keeps_accounting_exact() {
        let mut cache = ChannelCache::default();
        let t0 = Instant::now();
        cache.store(0, "cache-old", frame("cache-old", "a"), t0, &limits());
        cache.replay(0, "cache-missed", t0, &limits());
        let later = t0 + Duration::from_secs(30);
        cache.store(0, "cache-new", frame("cache-new", "b"), later, &limits());
        assert_eq!(cache.sweep(t0 + Duration::from_secs(60)), 2);
        let (entries, bytes) = cache.usage(0);
        assert_eq!(entries, 1);
        assert_eq!(
            bytes,
            entry_bytes("cache-new", Some(&frame("cache-new", "b")))
        );
        assert_eq!(cache.sweep(t0 + Duration::from_secs(90)), 1);
        assert!(cache.apps.is_empty());
    }
}
