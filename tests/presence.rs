//! Presence channels across shards (PROTOCOL.md §2.3, §2.6, §7): one member per user however many
//! sockets it has, `member_added` on a user's first socket only, `member_removed` after its last
//! socket leaves (by unsubscribe or disconnect), never sent to the socket that caused it, user ids
//! echoed exactly, and the member and `user_info` limits.

mod common;

use common::{data_of, Client};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use warren::channels::home_shard;

/// A presence channel name whose roster lives on `shard` (app index 0).
fn channel_homed_on(shard: usize) -> String {
    (0..)
        .map(|i| format!("presence-room-{i}"))
        .find(|c| home_shard(0, c, common::SHARDS) == shard)
        .unwrap()
}

fn ids(presence: &Value) -> BTreeSet<String> {
    presence["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids is not an array: {presence}"))
        .iter()
        .map(|id| {
            id.as_str()
                .unwrap_or_else(|| panic!("ids must be strings: {presence}"))
                .to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Checks `presence` lists exactly `members` (user id → user_info), once each.
fn assert_roster(presence: &Value, members: &[(&str, Value)]) {
    let expected: BTreeSet<String> = members.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(ids(presence), expected, "ids in {presence}");
    assert_eq!(
        presence["ids"].as_array().unwrap().len(),
        members.len(),
        "ids listed more than once: {presence}"
    );
    assert_eq!(presence["count"], members.len(), "count in {presence}");
    let hash = presence["hash"]
        .as_object()
        .unwrap_or_else(|| panic!("hash is not an object: {presence}"));
    assert_eq!(hash.len(), members.len(), "hash in {presence}");
    for (id, info) in members {
        assert_eq!(&hash[*id], info, "hash[{id}] in {presence}");
    }
}

/// Expects `member_added` on `channel` with exactly `data` (parsed from its string `data`).
fn expect_member_added(client: &mut Client, channel: &str, data: Value) {
    let message = client.expect_event("pusher_internal:member_added");
    assert_eq!(message["channel"], channel, "{message}");
    assert!(
        message["data"].is_string(),
        "data must be a string: {message}"
    );
    assert_eq!(data_of(&message), data, "socket {}", client.socket_id);
}

fn expect_member_removed(client: &mut Client, channel: &str, user_id: Value) {
    let message = client.expect_event("pusher_internal:member_removed");
    assert_eq!(message["channel"], channel, "{message}");
    assert!(
        message["data"].is_string(),
        "data must be a string: {message}"
    );
    assert_eq!(
        data_of(&message),
        json!({ "user_id": user_id }),
        "socket {}",
        client.socket_id
    );
}

fn quiet(clients: &mut [&mut Client]) {
    for client in clients {
        client.expect_quiet();
    }
}

const ALICE: &str = r#"{"user_id":"alice","user_info":{"name":"Alice"}}"#;
const BOB_NUMERIC: &str = r#"{"user_id":7,"user_info":{"name":"Bob","tags":[1,2]}}"#;
const CAROL_NO_INFO: &str = r#"{"user_id":"carol"}"#;

/// Three users with two sockets each, spread over both shards, join and leave `channel`.
fn three_users_two_sockets_each(addr: SocketAddr, channel: &str) {
    let alice_info = json!({"name": "Alice"});
    let bob_info = json!({"name": "Bob", "tags": [1, 2]});
    // Each user has one socket on each shard.
    let mut a1 = Client::connect_on_shard(addr, 0);
    let mut a2 = Client::connect_on_shard(addr, 1);
    let mut b1 = Client::connect_on_shard(addr, 1);
    let mut b2 = Client::connect_on_shard(addr, 0);
    let mut c1 = Client::connect_on_shard(addr, 0);
    let mut c2 = Client::connect_on_shard(addr, 1);

    // alice's first socket: alone in the channel.
    let presence = a1.subscribe_presence(channel, ALICE);
    assert_roster(&presence, &[("alice", alice_info.clone())]);
    // alice's second socket: still one member, and no member_added for anybody.
    let presence = a2.subscribe_presence(channel, ALICE);
    assert_roster(&presence, &[("alice", alice_info.clone())]);
    quiet(&mut [&mut a1, &mut a2]);

    // bob (numeric id) arrives: alice's sockets hear of it with the id as a string, the one
    // user_id rule (docs/architecture.md, "Protocol choices").
    let presence = b1.subscribe_presence(channel, BOB_NUMERIC);
    assert_roster(
        &presence,
        &[("alice", alice_info.clone()), ("7", bob_info.clone())],
    );
    let bob_added = json!({"user_id": "7", "user_info": {"name": "Bob", "tags": [1, 2]}});
    expect_member_added(&mut a1, channel, bob_added.clone());
    expect_member_added(&mut a2, channel, bob_added);
    // Never to the socket that joined.
    b1.expect_quiet();

    // bob's second socket: no member_added anywhere.
    let presence = b2.subscribe_presence(channel, BOB_NUMERIC);
    assert_roster(
        &presence,
        &[("alice", alice_info.clone()), ("7", bob_info.clone())],
    );
    quiet(&mut [&mut a1, &mut a2, &mut b1, &mut b2]);

    // carol (no user_info): member_added without user_info, hash value null.
    let presence = c1.subscribe_presence(channel, CAROL_NO_INFO);
    assert_roster(
        &presence,
        &[
            ("alice", alice_info.clone()),
            ("7", bob_info.clone()),
            ("carol", Value::Null),
        ],
    );
    for client in [&mut a1, &mut a2, &mut b1, &mut b2] {
        expect_member_added(client, channel, json!({"user_id": "carol"}));
    }
    c1.expect_quiet();
    let presence = c2.subscribe_presence(channel, CAROL_NO_INFO);
    assert_eq!(presence["count"], 3, "{presence}");
    quiet(&mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1]);

    // carol's first socket disconnects: she still has c2, so nothing is sent.
    drop(c1);
    quiet(&mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c2]);
    // Her last socket unsubscribes: member_removed to everyone else, not to c2.
    c2.unsubscribe(channel);
    for client in [&mut a1, &mut a2, &mut b1, &mut b2] {
        expect_member_removed(client, channel, json!("carol"));
    }
    c2.expect_quiet();

    // bob leaves one socket by unsubscribing (nothing sent), the other by disconnecting.
    b1.unsubscribe(channel);
    quiet(&mut [&mut a1, &mut a2, &mut b1, &mut b2]);
    b2.abort();
    expect_member_removed(&mut a1, channel, json!("7"));
    expect_member_removed(&mut a2, channel, json!("7"));
    b1.expect_quiet();

    // A newcomer sees only alice; a rejoining carol gets member_added again.
    let presence = c2.subscribe_presence(channel, CAROL_NO_INFO);
    assert_roster(
        &presence,
        &[("alice", alice_info.clone()), ("carol", Value::Null)],
    );
    expect_member_added(&mut a1, channel, json!({"user_id": "carol"}));
    expect_member_added(&mut a2, channel, json!({"user_id": "carol"}));
    // b1 is no longer subscribed and hears nothing.
    b1.expect_quiet();

    // alice's sockets leave one by one: one member_removed, after the last.
    drop(a1);
    quiet(&mut [&mut a2, &mut c2]);
    a2.unsubscribe(channel);
    expect_member_removed(&mut c2, channel, json!("alice"));
    a2.expect_quiet();
    c2.unsubscribe(channel);
    a2.expect_quiet();
    b1.expect_quiet();

    // The channel is empty now: a new member is alone.
    let mut d = Client::connect(addr);
    let presence = d.subscribe_presence(channel, r#"{"user_id":"dave"}"#);
    assert_roster(&presence, &[("dave", Value::Null)]);
}

#[test]
fn roster_and_member_events_with_the_roster_on_shard_0() {
    let server = common::start_default();
    three_users_two_sockets_each(server.local_addr(), &channel_homed_on(0));
}

#[test]
fn roster_and_member_events_with_the_roster_on_shard_1() {
    let server = common::start_default();
    three_users_two_sockets_each(server.local_addr(), &channel_homed_on(1));
}

#[test]
fn a_disconnect_leaves_every_presence_channel_of_the_socket() {
    let server = common::start_default();
    let addr = server.local_addr();
    let rooms = [channel_homed_on(0), channel_homed_on(1)];
    let mut watcher = Client::connect_on_shard(addr, 0);
    let mut leaver = Client::connect_on_shard(addr, 1);
    for room in &rooms {
        watcher.subscribe_presence(room, r#"{"user_id":"watcher"}"#);
    }
    for room in &rooms {
        leaver.subscribe_presence(room, r#"{"user_id":99}"#);
        // An integer user_id goes out as its decimal text (docs/architecture.md, "Protocol
        // choices").
        expect_member_added(&mut watcher, room, json!({"user_id": "99"}));
    }
    leaver.subscribe("a-public-one-too");
    drop(leaver);
    let mut removed = BTreeSet::new();
    for _ in &rooms {
        let message = watcher.expect_event("pusher_internal:member_removed");
        assert_eq!(data_of(&message), json!({"user_id": "99"}));
        removed.insert(message["channel"].as_str().unwrap().to_string());
    }
    assert_eq!(removed, rooms.iter().cloned().collect::<BTreeSet<_>>());
    watcher.expect_quiet();
}

#[test]
fn presence_subscription_succeeded_shape() {
    let server = common::start_default();
    let mut client = Client::connect(server.local_addr());
    let channel = "presence-shape";
    client.send_presence_subscribe(channel, r#"{"user_id":"1","user_info":{"name":"A"}}"#);
    let message = client.expect_subscribed(channel);
    assert_eq!(
        data_of(&message),
        json!({"presence": {"ids": ["1"], "hash": {"1": {"name": "A"}}, "count": 1}})
    );
    assert_eq!(message.as_object().unwrap().len(), 3, "{message}");
}

#[test]
fn channel_data_is_signed_exactly_as_sent() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut watcher = Client::connect(addr);
    watcher.subscribe_presence("presence-exact", r#"{"user_id":"w"}"#);
    let mut client = Client::connect(addr);
    // Unusual spacing and key order: the server must sign these bytes, not a re-encoding.
    let data = r#"{ "user_info" : {"b":2,"a":1},   "user_id":"spacey" }"#;
    let presence = client.subscribe_presence("presence-exact", data);
    assert_eq!(presence["hash"]["spacey"], json!({"b": 2, "a": 1}));
    expect_member_added(
        &mut watcher,
        "presence-exact",
        json!({"user_id": "spacey", "user_info": {"b": 2, "a": 1}}),
    );
}

#[test]
fn bad_presence_subscriptions_are_refused_and_the_socket_stays_usable() {
    let server = common::start_default();
    let addr = server.local_addr();
    let mut watcher = Client::connect(addr);
    let channel = "presence-guarded";
    watcher.subscribe_presence(channel, r#"{"user_id":"watcher"}"#);
    let mut client = Client::connect(addr);

    // No channel_data at all (with a private-style signature).
    let auth = client.auth(channel, None);
    client.send_subscribe(channel, Some(&auth), None);
    let error = client.expect_subscription_error(channel);
    assert_eq!(error["type"], "AuthError", "{error}");
    client.ping_pong();

    // channel_data signed, then changed.
    let signed = r#"{"user_id":"mallory"}"#;
    let auth = client.auth(channel, Some(signed));
    client.send_subscribe(channel, Some(&auth), Some(r#"{"user_id":"admin"}"#));
    let error = client.expect_subscription_error(channel);
    assert_eq!(error["type"], "AuthError", "{error}");
    assert_eq!(error["status"], 401, "{error}");
    client.ping_pong();

    // Correctly signed channel_data that is not a valid member.
    for data in [
        "{}",
        r#"{"user_id":""}"#,
        r#"{"user_id":null}"#,
        r#"{"user_id":1.5}"#,
        r#"{"user_id":{"a":1}}"#,
        "not json",
        &format!(r#"{{"user_id":"{}"}}"#, "u".repeat(129)),
    ] {
        client.send_presence_subscribe(channel, data);
        client.expect_subscription_error(channel);
        client.ping_pong();
    }
    // Nobody joined: the watcher heard nothing.
    watcher.expect_quiet();

    // A 128-character user id is fine.
    let long_id = "u".repeat(128);
    let presence = client.subscribe_presence(channel, &format!(r#"{{"user_id":"{long_id}"}}"#));
    assert_eq!(presence["count"], 2, "{presence}");
    expect_member_added(&mut watcher, channel, json!({ "user_id": long_id }));
}

#[test]
fn member_limit_refuses_new_users_but_not_new_sockets_of_members() {
    let mut config = common::config();
    config.apps[0].max_presence_members = 2;
    let server = common::start(config);
    let addr = server.local_addr();
    let channel = "presence-small";
    let mut u1 = Client::connect_on_shard(addr, 0);
    let mut u2 = Client::connect_on_shard(addr, 1);
    let mut u3 = Client::connect_on_shard(addr, 0);
    let mut u1_again = Client::connect_on_shard(addr, 1);
    u1.subscribe_presence(channel, r#"{"user_id":"u1"}"#);
    u2.subscribe_presence(channel, r#"{"user_id":"u2"}"#);
    expect_member_added(&mut u1, channel, json!({"user_id": "u2"}));

    u3.send_presence_subscribe(channel, r#"{"user_id":"u3"}"#);
    let error = u3.expect_subscription_error(channel);
    assert_eq!(error["type"], "LimitReached", "{error}");
    u3.ping_pong();
    // The refused user was never announced.
    quiet(&mut [&mut u1, &mut u2]);

    // Another socket of an existing member is not a new member.
    let presence = u1_again.subscribe_presence(channel, r#"{"user_id":"u1"}"#);
    assert_eq!(presence["count"], 2, "{presence}");
    quiet(&mut [&mut u1, &mut u2]);

    // After u2 leaves there is room again; u3's refused attempt left nothing behind.
    u2.unsubscribe(channel);
    expect_member_removed(&mut u1, channel, json!("u2"));
    expect_member_removed(&mut u1_again, channel, json!("u2"));
    let presence = u3.subscribe_presence(channel, r#"{"user_id":"u3"}"#);
    assert_roster(&presence, &[("u1", Value::Null), ("u3", Value::Null)]);
    expect_member_added(&mut u1, channel, json!({"user_id": "u3"}));
    expect_member_added(&mut u1_again, channel, json!({"user_id": "u3"}));
}

#[test]
fn user_info_over_1024_bytes_is_refused() {
    let server = common::start_default();
    let addr = server.local_addr();
    let channel = "presence-big";
    let mut watcher = Client::connect(addr);
    watcher.subscribe_presence(channel, r#"{"user_id":"w"}"#);
    let mut client = Client::connect(addr);
    // {"n":"xxx…"} is 8 bytes of JSON around the string.
    let too_big = format!(
        r#"{{"user_id":"big","user_info":{{"n":"{}"}}}}"#,
        "x".repeat(1017)
    );
    client.send_presence_subscribe(channel, &too_big);
    let error = client.expect_subscription_error(channel);
    assert_eq!(error["type"], "LimitReached", "{error}");
    client.ping_pong();
    watcher.expect_quiet();
    // Exactly 1024 bytes is accepted.
    let fits = format!(
        r#"{{"user_id":"big","user_info":{{"n":"{}"}}}}"#,
        "x".repeat(1016)
    );
    let presence = client.subscribe_presence(channel, &fits);
    assert_eq!(presence["count"], 2, "{presence}");
    assert_eq!(presence["hash"]["big"]["n"].as_str().unwrap().len(), 1016);
}

#[test]
fn leaving_while_the_join_is_in_flight_leaves_no_ghost_member() {
    let server = common::start_default();
    let addr = server.local_addr();
    for home in [0, 1] {
        let channel = channel_homed_on(home);
        let mut watcher = Client::connect_on_shard(addr, home);
        watcher.subscribe_presence(&channel, r#"{"user_id":"watcher"}"#);
        // The joining sockets live on the other shard, so the join is a round trip.
        for (i, by_disconnect) in [(0, false), (1, true), (2, false), (3, true)] {
            let mut ghost = Client::connect_on_shard(addr, 1 - home);
            let user = format!("ghost-{i}");
            let data = format!(r#"{{"user_id":"{user}"}}"#);
            let auth = ghost.auth(&channel, Some(&data));
            let subscribe = json!({"event": "pusher:subscribe",
                "data": {"channel": channel, "auth": auth, "channel_data": data}});
            let unsubscribe = json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
            // Both in one write: the leave is processed before the join's answer comes back.
            let mut bytes = common::masked(common::TEXT, true, subscribe.to_string().as_bytes());
            if !by_disconnect {
                bytes.extend(common::masked(
                    common::TEXT,
                    true,
                    unsubscribe.to_string().as_bytes(),
                ));
            }
            ghost.send_raw(&bytes);
            if by_disconnect {
                ghost.abort();
            } else {
                // The unsubscribe of a pending join is accepted: no error; the late answer
                // must not resurrect the subscription.
                ghost.expect_quiet();
            }
            // The watcher may see the user come and go, but must end with it gone.
            let mut present = false;
            while let Ok(common::Frame::Text(text)) = watcher.try_frame(common::QUIET) {
                let message: Value = serde_json::from_str(&text).unwrap();
                let who = data_of(&message)["user_id"].clone();
                assert_eq!(who, json!(user), "{message}");
                match message["event"].as_str().unwrap() {
                    "pusher_internal:member_added" => present = true,
                    "pusher_internal:member_removed" => present = false,
                    _ => panic!("unexpected {message}"),
                }
            }
            assert!(!present, "{user} was added but never removed");
            let mut probe = Client::connect(addr);
            let presence = probe.subscribe_presence(&channel, r#"{"user_id":"probe"}"#);
            assert_eq!(
                ids(&presence),
                set(&["watcher", "probe"]),
                "home {home}, {user}"
            );
            drop(probe);
            expect_member_added(&mut watcher, &channel, json!({"user_id": "probe"}));
            expect_member_removed(&mut watcher, &channel, json!("probe"));
        }
    }
}

#[test]
fn presence_channels_of_different_apps_are_separate() {
    let mut config = common::config();
    config
        .apps
        .push(common::extra_app(&config, "2", "key-two", "secret-two"));
    let server = common::start(config);
    let addr = server.local_addr();
    let mut one = Client::connect(addr);
    one.subscribe_presence("presence-shared-name", r#"{"user_id":"one"}"#);
    let mut two = Client::connect_path(addr, "/app/key-two?protocol=7");
    let data = r#"{"user_id":"two"}"#;
    let auth = common::auth_for(
        "key-two",
        "secret-two",
        &two.socket_id,
        "presence-shared-name",
        Some(data),
    );
    two.send_subscribe("presence-shared-name", Some(&auth), Some(data));
    let message = two.expect_subscribed("presence-shared-name");
    assert_eq!(ids(&data_of(&message)["presence"]), set(&["two"]));
    one.expect_quiet();
}
