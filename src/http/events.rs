//! The bodies of `POST /events` and `POST /batch_events` (PROTOCOL.md §5.2): parsed with
//! serde_json into [`ApiEvent`]s and checked against the app's limits before anything is
//! published, so a request either publishes everything or nothing.

use super::ApiError;
use crate::config::AppConfig;
use crate::protocol::names::{self, ChannelKind};
use crate::protocol::SocketId;
use serde_json::{Map, Value};

/// Most channels one event may target unless the app says otherwise (Pusher's limit; the
/// app's `max_channels_per_event` applies).
pub const MAX_CHANNELS_PER_EVENT: usize = 100;

/// Checks a request body's length against the app's `max_request_body_bytes`: 413 beyond it.
/// Call it with the `Content-Length` before reading the body (the reader's own ceiling is
/// `Config::largest_request_body`).
pub fn check_body_size(length: usize, app: &AppConfig) -> Result<(), ApiError> {
    if length > app.max_request_body_bytes {
        return Err(ApiError::new(
            413,
            format!(
                "Request body too large: {length} bytes, at most {} allowed",
                app.max_request_body_bytes
            ),
        ));
    }
    Ok(())
}

/// Attributes an `info` parameter may ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoRequest {
    /// `user_count` (presence channels).
    pub user_count: bool,
    /// `subscription_count`.
    pub subscription_count: bool,
    /// `cache` (cache channels, `GET /channels/{name}`).
    pub cache: bool,
}

impl InfoRequest {
    /// Parses a comma-separated `info` value; `allowed` lists the attributes valid here.
    pub fn parse(value: &str, allowed: &[&str]) -> Result<InfoRequest, ApiError> {
        let mut info = InfoRequest::default();
        for attribute in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attribute {
                "user_count" if allowed.contains(&attribute) => info.user_count = true,
                "subscription_count" if allowed.contains(&attribute) => {
                    info.subscription_count = true
                }
                "cache" if allowed.contains(&attribute) => info.cache = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported info attribute: {other}"
                    )))
                }
            }
        }
        Ok(info)
    }

    /// Whether any attribute was asked for.
    pub fn any(self) -> bool {
        self.user_count || self.subscription_count || self.cache
    }
}

/// One validated event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEvent {
    /// Event name.
    pub name: String,
    /// Data string, delivered as is.
    pub data: String,
    /// Target channels (1 to 100).
    pub channels: Vec<String>,
    /// Socket excluded from delivery.
    pub socket_id: Option<SocketId>,
    /// Attributes to report after publishing.
    pub info: InfoRequest,
}

/// Parses and validates a `POST /events` body.
pub fn parse_events_body(body: &[u8], app: &AppConfig) -> Result<ApiEvent, ApiError> {
    let object = parse_object(body)?;
    parse_event(&object, app)
}

/// Parses and validates a `POST /batch_events` body.
pub fn parse_batch_body(body: &[u8], app: &AppConfig) -> Result<Vec<ApiEvent>, ApiError> {
    let object = parse_object(body)?;
    let Some(Value::Array(batch)) = object.get("batch") else {
        return Err(ApiError::bad_request(
            "Expected batch parameter to be an array of events",
        ));
    };
    if batch.len() > app.max_batch_size {
        return Err(ApiError::bad_request(format!(
            "Cannot batch-send more than {} messages at once",
            app.max_batch_size
        )));
    }
    batch
        .iter()
        .map(|item| match item {
            Value::Object(event) => parse_event(event, app),
            _ => Err(ApiError::bad_request("Each batch entry must be an object")),
        })
        .collect()
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
        Err(error) => Err(ApiError::bad_request(format!(
            "Invalid JSON in request body: {error}"
        ))),
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Expected {name} parameter to be a string"
        ))),
    }
}

fn parse_event(object: &Map<String, Value>, app: &AppConfig) -> Result<ApiEvent, ApiError> {
    let name = string_field(object, "name")?
        .ok_or_else(|| ApiError::bad_request("Expected name parameter to be a string"))?;
    if !names::valid_event_name_within(name, app.max_event_name_length) {
        return Err(ApiError::bad_request(format!(
            "Event name must be 1 to {} characters long",
            app.max_event_name_length
        )));
    }
    let data = string_field(object, "data")?
        .ok_or_else(|| ApiError::bad_request("Expected data parameter to be a string"))?;
    if data.len() > app.max_event_payload_bytes {
        return Err(ApiError {
            status: 413,
            message: format!(
                "The data content of this event exceeds the allowed maximum ({} bytes). See http://pusher.com/docs/server_api_guide/server_publishing_events for more info",
                app.max_event_payload_bytes
            ),
        });
    }
    let channels = parse_channels(object, app)?;
    let socket_id = match string_field(object, "socket_id")? {
        None => None,
        Some(text) => Some(
            SocketId::parse(text)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid socket_id: {text:?}")))?,
        ),
    };
    let info = match string_field(object, "info")? {
        None => InfoRequest::default(),
        Some(value) => InfoRequest::parse(value, &["user_count", "subscription_count"])?,
    };
    Ok(ApiEvent {
        name: name.to_string(),
        data: data.to_string(),
        channels,
        socket_id,
        info,
    })
}

fn parse_channels(object: &Map<String, Value>, app: &AppConfig) -> Result<Vec<String>, ApiError> {
    let channels: Vec<String> = match (object.get("channels"), string_field(object, "channel")?) {
        (Some(Value::Array(list)), _) => list
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::bad_request("Expected channels parameter to be an array of strings")
            })?,
        (Some(_), _) => {
            return Err(ApiError::bad_request(
                "Expected channels parameter to be an array of strings",
            ))
        }
        (None, Some(channel)) => vec![channel.to_string()],
        (None, None) => {
            return Err(ApiError::bad_request(
                "Missing channel or channels parameter",
            ))
        }
    };
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "Missing channel or channels parameter",
        ));
    }
    if channels.len() > app.max_channels_per_event {
        return Err(ApiError::bad_request(format!(
            "Cannot broadcast to more than {} channels at once",
            app.max_channels_per_event
        )));
    }
    for channel in &channels {
        validate_channel(channel, app)?;
    }
    // The SDKs refuse this too: one payload cannot be encrypted for several channels
    // (PROTOCOL.md §4.4 leaves the server's answer UNCONFIRMED; 400 is what the SDKs expect).
    if channels.len() > 1
        && channels
            .iter()
            .any(|c| ChannelKind::of(c) == ChannelKind::PrivateEncrypted)
    {
        return Err(ApiError::bad_request(
            "Cannot trigger an event on several channels when one is encrypted",
        ));
    }
    Ok(channels)
}

/// Checks a channel name given to the HTTP API.
/// `#server-to-user-{id}` (the SDKs' `sendToUser`) must name a valid user id, one a socket can
/// sign in as; anything else is 400.
pub fn validate_channel(channel: &str, app: &AppConfig) -> Result<ChannelKind, ApiError> {
    let kind =
        names::validate_channel_name(channel, app.max_channel_name_length).map_err(|invalid| {
            ApiError::bad_request(invalid.message(channel, app.max_channel_name_length))
        });
    if channel.starts_with(names::SERVER_TO_USER_PREFIX) {
        let id = names::server_to_user_id(channel).unwrap_or("");
        crate::protocol::signin::validate_user_id(id)
            .map_err(|why| ApiError::bad_request(format!("Invalid user id in {channel}: {why}")))?;
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn app() -> AppConfig {
        Config::embedded_default().apps[0].clone()
    }

    #[test]
    fn parses_channel_and_channels_forms() {
        let one = parse_events_body(br#"{"name":"e","data":"{\"a\":1}","channel":"c","socket_id":"1.2","info":"user_count"}"#, &app()).unwrap();
        assert_eq!(one.channels, vec!["c"]);
        assert_eq!(one.data, r#"{"a":1}"#);
        assert_eq!(one.socket_id, SocketId::parse("1.2"));
        assert!(one.info.user_count && !one.info.subscription_count);
        let many =
            parse_events_body(br#"{"name":"e","data":"x","channels":["a","b"]}"#, &app()).unwrap();
        assert_eq!(many.channels, vec!["a", "b"]);
    }

    #[test]
    fn refusals_have_their_status() {
        let too_many: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
        let too_many = format!(
            r#"{{"name":"e","data":"x","channels":[{}]}}"#,
            too_many.join(",")
        );
        let big = format!(
            r#"{{"name":"e","data":"{}","channel":"c"}}"#,
            "x".repeat(10241)
        );
        let cases: Vec<(String, u16)> = vec![
            ("not json".into(), 400),
            ("[]".into(), 400),
            (r#"{"data":"x","channel":"c"}"#.into(), 400),
            (r#"{"name":5,"data":"x","channel":"c"}"#.into(), 400),
            (r#"{"name":"e","data":{"a":1},"channel":"c"}"#.into(), 400),
            (r#"{"name":"e","data":"x"}"#.into(), 400),
            (r#"{"name":"e","data":"x","channels":[]}"#.into(), 400),
            (r#"{"name":"e","data":"x","channels":[1]}"#.into(), 400),
            (
                r#"{"name":"e","data":"x","channel":"bad name"}"#.into(),
                400,
            ),
            (
                r#"{"name":"e","data":"x","channel":"c","socket_id":"abc"}"#.into(),
                400,
            ),
            (
                r#"{"name":"e","data":"x","channel":"c","info":"nope"}"#.into(),
                400,
            ),
            (
                r#"{"name":"e","data":"x","channels":["private-encrypted-a","b"]}"#.into(),
                400,
            ),
            (
                format!(
                    r#"{{"name":"{}","data":"x","channel":"c"}}"#,
                    "e".repeat(201)
                ),
                400,
            ),
            (
                format!(
                    r##"{{"name":"e","data":"x","channel":"#server-to-user-{}"}}"##,
                    "u".repeat(129)
                ),
                400,
            ),
            (
                r##"{"name":"e","data":"x","channel":"#server-to-user-"}"##.into(),
                400,
            ),
            (too_many, 400),
            (big, 413),
        ];
        for (body, status) in cases {
            let error = parse_events_body(body.as_bytes(), &app()).unwrap_err();
            assert_eq!(error.status, status, "{body}: {}", error.message);
        }
    }

    #[test]
    fn per_app_limits_apply() {
        let mut app = app();
        app.max_channels_per_event = 2;
        app.max_event_name_length = 5;
        app.max_channel_name_length = 4;
        let ok = parse_events_body(
            br#"{"name":"abcde","data":"x","channels":["a","bcde"]}"#,
            &app,
        );
        assert!(ok.is_ok(), "{ok:?}");
        for body in [
            r#"{"name":"e","data":"x","channels":["a","b","c"]}"#,
            r#"{"name":"abcdef","data":"x","channel":"a"}"#,
            r#"{"name":"e","data":"x","channel":"abcde"}"#,
        ] {
            let error = parse_events_body(body.as_bytes(), &app).unwrap_err();
            assert_eq!(error.status, 400, "{body}");
        }
        let error = parse_events_body(br#"{"name":"e","data":"x","channels":["a","b","c"]}"#, &app)
            .unwrap_err();
        assert!(
            error.message.contains("more than 2 channels"),
            "{}",
            error.message
        );
        // Raised above Pusher's values.
        let mut wide = self::app();
        wide.max_channels_per_event = 150;
        wide.max_event_name_length = 300;
        let channels: Vec<String> = (0..150).map(|i| format!("\"c{i}\"")).collect();
        let body = format!(
            r#"{{"name":"{}","data":"x","channels":[{}]}}"#,
            "e".repeat(300),
            channels.join(",")
        );
        assert_eq!(
            parse_events_body(body.as_bytes(), &wide)
                .unwrap()
                .channels
                .len(),
            150
        );
    }

    #[test]
    fn body_size_is_checked_against_the_app() {
        let mut app = app();
        assert!(check_body_size(1024 * 1024, &app).is_ok());
        assert_eq!(
            check_body_size(1024 * 1024 + 1, &app).unwrap_err().status,
            413
        );
        app.max_request_body_bytes = 100;
        assert!(check_body_size(100, &app).is_ok());
        assert_eq!(check_body_size(101, &app).unwrap_err().status, 413);
    }

    #[test]
    fn info_cache_is_parsed_only_where_allowed() {
        let info = InfoRequest::parse("cache,subscription_count", &["cache", "subscription_count"])
            .unwrap();
        assert!(info.cache && info.subscription_count && info.any());
        assert!(InfoRequest::parse("cache", &["user_count", "subscription_count"]).is_err());
    }

    #[test]
    fn batches_are_limited_and_all_or_nothing() {
        let event = r#"{"name":"e","data":"x","channel":"c"}"#;
        let ten = format!(r#"{{"batch":[{}]}}"#, [event; 10].join(","));
        assert_eq!(parse_batch_body(ten.as_bytes(), &app()).unwrap().len(), 10);
        let eleven = format!(r#"{{"batch":[{}]}}"#, [event; 11].join(","));
        assert_eq!(
            parse_batch_body(eleven.as_bytes(), &app())
                .unwrap_err()
                .status,
            400
        );
        let one_bad = format!(r#"{{"batch":[{event},{{"name":"e","channel":"c"}}]}}"#);
        assert_eq!(
            parse_batch_body(one_bad.as_bytes(), &app())
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_batch_body(br#"{"batch":{}}"#, &app())
                .unwrap_err()
                .status,
            400
        );
    }
}
