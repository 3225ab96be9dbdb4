//! Opening a connection (PROTOCOL.md §1.2, §1.3): the handshake message, the refusals with their
//! Pusher codes, ping/pong in both forms, the close handshake, and graceful shutdown (4200).

mod common;

use common::{Client, Frame, ReadError, CLOSE, PING, WAIT};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn connection_established_is_the_first_frame_with_string_data() {
    let server = common::start_default();
    let mut client = Client::upgrade(server.local_addr(), common::DEFAULT_PATH);
    // The very first frame, read raw: a text frame holding exactly these fields.
    let Frame::Text(text) = client.frame() else {
        panic!("first frame is not text");
    };
    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(message["event"], "pusher:connection_established", "{text}");
    assert!(
        message["data"].is_string(),
        "data must be a JSON string: {text}"
    );
    assert_eq!(
        message.as_object().unwrap().len(),
        2,
        "only event and data: {text}"
    );
    let data = common::data_of(&message);
    assert_eq!(data["activity_timeout"], 120, "{text}");
    let socket_id = data["socket_id"].as_str().expect("socket_id is a string");
    let (a, b) = socket_id.split_once('.').expect("socket_id has a dot");
    assert!(
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert!(
        !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    // Nothing else is sent unasked.
    client.expect_quiet();
}

#[test]
fn socket_ids_are_unique_and_both_shards_accept() {
    let server = common::start_default();
    let mut ids = BTreeSet::new();
    let mut shards = BTreeSet::new();
    let mut clients = Vec::new();
    for _ in 0..40 {
        let client = Client::connect(server.local_addr());
        assert!(
            ids.insert(client.socket_id.clone()),
            "duplicate {}",
            client.socket_id
        );
        shards.insert(client.shard());
        clients.push(client);
    }
    assert_eq!(
        shards,
        BTreeSet::from([0, 1]),
        "40 connections should reach both shards"
    );
}

#[test]
fn activity_timeout_is_the_configured_value() {
    let mut config = common::config();
    config.server.activity_timeout = 42;
    let server = common::start(config);
    let client = Client::connect(server.local_addr());
    assert_eq!(client.activity_timeout, 42);
}

#[test]
fn unknown_app_key_is_refused_with_4001() {
    let server = common::start_default();
    let mut client = Client::upgrade(
        server.local_addr(),
        "/app/no-such-key?protocol=7&client=test&version=1",
    );
    let message = client.expect_refusal(4001);
    assert!(message.contains("no-such-key"), "{message}");
}

#[test]
fn disabled_app_is_refused_with_4003() {
    let mut config = common::config();
    let mut disabled = common::extra_app(&config, "2", "disabled-key", "s2");
    disabled.enabled = false;
    config.apps.push(disabled);
    let server = common::start(config);
    let mut client = Client::upgrade(
        server.local_addr(),
        "/app/disabled-key?protocol=7&client=test&version=1",
    );
    client.expect_refusal(4003);
    // The enabled app on the same server is unaffected.
    Client::connect(server.local_addr()).ping_pong();
}

#[test]
fn over_connection_quota_is_refused_with_4004_and_the_slot_is_released() {
    let mut config = common::config();
    let mut limited = common::extra_app(&config, "2", "limited-key", "s2");
    limited.max_connections = Some(1);
    config.apps.push(limited);
    let server = common::start(config);
    let path = "/app/limited-key?protocol=7&client=test&version=1";
    let first = Client::connect_path(server.local_addr(), path);
    let mut second = Client::upgrade(server.local_addr(), path);
    second.expect_refusal(4004);
    // Other apps have their own quota.
    let _other = Client::connect(server.local_addr());
    // Once the first client leaves, its slot can be taken again.
    first.close();
    let mut third = connect_retrying(server.local_addr(), path);
    third.ping_pong();
    let mut fourth = Client::upgrade(server.local_addr(), path);
    fourth.expect_refusal(4004);
}

/// Connects to `path`, retrying while the server still answers 4004 (a slot freed by a close the
/// server has not processed yet).
fn connect_retrying(addr: std::net::SocketAddr, path: &str) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut client = Client::upgrade(addr, path);
        let message = client.recv();
        if message["event"] == "pusher:connection_established" {
            client.socket_id = common::data_of(&message)["socket_id"]
                .as_str()
                .unwrap()
                .to_string();
            return client;
        }
        assert_eq!(message["data"]["code"], 4004, "{message}");
        assert!(Instant::now() < deadline, "the slot was never released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wrong_path_is_refused_with_4005() {
    let server = common::start_default();
    for path in [
        "/foo/app-key?protocol=7&client=test&version=1",
        "/app/?protocol=7",
        "/app/app-key/extra?protocol=7",
        "/apps/app-key?protocol=7",
    ] {
        let mut client = Client::upgrade(server.local_addr(), path);
        client.expect_refusal(4005);
    }
}

#[test]
fn path_prefix_is_honoured() {
    let mut config = common::config();
    config.server.path_prefix = "/ws".into();
    let server = common::start(config);
    Client::connect_path(server.local_addr(), "/ws/app/app-key?protocol=7").ping_pong();
    Client::upgrade(server.local_addr(), "/app/app-key?protocol=7").expect_refusal(4005);
}

#[test]
fn unsupported_protocol_versions_are_refused_with_4007() {
    let server = common::start_default();
    for protocol in ["1", "3", "4", "8", "70", "x", ""] {
        let path = format!("/app/app-key?protocol={protocol}&client=test&version=1");
        let mut client = Client::upgrade(server.local_addr(), &path);
        client.expect_refusal(4007);
    }
}

#[test]
fn protocols_5_to_7_and_a_missing_protocol_are_accepted() {
    let server = common::start_default();
    for path in [
        "/app/app-key?protocol=5",
        "/app/app-key?protocol=6&client=js",
        "/app/app-key?protocol=7&client=js&version=8.6.0&flash=false",
        "/app/app-key?client=test&version=1",
        "/app/app-key",
    ] {
        let mut client = Client::connect_path(server.local_addr(), path);
        client.ping_pong();
    }
}

#[test]
fn an_upgrade_may_follow_a_keep_alive_http_request() {
    let server = common::start_default();
    let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\nOK") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "{response:?}");
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    let mut client = Client::upgrade_stream(stream, common::DEFAULT_PATH, &[]);
    client.expect_established();
    client.ping_pong();
}

#[test]
fn pusher_ping_gets_pusher_pong_in_every_data_form() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    client.ping_pong();
    for ping in [
        r#"{"event":"pusher:ping","data":"{}"}"#,
        r#"{"event":"pusher:ping"}"#,
        r#"{"event":"pusher:ping","data":null}"#,
    ] {
        client.send_text(ping);
        assert_eq!(
            client.recv(),
            json!({"event": "pusher:pong", "data": "{}"}),
            "answer to {ping}"
        );
    }
    // A pusher:pong from the client is activity only: no answer.
    client.send_text(r#"{"event":"pusher:pong","data":{}}"#);
    client.expect_quiet();
}

#[test]
fn websocket_ping_frame_gets_a_pong_frame_with_the_same_payload() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    client.send_frame(PING, true, b"hello");
    assert_eq!(client.frame(), Frame::Pong(b"hello".to_vec()));
    client.send_frame(PING, true, b"");
    assert_eq!(client.frame(), Frame::Pong(Vec::new()));
    // A pong frame from the client needs no answer.
    client.send_frame(common::PONG, true, b"x");
    client.expect_quiet();
    client.ping_pong();
}

#[test]
fn client_close_frame_is_answered_with_the_same_code() {
    let server = common::start_default();
    let client = Client::connect(server.local_addr());
    client.close();
    let mut client = Client::connect(server.local_addr());
    client.send_frame(CLOSE, true, &4321u16.to_be_bytes());
    let (code, _) = client.expect_close();
    assert_eq!(code, Some(4321));
    // A close frame without a code is answered with 1000.
    let mut client = Client::connect(server.local_addr());
    client.send_frame(CLOSE, true, b"");
    let (code, _) = client.expect_close();
    assert_eq!(code, Some(1000));
}

#[test]
fn graceful_shutdown_closes_every_client_with_4200() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..6).map(|_| Client::connect(addr)).collect();
    let shards: BTreeSet<usize> = clients.iter().map(Client::shard).collect();
    if shards.len() < 2 {
        clients.push(Client::connect_on_shard(addr, 1 - clients[0].shard()));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.subscribe(&format!("room-{}", i % 2));
    }
    let started = Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    for client in &mut clients {
        let frame = client.frame();
        assert!(
            matches!(&frame, Frame::Close(Some(4200), _)),
            "socket {} on shard {}: expected close 4200, got {frame:?}",
            client.socket_id,
            client.shard()
        );
        let _ = client.try_send_raw(&common::masked(CLOSE, true, &4200u16.to_be_bytes()));
        match client.try_frame(WAIT) {
            Err(ReadError::Eof) => {}
            other => panic!("expected EOF after the close, got {other:?}"),
        }
    }
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?} although every client answered the close",
        started.elapsed()
    );
    // Nothing listens any more.
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn graceful_shutdown_does_not_wait_forever_for_silent_clients() {
    let server = common::start_default();
    let addr = server.local_addr();
    // These clients never read nor answer the close frame.
    let silent: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    let started = Instant::now();
    server.shutdown();
    // Grace is 1 s in the test configuration (+1 s drain slack).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    for mut client in silent {
        let frame = client.frame();
        assert!(matches!(frame, Frame::Close(Some(4200), _)), "{frame:?}");
    }
}

#[test]
fn shutdown_is_not_held_up_by_connections_still_in_their_handshake() {
    let mut config = common::config();
    config.server.handshake_timeout = 30;
    let server = common::start(config);
    let addr = server.local_addr();
    // One says nothing, one sends half a request head, one is upgraded and connected.
    let silent = std::net::TcpStream::connect(addr).unwrap();
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut connected = Client::connect(addr);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    assert!(matches!(connected.frame(), Frame::Close(Some(4200), _)));
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with handshakes pending (handshake timeout 30 s)",
        started.elapsed()
    );
    drop((silent, half));
}

#[test]
fn a_paced_drain_closes_connections_over_time_not_at_once() {
    // 100 closes a second per shard: one connection every 10 ms on each shard.
    let mut config = common::config();
    config.server.drain_rate = 100;
    let server = common::start(config);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(addr)).collect();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    let mut closed_at = Vec::new();
    for client in &mut clients {
        let frame = client.frame();
        assert!(matches!(&frame, Frame::Close(Some(4200), _)), "{frame:?}");
        closed_at.push(started.elapsed());
        let _ = client.try_send_raw(&common::masked(CLOSE, true, &4200u16.to_be_bytes()));
    }
    stopper.join().unwrap();
    // 20 connections on 2 shards at one per 10 ms each: the last close comes at least ~90 ms
    // after the start (all at once, it came within a few milliseconds).
    let last = closed_at.iter().max().unwrap();
    assert!(
        *last >= Duration::from_millis(80),
        "every client was closed by {last:?}"
    );
}
