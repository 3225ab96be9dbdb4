//! The fan-out's writes, batched across sockets.
//!
//! A broadcast goes to thousands of sockets, and one `send(2)` per socket costs one system call
//! per delivery. [`FanoutWriter`] instead puts one io_uring SEND per socket (a SENDMSG when
//! several frames go out together) into a small ring of its own and submits up to [`BATCH`] of
//! them with one `io_uring_enter(2)`, every entry pointing into the same shared frame bytes.
//!
//! The sends carry `MSG_DONTWAIT`, so the kernel completes each one while it handles the
//! submission: a socket without room answers `EAGAIN` (or takes part of the bytes) instead of
//! waiting. [`FanoutWriter::write`] reaps every completion before it returns, so nothing is in
//! flight when the fan-out yields to the executor, no buffer or descriptor has to outlive the
//! call, and a connection's state is never touched by two writers at once. What a socket did
//! not take is queued in its `SendQueue` and flushed by the connection's own task, as for any
//! other send (`Connection::finish_direct_write`).
//!
//! Sockets that already have frames queued (they must get the new ones behind those) and the
//! socket a frame skips (a client event's sender) take the ordinary per-socket path,
//! `Connection::send_shared`, so each socket's order is kept.
//!
//! Where no ring can be set up (an old kernel, a locked-memory or io_uring sysctl limit), the same
//! batches go out with one `sendmsg(2)` per socket: slower, the same bytes.
//!
//! This ring is separate from glommio's: glommio's sends copy each buffer into a DMA buffer
//! and track it as a future, which a broadcast to thousands of sockets does not need.

use super::send_queue::{send_nonblocking, send_vectored_nonblocking};
use super::Connection;
use crate::protocol::{codes, SocketId};
use crate::ws::frame::SharedFrame;
use io_uring::{opcode, types, IoUring};
use smallvec::SmallVec;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;

/// Sockets per submission, and the ring's size. The fan-out checks for a yield between batches,
/// so this is also its preemption grain: 32 sockets are ~0.15 ms of one core. Measured on 5,000
/// subscribers with back-to-back triggers (docs/benchmarks.md): 64 answered at a 1.3–1.9 ms
/// median, 32 at 0.7–1.2 ms, for ~2 % more CPU per delivery past saturation (one submission per
/// 32 sends instead of 64).
pub const BATCH: usize = 32;

/// Flags of every fan-out send: never wait for room, never raise `SIGPIPE`.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// One frame of a fan-out, with the socket it skips.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The encoded frame, shared by every subscriber.
    pub frame: &'a SharedFrame,
    /// The socket that does not get it (a client event's sender), if any.
    pub except: Option<SocketId>,
}

/// What one [`FanoutWriter::write`] handed to sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handed {
    /// Frames, counted once per socket.
    pub frames: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl Handed {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: Handed) {
        self.frames += other.frames;
        self.bytes += other.bytes;
    }
}

/// Writes broadcast frames to many sockets with few system calls (see the module docs).
pub struct FanoutWriter {
    ring: Option<IoUring>,
    /// The sockets of the batch being built, with their descriptors; an entry's index is its
    /// completion's `user_data`.
    batch: Vec<(Rc<Connection>, RawFd)>,
}

impl FanoutWriter {
    /// A writer with its own io_uring, or one that falls back to `sendmsg(2)` (logged) where
    /// the ring cannot be set up.
    pub fn new() -> Self {
        let ring = match IoUring::new(BATCH as u32) {
            Ok(ring) => Some(ring),
            Err(e) => {
                tracing::warn!(error = %e, "no io_uring for the fan-out; writing with sendmsg(2)");
                None
            }
        };
        FanoutWriter {
            ring,
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// A writer that always uses `sendmsg(2)`, as where no ring can be set up.
    pub fn without_ring() -> Self {
        FanoutWriter {
            ring: None,
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Whether the writes go through io_uring.
    pub fn uses_io_uring(&self) -> bool {
        self.ring.is_some()
    }

    /// Writes `broadcast`'s frames, in order, to each of `sockets`, skipping each frame's
    /// `except`, and returns what it handed to sockets. Every write has completed (or been
    /// queued behind the socket's other frames) when it returns.
    pub fn write<'c, I>(&mut self, sockets: I, broadcast: &Broadcast<'_>) -> Handed
    where
        I: IntoIterator<Item = &'c Rc<Connection>>,
    {
        let mut handed = Handed::default();
        for conn in sockets {
            if broadcast.skipping.contains(&conn.socket_id) {
                handed.add(send_each_but_own(conn, broadcast.outgoing));
                continue;
            }
            handed.add(broadcast.each);
            match conn.direct_fd() {
                Some(fd) => self.batch.push((conn.clone(), fd)),
                None => broadcast
                    .frames
                    .iter()
                    .for_each(|frame| conn.send_shared(frame)),
            }
            if self.batch.len() == BATCH {
                self.flush(broadcast);
            }
        }
        self.flush(broadcast);
        handed
    }

    /// Writes the batch and hands each socket its result.
    fn flush(&mut self, broadcast: &Broadcast<'_>) {
        if self.batch.is_empty() {
            return;
        }
        let frames = &broadcast.frames[..];
        if let Some(ring) = self.ring.as_mut() {
            let mut done = [false; BATCH];
            if let Err(e) = submit_and_reap(ring, &self.batch, broadcast, &mut done) {
                // Not expected (the ring is ours and sized for the batch): give the ring up
                // (dropping it before the frames) and end the connections whose writes are
                // unaccounted for; their clients reconnect.
                tracing::error!(error = %e, "fan-out io_uring failed; writing with sendmsg(2)");
                self.ring = None;
                for ((conn, _), _) in self.batch.iter().zip(done).filter(|(_, done)| !done) {
                    conn.close(codes::SHUTTING_DOWN, "Server error: reconnect");
                }
            }
        } else {
            for (conn, fd) in &self.batch {
                let result = write_one(*fd, frames);
                conn.finish_direct_write(frames.iter().copied(), broadcast.each.bytes, result);
            }
        }
        self.batch.clear();
    }
}

impl Default for FanoutWriter {
    fn default() -> Self {
        FanoutWriter::new()
    }
}

/// The per-socket path for the socket some frame skips: each other frame, in order.
fn send_each_but_own(conn: &Connection, frames: &[Outgoing<'_>]) -> Handed {
    let mut handed = Handed::default();
    for outgoing in frames.iter().filter(|o| o.except != Some(conn.socket_id)) {
        conn.send_shared(outgoing.frame);
        handed.add(Handed {
            frames: 1,
            bytes: outgoing.frame.len(),
        });
    }
    handed
}

/// The frames of one fan-out, prepared once for all its sockets (whatever the number of
/// [`FanoutWriter::write`] calls it takes): the frames, the sockets some frame skips, what one
/// socket gets, and the message header for SENDMSG.
pub struct Broadcast<'a> {
    outgoing: &'a [Outgoing<'a>],
    frames: SmallVec<[&'a SharedFrame; 8]>,
    skipping: SmallVec<[SocketId; 2]>,
    /// What a socket that no frame skips gets.
    each: Handed,
    layout: Box<FrameLayout>,
}

impl<'a> Broadcast<'a> {
    /// Prepares `outgoing` (one channel's frames, in order) for writing.
    pub fn new(outgoing: &'a [Outgoing<'a>]) -> Self {
        let frames: SmallVec<[&SharedFrame; 8]> = outgoing.iter().map(|o| o.frame).collect();
        let skipping = outgoing.iter().filter_map(|o| o.except).collect();
        let each = Handed {
            frames: frames.len(),
            bytes: frames.iter().map(|frame| frame.len()).sum(),
        };
        let layout = FrameLayout::new(&frames);
        Broadcast {
            outgoing,
            frames,
            skipping,
            each,
            layout,
        }
    }
}

/// The frames of one write as the kernel reads them: slices for `sendmsg`, and the message
/// header that points at them, shared by every socket's SENDMSG entry.
struct FrameLayout {
    iovecs: SmallVec<[libc::iovec; 8]>,
    header: libc::msghdr,
}

impl FrameLayout {
    fn new(frames: &[&SharedFrame]) -> Box<Self> {
        let iovecs = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            })
            .collect();
        // SAFETY: `msghdr` is plain data for which all-zero is a valid value (no name, no
        // control data, no flags).
        let header: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut layout = Box::new(FrameLayout { iovecs, header });
        // Boxed so that the header's pointer into `iovecs` (inline in the SmallVec) stays put.
        layout.header.msg_iov = layout.iovecs.as_mut_ptr();
        layout.header.msg_iovlen = layout.iovecs.len() as _;
        layout
    }
}

/// Submits one SEND (or SENDMSG) per socket of `batch` and hands each socket its result once
/// every entry has completed.
fn submit_and_reap(
    ring: &mut IoUring,
    batch: &[(Rc<Connection>, RawFd)],
    broadcast: &Broadcast<'_>,
    done: &mut [bool; BATCH],
) -> io::Result<()> {
    let frames = &broadcast.frames[..];
    {
        let mut queue = ring.submission();
        for (index, (_, fd)) in batch.iter().enumerate() {
            let entry = send_entry(*fd, frames, &broadcast.layout).user_data(index as u64);
            // SAFETY: the entry points at `frames`' bytes and at the layout, both borrowed by this
            // function, which returns only after reaping every entry it pushed; `fd` is open until
            // the connection's task runs (`Connection::direct_fd`), which cannot happen before
            // this synchronous call ends. The queue is empty here and `batch` holds at most
            // `BATCH` entries, the ring's size, so the push cannot fail.
            unsafe { queue.push(&entry) }.map_err(|_| io::Error::other("submission queue full"))?;
        }
    }
    let mut reaped = 0;
    while reaped < batch.len() {
        match ring.submit_and_wait(batch.len() - reaped) {
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
        for completion in ring.completion() {
            let index = completion.user_data() as usize;
            let Some((conn, _)) = batch.get(index) else {
                continue;
            };
            let result = completion_result(completion.result());
            conn.finish_direct_write(frames.iter().copied(), broadcast.each.bytes, result);
            done[index] = true;
            reaped += 1;
        }
    }
    Ok(())
}

/// The entry writing `frames` to `fd`: a SEND for one frame, a SENDMSG for several.
fn send_entry(fd: RawFd, frames: &[&SharedFrame], layout: &FrameLayout) -> io_uring::squeue::Entry {
    if let [frame] = frames {
        opcode::Send::new(types::Fd(fd), frame.as_ptr(), frame.len() as u32)
            .flags(SEND_FLAGS)
            .build()
    } else {
        opcode::SendMsg::new(types::Fd(fd), &layout.header)
            .flags(SEND_FLAGS as u32)
            .build()
    }
}

/// A completion's result as `send(2)` would return it.
fn completion_result(result: i32) -> io::Result<usize> {
    if result >= 0 {
        Ok(result as usize)
    } else {
        Err(io::Error::from_raw_os_error(-result))
    }
}

/// Errors of `io_uring_enter(2)` after which waiting again is right.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

/// The fallback: `frames` to `fd` with one `send(2)` or `sendmsg(2)`.
fn write_one(fd: RawFd, frames: &[&SharedFrame]) -> io::Result<usize> {
    // SAFETY: `fd` came from `Connection::direct_fd` in this same synchronous call, so it is
    // open (see there).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if let [frame] = frames {
        return send_nonblocking(fd, frame);
    }
    let slices: SmallVec<[IoSlice<'_>; 8]> = frames.iter().map(|f| IoSlice::new(f)).collect();
    send_vectored_nonblocking(fd, &slices)
}
