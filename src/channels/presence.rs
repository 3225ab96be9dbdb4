//! Presence rosters, kept by each channel's home shard (see [`super::home_shard`]): one member per
//! user id, with a count of that user's sockets, so `member_added` fires on the first socket and
//! `member_removed` after the last (PROTOCOL.md §7).
//!
//! User ids are one string each: `7` and `"7"` in `channel_data` are the same member, and every
//! message and webhook names them as the string `"7"` (the rule in `PresenceMember::user_id_json`).

use crate::protocol::inbound::PresenceMember;
use crate::protocol::outbound;
use ahash::AHashMap;
use std::sync::Arc;

#[derive(Debug)]
struct Member {
    user_id_json: String,
    user_info_json: Option<String>,
    /// This node's sockets of the user in the channel.
    local_sockets: u32,
    /// Other nodes that have at least one socket of the user in the channel.
    remote_nodes: Vec<Arc<str>>,
    /// Join order, so that `ids` lists users in the order they came.
    order: u64,
}

impl Member {
    fn is_present(&self) -> bool {
        self.local_sockets > 0 || !self.remote_nodes.is_empty()
    }
}

#[derive(Debug, Default)]
struct Roster {
    members: AHashMap<String, Member>,
    next_order: u64,
}

impl Roster {
    fn member_entry(
        &mut self,
        user_id: &str,
        user_id_json: &str,
        user_info_json: Option<&str>,
    ) -> &mut Member {
        if !self.members.contains_key(user_id) {
            let order = self.next_order;
            self.next_order += 1;
            self.members.insert(
                user_id.to_string(),
                Member {
                    user_id_json: user_id_json.to_string(),
                    user_info_json: user_info_json.map(str::to_string),
                    local_sockets: 0,
                    remote_nodes: Vec::new(),
                    order,
                },
            );
        }
        self.members.get_mut(user_id).expect("just inserted")
    }
}

/// The result of a join at the home shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The socket is in.
    Member {
        /// The `{"presence":…}` document for `subscription_succeeded` (the new member included).
        roster_json: String,
        /// Whether the user was not present anywhere before: send `member_added`.
        first_socket: bool,
        /// Whether this is the user's first socket on this node: tell the other nodes.
        first_local: bool,
    },
    /// The channel already has the maximum number of distinct users.
    Full,
}

/// What a local leave changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Left {
    /// The user id JSON when the user is now gone everywhere: send `member_removed`.
    pub member_removed: Option<String>,
    /// Whether that was the user's last socket on this node: tell the other nodes.
    pub last_local: bool,
}

/// A presence change caused by another node, to announce to local sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A user appeared: `member_added` with this user id and info JSON.
    Added {
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Box<str>,
        /// User id JSON.
        user_id_json: String,
        /// `user_info` JSON.
        user_info_json: Option<String>,
    },
    /// A user is gone everywhere: `member_removed`.
    Removed {
        /// App registry index.
        app: u32,
        /// Channel.
        channel: Box<str>,
        /// User id JSON.
        user_id_json: String,
    },
}

/// One member this node contributes: (app, channel, user id, user id JSON, info JSON).
pub type LocalEntry = (u32, Box<str>, String, String, Option<String>);

/// Rosters of the presence channels whose home is this shard, per app and channel: this node's
/// sockets, and which other nodes have the same users.
#[derive(Debug, Default)]
pub struct PresenceRosters {
    rosters: AHashMap<(u32, Box<str>), Roster>,
}

impl PresenceRosters {
    /// Adds one local socket of `member` to the roster, unless a new user would exceed
    /// `max_members` (counted over every node).
    ///
    /// A user who joins again from another socket keeps the `user_info` of their first socket
    /// until all their sockets have left. PROTOCOL.md §7.1 marks this UNCONFIRMED for the hosted
    /// service; keeping the first is what laravel-websockets does and never makes a member's info
    /// change under clients that already rendered it.
    pub fn join(
        &mut self,
        app: u32,
        channel: &str,
        member: &PresenceMember,
        max_members: usize,
    ) -> Joined {
        let roster = self.rosters.entry((app, channel.into())).or_default();
        let present = roster
            .members
            .get(&member.user_id)
            .is_some_and(Member::is_present);
        if !present && roster.members.len() >= max_members {
            if roster.members.is_empty() {
                self.rosters.remove(&(app, channel.into()));
            }
            return Joined::Full;
        }
        let entry = roster.member_entry(
            &member.user_id,
            &member.user_id_json,
            member.user_info_json.as_deref(),
        );
        entry.local_sockets += 1;
        let first_local = entry.local_sockets == 1;
        Joined::Member {
            roster_json: roster_json(roster),
            first_socket: !present,
            first_local,
        }
    }

    /// Removes one local socket of `user_id` from the roster.
    pub fn leave(&mut self, app: u32, channel: &str, user_id: &str) -> Left {
        let key = (app, Box::<str>::from(channel));
        let Some(roster) = self.rosters.get_mut(&key) else {
            return Left::default();
        };
        let Some(member) = roster
            .members
            .get_mut(user_id)
            .filter(|m| m.local_sockets > 0)
        else {
            return Left::default();
        };
        member.local_sockets -= 1;
        let last_local = member.local_sockets == 0;
        let member_removed = (!member.is_present()).then(|| member.user_id_json.clone());
        if member_removed.is_some() {
            roster.members.remove(user_id);
            if roster.members.is_empty() {
                self.rosters.remove(&key);
            }
        }
        Left {
            member_removed,
            last_local,
        }
    }

    /// Another node now has the user in the channel; `Added` when the user is new here.
    pub fn remote_join(
        &mut self,
        app: u32,
        channel: &str,
        node: &Arc<str>,
        user_id: &str,
        user_id_json: &str,
        user_info_json: Option<&str>,
    ) -> Option<MemberEvent> {
        let roster = self.rosters.entry((app, channel.into())).or_default();
        let entry = roster.member_entry(user_id, user_id_json, user_info_json);
        let was_present = entry.is_present();
        if !entry.remote_nodes.contains(node) {
            entry.remote_nodes.push(node.clone());
        }
        (!was_present).then(|| MemberEvent::Added {
            app,
            channel: channel.into(),
            user_id_json: entry.user_id_json.clone(),
            user_info_json: entry.user_info_json.clone(),
        })
    }

    /// Another node no longer has the user in the channel; `Removed` when the user is gone
    /// everywhere.
    pub fn remote_leave(
        &mut self,
        app: u32,
        channel: &str,
        node: &str,
        user_id: &str,
    ) -> Option<MemberEvent> {
        let key = (app, Box::<str>::from(channel));
        let roster = self.rosters.get_mut(&key)?;
        let member = roster.members.get_mut(user_id)?;
        member.remote_nodes.retain(|n| &**n != node);
        if member.is_present() {
            return None;
        }
        let member = roster.members.remove(user_id)?;
        if roster.members.is_empty() {
            self.rosters.remove(&key);
        }
        Some(MemberEvent::Removed {
            app,
            channel: key.1,
            user_id_json: member.user_id_json,
        })
    }

    /// Forgets everything `node` contributed; returns the users now gone everywhere.
    pub fn drop_node(&mut self, node: &str) -> Vec<MemberEvent> {
        self.node_members(node)
            .into_iter()
            .filter_map(|(app, channel, user_id)| self.remote_leave(app, &channel, node, &user_id))
            .collect()
    }

    /// The (app, channel, user id) that `node` contributes to rosters kept here.
    pub fn node_members(&self, node: &str) -> Vec<(u32, Box<str>, String)> {
        self.rosters
            .iter()
            .flat_map(|((app, channel), roster)| {
                roster
                    .members
                    .iter()
                    .filter(|(_, m)| m.remote_nodes.iter().any(|n| &**n == node))
                    .map(|(user_id, _)| (*app, channel.clone(), user_id.clone()))
            })
            .collect()
    }

    /// This node's own members (at least one local socket), for a snapshot.
    pub fn local_entries(&self) -> Vec<LocalEntry> {
        self.rosters
            .iter()
            .flat_map(|((app, channel), roster)| {
                roster
                    .members
                    .iter()
                    .filter(|(_, m)| m.local_sockets > 0)
                    .map(|(user_id, m)| {
                        (
                            *app,
                            channel.clone(),
                            user_id.clone(),
                            m.user_id_json.clone(),
                            m.user_info_json.clone(),
                        )
                    })
            })
            .collect()
    }

    /// Distinct users in a channel, over every node (0 when it has no roster here).
    pub fn user_count(&self, app: u32, channel: &str) -> usize {
        self.rosters
            .get(&(app, channel.into()))
            .map_or(0, |r| r.members.len())
    }

    /// The presence channels of `app` kept here, with their distinct user counts.
    pub fn channels(&self, app: u32) -> impl Iterator<Item = (&str, usize)> {
        self.rosters
            .iter()
            .filter(move |((a, _), _)| *a == app)
            .map(|((_, name), roster)| (&**name, roster.members.len()))
    }

    /// User ids of a channel's members, in join order.
    pub fn user_ids(&self, app: u32, channel: &str) -> Vec<String> {
        self.rosters
            .get(&(app, channel.into()))
            .map_or_else(Vec::new, |r| {
                sorted_members(r).map(|(id, _)| id.clone()).collect()
            })
    }
}

fn sorted_members(roster: &Roster) -> impl Iterator<Item = (&String, &Member)> {
    let mut members: Vec<_> = roster.members.iter().collect();
    members.sort_by_key(|(_, m)| m.order);
    members.into_iter()
}

fn roster_json(roster: &Roster) -> String {
    outbound::presence_roster(
        sorted_members(roster).map(|(id, m)| (id.as_str(), m.user_info_json.as_deref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::inbound::parse_channel_data;

    fn member(json: &str) -> PresenceMember {
        parse_channel_data(json).unwrap()
    }

    #[test]
    fn one_member_per_user_and_events_on_first_and_last_socket() {
        let mut rosters = PresenceRosters::default();
        let alice = member(r#"{"user_id":"alice","user_info":{"n":1}}"#);
        let bob = member(r#"{"user_id":7}"#);
        assert!(matches!(
            rosters.join(0, "presence-r", &alice, 100),
            Joined::Member {
                first_socket: true,
                first_local: true,
                ..
            }
        ));
        assert!(matches!(
            rosters.join(0, "presence-r", &alice, 100),
            Joined::Member {
                first_socket: false,
                first_local: false,
                ..
            }
        ));
        let Joined::Member {
            roster_json,
            first_socket,
            ..
        } = rosters.join(0, "presence-r", &bob, 100)
        else {
            panic!()
        };
        assert!(first_socket);
        assert_eq!(
            roster_json,
            r#"{"presence":{"ids":["alice","7"],"hash":{"alice":{"n":1},"7":null},"count":2}}"#
        );
        assert_eq!(rosters.user_count(0, "presence-r"), 2);
        assert_eq!(rosters.leave(0, "presence-r", "alice"), Left::default());
        assert_eq!(
            rosters.leave(0, "presence-r", "alice"),
            Left {
                member_removed: Some(r#""alice""#.into()),
                last_local: true
            }
        );
        assert_eq!(rosters.leave(0, "presence-r", "alice"), Left::default());
        assert_eq!(
            rosters.leave(0, "presence-r", "7"),
            Left {
                member_removed: Some(r#""7""#.into()),
                last_local: true
            }
        );
        assert!(rosters.rosters.is_empty());
    }

    #[test]
    fn users_on_other_nodes_are_members_until_their_last_node_leaves() {
        let mut rosters = PresenceRosters::default();
        let a: Arc<str> = Arc::from("node-a");
        let b: Arc<str> = Arc::from("node-b");
        let alice = member(r#"{"user_id":"alice"}"#);
        assert!(matches!(
            rosters.remote_join(0, "presence-r", &a, "alice", r#""alice""#, None),
            Some(MemberEvent::Added { .. })
        ));
        assert_eq!(
            rosters.remote_join(0, "presence-r", &b, "alice", r#""alice""#, None),
            None
        );
        // A local socket of a user already present remotely: no member_added, but tell the others.
        assert!(matches!(
            rosters.join(0, "presence-r", &alice, 100),
            Joined::Member {
                first_socket: false,
                first_local: true,
                ..
            }
        ));
        assert_eq!(
            rosters.leave(0, "presence-r", "alice"),
            Left {
                member_removed: None,
                last_local: true
            }
        );
        assert_eq!(
            rosters.remote_leave(0, "presence-r", "node-a", "alice"),
            None
        );
        assert_eq!(rosters.user_count(0, "presence-r"), 1);
        let gone = rosters.drop_node("node-b");
        assert_eq!(gone.len(), 1);
        assert!(
            matches!(&gone[0], MemberEvent::Removed { user_id_json, .. } if user_id_json == r#""alice""#)
        );
        assert!(rosters.rosters.is_empty());
    }

    #[test]
    fn local_entries_list_only_local_members() {
        let mut rosters = PresenceRosters::default();
        let node: Arc<str> = Arc::from("n");
        rosters.join(
            0,
            "presence-r",
            &member(r#"{"user_id":"u1","user_info":{"a":1}}"#),
            100,
        );
        rosters.remote_join(0, "presence-r", &node, "u2", r#""u2""#, None);
        let entries = rosters.local_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].2, "u1");
        assert_eq!(entries[0].4.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn numeric_and_string_ids_of_one_text_are_one_member_named_by_a_string() {
        let mut rosters = PresenceRosters::default();
        let Joined::Member { roster_json, .. } =
            rosters.join(0, "presence-n", &member(r#"{"user_id":7}"#), 100)
        else {
            panic!()
        };
        assert_eq!(
            roster_json,
            r#"{"presence":{"ids":["7"],"hash":{"7":null},"count":1}}"#
        );
        assert!(matches!(
            rosters.join(0, "presence-n", &member(r#"{"user_id":"7"}"#), 100),
            Joined::Member {
                first_socket: false,
                ..
            }
        ));
        rosters.leave(0, "presence-n", "7");
        let left = rosters.leave(0, "presence-n", "7");
        let removed = left.member_removed.unwrap();
        let text = outbound::member_removed("presence-n", &removed);
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["user_id"], "7");
    }

    #[test]
    fn member_limit_applies_to_new_users_only() {
        let mut rosters = PresenceRosters::default();
        let a = member(r#"{"user_id":"a"}"#);
        let b = member(r#"{"user_id":"b"}"#);
        assert!(matches!(
            rosters.join(0, "presence-x", &a, 1),
            Joined::Member { .. }
        ));
        assert_eq!(rosters.join(0, "presence-x", &b, 1), Joined::Full);
        assert!(matches!(
            rosters.join(0, "presence-x", &a, 1),
            Joined::Member { .. }
        ));
        assert_eq!(rosters.join(0, "presence-empty", &b, 0), Joined::Full);
        assert_eq!(rosters.user_ids(0, "presence-x"), vec!["a".to_string()]);
        assert!(!rosters.rosters.contains_key(&(0, "presence-empty".into())));
    }
}
