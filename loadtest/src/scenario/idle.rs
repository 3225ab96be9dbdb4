//! `idle`: many connections, each subscribed to a public channel, doing nothing. Measures the
//! server's resident memory per connection.

use super::{owned, pool_for, show, wait_for_setup, Server};
use crate::cli::IdleArgs;
use crate::client::{ConnId, Target};
use crate::procfs::{KernelSample, ProcSample};
use crate::runtime::{self, Behaviour, Control, Phase, Stats};
use std::time::Duration;

/// Runs the scenario and prints its report.
pub fn run(args: &IdleArgs) -> Result<(), String> {
    let common = &args.common;
    let target = Target::new(&common.url, &common.key)?;
    let server = Server::new(common.server_pid)?;
    let n = args.connections;
    let channels = args.channels.max(1);
    println!(
        "idle: {n} {}connections over {channels} public channel(s) on {} ({} thread(s))",
        if args.signin { "signed-in " } else { "" },
        target.addr,
        common.threads
    );

    let before = server.sample()?;
    let kernel_before = KernelSample::read();
    let control = Control::new();
    let threads = common.threads.max(1);
    let pools = (0..threads)
        .map(|t| {
            let ids = owned(t, threads, n);
            let mut pool = pool_for(common, &target, &ids, |i| {
                format!("loadtest-idle-{}", i % channels)
            })?;
            if args.signin {
                // One distinct user per connection: the most the registry keeps per socket.
                pool.sign_in_each(|k| format!(r#"{{"id":"loadtest-user-{}"}}"#, ids[k]));
            }
            Ok(pool)
        })
        .collect::<Result<Vec<_>, std::io::Error>>()
        .map_err(|e| format!("cannot create a client pool: {e}"))?;
    let handles = {
        let control = control.clone();
        runtime::spawn_threads(pools, move |_, pool| runtime::drive(pool, &control, Idle))?
    };

    let setup = wait_for_setup(
        &control,
        n as u64,
        Duration::from_secs(common.setup_timeout_secs),
    );
    let setup_sample = server.sample()?;
    let setup = match setup {
        Ok(took) => took,
        Err(e) => {
            control.set_phase(Phase::Stop);
            let _ = runtime::join_threads(handles);
            return Err(e);
        }
    };
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let after = server.sample()?;
    let kernel_after = KernelSample::read();
    let dropped_at_sample = Stats::get(&control.stats.dropped);
    if args.hold_secs > 0 {
        std::thread::sleep(Duration::from_secs(args.hold_secs));
    }
    let dropped_held = Stats::get(&control.stats.dropped);
    control.set_phase(Phase::Stop);
    runtime::join_threads(handles)?;
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let closed = server.sample()?;

    let stats = &control.stats;
    let subscribed = Stats::get(&stats.subscribed);
    let failed = Stats::get(&stats.failed);
    let per_conn = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) if subscribed > 0 => {
            Some((b.rss_kb as f64 - a.rss_kb as f64) / subscribed as f64)
        }
        _ => None,
    };
    let kb_per_conn = per_conn(&before, &after);
    let anon_per_conn = match (&before, &after) {
        (Some(a), Some(b)) if subscribed > 0 => {
            Some((b.rss_anon_kb as f64 - a.rss_anon_kb as f64) / subscribed as f64)
        }
        _ => None,
    };
    let slab_per_conn = (subscribed > 0)
        .then(|| (kernel_after.slab_kb as f64 - kernel_before.slab_kb as f64) / subscribed as f64);
    let setup_cpu_ms = match (&before, &setup_sample) {
        (Some(a), Some(b)) => Some(a.cpu_ms_until(b)),
        _ => None,
    };

    println!(
        "  subscribed {subscribed}, failed {failed}; dropped by the server: {dropped_at_sample} before sampling, {dropped_held} before closing"
    );
    println!(
        "  set-up took {:.2} s, server CPU during set-up {} ms",
        setup.as_secs_f64(),
        show(setup_cpu_ms.map(|v| format!("{v:.0}")))
    );
    println!(
        "  server VmRSS before {} KB, after {} KB, after close {} KB",
        show(before.map(|s| s.rss_kb)),
        show(after.map(|s| s.rss_kb)),
        show(closed.map(|s| s.rss_kb))
    );
    println!(
        "  server RssAnon before {} KB, after {} KB; RssFile before {} KB, after {} KB; threads {}",
        show(before.map(|s| s.rss_anon_kb)),
        show(after.map(|s| s.rss_anon_kb)),
        show(before.map(|s| s.rss_file_kb)),
        show(after.map(|s| s.rss_file_kb)),
        show(after.map(|s| s.threads))
    );
    println!(
        "  => {} KB VmRSS per connection ({} KB anon)",
        show(kb_per_conn.map(|v| format!("{v:.2}"))),
        show(anon_per_conn.map(|v| format!("{v:.2}")))
    );
    println!(
        "  kernel (whole machine, both socket ends): Slab {} -> {} KB ({} KB/conn), TCP mem {} -> {} KB, TCP inuse {} -> {}",
        kernel_before.slab_kb,
        kernel_after.slab_kb,
        show(slab_per_conn.map(|v| format!("{v:.2}"))),
        kernel_before.tcp_mem_kb,
        kernel_after.tcp_mem_kb,
        kernel_before.tcp_inuse,
        kernel_after.tcp_inuse
    );
    if common.json {
        let json = serde_json::json!({
            "scenario": "idle",
            "signin": args.signin,
            "connections": n,
            "channels": channels,
            "subscribed": subscribed,
            "failed": failed,
            "dropped": dropped_held,
            "setup_s": setup.as_secs_f64(),
            "setup_cpu_ms": setup_cpu_ms,
            "rss_before_kb": before.map(|s| s.rss_kb),
            "rss_after_kb": after.map(|s| s.rss_kb),
            "rss_after_close_kb": closed.map(|s| s.rss_kb),
            "rss_anon_before_kb": before.map(|s| s.rss_anon_kb),
            "rss_anon_after_kb": after.map(|s| s.rss_anon_kb),
            "kb_per_connection": kb_per_conn,
            "anon_kb_per_connection": anon_per_conn,
            "slab_before_kb": kernel_before.slab_kb,
            "slab_after_kb": kernel_after.slab_kb,
            "slab_kb_per_connection": slab_per_conn,
        });
        println!("{json}");
    }
    Ok(())
}

/// Idle connections ignore whatever they receive (the pool answers pings).
struct Idle;

impl Behaviour for Idle {
    type Output = ();

    fn on_message(&mut self, _id: ConnId, _text: &[u8]) {}

    fn finish(self) {}
}
