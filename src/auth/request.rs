//! Signed HTTP API requests (PROTOCOL.md §5.1): the string to sign is
//! `METHOD\nPATH\nSORTED_PARAMS`, where SORTED_PARAMS are every query parameter but
//! `auth_signature`, keys lower-cased, sorted, joined as `k=v` with `&`, values unescaped.
//! Checks run in the order of Pusher's own `signature` gem, whose error strings the SDKs surface.

use md5::{Digest, Md5};
use std::fmt;

/// The window within which `auth_timestamp` must lie, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// Why a request's signature was refused (answered with 401 and this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAuthError {
    /// No `auth_key` parameter.
    MissingKey,
    /// `auth_key` is not the key of the app in the path.
    UnknownKey,
    /// No `auth_version`.
    VersionRequired,
    /// `auth_version` other than 1.0.
    VersionNotSupported,
    /// No (or a non-numeric) `auth_timestamp`.
    TimestampRequired,
    /// `auth_timestamp` outside the window.
    TimestampExpired {
        /// The timestamp sent.
        given: u64,
        /// The server's clock.
        now: u64,
    },
    /// `body_md5` missing for a body, or not the MD5 of the body.
    BodyMd5Mismatch,
    /// No `auth_signature`.
    SignatureRequired,
    /// The HMAC does not match.
    InvalidSignature {
        /// What should have been signed.
        string_to_sign: String,
        /// What was sent.
        given: String,
    },
}

impl fmt::Display for RequestAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestAuthError::MissingKey => f.write_str("Missing parameter: auth_key"),
            RequestAuthError::UnknownKey => f.write_str("Unknown auth_key"),
            RequestAuthError::VersionRequired => f.write_str("Version required"),
            RequestAuthError::VersionNotSupported => f.write_str("Version not supported"),
            RequestAuthError::TimestampRequired => f.write_str("Timestamp required"),
            RequestAuthError::TimestampExpired { given, now } => write!(
                f,
                "Timestamp expired: Given timestamp ({given}) not within {TIMESTAMP_WINDOW_SECS}s of server time ({now})"
            ),
            RequestAuthError::BodyMd5Mismatch => f.write_str("Invalid body_md5: it must be the lower-hex MD5 of the request body"),
            RequestAuthError::SignatureRequired => f.write_str("Missing parameter: auth_signature"),
            RequestAuthError::InvalidSignature { string_to_sign, given } => write!(
                f,
                "Invalid signature: you should have sent HmacSHA256Hex({string_to_sign:?}, your_secret_key), but you sent \"{given}\""
            ),
        }
    }
}

/// One HTTP API request as far as signing is concerned.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path as the SDK built it (no query).
    pub path: &'a str,
    /// Decoded query parameters, in any order.
    pub params: &'a [(String, String)],
    /// Raw body bytes.
    pub body: &'a [u8],
}

/// Lower-hex MD5 of `body`.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// The canonical string the signature covers.
pub fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let sorted: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        sorted.join("&")
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Verifies a request against the app's key and secret at server time `now` (Unix seconds).
pub fn verify(
    request: &SignedRequest<'_>,
    app_key: &str,
    secret: &str,
    now: u64,
) -> Result<(), RequestAuthError> {
    let params = request.params;
    let key = param(params, "auth_key").ok_or(RequestAuthError::MissingKey)?;
    if key != app_key {
        return Err(RequestAuthError::UnknownKey);
    }
    match param(params, "auth_version") {
        None => return Err(RequestAuthError::VersionRequired),
        Some("1.0") => {}
        Some(_) => return Err(RequestAuthError::VersionNotSupported),
    }
    let given: u64 = param(params, "auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or(RequestAuthError::TimestampRequired)?;
    if given.abs_diff(now) >= TIMESTAMP_WINDOW_SECS {
        return Err(RequestAuthError::TimestampExpired { given, now });
    }
    // pusher-http-python sends body_md5 on GET too (the MD5 of the empty body): verify whatever
    // is sent, and require it whenever there is a body.
    match param(params, "body_md5") {
        Some(md5) if md5 != body_md5(request.body) => {
            return Err(RequestAuthError::BodyMd5Mismatch)
        }
        None if !request.body.is_empty() => return Err(RequestAuthError::BodyMd5Mismatch),
        _ => {}
    }
    let signature = param(params, "auth_signature").ok_or(RequestAuthError::SignatureRequired)?;
    let string_to_sign = string_to_sign(request.method, request.path, params);
    if !super::verify_hex(secret, &string_to_sign, signature) {
        return Err(RequestAuthError::InvalidSignature {
            string_to_sign,
            given: signature.to_string(),
        });
    }
    Ok(())
}

/// Builds the signed query string for a request, as the server SDKs do (for tests and the load
/// harness). `extra` holds the request's own parameters, already unescaped.
pub fn signed_query(
    method: &str,
    path: &str,
    key: &str,
    secret: &str,
    timestamp: u64,
    body: &[u8],
    extra: &[(&str, &str)],
) -> String {
    let mut params: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params.push(("auth_key".into(), key.into()));
    params.push(("auth_timestamp".into(), timestamp.to_string()));
    params.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        params.push(("body_md5".into(), body_md5(body)));
    }
    let signature = super::sign(secret, &string_to_sign(method, path, &params));
    params.push(("auth_signature".into(), signature));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    fn docs_params() -> Vec<(String, String)> {
        [
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            (
                "auth_signature",
                "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn request<'a>(params: &'a [(String, String)], body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/apps/3/events",
            params,
            body,
        }
    }

    #[test]
    fn the_docs_worked_example_verifies() {
        assert_eq!(
            body_md5(BODY.as_bytes()),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        let params = docs_params();
        assert_eq!(
            string_to_sign("POST", "/apps/3/events", &params),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            verify(
                &request(&params, BODY.as_bytes()),
                KEY,
                SECRET,
                1353088179 + 599
            ),
            Ok(())
        );
    }

    #[test]
    fn each_check_has_its_error() {
        let body = BODY.as_bytes();
        let with = |name: &str, value: Option<&str>| {
            let mut params: Vec<(String, String)> = docs_params()
                .into_iter()
                .filter(|(k, _)| k != name)
                .collect();
            if let Some(v) = value {
                params.push((name.to_string(), v.to_string()));
            }
            params
        };
        let now = 1353088179;
        let cases = [
            (with("auth_key", None), RequestAuthError::MissingKey),
            (
                with("auth_key", Some("other")),
                RequestAuthError::UnknownKey,
            ),
            (
                with("auth_version", None),
                RequestAuthError::VersionRequired,
            ),
            (
                with("auth_version", Some("2.0")),
                RequestAuthError::VersionNotSupported,
            ),
            (
                with("auth_timestamp", Some("soon")),
                RequestAuthError::TimestampRequired,
            ),
            (
                with("body_md5", Some("00")),
                RequestAuthError::BodyMd5Mismatch,
            ),
            (with("body_md5", None), RequestAuthError::BodyMd5Mismatch),
            (
                with("auth_signature", None),
                RequestAuthError::SignatureRequired,
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(
                verify(&request(&params, body), KEY, SECRET, now),
                Err(expected)
            );
        }
        let params = docs_params();
        assert!(matches!(
            verify(&request(&params, body), KEY, SECRET, now + 600),
            Err(RequestAuthError::TimestampExpired { .. })
        ));
        assert!(matches!(
            verify(&request(&params, b"{}"), KEY, SECRET, now),
            Err(RequestAuthError::BodyMd5Mismatch)
        ));
        let tampered = with("auth_signature", Some(&"0".repeat(64)));
        assert!(matches!(
            verify(&request(&tampered, body), KEY, SECRET, now),
            Err(RequestAuthError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn get_with_the_empty_body_md5_verifies() {
        let query = signed_query(
            "GET",
            "/apps/3/channels",
            KEY,
            SECRET,
            100,
            b"",
            &[
                ("body_md5", "d41d8cd98f00b204e9800998ecf8427e"),
                ("filter_by_prefix", "presence-"),
            ],
        );
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = SignedRequest {
            method: "GET",
            path: "/apps/3/channels",
            params: &params,
            body: b"",
        };
        assert_eq!(verify(&get, KEY, SECRET, 100), Ok(()));
    }

    mod canonicalisation {
        use super::super::*;
        use proptest::prelude::*;

        fn params_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
            proptest::collection::vec(("[a-zA-Z_]{1,8}", "[ -~]{0,12}"), 0..8)
        }

        proptest! {
            #[test]
            fn order_and_key_case_do_not_matter(params in params_strategy(), seed in any::<u64>()) {
                let mut shuffled = params.clone();
                let n = shuffled.len();
                if n > 1 {
                    shuffled.rotate_left((seed as usize) % n);
                }
                let upper: Vec<(String, String)> = shuffled.iter().map(|(k, v)| (k.to_ascii_uppercase(), v.clone())).collect();
                let canonical = string_to_sign("post", "/apps/1/events", &params);
                prop_assert_eq!(&canonical, &string_to_sign("POST", "/apps/1/events", &upper));
            }

            #[test]
            fn auth_signature_is_never_signed(params in params_strategy(), signature in "[0-9a-f]{64}") {
                let mut with_signature = params.clone();
                with_signature.push(("auth_signature".to_string(), signature));
                prop_assert_eq!(string_to_sign("GET", "/p", &params), string_to_sign("GET", "/p", &with_signature));
            }

            #[test]
            fn signed_query_round_trips(values in proptest::collection::vec("[ -~]{0,16}", 0..4), body in proptest::collection::vec(any::<u8>(), 0..64)) {
                let extra: Vec<(String, &str)> = values.iter().enumerate().map(|(i, v)| (format!("p{i}"), v.as_str())).collect();
                let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let query = signed_query("POST", "/apps/1/events", "k", "s", 1000, &body, &extra);
                let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                let request = SignedRequest { method: "POST", path: "/apps/1/events", params: &params, body: &body };
                prop_assert_eq!(verify(&request, "k", "s", 1000), Ok(()));
            }
        }
    }
}
