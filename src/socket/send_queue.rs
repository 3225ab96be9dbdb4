//! The write side of a connection: frames go straight to the socket with a non-blocking `send`
//! while nothing is queued; only what the kernel does not take (a short write, `EAGAIN`) waits in
//! the [`SendQueue`], whose byte budget bounds the memory a slow reader can pin. What queued
//! goes out with one vectored `sendmsg(2)` per [`MAX_IOVECS`] frames
//! ([`SendQueue::flush_vectored`]), not one write per frame.

use crate::ws::frame::SharedFrame;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

/// Most frames handed to one `sendmsg(2)`: well under Linux's `IOV_MAX` (`UIO_MAXIOV`, 1024),
/// small enough for the slices to live on the stack, and more than a socket buffer usually takes
/// of broadcast-sized frames in one call.
pub const MAX_IOVECS: usize = 128;

/// A frame waiting to be written: shared by many sockets, or this socket's own.
#[derive(Debug)]
pub enum OutFrame {
    /// A broadcast frame, encoded once for every subscriber.
    Shared(SharedFrame),
    /// A frame only this socket receives (replies, errors, pings).
    Owned(Vec<u8>),
}

impl OutFrame {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            OutFrame::Shared(frame) => frame,
            OutFrame::Owned(frame) => frame,
        }
    }
}

/// What became of a frame handed to [`SendQueue::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The kernel took all of it.
    Written,
    /// Some or all of it waits in the queue; the connection must flush when writable.
    Queued,
    /// The queue would exceed its budget; the frame was dropped and the connection must close.
    OverBudget,
    /// The socket is broken (peer gone); the connection must close.
    Broken,
}

/// What [`SendQueue::flush_vectored`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Everything queued was written.
    Empty,
    /// The socket took what it could (perhaps nothing) and would block: wait until writable.
    WouldBlock,
    /// The socket is broken (peer gone); the connection must close.
    Broken,
}

/// Frames not yet written to one socket, with the offset into the first.
#[derive(Debug, Default)]
pub struct SendQueue {
    frames: VecDeque<OutFrame>,
    offset: usize,
    bytes: usize,
}

impl SendQueue {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Writes `frame` to `fd` at once if nothing is queued, otherwise queues it behind the rest,
    /// refusing to hold more than `budget` bytes.
    pub fn send(&mut self, fd: BorrowedFd<'_>, frame: OutFrame, budget: usize) -> SendOutcome {
        if !self.frames.is_empty() {
            return self.enqueue(frame, 0, budget);
        }
        let result = send_nonblocking(fd, frame.bytes());
        self.after_direct_write([frame], result, budget)
    }

    /// Takes the result of a write the caller made itself, to this (empty) queue's socket, of
    /// `frames` laid end to end (one `send`, `sendmsg` or io_uring SEND): what the kernel did
    /// not take is queued, from the first unwritten byte on, within `budget` bytes.
    pub fn after_direct_write<I>(
        &mut self,
        frames: I,
        result: io::Result<usize>,
        budget: usize,
    ) -> SendOutcome
    where
        I: IntoIterator<Item = OutFrame>,
    {
        debug_assert!(
            self.frames.is_empty(),
            "a direct write behind queued frames"
        );
        let mut written = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return SendOutcome::Broken,
        };
        let mut outcome = SendOutcome::Written;
        for frame in frames {
            let len = frame.bytes().len();
            if written >= len {
                written -= len;
                continue;
            }
            outcome = self.enqueue(frame, written, budget);
            if outcome == SendOutcome::OverBudget {
                return outcome;
            }
            written = 0;
        }
        outcome
    }

    /// Queues `frame` behind the rest without trying to write it, within `budget` bytes.
    pub fn hold(&mut self, frame: OutFrame, budget: usize) -> SendOutcome {
        self.enqueue(frame, 0, budget)
    }

    /// Queues `frame` of which the first `written` bytes already went out, within `budget`.
    fn enqueue(&mut self, frame: OutFrame, written: usize, budget: usize) -> SendOutcome {
        let remaining = frame.bytes().len() - written;
        if self.bytes + remaining > budget {
            return SendOutcome::OverBudget;
        }
        if self.frames.is_empty() {
            self.offset = written;
        }
        self.bytes += remaining;
        self.frames.push_back(frame);
        SendOutcome::Queued
    }

    /// The unwritten bytes of the first queued frame.
    pub fn front(&self) -> Option<&[u8]> {
        self.frames.front().map(|f| &f.bytes()[self.offset..])
    }

    /// Writes queued frames to `fd` with vectored non-blocking sends (up to [`MAX_IOVECS`]
    /// frames each) until the queue is empty, the socket would block or it fails. A short write
    /// leaves the queue at the first unwritten byte, mid-frame if need be.
    pub fn flush_vectored(&mut self, fd: BorrowedFd<'_>) -> FlushOutcome {
        while !self.frames.is_empty() {
            let result = {
                let slices = self.io_slices::<MAX_IOVECS>();
                send_vectored_nonblocking(fd, slices.as_slice())
            };
            match result {
                Ok(0) => return FlushOutcome::Broken,
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FlushOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return FlushOutcome::Broken,
            }
        }
        FlushOutcome::Empty
    }

    /// Slices over the unwritten bytes of the first `N` frames, at most.
    fn io_slices<const N: usize>(&self) -> IoSlices<'_, N> {
        let mut slices = IoSlices {
            slices: [IoSlice::new(&[]); N],
            len: 0,
        };
        for (i, frame) in self.frames.iter().take(N).enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            slices.slices[i] = IoSlice::new(&frame.bytes()[start..]);
            slices.len = i + 1;
        }
        slices
    }

    /// Marks `n` bytes as written, across as many frames as they cover.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let step = n.min(front.bytes().len() - self.offset);
            self.advance(step);
            n -= step;
        }
    }

    /// Marks `n` bytes of the first frame as written.
    pub fn advance(&mut self, n: usize) {
        self.offset += n;
        self.bytes -= n;
        if let Some(front) = self.frames.front() {
            if self.offset >= front.bytes().len() {
                self.frames.pop_front();
                self.offset = 0;
            }
        }
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
        }
    }

    /// Drops every frame not yet started, keeping the rest of a frame already partly written so
    /// that the stream stays well-formed for a close frame queued after it.
    pub fn discard_unstarted(&mut self) {
        let keep = if self.offset > 0 {
            self.frames.pop_front()
        } else {
            None
        };
        let offset = self.offset;
        *self = SendQueue::default();
        if let Some(front) = keep {
            self.bytes = front.bytes().len() - offset;
            self.offset = offset;
            self.frames.push_back(front);
        }
    }
}

/// A fixed array of slices, of which the first `len` are in use.
struct IoSlices<'a, const N: usize> {
    slices: [IoSlice<'a>; N],
    len: usize,
}

impl<'a, const N: usize> IoSlices<'a, N> {
    fn as_slice(&self) -> &[IoSlice<'a>] {
        &self.slices[..self.len]
    }
}

/// One non-blocking vectored `sendmsg(2)` with `MSG_NOSIGNAL`.
pub fn send_vectored_nonblocking(fd: BorrowedFd<'_>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(&fd);
    socket.send_vectored_with_flags(slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// One non-blocking `send(2)` with `MSG_NOSIGNAL`.
pub fn send_nonblocking(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(&fd);
    socket.send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn writes_directly_then_queues_when_the_peer_stops_reading() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut queue = SendQueue::default();
        let frame = vec![7u8; 64 * 1024];
        let mut outcomes = Vec::new();
        for _ in 0..64 {
            outcomes.push(queue.send(a.as_fd(), OutFrame::Owned(frame.clone()), 1 << 20));
        }
        assert_eq!(outcomes[0], SendOutcome::Written);
        assert!(outcomes.contains(&SendOutcome::Queued));
        assert!(queue.queued_bytes() > 0);
        // Over the budget: refused, and the queue is unchanged.
        let before = queue.queued_bytes();
        let outcome = queue.send(a.as_fd(), OutFrame::Owned(vec![0; 2 << 20]), 1 << 20);
        assert_eq!(outcome, SendOutcome::OverBudget);
        assert_eq!(queue.queued_bytes(), before);
        // Drain: the reader gets every byte in order.
        let mut total_read = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        b.set_nonblocking(true).unwrap();
        while !queue.is_empty() {
            if let Ok(n) = b.read(&mut buf) {
                assert!(buf[..n].iter().all(|&x| x == 7));
                total_read += n;
            }
            let front = queue.front().unwrap().to_vec();
            if let Ok(n) = send_nonblocking(a.as_fd(), &front) {
                queue.advance(n);
            }
        }
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 {
                break;
            }
            total_read += n;
        }
        let accepted = outcomes
            .iter()
            .filter(|o| matches!(o, SendOutcome::Written | SendOutcome::Queued))
            .count();
        assert_eq!(total_read, accepted * frame.len());
    }

    #[test]
    fn discarding_keeps_a_partly_written_frame() {
        let mut queue = SendQueue::default();
        queue.frames.push_back(OutFrame::Owned(vec![1; 10]));
        queue.frames.push_back(OutFrame::Owned(vec![2; 10]));
        queue.bytes = 20;
        queue.advance(4);
        queue.discard_unstarted();
        assert_eq!(queue.front(), Some(&[1u8; 6][..]));
        assert_eq!(queue.queued_bytes(), 6);
        queue.advance(6);
        assert!(queue.is_empty());
        queue.frames.push_back(OutFrame::Owned(vec![3; 10]));
        queue.bytes = 10;
        queue.discard_unstarted();
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
    }

    /// A queue holding `frames` as if the socket had refused them all.
    fn queue_of(frames: &[Vec<u8>]) -> SendQueue {
        let mut queue = SendQueue::default();
        for frame in frames {
            queue.bytes += frame.len();
            queue.frames.push_back(OutFrame::Owned(frame.clone()));
        }
        queue
    }

    /// `count` frames of varying length, each filled with bytes that encode its index and
    /// position, so that any reordering or loss shows in the concatenation.
    fn numbered_frames(count: usize, len: impl Fn(usize) -> usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| (0..len(i)).map(|j| (i * 31 + j) as u8).collect())
            .collect()
    }

    /// Reads whatever `reader` has, without blocking.
    fn read_available(reader: &mut UnixStream, into: &mut Vec<u8>) {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn many_queued_frames_flush_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        // More frames than one sendmsg takes, small enough that the socket takes them all.
        let frames = numbered_frames(3 * MAX_IOVECS + 5, |i| 1 + i % 40);
        let mut queue = queue_of(&frames);
        assert_eq!(queue.flush_vectored(a.as_fd()), FlushOutcome::Empty);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
        let mut got = Vec::new();
        read_available(&mut b, &mut got);
        assert_eq!(got, frames.concat());
    }

    #[test]
    fn partial_writes_resume_mid_frame_until_everything_is_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&a)
            .set_send_buffer_size(4096)
            .unwrap();
        // Odd lengths, several times the send buffer: writes stop mid-frame.
        let frames = numbered_frames(400, |i| 997 + i % 13);
        let expected = frames.concat();
        let mut queue = queue_of(&frames);
        let mut got = Vec::new();
        let mut would_block = 0;
        let mut stopped_mid_frame = false;
        loop {
            match queue.flush_vectored(a.as_fd()) {
                FlushOutcome::Empty => break,
                FlushOutcome::WouldBlock => would_block += 1,
                FlushOutcome::Broken => panic!("socket reported broken"),
            }
            stopped_mid_frame |= queue.offset > 0;
            // What is still queued was not written: never more than the reader lacks.
            assert!(queue.queued_bytes() <= expected.len() - got.len());
            // Read one chunk, so that the writer is short again next time.
            let mut buf = vec![0u8; 1500];
            if let Ok(n) = b.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        read_available(&mut b, &mut got);
        assert!(would_block > 0, "the send buffer never filled up");
        assert!(stopped_mid_frame, "no write stopped inside a frame");
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_socket_would_block_and_keeps_the_queue() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        // Fill the socket until it refuses more.
        let filler = vec![0u8; 1 << 16];
        while send_nonblocking(a.as_fd(), &filler).is_ok() {}
        let frames = numbered_frames(10, |_| 100);
        let mut queue = queue_of(&frames);
        assert_eq!(queue.flush_vectored(a.as_fd()), FlushOutcome::WouldBlock);
        assert_eq!(queue.queued_bytes(), 1000);
        assert_eq!(queue.front(), Some(&frames[0][..]));
    }

    #[test]
    fn flushing_to_a_closed_peer_is_broken() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut queue = queue_of(&numbered_frames(3, |_| 10));
        assert_eq!(queue.flush_vectored(a.as_fd()), FlushOutcome::Broken);
    }

    #[test]
    fn broken_peer_is_reported() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut queue = SendQueue::default();
        assert_eq!(
            queue.send(a.as_fd(), OutFrame::Owned(vec![1]), 100),
            SendOutcome::Broken
        );
    }
}
