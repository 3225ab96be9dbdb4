//! Damping of clients refused after the WebSocket upgrade (4001, 4003, 4004, 4005, 4007).
//!
//! Some clients reconnect at once whatever the close code: webman's and workbunny's `push.js`
//! reset their back-off to 1 ms whenever a socket opens, so a tab with an unknown app key
//! reconnects ~70 times a second. A refusal is therefore held: the socket stays open (the client
//! waits on it instead of looping) for `refusal_delay_ms` before the usual `pusher:error` and
//! close. An address refused `repeat_after` times within `window_secs` is answered more cheaply:
//! held `repeat_delay_ms`, then a bare close frame, with no `pusher:error` and no wait for the
//! client's close.
//!
//! Each shard keeps its own table of recent refusals by address (a thread-local, like the
//! metrics): an LRU of `table_size` entries, the least recently refused address forgotten when
//! full (counted). At most `max_held` refused sockets are held per shard; beyond that a refusal
//! is closed at once (counted), so a flood cannot pin file descriptors. Nothing here touches a
//! connection that was admitted.

use crate::config::DampingConfig;
use lru::LruCache;
use std::cell::RefCell;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// How one refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Damping is off: the full answer at once.
    Immediate,
    /// The shard already holds `max_held` refused sockets: the full answer at once.
    OverCapacity,
    /// Held for this long, then the full answer (`pusher:error`, close, close handshake).
    Delayed(Duration),
    /// A repeat offender: held for this long, then only a close frame.
    Repeat(Duration),
}

impl Treatment {
    /// The metric label of this treatment.
    pub fn label(self) -> &'static str {
        match self {
            Treatment::Immediate => "immediate",
            Treatment::OverCapacity => "over_capacity",
            Treatment::Delayed(_) => "delayed",
            Treatment::Repeat(_) => "repeat",
        }
    }

    /// Whether the refusal gets the full answer (`pusher:error` frame and close handshake).
    pub fn full_answer(self) -> bool {
        !matches!(self, Treatment::Repeat(_))
    }

    fn delay(self) -> Option<Duration> {
        match self {
            Treatment::Delayed(delay) | Treatment::Repeat(delay) => Some(delay),
            Treatment::Immediate | Treatment::OverCapacity => None,
        }
    }
}

/// Refusals of one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Recent {
    window_start: Instant,
    count: u32,
}

/// One shard's memory of recent refusals, by address; bounded by `table_size`.
#[derive(Debug)]
pub struct RefusalTable {
    recent: LruCache<IpAddr, Recent>,
    held: usize,
}

/// What [`RefusalTable::assess`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// How to answer the refusal.
    pub treatment: Treatment,
    /// Whether another address had to be forgotten to remember this one.
    pub evicted: bool,
}

impl RefusalTable {
    /// An empty table remembering at most `capacity` addresses (at least one).
    pub fn new(capacity: usize) -> Self {
        RefusalTable {
            recent: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            held: 0,
        }
    }

    /// Records a refusal of `ip` at `now` and decides how to answer it. A held treatment counts
    /// as held until [`RefusalTable::release`].
    pub fn assess(&mut self, settings: &DampingConfig, ip: IpAddr, now: Instant) -> Assessment {
        if settings.refusal_delay_ms == 0 {
            return Assessment {
                treatment: Treatment::Immediate,
                evicted: false,
            };
        }
        if let Some(capacity) = NonZeroUsize::new(settings.table_size) {
            if capacity != self.recent.cap() {
                self.recent.resize(capacity);
            }
        }
        let window = Duration::from_secs(settings.window_secs);
        let evicted = !self.recent.contains(&ip) && self.recent.len() == self.recent.cap().get();
        let entry = self.recent.get_or_insert_mut(ip, || Recent {
            window_start: now,
            count: 0,
        });
        if now.saturating_duration_since(entry.window_start) >= window {
            *entry = Recent {
                window_start: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        let treatment = if self.held >= settings.max_held {
            Treatment::OverCapacity
        } else if entry.count > settings.repeat_after {
            Treatment::Repeat(Duration::from_millis(settings.repeat_delay_ms))
        } else {
            Treatment::Delayed(Duration::from_millis(settings.refusal_delay_ms))
        };
        if treatment.delay().is_some() {
            self.held += 1;
        }
        Assessment { treatment, evicted }
    }

    /// A held refusal was answered.
    pub fn release(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// Refused sockets held right now.
    pub fn held(&self) -> usize {
        self.held
    }
}

thread_local! {
    static TABLE: RefCell<Option<RefusalTable>> = const { RefCell::new(None) };
}

fn with_table<R>(settings: &DampingConfig, f: impl FnOnce(&mut RefusalTable) -> R) -> R {
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        f(table.get_or_insert_with(|| RefusalTable::new(settings.table_size)))
    })
}

/// Keeps a refusal counted as held until dropped (also when the waiting task is dropped).
struct HeldGuard;

impl Drop for HeldGuard {
    fn drop(&mut self) {
        // `try_with`: the task may be dropped while the shard thread's locals are torn down.
        let _ = TABLE.try_with(|table| {
            if let Some(table) = table.borrow_mut().as_mut() {
                table.release();
            }
        });
    }
}

/// Damps one refusal with close code `code` of a client at `ip`: records it in this shard's
/// table, counts it in the metrics, and waits out its delay. Returns the treatment, which says
/// whether the caller sends the full answer.
pub async fn damp(settings: &DampingConfig, ip: IpAddr, code: u16) -> Treatment {
    let assessment = with_table(settings, |table| table.assess(settings, ip, Instant::now()));
    let treatment = assessment.treatment;
    crate::metrics::with(|m| {
        m.refusal(code, treatment.label());
        if assessment.evicted {
            m.refusal_address_evicted();
        }
    });
    if let Some(delay) = treatment.delay() {
        let _held = HeldGuard;
        glommio::timer::sleep(delay).await;
    }
    treatment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DampingConfig {
        DampingConfig {
            refusal_delay_ms: 100,
            repeat_after: 2,
            repeat_delay_ms: 1_000,
            window_secs: 10,
            table_size: 2,
            max_held: 3,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn off_when_the_delay_is_zero() {
        let mut table = RefusalTable::new(2);
        let off = DampingConfig {
            refusal_delay_ms: 0,
            ..settings()
        };
        let a = table.assess(&off, ip(1), Instant::now());
        assert_eq!(a.treatment, Treatment::Immediate);
        assert!(a.treatment.full_answer());
        assert_eq!(table.held(), 0);
    }

    #[test]
    fn repeats_within_the_window_are_answered_cheaply_and_the_window_resets() {
        let s = settings();
        let mut table = RefusalTable::new(2);
        let t0 = Instant::now();
        let delayed = Treatment::Delayed(Duration::from_millis(100));
        let repeat = Treatment::Repeat(Duration::from_millis(1_000));
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(table.assess(&s, ip(1), t0).treatment);
            table.release();
        }
        assert_eq!(answers, [delayed, delayed, repeat]);
        assert!(!repeat.full_answer());
        // Another address is not affected.
        assert_eq!(table.assess(&s, ip(2), t0).treatment, delayed);
        table.release();
        // A new window starts afresh.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(table.assess(&s, ip(1), later).treatment, delayed);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recently_refused() {
        let s = settings();
        let mut table = RefusalTable::new(2);
        let t0 = Instant::now();
        for _ in 0..3 {
            table.assess(&s, ip(1), t0);
            table.release();
        }
        assert!(!table.assess(&s, ip(2), t0).evicted);
        table.release();
        // ip(1) is the least recently refused: a third address pushes it out.
        assert!(table.assess(&s, ip(3), t0).evicted);
        table.release();
        let again = table.assess(&s, ip(1), t0);
        assert_eq!(
            again.treatment,
            Treatment::Delayed(Duration::from_millis(100))
        );
        assert!(again.evicted);
    }

    #[test]
    fn beyond_max_held_refusals_are_closed_at_once() {
        let s = settings();
        let mut table = RefusalTable::new(16);
        let t0 = Instant::now();
        for n in 0..3 {
            assert!(table.assess(&s, ip(n), t0).treatment.delay().is_some());
        }
        assert_eq!(table.held(), 3);
        assert_eq!(
            table.assess(&s, ip(9), t0).treatment,
            Treatment::OverCapacity
        );
        table.release();
        assert!(table.assess(&s, ip(9), t0).treatment.delay().is_some());
    }
}
