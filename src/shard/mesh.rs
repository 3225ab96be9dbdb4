//! The shard mesh: one bounded single-producer single-consumer channel for every ordered pair of
//! shards, created on the main thread and moved (never cloned) into the shards.
//!
//! Senders never block the code that produces a message: each shard pushes into an unbounded
//! local outbox per peer, and a pump task moves the outbox into the bounded channel, awaiting
//! when the peer is behind. Order between two shards is preserved.

use super::ShardMsg;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use std::rc::Rc;

/// Capacity of each shard-to-shard channel, in messages.
const CHANNEL_CAPACITY: usize = 4096;

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
        Mesh { outboxes }
    }

    /// Queues `msg` for shard `peer` (never this shard itself).
    pub fn send(&self, peer: usize, msg: ShardMsg) {
        if let Some(Some(outbox)) = self.outboxes.get(peer) {
            // An unbounded local channel only refuses when its receiver (the pump) is gone,
            // which happens only while the shard is being torn down.
            let _ = outbox.try_send(msg);
        }
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
    let (outbox, pending) = local_channel::new_unbounded();
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
