//! The Prometheus text exposition of a node's metrics: the shards' summed [`Snapshot`] and the
//! process-wide [`ProcessFacts`].

use super::*;
use std::fmt::Write;

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
