//! Webhook counters (read by `/metrics`) and the rate-limited log of what the bounded queues drop.

use crate::metrics::WebhookFacts;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per this long for each kind of drop.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of webhook delivery (for metrics and tests).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (network error or non-2xx) and will be retried.
    pub failed_attempts: AtomicU64,
    /// Batches given up after the retry period.
    pub dead_lettered: AtomicU64,
    /// Batches dropped because their receiver's spool was full.
    pub dropped_spool_full: AtomicU64,
    /// Batches dropped because their receiver's spool could not be written.
    pub dropped_spool_error: AtomicU64,
    /// Events dropped because the dispatcher's inlet was full.
    pub dropped_inlet_full: AtomicU64,
    /// Events waiting in the dispatcher's inlet.
    pub inlet_depth: AtomicU64,
    /// Batches in the spools, waiting to be delivered.
    pub pending: AtomicU64,
    /// Rate limit of the "spool full" error line.
    pub(crate) spool_full_log: DropLog,
    /// Rate limit of the "cannot write the spool" error line.
    pub(crate) spool_error_log: DropLog,
    /// Rate limit of the "inlet full" error line.
    pub(crate) inlet_full_log: DropLog,
}

impl WebhookStats {
    /// The values `/metrics` renders.
    pub fn facts(&self) -> WebhookFacts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WebhookFacts {
            pending: read(&self.pending),
            inlet_depth: read(&self.inlet_depth),
            delivered: read(&self.delivered),
            failed_attempts: read(&self.failed_attempts),
            dead_lettered: read(&self.dead_lettered),
            dropped_spool_full: read(&self.dropped_spool_full),
            dropped_spool_error: read(&self.dropped_spool_error),
            dropped_inlet_full: read(&self.dropped_inlet_full),
        }
    }
}

/// Lets one log line through per [`DROP_LOG_EVERY`], saying how many drops it stands for.
#[derive(Debug, Default)]
pub struct DropLog {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl DropLog {
    /// Counts one drop and calls `log(drops since the last line)` when a line is due. Never
    /// blocks: a caller that finds the lock taken only counts.
    pub fn note(&self, log: impl FnOnce(u64)) {
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < DROP_LOG_EVERY) {
            return;
        }
        *last = Some(now);
        self.unlogged.fetch_sub(unlogged, Ordering::Relaxed);
        log(unlogged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_logged_once_per_period_with_their_count() {
        let log = DropLog::default();
        let mut lines = Vec::new();
        for _ in 0..5 {
            log.note(|n| lines.push(n));
        }
        assert_eq!(lines, vec![1]);
        *log.last.lock().unwrap() = Some(Instant::now() - DROP_LOG_EVERY);
        log.note(|n| lines.push(n));
        assert_eq!(lines, vec![1, 5]);
    }
}
