//! The fan-out's batched writes on a real shard: frames published back to back are written to
//! each socket together and in order, past the batch size, around a client event's sender, and
//! to a socket whose buffer takes only part of a write (the rest queued, later frames behind it).

use super::*;
use crate::protocol::outbound::EventData;
use crate::socket::fanout_writer::{Broadcast, FanoutWriter, Outgoing, BATCH};
use crate::socket::send_queue::FlushOutcome;
use crate::ws::frame::{shared_text_frame, SharedFrame};

/// Publishes made back to back (queued before the fan-out task runs, so they coalesce).
const EVENTS: u64 = 100;

/// The `data` numbers of the `e` events in `bytes`.
fn numbers(bytes: &[u8]) -> Vec<u64> {
    events_named(&parse_server_frames(bytes), "e")
        .iter()
        .map(|m| m["data"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Whether event `n` skips the sender (every third one, as a client event would).
fn skips_sender(n: u64) -> bool {
    n.is_multiple_of(3)
}

/// Reads `socket` until nothing more comes, flushing what its connection queued (the tests
/// have no connection task to do it), and returns every byte.
async fn read_all_flushing(socket: &mut TestSocket) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        socket.read_bytes(&mut bytes);
        if socket.conn.flush_queued() == FlushOutcome::Empty {
            break;
        }
        glommio::yield_if_needed().await;
    }
    socket.read_bytes(&mut bytes);
    bytes
}

/// Event `n`'s data: its number, zero-padded so that the frames overflow the small buffer.
fn data_of(n: u64) -> String {
    format!("{n:0>200}")
}

/// The sockets of one test: many plain subscribers (more than two batches), a sender that some
/// frames skip, and a subscriber with a small send buffer.
struct Audience {
    plain: Vec<TestSocket>,
    sender: TestSocket,
    small: TestSocket,
}

impl Audience {
    fn subscribe(shard: &Shard, channel: &str) -> Audience {
        let plain: Vec<TestSocket> = (0..2 * BATCH + 7)
            .map(|_| TestSocket::open(shard))
            .collect();
        let sender = TestSocket::open(shard);
        let small = TestSocket::open_with_small_buffer(shard);
        for socket in plain.iter().chain([&sender, &small]) {
            socket.subscribe(shard, channel);
        }
        Audience {
            plain,
            sender,
            small,
        }
    }

    /// Checks that every socket got the events in order, each once, the sender without the
    /// events that skip it, and closes them.
    async fn check_and_close(mut self, shard: &Shard) {
        assert!(
            self.small.conn.direct_fd().is_none(),
            "nothing was left queued behind the small buffer"
        );
        let all: Vec<u64> = (0..EVENTS).collect();
        let for_sender: Vec<u64> = all.iter().copied().filter(|n| !skips_sender(*n)).collect();
        let small = read_all_flushing(&mut self.small).await;
        assert_eq!(numbers(&small), all, "the socket with the small buffer");
        assert_eq!(
            numbers(&read_all_flushing(&mut self.sender).await),
            for_sender
        );
        for (i, socket) in self.plain.iter_mut().enumerate() {
            assert_eq!(numbers(&read_all_flushing(socket).await), all, "socket {i}");
        }
        for socket in self.plain.into_iter().chain([self.sender, self.small]) {
            socket.close(shard);
        }
    }
}

#[test]
fn back_to_back_publishes_reach_every_socket_in_order() {
    // Through the shard's fan-out task (its own writer, io_uring where the kernel has it): the
    // 100 publishes are queued before the task runs, so it writes them in coalesced groups.
    run_shards(
        config(1),
        Arc::new(ProcessState::default()),
        |shard| async move {
            let channel = "prices";
            let audience = Audience::subscribe(&shard, channel);
            let app = shard.app(0).unwrap();
            let sender = audience.sender.conn.socket_id;
            for n in 0..EVENTS {
                let data = data_of(n);
                let except = skips_sender(n).then_some(sender);
                shard.publish_event(&app, &[channel], "e", EventData::Text(&data), None, except);
            }
            settle().await;
            audience.check_and_close(&shard).await;
            settle().await;
        },
    );
}

/// Frames of the events `0..EVENTS`, written by `writer` in groups of `group` frames.
async fn write_in_groups(
    shard: &Shard,
    writer: &mut FanoutWriter,
    audience: &Audience,
    group: usize,
) {
    let frames: Vec<SharedFrame> = (0..EVENTS)
        .map(|n| {
            let text = crate::protocol::outbound::channel_event(
                "e",
                "prices",
                EventData::Text(&data_of(n)),
                None,
            );
            shared_text_frame(&text)
        })
        .collect();
    let sockets: Vec<Rc<Connection>> = audience
        .plain
        .iter()
        .chain([&audience.sender, &audience.small])
        .map(|s| s.conn.clone())
        .collect();
    let sender = audience.sender.conn.socket_id;
    for (start, chunk) in frames.chunks(group).enumerate() {
        let outgoing: Vec<Outgoing<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, frame)| Outgoing {
                frame,
                except: skips_sender((start * group + i) as u64).then_some(sender),
            })
            .collect();
        let handed = writer.write(&sockets, &Broadcast::new(&outgoing));
        let skipped = outgoing.iter().filter(|o| o.except.is_some()).count();
        assert_eq!(handed.frames, sockets.len() * chunk.len() - skipped);
        glommio::yield_if_needed().await;
    }
    let _ = shard;
}

#[test]
fn the_writer_keeps_order_with_io_uring_and_with_sendmsg() {
    run_shards(
        config(1),
        Arc::new(ProcessState::default()),
        |shard| async move {
            let io_uring = FanoutWriter::new();
            assert!(
                io_uring.uses_io_uring(),
                "no io_uring for the fan-out on this kernel"
            );
            for (mut writer, group) in [
                (io_uring, 1),
                (FanoutWriter::new(), 7),
                (FanoutWriter::without_ring(), 1),
                (FanoutWriter::without_ring(), 7),
            ] {
                let audience = Audience::subscribe(&shard, "prices");
                write_in_groups(&shard, &mut writer, &audience, group).await;
                audience.check_and_close(&shard).await;
            }
            settle().await;
        },
    );
}
