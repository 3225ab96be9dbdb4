//! The plain-HTTP side of a connection: reading request heads and bodies (the whole request
//! within `handshake_timeout`, however slowly it trickles in), answering them with keep-alive
//! and pipelining, until the client closes or asks for a WebSocket upgrade, which is handed
//! back to the caller with whatever bytes followed its head.

use super::request::{self, HeadError, RequestHead};
use super::Response;
use crate::deadline::with_timeout;
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::time::Duration;

/// Bytes read from the socket at most per read of a request head (small, so that an oversized
/// head is seen as such before it is complete).
const HEAD_CHUNK: usize = 2048;

/// Bytes read from the socket at most per read of a request body.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes of an unread request (an oversized or late body) read and discarded after a refusal at
/// most, so that closing does not reset the connection before the client has read the answer.
/// Beyond it the connection is closed anyway (as nginx's `lingering_close` does).
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// How the plain-HTTP part of a connection ended.
pub enum Served {
    /// The connection is done (closed by the client, refused, or `Connection: close`).
    Closed,
    /// The client asked for a WebSocket upgrade; `leftover` is what it sent after the head.
    Upgrade {
        /// The upgrade request's head (boxed: it is large, and the variant is rare).
        head: Box<RequestHead>,
        /// Bytes after the head (frames the client did not wait to send).
        leftover: Vec<u8>,
    },
}

/// Serves plain HTTP requests on `stream` until it closes or asks for an upgrade.
pub async fn serve(shard: &Shard, stream: &mut TcpStream) -> Served {
    let limit = Duration::from_secs(shard.config.server.handshake_timeout);
    let mut buffered = Vec::new();
    loop {
        let request = Box::pin(with_timeout(
            limit,
            read_request(shard, stream, &mut buffered),
        ))
        .await;
        let (head, body) = match request {
            Some(Ok(Some(request))) => request,
            Some(Ok(None)) => return Served::Closed,
            Some(Err(error)) => {
                refuse(shard, stream, error).await;
                return Served::Closed;
            }
            // An idle keep-alive connection that sent nothing is closed silently.
            None if buffered.is_empty() => return Served::Closed,
            None => {
                let error = HeadError {
                    status: 408,
                    message: "Request not received in time",
                };
                refuse(shard, stream, error).await;
                return Served::Closed;
            }
        };
        if head.is_websocket() {
            return Served::Upgrade {
                head: Box::new(head),
                leftover: body,
            };
        }
        let response = Box::pin(super::respond(shard, &head, &body)).await;
        let close = head.wants_close;
        if write_response(stream, &response, close).await.is_err() || close {
            return Served::Closed;
        }
    }
}

/// Answers with `error` and `Connection: close`, then lingers: the client may still be sending
/// the request (a body over the limit is refused before it is read), and closing a socket with
/// unread bytes resets it, which can destroy the answer before the client reads it.
pub async fn refuse(shard: &Shard, stream: &mut TcpStream, error: HeadError) {
    let response =
        Response::text(error.status, error.message).with_headers(error.response_headers());
    if write_response(stream, &response, true).await.is_ok() {
        let grace = Duration::from_secs(shard.config.server.shutdown_grace);
        linger(stream, grace, LINGER_BYTES, READ_CHUNK).await;
    }
}

/// Half-closes `stream` (our side is done), then reads and discards what the client still
/// sends until it closes too, `limit` passes or `max_bytes` were discarded, whichever comes
/// first, `chunk` bytes a read (keep it small where many connections linger at once: a drain
/// closes every connection of a shard together). The caller drops the stream afterwards.
pub async fn linger(stream: &mut TcpStream, limit: Duration, max_bytes: usize, chunk: usize) {
    let _ = stream.close().await;
    with_timeout(limit, async {
        let mut sink = vec![0u8; chunk];
        let mut discarded = 0;
        while discarded < max_bytes {
            match stream.read(&mut sink).await {
                Ok(n) if n > 0 => discarded += n,
                _ => break,
            }
        }
    })
    .await;
}

/// Reads one request: its head and, for plain HTTP, its body. For a WebSocket upgrade the "body"
/// is whatever the client sent after the head.
async fn read_request(
    shard: &Shard,
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
) -> Result<Option<(RequestHead, Vec<u8>)>, HeadError> {
    let Some(head) = read_head(stream, buffered).await? else {
        return Ok(None);
    };
    let body = if head.is_websocket() {
        std::mem::take(buffered)
    } else {
        read_body(shard, stream, &head, buffered).await?
    };
    Ok(Some((head, body)))
}

/// Reads until a whole request head is buffered; `Ok(None)` when the peer closed before
/// sending anything. The head's bytes are removed from `buffered`.
async fn read_head(
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    loop {
        if !buffered.is_empty() {
            if let Some((head, length)) = request::parse_request_head(buffered)? {
                buffered.drain(..length);
                return Ok(Some(head));
            }
        }
        match read_more(stream, buffered, HEAD_CHUNK).await {
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

/// The largest `max_request_body_bytes` of the shard's current apps (the default without apps).
fn largest_request_body(shard: &Shard) -> usize {
    shard
        .apps()
        .iter()
        .map(|a| a.config.max_request_body_bytes)
        .max()
        .unwrap_or(super::MAX_BODY_BYTES)
}

async fn read_body(
    shard: &Shard,
    stream: &mut TcpStream,
    head: &RequestHead,
    buffered: &mut Vec<u8>,
) -> Result<Vec<u8>, HeadError> {
    let length = head.content_length.unwrap_or(0);
    // The app is not known yet: the largest limit of any app (of the latest reload) bounds what
    // is buffered; the app's own limit is checked once the route names it (413 either way).
    if length > largest_request_body(shard) {
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

/// Appends up to `at_most` bytes read from `stream` to `buffered`; returns the count, 0 on EOF
/// or error. `buffered` only ever holds bytes that arrived, even when the read is cancelled by
/// a timeout (so an idle connection is told apart from a slow one).
async fn read_more(stream: &mut TcpStream, buffered: &mut Vec<u8>, at_most: usize) -> usize {
    // Read straight into `buffered`'s tail (a chunk of its own was an allocation and a copy per
    // read, every connect); the guard cuts the unfilled tail off however the read ends.
    let start = buffered.len();
    buffered.resize(start + at_most.min(READ_CHUNK), 0);
    let mut tail = KeepFilled {
        buffer: buffered,
        filled: start,
    };
    let n = stream.read(&mut tail.buffer[start..]).await.unwrap_or(0);
    tail.filled = start + n;
    n
}

/// Truncates `buffer` to `filled` bytes when dropped: when a read into its tail completes, and
/// also when it is cancelled (a timeout), so that only bytes that arrived stay buffered.
struct KeepFilled<'a> {
    buffer: &'a mut Vec<u8>,
    filled: usize,
}

impl Drop for KeepFilled<'_> {
    fn drop(&mut self) {
        self.buffer.truncate(self.filled);
    }
}

/// Writes `response`; `close` adds `Connection: close`.
pub async fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    close: bool,
) -> std::io::Result<()> {
    stream.write_all(&response.to_bytes(close)).await
}
