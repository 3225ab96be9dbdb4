//! What a connection does with each Pusher message it receives (PROTOCOL.md §2): subscriptions
//! with their signature checks, unsubscriptions, pings and client events. Every refusal is
//! answered on the socket, which stays open.

use crate::app::App;
use crate::auth;
use crate::protocol::codes;
use crate::protocol::inbound::{self, ClientEvent, ClientMessage, Subscribe};
use crate::protocol::names::{self, ChannelKind};
use crate::protocol::outbound::{self, EventData};
use crate::shard::Shard;
use crate::socket::{Connection, PresenceIdentity, Subscription};
use crate::webhooks::WebhookEvent;
use std::rc::Rc;

/// Why a subscription was refused: the `type` of the `pusher:subscription_error` and what the
/// client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SubscriptionRefusal {
    /// A missing or wrong signature, or unusable `channel_data` (status 401).
    Auth(String),
    /// A limit of the app or the connection (status 4100).
    Limit(String),
    /// The channel name breaks the naming rules (status 4009).
    InvalidChannel(String),
}

impl SubscriptionRefusal {
    /// Sends the refusal for `channel` on `conn`.
    fn send(self, conn: &Connection, channel: &str) {
        let (kind, status, message) = match self {
            SubscriptionRefusal::Auth(m) => ("AuthError", codes::SUBSCRIPTION_AUTH_STATUS, m),
            SubscriptionRefusal::Limit(m) => ("LimitReached", codes::OVER_CAPACITY, m),
            SubscriptionRefusal::InvalidChannel(m) => ("InvalidChannel", codes::UNAUTHORIZED, m),
        };
        conn.send_text(&outbound::subscription_error(
            channel, kind, &message, status,
        ));
    }
}

/// Handles one text message from the client.
pub fn handle_text(shard: &Shard, conn: &Rc<Connection>, text: &str) {
    let message = match inbound::decode(text) {
        Ok(message) => message,
        Err(error) => return conn.send_error(None, &error.0),
    };
    match message {
        ClientMessage::Ping => conn.send_text(outbound::PONG),
        ClientMessage::Pong => {}
        ClientMessage::Subscribe(request) => subscribe(shard, conn, request),
        ClientMessage::Unsubscribe { channel } => unsubscribe(shard, conn, &channel),
        ClientMessage::ClientEvent(event) => client_event(shard, conn, event),
        ClientMessage::Signin(request) => sign_in(shard, conn, &request),
        ClientMessage::Unknown(event) => conn.send_error(
            None,
            &format!("Unsupported event received on socket: '{event}'"),
        ),
    }
}

fn subscribe(shard: &Shard, conn: &Rc<Connection>, request: Subscribe<'_>) {
    let channel = request.channel.as_ref();
    let Some(app) = shard.app(conn.app.index) else {
        return;
    };
    if conn.subscription(channel).is_some() {
        return conn.send_error(None, &format!("Existing subscription to channel {channel}"));
    }
    match check_subscription(shard, &app, conn, channel, &request) {
        Ok((ChannelKind::Presence, signed_channel_data)) => {
            let channel_data = signed_channel_data.unwrap_or_default();
            if let Err(refusal) = join_presence(shard, &app, conn, channel, &channel_data) {
                refusal.send(conn, channel);
            }
        }
        // Completed on the shard's fan-out queue, with the replay (shard::cache).
        Ok(_) if names::is_cache_channel(channel) => shard.subscribe_cache_channel(conn, channel),
        Ok(_) => {
            conn.add_subscription(Subscription {
                channel: channel.into(),
                presence: None,
                active: true,
            });
            shard.add_local_subscriber(conn, channel);
            conn.send_text(&outbound::subscription_succeeded(channel));
            crate::console::tap::subscribed(conn.app.id(), channel, conn.socket_id, None);
        }
        Err(refusal) => refusal.send(conn, channel),
    }
}

/// Checks a subscribe request's channel name, the connection's channel limit and the
/// signature; returns the channel's kind and, for a presence channel, the `channel_data`
/// document that was signed (`auth::verify_subscription`).
fn check_subscription(
    shard: &Shard,
    app: &App,
    conn: &Connection,
    channel: &str,
    request: &Subscribe<'_>,
) -> Result<(ChannelKind, Option<String>), SubscriptionRefusal> {
    let max_length = app.config.max_channel_name_length;
    let kind = names::validate_channel_name(channel, max_length).map_err(|invalid| {
        SubscriptionRefusal::InvalidChannel(invalid.message(channel, max_length))
    })?;
    let max_channels = shard.config.server.max_channels_per_connection;
    if conn.subscription_count() >= max_channels {
        let message =
            format!("This connection is subscribed to {max_channels} channels, the most allowed");
        return Err(SubscriptionRefusal::Limit(message));
    }
    if kind == ChannelKind::ServerToUser {
        check_own_user_channel(shard, conn, channel)?;
    }
    if !kind.needs_auth() {
        return Ok((kind, None));
    }
    let socket_id = conn.socket_id.to_string();
    let signed = auth::verify_subscription(app.key(), app.secret(), &socket_id, request)
        .map_err(|e| SubscriptionRefusal::Auth(e.0))?;
    Ok((kind, signed))
}

/// `#server-to-user-{id}` needs no signature, only a socket signed in as `id` (pusher-js
/// subscribes to it after `pusher:signin_success`; PROTOCOL.md §5.2).
fn check_own_user_channel(
    shard: &Shard,
    conn: &Connection,
    channel: &str,
) -> Result<(), SubscriptionRefusal> {
    let user = shard.signed_in_user(conn.socket_id);
    if user.as_deref() == names::server_to_user_id(channel) && user.is_some() {
        return Ok(());
    }
    Err(SubscriptionRefusal::Auth(format!(
        "{channel} is only for a connection signed in as that user"
    )))
}

/// `pusher:signin`: verifies it, answers `pusher:signin_success` (and the watchlist warning),
/// then registers the user with the shard; a refusal is a `pusher:error` and changes nothing.
fn sign_in(shard: &Shard, conn: &Rc<Connection>, request: &inbound::Signin<'_>) {
    let Some(app) = shard.app(conn.app.index) else {
        return;
    };
    let current = shard.signed_in_user(conn.socket_id);
    let socket_id = conn.socket_id.to_string();
    let signed = auth::signin::sign_in(
        app.key(),
        app.secret(),
        &socket_id,
        current.as_ref(),
        request,
    );
    let user = match signed {
        Ok(user) => user,
        Err(refusal) => return conn.send_text(&refusal.error_frame()),
    };
    conn.send_text(&outbound::signin_success(&request.user_data));
    if let Some(over) = user.watchlist_over_limit {
        conn.send_text(&over.error_frame(&user.watchlist));
    }
    if let Err(refusal) = shard.sign_in(conn, &user) {
        conn.send_text(&refusal.error_frame());
    }
}

/// Starts a presence join (the answer comes back from the channel's home shard).
fn join_presence(
    shard: &Shard,
    app: &App,
    conn: &Rc<Connection>,
    channel: &str,
    channel_data: &str,
) -> Result<(), SubscriptionRefusal> {
    let member = inbound::parse_channel_data(channel_data)
        .map_err(|error| SubscriptionRefusal::Auth(error.0))?;
    let max_info = app.config.max_presence_user_info_bytes;
    if member.user_info_json.as_ref().map_or(0, String::len) > max_info {
        let message = format!("Presence user_info is larger than {max_info} bytes");
        // The hosted service's code for an oversized member (PROTOCOL.md §2.6).
        conn.send_text(&outbound::subscription_error(
            channel,
            "LimitReached",
            &message,
            codes::MEMBER_TOO_LARGE,
        ));
        return Ok(());
    }
    conn.add_subscription(Subscription {
        channel: channel.into(),
        presence: Some(PresenceIdentity {
            user_id: member.user_id.clone(),
        }),
        active: false,
    });
    let user = Some(member.user_id.as_str());
    crate::console::tap::subscribed(conn.app.id(), channel, conn.socket_id, user);
    shard.presence_join(conn, channel, member);
    Ok(())
}

fn unsubscribe(shard: &Shard, conn: &Rc<Connection>, channel: &str) {
    match conn.remove_subscription(channel) {
        Some(subscription) => {
            shard.leave_channel(conn, subscription);
            crate::console::tap::unsubscribed(conn.app.id(), channel, conn.socket_id);
        }
        None => conn.send_error(
            None,
            &format!("No current subscription to channel {channel}, or subscription in progress"),
        ),
    }
}

/// Reports a relayed client event to the app's webhooks, with `data` as a string.
fn emit_client_event_webhook(
    shard: &Shard,
    conn: &Connection,
    channel: &str,
    event: &str,
    data: EventData<'_>,
    user_id: Option<&str>,
) {
    if !shard.webhooks_enabled(conn.app.index) {
        return;
    }
    let data = match data {
        EventData::JsonString(literal) => serde_json::from_str::<String>(literal).ok(),
        EventData::Text(text) | EventData::Json(text) => Some(text.to_string()),
        EventData::Absent => None,
    };
    shard.emit_webhook(
        conn.app.index,
        WebhookEvent::ClientEvent {
            channel: channel.to_string(),
            event: event.to_string(),
            data,
            socket_id: conn.socket_id.to_string(),
            user_id: user_id.map(str::to_string),
        },
    );
}

/// The size of client-event data as the limit counts it: a string's decoded length, or the JSON
/// text of anything else (which is what is relayed inside the string).
fn relayed_data_len(data: &serde_json::value::RawValue) -> usize {
    let raw = data.get();
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner.len(),
        Some(_) => serde_json::from_str::<String>(raw).map_or(raw.len(), |s| s.len()),
        None => raw.len(),
    }
}

/// Why a client event was refused: a metric label, and the `pusher:error` sent back.
struct Rejection {
    reason: &'static str,
    code: Option<u16>,
    message: String,
}

fn reject(reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        code: None,
        message: message.into(),
    }
}

/// Checks a client event against the protocol's rules and the app's limits; returns the
/// sender's subscription to the event's channel.
fn check_client_event(
    shard: &Shard,
    conn: &Connection,
    event: &ClientEvent<'_>,
) -> Result<Subscription, Rejection> {
    let app = shard
        .app(conn.app.index)
        .ok_or_else(|| reject("no_app", "Client event rejected: unknown app"))?;
    let app = &app.config;
    if !app.enable_client_events {
        return Err(reject(
            "disabled",
            "To send client events, you must enable this feature in the Settings page of your dashboard.",
        ));
    }
    let channel = event
        .channel
        .as_deref()
        .ok_or_else(|| reject("no_channel", "Client event rejected: no channel given"))?;
    if !names::valid_event_name_within(&event.event, app.max_event_name_length) {
        return Err(reject(
            "bad_name",
            format!(
                "Client event rejected: event name longer than {} characters",
                app.max_event_name_length
            ),
        ));
    }
    if !ChannelKind::of(channel).allows_client_events() {
        return Err(reject(
            "public_channel",
            format!("Client event rejected: {channel} is not a private or presence channel"),
        ));
    }
    let subscription = conn.subscription(channel).filter(|s| s.active).ok_or_else(|| {
        reject(
            "not_subscribed",
            format!("Cannot broadcast client event (connection not subscribed to channel {channel})"),
        )
    })?;
    if event.data.map_or(0, relayed_data_len) > app.max_event_payload_bytes {
        return Err(reject(
            "too_large",
            format!(
                "Client event rejected: data larger than {} bytes",
                app.max_event_payload_bytes
            ),
        ));
    }
    if !conn.allow_client_event(shard.now(), app.max_client_events_per_second) {
        return Err(Rejection {
            reason: "rate_limit",
            code: Some(codes::CLIENT_EVENT_RATE_LIMIT),
            message: "Client event rejected due to rate limit".into(),
        });
    }
    Ok(subscription)
}

fn client_event(shard: &Shard, conn: &Rc<Connection>, event: ClientEvent<'_>) {
    let subscription = match check_client_event(shard, conn, &event) {
        Ok(subscription) => subscription,
        Err(rejection) => {
            crate::metrics::with(|m| m.client_event_rejected(rejection.reason));
            return conn.send_error(rejection.code, &rejection.message);
        }
    };
    let channel = &*subscription.channel;
    let data = event.data.map_or(EventData::Absent, |raw| {
        outbound::relayed_client_data(raw.get(), conn.app.config.compat)
    });
    let user_id = subscription.presence.as_ref().map(|p| p.user_id.as_str());
    emit_client_event_webhook(shard, conn, channel, &event.event, data, user_id);
    let raw_data = event.data.map_or("", |raw| raw.get());
    crate::console::tap::client_event(
        conn.app.id(),
        channel,
        &event.event,
        conn.socket_id,
        raw_data,
    );
    let except = Some(conn.socket_id);
    shard.publish_event(&conn.app, &[channel], &event.event, data, user_id, except);
}
