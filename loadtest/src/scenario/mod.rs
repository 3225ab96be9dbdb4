//! The scenarios, and what they share: opening subscribed connections, waiting for set-up,
//! sampling the server.

pub mod client_events;
pub mod connections;
pub mod delivery;
pub mod fanout;
pub mod idle;
pub mod presence;

use crate::cli::Common;
use crate::client::{ConnSpec, Pool, Target};
use crate::procfs::ProcSample;
use crate::runtime::{self, Control, Stats};
use std::time::{Duration, Instant};

/// The global connection numbers that client thread `index` of `threads` owns: every
/// `threads`-th of `0..total`, starting at `index`. Its pool's ids follow this order.
pub fn owned(index: usize, threads: usize, total: usize) -> Vec<usize> {
    (index..total).step_by(threads.max(1)).collect()
}

/// A pool for the connections `ids` (global numbers), connection `i` subscribing to
/// `channel_of(i)`.
pub fn pool_for(
    common: &Common,
    target: &Target,
    ids: &[usize],
    channel_of: impl Fn(usize) -> String,
) -> std::io::Result<Pool> {
    let specs = ids
        .iter()
        .map(|&i| ConnSpec {
            source: target.source_ip(i, common.source_ips),
            channels: vec![channel_of(i)],
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
}

/// Waits until `total` connections have subscribed or failed, printing progress.
/// Returns the time it took, or an error on timeout.
pub fn wait_for_setup(
    control: &Control,
    total: u64,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let stats = &control.stats;
    let done = || Stats::get(&stats.subscribed) + Stats::get(&stats.failed) >= total;
    let progress = || {
        eprintln!(
            "  set-up: {}/{total} subscribed, {} failed",
            Stats::get(&stats.subscribed),
            Stats::get(&stats.failed)
        )
    };
    if runtime::wait_until(timeout, done, progress) {
        Ok(start.elapsed())
    } else {
        Err(format!(
            "set-up timed out after {timeout:?}: {}/{total} subscribed, {} failed",
            Stats::get(&stats.subscribed),
            Stats::get(&stats.failed)
        ))
    }
}

/// The server process being measured, if its pid was given.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pid: Option<u32>,
}

impl Server {
    /// The server with process id `pid`; checks that it can be read.
    pub fn new(pid: Option<u32>) -> Result<Self, String> {
        let server = Self { pid };
        server.sample()?;
        Ok(server)
    }

    /// A sample of the server's counters, or `None` without a pid.
    pub fn sample(&self) -> Result<Option<ProcSample>, String> {
        self.pid
            .map(|pid| ProcSample::read(pid).map_err(|e| format!("cannot read /proc/{pid}: {e}")))
            .transpose()
    }
}

/// Formats an optional number for the report.
pub fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}
