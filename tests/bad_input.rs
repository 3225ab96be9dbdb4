//! Bad input on every layer: Pusher messages the server does not understand (answered with
//! `pusher:error`, the socket stays open), WebSocket framing violations (closed with the RFC 6455
//! code), and HTTP garbage (400 and close). After each, the server still serves new clients.

mod common;

use common::{
    assert_server_healthy, encode_frame, masked, Client, Frame, BINARY, CLOSE, CONTINUATION, PING,
    TEXT,
};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;

/// Sends `text` and expects a `pusher:error` with code null; the socket stays usable.
fn assert_error_and_open(client: &mut Client, text: &[u8]) {
    client.send_frame(TEXT, true, text);
    let error = client.expect_error();
    assert!(
        error["code"].is_null(),
        "{:?}: {error}",
        String::from_utf8_lossy(text)
    );
    client.ping_pong();
}

#[test]
fn malformed_messages_get_pusher_error_and_the_socket_stays_open() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    client.subscribe("before");
    for text in [
        "{not json",
        "",
        "null",
        "42",
        "\"pusher:ping\"",
        "[]",
        r#"[{"event":"pusher:ping"}]"#,
        r#"{"data":{}}"#,
        r#"{"event":5}"#,
        r#"{"event":null}"#,
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{"auth":""}}"#,
        r#"{"event":"pusher:unsubscribe"}"#,
        "{\"event\":\"pusher:ping\"} trailing",
    ] {
        assert_error_and_open(&mut client, text.as_bytes());
    }
    // The subscription made before is intact.
    client.send_subscribe("before", Some(""), None);
    assert_eq!(
        client.expect_error()["message"],
        "Existing subscription to channel before"
    );
    drop(client);
    assert_server_healthy(addr);
}

#[test]
fn unknown_events_get_pusher_error() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    for event in [
        "hello",
        "pusher:unknown",
        "pusher_internal:subscription_succeeded",
        "my-event",
    ] {
        client.send_json(&json!({"event": event, "channel": "c", "data": {}}));
        let error = client.expect_error();
        assert!(error["code"].is_null(), "{event}: {error}");
        assert_eq!(
            error["message"],
            format!("Unsupported event received on socket: '{event}'")
        );
        client.ping_pong();
    }
}

#[test]
fn binary_frames_get_pusher_error_and_the_socket_stays_open() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    client.send_frame(BINARY, true, b"\x00\x01\x02");
    let error = client.expect_error();
    assert!(error["code"].is_null(), "{error}");
    client.ping_pong();
    // Also when the JSON is valid and fragmented.
    let ping = br#"{"event":"pusher:ping","data":{}}"#;
    client.send_frame(BINARY, false, &ping[..10]);
    client.send_frame(CONTINUATION, true, &ping[10..]);
    client.expect_error();
    client.ping_pong();
    drop(client);
    assert_server_healthy(addr);
}

#[test]
fn fragmented_text_messages_are_reassembled_around_control_frames() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    let ping = br#"{"event":"pusher:ping","data":{}}"#;
    let mut bytes = masked(TEXT, false, &ping[..5]);
    bytes.extend(masked(CONTINUATION, false, &ping[5..12]));
    bytes.extend(masked(PING, true, b"mid"));
    bytes.extend(masked(CONTINUATION, true, &ping[12..]));
    client.send_raw(&bytes);
    assert_eq!(client.frame(), Frame::Pong(b"mid".to_vec()));
    assert_eq!(client.recv(), json!({"event": "pusher:pong", "data": "{}"}));
    // A frame split over many writes.
    let frame = masked(TEXT, true, ping);
    for byte in frame {
        client.send_raw(&[byte]);
    }
    assert_eq!(client.recv(), json!({"event": "pusher:pong", "data": "{}"}));
    // A multi-byte character split between fragments.
    let text = r#"{"event":"☃"}"#.as_bytes();
    let cut = text.iter().position(|&b| b >= 0x80).unwrap() + 1;
    client.send_frame(TEXT, false, &text[..cut]);
    client.send_frame(CONTINUATION, true, &text[cut..]);
    assert_eq!(
        client.expect_error()["message"],
        "Unsupported event received on socket: '☃'"
    );
}

/// Sends `bytes` on a fresh connection and expects a close frame with `code`.
fn assert_closed_with(addr: std::net::SocketAddr, bytes: &[u8], code: u16) {
    let mut client = Client::connect(addr);
    client.send_raw(bytes);
    let (got, reason) = client.expect_close();
    assert_eq!(got, Some(code), "reason: {reason}");
}

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let server = common::start_default();
    let addr = server.local_addr();
    assert_closed_with(addr, &masked(TEXT, true, b"{\"event\":\"\xff\xfe\"}"), 1007);
    // Invalid only once the fragments are joined (a truncated sequence at the end).
    let mut bytes = masked(TEXT, false, b"{\"event\":\"");
    bytes.extend(masked(CONTINUATION, true, b"\xe2\x98"));
    assert_closed_with(addr, &bytes, 1007);
    // Overlong encoding and a surrogate.
    assert_closed_with(addr, &masked(TEXT, true, b"\xc0\xaf"), 1007);
    assert_closed_with(addr, &masked(TEXT, true, b"\xed\xa0\x80"), 1007);
    assert_server_healthy(addr);
}

#[test]
fn messages_over_max_message_bytes_are_closed_with_1009() {
    let mut config = common::config();
    config.server.max_message_bytes = 4096;
    config.server.send_queue_bytes = 1 << 20;
    let server = common::start(config);
    let addr = server.local_addr();
    // A single frame over the limit (the header alone decides).
    let big = vec![b'a'; 5000];
    assert_closed_with(addr, &masked(TEXT, true, &big), 1009);
    // Only the header of a huge frame: refused without waiting for the payload.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    assert_closed_with(addr, &header, 1009);
    // Fragments each under the limit whose sum is over it.
    let mut bytes = masked(TEXT, false, &big[..3000]);
    bytes.extend(masked(CONTINUATION, true, &big[..3000]));
    assert_closed_with(addr, &bytes, 1009);
    // Exactly the limit is fine (and answered: it is not valid JSON).
    let mut client = Client::connect(addr);
    client.send_frame(TEXT, true, &vec![b' '; 4096]);
    client.expect_error();
    client.ping_pong();
    assert_server_healthy(addr);
}

#[test]
fn framing_violations_are_closed_with_1002() {
    let server = common::start_default();
    let addr = server.local_addr();
    let ping = br#"{"event":"pusher:ping","data":{}}"#;
    // Unmasked client frame.
    assert_closed_with(addr, &encode_frame(TEXT, true, ping, None), 1002);
    // Reserved bits.
    let mut rsv = masked(TEXT, true, ping);
    rsv[0] |= 0x40;
    assert_closed_with(addr, &rsv, 1002);
    // Reserved opcodes (data and control).
    assert_closed_with(addr, &masked(0x3, true, b"x"), 1002);
    assert_closed_with(addr, &masked(0xB, true, b"x"), 1002);
    // Continuation with no message started.
    assert_closed_with(addr, &masked(CONTINUATION, true, b"x"), 1002);
    // A new data frame inside a fragmented message.
    let mut bytes = masked(TEXT, false, b"{");
    bytes.extend(masked(TEXT, true, b"}"));
    assert_closed_with(addr, &bytes, 1002);
    // Fragmented control frame, and a control frame over 125 bytes.
    assert_closed_with(addr, &masked(PING, false, b"x"), 1002);
    assert_closed_with(addr, &masked(PING, true, &[b'p'; 126]), 1002);
    assert_server_healthy(addr);
}

#[test]
fn frames_after_a_close_frame_are_ignored() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    let mut bytes = masked(CLOSE, true, &1000u16.to_be_bytes());
    bytes.extend(masked(TEXT, true, br#"{"event":"pusher:ping","data":{}}"#));
    client.send_raw(&bytes);
    let (code, _) = client.expect_close();
    assert_eq!(code, Some(1000));
}

#[test]
fn garbage_instead_of_an_http_request_gets_400_and_close() {
    let server = common::start_default();
    let addr = server.local_addr();
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        b"hello there\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x00\x00\x00\x00\r\n\r\n",
    ] {
        let response = common::raw_exchange(addr, garbage);
        let response = common::parse_http_response(&response);
        assert_eq!(response.status, 400, "{garbage:?}: {response:?}");
    }
    // A TLS ClientHello without a blank line: still refused, not left hanging.
    let response = common::raw_exchange(addr, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert_eq!(common::parse_http_response(&response).status, 400);
    assert_server_healthy(addr);
}

#[test]
fn oversized_request_heads_get_431_and_close() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut request = b"GET /app/app-key HTTP/1.1\r\nX-Filler: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 10_000));
    request.extend_from_slice(b"\r\n\r\n");
    let response = common::raw_exchange(addr, &request);
    assert_eq!(common::parse_http_response(&response).status, 431);
    assert_server_healthy(addr);
}

#[test]
fn health_is_200_and_other_plain_requests_are_answered() {
    let server = common::start_default();
    let addr = server.local_addr();
    let response = common::raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let response = common::parse_http_response(&response);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "OK");
    let response = common::raw_exchange(addr, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(common::parse_http_response(&response).status, 200);
    let response = common::raw_exchange(addr, b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(common::parse_http_response(&response).status, 200);
    let response = common::raw_exchange(addr, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(common::parse_http_response(&response).status, 404);
    // The WebSocket path without an upgrade.
    let response = common::raw_exchange(
        addr,
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::parse_http_response(&response).status, 400);
    assert_server_healthy(addr);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = common::start_default();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let bytes = common::read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
}

#[test]
fn bad_upgrade_requests_are_refused_with_http_errors() {
    let server = common::start_default();
    let addr = server.local_addr();
    let cases: [(&[u8], u16); 2] = [
        (
            b"GET /app/app-key HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
        ),
        (
            b"POST /app/app-key HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            405,
        ),
    ];
    for (request, status) in cases {
        let response = common::raw_exchange(addr, request);
        assert_eq!(
            common::parse_http_response(&response).status,
            status,
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    assert_server_healthy(addr);
}

#[test]
fn a_client_that_hangs_up_mid_message_does_not_disturb_others() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr);
    bystander.subscribe_private("private-calm");
    for cut in [1, 2, 6, 20] {
        let mut client = Client::connect(addr);
        client.subscribe_private("private-calm");
        let frame = masked(
            TEXT,
            true,
            br#"{"event":"client-x","channel":"private-calm","data":{}}"#,
        );
        client.send_raw(&frame[..cut]);
        client.abort();
    }
    bystander.expect_quiet();
    bystander.ping_pong();
    assert_server_healthy(addr);
}
