//! The cluster's task on shard 0: takes what the Redis subscriber decoded (handing the blocking
//! receive to glommio's blocking pool, so the shard never blocks), keeps the node registry, and
//! hands each envelope to the shard.

use crate::cluster::envelope::Body;
use crate::cluster::link::Inbound;
use crate::cluster::registry::NodeRegistry;
use crate::shard::Shard;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Longest wait for inbound messages before the registry is checked again.
const POLL: Duration = Duration::from_millis(200);

/// Most inbound messages handled per batch.
const MAX_BATCH: usize = 1024;

/// Runs until the process stops.
pub async fn run(shard: Rc<Shard>, inbound: Receiver<Inbound>, node_timeout: Duration) {
    let mut registry = NodeRegistry::default();
    let mut receiver = Some(inbound);
    let started = Instant::now();
    let mut owed_settled = false;
    while !shard.process.stop.load(Ordering::Acquire) {
        let Some(rx) = receiver.take() else { return };
        let (rx, batch) = glommio::executor()
            .spawn_blocking(move || {
                let batch = receive_batch(&rx);
                (rx, batch)
            })
            .await;
        receiver = Some(rx);
        let Some(batch) = batch else {
            return;
        };
        let now = Instant::now();
        for item in batch {
            handle(&shard, &mut registry, item, now).await;
        }
        if !owed_settled && started.elapsed() >= node_timeout {
            owed_settled = true;
            shard
                .settle_owed_webhooks(!registry.nodes().is_empty())
                .await;
        }
        let dead = registry.expire(Instant::now(), node_timeout);
        if !dead.is_empty() {
            // The survivors learn who is left first: the leader for the dead node's webhooks is
            // chosen among them.
            shard.share_live_nodes(registry.nodes());
            for node in dead {
                tracing::warn!(node = %node, "cluster node timed out; dropping its state");
                shard.node_gone(node);
            }
        }
    }
}

/// Waits up to [`POLL`] for a message, then takes what else is queued; `None` when the
/// subscriber thread is gone.
fn receive_batch(rx: &Receiver<Inbound>) -> Option<Vec<Inbound>> {
    let mut batch = Vec::new();
    match rx.recv_timeout(POLL) {
        Ok(item) => batch.push(item),
        Err(RecvTimeoutError::Timeout) => return Some(batch),
        Err(RecvTimeoutError::Disconnected) => return None,
    }
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn handle(shard: &Rc<Shard>, registry: &mut NodeRegistry, item: Inbound, now: Instant) {
    let envelope = match item {
        Inbound::Linked => {
            // Tell everyone what this node has, and ask for what they have: after a start, a
            // restart of Redis, or an outage that may have lost messages.
            registry.resume(now);
            shard.announce(true).await;
            return;
        }
        Inbound::Unlinked => {
            registry.pause(now);
            return;
        }
        Inbound::Envelope(envelope) => envelope,
    };
    if let Body::Goodbye = envelope.body {
        if registry.remove(&envelope.node) {
            tracing::info!(node = %envelope.node, "cluster node left");
            shard.share_live_nodes(registry.nodes());
            shard.node_gone(envelope.node.as_str().into());
        }
        return;
    }
    let (node, is_new) = registry.touch(&envelope.node, now);
    if is_new {
        tracing::info!(node = %node, "cluster node joined");
        shard.share_live_nodes(registry.nodes());
    }
    shard.handle_envelope(node, envelope.body).await;
}
