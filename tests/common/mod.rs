//! Shared helpers for the integration tests: an in-process server with test-friendly settings, a
//! small synchronous WebSocket client written against the RFC (so that tests control every byte:
//! masking, fragmentation, when to answer pings), and Pusher helpers on top of it (auth
//! signatures, subscriptions, expected events, expected silence, close codes).
//!
//! Every helper that waits does so with a timeout and panics with what it saw instead, so a
//! missing or unexpected frame fails the test instead of hanging it.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use warren::config::{AppConfig, Config};
use warren::server::ServerHandle;

/// The embedded default app's credentials.
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

/// The path pusher-js would use (with this test client's name).
pub const DEFAULT_PATH: &str = "/app/app-key?protocol=7&client=test&version=1";

/// How long helpers wait for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// Shards per test server: two, so cross-shard paths are exercised.
pub const SHARDS: usize = 2;

/// Sends tracing output to the test's captured output (`RUST_LOG=warren=debug` to see it).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The embedded default configuration on 127.0.0.1, a free port, two shards, a short grace.
pub fn config() -> Config {
    let mut config = Config::embedded_default();
    config.server.bind = "127.0.0.1".into();
    config.server.port = 0;
    config.server.shards = SHARDS;
    config.server.shutdown_grace = 1;
    // Refusals are answered at once here; tests/damping.rs turns damping on.
    config.damping.refusal_delay_ms = 0;
    config
}

/// A copy of the default app with other credentials.
pub fn extra_app(config: &Config, id: &str, key: &str, secret: &str) -> AppConfig {
    let mut app = config.apps[0].clone();
    app.id = id.into();
    app.key = key.into();
    app.secret = secret.into();
    app
}

/// Starts a server with `config`.
pub fn start(config: Config) -> ServerHandle {
    init_logging();
    warren::server::start(config).expect("the server starts")
}

/// Starts a server with the default test configuration.
pub fn start_default() -> ServerHandle {
    start(config())
}

/// The `auth` value for a subscription: `"<key>:<hmac>"` over `socket_id:channel[:channel_data]`.
pub fn auth_for(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    data: Option<&str>,
) -> String {
    let to_sign = match data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{key}:{}", warren::auth::sign(secret, &to_sign))
}

/// Parses the `data` of a server message, which must be a JSON-encoded string.
pub fn data_of(message: &Value) -> Value {
    let text = message["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data is not a JSON string in {message}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("data is not JSON ({e}) in {message}"))
}

/// The shard that owns a socket id (its sequence part names it).
pub fn shard_of(socket_id: &str) -> usize {
    warren::protocol::SocketId::parse(socket_id)
        .unwrap_or_else(|| panic!("bad socket id {socket_id:?}"))
        .shard()
}

/// One WebSocket frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code (if any) and reason.
    Close(Option<u16>, String),
}

/// Why no frame was read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing complete arrived in time.
    Timeout,
    /// The server closed the TCP connection (or reset it).
    Eof,
    /// The server broke the framing rules.
    Bad(String),
}

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A client frame: masked unless `mask` is `None`.
pub fn encode_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame with a random mask.
pub fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    encode_frame(opcode, fin, payload, Some(rand::random()))
}

/// A connected WebSocket client.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    fragments: Option<(u8, Vec<u8>)>,
    /// The socket id from `pusher:connection_established` (empty until it arrived).
    pub socket_id: String,
    /// The `activity_timeout` from `pusher:connection_established`.
    pub activity_timeout: u64,
}

/// Writes the upgrade request for `path` and reads the `101` answer; returns the stream and the
/// bytes that followed the answer's head.
/// `extra` is written right behind the request, in the same write (pipelined frames).
fn upgrade(mut stream: TcpStream, path: &str, extra: &[u8]) -> (TcpStream, Vec<u8>) {
    stream.set_nodelay(true).unwrap();
    let key = tungstenite::handshake::client::generate_key();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(extra);
    stream.write_all(&request).expect("send upgrade");
    let (head, rest) = read_http_head(&mut stream);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(head.as_bytes())
        .expect("valid response head");
    assert_eq!(response.code, Some(101), "upgrade refused: {head}");
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| String::from_utf8_lossy(h.value).to_string());
    assert_eq!(
        accept.as_deref(),
        Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str()),
        "bad Sec-WebSocket-Accept in {head}"
    );
    (stream, rest)
}

/// Reads an HTTP response head (up to the blank line); returns it and any bytes after it.
fn read_http_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).to_string(), rest);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the response head: {e}"),
        }
    }
}

impl Client {
    /// Connects to the default app and waits for `pusher:connection_established`.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::upgrade(addr, DEFAULT_PATH);
        client.expect_established();
        client
    }

    /// Connects with `path` (path and query) and waits for `pusher:connection_established`.
    pub fn connect_path(addr: SocketAddr, path: &str) -> Client {
        let mut client = Client::upgrade(addr, path);
        client.expect_established();
        client
    }

    /// Connects (default app) until the socket lands on `shard`.
    pub fn connect_on_shard(addr: SocketAddr, shard: usize) -> Client {
        for _ in 0..500 {
            let client = Client::connect(addr);
            if client.shard() == shard {
                return client;
            }
        }
        panic!("no connection landed on shard {shard} in 500 tries");
    }

    /// Upgrades with `path` and reads nothing more.
    pub fn upgrade(addr: SocketAddr, path: &str) -> Client {
        Client::upgrade_stream(TcpStream::connect(addr).expect("connect"), path, &[])
    }

    /// Upgrades an already connected `stream` with `path`, writing `extra` bytes (e.g. frames)
    /// in the same write as the request; reads nothing after the `101`.
    pub fn upgrade_stream(stream: TcpStream, path: &str, extra: &[u8]) -> Client {
        let (stream, buf) = upgrade(stream, path, extra);
        Client {
            stream,
            buf,
            fragments: None,
            socket_id: String::new(),
            activity_timeout: 0,
        }
    }

    /// Reads the first message, which must be `pusher:connection_established` with a string
    /// `data` holding a `^\d+\.\d+$` socket id and a positive activity timeout.
    pub fn expect_established(&mut self) -> Value {
        let message = self.recv();
        assert_eq!(
            message["event"], "pusher:connection_established",
            "first message: {message}"
        );
        let data = data_of(&message);
        let socket_id = data["socket_id"]
            .as_str()
            .unwrap_or_else(|| panic!("socket_id is not a string: {message}"));
        let (a, b) = socket_id.split_once('.').unwrap_or(("", ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        assert!(
            digits(a) && digits(b),
            "socket_id {socket_id:?} does not match ^\\d+\\.\\d+$"
        );
        let activity = data["activity_timeout"]
            .as_u64()
            .unwrap_or_else(|| panic!("activity_timeout missing or not an integer: {message}"));
        assert!(activity > 0, "activity_timeout is 0: {message}");
        self.socket_id = socket_id.to_string();
        self.activity_timeout = activity;
        message
    }

    /// Bytes received but not yet parsed into a frame (an incomplete frame).
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The shard this socket lives on.
    pub fn shard(&self) -> usize {
        shard_of(&self.socket_id)
    }

    /// The TCP stream (for socket options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes raw bytes, tolerating a connection the server already closed.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.send_raw(&masked(opcode, fin, payload));
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(TEXT, true, text.as_bytes());
    }

    /// Sends a JSON message.
    pub fn send_json(&mut self, message: &Value) {
        self.send_text(&message.to_string());
    }

    /// Reads the next frame, or why there is none within `timeout`. Fragmented messages are
    /// reassembled (control frames in between are returned first).
    pub fn try_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some((fin, opcode, payload)) = self.parse_frame()? {
                match opcode {
                    PING => return Ok(Frame::Ping(payload)),
                    PONG => return Ok(Frame::Pong(payload)),
                    CLOSE => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                        return Ok(Frame::Close(code, reason.to_string()));
                    }
                    CONTINUATION => {
                        let Some((_, message)) = self.fragments.as_mut() else {
                            return Err(ReadError::Bad("continuation without a message".into()));
                        };
                        message.extend_from_slice(&payload);
                        if fin {
                            let (opcode, message) = self.fragments.take().unwrap();
                            return complete(opcode, message);
                        }
                    }
                    TEXT | BINARY if fin => return complete(opcode, payload),
                    TEXT | BINARY => self.fragments = Some((opcode, payload)),
                    other => return Err(ReadError::Bad(format!("unknown opcode {other}"))),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::Timeout);
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ReadError::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadError::Eof),
            }
        }
    }

    /// Takes one complete frame off the buffer: (fin, opcode, payload).
    fn parse_frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, ReadError> {
        let buf = &self.buf;
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(ReadError::Bad("reserved bits set".into()));
        }
        let opcode = buf[0] & 0x0f;
        if buf[1] & 0x80 != 0 {
            return Err(ReadError::Bad("server frames must not be masked".into()));
        }
        let (length, header) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if buf.len() < header + length {
            return Ok(None);
        }
        let payload = buf[header..header + length].to_vec();
        self.buf.drain(..header + length);
        Ok(Some((fin, opcode, payload)))
    }

    /// The next frame; panics if none arrives within [`WAIT`].
    pub fn frame(&mut self) -> Frame {
        match self.try_frame(WAIT) {
            Ok(frame) => frame,
            Err(e) => panic!("socket {}: no frame: {e:?}", self.socket_id),
        }
    }

    /// The next message, which must be a JSON text frame, within [`WAIT`].
    pub fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
    }

    /// The next message, which must be a JSON text frame, within `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Value {
        match self.try_frame(timeout) {
            Ok(Frame::Text(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {text}")),
            Ok(other) => panic!(
                "socket {}: expected a text frame, got {other:?}",
                self.socket_id
            ),
            Err(e) => panic!(
                "socket {}: expected a text frame, got {e:?}",
                self.socket_id
            ),
        }
    }

    /// The next message, which must be `event`.
    pub fn expect_event(&mut self, event: &str) -> Value {
        let message = self.recv();
        assert_eq!(
            message["event"], event,
            "socket {}: expected {event}, got {message}",
            self.socket_id
        );
        message
    }

    /// The next message, which must be a `pusher:error`: returns its `data` (an object).
    pub fn expect_error(&mut self) -> Value {
        let message = self.expect_event("pusher:error");
        assert!(
            message["data"].is_object(),
            "pusher:error data must be an object: {message}"
        );
        assert!(
            message["data"]["message"].is_string(),
            "pusher:error without a message: {message}"
        );
        assert!(
            message["data"]["code"].is_null() || message["data"]["code"].is_u64(),
            "pusher:error code must be null or a number: {message}"
        );
        message["data"].clone()
    }

    /// Asserts that nothing at all arrives for `duration`.
    pub fn expect_silence(&mut self, duration: Duration) {
        match self.try_frame(duration) {
            Err(ReadError::Timeout) => {}
            Ok(frame) => panic!("socket {}: expected silence, got {frame:?}", self.socket_id),
            Err(e) => panic!("socket {}: expected silence, got {e:?}", self.socket_id),
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub fn expect_quiet(&mut self) {
        self.expect_silence(QUIET);
    }

    /// The next frame must be a close frame: answers it, then expects the server to close the
    /// TCP connection. Returns the close code and reason.
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        let frame = self.frame();
        let Frame::Close(code, reason) = frame else {
            panic!(
                "socket {}: expected a close frame, got {frame:?}",
                self.socket_id
            );
        };
        let mut payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
        payload.truncate(2);
        let _ = self.try_send_raw(&masked(CLOSE, true, &payload));
        self.expect_eof();
        (code, reason)
    }

    /// Expects the server to close the TCP connection (nothing else may arrive first).
    pub fn expect_eof(&mut self) {
        match self.try_frame(WAIT) {
            Err(ReadError::Eof) => {}
            other => panic!(
                "socket {}: expected the connection to be closed, got {other:?}",
                self.socket_id
            ),
        }
    }

    /// Expects `pusher:error` with `code`, then a close frame with the same code.
    pub fn expect_refusal(&mut self, code: u16) -> String {
        let error = self.expect_error();
        assert_eq!(error["code"], code, "pusher:error code: {error}");
        let (close, _) = self.expect_close();
        assert_eq!(close, Some(code), "close code after {error}");
        error["message"].as_str().unwrap().to_string()
    }

    /// Sends `pusher:ping` and expects exactly `{"event":"pusher:pong","data":"{}"}`: proves the
    /// socket is still open and served.
    pub fn ping_pong(&mut self) {
        self.send_json(&json!({"event": "pusher:ping", "data": {}}));
        let pong = self.recv();
        assert_eq!(
            pong,
            json!({"event": "pusher:pong", "data": "{}"}),
            "socket {}",
            self.socket_id
        );
    }

    /// Sends `pusher:subscribe` with the given fields.
    pub fn send_subscribe(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) {
        let mut data = json!({ "channel": channel });
        if let Some(auth) = auth {
            data["auth"] = json!(auth);
        }
        if let Some(channel_data) = channel_data {
            data["channel_data"] = json!(channel_data);
        }
        self.send_json(&json!({"event": "pusher:subscribe", "data": data}));
    }

    /// Expects `pusher_internal:subscription_succeeded` for `channel`; returns the message.
    pub fn expect_subscribed(&mut self, channel: &str) -> Value {
        let message = self.expect_event("pusher_internal:subscription_succeeded");
        assert_eq!(message["channel"], channel, "{message}");
        assert!(
            message["data"].is_string(),
            "data must be a string: {message}"
        );
        message
    }

    /// Expects `pusher:subscription_error` for `channel`; returns its `data`.
    pub fn expect_subscription_error(&mut self, channel: &str) -> Value {
        let message = self.expect_event("pusher:subscription_error");
        assert_eq!(message["channel"], channel, "{message}");
        let data = &message["data"];
        assert!(data["type"].is_string(), "no type: {message}");
        assert!(data["error"].is_string(), "no error: {message}");
        assert!(data["status"].is_u64(), "no status: {message}");
        data.clone()
    }

    /// Subscribes to a public channel the way pusher-js does (`auth: ""`) and checks the
    /// `subscription_succeeded` shape exactly.
    pub fn subscribe(&mut self, channel: &str) {
        self.send_subscribe(channel, Some(""), None);
        let message = self.expect_subscribed(channel);
        assert_eq!(
            message,
            json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"})
        );
    }

    /// The correct auth for this socket on `channel` (default app).
    pub fn auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        auth_for(KEY, SECRET, &self.socket_id, channel, channel_data)
    }

    /// Subscribes to a private channel with a correct signature.
    pub fn subscribe_private(&mut self, channel: &str) {
        self.subscribe_private_with(KEY, SECRET, channel);
    }

    /// Subscribes to a private channel of the app with `key` and `secret`.
    pub fn subscribe_private_with(&mut self, key: &str, secret: &str, channel: &str) {
        let auth = auth_for(key, secret, &self.socket_id, channel, None);
        self.send_subscribe(channel, Some(&auth), None);
        let message = self.expect_subscribed(channel);
        assert_eq!(message["data"], "{}", "{message}");
    }

    /// Sends a signed presence subscription with `channel_data` (no wait).
    pub fn send_presence_subscribe(&mut self, channel: &str, channel_data: &str) {
        let auth = self.auth(channel, Some(channel_data));
        self.send_subscribe(channel, Some(&auth), Some(channel_data));
    }

    /// Joins a presence channel; returns the `presence` object of `subscription_succeeded`.
    pub fn subscribe_presence(&mut self, channel: &str, channel_data: &str) -> Value {
        self.send_presence_subscribe(channel, channel_data);
        let message = self.expect_subscribed(channel);
        let data = data_of(&message);
        let presence = data["presence"].clone();
        assert!(presence.is_object(), "no presence object: {message}");
        presence
    }

    /// Sends `pusher:unsubscribe`.
    pub fn unsubscribe(&mut self, channel: &str) {
        self.send_json(&json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}));
    }

    /// Sends a client event; `data` is left out when `None`.
    pub fn trigger(&mut self, event: &str, channel: &str, data: Option<Value>) {
        let mut message = json!({"event": event, "channel": channel});
        if let Some(data) = data {
            message["data"] = data;
        }
        self.send_json(&message);
    }

    /// Closes politely: sends a close frame and waits for the server's answer and EOF.
    pub fn close(mut self) {
        self.send_raw(&masked(CLOSE, true, &1000u16.to_be_bytes()));
        let (code, _) = self.expect_close();
        assert_eq!(code, Some(1000), "close handshake answer");
    }

    /// Drops the connection with a TCP reset (no close frame, no FIN).
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        drop(self);
    }

    /// Half-closes the write side (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn complete(opcode: u8, payload: Vec<u8>) -> Result<Frame, ReadError> {
    if opcode == BINARY {
        return Ok(Frame::Binary(payload));
    }
    String::from_utf8(payload)
        .map(Frame::Text)
        .map_err(|_| ReadError::Bad("text frame is not UTF-8".into()))
}

/// Sends `request` on a fresh TCP connection and reads until the server closes it (or `WAIT`
/// passes); returns everything received.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request).expect("write");
    read_to_close(&mut stream)
}

/// Reads until EOF; panics if the server keeps the connection open past [`WAIT`].
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "server kept the connection open; got {:?}",
            String::from_utf8_lossy(&out)
        );
        stream.set_read_timeout(Some(deadline - now)).unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A parsed HTTP response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one HTTP response from `bytes` (body by Content-Length).
pub fn parse_http_response(bytes: &[u8]) -> HttpResponse {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let status = response.parse(bytes).unwrap_or_else(|e| {
        panic!(
            "bad HTTP response ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let httparse::Status::Complete(head) = status else {
        panic!(
            "incomplete HTTP response: {:?}",
            String::from_utf8_lossy(bytes)
        );
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or(bytes.len() - head);
    HttpResponse {
        status: response.code.unwrap(),
        headers,
        body: String::from_utf8_lossy(&bytes[head..head + length]).to_string(),
    }
}

/// The common end of every bad-input test: a fresh client connects, subscribes to a public
/// channel, and a client event between two fresh clients on a private channel is relayed.
pub fn assert_server_healthy(addr: SocketAddr) {
    let mut a = Client::connect(addr);
    a.subscribe("health-check");
    a.ping_pong();
    let mut b = Client::connect(addr);
    a.subscribe_private("private-health");
    b.subscribe_private("private-health");
    a.trigger("client-health", "private-health", Some(json!({"ok": true})));
    let got = b.recv();
    assert_eq!(
        got,
        json!({"event": "client-health", "channel": "private-health", "data": "{\"ok\":true}"})
    );
    a.expect_quiet();
}
