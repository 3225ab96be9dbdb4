//! Signed-in users (PROTOCOL.md §2.9): which sockets are signed in as whom, who watches whom,
//! and who is online anywhere in the cluster, for server-to-user events, `terminate_connections`
//! and watchlist events.
//!
//! Two plain single-threaded structures, each owned by a shard; the shard runtime decides when
//! to call them and sends the messages they ask for:
//! - [`local::LocalUsers`], on every shard: that shard's signed-in sockets per (app, user id),
//!   and the reverse index of watchlists (watched user → the shard's sockets watching them);
//! - [`online::OnlineUsers`], on each user's [`home_shard`]: how many of this node's sockets are
//!   signed in as the user, and which other nodes have the user, so that the first socket
//!   anywhere makes the user `online` and the last one gone makes them `offline`. Like presence
//!   rosters, other nodes' contributions are replicated in (add or remove a node's user, drop a
//!   node that went silent).
//!
//! The flow the shard runs:
//! 1. sign-in on shard S: [`local::LocalUsers::sign_in`]; tell the home shard, which calls
//!    [`online::OnlineUsers::add_local`]. If the user came online, the home broadcasts the change
//!    to every shard (each sends `watchlist_events` to [`local::LocalUsers::watchers_of`]); if it
//!    was the node's first socket of the user, it tells the other nodes
//!    ([`online::OnlineUsers::add_remote`] there). Then S asks the home shards of the watchlist
//!    ([`group_by_home`]) for [`online::OnlineUsers::statuses`] and sends the initial
//!    `watchlist_events`.
//! 2. disconnect (or `terminate_connections`): [`local::LocalUsers::sign_out`], then
//!    [`online::OnlineUsers::remove_local`] at the home, mirroring step 1.
//! 3. `#server-to-user-{id}` events and `terminate_connections`: every shard of every node looks
//!    up [`local::LocalUsers::sockets_of`]; delivery is by identity, never by subscription.
//!
//! Memory: a signed-in socket without a watchlist costs one entry in each of two maps of
//! [`local::LocalUsers`] (about 150 bytes; the user id is one `Arc<str>` shared by all of the
//! user's sockets and by both shards' structures), plus, per user and node, one entry at the home.

pub mod local;
pub mod online;

use std::sync::Arc;

/// The shard that keeps `(app, user_id)`'s online state: the same answer on every shard and
/// every node. Hashed with a tag, so that a user and a channel of the same name need not share
/// a home.
pub fn home_shard(app: u32, user_id: &str, shards: usize) -> usize {
    use std::hash::{BuildHasher, Hash, Hasher};
    // Fixed seeds: every shard (and every process) must compute the same home.
    let mut hasher = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    app.hash(&mut hasher);
    "#user:".hash(&mut hasher);
    user_id.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

/// Splits `ids` by their home shard: `(shard, ids homed there)`, shards in ascending order, ids
/// in their given order. For asking each home shard the statuses of a watchlist.
pub fn group_by_home(app: u32, ids: &[Arc<str>], shards: usize) -> Vec<(usize, Vec<Arc<str>>)> {
    let mut groups: Vec<(usize, Vec<Arc<str>>)> = Vec::new();
    for id in ids {
        let home = home_shard(app, id, shards);
        match groups.binary_search_by_key(&home, |(shard, _)| *shard) {
            Ok(at) => groups[at].1.push(id.clone()),
            Err(at) => groups.insert(at, (home, vec![id.clone()])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_spread_and_in_range() {
        assert_eq!(home_shard(0, "42", 4), home_shard(0, "42", 4));
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[home_shard(0, &format!("user-{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(home_shard(7, "x", 1), 0);
        assert_eq!(home_shard(7, "x", 0), 0);
    }

    #[test]
    fn group_by_home_keeps_every_id_once() {
        let ids: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("u{i}"))).collect();
        let groups = group_by_home(3, &ids, 4);
        assert!(groups.windows(2).all(|w| w[0].0 < w[1].0));
        let mut all: Vec<Arc<str>> = groups.iter().flat_map(|(_, g)| g.clone()).collect();
        for (shard, group) in &groups {
            assert!(group.iter().all(|id| home_shard(3, id, 4) == *shard));
        }
        all.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(all, expected);
    }
}
