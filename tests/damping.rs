//! Damping of refusals after the upgrade (`[damping]`): the close is held, repeat offenders get a
//! bare close frame, the refused sockets held at once are bounded, everything is counted in
//! /metrics, and admitted clients are not slowed down.

mod common;

use common::Client;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const UNKNOWN_KEY: &str = "/app/no-such-key?protocol=7&client=test&version=1";

/// One shard, so that every refusal lands in the same table.
fn damped(
    delay_ms: u64,
    repeat_after: u32,
    repeat_delay_ms: u64,
    max_held: usize,
) -> warren::config::Config {
    let mut config = common::config();
    config.server.shards = 1;
    config.damping.refusal_delay_ms = delay_ms;
    config.damping.repeat_after = repeat_after;
    config.damping.repeat_delay_ms = repeat_delay_ms;
    config.damping.max_held = max_held;
    config
}

fn metrics(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn counter(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_refusal_is_held_on_the_open_socket_then_answered_in_full() {
    let server = common::start(damped(600, 3, 5_000, 16));
    let mut client = Client::upgrade(server.local_addr(), UNKNOWN_KEY);
    // The socket is open (101 read by `upgrade`) and nothing comes until the delay is over.
    client.expect_silence(Duration::from_millis(300));
    let message = client.expect_refusal(4001);
    assert!(message.contains("no-such-key"), "{message}");
    let text = metrics(server.local_addr());
    assert_eq!(
        counter(
            &text,
            r#"warren_refusals_total{code="4001",treatment="delayed"} "#
        ),
        1,
        "{text}"
    );
}

#[test]
fn repeated_refusals_from_one_address_get_a_bare_close_and_are_counted() {
    let server = common::start(damped(50, 2, 300, 16));
    for _ in 0..2 {
        Client::upgrade(server.local_addr(), UNKNOWN_KEY).expect_refusal(4001);
    }
    let mut repeat = Client::upgrade(server.local_addr(), UNKNOWN_KEY);
    // No pusher:error this time: the close frame comes first, with the same code.
    let (code, _) = repeat.expect_close();
    assert_eq!(code, Some(4001));
    let text = metrics(server.local_addr());
    let count = |treatment: &str| {
        counter(
            &text,
            &format!(r#"warren_refusals_total{{code="4001",treatment="{treatment}"}} "#),
        )
    };
    assert_eq!((count("delayed"), count("repeat")), (2, 1), "{text}");
}

#[test]
fn beyond_max_held_a_refusal_is_answered_at_once() {
    let server = common::start(damped(4_000, 100, 4_000, 2));
    let held: Vec<Client> = (0..2)
        .map(|_| Client::upgrade(server.local_addr(), UNKNOWN_KEY))
        .collect();
    // Both are held: the server assesses a refusal as soon as its 101 is written.
    let mut over = Client::upgrade(server.local_addr(), UNKNOWN_KEY);
    over.expect_refusal(4001);
    let text = metrics(server.local_addr());
    assert_eq!(
        counter(
            &text,
            r#"warren_refusals_total{code="4001",treatment="over_capacity"} "#
        ),
        1,
        "{text}"
    );
    drop(held);
}

#[test]
fn admitted_clients_are_served_while_refusals_are_held() {
    let server = common::start(damped(3_000, 100, 3_000, 64));
    let held: Vec<Client> = (0..20)
        .map(|_| Client::upgrade(server.local_addr(), UNKNOWN_KEY))
        .collect();
    let mut client = Client::connect(server.local_addr());
    client.send_subscribe("news", None, None);
    client.expect_subscribed("news");
    client.ping_pong();
    drop(held);
}

#[test]
fn damping_off_answers_at_once() {
    let server = common::start(damped(0, 1, 0, 1));
    for _ in 0..3 {
        Client::upgrade(server.local_addr(), UNKNOWN_KEY).expect_refusal(4001);
    }
    let text = metrics(server.local_addr());
    assert_eq!(
        counter(
            &text,
            r#"warren_refusals_total{code="4001",treatment="immediate"} "#
        ),
        3,
        "{text}"
    );
}
