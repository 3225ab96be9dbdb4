//! The subscriber thread: reads the bus, puts each other node's envelopes in order (repeats
//! dropped, gaps asked for again) and hands them to shard 0; reconnects with backoff.

use super::*;

pub(super) struct Subscriber {
    pub(super) client: redis::Client,
    pub(super) channel: String,
    pub(super) node_id: String,
    pub(super) read_timeout: Duration,
    pub(super) sharded: bool,
    pub(super) connected: Arc<AtomicBool>,
    pub(super) stats: Arc<LinkStats>,
    pub(super) stop: Arc<AtomicBool>,
    /// Replay requests for the publisher (its own channel, so the publisher still stops when
    /// the shards' outbox closes).
    pub(super) to_publisher: Sender<Outgoing>,
    /// Each origin's position in its sequence; kept across reconnections.
    pub(super) sequencer: Sequencer,
}

impl Subscriber {
    pub(super) fn run(mut self, inbound: Sender<Inbound>) {
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
    pub(super) fn subscribe_and_forward(
        &mut self,
        inbound: &Sender<Inbound>,
    ) -> redis::RedisResult<()> {
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
    pub(super) fn linked(&self, inbound: &Sender<Inbound>) -> redis::RedisResult<()> {
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Release);
        tracing::info!(channel = %self.channel, sharded = self.sharded, "cluster link up");
        self.ask_replay(self.sequencer.positions());
        inbound.send(Inbound::Linked).map_err(|_| stopped())
    }

    pub(super) fn ask_replay(&self, from: Vec<(String, u64)>) {
        if !from.is_empty() {
            let body = Body::Link(LinkControl::Replay { from });
            let _ = self.to_publisher.send(Outgoing::Body(body, Instant::now()));
        }
    }

    /// Decodes one bus message and hands on, in order, what it releases (nothing of this
    /// node's own); then asks for what is missing and gives up gaps that lasted too long.
    pub(super) fn forward(
        &mut self,
        inbound: &Sender<Inbound>,
        payload: &[u8],
    ) -> redis::RedisResult<()> {
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
    pub(super) fn hand_on(
        &mut self,
        inbound: &Sender<Inbound>,
        released: Released,
    ) -> redis::RedisResult<()> {
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
