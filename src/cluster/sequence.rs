//! The receiver's side of each origin node's sequence: releases ordered envelopes in their
//! origin's order, drops repeats, holds what comes after a gap (bounded) while the link asks the
//! origin to re-publish, and gives a gap up (counted) when the origin says it is lost, when it
//! lasts longer than [`GAP_WAIT`], or when too much is held behind it.
//!
//! The first envelope heard from a node sets where its sequence starts for us (a node that
//! just started, or just met another, has nothing to catch up on; snapshots bring the state).

use super::envelope::Envelope;
use ahash::AHashMap;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest a gap holds back what came after it before it is given up.
pub const GAP_WAIT: Duration = Duration::from_secs(5);

/// Shortest pause between two replay requests for one origin.
pub const ASK_INTERVAL: Duration = Duration::from_millis(500);

/// Most envelopes held behind one origin's gap; at the bound the gap is given up.
pub const MAX_HELD: usize = 50_000;

/// Most origins tracked; the longest silent one is forgotten at the bound.
const MAX_ORIGINS: usize = 4096;

/// Silence after which an origin is forgotten when a new one comes (a node killed without a
/// goodbye; far beyond any outage buffer, so nothing could be re-published anyway).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Envelopes a step released, in order, and what it counted.
#[derive(Debug, Default)]
pub struct Released {
    /// To hand on, in order.
    pub envelopes: Vec<Envelope>,
    /// Repeats dropped.
    pub duplicates: u64,
    /// Envelopes of a given-up gap (never received).
    pub missed: u64,
}

/// One origin's position.
#[derive(Debug)]
struct Origin {
    /// Next number expected.
    next: u64,
    /// Highest number known to exist (heard, or announced by a heartbeat).
    known: u64,
    /// Envelopes after the gap, by number.
    held: BTreeMap<u64, Envelope>,
    /// When the current gap was noticed.
    gap_since: Option<Instant>,
    /// When it was last asked to re-publish.
    asked: Option<Instant>,
    /// When anything was last heard from it.
    heard: Instant,
}

impl Origin {
    fn in_gap(&self) -> bool {
        self.known >= self.next
    }

    /// Hands on what is next in order.
    fn drain(&mut self, out: &mut Released) {
        while let Some(envelope) = self.held.remove(&self.next) {
            self.next += 1;
            out.envelopes.push(envelope);
        }
        if !self.in_gap() {
            self.gap_since = None;
            self.asked = None;
        }
    }

    /// Gives up everything missing up to `upto`: releases what is held up to there, in order.
    fn skip_to(&mut self, upto: u64, out: &mut Released) {
        if upto >= self.next {
            let after = self.held.split_off(&upto.saturating_add(1));
            let upto_held = std::mem::replace(&mut self.held, after);
            out.missed += (upto - self.next + 1) - upto_held.len() as u64;
            out.envelopes.extend(upto_held.into_values());
            self.next = upto + 1;
        }
        self.known = self.known.max(upto);
        self.gap_since = None;
        self.asked = None;
        self.drain(out);
        if self.in_gap() {
            self.gap_since = Some(self.heard);
        }
    }
}

/// Every origin's position (see the module documentation).
#[derive(Debug, Default)]
pub struct Sequencer {
    origins: AHashMap<String, Origin>,
}

impl Sequencer {
    /// Takes one envelope from another node; returns what it releases.
    pub fn accept(&mut self, envelope: Envelope, now: Instant) -> Released {
        let mut out = Released::default();
        let ordered = envelope.body.is_ordered() && envelope.seq > 0;
        if !self.origins.contains_key(&envelope.node) {
            self.make_room(now);
            let next = if ordered {
                envelope.seq
            } else {
                envelope.seq + 1
            };
            let origin = Origin {
                next,
                known: next - 1,
                held: BTreeMap::new(),
                gap_since: None,
                asked: None,
                heard: now,
            };
            self.origins.insert(envelope.node.clone(), origin);
        }
        let origin = self.origins.get_mut(&envelope.node).expect("just ensured");
        origin.heard = now;
        origin.known = origin.known.max(envelope.seq);
        if !ordered {
            out.envelopes.push(envelope);
        } else if envelope.seq < origin.next || origin.held.contains_key(&envelope.seq) {
            out.duplicates += 1;
        } else if envelope.seq == origin.next {
            origin.next += 1;
            out.envelopes.push(envelope);
            origin.drain(&mut out);
        } else {
            origin.held.insert(envelope.seq, envelope);
        }
        if origin.in_gap() {
            origin.gap_since.get_or_insert(now);
            if origin.held.len() > MAX_HELD {
                let upto = origin.known;
                origin.skip_to(upto, &mut out);
            }
        }
        out
    }

    /// The origin says its envelopes up to `upto` are gone.
    pub fn lost(&mut self, node: &str, upto: u64) -> Released {
        let mut out = Released::default();
        if let Some(origin) = self.origins.get_mut(node) {
            origin.skip_to(upto, &mut out);
        }
        out
    }

    /// Gives up the gaps older than [`GAP_WAIT`].
    pub fn expire_gaps(&mut self, now: Instant) -> Released {
        let mut out = Released::default();
        for origin in self.origins.values_mut() {
            if origin
                .gap_since
                .is_some_and(|since| now.duration_since(since) > GAP_WAIT)
            {
                let upto = origin.known;
                origin.skip_to(upto, &mut out);
            }
        }
        out
    }

    /// The origins to ask for a replay now, as (node, last number received in order); marks
    /// them asked.
    pub fn due_requests(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut asks = Vec::new();
        for (node, origin) in &mut self.origins {
            let due = origin
                .asked
                .is_none_or(|at| now.duration_since(at) >= ASK_INTERVAL);
            if origin.in_gap() && due {
                origin.asked = Some(now);
                asks.push((node.clone(), origin.next - 1));
            }
        }
        asks
    }

    /// Every origin with its last number received in order (asked of all after a reconnect).
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.origins
            .iter()
            .map(|(node, origin)| (node.clone(), origin.next - 1))
            .collect()
    }

    /// Forgets a node (it said goodbye).
    pub fn forget(&mut self, node: &str) {
        self.origins.remove(node);
    }

    /// Forgets long-silent origins, and the most silent one at [`MAX_ORIGINS`].
    fn make_room(&mut self, now: Instant) {
        self.origins
            .retain(|_, o| !o.held.is_empty() || now.duration_since(o.heard) < FORGET_AFTER);
        if self.origins.len() < MAX_ORIGINS {
            return;
        }
        let oldest = self
            .origins
            .iter()
            .min_by_key(|(_, o)| o.heard)
            .map(|(node, _)| node.clone());
        if let Some(node) = oldest {
            self.origins.remove(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{Body, LinkControl};
    use super::*;

    fn ordered(seq: u64) -> Envelope {
        Envelope {
            node: "a".into(),
            seq,
            body: Body::Hello,
        }
    }

    fn heartbeat(seq: u64) -> Envelope {
        Envelope {
            node: "a".into(),
            seq,
            body: Body::Heartbeat,
        }
    }

    fn seqs(out: &Released) -> Vec<u64> {
        out.envelopes.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn orders_drops_repeats_and_asks_for_gaps() {
        let now = Instant::now();
        let mut s = Sequencer::default();
        assert_eq!(seqs(&s.accept(ordered(7), now)), [7]);
        assert_eq!(s.accept(ordered(7), now).duplicates, 1);
        assert!(seqs(&s.accept(ordered(10), now)).is_empty());
        assert!(seqs(&s.accept(ordered(9), now)).is_empty());
        assert_eq!(s.accept(ordered(9), now).duplicates, 1);
        assert_eq!(s.due_requests(now), [("a".to_string(), 7)]);
        assert!(s.due_requests(now).is_empty(), "asked once per interval");
        assert_eq!(seqs(&s.accept(ordered(8), now)), [8, 9, 10]);
        assert!(s.due_requests(now + ASK_INTERVAL).is_empty());
        assert_eq!(s.positions(), [("a".to_string(), 10)]);
    }

    #[test]
    fn a_heartbeat_reveals_a_lost_tail_and_gaps_are_given_up() {
        let now = Instant::now();
        let mut s = Sequencer::default();
        s.accept(ordered(1), now);
        assert_eq!(seqs(&s.accept(heartbeat(3), now)), [3]);
        assert_eq!(s.due_requests(now), [("a".to_string(), 1)]);
        s.accept(ordered(3), now);
        let out = s.lost("a", 2);
        assert_eq!((seqs(&out), out.missed), (vec![3], 1));
        s.accept(ordered(6), now);
        assert!(s.expire_gaps(now + GAP_WAIT / 2).envelopes.is_empty());
        let out = s.expire_gaps(now + GAP_WAIT * 2);
        assert_eq!((seqs(&out), out.missed), (vec![6], 2));
        assert_eq!(seqs(&s.accept(ordered(7), now)), [7]);
    }

    #[test]
    fn unordered_bodies_pass_at_once() {
        let now = Instant::now();
        let mut s = Sequencer::default();
        s.accept(ordered(1), now);
        s.accept(ordered(3), now);
        let control = Envelope {
            node: "a".into(),
            seq: 3,
            body: Body::Link(LinkControl::Lost { upto: 0 }),
        };
        assert_eq!(seqs(&s.accept(control, now)), [3]);
        s.forget("a");
        assert!(s.positions().is_empty());
    }
}
