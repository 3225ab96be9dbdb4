//! What a shard does with each message from a peer shard: one arm per [`ShardMsg`], each a call
//! into the file that owns the concern.

use super::msg::ShardMsg;
use super::publish::{Delivery, FrameJob};
use super::Shard;

impl Shard {
    /// Handles one message from a peer (messages from one peer are handled in order).
    pub(super) async fn handle_message(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver {
                app,
                channel,
                frame,
                except,
                published_at,
                cached,
            } => {
                let job = Delivery::Frame(FrameJob {
                    app,
                    channel,
                    frame,
                    except,
                    published_at: Some(published_at),
                    cached,
                });
                self.take_delivery(job).await
            }
            ShardMsg::PresenceJoin {
                app,
                channel,
                member,
                socket,
            } => self.home_join(app, channel, member, socket),
            ShardMsg::PresenceJoined {
                app,
                channel,
                socket,
                outcome,
            } => self.queue_finish_join(app, channel, socket, outcome),
            ShardMsg::PresenceLeave {
                app,
                channel,
                user_id,
                socket,
            } => self.home_leave(app, channel, &user_id, socket),
            ShardMsg::Request { from, id, job } => self.answer_request(from, id, &job),
            ShardMsg::Reply { id, reply } => self.record_reply(id, reply),
            ShardMsg::RemotePresence {
                node,
                member,
                joined,
            } => self.apply_remote_presence(&node, &member, joined),
            ShardMsg::NodeState {
                node,
                presence,
                occupied,
            } => self.replace_node_state(&node, &presence, &occupied),
            ShardMsg::RemoteOccupancy {
                node,
                app,
                channel,
                occupied,
            } => self.remote_occupancy_changed(&node, app, &channel, occupied),
            ShardMsg::NodeGone { node } => self.forget_node(&node),
            ShardMsg::Nodes { nodes } => self.set_live_nodes(nodes),
            ShardMsg::Occupancy {
                app,
                channel,
                occupied,
            } => self.home_occupancy_changed(app, &channel, occupied),
            ShardMsg::SubscriptionDelta {
                app,
                channel,
                delta,
            } => self.home_subscription_count_changed(app, &channel, delta),
            ShardMsg::CacheMissed { app, channel } => self.home_cache_missed(app, &channel),
            ShardMsg::RemoteSubscriptionCount {
                node,
                app,
                channel,
                subscriptions,
            } => self.remote_subscription_count(&node, app, &channel, subscriptions),
            ShardMsg::UserSignedIn { app, user } => self.home_signed_in(app, &user),
            ShardMsg::UserSignedOut { app, user } => self.home_signed_out(app, &user),
            ShardMsg::WatchlistChanged { app, user, change } => {
                self.send_watchlist_change(app, &user, change)
            }
            ShardMsg::WatchlistQuery {
                from,
                app,
                ids,
                socket,
            } => self.answer_watchlist_query(from, app, &ids, socket),
            ShardMsg::WatchlistStatuses {
                app,
                socket,
                online,
                offline,
            } => self.send_watchlist_statuses(app, socket, &online, &offline),
            ShardMsg::RemoteUser {
                node,
                app,
                user,
                online,
            } => self.apply_remote_user(&node, app, &user, online),
            ShardMsg::NodeUsers { node, users } => self.replace_node_users(&node, &users),
        }
    }
}
