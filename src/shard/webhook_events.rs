//! What a shard reports to webhooks: node-wide (and, clustered, cluster-wide) occupancy, kept by
//! each channel's home shard, and the events themselves (subscription counts, which feed a
//! webhook and a channel event, are in `shard::subscription_counts`). Nothing
//! here runs for apps without webhook receivers.

use super::{Shard, ShardMsg};
use crate::channels::occupancy::Occupancy;
use crate::channels::subscription_count::SubscriptionCounts;
use crate::webhooks::{WebhookEvent, Webhooks};
use std::cell::RefCell;
use std::sync::Arc;

/// A shard's webhook state: where events go, and what the home shard counts for them.
pub(super) struct WebhookSide {
    sink: Option<Arc<Webhooks>>,
    pub(super) occupancy: RefCell<Occupancy>,
    pub(super) subscription_counts: RefCell<SubscriptionCounts>,
}

impl WebhookSide {
    pub(super) fn new(sink: Option<Arc<Webhooks>>) -> Self {
        WebhookSide {
            sink,
            occupancy: RefCell::default(),
            subscription_counts: RefCell::default(),
        }
    }

    /// The webhook pipeline, when any app has receivers.
    pub(super) fn sink(&self) -> Option<&Arc<Webhooks>> {
        self.sink.as_ref()
    }
}

impl Shard {
    /// Whether `app` has webhook receivers (so callers can skip building events).
    pub fn webhooks_enabled(&self, app: u32) -> bool {
        self.webhooks.sink.as_ref().is_some_and(|w| w.enabled(app))
    }

    /// Reports a webhook event of `app` (nothing when the app has no webhooks).
    pub fn emit_webhook(&self, app: u32, event: WebhookEvent) {
        if let Some(webhooks) = &self.webhooks.sink {
            webhooks.emit(app, event);
        }
    }

    /// This shard's first subscriber of a channel came (or its last left): tell the channel's
    /// home shard, which knows whether the whole node changed.
    pub(super) fn shard_occupancy_changed(&self, app: u32, channel: &str, occupied: bool) {
        if !self.webhooks_enabled(app) {
            return;
        }
        self.at_home(
            app,
            channel,
            |home| home.home_occupancy_changed(app, channel, occupied),
            |channel| ShardMsg::Occupancy {
                app,
                channel,
                occupied,
            },
        );
    }

    pub(super) fn home_occupancy_changed(&self, app: u32, channel: &str, occupied: bool) {
        let change = self
            .webhooks
            .occupancy
            .borrow_mut()
            .shard_changed(app, channel, occupied);
        if change.node_changed {
            self.share_occupancy_change(app, channel, occupied);
        }
        if change.cluster_changed {
            let channel = channel.to_string();
            self.emit_webhook(
                app,
                if occupied {
                    WebhookEvent::ChannelOccupied { channel }
                } else {
                    WebhookEvent::ChannelVacated { channel }
                },
            );
        }
    }

    /// At a channel's home shard: another node's first subscriber came or its last left.
    pub(super) fn remote_occupancy_changed(
        &self,
        node: &Arc<str>,
        app: u32,
        channel: &str,
        occupied: bool,
    ) {
        self.webhooks
            .occupancy
            .borrow_mut()
            .remote_changed(app, channel, node, occupied);
    }
}
