//! Publishing: a publish is encoded once into a [`SharedFrame`] per channel, handed to every
//! other shard (and, clustered, to the other nodes in one envelope), and queued on this shard's
//! **fan-out queue**. Each shard writes its queue to its subscribers in order, in a task of its
//! own, so an HTTP publish returns as soon as every shard has *taken* the event, not once it has
//! been written to thousands of sockets.
//!
//! Ordering: a shard's queue is first in, first out, and a peer takes deliveries from one shard
//! in the order they were sent (one ordered channel per pair). Presence completions (the roster
//! sent to a joining socket) go through the same queue, so a member event computed after a
//! roster reaches the socket after that roster, never before it and never twice. Cache-channel
//! subscriptions complete on the same queue, and each shard stores a cache channel's last event
//! when it runs its delivery, so a replay and the live events never overlap (`shard::cache`).
//!
//! Bounds (`server.fanout_queue_jobs` jobs and `server.fanout_queue_writes` socket writes, a
//! delivery counting its channel's local subscribers): at the bound an HTTP publish is refused
//! (429, counted as
//! `warren_runtime_events_total{event="fanout_queue_full"}`), a peer's deliveries wait in the
//! mesh (backpressure: the peer's HTTP publishes then wait for their barrier), and this shard's
//! own client events, presence events and cache-channel subscriptions still go in (they are
//! bounded by the per-connection rate and channel limits and the connection count).

use super::msg::ShardMsg;
use super::Shard;
use crate::app::App;
use crate::channels::presence::Joined;
use crate::protocol::outbound::{self, EventData};
use crate::protocol::SocketId;
use crate::socket::fanout_writer::{Broadcast, FanoutWriter, Handed, Outgoing, BATCH};
use crate::socket::Connection;
use crate::ws::frame::{shared_text_frame, SharedFrame};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The fan-out queue's latency requirement: while that queue is active, glommio's preempt
/// timer fires every `FANOUT_SLICE`, the fan-out yields at its next batch boundary, and the
/// executor polls its rings and runs the connection tasks (HTTP requests, client reads). A
/// request that arrives during a large fan-out waits about one slice, for its read to be polled
/// (the fan-out's turn that glommio would run first is cut short by `yield_to_woken_tasks`;
/// docs/architecture.md, "Why a large fan-out runs in 250 µs slices"). Only this queue asks
/// for it: with the same timer for the whole executor, paths that never wait behind a fan-out
/// (an API publish to small channels) cost ~15 % more CPU.
const FANOUT_SLICE: Duration = Duration::from_micros(250);

/// Most frames of one channel, queued back to back, that the fan-out writes to each socket
/// together (one SENDMSG per socket instead of one SEND per frame and socket).
const MAX_COALESCED: usize = 32;

/// A frame for the local subscribers of one channel.
pub(crate) struct FrameJob {
    pub(crate) app: u32,
    pub(crate) channel: Arc<str>,
    pub(crate) frame: SharedFrame,
    /// The socket that does not get it (a client event's sender).
    pub(crate) except: Option<SocketId>,
    pub(crate) published_at: Option<Instant>,
    /// Whether the frame becomes its cache channel's last event (see `shard::cache`).
    pub(crate) cached: bool,
}

/// One piece of work on a shard's fan-out queue.
pub(crate) enum Delivery {
    /// Write a frame to the local subscribers of its channel.
    Frame(FrameJob),
    /// Complete (or refuse) a presence subscription with the home shard's answer.
    FinishJoin {
        app: u32,
        channel: Arc<str>,
        socket: SocketId,
        outcome: Joined,
    },
    /// Complete a subscription to a cache channel: subscribe, `subscription_succeeded`, replay.
    CacheJoin {
        app: u32,
        channel: Arc<str>,
        socket: SocketId,
    },
}

/// A shard's fan-out queue.
pub(crate) struct DeliveryQueue {
    limit: usize,
    write_limit: usize,
    state: RefCell<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Each job with its cost: the socket writes it was expected to take when queued.
    jobs: VecDeque<(Delivery, usize)>,
    /// The sum of the queued jobs' costs.
    pending_writes: usize,
    worker: Option<Waker>,
    waiting_for_room: Vec<Waker>,
}

/// Why a publish was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefused {
    /// The fan-out queue (or a mesh outbox) is at its bound: try again later (HTTP 429).
    Busy,
}

impl DeliveryQueue {
    /// An empty queue holding, for producers that respect the bound, at most `limit` jobs and
    /// `write_limit` socket writes (a delivery costs its channel's local subscriber count).
    pub(crate) fn new(limit: usize, write_limit: usize) -> Self {
        DeliveryQueue {
            limit,
            write_limit,
            state: RefCell::new(QueueState::default()),
        }
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.state.borrow().jobs.len()
    }

    fn is_full(&self) -> bool {
        let state = self.state.borrow();
        state.jobs.len() >= self.limit || state.pending_writes >= self.write_limit
    }

    /// Queues `job`, expected to take `cost` socket writes, whatever the bound (producers
    /// bounded elsewhere).
    fn push(&self, job: Delivery, cost: usize) {
        let mut state = self.state.borrow_mut();
        state.pending_writes += cost;
        state.jobs.push_back((job, cost));
        if let Some(worker) = state.worker.take() {
            worker.wake();
        }
    }

    /// Queues `job` once the queue is under its bound.
    async fn push_when_room(&self, job: Delivery, cost: usize) {
        if self.is_full() {
            crate::metrics::with(|m| m.runtime_event("fanout_queue_wait"));
            poll_fn(|cx| {
                if self.is_full() {
                    self.state
                        .borrow_mut()
                        .waiting_for_room
                        .push(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
        self.push(job, cost);
    }

    fn poll_next(&self, waker: &Waker) -> Poll<Delivery> {
        let mut state = self.state.borrow_mut();
        match self.pop(&mut state) {
            Some(job) => Poll::Ready(job),
            None => {
                state.worker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// Takes the frames for `first`'s channel queued right behind it, up to `MAX_COALESCED`
    /// in all: they are written together, in order (nothing else was queued between them).
    fn take_following(&self, first: FrameJob) -> Vec<FrameJob> {
        let mut group = vec![first];
        let mut state = self.state.borrow_mut();
        while group.len() < MAX_COALESCED {
            let same_channel = match state.jobs.front() {
                Some((Delivery::Frame(next), _)) => {
                    next.app == group[0].app && next.channel == group[0].channel
                }
                _ => false,
            };
            if !same_channel {
                break;
            }
            if let Some(Delivery::Frame(next)) = self.pop(&mut state) {
                group.push(next);
            }
        }
        group
    }

    /// Takes the first job and, once under the bound again, wakes the producers waiting.
    fn pop(&self, state: &mut QueueState) -> Option<Delivery> {
        let (job, cost) = state.jobs.pop_front()?;
        state.pending_writes -= cost;
        if state.jobs.len() < self.limit && state.pending_writes < self.write_limit {
            for waiting in state.waiting_for_room.drain(..) {
                waiting.wake();
            }
        }
        Some(job)
    }
}

/// Starts the shard's fan-out task in a task queue of its own, beside the default queue of the
/// connection tasks, so that a long fan-out can hand the core back to them (see
/// `deliver_local`).
pub(crate) fn spawn_deliveries(shard: Rc<Shard>) {
    let executor = glommio::executor();
    let queue = executor.create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(FANOUT_SLICE),
        "fanout",
    );
    let task = executor
        .spawn_local_into(run_deliveries(shard.clone()), queue)
        .unwrap_or_else(|_| glommio::spawn_local(run_deliveries(shard)));
    task.detach();
}

/// The shard's fan-out task: takes jobs in order for as long as the executor runs, with the
/// writer that batches its socket writes (owned by the task: nothing else writes through it).
async fn run_deliveries(shard: Rc<Shard>) {
    let mut writer = FanoutWriter::new();
    loop {
        let job = poll_fn(|cx| shard.deliveries.poll_next(cx.waker())).await;
        shard.run_delivery(&mut writer, job).await;
    }
}

/// Yields when glommio's preempt timer has fired, and then once more, so that the tasks the
/// executor woke meanwhile run before the fan-out's next batch. glommio puts a queue that
/// wakes up right behind the queue that was running (its virtual runtime plus one): after the
/// first yield the fan-out would get the core back first and the woken request would wait a
/// whole slice more. The second yield ends the fan-out's turn at once (a microsecond of
/// runtime, more than that "plus one"), so the woken queue goes first.
async fn yield_to_woken_tasks() {
    if glommio::executor().need_preempt() {
        glommio::yield_if_needed().await;
        glommio::executor().yield_task_queue_now().await;
    }
}

/// Counts the frames of `group` handed to sockets and, for publishes, how long after the
/// publish each went out.
fn record_deliveries(group: &[FrameJob], sent: Handed) {
    crate::metrics::with(|m| {
        m.messages_out(group[0].app, sent.frames, sent.bytes);
        for at in group.iter().filter_map(|job| job.published_at) {
            m.publish_latency(at.elapsed().as_secs_f64());
        }
    });
}

impl Shard {
    /// Publishes `event` with string `data` to each of `channels` of `app` on every node,
    /// skipping the socket `except`: the in-process entry point of the HTTP API.
    ///
    /// Returns once every shard of this node has *taken* the event on its fan-out queue (and the
    /// cluster link has it), before anything is written: a publish accepted after this one
    /// returns, on any shard, reaches each socket after it.
    pub async fn publish(
        &self,
        app: &App,
        channels: &[&str],
        event: &str,
        data: &str,
        except: Option<SocketId>,
    ) -> Result<(), PublishRefused> {
        self.publish_batch(app, &[(channels, event, data, except)])
            .await
    }

    /// Publishes several events in order with one barrier for all of them (`batch_events`).
    pub async fn publish_batch(
        &self,
        app: &App,
        events: &[(&[&str], &str, &str, Option<SocketId>)],
    ) -> Result<(), PublishRefused> {
        self.check_room()?;
        for (channels, event, data, except) in events {
            self.publish_event(app, channels, event, EventData::Text(data), None, *except);
        }
        if self.shards > 1 {
            // Every peer answers after it has taken the deliveries sent before the question.
            let _ = self.gather(|_| ()).await;
        }
        Ok(())
    }

    /// Refuses a publish when this shard's fan-out queue or a mesh outbox is at its bound.
    fn check_room(&self) -> Result<(), PublishRefused> {
        let mesh_ok = self.mesh.get().is_none_or(|m| m.has_room());
        if self.deliveries.is_full() || !mesh_ok {
            crate::metrics::with(|m| m.runtime_event("fanout_queue_full"));
            return Err(PublishRefused::Busy);
        }
        Ok(())
    }

    /// Publishes an event to `channels` on every shard of this node and, when clustered, on
    /// every other node: one frame per channel here, one envelope for the cluster.
    pub fn publish_event(
        &self,
        app: &App,
        channels: &[&str],
        event: &str,
        data: EventData<'_>,
        user_id: Option<&str>,
        except: Option<SocketId>,
    ) {
        self.publish_here(app.index, channels, event, data, user_id, except);
        self.share_publish(app, channels, event, data, user_id, except);
    }

    /// The node-local half of a publish (also used for publishes from other nodes).
    pub(super) fn publish_here(
        &self,
        app: u32,
        channels: &[&str],
        event: &str,
        data: EventData<'_>,
        user_id: Option<&str>,
        except: Option<SocketId>,
    ) {
        for channel in channels {
            let text = outbound::channel_event(event, channel, data, user_id);
            let frame = shared_text_frame(&text);
            let cached = super::cache::is_cached(channel, event);
            self.fan_out(app, Arc::from(*channel), frame, except, cached);
        }
    }

    /// Hands an encoded frame to every other shard and queues it for this shard's subscribers.
    pub fn publish_frame(
        &self,
        app: u32,
        channel: Arc<str>,
        frame: SharedFrame,
        except: Option<SocketId>,
    ) {
        self.fan_out(app, channel, frame, except, false);
    }

    /// [`Shard::publish_frame`], `cached` saying whether each shard stores the frame as the
    /// cache channel's last event when it runs the delivery.
    fn fan_out(
        &self,
        app: u32,
        channel: Arc<str>,
        frame: SharedFrame,
        except: Option<SocketId>,
        cached: bool,
    ) {
        let published_at = Instant::now();
        for peer in self.peers().collect::<Vec<_>>() {
            let message = ShardMsg::Deliver {
                app,
                channel: channel.clone(),
                frame: frame.clone(),
                except,
                published_at,
                cached,
            };
            self.send_to(peer, message);
        }
        let cost = self.delivery_cost(app, &channel);
        let job = Delivery::Frame(FrameJob {
            app,
            channel,
            frame,
            except,
            published_at: Some(published_at),
            cached,
        });
        self.deliveries.push(job, cost);
    }

    /// The socket writes a delivery to `channel` is expected to take here (at least 1).
    fn delivery_cost(&self, app: u32, channel: &str) -> usize {
        let table = self.channels.borrow();
        1 + table.get(app, channel).map_or(0, |local| local.len())
    }

    /// A peer's delivery: queued behind what this shard already has, waiting for room.
    pub(super) async fn take_delivery(&self, job: Delivery) {
        let cost = match &job {
            Delivery::Frame(job) => self.delivery_cost(job.app, &job.channel),
            _ => 1,
        };
        self.deliveries.push_when_room(job, cost).await;
    }

    /// Queues the completion of a presence join behind the deliveries already queued.
    pub(super) fn queue_finish_join(
        &self,
        app: u32,
        channel: Arc<str>,
        socket: SocketId,
        outcome: Joined,
    ) {
        let job = Delivery::FinishJoin {
            app,
            channel,
            socket,
            outcome,
        };
        self.deliveries.push(job, 1);
    }

    /// Queues the completion of a cache-channel subscription behind the deliveries already
    /// queued (see `shard::cache`).
    pub(super) fn queue_cache_join(&self, app: u32, channel: Arc<str>, socket: SocketId) {
        let job = Delivery::CacheJoin {
            app,
            channel,
            socket,
        };
        self.deliveries.push(job, 1);
    }

    async fn run_delivery(&self, writer: &mut FanoutWriter, job: Delivery) {
        match job {
            Delivery::Frame(first) => {
                let group = self.deliveries.take_following(first);
                for job in group.iter().filter(|job| job.cached) {
                    self.cache_store(job.app, &job.channel, &job.frame);
                }
                self.deliver_local(writer, &group).await
            }
            Delivery::FinishJoin {
                app,
                channel,
                socket,
                outcome,
            } => self.finish_presence_join(app, &channel, socket, outcome),
            Delivery::CacheJoin {
                app,
                channel,
                socket,
            } => self.finish_cache_join(app, &channel, socket),
        }
    }

    /// Writes `group`'s frames (one channel's, in order) to this shard's subscribers of the
    /// channel, in batches of sockets (`FanoutWriter`), yielding between batches on large
    /// channels so other connections keep being served.
    async fn deliver_local(&self, writer: &mut FanoutWriter, group: &[FrameJob]) {
        let (app, channel) = (group[0].app, &*group[0].channel);
        let frames: SmallVec<[Outgoing<'_>; 4]> = group
            .iter()
            .map(|job| Outgoing {
                frame: &job.frame,
                except: job.except,
            })
            .collect();
        let mut sent = Handed::default();
        let broadcast;
        let snapshot: Vec<Rc<Connection>> = {
            let table = self.channels.borrow();
            let Some(local) = table.get(app, channel) else {
                return;
            };
            broadcast = Broadcast::new(&frames);
            if local.len() <= BATCH {
                sent = writer.write(local.subscribers(), &broadcast);
                record_deliveries(group, sent);
                return;
            }
            local.subscribers().cloned().collect()
        };
        // glommio arms its preempt timer when it polls its rings, for the task queues active
        // then. A fan-out started by an HTTP request (default queue) would run under the
        // default queue's timer (100 ms) and hold the next request until it ends: sleeping a
        // moment first lets the executor poll again with this queue active, which arms
        // `FANOUT_SLICE` (with a 1 µs sleep instead, the fan-out was measured waiting for the
        // next socket event).
        glommio::timer::sleep(Duration::from_micros(100)).await;
        for sockets in snapshot.chunks(BATCH) {
            sent.add(writer.write(sockets, &broadcast));
            // The preempt timer fires every `FANOUT_SLICE`: then the fan-out yields here, the
            // executor polls its rings and runs the connection tasks before it comes back, so
            // a publish is answered while a large fan-out is still being written.
            yield_to_woken_tasks().await;
        }
        record_deliveries(group, sent);
    }
}
