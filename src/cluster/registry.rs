//! Which other nodes are alive: every envelope from a node counts as a sign of life; a node not
//! heard from within the timeout is dead, and its state must go.

use ahash::AHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Last time each other node was heard from.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    seen: AHashMap<Arc<str>, Instant>,
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

    /// Removes and returns the nodes silent for longer than `timeout`.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
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
}
