//! The Redis link: two OS threads around the redis crate's synchronous client, off the shards.
//!
//! - The **publisher** drains the node's outbox (envelopes any shard queued), publishes them in
//!   one pipeline, and publishes a heartbeat every `heartbeat_interval`.
//! - The **subscriber** holds the subscription to the bus channel, decodes each envelope once,
//!   drops the node's own, puts the others in their origin's order (`sequence`: repeats
//!   dropped, gaps asked for again) and queues them for shard 0.
//!
//! Nothing is lost to a Redis restart or a network blip shorter than `outage_buffer_secs`: the
//! publisher keeps this node's ordered envelopes that long (`replay_log`), publishes them once
//! Redis is back, and re-publishes them to a node that asks (after its own reconnection, or on
//! a gap in the numbers).
//!
//! Both reconnect with a capped exponential backoff; a Redis restart or outage never touches the
//! shards. The subscriber's read timeout (three heartbeats: every node's heartbeats, its own
//! included, come back on the bus) detects a silently dead link.

use super::envelope::{Body, Envelope, LinkControl};
use super::replay_log::{ReplayLog, Trimmed};
use super::sequence::{Released, Sequencer};
use crate::config::ClusterConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod publisher;
mod subscriber;

use publisher::Publisher;
use subscriber::Subscriber;

/// Most envelopes published in one pipeline.
const MAX_BATCH: usize = 512;

/// Most unordered envelopes (query answers, replay requests) waiting for the link.
const MAX_UNORDERED: usize = 4096;

/// Oldest unordered envelope still sent: a query is answered within `query_timeout_ms` or
/// never, and a replay request is repeated by its sender while the gap lasts.
const UNORDERED_MAX_AGE: Duration = Duration::from_secs(2);

/// Longest the publisher sleeps between looks at its queues (replay requests from the
/// subscriber come on a second channel).
const PUBLISHER_POLL: Duration = Duration::from_millis(50);

/// First and largest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connection timeout for Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the subscriber hands to shard 0.
#[derive(Debug)]
pub enum Inbound {
    /// The subscription is (re)established: announce this node.
    Linked,
    /// The link broke; it is being re-established.
    Unlinked,
    /// An envelope from another node.
    Envelope(Envelope),
}

/// Counters of the link, read by the metrics and the tests.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Envelopes published (replays included).
    pub published: AtomicU64,
    /// Ordered envelopes never published: Redis was away longer than `outage_buffer_secs`.
    pub dropped_too_old: AtomicU64,
    /// Ordered envelopes never published: pushed out by `outage_buffer_bytes`.
    pub dropped_over_bytes: AtomicU64,
    /// Unordered envelopes (queries, answers, replay requests) dropped while Redis was away.
    pub dropped_unordered: AtomicU64,
    /// Envelopes received from other nodes.
    pub received: AtomicU64,
    /// Envelopes of other nodes this node never received (gaps given up).
    pub missed: AtomicU64,
    /// Repeats of other nodes' envelopes dropped.
    pub duplicates: AtomicU64,
    /// Replay requests this node answered.
    pub replays: AtomicU64,
    /// Reconnections (both threads).
    pub reconnects: AtomicU64,
}

impl LinkStats {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The process's end of the Redis link.
#[derive(Debug)]
pub struct Link {
    /// This node's id (random per start, so a restarted node comes back clean).
    pub node_id: String,
    /// Whether the subscription is up.
    pub connected: Arc<AtomicBool>,
    /// Counters.
    pub stats: Arc<LinkStats>,
    outbox: Sender<Outgoing>,
}

/// What the publisher is asked to do.
enum Outgoing {
    /// Publish a body (queued at that time).
    Body(Body, Instant),
    /// Another node wants this node's ordered envelopes after this number again.
    Replay(u64),
}

impl Link {
    /// Starts the two threads. `inbound` receives what the subscriber decodes.
    pub fn start(
        config: &ClusterConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<(Link, Receiver<Inbound>), String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        let node_id = format!("{:016x}", rand::random::<u64>());
        let channel = format!("{}:bus", config.prefix);
        let heartbeat = Duration::from_secs(config.heartbeat_interval);
        let connected = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LinkStats::default());
        let (outbox, pending) = mpsc::channel();
        let (to_publisher, from_subscriber) = mpsc::channel();
        let (inbound_tx, inbound) = mpsc::channel();
        let publisher = Publisher {
            client: client.clone(),
            channel: channel.clone(),
            node_id: node_id.clone(),
            heartbeat,
            publish_command: if config.sharded_pubsub {
                "SPUBLISH"
            } else {
                "PUBLISH"
            },
            log: ReplayLog::new(
                Duration::from_secs(config.outage_buffer_secs),
                config.outage_buffer_bytes,
            ),
            unordered: VecDeque::new(),
            dropping: 0,
            stats: stats.clone(),
            connection: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
        };
        spawn("warren-redis-pub", move || {
            publisher.run(pending, from_subscriber)
        })?;
        let subscriber = Subscriber {
            client,
            channel,
            node_id: node_id.clone(),
            read_timeout: heartbeat * 3,
            sharded: config.sharded_pubsub,
            connected: connected.clone(),
            stats: stats.clone(),
            stop,
            to_publisher,
            sequencer: Sequencer::default(),
        };
        spawn("warren-redis-sub", move || subscriber.run(inbound_tx))?;
        Ok((
            Link {
                node_id,
                connected,
                stats,
                outbox,
            },
            inbound,
        ))
    }

    /// Queues an envelope body for publishing (never blocks).
    pub fn publish(&self, body: Body) {
        // The publisher thread lives as long as the process; a send can only fail during exit.
        let _ = self.outbox.send(Outgoing::Body(body, Instant::now()));
    }

    /// The link's figures for `/metrics`.
    pub fn facts(&self) -> crate::metrics::ClusterFacts {
        let s = &*self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::metrics::ClusterFacts {
            up: self.connected.load(Ordering::Relaxed),
            published: get(&s.published),
            received: get(&s.received),
            dropped_too_old: get(&s.dropped_too_old),
            dropped_over_bytes: get(&s.dropped_over_bytes),
            dropped_unordered: get(&s.dropped_unordered),
            missed: get(&s.missed),
            duplicates: get(&s.duplicates),
            replays: get(&s.replays),
            reconnects: get(&s.reconnects),
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name}: {e}"))
}

fn encode(node: &str, seq: u64, body: Body) -> String {
    Envelope {
        node: node.to_string(),
        seq,
        body,
    }
    .encode()
}

/// The error the subscriber ends with when the process stops (not a link failure).
fn stopped() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::ClientError, "warren is stopping"))
}

fn is_stopped(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::ClientError
        && error.to_string().contains("warren is stopping")
}

/// The payload of an `smessage` push (`["smessage", channel, payload]`), if that is what `value`
/// is.
fn smessage_payload(value: redis::Value) -> Option<Vec<u8>> {
    let redis::Value::Array(items) = value else {
        return None;
    };
    match items.as_slice() {
        [redis::Value::BulkString(kind), _, redis::Value::BulkString(payload)]
            if kind == b"smessage" =>
        {
            Some(payload.clone())
        }
        _ => None,
    }
}
