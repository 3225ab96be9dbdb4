//! Liveness (PROTOCOL.md §8.2): after `activity_timeout` seconds of silence the server sends a
//! WebSocket ping frame and a `pusher:ping`; without any answer within `pong_timeout` it closes
//! with 4201. Any frame from the client counts as activity. Also the handshake timeout for
//! connections that never finish their request head.

mod common;

use common::{Client, Frame, ReadError, PONG};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ACTIVITY: u64 = 2;
const PONG_TIMEOUT: u64 = 1;

fn start() -> warren::server::ServerHandle {
    let mut config = common::config();
    config.server.activity_timeout = ACTIVITY;
    config.server.pong_timeout = PONG_TIMEOUT;
    common::start(config)
}

/// Reads frames until the server's ping pair (a ping frame and a `pusher:ping`, in either order)
/// has arrived; returns when the second of them came. Panics on anything else.
fn expect_ping_pair(client: &mut Client, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    let (mut frame_ping, mut json_ping) = (false, false);
    while !(frame_ping && json_ping) {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.try_frame(left) {
            Ok(Frame::Ping(payload)) if !frame_ping => frame_ping = payload.len() <= 125,
            Ok(Frame::Text(text)) if !json_ping => {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(message["event"], "pusher:ping", "{text}");
                assert!(
                    message["data"] == json!("{}") || message["data"] == json!({}),
                    "{text}"
                );
                json_ping = true;
            }
            other => {
                panic!("waiting for pings (frame: {frame_ping}, json: {json_ping}): got {other:?}")
            }
        }
    }
    Instant::now()
}

fn connect(addr: SocketAddr) -> (Client, Instant) {
    let client = Client::connect(addr);
    let at = Instant::now();
    assert_eq!(client.activity_timeout, ACTIVITY);
    (client, at)
}

#[test]
fn a_silent_client_is_pinged_then_closed_with_4201() {
    let server = start();
    let addr = server.local_addr();
    let (mut client, connected) = connect(addr);
    // Nothing before activity_timeout.
    client.expect_silence(Duration::from_millis(ACTIVITY * 1000 - 300));
    // The sweep runs every second, so the pings come between 2 and ~3.2 s.
    let pinged = expect_ping_pair(&mut client, Duration::from_secs(2));
    let since_connect = pinged - connected;
    assert!(
        since_connect >= Duration::from_millis(ACTIVITY * 1000 - 200),
        "pinged after only {since_connect:?}"
    );
    // Silent still: closed with 4201 after pong_timeout (+ sweep granularity).
    let frame = client.try_frame(Duration::from_secs(PONG_TIMEOUT + 2));
    let Ok(Frame::Close(code, reason)) = frame else {
        panic!("expected close 4201, got {frame:?}");
    };
    assert_eq!(code, Some(4201), "reason {reason:?}");
    let closed_after = pinged.elapsed();
    assert!(
        closed_after >= Duration::from_millis(PONG_TIMEOUT * 1000 - 200),
        "closed only {closed_after:?} after the ping"
    );
    match client.try_frame(common::WAIT) {
        Err(ReadError::Eof) => {}
        other => panic!("expected EOF after the close, got {other:?}"),
    }
    drop(client);
    common::assert_server_healthy(addr);
}

#[test]
fn clients_that_answer_either_ping_stay_connected() {
    let server = start();
    let addr = server.local_addr();
    // One answers protocol pings with pong frames (as browsers do), the other answers the JSON
    // ping only (pusher-js cannot see ping frames in a browser).
    let (mut by_frame, _) = connect(addr);
    let (mut by_json, _) = connect(addr);
    let until = Instant::now() + Duration::from_secs(7);
    let (mut frame_pings, mut json_pings) = (0, 0);
    while Instant::now() < until {
        match by_frame.try_frame(Duration::from_millis(100)) {
            Ok(Frame::Ping(payload)) => {
                frame_pings += 1;
                by_frame.send_frame(PONG, true, &payload);
            }
            Ok(Frame::Text(text)) => assert!(text.contains("pusher:ping"), "{text}"),
            Ok(other) => panic!("unexpected {other:?} after {frame_pings} pings"),
            Err(ReadError::Timeout) => {}
            Err(e) => panic!("connection lost after {frame_pings} pings: {e:?}"),
        }
        match by_json.try_frame(Duration::from_millis(100)) {
            Ok(Frame::Ping(_)) => {}
            Ok(Frame::Text(text)) => {
                assert!(text.contains("pusher:ping"), "{text}");
                json_pings += 1;
                by_json.send_json(&json!({"event": "pusher:pong", "data": {}}));
            }
            Ok(other) => panic!("unexpected {other:?} after {json_pings} pings"),
            Err(ReadError::Timeout) => {}
            Err(e) => panic!("connection lost after {json_pings} pings: {e:?}"),
        }
    }
    assert!(
        frame_pings >= 2,
        "only {frame_pings} pings in 7 s with activity_timeout 2"
    );
    assert!(
        json_pings >= 2,
        "only {json_pings} pings in 7 s with activity_timeout 2"
    );
    by_frame.ping_pong();
    by_json.ping_pong();
}

#[test]
fn any_client_traffic_counts_as_activity() {
    let server = start();
    let addr = server.local_addr();
    let (mut pinger, _) = connect(addr);
    let (mut frame_pinger, _) = connect(addr);
    // Each sends something every second: never pinged by the server.
    for _ in 0..5 {
        pinger.ping_pong();
        frame_pinger.send_frame(common::PING, true, b"k");
        assert_eq!(frame_pinger.frame(), Frame::Pong(b"k".to_vec()));
        std::thread::sleep(Duration::from_millis(900));
    }
    pinger.expect_quiet();
    frame_pinger.expect_quiet();
}

#[test]
fn a_late_answer_after_the_ping_still_saves_the_connection() {
    let server = start();
    let (mut client, _) = connect(server.local_addr());
    expect_ping_pair(&mut client, Duration::from_secs(4));
    // Answer half-way through the pong timeout.
    std::thread::sleep(Duration::from_millis(PONG_TIMEOUT * 1000 / 2));
    client.ping_pong();
    // The next pings come after another activity_timeout; the connection is not closed.
    let frame = client.try_frame(Duration::from_millis(ACTIVITY * 1000 - 300));
    assert!(matches!(frame, Err(ReadError::Timeout)), "{frame:?}");
    expect_ping_pair(&mut client, Duration::from_secs(3));
    client.ping_pong();
}

#[test]
fn subscribers_that_go_silent_are_dropped_and_leave_their_channels() {
    let server = start();
    let addr = server.local_addr();
    let channel = "presence-liveness";
    let (mut watcher, _) = connect(addr);
    watcher.subscribe_presence(channel, r#"{"user_id":"watcher"}"#);
    let (mut ghost, _) = connect(addr);
    ghost.subscribe_presence(channel, r#"{"user_id":"ghost"}"#);
    let added = watcher.expect_event("pusher_internal:member_added");
    assert_eq!(common::data_of(&added), json!({"user_id": "ghost"}));
    // The watcher keeps answering; the ghost never reads nor writes again.
    let until = Instant::now() + Duration::from_secs(ACTIVITY + PONG_TIMEOUT + 4);
    let mut removed = false;
    while Instant::now() < until && !removed {
        match watcher.try_frame(Duration::from_millis(200)) {
            Ok(Frame::Ping(payload)) => watcher.send_frame(PONG, true, &payload),
            Ok(Frame::Text(text)) => {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                match message["event"].as_str().unwrap() {
                    "pusher:ping" => {}
                    "pusher_internal:member_removed" => {
                        assert_eq!(common::data_of(&message), json!({"user_id": "ghost"}));
                        removed = true;
                    }
                    _ => panic!("unexpected {text}"),
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ReadError::Timeout) => {}
            Err(e) => panic!("watcher lost: {e:?}"),
        }
    }
    assert!(removed, "the silent member was never removed");
    // What the ghost would have read: the two pings, then the close.
    expect_ping_pair(&mut ghost, Duration::from_secs(1));
    assert!(matches!(ghost.frame(), Frame::Close(Some(4201), _)));
}

#[test]
fn a_connection_that_never_sends_its_request_head_is_dropped() {
    let mut config = common::config();
    config.server.handshake_timeout = 1;
    let server = common::start(config);
    let addr = server.local_addr();
    // Nothing at all: closed, at most with a 408.
    let started = Instant::now();
    let bytes = common::raw_exchange(addr, b"");
    if !bytes.is_empty() {
        assert_eq!(common::parse_http_response(&bytes).status, 408);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Half a request head: 408 and close.
    let started = Instant::now();
    let bytes = common::raw_exchange(addr, b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(common::parse_http_response(&bytes).status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    common::assert_server_healthy(addr);
}
