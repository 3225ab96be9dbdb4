//! Client threads and their coordination: the main thread moves every client thread through the
//! [`Phase`]s and reads the shared [`Stats`]; each client thread runs one [`Pool`] event loop
//! for a scenario's [`Behaviour`].

use crate::client::{ClientError, ConnId, Event, Pool};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a client thread waits in epoll before looking at the phase again.
const PHASE_POLL: Duration = Duration::from_millis(2);
/// How many connection errors are printed before they are only counted.
const ERRORS_PRINTED: u64 = 10;

/// The phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connections are being opened and subscribed.
    Setup = 0,
    /// The scenario's measured activity (e.g. sending) runs.
    Run = 1,
    /// Connections close and threads finish.
    Stop = 2,
}

/// Counters shared by all client threads and read by the main thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections that reached `subscription_succeeded`.
    pub subscribed: AtomicU64,
    /// Connections that failed before that (connect, upgrade, handshake or subscribe).
    pub failed: AtomicU64,
    /// Subscribed connections that the server closed or broke before the stop phase.
    pub dropped: AtomicU64,
    /// `pusher:error` messages received after subscribing.
    pub pusher_errors: AtomicU64,
    /// Of those, `4301` (client event rate limit).
    pub rate_limited: AtomicU64,
    /// Client events sent.
    pub sent: AtomicU64,
    /// Client events received by subscribers.
    pub delivered: AtomicU64,
    /// Client events received by senders (from the other senders).
    pub delivered_to_senders: AtomicU64,
    /// Time of the latest delivery, in ns since [`Control::epoch`].
    pub last_delivery_ns: AtomicU64,
    /// Subscribers whose final count of events was not the expected one.
    pub incomplete_receivers: AtomicU64,
    /// Publishes that failed (API error or send error).
    pub publish_errors: AtomicU64,
    /// Connections closed on purpose by the scenario (churn).
    pub closed: AtomicU64,
    /// Errors reported through [`Control::report_error`].
    errors_reported: AtomicU64,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// State shared between the main thread and the client threads.
#[derive(Debug)]
pub struct Control {
    phase: AtomicU8,
    /// The time origin of every `*_ns` value.
    pub epoch: Instant,
    /// When the run phase's schedule starts, in ns since `epoch` (set before entering it).
    run_at_ns: AtomicU64,
    /// The counters.
    pub stats: Stats,
}

impl Control {
    /// A fresh control block in the setup phase.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU8::new(Phase::Setup as u8),
            epoch: Instant::now(),
            run_at_ns: AtomicU64::new(0),
            stats: Stats::default(),
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Run,
            _ => Phase::Stop,
        }
    }

    /// Moves every client thread to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Enters the run phase, whose schedule starts `delay` from now.
    pub fn start_run(&self, delay: Duration) {
        let at = self.now_ns() + delay.as_nanos() as u64;
        self.run_at_ns.store(at, Ordering::Release);
        self.set_phase(Phase::Run);
    }

    /// The run phase's schedule origin.
    pub fn run_at(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.run_at_ns.load(Ordering::Acquire))
    }

    /// Nanoseconds since `epoch`.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Converts an instant to ns since `epoch` (0 if earlier).
    pub fn ns_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Prints the first few connection errors to stderr; the caller counts them.
    pub fn report_error(&self, what: &str, error: &ClientError) {
        let n = self.stats.errors_reported.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_PRINTED {
            eprintln!("warren-loadtest: {what}: {error}");
        } else if n == ERRORS_PRINTED {
            eprintln!("warren-loadtest: further errors are only counted");
        }
    }
}

/// What a scenario does on one client thread; [`drive`] calls it from the event loop.
pub trait Behaviour {
    /// What the thread hands back when it finishes.
    type Output: Send + 'static;

    /// Connection `id` of this thread's pool received a text message after subscribing.
    fn on_message(&mut self, id: ConnId, text: &[u8]);

    /// Connection `id` of this thread's pool has subscribed.
    fn on_subscribed(&mut self, _id: ConnId) {}

    /// Connection `id` failed before it subscribed.
    fn on_failed(&mut self, _id: ConnId, _error: &ClientError) {}

    /// Subscribed connection `id` was closed or broken by the server.
    fn on_dropped(&mut self, _id: ConnId, _error: &ClientError) {}

    /// In the run phase, once per loop turn: do what is due at `now` (e.g. send) and say when
    /// something is next due.
    fn on_run(&mut self, _pool: &mut Pool, _now: Instant) -> Option<Instant> {
        None
    }

    /// The run is over: produce the thread's output.
    fn finish(self) -> Self::Output;
}

/// Runs `pool`'s event loop for `behaviour` until the stop phase, counting set-up outcomes and
/// drops in the shared stats; then closes every connection.
pub fn drive<B: Behaviour>(mut pool: Pool, control: &Control, mut behaviour: B) -> B::Output {
    let stats = &control.stats;
    loop {
        let phase = control.phase();
        if phase == Phase::Stop {
            pool.close_all();
            return behaviour.finish();
        }
        let mut timeout = PHASE_POLL;
        if phase == Phase::Run {
            let now = Instant::now();
            if let Some(due) = behaviour.on_run(&mut pool, now) {
                timeout = timeout.min(due.saturating_duration_since(now));
            }
        }
        pool.poll(timeout, &mut |event| match event {
            Event::Message(id, text) => behaviour.on_message(id, text),
            Event::Subscribed(id) => {
                Stats::add(&stats.subscribed, 1);
                behaviour.on_subscribed(id);
            }
            Event::Failed(id, e) => {
                Stats::add(&stats.failed, 1);
                behaviour.on_failed(id, &e);
                control.report_error(&format!("connection {id} failed"), &e);
            }
            Event::Dropped(id, e) => {
                Stats::add(&stats.dropped, 1);
                behaviour.on_dropped(id, &e);
                control.report_error(&format!("connection {id} dropped"), &e);
            }
        });
    }
}

/// Starts one client thread per element of `inputs`; thread `index` runs
/// `body(index, inputs[index])`.
pub fn spawn_threads<I, F, T>(inputs: Vec<I>, body: F) -> Result<Vec<JoinHandle<T>>, String>
where
    I: Send + 'static,
    F: Fn(usize, I) -> T + Send + Clone + 'static,
    T: Send + 'static,
{
    inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| {
            let body = body.clone();
            std::thread::Builder::new()
                .name(format!("loadtest-{index}"))
                .spawn(move || body(index, input))
                .map_err(|e| format!("cannot start a client thread: {e}"))
        })
        .collect()
}

/// Joins every client thread and collects their outputs.
pub fn join_threads<T>(handles: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a client thread panicked".to_string()))
        .collect()
}

/// Polls `done` every millisecond on the calling thread until it holds or `timeout` passes;
/// calls `progress` about once a second. Returns whether `done` held.
pub fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    mut progress: impl FnMut(),
) -> bool {
    let start = Instant::now();
    let mut next_progress = start + Duration::from_secs(1);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= start + timeout {
            return false;
        }
        if now >= next_progress {
            progress();
            next_progress = now + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
