//! One typed scatter-gather for the whole node (and, through the cluster link, the other nodes):
//! a question is a function from a [`Shard`] to an answer of the type the caller names, run on
//! every shard; the answers that arrive before a deadline come back as a [`Gathered`], which
//! says how many did not. Nothing waits forever and nothing is silently dropped: a caller that
//! needs every answer checks [`Gathered::is_complete`] (the HTTP API answers 503 otherwise).
//!
//! This is Seastar's `map_reduce` over `sharded<>` services, written for glommio: the asking
//! shard answers for itself, sends the question to every peer (`ShardMsg::Request`), and waits
//! for their `ShardMsg::Reply`s. Peers process one shard's messages in order, so a question sent
//! after a publish is answered after that publish was taken in.

use super::msg::{Job, Reply, ShardMsg};
use super::Shard;
use ahash::AHashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The answers to one question that arrived in time.
#[derive(Debug)]
pub struct Gathered<T> {
    /// One answer per shard (or node) that answered, in no particular order.
    pub answers: Vec<T>,
    /// How many were asked and did not answer before the deadline.
    pub missing: usize,
}

impl<T> Gathered<T> {
    /// Whether every shard (or node) asked has answered.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The answers, or `Err(missing)` when some did not come.
    pub fn complete(self) -> Result<Vec<T>, usize> {
        if self.missing == 0 {
            Ok(self.answers)
        } else {
            Err(self.missing)
        }
    }
}

/// Questions this shard waits on.
#[derive(Default)]
pub(crate) struct Pending {
    next_id: u64,
    waiting: AHashMap<u64, Waiting>,
}

struct Waiting {
    remaining: usize,
    replies: Vec<Reply>,
    waker: Option<Waker>,
}

impl Pending {
    /// Opens a question that `expected` others will answer; returns its id.
    fn open(&mut self, expected: usize) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.waiting.insert(
            id,
            Waiting {
                remaining: expected,
                replies: Vec::with_capacity(expected),
                waker: None,
            },
        );
        id
    }

    /// Records one answer; an answer to a question no longer waited for (it arrived after the
    /// deadline) is dropped and counted.
    pub(crate) fn record(&mut self, id: u64, reply: Reply) {
        let Some(waiting) = self.waiting.get_mut(&id) else {
            crate::metrics::with(|m| m.late_reply());
            return;
        };
        waiting.replies.push(reply);
        waiting.remaining = waiting.remaining.saturating_sub(1);
        if waiting.remaining == 0 {
            if let Some(waker) = waiting.waker.take() {
                waker.wake();
            }
        }
    }

    fn poll_done(&mut self, id: u64, waker: &Waker) -> Poll<()> {
        match self.waiting.get_mut(&id) {
            Some(waiting) if waiting.remaining > 0 => {
                waiting.waker = Some(waker.clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Closes the question: its replies so far and how many are missing.
    fn close(&mut self, id: u64) -> (Vec<Reply>, usize) {
        self.waiting
            .remove(&id)
            .map_or((Vec::new(), 0), |w| (w.replies, w.remaining))
    }
}

/// Turns replies into answers of type `T`; one of another type (impossible unless ids were
/// mixed up) counts as missing, never as a silent default.
fn typed<T: 'static>(replies: Vec<Reply>, mut missing: usize) -> Gathered<T> {
    let mut answers = Vec::with_capacity(replies.len());
    for reply in replies {
        match reply.downcast::<T>() {
            Ok(answer) => answers.push(*answer),
            Err(_) => missing += 1,
        }
    }
    Gathered { answers, missing }
}

impl Shard {
    /// Runs `question` on every shard of this node (this one included) and returns the answers
    /// that arrived within `server.gather_timeout_ms`.
    pub async fn gather<T, F>(&self, question: F) -> Gathered<T>
    where
        T: Send + 'static,
        F: Fn(&Shard) -> T + Send + Sync + 'static,
    {
        let local = question(self);
        let peers: Vec<usize> = self.peers().collect();
        if peers.is_empty() {
            return Gathered {
                answers: vec![local],
                missing: 0,
            };
        }
        let job: Job = Arc::new(move |shard| Box::new(question(shard)) as Reply);
        let id = self.pending.borrow_mut().open(peers.len());
        for peer in peers {
            let job = job.clone();
            self.send_to(
                peer,
                ShardMsg::Request {
                    from: self.id,
                    id,
                    job,
                },
            );
        }
        let limit = Duration::from_millis(self.config.server.gather_timeout_ms);
        let mut gathered: Gathered<T> = self.wait_for(id, limit).await;
        gathered.answers.push(local);
        gathered
    }

    /// Asks `expected` other cluster nodes: `ask` sends the question with the id their answers
    /// must carry (they come back as `ShardMsg::Reply` through shard 0); waits up to `limit`.
    pub(crate) async fn gather_nodes<T: Send + 'static>(
        &self,
        expected: usize,
        limit: Duration,
        ask: impl FnOnce(u64),
    ) -> Gathered<T> {
        if expected == 0 {
            return Gathered {
                answers: Vec::new(),
                missing: 0,
            };
        }
        let id = self.pending.borrow_mut().open(expected);
        ask(id);
        self.wait_for(id, limit).await
    }

    /// Waits until question `id` is answered by all, or `limit` passes.
    async fn wait_for<T: 'static>(&self, id: u64, limit: Duration) -> Gathered<T> {
        let answered = poll_fn(|cx| self.pending.borrow_mut().poll_done(id, cx.waker()));
        futures_lite::future::or(answered, glommio::timer::sleep(limit)).await;
        let (replies, missing) = self.pending.borrow_mut().close(id);
        if missing > 0 {
            crate::metrics::with(|m| m.gather_timeout());
            tracing::warn!(
                shard = self.id,
                missing,
                "a question to every shard or node timed out"
            );
        }
        typed(replies, missing)
    }

    /// Answers a peer's question.
    pub(super) fn answer_request(&self, from: usize, id: u64, job: &Job) {
        let reply = job(self);
        self.send_to(from, ShardMsg::Reply { id, reply });
    }

    /// Records an answer to one of this shard's questions.
    pub(super) fn record_reply(&self, id: u64, reply: Reply) {
        self.pending.borrow_mut().record(id, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_the_wrong_type_count_as_missing() {
        let replies: Vec<Reply> = vec![Box::new(3usize), Box::new("x"), Box::new(4usize)];
        let gathered = typed::<usize>(replies, 1);
        assert_eq!(gathered.answers, vec![3, 4]);
        assert_eq!(gathered.missing, 2);
        assert!(!gathered.is_complete());
    }

    #[test]
    fn late_replies_are_dropped() {
        let mut pending = Pending::default();
        let id = pending.open(2);
        pending.record(id, Box::new(1u8));
        let (replies, missing) = pending.close(id);
        assert_eq!((replies.len(), missing), (1, 1));
        pending.record(id, Box::new(2u8));
        assert!(pending.waiting.is_empty());
    }
}
