//! Signatures: HMAC-SHA256 over the exact strings PROTOCOL.md §4 and §5 define, checked in
//! constant time. Channel auth strings have the form `"<app key>:<lower-hex HMAC>"`; signed HTTP
//! API requests are [`request`]'s; user sign-ins (`socket_id::user::user_data`) are [`signin`]'s.

pub mod channel_data;
pub mod request;
pub mod signin;

use crate::protocol::inbound::Subscribe;
use crate::protocol::names::ChannelKind;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, message: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(message);
    mac
}

/// Lower-hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(mac(secret, message.as_bytes()).finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC of `message`, compared in constant time.
pub fn verify_hex(secret: &str, message: &str, signature_hex: &str) -> bool {
    // Decoded on the stack: a subscription is checked on every private connect, and
    // `hex::decode`'s growing `Vec` was 5 % of a connect's server CPU (perf, 10k connects).
    let mut signature = [0u8; 32];
    if hex::decode_to_slice(signature_hex, &mut signature).is_err() {
        return false;
    }
    mac(secret, message.as_bytes())
        .verify_slice(&signature)
        .is_ok()
}

/// The string signed for a channel subscription: `socket_id:channel[:channel_data]`.
pub fn channel_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    // Built with one allocation of the exact size (`format!` grew it in steps).
    let data_len = channel_data.map_or(0, |d| d.len() + 1);
    let mut signed = String::with_capacity(socket_id.len() + 1 + channel.len() + data_len);
    signed.push_str(socket_id);
    signed.push(':');
    signed.push_str(channel);
    if let Some(data) = channel_data {
        signed.push(':');
        signed.push_str(data);
    }
    signed
}

/// Why a channel auth string was refused; the text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

/// Checks a subscription's `auth` (`"<key>:<hex>"`) for `string_to_sign` against the app's key
/// and secret.
pub fn verify_channel_auth(
    app_key: &str,
    secret: &str,
    string_to_sign: &str,
    auth: &str,
) -> Result<(), AuthError> {
    let Some((key, signature)) = auth.split_once(':') else {
        return Err(AuthError(format!(
            "Invalid auth: expected \"<key>:<signature>\", got {auth:?}"
        )));
    };
    if key != app_key {
        return Err(AuthError(format!(
            "Invalid key in subscription auth data: '{key}'"
        )));
    }
    if !verify_hex(secret, string_to_sign, signature) {
        return Err(AuthError(format!(
            "Invalid signature: Expected HMAC SHA256 hex digest of {string_to_sign}, but got {signature}"
        )));
    }
    Ok(())
}

/// Checks the signature of a private or presence subscription made by `socket_id`; for a
/// presence channel, returns the `channel_data` document that was signed (`channel_data`).
pub fn verify_subscription(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    request: &Subscribe<'_>,
) -> Result<Option<String>, AuthError> {
    let channel = request.channel.as_ref();
    let auth = request.auth.as_deref().unwrap_or("");
    if auth.is_empty() {
        return Err(AuthError(format!("Missing auth for channel {channel}")));
    }
    if ChannelKind::of(channel) == ChannelKind::Presence {
        let channel_data = request.channel_data.as_ref().ok_or_else(|| {
            AuthError(format!(
                "Missing channel_data for presence channel {channel}"
            ))
        })?;
        return channel_data::verify_presence_auth(
            app_key,
            secret,
            socket_id,
            channel,
            channel_data,
            auth,
        )
        .map(Some);
    }
    let signed = channel_string_to_sign(socket_id, channel, None);
    verify_channel_auth(app_key, secret, &signed, auth).map(|()| None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::inbound::ChannelData;

    // Test vectors from PROTOCOL.md §4.2 (key 278d425bdf160c739803, secret 7ad3773142a6692b25b8).
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_vector() {
        let s = channel_string_to_sign("1234.1234", "private-foobar", None);
        assert_eq!(
            sign(SECRET, &s),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth =
            format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert_eq!(verify_channel_auth(KEY, SECRET, &s, &auth), Ok(()));
    }

    #[test]
    fn presence_channel_vector_signs_the_exact_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let s = channel_string_to_sign("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            sign(SECRET, &s),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn user_signin_vector() {
        assert_eq!(
            sign(SECRET, r#"1234.1234::user::{"id":"12345"}"#),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn refusals() {
        let s = channel_string_to_sign("1234.1234", "private-foobar", None);
        let good = sign(SECRET, &s);
        assert!(verify_channel_auth(KEY, SECRET, &s, &format!("other:{good}")).is_err());
        assert!(verify_channel_auth(KEY, SECRET, &s, &good).is_err());
        assert!(verify_channel_auth(KEY, SECRET, &s, &format!("{KEY}:zz")).is_err());
        assert!(verify_channel_auth(KEY, SECRET, &s, &format!("{KEY}:{}", &good[..10])).is_err());
        let other = channel_string_to_sign("1234.1235", "private-foobar", None);
        assert!(verify_channel_auth(KEY, SECRET, &other, &format!("{KEY}:{good}")).is_err());
    }

    #[test]
    fn hex_signatures_must_be_exactly_32_bytes_in_either_case() {
        let s = channel_string_to_sign("1234.1234", "private-foobar", None);
        let good = sign(SECRET, &s);
        assert!(verify_hex(SECRET, &s, &good));
        assert!(verify_hex(SECRET, &s, &good.to_uppercase()));
        assert!(!verify_hex(SECRET, &s, &good[..62]));
        assert!(!verify_hex(SECRET, &s, &format!("{good}00")));
        assert!(!verify_hex(SECRET, &s, &format!("{}g", &good[..63])));
        assert!(!verify_hex(SECRET, &s, ""));
    }

    #[test]
    fn string_to_sign_joins_with_colons() {
        assert_eq!(
            channel_string_to_sign("1.2", "private-a", None),
            "1.2:private-a"
        );
        assert_eq!(
            channel_string_to_sign("1.2", "presence-a", Some("{\"user_id\":1}")),
            "1.2:presence-a:{\"user_id\":1}"
        );
    }

    #[test]
    fn subscriptions_are_checked_by_channel_kind() {
        let subscribe =
            |channel: &'static str, auth: Option<String>, data: Option<&'static str>| Subscribe {
                channel: channel.into(),
                auth: auth.map(Into::into),
                channel_data: data.map(|d| ChannelData::Signed(d.into())),
            };
        let private = channel_string_to_sign("1234.1234", "private-foobar", None);
        let good = format!("{KEY}:{}", sign(SECRET, &private));
        let request = subscribe("private-foobar", Some(good), None);
        assert_eq!(
            verify_subscription(KEY, SECRET, "1234.1234", &request),
            Ok(None)
        );
        let missing = subscribe("private-foobar", None, None);
        assert!(verify_subscription(KEY, SECRET, "1234.1234", &missing)
            .unwrap_err()
            .0
            .contains("Missing auth"));
        let data = r#"{"user_id":10}"#;
        let presence = channel_string_to_sign("1234.1234", "presence-foobar", Some(data));
        let auth = format!("{KEY}:{}", sign(SECRET, &presence));
        let no_data = subscribe("presence-foobar", Some(auth.clone()), None);
        assert!(verify_subscription(KEY, SECRET, "1234.1234", &no_data)
            .unwrap_err()
            .0
            .contains("Missing channel_data"));
        let request = subscribe("presence-foobar", Some(auth), Some(data));
        assert_eq!(
            verify_subscription(KEY, SECRET, "1234.1234", &request),
            Ok(Some(data.to_string()))
        );
    }
}
