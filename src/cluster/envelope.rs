//! The messages nodes exchange over Redis pub/sub, encoded as compact JSON. Every envelope names
//! its origin node, so a node can drop its own messages when they come back, and carries a
//! number in that node's sequence, so a receiver can put them in order, drop repeats and ask
//! for what it missed (`cluster::sequence`).

use serde::{Deserialize, Serialize};

/// The `data` of a published event, in the form the frame needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireData {
    /// Text to send as a JSON string.
    Text(String),
    /// A JSON string literal, relayed as is.
    JsonString(String),
    /// Any other JSON value, relayed as is (`compat = "workbunny"` client events).
    Json(String),
    /// No data.
    Absent,
}

/// One node-level presence contribution: this node has at least one socket of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// App id.
    pub app: String,
    /// Presence channel.
    pub channel: String,
    /// User id as a string.
    pub user_id: String,
    /// User id as first received (`"42"` or `42`).
    pub user_id_json: String,
    /// `user_info` JSON, if any.
    pub user_info: Option<String>,
}

/// Counts one node reports for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCount {
    /// Channel name.
    pub channel: String,
    /// Subscriptions on the node.
    pub subscriptions: usize,
}

/// A question one node asks all others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteQuery {
    /// Subscription counts of these channels.
    ChannelCounts {
        /// App id.
        app: String,
        /// Channels.
        channels: Vec<String>,
    },
    /// Channels with subscribers whose names start with `prefix`.
    ListChannels {
        /// App id.
        app: String,
        /// Name prefix.
        prefix: String,
    },
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Body {
    /// An event for the subscribers of `channels` on every node.
    Publish {
        /// App id.
        app: String,
        /// Target channels.
        channels: Vec<String>,
        /// Event name.
        event: String,
        /// Event data.
        data: WireData,
        /// `user_id` added to client events on presence channels.
        user_id: Option<String>,
        /// Socket excluded from delivery.
        except: Option<String>,
    },
    /// A user's first socket on the origin node joined a presence channel.
    PresenceJoin(PresenceEntry),
    /// A user's last socket on the origin node left a presence channel.
    PresenceLeave(PresenceEntry),
    /// The origin node's first subscriber of a channel came (or its last left): for
    /// cluster-wide occupancy webhooks (sent only for apps with webhooks).
    Occupancy {
        /// App id.
        app: String,
        /// Channel.
        channel: String,
        /// Occupied (true) or vacated.
        occupied: bool,
    },
    /// Everything the origin node contributes, replacing what others knew of it.
    Snapshot {
        /// Its presence members.
        presence: Vec<PresenceEntry>,
        /// Its occupied channels (apps with webhooks only), as (app id, channel).
        occupied: Vec<(String, String)>,
    },
    /// Asks every node to publish its snapshot (sent by a node that just joined or reconnected).
    Hello,
    /// The origin node is alive.
    Heartbeat,
    /// The origin node is stopping: forget it now.
    Goodbye,
    /// A question for every node; answered with [`Body::Answer`].
    Query {
        /// Question id at the origin.
        id: u64,
        /// Shard of the origin that waits.
        shard: usize,
        /// The question.
        query: RemoteQuery,
    },
    /// One node's answer to a [`Body::Query`].
    Answer {
        /// The asking node.
        to: String,
        /// The asking shard.
        shard: usize,
        /// The question id.
        id: u64,
        /// Counts by channel.
        counts: Vec<RemoteCount>,
    },
    /// Close every connection of this user on every node.
    Terminate {
        /// App id.
        app: String,
        /// User id.
        user_id: String,
    },
    /// The link's own bookkeeping (re-publishing what a node missed); handled by the link,
    /// never handed to a shard.
    Link(LinkControl),
    /// The origin node now has `subscriptions` of a non-presence channel (apps with
    /// subscription counts only): for the cluster-wide `subscription_count` event and webhook.
    /// Ordered, so a receiver keeps the latest.
    SubscriptionCount {
        /// App id.
        app: String,
        /// Channel.
        channel: String,
        /// Subscriptions on the origin node.
        subscriptions: usize,
    },
    /// The origin node's first socket of a user signed in (watchlists: the user is online).
    UserOnline(UserEntry),
    /// The origin node's last signed-in socket of a user is gone.
    UserOffline(UserEntry),
    /// Every user with a signed-in socket on the origin node, replacing what others knew of it
    /// (sent after [`Body::Snapshot`]).
    UserSnapshot {
        /// Its signed-in users.
        users: Vec<UserEntry>,
    },
}

/// One node-level sign-in contribution: the origin node has at least one socket signed in as
/// the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// App id.
    pub app: String,
    /// The signed-in user id.
    pub user_id: String,
}

/// What the links of two nodes say to each other about the sequence of ordered envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkControl {
    /// "Each named node: re-publish your ordered envelopes numbered above the given one."
    Replay {
        /// (node id, last sequence number received in order from it).
        from: Vec<(String, u64)>,
    },
    /// "My ordered envelopes up to `upto` that you have not received are gone": the answer to
    /// a [`LinkControl::Replay`] reaching below what the origin still keeps.
    Lost {
        /// Last sequence number that can no longer be re-published.
        upto: u64,
    },
}

impl Body {
    /// Whether the body is numbered in its node's sequence (delivered in order, without
    /// repeats, re-published when missed). Heartbeats, cross-node queries (answered within
    /// `query_timeout_ms` or never) and the link's own messages are not.
    pub fn is_ordered(&self) -> bool {
        !matches!(
            self,
            Body::Heartbeat | Body::Query { .. } | Body::Answer { .. } | Body::Link(_)
        )
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Origin node id.
    pub node: String,
    /// For an ordered body ([`Body::is_ordered`]), its number in the origin's sequence (from 1);
    /// for the others, the number of the last ordered envelope the origin sent before it, so a
    /// receiver learns of a lost tail. 0: none yet.
    #[serde(default)]
    pub seq: u64,
    /// Content.
    #[serde(flatten)]
    pub body: Body,
}

impl Envelope {
    /// Encodes to JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("envelopes always serialize")
    }

    /// Decodes from JSON; `None` for anything malformed (logged by the caller).
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let envelopes = [
            Envelope {
                node: "n1".into(),
                seq: 4,
                body: Body::Publish {
                    app: "1".into(),
                    channels: vec!["a".into(), "b".into()],
                    event: "e".into(),
                    data: WireData::JsonString(r#""x""#.into()),
                    user_id: Some("u".into()),
                    except: Some("1.2".into()),
                },
            },
            Envelope {
                node: "n2".into(),
                seq: 9,
                body: Body::Heartbeat,
            },
            Envelope {
                node: "n2".into(),
                seq: 9,
                body: Body::Link(LinkControl::Replay {
                    from: vec![("n1".into(), 3)],
                }),
            },
            Envelope {
                node: "n1".into(),
                seq: 5,
                body: Body::SubscriptionCount {
                    app: "1".into(),
                    channel: "c".into(),
                    subscriptions: 2,
                },
            },
            Envelope {
                node: "n3".into(),
                seq: 5,
                body: Body::UserSnapshot {
                    users: vec![UserEntry {
                        app: "1".into(),
                        user_id: "u".into(),
                    }],
                },
            },
            Envelope {
                node: "n3".into(),
                seq: 0,
                body: Body::Answer {
                    to: "n1".into(),
                    shard: 1,
                    id: 7,
                    counts: vec![RemoteCount {
                        channel: "c".into(),
                        subscriptions: 3,
                    }],
                },
            },
        ];
        for envelope in envelopes {
            assert_eq!(
                Envelope::decode(envelope.encode().as_bytes()),
                Some(envelope)
            );
        }
        assert_eq!(Envelope::decode(b"{\"node\":\"x\",\"t\":\"Nope\"}"), None);
        assert_eq!(Envelope::decode(b"garbage"), None);
    }
}
