//! `warren-loadtest`: drives a running Pusher-compatible server (Warren, soketi, sockudo) over
//! real sockets and reports what it cost the server (memory, CPU time) from its `/proc` entries.
//! See README.md for the scenarios.

mod api;
mod cli;
mod client;
mod endpoint;
mod launch;
mod procfs;
mod protocol;
mod rawserver;
mod report;
mod runtime;
mod scenario;
mod ws;

#[cfg(test)]
mod smoke;

use clap::Parser;
use cli::{Cli, Common, CompareArgs, Scenario};
use report::Report;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match procfs::raise_nofile_limit() {
        Ok(limit) => eprintln!("warren-loadtest: open-file limit {limit}"),
        Err(e) => eprintln!("warren-loadtest: cannot raise the open-file limit: {e}"),
    }
    match run(&cli.scenario) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a scenario, prints its report and writes its files.
fn run(scenario: &Scenario) -> Result<(), String> {
    if let Scenario::Compare(args) = scenario {
        return compare(args);
    }
    if let Some(report) = run_scenario(scenario)? {
        let common = common(scenario).expect("report scenarios have common options");
        report.print();
        report.write_files(common.out.as_deref(), common.chart.as_deref())?;
        if common.json {
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| e.to_string())?
            );
        }
    }
    Ok(())
}

/// Runs a scenario; the older `idle` and `client-events` print their own reports (`None`).
pub fn run_scenario(scenario: &Scenario) -> Result<Option<Report>, String> {
    Ok(Some(match scenario {
        Scenario::Idle(args) => return scenario::idle::run(args).map(|()| None),
        Scenario::ClientEvents(args) => return scenario::client_events::run(args).map(|()| None),
        Scenario::Fanout(args) => scenario::fanout::fanout(args)?,
        Scenario::RawFanout(args) => scenario::fanout::raw_fanout(args)?,
        Scenario::Channels(args) => scenario::fanout::channels(args)?,
        Scenario::Churn(args) => scenario::fanout::churn(args)?,
        Scenario::Connections(args) => scenario::connections::run(args)?,
        Scenario::Presence(args) => scenario::presence::run(args)?,
        Scenario::ApiLatency(args) => scenario::fanout::api_latency(args)?,
        Scenario::Compare(_) => return Err("compare cannot be nested".into()),
    }))
}

fn common(scenario: &Scenario) -> Option<&Common> {
    match scenario {
        Scenario::Idle(a) => Some(&a.common),
        Scenario::ClientEvents(a) => Some(&a.common),
        Scenario::Fanout(a) | Scenario::RawFanout(a) => Some(&a.common),
        Scenario::Channels(a) => Some(&a.common),
        Scenario::Churn(a) => Some(&a.fanout.common),
        Scenario::Connections(a) => Some(&a.common),
        Scenario::Presence(a) => Some(&a.common),
        Scenario::ApiLatency(a) => Some(&a.common),
        Scenario::Compare(_) => None,
    }
}

fn common_mut(scenario: &mut Scenario) -> Option<&mut Common> {
    match scenario {
        Scenario::Idle(a) => Some(&mut a.common),
        Scenario::ClientEvents(a) => Some(&mut a.common),
        Scenario::Fanout(a) | Scenario::RawFanout(a) => Some(&mut a.common),
        Scenario::Channels(a) => Some(&mut a.common),
        Scenario::Churn(a) => Some(&mut a.fanout.common),
        Scenario::Connections(a) => Some(&mut a.common),
        Scenario::Presence(a) => Some(&mut a.common),
        Scenario::ApiLatency(a) => Some(&mut a.common),
        Scenario::Compare(_) => None,
    }
}

/// Starts server `name` with `command` and waits for the port of its `url`.
fn launch_for(
    name: &str,
    command: &str,
    url: &str,
    args: &CompareArgs,
) -> Result<launch::Launched, String> {
    let addr = crate::endpoint::Endpoint::parse(url, "ws")?.addr;
    let log = args
        .start_logs
        .as_ref()
        .map(|d| d.join(format!("{name}.log")));
    eprintln!("== starting {name}: {command}");
    launch::Launched::start(name, command, addr, log.as_deref())
}

/// `compare`: the scenario against each server in turn, then the figures side by side, with
/// ratios to the first server.
fn compare(args: &CompareArgs) -> Result<(), String> {
    let chosen = args.scenario.scenario();
    let base = common(&chosen).ok_or("compare needs a scenario")?.clone();
    let pids: std::collections::HashMap<&str, u32> = args
        .pids
        .iter()
        .filter_map(|p| {
            let (name, pid) = p.split_once('=')?;
            Some((name, pid.parse().ok()?))
        })
        .collect();
    let starts: std::collections::HashMap<&str, &str> = args
        .start
        .iter()
        .map(|s| {
            s.split_once('=')
                .ok_or_else(|| format!("--start wants name=COMMAND, got {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let mut reports: Vec<(String, Report)> = Vec::new();
    for server in &args.servers {
        let (name, url) = server
            .split_once('=')
            .ok_or_else(|| format!("--servers wants name=ws://host:port, got {server:?}"))?;
        let launched = match starts.get(name) {
            Some(command) => Some(launch_for(name, command, url, args)?),
            None => None,
        };
        let mut scenario = chosen.clone();
        let common = common_mut(&mut scenario).expect("checked above");
        common.url = url.to_string();
        common.api = None;
        common.server_pid = pids
            .get(name)
            .copied()
            .or(launched.as_ref().map(launch::Launched::pid));
        common.out = None;
        common.chart = None;
        eprintln!("== {name}: {url}");
        let report = run_scenario(&scenario)?.ok_or("compare: this scenario has no report")?;
        report.print();
        reports.push((name.to_string(), report));
        drop(launched);
        // Let the server settle between runs.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    println!();
    print!("{:<40}", "figure");
    for (name, _) in &reports {
        print!("{name:>16}");
    }
    for (name, _) in reports.iter().skip(1) {
        print!("{:>16}", format!("{name}/{}", reports[0].0));
    }
    println!();
    for (figure, _) in &reports[0].1.figures {
        let values: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.number(figure)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        print!("{figure:<40}");
        for v in &values {
            print!(
                "{:>16}",
                v.map_or("n/a".into(), |v| report::format_value(&serde_json::json!(
                    v
                )))
            );
        }
        for v in values.iter().skip(1) {
            let ratio = match (values[0], v) {
                (Some(a), Some(b)) if a != 0.0 => format!("{:.2}x", b / a),
                _ => "-".into(),
            };
            print!("{ratio:>16}");
        }
        println!();
    }
    if let Some(path) = &base.out {
        let json: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(n, r)| (n.clone(), serde_json::to_value(r).unwrap_or_default()))
            .collect();
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
