//! Who is subscribed where: adding and removing local subscribers, and presence joins and leaves
//! at each channel's **home shard** (`hash(app, channel) % shards`), which keeps the roster.
//!
//! A join on shard S goes to the home H, which updates the roster, answers S with the roster at
//! once (no `await` in between), and only then publishes `member_added` for a user's first
//! socket. S queues the answer on its fan-out queue, behind every delivery H sent before it, so
//! each member event computed after the roster reaches the socket after it (see [`super::publish`]).

use super::msg::ShardMsg;
use super::Shard;
use crate::channels::home_shard;
use crate::channels::presence::Joined;
use crate::protocol::inbound::PresenceMember;
use crate::protocol::{codes, outbound, SocketId};
use crate::socket::{Connection, Subscription};
use crate::webhooks::WebhookEvent;
use crate::ws::frame::shared_text_frame;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// Adds `conn` to the local subscribers of `channel`.
    pub fn add_local_subscriber(&self, conn: &Rc<Connection>, channel: &str) {
        let count = self.channels.borrow_mut().subscribe(
            conn.app.index,
            channel,
            conn.local_id(),
            conn.clone(),
        );
        if count == 1 {
            self.shard_occupancy_changed(conn.app.index, channel, true);
        }
        self.subscription_count_changed(conn.app.index, channel, 1);
    }

    /// Takes `conn` out of a channel it was subscribed to (or joining), leaving the presence
    /// roster too.
    pub fn leave_channel(&self, conn: &Rc<Connection>, subscription: Subscription) {
        let app = conn.app.index;
        if subscription.active {
            let left =
                self.channels
                    .borrow_mut()
                    .unsubscribe(app, &subscription.channel, conn.local_id());
            if left == 0 {
                self.shard_occupancy_changed(app, &subscription.channel, false);
            }
            self.subscription_count_changed(app, &subscription.channel, -1);
        }
        if let Some(identity) = subscription.presence {
            let channel: Arc<str> = Arc::from(&*subscription.channel);
            self.presence_leave(app, channel, identity.user_id, conn.socket_id);
        }
    }

    /// Starts `conn`'s join of presence `channel` at the channel's home shard; the answer comes
    /// back through this shard's fan-out queue.
    pub fn presence_join(&self, conn: &Connection, channel: &str, member: PresenceMember) {
        let app = conn.app.index;
        let channel: Arc<str> = Arc::from(channel);
        let home = home_shard(app, &channel, self.shards);
        if home == self.id {
            self.home_join(app, channel, member, conn.socket_id);
        } else {
            let socket = conn.socket_id;
            let message = ShardMsg::PresenceJoin {
                app,
                channel,
                member,
                socket,
            };
            self.send_to(home, message);
        }
    }

    fn presence_leave(&self, app: u32, channel: Arc<str>, user_id: String, socket: SocketId) {
        let home = home_shard(app, &channel, self.shards);
        if home == self.id {
            self.home_leave(app, channel, &user_id, socket);
        } else {
            let message = ShardMsg::PresenceLeave {
                app,
                channel,
                user_id,
                socket,
            };
            self.send_to(home, message);
        }
    }

    /// Runs `local` here when this shard is `channel`'s home, else sends the home the message
    /// `remote` builds.
    pub(super) fn at_home(
        &self,
        app: u32,
        channel: &str,
        local: impl FnOnce(&Self),
        remote: impl FnOnce(Arc<str>) -> ShardMsg,
    ) {
        let home = home_shard(app, channel, self.shards);
        if home == self.id {
            local(self);
        } else {
            self.send_to(home, remote(Arc::from(channel)));
        }
    }

    /// At the home shard: adds the member and answers the joining socket's shard with the roster
    /// *before* anything else can happen to this channel here, then announces a new user.
    pub(super) fn home_join(
        &self,
        app: u32,
        channel: Arc<str>,
        member: PresenceMember,
        socket: SocketId,
    ) {
        let Some(max_members) = self.app(app).map(|a| a.config.max_presence_members) else {
            return;
        };
        let outcome = self
            .presence
            .borrow_mut()
            .join(app, &channel, &member, max_members);
        let (first_socket, first_local) = match &outcome {
            Joined::Member {
                first_socket,
                first_local,
                ..
            } => (*first_socket, *first_local),
            Joined::Full => (false, false),
        };
        if socket.shard() == self.id {
            self.queue_finish_join(app, channel.clone(), socket, outcome);
        } else {
            let message = ShardMsg::PresenceJoined {
                app,
                channel: channel.clone(),
                socket,
                outcome,
            };
            self.send_to(socket.shard(), message);
        }
        if first_local {
            self.share_presence_change(app, &channel, &member, true);
        }
        if first_socket {
            self.emit_webhook(
                app,
                WebhookEvent::MemberAdded {
                    channel: channel.to_string(),
                    user_id: member.user_id.clone(),
                },
            );
            let text = outbound::member_added(
                &channel,
                &member.user_id_json,
                member.user_info_json.as_deref(),
            );
            self.publish_frame(app, channel, shared_text_frame(&text), Some(socket));
        }
    }

    /// At the home shard: removes one socket of a member; announces the user's departure when it
    /// was their last.
    pub(super) fn home_leave(&self, app: u32, channel: Arc<str>, user_id: &str, socket: SocketId) {
        let left = self.presence.borrow_mut().leave(app, &channel, user_id);
        if left.last_local {
            // Receivers of a leave need only the user id.
            let user_id_json = serde_json::to_string(user_id).expect("strings serialize");
            let member = PresenceMember {
                user_id: user_id.to_string(),
                user_id_json,
                user_info_json: None,
            };
            self.share_presence_change(app, &channel, &member, false);
        }
        if let Some(user_id_json) = left.member_removed {
            self.emit_webhook(
                app,
                WebhookEvent::MemberRemoved {
                    channel: channel.to_string(),
                    user_id: user_id.to_string(),
                },
            );
            let text = outbound::member_removed(&channel, &user_id_json);
            self.publish_frame(app, channel, shared_text_frame(&text), Some(socket));
        }
    }

    /// At the joining socket's shard, in fan-out order: completes (or refuses) the subscription.
    pub(super) fn finish_presence_join(
        &self,
        app: u32,
        channel: &str,
        socket: SocketId,
        outcome: Joined,
    ) {
        let Some(conn) = self.connection(socket, app) else {
            return;
        };
        match outcome {
            Joined::Member { roster_json, .. } => {
                if conn.activate_subscription(channel) {
                    self.add_local_subscriber(&conn, channel);
                    conn.send_text(&outbound::presence_subscription_succeeded(
                        channel,
                        &roster_json,
                    ));
                    if crate::protocol::names::is_cache_channel(channel) {
                        self.send_cache_replay(&conn, channel);
                    }
                }
            }
            Joined::Full => {
                if conn.subscription(channel).is_some_and(|s| !s.active) {
                    conn.remove_subscription(channel);
                    let max = self.app(app).map_or(0, |a| a.config.max_presence_members);
                    conn.send_text(&outbound::subscription_error(
                        channel,
                        "LimitReached",
                        &format!("The presence channel is full (at most {max} members)"),
                        codes::OVER_CAPACITY,
                    ));
                }
            }
        }
    }
}
