//! Presence rosters, kept by each channel's home shard (see [`super::home_shard`]): one member per
//! user id, with a count of that user's sockets, so `member_added` fires on the first socket and
//! `member_removed` after the last (PROTOCOL.md §7).

use crate::protocol::inbound::PresenceMember;
use crate::protocol::outbound;
use ahash::AHashMap;

#[derive(Debug)]
struct Member {
    user_id_json: String,
    user_info_json: Option<String>,
    sockets: u32,
    /// Join order, so that `ids` lists users in the order they came.
    order: u64,
}

#[derive(Debug, Default)]
struct Roster {
    members: AHashMap<String, Member>,
    next_order: u64,
}

/// The result of a join at the home shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The socket is in; `roster_json` is the `{"presence":…}` document for
    /// `subscription_succeeded`; `first_socket` says whether `member_added` must be sent.
    Member {
        /// The roster including the new member.
        roster_json: String,
        /// Whether this was the user's first socket in the channel.
        first_socket: bool,
    },
    /// The channel already has the maximum number of distinct users.
    Full,
}

/// What a leave changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The user's last socket left: send `member_removed` with this user id JSON.
    LastSocket {
        /// The user id exactly as it was given at join.
        user_id_json: String,
    },
    /// The user still has sockets in the channel (or was not a member): nothing to send.
    Unchanged,
}

/// Rosters of the presence channels whose home is this shard, per app and channel.
#[derive(Debug, Default)]
pub struct PresenceRosters {
    rosters: AHashMap<(u32, Box<str>), Roster>,
}

impl PresenceRosters {
    /// Adds one socket of `member` to the roster, unless a new user would exceed `max_members`.
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
        let full = roster.members.len() >= max_members;
        let first_socket = match roster.members.get_mut(&member.user_id) {
            Some(existing) => {
                existing.sockets += 1;
                false
            }
            None if full => {
                if roster.members.is_empty() {
                    self.rosters.remove(&(app, channel.into()));
                }
                return Joined::Full;
            }
            None => {
                let order = roster.next_order;
                roster.next_order += 1;
                roster.members.insert(
                    member.user_id.clone(),
                    Member {
                        user_id_json: member.user_id_json.clone(),
                        user_info_json: member.user_info_json.clone(),
                        sockets: 1,
                        order,
                    },
                );
                true
            }
        };
        Joined::Member {
            roster_json: roster_json(roster),
            first_socket,
        }
    }

    /// Removes one socket of `user_id` from the roster.
    pub fn leave(&mut self, app: u32, channel: &str, user_id: &str) -> Left {
        let key = (app, Box::<str>::from(channel));
        let Some(roster) = self.rosters.get_mut(&key) else {
            return Left::Unchanged;
        };
        let Some(member) = roster.members.get_mut(user_id) else {
            return Left::Unchanged;
        };
        member.sockets -= 1;
        if member.sockets > 0 {
            return Left::Unchanged;
        }
        let member = roster
            .members
            .remove(user_id)
            .expect("member was just found");
        if roster.members.is_empty() {
            self.rosters.remove(&key);
        }
        Left::LastSocket {
            user_id_json: member.user_id_json,
        }
    }

    /// Distinct users in a channel (0 when it has no roster here).
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
                ..
            }
        ));
        assert!(matches!(
            rosters.join(0, "presence-r", &alice, 100),
            Joined::Member {
                first_socket: false,
                ..
            }
        ));
        let Joined::Member {
            roster_json,
            first_socket,
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
        assert_eq!(rosters.leave(0, "presence-r", "alice"), Left::Unchanged);
        assert_eq!(
            rosters.leave(0, "presence-r", "alice"),
            Left::LastSocket {
                user_id_json: r#""alice""#.into()
            }
        );
        assert_eq!(rosters.leave(0, "presence-r", "alice"), Left::Unchanged);
        assert_eq!(
            rosters.leave(0, "presence-r", "7"),
            Left::LastSocket {
                user_id_json: "7".into()
            }
        );
        assert_eq!(rosters.user_count(0, "presence-r"), 0);
        assert!(rosters.rosters.is_empty());
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
