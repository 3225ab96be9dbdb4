//! Channel and event names: which kind a channel is (anchored prefixes, most specific first) and
//! which names are valid (PROTOCOL.md §3).

/// Longest event name accepted anywhere.
pub const MAX_EVENT_NAME_LENGTH: usize = 200;

/// Prefix of the per-user channel that signed-in sockets receive server messages on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// The user id a `#server-to-user-{id}` channel names (for routing `sendToUser` by identity);
/// `None` for any other channel or an empty id.
pub fn server_to_user_id(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(SERVER_TO_USER_PREFIX)
        .filter(|id| !id.is_empty())
}

/// Prefix every client event name must carry.
pub const CLIENT_EVENT_PREFIX: &str = "client-";

/// Prefixes of cache channels (PROTOCOL.md §3.3): `cache-` is public, the others keep the
/// behaviour of their base kind ([`ChannelKind::of`] still answers that kind).
pub const CACHE_PREFIXES: [&str; 4] = [
    "cache-",
    "private-cache-",
    "private-encrypted-cache-",
    "presence-cache-",
];

/// Whether `name` is a cache channel: its last event is replayed to new subscribers. Kept apart
/// from [`ChannelKind`] because a cache channel is also public, private, encrypted or presence,
/// and every check of the kind must keep holding for it.
pub fn is_cache_channel(name: &str) -> bool {
    CACHE_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// What a channel name means for authorization and delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No auth; anyone may subscribe.
    Public,
    /// `private-`: signed `socket_id:channel`.
    Private,
    /// `private-encrypted-`: signed like private; payloads are relayed untouched.
    PrivateEncrypted,
    /// `presence-`: signed `socket_id:channel:channel_data`, with a member roster.
    Presence,
    /// `#server-to-user-{id}`: delivered by signed-in identity.
    ServerToUser,
}

impl ChannelKind {
    /// Classifies a channel by its anchored prefix, testing the most specific prefix first.
    pub fn of(name: &str) -> ChannelKind {
        if name.starts_with("presence-") {
            ChannelKind::Presence
        } else if name.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else {
            ChannelKind::Public
        }
    }

    /// Whether subscribing needs a signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }

    /// Whether clients may send `client-` events on this kind of channel.
    pub fn allows_client_events(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidChannelName {
    /// Empty name.
    Empty,
    /// Longer than the limit.
    TooLong,
    /// A character outside `A-Za-z0-9_-=@,.;` (or a misplaced `#`).
    BadCharacter,
}

impl InvalidChannelName {
    /// A sentence for the client.
    pub fn message(self, name: &str, max_len: usize) -> String {
        match self {
            InvalidChannelName::Empty => "Channel name must not be empty".to_string(),
            InvalidChannelName::TooLong => {
                format!("Channel name too long (at most {max_len} characters): {name}")
            }
            InvalidChannelName::BadCharacter => {
                format!("Invalid channel name {name:?}: only A-Z a-z 0-9 _ - = @ , . ; are allowed")
            }
        }
    }
}

/// Whether `b` may appear in a channel name or a user id: `A-Za-z0-9_-=@,.;` (PROTOCOL.md §3.1).
pub fn is_channel_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// Checks a channel name: the allowed characters, a `#` only as `#server-to-user-{id}`, and the
/// length limit.
pub fn validate_channel_name(
    name: &str,
    max_len: usize,
) -> Result<ChannelKind, InvalidChannelName> {
    if name.is_empty() {
        return Err(InvalidChannelName::Empty);
    }
    if name.len() > max_len {
        return Err(InvalidChannelName::TooLong);
    }
    let body = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
        Some(user) if !user.is_empty() => user,
        Some(_) => return Err(InvalidChannelName::BadCharacter),
        None => name,
    };
    if !body.bytes().all(is_channel_char) {
        return Err(InvalidChannelName::BadCharacter);
    }
    Ok(ChannelKind::of(name))
}

/// Checks an event name's length (1 to 200 bytes).
pub fn valid_event_name(name: &str) -> bool {
    valid_event_name_within(name, MAX_EVENT_NAME_LENGTH)
}

/// Checks an event name's length against an app's limit (1 to `max_len` bytes).
pub fn valid_event_name_within(name: &str, max_len: usize) -> bool {
    !name.is_empty() && name.len() <= max_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_anchored_and_most_specific_first() {
        assert_eq!(ChannelKind::of("presence-cache-x"), ChannelKind::Presence);
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(ChannelKind::of("private-cache-x"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("foo-private-bar"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("privatex"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("cache-x"), ChannelKind::Public);
        assert_eq!(
            ChannelKind::of("#server-to-user-42"),
            ChannelKind::ServerToUser
        );
    }

    #[test]
    fn server_to_user_channels_name_their_user() {
        assert_eq!(server_to_user_id("#server-to-user-42"), Some("42"));
        assert_eq!(server_to_user_id("#server-to-user-"), None);
        assert_eq!(server_to_user_id("server-to-user-42"), None);
        assert_eq!(server_to_user_id("private-x"), None);
    }

    #[test]
    fn cache_channels_are_the_four_anchored_prefixes() {
        for name in [
            "cache-x",
            "private-cache-x",
            "private-encrypted-cache-x",
            "presence-cache-x",
        ] {
            assert!(is_cache_channel(name), "{name}");
        }
        for name in [
            "x-cache-y",
            "private-x",
            "presence-x",
            "cachex",
            "encrypted-cache-x",
        ] {
            assert!(!is_cache_channel(name), "{name}");
        }
        assert_eq!(ChannelKind::of("presence-cache-x"), ChannelKind::Presence);
        assert_eq!(
            ChannelKind::of("private-encrypted-cache-x"),
            ChannelKind::PrivateEncrypted
        );
    }

    #[test]
    fn channel_name_rules() {
        assert!(validate_channel_name("a-b_c=d@e,f.g;h", 200).is_ok());
        assert!(validate_channel_name("#server-to-user-42", 200).is_ok());
        assert_eq!(
            validate_channel_name("", 200),
            Err(InvalidChannelName::Empty)
        );
        assert_eq!(
            validate_channel_name("a:b", 200),
            Err(InvalidChannelName::BadCharacter)
        );
        assert_eq!(
            validate_channel_name("a b", 200),
            Err(InvalidChannelName::BadCharacter)
        );
        assert_eq!(
            validate_channel_name("#x", 200),
            Err(InvalidChannelName::BadCharacter)
        );
        assert_eq!(
            validate_channel_name("é", 200),
            Err(InvalidChannelName::BadCharacter)
        );
        assert_eq!(
            validate_channel_name("#server-to-user-", 200),
            Err(InvalidChannelName::BadCharacter)
        );
        let long = "a".repeat(201);
        assert_eq!(
            validate_channel_name(&long, 200),
            Err(InvalidChannelName::TooLong)
        );
        assert!(validate_channel_name(&long[..200], 200).is_ok());
    }

    #[test]
    fn event_name_length() {
        assert!(valid_event_name("client-x"));
        assert!(!valid_event_name(""));
        assert!(!valid_event_name(&"e".repeat(201)));
        assert!(valid_event_name_within(&"e".repeat(300), 300));
        assert!(!valid_event_name_within(&"e".repeat(301), 300));
        assert!(!valid_event_name_within("", 300));
    }
}
