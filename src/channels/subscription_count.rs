//! Cluster-wide subscription counts of non-presence channels, kept by each channel's home shard,
//! for the `subscription_count` webhook and the `pusher_internal:subscription_count` event: this
//! node's count (from its shards' subscribes and unsubscribes) plus the latest count each other
//! node reported. A count is sent on every change, but at most every 5 s for a channel with more
//! than 100 subscriptions (PROTOCOL.md §6.3); the latest goes out when the 5 s are over.
//!
//! A change is *local* when this node's count moved (this node then reports the webhook and
//! shares its count with the other nodes) and *remote* when another node's did (only this node's
//! subscribers are told). So each change is reported by one node's webhook, and every node's
//! subscribers hear of it.

use ahash::AHashMap;
use std::time::{Duration, Instant};

/// Above this many subscriptions a channel's count is sent at most every [`THROTTLE`].
pub const THROTTLE_ABOVE: usize = 100;

/// Shortest interval between two counts of a busy channel.
pub const THROTTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Count {
    /// This node's subscriptions.
    local: usize,
    /// The other nodes' latest reported subscriptions (nodes with none are left out).
    remote: Vec<(Box<str>, usize)>,
    last_sent: Option<Instant>,
    /// A change the throttle held back.
    unsent: bool,
    /// Whether a held-back change includes a change of this node's count.
    unsent_local: bool,
}

impl Count {
    fn total(&self) -> usize {
        self.local + self.remote.iter().map(|(_, n)| n).sum::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.local == 0 && self.remote.is_empty()
    }
}

/// A count to send now (or one the throttle released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountUpdate {
    /// App registry index.
    pub app: u32,
    /// Channel.
    pub channel: Box<str>,
    /// Subscriptions over the cluster.
    pub total: usize,
    /// This node's subscriptions (shared with the other nodes when `local`).
    pub node: usize,
    /// Whether this node's own count changed (it reports the webhook and shares the count).
    pub local: bool,
}

/// Counts of the channels homed on one shard.
#[derive(Debug, Default)]
pub struct SubscriptionCounts {
    channels: AHashMap<(u32, Box<str>), Count>,
}

impl SubscriptionCounts {
    /// Applies a change of `delta` subscriptions on this node; returns the update to send now,
    /// if the throttle lets it through.
    pub fn change(
        &mut self,
        app: u32,
        channel: &str,
        delta: i64,
        now: Instant,
    ) -> Option<CountUpdate> {
        let count = self.entry(app, channel);
        count.local = (count.local as i64 + delta).max(0) as usize;
        self.settle(app, channel, now, true)
    }

    /// Another node reports `subscriptions` for the channel; returns the update to send now.
    pub fn remote_changed(
        &mut self,
        app: u32,
        channel: &str,
        node: &str,
        subscriptions: usize,
        now: Instant,
    ) -> Option<CountUpdate> {
        let count = self.entry(app, channel);
        count.remote.retain(|(n, _)| **n != *node);
        if subscriptions > 0 {
            count.remote.push((node.into(), subscriptions));
        }
        self.settle(app, channel, now, false)
    }

    /// `node` is gone: its counts go; the updates of the channels it had subscribers on.
    pub fn drop_node(&mut self, node: &str, now: Instant) -> Vec<CountUpdate> {
        let touched: Vec<(u32, Box<str>)> = self
            .channels
            .iter_mut()
            .filter_map(|(key, count)| {
                let before = count.remote.len();
                count.remote.retain(|(n, _)| **n != *node);
                (count.remote.len() != before).then(|| key.clone())
            })
            .collect();
        touched
            .into_iter()
            .filter_map(|(app, channel)| self.settle(app, &channel, now, false))
            .collect()
    }

    /// This node's subscriptions of the channel.
    pub fn local(&self, app: u32, channel: &str) -> usize {
        self.channels
            .get(&(app, Box::from(channel)))
            .map_or(0, |c| c.local)
    }

    /// Every channel with subscriptions on this node: (app, channel, this node's count).
    pub fn locals(&self) -> Vec<(u32, Box<str>, usize)> {
        self.channels
            .iter()
            .filter(|(_, c)| c.local > 0)
            .map(|((app, channel), c)| (*app, channel.clone(), c.local))
            .collect()
    }

    fn entry(&mut self, app: u32, channel: &str) -> &mut Count {
        self.channels.entry((app, channel.into())).or_default()
    }

    /// After a change: the update to send unless the throttle holds it back.
    fn settle(
        &mut self,
        app: u32,
        channel: &str,
        now: Instant,
        local: bool,
    ) -> Option<CountUpdate> {
        let key = (app, Box::<str>::from(channel));
        let count = self.channels.get_mut(&key)?;
        let total = count.total();
        let throttled = total > THROTTLE_ABOVE
            && count
                .last_sent
                .is_some_and(|at| now.duration_since(at) < THROTTLE);
        if throttled {
            count.unsent = true;
            count.unsent_local |= local;
            return None;
        }
        let local = local || count.unsent_local;
        count.last_sent = Some(now);
        count.unsent = false;
        count.unsent_local = false;
        let node = count.local;
        if count.is_empty() {
            self.channels.remove(&key);
        }
        Some(CountUpdate {
            app,
            channel: key.1,
            total,
            node,
            local,
        })
    }

    /// Updates held back by the throttle whose 5 s are over.
    pub fn due(&mut self, now: Instant) -> Vec<CountUpdate> {
        let mut due = Vec::new();
        for ((app, channel), count) in self.channels.iter_mut() {
            if count.unsent
                && count
                    .last_sent
                    .is_none_or(|at| now.duration_since(at) >= THROTTLE)
            {
                due.push(CountUpdate {
                    app: *app,
                    channel: channel.clone(),
                    total: count.total(),
                    node: count.local,
                    local: count.unsent_local,
                });
                count.unsent = false;
                count.unsent_local = false;
                count.last_sent = Some(now);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(update: Option<CountUpdate>) -> Option<(usize, usize, bool)> {
        update.map(|u| (u.total, u.node, u.local))
    }

    #[test]
    fn small_channels_report_every_change() {
        let mut counts = SubscriptionCounts::default();
        let t = Instant::now();
        assert_eq!(totals(counts.change(0, "c", 1, t)), Some((1, 1, true)));
        assert_eq!(totals(counts.change(0, "c", 1, t)), Some((2, 2, true)));
        assert_eq!(totals(counts.change(0, "c", -2, t)), Some((0, 0, true)));
        assert!(counts.channels.is_empty());
    }

    #[test]
    fn busy_channels_report_at_most_every_five_seconds_then_the_latest() {
        let mut counts = SubscriptionCounts::default();
        let t = Instant::now();
        for _ in 0..100 {
            counts.change(0, "c", 1, t);
        }
        assert_eq!(counts.change(0, "c", 1, t), None);
        assert_eq!(counts.change(0, "c", 1, t + Duration::from_secs(1)), None);
        assert!(counts.due(t + Duration::from_secs(4)).is_empty());
        let due = counts.due(t + THROTTLE);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].total, due[0].local), (102, true));
        assert!(counts.due(t + THROTTLE * 2).is_empty());
        assert_eq!(
            totals(counts.change(0, "c", -1, t + THROTTLE * 2)),
            Some((101, 101, true))
        );
    }

    #[test]
    fn other_nodes_counts_are_summed_until_they_go() {
        let mut counts = SubscriptionCounts::default();
        let t = Instant::now();
        counts.change(0, "c", 1, t);
        assert_eq!(
            totals(counts.remote_changed(0, "c", "n2", 3, t)),
            Some((4, 1, false))
        );
        assert_eq!(
            totals(counts.remote_changed(0, "c", "n2", 2, t)),
            Some((3, 1, false))
        );
        assert_eq!(
            totals(counts.remote_changed(0, "c", "n3", 5, t)),
            Some((8, 1, false))
        );
        assert_eq!(counts.local(0, "c"), 1);
        let gone = counts.drop_node("n3", t);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].total, gone[0].local), (3, false));
        assert!(counts.drop_node("n9", t).is_empty());
        counts.change(0, "c", -1, t);
        assert_eq!(
            totals(counts.remote_changed(0, "c", "n2", 0, t)),
            Some((0, 0, false))
        );
        assert!(counts.channels.is_empty());
    }
}
