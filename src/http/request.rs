//! The HTTP/1.1 request head that opens every connection, parsed with httparse: the parts
//! routing needs, for a plain HTTP request or a WebSocket upgrade alike. Framing is strict
//! (RFC 7230 §3.3): one `Content-Length` value, never with `Transfer-Encoding`.
/// Largest request head accepted, in bytes; beyond it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most headers in one request head.
const MAX_HEADERS: usize = 64;

/// The parts of a request head that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string without the `?` (empty when absent).
    pub query: String,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// `Sec-WebSocket-Key` when the request asks for a WebSocket upgrade.
    pub websocket_key: Option<String>,
    /// `Sec-WebSocket-Version`, when given.
    pub websocket_version: Option<String>,
    /// `X-Real-IP`, when given.
    pub real_ip: Option<String>,
    /// The last (nearest) address of `X-Forwarded-For`, when given.
    pub forwarded_for: Option<String>,
    /// `Content-Length`, when given and valid.
    pub content_length: Option<usize>,
    /// Whether the client asked to close after this request (`Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub wants_close: bool,
}

impl RequestHead {
    /// Whether this is a WebSocket upgrade request (`Upgrade: websocket` with a key).
    pub fn is_websocket(&self) -> bool {
        self.websocket_key.is_some()
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted proxy, the address it
    /// reports (`X-Real-IP`, else the nearest `X-Forwarded-For` entry).
    pub fn client_ip(
        &self,
        peer: std::net::IpAddr,
        trusted_proxies: &[std::net::IpAddr],
    ) -> std::net::IpAddr {
        if !trusted_proxies.contains(&peer) {
            return peer;
        }
        [&self.real_ip, &self.forwarded_for]
            .into_iter()
            .flatten()
            .find_map(|v| v.parse().ok())
            .unwrap_or(peer)
    }

    /// The value of query parameter `name`, undecoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Why a request head was refused; `status` is the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    /// HTTP status code.
    pub status: u16,
    /// Plain-text explanation.
    pub message: &'static str,
}

impl HeadError {
    /// Headers the refusal must carry besides the body's: a 426 from this module always means
    /// an unsupported WebSocket version, and RFC 6455 §4.2.2 has it name the one spoken.
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.status {
            426 => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

/// Parses a request head from the front of `buf`. `Ok(None)` means more bytes are needed; on
/// success the head's length in bytes is returned with it.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    // Only the first MAX_HEAD_BYTES can hold the head, so only they are parsed: the answer
    // (a head, 400 for a bad byte, 431 for no end in sight) is then the same however the bytes
    // were cut into reads, not 400 or 431 depending on whether a bad byte past the limit
    // arrived in the same read.
    let status = request
        .parse(&buf[..buf.len().min(MAX_HEAD_BYTES)])
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => HeadError {
                status: 431,
                message: "Too many request headers",
            },
            _ => HeadError {
                status: 400,
                message: "Malformed HTTP request",
            },
        })?;
    let length = match status {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError {
                status: 431,
                message: "Request head too large",
            })
        }
        httparse::Status::Partial => return Ok(None),
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method: request.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        minor_version: request.version.unwrap_or(1),
        websocket_key: None,
        websocket_version: None,
        real_ip: None,
        forwarded_for: None,
        content_length: None,
        wants_close: request.version == Some(0),
    };
    let mut upgrade_websocket = false;
    let mut websocket_keys = 0;
    let mut transfer_encoding = false;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value).trim().to_string();
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            websocket_keys += 1;
            head.websocket_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.websocket_version = Some(value);
        } else if name.eq_ignore_ascii_case("x-real-ip") {
            head.real_ip = Some(value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            head.forwarded_for = value.rsplit(',').next().map(|v| v.trim().to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = content_length(&value)?;
            // RFC 7230 §3.3.2 lets a recipient accept repeats of one value as that value; they
            // frame the body the same way for every reader, so only differing values are refused
            // (§3.3.3: they would let a proxy and this server split the stream differently).
            if head.content_length.is_some_and(|seen| seen != length) {
                return Err(HeadError {
                    status: 400,
                    message: "Conflicting Content-Length headers",
                });
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let lower = value.to_ascii_lowercase();
            if lower.contains("close") {
                head.wants_close = true;
            } else if lower.contains("keep-alive") {
                head.wants_close = false;
            }
        }
    }
    if transfer_encoding {
        return Err(transfer_encoding_refusal(head.content_length.is_some()));
    }
    if !upgrade_websocket {
        head.websocket_key = None;
    } else if websocket_keys > 1 {
        return Err(HeadError {
            status: 400,
            message: "Duplicate Sec-WebSocket-Key header",
        });
    }
    Ok(Some((head, length)))
}

/// A `Content-Length` value: plain decimal digits only (RFC 7230 §3.3.2), so that `+5`, `5, 5`,
/// `0x5` or an empty value is refused rather than read one way here and another by a proxy.
fn content_length(value: &str) -> Result<usize, HeadError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError {
            status: 400,
            message: "Invalid Content-Length: expected a decimal number",
        });
    }
    // Only digits, so the one way to fail is a number beyond usize: far over any body limit.
    value.parse().map_err(|_| HeadError {
        status: 413,
        message: "Request body too large",
    })
}

/// The answer to a request with `Transfer-Encoding`. Every Pusher SDK sends `Content-Length`;
/// refusing other framings outright (and closing) means a body can never be mistaken for the
/// next request. With `Content-Length` as well the request is ambiguous (RFC 7230 §3.3.3: the
/// classic request-smuggling shape), so it is a 400 rather than "not implemented".
fn transfer_encoding_refusal(with_content_length: bool) -> HeadError {
    if with_content_length {
        HeadError {
            status: 400,
            message: "Content-Length and Transfer-Encoding together are ambiguous",
        }
    } else {
        HeadError {
            status: 501,
            message: "Transfer-Encoding is not supported: send the body with Content-Length",
        }
    }
}
