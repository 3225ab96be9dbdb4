//! `client-events`: subscribers and senders on one private channel; the senders send client
//! events on a fixed schedule and every delivery is counted. Measures the server's CPU time per
//! delivery, and the delivery latency from each event's scheduled send time.

use super::{owned, pool_for, show, wait_for_setup, Server};
use crate::cli::ClientEventsArgs;
use crate::client::{ConnId, Pool, Target};
use crate::procfs::ProcSample;
use crate::protocol::{self, ServerMessage};
use crate::runtime::{self, Behaviour, Control, Phase, Stats};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of the client events sent.
const EVENT: &str = "client-load";
/// Time from entering the run phase to the first scheduled send, so that every client thread
/// has seen the phase change.
const RUN_DELAY: Duration = Duration::from_millis(50);
/// Quiet time after set-up, also used to measure the server's idle CPU.
const QUIET: Duration = Duration::from_secs(1);

/// The `data` of each event: sender, sequence number, scheduled send time (ns since epoch).
#[derive(Debug, Deserialize)]
struct Payload {
    t: u64,
}

/// Runs the scenario and prints its report.
pub fn run(args: &ClientEventsArgs) -> Result<(), String> {
    let common = &args.common;
    if !args.channel.starts_with("private-") {
        return Err("client events need a private- channel".into());
    }
    if args.senders == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        return Err("need at least one sender and a positive rate".into());
    }
    let target = Target::new(&common.url, &common.key)?;
    let server = Server::new(common.server_pid)?;
    let (n, s, m) = (args.subscribers, args.senders, args.events);
    let expected_subscribers = (m * n) as u64;
    let expected_senders = (m * (s - 1)) as u64;
    let expected = expected_subscribers + expected_senders;
    println!(
        "client-events: {n} subscribers + {s} senders on {}, {m} events at {}/s per sender on {} ({} thread(s))",
        args.channel, args.rate, target.addr, common.threads
    );
    println!("  expected deliveries: {expected} ({expected_subscribers} to subscribers, {expected_senders} to senders)");

    let control = Control::new();
    let threads = common.threads.max(1);
    let mut inputs = Vec::new();
    for t in 0..threads {
        let ids = owned(t, threads, n + s);
        let pool = pool_for(common, &target, &ids, |_| args.channel.clone())
            .map_err(|e| format!("cannot create a client pool: {e}"))?;
        let roles = ids
            .iter()
            .map(|&i| match i.checked_sub(n) {
                None => Role::Subscriber,
                Some(j) => Role::Sender(Schedule {
                    sender: j,
                    count: m / s + usize::from(j < m % s),
                    next: 0,
                    offset_s: j as f64 / s as f64 / args.rate,
                    interval_s: 1.0 / args.rate,
                }),
            })
            .collect();
        inputs.push((pool, roles));
    }
    let handles = {
        let control = control.clone();
        let channel = args.channel.clone();
        let padding = "x".repeat(args.payload_bytes);
        runtime::spawn_threads(inputs, move |_, (pool, roles): (Pool, Vec<Role>)| {
            let thread = ClientThread {
                control: control.clone(),
                channel: channel.clone(),
                padding: padding.clone(),
                received: vec![0; roles.len()],
                roles,
                expected_per_subscriber: m as u64,
                latencies_us: Vec::new(),
            };
            runtime::drive(pool, &control, thread)
        })?
    };

    let total = (n + s) as u64;
    let setup = match wait_for_setup(
        &control,
        total,
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
    println!(
        "  set-up: {} subscribed, {} failed in {:.2} s",
        Stats::get(&stats.subscribed),
        Stats::get(&stats.failed),
        setup.as_secs_f64()
    );

    let quiet_start = server.sample()?;
    std::thread::sleep(QUIET);
    let before = server.sample()?;
    let own_before = ProcSample::read(std::process::id()).ok();
    control.start_run(RUN_DELAY);
    let run_at = control.run_at();

    // Done when every delivery has arrived, or when the senders are done and the drain timeout
    // has passed since the last scheduled send.
    let last_send_at = run_at + Duration::from_secs_f64((m as f64 / s as f64).ceil() / args.rate);
    let deadline = last_send_at + Duration::from_secs(args.drain_timeout_secs);
    let delivered_all =
        || Stats::get(&stats.delivered) + Stats::get(&stats.delivered_to_senders) >= expected;
    runtime::wait_until(
        deadline.saturating_duration_since(Instant::now()),
        delivered_all,
        || {
            eprintln!(
                "  run: sent {}/{m}, delivered {}/{expected}",
                Stats::get(&stats.sent),
                Stats::get(&stats.delivered) + Stats::get(&stats.delivered_to_senders)
            )
        },
    );
    let after = server.sample()?;
    let own_after = ProcSample::read(std::process::id()).ok();
    let finished = Instant::now();
    control.set_phase(Phase::Stop);
    let mut latencies: Vec<u32> = runtime::join_threads(handles)?
        .into_iter()
        .flatten()
        .collect();
    latencies.sort_unstable();

    let sent = Stats::get(&stats.sent);
    let delivered = Stats::get(&stats.delivered);
    let to_senders = Stats::get(&stats.delivered_to_senders);
    let received = delivered + to_senders;
    let lost = expected as i64 - received as i64;
    let last_delivery =
        control.epoch + Duration::from_nanos(stats.last_delivery_ns.load(Ordering::Relaxed));
    let wall = last_delivery.saturating_duration_since(run_at);
    let cpu = |f: fn(&ProcSample, &ProcSample) -> f64| match (&before, &after) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    };
    let cpu_ms = cpu(ProcSample::cpu_ms_until);
    let sched_ms = cpu(ProcSample::sched_ms_until);
    let harness_ms = match (&own_before, &own_after) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b)),
        _ => None,
    };
    let idle_ms_per_s = match (&quiet_start, &before) {
        (Some(a), Some(b)) => Some(a.sched_ms_until(b) / b.at.duration_since(a.at).as_secs_f64()),
        _ => None,
    };
    let per_100k = |v: Option<f64>| {
        v.filter(|_| received > 0)
            .map(|v| v * 100_000.0 / received as f64)
    };
    let pct = |q: f64| -> Option<f64> {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0)
    };
    let ms = |v: Option<f64>| show(v.map(|v| format!("{v:.1}")));

    println!("  sent {sent}/{m}; delivered {received}/{expected} ({delivered} to subscribers, {to_senders} to senders); lost {lost}");
    println!(
        "  subscribers with a wrong count {}, pusher:error {} (rate limited {}), dropped {}",
        Stats::get(&stats.incomplete_receivers),
        Stats::get(&stats.pusher_errors),
        Stats::get(&stats.rate_limited),
        Stats::get(&stats.dropped)
    );
    println!(
        "  wall: first scheduled send -> last delivery {:.1} ms (measurement window {:.1} ms)",
        wall.as_secs_f64() * 1000.0,
        finished.duration_since(run_at).as_secs_f64() * 1000.0
    );
    println!(
        "  server CPU: {} ms (utime+stime), {} ms (schedstat); idle before: {} ms/s",
        ms(cpu_ms),
        ms(sched_ms),
        show(idle_ms_per_s.map(|v| format!("{v:.2}")))
    );
    println!("  harness CPU in the same window: {} ms", ms(harness_ms));
    println!(
        "  => {} ms (utime+stime), {} ms (schedstat) server CPU per 100k deliveries",
        ms(per_100k(cpu_ms)),
        ms(per_100k(sched_ms))
    );
    println!(
        "  latency from scheduled send (ms): p50 {} p99 {} max {}",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    if common.json {
        let json = serde_json::json!({
            "scenario": "client-events",
            "subscribers": n,
            "senders": s,
            "events": m,
            "rate_per_sender": args.rate,
            "sent": sent,
            "expected": expected,
            "delivered": received,
            "delivered_to_subscribers": delivered,
            "delivered_to_senders": to_senders,
            "lost": lost,
            "incomplete_receivers": Stats::get(&stats.incomplete_receivers),
            "pusher_errors": Stats::get(&stats.pusher_errors),
            "rate_limited": Stats::get(&stats.rate_limited),
            "dropped": Stats::get(&stats.dropped),
            "failed": Stats::get(&stats.failed),
            "wall_ms": wall.as_secs_f64() * 1000.0,
            "cpu_ms": cpu_ms,
            "sched_cpu_ms": sched_ms,
            "cpu_ms_per_100k": per_100k(cpu_ms),
            "sched_cpu_ms_per_100k": per_100k(sched_ms),
            "idle_cpu_ms_per_s": idle_ms_per_s,
            "harness_cpu_ms": harness_ms,
            "latency_p50_ms": pct(0.5),
            "latency_p99_ms": pct(0.99),
            "latency_max_ms": pct(1.0),
        });
        println!("{json}");
    }
    Ok(())
}

/// What a connection of the scenario does.
#[derive(Debug)]
enum Role {
    /// Receives and counts.
    Subscriber,
    /// Sends on a schedule (and also receives the other senders' events).
    Sender(Schedule),
}

/// When one sender sends: event `k` goes at `run_at + offset_s + k * interval_s`.
#[derive(Debug)]
struct Schedule {
    sender: usize,
    count: usize,
    next: usize,
    offset_s: f64,
    interval_s: f64,
}

/// One client thread's share of the scenario.
struct ClientThread {
    control: Arc<Control>,
    channel: String,
    padding: String,
    roles: Vec<Role>,
    /// Client events received, by connection.
    received: Vec<u64>,
    expected_per_subscriber: u64,
    /// Delivery latencies measured on this thread, in µs.
    latencies_us: Vec<u32>,
}

impl Behaviour for ClientThread {
    type Output = Vec<u32>;

    fn on_message(&mut self, id: ConnId, text: &[u8]) {
        let stats = &self.control.stats;
        let Ok(msg) = ServerMessage::parse(text) else {
            return;
        };
        if msg.event == EVENT {
            let now = self.control.now_ns();
            stats.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
            self.received[id] += 1;
            match self.roles[id] {
                Role::Subscriber => Stats::add(&stats.delivered, 1),
                Role::Sender(_) => Stats::add(&stats.delivered_to_senders, 1),
            }
            if let Some(payload) = msg
                .data_text()
                .and_then(|d| serde_json::from_str::<Payload>(&d).ok())
            {
                let us = now.saturating_sub(payload.t) / 1000;
                self.latencies_us.push(us.min(u32::MAX as u64) as u32);
            }
        } else if msg.event == protocol::ERROR {
            Stats::add(&stats.pusher_errors, 1);
            if msg.error_code() == Some(4301) {
                Stats::add(&stats.rate_limited, 1);
            }
            if Stats::get(&stats.pusher_errors) <= 3 {
                eprintln!(
                    "warren-loadtest: pusher:error: {}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    fn on_run(&mut self, pool: &mut Pool, now: Instant) -> Option<Instant> {
        let run_at = self.control.run_at();
        let mut next_due: Option<Instant> = None;
        for (id, role) in self.roles.iter_mut().enumerate() {
            let Role::Sender(schedule) = role else {
                continue;
            };
            while schedule.next < schedule.count {
                let due = run_at
                    + Duration::from_secs_f64(
                        schedule.offset_s + schedule.next as f64 * schedule.interval_s,
                    );
                if due > now {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    break;
                }
                let data = format!(
                    r#"{{"s":{},"n":{},"t":{},"p":"{}"}}"#,
                    schedule.sender,
                    schedule.next,
                    self.control.ns_of(due),
                    self.padding
                );
                let text = protocol::client_event_message(EVENT, &self.channel, &data);
                schedule.next += 1;
                match pool.send_text(id, text.as_bytes()) {
                    Ok(()) => Stats::add(&self.control.stats.sent, 1),
                    Err(e) => {
                        self.control
                            .report_error(&format!("sender {} cannot send", schedule.sender), &e);
                        schedule.next = schedule.count;
                    }
                }
            }
        }
        next_due
    }

    fn finish(self) -> Vec<u32> {
        let incomplete = self
            .roles
            .iter()
            .zip(&self.received)
            .filter(|(role, &got)| {
                matches!(role, Role::Subscriber) && got != self.expected_per_subscriber
            })
            .count();
        Stats::add(&self.control.stats.incomplete_receivers, incomplete as u64);
        self.latencies_us
    }
}
