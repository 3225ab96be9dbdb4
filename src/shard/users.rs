//! Signed-in users at the shard (PROTOCOL.md §2.9, §6): sign-in and sign-out, the online set at
//! each user's **home shard** (`users::home_shard`), watchlist events, and the app option that
//! closes a socket not signed in within N seconds.
//!
//! - A sign-in on shard S is recorded in S's [`LocalUsers`], then told to the user's home H
//!   ([`ShardMsg::UserSignedIn`]), which counts the node's sockets of the user in its
//!   [`OnlineUsers`]. When the user comes online (first socket anywhere in the cluster) H tells
//!   every shard ([`ShardMsg::WatchlistChanged`]) and each sends `watchlist_events` to its
//!   watchers; when it is the node's first socket, H tells the other nodes
//!   (`super::cluster_users`). Sign-out (on close) mirrors this.
//! - The initial statuses of a watchlist are asked of the home shards of the watched ids
//!   ([`ShardMsg::WatchlistQuery`]) and sent as one `watchlist_events` once all have answered.
//!   Each home answers on the same ordered mesh pair that carries its later changes, so while
//!   answers are outstanding a change about an id already answered is folded into the pending
//!   statuses and a change about an id not answered yet is dropped (its answer is newer): the
//!   socket never sees an older status after a newer one.
//! - Server-to-user events need nothing here: a signed-in socket may subscribe to its own
//!   `#server-to-user-{id}` (pusher-js does so after `signin_success`), and `POST /events` to it is
//!   an ordinary publish, in order, on every shard and node.

use super::msg::ShardMsg;
use super::Shard;
use crate::protocol::outbound::{self, WatchlistChange};
use crate::protocol::signin::{SignedInUser, SigninError};
use crate::protocol::SocketId;
use crate::socket::Connection;
use crate::users::local::LocalUsers;
use crate::users::online::{LocalChange, OnlineUsers};
use crate::users::{group_by_home, home_shard};
use crate::ws::frame::shared_text_frame;
use ahash::AHashMap;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shard's users: its signed-in sockets, the online set of the users homed here, and the
/// sign-in deadlines of apps that require sign-in.
#[derive(Default)]
pub(super) struct UserSide {
    local: RefCell<LocalUsers>,
    online: RefCell<OnlineUsers>,
    /// (deadline, connection's local id), only for apps with `signin_timeout_secs`.
    signin_deadlines: RefCell<Vec<(Instant, u64)>>,
    /// Watchlists whose initial statuses are still being gathered, by socket.
    initial: RefCell<AHashMap<SocketId, InitialStatuses>>,
}

/// The initial statuses of one socket's watchlist, while home shards still answer.
#[derive(Default)]
struct InitialStatuses {
    /// Home shards that have not answered yet.
    waiting: usize,
    online: Vec<Arc<str>>,
    offline: Vec<Arc<str>>,
}

impl InitialStatuses {
    /// Folds in a change of `user` that came after its home answered; a change that came
    /// before (the user is in neither list yet) is already reflected in the answer to come.
    fn fold(&mut self, user: &Arc<str>, change: WatchlistChange) {
        let (from, to) = match change {
            WatchlistChange::Online => (&mut self.offline, &mut self.online),
            WatchlistChange::Offline => (&mut self.online, &mut self.offline),
        };
        if let Some(at) = from.iter().position(|id| id == user) {
            to.push(from.remove(at));
        }
    }
}

impl Shard {
    /// The user `socket` is signed in as, if any.
    pub fn signed_in_user(&self, socket: SocketId) -> Option<Arc<str>> {
        self.users.local.borrow().user_of(socket).cloned()
    }

    /// Records `conn`'s verified sign-in as `user` and starts its watchlist: the user's home
    /// shard counts the socket, and the home shards of the watched ids answer with their
    /// statuses. The caller has sent `pusher:signin_success` already.
    pub fn sign_in(&self, conn: &Connection, user: &SignedInUser) -> Result<(), SigninError> {
        let (app, socket) = (conn.app.index, conn.socket_id);
        if let Err(already) = self.users.local.borrow_mut().sign_in(socket, app, user) {
            return Err(SigninError::AlreadySignedIn {
                current: already.current,
            });
        }
        let id = self
            .signed_in_user(socket)
            .unwrap_or_else(|| user.id.clone());
        self.at_user_home(
            app,
            &id,
            |home| home.home_signed_in(app, &id),
            || ShardMsg::UserSignedIn {
                app,
                user: id.clone(),
            },
        );
        let groups = group_by_home(app, &user.watchlist, self.shards);
        if !groups.is_empty() {
            let waiting = InitialStatuses {
                waiting: groups.len(),
                ..Default::default()
            };
            self.users.initial.borrow_mut().insert(socket, waiting);
        }
        for (home, ids) in groups {
            if home == self.id {
                self.answer_watchlist_query(self.id, app, &ids, socket);
            } else {
                let from = self.id;
                let query = ShardMsg::WatchlistQuery {
                    from,
                    app,
                    ids,
                    socket,
                };
                self.send_to(home, query);
            }
        }
        Ok(())
    }

    /// Forgets `conn`'s sign-in (on close); the home shard may make the user offline.
    pub(super) fn sign_out(&self, conn: &Connection) {
        let Some(out) = self.users.local.borrow_mut().sign_out(conn.socket_id) else {
            return;
        };
        self.users.initial.borrow_mut().remove(&conn.socket_id);
        let (app, user) = (out.app, out.user);
        self.at_user_home(
            app,
            &user,
            |home| home.home_signed_out(app, &user),
            || ShardMsg::UserSignedOut {
                app,
                user: user.clone(),
            },
        );
    }

    /// Whether `conn` is signed in as `user_id` (for `terminate_connections`).
    pub(super) fn is_signed_in_as(&self, conn: &Connection, user_id: &str) -> bool {
        self.users
            .local
            .borrow()
            .user_of(conn.socket_id)
            .is_some_and(|user| **user == *user_id)
    }

    fn at_user_home(
        &self,
        app: u32,
        user: &str,
        here: impl FnOnce(&Self),
        there: impl FnOnce() -> ShardMsg,
    ) {
        let home = home_shard(app, user, self.shards);
        if home == self.id {
            here(self);
        } else {
            self.send_to(home, there());
        }
    }

    /// At the user's home: one more socket of this node signed in as `user`.
    pub(super) fn home_signed_in(&self, app: u32, user: &Arc<str>) {
        let change = self.users.online.borrow_mut().add_local(app, user);
        self.user_changed(app, user, change);
    }

    /// At the user's home: one socket of this node signed in as `user` is gone.
    pub(super) fn home_signed_out(&self, app: u32, user: &Arc<str>) {
        let change = self.users.online.borrow_mut().remove_local(app, user);
        self.user_changed(app, user, change);
    }

    fn user_changed(&self, app: u32, user: &Arc<str>, change: LocalChange) {
        if let Some(watchlist) = change.watchlist {
            self.broadcast_watchlist_change(app, user, watchlist);
        }
        if change.first_on_node || change.last_on_node {
            self.share_user_change(app, user, change.first_on_node);
        }
    }

    /// At the user's home: tells every shard of this node (this one too) that `user` came
    /// online or went offline.
    pub(super) fn broadcast_watchlist_change(
        &self,
        app: u32,
        user: &Arc<str>,
        change: WatchlistChange,
    ) {
        for peer in self.peers().collect::<Vec<_>>() {
            let message = ShardMsg::WatchlistChanged {
                app,
                user: user.clone(),
                change,
            };
            self.send_to(peer, message);
        }
        self.send_watchlist_change(app, user, change);
    }

    /// Sends `watchlist_events` about `user` to this shard's sockets watching them.
    pub(super) fn send_watchlist_change(&self, app: u32, user: &Arc<str>, change: WatchlistChange) {
        let watchers = self.users.local.borrow().watchers_of(app, user).to_vec();
        if watchers.is_empty() {
            return;
        }
        let ids = [user.clone()];
        let Some(text) = outbound::watchlist_events([(change, &ids[..])]) else {
            return;
        };
        let frame = shared_text_frame(&text);
        for socket in watchers {
            if let Some(pending) = self.users.initial.borrow_mut().get_mut(&socket) {
                pending.fold(user, change);
                continue;
            }
            if let Some(conn) = self.connection(socket, app) {
                conn.send_shared(&frame);
            }
        }
    }

    /// At a home shard: the statuses of `ids` (homed here) for the watchlist of `socket` on
    /// shard `from`.
    pub(super) fn answer_watchlist_query(
        &self,
        from: usize,
        app: u32,
        ids: &[Arc<str>],
        socket: SocketId,
    ) {
        let (online, offline) = self.users.online.borrow().statuses(app, ids);
        if from == self.id {
            self.send_watchlist_statuses(app, socket, &online, &offline);
        } else {
            let answer = ShardMsg::WatchlistStatuses {
                app,
                socket,
                online,
                offline,
            };
            self.send_to(from, answer);
        }
    }

    /// Takes one home shard's statuses for `socket`'s watchlist; once every home answered,
    /// sends them in one `watchlist_events` (if the socket is still signed in).
    pub(super) fn send_watchlist_statuses(
        &self,
        app: u32,
        socket: SocketId,
        online: &[Arc<str>],
        offline: &[Arc<str>],
    ) {
        let mut initial = self.users.initial.borrow_mut();
        let Some(pending) = initial.get_mut(&socket) else {
            return;
        };
        pending.online.extend_from_slice(online);
        pending.offline.extend_from_slice(offline);
        pending.waiting = pending.waiting.saturating_sub(1);
        if pending.waiting > 0 {
            return;
        }
        let done = initial.remove(&socket).unwrap_or_default();
        drop(initial);
        let Some(conn) = self.connection(socket, app) else {
            return;
        };
        let entries = [
            (WatchlistChange::Online, &done.online[..]),
            (WatchlistChange::Offline, &done.offline[..]),
        ];
        if let Some(text) = outbound::watchlist_events(entries) {
            conn.send_text(&text);
        }
    }

    /// At the user's home: another node's first socket of `user` signed in (or its last left).
    pub(super) fn apply_remote_user(&self, node: &Arc<str>, app: u32, user: &Arc<str>, on: bool) {
        let mut online = self.users.online.borrow_mut();
        let changed = if on {
            online.add_remote(app, node, user)
        } else {
            online.remove_remote(app, node, user)
        };
        drop(online);
        if changed {
            let change = if on {
                WatchlistChange::Online
            } else {
                WatchlistChange::Offline
            };
            self.broadcast_watchlist_change(app, user, change);
        }
    }

    /// At each shard: `node`'s signed-in users homed here replace what was known of it.
    pub(super) fn replace_node_users(&self, node: &Arc<str>, users: &[(u32, Arc<str>)]) {
        let known = self.users.online.borrow().node_users(node);
        for (app, user) in known {
            if !users.iter().any(|(a, u)| *a == app && *u == user) {
                self.apply_remote_user(node, app, &user, false);
            }
        }
        for (app, user) in users {
            self.apply_remote_user(node, *app, user, true);
        }
    }

    /// At each shard: `node` is gone; its users homed here that no one else keeps online go
    /// offline.
    pub(super) fn forget_node_users(&self, node: &str) {
        let gone = self.users.online.borrow_mut().drop_node(node);
        for (app, user) in gone {
            self.broadcast_watchlist_change(app, &user, WatchlistChange::Offline);
        }
    }

    /// The users homed here with a socket on this node, for this node's snapshot.
    pub(super) fn local_signed_in_users(&self) -> Vec<(u32, Arc<str>)> {
        self.users.online.borrow().local_users()
    }

    /// Starts `conn`'s sign-in deadline when its app requires sign-in.
    pub(super) fn watch_signin_deadline(&self, conn: &Connection) {
        if let Some(secs) = conn.app.config.signin_timeout_secs {
            let deadline = self.now() + Duration::from_secs(secs);
            let entry = (deadline, conn.local_id());
            self.users.signin_deadlines.borrow_mut().push(entry);
        }
    }

    /// From the liveness sweep: closes (4009) the sockets whose sign-in deadline passed without
    /// a sign-in or a private or presence subscription.
    pub(super) fn close_unauthorized(&self) {
        let now = self.now();
        let due: Vec<u64> = {
            let mut deadlines = self.users.signin_deadlines.borrow_mut();
            let due = deadlines.iter().filter(|(at, _)| *at <= now).map(|e| e.1);
            let due = due.collect();
            deadlines.retain(|(at, _)| *at > now);
            due
        };
        for local_id in due {
            let conn = self.connections.borrow().get(&local_id).cloned();
            let Some(conn) = conn else { continue };
            if self.signed_in_user(conn.socket_id).is_some() || conn.has_authorized_subscription() {
                continue;
            }
            let refusal = SigninError::Timeout;
            conn.send_text(&refusal.error_frame());
            conn.close(refusal.code(), &refusal.message());
        }
    }
}
