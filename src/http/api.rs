//! The Pusher REST API (PROTOCOL.md §5): routing of `/apps/{id}/...`, the signature check, and
//! the handlers. Publishing goes through the shard's publish entry point; queries are
//! scatter-gathered over every shard, so one answer covers the whole node.

use super::events::{self, ApiEvent, InfoRequest};
use super::{ApiError, Response};
use crate::app::App;
use crate::auth::request::{self, RequestAuthError, SignedRequest};
use crate::cluster::envelope::{RemoteCount, RemoteQuery};
use crate::protocol::names::{self, ChannelKind};
use crate::shard::query::{merge_counts, Answer, ChannelCount, Query};
use crate::shard::Shard;
use crate::ws::handshake::RequestHead;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One API route, with its path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Events,
    BatchEvents,
    Channels,
    Channel(String),
    ChannelUsers(String),
    LegacyChannelEvents(String),
    TerminateUser(String),
}

impl Route {
    /// The route's label in metrics.
    fn name(&self) -> &'static str {
        match self {
            Route::Events => "events",
            Route::BatchEvents => "batch_events",
            Route::Channels => "channels",
            Route::Channel(_) => "channel",
            Route::ChannelUsers(_) => "channel_users",
            Route::LegacyChannelEvents(_) => "legacy_channel_events",
            Route::TerminateUser(_) => "terminate_connections",
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Route::Channels | Route::Channel(_) | Route::ChannelUsers(_) => "GET",
            _ => "POST",
        }
    }
}

/// Splits an API path into the app id (`None` for the unprefixed route the Python SDK uses) and
/// the route; `None` when the path is not an API path.
fn parse_path(path: &str) -> Option<(Option<String>, Route)> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (app, rest) = match segments.as_slice() {
        ["apps", id, rest @ ..] => (Some(id.to_string()), rest),
        ["users", ..] => (None, &segments[..]),
        _ => return None,
    };
    let route = match rest {
        ["events"] => Route::Events,
        ["batch_events"] => Route::BatchEvents,
        ["channels"] => Route::Channels,
        ["channels", name] => Route::Channel(name.to_string()),
        ["channels", name, "users"] => Route::ChannelUsers(name.to_string()),
        ["channels", name, "events"] => Route::LegacyChannelEvents(name.to_string()),
        ["users", user, "terminate_connections"] => Route::TerminateUser(user.to_string()),
        _ => return None,
    };
    Some((app, route))
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes: Vec<u8> = percent_bytes(segment.as_bytes())?;
    String::from_utf8(bytes).ok()
}

fn percent_bytes(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether `path` belongs to the REST API.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/apps/") || path.starts_with("/users/")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answers one REST API request.
pub async fn handle(shard: &Shard, head: &RequestHead, body: &[u8]) -> Response {
    let parsed = parse_path(&head.path);
    let route_name = parsed.as_ref().map_or("unknown", |(_, route)| route.name());
    let response = match handle_inner(shard, head, body, parsed).await {
        Ok(response) => response,
        Err(error) => Response::text(error.status, &error.message),
    };
    crate::metrics::with(|m| m.http_request(route_name, response.status));
    response
}

async fn handle_inner(
    shard: &Shard,
    head: &RequestHead,
    body: &[u8],
    parsed: Option<(Option<String>, Route)>,
) -> Result<Response, ApiError> {
    let (app_id, route) = parsed.ok_or_else(|| ApiError::new(404, "Not found"))?;
    if head.method != route.method() {
        return Err(ApiError::new(
            405,
            format!("{} expects {}", head.path, route.method()),
        ));
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(head.query.as_bytes())
        .into_owned()
        .collect();
    let app = find_app(shard, app_id.as_deref(), &params)?;
    let app = &*app;
    let signed = SignedRequest {
        method: &head.method,
        path: &head.path,
        params: &params,
        body,
    };
    request::verify(&signed, app.key(), app.secret(), unix_now())
        .map_err(|e| ApiError::new(401, e.to_string()))?;
    if !app.config.enabled {
        return Err(ApiError::new(403, "Application disabled"));
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match route {
        Route::Events => trigger(shard, app, body).await,
        Route::BatchEvents => trigger_batch(shard, app, body).await,
        Route::Channels => {
            list_channels(shard, app, param("filter_by_prefix"), param("info")).await
        }
        Route::Channel(name) => channel_info(shard, app, name, param("info")).await,
        Route::ChannelUsers(name) => channel_users(shard, app, name).await,
        Route::LegacyChannelEvents(name) => {
            legacy_trigger(shard, app, name, param("name"), param("socket_id"), body).await
        }
        Route::TerminateUser(user) => terminate(shard, app, user).await,
    }
}

/// The app in the path, or (for `/users/...`) the app whose key signed the request.
fn find_app(
    shard: &Shard,
    app_id: Option<&str>,
    params: &[(String, String)],
) -> Result<Arc<App>, ApiError> {
    let not_found = || ApiError::new(404, "Unknown app");
    match app_id {
        Some(id) => shard.apps().by_id(id).cloned().ok_or_else(not_found),
        None => {
            // Routed by the signing key: its absence or an unknown key is an auth failure.
            let key = params
                .iter()
                .find(|(k, _)| k == "auth_key")
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| ApiError::new(401, RequestAuthError::MissingKey.to_string()))?;
            shard
                .apps()
                .by_key(key)
                .cloned()
                .ok_or_else(|| ApiError::new(401, RequestAuthError::UnknownKey.to_string()))
        }
    }
}

fn check_rate(app: &App, events: usize) -> Result<(), ApiError> {
    if app.try_accept_backend_events(events as u32, unix_now()) {
        Ok(())
    } else {
        Err(ApiError::new(
            429,
            "Too many events: the app's HTTP API rate limit was exceeded",
        ))
    }
}

async fn publish(shard: &Shard, app: &App, event: &ApiEvent) {
    let channels: Vec<&str> = event.channels.iter().map(String::as_str).collect();
    shard
        .publish(app, &channels, &event.name, &event.data, event.socket_id)
        .await;
    crate::console::tap::api_publish(app.id(), &channels, &event.name, &event.data);
}

async fn trigger(shard: &Shard, app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let event = events::parse_events_body(body, &app.config)?;
    check_rate(app, 1)?;
    publish(shard, app, &event).await;
    if !event.info.any() {
        return Ok(Response::json(200, "{}".into()));
    }
    let counts = channel_counts(shard, app, &event.channels).await;
    let channels: Map<String, Value> = event
        .channels
        .iter()
        .map(|c| {
            (
                c.clone(),
                Value::Object(attributes(c, counts.get(c.as_str()), event.info)),
            )
        })
        .collect();
    Ok(Response::json(
        200,
        json!({ "channels": channels }).to_string(),
    ))
}

async fn trigger_batch(shard: &Shard, app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let batch = events::parse_batch_body(body, &app.config)?;
    check_rate(app, batch.len())?;
    for event in &batch {
        publish(shard, app, event).await;
    }
    if !batch.iter().any(|e| e.info.any()) {
        return Ok(Response::json(200, "{}".into()));
    }
    let all: Vec<String> = batch
        .iter()
        .flat_map(|e| e.channels.iter().cloned())
        .collect();
    let counts = channel_counts(shard, app, &all).await;
    let entries: Vec<Value> = batch
        .iter()
        .map(|event| {
            let channel = &event.channels[0];
            Value::Object(attributes(
                channel,
                counts.get(channel.as_str()),
                event.info,
            ))
        })
        .collect();
    Ok(Response::json(200, json!({ "batch": entries }).to_string()))
}

async fn legacy_trigger(
    shard: &Shard,
    app: &App,
    channel: String,
    name: Option<&str>,
    socket_id: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut object = Map::new();
    object.insert(
        "name".into(),
        name.map_or(Value::Null, |n| Value::String(n.into())),
    );
    object.insert(
        "data".into(),
        Value::String(String::from_utf8_lossy(body).into_owned()),
    );
    object.insert("channel".into(), Value::String(channel));
    if let Some(socket_id) = socket_id {
        object.insert("socket_id".into(), Value::String(socket_id.into()));
    }
    let event =
        events::parse_events_body(Value::Object(object).to_string().as_bytes(), &app.config)?;
    check_rate(app, 1)?;
    publish(shard, app, &event).await;
    Ok(Response {
        status: 202,
        content_type: "application/json",
        body: Vec::new(),
    })
}

async fn channel_counts(
    shard: &Shard,
    app: &App,
    channels: &[String],
) -> ahash::AHashMap<Arc<str>, ChannelCount> {
    let mut names: Vec<String> = channels.to_vec();
    names.sort();
    names.dedup();
    let query = Query::ChannelCounts {
        app: app.index,
        channels: names.iter().map(|c| Arc::from(c.as_str())).collect(),
    };
    let mut counts = merge_counts(shard.gather(query).await);
    let remote = RemoteQuery::ChannelCounts {
        app: app.id().to_string(),
        channels: names,
    };
    add_remote_counts(&mut counts, shard.gather_remote(remote).await);
    counts
}

/// Adds other nodes' subscription counts (user counts are already cluster-wide: presence
/// rosters are replicated).
fn add_remote_counts(
    counts: &mut ahash::AHashMap<Arc<str>, ChannelCount>,
    remote: Vec<RemoteCount>,
) {
    for count in remote {
        counts
            .entry(Arc::from(count.channel.as_str()))
            .or_default()
            .subscriptions += count.subscriptions;
    }
}

/// The requested attributes of one channel: `user_count` only for presence channels.
fn attributes(
    channel: &str,
    count: Option<&ChannelCount>,
    info: InfoRequest,
) -> Map<String, Value> {
    let count = count.cloned().unwrap_or_default();
    let mut attributes = Map::new();
    if info.user_count && ChannelKind::of(channel) == ChannelKind::Presence {
        attributes.insert("user_count".into(), count.users.unwrap_or(0).into());
    }
    if info.subscription_count {
        attributes.insert("subscription_count".into(), count.subscriptions.into());
    }
    attributes
}

async fn list_channels(
    shard: &Shard,
    app: &App,
    prefix: Option<&str>,
    info: Option<&str>,
) -> Result<Response, ApiError> {
    let prefix = prefix.unwrap_or("");
    let info = InfoRequest::parse(info.unwrap_or(""), &["user_count", "subscription_count"])?;
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "user_count may only be requested with filter_by_prefix=presence-",
        ));
    }
    let answers = shard
        .gather(Query::ListChannels {
            app: app.index,
            prefix: prefix.to_string(),
        })
        .await;
    let mut counts = merge_counts(answers);
    let remote = RemoteQuery::ListChannels {
        app: app.id().to_string(),
        prefix: prefix.to_string(),
    };
    add_remote_counts(&mut counts, shard.gather_remote(remote).await);
    let mut channels: Vec<(Arc<str>, ChannelCount)> = counts
        .into_iter()
        .filter(|(_, count)| count.subscriptions > 0)
        .collect();
    channels.sort_by(|a, b| a.0.cmp(&b.0));
    let channels: Map<String, Value> = channels
        .into_iter()
        .map(|(name, count)| {
            let attributes = attributes(&name, Some(&count), info);
            (name.to_string(), Value::Object(attributes))
        })
        .collect();
    Ok(Response::json(
        200,
        json!({ "channels": channels }).to_string(),
    ))
}

async fn channel_info(
    shard: &Shard,
    app: &App,
    channel: String,
    info: Option<&str>,
) -> Result<Response, ApiError> {
    let kind = events::validate_channel(&channel, &app.config)?;
    let info = InfoRequest::parse(info.unwrap_or(""), &["user_count", "subscription_count"])?;
    if info.user_count && kind != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "user_count is only available for presence channels",
        ));
    }
    let counts = channel_counts(shard, app, std::slice::from_ref(&channel)).await;
    let count = counts.get(channel.as_str());
    let mut body = Map::new();
    body.insert(
        "occupied".into(),
        count.is_some_and(|c| c.subscriptions > 0).into(),
    );
    body.extend(attributes(&channel, count, info));
    Ok(Response::json(200, Value::Object(body).to_string()))
}

async fn channel_users(shard: &Shard, app: &App, channel: String) -> Result<Response, ApiError> {
    if events::validate_channel(&channel, &app.config)? != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "Users can only be listed for presence channels",
        ));
    }
    let answers = shard
        .gather(Query::PresenceUsers {
            app: app.index,
            channel: Arc::from(channel.as_str()),
        })
        .await;
    let users: Vec<Value> = answers
        .into_iter()
        .flat_map(|a| match a {
            Answer::Users(ids) => ids,
            _ => Vec::new(),
        })
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Response::json(200, json!({ "users": users }).to_string()))
}

async fn terminate(shard: &Shard, app: &App, user_id: String) -> Result<Response, ApiError> {
    // User ids follow the channel-name rules (PROTOCOL.md §3.4).
    if names::validate_channel_name(&user_id, 200).is_err() {
        return Err(ApiError::bad_request(format!(
            "Invalid user id: {user_id:?}"
        )));
    }
    let closed = shard.terminate_everywhere(app, &user_id).await;
    tracing::debug!(app = app.id(), %user_id, closed, "terminated user connections");
    Ok(Response::json(200, "{}".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("/apps/1/events", Some((Some("1"), Route::Events))),
            (
                "/apps/1/batch_events",
                Some((Some("1"), Route::BatchEvents)),
            ),
            ("/apps/1/channels", Some((Some("1"), Route::Channels))),
            (
                "/apps/1/channels/presence-a",
                Some((Some("1"), Route::Channel("presence-a".into()))),
            ),
            (
                "/apps/1/channels/%23server-to-user-1",
                Some((Some("1"), Route::Channel("#server-to-user-1".into()))),
            ),
            (
                "/apps/1/channels/a/users",
                Some((Some("1"), Route::ChannelUsers("a".into()))),
            ),
            (
                "/apps/1/channels/a/events",
                Some((Some("1"), Route::LegacyChannelEvents("a".into()))),
            ),
            (
                "/apps/1/users/u1/terminate_connections",
                Some((Some("1"), Route::TerminateUser("u1".into()))),
            ),
            (
                "/users/u1/terminate_connections",
                Some((None, Route::TerminateUser("u1".into()))),
            ),
            ("/apps/1/nope", None),
            ("/apps/1/channels/%zz", None),
            ("/other", None),
        ];
        for (path, expected) in cases {
            let expected = expected.map(|(id, route)| (id.map(str::to_string), route));
            assert_eq!(parse_path(path), expected, "{path}");
        }
    }
}
