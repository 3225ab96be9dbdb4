//! Prometheus metrics. Every shard counts in its own thread-local [`ShardMetrics`] (plain
//! `Cell`s: no atomics, no sharing on the hot path); a scrape of `/metrics` asks every shard for
//! a [`Snapshot`], sums them and renders the text exposition format.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;

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

    /// `count` frames of `bytes` each were handed to sockets of `app`.
    pub fn messages_out(&self, app: u32, count: usize, bytes: usize) {
        let mut apps = self.per_app.borrow_mut();
        let counters = apps.entry(app).or_default();
        counters.messages_out += count as u64;
        counters.bytes_out += (count * bytes) as u64;
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

/// The damping counters: refusals after the upgrade and forgotten addresses.
fn render_refusals(out: &mut String, snapshot: &Snapshot) {
    metric(
        out,
        "warren_refusals_total",
        "counter",
        "Clients refused after the WebSocket upgrade, by close code and damping treatment \
         (immediate, delayed, repeat, over_capacity).",
    );
    for ((code, treatment), n) in &snapshot.refusals {
        let _ = writeln!(
            out,
            "warren_refusals_total{{code=\"{code}\",treatment=\"{treatment}\"}} {n}"
        );
    }
    metric(
        out,
        "warren_refusal_addresses_evicted_total",
        "counter",
        "Addresses a full per-shard refusal table forgot (least recently refused first).",
    );
    let _ = writeln!(
        out,
        "warren_refusal_addresses_evicted_total {}",
        snapshot.refusal_addresses_evicted
    );
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render(snapshot: &Snapshot, facts: &ProcessFacts) -> String {
    let mut out = String::new();
    let app = |index: &u32| {
        facts
            .app_ids
            .get(*index as usize)
            .cloned()
            .unwrap_or_default()
    };
    metric(
        &mut out,
        "warren_connections",
        "gauge",
        "Open WebSocket connections, per shard.",
    );
    for shard in &snapshot.shards {
        let _ = writeln!(
            out,
            "warren_connections{{shard=\"{}\"}} {}",
            shard.shard, shard.connections
        );
    }
    metric(
        &mut out,
        "warren_connections_opened_total",
        "counter",
        "WebSocket sessions started.",
    );
    let _ = writeln!(
        out,
        "warren_connections_opened_total {}",
        snapshot.connections_opened
    );
    metric(
        &mut out,
        "warren_connections_closed_total",
        "counter",
        "WebSocket sessions ended, by close code (0: the socket went without a close frame).",
    );
    for (code, n) in &snapshot.closed_by_code {
        let _ = writeln!(
            out,
            "warren_connections_closed_total{{code=\"{code}\"}} {n}"
        );
    }
    let mut channels: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for shard in &snapshot.shards {
        for (app, (c, s)) in &shard.channels {
            let entry = channels.entry(*app).or_default();
            entry.0 += c;
            entry.1 += s;
        }
    }
    metric(
        &mut out,
        "warren_channels",
        "gauge",
        "Channels with subscribers, per app (a channel on several shards counts once per shard).",
    );
    for (index, (c, _)) in &channels {
        let _ = writeln!(out, "warren_channels{{app=\"{}\"}} {c}", app(index));
    }
    metric(
        &mut out,
        "warren_subscriptions",
        "gauge",
        "Subscriptions, per app.",
    );
    for (index, (_, s)) in &channels {
        let _ = writeln!(out, "warren_subscriptions{{app=\"{}\"}} {s}", app(index));
    }
    let counters: [AppCounterMetric; 4] = [
        (
            "warren_messages_in_total",
            "Client messages received, per app.",
            |c| c.messages_in,
        ),
        (
            "warren_bytes_in_total",
            "Bytes of client messages received, per app.",
            |c| c.bytes_in,
        ),
        (
            "warren_messages_out_total",
            "Frames written to sockets, per app.",
            |c| c.messages_out,
        ),
        (
            "warren_bytes_out_total",
            "Bytes of frames written to sockets, per app.",
            |c| c.bytes_out,
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, "counter", help);
        for (index, c) in &snapshot.per_app {
            let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", app(index), value(c));
        }
    }
    metric(
        &mut out,
        "warren_client_events_rejected_total",
        "counter",
        "Client events refused, by reason.",
    );
    for (reason, n) in &snapshot.client_events_rejected {
        let _ = writeln!(
            out,
            "warren_client_events_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    metric(
        &mut out,
        "warren_http_requests_total",
        "counter",
        "HTTP API requests, by route and status.",
    );
    for ((route, status), n) in &snapshot.http_requests {
        let _ = writeln!(
            out,
            "warren_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    metric(
        &mut out,
        "warren_send_queue_overflows_total",
        "counter",
        "Connections closed because their send queue went over budget (4100).",
    );
    let _ = writeln!(
        out,
        "warren_send_queue_overflows_total {}",
        snapshot.send_queue_overflows
    );
    render_refusals(&mut out, snapshot);
    metric(
        &mut out,
        "warren_runtime_events_total",
        "counter",
        "Events at the shard runtime's bounds: mesh_outbox_full, fanout_queue_full, gather_timeout, late_reply.",
    );
    for (event, n) in &snapshot.runtime_events {
        let _ = writeln!(out, "warren_runtime_events_total{{event=\"{event}\"}} {n}");
    }
    metric(
        &mut out,
        "warren_cache_evictions_total",
        "counter",
        "Cache-channel entries evicted because an app's cache was at its channel or byte bound.",
    );
    let _ = writeln!(
        out,
        "warren_cache_evictions_total {}",
        snapshot.cache_evictions
    );
    metric(
        &mut out,
        "warren_publish_to_write_seconds",
        "histogram",
        "Time from a publish to its frames being handed to a shard's sockets.",
    );
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&snapshot.latency_buckets) {
        let _ = writeln!(
            out,
            "warren_publish_to_write_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "warren_publish_to_write_seconds_bucket{{le=\"+Inf\"}} {}",
        snapshot.latency_count
    );
    let _ = writeln!(
        out,
        "warren_publish_to_write_seconds_sum {}",
        snapshot.latency_sum
    );
    let _ = writeln!(
        out,
        "warren_publish_to_write_seconds_count {}",
        snapshot.latency_count
    );
    render_console(&mut out);
    if let Some(cluster) = &facts.cluster {
        render_cluster(&mut out, cluster);
    }
    if let Some(webhooks) = &facts.webhooks {
        render_webhooks(&mut out, webhooks);
    }
    out
}

fn render_cluster(out: &mut String, c: &ClusterFacts) {
    metric(
        out,
        "warren_cluster_link_up",
        "gauge",
        "Whether the Redis subscription is up.",
    );
    let _ = writeln!(out, "warren_cluster_link_up {}", u8::from(c.up));
    let name = "warren_cluster_messages_dropped_total";
    metric(
        out,
        name,
        "counter",
        "This node's envelopes never published to the other nodes, by reason.",
    );
    for (reason, value) in [
        ("outage_too_long", c.dropped_too_old),
        ("outage_buffer_full", c.dropped_over_bytes),
        ("unordered_link_down", c.dropped_unordered),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
    for (name, help, value) in [
        (
            "warren_cluster_published_total",
            "Envelopes published to Redis (re-published ones included).",
            c.published,
        ),
        (
            "warren_cluster_received_total",
            "Envelopes received from other nodes.",
            c.received,
        ),
        (
            "warren_cluster_messages_missed_total",
            "Other nodes' envelopes never received here (gaps in their sequence given up).",
            c.missed,
        ),
        (
            "warren_cluster_duplicates_dropped_total",
            "Repeated envelopes of other nodes dropped before delivery.",
            c.duplicates,
        ),
        (
            "warren_cluster_replays_total",
            "Requests of other nodes to re-publish what they missed, answered.",
            c.replays,
        ),
        (
            "warren_cluster_reconnects_total",
            "Redis (re)connections.",
            c.reconnects,
        ),
    ] {
        metric(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn render_webhooks(out: &mut String, w: &WebhookFacts) {
    for (name, help, value) in [
        (
            "warren_webhooks_pending",
            "Webhook batches in the spools waiting to be delivered.",
            w.pending,
        ),
        (
            "warren_webhooks_inlet_depth",
            "Webhook events waiting in the dispatcher's inlet.",
            w.inlet_depth,
        ),
    ] {
        metric(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    for (name, help, value) in [
        (
            "warren_webhooks_delivered_total",
            "Webhook requests answered 2xx.",
            w.delivered,
        ),
        (
            "warren_webhooks_failed_attempts_total",
            "Webhook attempts that failed and were retried.",
            w.failed_attempts,
        ),
        (
            "warren_webhooks_dead_lettered_total",
            "Webhook batches given up after the retry period.",
            w.dead_lettered,
        ),
    ] {
        metric(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "warren_webhooks_batches_dropped_total";
    metric(
        out,
        name,
        "counter",
        "Webhook batches dropped, by reason (spool_full: spool_max_bytes reached; spool_error: the spool could not be written).",
    );
    for (reason, value) in [
        ("spool_full", w.dropped_spool_full),
        ("spool_error", w.dropped_spool_error),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
    let name = "warren_webhooks_events_dropped_total";
    metric(
        out,
        name,
        "counter",
        "Webhook events dropped before batching, by reason (inlet_full: the dispatcher's inlet was full).",
    );
    let _ = writeln!(
        out,
        "{name}{{reason=\"inlet_full\"}} {}",
        w.dropped_inlet_full
    );
}

/// The debug console's viewers and the events its bounded log dropped (both 0 while it is off).
fn render_console(out: &mut String) {
    metric(
        out,
        "warren_console_viewers",
        "gauge",
        "Debug console event streams open now.",
    );
    let _ = writeln!(
        out,
        "warren_console_viewers {}",
        crate::console::tap::viewers()
    );
    metric(
        out,
        "warren_console_log_dropped_total",
        "counter",
        "Console log entries dropped at its bound (the oldest go first).",
    );
    let _ = writeln!(
        out,
        "warren_console_log_dropped_total {}",
        crate::console::tap::dropped_total()
    );
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_sum_over_shards_and_render() {
        let a = ShardMetrics::default();
        a.connection_opened();
        a.connection_closed(1000);
        a.message_in(0, 10);
        a.messages_out(0, 3, 100);
        a.client_event_rejected("rate_limit");
        a.http_request("events", 200);
        a.publish_latency(0.0002);
        let b = ShardMetrics::default();
        b.connection_opened();
        b.publish_latency(0.5);
        let mut total = a.snapshot(ShardGauges {
            shard: 0,
            connections: 1,
            channels: [(0, (1, 2))].into(),
        });
        total.merge(b.snapshot(ShardGauges {
            shard: 1,
            connections: 0,
            channels: Default::default(),
        }));
        assert_eq!(total.connections_opened, 2);
        assert_eq!(total.latency_count, 2);
        let facts = ProcessFacts {
            app_ids: vec!["1".into()],
            cluster: Some(ClusterFacts {
                dropped_too_old: 3,
                missed: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&total, &facts);
        for line in [
            "warren_connections{shard=\"0\"} 1",
            "warren_connections_opened_total 2",
            "warren_connections_closed_total{code=\"1000\"} 1",
            "warren_subscriptions{app=\"1\"} 2",
            "warren_bytes_out_total{app=\"1\"} 300",
            "warren_client_events_rejected_total{reason=\"rate_limit\"} 1",
            "warren_http_requests_total{route=\"events\",status=\"200\"} 1",
            "warren_publish_to_write_seconds_bucket{le=\"0.00025\"} 1",
            "warren_publish_to_write_seconds_bucket{le=\"+Inf\"} 2",
            "warren_cluster_messages_dropped_total{reason=\"outage_too_long\"} 3",
            "warren_cluster_messages_missed_total 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
