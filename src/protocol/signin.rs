//! User sign-in (PROTOCOL.md §2.9): the `user_data` document a `pusher:signin` carries, the
//! refusals a sign-in can meet, and the `pusher:error` each refusal is answered with.
//!
//! The signature check lives in `auth::signin`, which calls [`parse_user_data`] once the
//! signature is good. Every refusal leaves the socket open and unchanged (it is simply not signed
//! in), except [`SigninError::Timeout`], which the authorized-connections option closes with.

use super::names;
use super::outbound;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Most user ids one watchlist may hold, as on the hosted service (PROTOCOL.md §2.9). Ids beyond
/// it are dropped, the sign-in still succeeds, and a `pusher:error` 4302 names the ids kept.
pub const MAX_WATCHLIST_SIZE: usize = 100;

/// Longest signed-in user id, in bytes. 128 is the presence user-id limit (PROTOCOL.md §7.2),
/// which keeps `#server-to-user-{id}` (16 + 128 bytes) within both channel-name limits in use
/// (164 and 200, §3.2), so the per-user channel pusher-js subscribes to is always valid.
pub const MAX_SIGNIN_USER_ID_LENGTH: usize = 128;

/// `pusher:error` code for a watchlist over [`MAX_WATCHLIST_SIZE`] (PROTOCOL.md §2.10).
pub const WATCHLIST_LIMIT_EXCEEDED: u16 = 4302;

/// A verified sign-in: what the shard keeps for the socket and the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInUser {
    /// The user id (a non-empty string); shared by every structure that names the user.
    pub id: Arc<str>,
    /// Distinct watched user ids, in the order given, at most [`MAX_WATCHLIST_SIZE`]; the user's
    /// own id is left out.
    pub watchlist: Box<[Arc<str>]>,
    /// Set when the watchlist was cut to the limit.
    pub watchlist_over_limit: Option<WatchlistOverLimit>,
}

/// A watchlist longer than [`MAX_WATCHLIST_SIZE`]: not a refusal, a warning sent after
/// `pusher:signin_success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchlistOverLimit {
    /// Distinct ids given.
    pub given: usize,
}

impl WatchlistOverLimit {
    /// `pusher:error` 4302 naming the ids that were kept (`accepted`, the user's watchlist).
    pub fn error_frame(&self, accepted: &[Arc<str>]) -> String {
        let kept: Vec<&str> = accepted.iter().map(|id| &**id).collect();
        outbound::error(
            Some(WATCHLIST_LIMIT_EXCEEDED),
            &format!(
                "Watchlist limit exceeded: {} user ids given, at most {MAX_WATCHLIST_SIZE} are watched: {}",
                self.given,
                serde_json::to_string(&kept).expect("strings serialize")
            ),
        )
    }
}

/// Why a `pusher:signin` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigninError {
    /// `auth` is missing, not `"<key>:<hex>"`, names another app's key, or does not sign
    /// `socket_id::user::user_data`.
    BadSignature(String),
    /// `user_data` is not a JSON object, or `watchlist` is not an array of user ids.
    MalformedUserData(String),
    /// `id` is missing, not a string, empty, too long, or has characters outside `A-Za-z0-9_-=@,.;`.
    InvalidUserId(String),
    /// The socket is already signed in (as `current`); one sign-in per connection.
    AlreadySignedIn {
        /// The user the socket is signed in as.
        current: Arc<str>,
    },
    /// The app requires sign-in (or a private/presence subscription) within its timeout and the
    /// socket did neither; the socket is closed.
    Timeout,
}

impl SigninError {
    /// The `pusher:error` code: 4009 (unauthorized) for every refusal, as soketi and sockudo
    /// send; PROTOCOL.md §2.9 leaves the hosted code UNCONFIRMED.
    pub fn code(&self) -> u16 {
        super::codes::UNAUTHORIZED
    }

    /// Whether the socket is closed (with [`Self::code`]) after the error. Only the timeout
    /// closes: a failed sign-in leaves a working, not-signed-in socket (issue 11: "the socket
    /// otherwise unharmed"); closing with 4009 would stop pusher-js from ever reconnecting.
    pub fn closes(&self) -> bool {
        matches!(self, SigninError::Timeout)
    }

    /// The sentence sent to the client.
    pub fn message(&self) -> String {
        match self {
            SigninError::BadSignature(why) => format!("Sign-in refused: {why}"),
            SigninError::MalformedUserData(why) => {
                format!("Sign-in refused: invalid user_data: {why}")
            }
            SigninError::InvalidUserId(why) => format!("Sign-in refused: invalid user id: {why}"),
            SigninError::AlreadySignedIn { current } => format!(
                "Sign-in refused: this connection is already signed in as {:?}",
                &**current
            ),
            SigninError::Timeout => "Connection not authorized within timeout.".to_string(),
        }
    }

    /// The `pusher:error` frame that answers the refusal.
    pub fn error_frame(&self) -> String {
        outbound::error(Some(self.code()), &self.message())
    }
}

#[derive(Deserialize)]
struct UserDataDoc<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    watchlist: Option<&'a RawValue>,
}

/// Parses a signed `user_data`: a JSON object with a string `id`, an optional `user_info` (any
/// JSON, not kept: `pusher:signin_success` echoes the whole `user_data`) and an optional
/// `watchlist` of user ids (duplicates and the user's own id dropped, cut to
/// [`MAX_WATCHLIST_SIZE`]). Other members are allowed, as the hosted service allows them.
pub fn parse_user_data(user_data: &str) -> Result<SignedInUser, SigninError> {
    let malformed =
        |why: String| SigninError::MalformedUserData(format!("expected a JSON object{why}"));
    // serde reads a struct from an array too; only an object is a user_data document.
    if !user_data.trim_start().starts_with('{') {
        return Err(malformed(String::new()));
    }
    let doc: UserDataDoc<'_> =
        serde_json::from_str(user_data).map_err(|e| malformed(format!(" ({e})")))?;
    let id = parse_user_id(doc.id)?;
    let (watchlist, watchlist_over_limit) = match doc.watchlist {
        None => (Box::default(), None),
        Some(raw) if raw.get() == "null" => (Box::default(), None),
        Some(raw) => parse_watchlist(raw, &id)?,
    };
    Ok(SignedInUser {
        id,
        watchlist,
        watchlist_over_limit,
    })
}

fn parse_user_id(raw: Option<&RawValue>) -> Result<Arc<str>, SigninError> {
    let raw = raw.ok_or_else(|| SigninError::InvalidUserId("user_data has no \"id\"".into()))?;
    let id: String = serde_json::from_str(raw.get()).map_err(|_| {
        SigninError::InvalidUserId(format!("\"id\" must be a string, got {}", raw.get()))
    })?;
    validate_user_id(&id).map_err(SigninError::InvalidUserId)?;
    Ok(Arc::from(id))
}

/// Checks a user id: 1 to [`MAX_SIGNIN_USER_ID_LENGTH`] bytes of the channel-name characters
/// (PROTOCOL.md §3.4), so that `#server-to-user-{id}` is a valid channel name.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("\"id\" must not be empty".into());
    }
    if id.len() > MAX_SIGNIN_USER_ID_LENGTH {
        return Err(format!(
            "\"id\" is longer than {MAX_SIGNIN_USER_ID_LENGTH} characters"
        ));
    }
    if !id.bytes().all(names::is_channel_char) {
        return Err(format!(
            "{id:?}: only A-Z a-z 0-9 _ - = @ , . ; are allowed"
        ));
    }
    Ok(())
}

type Watchlist = (Box<[Arc<str>]>, Option<WatchlistOverLimit>);

fn parse_watchlist(raw: &RawValue, own_id: &str) -> Result<Watchlist, SigninError> {
    let ids: Vec<String> = serde_json::from_str(raw.get()).map_err(|_| {
        SigninError::MalformedUserData("\"watchlist\" must be an array of user id strings".into())
    })?;
    let mut distinct: Vec<String> = Vec::with_capacity(ids.len().min(MAX_WATCHLIST_SIZE));
    let mut seen = ahash::AHashSet::with_capacity(ids.len());
    for id in ids {
        validate_user_id(&id)
            .map_err(|why| SigninError::MalformedUserData(format!("watchlist entry {why}")))?;
        if id != own_id && seen.insert(id.clone()) {
            distinct.push(id);
        }
    }
    let given = distinct.len();
    let over = (given > MAX_WATCHLIST_SIZE).then_some(WatchlistOverLimit { given });
    distinct.truncate(MAX_WATCHLIST_SIZE);
    Ok((distinct.into_iter().map(Arc::from).collect(), over))
}

/// Checks that a socket may sign in: refused when it already is (as `current`).
pub fn check_not_signed_in(current: Option<&Arc<str>>) -> Result<(), SigninError> {
    match current {
        Some(current) => Err(SigninError::AlreadySignedIn {
            current: current.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ids(user: &SignedInUser) -> Vec<&str> {
        user.watchlist.iter().map(|id| &**id).collect()
    }

    #[test]
    fn parses_id_info_and_watchlist() {
        let user = parse_user_data(
            r#"{"id":"42","user_info":{"name":"A"},"watchlist":["7","9","7","42"]}"#,
        )
        .unwrap();
        assert_eq!(&*user.id, "42");
        assert_eq!(ids(&user), ["7", "9"]);
        assert_eq!(user.watchlist_over_limit, None);
        let bare = parse_user_data(r#"{"id":"u-1","extra":true,"watchlist":null}"#).unwrap();
        assert!(bare.watchlist.is_empty());
    }

    #[test]
    fn malformed_user_data_and_ids_are_refused() {
        let malformed = [
            "not json",
            "[]",
            r#""{\"id\":\"1\"}""#,
            r#"{"id":"1","watchlist":"7"}"#,
            r#"{"id":"1","watchlist":[7]}"#,
            r#"{"id":"1","watchlist":["a b"]}"#,
        ];
        for text in malformed {
            assert!(
                matches!(
                    parse_user_data(text),
                    Err(SigninError::MalformedUserData(_))
                ),
                "{text}"
            );
        }
        let long = format!(
            r#"{{"id":"{}"}}"#,
            "u".repeat(MAX_SIGNIN_USER_ID_LENGTH + 1)
        );
        let bad_ids = [
            "{}",
            r#"{"id":null}"#,
            r#"{"id":42}"#,
            r#"{"id":""}"#,
            r#"{"id":"a:b"}"#,
            r#"{"id":"é"}"#,
            long.as_str(),
        ];
        for text in bad_ids {
            assert!(
                matches!(parse_user_data(text), Err(SigninError::InvalidUserId(_))),
                "{text}"
            );
        }
        let longest = format!(r#"{{"id":"{}"}}"#, "u".repeat(MAX_SIGNIN_USER_ID_LENGTH));
        assert!(parse_user_data(&longest).is_ok());
    }

    #[test]
    fn watchlist_over_the_limit_is_cut_and_reported() {
        let list: Vec<String> = (0..MAX_WATCHLIST_SIZE + 5)
            .map(|i| format!("u{i}"))
            .collect();
        let text = serde_json::json!({"id": "me", "watchlist": list}).to_string();
        let user = parse_user_data(&text).unwrap();
        assert_eq!(user.watchlist.len(), MAX_WATCHLIST_SIZE);
        assert_eq!(&*user.watchlist[0], "u0");
        let over = user.watchlist_over_limit.unwrap();
        assert_eq!(over.given, MAX_WATCHLIST_SIZE + 5);
        let frame: Value = serde_json::from_str(&over.error_frame(&user.watchlist)).unwrap();
        assert_eq!(frame["event"], "pusher:error");
        assert_eq!(frame["data"]["code"], 4302);
        let message = frame["data"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"u99\"") && !message.contains("\"u100\""),
            "{message}"
        );
        let exactly: Vec<String> = (0..MAX_WATCHLIST_SIZE).map(|i| format!("u{i}")).collect();
        let text = serde_json::json!({"id": "me", "watchlist": exactly}).to_string();
        assert_eq!(parse_user_data(&text).unwrap().watchlist_over_limit, None);
    }

    #[test]
    fn refusals_are_4009_errors_and_only_the_timeout_closes() {
        let current: Arc<str> = Arc::from("42");
        let twice = check_not_signed_in(Some(&current)).unwrap_err();
        assert!(check_not_signed_in(None).is_ok());
        for error in [
            SigninError::BadSignature("x".into()),
            SigninError::MalformedUserData("x".into()),
            SigninError::InvalidUserId("x".into()),
            twice,
        ] {
            assert!(!error.closes());
            let frame: Value = serde_json::from_str(&error.error_frame()).unwrap();
            assert_eq!(frame["event"], "pusher:error");
            assert_eq!(frame["data"]["code"], 4009);
            assert!(frame["data"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Sign-in refused"));
        }
        assert!(SigninError::Timeout.closes());
        assert_eq!(SigninError::Timeout.code(), 4009);
    }
}
