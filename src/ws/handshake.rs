//! The WebSocket upgrade: checks the WebSocket-specific parts of a request head (parsed by
//! [`crate::http::request`]) and builds the `101 Switching Protocols` answer.

use crate::http::request::{HeadError, RequestHead};

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of exactly 16 bytes (RFC 6455 §4.2.1).
fn valid_websocket_key(key: &str) -> bool {
    data_encoding::BASE64
        .decode(key.as_bytes())
        .is_ok_and(|nonce| nonce.len() == 16)
}

/// Checks the WebSocket-specific parts of an upgrade request and builds the `101` answer.
pub fn accept_upgrade(head: &RequestHead) -> Result<Vec<u8>, HeadError> {
    if head.method != "GET" {
        return Err(HeadError {
            status: 405,
            message: "WebSocket upgrades must use GET",
        });
    }
    if head.websocket_version.as_deref() != Some("13") {
        return Err(HeadError {
            status: 426,
            message: "Unsupported WebSocket version (Sec-WebSocket-Version: 13 is required)",
        });
    }
    let key = head.websocket_key.as_deref().unwrap_or_default();
    if !valid_websocket_key(key) {
        return Err(HeadError {
            status: 400,
            message: "Invalid Sec-WebSocket-Key: expected 16 bytes in base64",
        });
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_request_head, MAX_HEAD_BYTES};

    const UPGRADE: &[u8] = b"GET /app/app-key?protocol=7&client=js&version=8.4.0&flash=false HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn parses_an_upgrade_and_answers_with_the_rfc_accept_key() {
        let (head, len) = parse_request_head(UPGRADE).unwrap().unwrap();
        assert_eq!(len, UPGRADE.len());
        assert!(head.is_websocket());
        assert_eq!(head.path, "/app/app-key");
        assert_eq!(head.query_param("protocol"), Some("7"));
        assert_eq!(head.query_param("flash"), Some("false"));
        assert_eq!(head.query_param("missing"), None);
        let answer = String::from_utf8(accept_upgrade(&head).unwrap()).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let with_headers = b"GET /app/k HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 203.0.113.7\r\n\r\n";
        let (head, _) = parse_request_head(with_headers).unwrap().unwrap();
        let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(head.client_ip(proxy, &[proxy]).to_string(), "203.0.113.7");
        assert_eq!(head.client_ip(other, &[proxy]), other);
        let real =
            b"GET / HTTP/1.1\r\nX-Real-IP: 198.51.100.2\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
        let (head, _) = parse_request_head(real).unwrap().unwrap();
        assert_eq!(head.client_ip(proxy, &[proxy]).to_string(), "198.51.100.2");
    }

    #[test]
    fn partial_heads_wait_and_oversized_heads_are_refused() {
        assert_eq!(parse_request_head(&UPGRADE[..20]).unwrap(), None);
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(parse_request_head(&huge).unwrap_err().status, 431);
        // Found by tests/fuzz_http.rs: a head just over the limit that arrives whole.
        let mut whole = b"GET / HTTP/1.1\r\nX: ".to_vec();
        whole.resize(MAX_HEAD_BYTES - 4, b'a');
        whole.extend_from_slice(b"\r\n\r\n");
        assert!(parse_request_head(&whole).unwrap().is_some());
        whole.insert(20, b'a');
        assert_eq!(parse_request_head(&whole).unwrap_err().status, 431);
        // Found by the same fuzzer: a bad byte just past the limit made it 400 when it arrived
        // in the same read, 431 otherwise.
        let mut late_garbage = b"GET / HTTP/1.1\r\nX: ".to_vec();
        late_garbage.resize(MAX_HEAD_BYTES + 1, b'a');
        late_garbage.push(0);
        assert_eq!(parse_request_head(&late_garbage).unwrap_err().status, 431);
    }

    #[test]
    fn garbage_and_plain_requests() {
        assert_eq!(
            parse_request_head(b"\x16\x03\x01\x00garbage\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let (head, _) = parse_request_head(b"GET /health HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.is_websocket());
        assert!(head.wants_close);
        let no_version =
            String::from_utf8_lossy(UPGRADE).replace("Sec-WebSocket-Version: 13\r\n", "");
        let (head, _) = parse_request_head(no_version.as_bytes()).unwrap().unwrap();
        let refusal = accept_upgrade(&head).unwrap_err();
        assert_eq!(refusal.status, 426);
        assert_eq!(
            refusal.response_headers(),
            &[("Sec-WebSocket-Version", "13")]
        );
    }

    fn status_of(head: &str) -> Result<Option<usize>, u16> {
        parse_request_head(head.as_bytes())
            .map(|parsed| parsed.unwrap().0.content_length)
            .map_err(|e| e.status)
    }

    #[test]
    fn body_framing_must_be_unambiguous() {
        let post = "POST /apps/1/events HTTP/1.1\r\n";
        assert_eq!(
            status_of(&format!("{post}Content-Length: 5\r\n\r\n")),
            Ok(Some(5))
        );
        assert_eq!(
            status_of(&format!(
                "{post}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
            )),
            Ok(Some(5))
        );
        for (headers, status) in [
            ("Content-Length: 5\r\nContent-Length: 50\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: 5, 5\r\n", 400),
            ("Content-Length: 0x5\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length:\r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 413),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
            ("Transfer-Encoding: chunked\r\n", 501),
        ] {
            assert_eq!(
                status_of(&format!("{post}{headers}\r\n")),
                Err(status),
                "{headers}"
            );
        }
    }

    #[test]
    fn websocket_keys_must_be_single_and_16_bytes() {
        let upgrade = String::from_utf8_lossy(UPGRADE).to_string();
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let twice = upgrade.replace(key, &format!("{key}{key}"));
        assert_eq!(
            parse_request_head(twice.as_bytes()).unwrap_err().status,
            400
        );
        for bad in [
            "",
            "not base64!",
            "dGhlIHNhbXBsZQ==",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ",
        ] {
            let request = upgrade.replace(key, &format!("Sec-WebSocket-Key: {bad}\r\n"));
            let (head, _) = parse_request_head(request.as_bytes()).unwrap().unwrap();
            assert_eq!(accept_upgrade(&head).unwrap_err().status, 400, "{bad:?}");
        }
    }
}
