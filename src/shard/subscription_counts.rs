//! Subscription counts of non-presence channels (apps with `enable_subscription_count_events`
//! or `enable_subscription_count_webhooks`): every subscribe and unsubscribe tells the channel's
//! home shard, which keeps this node's count and the other nodes' latest (`Body::SubscriptionCount`
//! on the bus), and on every change of the cluster-wide sum — throttled for busy channels
//! (`channels::subscription_count`) — sends `pusher_internal:subscription_count` to the channel's
//! subscribers on this node and, for a change of this node's own count, the webhook.
//!
//! Each node tells its own subscribers (so nothing is duplicated by the bus) and reports the
//! webhook only for the changes its sockets made; a dead node's counts are dropped by every node
//! and its webhook reported by the cluster leader.

use super::{Shard, ShardMsg};
use crate::channels::subscription_count::CountUpdate;
use crate::protocol::names::ChannelKind;
use crate::protocol::outbound;
use crate::webhooks::WebhookEvent;
use crate::ws::frame::shared_text_frame;
use std::sync::Arc;
use std::time::Instant;

/// What an app wants of a channel's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Wanted {
    events: bool,
    webhook: bool,
}

impl Shard {
    fn counts_wanted(&self, app: u32, channel: &str) -> Wanted {
        if ChannelKind::of(channel) == ChannelKind::Presence {
            return Wanted::default();
        }
        let Some(app_now) = self.app(app) else {
            return Wanted::default();
        };
        let config = &app_now.config;
        Wanted {
            events: config.enable_subscription_count_events,
            webhook: config.enable_subscription_count_webhooks && self.webhooks_enabled(app),
        }
    }

    /// A subscription to a channel came or went on this shard: tell the channel's home shard
    /// (apps that want counts, non-presence channels only).
    pub(super) fn subscription_count_changed(&self, app: u32, channel: &str, delta: i64) {
        let wanted = self.counts_wanted(app, channel);
        if !(wanted.events || wanted.webhook) {
            return;
        }
        self.at_home(
            app,
            channel,
            |home| home.home_subscription_count_changed(app, channel, delta),
            |channel| ShardMsg::SubscriptionDelta {
                app,
                channel,
                delta,
            },
        );
    }

    /// At the home shard: this node's count changed by `delta`.
    pub(super) fn home_subscription_count_changed(&self, app: u32, channel: &str, delta: i64) {
        let update = self.webhooks.subscription_counts.borrow_mut().change(
            app,
            channel,
            delta,
            Instant::now(),
        );
        if let Some(update) = update {
            self.send_count_update(update, false);
        }
    }

    /// At the home shard: another node now has `subscriptions` of the channel.
    pub(super) fn remote_subscription_count(
        &self,
        node: &str,
        app: u32,
        channel: &str,
        subscriptions: usize,
    ) {
        let wanted = self.counts_wanted(app, channel);
        if !(wanted.events || wanted.webhook) {
            return;
        }
        let update = self
            .webhooks
            .subscription_counts
            .borrow_mut()
            .remote_changed(app, channel, node, subscriptions, Instant::now());
        if let Some(update) = update {
            self.send_count_update(update, false);
        }
    }

    /// Sends the counts the 5-second throttle held back (from the tick).
    pub(super) fn send_due_subscription_counts(&self) {
        let due = self
            .webhooks
            .subscription_counts
            .borrow_mut()
            .due(self.now());
        for update in due {
            self.send_count_update(update, false);
        }
    }

    /// At each shard: `node` is gone; the sums of the channels homed here that it had
    /// subscribers of go down (`leader`: this node reports their webhooks).
    pub(super) fn drop_node_subscription_counts(&self, node: &str, leader: bool) {
        let updates = self
            .webhooks
            .subscription_counts
            .borrow_mut()
            .drop_node(node, Instant::now());
        for update in updates {
            self.send_count_update(update, leader);
        }
    }

    /// This shard's counts of the channels homed here, shared with the other nodes (a node that
    /// joins or comes back learns them; from `announce`).
    pub(super) fn share_all_subscription_counts(&self) {
        for (app, channel, subscriptions) in self.webhooks.subscription_counts.borrow().locals() {
            self.share_subscription_count(app, &channel, subscriptions);
        }
    }

    fn send_count_update(&self, update: CountUpdate, leader: bool) {
        let wanted = self.counts_wanted(update.app, &update.channel);
        if update.local {
            self.share_subscription_count(update.app, &update.channel, update.node);
        }
        if wanted.events {
            let text = outbound::subscription_count(&update.channel, update.total);
            let channel: Arc<str> = Arc::from(&*update.channel);
            self.publish_frame(update.app, channel, shared_text_frame(&text), None);
        }
        if wanted.webhook && (update.local || leader) {
            self.emit_webhook(
                update.app,
                WebhookEvent::SubscriptionCount {
                    channel: update.channel.into(),
                    subscription_count: update.total,
                },
            );
        }
    }
}
