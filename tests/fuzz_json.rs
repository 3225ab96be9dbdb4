//! Fuzzing the JSON that comes from outside: client messages (`protocol::inbound::decode` and
//! presence `channel_data`) and the HTTP API's `/events` and `/batch_events` bodies
//! (`http::events`). Arbitrary strings and bytes, deep nesting, and structured-but-wrong JSON
//! (the right keys with the wrong types). Nothing panics, every refusal carries a status or a
//! message, and whatever is accepted satisfies the limits it was checked against.

mod fuzz_support;

use proptest::prelude::*;
use serde_json::{json, Value};
use warren::config::{AppConfig, Config};
use warren::http::events::{self, parse_batch_body, parse_events_body};
use warren::protocol::inbound::{self, ClientMessage};
use warren::protocol::names;

/// Any JSON value, a few levels deep, with strings from a small alphabet so that keys and
/// values sometimes hit the names the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just("event".to_string()),
        Just("channel".to_string()),
        Just("data".to_string()),
        Just("name".to_string()),
        Just("channels".to_string()),
        Just("socket_id".to_string()),
        Just("info".to_string()),
        Just("batch".to_string()),
        Just("user_id".to_string()),
        Just("pusher:subscribe".to_string()),
        Just("private-a".to_string()),
        "[ -~é☃\u{0}]{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(word.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A client message envelope with each field right, wrong-typed or missing.
fn client_message() -> impl Strategy<Value = String> {
    let event = prop_oneof![
        prop::sample::select(vec![
            "pusher:ping",
            "pusher:pong",
            "pusher:subscribe",
            "pusher:unsubscribe",
            "pusher:signin",
            "client-x",
            "other",
        ])
        .prop_map(|e| json!(e)),
        json_value(),
    ];
    let data = prop_oneof![
        json_value(),
        json_value().prop_map(|v| Value::String(v.to_string())),
        (json_value(), json_value(), json_value())
            .prop_map(|(c, a, d)| { json!({"channel": c, "auth": a, "channel_data": d}) }),
        "[a-z-]{0,10}"
            .prop_map(|c| json!({"channel": c, "auth": "k:s", "channel_data": "{\"user_id\":1}"})),
    ];
    (
        prop::option::of(event),
        prop::option::of(json_value()),
        prop::option::of(data),
    )
        .prop_map(|(event, channel, data)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("event", event), ("channel", channel), ("data", data)] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object).to_string()
        })
}

/// Checks what `decode` made of `text`: accepted messages really say what they were decoded to.
fn check_client_message(text: &str) -> Result<(), TestCaseError> {
    let Ok(message) = inbound::decode(text) else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(text).expect("accepted text is JSON");
    let event = value["event"]
        .as_str()
        .expect("accepted text has an event string");
    match message {
        ClientMessage::Ping => prop_assert_eq!(event, "pusher:ping"),
        ClientMessage::Pong => prop_assert_eq!(event, "pusher:pong"),
        ClientMessage::Signin(_) => prop_assert_eq!(event, "pusher:signin"),
        ClientMessage::Subscribe(subscribe) => {
            prop_assert_eq!(event, "pusher:subscribe");
            let data = match &value["data"] {
                Value::String(inner) => serde_json::from_str(inner).expect("data decoded"),
                other => other.clone(),
            };
            prop_assert_eq!(data["channel"].as_str(), Some(subscribe.channel.as_ref()));
            if let Some(warren::protocol::inbound::ChannelData::Signed(channel_data)) =
                &subscribe.channel_data
            {
                check_channel_data(channel_data)?;
            }
        }
        ClientMessage::Unsubscribe { channel } => {
            prop_assert_eq!(event, "pusher:unsubscribe");
            prop_assert!(!channel.is_empty() || text.contains("\"channel\":\"\""));
        }
        ClientMessage::ClientEvent(client_event) => {
            prop_assert!(event.starts_with("client-"));
            prop_assert_eq!(client_event.event.as_ref(), event);
            if let Some(data) = client_event.data {
                prop_assert!(serde_json::from_str::<Value>(data.get()).is_ok());
            }
        }
        ClientMessage::Unknown(name) => prop_assert_eq!(name.as_ref(), event),
    }
    Ok(())
}

/// Presence member data that was accepted has a usable user id.
fn check_channel_data(channel_data: &str) -> Result<(), TestCaseError> {
    if let Ok(member) = inbound::parse_channel_data(channel_data) {
        prop_assert!(!member.user_id.is_empty());
        prop_assert!(member.user_id.len() <= inbound::MAX_USER_ID_LENGTH);
        prop_assert!(serde_json::from_str::<Value>(&member.user_id_json).is_ok());
        if let Some(info) = member.user_info_json {
            prop_assert!(serde_json::from_str::<Value>(&info).is_ok());
        }
    }
    Ok(())
}

/// The embedded default app (parsed once: parsing the configuration dominates a case).
fn app() -> &'static AppConfig {
    static APP: std::sync::LazyLock<AppConfig> =
        std::sync::LazyLock::new(|| Config::embedded_default().apps[0].clone());
    &APP
}

/// An `/events` body (or a batch entry): each field mostly right, sometimes wrong-typed, out
/// of bounds or missing, so that both acceptance and every refusal are reached.
fn event_object() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        8 => "[a-z-]{1,12}".prop_map(Value::String),
        1 => "[ -~]{0,210}".prop_map(Value::String),
        1 => json_value(),
    ];
    let data = prop_oneof![
        8 => "[ -~é]{0,40}".prop_map(Value::String),
        1 => (10_200usize..10_300).prop_map(|n| Value::String("x".repeat(n))),
        1 => json_value(),
    ];
    let channel = prop_oneof![
        8 => "(private-|presence-|private-encrypted-)?[A-Za-z0-9_=@,.;-]{1,20}".prop_map(Value::String),
        1 => "[ -~]{0,210}".prop_map(Value::String),
        1 => json_value(),
    ];
    let channels = prop_oneof![
        6 => prop::collection::vec("(private-encrypted-|presence-|private-)?[a-z]{1,8}", 0..4)
            .prop_map(|c| json!(c)),
        1 => (95usize..105).prop_map(|n| json!((0..n).map(|i| format!("c{i}")).collect::<Vec<_>>())),
        1 => json_value(),
    ];
    let socket_id = prop_oneof![
        4 => "[0-9]{1,6}\\.[0-9]{1,6}".prop_map(Value::String),
        1 => "[0-9.a]{0,8}".prop_map(Value::String),
        1 => json_value(),
    ];
    let info = prop_oneof![
        4 => prop::sample::select(vec!["user_count", "subscription_count", "user_count,subscription_count", ""]).prop_map(|i| json!(i)),
        1 => "[a-z_,]{0,20}".prop_map(Value::String),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, name),
        prop::option::weighted(0.95, data),
        prop::option::weighted(0.6, channel),
        prop::option::weighted(0.5, channels),
        prop::option::of(socket_id),
        prop::option::of(info),
    )
        .prop_map(|(name, data, channel, channels, socket_id, info)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [
                ("name", name),
                ("data", data),
                ("channel", channel),
                ("channels", channels),
                ("socket_id", socket_id),
                ("info", info),
            ] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object)
        })
}

/// What an accepted event must satisfy.
fn check_event(event: &events::ApiEvent, app: &AppConfig) -> Result<(), TestCaseError> {
    prop_assert!(names::valid_event_name(&event.name));
    prop_assert!(event.data.len() <= app.max_event_payload_bytes);
    prop_assert!((1..=events::MAX_CHANNELS_PER_EVENT).contains(&event.channels.len()));
    for channel in &event.channels {
        prop_assert!(events::validate_channel(channel, app).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_support::config(300))]

    #[test]
    fn arbitrary_text_is_decoded_or_refused(text in "\\PC{0,200}") {
        check_client_message(&text)?;
        check_channel_data(&text)?;
    }

    #[test]
    fn structured_but_wrong_client_messages(text in client_message()) {
        check_client_message(&text)?;
    }

    #[test]
    fn arbitrary_api_bodies_are_refused_with_a_status(body in prop::collection::vec(any::<u8>(), 0..300)) {
        for result in [parse_events_body(&body, app()).map(|_| ()), parse_batch_body(&body, app()).map(|_| ())] {
            if let Err(error) = result {
                prop_assert!(matches!(error.status, 400 | 413));
                prop_assert!(!error.message.is_empty());
            }
        }
    }

    #[test]
    fn structured_event_bodies_are_accepted_only_within_the_limits(event in event_object()) {
        let app = app();
        match parse_events_body(event.to_string().as_bytes(), app) {
            Ok(parsed) => check_event(&parsed, app)?,
            Err(error) => prop_assert!(matches!(error.status, 400 | 413), "{error:?}"),
        }
    }

    #[test]
    fn batches_are_all_or_nothing(batch in prop::collection::vec(event_object(), 0..14)) {
        let app = app();
        let body = json!({ "batch": batch }).to_string();
        let each: Vec<_> = batch
            .iter()
            .map(|event| parse_events_body(event.to_string().as_bytes(), app))
            .collect();
        match parse_batch_body(body.as_bytes(), app) {
            Ok(parsed) => {
                prop_assert!(parsed.len() <= app.max_batch_size);
                prop_assert_eq!(parsed.len(), batch.len());
                for (got, alone) in parsed.iter().zip(each) {
                    prop_assert_eq!(Some(got), alone.as_ref().ok());
                    check_event(got, app)?;
                }
            }
            Err(error) => {
                prop_assert!(matches!(error.status, 400 | 413));
                prop_assert!(batch.len() > app.max_batch_size || each.iter().any(Result::is_err));
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_support::config_capped(24, 300))]

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack(depth in 100usize..40_000, open in prop::sample::select(vec!["[", "{\"a\":"])) {
        let deep = format!("{{\"event\":\"client-x\",\"channel\":\"private-a\",\"data\":{}}}", open.repeat(depth));
        prop_assert!(inbound::decode(&deep).is_err());
        prop_assert!(inbound::parse_channel_data(&open.repeat(depth)).is_err());
        let body = format!("{{\"name\":\"e\",\"data\":\"x\",\"channel\":\"c\",\"info\":{}}}", open.repeat(depth));
        prop_assert_eq!(parse_events_body(body.as_bytes(), app()).unwrap_err().status, 400);
    }
}
