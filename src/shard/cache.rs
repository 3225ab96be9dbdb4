//! Cache channels at the shard (PROTOCOL.md §2.8): keeping each cache channel's last event and
//! replaying it to every new subscriber right after `subscription_succeeded` (or sending
//! `pusher:cache_miss` and the `cache_miss` webhook).
//!
//! **Where the cache lives — the choice.** Every shard keeps its own table
//! ([`ChannelCache`]) and stores an event when it *runs* the event's delivery from its fan-out
//! queue; a new subscriber of a cache channel is added to the channel and given the replay by a
//! job on the same queue. So the deliveries ahead of that job are in the replay (the last one)
//! and not delivered live, those behind it are delivered live and not replayed: never twice,
//! never missed, with no question to another shard and no change to the publish path's ordering.
//! The tables hold the same shared frame buffer every shard delivered, so a node keeps each
//! cached event's bytes once; what is per shard is the entry (channel name, ~100 bytes). Against
//! one copy at each channel's home shard: the replay would have to be ordered against deliveries
//! made by every other shard, which needs every cache-channel publish to be fanned out by the
//! home (one more hop, and API publishes to cache and other channels no longer ordered with
//! each other) — more than the entries cost.
//!
//! The `cache_miss` webhook is de-duplicated node-wide at the channel's home shard: a shard that
//! misses for the first time in a TTL asks the home, whose own table decides (once per channel
//! and TTL per node). Each node reports its own misses.
//!
//! Client events are not cached (the hosted service's documentation, PROTOCOL.md §2.8: "client
//! events are not stored for cache channels"; soketi does the same): a cache channel's replay is
//! the state the app's server published, which a client cannot overwrite. Events named
//! `client-…` are therefore never stored, whichever node relayed them.

use super::msg::ShardMsg;
use super::Shard;
use crate::channels::cache::{CacheInfo, CacheLimits, CachedFrame, Replay};
use crate::protocol::names::{self, CLIENT_EVENT_PREFIX};
use crate::protocol::{outbound, SocketId};
use crate::socket::{Connection, Subscription};
use crate::webhooks::WebhookEvent;
use crate::ws::frame::{payload_offset, SharedFrame};
use std::rc::Rc;
use std::sync::Arc;

/// Whether an event named `event` published to `channel` becomes the channel's cached event.
pub(super) fn is_cached(channel: &str, event: &str) -> bool {
    names::is_cache_channel(channel) && !event.starts_with(CLIENT_EVENT_PREFIX)
}

impl Shard {
    fn cache_limits(&self, app: u32) -> Option<CacheLimits> {
        self.app(app).map(|a| CacheLimits::for_app(&a.config))
    }

    /// In fan-out order: `frame` is now the last event of cache channel `channel` on this shard.
    pub(super) fn cache_store(&self, app: u32, channel: &str, frame: &SharedFrame) {
        let Some(limits) = self.cache_limits(app) else {
            return;
        };
        let cached = CachedFrame {
            frame: frame.clone(),
            text_at: payload_offset(frame),
        };
        self.cache
            .borrow_mut()
            .store(app, channel, cached, self.now(), &limits);
    }

    /// Starts `conn`'s subscription to a (non-presence) cache channel whose signature, if any,
    /// was checked: it completes on this shard's fan-out queue, behind every delivery already
    /// taken, with `subscription_succeeded` and the replay.
    pub fn subscribe_cache_channel(&self, conn: &Rc<Connection>, channel: &str) {
        conn.add_subscription(Subscription {
            channel: channel.into(),
            presence: None,
            active: false,
        });
        self.queue_cache_join(conn.app.index, Arc::from(channel), conn.socket_id);
    }

    /// The fan-out job of [`Shard::subscribe_cache_channel`] (nothing if the socket left or
    /// unsubscribed meanwhile).
    pub(super) fn finish_cache_join(&self, app: u32, channel: &str, socket: SocketId) {
        let Some(conn) = self.connection(socket, app) else {
            return;
        };
        if conn.activate_subscription(channel) {
            self.add_local_subscriber(&conn, channel);
            conn.send_text(&outbound::subscription_succeeded(channel));
            self.send_cache_replay(&conn, channel);
        }
    }

    /// Sends `conn` (just subscribed, in fan-out order) the last event of `channel` or
    /// `pusher:cache_miss`.
    pub(super) fn send_cache_replay(&self, conn: &Connection, channel: &str) {
        let app = conn.app.index;
        let Some(limits) = self.cache_limits(app) else {
            return;
        };
        let replay = self
            .cache
            .borrow_mut()
            .replay(app, channel, self.now(), &limits);
        match replay {
            Replay::Event(cached) => conn.send_shared(&cached.frame),
            Replay::Miss { webhook } => {
                conn.send_text(&outbound::cache_miss(channel));
                if webhook && self.webhooks_enabled(app) {
                    self.at_home(
                        app,
                        channel,
                        |home| home.emit_cache_miss(app, channel),
                        |channel| ShardMsg::CacheMissed { app, channel },
                    );
                }
            }
        }
    }

    /// At the channel's home shard: another shard missed; its own table de-duplicates.
    pub(super) fn home_cache_missed(&self, app: u32, channel: &str) {
        let Some(limits) = self.cache_limits(app) else {
            return;
        };
        let replay = self
            .cache
            .borrow_mut()
            .replay(app, channel, self.now(), &limits);
        if replay == (Replay::Miss { webhook: true }) {
            self.emit_cache_miss(app, channel);
        }
    }

    fn emit_cache_miss(&self, app: u32, channel: &str) {
        let channel = channel.to_string();
        self.emit_webhook(app, WebhookEvent::CacheMiss { channel });
    }

    /// Drops the expired entries (from the tick).
    pub(super) fn sweep_cache(&self) {
        self.cache.borrow_mut().sweep(self.now());
    }

    /// The cached event of `channel` as this shard has it, for `GET /channels/{name}?info=cache`
    /// (every shard keeps every cache channel, so the asking shard answers alone).
    pub fn cache_info(&self, app: u32, channel: &str) -> Option<CacheInfo> {
        self.cache.borrow().info(app, channel, self.now())
    }
}
