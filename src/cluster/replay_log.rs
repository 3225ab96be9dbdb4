//! The publisher's bounded log of this node's ordered envelopes: each gets the next number of
//! the node's sequence; the log keeps them (published or not) for `outage_buffer_secs` and at
//! most `outage_buffer_bytes`, so that what Redis could not take is published once it is back,
//! and what another node missed can be re-published when it asks.
//!
//! A cursor marks the next envelope to publish; a replay request moves it back. Trimming an
//! envelope that was published at least once is the normal end of its retention; trimming one
//! that was never published is a drop, reported to the caller (counted and logged there).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One encoded ordered envelope.
#[derive(Debug)]
pub struct Entry {
    /// Its number in this node's sequence.
    pub seq: u64,
    /// When it was queued.
    pub at: Instant,
    /// The encoded envelope.
    pub text: String,
}

/// Envelopes trimmed before they were ever published, by cause.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Older than the log's age bound.
    pub too_old: u64,
    /// Pushed out by the byte bound.
    pub over_bytes: u64,
}

/// The log (see the module documentation).
#[derive(Debug)]
pub struct ReplayLog {
    entries: VecDeque<Entry>,
    bytes: usize,
    next_seq: u64,
    cursor: u64,
    published_upto: u64,
    max_age: Duration,
    max_bytes: usize,
}

impl ReplayLog {
    /// An empty log; the first envelope gets number 1.
    pub fn new(max_age: Duration, max_bytes: usize) -> ReplayLog {
        ReplayLog {
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            cursor: 1,
            published_upto: 0,
            max_age,
            max_bytes,
        }
    }

    /// The number the next envelope gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The highest number published at least once (0: none).
    pub fn published_upto(&self) -> u64 {
        self.published_upto
    }

    /// Appends the envelope encoded by `encode(seq)` and trims to the bounds.
    pub fn push(&mut self, now: Instant, encode: impl FnOnce(u64) -> String) -> Trimmed {
        let seq = self.next_seq;
        self.next_seq += 1;
        let text = encode(seq);
        self.bytes += text.len();
        self.entries.push_back(Entry { seq, at: now, text });
        self.trim(now)
    }

    /// Drops what is older than the age bound or beyond the byte bound (oldest first).
    pub fn trim(&mut self, now: Instant) -> Trimmed {
        let mut trimmed = Trimmed::default();
        while let Some(front) = self.entries.front() {
            let too_old = now.duration_since(front.at) > self.max_age;
            let over_bytes = self.bytes > self.max_bytes;
            if !too_old && !over_bytes {
                break;
            }
            if front.seq > self.published_upto {
                if too_old {
                    trimmed.too_old += 1;
                } else {
                    trimmed.over_bytes += 1;
                }
            }
            let front = self.entries.pop_front().expect("just seen");
            self.bytes -= front.text.len();
            self.cursor = self.cursor.max(front.seq + 1);
        }
        trimmed
    }

    /// Up to `max` envelopes from the cursor on, in order.
    pub fn due(&self, max: usize) -> impl Iterator<Item = &Entry> {
        let skip = self
            .entries
            .front()
            .map_or(0, |f| (self.cursor.saturating_sub(f.seq)) as usize);
        self.entries.iter().skip(skip).take(max)
    }

    /// Whether envelopes wait at the cursor.
    pub fn has_due(&self) -> bool {
        self.cursor < self.next_seq
    }

    /// The next `count` envelopes at the cursor were published.
    pub fn mark_published(&mut self, count: usize) {
        self.cursor = (self.cursor + count as u64).min(self.next_seq);
        self.published_upto = self.published_upto.max(self.cursor - 1);
    }

    /// Someone wants everything after `after` again: moves the cursor back. Returns the last
    /// number that can no longer be re-published, when the request reaches below the log.
    pub fn rewind(&mut self, after: u64) -> Option<u64> {
        let wanted = after.saturating_add(1);
        if wanted >= self.cursor {
            return None;
        }
        let oldest = self.entries.front().map_or(self.next_seq, |f| f.seq);
        self.cursor = wanted.max(oldest);
        (wanted < oldest).then(|| oldest - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64, now: Instant) -> ReplayLog {
        let mut log = ReplayLog::new(Duration::from_secs(10), 1 << 20);
        for _ in 0..n {
            log.push(now, |seq| format!("e{seq}"));
        }
        log
    }

    fn due(log: &ReplayLog) -> Vec<u64> {
        log.due(100).map(|e| e.seq).collect()
    }

    #[test]
    fn publishes_in_order_and_replays_on_request() {
        let now = Instant::now();
        let mut log = log_of(5, now);
        assert_eq!(due(&log), [1, 2, 3, 4, 5]);
        log.mark_published(3);
        assert_eq!((due(&log), log.published_upto()), (vec![4, 5], 3));
        log.mark_published(2);
        assert!(!log.has_due());
        assert_eq!(log.rewind(5), None);
        assert_eq!(log.rewind(2), None);
        assert_eq!(due(&log), [3, 4, 5]);
        assert_eq!(log.published_upto(), 5);
    }

    #[test]
    fn trims_by_age_and_bytes_counting_only_unpublished() {
        let start = Instant::now();
        let mut log = log_of(4, start);
        log.mark_published(1);
        let later = start + Duration::from_secs(11);
        assert_eq!(
            log.trim(later),
            Trimmed {
                too_old: 3,
                over_bytes: 0
            }
        );
        assert!(!log.has_due());
        assert_eq!(log.rewind(0), Some(4));
        let mut small = ReplayLog::new(Duration::from_secs(10), 4);
        small.push(start, |_| "abc".into());
        let trimmed = small.push(start, |_| "def".into());
        assert_eq!(trimmed.over_bytes, 1);
        assert_eq!(due(&small), [2]);
        assert_eq!(small.rewind(0), Some(1));
        assert_eq!(due(&small), [2]);
    }
}
