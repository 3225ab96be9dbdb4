//! Fuzzing the HTTP request head parser (`http::request::parse_request_head`, which reads the
//! first bytes of every connection) and the body framing built on it: random bytes and
//! generated heads in random chunkings (never a panic, the same answer however the bytes
//! arrive), the Content-Length / Transfer-Encoding rules against a model, and pipelined
//! requests whose bodies hold things that look like requests (split exactly as sent, offline and
//! against a running server).

mod common;
mod fuzz_support;

use fuzz_support::{chunks, cuts};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::io::Write;
use std::net::TcpStream;
use warren::http::request::{self as request_head, parse_request_head, HeadError, RequestHead};
use warren::ws::handshake;

type Parsed = Result<Option<(RequestHead, usize)>, HeadError>;

/// What the connection task gets when the bytes arrive in `pieces`: it parses after every read
/// and stops at the first complete head or error.
fn parse_as_read(pieces: &[&[u8]]) -> Parsed {
    let mut buffered = Vec::new();
    for piece in pieces {
        buffered.extend_from_slice(piece);
        if buffered.is_empty() {
            continue;
        }
        match parse_request_head(&buffered) {
            Ok(None) => {}
            decided => return decided,
        }
    }
    Ok(None)
}

/// A header line the generator can put in a head.
fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z-]{1,12}: [ -~]{0,30}",
        Just("Host: example.com".to_string()),
        Just("Upgrade: websocket".to_string()),
        Just("Connection: Upgrade".to_string()),
        Just("Connection: close".to_string()),
        Just("Sec-WebSocket-Version: 13".to_string()),
        Just("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_string()),
        "Sec-WebSocket-Key: [A-Za-z0-9+/=]{0,30}",
        (0u32..2000).prop_map(|n| format!("Content-Length: {n}")),
        "Content-Length: [ -~]{0,8}",
        Just("Transfer-Encoding: chunked".to_string()),
        "X-Forwarded-For: [0-9., ]{0,30}",
        // Large enough, now and then, to cross the head size limit.
        (0usize..9000).prop_map(|n| format!("X-Filler: {}", "a".repeat(n))),
    ]
}

/// A request head: a request line (sometimes broken), headers, the blank line (sometimes
/// missing), and a few bytes after it.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => "(GET|POST|PUT) /[a-z/?=&0-9]{0,20} HTTP/1\\.[01]",
        1 => "[ -~]{0,30}",
    ];
    let end = prop_oneof![6 => Just("\r\n\r\n"), 1 => Just("\r\n"), 1 => Just("\n\n")];
    let tail = prop::collection::vec(any::<u8>(), 0..20);
    (line, prop::collection::vec(header(), 0..8), end, tail).prop_map(
        |(line, headers, end, tail)| {
            let mut text = line;
            for header in headers {
                text.push_str("\r\n");
                text.push_str(&header);
            }
            text.push_str(end);
            let mut bytes = text.into_bytes();
            bytes.extend(tail);
            bytes
        },
    )
}

/// What RFC 7230 §3.3.3 asks of a request with these `Content-Length` values (as sent) and
/// this many `Transfer-Encoding` headers: the length, or the refusal's status.
fn framing_model(lengths: &[String], transfer_encodings: usize) -> Result<Option<usize>, u16> {
    let mut seen: Option<usize> = None;
    for value in lengths {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(400);
        }
        let length: usize = value.parse().map_err(|_| 413u16)?;
        if seen.is_some_and(|s| s != length) {
            return Err(400);
        }
        seen = Some(length);
    }
    match (transfer_encodings, seen) {
        (0, length) => Ok(length),
        (_, Some(_)) => Err(400),
        (_, None) => Err(501),
    }
}

fn content_length_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..100).prop_map(|n| n.to_string()),
        1 => "[+-]?[0-9]{1,3}",
        1 => "[0-9]{1,3}, ?[0-9]{1,3}",
        1 => "0x[0-9a-f]{1,2}",
        1 => "[0-9]{20,25}",
        1 => " ?[0-9a-z ]{0,4}",
    ]
}

/// One plain request of a pipeline: method, path and a body that may look like a request.
fn pipelined_request() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        Just(b"GET /nope HTTP/1.1\r\n\r\n".to_vec()),
        Just(b"\r\n\r\nGET /nope HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
        "(GET|POST) /nope HTTP/1\\.1\r\n([A-Za-z]{1,5}: [a-z]{0,5}\r\n){0,3}\r\n"
            .prop_map(String::into_bytes),
    ];
    ("/[a-z]{0,10}", body, any::<bool>())
}

/// A request's bytes; `repeat_length` sends its Content-Length twice (same value).
fn request_bytes(path: &str, body: &[u8], repeat_length: bool) -> Vec<u8> {
    let length = format!("Content-Length: {}\r\n", body.len());
    let mut bytes = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{length}{}\r\n",
        if repeat_length { length.as_str() } else { "" }
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

proptest! {
    #![proptest_config(fuzz_support::config(300))]

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_matter(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cuts in cuts(),
    ) {
        prop_assert_eq!(parse_as_read(&chunks(&bytes, &cuts)), parse_as_read(&[&bytes]));
    }

    #[test]
    fn generated_heads_parse_the_same_however_they_arrive(bytes in head_bytes(), cuts in cuts()) {
        let whole = parse_as_read(&[&bytes]);
        prop_assert_eq!(parse_as_read(&chunks(&bytes, &cuts)), whole.clone());
        match whole {
            Ok(Some((head, length))) => {
                prop_assert!(length <= request_head::MAX_HEAD_BYTES, "{length}-byte head accepted");
                // An upgrade the parser let through is answered, refused with a status, never a
                // panic.
                if head.is_websocket() {
                    let _ = handshake::accept_upgrade(&head);
                }
            }
            Ok(None) => prop_assert!(bytes.len() < request_head::MAX_HEAD_BYTES),
            Err(error) => prop_assert!(matches!(error.status, 400 | 413 | 431 | 501), "{error:?}"),
        }
    }

    #[test]
    fn content_length_and_transfer_encoding_follow_rfc_7230(
        lengths in prop::collection::vec(content_length_value(), 0..4),
        transfer_encodings in 0usize..3,
        order in any::<bool>(),
    ) {
        let mut headers: Vec<String> =
            lengths.iter().map(|v| format!("Content-Length: {v}")).collect();
        let te = (0..transfer_encodings).map(|_| "Transfer-Encoding: chunked".to_string());
        if order { headers.extend(te) } else { headers.splice(0..0, te); }
        let request = format!("POST /apps/1/events HTTP/1.1\r\n{}\r\n\r\n", headers.join("\r\n"));
        let request = request.replace("\r\n\r\n\r\n", "\r\n\r\n");
        let got = parse_request_head(request.as_bytes())
            .map(|parsed| parsed.expect("a whole head").0.content_length)
            .map_err(|e| e.status);
        prop_assert_eq!(got, framing_model(&lengths, transfer_encodings), "{}", request);
    }

    #[test]
    fn pipelined_requests_split_exactly_as_sent(
        requests in prop::collection::vec(pipelined_request(), 1..6),
        cuts in cuts(),
    ) {
        let stream: Vec<u8> = requests
            .iter()
            .flat_map(|(path, body, repeat)| request_bytes(path, body, *repeat))
            .collect();
        // The connection task's loop: a head, then Content-Length bytes of body, then the next.
        let mut rest: &[u8] = &stream;
        for (path, body, _) in &requests {
            let (head, length) = parse_as_read(&chunks(rest, &cuts))
                .expect("a valid head")
                .expect("a whole head");
            prop_assert_eq!(&head.path, path);
            let body_length = head.content_length.unwrap_or(0);
            prop_assert_eq!(&rest[length..length + body_length], &body[..]);
            rest = &rest[length + body_length..];
        }
        prop_assert!(rest.is_empty());
    }
}

/// The same pipelines against a running server: exactly one `200` per request sent, never a
/// `404` from a request smuggled inside a body.
#[test]
fn a_running_server_answers_each_pipelined_request_once() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut runner = TestRunner::new(fuzz_support::config(24));
    let strategy = prop::collection::vec(pipelined_request(), 1..5);
    runner
        .run(&strategy, |requests| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            for (_, body, repeat) in &requests {
                stream
                    .write_all(&request_bytes("/health", body, *repeat))
                    .expect("write");
            }
            stream
                .write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
                .expect("write");
            let answer = common::read_to_close(&mut stream);
            let text = String::from_utf8_lossy(&answer);
            prop_assert_eq!(
                text.matches("HTTP/1.1 200 OK").count(),
                requests.len() + 1,
                "{}",
                text
            );
            prop_assert_eq!(text.matches("HTTP/1.1 ").count(), requests.len() + 1);
            Ok(())
        })
        .unwrap();
    common::assert_server_healthy(addr);
}
