//! Webhooks (PROTOCOL.md §6): the events shards report, delayed by a grace window where Pusher
//! delays them, batched per app and receiver, signed, spooled to disk before sending and retried
//! until delivered or dead-lettered.
//!
//! Shards only push events into a channel ([`Webhooks::emit`]); everything else runs on threads
//! of its own, off the socket hot path:
//! - [`dispatcher`]: one thread; grace window, filters, batching;
//! - [`delivery`]: one thread per receiver URL; spool, signing, HTTP with retries;
//! - [`spool`]: the append-only file that keeps pending batches across restarts.

pub mod delivery;
pub mod dispatcher;
pub mod spool;

use crate::app::AppRegistry;
use crate::config::Config;
use serde_json::{json, Value};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// One webhook event, as a shard reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// The channel got its first subscriber.
    ChannelOccupied {
        /// Channel.
        channel: String,
    },
    /// The channel lost its last subscriber.
    ChannelVacated {
        /// Channel.
        channel: String,
    },
    /// A user's first socket joined a presence channel.
    MemberAdded {
        /// Channel.
        channel: String,
        /// User id.
        user_id: String,
    },
    /// A user's last socket left a presence channel.
    MemberRemoved {
        /// Channel.
        channel: String,
        /// User id.
        user_id: String,
    },
    /// A non-presence channel's subscription count changed (throttled for busy channels).
    SubscriptionCount {
        /// Channel.
        channel: String,
        /// Subscriptions now.
        subscription_count: usize,
    },
    /// A subscriber of a cache channel found nothing cached (de-duplicated by
    /// `channels::cache`: once per channel and TTL).
    CacheMiss {
        /// Channel.
        channel: String,
    },
    /// A client event was relayed.
    ClientEvent {
        /// Channel.
        channel: String,
        /// Event name.
        event: String,
        /// Data as a string (a client's object as its JSON text).
        data: Option<String>,
        /// Sender's socket id.
        socket_id: String,
        /// Sender's user id on presence channels.
        user_id: Option<String>,
    },
}

impl WebhookEvent {
    /// The event's `name`.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::ChannelOccupied { .. } => "channel_occupied",
            WebhookEvent::ChannelVacated { .. } => "channel_vacated",
            WebhookEvent::MemberAdded { .. } => "member_added",
            WebhookEvent::MemberRemoved { .. } => "member_removed",
            WebhookEvent::ClientEvent { .. } => "client_event",
            WebhookEvent::SubscriptionCount { .. } => "subscription_count",
            WebhookEvent::CacheMiss { .. } => "cache_miss",
        }
    }

    /// The channel the event is about.
    pub fn channel(&self) -> &str {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::SubscriptionCount { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. } => channel,
        }
    }

    /// The event object with the exact field names of PROTOCOL.md §6.3.
    pub fn to_json(&self) -> Value {
        let name = self.name();
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::CacheMiss { channel } => {
                json!({ "name": name, "channel": channel })
            }
            WebhookEvent::MemberAdded { channel, user_id }
            | WebhookEvent::MemberRemoved { channel, user_id } => {
                json!({ "name": name, "channel": channel, "user_id": user_id })
            }
            WebhookEvent::SubscriptionCount {
                channel,
                subscription_count,
            } => {
                json!({ "name": name, "channel": channel, "subscription_count": subscription_count })
            }
            WebhookEvent::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let mut object = json!({ "name": name, "channel": channel, "event": event, "socket_id": socket_id });
                if let Some(data) = data {
                    object["data"] = Value::String(data.clone());
                }
                if let Some(user_id) = user_id {
                    object["user_id"] = Value::String(user_id.clone());
                }
                object
            }
        }
    }
}

/// Counters of webhook delivery (for metrics and tests).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (network error or non-2xx) and will be retried.
    pub failed_attempts: AtomicU64,
    /// Batches given up after the retry period.
    pub dead_lettered: AtomicU64,
    /// Batches refused because the spool was full.
    pub spool_full: AtomicU64,
    /// Batches waiting to be delivered.
    pub pending: AtomicU64,
}

/// The shards' handle: where events go.
#[derive(Debug)]
pub struct Webhooks {
    tx: Sender<(u32, WebhookEvent)>,
    dispatcher: std::thread::JoinHandle<()>,
    enabled: Vec<bool>,
    /// Delivery counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhooks {
    /// Starts the dispatcher and one delivery thread per receiver; `None` when no app has
    /// webhooks (then nothing starts and no spool is touched).
    pub fn start(config: &Config, apps: &AppRegistry) -> Result<Option<Arc<Webhooks>>, String> {
        if apps.iter().all(|a| a.config.webhooks.is_empty()) {
            return Ok(None);
        }
        let stats = Arc::new(WebhookStats::default());
        let (tx, dispatcher) = dispatcher::start(config, apps, stats.clone())?;
        Ok(Some(Arc::new(Webhooks {
            tx,
            dispatcher,
            enabled: apps.iter().map(|a| !a.config.webhooks.is_empty()).collect(),
            stats,
        })))
    }

    /// Whether app `app` has any webhook receiver (so shards can skip work for it).
    pub fn enabled(&self, app: u32) -> bool {
        self.enabled.get(app as usize).copied().unwrap_or(false)
    }

    /// Stops taking events and waits until the dispatcher has spooled everything it held (events
    /// in the grace window and open batches), so that a graceful stop loses nothing; delivery
    /// resumes from the spool at the next start.
    pub fn stop(self) {
        let Webhooks { tx, dispatcher, .. } = self;
        drop(tx);
        let _ = dispatcher.join();
    }

    /// Reports an event of app `app` (never blocks).
    pub fn emit(&self, app: u32, event: WebhookEvent) {
        if self.enabled(app) {
            // The dispatcher lives as long as the process; a send fails only during exit.
            let _ = self.tx.send((app, event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_objects_have_the_pusher_field_names() {
        let client = WebhookEvent::ClientEvent {
            channel: "presence-c".into(),
            event: "client-x".into(),
            data: Some(r#"{"a":1}"#.into()),
            socket_id: "1.2".into(),
            user_id: Some("u".into()),
        };
        assert_eq!(
            client.to_json(),
            json!({"name":"client_event","channel":"presence-c","event":"client-x","data":"{\"a\":1}","socket_id":"1.2","user_id":"u"})
        );
        let added = WebhookEvent::MemberAdded {
            channel: "presence-c".into(),
            user_id: "7".into(),
        };
        assert_eq!(
            added.to_json(),
            json!({"name":"member_added","channel":"presence-c","user_id":"7"})
        );
        let vacated = WebhookEvent::ChannelVacated {
            channel: "c".into(),
        };
        assert_eq!(
            vacated.to_json(),
            json!({"name":"channel_vacated","channel":"c"})
        );
        let miss = WebhookEvent::CacheMiss {
            channel: "cache-x".into(),
        };
        assert_eq!(miss.name(), "cache_miss");
        assert_eq!(miss.channel(), "cache-x");
        assert_eq!(
            miss.to_json(),
            json!({"name":"cache_miss","channel":"cache-x"})
        );
    }
}
