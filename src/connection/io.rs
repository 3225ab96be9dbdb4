//! The task that owns one accepted socket: reads the request head, serves plain HTTP requests
//! (keep-alive) or upgrades to WebSocket, then runs the session — reading frames, flushing the
//! send queue, honouring close requests — and finally closes cleanly.

use super::handler;
use super::{CloseRequest, Connection};
use crate::app::App;
use crate::http;
use crate::protocol::{codes, outbound};
use crate::shard::Shard;
use crate::ws::frame::{self, FrameDecoder, FrameError, WsEvent};
use crate::ws::handshake::{self, HeadError, RequestHead};
use crate::ws::send_queue::FlushOutcome;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Size of the per-shard read buffer every connection reads into. Connections keep no read
/// buffer of their own while idle.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// How a WebSocket session ended.
#[derive(Debug)]
enum End {
    /// The server asked to close (shutdown, liveness, slow consumer, …).
    Server(CloseRequest),
    /// The client sent a close frame.
    ClientClose(Option<u16>),
    /// The client broke the framing rules.
    Protocol(FrameError),
    /// The socket reached EOF or failed.
    Gone,
}

impl End {
    /// The close code this end sends or received (0 when the socket just went).
    fn close_code(&self) -> u16 {
        match self {
            End::Server(request) => request.code.unwrap_or(0),
            End::ClientClose(code) => code.unwrap_or(codes::WS_NORMAL),
            End::Protocol(error) => error.close_code,
            End::Gone => 0,
        }
    }
}

enum Step {
    Events,
    End(End),
}

/// Serves one accepted TCP connection to the end.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let handshake_timeout = Duration::from_secs(shard.config.server.handshake_timeout);
    let mut buffered = Vec::new();
    loop {
        // The whole request (head and body) must arrive within the handshake timeout, however
        // slowly its bytes trickle in.
        let request = Box::pin(with_timeout(
            handshake_timeout,
            read_request(&mut stream, &mut buffered),
        ))
        .await;
        let (head, body) = match request {
            Some(Ok(Some(request))) => request,
            Some(Ok(None)) => return,
            Some(Err(error)) => return refuse_http(&mut stream, error).await,
            None if buffered.is_empty() => return,
            None => {
                return refuse_http(
                    &mut stream,
                    HeadError {
                        status: 408,
                        message: "Request not received in time",
                    },
                )
                .await
            }
        };
        if head.is_websocket() {
            // The session runs in a task of its own, so that an idle connection carries only the
            // session's state, not this request loop's.
            let peer = stream
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            let client_ip = head.client_ip(peer, &shard.config.server.trusted_proxies);
            if let Some(app) = Box::pin(upgrade(&shard, &mut stream, head)).await {
                glommio::spawn_local(session(shard, stream, app, body, client_ip)).detach();
            } else {
                tracing::debug!(%client_ip, "WebSocket connection refused");
            }
            return;
        }
        let response = Box::pin(http::respond(&shard, &head, &body)).await;
        let close = head.wants_close;
        if write_response(&mut stream, &response, close).await.is_err() || close {
            return;
        }
    }
}

/// Reads one request: its head and, for plain HTTP, its body. For a WebSocket upgrade the "body"
/// is whatever the client sent after the head (frames it did not wait to send).
async fn read_request(
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
) -> Result<Option<(RequestHead, Vec<u8>)>, HeadError> {
    let Some(head) = read_head(stream, buffered).await? else {
        return Ok(None);
    };
    let body = if head.is_websocket() {
        std::mem::take(buffered)
    } else {
        read_body(stream, &head, buffered).await?
    };
    Ok(Some((head, body)))
}

async fn refuse_http(stream: &mut TcpStream, error: HeadError) {
    let _ = write_response(
        stream,
        &http::Response::text(error.status, error.message),
        true,
    )
    .await;
}

/// Reads until a whole request head is buffered; `Ok(None)` when the peer closed or timed out
/// before sending anything. The head's bytes are removed from `buffered`.
async fn read_head(
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    loop {
        if !buffered.is_empty() {
            if let Some((head, length)) = handshake::parse_request_head(buffered)? {
                buffered.drain(..length);
                return Ok(Some(head));
            }
        }
        match read_more(stream, buffered, 2048).await {
            0 if buffered.is_empty() => return Ok(None),
            0 => {
                return Err(HeadError {
                    status: 408,
                    message: "Incomplete request head",
                })
            }
            _ => {}
        }
    }
}

async fn read_body(
    stream: &mut TcpStream,
    head: &RequestHead,
    buffered: &mut Vec<u8>,
) -> Result<Vec<u8>, HeadError> {
    let length = head.content_length.unwrap_or(0);
    if length > http::MAX_BODY_BYTES {
        return Err(HeadError {
            status: 413,
            message: "Request body too large",
        });
    }
    while buffered.len() < length {
        if read_more(stream, buffered, length - buffered.len()).await == 0 {
            return Err(HeadError {
                status: 408,
                message: "Incomplete request body",
            });
        }
    }
    Ok(buffered.drain(..length).collect())
}

/// Appends up to `at_most` bytes read from `stream` to `buffered` (straight into its heap
/// buffer, so no read buffer lives in the connection's future); returns the count, 0 on EOF or
/// error.
async fn read_more(stream: &mut TcpStream, buffered: &mut Vec<u8>, at_most: usize) -> usize {
    let start = buffered.len();
    buffered.resize(start + at_most.min(16 * 1024), 0);
    let n = stream.read(&mut buffered[start..]).await.unwrap_or(0);
    buffered.truncate(start + n);
    n
}

async fn write_response(
    stream: &mut TcpStream,
    response: &http::Response,
    close: bool,
) -> std::io::Result<()> {
    stream.write_all(&response.to_bytes(close)).await
}

/// Runs an admitted WebSocket client's session to its end. (An `async move` block rather than an
/// `async fn`: the block keeps its captures in place, where an `async fn` would also hold copies
/// of its arguments for the whole session.)
#[allow(clippy::manual_async_fn)]
fn session(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    app: Arc<App>,
    leftover: Vec<u8>,
    client_ip: std::net::IpAddr,
) -> impl Future<Output = ()> {
    async move {
        let conn = Rc::new(Connection::new(
            shard.new_socket_id(),
            app.clone(),
            stream.as_raw_fd(),
            shard.config.server.send_queue_bytes,
            shard.now(),
        ));
        shard.register(conn.clone());
        crate::metrics::with(|m| m.connection_opened());
        tracing::debug!(socket_id = %conn.socket_id, %client_ip, app = app.id(), "connection opened");
        conn.send_text(&outbound::connection_established(
            conn.socket_id,
            shard.config.server.activity_timeout,
        ));
        let end = run_session(&shard, &conn, &mut stream, leftover).await;
        crate::metrics::with(|m| m.connection_closed(end.close_code()));
        tracing::debug!(socket_id = %conn.socket_id, %client_ip, code = end.close_code(), "connection closed");
        conn.mark_closed();
        Box::pin(shard.unregister(&conn)).await;
        app.release_connection();
        Box::pin(finish(&shard, &conn, stream, end)).await;
    }
}

/// Answers the upgrade and admits the client; `None` when it was refused (and told so). Takes the
/// request head by value so that it is freed before the session starts.
async fn upgrade(shard: &Shard, stream: &mut TcpStream, head: RequestHead) -> Option<Arc<App>> {
    let answer = match handshake::accept_upgrade(&head) {
        Ok(answer) => answer,
        Err(error) => {
            refuse_http(stream, error).await;
            return None;
        }
    };
    stream.write_all(&answer).await.ok()?;
    match admit(shard, &head) {
        Ok(app) => Some(app),
        Err((code, message)) => {
            refuse(shard, stream, code, &message).await;
            None
        }
    }
}

/// Checks the path, protocol version and app; reserves a connection slot.
fn admit(
    shard: &Shard,
    head: &RequestHead,
) -> Result<std::sync::Arc<crate::app::App>, (u16, String)> {
    let prefix = &shard.config.server.path_prefix;
    let key = head
        .path
        .strip_prefix(prefix.as_str())
        .and_then(|p| p.strip_prefix("/app/"))
        .filter(|k| !k.is_empty() && !k.contains('/'))
        .ok_or_else(|| {
            (
                codes::BAD_PATH,
                format!("Invalid path {}: expected {prefix}/app/{{key}}", head.path),
            )
        })?;
    // pusher-js sends protocol=7; older clients 5 or 6. A missing protocol is accepted, as
    // soketi and Reverb do (PROTOCOL.md §1.3 leaves the hosted behaviour UNCONFIRMED).
    if let Some(protocol) = head.query_param("protocol") {
        if !matches!(protocol.parse::<u32>(), Ok(5..=7)) {
            return Err((
                codes::UNSUPPORTED_PROTOCOL,
                format!("Unsupported protocol version {protocol}"),
            ));
        }
    }
    let app = shard.apps().by_key(key).cloned().ok_or_else(|| {
        (
            codes::APP_NOT_FOUND,
            format!("App key {key} not in this cluster"),
        )
    })?;
    if !app.config.enabled {
        return Err((codes::APP_DISABLED, "Application disabled".to_string()));
    }
    if !app.try_acquire_connection() {
        return Err((
            codes::OVER_CONNECTION_QUOTA,
            "Application is over connection quota".to_string(),
        ));
    }
    Ok(app.clone())
}

/// Sends `pusher:error` and a close frame with the same code, then closes.
async fn refuse(shard: &Shard, stream: &mut TcpStream, code: u16, message: &str) {
    let mut bytes = frame::text_frame(&outbound::error(Some(code), message));
    bytes.extend(frame::close_frame(code, message));
    if stream.write_all(&bytes).await.is_ok() {
        linger(shard, stream).await;
    }
}

async fn run_session(
    shard: &Shard,
    conn: &Rc<Connection>,
    stream: &mut TcpStream,
    leftover: Vec<u8>,
) -> End {
    let max_message = shard.config.server.max_message_bytes;
    let mut decoder = FrameDecoder::default();
    let mut events = Vec::new();
    let fed = decoder.feed(&leftover, max_message, &mut events);
    drop(leftover);
    if let Err(error) = fed {
        return End::Protocol(error);
    }
    loop {
        if !events.is_empty() {
            conn.touch(shard.now());
        }
        for event in events.drain(..) {
            // Boxed: the handlers' futures are large and short-lived; an idle connection's task
            // should not carry their space.
            if let Some(end) = Box::pin(handle_event(shard, conn, event)).await {
                return end;
            }
        }
        glommio::yield_if_needed().await;
        let step =
            poll_fn(|cx| poll_session(conn, stream, &mut decoder, max_message, &mut events, cx))
                .await;
        if let Step::End(end) = step {
            return end;
        }
    }
}

async fn handle_event(shard: &Shard, conn: &Rc<Connection>, event: WsEvent) -> Option<End> {
    match event {
        WsEvent::Text(text) => {
            crate::metrics::with(|m| m.message_in(conn.app.index, text.len()));
            handler::handle_text(shard, conn, &text).await
        }
        WsEvent::Binary => conn.send_error(
            None,
            "Binary frames are not supported: send JSON in text frames",
        ),
        WsEvent::Ping(payload) => conn.send_frame(frame::pong_frame(&payload)),
        WsEvent::Pong => {}
        WsEvent::Close(code) => return Some(End::ClientClose(code)),
    }
    None
}

/// One poll of the session: honours a close request, flushes what is queued, then reads.
fn poll_session(
    conn: &Connection,
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    max_message: usize,
    events: &mut Vec<WsEvent>,
    cx: &mut Context<'_>,
) -> Poll<Step> {
    conn.register_waker(cx.waker());
    if let Some(request) = conn.close_request() {
        return Poll::Ready(Step::End(End::Server(request)));
    }
    if let Poll::Ready(Err(())) = poll_flush(conn, stream, cx) {
        return Poll::Ready(Step::End(End::Gone));
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        loop {
            match Pin::new(&mut *stream).poll_read(cx, &mut scratch) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Step::End(End::Gone))
                }
                Poll::Ready(Ok(n)) => {
                    if let Err(error) = decoder.feed(&scratch[..n], max_message, events) {
                        return Poll::Ready(Step::End(End::Protocol(error)));
                    }
                    if !events.is_empty() {
                        return Poll::Ready(Step::Events);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
}

/// Writes queued bytes (many frames per `sendmsg`, see `SendQueue::flush_vectored`) until the
/// queue is empty (`Ready(Ok)`), the socket is full (`Pending`, woken when writable) or broken
/// (`Ready(Err)`).
fn poll_flush(
    conn: &Connection,
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ()>> {
    let mut state = conn.state.borrow_mut();
    loop {
        match state.queue.flush_vectored(stream.as_raw_fd()) {
            FlushOutcome::Empty => return Poll::Ready(Ok(())),
            FlushOutcome::Broken => return Poll::Ready(Err(())),
            FlushOutcome::WouldBlock => {}
        }
        // glommio arms its writability poll only inside `poll_write` (after one more send).
        let Some(front) = state.queue.front() else {
            continue;
        };
        match Pin::new(&mut *stream).poll_write(cx, front) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
            Poll::Ready(Ok(n)) => state.queue.advance(n),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Ends the session on the wire: a close frame where one is due, the rest of the queue before
/// it, and a short wait for the client's close so that nothing in flight is lost to a reset.
async fn finish(shard: &Shard, conn: &Connection, mut stream: TcpStream, end: End) {
    let close = match end {
        End::Server(CloseRequest {
            code: Some(code),
            reason,
        }) => {
            tracing::debug!(socket_id = %conn.socket_id, code, %reason, "closing connection");
            frame::close_frame(code, &reason)
        }
        End::ClientClose(code) => frame::close_frame(code.unwrap_or(codes::WS_NORMAL), ""),
        End::Protocol(error) => {
            tracing::debug!(socket_id = %conn.socket_id, reason = error.reason, "protocol error");
            frame::close_frame(error.close_code, error.reason)
        }
        End::Server(CloseRequest { code: None, .. }) | End::Gone => return,
    };
    conn.state.borrow_mut().queue.send(
        stream.as_raw_fd(),
        crate::ws::send_queue::OutFrame::Owned(close),
        usize::MAX,
    );
    let grace = Duration::from_secs(shard.config.server.shutdown_grace);
    let flushed = with_timeout(grace, poll_fn(|cx| poll_flush(conn, &mut stream, cx))).await;
    if matches!(flushed, Some(Ok(()))) {
        linger(shard, &mut stream).await;
    }
}

/// After our close frame: half-closes, then reads (and discards) until the client closes too,
/// for at most the shutdown grace period.
async fn linger(shard: &Shard, stream: &mut TcpStream) {
    let _ = stream.close().await;
    let grace = Duration::from_secs(shard.config.server.shutdown_grace);
    with_timeout(grace, async {
        let mut sink = vec![0u8; 512];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn with_timeout<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
