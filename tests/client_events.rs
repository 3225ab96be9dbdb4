//! Client events (PROTOCOL.md §2.7): relayed to the other subscribers on every shard with `data`
//! as a string, never echoed, `user_id` added on presence channels, refused on public channels,
//! when not subscribed and when the app disables them, rate-limited with 4301 without closing, and
//! size-limited.

mod common;

use common::Client;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A sender on shard 0 and receivers on both shards, all subscribed to private `channel`.
fn trio(addr: SocketAddr, channel: &str) -> (Client, Client, Client) {
    let mut sender = Client::connect_on_shard(addr, 0);
    let mut same_shard = Client::connect_on_shard(addr, 0);
    let mut other_shard = Client::connect_on_shard(addr, 1);
    for c in [&mut sender, &mut same_shard, &mut other_shard] {
        c.subscribe_private(channel);
    }
    (sender, same_shard, other_shard)
}

#[test]
fn object_data_is_relayed_as_a_json_string_to_both_shards_and_not_echoed() {
    let server = common::start_default();
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), "private-chat");
    sender.trigger("client-typing", "private-chat", Some(json!({"x": 1})));
    let expected =
        json!({"event": "client-typing", "channel": "private-chat", "data": "{\"x\":1}"});
    assert_eq!(r0.recv(), expected);
    assert_eq!(r1.recv(), expected);
    sender.expect_quiet();
    // The other direction too: a sender on shard 1.
    r1.trigger(
        "client-reply",
        "private-chat",
        Some(json!({"y": [1, 2, {"z": null}]})),
    );
    for c in [&mut sender, &mut r0] {
        let got = c.recv();
        assert_eq!(got["event"], "client-reply");
        assert_eq!(got["channel"], "private-chat");
        let data: Value = serde_json::from_str(got["data"].as_str().expect("string data")).unwrap();
        assert_eq!(data, json!({"y": [1, 2, {"z": null}]}));
        assert!(
            got.get("user_id").is_none(),
            "no user_id on private channels: {got}"
        );
    }
    r1.expect_quiet();
}

#[test]
fn object_data_is_relayed_byte_for_byte() {
    let server = common::start_default();
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), "private-raw");
    // Key order and spacing of the client's JSON are kept.
    let raw = r#"{"event":"client-raw","channel":"private-raw","data":{"b":2, "a":"é\n"}}"#;
    sender.send_text(raw);
    for c in [&mut r0, &mut r1] {
        let got = c.recv();
        assert_eq!(got["data"], r#"{"b":2, "a":"é\n"}"#, "{got}");
    }
}

#[test]
fn string_data_is_relayed_exactly() {
    let server = common::start_default();
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), "private-str");
    for data in [
        "hello",
        "",
        r#"{"already":"encoded"}"#,
        "quotes \" and \\ backslashes\n and unicode ☃",
    ] {
        sender.trigger("client-s", "private-str", Some(json!(data)));
        let expected = json!({"event": "client-s", "channel": "private-str", "data": data});
        assert_eq!(r0.recv(), expected);
        assert_eq!(r1.recv(), expected);
    }
    sender.expect_quiet();
}

#[test]
fn numbers_booleans_and_arrays_are_relayed_as_their_json_text() {
    let server = common::start_default();
    let (mut sender, mut r0, _r1) = trio(server.local_addr(), "private-scalars");
    for (data, text) in [
        (json!(42), "42"),
        (json!(true), "true"),
        (json!([1, "a"]), r#"[1,"a"]"#),
    ] {
        sender.trigger("client-v", "private-scalars", Some(data));
        assert_eq!(r0.recv()["data"], text);
    }
}

#[test]
fn absent_or_null_data_is_accepted_and_relayed_without_data() {
    let server = common::start_default();
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), "private-nodata");
    sender.trigger("client-poke", "private-nodata", None);
    let expected = json!({"event": "client-poke", "channel": "private-nodata"});
    assert_eq!(r0.recv(), expected);
    assert_eq!(r1.recv(), expected);
    sender.send_text(r#"{"event":"client-poke","channel":"private-nodata","data":null}"#);
    assert_eq!(r0.recv(), expected);
    assert_eq!(r1.recv(), expected);
    sender.expect_quiet();
}

#[test]
fn presence_client_events_carry_the_senders_user_id() {
    let server = common::start_default();
    let addr = server.local_addr();
    let channel = "presence-chat";
    let mut alice = Client::connect_on_shard(addr, 0);
    let mut bob = Client::connect_on_shard(addr, 1);
    let mut carol = Client::connect_on_shard(addr, 0);
    alice.subscribe_presence(channel, r#"{"user_id":"alice"}"#);
    bob.subscribe_presence(channel, r#"{"user_id":42,"user_info":{"n":1}}"#);
    carol.subscribe_presence(channel, r#"{"user_id":"carol"}"#);
    // Drain the member_added events.
    for _ in 0..2 {
        alice.expect_event("pusher_internal:member_added");
    }
    bob.expect_event("pusher_internal:member_added");

    // The payload cannot spoof user_id: the server takes it from the membership.
    bob.send_text(
        r#"{"event":"client-msg","channel":"presence-chat","data":{"t":"hi"},"user_id":"alice"}"#,
    );
    for c in [&mut alice, &mut carol] {
        assert_eq!(
            c.recv(),
            json!({"event": "client-msg", "channel": channel, "data": "{\"t\":\"hi\"}", "user_id": "42"})
        );
    }
    bob.expect_quiet();
    alice.trigger("client-msg", channel, Some(json!("yo")));
    for c in [&mut bob, &mut carol] {
        assert_eq!(
            c.recv(),
            json!({"event": "client-msg", "channel": channel, "data": "yo", "user_id": "alice"})
        );
    }
    alice.expect_quiet();
}

#[test]
fn client_events_on_public_channels_are_refused() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut sender = Client::connect(addr);
    let mut receiver = Client::connect(addr);
    for channel in ["public-room", "cache-room", "foo-private-bar"] {
        for client in [&mut sender, &mut receiver] {
            client.subscribe(channel);
            if channel.starts_with("cache-") {
                client.expect_event("pusher:cache_miss");
            }
        }
        sender.trigger("client-x", channel, Some(json!({"a": 1})));
        let error = sender.expect_error();
        assert!(error["code"].is_null(), "{error}");
        receiver.expect_quiet();
        sender.ping_pong();
    }
}

#[test]
fn client_events_without_a_subscription_are_refused() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut outsider = Client::connect(addr);
    let mut member = Client::connect(addr);
    member.subscribe_private("private-chat");
    outsider.trigger("client-x", "private-chat", Some(json!({})));
    let error = outsider.expect_error();
    assert_eq!(
        error,
        json!({"code": null, "message": "Cannot broadcast client event (connection not subscribed to channel private-chat)"})
    );
    member.expect_quiet();
    // Subscribed to a different channel is no better.
    outsider.subscribe_private("private-elsewhere");
    outsider.trigger("client-x", "private-chat", Some(json!({})));
    outsider.expect_error();
    member.expect_quiet();
    outsider.ping_pong();
}

#[test]
fn a_presence_join_still_in_flight_does_not_allow_client_events() {
    let server = common::start_default();
    let addr = server.local_addr();
    let channel = (0..)
        .map(|i| format!("presence-inflight-{i}"))
        .find(|c| warren::channels::home_shard(0, c, common::SHARDS) == 1)
        .unwrap();
    let mut member = Client::connect_on_shard(addr, 1);
    member.subscribe_presence(&channel, r#"{"user_id":"member"}"#);
    // The sender lives on shard 0 and the roster on shard 1: its join is a round trip.
    let mut sender = Client::connect_on_shard(addr, 0);
    let data = r#"{"user_id":"sender"}"#;
    let auth = sender.auth(&channel, Some(data));
    let subscribe = json!({"event": "pusher:subscribe",
        "data": {"channel": channel, "auth": auth, "channel_data": data}});
    let event = json!({"event": "client-early", "channel": channel, "data": "too soon"});
    let mut bytes = common::masked(common::TEXT, true, subscribe.to_string().as_bytes());
    bytes.extend(common::masked(
        common::TEXT,
        true,
        event.to_string().as_bytes(),
    ));
    sender.send_raw(&bytes);
    let first = sender.recv();
    if first["event"] == "pusher:error" {
        // Refused as not (yet) subscribed; the subscription then completes.
        assert_eq!(
            first["data"]["message"],
            format!(
                "Cannot broadcast client event (connection not subscribed to channel {channel})"
            )
        );
        sender.expect_subscribed(&channel);
        let added = member.expect_event("pusher_internal:member_added");
        assert_eq!(common::data_of(&added), json!({"user_id": "sender"}));
        member.expect_quiet();
    } else {
        // Or the join completed first, and then the event is relayed.
        assert_eq!(
            first["event"], "pusher_internal:subscription_succeeded",
            "{first}"
        );
        member.expect_event("pusher_internal:member_added");
        assert_eq!(member.recv()["event"], "client-early");
    }
    // Once subscribed, client events go through.
    sender.trigger("client-late", &channel, Some(json!("now")));
    assert_eq!(
        member.recv(),
        json!({"event": "client-late", "channel": channel, "data": "now", "user_id": "sender"})
    );
}

#[test]
fn client_events_with_a_bad_shape_are_refused() {
    let server = common::start_default();
    let addr = server.local_addr();
    let (mut sender, mut r0, mut r1) = trio(addr, "private-shape");
    let long_name = format!("client-{}", "e".repeat(194));
    for bad in [
        json!({"event": "client-nochannel", "data": {}}),
        json!({"event": long_name, "channel": "private-shape", "data": {}}),
    ] {
        sender.send_json(&bad);
        let error = sender.expect_error();
        assert!(error["code"].is_null(), "{bad}: {error}");
    }
    // 200 characters is the longest allowed event name.
    let longest = format!("client-{}", "e".repeat(193));
    sender.trigger(&longest, "private-shape", None);
    assert_eq!(r0.recv()["event"], longest.as_str());
    assert_eq!(r1.recv()["event"], longest.as_str());
    r0.expect_quiet();
}

#[test]
fn client_events_are_refused_when_the_app_disables_them() {
    let mut config = common::config();
    let mut quiet_app = common::extra_app(&config, "2", "quiet-key", "quiet-secret");
    quiet_app.enable_client_events = false;
    config.apps.push(quiet_app);
    let server = common::start(config);
    let addr = server.local_addr();
    let path = "/app/quiet-key?protocol=7&client=test&version=1";
    let mut sender = Client::connect_path(addr, path);
    let mut receiver = Client::connect_path(addr, path);
    for c in [&mut sender, &mut receiver] {
        c.subscribe_private_with("quiet-key", "quiet-secret", "private-q");
    }
    sender.trigger("client-x", "private-q", Some(json!({})));
    let error = sender.expect_error();
    assert!(error["code"].is_null() || error["code"] == 4301, "{error}");
    assert_eq!(
        error["message"],
        "To send client events, you must enable this feature in the Settings page of your dashboard."
    );
    receiver.expect_quiet();
    sender.ping_pong();
    // The default app on the same server still relays them.
    let (mut s, mut r, _) = trio(addr, "private-loud");
    s.trigger("client-x", "private-loud", None);
    assert_eq!(r.recv()["event"], "client-x");
}

#[test]
fn rate_limit_is_10_per_second_with_4301_and_the_socket_stays_open() {
    let server = common::start_default();
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), "private-fast");
    // Let the connection's first rate window expire, so the burst below opens a fresh one and
    // fits inside it.
    std::thread::sleep(Duration::from_millis(1200));
    let burst: Vec<u8> = (0..15)
        .flat_map(|i| {
            let message = json!({"event": "client-n", "channel": "private-fast", "data": i});
            common::masked(common::TEXT, true, message.to_string().as_bytes())
        })
        .collect();
    let sent_at = Instant::now();
    sender.send_raw(&burst);
    for _ in 10..15 {
        let error = sender.expect_error();
        assert_eq!(
            error,
            json!({"code": 4301, "message": "Client event rejected due to rate limit"})
        );
    }
    for receiver in [&mut r0, &mut r1] {
        for i in 0..10 {
            let got = receiver.recv();
            assert_eq!(got["event"], "client-n");
            assert_eq!(got["data"], i.to_string(), "{got}");
        }
        receiver.expect_quiet();
    }
    assert!(
        sent_at.elapsed() < Duration::from_millis(900),
        "the test was too slow"
    );
    // Still open, and allowed again in the next second.
    sender.ping_pong();
    std::thread::sleep(Duration::from_millis(1200));
    sender.trigger("client-n", "private-fast", Some(json!("again")));
    assert_eq!(r0.recv()["data"], "again");
    assert_eq!(r1.recv()["data"], "again");
    sender.expect_quiet();
}

#[test]
fn data_over_the_payload_limit_is_refused() {
    let server = common::start_default();
    let (mut sender, mut r0, _r1) = trio(server.local_addr(), "private-big");
    // The default limit is 10240 bytes of data.
    sender.trigger("client-big", "private-big", Some(json!("x".repeat(11_000))));
    let error = sender.expect_error();
    assert!(error["code"].is_null(), "{error}");
    r0.expect_quiet();
    sender.ping_pong();
    let big_object = json!({"blob": "y".repeat(10_300)});
    sender.trigger("client-big", "private-big", Some(big_object));
    sender.expect_error();
    r0.expect_quiet();
    // Just under the limit is relayed.
    sender.trigger("client-big", "private-big", Some(json!("z".repeat(10_000))));
    assert_eq!(r0.recv()["data"].as_str().unwrap().len(), 10_000);
}

fn payload_limit_1000() -> (warren::server::ServerHandle, Client, Client) {
    let mut config = common::config();
    config.apps[0].max_event_payload_bytes = 1000;
    let server = common::start(config);
    let (sender, r0, _r1) = trio(server.local_addr(), "private-edge");
    (server, sender, r0)
}

#[test]
fn object_data_of_exactly_the_payload_limit_is_relayed() {
    let (_server, mut sender, mut r0) = payload_limit_1000();
    // Measured as the JSON text that is relayed.
    let object = json!({ "k": "o".repeat(992) });
    assert_eq!(object.to_string().len(), 1000);
    sender.trigger("client-e", "private-edge", Some(object));
    assert_eq!(r0.recv()["data"].as_str().unwrap().len(), 1000);
    sender.trigger(
        "client-e",
        "private-edge",
        Some(json!({ "k": "o".repeat(993) })),
    );
    sender.expect_error();
    r0.expect_quiet();
}

#[test]
fn string_data_of_exactly_the_payload_limit_is_relayed() {
    let (_server, mut sender, mut r0) = payload_limit_1000();
    // The relayed data is the string itself: 1000 bytes fit a 1000-byte limit, however many
    // bytes its JSON encoding (quotes, escapes) takes on the wire.
    sender.trigger("client-e", "private-edge", Some(json!("s".repeat(1000))));
    let got = sender_result(&mut sender, &mut r0);
    assert_eq!(got.len(), 1000);
    let quotes = "\"".repeat(600);
    sender.trigger("client-e", "private-edge", Some(json!(quotes)));
    assert_eq!(sender_result(&mut sender, &mut r0), quotes);
    sender.trigger("client-e", "private-edge", Some(json!("s".repeat(1001))));
    sender.expect_error();
    r0.expect_quiet();
}

/// The data the receiver got, or a panic naming the sender's error.
fn sender_result(sender: &mut Client, receiver: &mut Client) -> String {
    if let Ok(common::Frame::Text(text)) = sender.try_frame(common::QUIET) {
        panic!("refused: {text}");
    }
    receiver.recv()["data"].as_str().unwrap().to_string()
}

#[test]
fn encrypted_channels_relay_client_events_untouched() {
    let server = common::start_default();
    let channel = "private-encrypted-box";
    let (mut sender, mut r0, mut r1) = trio(server.local_addr(), channel);
    let data = json!({"nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy"});
    sender.trigger("client-sealed", channel, Some(json!(data.to_string())));
    for c in [&mut r0, &mut r1] {
        assert_eq!(c.recv()["data"], data.to_string());
    }
}
