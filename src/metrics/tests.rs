//! Unit tests of the metrics: per-shard counting, summing over shards, rendering.

use super::*;

#[test]
fn snapshots_sum_over_shards_and_render() {
    let a = ShardMetrics::default();
    a.connection_opened();
    a.connection_closed(1000);
    a.message_in(0, 10);
    a.messages_out(0, 3, 300);
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
