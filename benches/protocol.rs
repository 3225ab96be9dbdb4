//! Per-message costs on the hot paths: encoding a broadcast frame, parsing client messages
//! (serde_json with borrowed fields and `RawValue`), and checking a channel signature.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use warren::auth;
use warren::protocol::inbound;
use warren::protocol::outbound::{self, EventData};
use warren::ws::frame;

fn encode(c: &mut Criterion) {
    let data = "x".repeat(100);
    c.bench_function("encode broadcast frame (100-byte data)", |b| {
        b.iter(|| {
            let text = outbound::channel_event(
                "my-event",
                "my-channel",
                EventData::Text(black_box(&data)),
                None,
            );
            frame::shared_text_frame(&text)
        })
    });
}

fn parse(c: &mut Criterion) {
    let messages = [
        ("ping", r#"{"event":"pusher:ping","data":{}}"#),
        (
            "subscribe",
            r#"{"event":"pusher:subscribe","data":{"auth":"app-key:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4","channel":"private-foobar"}}"#,
        ),
        (
            "presence subscribe",
            r#"{"event":"pusher:subscribe","data":{"auth":"app-key:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80","channel":"presence-foobar","channel_data":"{\"user_id\":10,\"user_info\":{\"name\":\"Mr. Channels\"}}"}}"#,
        ),
        (
            "client event",
            r#"{"event":"client-typing","channel":"private-chat","data":{"user":"alice","typing":true}}"#,
        ),
    ];
    for (name, text) in messages {
        c.bench_function(&format!("parse {name}"), |b| {
            b.iter(|| inbound::decode(black_box(text)).is_ok())
        });
    }
}

fn signature(c: &mut Criterion) {
    let signed = auth::channel_string_to_sign("1234.1234", "private-foobar", None);
    let auth = format!("key:{}", auth::sign("secret", &signed));
    c.bench_function("verify private channel auth", |b| {
        b.iter(|| {
            auth::verify_channel_auth("key", "secret", black_box(&signed), black_box(&auth)).is_ok()
        })
    });
    // What a private subscribe pays per channel: the string to sign is built, then checked.
    c.bench_function("sign string + verify private channel auth", |b| {
        b.iter(|| {
            let signed = auth::channel_string_to_sign(
                black_box("1234.1234"),
                black_box("private-foobar"),
                None,
            );
            auth::verify_channel_auth("key", "secret", &signed, black_box(&auth)).is_ok()
        })
    });
}

criterion_group!(benches, encode, parse, signature, serde_json_vs_simd_json);
criterion_main!(benches);

/// The shape of a client message as the decoder reads it, for comparing the two JSON parsers on
/// the same borrowed structure.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

fn serde_json_vs_simd_json(c: &mut Criterion) {
    let client_event = br#"{"event":"client-typing","channel":"private-chat","data":{"user":"alice","typing":true}}"#;
    c.bench_function(
        "client message: serde_json (borrowed, RawValue data)",
        |b| b.iter(|| serde_json::from_slice::<Envelope>(black_box(client_event)).is_ok()),
    );
    c.bench_function(
        "client message: simd-json (owned value, copy of the frame)",
        |b| {
            b.iter(|| {
                let mut bytes = black_box(client_event).to_vec();
                simd_json::to_owned_value(&mut bytes).is_ok()
            })
        },
    );
    let channels: Vec<String> = (0..100).map(|i| format!("\"channel-{i}\"")).collect();
    let body = format!(
        r#"{{"name":"my-event","channels":[{}],"data":"{}"}}"#,
        channels.join(","),
        "x".repeat(10_000)
    );
    c.bench_function(
        "HTTP events body (100 channels, 10 KB data): serde_json",
        |b| {
            b.iter(|| {
                serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).is_ok()
            })
        },
    );
    c.bench_function(
        "HTTP events body (100 channels, 10 KB data): simd-json",
        |b| {
            b.iter(|| {
                let mut bytes = black_box(body.as_bytes()).to_vec();
                simd_json::to_owned_value(&mut bytes).is_ok()
            })
        },
    );
}
