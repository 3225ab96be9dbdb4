//! Encoding of server → client messages with the exact shapes PROTOCOL.md §1.4 and §2 give:
//! `data` is a JSON-encoded string everywhere except in `pusher:error` (an object).
//!
//! An app with `compat = "workbunny"` gets the shapes of workbunny/webman-push-server 3.x in two
//! places, the only ones its `push.js` reads without `JSON.parse`: the
//! `pusher:connection_established` data and a client event's object data are sent as JSON
//! objects. pusher-js (and so Laravel Echo) parses `data` only when it is a string, so it takes
//! both shapes.
//!
//! Each function returns the JSON text of one message; the WebSocket framing is `ws::frame`'s.

use crate::config::Compat;
use crate::protocol::SocketId;

/// Appends `text` as a JSON string literal (quoted and escaped).
pub fn push_json_string(out: &mut String, text: &str) {
    // serde_json's string escaping; writing a &str cannot fail.
    out.push_str(&serde_json::to_string(text).expect("strings always serialize"));
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    out
}

/// `pusher:connection_established` with the socket id and activity timeout (seconds); its
/// `data` is a JSON-encoded string (Pusher) or, for [`Compat::Workbunny`], the object itself.
pub fn connection_established(
    socket_id: SocketId,
    activity_timeout: u64,
    compat: Compat,
) -> String {
    let inner = format!(r#"{{"socket_id":"{socket_id}","activity_timeout":{activity_timeout}}}"#);
    let data = match compat {
        Compat::Pusher => json_string(&inner),
        Compat::Workbunny => inner,
    };
    format!(r#"{{"event":"pusher:connection_established","data":{data}}}"#)
}

/// How a client event's `data` (the raw JSON the client sent) is relayed: a string exactly as
/// sent; anything else as its JSON text inside a string (Pusher) or, for
/// [`Compat::Workbunny`], as it is.
pub fn relayed_client_data(raw_json: &str, compat: Compat) -> EventData<'_> {
    if raw_json.starts_with('"') {
        return EventData::JsonString(raw_json);
    }
    match compat {
        Compat::Pusher => EventData::Text(raw_json),
        Compat::Workbunny => EventData::Json(raw_json),
    }
}

/// `pusher:error` with an object `data`; `code` is `null` for non-fatal protocol errors.
pub fn error(code: Option<u16>, message: &str) -> String {
    let code = code.map_or_else(|| "null".to_string(), |c| c.to_string());
    format!(
        r#"{{"event":"pusher:error","data":{{"code":{code},"message":{}}}}}"#,
        json_string(message)
    )
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub const PONG: &str = r#"{"event":"pusher:pong","data":"{}"}"#;

/// `pusher:ping`, sent after a silence of `activity_timeout` seconds.
pub const PING: &str = r#"{"event":"pusher:ping","data":"{}"}"#;

/// `pusher_internal:subscription_succeeded` for a channel without presence.
pub fn subscription_succeeded(channel: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:subscription_succeeded","channel":{},"data":"{{}}"}}"#,
        json_string(channel)
    )
}

/// `pusher_internal:subscription_succeeded` for a presence channel; `presence_json` is the
/// `{"presence":{...}}` document.
pub fn presence_subscription_succeeded(channel: &str, presence_json: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:subscription_succeeded","channel":{},"data":{}}}"#,
        json_string(channel),
        json_string(presence_json)
    )
}

/// The `{"presence":{"ids":[…],"hash":{…},"count":N}}` document for `members`, given as
/// (user id, `user_info` JSON) pairs of distinct users.
pub fn presence_roster<'a>(members: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut ids = String::from("[");
    let mut hash = String::from("{");
    let mut count = 0usize;
    for (user_id, info) in members {
        if count > 0 {
            ids.push(',');
            hash.push(',');
        }
        push_json_string(&mut ids, user_id);
        push_json_string(&mut hash, user_id);
        hash.push(':');
        hash.push_str(info.unwrap_or("null"));
        count += 1;
    }
    ids.push(']');
    hash.push('}');
    format!(r#"{{"presence":{{"ids":{ids},"hash":{hash},"count":{count}}}}}"#)
}

/// `pusher:subscription_error` (soketi's form, which Laravel Echo's `.error()` listens for;
/// pusher-js passes it to the channel's listeners). `kind` is e.g. `AuthError`.
pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> String {
    format!(
        r#"{{"event":"pusher:subscription_error","channel":{},"data":{{"type":{},"error":{},"status":{status}}}}}"#,
        json_string(channel),
        json_string(kind),
        json_string(message)
    )
}

/// `pusher_internal:member_added`; `user_id_json` is the member's id as a JSON string literal
/// (`PresenceMember::user_id_json`), `user_info_json` its info exactly as received.
pub fn member_added(channel: &str, user_id_json: &str, user_info_json: Option<&str>) -> String {
    let mut inner = format!(r#"{{"user_id":{user_id_json}"#);
    if let Some(info) = user_info_json {
        inner.push_str(r#","user_info":"#);
        inner.push_str(info);
    }
    inner.push('}');
    format!(
        r#"{{"event":"pusher_internal:member_added","channel":{},"data":{}}}"#,
        json_string(channel),
        json_string(&inner)
    )
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id_json: &str) -> String {
    let inner = format!(r#"{{"user_id":{user_id_json}}}"#);
    format!(
        r#"{{"event":"pusher_internal:member_removed","channel":{},"data":{}}}"#,
        json_string(channel),
        json_string(&inner)
    )
}

/// The `data` of a channel event.
#[derive(Debug, Clone, Copy)]
pub enum EventData<'a> {
    /// Text to send as a JSON string (HTTP API `data`, or a client's object re-encoded).
    Text(&'a str),
    /// A JSON string literal already quoted and escaped (a client's string `data`, relayed as is).
    JsonString(&'a str),
    /// Any other JSON value, relayed as is (a client's object `data` under
    /// [`Compat::Workbunny`]).
    Json(&'a str),
    /// No `data` member.
    Absent,
}

/// A channel event: `{"event":…,"channel":…,"data":…[,"user_id":…]}`.
pub fn channel_event(
    event: &str,
    channel: &str,
    data: EventData<'_>,
    user_id: Option<&str>,
) -> String {
    let mut out = String::with_capacity(event.len() + channel.len() + 64);
    out.push_str(r#"{"event":"#);
    push_json_string(&mut out, event);
    out.push_str(r#","channel":"#);
    push_json_string(&mut out, channel);
    match data {
        EventData::Text(text) => {
            out.push_str(r#","data":"#);
            push_json_string(&mut out, text);
        }
        EventData::JsonString(literal) | EventData::Json(literal) => {
            out.push_str(r#","data":"#);
            out.push_str(literal);
        }
        EventData::Absent => {}
    }
    if let Some(user_id) = user_id {
        out.push_str(r#","user_id":"#);
        push_json_string(&mut out, user_id);
    }
    out.push('}');
    out
}

/// `pusher:signin_success`, echoing the signed `user_data` exactly. `data` is the JSON-encoded
/// string `{"user_data":"…"}`, by the §1.4 rule that server `data` is a string; pusher-js decodes
/// a string `data` before reading `data.user_data`, so it accepts this as it accepts the docs'
/// object form (PROTOCOL.md §2.9, UNCONFIRMED which form the hosted service sends).
pub fn signin_success(user_data: &str) -> String {
    let mut inner = String::with_capacity(user_data.len() + 16);
    inner.push_str(r#"{"user_data":"#);
    push_json_string(&mut inner, user_data);
    inner.push('}');
    format!(
        r#"{{"event":"pusher:signin_success","data":{}}}"#,
        json_string(&inner)
    )
}

/// One entry of `pusher_internal:watchlist_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchlistChange {
    /// The users' first socket signed in somewhere in the cluster.
    Online,
    /// The users' last signed-in socket is gone.
    Offline,
}

impl WatchlistChange {
    /// The entry's `name`, which pusher-js emits on `pusher.user.watchlist`.
    pub fn name(self) -> &'static str {
        match self {
            WatchlistChange::Online => "online",
            WatchlistChange::Offline => "offline",
        }
    }
}

/// `pusher_internal:watchlist_events` with
/// `{"events":[{"name":"online"|"offline","user_ids":[…]},…]}` as a JSON-encoded string
/// (PROTOCOL.md §2.9; pusher-js `watchlist.ts` reads `data.events` after decoding). Entries with
/// no user ids are left out; `None` when nothing is left to send.
pub fn watchlist_events<'a>(
    entries: impl IntoIterator<Item = (WatchlistChange, &'a [std::sync::Arc<str>])>,
) -> Option<String> {
    let mut inner = String::from(r#"{"events":["#);
    let mut any = false;
    for (change, ids) in entries.into_iter().filter(|(_, ids)| !ids.is_empty()) {
        if any {
            inner.push(',');
        }
        any = true;
        inner.push_str(r#"{"name":""#);
        inner.push_str(change.name());
        inner.push_str(r#"","user_ids":["#);
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                inner.push(',');
            }
            push_json_string(&mut inner, id);
        }
        inner.push_str("]}");
    }
    inner.push_str("]}");
    any.then(|| {
        format!(
            r#"{{"event":"pusher_internal:watchlist_events","data":{}}}"#,
            json_string(&inner)
        )
    })
}

/// `pusher:cache_miss` for a cache channel with no cached event (PROTOCOL.md §2.8), with
/// `"data":"{}"` as sockudo sends (pusher-js passes it to the channel's `pusher:cache_miss`
/// listeners either way).
pub fn cache_miss(channel: &str) -> String {
    format!(
        r#"{{"event":"pusher:cache_miss","channel":{},"data":"{{}}"}}"#,
        json_string(channel)
    )
}

/// `pusher_internal:subscription_count` with `{"subscription_count":N}` as a JSON-encoded string
/// (PROTOCOL.md §2.9/§1.4; pusher-js `channel.ts` reads `data.subscription_count` after decoding
/// and emits `pusher:subscription_count` on the channel named by `channel`).
pub fn subscription_count(channel: &str, count: usize) -> String {
    format!(
        r#"{{"event":"pusher_internal:subscription_count","channel":{},"data":"{{\"subscription_count\":{count}}}"}}"#,
        json_string(channel)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn connection_established_data_is_a_string() {
        let msg = parse(&connection_established(
            SocketId::parse("123.456").unwrap(),
            120,
            Compat::Pusher,
        ));
        assert_eq!(msg["event"], "pusher:connection_established");
        let data = parse(msg["data"].as_str().unwrap());
        assert_eq!(data["socket_id"], "123.456");
        assert_eq!(data["activity_timeout"], 120);
    }

    #[test]
    fn workbunny_connection_established_data_is_an_object() {
        let socket_id = SocketId::parse("123.456").unwrap();
        let msg = parse(&connection_established(socket_id, 120, Compat::Workbunny));
        assert_eq!(msg["data"]["socket_id"], "123.456");
        assert_eq!(msg["data"]["activity_timeout"], 120);
    }

    #[test]
    fn client_data_is_relayed_in_the_apps_shape() {
        let relay = |raw, compat| {
            parse(&channel_event(
                "client-e",
                "private-c",
                relayed_client_data(raw, compat),
                None,
            ))
        };
        assert_eq!(relay(r#"{"a":1}"#, Compat::Pusher)["data"], r#"{"a":1}"#);
        assert_eq!(relay(r#"{"a":1}"#, Compat::Workbunny)["data"]["a"], 1);
        assert_eq!(relay(r#"[1,2]"#, Compat::Workbunny)["data"][1], 2);
        for compat in [Compat::Pusher, Compat::Workbunny] {
            assert_eq!(relay(r#""hi""#, compat)["data"], "hi");
        }
    }

    #[test]
    fn error_data_is_an_object() {
        let msg = parse(&error(Some(4001), "App key \"x\" not found"));
        assert_eq!(msg["data"]["code"], 4001);
        assert_eq!(msg["data"]["message"], "App key \"x\" not found");
        assert!(parse(&error(None, "m"))["data"]["code"].is_null());
    }

    #[test]
    fn subscription_succeeded_always_has_string_data() {
        let msg = parse(&subscription_succeeded("my-channel"));
        assert_eq!(msg["data"], "{}");
        assert_eq!(msg["channel"], "my-channel");
    }

    #[test]
    fn presence_roster_shape() {
        let roster = presence_roster([("1", Some(r#"{"name":"A"}"#)), ("2", None)].into_iter());
        let msg = parse(&presence_subscription_succeeded("presence-room", &roster));
        let data = parse(msg["data"].as_str().unwrap());
        assert_eq!(data["presence"]["ids"], serde_json::json!(["1", "2"]));
        assert_eq!(data["presence"]["hash"]["1"]["name"], "A");
        assert!(data["presence"]["hash"]["2"].is_null());
        assert_eq!(data["presence"]["count"], 2);
    }

    #[test]
    fn member_events_carry_a_string_user_id_and_use_string_data() {
        let member =
            crate::protocol::inbound::parse_channel_data(r#"{"user_id":42,"user_info":{"n":1}}"#)
                .unwrap();
        let added = parse(&member_added(
            "presence-r",
            &member.user_id_json,
            member.user_info_json.as_deref(),
        ));
        let data = parse(added["data"].as_str().unwrap());
        assert_eq!(data["user_id"], "42");
        assert_eq!(data["user_info"]["n"], 1);
        let removed = parse(&member_removed("presence-r", r#""u1""#));
        assert_eq!(parse(removed["data"].as_str().unwrap())["user_id"], "u1");
    }

    #[test]
    fn channel_event_forms() {
        let e = parse(&channel_event(
            "e",
            "c",
            EventData::Text(r#"{"a":"b"}"#),
            None,
        ));
        assert_eq!(e["data"], r#"{"a":"b"}"#);
        let e = parse(&channel_event(
            "e",
            "c",
            EventData::JsonString(r#""hi\n""#),
            Some("7"),
        ));
        assert_eq!(e["data"], "hi\n");
        assert_eq!(e["user_id"], "7");
        let e = parse(&channel_event("e", "c", EventData::Absent, None));
        assert!(e.get("data").is_none());
    }

    #[test]
    fn signin_success_echoes_user_data_in_a_string() {
        let user_data = r#"{"id":"42","user_info":{"n":"é\"x"}}"#;
        let msg = parse(&signin_success(user_data));
        assert_eq!(msg["event"], "pusher:signin_success");
        let data = parse(msg["data"].as_str().unwrap());
        assert_eq!(data["user_data"], user_data);
    }

    #[test]
    fn watchlist_events_shape() {
        use std::sync::Arc;
        let online: Vec<Arc<str>> = vec!["7".into(), "a\"b".into()];
        let offline: Vec<Arc<str>> = vec!["9".into()];
        let frame = watchlist_events([
            (WatchlistChange::Online, &online[..]),
            (WatchlistChange::Offline, &offline[..]),
        ])
        .unwrap();
        let msg = parse(&frame);
        assert_eq!(msg["event"], "pusher_internal:watchlist_events");
        assert!(msg.get("channel").is_none());
        assert_eq!(
            parse(msg["data"].as_str().unwrap()),
            serde_json::json!({"events":[
                {"name":"online","user_ids":["7","a\"b"]},
                {"name":"offline","user_ids":["9"]}
            ]})
        );
        let only_offline = parse(
            &watchlist_events([
                (WatchlistChange::Online, &[][..]),
                (WatchlistChange::Offline, &offline[..]),
            ])
            .unwrap(),
        );
        assert_eq!(
            parse(only_offline["data"].as_str().unwrap())["events"],
            serde_json::json!([{"name":"offline","user_ids":["9"]}])
        );
        assert_eq!(watchlist_events([(WatchlistChange::Online, &[][..])]), None);
    }

    #[test]
    fn cache_miss_and_subscription_count_shapes() {
        let miss = parse(&cache_miss("cache-x"));
        assert_eq!(miss["event"], "pusher:cache_miss");
        assert_eq!(miss["channel"], "cache-x");
        assert_eq!(miss["data"], "{}");
        let count = parse(&subscription_count("my-channel", 3));
        assert_eq!(count["event"], "pusher_internal:subscription_count");
        assert_eq!(count["channel"], "my-channel");
        assert_eq!(
            parse(count["data"].as_str().unwrap()),
            serde_json::json!({"subscription_count": 3})
        );
    }
}
