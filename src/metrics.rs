//! Prometheus metrics. Every shard counts in its own thread-local [`ShardMetrics`] (plain
//! `Cell`s: no atomics, no sharing on the hot path); a scrape of `/metrics` asks every shard for
//! a [`Snapshot`], sums them and renders the text exposition format.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// Upper bounds (seconds) of the publish-to-write latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters of one shard; lives in a thread-local of the shard's thread.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    connections_opened: Cell<u64>,
    closed_by_code: RefCell<BTreeMap<u16, u64>>,
    per_app: RefCell<BTreeMap<u32, AppCounters>>,
    client_events_rejected: RefCell<BTreeMap<&'static str, u64>>,
    http_requests: RefCell<BTreeMap<(&'static str, u16), u64>>,
    send_queue_overflows: Cell<u64>,
    runtime_events: RefCell<BTreeMap<&'static str, u64>>,
    cache_evictions: Cell<u64>,
    refusals: RefCell<BTreeMap<(u16, &'static str), u64>>,
    refusal_addresses_evicted: Cell<u64>,
    latency_buckets: RefCell<[u64; LATENCY_BUCKETS.len()]>,
    latency_count: Cell<u64>,
    latency_sum: Cell<f64>,
}

/// Message counters of one app on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppCounters {
    /// Client messages received.
    pub messages_in: u64,
    /// Bytes of client messages received.
    pub bytes_in: u64,
    /// Frames written (or queued) to sockets.
    pub messages_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
}

thread_local! {
    static METRICS: ShardMetrics = ShardMetrics::default();
}

/// Runs `f` on this thread's counters.
pub fn with<R>(f: impl FnOnce(&ShardMetrics) -> R) -> R {
    METRICS.with(f)
}

impl ShardMetrics {
    /// A WebSocket session started.
    pub fn connection_opened(&self) {
        self.connections_opened
            .set(self.connections_opened.get() + 1);
    }

    /// A WebSocket session ended with this close code (0: no close frame, the socket just went).
    pub fn connection_closed(&self, code: u16) {
        *self.closed_by_code.borrow_mut().entry(code).or_default() += 1;
    }

    /// A client message of `bytes` arrived for `app`.
    pub fn message_in(&self, app: u32, bytes: usize) {
        let mut apps = self.per_app.borrow_mut();
        let counters = apps.entry(app).or_default();
        counters.messages_in += 1;
        counters.bytes_in += bytes as u64;
    }

    /// `count` frames, `bytes` in all, were handed to sockets of `app`.
    pub fn messages_out(&self, app: u32, count: usize, bytes: usize) {
        let mut apps = self.per_app.borrow_mut();
        let counters = apps.entry(app).or_default();
        counters.messages_out += count as u64;
        counters.bytes_out += bytes as u64;
    }

    /// A client event was refused.
    pub fn client_event_rejected(&self, reason: &'static str) {
        *self
            .client_events_rejected
            .borrow_mut()
            .entry(reason)
            .or_default() += 1;
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, route: &'static str, status: u16) {
        *self
            .http_requests
            .borrow_mut()
            .entry((route, status))
            .or_default() += 1;
    }

    /// A connection's send queue went over its budget.
    pub fn send_queue_overflow(&self) {
        self.send_queue_overflows
            .set(self.send_queue_overflows.get() + 1);
    }

    /// Something happened at one of the shard runtime's bounds (see `runtime_event` names in
    /// docs/architecture.md, "Queues and their bounds").
    pub fn runtime_event(&self, event: &'static str) {
        *self.runtime_events.borrow_mut().entry(event).or_default() += 1;
    }

    /// An answer to a scatter-gather question came after its deadline and was dropped.
    pub fn late_reply(&self) {
        self.runtime_event("late_reply");
    }

    /// A scatter-gather question timed out with answers missing.
    pub fn gather_timeout(&self) {
        self.runtime_event("gather_timeout");
    }

    /// `n` cache-channel entries were evicted at the cache's bounds (`channels::cache`).
    pub fn cache_evicted(&self, n: usize) {
        self.cache_evictions
            .set(self.cache_evictions.get() + n as u64);
    }

    /// A client was refused after the upgrade with `code`, answered as `treatment` (`damping`).
    pub fn refusal(&self, code: u16, treatment: &'static str) {
        *self
            .refusals
            .borrow_mut()
            .entry((code, treatment))
            .or_default() += 1;
    }

    /// The refusal table was full and forgot an address.
    pub fn refusal_address_evicted(&self) {
        self.refusal_addresses_evicted
            .set(self.refusal_addresses_evicted.get() + 1);
    }

    /// A publish reached this shard's sockets `seconds` after it was made.
    pub fn publish_latency(&self, seconds: f64) {
        let mut buckets = self.latency_buckets.borrow_mut();
        for (bucket, bound) in buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.latency_count.set(self.latency_count.get() + 1);
        self.latency_sum.set(self.latency_sum.get() + seconds);
    }

    /// A copy of the counters, plus the gauges the shard reports.
    pub fn snapshot(&self, gauges: ShardGauges) -> Snapshot {
        Snapshot {
            shards: vec![gauges],
            connections_opened: self.connections_opened.get(),
            closed_by_code: self.closed_by_code.borrow().clone(),
            per_app: self.per_app.borrow().clone(),
            client_events_rejected: self
                .client_events_rejected
                .borrow()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            http_requests: self
                .http_requests
                .borrow()
                .iter()
                .map(|((r, s), v)| ((r.to_string(), *s), *v))
                .collect(),
            send_queue_overflows: self.send_queue_overflows.get(),
            runtime_events: self
                .runtime_events
                .borrow()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            cache_evictions: self.cache_evictions.get(),
            refusals: self
                .refusals
                .borrow()
                .iter()
                .map(|((c, t), v)| ((*c, t.to_string()), *v))
                .collect(),
            refusal_addresses_evicted: self.refusal_addresses_evicted.get(),
            latency_buckets: self.latency_buckets.borrow().to_vec(),
            latency_count: self.latency_count.get(),
            latency_sum: self.latency_sum.get(),
        }
    }
}

/// What one shard reports about its present state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardGauges {
    /// Shard index.
    pub shard: usize,
    /// Open connections.
    pub connections: usize,
    /// Per app index: (channels with local subscribers, local subscriptions).
    pub channels: BTreeMap<u32, (usize, usize)>,
}

/// Counters summed over shards, ready to render.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// One entry per shard.
    pub shards: Vec<ShardGauges>,
    /// Sessions started.
    pub connections_opened: u64,
    /// Sessions ended, by close code.
    pub closed_by_code: BTreeMap<u16, u64>,
    /// Per app index.
    pub per_app: BTreeMap<u32, AppCounters>,
    /// Refused client events by reason.
    pub client_events_rejected: BTreeMap<String, u64>,
    /// HTTP requests by (route, status).
    pub http_requests: BTreeMap<(String, u16), u64>,
    /// Send-queue overflows.
    pub send_queue_overflows: u64,
    /// Events at the runtime's bounds (mesh outbox full, fan-out queue full, gather timeouts…).
    pub runtime_events: BTreeMap<String, u64>,
    /// Cache-channel entries evicted at the cache's bounds.
    pub cache_evictions: u64,
    /// Refusals after the upgrade by (close code, damping treatment).
    pub refusals: BTreeMap<(u16, String), u64>,
    /// Addresses the refusal tables forgot because they were full.
    pub refusal_addresses_evicted: u64,
    /// Cumulative histogram buckets of publish-to-write latency.
    pub latency_buckets: Vec<u64>,
    /// Observations in the histogram.
    pub latency_count: u64,
    /// Sum of the observations, in seconds.
    pub latency_sum: f64,
}

impl Snapshot {
    /// Adds another shard's snapshot to this one.
    pub fn merge(&mut self, other: Snapshot) {
        self.shards.extend(other.shards);
        self.connections_opened += other.connections_opened;
        for (code, n) in other.closed_by_code {
            *self.closed_by_code.entry(code).or_default() += n;
        }
        for (app, c) in other.per_app {
            let mine = self.per_app.entry(app).or_default();
            mine.messages_in += c.messages_in;
            mine.bytes_in += c.bytes_in;
            mine.messages_out += c.messages_out;
            mine.bytes_out += c.bytes_out;
        }
        for (reason, n) in other.client_events_rejected {
            *self.client_events_rejected.entry(reason).or_default() += n;
        }
        for (key, n) in other.http_requests {
            *self.http_requests.entry(key).or_default() += n;
        }
        self.send_queue_overflows += other.send_queue_overflows;
        for (event, n) in other.runtime_events {
            *self.runtime_events.entry(event).or_default() += n;
        }
        self.cache_evictions += other.cache_evictions;
        for (key, n) in other.refusals {
            *self.refusals.entry(key).or_default() += n;
        }
        self.refusal_addresses_evicted += other.refusal_addresses_evicted;
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *mine += theirs;
        }
        self.latency_count += other.latency_count;
        self.latency_sum += other.latency_sum;
    }
}

/// Process-wide facts that are not per shard (read from atomics at scrape time).
#[derive(Debug, Clone, Default)]
pub struct ProcessFacts {
    /// App ids by registry index.
    pub app_ids: Vec<String>,
    /// The cluster link's figures, when clustered.
    pub cluster: Option<ClusterFacts>,
    /// Webhook counters, when any app has webhooks.
    pub webhooks: Option<WebhookFacts>,
}

/// The webhook counters `/metrics` renders (read from the webhook threads' atomics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookFacts {
    /// Batches in the spools, waiting to be delivered.
    pub pending: u64,
    /// Events waiting in the dispatcher's inlet.
    pub inlet_depth: u64,
    /// Requests answered 2xx.
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub failed_attempts: u64,
    /// Batches given up after the retry period.
    pub dead_lettered: u64,
    /// Batches dropped because the spool was full.
    pub dropped_spool_full: u64,
    /// Batches dropped because the spool could not be written.
    pub dropped_spool_error: u64,
    /// Events dropped because the dispatcher's inlet was full.
    pub dropped_inlet_full: u64,
}

/// The cluster link's figures (read from its atomics at scrape time).
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// Whether the Redis subscription is up.
    pub up: bool,
    /// Envelopes published (replays included).
    pub published: u64,
    /// Envelopes received from other nodes.
    pub received: u64,
    /// This node's ordered envelopes never published: Redis away beyond `outage_buffer_secs`.
    pub dropped_too_old: u64,
    /// The same, pushed out by `outage_buffer_bytes`.
    pub dropped_over_bytes: u64,
    /// Unordered envelopes (query answers, replay requests) dropped while Redis was away.
    pub dropped_unordered: u64,
    /// Other nodes' envelopes this node never received (gaps given up).
    pub missed: u64,
    /// Repeats of other nodes' envelopes dropped.
    pub duplicates: u64,
    /// Replay requests answered.
    pub replays: u64,
    /// Redis (re)connections.
    pub reconnects: u64,
}

/// A per-app counter: metric name, help text, and how to read it.
type AppCounterMetric = (&'static str, &'static str, fn(&AppCounters) -> u64);

mod render;
pub use render::render;

#[cfg(test)]
mod tests;
