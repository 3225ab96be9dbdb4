//! Channels on one shard: the [`table::ChannelTable`] of local subscribers, and the
//! [`presence::PresenceRosters`] and [`cache::ChannelCache`] this shard keeps as the home shard
//! of some presence and cache channels.
//!
//! Both are plain single-threaded data structures owned by a shard; the shard runtime decides
//! when to call them and sends the messages they ask for.

pub mod cache;
pub mod occupancy;
pub mod presence;
pub mod subscription_count;
pub mod table;

/// Shard that owns the presence roster of `(app, channel)`: the same answer on every shard, so a
/// user's sockets on different shards meet in one roster.
pub fn home_shard(app: u32, channel: &str, shards: usize) -> usize {
    use std::hash::{BuildHasher, Hash, Hasher};
    // Fixed seeds: every shard (and every process) must compute the same home.
    let mut hasher = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    app.hash(&mut hasher);
    channel.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_spread() {
        assert_eq!(
            home_shard(0, "presence-a", 4),
            home_shard(0, "presence-a", 4)
        );
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[home_shard(0, &format!("presence-{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(home_shard(3, "x", 1), 0);
    }
}
