//! The console's own small HTTP server (a std thread per request, apart from the shards): the
//! page, the server-sent-events stream, a state snapshot and the test-event form's endpoint.
//! Every path needs the admin token (`Authorization: Bearer <token>` or `?token=<token>`);
//! without it the answer is 401 and nothing else.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] requests at once (beyond: 503 and close), of which at
//! most [`MAX_VIEWERS`] event streams; request heads up to [`MAX_HEAD_BYTES`], bodies up to
//! [`MAX_BODY_BYTES`] (beyond: 431 / 413).

use super::tap::Viewer;
use super::upstream::{AppCredentials, Upstream};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The page, embedded in the binary (no CDN, no other asset).
const PAGE: &str = include_str!("page.html");
/// Most console requests served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Most event streams open at once.
pub const MAX_VIEWERS: usize = 8;
/// Largest request head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body (the test-event form).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After a refused request: how long, and how many bytes at most, the rest of it is read and
/// discarded before closing (closing with unread bytes resets the connection, which can destroy
/// the answer before the client reads it).
const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most bytes of a refused request read and discarded (see [`LINGER_TIME`]).
const LINGER_BYTES: u64 = 1024 * 1024;
/// How often a stream gets a fresh state snapshot.
const STATE_INTERVAL: Duration = Duration::from_secs(1);

/// What every request handler shares.
pub struct Context {
    /// SHA-256 of the admin token (compared digest to digest).
    token_digest: [u8; 32],
    /// The apps, replaced on reload.
    pub apps: RwLock<Vec<AppCredentials>>,
    /// The server's API, over loopback.
    pub upstream: Upstream,
    connections: AtomicUsize,
    streams: AtomicUsize,
}

impl Context {
    /// A context for `token`, `apps` and the server at `upstream`.
    pub fn new(token: &str, apps: Vec<AppCredentials>, upstream: Upstream) -> Context {
        Context {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            apps: RwLock::new(apps),
            upstream,
            connections: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    fn token_matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest == self.token_digest
    }

    fn apps(&self) -> Vec<AppCredentials> {
        self.apps
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Accepts console connections until the listener fails; one thread per request.
pub fn serve(listener: TcpListener, context: Arc<Context>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if context.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            context.connections.fetch_sub(1, Ordering::AcqRel);
            let _ = respond(
                &mut stream,
                503,
                "text/plain",
                "503: too many console requests",
            );
            continue;
        }
        let context = context.clone();
        let spawned = std::thread::Builder::new()
            .name("warren-console-req".into())
            .spawn(move || {
                let _ = handle(stream, &context);
                context.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::warn!("console: cannot start a request thread");
        }
    }
}

/// A parsed request: method, path, query pairs, headers we use, body.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn handle(stream: TcpStream, context: &Context) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let request = match read_request(&mut reader) {
        Ok(request) => request,
        Err((status, message)) => {
            respond(&mut stream, status, "text/plain", &message)?;
            return linger(&stream, reader);
        }
    };
    let token = request
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            request
                .query
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        });
    if !token.is_some_and(|t| context.token_matches(&t)) {
        return respond(
            &mut stream,
            401,
            "text/plain",
            "401: the console needs its admin token (?token=... or Authorization: Bearer ...)",
        );
    }
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/console") => respond(&mut stream, 200, "text/html; charset=utf-8", PAGE),
        ("GET", "/console/state") => {
            let state = context.upstream.state(&context.apps());
            let json = serde_json::to_string(&state).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &json)
        }
        ("GET", "/console/events") => stream_events(stream, context),
        ("POST", "/console/trigger") => {
            let (status, body) = trigger(context, &request.body);
            respond(&mut stream, status, "application/json", &body)
        }
        (_, "/console" | "/console/state" | "/console/events" | "/console/trigger") => {
            respond(&mut stream, 405, "text/plain", "405: method not allowed")
        }
        _ => respond(&mut stream, 404, "text/plain", "404: no such console path"),
    }
}

/// Half-closes `stream`, then discards what the client still sends (through `reader`, which
/// holds what was read ahead) until it closes, [`LINGER_TIME`] passes or [`LINGER_BYTES`] were
/// read.
fn linger(stream: &TcpStream, reader: BufReader<TcpStream>) -> io::Result<()> {
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER_TIME))?;
    let started = Instant::now();
    let mut rest = reader.take(LINGER_BYTES);
    let mut sink = [0u8; 8192];
    while started.elapsed() < LINGER_TIME {
        match rest.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    Ok(())
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, (u16, String)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        reader
            .read_until(b'\n', &mut head)
            .map_err(|e| (400, format!("400: {e}")))?;
        if head.len() == before {
            return Err((400, "400: incomplete request".into()));
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err((431, "431: request head too large".into()));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed
        .parse(&head)
        .map_err(|e| (400, format!("400: {e}")))?;
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_string)
    };
    let length: usize = header("content-length")
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| (400, "400: bad Content-Length".to_string()))
        })
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return Err((413, "413: request body too large".into()));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| (400, format!("400: {e}")))?;
    Ok(Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        authorization: header("authorization"),
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let authenticate = if status == 401 {
        "WWW-Authenticate: Bearer realm=\"warren-console\"\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{authenticate}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The server-sent-events stream: `state` every second, `log` for each recorded event.
fn stream_events(mut stream: TcpStream, context: &Context) -> io::Result<()> {
    if context.streams.fetch_add(1, Ordering::AcqRel) >= MAX_VIEWERS {
        context.streams.fetch_sub(1, Ordering::AcqRel);
        return respond(
            &mut stream,
            503,
            "text/plain",
            "503: too many console viewers",
        );
    }
    let result = (|| {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        )?;
        let mut viewer = Viewer::connect();
        let mut last_state: Option<Instant> = None;
        loop {
            if last_state.is_none_or(|at| at.elapsed() >= STATE_INTERVAL) {
                let state = context.upstream.state(&context.apps());
                write_sse(
                    &mut stream,
                    "state",
                    &serde_json::to_string(&state).unwrap_or_default(),
                )?;
                last_state = Some(Instant::now());
            }
            for event in viewer.next_events(STATE_INTERVAL / 4) {
                write_sse(
                    &mut stream,
                    "log",
                    &serde_json::to_string(&event).unwrap_or_default(),
                )?;
            }
        }
    })();
    context.streams.fetch_sub(1, Ordering::AcqRel);
    result
}

fn write_sse(stream: &mut TcpStream, event: &str, data: &str) -> io::Result<()> {
    write!(stream, "event: {event}\ndata: {data}\n\n")?;
    stream.flush()
}

/// The test-event form: `{"app": id, "channel", "event", "data"}` published through the
/// server's signed HTTP API; answers the API's status and body.
fn trigger(context: &Context, body: &[u8]) -> (u16, String) {
    #[derive(serde::Deserialize)]
    struct Form {
        app: String,
        channel: String,
        event: String,
        data: String,
    }
    let form: Form = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => {
            return (
                400,
                serde_json::json!({ "error": e.to_string() }).to_string(),
            )
        }
    };
    let apps = context.apps();
    let Some(app) = apps.iter().find(|a| a.id == form.app) else {
        return (
            400,
            serde_json::json!({ "error": "no such app" }).to_string(),
        );
    };
    let (status, answer) = context
        .upstream
        .trigger(app, &form.channel, &form.event, &form.data);
    (
        if status == 200 { 200 } else { 400 },
        serde_json::json!({ "api_status": status, "api_body": answer }).to_string(),
    )
}
