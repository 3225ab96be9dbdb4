//! Shard-level tests of signed-in users (the harness of [`super::tests`]): real shards, a real
//! mesh, sockets read from the other end of a socket pair.

use super::tests::{config, run_shards, settle, Steps, TestSocket};
use super::ProcessState;
use crate::protocol::signin::parse_user_data;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USERS: usize = 40;

/// What the watcher saw: `watchlist_events` frames, its final view, ids in the first frame.
type Seen = (usize, Vec<(String, bool)>, usize);

/// What a watcher believes after applying its `watchlist_events` in order: (id, online).
fn watcher_view(messages: &[serde_json::Value]) -> (usize, Vec<(String, bool)>) {
    let mut view: Vec<(String, bool)> = Vec::new();
    let mut frames = 0;
    for m in messages
        .iter()
        .filter(|m| m["event"] == "pusher_internal:watchlist_events")
    {
        frames += 1;
        let data: serde_json::Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
        for event in data["events"].as_array().unwrap() {
            let online = event["name"] == "online";
            for id in event["user_ids"].as_array().unwrap() {
                let id = id.as_str().unwrap().to_string();
                view.retain(|(known, _)| *known != id);
                view.push((id, online));
            }
        }
    }
    view.sort();
    (frames, view)
}

#[test]
fn a_watcher_signing_in_while_its_users_sign_in_elsewhere_ends_with_every_user_online() {
    // The watcher (shard 0) watches users homed on all four shards, which sign in on shards
    // 1..3 at the same moment: however its initial statuses and the online events interleave,
    // it must end seeing every user online, and its first event must list all watched ids.
    let process = Arc::new(ProcessState::default());
    let steps = Arc::new(Steps::default());
    let result: Arc<Mutex<Option<Seen>>> = Arc::default();
    let (s, r) = (steps.clone(), result.clone());
    run_shards(config(4), process, move |shard| {
        let (steps, result) = (s.clone(), r.clone());
        async move {
            steps.reach(1);
            let mut sockets = Vec::new();
            if shard.id == 0 {
                let mut watcher = TestSocket::open(&shard);
                let watchlist: Vec<String> = (0..USERS).map(|u| format!("\"u{u}\"")).collect();
                let user_data = format!(r#"{{"id":"w","watchlist":[{}]}}"#, watchlist.join(","));
                let user = parse_user_data(&user_data).unwrap();
                shard.sign_in(&watcher.conn, &user).unwrap();
                glommio::timer::sleep(Duration::from_millis(400)).await;
                let messages = watcher.messages();
                let first_len = messages
                    .iter()
                    .find(|m| m["event"] == "pusher_internal:watchlist_events")
                    .map_or(0, |m| {
                        let data: serde_json::Value =
                            serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
                        data["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["user_ids"].as_array().unwrap().len())
                            .sum()
                    });
                let (frames, view) = watcher_view(&messages);
                *result.lock().unwrap() = Some((frames, view, first_len));
                watcher.close(&shard);
                steps.reach(2);
            } else {
                for u in (0..USERS).filter(|u| u % 3 == shard.id - 1) {
                    let socket = TestSocket::open(&shard);
                    let user = parse_user_data(&format!(r#"{{"id":"u{u}"}}"#)).unwrap();
                    shard.sign_in(&socket.conn, &user).unwrap();
                    sockets.push(socket);
                    glommio::yield_if_needed().await;
                }
                steps.wait(2).await;
            }
            for socket in sockets {
                socket.close(&shard);
            }
            settle().await;
        }
    });
    let (frames, view, first_len) = result.lock().unwrap().take().unwrap();
    assert_eq!(first_len, USERS, "the first event lists every watched id");
    assert!(frames >= 1);
    let mut expected: Vec<(String, bool)> = (0..USERS).map(|u| (format!("u{u}"), true)).collect();
    expected.sort();
    assert_eq!(view, expected);
}
