//! Smoke tests: each scenario against an in-process Warren (2 shards, port 0) for small N and
//! about two seconds. They assert behaviour only (every message accounted for, the report and
//! the chart written and well-formed), never timings.

use crate::cli::Cli;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Mutex;

/// One server at a time: each registers io_uring memory against the memlock limit.
static SERIAL: Mutex<()> = Mutex::new(());

fn start_warren() -> warren::server::ServerHandle {
    let mut config = warren::config::Config::embedded_default();
    config.server.bind = "127.0.0.1".into();
    config.server.port = 0;
    config.server.shards = 2;
    config.server.shutdown_grace = 1;
    warren::server::start(config).expect("warren starts")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-loadtest-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `args` (after the program name) with `--out`/`--chart` in a temporary directory and
/// returns the JSON report and the SVG.
fn run(name: &str, url: Option<&str>, args: &[&str]) -> (serde_json::Value, String) {
    let out = temp(&format!("{name}.json"));
    let chart = temp(&format!("{name}.svg"));
    let mut argv: Vec<String> = vec!["warren-loadtest".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    if let Some(url) = url {
        argv.extend(["--url".into(), url.to_string()]);
    }
    argv.extend([
        "--out".into(),
        out.display().to_string(),
        "--chart".into(),
        chart.display().to_string(),
        "--threads".into(),
        "2".into(),
    ]);
    let cli = Cli::try_parse_from(&argv).expect("valid arguments");
    crate::run(&cli.scenario).expect("the scenario runs");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report written"))
            .expect("the report is valid JSON");
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline"));
    (json, svg)
}

fn figure(report: &serde_json::Value, name: &str) -> u64 {
    report["figures"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("figure {name} in {report}"))
}

/// Every published message reached every receiver exactly once.
fn all_accounted(report: &serde_json::Value, connections: u64, messages: u64) {
    assert_eq!(figure(report, "messages_published"), messages, "{report}");
    assert_eq!(figure(report, "publish_errors"), 0, "{report}");
    assert_eq!(figure(report, "connections_subscribed"), connections);
    assert_eq!(figure(report, "lost"), 0, "{report}");
    assert_eq!(figure(report, "duplicated"), 0, "{report}");
    assert_eq!(figure(report, "misrouted"), 0, "{report}");
    assert_eq!(figure(report, "unexpected"), 0, "{report}");
    assert_eq!(
        figure(report, "delivered"),
        figure(report, "expected_deliveries")
    );
    assert!(report["latency_ms"]["p50"].as_f64().is_some());
    assert!(!report["timeline"].as_array().unwrap().is_empty());
}

#[test]
fn fanout_through_the_api() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    let (report, _) = run(
        "fanout-api",
        Some(&url),
        &[
            "fanout",
            "--subscribers",
            "50",
            "--rate",
            "20",
            "--duration-secs",
            "2",
        ],
    );
    all_accounted(&report, 50, 40);
    assert_eq!(figure(&report, "delivered"), 50 * 40);
    server.shutdown();
}

#[test]
fn fanout_with_client_events() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    let (report, _) = run(
        "fanout-ce",
        Some(&url),
        &[
            "fanout",
            "--via",
            "client-events",
            "--senders",
            "2",
            "--subscribers",
            "30",
            "--rate",
            "10",
            "--duration-secs",
            "2",
        ],
    );
    // 30 receivers and 2 senders.
    all_accounted(&report, 32, 20);
    assert_eq!(figure(&report, "delivered"), 30 * 20);
    server.shutdown();
}

#[test]
fn raw_fanout() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (report, _) = run(
        "raw-fanout",
        None,
        &[
            "raw-fanout",
            "--subscribers",
            "100",
            "--rate",
            "50",
            "--duration-secs",
            "2",
        ],
    );
    all_accounted(&report, 100, 100);
    assert_eq!(figure(&report, "delivered"), 100 * 100);
    assert!(report["figures"]["server_cpu_s"].as_f64().is_some());
    assert!(report["target"].as_str().unwrap_or("").contains("io_uring"));
}

#[test]
fn raw_fanout_epoll() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (report, _) = run(
        "raw-fanout-epoll",
        None,
        &[
            "raw-fanout",
            "--raw-engine",
            "epoll",
            "--subscribers",
            "100",
            "--rate",
            "50",
            "--duration-secs",
            "2",
        ],
    );
    all_accounted(&report, 100, 100);
    assert_eq!(figure(&report, "delivered"), 100 * 100);
    assert!(report["target"].as_str().unwrap_or("").contains("epoll"));
}

#[test]
fn channels_with_and_without_quiet_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    for quiet in [0u64, 30] {
        let quiet_arg = quiet.to_string();
        let (report, _) = run(
            &format!("channels-quiet-{quiet}"),
            Some(&url),
            &[
                "channels",
                "--connections",
                "40",
                "--quiet-connections",
                &quiet_arg,
                "--rate",
                "50",
                "--duration-secs",
                "2",
            ],
        );
        // The quiet connections subscribe too, and are sent nothing.
        all_accounted(&report, 40 + quiet, 100);
        // One receiver per published channel: one delivery per message.
        assert_eq!(figure(&report, "delivered"), 100);
        assert_eq!(report["params"]["quiet_connections"], quiet);
    }
    server.shutdown();
}

#[test]
fn connections_public_and_private() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    for private in [false, true] {
        let mut args = vec![
            "connections",
            "--connections",
            "60",
            "--channels-per-connection",
            "3",
            "--channel-pool",
            "10",
            "--hold-secs",
            "1",
        ];
        if private {
            args.push("--private");
        }
        let (report, _) = run("connections", Some(&url), &args);
        assert_eq!(figure(&report, "connections_subscribed"), 60, "{report}");
        assert_eq!(figure(&report, "connections_failed"), 0);
        assert_eq!(figure(&report, "connections_dropped"), 0);
    }
    server.shutdown();
}

#[test]
fn churn_keeps_the_steady_subscribers_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    let (report, _) = run(
        "churn",
        Some(&url),
        &[
            "churn",
            "--subscribers",
            "30",
            "--rate",
            "20",
            "--duration-secs",
            "2",
            "--churn-connections",
            "20",
            "--churn-rate",
            "50",
        ],
    );
    // 30 steady receivers and 20 churners at set-up.
    all_accounted(&report, 50, 40);
    assert_eq!(figure(&report, "delivered"), 30 * 40);
    assert!(figure(&report, "churn_disconnects") > 0);
    server.shutdown();
}

#[test]
fn presence_member_events_all_accounted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    let (report, _) = run(
        "presence",
        Some(&url),
        &[
            "presence",
            "--channels",
            "3",
            "--members",
            "5",
            "--churners",
            "2",
            "--rate",
            "30",
            "--duration-secs",
            "2",
        ],
    );
    // 3 × 5 members and 3 × 2 churners; 60 cycles.
    assert_eq!(figure(&report, "connections_subscribed"), 21, "{report}");
    assert_eq!(figure(&report, "joins"), 60, "{report}");
    assert_eq!(figure(&report, "leaves"), 60, "{report}");
    assert_eq!(figure(&report, "churn_send_errors"), 0, "{report}");
    // Each join and each leave reaches the 5 members of its channel.
    assert_eq!(figure(&report, "expected_member_events"), 2 * 60 * 5);
    assert_eq!(
        figure(&report, "received_member_events"),
        figure(&report, "expected_member_events"),
        "{report}"
    );
    assert_eq!(figure(&report, "missing"), 0, "{report}");
    assert_eq!(figure(&report, "extra"), 0, "{report}");
    assert_eq!(figure(&report, "foreign_member_events"), 0, "{report}");
    assert_eq!(figure(&report, "roster_errors"), 0, "{report}");
    assert_eq!(figure(&report, "member_view_errors"), 0, "{report}");
    assert_eq!(figure(&report, "pusher_errors"), 0, "{report}");
    assert!(figure(&report, "roster_count_min") >= 1);
    assert!(figure(&report, "roster_count_max") <= 5);
    assert!(report["latency_ms"]["p50"].as_f64().is_some());
    assert_eq!(report["latency_ms"]["count"].as_u64(), Some(60 * 5));
    assert!(!report["timeline"].as_array().unwrap().is_empty());
    server.shutdown();
}

/// The trigger figures of a report: every trigger answered, percentiles in order.
fn triggers_answered(report: &serde_json::Value, messages: u64) {
    assert_eq!(figure(report, "triggers_answered"), messages, "{report}");
    let ms = |name: &str| report["figures"][name].as_f64().unwrap_or(-1.0);
    assert!(ms("trigger_p50_ms") > 0.0, "{report}");
    assert!(ms("trigger_p50_ms") <= ms("trigger_p99_ms"));
    assert!(ms("trigger_p99_ms") <= ms("trigger_max_ms"));
    assert!(ms("triggers_per_s") > 0.0, "{report}");
}

#[test]
fn api_latency_back_to_back_and_paced() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    // Back to back, with subscribers: every trigger answered and delivered to all of them.
    let (report, _) = run(
        "api-latency",
        Some(&url),
        &["api-latency", "--subscribers", "30", "--messages", "60"],
    );
    all_accounted(&report, 30, 60);
    assert_eq!(figure(&report, "delivered"), 30 * 60);
    assert_eq!(report["params"]["pacing"], "back-to-back", "{report}");
    triggers_answered(&report, 60);
    // On a schedule, to an empty channel.
    let (report, _) = run(
        "api-latency-empty",
        Some(&url),
        &["api-latency", "--messages", "20", "--rate", "20"],
    );
    assert_eq!(figure(&report, "messages_published"), 20, "{report}");
    assert_eq!(figure(&report, "delivered"), 0, "{report}");
    triggers_answered(&report, 20);
    // Back to back to an empty channel: over in a few ms, but measured from the run's start.
    let (report, _) = run(
        "api-latency-empty-b2b",
        Some(&url),
        &["api-latency", "--messages", "20"],
    );
    triggers_answered(&report, 20);
    assert!(
        report["figures"]["run_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    server.shutdown();
}

#[test]
fn compare_runs_api_latency_against_each_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_warren();
    let url = format!("ws://{}", server.local_addr());
    let out = temp("compare.json");
    let servers = format!("one={url},two={url}");
    let out_arg = out.display().to_string();
    let argv = [
        "warren-loadtest",
        "compare",
        "--servers",
        &servers,
        "api-latency",
        "--subscribers",
        "10",
        "--messages",
        "20",
        "--out",
        &out_arg,
    ];
    let cli = Cli::try_parse_from(argv).expect("valid arguments");
    crate::run(&cli.scenario).expect("compare runs");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("reports written")).unwrap();
    for name in ["one", "two"] {
        all_accounted(&json[name], 10, 20);
        triggers_answered(&json[name], 20);
    }
    server.shutdown();
}
