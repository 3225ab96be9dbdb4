//! Scatter-gather questions the HTTP API asks every shard — channel counts, channel lists,
//! presence users, terminating a user's connections — and how their answers combine into one
//! node-wide answer.
//!
//! The asking shard answers for itself, sends the [`Query`] to every peer, and waits until all
//! have answered. A peer processes messages from one shard in order, so a query sent after a
//! publish sees that publish.

use super::Shard;
use crate::channels::home_shard;
use crate::protocol::codes;
use ahash::AHashMap;
use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// A question for every shard.
#[derive(Debug, Clone)]
pub enum Query {
    /// Subscriber counts (and, from home shards, presence user counts) of these channels.
    ChannelCounts {
        /// App registry index.
        app: u32,
        /// Channel names.
        channels: Vec<Arc<str>>,
    },
    /// Occupied channels whose name starts with `prefix`, with counts.
    ListChannels {
        /// App registry index.
        app: u32,
        /// Name prefix (may be empty).
        prefix: String,
    },
    /// User ids of a presence channel (answered by its home shard).
    PresenceUsers {
        /// App registry index.
        app: u32,
        /// Presence channel name.
        channel: Arc<str>,
    },
    /// What this node contributes to the cluster from each shard's rosters and occupancy (for a
    /// snapshot).
    LocalState,
    /// Each shard's metrics, for a scrape of `/metrics`.
    Metrics,
    /// Nothing: answered once every message sent before it has been handled, so a publish
    /// followed by a barrier has been written (or queued) on every shard.
    Barrier,
    /// Close every connection of this user.
    TerminateUser {
        /// App registry index.
        app: u32,
        /// The user id.
        user_id: String,
    },
}

/// Counts one shard knows about one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCount {
    /// Local subscriptions.
    pub subscriptions: usize,
    /// Distinct presence users, when this shard is the channel's home and it has a roster.
    pub users: Option<usize>,
}

/// One shard's answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// For `ChannelCounts` and `ListChannels`: counts by channel name.
    Counts(Vec<(Arc<str>, ChannelCount)>),
    /// For `PresenceUsers`: user ids in join order (empty unless home shard).
    Users(Vec<String>),
    /// For `TerminateUser`: connections closed.
    Terminated(usize),
    /// For `Barrier`.
    Done,
    /// For `Metrics`.
    Metrics(Box<crate::metrics::Snapshot>),
    /// For `LocalState`: this shard's local presence members and occupied channels.
    LocalState {
        /// Presence members.
        presence: Vec<crate::cluster::envelope::PresenceEntry>,
        /// Occupied channels, as (app id, channel).
        occupied: Vec<(String, String)>,
    },
}

/// Sums per-shard counts into node-wide counts per channel.
pub fn merge_counts(answers: Vec<Answer>) -> AHashMap<Arc<str>, ChannelCount> {
    let mut merged: AHashMap<Arc<str>, ChannelCount> = AHashMap::new();
    for answer in answers {
        if let Answer::Counts(counts) = answer {
            for (channel, count) in counts {
                let entry = merged.entry(channel).or_default();
                entry.subscriptions += count.subscriptions;
                entry.users = entry.users.or(count.users);
            }
        }
    }
    merged
}

/// Questions this shard has asked and is waiting on.
#[derive(Default)]
pub(super) struct PendingQueries {
    next_id: u64,
    waiting: AHashMap<u64, Waiting>,
}

struct Waiting {
    remaining: usize,
    answers: Vec<Answer>,
    waker: Option<Waker>,
}

impl PendingQueries {
    pub(super) fn record_answer(pending: &RefCell<PendingQueries>, id: u64, answer: Answer) {
        let mut pending = pending.borrow_mut();
        if let Some(waiting) = pending.waiting.get_mut(&id) {
            waiting.answers.push(answer);
            waiting.remaining -= 1;
            if waiting.remaining == 0 {
                if let Some(waker) = waiting.waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

impl Shard {
    /// Asks every shard (this one included) and returns all answers.
    pub async fn gather(&self, query: Query) -> Vec<Answer> {
        let local = self.answer_query(&query);
        let peers: Vec<usize> = self
            .mesh
            .get()
            .map_or_else(Vec::new, |m| m.peers().collect());
        if peers.is_empty() {
            return vec![local];
        }
        let id = {
            let mut pending = self.queries.borrow_mut();
            pending.next_id += 1;
            let id = pending.next_id;
            pending.waiting.insert(
                id,
                Waiting {
                    remaining: peers.len(),
                    answers: vec![local],
                    waker: None,
                },
            );
            id
        };
        for peer in peers {
            self.send_to(
                peer,
                super::ShardMsg::Query {
                    from: self.id,
                    id,
                    query: query.clone(),
                },
            );
        }
        poll_fn(|cx| {
            let mut pending = self.queries.borrow_mut();
            let waiting = pending
                .waiting
                .get_mut(&id)
                .expect("a query waits until answered");
            if waiting.remaining == 0 {
                let done = pending.waiting.remove(&id).expect("present");
                Poll::Ready(done.answers)
            } else {
                waiting.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// This shard's answer to `query`.
    pub(super) fn answer_query(&self, query: &Query) -> Answer {
        match query {
            Query::ChannelCounts { app, channels } => Answer::Counts(
                channels
                    .iter()
                    .map(|channel| (channel.clone(), self.channel_count(*app, channel)))
                    .collect(),
            ),
            Query::ListChannels { app, prefix } => Answer::Counts(self.list_channels(*app, prefix)),
            Query::PresenceUsers { app, channel } => {
                Answer::Users(self.presence.borrow().user_ids(*app, channel))
            }
            Query::TerminateUser { app, user_id } => {
                Answer::Terminated(self.terminate_user(*app, user_id))
            }
            Query::LocalState => Answer::LocalState {
                presence: self.local_presence(),
                occupied: self
                    .occupancy
                    .borrow()
                    .local_channels()
                    .into_iter()
                    .map(|(app, channel)| {
                        (self.apps().by_index(app).id().to_string(), channel.into())
                    })
                    .collect(),
            },
            Query::Barrier => Answer::Done,
            Query::Metrics => Answer::Metrics(Box::new(self.metrics_snapshot())),
        }
    }

    fn channel_count(&self, app: u32, channel: &str) -> ChannelCount {
        let subscriptions = self
            .channels
            .borrow()
            .get(app, channel)
            .map_or(0, |c| c.len());
        let users = (home_shard(app, channel, self.shards) == self.id)
            .then(|| self.presence.borrow().user_count(app, channel))
            .filter(|&n| n > 0);
        ChannelCount {
            subscriptions,
            users,
        }
    }

    fn list_channels(&self, app: u32, prefix: &str) -> Vec<(Arc<str>, ChannelCount)> {
        let mut counts: Vec<(Arc<str>, ChannelCount)> = self
            .channels
            .borrow()
            .channels(app)
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, local)| {
                (
                    Arc::from(name),
                    ChannelCount {
                        subscriptions: local.len(),
                        users: None,
                    },
                )
            })
            .collect();
        for (channel, users) in self.presence.borrow().channels(app) {
            if channel.starts_with(prefix) {
                counts.push((
                    Arc::from(channel),
                    ChannelCount {
                        subscriptions: 0,
                        users: Some(users),
                    },
                ));
            }
        }
        counts
    }

    fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let table = self.channels.borrow();
        let channels = self
            .apps()
            .iter()
            .map(|app| {
                let (count, subscriptions) = table
                    .channels(app.index)
                    .fold((0, 0), |(c, s), (_, local)| (c + 1, s + local.len()));
                (app.index, (count, subscriptions))
            })
            .filter(|(_, (c, _))| *c > 0)
            .collect();
        let gauges = crate::metrics::ShardGauges {
            shard: self.id,
            connections: self.connections.borrow().len(),
            channels,
        };
        crate::metrics::with(|m| m.snapshot(gauges))
    }

    fn local_presence(&self) -> Vec<crate::cluster::envelope::PresenceEntry> {
        self.presence
            .borrow()
            .local_entries()
            .into_iter()
            .map(|(app, channel, user_id, user_id_json, user_info)| {
                crate::cluster::envelope::PresenceEntry {
                    app: self.apps().by_index(app).id().to_string(),
                    channel: channel.into(),
                    user_id,
                    user_id_json,
                    user_info,
                }
            })
            .collect()
    }

    /// Closes this shard's connections of `user_id` in `app`: those that joined a presence
    /// channel as that user (user sign-in will widen this).
    fn terminate_user(&self, app: u32, user_id: &str) -> usize {
        let connections = self.connections.borrow();
        let mut closed = 0;
        for conn in connections.values() {
            if conn.app.index == app && conn.is_user(user_id) {
                conn.send_error(
                    Some(codes::UNAUTHORIZED),
                    "You got disconnected by the app.",
                );
                conn.close(codes::UNAUTHORIZED, "You got disconnected by the app.");
                closed += 1;
            }
        }
        closed
    }
}
