//! One admitted client's WebSocket session: answering the upgrade, then reading frames,
//! flushing the send queue and honouring close requests in one task, and finally closing
//! cleanly (the queued bytes, a close frame, a half-close, a short wait for the client's close).

use super::admit::{self, Refusal};
use super::dispatch;
use crate::app::App;
use crate::deadline::with_timeout;
use crate::http::request::RequestHead;
use crate::http::server as http_server;
use crate::protocol::{codes, outbound};
use crate::shard::Shard;
use crate::socket::{CloseRequest, Connection};
use crate::ws::frame::{self, FrameDecoder, FrameError, WsEvent};
use crate::ws::handshake;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// Opens an admitted client's connection on its shard: registers it and writes the upgrade
/// answer together with `connection_established` (one write). The returned connection must go
/// to [`session`] with this same `stream`.
pub(super) fn open(
    shard: &Shard,
    stream: &TcpStream,
    admitted: Admitted,
    client_ip: std::net::IpAddr,
) -> Rc<Connection> {
    let Admitted { app, answer } = admitted;
    // SAFETY: `session` takes `stream` with this connection, owns it until its end and calls
    // `conn.mark_closed()` before `finish` drops it: the fd stays open as the contract asks.
    let conn = Rc::new(unsafe {
        Connection::new(
            shard.new_socket_id(),
            app,
            stream.as_raw_fd(),
            shard.config.server.send_queue_bytes,
            shard.now(),
        )
    });
    shard.register(conn.clone());
    crate::metrics::with(|m| m.connection_opened());
    tracing::debug!(socket_id = %conn.socket_id, %client_ip, app = conn.app.id(), "connection opened");
    conn.cork();
    conn.send_prepared(answer);
    conn.send_text(&outbound::connection_established(
        conn.socket_id,
        shard.config.server.activity_timeout,
        conn.app.config.compat,
    ));
    conn.uncork();
    conn
}

/// Runs an opened connection's session to its end. (An `async move` block rather than an
/// `async fn`: the block keeps its captures in place, where an `async fn` would also hold copies
/// of its arguments for the whole session.)
#[allow(clippy::manual_async_fn)]
pub(super) fn session(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    conn: Rc<Connection>,
    leftover: Vec<u8>,
    client_ip: std::net::IpAddr,
) -> impl Future<Output = ()> {
    async move {
        let end = run_session(&shard, &conn, &mut stream, leftover).await;
        crate::metrics::with(|m| m.connection_closed(end.close_code()));
        tracing::debug!(socket_id = %conn.socket_id, %client_ip, code = end.close_code(), "connection closed");
        conn.mark_closed();
        shard.unregister(&conn);
        conn.app.release_connection();
        Box::pin(finish(&shard, &conn, stream, end)).await;
    }
}

/// An admitted client: its app, and the upgrade answer still to be written (the session
/// writes it together with `connection_established`).
pub(super) struct Admitted {
    app: Arc<App>,
    answer: Vec<u8>,
}

/// Checks the upgrade and admits the client; `None` when it was refused (and told so, after
/// the upgrade answer). Takes the request head by value so that it is freed before the session
/// starts.
pub(super) async fn upgrade(
    shard: &Shard,
    stream: &mut TcpStream,
    head: RequestHead,
    client_ip: std::net::IpAddr,
) -> Option<Admitted> {
    let answer = match handshake::accept_upgrade(&head) {
        Ok(answer) => answer,
        Err(error) => {
            http_server::refuse(shard, stream, error).await;
            return None;
        }
    };
    match admit::admit(shard, &head) {
        Ok(app) => Some(Admitted { app, answer }),
        Err(refusal) => {
            stream.write_all(&answer).await.ok()?;
            refuse(shard, stream, &refusal, client_ip).await;
            None
        }
    }
}

/// After the damping delay (`damping`), sends `pusher:error` and a close frame with the same
/// code, then closes; a repeat offender gets the close frame alone.
async fn refuse(
    shard: &Shard,
    stream: &mut TcpStream,
    refusal: &Refusal,
    client_ip: std::net::IpAddr,
) {
    let (code, message) = (refusal.code, refusal.message.as_str());
    let damping = &shard.config.damping;
    if !crate::damping::damp(damping, client_ip, code)
        .await
        .full_answer()
    {
        let _ = stream.write_all(&frame::close_frame(code, "")).await;
        return;
    }
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
        // The replies to one read's messages go out together (`Connection::cork`).
        conn.cork();
        let ended = events
            .drain(..)
            .find_map(|event| handle_event(shard, conn, event));
        conn.uncork();
        if let Some(end) = ended {
            return end;
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

/// Handles one frame; `Some` when it ends the session.
fn handle_event(shard: &Shard, conn: &Rc<Connection>, event: WsEvent) -> Option<End> {
    match event {
        WsEvent::Text(text) => {
            crate::metrics::with(|m| m.message_in(conn.app.index, text.len()));
            dispatch::handle_text(shard, conn, &text)
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
    if let Poll::Ready(Err(())) = conn.poll_flush(stream, cx) {
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
    // SAFETY: `stream` is owned by this function and open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    conn.queue_close_frame(fd, close);
    let grace = Duration::from_secs(shard.config.server.shutdown_grace);
    let flushed = with_timeout(grace, poll_fn(|cx| conn.poll_flush(&mut stream, cx))).await;
    if matches!(flushed, Some(Ok(()))) {
        linger(shard, &mut stream).await;
    }
}

/// After our close frame: half-closes, then reads (and discards) until the client closes too,
/// for at most the shutdown grace period, 512 bytes a read (every connection of a draining
/// shard lingers at once).
async fn linger(shard: &Shard, stream: &mut TcpStream) {
    let grace = Duration::from_secs(shard.config.server.shutdown_grace);
    http_server::linger(stream, grace, usize::MAX, 512).await;
}
