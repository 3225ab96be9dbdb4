//! `fanout`, `raw-fanout`, `channels`, `churn` and `api-latency`: thin set-ups of the
//! [`delivery`] engine.

use super::delivery::{self, Plan, Probe, Publisher};
use crate::api::ApiTarget;
use crate::cli::{
    ApiLatencyArgs, ChannelsArgs, ChurnArgs, Common, FanoutArgs, PublishArgs, RawEngine, Via,
};
use crate::client::Target;
use crate::rawserver::RawServer;
use crate::report::Report;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// `fanout`: S subscribers on one channel, publishes through the API or as client events.
pub fn fanout(args: &FanoutArgs) -> Result<Report, String> {
    fanout_with(args, None, "fanout")
}

/// `churn`: a fanout while churning connections come and go on the same channel.
pub fn churn(args: &ChurnArgs) -> Result<Report, String> {
    fanout_with(
        &args.fanout,
        Some((args.churn_connections, args.churn_rate)),
        "churn",
    )
}

fn fanout_with(
    args: &FanoutArgs,
    churn: Option<(usize, f64)>,
    scenario: &'static str,
) -> Result<Report, String> {
    let common = &args.common;
    let (channel, publisher) = match args.via {
        Via::Api => (
            args.channel
                .clone()
                .unwrap_or_else(|| "loadtest-fanout".into()),
            api_publisher(common)?,
        ),
        Via::ClientEvents => (
            args.channel
                .clone()
                .unwrap_or_else(|| "private-loadtest-fanout".into()),
            Publisher::ClientEvents {
                senders: args.senders,
            },
        ),
    };
    if args.via == Via::ClientEvents && !channel.starts_with("private-") {
        return Err("client events need a private- or presence- channel".into());
    }
    let mut report = delivery::run(Plan {
        scenario,
        common: common.clone(),
        publish: args.publish.clone(),
        target: Target::new(&common.url, &common.key)?,
        channels: vec![channel],
        channel_of: vec![0; args.subscribers],
        random_channel: false,
        publisher,
        probe: Probe::Process(common.server_pid),
        churn,
        back_to_back: None,
        quiet_channels: 0,
    })?;
    if args.via == Via::ClientEvents && args.publish.rate / args.senders.max(1) as f64 > 10.0 {
        report.notes.push(
            "more than 10 client events/s per sender: a server with the default limit rejects some (4301)"
                .into(),
        );
    }
    Ok(report)
}

/// `raw-fanout`: the same run against the harness's one-thread raw server.
pub fn raw_fanout(args: &FanoutArgs) -> Result<Report, String> {
    let channel = "raw-fanout".to_string();
    // Both ends of every connection live in this process.
    let needed = 2 * args.subscribers as u64 + 64;
    let limit = crate::procfs::nofile_limit();
    if needed > limit {
        return Err(format!(
            "LIMIT: raw-fanout holds both ends of each connection: {} subscribers need ~{needed} file descriptors, the open-file limit is {limit} (at most {} subscribers; raise the hard limit with `ulimit -Hn` as root)",
            args.subscribers,
            (limit.saturating_sub(64)) / 2
        ));
    }
    let cell = Arc::new(OnceLock::new());
    let server = RawServer::start(channel.clone(), cell.clone(), args.raw_cpu, args.raw_engine)
        .map_err(|e| format!("cannot start the raw server: {e}"))?;
    let mut common = args.common.clone();
    common.url = format!("ws://{}", server.addr);
    let tid = server.tid.load(Ordering::Acquire);
    let result = delivery::run(Plan {
        scenario: "raw-fanout",
        common: common.clone(),
        publish: args.publish.clone(),
        target: Target::new(&common.url, &common.key)?,
        channels: vec![channel],
        channel_of: vec![0; args.subscribers],
        random_channel: false,
        publisher: Publisher::Raw(cell),
        probe: Probe::Thread(tid),
        churn: None,
        back_to_back: None,
        quiet_channels: 0,
    });
    // Without a control block (an early error) the server thread cannot see the stop phase.
    if result.is_ok() {
        server.join();
    }
    let mut report = result?;
    report.target = match args.raw_engine {
        RawEngine::Epoll => "harness raw server (1 thread, epoll)",
        RawEngine::IoUring => "harness raw server (1 thread, epoll set-up, io_uring fan-out)",
    }
    .into();
    report
        .notes
        .push("server_* figures are the raw server thread's (/proc/self/task/TID)".into());
    Ok(report)
}

/// `channels`: N connections each on its own channel; publishes to random channels.
pub fn channels(args: &ChannelsArgs) -> Result<Report, String> {
    let common = &args.common;
    let n = args.connections;
    let quiet = args.quiet_connections;
    let mut channels: Vec<String> = (0..n).map(|i| format!("loadtest-ch-{i}")).collect();
    let mut channel_of: Vec<u32> = (0..n as u32).collect();
    if quiet > 0 {
        channels.push("loadtest-quiet".into());
        channel_of.extend(std::iter::repeat_n(n as u32, quiet));
    }
    let mut report = delivery::run(Plan {
        scenario: "channels",
        common: common.clone(),
        publish: args.publish.clone(),
        target: Target::new(&common.url, &common.key)?,
        channels,
        channel_of,
        random_channel: true,
        publisher: api_publisher(common)?,
        probe: Probe::Process(common.server_pid),
        churn: None,
        back_to_back: None,
        quiet_channels: usize::from(quiet > 0),
    })?;
    report.param("quiet_connections", quiet as u64);
    Ok(report)
}

/// `api-latency`: S subscribers on one channel while the API publisher triggers back to back
/// (or at `--rate`); the report's `trigger_*` figures are the answer times, `lost` etc. the
/// completeness of the deliveries.
pub fn api_latency(args: &ApiLatencyArgs) -> Result<Report, String> {
    let common = &args.common;
    let messages = args.messages.max(1);
    let rate = args.rate.unwrap_or(1.0);
    let mut report = delivery::run(Plan {
        scenario: "api-latency",
        common: common.clone(),
        publish: PublishArgs {
            rate,
            duration_secs: messages as f64 / rate,
            payload_bytes: args.payload_bytes,
            drain_timeout_secs: args.drain_timeout_secs,
        },
        target: Target::new(&common.url, &common.key)?,
        channels: vec![args.channel.clone()],
        channel_of: vec![0; args.subscribers],
        random_channel: false,
        publisher: api_publisher(common)?,
        probe: Probe::Process(common.server_pid),
        churn: None,
        back_to_back: args.rate.is_none().then_some(messages),
        quiet_channels: 0,
    })?;
    report.param("subscribers", args.subscribers as u64);
    Ok(report)
}

/// The signed HTTP API publisher for the server named by `common`.
fn api_publisher(common: &Common) -> Result<Publisher, String> {
    let api = ApiTarget::new(
        common.api.as_deref(),
        &common.url,
        &common.app_id,
        &common.key,
        &common.secret,
    )?;
    Ok(Publisher::Api(api))
}
