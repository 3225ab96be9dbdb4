//! Signed-in users across the cluster: what a home shard tells the other nodes when this node's
//! first socket of a user signs in (or its last leaves), the users part of this node's snapshot,
//! and routing what other nodes send to the users' home shards here. Like
//! [`super::cluster_side`], this file knows the cluster's wire types; the rest of the shard gets
//! app indices and user ids (`super::users`).

use super::msg::ShardMsg;
use super::Shard;
use crate::cluster::envelope::{Body, UserEntry};
use crate::cluster::link::Link;
use crate::users::home_shard;
use std::sync::Arc;

impl Shard {
    /// At the user's home: tells the other nodes that this node has its first socket of `user`
    /// (`online`) or no longer has any.
    pub(super) fn share_user_change(&self, app: u32, user: &str, online: bool) {
        let (Some(link), Some(app)) = (self.link(), self.app(app)) else {
            return;
        };
        let entry = UserEntry {
            app: app.id().to_string(),
            user_id: user.to_string(),
        };
        link.publish(if online {
            Body::UserOnline(entry)
        } else {
            Body::UserOffline(entry)
        });
    }

    /// Publishes this node's signed-in users (sent only when every shard answered, like the
    /// presence snapshot: a partial one would make the others drop users still here).
    pub(super) async fn announce_users(&self, link: &Link) {
        let gathered = self.gather(|shard| shard.local_signed_in_users()).await;
        let Ok(parts) = gathered.complete() else {
            tracing::warn!("user snapshot not sent: some shards did not answer in time");
            return;
        };
        let apps = self.apps().clone();
        let users = parts
            .into_iter()
            .flatten()
            .filter_map(|(app, user)| {
                Some(UserEntry {
                    app: apps.get(app)?.id().to_string(),
                    user_id: user.to_string(),
                })
            })
            .collect();
        link.publish(Body::UserSnapshot { users });
    }

    /// Another node's first socket of a user signed in (or its last left): to the user's home.
    pub(super) fn route_remote_user(&self, node: Arc<str>, entry: UserEntry, online: bool) {
        let Some(app) = self.apps().by_id(&entry.app).map(|a| a.index) else {
            return;
        };
        let user: Arc<str> = Arc::from(entry.user_id);
        let home = home_shard(app, &user, self.shards);
        if home == self.id {
            self.apply_remote_user(&node, app, &user, online);
        } else {
            let message = ShardMsg::RemoteUser {
                node,
                app,
                user,
                online,
            };
            self.send_to(home, message);
        }
    }

    /// Another node's snapshot of its signed-in users: each shard gets the part homed there
    /// (every shard, so that users no longer listed are dropped everywhere).
    pub(super) fn route_user_snapshot(&self, node: Arc<str>, users: Vec<UserEntry>) {
        let mut parts: Vec<Vec<(u32, Arc<str>)>> = vec![Vec::new(); self.shards];
        for entry in users {
            if let Some(app) = self.apps().by_id(&entry.app).map(|a| a.index) {
                let home = home_shard(app, &entry.user_id, self.shards);
                parts[home].push((app, Arc::from(entry.user_id)));
            }
        }
        for (shard, users) in parts.into_iter().enumerate() {
            if shard == self.id {
                self.replace_node_users(&node, &users);
            } else {
                let node = node.clone();
                self.send_to(shard, ShardMsg::NodeUsers { node, users });
            }
        }
    }
}
