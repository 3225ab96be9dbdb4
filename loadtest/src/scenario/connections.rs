//! `connections`: ramp to N connections, each subscribed to K channels from a pool (public, or
//! private with auth signed locally), hold, and report the set-up rate, failures by reason and
//! the server's memory per connection.

use super::owned;
use crate::cli::ConnectionsArgs;
use crate::client::{ClientError, ConnId, ConnSpec, Pool, Target};
use crate::procfs::{self, ProcSample};
use crate::report::{Point, Report};
use crate::runtime::{self, Behaviour, Control, Phase, Stats};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// A short name for why a connection failed or dropped.
pub fn reason(error: &ClientError) -> String {
    match error {
        ClientError::Io(e) => match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "io: too many open files".into(),
            Some(libc::EADDRNOTAVAIL) => "io: no free local port (EADDRNOTAVAIL)".into(),
            Some(libc::ECONNREFUSED) => "io: connection refused".into(),
            Some(libc::ECONNRESET) => "io: connection reset".into(),
            _ => format!("io: {:?}", e.kind()),
        },
        ClientError::Refused(status) => format!("upgrade refused: {status}"),
        ClientError::Closed(Some(code)) => format!("closed with {code}"),
        ClientError::Closed(None) => "closed".into(),
        ClientError::Protocol(_) => "protocol error".into(),
        ClientError::Pusher(text) => {
            let code = crate::protocol::ServerMessage::parse(text.as_bytes())
                .ok()
                .and_then(|m| m.error_code());
            format!(
                "pusher:error {}",
                code.map_or("?".into(), |c| c.to_string())
            )
        }
    }
}

#[derive(Default)]
struct Failures {
    failed: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
}

impl Behaviour for Failures {
    type Output = Failures;

    fn on_message(&mut self, _id: ConnId, _text: &[u8]) {}

    fn on_failed(&mut self, _id: ConnId, error: &ClientError) {
        *self.failed.entry(reason(error)).or_default() += 1;
    }

    fn on_dropped(&mut self, _id: ConnId, error: &ClientError) {
        *self.dropped.entry(reason(error)).or_default() += 1;
    }

    fn finish(self) -> Failures {
        self
    }
}

/// Runs the scenario.
pub fn run(args: &ConnectionsArgs) -> Result<Report, String> {
    let common = &args.common;
    let target = Target::new(&common.url, &common.key)?;
    let n = args.connections;
    let k = args.channels_per_connection.max(1);
    let pool_size = args.channel_pool.max(k);
    let prefix = if args.private {
        "private-loadtest-conn-"
    } else {
        "loadtest-conn-"
    };
    let mut report = Report::new("connections", &common.url);
    report.param("connections", n as u64);
    report.param("channels_per_connection", k as u64);
    report.param("channel_pool", pool_size as u64);
    report.param("private", args.private);
    report.param("hold_secs", args.hold_secs);
    report.param("threads", common.threads as u64);
    report.notes.extend(procfs::capacity_notes(
        n,
        n,
        common.source_ips,
        target.addr.ip().is_loopback(),
    ));
    for note in &report.notes {
        eprintln!("warren-loadtest: {note}");
    }
    let server = |pid: Option<u32>| pid.and_then(|p| ProcSample::read(p).ok());
    let before = server(common.server_pid);
    let own_before = ProcSample::read(std::process::id()).ok();
    let control = Control::new();
    let threads = common.threads.max(1);
    let pools = (0..threads)
        .map(|t| {
            let specs = owned(t, threads, n)
                .into_iter()
                .map(|i| ConnSpec {
                    source: target.source_ip(i, common.source_ips),
                    channels: (0..k)
                        .map(|j| format!("{prefix}{}", (i + j) % pool_size))
                        .collect(),
                    channel_data: None,
                    user_data: None,
                })
                .collect();
            Pool::new(
                target.clone(),
                &common.key,
                &common.secret,
                specs,
                common.connect_concurrency,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot create a client pool: {e}"))?;
    let handles = {
        let control = control.clone();
        runtime::spawn_threads(pools, move |_, pool| {
            runtime::drive(pool, &control, Failures::default())
        })?
    };
    let stats = &control.stats;
    let start = Instant::now();
    let timeout = Duration::from_secs(common.setup_timeout_secs);
    let mut timeline = Vec::new();
    let mut last = (start, 0u64, before);
    let mut sample_point = |now: Instant, timeline: &mut Vec<Point>| {
        let subscribed = Stats::get(&stats.subscribed);
        let sample = server(common.server_pid);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let p = Point {
            t_s: now.duration_since(start).as_secs_f64(),
            connections: subscribed - Stats::get(&stats.dropped),
            deliveries_per_s: 0.0,
            errors: Stats::get(&stats.failed) + Stats::get(&stats.dropped),
            latency: None,
            server_rss_kb: sample.map(|s| s.rss_kb),
            server_cpu_pct: match (&last.2, &sample) {
                (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 10.0 / dt),
                _ => None,
            },
        };
        eprint!(
            "\r  {:6.1} s  conns {:>7}/{n}  connects/s {:>8.0}  errors {:>5}  ",
            p.t_s,
            p.connections,
            (subscribed - last.1) as f64 / dt,
            p.errors
        );
        let _ = std::io::stderr().flush();
        timeline.push(p);
        last = (now, subscribed, sample);
    };
    let mut next_tick = start + Duration::from_millis(500);
    let ramp_done = loop {
        let now = Instant::now();
        if Stats::get(&stats.subscribed) + Stats::get(&stats.failed) >= n as u64 {
            break Some(now);
        }
        if now >= start + timeout {
            break None;
        }
        if now >= next_tick {
            sample_point(now, &mut timeline);
            next_tick += Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let ramp = ramp_done.unwrap_or_else(Instant::now).duration_since(start);
    let setup_cpu = server(common.server_pid);
    let setup_own = ProcSample::read(std::process::id()).ok();
    let subscribed = Stats::get(&stats.subscribed);
    let hold_end = Instant::now() + Duration::from_secs(args.hold_secs);
    while Instant::now() < hold_end {
        let now = Instant::now();
        if now >= next_tick {
            sample_point(now, &mut timeline);
            next_tick += Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sample_point(Instant::now(), &mut timeline);
    eprintln!();
    let after = server(common.server_pid);
    let own_after = ProcSample::read(std::process::id()).ok();
    control.set_phase(Phase::Stop);
    let outputs = runtime::join_threads(handles)?;
    let mut failures = Failures::default();
    for o in outputs {
        for (k, v) in o.failed {
            *failures.failed.entry(k).or_default() += v;
        }
        for (k, v) in o.dropped {
            *failures.dropped.entry(k).or_default() += v;
        }
    }
    let live = subscribed.saturating_sub(Stats::get(&stats.dropped));
    report.timeline = timeline;
    report.figure("connections_subscribed", subscribed);
    report.figure("connections_failed", Stats::get(&stats.failed));
    report.figure("connections_dropped", Stats::get(&stats.dropped));
    report.figure("connections_open_at_end", live);
    report.figure("ramp_s", ramp.as_secs_f64());
    report.figure(
        "connects_per_s",
        subscribed as f64 / ramp.as_secs_f64().max(1e-9),
    );
    report.figure(
        "subscriptions_per_s",
        (subscribed * k as u64) as f64 / ramp.as_secs_f64().max(1e-9),
    );
    report.figure(
        "server_cpu_s_setup",
        match (&before, &setup_cpu) {
            (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
            _ => None,
        },
    );
    // What one server core could sustain, whatever share of it the server got: connects per
    // second of server CPU (the set-up rate itself is capped by the harness and a busy machine).
    report.figure(
        "connects_per_server_cpu_s",
        match (&before, &setup_cpu) {
            (Some(a), Some(b)) if a.sched_ms_until(b) > 0.0 => {
                Some(subscribed as f64 * 1000.0 / a.sched_ms_until(b))
            }
            _ => None,
        },
    );
    report.figure(
        "harness_connects_per_cpu_s",
        match (&own_before, &setup_own) {
            (Some(a), Some(b)) if a.sched_ms_until(b) > 0.0 => {
                Some(subscribed as f64 * 1000.0 / a.sched_ms_until(b))
            }
            _ => None,
        },
    );
    report.figure("server_rss_kb", after.map(|s| s.rss_kb));
    report.figure(
        "server_rss_kb_per_connection",
        match (&before, &after) {
            (Some(a), Some(b)) if live > 0 => {
                Some((b.rss_kb as f64 - a.rss_kb as f64) / live as f64)
            }
            _ => None,
        },
    );
    report.figure(
        "harness_cpu_s",
        match (&own_before, &own_after) {
            (Some(a), Some(b)) => Some(a.sched_ms_until(b) / 1000.0),
            _ => None,
        },
    );
    report.figure(
        "failures_by_reason",
        serde_json::to_value(&failures.failed).unwrap_or_default(),
    );
    report.figure(
        "drops_by_reason",
        serde_json::to_value(&failures.dropped).unwrap_or_default(),
    );
    if ramp_done.is_none() {
        report.notes.push(format!(
            "the ramp did not finish within --setup-timeout-secs {}",
            common.setup_timeout_secs
        ));
    }
    for reason in failures.failed.keys() {
        if reason.contains("open files") || reason.contains("EADDRNOTAVAIL") {
            report
                .notes
                .push(format!("LIMIT: connections failed with \"{reason}\""));
        }
    }
    Ok(report)
}
