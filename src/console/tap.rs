//! The console's event log and the one call the rest of the server makes into the console:
//! [`record`]. While no console viewer is connected, `record` is one relaxed atomic load and
//! returns without calling its closure, so nothing is built, locked or copied.
//!
//! The log is a bounded ring of the last [`LOG_CAPACITY`] events. Policy at the bound: the
//! oldest event is dropped (a viewer that fell behind sees a gap, told by the sequence numbers),
//! counted in [`dropped_total`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most events the log keeps; older ones are dropped (see the module docs).
pub const LOG_CAPACITY: usize = 2048;

/// What happened, as the console's event log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An event published through the HTTP API (`events` or `batch_events`).
    ApiPublish,
    /// A `client-*` event sent by a connection.
    ClientEvent,
    /// A connection subscribed to a channel.
    Subscribe,
    /// A connection unsubscribed from a channel (or closed while subscribed).
    Unsubscribe,
    /// A webhook request answered 2xx.
    WebhookSent,
    /// A webhook request that failed (it is retried until the retry period ends).
    WebhookFailed,
}

/// One entry of the event log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsoleEvent {
    /// Position in the log, from 1; a gap means events were dropped at the bound.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The app's id.
    pub app: String,
    /// The channel, when there is one.
    pub channel: String,
    /// The event name (publishes, client events, webhooks), empty otherwise.
    pub event: String,
    /// Anything else worth showing: a socket id, a payload excerpt, an HTTP status.
    pub detail: String,
}

impl ConsoleEvent {
    /// A new event of `kind` for `app` and `channel` (seq and time are set by [`record`]).
    pub fn new(kind: EventKind, app: &str, channel: &str) -> Self {
        ConsoleEvent {
            seq: 0,
            at_ms: 0,
            kind,
            app: app.to_string(),
            channel: channel.to_string(),
            event: String::new(),
            detail: String::new(),
        }
    }

    /// With an event name.
    pub fn event(mut self, event: &str) -> Self {
        self.event = event.to_string();
        self
    }

    /// With a detail, cut to [`DETAIL_MAX_CHARS`] characters.
    pub fn detail(mut self, detail: &str) -> Self {
        self.detail = detail.chars().take(DETAIL_MAX_CHARS).collect();
        self
    }
}

/// Longest detail kept per event (payloads are excerpted, not copied whole).
pub const DETAIL_MAX_CHARS: usize = 200;

/// Connected console viewers; `record` does nothing while it is 0.
static VIEWERS: AtomicUsize = AtomicUsize::new(0);
/// Events dropped at the log's bound.
static DROPPED: AtomicU64 = AtomicU64::new(0);

struct Log {
    events: VecDeque<ConsoleEvent>,
    next_seq: u64,
}

static LOG: Mutex<Log> = Mutex::new(Log {
    events: VecDeque::new(),
    next_seq: 1,
});
static NEW_EVENT: Condvar = Condvar::new();

/// Records the event `build` makes, if a console viewer is connected; otherwise `build` is not
/// called. This is the hook the shards, the HTTP API and the webhook sender call.
#[inline]
pub fn record(build: impl FnOnce() -> ConsoleEvent) {
    if VIEWERS.load(Ordering::Relaxed) == 0 {
        return;
    }
    push(build());
}

#[cold]
fn push(mut event: ConsoleEvent) {
    event.at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut log = LOG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    event.seq = log.next_seq;
    log.next_seq += 1;
    if log.events.len() == LOG_CAPACITY {
        log.events.pop_front();
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    log.events.push_back(event);
    drop(log);
    NEW_EVENT.notify_all();
}

// ---- the hooks: one call each, from the shard, the HTTP API and the webhook sender. Each checks
// for a viewer before it formats or copies anything.

/// A connection subscribed to `channel` (`user` for presence members: logged when the join is
/// sent to the channel's home shard, which may still refuse it at the member limit).
#[inline]
pub fn subscribed(app: &str, channel: &str, socket_id: impl fmt::Display, user: Option<&str>) {
    record(|| {
        let detail = match user {
            Some(user) => format!("socket {socket_id}, user {user}"),
            None => format!("socket {socket_id}"),
        };
        ConsoleEvent::new(EventKind::Subscribe, app, channel).detail(&detail)
    });
}

/// A connection unsubscribed from `channel`.
#[inline]
pub fn unsubscribed(app: &str, channel: &str, socket_id: impl fmt::Display) {
    record(|| {
        ConsoleEvent::new(EventKind::Unsubscribe, app, channel)
            .detail(&format!("socket {socket_id}"))
    });
}

/// A closing connection left `channel`.
#[inline]
pub fn left_on_close(app: &str, channel: &str, socket_id: impl fmt::Display) {
    record(|| {
        ConsoleEvent::new(EventKind::Unsubscribe, app, channel)
            .detail(&format!("socket {socket_id} (connection closed)"))
    });
}

/// A connection's `client-*` event was relayed on `channel`.
#[inline]
pub fn client_event(
    app: &str,
    channel: &str,
    event: &str,
    socket_id: impl fmt::Display,
    data: &str,
) {
    record(|| {
        ConsoleEvent::new(EventKind::ClientEvent, app, channel)
            .event(event)
            .detail(&format!("socket {socket_id}: {data}"))
    });
}

/// The HTTP API accepted `event` for `channels`.
#[inline]
pub fn api_publish(app: &str, channels: &[&str], event: &str, data: &str) {
    record(|| {
        ConsoleEvent::new(EventKind::ApiPublish, app, &channels.join(","))
            .event(event)
            .detail(data)
    });
}

/// A webhook request to `url` was answered 2xx (`body` is the batch sent).
#[inline]
pub fn webhook_sent(app: &str, url: &str, body: &str) {
    record(|| webhook(EventKind::WebhookSent, app, url, body, "delivered"));
}

/// A webhook request to `url` failed with `reason` (it is retried).
#[inline]
pub fn webhook_failed(app: &str, url: &str, body: &str, reason: &str) {
    record(|| webhook(EventKind::WebhookFailed, app, url, body, reason));
}

/// A webhook entry: the batch's event names and channels, the URL and the outcome.
fn webhook(kind: EventKind, app: &str, url: &str, body: &str, outcome: &str) -> ConsoleEvent {
    let batch: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let events = batch["events"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    let mut channels: Vec<&str> = events
        .iter()
        .filter_map(|e| e["channel"].as_str())
        .collect();
    channels.dedup();
    ConsoleEvent::new(kind, app, &channels.join(","))
        .event(&names.join(","))
        .detail(&format!("{url}: {outcome}"))
}

/// Events dropped at the log's bound since the start.
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Connected viewers now.
pub fn viewers() -> usize {
    VIEWERS.load(Ordering::Relaxed)
}

/// A connected viewer: `record` is on while at least one exists.
pub struct Viewer {
    cursor: u64,
}

impl Viewer {
    /// Registers a viewer; it will see the events recorded from now on (and those still in the
    /// log from earlier viewers).
    pub fn connect() -> Viewer {
        VIEWERS.fetch_add(1, Ordering::Relaxed);
        Viewer { cursor: 0 }
    }

    /// The events after the last ones returned, waiting up to `timeout` for one (an empty list
    /// after the timeout).
    pub fn next_events(&mut self, timeout: Duration) -> Vec<ConsoleEvent> {
        let log = LOG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (log, _) = NEW_EVENT
            .wait_timeout_while(log, timeout, |log| log.next_seq <= self.cursor + 1)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fresh: Vec<ConsoleEvent> = log
            .events
            .iter()
            .filter(|e| e.seq > self.cursor)
            .cloned()
            .collect();
        if let Some(last) = fresh.last() {
            self.cursor = last.seq;
        }
        fresh
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        VIEWERS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that connect viewers run one at a time (only they connect any in this crate).
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn nothing_is_built_without_a_viewer_and_events_flow_with_one() {
        // The log is process-wide (other tests' entries may be in it): only this app counts.
        const APP: &str = "tap-unit-test";
        let mine = |events: Vec<ConsoleEvent>| -> Vec<ConsoleEvent> {
            events.into_iter().filter(|e| e.app == APP).collect()
        };
        let _serial = serial();
        record(|| panic!("built without a viewer"));
        let mut viewer = Viewer::connect();
        subscribed(APP, "news", "1.2", Some("ada"));
        let events = mine(viewer.next_events(Duration::from_millis(100)));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Subscribe);
        assert_eq!(events[0].channel, "news");
        assert_eq!(events[0].detail, "socket 1.2, user ada");
        assert!(mine(viewer.next_events(Duration::from_millis(10))).is_empty());
        drop(viewer);
    }

    #[test]
    fn webhook_entries_name_the_batch_events_and_channels() {
        let body = r#"{"time_ms":1,"events":[{"name":"channel_occupied","channel":"a"},{"name":"member_added","channel":"b","user_id":"1"}]}"#;
        let entry = webhook(
            EventKind::WebhookFailed,
            "1",
            "http://h/hook",
            body,
            "HTTP 500",
        );
        assert_eq!(entry.event, "channel_occupied,member_added");
        assert_eq!(entry.channel, "a,b");
        assert_eq!(entry.detail, "http://h/hook: HTTP 500");
    }

    #[test]
    fn the_log_drops_its_oldest_entries_at_the_bound_and_counts_them() {
        let _serial = serial();
        let before = dropped_total();
        let mut viewer = Viewer::connect();
        for _ in 0..LOG_CAPACITY + 5 {
            unsubscribed("tap-bound-test", "c", "1.1");
        }
        assert!(dropped_total() >= before + 5);
        let kept = viewer.next_events(Duration::from_millis(10));
        assert!(kept.len() <= LOG_CAPACITY);
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn details_are_cut_to_their_bound() {
        let long = "x".repeat(DETAIL_MAX_CHARS * 2);
        let entry = ConsoleEvent::new(EventKind::ApiPublish, "1", "c").detail(&long);
        assert_eq!(entry.detail.chars().count(), DETAIL_MAX_CHARS);
    }
}
