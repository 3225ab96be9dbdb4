//! A shard's life after start: the coarse tick (clock, liveness sweep, held-back subscription
//! counts, configuration reloads) until the process is asked to stop, then the drain.

use super::Shard;
use crate::protocol::codes;
use crate::socket::Connection;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often each shard refreshes its clock and checks for a stop request.
pub const TICK: Duration = Duration::from_millis(100);

/// Liveness sweeps run every this many ticks.
const TICKS_PER_SWEEP: u32 = 10;

/// How often a draining shard looks again at its connections and its peers.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How much longer than the grace period a drained shard waits for its peers to drain.
const DRAIN_SETTLE_SLACK: Duration = Duration::from_secs(30);

/// A paced drain closes one batch of connections every this often.
const DRAIN_BATCH_INTERVAL: Duration = Duration::from_millis(10);

impl Shard {
    /// Ticks until the process is asked to stop.
    pub async fn tick_until_stopped(&self) {
        let mut ticks = 0u32;
        while !self.process.stop.load(Ordering::Acquire) {
            glommio::timer::sleep(TICK).await;
            ticks += 1;
            self.tick(ticks.is_multiple_of(TICKS_PER_SWEEP));
        }
    }

    /// One tick: the clock, optionally the liveness sweep, due counts, a pending reload.
    pub fn tick(&self, sweep: bool) {
        self.now.set(Instant::now());
        if sweep {
            self.sweep_liveness();
            self.sweep_cache();
            self.close_unauthorized();
        }
        self.send_due_subscription_counts();
        self.apply_reloaded_apps();
    }

    /// Picks up the app registry of a configuration reload (checked every tick; the lock is
    /// taken only when there is one): closes the connections of removed (4001) and disabled
    /// (4003) apps, and makes room for added apps. Waits for the next tick while some task still
    /// borrows the current registry.
    pub fn apply_reloaded_apps(&self) {
        let generation = self.process.apps_generation.load(Ordering::Acquire);
        if generation == self.apps_generation.get() {
            return;
        }
        let Some(fresh) = self
            .process
            .reloaded_apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let Ok(mut apps) = self.apps.try_borrow_mut() else {
            return;
        };
        *apps = fresh.clone();
        drop(apps);
        self.apps_generation.set(generation);
        self.channels.borrow_mut().ensure_apps(fresh.len());
        let open: Vec<Rc<Connection>> = self.connections.borrow().values().cloned().collect();
        for conn in open {
            let Some(app) = fresh.get(conn.app.index) else {
                continue;
            };
            if app.removed {
                conn.send_error(
                    Some(codes::APP_NOT_FOUND),
                    "App removed from the configuration",
                );
                conn.close(codes::APP_NOT_FOUND, "App removed");
            } else if !app.config.enabled {
                conn.send_error(Some(codes::APP_DISABLED), "Application disabled");
                conn.close(codes::APP_DISABLED, "Application disabled");
            }
        }
        tracing::debug!(shard = self.id, generation, "applied reloaded apps");
    }

    fn sweep_liveness(&self) {
        let now = self.now();
        let activity = Duration::from_secs(self.config.server.activity_timeout);
        let pong = Duration::from_secs(self.config.server.pong_timeout);
        for conn in self.connections.borrow().values() {
            conn.check_liveness(now, activity, pong);
        }
    }

    /// Closes every connection with 4200 — paced at `server.drain_rate` a second, so that the
    /// clients of a big node do not all reconnect elsewhere in the same second — waits (up to the
    /// grace period) until they are gone, then settles with the peers: what the leaves sent to
    /// other shards (occupancy, presence) has been handled there before any shard of the node
    /// stops.
    pub async fn drain(&self) {
        let open: Vec<Rc<Connection>> = self.connections.borrow().values().cloned().collect();
        tracing::info!(
            shard = self.id,
            connections = open.len(),
            "closing connections for shutdown"
        );
        let per_batch = self.drain_batch();
        for (n, batch) in open.chunks(per_batch).enumerate() {
            if n > 0 {
                glommio::timer::sleep(DRAIN_BATCH_INTERVAL).await;
            }
            for conn in batch {
                conn.close(codes::SHUTTING_DOWN, "Server shutting down");
            }
        }
        let grace = Duration::from_secs(self.config.server.shutdown_grace + 1);
        let deadline = Instant::now() + grace;
        while self.connection_count() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        // Every message this shard sent before the barrier has been handled by its peers once
        // they answer; no shard leaves before all have passed theirs.
        let _ = self.gather(|_| ()).await;
        self.process.drained.fetch_add(1, Ordering::AcqRel);
        let shards = self.process.shards.load(Ordering::Acquire);
        // A peer may still be pacing its own drain: wait for it (bounded, in case one hangs).
        let settle_deadline = Instant::now() + grace + DRAIN_SETTLE_SLACK;
        while self.process.drained.load(Ordering::Acquire) < shards
            && Instant::now() < settle_deadline
        {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        while self.deliveries.len() > 0 && Instant::now() < settle_deadline {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
    }

    /// Connections closed per batch of a paced drain (all at once when `drain_rate` is 0).
    fn drain_batch(&self) -> usize {
        match self.config.server.drain_rate {
            0 => usize::MAX,
            rate => (rate / 100).max(1),
        }
    }
}
