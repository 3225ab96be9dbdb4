//! Delivery at scale and under pressure: a channel large enough that each shard fans out in
//! batches, frames pipelined behind the upgrade request, cross-app isolation, and a consumer that
//! stops reading (its send queue overflows: it is closed with 4100, cleanly framed, and nobody
//! else is disturbed).

mod common;

use common::{Client, Frame, ReadError, TEXT};
use serde_json::json;
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn a_large_channel_receives_every_event_in_order_on_both_shards() {
    let server = common::start_default();
    let addr = server.local_addr();
    // More than 256 subscribers per shard, so the batched (yielding) fan-out path runs.
    let mut receivers: Vec<Client> = Vec::new();
    let mut per_shard = [0usize; 2];
    while per_shard.iter().any(|&n| n < 300) {
        let mut client = Client::connect(addr);
        per_shard[client.shard()] += 1;
        client.subscribe_private("private-crowd");
        receivers.push(client);
        assert!(
            receivers.len() < 2000,
            "connections do not spread: {per_shard:?}"
        );
    }
    let mut sender = Client::connect_on_shard(addr, 0);
    sender.subscribe_private("private-crowd");
    for i in 0..5 {
        sender.trigger("client-wave", "private-crowd", Some(json!({"i": i})));
    }
    for receiver in &mut receivers {
        for i in 0..5 {
            let got = receiver.recv();
            assert_eq!(
                got,
                json!({"event": "client-wave", "channel": "private-crowd", "data": format!("{{\"i\":{i}}}")}),
                "socket {} on shard {}",
                receiver.socket_id,
                receiver.shard()
            );
        }
    }
    sender.expect_quiet();
    receivers[0].expect_quiet();
}

#[test]
fn frames_pipelined_behind_the_upgrade_request_are_processed() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut extra = common::masked(TEXT, true, br#"{"event":"pusher:ping","data":{}}"#);
    extra.extend(common::masked(
        TEXT,
        true,
        br#"{"event":"pusher:subscribe","data":{"channel":"early"}}"#,
    ));
    let stream = TcpStream::connect(addr).unwrap();
    let mut client = Client::upgrade_stream(stream, common::DEFAULT_PATH, &extra);
    // connection_established still comes first.
    client.expect_established();
    assert_eq!(client.recv(), json!({"event": "pusher:pong", "data": "{}"}));
    client.expect_subscribed("early");
}

#[test]
fn channels_of_different_apps_are_separate() {
    let mut config = common::config();
    config
        .apps
        .push(common::extra_app(&config, "2", "key-two", "secret-two"));
    let server = common::start(config);
    let addr = server.local_addr();
    let mut one_sender = Client::connect(addr);
    let mut one_receiver = Client::connect(addr);
    let mut two = Client::connect_path(addr, "/app/key-two?protocol=7");
    one_sender.subscribe_private("private-same");
    one_receiver.subscribe_private("private-same");
    two.subscribe_private_with("key-two", "secret-two", "private-same");
    one_sender.trigger("client-a", "private-same", Some(json!(1)));
    assert_eq!(one_receiver.recv()["event"], "client-a");
    two.expect_quiet();
    two.trigger("client-b", "private-same", Some(json!(2)));
    one_sender.expect_quiet();
    one_receiver.expect_quiet();
}

/// A client whose receive buffer is tiny, so the server's send queue fills quickly.
fn slow_client(addr: SocketAddr) -> Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut client = Client::upgrade_stream(socket.into(), common::DEFAULT_PATH, &[]);
    client.expect_established();
    client
}

fn slow_consumer_setup() -> warren::server::ServerHandle {
    let mut config = common::config();
    config.server.send_queue_bytes = 64 * 1024;
    config.server.shutdown_grace = 5;
    config.apps[0].max_client_events_per_second = 1_000_000;
    config.apps[0].max_event_payload_bytes = 60_000;
    common::start(config)
}

/// Blasts ~`total` bytes of client events on `channel`; the healthy receiver reads them as they
/// come. Returns how many events were sent.
fn blast(sender: &mut Client, healthy: &mut Client, channel: &str, total: usize) -> usize {
    let chunk = "x".repeat(40_000);
    let count = total / chunk.len();
    for i in 0..count {
        sender.trigger("client-blob", channel, Some(json!(format!("{i}:{chunk}"))));
        let got = healthy.recv();
        assert!(
            got["data"].as_str().unwrap().starts_with(&format!("{i}:")),
            "event {i} out of order"
        );
    }
    count
}

#[test]
fn a_consumer_that_stops_reading_is_closed_with_4100_and_others_are_unaffected() {
    let server = slow_consumer_setup();
    let addr = server.local_addr();
    let channel = "private-firehose";
    let mut slow = slow_client(addr);
    let mut sender = Client::connect(addr);
    let mut healthy = Client::connect(addr);
    for c in [&mut slow, &mut sender, &mut healthy] {
        c.subscribe_private(channel);
    }
    // 12 MB: more than any kernel buffering between the server and the stalled reader.
    let sent = blast(&mut sender, &mut healthy, channel, 12 << 20);
    sender.expect_quiet();
    healthy.ping_pong();
    sender.ping_pong();

    // The stalled reader now reads what it was sent: whole, valid frames, in order, ending with
    // a close frame 4100 (within the 5 s grace the server gives the close handshake).
    let mut events = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let close = loop {
        assert!(
            Instant::now() < deadline,
            "never closed after {events} events"
        );
        match slow.try_frame(common::WAIT) {
            Ok(Frame::Text(text)) => {
                let message: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("event {events} is not JSON ({e})"));
                assert!(
                    message["data"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{events}:")),
                    "event {events} missing or out of order"
                );
                events += 1;
            }
            Ok(Frame::Close(code, reason)) => break (code, reason),
            Ok(other) => panic!("unexpected {other:?} after {events} events"),
            Err(e) => {
                let rest = slow.pending_bytes();
                let tail = &rest[rest.len().saturating_sub(32)..];
                let close_at = rest
                    .windows(4)
                    .position(|w| w[0] == 0x88 && w[2..4] == [0x10, 0x04]);
                panic!(
                    "after {events} whole events the stream ended without a close frame ({e:?}); \
                     {} bytes of an unfinished frame were left, starting {:02x?}, ending {:02x?} \
                     ({:?}); a close frame 4100 header sits at offset {close_at:?} inside it",
                    rest.len(),
                    &rest[..rest.len().min(8)],
                    tail,
                    String::from_utf8_lossy(tail)
                )
            }
        }
    };
    assert_eq!(close.0, Some(4100), "close reason {:?}", close.1);
    assert!(
        events < sent,
        "the slow consumer got all {sent} events: it was never over budget"
    );
    match slow.try_frame(common::WAIT) {
        Err(ReadError::Eof) => {}
        other => panic!("expected EOF after the close, got {other:?}"),
    }
    common::assert_server_healthy(addr);
}

#[test]
fn a_reader_that_pauses_within_its_budget_gets_every_queued_event_in_order() {
    let mut config = common::config();
    config.server.send_queue_bytes = 16 << 20;
    config.apps[0].max_client_events_per_second = 1_000_000;
    let server = common::start(config);
    let addr = server.local_addr();
    let channel = "private-pause";
    let mut paused = slow_client(addr);
    let mut sender = Client::connect(addr);
    let mut healthy = Client::connect(addr);
    for c in [&mut paused, &mut sender, &mut healthy] {
        c.subscribe_private(channel);
    }
    // ~7 MB of small events while `paused` reads nothing: more than the kernel buffers between
    // them (tcp_wmem's 4 MiB at most), so thousands of frames wait in its send queue (under the
    // 16 MiB budget) and go out in vectored writes, some of them stopping mid-frame, once it
    // reads again.
    let pad = "y".repeat(697);
    let count = 10_000;
    for i in 0..count {
        sender.trigger("client-small", channel, Some(json!(format!("{i}:{pad}"))));
        let got = healthy.recv();
        assert!(got["data"].as_str().unwrap().starts_with(&format!("{i}:")));
    }
    healthy.ping_pong();
    for i in 0..count {
        let got = paused.recv();
        assert_eq!(
            got["data"].as_str().unwrap(),
            format!("{i}:{pad}"),
            "event {i} missing, out of order or damaged"
        );
    }
    paused.expect_quiet();
    paused.ping_pong();
}

#[test]
fn a_dead_consumer_does_not_hold_up_shutdown_or_others() {
    let server = slow_consumer_setup();
    let addr = server.local_addr();
    let channel = "private-deadend";
    let mut dead = slow_client(addr);
    let mut sender = Client::connect(addr);
    let mut healthy = Client::connect(addr);
    for c in [&mut dead, &mut sender, &mut healthy] {
        c.subscribe_private(channel);
    }
    let started = Instant::now();
    blast(&mut sender, &mut healthy, channel, 8 << 20);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fan-out slowed down by a dead reader: {:?}",
        started.elapsed()
    );
    healthy.ping_pong();
    // The dead reader never reads; the server must still stop within its grace period.
    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(dead);
}
