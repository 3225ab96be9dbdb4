//! `presence`: join/leave churn on presence channels, and member events received vs expected.
//!
//! `C` channels `presence-loadtest-{c}`; on each, `M` steady members (join during set-up and
//! stay) and `K` churners (connected, on no channel, during set-up). In the run, churners
//! subscribe and unsubscribe on a fixed schedule: cycle `n` (of `rate × duration`) is due at
//! `start + n / rate` and belongs to churner `n % (C·K)`, which joins then and leaves half its
//! period (`C·K / (2·rate)`) later. Every user is distinct, so each join must produce exactly one
//! `member_added` and each leave one `member_removed` on every steady member of that channel.
//!
//! Global connection `g`: steady member for `g < C·M` (channel `g % C`), else churner
//! `j = g − C·M` (channel `j / K`); its user id is `u-{g}`.

use super::owned;
use crate::cli::PresenceArgs;
use crate::client::{ClientError, ConnId, ConnSpec, Pool, Target};
use crate::procfs::{self, ProcSample};
use crate::protocol::{self, ServerMessage};
use crate::report::{Latencies, Point, Report};
use crate::runtime::{self, Behaviour, Control, Phase, Stats};
use serde::Deserialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delay between entering the run phase and the first scheduled join.
const RUN_DELAY: Duration = Duration::from_millis(100);
/// Wait after everything expected has arrived, so that extra events show up.
const SETTLE: Duration = Duration::from_millis(200);

/// The shape of the run, shared by every thread.
#[derive(Debug, Clone, Copy)]
struct Layout {
    channels: usize,
    members: usize,
    churners: usize,
    /// Join/leave cycles per second, over all churners.
    rate: f64,
    /// Cycles in the run.
    cycles: u64,
}

impl Layout {
    fn steady(&self) -> usize {
        self.channels * self.members
    }

    fn total_churners(&self) -> usize {
        self.channels * self.churners
    }

    /// Offset from the run's start of cycle `k` of churner `j`.
    fn join_offset(&self, j: usize, k: u64) -> Duration {
        let n = k * self.total_churners() as u64 + j as u64;
        Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// How long a churner stays joined: half its period.
    fn stay(&self) -> Duration {
        Duration::from_secs_f64(self.total_churners() as f64 / self.rate / 2.0)
    }

    /// Whether churner `j` has a cycle `k`.
    fn has_cycle(&self, j: usize, k: u64) -> bool {
        k * (self.total_churners() as u64) + (j as u64) < self.cycles
    }

    /// Channel of steady member or churner `g`, and the churner index if it is one.
    fn role_of(&self, g: usize) -> (usize, Option<usize>) {
        if g < self.steady() {
            (g % self.channels, None)
        } else {
            let j = g - self.steady();
            (j / self.churners.max(1), Some(j))
        }
    }
}

fn channel_name(c: usize) -> String {
    format!("presence-loadtest-{c}")
}

fn channel_data(user: usize) -> String {
    format!(r#"{{"user_id":"u-{user}","user_info":{{"n":{user}}}}}"#)
}

fn user_number(id: &str) -> Option<usize> {
    id.strip_prefix("u-")?.parse().ok()
}

/// Counters shared by the client threads and the main thread.
#[derive(Debug)]
struct Shared {
    /// Subscribes sent by churners, per channel.
    joins: Vec<AtomicU64>,
    /// Unsubscribes sent by churners, per channel.
    leaves: Vec<AtomicU64>,
    /// Steady members subscribed, per channel.
    members_on: Vec<AtomicU64>,
    /// Churner `member_added` + `member_removed` received by steady members.
    received: AtomicU64,
    /// Churners that have finished their cycles (or failed, dropped or could not send).
    churners_done: AtomicU64,
    /// Churner sends that failed.
    send_errors: AtomicU64,
    /// Latest join send, in ns since the control's epoch.
    last_join_ns: AtomicU64,
}

impl Shared {
    fn new(channels: usize) -> Self {
        let counters = || (0..channels).map(|_| AtomicU64::new(0)).collect();
        Self {
            joins: counters(),
            leaves: counters(),
            members_on: counters(),
            received: AtomicU64::new(0),
            churners_done: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            last_join_ns: AtomicU64::new(0),
        }
    }

    fn sum(v: &[AtomicU64]) -> u64 {
        v.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Churner member events the steady members should have received so far.
    fn expected(&self) -> u64 {
        (0..self.joins.len())
            .map(|c| {
                (self.joins[c].load(Ordering::Relaxed) + self.leaves[c].load(Ordering::Relaxed))
                    * self.members_on[c].load(Ordering::Relaxed)
            })
            .sum()
    }
}

/// A steady member's tally.
#[derive(Debug, Clone, Default)]
struct Member {
    channel: usize,
    user: usize,
    subscribed: bool,
    dropped: bool,
    /// Churner `member_added` received.
    added: u64,
    /// Churner `member_removed` received.
    removed: u64,
    /// `member_added` received per churner of the channel (the join number, for latency).
    joins_seen: Vec<u64>,
    /// Steady users of the channel this member knows of: its roster, plus later
    /// `member_added`, minus `member_removed`.
    view: HashSet<usize>,
    /// The roster was well-formed and plausible.
    roster_ok: bool,
    /// The roster's `count`.
    roster_count: u64,
}

/// A churner's state.
#[derive(Debug, Clone)]
struct Churner {
    channel: usize,
    /// Global churner index.
    j: usize,
    channel_name: String,
    channel_data: String,
    ready: bool,
    joined: bool,
    /// Next cycle number.
    k: u64,
    /// Its cycles are over (or it can no longer run them).
    done: bool,
}

#[derive(Debug, Clone)]
enum Role {
    Member(Member),
    Churner(Churner),
}

/// What a client thread hands back.
#[derive(Debug, Default)]
struct Output {
    members: Vec<Member>,
    latencies: Latencies,
    /// Member events for users that should not be on that channel, or that do not parse.
    foreign: u64,
}

/// One client thread's share of the connections.
struct Thread {
    layout: Layout,
    control: Arc<Control>,
    shared: Arc<Shared>,
    key: String,
    secret: String,
    roles: Vec<Role>,
    /// Churner actions due: (when, connection).
    queue: BinaryHeap<Reverse<(Instant, ConnId)>>,
    started: bool,
    latencies: Latencies,
    foreign: u64,
}

#[derive(Deserialize)]
struct RosterData {
    presence: Roster,
}

#[derive(Deserialize)]
struct Roster {
    count: u64,
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct MemberData {
    user_id: String,
}

impl Thread {
    fn finish_churner(&mut self, id: ConnId) {
        if let Role::Churner(ch) = &mut self.roles[id] {
            if !ch.done {
                ch.done = true;
                self.shared.churners_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Does churner `id`'s action due at `due` (join or leave) and queues its next one.
    fn act(&mut self, pool: &mut Pool, id: ConnId, due: Instant, run_at: Instant) {
        let layout = self.layout;
        let Role::Churner(ch) = &mut self.roles[id] else {
            return;
        };
        if ch.done {
            return;
        }
        let shared = &self.shared;
        let result = if ch.joined {
            let text = protocol::unsubscribe_message(&ch.channel_name);
            pool.send_text(id, text.as_bytes()).map(|()| {
                shared.leaves[ch.channel].fetch_add(1, Ordering::Relaxed);
                ch.joined = false;
                ch.k += 1;
                layout
                    .has_cycle(ch.j, ch.k)
                    .then(|| run_at + layout.join_offset(ch.j, ch.k))
            })
        } else {
            let socket_id = pool.socket_id(id).unwrap_or_default();
            let auth = protocol::presence_channel_auth(
                &self.key,
                &self.secret,
                socket_id,
                &ch.channel_name,
                &ch.channel_data,
            );
            let text =
                protocol::presence_subscribe_message(&ch.channel_name, &auth, &ch.channel_data);
            pool.send_text(id, text.as_bytes()).map(|()| {
                shared.joins[ch.channel].fetch_add(1, Ordering::Relaxed);
                shared
                    .last_join_ns
                    .fetch_max(self.control.now_ns(), Ordering::Relaxed);
                ch.joined = true;
                Some(due + layout.stay())
            })
        };
        match result {
            Ok(Some(next)) => self.queue.push(Reverse((next, id))),
            Ok(None) => self.finish_churner(id),
            Err(_) => {
                self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
                self.finish_churner(id);
            }
        }
    }

    /// A steady member's message.
    fn on_member_message(&mut self, id: ConnId, msg: &ServerMessage<'_>) {
        let layout = self.layout;
        let Role::Member(m) = &mut self.roles[id] else {
            return;
        };
        let Some(data) = msg.data_text() else {
            return;
        };
        // A steady user of this member's channel, or a churner of it (by its index there).
        let classify = |id: &str| -> Option<Result<usize, usize>> {
            let g = user_number(id)?;
            if g >= layout.steady() + layout.total_churners() {
                return None;
            }
            match layout.role_of(g) {
                (c, None) if c == m.channel => Some(Ok(g)),
                (c, Some(j)) if c == m.channel => Some(Err(j)),
                _ => None,
            }
        };
        match msg.event.as_ref() {
            protocol::SUBSCRIPTION_SUCCEEDED => {
                let Ok(roster) = serde_json::from_str::<RosterData>(&data) else {
                    m.roster_ok = false;
                    return;
                };
                let roster = roster.presence;
                m.roster_count = roster.count;
                let mut ok = roster.count >= 1
                    && roster.count as usize == roster.ids.len()
                    && roster.count as usize <= layout.members
                    && roster.ids.iter().any(|i| user_number(i) == Some(m.user));
                for i in &roster.ids {
                    match classify(i) {
                        Some(Ok(g)) => {
                            m.view.insert(g);
                        }
                        _ => ok = false,
                    }
                }
                m.roster_ok = ok;
            }
            protocol::MEMBER_ADDED | protocol::MEMBER_REMOVED => {
                let added = msg.event == protocol::MEMBER_ADDED;
                let who = serde_json::from_str::<MemberData>(&data)
                    .ok()
                    .and_then(|d| classify(&d.user_id));
                match who {
                    Some(Ok(g)) => {
                        if added {
                            m.view.insert(g);
                        } else {
                            m.view.remove(&g);
                        }
                    }
                    Some(Err(j)) => {
                        self.shared.received.fetch_add(1, Ordering::Relaxed);
                        if !added {
                            m.removed += 1;
                            return;
                        }
                        m.added += 1;
                        let slot = &mut m.joins_seen[j % layout.churners];
                        let k = *slot;
                        *slot += 1;
                        let run_at = self.control.run_at();
                        let now = Instant::now();
                        let due = run_at + layout.join_offset(j, k);
                        let us = now.saturating_duration_since(due).as_micros() as u64;
                        let second = now.saturating_duration_since(run_at).as_secs() as usize;
                        self.latencies.record(us, second);
                    }
                    None => self.foreign += 1,
                }
            }
            _ => {}
        }
    }
}

impl Behaviour for Thread {
    type Output = Output;

    fn on_message(&mut self, id: ConnId, text: &[u8]) {
        // The run is over and connections are closing: every thread closes its own when it sees
        // the stop phase, so a thread still polling gets `member_removed` for the steady members
        // of threads that closed first. Those belong to the harness's teardown, not to the run:
        // counting them would empty the views of the members of whichever thread stops last.
        if self.control.phase() == Phase::Stop {
            return;
        }
        let Ok(msg) = ServerMessage::parse(text) else {
            self.foreign += 1;
            return;
        };
        if msg.event == protocol::ERROR {
            Stats::add(&self.control.stats.pusher_errors, 1);
            self.control.report_error(
                &format!("connection {id}"),
                &ClientError::Pusher(String::from_utf8_lossy(text).into_owned()),
            );
            return;
        }
        if matches!(self.roles[id], Role::Member(_)) {
            self.on_member_message(id, &msg);
        }
    }

    fn on_subscribed(&mut self, id: ConnId) {
        match &mut self.roles[id] {
            Role::Member(m) => {
                m.subscribed = true;
                self.shared.members_on[m.channel].fetch_add(1, Ordering::Relaxed);
            }
            Role::Churner(ch) => ch.ready = true,
        }
    }

    fn on_failed(&mut self, id: ConnId, _error: &ClientError) {
        self.finish_churner(id);
    }

    fn on_dropped(&mut self, id: ConnId, _error: &ClientError) {
        if let Role::Member(m) = &mut self.roles[id] {
            m.dropped = true;
        }
        self.finish_churner(id);
    }

    fn on_run(&mut self, pool: &mut Pool, now: Instant) -> Option<Instant> {
        let run_at = self.control.run_at();
        if !self.started {
            self.started = true;
            for id in 0..self.roles.len() {
                let first = match &self.roles[id] {
                    Role::Churner(ch) if ch.ready && self.layout.has_cycle(ch.j, 0) => {
                        Some(run_at + self.layout.join_offset(ch.j, 0))
                    }
                    Role::Churner(_) => None,
                    Role::Member(_) => continue,
                };
                match first {
                    Some(at) => self.queue.push(Reverse((at, id))),
                    None => self.finish_churner(id),
                }
            }
        }
        while let Some(&Reverse((due, id))) = self.queue.peek() {
            if due > now {
                return Some(due);
            }
            self.queue.pop();
            self.act(pool, id, due, run_at);
        }
        None
    }

    fn finish(self) -> Output {
        Output {
            members: self
                .roles
                .into_iter()
                .filter_map(|r| match r {
                    Role::Member(m) => Some(m),
                    Role::Churner(_) => None,
                })
                .collect(),
            latencies: self.latencies,
            foreign: self.foreign,
        }
    }
}

/// Runs the scenario.
pub fn run(args: &PresenceArgs) -> Result<Report, String> {
    let common = &args.common;
    let target = Target::new(&common.url, &common.key)?;
    if args.channels == 0 || args.members == 0 || args.churners == 0 {
        return Err("--channels, --members and --churners must be at least 1".into());
    }
    if args.rate <= 0.0 || args.duration_secs <= 0.0 {
        return Err("--rate and --duration-secs must be positive".into());
    }
    let layout = Layout {
        channels: args.channels,
        members: args.members,
        churners: args.churners,
        rate: args.rate,
        cycles: (args.rate * args.duration_secs).round() as u64,
    };
    let total = layout.steady() + layout.total_churners();
    let mut report = Report::new("presence", &common.url);
    report.param("channels", args.channels as u64);
    report.param("members", args.members as u64);
    report.param("churners", args.churners as u64);
    report.param("rate", args.rate);
    report.param("duration_secs", args.duration_secs);
    report.param("threads", common.threads as u64);
    report.notes.extend(procfs::capacity_notes(
        total,
        total,
        common.source_ips,
        target.addr.ip().is_loopback(),
    ));
    for note in &report.notes {
        eprintln!("warren-loadtest: {note}");
    }
    let server = |pid: Option<u32>| pid.and_then(|p| ProcSample::read(p).ok());
    let before_setup = server(common.server_pid);
    let control = Control::new();
    let shared = Arc::new(Shared::new(args.channels));
    let threads = common.threads.max(1);
    let mut inputs = Vec::new();
    for t in 0..threads {
        let ids = owned(t, threads, total);
        let mut specs = Vec::new();
        let mut roles = Vec::new();
        for &g in &ids {
            let (channel, churner) = layout.role_of(g);
            let data = channel_data(g);
            match churner {
                None => {
                    specs.push(ConnSpec {
                        source: target.source_ip(g, common.source_ips),
                        channels: vec![channel_name(channel)],
                        channel_data: Some(data),
                        user_data: None,
                    });
                    roles.push(Role::Member(Member {
                        channel,
                        user: g,
                        joins_seen: vec![0; layout.churners],
                        ..Member::default()
                    }));
                }
                Some(j) => {
                    specs.push(ConnSpec {
                        source: target.source_ip(g, common.source_ips),
                        channels: Vec::new(),
                        channel_data: None,
                        user_data: None,
                    });
                    roles.push(Role::Churner(Churner {
                        channel,
                        j,
                        channel_name: channel_name(channel),
                        channel_data: data,
                        ready: false,
                        joined: false,
                        k: 0,
                        done: false,
                    }));
                }
            }
        }
        let pool = Pool::new(
            target.clone(),
            &common.key,
            &common.secret,
            specs,
            common.connect_concurrency,
        )
        .map_err(|e| format!("cannot create a client pool: {e}"))?;
        let thread = Thread {
            layout,
            control: control.clone(),
            shared: shared.clone(),
            key: common.key.clone(),
            secret: common.secret.clone(),
            roles,
            queue: BinaryHeap::new(),
            started: false,
            latencies: Latencies::default(),
            foreign: 0,
        };
        inputs.push((pool, thread));
    }
    let handles = {
        let control = control.clone();
        runtime::spawn_threads(inputs, move |_, (pool, thread)| {
            runtime::drive(pool, &control, thread)
        })?
    };
    let setup = match super::wait_for_setup(
        &control,
        total as u64,
        Duration::from_secs(common.setup_timeout_secs),
    ) {
        Ok(took) => took,
        Err(e) => {
            control.set_phase(Phase::Stop);
            let _ = runtime::join_threads(handles);
            return Err(e);
        }
    };
    let stats = &control.stats;
    let subscribed = Stats::get(&stats.subscribed);
    eprintln!(
        "  set-up: {subscribed} subscribed, {} failed in {:.2} s",
        Stats::get(&stats.failed),
        setup.as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(300));

    // The run.
    let before = server(common.server_pid);
    let own_before = ProcSample::read(std::process::id()).ok();
    control.start_run(RUN_DELAY);
    let run_at = control.run_at();
    let churn_end = run_at + Duration::from_secs_f64(args.duration_secs) + layout.stay();
    let deadline = churn_end + Duration::from_secs(args.drain_timeout_secs);
    let churners_total = layout.total_churners() as u64;
    let errors = || {
        Stats::get(&stats.failed)
            + Stats::get(&stats.dropped)
            + Stats::get(&stats.pusher_errors)
            + shared.send_errors.load(Ordering::Relaxed)
    };
    let mut timeline: Vec<Point> = Vec::new();
    let mut last = (run_at, 0u64, before);
    let mut tick = |now: Instant, timeline: &mut Vec<Point>| {
        let received = shared.received.load(Ordering::Relaxed);
        let sample = server(common.server_pid);
        let dt = now.saturating_duration_since(last.0).as_secs_f64();
        let point = Point {
            t_s: now.saturating_duration_since(run_at).as_secs_f64(),
            connections: Stats::get(&stats.subscribed).saturating_sub(Stats::get(&stats.dropped)),
            deliveries_per_s: if dt > 0.0 {
                (received - last.1) as f64 / dt
            } else {
                0.0
            },
            errors: errors(),
            latency: None,
            server_rss_kb: sample.map(|s| s.rss_kb),
            server_cpu_pct: match (&last.2, &sample) {
                (Some(a), Some(b)) if dt > 0.0 => Some(a.sched_ms_until(b) / 10.0 / dt),
                _ => None,
            },
        };
        eprint!(
            "\r  {:6.1} s  joins {:>8}/{}  member events {:>10}/{:<10}  events/s {:>9.0}  errors {:>4}  ",
            point.t_s,
            Shared::sum(&shared.joins),
            layout.cycles,
            received,
            shared.expected(),
            point.deliveries_per_s,
            point.errors
        );
        let _ = std::io::stderr().flush();
        timeline.push(point);
        last = (now, received, sample);
    };
    let mut next_tick = run_at + Duration::from_secs(1);
    let mut complete_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let churned = shared.churners_done.load(Ordering::Relaxed) >= churners_total;
        if churned && shared.received.load(Ordering::Relaxed) >= shared.expected() {
            let at = *complete_at.get_or_insert(now);
            if now >= at + SETTLE {
                break;
            }
        } else {
            complete_at = None;
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
    let after = server(common.server_pid);
    let own_after = ProcSample::read(std::process::id()).ok();
    let churned = shared.churners_done.load(Ordering::Relaxed) >= churners_total;
    control.set_phase(Phase::Stop);
    let outputs = runtime::join_threads(handles)?;

    let mut latencies = Latencies::default();
    let mut foreign = 0;
    let (mut expected_added, mut expected_removed) = (0u64, 0u64);
    let (mut added, mut removed) = (0u64, 0u64);
    let (mut missing, mut extra) = (0u64, 0u64);
    let (mut roster_errors, mut view_errors, mut members_dropped) = (0u64, 0u64, 0u64);
    let mut roster_counts: Vec<u64> = Vec::new();
    for o in &outputs {
        latencies.merge(&o.latencies);
        foreign += o.foreign;
        for m in &o.members {
            if !m.subscribed {
                continue;
            }
            if m.dropped {
                members_dropped += 1;
                continue;
            }
            let want_added = shared.joins[m.channel].load(Ordering::Relaxed);
            let want_removed = shared.leaves[m.channel].load(Ordering::Relaxed);
            expected_added += want_added;
            expected_removed += want_removed;
            added += m.added;
            removed += m.removed;
            missing += want_added.saturating_sub(m.added) + want_removed.saturating_sub(m.removed);
            extra += m.added.saturating_sub(want_added) + m.removed.saturating_sub(want_removed);
            roster_errors += u64::from(!m.roster_ok);
            view_errors += u64::from(m.view.len() != layout.members);
            roster_counts.push(m.roster_count);
        }
    }
    let joins = Shared::sum(&shared.joins);
    let leaves = Shared::sum(&shared.leaves);
    let last_join =
        control.epoch + Duration::from_nanos(shared.last_join_ns.load(Ordering::Relaxed));
    let join_window = last_join.saturating_duration_since(run_at).as_secs_f64() + 1.0 / args.rate;
    let window = finished.saturating_duration_since(run_at).as_secs_f64();
    let server_cpu_s = match (&before, &after) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
        _ => None,
    };
    let harness_cpu_s = match (&own_before, &own_after) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
        _ => None,
    };
    let live = subscribed.saturating_sub(Stats::get(&stats.dropped)).max(1);
    let received = added + removed;

    report.timeline = timeline;
    report.figure("connections_subscribed", subscribed);
    report.figure("connections_failed", Stats::get(&stats.failed));
    report.figure("connections_dropped", Stats::get(&stats.dropped));
    report.figure("setup_s", setup.as_secs_f64());
    report.figure("cycles_scheduled", layout.cycles);
    report.figure("joins", joins);
    report.figure("leaves", leaves);
    report.figure("joins_per_s", joins as f64 / join_window.max(1e-9));
    report.figure(
        "churn_send_errors",
        shared.send_errors.load(Ordering::Relaxed),
    );
    report.figure("expected_member_added", expected_added);
    report.figure("received_member_added", added);
    report.figure("expected_member_removed", expected_removed);
    report.figure("received_member_removed", removed);
    report.figure("expected_member_events", expected_added + expected_removed);
    report.figure("received_member_events", received);
    report.figure("missing", missing);
    report.figure("extra", extra);
    report.figure("foreign_member_events", foreign);
    report.figure("roster_errors", roster_errors);
    report.figure("member_view_errors", view_errors);
    report.figure("roster_count_min", roster_counts.iter().min().copied());
    report.figure("roster_count_max", roster_counts.iter().max().copied());
    report.figure("members_dropped", members_dropped);
    report.figure("pusher_errors", Stats::get(&stats.pusher_errors));
    report.figure("member_events_per_s", received as f64 / window.max(1e-9));
    report.figure("run_s", window);
    report.figure("server_cpu_s", server_cpu_s);
    report.figure(
        "server_cpu_ms_per_join",
        server_cpu_s
            .filter(|_| joins > 0)
            .map(|s| s * 1000.0 / joins as f64),
    );
    report.figure(
        "server_cpu_pct",
        server_cpu_s.map(|s| s * 100.0 / window.max(1e-9)),
    );
    report.figure("server_rss_kb", after.map(|s| s.rss_kb));
    report.figure(
        "server_rss_kb_per_connection",
        match (&before_setup, &after) {
            (Some(a), Some(b)) => Some((b.rss_kb as f64 - a.rss_kb as f64) / live as f64),
            _ => None,
        },
    );
    report.figure("harness_cpu_s", harness_cpu_s);
    report.figure(
        "harness_cpu_pct",
        harness_cpu_s.map(|s| s * 100.0 / window.max(1e-9)),
    );
    report.set_latency(&latencies);
    if !churned {
        report
            .notes
            .push("the churners did not finish their cycles before the drain deadline".into());
    }
    if missing > 0 || extra > 0 {
        report.notes.push(format!(
            "member events: {missing} missing, {extra} extra at the end of the drain window"
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_schedules_every_cycle_once() {
        let l = Layout {
            channels: 3,
            members: 4,
            churners: 2,
            rate: 10.0,
            cycles: 15,
        };
        assert_eq!(l.role_of(0), (0, None));
        assert_eq!(l.role_of(11), (2, None));
        assert_eq!(l.role_of(12), (0, Some(0)));
        assert_eq!(l.role_of(17), (2, Some(5)));
        let count: usize = (0..6)
            .map(|j| (0..10).filter(|&k| l.has_cycle(j, k)).count())
            .sum();
        assert_eq!(count, 15);
        assert_eq!(l.join_offset(1, 2), Duration::from_secs_f64(1.3));
        assert_eq!(l.stay(), Duration::from_millis(300));
        assert_eq!(user_number("u-17"), Some(17));
        let data: serde_json::Value = serde_json::from_str(&channel_data(7)).unwrap();
        assert_eq!(data["user_id"], "u-7");
        assert_eq!(data["user_info"]["n"], 7);
    }
}
