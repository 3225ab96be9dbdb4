//! The Pusher REST API (PROTOCOL.md §5): routing of `/apps/{id}/...` and the signature check.
//! The handlers live by concern: publishing in [`super::publish`], channel and user queries in
//! [`super::channels`].

use super::request::RequestHead;
use super::{channels, publish, ApiError, Response};
use crate::app::App;
use crate::auth::request::{self, RequestAuthError, SignedRequest};
use crate::shard::Shard;
use std::sync::Arc;

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
    // The reader took up to the largest limit of any app; this app's own applies here.
    super::events::check_body_size(body.len(), &app.config)?;
    let signed = SignedRequest {
        method: &head.method,
        path: &head.path,
        params: &params,
        body,
    };
    request::verify(&signed, app.key(), app.secret(), super::unix_now())
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
        Route::Events => publish::trigger(shard, app, body).await,
        Route::BatchEvents => publish::trigger_batch(shard, app, body).await,
        Route::Channels => {
            let prefix = param("filter_by_prefix");
            channels::list_channels(shard, app, prefix, param("info")).await
        }
        Route::Channel(name) => channels::channel_info(shard, app, name, param("info")).await,
        Route::ChannelUsers(name) => channels::channel_users(shard, app, name).await,
        Route::LegacyChannelEvents(name) => {
            let (event, socket_id) = (param("name"), param("socket_id"));
            publish::legacy_trigger(shard, app, name, event, socket_id, body).await
        }
        Route::TerminateUser(user) => channels::terminate(shard, app, user).await,
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
