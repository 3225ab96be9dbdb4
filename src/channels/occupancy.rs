//! Occupancy, kept by each channel's home shard: how many shards of this node have local
//! subscribers, and which other nodes have some, so that `channel_occupied` and
//! `channel_vacated` fire on cluster-wide transitions only, sent by the node that caused them.

use ahash::AHashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct Entry {
    /// Shards of this node with subscribers.
    shards: u32,
    /// Other nodes with subscribers.
    remote_nodes: Vec<Arc<str>>,
}

impl Entry {
    fn occupied(&self) -> bool {
        self.shards > 0 || !self.remote_nodes.is_empty()
    }
}

/// Occupancy of the channels homed on one shard.
#[derive(Debug, Default)]
pub struct Occupancy {
    channels: AHashMap<(u32, Box<str>), Entry>,
}

/// A change of a channel seen from one shard of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Whether this node as a whole went from no subscribers to some (or back): tell the other
    /// nodes.
    pub node_changed: bool,
    /// Whether the whole cluster did: send the webhook.
    pub cluster_changed: bool,
}

impl Occupancy {
    /// One shard's channel became occupied (`true`) or vacated (`false`).
    pub fn shard_changed(&mut self, app: u32, channel: &str, occupied: bool) -> Change {
        let key = (app, Box::<str>::from(channel));
        let entry = self.channels.entry(key.clone()).or_default();
        let was_occupied = entry.occupied();
        if occupied {
            entry.shards += 1;
        } else if entry.shards > 0 {
            entry.shards -= 1;
        } else {
            self.forget_if_empty(&key);
            return Change::default();
        }
        let change = Change {
            node_changed: entry.shards == u32::from(occupied),
            cluster_changed: was_occupied != entry.occupied(),
        };
        self.forget_if_empty(&key);
        change
    }

    /// Another node's subscribers of the channel came or went (no webhook: that node sends it).
    pub fn remote_changed(&mut self, app: u32, channel: &str, node: &Arc<str>, occupied: bool) {
        let key = (app, Box::<str>::from(channel));
        let entry = self.channels.entry(key.clone()).or_default();
        entry.remote_nodes.retain(|n| n != node);
        if occupied {
            entry.remote_nodes.push(node.clone());
        }
        self.forget_if_empty(&key);
    }

    /// Forgets `node`; returns the channels now vacated everywhere.
    pub fn drop_node(&mut self, node: &str) -> Vec<(u32, Box<str>)> {
        let keys = self.node_channels(node);
        let mut vacated = Vec::new();
        for key in keys {
            if let Some(entry) = self.channels.get_mut(&key) {
                entry.remote_nodes.retain(|n| &**n != node);
                if !entry.occupied() {
                    vacated.push(key.clone());
                }
            }
            self.forget_if_empty(&key);
        }
        vacated
    }

    /// Replaces what was known of `node` with `channels` (from its snapshot).
    pub fn replace_node(&mut self, node: &Arc<str>, channels: &[(u32, Box<str>)]) {
        for key in self.node_channels(node) {
            if !channels.contains(&key) {
                self.remote_changed(key.0, &key.1, node, false);
            }
        }
        for (app, channel) in channels {
            self.remote_changed(*app, channel, node, true);
        }
    }

    /// The channels `node` has subscribers of.
    pub fn node_channels(&self, node: &str) -> Vec<(u32, Box<str>)> {
        self.channels
            .iter()
            .filter(|(_, e)| e.remote_nodes.iter().any(|n| &**n == node))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The channels this node has subscribers of (for a snapshot).
    pub fn local_channels(&self) -> Vec<(u32, Box<str>)> {
        self.channels
            .iter()
            .filter(|(_, e)| e.shards > 0)
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn forget_if_empty(&mut self, key: &(u32, Box<str>)) {
        if self.channels.get(key).is_some_and(|e| !e.occupied()) {
            self.channels.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_fire_on_the_first_and_last_shard() {
        let mut occupancy = Occupancy::default();
        let both = Change {
            node_changed: true,
            cluster_changed: true,
        };
        assert_eq!(occupancy.shard_changed(0, "c", true), both);
        assert_eq!(occupancy.shard_changed(0, "c", true), Change::default());
        assert_eq!(occupancy.shard_changed(0, "c", false), Change::default());
        assert_eq!(occupancy.shard_changed(0, "c", false), both);
        assert_eq!(occupancy.shard_changed(0, "c", false), Change::default());
        assert!(occupancy.channels.is_empty());
    }

    #[test]
    fn other_nodes_keep_a_channel_occupied() {
        let mut occupancy = Occupancy::default();
        let node: Arc<str> = Arc::from("b");
        occupancy.remote_changed(0, "c", &node, true);
        let change = occupancy.shard_changed(0, "c", true);
        assert_eq!(
            change,
            Change {
                node_changed: true,
                cluster_changed: false
            }
        );
        let change = occupancy.shard_changed(0, "c", false);
        assert_eq!(
            change,
            Change {
                node_changed: true,
                cluster_changed: false
            }
        );
        assert_eq!(occupancy.local_channels(), vec![]);
        assert_eq!(occupancy.drop_node("b"), vec![(0, Box::from("c"))]);
        assert!(occupancy.channels.is_empty());
        occupancy.replace_node(&node, &[(0, Box::from("x"))]);
        assert_eq!(occupancy.node_channels("b"), vec![(0, Box::from("x"))]);
        occupancy.replace_node(&node, &[]);
        assert!(occupancy.channels.is_empty());
    }
}
