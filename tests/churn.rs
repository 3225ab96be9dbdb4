//! Connection churn: many rapid connect/disconnect cycles, closed abruptly at every stage (before
//! the request head, mid-head, right after the upgrade, after subscribing to public and presence
//! channels), then checks that nothing leaked: an app limited to 50 connections takes exactly 50
//! again, the presence roster the churn used is empty, and a new client is served normally.
//!
//! `WARREN_CHURN_CYCLES` sets the number of cycles (default 10,000).

mod common;

use common::{Client, WAIT};
use serde_json::json;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "churn-key";
const SECRET: &str = "churn-secret";
const PATH: &str = "/app/churn-key?protocol=7&client=test&version=1";
const LIMIT: u64 = 50;
const THREADS: usize = 4;
const PRESENCE: &str = "presence-churn";

fn cycles() -> usize {
    std::env::var("WARREN_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Closes `stream` with a reset (no FIN, no close frame).
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

#[derive(Default)]
struct Tally {
    refused_4004: AtomicUsize,
    completed: AtomicUsize,
}

/// One cycle; the way it ends depends on `i`.
fn cycle(addr: SocketAddr, i: usize, tally: &Tally) {
    match i % 8 {
        // Connect and reset at once.
        0 => reset(TcpStream::connect(addr).expect("connect")),
        // Half a request head, then a reset or a FIN.
        1 | 2 => {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let head = format!("GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: web");
            let _ = stream.write_all(&head.as_bytes()[..10 + i % 20]);
            if i % 8 == 1 {
                reset(stream);
            }
        }
        // Upgraded, then reset without reading anything.
        3 => {
            let client = Client::upgrade(addr, PATH);
            client.abort();
        }
        // Connected, then reset or dropped (FIN without a close frame).
        4 | 5 => {
            let mut client = Client::upgrade(addr, PATH);
            let first = client.recv();
            if first["event"] == "pusher:error" {
                assert_eq!(first["data"]["code"], 4004, "{first}");
                tally.refused_4004.fetch_add(1, Ordering::Relaxed);
                return;
            }
            assert_eq!(first["event"], "pusher:connection_established");
            if i % 8 == 4 {
                client.abort();
            }
        }
        // Subscribed (public, then presence as one of a few users), then reset or closed.
        _ => {
            let mut client = Client::upgrade(addr, PATH);
            let first = client.recv();
            if first["event"] == "pusher:error" {
                assert_eq!(first["data"]["code"], 4004, "{first}");
                tally.refused_4004.fetch_add(1, Ordering::Relaxed);
                return;
            }
            client.socket_id = common::data_of(&first)["socket_id"]
                .as_str()
                .unwrap()
                .to_string();
            client.send_subscribe("churn-public", Some(""), None);
            let data = format!(r#"{{"user_id":"user-{}"}}"#, i % 5);
            let auth = common::auth_for(KEY, SECRET, &client.socket_id, PRESENCE, Some(&data));
            client.send_subscribe(PRESENCE, Some(&auth), Some(&data));
            match i % 8 {
                // Leave before the presence join has been answered.
                6 => client.abort(),
                // Wait until subscribed, then close politely.
                _ => {
                    client.expect_subscribed("churn-public");
                    loop {
                        let message = client.recv();
                        if message["event"] == "pusher_internal:subscription_succeeded" {
                            assert_eq!(message["channel"], PRESENCE);
                            break;
                        }
                        // Other churning users coming and going.
                        assert!(
                            message["event"]
                                .as_str()
                                .unwrap()
                                .starts_with("pusher_internal:member_"),
                            "{message}"
                        );
                    }
                    drop(client);
                }
            }
        }
    }
    tally.completed.fetch_add(1, Ordering::Relaxed);
}

/// Opens connections to the limited app until refused; returns them (retrying for a while when
/// fewer than `LIMIT` fit, as the server may still be processing the churn's closes).
fn fill_to_limit(addr: SocketAddr) -> Vec<Client> {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let mut open = Vec::new();
        let refused_at = loop {
            let mut client = Client::upgrade(addr, PATH);
            let first = client.recv();
            if first["event"] == "pusher:error" {
                assert_eq!(first["data"]["code"], 4004, "{first}");
                let (code, _) = client.expect_close();
                assert_eq!(code, Some(4004));
                break open.len();
            }
            assert_eq!(first["event"], "pusher:connection_established");
            open.push(client);
            assert!(
                open.len() as u64 <= LIMIT,
                "more than {LIMIT} connections accepted"
            );
        };
        if refused_at as u64 == LIMIT {
            return open;
        }
        assert!(
            Instant::now() < deadline,
            "only {refused_at} of {LIMIT} connections fit after the churn: slots leaked"
        );
        drop(open);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rapid_connect_disconnect_cycles_leak_nothing() {
    let mut config = common::config();
    config.server.handshake_timeout = 2;
    let mut limited = common::extra_app(&config, "2", KEY, SECRET);
    limited.max_connections = Some(LIMIT);
    config.apps.push(limited);
    let server = common::start(config);
    let addr = server.local_addr();
    let total = cycles();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tally = tally.clone();
            std::thread::spawn(move || {
                for i in (t..total).step_by(THREADS) {
                    cycle(addr, i, &tally);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a churn worker failed");
    }
    let churn_time = started.elapsed();
    let refused = tally.refused_4004.load(Ordering::Relaxed);
    eprintln!(
        "churn: {total} cycles in {churn_time:?} ({} completed, {refused} refused with 4004 \
         while closes were pending)",
        tally.completed.load(Ordering::Relaxed)
    );
    assert_eq!(tally.completed.load(Ordering::Relaxed) + refused, total);
    // With 4 workers at most 4 connections are open at once; a handful of refusals can come from
    // closes the server has not processed yet, but not many.
    assert!(
        refused * 20 < total.max(20),
        "{refused} refusals in {total} cycles"
    );

    // Exactly LIMIT connections fit again.
    let mut open = fill_to_limit(addr);
    for client in open.iter_mut().take(3) {
        client.ping_pong();
    }
    drop(open);

    // The presence roster the churn used is empty.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut probe = Client::connect_path(addr, PATH);
        let data = r#"{"user_id":"probe"}"#;
        let auth = common::auth_for(KEY, SECRET, &probe.socket_id, PRESENCE, Some(data));
        probe.send_subscribe(PRESENCE, Some(&auth), Some(data));
        let message = probe.expect_subscribed(PRESENCE);
        let presence = common::data_of(&message)["presence"].clone();
        if presence["ids"] == json!(["probe"]) {
            assert_eq!(presence["count"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence members left behind by the churn: {presence}"
        );
        drop(probe);
        std::thread::sleep(Duration::from_millis(200));
    }

    // And the server still serves everything normally.
    common::assert_server_healthy(addr);
    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
}
