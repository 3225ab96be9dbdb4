//! The few Pusher protocol 7 messages the harness sends and reads, and channel signing.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use std::borrow::Cow;

/// `pusher:connection_established`.
pub const CONNECTION_ESTABLISHED: &str = "pusher:connection_established";
/// `pusher_internal:subscription_succeeded`.
pub const SUBSCRIPTION_SUCCEEDED: &str = "pusher_internal:subscription_succeeded";
/// `pusher:error`.
pub const ERROR: &str = "pusher:error";
/// `pusher_internal:member_added`.
pub const MEMBER_ADDED: &str = "pusher_internal:member_added";
/// `pusher_internal:member_removed`.
pub const MEMBER_REMOVED: &str = "pusher_internal:member_removed";
/// `pusher:ping`.
pub const PING: &str = "pusher:ping";
/// The text of a `pusher:pong`.
pub const PONG_MESSAGE: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// A server message, borrowing from the frame; `data` is left as raw JSON.
#[derive(Debug, Deserialize)]
pub struct ServerMessage<'a> {
    /// Event name.
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// Channel, for channel events.
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    /// The `data` field as sent: a JSON string for most events, an object for `pusher:error`.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

impl<'a> ServerMessage<'a> {
    /// Parses a text frame's payload.
    pub fn parse(text: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(text)
    }

    /// `data` decoded once if it is a JSON string (the double encoding of §1.4), else as sent.
    pub fn data_text(&self) -> Option<Cow<'a, str>> {
        let raw = self.data?.get();
        if raw.starts_with('"') {
            serde_json::from_str::<Cow<'a, str>>(raw).ok()
        } else {
            Some(Cow::Borrowed(raw))
        }
    }

    /// The socket id inside a `pusher:connection_established`.
    pub fn socket_id(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Established {
            socket_id: String,
        }
        let text = self.data_text()?;
        serde_json::from_str::<Established>(&text)
            .ok()
            .map(|e| e.socket_id)
    }

    /// `code` of a `pusher:error`, if it has a numeric one.
    pub fn error_code(&self) -> Option<u16> {
        #[derive(Deserialize)]
        struct ErrorData {
            code: Option<u16>,
        }
        let text = self.data_text()?;
        serde_json::from_str::<ErrorData>(&text).ok()?.code
    }
}

/// `pusher:subscribe` for `channel`, with `auth` (`""` for public channels).
pub fn subscribe_message(channel: &str, auth: &str) -> String {
    serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel, "auth": auth },
    })
    .to_string()
}

/// `pusher:subscribe` for presence channel `channel`, with `auth` and the exact `channel_data`
/// that was signed.
pub fn presence_subscribe_message(channel: &str, auth: &str, channel_data: &str) -> String {
    serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel, "auth": auth, "channel_data": channel_data },
    })
    .to_string()
}

/// `pusher:unsubscribe` for `channel`.
pub fn unsubscribe_message(channel: &str) -> String {
    serde_json::json!({
        "event": "pusher:unsubscribe",
        "data": { "channel": channel },
    })
    .to_string()
}

/// A client event `event` on `channel` whose `data` is the JSON value `data_json`.
pub fn client_event_message(event: &str, channel: &str, data_json: &str) -> String {
    // `event` and `channel` come from our own command line; escape them anyway.
    format!(
        r#"{{"event":{},"channel":{},"data":{data_json}}}"#,
        serde_json::Value::from(event),
        serde_json::Value::from(channel)
    )
}

/// The `auth` value of a private-channel subscription: `key:hex(HMAC-SHA256(secret,
/// "socket_id:channel"))` (PROTOCOL.md §4).
pub fn private_channel_auth(key: &str, secret: &str, socket_id: &str, channel: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    format!("{key}:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The event that answers a good `pusher:signin`.
pub const SIGNIN_SUCCESS: &str = "pusher:signin_success";

/// A `pusher:signin` message (PROTOCOL.md §2.9).
pub fn signin_message(auth: &str, user_data: &str) -> String {
    serde_json::json!({
        "event": "pusher:signin",
        "data": { "auth": auth, "user_data": user_data },
    })
    .to_string()
}

/// The `auth` value of a user sign-in: `key:hex(HMAC-SHA256(secret,
/// "socket_id::user::user_data"))` (PROTOCOL.md §2.9, §4.2).
pub fn signin_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(socket_id.as_bytes());
    mac.update(b"::user::");
    mac.update(user_data.as_bytes());
    format!("{key}:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The `auth` value of a presence-channel subscription: `key:hex(HMAC-SHA256(secret,
/// "socket_id:channel:channel_data"))` (PROTOCOL.md §4).
pub fn presence_channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    mac.update(b":");
    mac.update(channel_data.as_bytes());
    format!("{key}:{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_documented_user_vector() {
        // PROTOCOL.md §4.2: socket 1234.1234, user_data {"id":"12345"}.
        let auth = signin_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            r#"{"id":"12345"}"#,
        );
        assert_eq!(
            auth,
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn signs_the_documented_test_vector() {
        let auth = private_channel_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "private-foobar",
        );
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn signs_the_documented_presence_vector() {
        let auth = presence_channel_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "presence-foobar",
            r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#,
        );
        assert_eq!(
            auth,
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
        let sub: serde_json::Value =
            serde_json::from_str(&presence_subscribe_message("presence-a", "k:s", "{}")).unwrap();
        assert_eq!(sub["data"]["channel_data"], "{}");
        let unsub: serde_json::Value =
            serde_json::from_str(&unsubscribe_message("presence-a")).unwrap();
        assert_eq!(unsub["event"], "pusher:unsubscribe");
    }

    #[test]
    fn reads_established_and_errors() {
        let text = br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#;
        let msg = ServerMessage::parse(text).unwrap();
        assert_eq!(msg.event, CONNECTION_ESTABLISHED);
        assert_eq!(msg.socket_id().as_deref(), Some("123.456"));
        let text = br#"{"event":"pusher:error","data":{"code":4301,"message":"x"}}"#;
        assert_eq!(ServerMessage::parse(text).unwrap().error_code(), Some(4301));
    }

    #[test]
    fn builds_messages() {
        let sub: serde_json::Value =
            serde_json::from_str(&subscribe_message("private-a", "k:s")).unwrap();
        assert_eq!(sub["data"]["channel"], "private-a");
        let ev: serde_json::Value =
            serde_json::from_str(&client_event_message("client-x", "private-a", r#"{"n":1}"#))
                .unwrap();
        assert_eq!(ev["data"]["n"], 1);
    }
}
