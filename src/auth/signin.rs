//! Verifying a `pusher:signin` (PROTOCOL.md §2.9, §4.2): `auth` must be
//! `"<app key>:<lower-hex HMAC-SHA256(secret, "<socket_id>::user::<user_data>")>"`, compared in
//! constant time; a good signature's `user_data` is then parsed by `protocol::signin`.
//!
//! The shard calls [`sign_in`] when a `pusher:signin` arrives; on `Ok` it registers the user
//! (`users::local::LocalUsers::sign_in`, then the user's home shard) and answers
//! `outbound::signin_success(&signin.user_data)`, then the watchlist warning if any; on `Err`
//! it sends `error.error_frame()` and changes nothing.

use crate::protocol::inbound::Signin;
use crate::protocol::signin::{check_not_signed_in, parse_user_data, SignedInUser, SigninError};
use std::sync::Arc;

/// The whole check of a `pusher:signin` on a socket currently signed in as `current` (if at
/// all): one sign-in per connection, then the signature, then `user_data`.
pub fn sign_in(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    current: Option<&Arc<str>>,
    signin: &Signin<'_>,
) -> Result<SignedInUser, SigninError> {
    check_not_signed_in(current)?;
    verify_signin(app_key, secret, socket_id, signin)
}

/// The string a sign-in signs: `socket_id::user::user_data`.
pub fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Checks the signature of `signin` for `socket_id` under the app's key and secret, then parses
/// its `user_data`. Nothing about the socket changes here; the caller registers the user.
pub fn verify_signin(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    signin: &Signin<'_>,
) -> Result<SignedInUser, SigninError> {
    let to_sign = user_string_to_sign(socket_id, &signin.user_data);
    super::verify_channel_auth(app_key, secret, &to_sign, &signin.auth)
        .map_err(|error| SigninError::BadSignature(error.0))?;
    parse_user_data(&signin.user_data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign;
    use std::borrow::Cow;

    // PROTOCOL.md §4.2's vector: key 278d425bdf160c739803, secret 7ad3773142a6692b25b8.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const USER_DATA: &str = r#"{"id":"12345"}"#;
    const VECTOR: &str = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";

    fn signin<'a>(auth: &'a str, user_data: &'a str) -> Signin<'a> {
        Signin {
            auth: Cow::Borrowed(auth),
            user_data: Cow::Borrowed(user_data),
        }
    }

    #[test]
    fn accepts_the_documented_vector() {
        assert_eq!(
            sign(SECRET, &user_string_to_sign("1234.1234", USER_DATA)),
            VECTOR
        );
        let auth = format!("{KEY}:{VECTOR}");
        let user = verify_signin(KEY, SECRET, "1234.1234", &signin(&auth, USER_DATA)).unwrap();
        assert_eq!(&*user.id, "12345");
    }

    #[test]
    fn refuses_bad_or_missing_signatures() {
        let good = format!("{KEY}:{VECTOR}");
        let cases = [
            ("", USER_DATA, "1234.1234"),
            (VECTOR, USER_DATA, "1234.1234"),
            (&format!("other:{VECTOR}"), USER_DATA, "1234.1234"),
            (&format!("{KEY}:zz"), USER_DATA, "1234.1234"),
            (&format!("{KEY}:{}", &VECTOR[..32]), USER_DATA, "1234.1234"),
            (good.as_str(), USER_DATA, "1234.1235"),
            (good.as_str(), r#"{"id":"12346"}"#, "1234.1234"),
            (good.as_str(), r#"{"id":"12345" }"#, "1234.1234"),
        ];
        for (auth, user_data, socket) in cases {
            assert!(
                matches!(
                    verify_signin(KEY, SECRET, socket, &signin(auth, user_data)),
                    Err(SigninError::BadSignature(_))
                ),
                "{auth} {user_data} {socket}"
            );
        }
    }

    #[test]
    fn sign_in_refuses_a_second_sign_in_before_looking_at_the_signature() {
        let auth = format!("{KEY}:{VECTOR}");
        let request = signin(&auth, USER_DATA);
        let user = sign_in(KEY, SECRET, "1234.1234", None, &request).unwrap();
        assert_eq!(
            sign_in(KEY, SECRET, "1234.1234", Some(&user.id), &request),
            Err(SigninError::AlreadySignedIn {
                current: user.id.clone()
            })
        );
        assert!(matches!(
            sign_in(KEY, SECRET, "1234.1234", None, &signin("", USER_DATA)),
            Err(SigninError::BadSignature(_))
        ));
    }

    #[test]
    fn a_good_signature_over_bad_user_data_is_still_refused() {
        let user_data = r#"{"name":"no id"}"#;
        let auth = format!(
            "{KEY}:{}",
            sign(SECRET, &user_string_to_sign("1.2", user_data))
        );
        assert!(matches!(
            verify_signin(KEY, SECRET, "1.2", &signin(&auth, user_data)),
            Err(SigninError::InvalidUserId(_))
        ));
    }
}
