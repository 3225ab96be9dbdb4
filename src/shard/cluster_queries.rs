//! Counts asked of and answered for the other cluster nodes: this node's answer to their
//! questions, and the typed gather of theirs (see [`super::gather`]), which arrive through shard 0
//! and are routed to the asking shard.

use super::msg::ShardMsg;
use super::{Gathered, Shard};
use crate::app::App;
use crate::cluster::envelope::{Body, RemoteCount, RemoteQuery};
use std::sync::Arc;
use std::time::Duration;

impl Shard {
    /// Answers another node's count question with this node's subscriptions.
    pub(super) async fn answer_remote_query(
        &self,
        node: &str,
        id: u64,
        shard: usize,
        query: RemoteQuery,
    ) {
        let Some(link) = self.link().cloned() else {
            return;
        };
        let counts = match &query {
            RemoteQuery::ChannelCounts { app, channels } => {
                let Some(app) = self.apps().by_id(app).cloned() else {
                    return;
                };
                self.channel_counts_here(&app, channels).await
            }
            RemoteQuery::ListChannels { app, prefix } => {
                let Some(app) = self.apps().by_id(app).cloned() else {
                    return;
                };
                self.list_channels_here(&app, prefix).await
            }
        };
        // A shard that did not answer in time leaves the asking node with a missing answer
        // (marked partial there), never with a wrong count.
        let Some(counts) = counts else { return };
        link.publish(Body::Answer {
            to: node.to_string(),
            shard,
            id,
            counts,
        });
    }

    async fn channel_counts_here(
        &self,
        app: &App,
        channels: &[String],
    ) -> Option<Vec<RemoteCount>> {
        let index = app.index;
        let asked: Vec<Arc<str>> = channels.iter().map(|c| Arc::from(c.as_str())).collect();
        let gathered = self
            .gather(move |shard| shard.local_counts(index, &asked))
            .await;
        Some(wire_counts(gathered.complete().ok()?))
    }

    async fn list_channels_here(&self, app: &App, prefix: &str) -> Option<Vec<RemoteCount>> {
        let index = app.index;
        let prefix = prefix.to_string();
        let gathered = self
            .gather(move |shard| shard.local_channels(index, &prefix))
            .await;
        Some(wire_counts(gathered.complete().ok()?))
    }

    pub(super) fn route_remote_answer(
        &self,
        to: &str,
        shard: usize,
        id: u64,
        counts: Vec<RemoteCount>,
    ) {
        let mine = self.link().is_some_and(|l| *l.node_id == *to);
        if !mine {
            return;
        }
        let counts: Vec<(Arc<str>, usize)> = counts
            .into_iter()
            .map(|c| (Arc::from(c.channel.as_str()), c.subscriptions))
            .collect();
        let reply = Box::new(counts);
        if shard == self.id {
            self.record_reply(id, reply);
        } else {
            self.send_to(shard, ShardMsg::Reply { id, reply });
        }
    }

    /// Every other live node's subscription counts of `channels`.
    pub(super) async fn remote_channel_counts(
        &self,
        app: &App,
        channels: Vec<String>,
    ) -> Gathered<Vec<(Arc<str>, usize)>> {
        let query = RemoteQuery::ChannelCounts {
            app: app.id().to_string(),
            channels,
        };
        self.ask_nodes(query).await
    }

    /// Every other live node's channels starting with `prefix`, with subscription counts.
    pub(super) async fn remote_channel_list(
        &self,
        app: &App,
        prefix: &str,
    ) -> Gathered<Vec<(Arc<str>, usize)>> {
        let query = RemoteQuery::ListChannels {
            app: app.id().to_string(),
            prefix: prefix.to_string(),
        };
        self.ask_nodes(query).await
    }

    async fn ask_nodes(&self, query: RemoteQuery) -> Gathered<Vec<(Arc<str>, usize)>> {
        let link = self.link().cloned();
        let nodes = link
            .as_ref()
            .map_or(0, |_| self.cluster.remote_nodes.borrow().len());
        let limit = Duration::from_millis(
            self.config
                .cluster
                .as_ref()
                .map_or(1000, |c| c.query_timeout_ms),
        );
        let shard = self.id;
        self.gather_nodes(nodes, limit, |id| {
            if let Some(link) = link {
                link.publish(Body::Query { id, shard, query });
            }
        })
        .await
    }
}

/// One node's counts as the wire carries them (channels with subscribers only).
fn wire_counts(answers: Vec<Vec<(Arc<str>, super::queries::ChannelCount)>>) -> Vec<RemoteCount> {
    let mut summed: ahash::AHashMap<Arc<str>, usize> = ahash::AHashMap::new();
    for (channel, count) in answers.into_iter().flatten() {
        *summed.entry(channel).or_default() += count.subscriptions;
    }
    summed
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(channel, subscriptions)| RemoteCount {
            channel: channel.to_string(),
            subscriptions,
        })
        .collect()
}
