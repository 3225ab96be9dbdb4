//! Who is online, kept by each user's home shard (see [`super::home_shard`]): per (app, user id)
//! how many of this node's sockets are signed in as the user, and which other nodes have at
//! least one. A user is online while either is non-zero (PROTOCOL.md §2.9); the calls that flip
//! that answer report it, so the home shard knows when to broadcast a watchlist change.
//!
//! Replication follows `channels::presence`: a node announces a user when its first socket of the
//! user signs in and withdraws them after the last ([`LocalChange::first_on_node`] /
//! [`LocalChange::last_on_node`]); the receiving home shards call [`OnlineUsers::add_remote`] and
//! [`OnlineUsers::remove_remote`], a node that stops heartbeating is [`OnlineUsers::drop_node`]d,
//! and a node that joins late is sent [`OnlineUsers::local_users`].

use crate::protocol::outbound::WatchlistChange;
use ahash::AHashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct Presence {
    /// This node's signed-in sockets of the user (over all shards).
    local_sockets: u32,
    /// Other nodes with at least one signed-in socket of the user.
    remote_nodes: Vec<Arc<str>>,
}

impl Presence {
    fn is_online(&self) -> bool {
        self.local_sockets > 0 || !self.remote_nodes.is_empty()
    }
}

/// What a local sign-in or sign-out changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalChange {
    /// `Online` when the user was offline everywhere, `Offline` when they are now: broadcast to
    /// every shard of this node for the watchers.
    pub watchlist: Option<WatchlistChange>,
    /// The node's first socket of the user: announce the user to the other nodes.
    pub first_on_node: bool,
    /// The node's last socket of the user: withdraw the user from the other nodes.
    pub last_on_node: bool,
}

/// The online users whose home is this shard.
#[derive(Debug, Default)]
pub struct OnlineUsers {
    apps: AHashMap<u32, AHashMap<Arc<str>, Presence>>,
}

impl OnlineUsers {
    /// One more socket of this node signed in as `user`.
    pub fn add_local(&mut self, app: u32, user: &Arc<str>) -> LocalChange {
        let presence = self
            .apps
            .entry(app)
            .or_default()
            .entry(user.clone())
            .or_default();
        let was_online = presence.is_online();
        presence.local_sockets += 1;
        LocalChange {
            watchlist: (!was_online).then_some(WatchlistChange::Online),
            first_on_node: presence.local_sockets == 1,
            last_on_node: false,
        }
    }

    /// One socket of this node signed in as `user` is gone; nothing when it had none.
    pub fn remove_local(&mut self, app: u32, user: &str) -> LocalChange {
        let Some(presence) = self.presence_mut(app, user).filter(|p| p.local_sockets > 0) else {
            return LocalChange::default();
        };
        presence.local_sockets -= 1;
        let change = LocalChange {
            watchlist: None,
            first_on_node: false,
            last_on_node: presence.local_sockets == 0,
        };
        if self.forget_if_offline(app, user) {
            return LocalChange {
                watchlist: Some(WatchlistChange::Offline),
                ..change
            };
        }
        change
    }

    /// `node` now has `user` signed in; true when the user came online.
    pub fn add_remote(&mut self, app: u32, node: &Arc<str>, user: &Arc<str>) -> bool {
        let presence = self
            .apps
            .entry(app)
            .or_default()
            .entry(user.clone())
            .or_default();
        let was_online = presence.is_online();
        if !presence.remote_nodes.iter().any(|n| n == node) {
            presence.remote_nodes.push(node.clone());
        }
        !was_online
    }

    /// `node` no longer has `user` signed in; true when the user went offline.
    pub fn remove_remote(&mut self, app: u32, node: &str, user: &str) -> bool {
        let Some(presence) = self.presence_mut(app, user) else {
            return false;
        };
        let before = presence.remote_nodes.len();
        presence.remote_nodes.retain(|n| &**n != node);
        before != presence.remote_nodes.len() && self.forget_if_offline(app, user)
    }

    /// Forgets everything `node` contributed; returns the (app, user) now offline everywhere.
    pub fn drop_node(&mut self, node: &str) -> Vec<(u32, Arc<str>)> {
        self.node_users(node)
            .into_iter()
            .filter(|(app, user)| self.remove_remote(*app, node, user))
            .collect()
    }

    /// The (app, user) that `node` contributes here.
    pub fn node_users(&self, node: &str) -> Vec<(u32, Arc<str>)> {
        self.iter()
            .filter(|(_, _, p)| p.remote_nodes.iter().any(|n| &**n == node))
            .map(|(app, user, _)| (app, user.clone()))
            .collect()
    }

    /// The (app, user) with at least one socket on this node, for a snapshot to a new node.
    pub fn local_users(&self) -> Vec<(u32, Arc<str>)> {
        self.iter()
            .filter(|(_, _, p)| p.local_sockets > 0)
            .map(|(app, user, _)| (app, user.clone()))
            .collect()
    }

    /// Whether `user` is signed in anywhere in the cluster (as far as this home knows).
    pub fn is_online(&self, app: u32, user: &str) -> bool {
        self.apps
            .get(&app)
            .and_then(|users| users.get(user))
            .is_some_and(Presence::is_online)
    }

    /// Splits `ids` into (online, offline), keeping their order: the initial
    /// `watchlist_events` of a sign-in.
    pub fn statuses(&self, app: u32, ids: &[Arc<str>]) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        ids.iter().cloned().partition(|id| self.is_online(app, id))
    }

    /// Users of `app` online here (local or remote).
    pub fn online_count(&self, app: u32) -> usize {
        self.apps.get(&app).map_or(0, |users| users.len())
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &Arc<str>, &Presence)> {
        self.apps
            .iter()
            .flat_map(|(app, users)| users.iter().map(move |(user, p)| (*app, user, p)))
    }

    fn presence_mut(&mut self, app: u32, user: &str) -> Option<&mut Presence> {
        self.apps.get_mut(&app)?.get_mut(user)
    }

    /// Drops the entry of a user no longer online; whether it was dropped.
    fn forget_if_offline(&mut self, app: u32, user: &str) -> bool {
        let Some(users) = self.apps.get_mut(&app) else {
            return false;
        };
        if users.get(user).is_some_and(Presence::is_online) {
            return false;
        }
        users.remove(user);
        if users.is_empty() {
            self.apps.remove(&app);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn first_socket_anywhere_is_online_and_last_is_offline() {
        let mut online = OnlineUsers::default();
        let alice = id("alice");
        assert_eq!(
            online.add_local(0, &alice),
            LocalChange {
                watchlist: Some(WatchlistChange::Online),
                first_on_node: true,
                last_on_node: false
            }
        );
        assert_eq!(online.add_local(0, &alice), LocalChange::default());
        assert!(online.is_online(0, "alice") && !online.is_online(1, "alice"));
        assert_eq!(online.remove_local(0, "alice"), LocalChange::default());
        assert_eq!(
            online.remove_local(0, "alice"),
            LocalChange {
                watchlist: Some(WatchlistChange::Offline),
                first_on_node: false,
                last_on_node: true
            }
        );
        assert_eq!(online.remove_local(0, "alice"), LocalChange::default());
        assert!(!online.is_online(0, "alice"));
        assert!(online.apps.is_empty());
    }

    #[test]
    fn other_nodes_keep_a_user_online() {
        let mut online = OnlineUsers::default();
        let (a, b) = (id("node-a"), id("node-b"));
        let alice = id("alice");
        assert!(online.add_remote(0, &a, &alice));
        assert!(!online.add_remote(0, &a, &alice));
        assert!(!online.add_remote(0, &b, &alice));
        // A local socket of a user already online elsewhere: no change, but announce the node.
        assert_eq!(
            online.add_local(0, &alice),
            LocalChange {
                watchlist: None,
                first_on_node: true,
                last_on_node: false
            }
        );
        assert_eq!(
            online.remove_local(0, "alice"),
            LocalChange {
                watchlist: None,
                first_on_node: false,
                last_on_node: true
            }
        );
        assert!(!online.remove_remote(0, "node-a", "alice"));
        assert!(
            !online.remove_remote(0, "node-a", "alice"),
            "twice is a no-op"
        );
        assert!(!online.remove_remote(0, "node-c", "bob"));
        assert!(online.is_online(0, "alice"));
        assert!(online.remove_remote(0, "node-b", "alice"));
        assert!(!online.is_online(0, "alice"));
        assert!(online.apps.is_empty());
    }

    #[test]
    fn dropping_a_node_reports_only_users_it_alone_kept_online() {
        let mut online = OnlineUsers::default();
        let (a, b) = (id("node-a"), id("node-b"));
        online.add_remote(0, &a, &id("only-a"));
        online.add_remote(0, &a, &id("a-and-b"));
        online.add_remote(0, &b, &id("a-and-b"));
        online.add_remote(1, &a, &id("a-and-local"));
        online.add_local(1, &id("a-and-local"));
        let mut gone = online.drop_node("node-a");
        gone.sort();
        assert_eq!(gone, vec![(0, id("only-a"))]);
        assert!(online.node_users("node-a").is_empty());
        assert_eq!(online.node_users("node-b"), vec![(0, id("a-and-b"))]);
        assert_eq!(online.local_users(), vec![(1, id("a-and-local"))]);
        assert_eq!(online.online_count(0), 1);
    }

    #[test]
    fn statuses_split_a_watchlist_in_order() {
        let mut online = OnlineUsers::default();
        online.add_local(0, &id("b"));
        online.add_remote(0, &id("n"), &id("d"));
        let ids = [id("a"), id("b"), id("c"), id("d")];
        let (on, off) = online.statuses(0, &ids);
        assert_eq!(on, vec![id("b"), id("d")]);
        assert_eq!(off, vec![id("a"), id("c")]);
        assert_eq!(online.statuses(1, &ids).0, Vec::<Arc<str>>::new());
    }
}
