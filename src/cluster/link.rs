//! The Redis link: two OS threads around the redis crate's synchronous client, off the shards.
//!
//! - The **publisher** drains the node's outbox (envelopes any shard queued), publishes them in
//!   one pipeline, and publishes a heartbeat every `heartbeat_interval`.
//! - The **subscriber** holds the subscription to the bus channel, decodes each envelope once,
//!   drops the node's own, and queues the rest for shard 0.
//!
//! Both reconnect with a capped exponential backoff; a Redis restart or outage never touches the
//! shards. The subscriber's read timeout (three heartbeats: every node's heartbeats, its own
//! included, come back on the bus) detects a silently dead link.

use super::envelope::{Body, Envelope};
use crate::config::ClusterConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most envelopes published in one pipeline.
const MAX_BATCH: usize = 512;

/// Most envelopes kept while Redis is unreachable.
const MAX_BACKLOG: usize = 10_000;

/// Oldest event publish still sent after an outage: later, its subscribers may have changed, and
/// an event should reach those subscribed when it was published (state messages are kept up to
/// the node timeout).
const EVENT_MAX_AGE: Duration = Duration::from_secs(1);

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
    /// Envelopes published.
    pub published: AtomicU64,
    /// Envelopes dropped because Redis was unreachable for too long (or the backlog was full).
    pub dropped: AtomicU64,
    /// Envelopes received from other nodes.
    pub received: AtomicU64,
    /// Reconnections (both threads).
    pub reconnects: AtomicU64,
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

/// An encoded envelope waiting to be published, and how long it stays worth sending.
struct Outgoing {
    queued: Instant,
    max_age: Option<Duration>,
    text: String,
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
            max_age: Duration::from_secs(config.node_timeout),
            stats: stats.clone(),
            connection: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
        };
        spawn("warren-redis-pub", move || publisher.run(pending))?;
        let subscriber = Subscriber {
            client,
            channel,
            node_id: node_id.clone(),
            read_timeout: heartbeat * 3,
            sharded: config.sharded_pubsub,
            connected: connected.clone(),
            stats: stats.clone(),
            stop,
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
        let max_age = matches!(body, Body::Publish { .. }).then_some(EVENT_MAX_AGE);
        let envelope = Envelope {
            node: self.node_id.clone(),
            body,
        };
        let outgoing = Outgoing {
            queued: Instant::now(),
            max_age,
            text: envelope.encode(),
        };
        // The publisher thread lives as long as the process; a send can only fail during exit.
        let _ = self.outbox.send(outgoing);
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name}: {e}"))
}

struct Publisher {
    client: redis::Client,
    channel: String,
    node_id: String,
    heartbeat: Duration,
    publish_command: &'static str,
    max_age: Duration,
    stats: Arc<LinkStats>,
    connection: Option<redis::Connection>,
    next_attempt: Instant,
    backoff: Duration,
}

impl Publisher {
    /// Publishes until every sender of the outbox is gone, then says goodbye. What cannot be
    /// published while Redis is away waits in a bounded backlog (oldest dropped first, and
    /// nothing older than the node timeout, which the other nodes would have given up on).
    fn run(mut self, pending: Receiver<Outgoing>) {
        let heartbeat = Envelope {
            node: self.node_id.clone(),
            body: Body::Heartbeat,
        }
        .encode();
        let mut backlog: VecDeque<Outgoing> = VecDeque::new();
        let mut next_heartbeat = Instant::now();
        loop {
            let mut wait = next_heartbeat.saturating_duration_since(Instant::now());
            if !backlog.is_empty() {
                wait = wait.min(BACKOFF_MIN);
            }
            match pending.recv_timeout(wait) {
                Ok(message) => self.enqueue(&mut backlog, message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(message) = pending.try_recv() {
                self.enqueue(&mut backlog, message);
            }
            if Instant::now() >= next_heartbeat {
                self.enqueue(&mut backlog, self.state_message(heartbeat.clone()));
                next_heartbeat = Instant::now() + self.heartbeat;
            }
            self.flush(&mut backlog);
        }
        let goodbye = Envelope {
            node: self.node_id.clone(),
            body: Body::Goodbye,
        };
        backlog.push_back(self.state_message(goodbye.encode()));
        self.flush(&mut backlog);
    }

    /// An envelope about this node's state, worth sending for up to the node timeout.
    fn state_message(&self, text: String) -> Outgoing {
        Outgoing {
            queued: Instant::now(),
            max_age: None,
            text,
        }
    }

    fn enqueue(&self, backlog: &mut VecDeque<Outgoing>, message: Outgoing) {
        if backlog.len() >= MAX_BACKLOG {
            backlog.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        backlog.push_back(message);
    }

    /// Publishes the backlog in pipelines of at most [`MAX_BATCH`]; stops at the first failure,
    /// keeping what was not confirmed (at-least-once: a retried pipeline may repeat messages).
    fn flush(&mut self, backlog: &mut VecDeque<Outgoing>) {
        let state_max_age = self.max_age;
        let before = backlog.len();
        backlog.retain(|m| m.queued.elapsed() <= m.max_age.unwrap_or(state_max_age));
        self.stats
            .dropped
            .fetch_add((before - backlog.len()) as u64, Ordering::Relaxed);
        while !backlog.is_empty() {
            let count = backlog.len().min(MAX_BATCH);
            let mut pipeline = redis::pipe();
            for message in backlog.iter().take(count) {
                pipeline
                    .cmd(self.publish_command)
                    .arg(&self.channel)
                    .arg(&message.text)
                    .ignore();
            }
            let Some(connection) = self.connection() else {
                return;
            };
            if let Err(error) = pipeline.query::<()>(connection) {
                tracing::warn!(%error, "redis publish failed; reconnecting");
                self.connection = None;
                return;
            }
            backlog.drain(..count);
            self.stats
                .published
                .fetch_add(count as u64, Ordering::Relaxed);
        }
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
}

impl Subscriber {
    fn run(self, inbound: Sender<Inbound>) {
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
    fn subscribe_and_forward(&self, inbound: &Sender<Inbound>) -> redis::RedisResult<()> {
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

    /// Marks the link up and tells shard 0; an error ends the thread (shard 0 is gone).
    fn linked(&self, inbound: &Sender<Inbound>) -> redis::RedisResult<()> {
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Release);
        tracing::info!(channel = %self.channel, sharded = self.sharded, "cluster link up");
        inbound.send(Inbound::Linked).map_err(|_| stopped())
    }

    /// Decodes one bus message and hands it on, unless it is this node's own.
    fn forward(&self, inbound: &Sender<Inbound>, payload: &[u8]) -> redis::RedisResult<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(stopped());
        }
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!("undecodable message on the cluster bus");
            return Ok(());
        };
        if envelope.node == self.node_id {
            return Ok(());
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        inbound
            .send(Inbound::Envelope(envelope))
            .map_err(|_| stopped())
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
