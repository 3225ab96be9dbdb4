//! One client connection on its shard: the state the shard's other tasks may touch (the send
//! queue, the subscriptions, the activity clock, a close request). The socket itself is owned by
//! the connection's task (`session`), which reads it and flushes what this queue holds.
//!
//! A [`Connection`] lives in an `Rc` shared by the connection task, the shard's connection map
//! and the channel table; everything mutable sits in one `RefCell` that no code holds across an
//! `await`.

use super::send_queue::{FlushOutcome, OutFrame, SendOutcome, SendQueue};
use crate::app::App;
use crate::protocol::{codes, outbound, SocketId};
use crate::ws::frame::{self, SharedFrame};
use ahash::AHashMap;
use futures_lite::AsyncWrite;
use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A request to end the connection, honoured by its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// Close code to send; `None` when the socket is broken and no frame can be sent.
    pub code: Option<u16>,
    /// Reason for the close frame and the log.
    pub reason: String,
}

/// What this connection is subscribed to on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Channel name.
    pub channel: Box<str>,
    /// For presence channels, the member this socket joined as.
    pub presence: Option<PresenceIdentity>,
    /// Whether the subscription is confirmed (`false` while a presence join awaits its home shard).
    pub active: bool,
}

impl Subscription {
    fn from_parts(channel: &str, membership: Membership) -> Self {
        Subscription {
            channel: channel.into(),
            presence: membership.presence,
            active: membership.active,
        }
    }
}

/// A socket's identity in one presence channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceIdentity {
    /// The user id as a string.
    pub user_id: String,
}

/// What the connection keeps per channel (the channel name is the map's key).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    presence: Option<PresenceIdentity>,
    active: bool,
}

#[derive(Debug)]
struct State {
    queue: SendQueue,
    waker: Option<Waker>,
    close: Option<CloseRequest>,
    last_seen: Instant,
    ping_sent_at: Option<Instant>,
    subscriptions: AHashMap<Box<str>, Membership>,
    rate_window_start: Instant,
    rate_window_count: u32,
    /// While set, frames are queued rather than written ([`Connection::cork`]).
    corked: bool,
}

/// One client connection, as the rest of its shard sees it.
#[derive(Debug)]
pub struct Connection {
    /// The id clients and SDKs know this socket by.
    pub socket_id: SocketId,
    /// The app the client connected to.
    pub app: Arc<App>,
    fd: RawFd,
    send_budget: usize,
    state: RefCell<State>,
}

impl Connection {
    /// A new connection on socket `fd`, seen active at `now`.
    ///
    /// # Safety
    ///
    /// `fd` must be an open socket that stays open until [`Connection::mark_closed`] has been
    /// called: the connection writes to it from any task of the shard until then.
    pub unsafe fn new(
        socket_id: SocketId,
        app: Arc<App>,
        fd: RawFd,
        send_budget: usize,
        now: Instant,
    ) -> Self {
        Connection {
            socket_id,
            app,
            fd,
            send_budget,
            state: RefCell::new(State {
                queue: SendQueue::default(),
                waker: None,
                close: None,
                last_seen: now,
                ping_sent_at: None,
                subscriptions: AHashMap::new(),
                rate_window_start: now,
                rate_window_count: 0,
                corked: false,
            }),
        }
    }

    /// The per-shard counter that keys this connection in the shard's tables.
    pub fn local_id(&self) -> u64 {
        self.socket_id.counter()
    }

    /// Sends a frame shared with other sockets (a broadcast).
    pub fn send_shared(&self, frame: &SharedFrame) {
        self.send(OutFrame::Shared(frame.clone()));
    }

    /// Sends one JSON message as a text frame.
    pub fn send_text(&self, text: &str) {
        self.send_frame(frame::text_frame(text));
    }

    /// Sends a raw frame built for this socket alone. (Broadcast frames are counted in bulk by
    /// the fan-out loop; this socket's own frames are counted here.)
    pub fn send_frame(&self, bytes: Vec<u8>) {
        crate::metrics::with(|m| m.messages_out(self.app.index, 1, bytes.len()));
        self.send(OutFrame::Owned(bytes));
    }

    /// Sends `pusher:error` with the given code (`None` for the hosted service's `null`).
    pub fn send_error(&self, code: Option<u16>, message: &str) {
        self.send_text(&outbound::error(code, message));
    }

    fn send(&self, frame: OutFrame) {
        let mut state = self.state.borrow_mut();
        if state.close.is_some() {
            return;
        }
        // SAFETY: `Connection::new`'s contract keeps `fd` open until `mark_closed`, which sets
        // `close`; we return above once `close` is set, and the shard is one thread, so the fd
        // is open for this borrow, which ends with the call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let outcome = if state.corked {
            state.queue.hold(frame, self.send_budget)
        } else {
            state.queue.send(fd, frame, self.send_budget)
        };
        self.handle_outcome(&mut state, outcome);
    }

    /// Holds every frame sent from now on in the queue, unwritten, until [`Connection::uncork`]
    /// writes them together: the replies to the messages of one read (three subscriptions'
    /// `subscription_succeeded`, say) or the upgrade answer with `connection_established` go
    /// out in one `sendmsg(2)` instead of one `send(2)` each. Callers uncork before they yield.
    pub fn cork(&self) {
        self.state.borrow_mut().corked = true;
    }

    /// Ends [`Connection::cork`]: writes what is queued with vectored sends, leaving to the
    /// connection's task what the socket does not take now.
    pub fn uncork(&self) {
        let mut state = self.state.borrow_mut();
        state.corked = false;
        if state.close.is_some() || state.queue.is_empty() {
            return;
        }
        // SAFETY: as in `send`: `close` is not set, so `mark_closed` has not been called and
        // the fd is open for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        match state.queue.flush_vectored(fd) {
            FlushOutcome::Empty => {}
            FlushOutcome::WouldBlock => wake(&state.waker),
            FlushOutcome::Broken => request_close(&mut state, None, "Socket broken"),
        }
    }

    /// Sends bytes prepared for this socket that are not a Pusher message (the upgrade answer):
    /// not counted as a message.
    pub fn send_prepared(&self, bytes: Vec<u8>) {
        self.send(OutFrame::Owned(bytes));
    }

    /// The socket's descriptor when a write may go straight to it: nothing is queued, no close
    /// was asked and it is not corked. It stays open until the caller next yields to the
    /// executor (the connection's task, the only one that closes it, cannot run before).
    pub fn direct_fd(&self) -> Option<RawFd> {
        let state = self.state.borrow();
        (state.close.is_none() && !state.corked && state.queue.is_empty()).then_some(self.fd)
    }

    /// Takes the result of a write of `frames` laid end to end (`total` bytes) that the caller
    /// made itself to [`Connection::direct_fd`] (the fan-out's batched writes,
    /// `socket::fanout_writer`): the rest is queued and flushed by the connection's task, as
    /// for any other send.
    pub fn finish_direct_write<'a, I>(
        &self,
        frames: I,
        total: usize,
        result: std::io::Result<usize>,
    ) where
        I: IntoIterator<Item = &'a SharedFrame>,
    {
        if matches!(result, Ok(n) if n == total) {
            return;
        }
        let mut state = self.state.borrow_mut();
        let frames = frames.into_iter().map(|f| OutFrame::Shared(f.clone()));
        let outcome = state
            .queue
            .after_direct_write(frames, result, self.send_budget);
        self.handle_outcome(&mut state, outcome);
    }

    fn handle_outcome(&self, state: &mut State, outcome: SendOutcome) {
        match outcome {
            SendOutcome::Written => {}
            SendOutcome::Queued => wake(&state.waker),
            SendOutcome::OverBudget => {
                crate::metrics::with(|m| m.send_queue_overflow());
                state.queue.discard_unstarted();
                request_close(
                    state,
                    Some(codes::OVER_CAPACITY),
                    "Send queue over budget: the client is not reading",
                );
            }
            SendOutcome::Broken => request_close(state, None, "Socket broken"),
        }
    }

    /// Asks the connection's task to close with `code` (after what is already queued).
    pub fn close(&self, code: u16, reason: &str) {
        request_close(&mut self.state.borrow_mut(), Some(code), reason);
    }

    /// Records inbound activity (any frame) at `now`.
    pub fn touch(&self, now: Instant) {
        let mut state = self.state.borrow_mut();
        state.last_seen = now;
        state.ping_sent_at = None;
    }

    /// Called by the shard's periodic sweep: pings a connection silent for `activity_timeout`,
    /// and closes one that has not answered within `pong_timeout` of the ping.
    pub fn check_liveness(
        &self,
        now: Instant,
        activity_timeout: std::time::Duration,
        pong_timeout: std::time::Duration,
    ) {
        let ping_due = {
            let state = self.state.borrow();
            match state.ping_sent_at {
                Some(sent) if now.duration_since(sent) >= pong_timeout => {
                    drop(state);
                    self.close(codes::PONG_NOT_RECEIVED, "Pong reply not received");
                    return;
                }
                Some(_) => false,
                None => now.duration_since(state.last_seen) >= activity_timeout,
            }
        };
        if ping_due {
            // A protocol ping for clients that answer them (browsers do), and the JSON ping for
            // those that do not (pusher-js answers it with `pusher:pong`).
            self.send_frame(frame::ping_frame());
            self.send_text(outbound::PING);
            self.state.borrow_mut().ping_sent_at = Some(now);
        }
    }

    /// Counts one client event against the per-second limit; `false` when over it.
    pub fn allow_client_event(&self, now: Instant, per_second: u32) -> bool {
        let mut state = self.state.borrow_mut();
        if now.duration_since(state.rate_window_start).as_secs() >= 1 {
            state.rate_window_start = now;
            state.rate_window_count = 0;
        }
        state.rate_window_count += 1;
        state.rate_window_count <= per_second
    }

    /// The subscription to `channel`, if any (pending or active).
    pub fn subscription(&self, channel: &str) -> Option<Subscription> {
        let state = self.state.borrow();
        let (name, membership) = state.subscriptions.get_key_value(channel)?;
        Some(Subscription::from_parts(name, membership.clone()))
    }

    /// Number of channels this connection is subscribed to (or joining).
    pub fn subscription_count(&self) -> usize {
        self.state.borrow().subscriptions.len()
    }

    /// Whether this socket is `user_id`: it joined some presence channel as that user.
    pub fn is_user(&self, user_id: &str) -> bool {
        self.state
            .borrow()
            .subscriptions
            .values()
            .any(|s| s.presence.as_ref().is_some_and(|p| p.user_id == user_id))
    }

    /// Whether this socket subscribed to (or is joining) a channel that needs a signature: it
    /// counts as authorized for an app that requires sign-in.
    pub fn has_authorized_subscription(&self) -> bool {
        self.state
            .borrow()
            .subscriptions
            .keys()
            .any(|name| crate::protocol::names::ChannelKind::of(name).needs_auth())
    }

    /// Records a subscription (replacing one to the same channel).
    pub fn add_subscription(&self, subscription: Subscription) {
        let membership = Membership {
            presence: subscription.presence,
            active: subscription.active,
        };
        self.state
            .borrow_mut()
            .subscriptions
            .insert(subscription.channel, membership);
    }

    /// Marks the pending subscription to `channel` active; `false` if there is none.
    pub fn activate_subscription(&self, channel: &str) -> bool {
        let mut state = self.state.borrow_mut();
        match state.subscriptions.get_mut(channel).filter(|s| !s.active) {
            Some(s) => {
                s.active = true;
                true
            }
            None => false,
        }
    }

    /// Forgets the subscription to `channel` and returns it.
    pub fn remove_subscription(&self, channel: &str) -> Option<Subscription> {
        let mut state = self.state.borrow_mut();
        let (name, membership) = state.subscriptions.remove_entry(channel)?;
        Some(Subscription::from_parts(&name, membership))
    }

    /// Forgets and returns every subscription (the connection is going away).
    pub fn take_subscriptions(&self) -> Vec<Subscription> {
        std::mem::take(&mut self.state.borrow_mut().subscriptions)
            .into_iter()
            .map(|(name, membership)| Subscription::from_parts(&name, membership))
            .collect()
    }

    /// Writes queued bytes to `stream` until the queue is empty (`Ready(Ok)`), the socket is
    /// full (`Pending`, woken when writable) or broken (`Ready(Err)`). Queued frames go out
    /// together, up to 128 in one `sendmsg` (`SendQueue::flush_vectored`).
    pub fn poll_flush<W: AsyncWrite + AsRawFd + Unpin>(
        &self,
        stream: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ()>> {
        // SAFETY: `stream` is borrowed for the whole call, so its fd stays open.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let mut state = self.state.borrow_mut();
        loop {
            match state.queue.flush_vectored(fd) {
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

    /// Writes what is queued now, without a task or a waker (tests drive flushing by hand).
    #[cfg(test)]
    pub fn flush_queued(&self) -> FlushOutcome {
        // SAFETY: as in `send`: the fd is open until `mark_closed`, and tests call this only
        // on connections they have not closed.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        self.state.borrow_mut().queue.flush_vectored(fd)
    }

    /// Queues the final close frame behind what is still queued, after [`Connection::mark_closed`]
    /// (which stops every other write); `fd` is the socket, borrowed from its owner.
    pub fn queue_close_frame(&self, fd: BorrowedFd<'_>, close: Vec<u8>) {
        self.state
            .borrow_mut()
            .queue
            .send(fd, OutFrame::Owned(close), usize::MAX);
    }

    /// Remembers the connection task's waker, woken when bytes are queued or a close is asked.
    pub fn register_waker(&self, waker: &Waker) {
        let mut state = self.state.borrow_mut();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
    }

    /// Marks the connection closed: nothing more is written to its socket, whoever still holds it.
    /// The socket's owner calls it before closing the socket.
    pub fn mark_closed(&self) {
        request_close(&mut self.state.borrow_mut(), None, "Connection closed");
    }

    /// The pending close request, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.state.borrow().close.clone()
    }
}

fn wake(waker: &Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake_by_ref();
    }
}

fn request_close(state: &mut State, code: Option<u16>, reason: &str) {
    if state.close.is_none() {
        state.close = Some(CloseRequest {
            code,
            reason: reason.to_string(),
        });
        wake(&state.waker);
    }
}
