//! The shard mesh: one bounded single-producer single-consumer channel for every ordered pair of
//! shards, created on the main thread and moved (never cloned) into the shards.
//!
//! Senders never block the code that produces a message: each shard pushes into a bounded local
//! outbox per peer, and a pump task moves the outbox into the bounded channel, awaiting when the
//! peer is behind. Order between two shards is preserved.
//!
//! At the outbox's bound ([`OUTBOX_CAPACITY`] messages: a peer that has stopped reading for a
//! long while) the newest message is dropped, counted as
//! `warren_runtime_events_total{event="mesh_outbox_full"}` and logged (at most once a second).
//! Producers that can wait or refuse — HTTP publishes — check [`Mesh::has_room`] first and answer
//! 429 instead, so what is dropped is never an accepted publish.

use super::msg::ShardMsg;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use std::rc::Rc;

/// Capacity of each shard-to-shard channel, in messages.
const CHANNEL_CAPACITY: usize = 4096;

/// Capacity of each per-peer outbox, in messages.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// Room an HTTP publish wants in every outbox before it is accepted.
const PUBLISH_HEADROOM: usize = 4096;

/// One shard's ends of the mesh, before the shard has started.
pub struct MeshEnds {
    /// `senders[peer]`: this shard → peer (None for itself).
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    /// `receivers[peer]`: peer → this shard (None for itself).
    receivers: Vec<Option<SharedReceiver<ShardMsg>>>,
}

/// Builds the ends for `shards` shards; entry `i` goes to shard `i`.
pub fn build(shards: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// The running mesh of one shard: an outbox per peer.
pub struct Mesh {
    outboxes: Vec<Option<LocalSender<ShardMsg>>>,
    last_drop_log: std::cell::Cell<Option<std::time::Instant>>,
}

impl Mesh {
    /// Starts this shard's ends inside its executor: a pump per outgoing channel, and a reader per
    /// incoming channel that calls `on_message` for each message, one at a time.
    ///
    /// Each end connects in its own task: connecting waits for the peer's end, and peers start
    /// in any order. Messages sent before a peer is up wait in the outbox.
    pub fn start<F, Fut>(ends: MeshEnds, on_message: F) -> Mesh
    where
        F: Fn(ShardMsg) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let outboxes = ends
            .senders
            .into_iter()
            .map(|sender| sender.map(spawn_pump))
            .collect();
        let on_message = Rc::new(on_message);
        for receiver in ends.receivers.into_iter().flatten() {
            let on_message = on_message.clone();
            glommio::spawn_local(async move {
                let receiver = receiver.connect().await;
                while let Some(msg) = receiver.recv().await {
                    on_message(msg).await;
                }
            })
            .detach();
        }
        Mesh {
            outboxes,
            last_drop_log: std::cell::Cell::new(None),
        }
    }

    /// Queues `msg` for shard `peer` (never this shard itself); at the outbox's bound the message
    /// is dropped, counted and logged.
    pub fn send(&self, peer: usize, msg: ShardMsg) {
        let Some(Some(outbox)) = self.outboxes.get(peer) else {
            return;
        };
        if let Err(error) = outbox.try_send(msg) {
            // Full, or the pump is gone (only while the shard is torn down).
            crate::metrics::with(|m| m.runtime_event("mesh_outbox_full"));
            self.log_drop(peer, &error);
        }
    }

    fn log_drop(&self, peer: usize, error: &glommio::GlommioError<ShardMsg>) {
        let now = std::time::Instant::now();
        let quiet = self
            .last_drop_log
            .get()
            .is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(1));
        if !quiet {
            self.last_drop_log.set(Some(now));
            let kind = match error {
                glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg)) => {
                    msg.kind()
                }
                _ => "unknown",
            };
            tracing::error!(
                peer,
                kind,
                "mesh outbox to a peer shard is full: message dropped"
            );
        }
    }

    /// Whether every peer's outbox has room for an HTTP publish's messages.
    pub fn has_room(&self) -> bool {
        self.outboxes
            .iter()
            .flatten()
            .all(|o| o.len() + PUBLISH_HEADROOM <= OUTBOX_CAPACITY)
    }

    /// Shards other than this one.
    pub fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        self.outboxes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|_| i))
    }
}

fn spawn_pump(sender: SharedSender<ShardMsg>) -> LocalSender<ShardMsg> {
    let (outbox, pending) = local_channel::new_bounded(OUTBOX_CAPACITY);
    glommio::spawn_local(async move {
        let sender = sender.connect().await;
        while let Some(msg) = pending.recv().await {
            if sender.send(msg).await.is_err() {
                break;
            }
        }
    })
    .detach();
    outbox
}
