//! Decoding of client → server messages (PROTOCOL.md §1.4, §2).
//!
//! Parsing borrows from the frame: `data` stays a [`RawValue`] and is never re-encoded unless a
//! client sent an object where a string is relayed. Clients are met leniently: `data` may be an
//! object or a JSON-encoded string for every `pusher:` event.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One decoded client message.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `pusher:ping`: answer with `pusher:pong`.
    Ping,
    /// `pusher:pong`: an answer to our ping (activity only).
    Pong,
    /// `pusher:subscribe`.
    Subscribe(Subscribe<'a>),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// Channel to leave.
        channel: Cow<'a, str>,
    },
    /// `pusher:signin` (user authentication); checked by `auth::signin`.
    Signin(Signin<'a>),
    /// A `client-` event to relay.
    ClientEvent(ClientEvent<'a>),
    /// Any other event name.
    Unknown(Cow<'a, str>),
}

/// The body of `pusher:subscribe`.
#[derive(Debug, PartialEq)]
pub struct Subscribe<'a> {
    /// Channel to join.
    pub channel: Cow<'a, str>,
    /// `"<key>:<hex signature>"`; empty or absent for public channels.
    pub auth: Option<Cow<'a, str>>,
    /// Presence member data.
    pub channel_data: Option<ChannelData<'a>>,
}

/// Presence `channel_data` as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelData<'a> {
    /// A string: a JSON document inside a JSON string, exactly as signed (Pusher's form).
    Signed(Cow<'a, str>),
    /// A JSON object, as workbunny's sample auth route answers (its `push.js` copies the answer
    /// into the subscribe): the raw JSON text as received. What was signed is one of its
    /// encodings (`auth::channel_data`).
    Object(Cow<'a, str>),
}

impl Subscribe<'_> {
    fn into_owned(self) -> Subscribe<'static> {
        let owned = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Subscribe {
            channel: owned(self.channel),
            auth: self.auth.map(owned),
            channel_data: self.channel_data.map(|d| match d {
                ChannelData::Signed(text) => ChannelData::Signed(owned(text)),
                ChannelData::Object(json) => ChannelData::Object(owned(json)),
            }),
        }
    }
}

/// `pusher:subscribe` data as decoded, before `channel_data` is told apart.
#[derive(Deserialize)]
struct SubscribeWire<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default)]
    auth: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel_data: Option<&'a RawValue>,
}

/// The body of `pusher:signin` (PROTOCOL.md §2.9): `{"auth":"<key>:<hex>","user_data":"…"}`.
///
/// `user_data` is kept exactly as sent, because it is what was signed and what
/// `pusher:signin_success` echoes back. A missing member reads as empty, so that a sign-in
/// without `auth` is refused as a bad signature (4009), not as an undecodable message.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Signin<'a> {
    /// `"<key>:<hex HMAC-SHA256 of socket_id::user::user_data>"`.
    #[serde(borrow, default)]
    pub auth: Cow<'a, str>,
    /// The user's JSON document, as a JSON string (`{"id":…,"user_info":…,"watchlist":[…]}`).
    #[serde(borrow, default)]
    pub user_data: Cow<'a, str>,
}

/// A `client-` event as received.
#[derive(Debug)]
pub struct ClientEvent<'a> {
    /// Event name (starts with `client-`).
    pub event: Cow<'a, str>,
    /// Target channel; `None` if the client left it out.
    pub channel: Option<Cow<'a, str>>,
    /// The data, untouched; `None` when absent or `null`.
    pub data: Option<&'a RawValue>,
}

/// Why a message could not be decoded; the text goes back to the client in `pusher:error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChannelOnly<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<ClientMessage<'_>, DecodeError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        DecodeError(format!(
            "Invalid message: expected a JSON object with an \"event\" string ({e})"
        ))
    })?;
    let data = envelope.data.filter(|d| d.get() != "null");
    Ok(match envelope.event.as_ref() {
        "pusher:ping" => ClientMessage::Ping,
        "pusher:pong" => ClientMessage::Pong,
        "pusher:subscribe" => ClientMessage::Subscribe(decode_subscribe(data)?),
        "pusher:unsubscribe" => {
            let body: ChannelOnly<'_> = decode_data(data, "pusher:unsubscribe")?;
            ClientMessage::Unsubscribe {
                channel: body.channel,
            }
        }
        "pusher:signin" => ClientMessage::Signin(decode_data(data, "pusher:signin")?),
        name if name.starts_with(super::names::CLIENT_EVENT_PREFIX) => {
            ClientMessage::ClientEvent(ClientEvent {
                event: envelope.event,
                channel: envelope.channel,
                data,
            })
        }
        _ => ClientMessage::Unknown(envelope.event),
    })
}

/// Decodes the `data` of a `pusher:` event: an object, or a string holding one.
fn decode_data<'a, T: Deserialize<'a>>(
    data: Option<&'a RawValue>,
    event: &str,
) -> Result<T, DecodeError> {
    let bad = |e: serde_json::Error| DecodeError(format!("Invalid data for {event}: {e}"));
    let raw = data.ok_or_else(|| DecodeError(format!("Missing data for {event}")))?;
    if raw.get().starts_with('"') {
        // A JSON-encoded string: decode the string, then its contents. The result cannot borrow
        // from a temporary, so it goes through an owned value.
        let inner: String = serde_json::from_str(raw.get()).map_err(bad)?;
        let value: serde_json::Value = serde_json::from_str(&inner).map_err(bad)?;
        return T::deserialize(value).map_err(bad);
    }
    serde_json::from_str(raw.get()).map_err(bad)
}

/// Decodes the `data` of `pusher:subscribe` (an object, or a string holding one); `channel_data`
/// in it may be a string or an object.
fn decode_subscribe(data: Option<&RawValue>) -> Result<Subscribe<'_>, DecodeError> {
    let raw = data.ok_or_else(|| DecodeError("Missing data for pusher:subscribe".into()))?;
    if raw.get().starts_with('"') {
        let inner: String = serde_json::from_str(raw.get()).map_err(invalid_subscribe)?;
        let wire: SubscribeWire<'_> = serde_json::from_str(&inner).map_err(invalid_subscribe)?;
        return Ok(subscribe_from(wire)?.into_owned());
    }
    subscribe_from(serde_json::from_str(raw.get()).map_err(invalid_subscribe)?)
}

fn subscribe_from(wire: SubscribeWire<'_>) -> Result<Subscribe<'_>, DecodeError> {
    let channel_data = match wire.channel_data.map(RawValue::get) {
        None | Some("null") => None,
        Some(text) if text.starts_with('"') => {
            Some(ChannelData::Signed(signed_channel_data(text)?))
        }
        Some(text) if text.starts_with('{') => Some(ChannelData::Object(Cow::Borrowed(text))),
        Some(_) => {
            return Err(DecodeError(
                "Invalid data for pusher:subscribe: channel_data must be a string or an object"
                    .into(),
            ))
        }
    };
    Ok(Subscribe {
        channel: wire.channel,
        auth: wire.auth,
        channel_data,
    })
}

/// The text of a string `channel_data` (JSON-encoded, as pusher-js sends it). It holds escaped
/// quotes almost always, so it is unescaped into an owned string then; borrowing is tried only
/// without a backslash (a failed borrow would build, and format, a serde error first).
fn signed_channel_data(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    if text.contains('\\') {
        serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(invalid_subscribe)
    } else {
        serde_json::from_str::<&str>(text)
            .map(Cow::Borrowed)
            .map_err(invalid_subscribe)
    }
}

/// The refusal of a `pusher:subscribe` whose data does not decode.
fn invalid_subscribe(e: serde_json::Error) -> DecodeError {
    DecodeError(format!("Invalid data for pusher:subscribe: {e}"))
}

/// Presence member data parsed from `channel_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// The user id as a string (an integer is taken as its decimal text).
    pub user_id: String,
    /// [`Self::user_id`] as a JSON string literal (`"42"` for both `"42"` and `42`): the form
    /// every outbound message uses. One rule for user ids everywhere Warren sends them
    /// (`member_added`, `member_removed`, `ids`, `hash`, client-event `user_id`, webhooks): a
    /// string. pusher-js keys members by string anyway, Echo hands out `user_info` only, the
    /// SDKs' webhook validators do not look at the type, and clients that crash on numeric ids
    /// (pusher-websocket-java #19) are spared (PROTOCOL.md §7.3).
    pub user_id_json: String,
    /// `user_info` as raw JSON, or `None` when absent.
    pub user_info_json: Option<String>,
}

#[derive(Deserialize)]
struct MemberFields<'a> {
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
}

/// Longest presence user id (PROTOCOL.md §7.2).
pub const MAX_USER_ID_LENGTH: usize = 128;

/// Parses presence `channel_data`: a JSON object with a string or integer `user_id` and an
/// optional `user_info`.
pub fn parse_channel_data(channel_data: &str) -> Result<PresenceMember, DecodeError> {
    let parsed: MemberFields<'_> = serde_json::from_str(channel_data)
        .map_err(|e| DecodeError(format!("Invalid channel_data: {e}")))?;
    let raw_id = parsed
        .user_id
        .ok_or_else(|| DecodeError("Invalid channel_data: user_id is required".into()))?;
    let user_id = match serde_json::from_str::<serde_json::Value>(raw_id.get()) {
        Ok(serde_json::Value::String(s)) if !s.is_empty() => s,
        Ok(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => {
            return Err(DecodeError(
                "Invalid channel_data: user_id must be a non-empty string or an integer".into(),
            ))
        }
    };
    if user_id.len() > MAX_USER_ID_LENGTH {
        return Err(DecodeError(format!(
            "Invalid channel_data: user_id longer than {MAX_USER_ID_LENGTH} characters"
        )));
    }
    Ok(PresenceMember {
        user_id_json: serde_json::to_string(&user_id).expect("strings serialize"),
        user_id,
        user_info_json: parsed
            .user_info
            .filter(|i| i.get() != "null")
            .map(|i| i.get().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_subscribe_with_object_or_string_data() {
        let object = r#"{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"k:s"}}"#;
        let string =
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"private-a\",\"auth\":\"k:s\"}"}"#;
        for text in [object, string] {
            match decode(text).unwrap() {
                ClientMessage::Subscribe(s) => {
                    assert_eq!(s.channel, "private-a");
                    assert_eq!(s.auth.as_deref(), Some("k:s"));
                    assert_eq!(s.channel_data, None);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn keeps_channel_data_exactly_as_sent() {
        let text = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":10,  \"user_info\":{\"name\":\"Mr. Channels\"}}"}}"#;
        let ClientMessage::Subscribe(s) = decode(text).unwrap() else {
            panic!()
        };
        assert_eq!(
            s.channel_data,
            Some(ChannelData::Signed(
                r#"{"user_id":10,  "user_info":{"name":"Mr. Channels"}}"#.into()
            ))
        );
    }

    #[test]
    fn string_channel_data_is_borrowed_without_escapes_and_unescaped_with_them() {
        let plain = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"no-escapes"}}"#;
        let ClientMessage::Subscribe(s) = decode(plain).unwrap() else {
            panic!()
        };
        assert!(matches!(
            s.channel_data,
            Some(ChannelData::Signed(Cow::Borrowed("no-escapes")))
        ));
        let escaped = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"a\"b\u00e9"}}"#;
        let ClientMessage::Subscribe(s) = decode(escaped).unwrap() else {
            panic!()
        };
        assert_eq!(
            s.channel_data,
            Some(ChannelData::Signed("a\"b\u{e9}".into()))
        );
        let broken = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"bad \x escape"}}"#;
        assert!(decode(broken).is_err());
    }

    #[test]
    fn decodes_signin_keeping_user_data_exactly() {
        let object = r#"{"event":"pusher:signin","data":{"auth":"k:abc","user_data":"{\"id\":\"42\",  \"watchlist\":[\"7\"]}"}}"#;
        let string = r#"{"event":"pusher:signin","data":"{\"auth\":\"k:abc\",\"user_data\":\"{\\\"id\\\":\\\"42\\\",  \\\"watchlist\\\":[\\\"7\\\"]}\"}"}"#;
        for text in [object, string] {
            let ClientMessage::Signin(signin) = decode(text).unwrap() else {
                panic!("{text}")
            };
            assert_eq!(signin.auth, "k:abc");
            assert_eq!(signin.user_data, r#"{"id":"42",  "watchlist":["7"]}"#);
        }
        let ClientMessage::Signin(missing) =
            decode(r#"{"event":"pusher:signin","data":{"user_data":"{}"}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (missing.auth.as_ref(), missing.user_data.as_ref()),
            ("", "{}")
        );
        for bad in [
            r#"{"event":"pusher:signin"}"#,
            r#"{"event":"pusher:signin","data":"not json"}"#,
            r#"{"event":"pusher:signin","data":5}"#,
            r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":{"id":"1"}}}"#,
            r#"{"event":"pusher:signin","data":{"auth":5,"user_data":"{}"}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_data_may_be_an_object_kept_as_raw_json() {
        let object = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":{"user_id":1,"user_info":{"name":"\u00e9"}}}}"#;
        let string = r#"{"event":"pusher:subscribe","data":"{\"channel\":\"presence-a\",\"auth\":\"k:s\",\"channel_data\":{\"user_id\":1,\"user_info\":{\"name\":\"\\u00e9\"}}}"}"#;
        for text in [object, string] {
            let ClientMessage::Subscribe(s) = decode(text).unwrap() else {
                panic!("{text}")
            };
            assert_eq!(
                s.channel_data,
                Some(ChannelData::Object(
                    r#"{"user_id":1,"user_info":{"name":"\u00e9"}}"#.into()
                )),
                "{text}"
            );
        }
        let number =
            r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","channel_data":5}}"#;
        assert!(decode(number).is_err());
    }

    #[test]
    fn pings_and_client_events() {
        for ping in [
            r#"{"event":"pusher:ping","data":{}}"#,
            r#"{"event":"pusher:ping","data":"{}"}"#,
            r#"{"event":"pusher:ping"}"#,
        ] {
            assert!(matches!(decode(ping).unwrap(), ClientMessage::Ping));
        }
        let ClientMessage::ClientEvent(e) =
            decode(r#"{"event":"client-x","channel":"private-a","data":{"x":1}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.data.unwrap().get(), r#"{"x":1}"#);
        let ClientMessage::ClientEvent(e) =
            decode(r#"{"event":"client-x","channel":"private-a","data":null}"#).unwrap()
        else {
            panic!()
        };
        assert!(e.data.is_none());
    }

    #[test]
    fn rejects_malformed_messages() {
        for bad in [
            "",
            "nope",
            "[]",
            r#"{"channel":"a"}"#,
            r#"{"event":5}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":{"auth":"x"}}"#,
            r#"{"event":"pusher:subscribe","data":"not json"}"#,
            r#"{"event":"pusher:unsubscribe","data":{"channel":7}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(
            matches!(decode(r#"{"event":"hello"}"#).unwrap(), ClientMessage::Unknown(e) if e == "hello")
        );
    }

    #[test]
    fn channel_data_rules() {
        let m = parse_channel_data(r#"{"user_id":10,"user_info":{"name":"A"}}"#).unwrap();
        assert_eq!(m.user_id, "10");
        assert_eq!(m.user_id_json, r#""10""#);
        assert_eq!(m.user_info_json.as_deref(), Some(r#"{"name":"A"}"#));
        let m = parse_channel_data(r#"{"user_id":"u1"}"#).unwrap();
        assert_eq!(m.user_id_json, r#""u1""#);
        let m = parse_channel_data(r#"{"user_id":-7}"#).unwrap();
        assert_eq!(
            (m.user_id.as_str(), m.user_id_json.as_str()),
            ("-7", r#""-7""#)
        );
        let m = parse_channel_data(r#"{"user_id":"a\"b"}"#).unwrap();
        assert_eq!(m.user_id_json, r#""a\"b""#);
        assert_eq!(m.user_info_json, None);
        for bad in [
            "{}",
            r#"{"user_id":""}"#,
            r#"{"user_id":null}"#,
            r#"{"user_id":1.5}"#,
            r#"{"user_id":{}}"#,
            "not json",
        ] {
            assert!(parse_channel_data(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(129));
        assert!(parse_channel_data(&long).is_err());
    }
}
