//! One shard's signed-in sockets: per (app, user id) the sockets signed in as that user, and per
//! (app, watched user id) the sockets whose watchlist names that user.
//!
//! Everything is keyed so that the hot lookups ([`LocalUsers::sockets_of`] for server-to-user
//! events, [`LocalUsers::watchers_of`] for watchlist changes) borrow a `&str` and allocate
//! nothing. A socket signs in at most once (`protocol::signin::check_not_signed_in`); a second
//! [`LocalUsers::sign_in`] for the same socket is refused here too and changes nothing.

use crate::protocol::signin::SignedInUser;
use crate::protocol::SocketId;
use ahash::AHashMap;
use smallvec::SmallVec;
use std::sync::Arc;

/// What the registry keeps for one signed-in socket.
#[derive(Debug)]
struct SignedInSocket {
    app: u32,
    user: Arc<str>,
    watchlist: Box<[Arc<str>]>,
}

/// A user's sockets (or a watched user's watchers) on this shard: one is kept inline, so the
/// common single-socket user costs no allocation of its own.
type Sockets = SmallVec<[SocketId; 1]>;

/// Sockets per user id, for one app.
type SocketsByUser = AHashMap<Arc<str>, Sockets>;

/// The signed-in sockets of one shard.
#[derive(Debug, Default)]
pub struct LocalUsers {
    sockets: AHashMap<SocketId, SignedInSocket>,
    by_user: AHashMap<u32, SocketsByUser>,
    watchers: AHashMap<u32, SocketsByUser>,
}

/// What a sign-in changed on this shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// Whether this is the user's first socket on this shard.
    pub first_on_shard: bool,
}

/// What a sign-out changed on this shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOut {
    /// App registry index.
    pub app: u32,
    /// The user the socket was signed in as (tell the user's home shard).
    pub user: Arc<str>,
    /// Whether that was the user's last socket on this shard.
    pub last_on_shard: bool,
}

/// A second sign-in of a socket that is already signed in; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadySignedIn {
    /// The user the socket is signed in as.
    pub current: Arc<str>,
}

impl LocalUsers {
    /// Records that `socket` of `app` signed in as `user`, with `user.watchlist`.
    pub fn sign_in(
        &mut self,
        socket: SocketId,
        app: u32,
        user: &SignedInUser,
    ) -> Result<SignedIn, AlreadySignedIn> {
        if let Some(existing) = self.sockets.get(&socket) {
            return Err(AlreadySignedIn {
                current: existing.user.clone(),
            });
        }
        let users = self.by_user.entry(app).or_default();
        let id = interned(users, &user.id);
        let sockets = users.entry(id.clone()).or_default();
        sockets.push(socket);
        let first_on_shard = sockets.len() == 1;
        let watchers = self.watchers.entry(app).or_default();
        let watchlist: Box<[Arc<str>]> = user
            .watchlist
            .iter()
            .map(|watched| {
                let watched = interned(watchers, watched);
                watchers.entry(watched.clone()).or_default().push(socket);
                watched
            })
            .collect();
        if watchers.is_empty() {
            self.watchers.remove(&app);
        }
        self.sockets.insert(
            socket,
            SignedInSocket {
                app,
                user: id,
                watchlist,
            },
        );
        Ok(SignedIn { first_on_shard })
    }

    /// Forgets `socket` (closed or terminated); `None` when it was not signed in.
    pub fn sign_out(&mut self, socket: SocketId) -> Option<SignedOut> {
        let entry = self.sockets.remove(&socket)?;
        let last_on_shard = remove_socket(&mut self.by_user, entry.app, &entry.user, socket);
        for watched in entry.watchlist.iter() {
            remove_socket(&mut self.watchers, entry.app, watched, socket);
        }
        Some(SignedOut {
            app: entry.app,
            user: entry.user,
            last_on_shard,
        })
    }

    /// This shard's sockets signed in as `user` in `app` (server-to-user events, terminate).
    pub fn sockets_of(&self, app: u32, user: &str) -> &[SocketId] {
        lookup(&self.by_user, app, user)
    }

    /// This shard's sockets of `app` whose watchlist names `user` (watchlist changes).
    pub fn watchers_of(&self, app: u32, user: &str) -> &[SocketId] {
        lookup(&self.watchers, app, user)
    }

    /// The user `socket` is signed in as.
    pub fn user_of(&self, socket: SocketId) -> Option<&Arc<str>> {
        self.sockets.get(&socket).map(|s| &s.user)
    }

    /// The watchlist `socket` signed in with (empty when not signed in).
    pub fn watchlist_of(&self, socket: SocketId) -> &[Arc<str>] {
        self.sockets.get(&socket).map_or(&[], |s| &s.watchlist)
    }

    /// Signed-in sockets on this shard.
    pub fn signed_in_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Distinct users of `app` with a socket on this shard.
    pub fn users(&self, app: u32) -> usize {
        self.by_user.get(&app).map_or(0, |users| users.len())
    }
}

/// The map's own copy of `id` when it has one, so that all sockets share one allocation.
fn interned(index: &SocketsByUser, id: &Arc<str>) -> Arc<str> {
    index
        .get_key_value(&**id)
        .map_or_else(|| id.clone(), |(key, _)| key.clone())
}

fn lookup<'a>(index: &'a AHashMap<u32, SocketsByUser>, app: u32, user: &str) -> &'a [SocketId] {
    index
        .get(&app)
        .and_then(|users| users.get(user))
        .map_or(&[], |sockets| sockets.as_slice())
}

/// Removes `socket` from `index[app][user]`, dropping emptied entries; whether the entry is gone.
fn remove_socket(
    index: &mut AHashMap<u32, SocketsByUser>,
    app: u32,
    user: &str,
    socket: SocketId,
) -> bool {
    let Some(users) = index.get_mut(&app) else {
        return false;
    };
    let Some(sockets) = users.get_mut(user) else {
        return false;
    };
    sockets.retain(|s| *s != socket);
    let emptied = sockets.is_empty();
    if emptied {
        users.remove(user);
        if users.is_empty() {
            index.remove(&app);
        }
    }
    emptied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signin::parse_user_data;

    fn socket(n: u64) -> SocketId {
        SocketId::new(0, n, 7)
    }

    fn user(json: &str) -> SignedInUser {
        parse_user_data(json).unwrap()
    }

    #[test]
    fn counts_a_users_sockets_and_reports_first_and_last() {
        let mut users = LocalUsers::default();
        let alice = user(r#"{"id":"alice"}"#);
        assert_eq!(
            users.sign_in(socket(1), 0, &alice),
            Ok(SignedIn {
                first_on_shard: true
            })
        );
        assert_eq!(
            users.sign_in(socket(2), 0, &alice),
            Ok(SignedIn {
                first_on_shard: false
            })
        );
        // Same user id in another app is another user.
        assert_eq!(
            users.sign_in(socket(3), 1, &alice),
            Ok(SignedIn {
                first_on_shard: true
            })
        );
        assert_eq!(users.sockets_of(0, "alice"), [socket(1), socket(2)]);
        assert_eq!(users.sockets_of(1, "alice"), [socket(3)]);
        assert_eq!(users.sockets_of(0, "bob"), []);
        assert_eq!(users.user_of(socket(2)).map(|u| &**u), Some("alice"));
        let out = users.sign_out(socket(1)).unwrap();
        assert!(!out.last_on_shard && &*out.user == "alice" && out.app == 0);
        assert!(users.sign_out(socket(2)).unwrap().last_on_shard);
        assert_eq!(users.sign_out(socket(2)), None);
        assert_eq!(users.users(0), 0);
        assert!(users.sign_out(socket(3)).unwrap().last_on_shard);
        assert!(users.sockets.is_empty() && users.by_user.is_empty());
    }

    #[test]
    fn a_second_sign_in_of_a_socket_changes_nothing() {
        let mut users = LocalUsers::default();
        users
            .sign_in(socket(1), 0, &user(r#"{"id":"a","watchlist":["w"]}"#))
            .unwrap();
        let again = users.sign_in(socket(1), 0, &user(r#"{"id":"b","watchlist":["x"]}"#));
        assert_eq!(again.unwrap_err().current.as_ref(), "a");
        assert_eq!(users.sockets_of(0, "b"), []);
        assert_eq!(users.watchers_of(0, "x"), []);
        assert_eq!(users.watchers_of(0, "w"), [socket(1)]);
        assert_eq!(users.signed_in_sockets(), 1);
    }

    #[test]
    fn watchlists_are_indexed_by_watched_user_until_sign_out() {
        let mut users = LocalUsers::default();
        users
            .sign_in(socket(1), 0, &user(r#"{"id":"a","watchlist":["b","c"]}"#))
            .unwrap();
        users
            .sign_in(socket(2), 0, &user(r#"{"id":"d","watchlist":["b"]}"#))
            .unwrap();
        users
            .sign_in(socket(3), 1, &user(r#"{"id":"e","watchlist":["b"]}"#))
            .unwrap();
        assert_eq!(users.watchers_of(0, "b"), [socket(1), socket(2)]);
        assert_eq!(users.watchers_of(0, "c"), [socket(1)]);
        assert_eq!(users.watchers_of(1, "b"), [socket(3)]);
        assert_eq!(users.watchlist_of(socket(1)).len(), 2);
        users.sign_out(socket(1));
        assert_eq!(users.watchers_of(0, "b"), [socket(2)]);
        assert_eq!(users.watchers_of(0, "c"), []);
        assert_eq!(users.watchlist_of(socket(1)), []);
        users.sign_out(socket(2));
        users.sign_out(socket(3));
        assert!(users.watchers.is_empty());
    }

    #[test]
    fn sockets_of_one_user_share_one_id_allocation() {
        let mut users = LocalUsers::default();
        let first_sign_in = user(r#"{"id":"alice","watchlist":["bob"]}"#);
        users.sign_in(socket(1), 0, &first_sign_in).unwrap();
        users
            .sign_in(socket(2), 0, &user(r#"{"id":"alice","watchlist":["bob"]}"#))
            .unwrap();
        let first = users.user_of(socket(1)).unwrap();
        let second = users.user_of(socket(2)).unwrap();
        assert!(Arc::ptr_eq(first, second) && Arc::ptr_eq(first, &first_sign_in.id));
        assert!(Arc::ptr_eq(
            &users.watchlist_of(socket(1))[0],
            &users.watchlist_of(socket(2))[0]
        ));
    }

    #[test]
    fn per_socket_state_stays_small() {
        // A signed-in socket without a watchlist: this entry, one SocketId in its user's Vec and
        // the map slots (the user id allocation is shared). Guard the entry against growth.
        assert!(std::mem::size_of::<SignedInSocket>() <= 40);
        assert!(std::mem::size_of::<SocketId>() <= 16);
    }
}
