//! Verifying a `pusher:signin` (PROTOCOL.md §2.9, §4.2): `auth` must be
//! `"<app key>:<lower-hex HMAC-SHA256(secret, "<socket_id>::user::<user_data>")>"`, compared in
//! constant time; a good signature's `user_data` is then parsed by `protocol::signin`.
//!
//! The shard calls [`verify_signin`] when a `pusher:signin` arrives on a socket that is not yet
//! signed in (`protocol::signin::check_not_signed_in` first).

use crate::protocol::inbound::Signin;
use crate::protocol::signin::{parse_user_data, SignedInUser, SigninError};

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
