//! `raw-fanout`'s server: the physical limit of a fanout on this machine. One thread, one
//! edge-triggered epoll loop, no Warren: it accepts the harness's connections, answers the
//! WebSocket upgrade, `pusher:connection_established` and the subscription with canned frames,
//! then at each scheduled time frames one message **once** and writes that frame to every socket.
//! Its CPU time is read from `/proc/self/task/TID/schedstat`.
//!
//! The fan-out writes go through one of two engines ([`RawEngine`]): `epoll`, one `send(2)` per
//! socket from the loop (a short write leaves the rest in the socket's `tx`, flushed on
//! `EPOLLOUT`); or `io-uring` (the default), one io_uring SEND SQE per socket pointing into the
//! same framed buffer, submitted in batches of up to the ring size, at most one SEND in flight
//! per socket (a short write resubmits the remainder; later frames wait in the socket's queue;
//! `EAGAIN` waits for the socket's next `EPOLLOUT`). Completions that the kernel posts later
//! (a send that had to wait for room) wake the loop through an eventfd registered for
//! asynchronous completions only.

use crate::cli::RawEngine;
use crate::procfs;
use crate::runtime::{Control, Phase};
use crate::scenario::delivery::{payload, Shared, EVENT};
use crate::ws;
use io_uring::{opcode, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The accept key for the harness's fixed `Sec-WebSocket-Key` (RFC 6455's example).
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Token of the listener in epoll.
const LISTENER: u64 = u64::MAX;
/// Token of the io_uring completion eventfd in epoll.
const EVENTFD: u64 = u64::MAX - 1;
/// Submission queue entries of the io_uring engine (the completion queue is twice that; the
/// ring's memory stays far below an 8 MiB `RLIMIT_MEMLOCK`).
const RING_ENTRIES: u32 = 1024;

/// A running raw server.
#[derive(Debug)]
pub struct RawServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its thread's kernel id (set once the thread runs).
    pub tid: Arc<AtomicI32>,
    handle: JoinHandle<()>,
}

impl RawServer {
    /// Starts the server on an ephemeral loopback port, serving `channel`. It waits for the
    /// run's control block and schedule in `cell`.
    pub fn start(
        channel: String,
        cell: Arc<OnceLock<(Arc<Control>, Arc<Shared>)>>,
        cpu: Option<usize>,
        engine: RawEngine,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tid = Arc::new(AtomicI32::new(0));
        let tid_out = tid.clone();
        let handle = std::thread::Builder::new()
            .name("raw-server".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                tid_out.store(procfs::gettid(), Ordering::Release);
                if let Err(e) = serve(listener, &channel, &cell, engine) {
                    eprintln!("warren-loadtest: raw server: {e}");
                }
            })?;
        while tid.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self { addr, tid, handle })
    }

    /// Waits for the server thread to end (it ends in the stop phase).
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

/// Pins the calling thread to `cpu` (a failure is reported and ignored).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // valid set of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "warren-loadtest: cannot pin the raw server to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Request,
    Subscribe,
    Open,
    Closed,
}

struct Conn {
    fd: OwnedFd,
    state: State,
    rx: Vec<u8>,
    /// Bytes not yet written by the epoll path (set-up, and the fan-out with `epoll`).
    tx: Vec<u8>,
    /// io_uring: frames still to send, the first from its offset (the pending tail).
    out: VecDeque<(Rc<[u8]>, usize)>,
    /// io_uring: a SEND of `out`'s front is in flight.
    busy: bool,
    /// io_uring: the socket is in the engine's ready list.
    listed: bool,
    /// io_uring: the last SEND got `EAGAIN`; wait for `EPOLLOUT`.
    blocked: bool,
}

/// Lists the socket as ready for a SEND, unless it has one in flight, is listed or blocked, or
/// has nothing to send.
fn make_ready(ready: &mut VecDeque<usize>, conn: &mut Conn, i: usize) {
    if !conn.busy && !conn.listed && !conn.blocked && !conn.out.is_empty() {
        conn.listed = true;
        ready.push_back(i);
    }
}

/// The io_uring fan-out engine.
struct Uring {
    ring: IoUring,
    /// The most SENDs in flight at once (the completion queue's size, so that it never
    /// overflows).
    cap: usize,
    inflight: usize,
    /// Sockets with something in `out` and no SEND in flight, in order.
    ready: VecDeque<usize>,
    /// Sockets waiting for room after `EAGAIN`.
    blocked: usize,
    eventfd: OwnedFd,
}

impl Uring {
    fn new(epoll: i32) -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: no preconditions; checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter().register_eventfd_async(efd)?;
        epoll_add(epoll, efd, EVENTFD)?;
        let cap = ring.params().cq_entries() as usize;
        Ok(Self {
            ring,
            cap,
            inflight: 0,
            ready: VecDeque::new(),
            blocked: 0,
            eventfd,
        })
    }

    /// Queues `frame` on every open socket and sends what can be sent now.
    fn fanout(&mut self, conns: &mut [Conn], frame: Vec<u8>) -> io::Result<()> {
        let frame: Rc<[u8]> = frame.into();
        for (i, conn) in conns.iter_mut().enumerate() {
            if conn.state != State::Open {
                continue;
            }
            if !conn.tx.is_empty() {
                // Set-up output still queued goes first.
                let tx = std::mem::take(&mut conn.tx);
                conn.out.push_back((tx.into(), 0));
            }
            conn.out.push_back((frame.clone(), 0));
            make_ready(&mut self.ready, conn, i);
        }
        self.pump(conns)
    }

    /// The socket may have room again (`EPOLLOUT`, or the periodic retry).
    fn unblock(&mut self, conn: &mut Conn, i: usize) {
        if conn.blocked {
            conn.blocked = false;
            self.blocked -= 1;
            if conn.state == State::Open {
                make_ready(&mut self.ready, conn, i);
            } else {
                conn.out.clear();
            }
        }
    }

    /// Submits a SEND for every ready socket (batches of up to the ring size, never more than
    /// `cap` in flight) and reaps completions, until no socket is ready.
    fn pump(&mut self, conns: &mut [Conn]) -> io::Result<()> {
        loop {
            self.reap(conns);
            let queued = self.fill(conns);
            if self.ready.is_empty() {
                if queued > 0 {
                    self.submit(0)?;
                    self.reap(conns);
                }
                if self.ready.is_empty() {
                    return Ok(());
                }
                continue;
            }
            // More to send: the queue is full, or `cap` SENDs are in flight.
            self.submit(usize::from(self.inflight >= self.cap))?;
        }
    }

    fn submit(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Pushes SENDs for ready sockets while the submission queue has room; returns how many.
    fn fill(&mut self, conns: &mut [Conn]) -> usize {
        let mut queued = 0;
        let mut sq = self.ring.submission();
        while self.inflight < self.cap && !sq.is_full() {
            let Some(i) = self.ready.pop_front() else {
                break;
            };
            let conn = &mut conns[i];
            conn.listed = false;
            if conn.state != State::Open {
                conn.out.clear();
                continue;
            }
            let Some((buf, off)) = conn.out.front() else {
                continue;
            };
            let data = &buf[*off..];
            let sqe = opcode::Send::new(
                types::Fd(conn.fd.as_raw_fd()),
                data.as_ptr(),
                data.len() as u32,
            )
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(i as u64);
            // SAFETY: the buffer is an `Rc` held in `conn.out` until this SEND's completion is
            // reaped (`busy`), and the descriptor stays open as long as the server runs.
            unsafe { sq.push(&sqe) }.expect("the submission queue has room");
            conn.busy = true;
            self.inflight += 1;
            queued += 1;
        }
        queued
    }

    /// Takes the completions there are: advances each socket's tail, queues the rest.
    fn reap(&mut self, conns: &mut [Conn]) {
        for cqe in self.ring.completion() {
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            self.inflight -= 1;
            let conn = &mut conns[i];
            conn.busy = false;
            if res >= 0 {
                if let Some((buf, off)) = conn.out.front_mut() {
                    *off += res as usize;
                    if *off >= buf.len() {
                        conn.out.pop_front();
                    }
                }
            } else if res == -libc::EAGAIN {
                conn.blocked = true;
                self.blocked += 1;
                continue;
            } else if res != -libc::EINTR {
                conn.state = State::Closed;
                // SAFETY: a valid descriptor.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
            if conn.state == State::Open {
                make_ready(&mut self.ready, conn, i);
            } else {
                conn.out.clear();
            }
        }
    }

    /// Drains the completion eventfd.
    fn drain_eventfd(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into `n`.
        unsafe { libc::read(self.eventfd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }

    /// At the end: shuts down the sockets with a SEND in flight and waits (2 s at most) for the
    /// completions, so that no SEND outlives its buffer. Returns false if some did not come.
    fn finish(&mut self, conns: &mut [Conn]) -> bool {
        for conn in conns.iter().filter(|c| c.busy) {
            // SAFETY: a valid descriptor.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            for conn in conns.iter_mut() {
                conn.state = State::Closed;
            }
            self.reap(conns);
            if self.inflight == 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            let _ = self.submit(0);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A server text frame (unmasked) with `text`.
fn frame(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 10);
    out.push(0x81);
    let len = text.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// Writes as much of `data` as the socket takes; the rest (and anything already queued) stays
/// in `tx`. Err on a broken socket.
fn write(conn: &mut Conn, data: &[u8]) -> io::Result<()> {
    if !conn.tx.is_empty() {
        conn.tx.extend_from_slice(data);
        return flush(conn);
    }
    let n = send(conn.fd.as_raw_fd(), data)?;
    if n < data.len() {
        conn.tx.extend_from_slice(&data[n..]);
    }
    Ok(())
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.tx.is_empty() {
        let n = send(conn.fd.as_raw_fd(), &conn.tx)?;
        if n == 0 {
            break;
        }
        conn.tx.drain(..n);
    }
    Ok(())
}

fn send(fd: i32, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `data`.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(0),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

fn epoll_add(epoll: i32, fd: i32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: token,
    };
    // SAFETY: valid descriptors and event.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn serve(
    listener: TcpListener,
    channel: &str,
    cell: &OnceLock<(Arc<Control>, Arc<Shared>)>,
    engine: RawEngine,
) -> io::Result<()> {
    let (control, shared) = loop {
        if let Some(v) = cell.get() {
            break v.clone();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // SAFETY: no preconditions; checked.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let epoll_fd: OwnedFd = unsafe { OwnedFd::from_raw_fd(epoll) };
    epoll_add(epoll, listener.as_raw_fd(), LISTENER)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut uring = match engine {
        RawEngine::IoUring => Some(Uring::new(epoll)?),
        RawEngine::Epoll => None,
    };
    let mut last_retry = Instant::now();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut next = 0u64;
    let mut socket_id = 0u64;
    let subscribed = frame(
        &serde_json::json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": "{}",
        })
        .to_string(),
    );
    let mut buf = vec![0u8; 16384];
    loop {
        let phase = control.phase();
        if phase == Phase::Stop {
            if let Some(uring) = uring.as_mut() {
                if !uring.finish(&mut conns) {
                    // A SEND may still read its buffer: keep the buffers alive.
                    eprintln!(
                        "warren-loadtest: raw server: io_uring sends still in flight at the end"
                    );
                    std::mem::forget(conns);
                }
            }
            break;
        }
        let mut timeout = Duration::from_millis(2);
        if phase == Phase::Run {
            let run_at = control.run_at();
            let now = Instant::now();
            while next < shared.messages {
                let due = shared.due(run_at, next);
                if due > now {
                    timeout = timeout.min(due - now);
                    break;
                }
                let data = payload(0, next, control.ns_of(due), shared.payload_bytes);
                let text = serde_json::json!({"event": EVENT, "channel": channel, "data": data})
                    .to_string();
                let bytes = frame(&text);
                if let Some(uring) = uring.as_mut() {
                    uring.fanout(&mut conns, bytes)?;
                } else {
                    for conn in conns.iter_mut().filter(|c| c.state == State::Open) {
                        if write(conn, &bytes).is_err() {
                            conn.state = State::Closed;
                        }
                    }
                }
                shared.count_sent(0, &control);
                next += 1;
            }
            if next >= shared.messages {
                shared.done.store(true, Ordering::Release);
            }
        }
        let ms = timeout.as_micros().div_ceil(1000) as i32;
        // SAFETY: `events` is a valid buffer.
        let n = unsafe {
            libc::epoll_wait(
                epoll_fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        for event in &events[..n.max(0) as usize] {
            let token = event.u64;
            if token == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(true)?;
                            let _ = stream.set_nodelay(true);
                            let fd = OwnedFd::from(stream);
                            epoll_add(epoll, fd.as_raw_fd(), conns.len() as u64)?;
                            conns.push(Conn {
                                fd,
                                state: State::Request,
                                rx: Vec::new(),
                                tx: Vec::new(),
                                out: VecDeque::new(),
                                busy: false,
                                listed: false,
                                blocked: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("warren-loadtest: raw server accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            if token == EVENTFD {
                if let Some(uring) = uring.as_ref() {
                    uring.drain_eventfd();
                }
                continue;
            }
            let conn = &mut conns[token as usize];
            if let Some(uring) = uring.as_mut() {
                uring.unblock(conn, token as usize);
            }
            if conn.state == State::Closed {
                continue;
            }
            if handle(conn, &mut buf, &subscribed, &mut socket_id).is_err() {
                conn.state = State::Closed;
                conn.tx = Vec::new();
                // Shut the socket down now (the fd itself is closed when the server ends).
                // SAFETY: a valid descriptor.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
        if let Some(uring) = uring.as_mut() {
            // A missed `EPOLLOUT` must not strand a socket: retry the blocked ones now and then.
            if uring.blocked > 0 && last_retry.elapsed() >= Duration::from_millis(100) {
                last_retry = Instant::now();
                for (i, conn) in conns.iter_mut().enumerate() {
                    uring.unblock(conn, i);
                }
            }
            // Completions posted meanwhile, and sockets that have room again.
            uring.pump(&mut conns)?;
        }
    }
    Ok(())
}

/// Reads what is there and moves the connection's set-up forward; flushes queued output.
fn handle(
    conn: &mut Conn,
    buf: &mut [u8],
    subscribed: &[u8],
    socket_id: &mut u64,
) -> io::Result<()> {
    flush(conn)?;
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe {
            libc::recv(
                conn.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if conn.state == State::Open {
            // Pongs and the final close: only a close frame matters.
            if buf[..n as usize].first().is_some_and(|b| b & 0x0F == 0x8) {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
            continue;
        }
        conn.rx.extend_from_slice(&buf[..n as usize]);
        if conn.state == State::Request {
            let Some(end) = conn.rx.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            conn.rx.drain(..end + 4);
            *socket_id += 1;
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
            )
            .into_bytes();
            let established = serde_json::json!({
                "event": "pusher:connection_established",
                "data": format!(r#"{{"socket_id":"1.{socket_id}","activity_timeout":120}}"#),
            })
            .to_string();
            out.extend_from_slice(&frame(&established));
            write(conn, &out)?;
            conn.state = State::Subscribe;
        }
        if conn.state == State::Subscribe {
            if let Ok(Some(head)) = ws::decode_head(&conn.rx) {
                conn.rx.drain(..head.total_len());
                write(conn, subscribed)?;
                conn.state = State::Open;
                conn.rx = Vec::new();
            }
        }
    }
}
