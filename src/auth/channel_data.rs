//! Presence `channel_data` given as a JSON object rather than as the signed string.
//!
//! workbunny/webman-push-server's sample auth route answers `{"auth": …, "channel_data": {…}}`
//! and its `push.js` copies that answer into `pusher:subscribe`, so the object arrives as the
//! browser's `JSON.stringify` wrote it, while the route signed PHP's `json_encode` of it. The
//! object is accepted when the signature covers one of the strings a PHP route produces from it:
//! `json_encode` with its default flags (`/` escaped as `\/`, non-ASCII as `\uXXXX`), with
//! `JSON_UNESCAPED_UNICODE`, with `JSON_UNESCAPED_SLASHES`, with both, or compact JSON as any
//! other language writes it. Keys keep the order they arrived in; numbers keep their text.
//! Anything else is refused with the usual `AuthError`.

use super::{channel_string_to_sign, verify_channel_auth, AuthError};
use crate::protocol::inbound::ChannelData;

/// How the contents of JSON strings are escaped in one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Escaping {
    /// `/` as `\/` (PHP's default).
    slashes: bool,
    /// Every non-ASCII character as `\uXXXX` (PHP's default; UTF-16 pairs beyond U+FFFF).
    unicode: bool,
    /// U+2028 and U+2029 as `\u2028`, `\u2029` (PHP without `JSON_UNESCAPED_LINE_TERMINATORS`).
    line_terminators: bool,
}

/// The encodings tried, most likely first: PHP's default, `JSON_UNESCAPED_UNICODE`,
/// `JSON_UNESCAPED_SLASHES`, both flags, and compact JSON (`JSON.stringify`, serde_json).
const ENCODINGS: [Escaping; 5] = [
    Escaping {
        slashes: true,
        unicode: true,
        line_terminators: true,
    },
    Escaping {
        slashes: true,
        unicode: false,
        line_terminators: true,
    },
    Escaping {
        slashes: false,
        unicode: true,
        line_terminators: true,
    },
    Escaping {
        slashes: false,
        unicode: false,
        line_terminators: true,
    },
    Escaping {
        slashes: false,
        unicode: false,
        line_terminators: false,
    },
];

/// The strings an auth route may have signed for the JSON object `object_json`, without
/// duplicates: the text as received, then the encodings above. `None` when it is not valid JSON.
pub fn signed_candidates(object_json: &str) -> Option<Vec<String>> {
    let mut candidates = vec![object_json.to_string()];
    for escaping in ENCODINGS {
        let encoded = reencode(object_json, escaping)?;
        if !candidates.contains(&encoded) {
            candidates.push(encoded);
        }
    }
    Some(candidates)
}

/// Checks a presence subscription's `auth` for `channel_data`; returns the `channel_data`
/// document that was signed (for an object, the encoding that matched).
pub fn verify_presence_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: &ChannelData<'_>,
    auth: &str,
) -> Result<String, AuthError> {
    let object = match channel_data {
        ChannelData::Signed(text) => {
            let signed = channel_string_to_sign(socket_id, channel, Some(text));
            return verify_channel_auth(app_key, secret, &signed, auth).map(|()| text.to_string());
        }
        ChannelData::Object(json) => json,
    };
    let candidates = signed_candidates(object)
        .ok_or_else(|| AuthError("Invalid channel_data: not valid JSON".into()))?;
    let mut first_error = None;
    for candidate in candidates {
        let signed = channel_string_to_sign(socket_id, channel, Some(&candidate));
        match verify_channel_auth(app_key, secret, &signed, auth) {
            Ok(()) => return Ok(candidate),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let error = first_error.expect("there is always at least one candidate");
    Err(AuthError(format!(
        "{} (channel_data was a JSON object: none of its PHP json_encode or compact JSON \
         encodings matches the signature)",
        error.0
    )))
}

/// `json` without insignificant whitespace and with every string re-escaped as `escaping` says.
/// String tokens are decoded by serde_json; everything else is copied as it is.
fn reencode(json: &str, escaping: Escaping) -> Option<String> {
    let mut out = String::with_capacity(json.len() + 16);
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        match c {
            '"' => {
                let end = string_token_len(rest)?;
                let text: String = serde_json::from_str(&rest[..end]).ok()?;
                push_escaped(&mut out, &text, escaping);
                rest = &rest[end..];
            }
            ' ' | '\t' | '\n' | '\r' => rest = &rest[1..],
            other => {
                out.push(other);
                rest = &rest[other.len_utf8()..];
            }
        }
    }
    Some(out)
}

/// The length in bytes of the JSON string token at the start of `text` (quotes included).
fn string_token_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Appends `text` as a quoted JSON string, escaped as PHP's `json_encode` does with `escaping`.
fn push_escaped(out: &mut String, text: &str, escaping: Escaping) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escaping.slashes => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' if escaping.line_terminators => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if !c.is_ascii() && escaping.unicode => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign;

    const KEY: &str = "app-key";
    const SECRET: &str = "app-secret";

    fn auth_for(channel_data: &str) -> String {
        let signed = channel_string_to_sign("1.2", "presence-room", Some(channel_data));
        format!("{KEY}:{}", sign(SECRET, &signed))
    }

    fn verify(object: &str, auth: &str) -> Result<String, AuthError> {
        let data = ChannelData::Object(object.into());
        verify_presence_auth(KEY, SECRET, "1.2", "presence-room", &data, auth)
    }

    // What the browser sends for a PHP array ['user_id' => 7, 'user_info' => ['name' => 'Zoë 🐇',
    // 'avatar' => 'https://x.test/a.png']] after JSON.parse and JSON.stringify.
    const AS_SENT: &str =
        r#"{"user_id":7,"user_info":{"name":"Zoë 🐇","avatar":"https://x.test/a.png"}}"#;

    #[test]
    fn php_default_escapes_slashes_and_non_ascii_as_utf16() {
        let php = reencode(AS_SENT, ENCODINGS[0]).unwrap();
        assert_eq!(
            php,
            r#"{"user_id":7,"user_info":{"name":"Zo\u00eb \ud83d\udc07","avatar":"https:\/\/x.test\/a.png"}}"#
        );
        // PHP's json_encode writes lower-case hex and UTF-16 surrogate pairs beyond U+FFFF.
        let unescaped_unicode = reencode(AS_SENT, ENCODINGS[1]).unwrap();
        assert_eq!(
            unescaped_unicode,
            r#"{"user_id":7,"user_info":{"name":"Zoë 🐇","avatar":"https:\/\/x.test\/a.png"}}"#
        );
        let unescaped_slashes = reencode(AS_SENT, ENCODINGS[2]).unwrap();
        assert_eq!(
            unescaped_slashes,
            r#"{"user_id":7,"user_info":{"name":"Zo\u00eb \ud83d\udc07","avatar":"https://x.test/a.png"}}"#
        );
    }

    #[test]
    fn whitespace_control_characters_and_line_terminators() {
        let text = "{ \"a\" : \"x\\u0001\\n\\u2028\\\"\\\\\" , \"b\" : [1, 2.50, true, null] }";
        assert_eq!(
            reencode(text, ENCODINGS[3]).unwrap(),
            "{\"a\":\"x\\u0001\\n\\u2028\\\"\\\\\",\"b\":[1,2.50,true,null]}"
        );
        assert_eq!(
            reencode(text, ENCODINGS[4]).unwrap(),
            "{\"a\":\"x\\u0001\\n\u{2028}\\\"\\\\\",\"b\":[1,2.50,true,null]}"
        );
        assert!(reencode(r#"{"a":"unterminated}"#, ENCODINGS[0]).is_none());
    }

    #[test]
    fn ascii_without_slashes_has_a_single_candidate() {
        let plain = r#"{"user_id":"u1","user_info":{"name":"Ann"}}"#;
        assert_eq!(signed_candidates(plain).unwrap(), vec![plain.to_string()]);
        // As sent (= compact JSON = both PHP flags here), and the three PHP encodings that escape.
        assert_eq!(signed_candidates(AS_SENT).unwrap().len(), 4);
    }

    #[test]
    fn an_object_verifies_against_each_php_encoding() {
        for escaping in ENCODINGS {
            let signed = reencode(AS_SENT, escaping).unwrap();
            assert_eq!(verify(AS_SENT, &auth_for(&signed)), Ok(signed));
        }
    }

    #[test]
    fn an_object_signed_over_something_else_is_refused() {
        let other =
            r#"{"user_id":8,"user_info":{"name":"Zoë 🐇","avatar":"https://x.test/a.png"}}"#;
        let error = verify(AS_SENT, &auth_for(other)).unwrap_err();
        assert!(error.0.contains("Invalid signature"), "{}", error.0);
        assert!(error.0.contains("JSON object"), "{}", error.0);
        // Key order is part of what was signed.
        let reordered =
            r#"{"user_info":{"name":"Zoë 🐇","avatar":"https://x.test/a.png"},"user_id":7}"#;
        assert!(verify(AS_SENT, &auth_for(reordered)).is_err());
        let wrong_key = format!("other:{}", auth_for(AS_SENT).split_once(':').unwrap().1);
        assert!(verify(AS_SENT, &wrong_key)
            .unwrap_err()
            .0
            .contains("Invalid key"));
    }

    #[test]
    fn a_string_is_verified_exactly_as_sent() {
        let text = r#"{"user_id":7}"#;
        let data = ChannelData::Signed(text.into());
        let ok = verify_presence_auth(KEY, SECRET, "1.2", "presence-room", &data, &auth_for(text));
        assert_eq!(ok, Ok(text.to_string()));
        let spaced = ChannelData::Signed(r#"{"user_id": 7}"#.into());
        assert!(verify_presence_auth(
            KEY,
            SECRET,
            "1.2",
            "presence-room",
            &spaced,
            &auth_for(text)
        )
        .is_err());
    }
}
