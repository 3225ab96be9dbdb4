//! Channel and user queries through the REST API (`/channels`, `/channels/{name}`,
//! `/channels/{name}/users`, `terminate_connections`). The shard answers for the whole cluster;
//! a shard of this node that does not answer in time makes the answer 503 (never a wrong count),
//! and other nodes that do not answer are named in a `Warren-Partial` header.

use super::events::{self, InfoRequest};
use super::{ApiError, Response};
use crate::app::App;
use crate::channels::cache::CacheInfo;
use crate::protocol::names::{self, ChannelKind};
use crate::shard::queries::{ChannelCount, Counts, Incomplete};
use crate::shard::Shard;
use serde_json::{json, Map, Value};

impl From<Incomplete> for ApiError {
    fn from(incomplete: Incomplete) -> Self {
        ApiError::new(
            503,
            format!(
                "{} shard(s) of this node did not answer in time; try again",
                incomplete.missing
            ),
        )
    }
}

/// A JSON answer built from counts: marked when other nodes did not answer.
fn counted(counts: &Counts, body: String) -> Response {
    let response = Response::json(200, body);
    if counts.nodes_missing == 0 {
        return response;
    }
    crate::metrics::with(|m| m.runtime_event("partial_cluster_answer"));
    let note = format!("{} node(s) did not answer in time", counts.nodes_missing);
    response.with_header("Warren-Partial", note)
}

/// Cluster-wide counts of `channels` (503 when a shard of this node did not answer).
pub(super) async fn channel_counts(
    shard: &Shard,
    app: &App,
    channels: &[String],
) -> Result<Counts, ApiError> {
    Ok(shard.channel_counts(app, channels).await?)
}

/// The requested attributes of one channel: `user_count` only for presence channels.
pub(super) fn attributes(
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

pub(super) async fn list_channels(
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
    let counts = shard.list_channels(app, prefix).await?;
    let mut channels: Vec<(&str, &ChannelCount)> = counts
        .channels
        .iter()
        .map(|(name, count)| (&**name, count))
        .collect();
    channels.sort_by(|a, b| a.0.cmp(b.0));
    let channels: Map<String, Value> = channels
        .into_iter()
        .map(|(name, count)| {
            let attributes = attributes(name, Some(count), info);
            (name.to_string(), Value::Object(attributes))
        })
        .collect();
    let body = json!({ "channels": channels }).to_string();
    Ok(counted(&counts, body))
}

pub(super) async fn channel_info(
    shard: &Shard,
    app: &App,
    channel: String,
    info: Option<&str>,
) -> Result<Response, ApiError> {
    let kind = events::validate_channel(&channel, &app.config)?;
    let allowed = ["user_count", "subscription_count", "cache"];
    let info = InfoRequest::parse(info.unwrap_or(""), &allowed)?;
    if info.user_count && kind != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "user_count is only available for presence channels",
        ));
    }
    if info.cache && !names::is_cache_channel(&channel) {
        return Err(ApiError::bad_request(
            "cache is only available for cache channels",
        ));
    }
    let counts = channel_counts(shard, app, std::slice::from_ref(&channel)).await?;
    let count = counts.channels.get(channel.as_str());
    let mut body = Map::new();
    body.insert(
        "occupied".into(),
        count.is_some_and(|c| c.subscriptions > 0).into(),
    );
    body.extend(attributes(&channel, count, info));
    if info.cache {
        let cached = shard.cache_info(app.index, &channel);
        body.insert("cache".into(), cache_json(cached.as_ref()));
    }
    Ok(counted(&counts, Value::Object(body).to_string()))
}

pub(super) async fn channel_users(
    shard: &Shard,
    app: &App,
    channel: String,
) -> Result<Response, ApiError> {
    if events::validate_channel(&channel, &app.config)? != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "Users can only be listed for presence channels",
        ));
    }
    let users: Vec<Value> = shard
        .presence_users(app, &channel)
        .await?
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Response::json(200, json!({ "users": users }).to_string()))
}

pub(super) async fn terminate(
    shard: &Shard,
    app: &App,
    user_id: String,
) -> Result<Response, ApiError> {
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

/// The `cache` attribute of `GET /channels/{name}?info=cache` (PROTOCOL.md §5.2):
/// `{"data":"<the event's data string>","ttl":<seconds left>}`, or `null` when nothing is cached.
/// What `data` holds is UNCONFIRMED for the hosted service; the publisher's `data` string is
/// what an app needs to serve initial state (sockudo sends the whole event JSON instead).
fn cache_json(info: Option<&CacheInfo>) -> serde_json::Value {
    match info {
        Some(info) => serde_json::json!({ "data": info.data, "ttl": info.ttl_secs }),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_attribute_is_data_and_ttl_or_null() {
        let info = CacheInfo {
            data: r#"{"p":1}"#.into(),
            ttl_secs: 50,
        };
        assert_eq!(
            cache_json(Some(&info)),
            json!({"data": "{\"p\":1}", "ttl": 50})
        );
        assert!(cache_json(None).is_null());
    }
}
