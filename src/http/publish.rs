//! Publishing through the REST API (`/events`, `/batch_events`, the deprecated channel events
//! route): validated, rate-limited, then handed to the shard, which answers once every shard has
//! taken the events (before they are written). A node whose fan-out queues are full answers 429.

use super::channels::{attributes, channel_counts};
use super::events::{self, ApiEvent};
use super::{ApiError, Response};
use crate::app::App;
use crate::shard::publish::PublishRefused;
use crate::shard::Shard;
use serde_json::{json, Map, Value};

fn check_rate(app: &App, events: usize) -> Result<(), ApiError> {
    if app.try_accept_backend_events(events as u32, super::unix_now()) {
        Ok(())
    } else {
        Err(ApiError::new(
            429,
            "Too many events: the app's HTTP API rate limit was exceeded",
        ))
    }
}

/// Hands `batch` to the shard (one barrier for all of it).
async fn publish(shard: &Shard, app: &App, batch: &[ApiEvent]) -> Result<(), ApiError> {
    let channels: Vec<Vec<&str>> = batch
        .iter()
        .map(|e| e.channels.iter().map(String::as_str).collect())
        .collect();
    let events: Vec<_> = batch
        .iter()
        .zip(&channels)
        .map(|(e, c)| (c.as_slice(), e.name.as_str(), e.data.as_str(), e.socket_id))
        .collect();
    shard
        .publish_batch(app, &events)
        .await
        .map_err(|PublishRefused::Busy| {
            ApiError::new(
                429,
                "Server busy: its fan-out queues are full, retry shortly",
            )
        })?;
    for (channels, name, data, _) in &events {
        crate::console::tap::api_publish(app.id(), channels, name, data);
    }
    Ok(())
}

pub(super) async fn trigger(shard: &Shard, app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let event = events::parse_events_body(body, &app.config)?;
    check_rate(app, 1)?;
    publish(shard, app, std::slice::from_ref(&event)).await?;
    if !event.info.any() {
        return Ok(Response::json(200, "{}".into()));
    }
    let counts = channel_counts(shard, app, &event.channels).await?;
    let channels: Map<String, Value> = event
        .channels
        .iter()
        .map(|c| {
            let attributes = attributes(c, counts.channels.get(c.as_str()), event.info);
            (c.clone(), Value::Object(attributes))
        })
        .collect();
    Ok(Response::json(
        200,
        json!({ "channels": channels }).to_string(),
    ))
}

pub(super) async fn trigger_batch(
    shard: &Shard,
    app: &App,
    body: &[u8],
) -> Result<Response, ApiError> {
    let batch = events::parse_batch_body(body, &app.config)?;
    check_rate(app, batch.len())?;
    publish(shard, app, &batch).await?;
    if !batch.iter().any(|e| e.info.any()) {
        return Ok(Response::json(200, "{}".into()));
    }
    let all: Vec<String> = batch
        .iter()
        .flat_map(|e| e.channels.iter().cloned())
        .collect();
    let counts = channel_counts(shard, app, &all).await?;
    let entries: Vec<Value> = batch
        .iter()
        .map(|event| {
            let channel = &event.channels[0];
            let count = counts.channels.get(channel.as_str());
            Value::Object(attributes(channel, count, event.info))
        })
        .collect();
    Ok(Response::json(200, json!({ "batch": entries }).to_string()))
}

pub(super) async fn legacy_trigger(
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
    publish(shard, app, std::slice::from_ref(&event)).await?;
    Ok(Response {
        status: 202,
        content_type: "application/json",
        headers: Vec::new(),
        body: Vec::new(),
    })
}
