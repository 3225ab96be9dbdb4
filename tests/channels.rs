//! Subscriptions (PROTOCOL.md §2.2–2.5, §3, §4): public, private and encrypted channels, the
//! signature checks, duplicate subscriptions, unsubscribing, and invalid channel names. Every
//! refusal leaves the socket open and usable.

mod common;

use common::{Client, KEY, SECRET};
use serde_json::json;

#[test]
fn public_subscription_succeeds_with_string_data() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    client.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "my-channel"}}));
    assert_eq!(
        client.recv(),
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "my-channel", "data": "{}"})
    );
    // pusher-js sends auth "" for public channels.
    client.subscribe("other-channel");
    // The characters the protocol allows, and a name of exactly 200 characters.
    client.subscribe("a-b_c=d@e,f.g;h");
    client.subscribe(&"x".repeat(200));
    // cache- and look-alike prefixes are public (a cache channel adds its replay or a miss).
    client.subscribe("cache-prices");
    client.expect_event("pusher:cache_miss");
    client.subscribe("foo-private-bar");
    client.expect_quiet();
}

#[test]
fn subscribe_data_may_be_a_json_string() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    client.send_text(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"stringly\"}"}"#);
    client.expect_subscribed("stringly");
    let channel = "private-stringly";
    let auth = client.auth(channel, None);
    let inner = json!({"channel": channel, "auth": auth}).to_string();
    client.send_json(&json!({"event": "pusher:subscribe", "data": inner}));
    client.expect_subscribed(channel);
}

#[test]
fn duplicate_subscription_is_an_error_and_the_subscription_stays() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    client.subscribe("test-channel");
    client.send_subscribe("test-channel", Some(""), None);
    let error = client.expect_error();
    assert_eq!(
        error,
        json!({"code": null, "message": "Existing subscription to channel test-channel"})
    );
    client.ping_pong();
    // Same for a private channel; the first subscription still works (it relays events).
    let mut peer = Client::connect(addr);
    client.subscribe_private("private-dup");
    peer.subscribe_private("private-dup");
    let auth = client.auth("private-dup", None);
    client.send_subscribe("private-dup", Some(&auth), None);
    let error = client.expect_error();
    assert_eq!(
        error["message"],
        "Existing subscription to channel private-dup"
    );
    peer.trigger("client-x", "private-dup", Some(json!("still here")));
    assert_eq!(
        client.recv(),
        json!({"event": "client-x", "channel": "private-dup", "data": "still here"})
    );
}

#[test]
fn unsubscribe_is_silent_and_unsubscribing_twice_is_an_error() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    client.subscribe("room");
    client.unsubscribe("room");
    client.expect_quiet();
    client.unsubscribe("room");
    let error = client.expect_error();
    assert_eq!(
        error,
        json!({"code": null, "message": "No current subscription to channel room, or subscription in progress"})
    );
    client.unsubscribe("never-subscribed");
    let error = client.expect_error();
    assert!(error["code"].is_null(), "{error}");
    assert_eq!(
        error["message"],
        "No current subscription to channel never-subscribed, or subscription in progress"
    );
    // Subscribing again after an unsubscribe works.
    client.subscribe("room");
    client.ping_pong();
}

#[test]
fn unsubscribed_socket_no_longer_receives_channel_events() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut sender = Client::connect_on_shard(addr, 0);
    let mut leaver = Client::connect_on_shard(addr, 1);
    let mut stayer = Client::connect_on_shard(addr, 1);
    for c in [&mut sender, &mut leaver, &mut stayer] {
        c.subscribe_private("private-room");
    }
    leaver.unsubscribe("private-room");
    leaver.expect_quiet();
    sender.trigger("client-a", "private-room", Some(json!({"n": 1})));
    assert_eq!(stayer.recv()["event"], "client-a");
    leaver.expect_quiet();
    // And it may not send on it any more either.
    leaver.trigger("client-b", "private-room", Some(json!({})));
    let error = leaver.expect_error();
    assert_eq!(
        error["message"],
        "Cannot broadcast client event (connection not subscribed to channel private-room)"
    );
    stayer.expect_quiet();
}

#[test]
fn private_channel_with_a_correct_signature_succeeds() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    let auth = client.auth("private-foobar", None);
    client.send_subscribe("private-foobar", Some(&auth), None);
    assert_eq!(
        client.recv(),
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "private-foobar", "data": "{}"})
    );
    client.subscribe_private("private-encrypted-secret");
    client.subscribe_private("private-cache-x");
}

#[test]
fn private_channel_auth_failures_are_auth_errors_and_the_socket_stays_usable() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    let other = Client::connect(addr);
    let channel = "private-secret";
    let good = client.auth(channel, None);
    let signature = good.split_once(':').unwrap().1.to_string();
    let wrong_secret = common::auth_for(KEY, "not-the-secret", &client.socket_id, channel, None);
    let other_socket = common::auth_for(KEY, SECRET, &other.socket_id, channel, None);
    let other_channel = client.auth("private-other", None);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing auth", None),
        ("empty auth", Some(String::new())),
        ("wrong secret", Some(wrong_secret)),
        ("signed for another socket", Some(other_socket)),
        ("signed for another channel", Some(other_channel)),
        ("wrong key", Some(format!("other-key:{signature}"))),
        ("no key", Some(signature.clone())),
        ("truncated", Some(format!("{KEY}:{}", &signature[..32]))),
        ("not hex", Some(format!("{KEY}:{}", "zz".repeat(32)))),
    ];
    for (what, auth) in cases {
        client.send_subscribe(channel, auth.as_deref(), None);
        let error = client.expect_subscription_error(channel);
        assert_eq!(error["type"], "AuthError", "{what}: {error}");
        assert_eq!(error["status"], 401, "{what}: {error}");
        client.ping_pong();
    }
    // Not subscribed after all that: a correct subscription now succeeds (no "Existing
    // subscription" error), and so do other channels.
    client.send_subscribe(channel, Some(&good), None);
    client.expect_subscribed(channel);
    client.subscribe("public-after-errors");
}

#[test]
fn a_failed_private_subscription_does_not_deliver_events() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut sender = Client::connect(addr);
    let mut intruder = Client::connect(addr);
    sender.subscribe_private("private-x");
    intruder.send_subscribe("private-x", Some("app-key:0000"), None);
    intruder.expect_subscription_error("private-x");
    sender.trigger("client-secret", "private-x", Some(json!("psst")));
    intruder.expect_quiet();
}

#[test]
fn another_apps_signature_is_refused() {
    let mut config = common::config();
    config
        .apps
        .push(common::extra_app(&config, "2", "key-two", "secret-two"));
    let server = common::start(config);
    let mut client = Client::connect(server.local_addr());
    let auth = common::auth_for(
        "key-two",
        "secret-two",
        &client.socket_id,
        "private-a",
        None,
    );
    client.send_subscribe("private-a", Some(&auth), None);
    let error = client.expect_subscription_error("private-a");
    assert_eq!(error["type"], "AuthError");
    // The second app's own clients use its key and secret.
    let mut two = Client::connect_path(
        server.local_addr(),
        "/app/key-two?protocol=7&client=test&version=1",
    );
    two.subscribe_private_with("key-two", "secret-two", "private-a");
}

#[test]
fn invalid_channel_names_are_subscription_errors_and_the_socket_stays_usable() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    let too_long = "a".repeat(201);
    let names = [
        ":",
        "a:b",
        "has space",
        "#foo",
        "#server-to-user-",
        "é",
        "tab\tname",
        "slash/name",
        too_long.as_str(),
        "private-",
    ];
    for name in names {
        client.send_subscribe(name, Some(""), None);
        let message = client.recv();
        assert_eq!(
            message["event"], "pusher:subscription_error",
            "channel {name:?}: {message}"
        );
        assert_eq!(message["channel"], name, "{message}");
        assert!(message["data"]["type"].is_string(), "{message}");
        assert!(message["data"]["error"].is_string(), "{message}");
        client.ping_pong();
    }
    client.send_subscribe("", Some(""), None);
    let message = client.recv();
    assert!(
        message["event"] == "pusher:subscription_error" || message["event"] == "pusher:error",
        "empty channel name: {message}"
    );
    client.ping_pong();
    client.subscribe("valid-after-invalid");
}

#[test]
fn subscribe_without_a_channel_is_an_error() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    for bad in [
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
        r#"{"event":"pusher:subscribe","data":"not json"}"#,
        r#"{"event":"pusher:subscribe","data":null}"#,
        r#"{"event":"pusher:unsubscribe","data":{}}"#,
    ] {
        client.send_text(bad);
        let error = client.expect_error();
        assert!(error["code"].is_null(), "{bad}: {error}");
        client.ping_pong();
    }
}

#[test]
fn many_channels_on_one_socket() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    let mut peer = Client::connect(addr);
    for i in 0..100 {
        client.subscribe_private(&format!("private-many-{i}"));
    }
    for i in (0..100).step_by(17) {
        let channel = format!("private-many-{i}");
        peer.subscribe_private(&channel);
        peer.trigger("client-n", &channel, Some(json!(i)));
        let got = client.recv();
        assert_eq!(got["channel"], channel.as_str());
        assert_eq!(got["data"], i.to_string());
    }
}
