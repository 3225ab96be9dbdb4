//! Node-wide subscription counts for the `subscription_count` webhook, kept by each channel's
//! home shard: sent on every change, but at most every 5 s for a channel with more than 100
//! subscriptions (PROTOCOL.md §6.3); the latest count goes out when the 5 s are over.

use ahash::AHashMap;
use std::time::{Duration, Instant};

/// Above this many subscriptions a channel's count is sent at most every [`THROTTLE`].
pub const THROTTLE_ABOVE: usize = 100;

/// Shortest interval between two counts of a busy channel.
pub const THROTTLE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Count {
    subscriptions: usize,
    last_sent: Option<Instant>,
    unsent: bool,
}

/// Counts of the channels homed on one shard.
#[derive(Debug, Default)]
pub struct SubscriptionCounts {
    channels: AHashMap<(u32, Box<str>), Count>,
}

impl SubscriptionCounts {
    /// Applies a change of `delta` subscriptions; returns the count to send now, if any.
    pub fn change(&mut self, app: u32, channel: &str, delta: i64, now: Instant) -> Option<usize> {
        let key = (app, Box::<str>::from(channel));
        let count = self.channels.entry(key.clone()).or_insert(Count {
            subscriptions: 0,
            last_sent: None,
            unsent: false,
        });
        count.subscriptions = (count.subscriptions as i64 + delta).max(0) as usize;
        let throttled = count.subscriptions > THROTTLE_ABOVE
            && count
                .last_sent
                .is_some_and(|at| now.duration_since(at) < THROTTLE);
        if throttled {
            count.unsent = true;
            return None;
        }
        count.last_sent = Some(now);
        count.unsent = false;
        let subscriptions = count.subscriptions;
        if subscriptions == 0 {
            self.channels.remove(&key);
        }
        Some(subscriptions)
    }

    /// Counts held back by the throttle whose 5 s are over: (app, channel, count).
    pub fn due(&mut self, now: Instant) -> Vec<(u32, Box<str>, usize)> {
        let mut due = Vec::new();
        for ((app, channel), count) in self.channels.iter_mut() {
            if count.unsent
                && count
                    .last_sent
                    .is_none_or(|at| now.duration_since(at) >= THROTTLE)
            {
                count.unsent = false;
                count.last_sent = Some(now);
                due.push((*app, channel.clone(), count.subscriptions));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_channels_report_every_change() {
        let mut counts = SubscriptionCounts::default();
        let t = Instant::now();
        assert_eq!(counts.change(0, "c", 1, t), Some(1));
        assert_eq!(counts.change(0, "c", 1, t), Some(2));
        assert_eq!(counts.change(0, "c", -2, t), Some(0));
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
        assert_eq!(counts.due(t + THROTTLE), vec![(0, Box::from("c"), 102)]);
        assert!(counts.due(t + THROTTLE * 2).is_empty());
        assert_eq!(counts.change(0, "c", -1, t + THROTTLE * 2), Some(101));
    }
}
