//! Strict HTTP framing and WebSocket upgrade (RFC 7230 §3.3.3, RFC 6455 §4.2, §5.5.1, §7.4),
//! over real sockets with raw bytes: a request whose body length is ambiguous is refused with
//! 400 before anything in it can be read as a second request (request smuggling behind a
//! proxy), a bad `Sec-WebSocket-Key` is refused, the 426 names the version spoken, and a close
//! frame with a reason that is not UTF-8 or a code that may not be sent fails the connection.
//! After each, the server still serves the next client.

mod common;

use common::{assert_server_healthy, masked, parse_http_response, raw_exchange, Client, CLOSE};
use std::net::SocketAddr;

/// Sends `request` alone on a connection; returns every status line the server answered with
/// and the first response.
fn exchange(addr: SocketAddr, request: &str) -> (Vec<u16>, common::HttpResponse) {
    let bytes = raw_exchange(addr, request.as_bytes());
    let text = String::from_utf8_lossy(&bytes);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| text[at + 9..at + 12].parse().unwrap())
        .collect();
    (statuses, parse_http_response(&bytes))
}

#[test]
fn conflicting_content_lengths_are_refused_and_the_body_is_never_a_request() {
    let server = common::start_default();
    let addr = server.local_addr();
    // Before: the last Content-Length (0) won and the "body" was answered as a second request.
    let smuggling = "GET /health HTTP/1.1\r\nContent-Length: 35\r\nContent-Length: 0\r\n\r\n\
                     GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    let (statuses, response) = exchange(addr, smuggling);
    assert_eq!(statuses, vec![400], "{response:?}");
    assert_eq!(response.body, "Conflicting Content-Length headers");
    assert_eq!(response.header("connection"), Some("close"));
    // The same value twice frames the body one way for everyone: accepted.
    let (statuses, _) = exchange(
        addr,
        "GET /health HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    );
    assert_eq!(statuses, vec![200]);
    assert_server_healthy(addr);
}

#[test]
fn content_length_must_be_plain_decimal() {
    let server = common::start_default();
    let addr = server.local_addr();
    for (value, status) in [
        ("+2", 400),
        ("2, 2", 400),
        ("0x2", 400),
        ("-1", 400),
        ("2 2", 400),
        ("", 400),
        ("99999999999999999999999", 413),
    ] {
        let request = format!(
            "GET /health HTTP/1.1\r\nContent-Length: {value}\r\n\r\nabGET /nope HTTP/1.1\r\n\r\n"
        );
        let (statuses, response) = exchange(addr, &request);
        assert_eq!(statuses, vec![status], "{value:?}: {response:?}");
    }
    assert_server_healthy(addr);
}

#[test]
fn content_length_with_transfer_encoding_is_a_400_and_transfer_encoding_alone_a_501() {
    let server = common::start_default();
    let addr = server.local_addr();
    let chunked_body = "0\r\n\r\nGET /nope HTTP/1.1\r\n\r\n";
    for headers in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let (statuses, response) = exchange(
            addr,
            &format!("POST /apps/app-id/events HTTP/1.1\r\n{headers}\r\n{chunked_body}"),
        );
        assert_eq!(statuses, vec![400], "{headers:?}: {response:?}");
    }
    let (statuses, response) = exchange(
        addr,
        &format!(
            "POST /apps/app-id/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"
        ),
    );
    assert_eq!(statuses, vec![501], "{response:?}");
    assert_server_healthy(addr);
}

fn upgrade_request(key_headers: &str, version: &str) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         {key_headers}Sec-WebSocket-Version: {version}\r\n\r\n",
        common::DEFAULT_PATH
    )
}

#[test]
fn a_duplicate_or_malformed_websocket_key_is_refused_with_400() {
    let server = common::start_default();
    let addr = server.local_addr();
    let good = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let other = "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n";
    for keys in [
        format!("{good}{other}"),
        format!("{good}{good}"),
        "Sec-WebSocket-Key: not base64 at all\r\n".to_string(),
        // Base64, but of 11 and 17 bytes.
        "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n".to_string(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=\r\n".to_string(),
        "Sec-WebSocket-Key: \r\n".to_string(),
    ] {
        let (statuses, response) = exchange(addr, &upgrade_request(&keys, "13"));
        assert_eq!(statuses, vec![400], "{keys:?}: {response:?}");
    }
    // The valid key is still upgraded.
    let bytes = raw_exchange_until_101(addr, &upgrade_request(good, "13"));
    assert!(bytes.starts_with("HTTP/1.1 101 "), "{bytes}");
    assert_server_healthy(addr);
}

/// Sends an upgrade and returns what arrived up to the end of the response head (the server
/// keeps an upgraded connection open, so this does not wait for EOF).
fn raw_exchange_until_101(addr: SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).to_string()
}

#[test]
fn the_426_for_a_wrong_version_names_version_13() {
    let server = common::start_default();
    let addr = server.local_addr();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for version in ["8", "14", ""] {
        let (statuses, response) = exchange(addr, &upgrade_request(key, version));
        assert_eq!(statuses, vec![426], "{version:?}: {response:?}");
        assert_eq!(
            response.header("sec-websocket-version"),
            Some("13"),
            "{response:?}"
        );
    }
    assert_server_healthy(addr);
}

#[test]
fn a_close_reason_that_is_not_utf8_fails_with_1007() {
    let server = common::start_default();
    let addr = server.local_addr();
    // Autobahn 7.5.1: code 1000, reason with an invalid byte.
    for reason in [
        &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"[..],
        b"bye\xff",
        b"\xc3",
    ] {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        let mut client = Client::connect(addr);
        client.send_raw(&masked(CLOSE, true, &payload));
        let (code, why) = client.expect_close();
        assert_eq!(code, Some(1007), "{reason:?}: {why}");
    }
    // A UTF-8 reason is fine: the close is echoed.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("fin ☃".as_bytes());
    let mut client = Client::connect(addr);
    client.send_raw(&masked(CLOSE, true, &payload));
    assert_eq!(client.expect_close().0, Some(1000));
    assert_server_healthy(addr);
}

#[test]
fn close_codes_that_may_not_be_sent_fail_with_1002() {
    let server = common::start_default();
    let addr = server.local_addr();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut client = Client::connect(addr);
        client.send_raw(&masked(CLOSE, true, &code.to_be_bytes()));
        let (got, why) = client.expect_close();
        assert_eq!(got, Some(1002), "{code}: {why}");
    }
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        let mut client = Client::connect(addr);
        client.send_raw(&masked(CLOSE, true, &code.to_be_bytes()));
        assert_eq!(client.expect_close().0, Some(code), "{code}");
    }
    assert_server_healthy(addr);
}
