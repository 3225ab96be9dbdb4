//! The write side of a connection: frames go straight to the socket with a non-blocking `send`
//! while nothing is queued; only what the kernel does not take (a short write, `EAGAIN`) waits in
//! the [`SendQueue`], whose byte budget bounds the memory a slow reader can pin.

use crate::ws::frame::SharedFrame;
use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;

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
        let mut written = 0;
        if self.frames.is_empty() {
            match send_nonblocking(fd, frame.bytes()) {
                Ok(n) if n == frame.bytes().len() => return SendOutcome::Written,
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return SendOutcome::Broken,
            }
        }
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
