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

struct Publisher {
    client: redis::Client,
    channel: String,
    node_id: String,
    heartbeat: Duration,
    publish_command: &'static str,
    /// This node's ordered envelopes, published or not (bounded; see `replay_log`).
    log: ReplayLog,
    /// Unordered envelopes waiting for the link (bounded by count and age).
    unordered: VecDeque<(Instant, Body)>,
    /// Ordered envelopes dropped since the link last worked (for the log lines).
    dropping: u64,
    stats: Arc<LinkStats>,
    connection: Option<redis::Connection>,
    next_attempt: Instant,
    backoff: Duration,
}

impl Publisher {
    /// Publishes until every sender of the outbox is gone, then says goodbye. While Redis is
    /// away, ordered envelopes wait in the replay log (bounded by `outage_buffer_secs` and
    /// `outage_buffer_bytes`; beyond, dropped, counted and logged) and go out in order once it
    /// is back; heartbeats are not queued.
    fn run(mut self, pending: Receiver<Outgoing>, from_subscriber: Receiver<Outgoing>) {
        let mut next_heartbeat = Instant::now();
        loop {
            let wait = next_heartbeat
                .saturating_duration_since(Instant::now())
                .min(PUBLISHER_POLL);
            match pending.recv_timeout(wait) {
                Ok(message) => self.take(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(message) = pending.try_recv() {
                self.take(message);
            }
            while let Ok(message) = from_subscriber.try_recv() {
                self.take(message);
            }
            let heartbeat_due = Instant::now() >= next_heartbeat;
            if self.flush(heartbeat_due) && heartbeat_due {
                next_heartbeat = Instant::now() + self.heartbeat;
            } else if heartbeat_due {
                // Not sent (Redis away): the next one goes when the link is back.
                next_heartbeat = Instant::now() + BACKOFF_MIN;
            }
        }
        self.take(Outgoing::Body(Body::Goodbye, Instant::now()));
        self.flush(false);
    }

    fn take(&mut self, message: Outgoing) {
        match message {
            Outgoing::Body(body, at) if body.is_ordered() => {
                let node = &self.node_id;
                let trimmed = self.log.push(at, |seq| encode(node, seq, body));
                self.count_trimmed(trimmed);
            }
            Outgoing::Body(body, at) => {
                if self.unordered.len() >= MAX_UNORDERED {
                    self.unordered.pop_front();
                    LinkStats::add(&self.stats.dropped_unordered, 1);
                }
                self.unordered.push_back((at, body));
            }
            Outgoing::Replay(after) => {
                LinkStats::add(&self.stats.replays, 1);
                if let Some(upto) = self.log.rewind(after) {
                    let lost = Body::Link(LinkControl::Lost { upto });
                    self.unordered.push_back((Instant::now(), lost));
                }
            }
        }
    }

    /// Counts and logs ordered envelopes the log dropped before they were ever published.
    fn count_trimmed(&mut self, trimmed: Trimmed) {
        let total = trimmed.too_old + trimmed.over_bytes;
        if total == 0 {
            return;
        }
        LinkStats::add(&self.stats.dropped_too_old, trimmed.too_old);
        LinkStats::add(&self.stats.dropped_over_bytes, trimmed.over_bytes);
        if self.dropping == 0 {
            tracing::warn!(
                too_old = trimmed.too_old,
                over_bytes = trimmed.over_bytes,
                "cluster link down beyond outage_buffer_secs/outage_buffer_bytes: dropping this \
                 node's envelopes to other nodes (warren_cluster_messages_dropped_total)"
            );
        }
        self.dropping += total;
    }

    /// Publishes what is due: ordered envelopes from the log's cursor, then the unordered ones
    /// and, if `heartbeat`, a heartbeat (both carrying the last ordered number published, so
    /// receivers notice a lost tail). Stops at the first failure, keeping what was not
    /// confirmed: a retried pipeline may repeat envelopes, which receivers drop by number.
    /// Returns whether everything due went out.
    fn flush(&mut self, heartbeat: bool) -> bool {
        let now = Instant::now();
        let trimmed = self.log.trim(now);
        self.count_trimmed(trimmed);
        let before = self.unordered.len();
        self.unordered
            .retain(|(at, _)| now.duration_since(*at) <= UNORDERED_MAX_AGE);
        LinkStats::add(
            &self.stats.dropped_unordered,
            (before - self.unordered.len()) as u64,
        );
        while self.log.has_due() {
            let mut pipeline = redis::pipe();
            let mut count = 0;
            for entry in self.log.due(MAX_BATCH) {
                pipeline
                    .cmd(self.publish_command)
                    .arg(&self.channel)
                    .arg(&entry.text)
                    .ignore();
                count += 1;
            }
            if !self.send(&pipeline) {
                return false;
            }
            self.log.mark_published(count);
            LinkStats::add(&self.stats.published, count as u64);
        }
        if self.unordered.is_empty() && !heartbeat {
            return true;
        }
        let seq = self.log.published_upto();
        let mut pipeline = redis::pipe();
        let bodies = self.unordered.iter().map(|(_, body)| body.clone());
        let count = self.unordered.len() + usize::from(heartbeat);
        for body in bodies.chain(heartbeat.then_some(Body::Heartbeat)) {
            pipeline
                .cmd(self.publish_command)
                .arg(&self.channel)
                .arg(encode(&self.node_id, seq, body))
                .ignore();
        }
        if !self.send(&pipeline) {
            return false;
        }
        self.unordered.clear();
        LinkStats::add(&self.stats.published, count as u64);
        true
    }

    /// Runs a pipeline on the connection (connecting if due); whether it succeeded.
    fn send(&mut self, pipeline: &redis::Pipeline) -> bool {
        let Some(connection) = self.connection() else {
            return false;
        };
        if let Err(error) = pipeline.query::<()>(connection) {
            tracing::warn!(%error, "redis publish failed; reconnecting");
            self.connection = None;
            return false;
        }
        if self.dropping > 0 {
            tracing::warn!(
                dropped = self.dropping,
                "cluster link back; envelopes dropped while it was down"
            );
            self.dropping = 0;
        }
        true
    }

    /// The connection, (re)connecting if due.
    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.connection.is_none() && Instant::now() >= self.next_attempt {
            match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                Ok(connection) => {
                    let _ = connection.set_write_timeout(Some(CONNECT_TIMEOUT));
                    let _ = connection.set_read_timeout(Some(CONNECT_TIMEOUT));
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.backoff = BACKOFF_MIN;
                    self.connection = Some(connection);
                }
                Err(_) => {
                    self.next_attempt = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.connection.as_mut()
    }
}

struct Subscriber {
    client: redis::Client,
    channel: String,
    node_id: String,
    read_timeout: Duration,
    sharded: bool,
    connected: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    /// Replay requests for the publisher (its own channel, so the publisher still stops when
    /// the shards' outbox closes).
    to_publisher: Sender<Outgoing>,
    /// Each origin's position in its sequence; kept across reconnections.
    sequencer: Sequencer,
}

impl Subscriber {
    fn run(mut self, inbound: Sender<Inbound>) {
        let mut backoff = BACKOFF_MIN;
        while !self.stop.load(Ordering::Acquire) {
            match self.subscribe_and_forward(&inbound) {
                Ok(()) => return,
                Err(error) if is_stopped(&error) => return,
                Err(error) => {
                    if self.connected.swap(false, Ordering::AcqRel) {
                        tracing::warn!(%error, "redis subscription lost; reconnecting");
                        if inbound.send(Inbound::Unlinked).is_err() {
                            return;
                        }
                        backoff = BACKOFF_MIN;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Subscribes and forwards envelopes until the link fails, the process stops, or shard 0 is
    /// gone (the last two as the [`stopped`] error).
    fn subscribe_and_forward(&mut self, inbound: &Sender<Inbound>) -> redis::RedisResult<()> {
        let mut connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        connection.set_read_timeout(Some(self.read_timeout))?;
        if self.sharded {
            // The redis crate's PubSub knows no SSUBSCRIBE: subscribe by hand and read the
            // `smessage` pushes off the plain connection.
            redis::cmd("SSUBSCRIBE")
                .arg(&self.channel)
                .exec(&mut connection)?;
            self.linked(inbound)?;
            loop {
                let value = connection.recv_response()?;
                if let Some(payload) = smessage_payload(value) {
                    self.forward(inbound, &payload)?;
                }
            }
        }
        let mut pubsub = connection.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        self.linked(inbound)?;
        loop {
            let message = pubsub.get_message()?;
            self.forward(inbound, message.get_payload_bytes())?;
        }
    }

    /// Marks the link up, tells shard 0, and asks every known node for what it published
    /// meanwhile; an error ends the thread (shard 0 is gone).
    fn linked(&self, inbound: &Sender<Inbound>) -> redis::RedisResult<()> {
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Release);
        tracing::info!(channel = %self.channel, sharded = self.sharded, "cluster link up");
        self.ask_replay(self.sequencer.positions());
        inbound.send(Inbound::Linked).map_err(|_| stopped())
    }

    fn ask_replay(&self, from: Vec<(String, u64)>) {
        if !from.is_empty() {
            let body = Body::Link(LinkControl::Replay { from });
            let _ = self.to_publisher.send(Outgoing::Body(body, Instant::now()));
        }
    }

    /// Decodes one bus message and hands on, in order, what it releases (nothing of this
    /// node's own); then asks for what is missing and gives up gaps that lasted too long.
    fn forward(&mut self, inbound: &Sender<Inbound>, payload: &[u8]) -> redis::RedisResult<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(stopped());
        }
        let now = Instant::now();
        match Envelope::decode(payload) {
            None => tracing::warn!("undecodable message on the cluster bus"),
            Some(envelope) if envelope.node == self.node_id => {}
            Some(envelope) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                let released = self.sequencer.accept(envelope, now);
                self.hand_on(inbound, released)?;
            }
        }
        let asks = self.sequencer.due_requests(now);
        self.ask_replay(asks);
        let expired = self.sequencer.expire_gaps(now);
        self.hand_on(inbound, expired)
    }

    /// Counts a step's repeats and gaps, acts on link messages, and queues the rest for
    /// shard 0.
    fn hand_on(&mut self, inbound: &Sender<Inbound>, released: Released) -> redis::RedisResult<()> {
        LinkStats::add(&self.stats.duplicates, released.duplicates);
        if released.missed > 0 {
            LinkStats::add(&self.stats.missed, released.missed);
            tracing::warn!(
                missed = released.missed,
                "envelopes from another node were lost on the cluster bus (beyond its \
                 outage buffer or the gap wait); presence is repaired by snapshots"
            );
        }
        for envelope in released.envelopes {
            match envelope.body {
                Body::Link(LinkControl::Replay { from }) => {
                    if let Some((_, after)) = from.iter().find(|(node, _)| *node == self.node_id) {
                        let _ = self.to_publisher.send(Outgoing::Replay(*after));
                    }
                }
                Body::Link(LinkControl::Lost { upto }) => {
                    let more = self.sequencer.lost(&envelope.node, upto);
                    self.hand_on(inbound, more)?;
                }
                body => {
                    if let Body::Goodbye = body {
                        self.sequencer.forget(&envelope.node);
                    }
                    let envelope = Envelope { body, ..envelope };
                    inbound
                        .send(Inbound::Envelope(envelope))
                        .map_err(|_| stopped())?;
                }
            }
        }
        Ok(())
    }
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
