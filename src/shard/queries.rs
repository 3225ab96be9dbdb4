//! What the HTTP API asks the node: subscription and user counts, channel lists, presence users,
//! terminating a user's connections, and the metrics of every shard. Each is one typed
//! [`super::gather`] over the shards (and, for counts, over the other cluster nodes), combined
//! here, so the HTTP layer gets one node- or cluster-wide answer in this module's own types.

use super::Shard;
use crate::app::App;
use crate::channels::home_shard;
use crate::protocol::codes;
use ahash::AHashMap;
use std::sync::Arc;

/// Counts one shard (or the node, once merged) knows about one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCount {
    /// Subscriptions.
    pub subscriptions: usize,
    /// Distinct presence users, when known (from the channel's home shard).
    pub users: Option<usize>,
}

/// Counts by channel, with how complete they are.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// By channel name.
    pub channels: AHashMap<Arc<str>, ChannelCount>,
    /// Other cluster nodes that did not answer in time: their subscriptions are not included.
    pub nodes_missing: usize,
}

/// A shard of this node did not answer in time (the HTTP API answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete {
    /// How many shards did not answer.
    pub missing: usize,
}

/// Sums per-shard counts by channel.
fn merge_counts(answers: Vec<Vec<(Arc<str>, ChannelCount)>>) -> AHashMap<Arc<str>, ChannelCount> {
    let mut merged: AHashMap<Arc<str>, ChannelCount> = AHashMap::new();
    for (channel, count) in answers.into_iter().flatten() {
        let entry = merged.entry(channel).or_default();
        entry.subscriptions += count.subscriptions;
        if count.users.is_some() {
            entry.users = count.users;
        }
    }
    merged
}

impl Shard {
    /// Subscription counts (and presence user counts) of `channels`, over the whole cluster.
    pub async fn channel_counts(
        &self,
        app: &App,
        channels: &[String],
    ) -> Result<Counts, Incomplete> {
        let mut names: Vec<String> = channels.to_vec();
        names.sort();
        names.dedup();
        let index = app.index;
        let asked: Vec<Arc<str>> = names.iter().map(|c| Arc::from(c.as_str())).collect();
        let local = self
            .gather(move |shard| shard.local_counts(index, &asked))
            .await;
        let local = local.complete().map_err(|missing| Incomplete { missing })?;
        let remote = self.remote_channel_counts(app, names).await;
        Ok(self.with_remote(merge_counts(local), remote))
    }

    /// Occupied channels whose name starts with `prefix`, with counts, over the whole cluster.
    pub async fn list_channels(&self, app: &App, prefix: &str) -> Result<Counts, Incomplete> {
        let index = app.index;
        let wanted = prefix.to_string();
        let local = self
            .gather(move |shard| shard.local_channels(index, &wanted))
            .await;
        let local = local.complete().map_err(|missing| Incomplete { missing })?;
        let remote = self.remote_channel_list(app, prefix).await;
        let mut counts = self.with_remote(merge_counts(local), remote);
        counts.channels.retain(|_, c| c.subscriptions > 0);
        Ok(counts)
    }

    fn with_remote(
        &self,
        mut channels: AHashMap<Arc<str>, ChannelCount>,
        remote: super::Gathered<Vec<(Arc<str>, usize)>>,
    ) -> Counts {
        // User counts are already cluster-wide (presence rosters are replicated); subscriptions
        // are summed over the nodes that answered.
        for (channel, subscriptions) in remote.answers.into_iter().flatten() {
            channels.entry(channel).or_default().subscriptions += subscriptions;
        }
        Counts {
            channels,
            nodes_missing: remote.missing,
        }
    }

    /// User ids of presence `channel` (cluster-wide: rosters are replicated).
    pub async fn presence_users(
        &self,
        app: &App,
        channel: &str,
    ) -> Result<Vec<String>, Incomplete> {
        let index = app.index;
        let channel: Arc<str> = Arc::from(channel);
        let gathered = self
            .gather(move |shard| shard.presence.borrow().user_ids(index, &channel))
            .await;
        let lists = gathered
            .complete()
            .map_err(|missing| Incomplete { missing })?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// Closes `user_id`'s connections on every shard and every node; returns how many this
    /// node closed.
    pub async fn terminate_everywhere(&self, app: &App, user_id: &str) -> usize {
        self.share_terminate(app, user_id);
        self.terminate_on_every_shard(app.index, user_id).await
    }

    /// Closes `user_id`'s connections on every shard of this node.
    pub(super) async fn terminate_on_every_shard(&self, app: u32, user_id: &str) -> usize {
        let user: Arc<str> = Arc::from(user_id);
        let gathered = self
            .gather(move |shard| shard.terminate_local(app, &user))
            .await;
        gathered.answers.iter().sum()
    }

    /// Every shard's metrics summed (a shard that does not answer in time is left out and
    /// counted as a gather timeout).
    pub async fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let gathered = self.gather(|shard| shard.local_metrics()).await;
        let mut total = crate::metrics::Snapshot::default();
        for snapshot in gathered.answers {
            total.merge(snapshot);
        }
        total.shards.sort_by_key(|g| g.shard);
        total
    }

    pub(super) fn local_counts(
        &self,
        app: u32,
        channels: &[Arc<str>],
    ) -> Vec<(Arc<str>, ChannelCount)> {
        channels
            .iter()
            .map(|channel| (channel.clone(), self.local_count(app, channel)))
            .collect()
    }

    fn local_count(&self, app: u32, channel: &str) -> ChannelCount {
        let subscriptions = self
            .channels
            .borrow()
            .get(app, channel)
            .map_or(0, |c| c.len());
        let users = (home_shard(app, channel, self.shards) == self.id)
            .then(|| self.presence.borrow().user_count(app, channel))
            .filter(|&n| n > 0);
        ChannelCount {
            subscriptions,
            users,
        }
    }

    pub(super) fn local_channels(&self, app: u32, prefix: &str) -> Vec<(Arc<str>, ChannelCount)> {
        let mut counts: Vec<(Arc<str>, ChannelCount)> = self
            .channels
            .borrow()
            .channels(app)
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, local)| {
                let count = ChannelCount {
                    subscriptions: local.len(),
                    users: None,
                };
                (Arc::from(name), count)
            })
            .collect();
        for (channel, users) in self.presence.borrow().channels(app) {
            if channel.starts_with(prefix) {
                let count = ChannelCount {
                    subscriptions: 0,
                    users: Some(users),
                };
                counts.push((Arc::from(channel), count));
            }
        }
        counts
    }

    fn local_metrics(&self) -> crate::metrics::Snapshot {
        let table = self.channels.borrow();
        let channels = self
            .apps()
            .iter()
            .map(|app| {
                let (count, subscriptions) = table
                    .channels(app.index)
                    .fold((0, 0), |(c, s), (_, local)| (c + 1, s + local.len()));
                (app.index, (count, subscriptions))
            })
            .filter(|(_, (c, _))| *c > 0)
            .collect();
        let gauges = crate::metrics::ShardGauges {
            shard: self.id,
            connections: self.connections.borrow().len(),
            channels,
        };
        crate::metrics::with(|m| m.snapshot(gauges))
    }

    /// Closes this shard's connections of `user_id` in `app`: those signed in as that user and
    /// those that joined a presence channel as that user.
    fn terminate_local(&self, app: u32, user_id: &str) -> usize {
        let connections = self.connections.borrow();
        let mut closed = 0;
        for conn in connections.values() {
            let of_user = conn.is_user(user_id) || self.is_signed_in_as(conn, user_id);
            if conn.app.index == app && of_user {
                let message = "You got disconnected by the app.";
                conn.send_error(Some(codes::UNAUTHORIZED), message);
                conn.close(codes::UNAUTHORIZED, message);
                closed += 1;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_sums_subscriptions_and_keeps_the_home_user_count() {
        let a: Arc<str> = Arc::from("presence-a");
        let shard0 = vec![(
            a.clone(),
            ChannelCount {
                subscriptions: 2,
                users: None,
            },
        )];
        let shard1 = vec![(
            a.clone(),
            ChannelCount {
                subscriptions: 3,
                users: Some(4),
            },
        )];
        let merged = merge_counts(vec![shard0, shard1]);
        assert_eq!(
            merged[&a],
            ChannelCount {
                subscriptions: 5,
                users: Some(4)
            }
        );
    }
}
