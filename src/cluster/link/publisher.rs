//! The publisher thread: drains the shards' outbox into Redis in pipelines, with heartbeats,
//! the bounded replay log of this node's numbered envelopes, and reconnection with backoff.

use super::*;

pub(super) struct Publisher {
    pub(super) client: redis::Client,
    pub(super) channel: String,
    pub(super) node_id: String,
    pub(super) heartbeat: Duration,
    pub(super) publish_command: &'static str,
    /// This node's ordered envelopes, published or not (bounded; see `replay_log`).
    pub(super) log: ReplayLog,
    /// Unordered envelopes waiting for the link (bounded by count and age).
    pub(super) unordered: VecDeque<(Instant, Body)>,
    /// Ordered envelopes dropped since the link last worked (for the log lines).
    pub(super) dropping: u64,
    pub(super) stats: Arc<LinkStats>,
    pub(super) connection: Option<redis::Connection>,
    pub(super) next_attempt: Instant,
    pub(super) backoff: Duration,
}

impl Publisher {
    /// Publishes until every sender of the outbox is gone, then says goodbye. While Redis is
    /// away, ordered envelopes wait in the replay log (bounded by `outage_buffer_secs` and
    /// `outage_buffer_bytes`; beyond, dropped, counted and logged) and go out in order once it
    /// is back; heartbeats are not queued.
    pub(super) fn run(mut self, pending: Receiver<Outgoing>, from_subscriber: Receiver<Outgoing>) {
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

    pub(super) fn take(&mut self, message: Outgoing) {
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
    pub(super) fn count_trimmed(&mut self, trimmed: Trimmed) {
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
    pub(super) fn flush(&mut self, heartbeat: bool) -> bool {
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
    pub(super) fn send(&mut self, pipeline: &redis::Pipeline) -> bool {
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
    pub(super) fn connection(&mut self) -> Option<&mut redis::Connection> {
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
