//! Close codes and `pusher:error` codes, as pusher-js acts on them (PROTOCOL.md §1.3, §2.10).
//!
//! 4000–4099: refused, the client does not reconnect; 4100–4199: back off, then reconnect;
//! 4200–4299: reconnect at once; 4300–4399: errors sent as `pusher:error`, never as closes.

/// Unknown app key.
pub const APP_NOT_FOUND: u16 = 4001;
/// App disabled.
pub const APP_DISABLED: u16 = 4003;
/// Over the app's connection quota.
pub const OVER_CONNECTION_QUOTA: u16 = 4004;
/// Path is not `/app/{key}`.
pub const BAD_PATH: u16 = 4005;
/// Unsupported protocol version.
pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
/// Unauthorized (sign-in failures, terminated connections).
pub const UNAUTHORIZED: u16 = 4009;
/// Over capacity: the client backs off; also used for a client that does not read.
pub const OVER_CAPACITY: u16 = 4100;
/// Server shutting down: the client reconnects (elsewhere) at once.
pub const SHUTTING_DOWN: u16 = 4200;
/// No pong (nor any other frame) came back after a ping.
pub const PONG_NOT_RECEIVED: u16 = 4201;
/// Client event rejected because of the per-connection rate limit.
pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
/// Presence member too large (soketi's status for a `user_info` over the limit).
pub const MEMBER_TOO_LARGE: u16 = 4301;

/// RFC 6455 normal closure.
pub const WS_NORMAL: u16 = 1000;
/// RFC 6455: the endpoint cannot accept this data type (binary frames).
pub const WS_UNSUPPORTED_DATA: u16 = 1003;
/// RFC 6455: text frame with invalid UTF-8.
pub const WS_INVALID_PAYLOAD: u16 = 1007;
/// RFC 6455: protocol error (bad framing, unmasked client frame).
pub const WS_PROTOCOL_ERROR: u16 = 1002;
/// RFC 6455: message too big.
pub const WS_MESSAGE_TOO_BIG: u16 = 1009;

/// The `status` of a `pusher:subscription_error` for a refused signature (`AuthError`), as the
/// HTTP status an auth endpoint would answer (soketi's form; Laravel Echo reads it).
pub const SUBSCRIPTION_AUTH_STATUS: u16 = 401;
