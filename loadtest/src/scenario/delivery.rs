//! The engine shared by the delivery scenarios (`fanout`, `raw-fanout`, `channels`): receivers
//! subscribed to channels, a publisher on a fixed schedule, exact per-connection accounting of
//! every message (sequence bitsets: a single lost or duplicated message is noticed), latency from
//! the *scheduled* send time (no coordinated omission), a timeline, and the server's cost.

use super::{owned, wait_for_setup};
use crate::api::{self, ApiClient, ApiTarget};
use crate::cli::{Common, PublishArgs};
use crate::client::{ClientError, ConnId, ConnSpec, Pool, Target};
use crate::procfs::{self, ProcSample};
use crate::protocol;
use crate::report::{self, Latencies, Percentiles, Point, Report};
use crate::runtime::{self, Behaviour, Control, Phase, Stats};
use hdrhistogram::Histogram;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Event name of API publishes and of the raw server's frames.
pub const EVENT: &str = "loadtest";
/// Event name of client events.
pub const CLIENT_EVENT: &str = "client-loadtest";
/// From entering the run phase to the first scheduled send.
const RUN_DELAY: Duration = Duration::from_millis(100);

/// Who publishes.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// Signed HTTP API requests from a publisher thread.
    Api(ApiTarget),
    /// Client events from `senders` extra connections on the (private) channel 0.
    ClientEvents {
        /// Sender connections.
        senders: usize,
    },
    /// The harness's raw server publishes by itself (see [`crate::rawserver`]); it is handed
    /// the run's control block and schedule through this cell when set-up starts.
    Raw(Arc<OnceLock<(Arc<Control>, Arc<Shared>)>>),
}

/// What is measured for "server" figures.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// A server process (`--server-pid`), or nothing.
    Process(Option<u32>),
    /// A thread of the harness (the raw server), by tid.
    Thread(i32),
}

impl Probe {
    fn sample(&self) -> Option<ProcSample> {
        match *self {
            Probe::Process(Some(pid)) => ProcSample::read(pid).ok(),
            Probe::Process(None) => None,
            Probe::Thread(tid) => procfs::read_own_thread(tid).ok(),
        }
    }
}

/// One run of a delivery scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario name.
    pub scenario: &'static str,
    /// Shared options.
    pub common: Common,
    /// Publishing options.
    pub publish: PublishArgs,
    /// Where the clients connect.
    pub target: Target,
    /// Channel names, by index.
    pub channels: Vec<String>,
    /// The channel index of each receiver.
    pub channel_of: Vec<u32>,
    /// Whether each message goes to a random channel (else always channel 0).
    pub random_channel: bool,
    /// Who publishes.
    pub publisher: Publisher,
    /// What "server" means.
    pub probe: Probe,
    /// Churning connections on channel 0 and their disconnects per second, if any.
    pub churn: Option<(usize, f64)>,
    /// `Some(M)`: the API publisher sends M messages back to back (each as soon as the previous
    /// one was answered) instead of on the `rate` schedule; latency counts from each send.
    pub back_to_back: Option<u64>,
    /// How many of the last `channels` are never published to (their receivers are idle
    /// connections held for the run).
    pub quiet_channels: usize,
}

/// Churning connections: during the run, connection `k % n` is closed and reopened at
/// `run_at + k / rate`, until the publisher is done.
struct Churn {
    control: Arc<Control>,
    shared: Arc<Shared>,
    rate: f64,
    next: u64,
}

impl Behaviour for Churn {
    type Output = ();

    fn on_message(&mut self, _id: ConnId, _text: &[u8]) {}

    fn on_run(&mut self, pool: &mut Pool, now: Instant) -> Option<Instant> {
        if self.shared.done.load(Ordering::Acquire) {
            return None;
        }
        let run_at = self.control.run_at();
        loop {
            let due = run_at + Duration::from_secs_f64(self.next as f64 / self.rate);
            if due > now {
                return Some(due);
            }
            let id = (self.next % pool.len() as u64) as usize;
            if pool.close(id) {
                Stats::add(&self.control.stats.closed, 1);
            }
            pool.reopen(id);
            self.next += 1;
        }
    }

    fn finish(self) {}
}

/// The schedule and the per-channel publish counts, shared with the publisher.
#[derive(Debug)]
pub struct Shared {
    /// Messages successfully published, by channel.
    pub sent: Vec<AtomicU64>,
    /// Set when the publisher has finished.
    pub done: AtomicBool,
    /// Messages to publish.
    pub messages: u64,
    /// Messages per second.
    pub rate: f64,
    /// Channels (for the random pick).
    pub channels: u64,
    /// Whether channels are picked at random.
    pub random_channel: bool,
    /// The `data` string's length.
    pub payload_bytes: usize,
    /// Whether the API publisher ignores the schedule and sends each message when the previous
    /// one was answered.
    pub back_to_back: bool,
}

impl Shared {
    /// When message `k` is due.
    pub fn due(&self, run_at: Instant, k: u64) -> Instant {
        run_at + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// The channel of message `k`.
    pub fn channel_of(&self, k: u64) -> usize {
        if self.random_channel {
            (splitmix(k) % self.channels) as usize
        } else {
            0
        }
    }

    /// Counts a successful publish on channel `c`.
    pub fn count_sent(&self, c: usize, control: &Control) {
        self.sent[c].fetch_add(1, Ordering::Relaxed);
        Stats::add(&control.stats.sent, 1);
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The `data` string of a message: channel index, per-channel sequence number, scheduled send
/// time (ns since the harness's epoch), padded with `x` to `bytes` (when longer than the header).
pub fn payload(c: usize, q: u64, t_ns: u64, bytes: usize) -> String {
    let mut s = format!(r#"{{"c":{c},"q":{q},"t":{t_ns},"p":""#);
    let pad = bytes.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// Reads `(c, q, t)` from a received message (the data may be JSON-escaped once).
pub fn parse_payload(text: &[u8]) -> Option<(u64, u64, u64)> {
    Some((field(text, b'c')?, field(text, b'q')?, field(text, b't')?))
}

fn field(text: &[u8], key: u8) -> Option<u64> {
    let escaped = [b'\\', b'"', key, b'\\', b'"', b':'];
    let plain = [b'"', key, b'"', b':'];
    let start = find(text, &escaped)
        .map(|i| i + escaped.len())
        .or_else(|| find(text, &plain).map(|i| i + plain.len()))?;
    let digits = text[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&text[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Per-connection accounting of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
    /// Distinct sequence numbers seen.
    pub unique: u64,
}

impl SeqSet {
    /// Marks `q`; returns false if it was already seen (a duplicate).
    pub fn insert(&mut self, q: u64) -> bool {
        let (word, bit) = ((q / 64) as usize, q % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        if !was {
            self.unique += 1;
        }
        !was
    }

    /// How many of `0..expected` were not seen.
    pub fn missing(&self, expected: u64) -> u64 {
        let full = (expected / 64) as usize;
        let mut seen: u64 = self
            .bits
            .iter()
            .take(full)
            .map(|w| w.count_ones() as u64)
            .sum();
        if !expected.is_multiple_of(64) {
            let mask = (1u64 << (expected % 64)) - 1;
            seen += (self.bits.get(full).copied().unwrap_or(0) & mask).count_ones() as u64;
        }
        expected - seen
    }
}

/// What one receiver thread found.
#[derive(Debug, Default)]
struct ReceiverResult {
    latencies: Latencies,
    duplicates: u64,
    misrouted: u64,
    lost: u64,
    lost_on_dropped: u64,
    unexpected: u64,
    incomplete: u64,
}

struct Receiver {
    control: Arc<Control>,
    shared: Arc<Shared>,
    chan: Vec<u32>,
    seen: Vec<SeqSet>,
    alive: Vec<bool>,
    dropped: Vec<bool>,
    pending: u64,
    last_ns: u64,
    result: ReceiverResult,
}

impl Receiver {
    fn flush(&mut self) {
        let stats = &self.control.stats;
        Stats::add(&stats.delivered, std::mem::take(&mut self.pending));
        stats
            .last_delivery_ns
            .fetch_max(self.last_ns, Ordering::Relaxed);
    }
}

impl Behaviour for Receiver {
    type Output = ReceiverResult;

    fn on_message(&mut self, id: ConnId, text: &[u8]) {
        let Some((c, q, t)) = parse_payload(text) else {
            if find(text, protocol::ERROR.as_bytes()).is_some() {
                Stats::add(&self.control.stats.pusher_errors, 1);
            }
            return;
        };
        if c != self.chan[id] as u64 {
            self.result.misrouted += 1;
            return;
        }
        if !self.seen[id].insert(q) {
            self.result.duplicates += 1;
            return;
        }
        let now = self.control.now_ns();
        self.pending += 1;
        self.last_ns = self.last_ns.max(now);
        let run_at = self.control.ns_of(self.control.run_at());
        let second = (now.saturating_sub(run_at) / 1_000_000_000) as usize;
        self.result
            .latencies
            .record(now.saturating_sub(t) / 1000, second);
    }

    fn on_subscribed(&mut self, id: ConnId) {
        self.alive[id] = true;
    }

    fn on_dropped(&mut self, id: ConnId, _error: &ClientError) {
        self.alive[id] = false;
        self.dropped[id] = true;
    }

    fn on_run(&mut self, _pool: &mut Pool, _now: Instant) -> Option<Instant> {
        self.flush();
        None
    }

    fn finish(mut self) -> ReceiverResult {
        self.flush();
        for (id, seen) in self.seen.iter().enumerate() {
            let expected = self.shared.sent[self.chan[id] as usize].load(Ordering::Relaxed);
            let missing = seen.missing(expected);
            self.result.unexpected += seen.unique - (expected - missing);
            if self.alive[id] {
                self.result.lost += missing;
                self.result.incomplete += u64::from(missing > 0);
            } else if self.dropped[id] {
                self.result.lost_on_dropped += missing;
            }
        }
        self.result
    }
}

/// Client-event senders: message `k` goes from sender `k % senders`.
struct Senders {
    control: Arc<Control>,
    shared: Arc<Shared>,
    channel: String,
    next: u64,
    ready: Vec<bool>,
}

impl Behaviour for Senders {
    type Output = ();

    fn on_message(&mut self, _id: ConnId, _text: &[u8]) {}

    fn on_subscribed(&mut self, id: ConnId) {
        self.ready[id] = true;
    }

    fn on_run(&mut self, pool: &mut Pool, now: Instant) -> Option<Instant> {
        let run_at = self.control.run_at();
        // One channel: the sequence number is the message number.
        while self.next < self.shared.messages {
            let due = self.shared.due(run_at, self.next);
            if due > now {
                return Some(due);
            }
            let k = self.next;
            self.next += 1;
            let data = payload(0, k, self.control.ns_of(due), self.shared.payload_bytes);
            let text = protocol::client_event_message(
                CLIENT_EVENT,
                &self.channel,
                &serde_json::Value::from(data).to_string(),
            );
            let id = (k % self.ready.len() as u64) as usize;
            match pool.send_text(id, text.as_bytes()) {
                Ok(()) => self.shared.count_sent(0, &self.control),
                Err(e) => {
                    Stats::add(&self.control.stats.publish_errors, 1);
                    self.control
                        .report_error(&format!("sender {id} cannot send"), &e);
                }
            }
        }
        self.shared.done.store(true, Ordering::Release);
        None
    }

    fn finish(self) {}
}

/// How the API publisher's requests were answered.
#[derive(Debug)]
struct Answers {
    /// Time from sending each successful publish to its answer, in µs.
    took: Histogram<u64>,
    /// From the first send to the last answer.
    busy: Duration,
}

/// Publishes through the HTTP API on the calling thread until done or stopped; returns how long
/// each publish took to be answered.
fn api_publisher(
    target: ApiTarget,
    control: &Control,
    shared: &Shared,
    channels: &[String],
) -> Answers {
    let mut client = ApiClient::new(target);
    let mut took = report::new_histogram();
    let mut first_sent: Option<Instant> = None;
    let mut seq = vec![0u64; channels.len()];
    while control.phase() == Phase::Setup {
        std::thread::sleep(Duration::from_millis(1));
    }
    let run_at = control.run_at();
    // Back to back too starts at the run's origin, which the CPU window and the receivers'
    // per-second latencies count from.
    if let Some(wait) = run_at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let mut printed = 0;
    for k in 0..shared.messages {
        if control.phase() == Phase::Stop {
            break;
        }
        let due = if shared.back_to_back {
            Instant::now()
        } else {
            shared.due(run_at, k)
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let c = shared.channel_of(k);
        // A channel's sequence numbers count the publishes the server took: a refused one
        // (429: the server's fan-out queues are full) is a publish error, not a lost delivery,
        // and the next message takes its number.
        let q = seq[c];
        let data = payload(c, q, control.ns_of(due), shared.payload_bytes);
        let body = api::event_body(EVENT, &channels[c], &data);
        let sent_at = Instant::now();
        first_sent.get_or_insert(sent_at);
        let outcome = client.publish(&body);
        let took_us = sent_at.elapsed().as_micros() as u64;
        match outcome {
            Ok(()) => {
                took.saturating_record(took_us.max(1));
                seq[c] += 1;
                shared.count_sent(c, control)
            }
            Err(e) => {
                Stats::add(&control.stats.publish_errors, 1);
                if printed < 5 {
                    printed += 1;
                    eprintln!("\nwarren-loadtest: publish {k}: {e}");
                }
            }
        }
    }
    shared.done.store(true, Ordering::Release);
    Answers {
        took,
        busy: first_sent.map_or(Duration::ZERO, |t| t.elapsed()),
    }
}

/// Runs `plan` and returns its report.
pub fn run(plan: Plan) -> Result<Report, String> {
    let common = &plan.common;
    let n = plan.channel_of.len();
    let rate = plan.publish.rate;
    if rate.is_nan() || rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let messages = plan
        .back_to_back
        .unwrap_or_else(|| (rate * plan.publish.duration_secs).round().max(1.0) as u64);
    let shared = Arc::new(Shared {
        sent: (0..plan.channels.len())
            .map(|_| AtomicU64::new(0))
            .collect(),
        done: AtomicBool::new(false),
        messages,
        rate,
        channels: (plan.channels.len() - plan.quiet_channels) as u64,
        random_channel: plan.random_channel,
        payload_bytes: plan.publish.payload_bytes,
        back_to_back: plan.back_to_back.is_some(),
    });
    let senders = match plan.publisher {
        Publisher::ClientEvents { senders } => senders.max(1),
        _ => 0,
    };
    let mut report = Report::new(plan.scenario, &plan.common.url);
    report.param("connections", n as u64);
    report.param("channels", plan.channels.len() as u64);
    if plan.back_to_back.is_some() {
        report.param("pacing", "back-to-back");
    } else {
        report.param("rate", rate);
    }
    report.param("messages", messages);
    report.param("payload_bytes", plan.publish.payload_bytes as u64);
    report.param("threads", common.threads as u64);
    report.param(
        "via",
        match plan.publisher {
            Publisher::Api(_) => "api",
            Publisher::ClientEvents { .. } => "client-events",
            Publisher::Raw(_) => "raw",
        },
    );
    if senders > 0 {
        report.param("senders", senders as u64);
    }
    if let Some((count, rate)) = plan.churn {
        report.param("churn_connections", count as u64);
        report.param("churn_rate", rate);
    }
    report.notes.extend(procfs::capacity_notes(
        n + senders
            + plan.churn.map_or(0, |(c, _)| c)
            + matches!(plan.publisher, Publisher::Raw(_)) as usize * n,
        n + senders + plan.churn.map_or(0, |(c, _)| c),
        common.source_ips,
        plan.target.addr.ip().is_loopback(),
    ));
    for note in &report.notes {
        eprintln!("warren-loadtest: {note}");
    }
    let pacing = match plan.back_to_back {
        Some(_) => "back to back".to_string(),
        None => format!("at {rate}/s"),
    };
    eprintln!(
        "{}: {n} receivers on {} channel(s) at {}, {messages} messages {pacing}",
        plan.scenario,
        plan.channels.len(),
        plan.target.addr
    );

    let before_setup = plan.probe.sample();
    let control = Control::new();
    if let Publisher::Raw(cell) = &plan.publisher {
        let _ = cell.set((control.clone(), shared.clone()));
    }
    let threads = common.threads.max(1);
    let mut inputs = Vec::new();
    for t in 0..threads {
        let ids = owned(t, threads, n);
        let specs = ids
            .iter()
            .map(|&i| ConnSpec {
                source: plan.target.source_ip(i, common.source_ips),
                channels: vec![plan.channels[plan.channel_of[i] as usize].clone()],
                channel_data: None,
                user_data: None,
            })
            .collect();
        let pool = Pool::new(
            plan.target.clone(),
            &common.key,
            &common.secret,
            specs,
            common.connect_concurrency,
        )
        .map_err(|e| format!("cannot create a client pool: {e}"))?;
        let chan: Vec<u32> = ids.iter().map(|&i| plan.channel_of[i]).collect();
        inputs.push((pool, chan));
    }
    let handles = {
        let control = control.clone();
        let shared = shared.clone();
        runtime::spawn_threads(inputs, move |_, (pool, chan): (Pool, Vec<u32>)| {
            let len = chan.len();
            let receiver = Receiver {
                control: control.clone(),
                shared: shared.clone(),
                chan,
                seen: vec![SeqSet::default(); len],
                alive: vec![false; len],
                dropped: vec![false; len],
                pending: 0,
                last_ns: 0,
                result: ReceiverResult::default(),
            };
            runtime::drive(pool, &control, receiver)
        })?
    };
    let sender_handle = if senders > 0 {
        let specs = (0..senders)
            .map(|i| ConnSpec {
                source: plan.target.source_ip(n + i, common.source_ips),
                channels: vec![plan.channels[0].clone()],
                channel_data: None,
                user_data: None,
            })
            .collect();
        let pool = Pool::new(plan.target.clone(), &common.key, &common.secret, specs, 16)
            .map_err(|e| format!("cannot create a client pool: {e}"))?;
        let behaviour = Senders {
            control: control.clone(),
            shared: shared.clone(),
            channel: plan.channels[0].clone(),
            next: 0,
            ready: vec![false; senders],
        };
        let control = control.clone();
        Some(
            std::thread::Builder::new()
                .name("loadtest-senders".into())
                .spawn(move || runtime::drive(pool, &control, behaviour))
                .map_err(|e| format!("cannot start the sender thread: {e}"))?,
        )
    } else {
        None
    };
    let churners = plan.churn.map_or(0, |(c, _)| c);
    let churn_handle = match plan.churn {
        Some((count, rate)) if count > 0 && rate > 0.0 => {
            let specs = (0..count)
                .map(|i| ConnSpec {
                    source: plan.target.source_ip(n + senders + i, common.source_ips),
                    channels: vec![plan.channels[0].clone()],
                    channel_data: None,
                    user_data: None,
                })
                .collect();
            let pool = Pool::new(
                plan.target.clone(),
                &common.key,
                &common.secret,
                specs,
                common.connect_concurrency,
            )
            .map_err(|e| format!("cannot create a client pool: {e}"))?;
            let behaviour = Churn {
                control: control.clone(),
                shared: shared.clone(),
                rate,
                next: 0,
            };
            let control = control.clone();
            Some(
                std::thread::Builder::new()
                    .name("loadtest-churn".into())
                    .spawn(move || runtime::drive(pool, &control, behaviour))
                    .map_err(|e| format!("cannot start the churn thread: {e}"))?,
            )
        }
        _ => None,
    };
    let publisher_handle = match &plan.publisher {
        Publisher::Api(target) => {
            let (target, control, shared) = (target.clone(), control.clone(), shared.clone());
            let channels = plan.channels.clone();
            Some(
                std::thread::Builder::new()
                    .name("loadtest-publisher".into())
                    .spawn(move || api_publisher(target, &control, &shared, &channels))
                    .map_err(|e| format!("cannot start the publisher thread: {e}"))?,
            )
        }
        _ => None,
    };
    let stop_all = |control: &Control| control.set_phase(Phase::Stop);

    let total = (n + senders + churners) as u64;
    let setup = match wait_for_setup(
        &control,
        total,
        Duration::from_secs(common.setup_timeout_secs),
    ) {
        Ok(took) => took,
        Err(e) => {
            stop_all(&control);
            let _ = runtime::join_threads(handles);
            return Err(e);
        }
    };
    let stats = &control.stats;
    let subscribed = Stats::get(&stats.subscribed);
    let failed = Stats::get(&stats.failed);
    eprintln!(
        "  set-up: {subscribed} subscribed, {failed} failed in {:.2} s",
        setup.as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));

    // The run.
    let before = plan.probe.sample();
    let own_before = ProcSample::read(std::process::id()).ok();
    control.start_run(RUN_DELAY);
    let run_at = control.run_at();
    let last_due = shared.due(run_at, messages.saturating_sub(1));
    let drain = Duration::from_secs(plan.publish.drain_timeout_secs);
    // A back-to-back publisher has no schedule: the drain starts when it has finished.
    let mut deadline = last_due + drain;
    let mut receivers_on = vec![0u64; plan.channels.len()];
    for &c in &plan.channel_of {
        receivers_on[c as usize] += 1;
    }
    let expected_now = || -> u64 {
        shared
            .sent
            .iter()
            .zip(&receivers_on)
            .map(|(s, r)| s.load(Ordering::Relaxed) * r)
            .sum()
    };
    let errors = || {
        Stats::get(&stats.failed)
            + Stats::get(&stats.dropped)
            + Stats::get(&stats.pusher_errors)
            + Stats::get(&stats.publish_errors)
    };
    let mut next_tick = run_at + Duration::from_secs(1);
    let mut last_delivered = 0u64;
    let mut last_sample = before;
    let mut last_tick_at = run_at;
    let mut timeline: Vec<Point> = Vec::new();
    let mut tick = |now: Instant, timeline: &mut Vec<Point>| {
        let delivered = Stats::get(&stats.delivered);
        let dt = now.saturating_duration_since(last_tick_at).as_secs_f64();
        let sample = plan.probe.sample();
        let cpu_pct = match (&last_sample, &sample) {
            (Some(a), Some(b)) if dt > 0.0 => Some(a.sched_ms_until(b) / 10.0 / dt),
            _ => None,
        };
        let point = Point {
            t_s: now.saturating_duration_since(run_at).as_secs_f64(),
            connections: Stats::get(&stats.subscribed)
                .saturating_sub(Stats::get(&stats.dropped) + Stats::get(&stats.closed)),
            deliveries_per_s: if dt > 0.0 {
                (delivered - last_delivered) as f64 / dt
            } else {
                0.0
            },
            errors: errors(),
            latency: None,
            server_rss_kb: sample.map(|s| s.rss_kb),
            server_cpu_pct: cpu_pct,
        };
        eprint!(
            "\r  {:6.1} s  conns {:>7}  sent {:>8}/{messages}  deliveries/s {:>10.0}  errors {:>4}  ",
            point.t_s,
            point.connections,
            Stats::get(&stats.sent),
            point.deliveries_per_s,
            point.errors
        );
        let _ = std::io::stderr().flush();
        timeline.push(point);
        last_delivered = delivered;
        last_sample = sample;
        last_tick_at = now;
    };
    loop {
        let now = Instant::now();
        let done = shared.done.load(Ordering::Acquire);
        if done && Stats::get(&stats.delivered) >= expected_now() {
            break;
        }
        if plan.back_to_back.is_some() && !done {
            deadline = now + drain;
        }
        if now >= deadline {
            break;
        }
        if now >= next_tick {
            tick(now, &mut timeline);
            next_tick += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = Instant::now();
    tick(finished, &mut timeline);
    eprintln!();
    let after = plan.probe.sample();
    let own_after = ProcSample::read(std::process::id()).ok();
    stop_all(&control);
    let results = runtime::join_threads(handles)?;
    if let Some(h) = sender_handle {
        h.join().map_err(|_| "the sender thread panicked")?;
    }
    if let Some(h) = churn_handle {
        h.join().map_err(|_| "the churn thread panicked")?;
    }
    let answered = match publisher_handle {
        Some(h) => Some(h.join().map_err(|_| "the publisher thread panicked")?),
        None => None,
    };

    let mut latencies = Latencies::default();
    let mut total_result = ReceiverResult::default();
    for r in &results {
        latencies.merge(&r.latencies);
        total_result.duplicates += r.duplicates;
        total_result.misrouted += r.misrouted;
        total_result.lost += r.lost;
        total_result.lost_on_dropped += r.lost_on_dropped;
        total_result.unexpected += r.unexpected;
        total_result.incomplete += r.incomplete;
    }
    let sent = Stats::get(&stats.sent);
    let delivered = Stats::get(&stats.delivered);
    let expected = expected_now();
    let last_delivery =
        control.epoch + Duration::from_nanos(stats.last_delivery_ns.load(Ordering::Relaxed));
    let wall = last_delivery
        .saturating_duration_since(run_at)
        .as_secs_f64()
        .max(1e-9);
    let window = finished.saturating_duration_since(run_at).as_secs_f64();
    let server_cpu_s = match (&before, &after) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
        _ => None,
    };
    let harness_cpu_s = match (&own_before, &own_after) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
        _ => None,
    };
    let harness_cpu_s = match (plan.probe, harness_cpu_s, server_cpu_s) {
        // The raw server is a thread of the harness: count it as the server, not the harness.
        (Probe::Thread(_), Some(h), Some(s)) => Some((h - s).max(0.0)),
        (_, h, _) => h,
    };
    let per_million = |v: Option<f64>| {
        v.filter(|_| delivered > 0)
            .map(|v| v * 1e6 / delivered as f64)
    };
    let live = subscribed.saturating_sub(Stats::get(&stats.dropped)).max(1);

    report.timeline = timeline;
    report.figure("connections_subscribed", subscribed);
    report.figure("connections_failed", failed);
    report.figure("connections_dropped", Stats::get(&stats.dropped));
    report.figure("setup_s", setup.as_secs_f64());
    report.figure("messages_published", sent);
    report.figure("publish_errors", Stats::get(&stats.publish_errors));
    report.figure("expected_deliveries", expected);
    report.figure("delivered", delivered);
    report.figure("lost", total_result.lost);
    report.figure("duplicated", total_result.duplicates);
    report.figure("lost_on_dropped_connections", total_result.lost_on_dropped);
    report.figure("misrouted", total_result.misrouted);
    report.figure("unexpected", total_result.unexpected);
    report.figure("receivers_incomplete", total_result.incomplete);
    report.figure("pusher_errors", Stats::get(&stats.pusher_errors));
    report.figure("deliveries_per_s", delivered as f64 / wall);
    report.figure("run_s", window);
    report.figure("server_cpu_s", server_cpu_s);
    report.figure(
        "server_cpu_s_per_million_deliveries",
        per_million(server_cpu_s),
    );
    report.figure(
        "server_cpu_pct",
        server_cpu_s.map(|s| s * 100.0 / window.max(1e-9)),
    );
    let rss_kb = after.map(|s| s.rss_kb);
    if !matches!(plan.probe, Probe::Thread(_)) {
        report.figure("server_rss_kb", rss_kb);
        report.figure(
            "server_rss_kb_per_connection",
            match (&before_setup, &after) {
                (Some(a), Some(b)) => Some((b.rss_kb as f64 - a.rss_kb as f64) / live as f64),
                _ => None,
            },
        );
    }
    if churners > 0 {
        report.figure("churn_disconnects", Stats::get(&stats.closed));
        report.figure(
            "churn_reconnects",
            Stats::get(&stats.subscribed).saturating_sub(subscribed),
        );
    }
    report.figure("harness_cpu_s", harness_cpu_s);
    report.figure(
        "harness_cpu_pct",
        harness_cpu_s.map(|s| s * 100.0 / window.max(1e-9)),
    );
    report.set_latency(&latencies);
    if let Some(answered) = &answered {
        trigger_figures(&mut report, answered);
    }
    if !shared.done.load(Ordering::Acquire) {
        report
            .notes
            .push("the publisher did not finish before the drain deadline".into());
    }
    if Stats::get(&stats.delivered) < expected {
        report.notes.push(format!(
            "{} deliveries missing at the end of the drain window",
            expected - Stats::get(&stats.delivered)
        ));
    }
    Ok(report)
}

/// The API publisher's figures: how long each publish took to be answered, and how many were
/// answered per second while it was publishing.
fn trigger_figures(report: &mut Report, answers: &Answers) {
    let p = Percentiles::of(&answers.took).unwrap_or_default();
    report.figure("triggers_answered", p.count);
    report.figure(
        "triggers_per_s",
        p.count as f64 / answers.busy.as_secs_f64().max(1e-9),
    );
    report.figure("trigger_p50_ms", p.p50);
    report.figure("trigger_p90_ms", p.p90);
    report.figure("trigger_p99_ms", p.p99);
    report.figure("trigger_max_ms", p.max);
    report.figure("trigger_mean_ms", p.mean);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_pad() {
        let p = payload(3, 17, 123_456, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(p.as_bytes()), Some((3, 17, 123_456)));
        // As the server sends it: data double-encoded.
        let msg = serde_json::json!({"event": EVENT, "channel": "c", "data": p}).to_string();
        assert_eq!(parse_payload(msg.as_bytes()), Some((3, 17, 123_456)));
        assert_eq!(parse_payload(br#"{"event":"pusher:pong"}"#), None);
    }

    #[test]
    fn a_single_lost_or_duplicated_message_is_noticed() {
        let mut s = SeqSet::default();
        for q in 0..1000 {
            if q != 500 {
                assert!(s.insert(q));
            }
        }
        assert!(!s.insert(7));
        assert_eq!(s.unique, 999);
        assert_eq!(s.missing(1000), 1);
        assert_eq!(s.missing(500), 0);
        assert_eq!(s.missing(501), 1);
    }
}
