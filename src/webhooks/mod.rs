//! Webhooks (PROTOCOL.md §6): the events shards report, delayed by a grace window where Pusher
//! delays them, batched per app and receiver, signed, spooled to disk before sending and retried
//! until delivered or dead-lettered.
//!
//! Shards only push events into a channel ([`Webhooks::emit`]); everything else runs on threads
//! of its own, off the socket hot path:
//! - [`dispatcher`]: one thread; grace window, filters, batching, the journal;
//! - [`delivery`]: one thread per receiver URL; spool, signing, HTTP with retries;
//! - [`spool`]: the append-only file that is each receiver's queue, kept across restarts;
//! - [`journal`]: what the node has reported (occupied channels, present members), so that a
//!   crashed node can send the `channel_vacated`/`member_removed` it owes;
//! - [`stats`]: counters for `/metrics`.

pub mod delivery;
pub mod dispatcher;
pub mod journal;
pub mod spool;
pub mod stats;

pub use stats::WebhookStats;

use crate::app::AppRegistry;
use crate::config::Config;
use dispatcher::{Inbound, Inlet};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The shards' handle: where events go.
#[derive(Debug)]
pub struct Webhooks {
    inlet: Inlet,
    dispatcher: Mutex<Option<std::thread::JoinHandle<()>>>,
    enabled: Vec<bool>,
    stop_flush: Duration,
    /// Delivery counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhooks {
    /// Starts the dispatcher and one delivery thread per receiver; `None` when no app has
    /// webhooks (then nothing starts and no spool is touched). What a crashed earlier run owes
    /// is replayed at once on a single node, and left to [`Webhooks::settle_owed`] when
    /// clustered.
    pub fn start(config: &Config, apps: &AppRegistry) -> Result<Option<Arc<Webhooks>>, String> {
        Webhooks::start_with(config, apps, config.cluster.is_none())
    }

    /// [`Webhooks::start`], saying whether what an earlier run owes is replayed at once.
    pub fn start_with(
        config: &Config,
        apps: &AppRegistry,
        replay_owed_at_start: bool,
    ) -> Result<Option<Arc<Webhooks>>, String> {
        if apps.iter().all(|a| a.config.webhooks.is_empty()) {
            return Ok(None);
        }
        let stats = Arc::new(WebhookStats::default());
        let (inlet, dispatcher) =
            dispatcher::start(config, apps, stats.clone(), replay_owed_at_start)?;
        Ok(Some(Arc::new(Webhooks {
            inlet,
            dispatcher: Mutex::new(Some(dispatcher)),
            enabled: apps.iter().map(|a| !a.config.webhooks.is_empty()).collect(),
            stop_flush: Duration::from_millis(config.webhooks.stop_flush_ms),
            stats,
        })))
    }

    /// Whether app `app` has any webhook receiver (so shards can skip work for it).
    pub fn enabled(&self, app: u32) -> bool {
        self.enabled.get(app as usize).copied().unwrap_or(false)
    }

    /// Reports an event of app `app`. Never blocks: when the dispatcher's inlet is full
    /// ([`dispatcher::INLET_CAPACITY`]) the event is dropped, counted
    /// (`warren_webhooks_events_dropped_total{reason="inlet_full"}`) and logged (rate-limited).
    pub fn emit(&self, app: u32, event: WebhookEvent) {
        if !self.enabled(app) {
            return;
        }
        self.stats.inlet_depth.fetch_add(1, Ordering::Relaxed);
        match self.inlet.try_send(Inbound::Event(app, Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.inlet_depth.fetch_sub(1, Ordering::Relaxed);
                self.stats
                    .dropped_inlet_full
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.inlet_full_log.note(|dropped| {
                    tracing::error!(dropped, "the webhook dispatcher is behind: events dropped");
                });
            }
            // Stopped: nothing is sent any more.
            Err(TrySendError::Disconnected(_)) => {
                self.stats.inlet_depth.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the `channel_vacated`/`member_removed` a crashed earlier run owes (what its journal
    /// says it reported and never took back), through the grace window. May block briefly
    /// while the inlet is full: call it from a thread of its own, not a shard.
    pub fn replay_owed(&self) {
        let _ = self.inlet.send(Inbound::ReplayOwed);
    }

    /// Forgets what a crashed earlier run owes without sending it (another node reports it).
    pub fn discard_owed(&self) {
        let _ = self.inlet.send(Inbound::DiscardOwed);
    }

    /// The cluster rule for what a restarted node owes (docs/architecture.md, Webhooks): when
    /// another node is alive once `node_timeout` has passed since start, that node has reported
    /// this node's channels and members gone (it saw this node die), so the entries are
    /// discarded; when none is, nobody did, and they are replayed.
    pub fn settle_owed(&self, other_nodes_alive: bool) {
        if other_nodes_alive {
            self.discard_owed();
        } else {
            self.replay_owed();
        }
    }

    /// Stops through a shared reference, once (later calls return at once): the dispatcher
    /// sends every event held in the grace window as due now, hands every open batch to the
    /// spool and ends; then this waits up to `stop_flush_ms` for the receivers to take the
    /// batches. What they did not take stays in the spool and is sent at the next start.
    pub fn stop(&self) {
        let dispatcher = self
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(dispatcher) = dispatcher else {
            return;
        };
        let _ = self.inlet.send(Inbound::Stop);
        let _ = dispatcher.join();
        let deadline = Instant::now() + self.stop_flush;
        while self.stats.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.stats.pending.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                batches = left,
                "webhook batches not yet delivered stay in the spool for the next start"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied(channel: &str) -> WebhookEvent {
        WebhookEvent::ChannelOccupied {
            channel: channel.into(),
        }
    }

    #[test]
    fn a_full_inlet_drops_and_counts_instead_of_blocking_the_shard() {
        let (inlet, _events) = std::sync::mpsc::sync_channel(2);
        let webhooks = Webhooks {
            inlet,
            dispatcher: Mutex::new(None),
            enabled: vec![true],
            stop_flush: Duration::ZERO,
            stats: Arc::default(),
        };
        for n in 0..5 {
            webhooks.emit(0, occupied(&format!("c{n}")));
        }
        let facts = webhooks.stats.facts();
        assert_eq!(facts.inlet_depth, 2);
        assert_eq!(facts.dropped_inlet_full, 3);
    }

    #[test]
    fn stop_works_through_a_shared_reference_once_and_spools_what_is_held() {
        let dir = std::env::temp_dir().join(format!("warren-webhooks-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config::from_toml_str(&format!(
            "[webhooks]\nspool_dir = {:?}\ngrace_ms = 60000\nbatch_window_ms = 60000\nstop_flush_ms = 100\n\
             [[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nwebhooks = [{{ url = \"http://127.0.0.1:9/down\" }}]\n",
            dir.display().to_string()
        ))
        .unwrap();
        let apps = AppRegistry::new(&config);
        let webhooks = Webhooks::start(&config, &apps).unwrap().unwrap();
        let shard_copy = webhooks.clone();
        webhooks.emit(0, occupied("a"));
        webhooks.emit(
            0,
            WebhookEvent::ChannelVacated {
                channel: "b".into(),
            },
        );
        webhooks.stop();
        webhooks.stop();
        shard_copy.emit(0, occupied("after-stop"));
        // Both events (one of them held for a 60 s grace window, the batch open for 60 s) were
        // handed to the spool at the stop; the receiver is down, so they wait there.
        let spool = std::fs::read_to_string(dir.join("app-1-0.spool")).unwrap();
        assert!(spool.contains(r#""channel":"a""#), "{spool}");
        assert!(
            spool.contains(r#""channel":"b","name":"channel_vacated""#),
            "{spool}"
        );
        assert!(!spool.contains("after-stop"), "{spool}");
        let journal = std::fs::read_to_string(dir.join("app-1-reported.journal")).unwrap();
        assert_eq!(journal, "[\"+\",\"a\"]\n");
    }

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
