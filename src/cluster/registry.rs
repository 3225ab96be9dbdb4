//! Which other nodes are alive: every envelope from a node counts as a sign of life; a node not
//! heard from within the timeout is dead, and its state must go. Only time with *our own* link
//! up counts: while it is down nobody can be heard, so nobody is timed out (and no presence
//! member flaps for an outage of Redis or of our network); when it comes back, each node's
//! silence resumes where it was.

use ahash::AHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Last time each other node was heard from.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    seen: AHashMap<Arc<str>, Instant>,
    /// Since when our link has been down, if it is.
    paused: Option<Instant>,
}

impl NodeRegistry {
    /// Records a sign of life; returns the node's shared name and whether it is new.
    pub fn touch(&mut self, node: &str, now: Instant) -> (Arc<str>, bool) {
        if let Some(seen) = self.seen.get_mut(node) {
            *seen = now;
            let name = self.seen.get_key_value(node).expect("just found").0.clone();
            return (name, false);
        }
        let name: Arc<str> = Arc::from(node);
        self.seen.insert(name.clone(), now);
        (name, true)
    }

    /// Our link went down: stops the clocks.
    pub fn pause(&mut self, now: Instant) {
        self.paused.get_or_insert(now);
    }

    /// Our link is back: moves every node's last sign of life forward by the time it was down.
    pub fn resume(&mut self, now: Instant) {
        if let Some(since) = self.paused.take() {
            let down = now.saturating_duration_since(since);
            for seen in self.seen.values_mut() {
                *seen += down;
            }
        }
    }

    /// Removes and returns the nodes silent for longer than `timeout` of link-up time (none
    /// while the link is down).
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
        if self.paused.is_some() {
            return Vec::new();
        }
        let dead: Vec<Arc<str>> = self
            .seen
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &dead {
            self.seen.remove(name);
        }
        dead
    }

    /// Forgets a node (it said goodbye); whether it was known.
    pub fn remove(&mut self, node: &str) -> bool {
        self.seen.remove(node).is_some()
    }

    /// The live nodes.
    pub fn nodes(&self) -> Vec<Arc<str>> {
        self.seen.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_expire_after_silence() {
        let mut registry = NodeRegistry::default();
        let start = Instant::now();
        assert!(registry.touch("a", start).1);
        assert!(!registry.touch("a", start).1);
        registry.touch("b", start + Duration::from_secs(5));
        let dead = registry.expire(start + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!(dead.iter().map(|n| &**n).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(registry.nodes().len(), 1);
        assert!(registry.remove("b"));
        assert!(!registry.remove("b"));
    }

    #[test]
    fn time_with_our_link_down_does_not_count() {
        let mut registry = NodeRegistry::default();
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let timeout = Duration::from_secs(10);
        registry.touch("a", start);
        registry.pause(at(4));
        assert!(registry.expire(at(30), timeout).is_empty());
        registry.resume(at(30));
        assert!(
            registry.expire(at(35), timeout).is_empty(),
            "4 s + 5 s of link-up silence"
        );
        let dead = registry.expire(at(37), timeout);
        assert_eq!(dead.iter().map(|n| &**n).collect::<Vec<_>>(), vec!["a"]);
    }
}
