//! Pusher client connections on non-blocking sockets, driven by a hand-rolled, edge-triggered
//! epoll loop: one [`Pool`] per client thread.
//!
//! Why not glommio (tried first): its reads arm one io_uring poll per socket per read. On this
//! machine each delivery then cost the *server* an inter-processor interrupt inside
//! `sock_def_readable` (57% of the server's CPU in a perf profile), and the client spent ~95% of
//! a core at 100k messages/s. An epoll waiter costs the sender almost nothing while the client is
//! busy, which is closer to what a remote client costs a real server.

use crate::protocol::{self, ServerMessage};
use crate::ws::{self, opcode, UpgradeResponse};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Initial size of a connection's receive buffer; it grows for larger bursts or frames.
const INITIAL_BUFFER: usize = 2048;
/// Most epoll events taken per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// Where to connect: the resolved address and the upgrade request's `Host` and path.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    /// Builds the target for app `key` from a `ws://host:port[/prefix]` URL.
    pub fn new(url: &str, key: &str) -> Result<Self, String> {
        let endpoint = crate::endpoint::Endpoint::parse(url, "ws")?;
        let prefix = endpoint.prefix.as_str();
        Ok(Self {
            addr: endpoint.addr,
            host: endpoint.host.clone(),
            path: format!(
                "{prefix}/app/{key}?protocol=7&client=warren-loadtest&version={}",
                env!("CARGO_PKG_VERSION")
            ),
        })
    }

    /// The `i`-th of `count` loopback source addresses (127.0.0.1, 127.0.0.2, ...), or `None`
    /// (no explicit bind) when `count <= 1` or the server is not on IPv4 loopback.
    pub fn source_ip(&self, i: usize, count: u32) -> Option<IpAddr> {
        if count <= 1 || !self.addr.ip().is_loopback() || !self.addr.is_ipv4() {
            return None;
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        Some(IpAddr::V4(Ipv4Addr::from(base + (i as u32 % count))))
    }
}

/// Why a connection failed or ended.
#[derive(Debug)]
pub enum ClientError {
    /// A socket error.
    Io(io::Error),
    /// The server answered the upgrade with something other than 101.
    Refused(String),
    /// The server closed the connection (with the close frame's code, if any).
    Closed(Option<u16>),
    /// The server sent something the harness does not understand.
    Protocol(String),
    /// The server sent `pusher:error` while the connection was being set up.
    Pusher(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Refused(status) => write!(f, "upgrade refused: {status}"),
            Self::Closed(Some(code)) => write!(f, "closed by the server with code {code}"),
            Self::Closed(None) => write!(f, "closed by the server"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
            Self::Pusher(text) => write!(f, "pusher:error {text}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A connection's index in its [`Pool`] (the order it was given in).
pub type ConnId = usize;

/// What a connection should do once open.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Local address to bind, if any.
    pub source: Option<IpAddr>,
    /// Channels to subscribe to; `private-` and `presence-` channels are signed with the pool's
    /// secret. The connection counts as subscribed once every one has succeeded (at once, after
    /// the handshake, when there are none).
    pub channels: Vec<String>,
    /// The `channel_data` (user id and info) sent and signed for `presence-` channels.
    pub channel_data: Option<String>,
    /// A `user_data` to sign in with (`pusher:signin`, signed with the pool's secret) before
    /// subscribing; the connection counts as subscribed once `pusher:signin_success` came too.
    pub user_data: Option<String>,
}

/// What [`Pool::poll`] reports.
#[derive(Debug)]
pub enum Event<'a> {
    /// The connection received `subscription_succeeded`.
    Subscribed(ConnId),
    /// A subscribed connection received a text message (pings are answered by the pool). A
    /// presence channel's `subscription_succeeded` (its roster) is also reported this way, just
    /// before the connection's [`Event::Subscribed`].
    Message(ConnId, &'a [u8]),
    /// The connection failed before it was subscribed.
    Failed(ConnId, ClientError),
    /// A subscribed connection was closed or broken by the server.
    Dropped(ConnId, ClientError),
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started yet.
    Waiting,
    /// TCP connect in progress; the upgrade request waits in `tx`.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Upgrading,
    /// Waiting for `pusher:connection_established`.
    Establishing,
    /// `pusher:subscribe` sent.
    Subscribing,
    /// Subscribed: messages go to the caller.
    Subscribed,
    /// Finished (failed, dropped or closed by us).
    Done,
}

/// One connection's socket and buffers.
#[derive(Debug)]
struct Conn {
    spec: ConnSpec,
    socket: Option<Socket>,
    state: State,
    /// Receive buffer; bytes `start..end` are unread.
    rx: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes not yet accepted by the socket.
    tx: Vec<u8>,
    /// Subscriptions sent and not yet confirmed.
    pending: usize,
    /// The socket id from `connection_established`.
    socket_id: Option<String>,
}

/// The connections of one client thread and the epoll instance that drives them.
#[derive(Debug)]
pub struct Pool {
    epoll: OwnedFd,
    target: Target,
    key: String,
    secret: String,
    conns: Vec<Conn>,
    /// Next connection to start.
    next: usize,
    /// Connections to start again, before `next`.
    requeue: Vec<ConnId>,
    /// Connections started and not yet subscribed or failed.
    in_flight: usize,
    concurrency: usize,
    events: Vec<libc::epoll_event>,
}

impl Pool {
    /// A pool that will open one connection per spec (at most `concurrency` being set up at
    /// once), signing private channels with `key` and `secret`.
    pub fn new(
        target: Target,
        key: &str,
        secret: &str,
        specs: Vec<ConnSpec>,
        concurrency: usize,
    ) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is a fresh descriptor that we own.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            target,
            key: key.to_string(),
            secret: secret.to_string(),
            conns: specs
                .into_iter()
                .map(|spec| Conn {
                    spec,
                    socket: None,
                    state: State::Waiting,
                    rx: Vec::new(),
                    start: 0,
                    end: 0,
                    tx: Vec::new(),
                    pending: 0,
                    socket_id: None,
                })
                .collect(),
            next: 0,
            requeue: Vec::new(),
            in_flight: 0,
            concurrency: concurrency.max(1),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
        })
    }

    /// Makes every connection sign in before subscribing, the `k`-th (in spec order) with the
    /// `user_data` `user_data_of(k)`.
    pub fn sign_in_each(&mut self, user_data_of: impl Fn(usize) -> String) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            conn.spec.user_data = Some(user_data_of(i));
        }
    }

    /// Starts connections up to the concurrency limit, waits up to `timeout` for socket events
    /// and handles them, reporting what happened to `on_event`.
    pub fn poll(&mut self, timeout: Duration, on_event: &mut dyn FnMut(Event<'_>)) {
        self.start_more(on_event);
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a valid buffer of `len` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        for k in 0..n.max(0) as usize {
            let libc::epoll_event { events, u64: id } = self.events[k];
            self.on_ready(id as ConnId, events, on_event);
        }
    }

    /// Sends a text message on a subscribed connection (buffering what the socket does not
    /// take at once).
    pub fn send_text(&mut self, id: ConnId, text: &[u8]) -> Result<(), ClientError> {
        let conn = &mut self.conns[id];
        if conn.state != State::Subscribed {
            return Err(ClientError::Closed(None));
        }
        ws::write_masked_frame(&mut conn.tx, opcode::TEXT, text, rand::random());
        conn.flush()
    }

    /// The socket id the server gave connection `id` (once its handshake is done).
    pub fn socket_id(&self, id: ConnId) -> Option<&str> {
        self.conns[id].socket_id.as_deref()
    }

    /// Number of connections in the pool.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Closes connection `id` (close frame 1000 if subscribed); returns whether it was open.
    pub fn close(&mut self, id: ConnId) -> bool {
        let conn = &mut self.conns[id];
        let was_open = conn.socket.is_some();
        if conn.state == State::Subscribed {
            let code = 1000u16.to_be_bytes();
            ws::write_masked_frame(&mut conn.tx, opcode::CLOSE, &code, rand::random());
            let _ = conn.flush();
        } else if was_open && conn.state != State::Done {
            self.in_flight -= 1;
        }
        conn.state = State::Done;
        conn.socket = None;
        conn.rx = Vec::new();
        conn.tx = Vec::new();
        was_open
    }

    /// Starts connection `id` again (after [`Pool::close`]) once the concurrency limit allows.
    pub fn reopen(&mut self, id: ConnId) {
        self.conns[id].state = State::Waiting;
        self.requeue.push(id);
    }

    /// Sends a close frame (1000) on every subscribed connection and closes all sockets.
    pub fn close_all(&mut self) {
        for conn in &mut self.conns {
            if conn.state == State::Subscribed {
                let code = 1000u16.to_be_bytes();
                ws::write_masked_frame(&mut conn.tx, opcode::CLOSE, &code, rand::random());
                let _ = conn.flush();
            }
            conn.state = State::Done;
            conn.socket = None;
        }
    }

    /// Starts connections while fewer than `concurrency` are being set up.
    fn start_more(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        while self.in_flight < self.concurrency
            && (self.next < self.conns.len() || !self.requeue.is_empty())
        {
            let id = match self.requeue.pop() {
                Some(id) => id,
                None => {
                    self.next += 1;
                    self.next - 1
                }
            };
            match self.start(id) {
                Ok(()) => self.in_flight += 1,
                Err(e) => {
                    self.conns[id].state = State::Done;
                    on_event(Event::Failed(id, e.into()));
                }
            }
        }
    }

    /// Creates connection `id`'s socket, starts its connect and registers it.
    fn start(&mut self, id: ConnId) -> io::Result<()> {
        let socket = connect_nonblocking(self.target.addr, self.conns[id].spec.source)?;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: id as u64,
        };
        // SAFETY: both descriptors are valid; `event` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let conn = &mut self.conns[id];
        conn.socket = Some(socket);
        conn.state = State::Connecting;
        conn.rx = vec![0; INITIAL_BUFFER];
        conn.tx = ws::upgrade_request(&self.target.host, &self.target.path);
        Ok(())
    }

    /// Handles readiness `flags` on connection `id`.
    fn on_ready(&mut self, id: ConnId, flags: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        if let Err(e) = self.drive(id, flags, on_event) {
            let conn = &mut self.conns[id];
            let was = conn.state;
            conn.state = State::Done;
            conn.socket = None;
            conn.rx = Vec::new();
            conn.tx = Vec::new();
            match was {
                State::Subscribed => on_event(Event::Dropped(id, e)),
                State::Done | State::Waiting => {}
                _ => {
                    self.in_flight -= 1;
                    on_event(Event::Failed(id, e));
                }
            }
        }
    }

    /// Moves connection `id` forward as far as the socket allows.
    fn drive(
        &mut self,
        id: ConnId,
        flags: u32,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ClientError> {
        let conn = &mut self.conns[id];
        if conn.state == State::Done || conn.state == State::Waiting {
            return Ok(());
        }
        if conn.state == State::Connecting {
            if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                let socket = conn.socket.as_ref().expect("a connecting socket");
                return Err(socket
                    .take_error()?
                    .unwrap_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))
                    .into());
            }
            if flags & libc::EPOLLOUT as u32 == 0 {
                return Ok(());
            }
            conn.state = State::Upgrading;
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            conn.flush()?;
        }
        // Edge-triggered: read until the socket is empty, handling frames as they complete.
        loop {
            if !self.conns[id].fill()? {
                return Ok(());
            }
            while let Some((from, to)) = self.next_text(id)? {
                self.on_text(id, from, to, on_event)?;
            }
        }
    }

    /// The next complete text message of connection `id`, as a range of its buffer; answers
    /// control frames on the way. Consumes the upgrade response first.
    fn next_text(&mut self, id: ConnId) -> Result<Option<(usize, usize)>, ClientError> {
        let conn = &mut self.conns[id];
        if conn.state == State::Upgrading {
            match ws::parse_upgrade_response(&conn.rx[conn.start..conn.end]) {
                UpgradeResponse::Partial => return Ok(None),
                UpgradeResponse::Refused(status) => return Err(ClientError::Refused(status)),
                UpgradeResponse::Accepted(len) => {
                    conn.start += len;
                    conn.state = State::Establishing;
                }
            }
        }
        loop {
            let head = match ws::decode_head(&conn.rx[conn.start..conn.end]) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(None),
                Err(ws::FrameError::TooLarge(len)) => {
                    return Err(ClientError::Protocol(format!("frame of {len} bytes")))
                }
            };
            let from = conn.start + head.payload_start;
            let to = conn.start + head.total_len();
            conn.start = to;
            if let Some(mask) = head.mask {
                for (i, b) in conn.rx[from..to].iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            match head.opcode {
                opcode::TEXT | opcode::BINARY if head.fin => {
                    if to - from < 80 && is_pusher_ping(&conn.rx[from..to]) {
                        let pong = protocol::PONG_MESSAGE.as_bytes();
                        ws::write_masked_frame(&mut conn.tx, opcode::TEXT, pong, rand::random());
                        conn.flush()?;
                        continue;
                    }
                    return Ok(Some((from, to)));
                }
                opcode::PING => {
                    let payload = conn.rx[from..to].to_vec();
                    ws::write_masked_frame(&mut conn.tx, opcode::PONG, &payload, rand::random());
                    conn.flush()?;
                }
                opcode::PONG => {}
                opcode::CLOSE => {
                    return Err(ClientError::Closed(ws::close_code(&conn.rx[from..to])))
                }
                opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {
                    return Err(ClientError::Protocol(
                        "fragmented message: not handled by the harness".into(),
                    ))
                }
                other => return Err(ClientError::Protocol(format!("unknown opcode {other}"))),
            }
        }
    }

    /// Handles the text message at `from..to` of connection `id`'s buffer.
    fn on_text(
        &mut self,
        id: ConnId,
        from: usize,
        to: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ClientError> {
        let conn = &mut self.conns[id];
        let text = &conn.rx[from..to];
        match conn.state {
            State::Subscribed => on_event(Event::Message(id, text)),
            State::Establishing => {
                let msg = parse(text)?;
                if msg.event != protocol::CONNECTION_ESTABLISHED {
                    return Err(unexpected(protocol::CONNECTION_ESTABLISHED, text));
                }
                let socket_id = msg
                    .socket_id()
                    .ok_or_else(|| ClientError::Protocol("no socket_id in the handshake".into()))?;
                for channel in &conn.spec.channels {
                    let subscribe = match (&conn.spec.channel_data, channel) {
                        (Some(data), c) if c.starts_with("presence-") => {
                            let auth = protocol::presence_channel_auth(
                                &self.key,
                                &self.secret,
                                &socket_id,
                                channel,
                                data,
                            );
                            protocol::presence_subscribe_message(channel, &auth, data)
                        }
                        (_, c) if c.starts_with("private-") || c.starts_with("presence-") => {
                            let auth = protocol::private_channel_auth(
                                &self.key,
                                &self.secret,
                                &socket_id,
                                channel,
                            );
                            protocol::subscribe_message(channel, &auth)
                        }
                        _ => protocol::subscribe_message(channel, ""),
                    };
                    ws::write_masked_frame(
                        &mut conn.tx,
                        opcode::TEXT,
                        subscribe.as_bytes(),
                        rand::random(),
                    );
                }
                if let Some(user_data) = &conn.spec.user_data {
                    let auth =
                        protocol::signin_auth(&self.key, &self.secret, &socket_id, user_data);
                    let signin = protocol::signin_message(&auth, user_data);
                    ws::write_masked_frame(
                        &mut conn.tx,
                        opcode::TEXT,
                        signin.as_bytes(),
                        rand::random(),
                    );
                }
                conn.socket_id = Some(socket_id);
                conn.pending =
                    conn.spec.channels.len() + usize::from(conn.spec.user_data.is_some());
                conn.state = State::Subscribing;
                conn.flush()?;
                if conn.pending == 0 {
                    conn.state = State::Subscribed;
                    self.in_flight -= 1;
                    on_event(Event::Subscribed(id));
                }
            }
            State::Subscribing => {
                let msg = parse(text)?;
                if msg.event == protocol::ERROR {
                    return Err(ClientError::Pusher(
                        String::from_utf8_lossy(text).into_owned(),
                    ));
                }
                let subscribed = msg.event == protocol::SUBSCRIPTION_SUCCEEDED
                    && msg
                        .channel
                        .as_deref()
                        .is_some_and(|c| conn.spec.channels.iter().any(|s| s == c));
                if subscribed || msg.event == protocol::SIGNIN_SUCCESS {
                    if msg
                        .channel
                        .as_deref()
                        .is_some_and(|c| c.starts_with("presence-"))
                    {
                        on_event(Event::Message(id, text));
                    }
                    conn.pending -= 1;
                    if conn.pending == 0 {
                        conn.state = State::Subscribed;
                        self.in_flight -= 1;
                        on_event(Event::Subscribed(id));
                    }
                }
            }
            State::Waiting | State::Connecting | State::Upgrading | State::Done => {}
        }
        Ok(())
    }
}

impl Conn {
    /// Writes as much of `tx` as the socket takes.
    fn flush(&mut self) -> Result<(), ClientError> {
        let Some(socket) = &self.socket else {
            return Err(ClientError::Closed(None));
        };
        while !self.tx.is_empty() {
            // SAFETY: the pointer and length describe `tx`, which outlives the call.
            let n = unsafe {
                libc::send(
                    socket.as_raw_fd(),
                    self.tx.as_ptr().cast(),
                    self.tx.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e.into()),
                };
            }
            self.tx.drain(..n as usize);
        }
        Ok(())
    }

    /// Reads once into the buffer (compacting or growing it first). `Ok(false)` when the
    /// socket has nothing more; end of stream is an error.
    fn fill(&mut self) -> Result<bool, ClientError> {
        let Some(socket) = &self.socket else {
            return Ok(false);
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.rx.len() {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.rx.len() {
            let len = (self.rx.len() * 2).max(INITIAL_BUFFER);
            self.rx.resize(len, 0);
        }
        let spare = &mut self.rx[self.end..];
        // SAFETY: the pointer and length describe `spare`, which outlives the call.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(false),
                io::ErrorKind::Interrupted => Ok(true),
                _ => Err(e.into()),
            };
        }
        if n == 0 {
            return Err(ClientError::Closed(None));
        }
        self.end += n as usize;
        Ok(true)
    }
}

/// Parses a server message or says why not.
fn parse(text: &[u8]) -> Result<ServerMessage<'_>, ClientError> {
    ServerMessage::parse(text).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The error for an unexpected message during set-up.
fn unexpected(wanted: &str, text: &[u8]) -> ClientError {
    ClientError::Protocol(format!(
        "expected {wanted}, got {}",
        String::from_utf8_lossy(text)
    ))
}

/// Whether a small text payload is a `pusher:ping` (cheap check before any JSON parsing).
fn is_pusher_ping(payload: &[u8]) -> bool {
    payload
        .windows(protocol::PING.len())
        .any(|w| w == protocol::PING.as_bytes())
        && ServerMessage::parse(payload).is_ok_and(|m| m.event == protocol::PING)
}

/// Starts a non-blocking connect (binding `source` with `IP_BIND_ADDRESS_NO_PORT`, so that
/// the port is picked per destination at connect time).
fn connect_nonblocking(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket, option and value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_urls() {
        let t = Target::new("ws://127.0.0.1:6001", "k").unwrap();
        assert_eq!(t.addr, "127.0.0.1:6001".parse().unwrap());
        assert!(t.path.starts_with("/app/k?protocol=7&"));
        let t = Target::new("ws://127.0.0.1:6001/ws/", "k").unwrap();
        assert!(t.path.starts_with("/ws/app/k?"));
        assert!(Target::new("wss://x", "k").is_err());
        assert_eq!(t.source_ip(0, 1), None);
        assert_eq!(t.source_ip(3, 2), Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn a_refused_connect_is_reported_as_failed() {
        // Port 1 on loopback: nothing listens there.
        let target = Target::new("ws://127.0.0.1:1", "k").unwrap();
        let spec = ConnSpec {
            source: None,
            channels: vec!["c".into()],
            channel_data: None,
            user_data: None,
        };
        let mut pool = Pool::new(target, "k", "s", vec![spec], 1).unwrap();
        let mut failed = false;
        for _ in 0..100 {
            pool.poll(Duration::from_millis(10), &mut |ev| {
                failed |= matches!(ev, Event::Failed(0, _))
            });
            if failed {
                break;
            }
        }
        assert!(failed);
    }
}
