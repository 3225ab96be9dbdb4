//! Cache channels on real shards: the replay and the live deliveries never overlap.

use super::*;
use crate::protocol::outbound::EventData;

/// The `data` numbers of the `e` events a socket got after its subscription, and whether its
/// replay was a miss.
fn received(messages: &[serde_json::Value]) -> (bool, Vec<u64>) {
    let succeeded = messages
        .iter()
        .position(|m| m["event"] == "pusher_internal:subscription_succeeded")
        .expect("subscribed");
    let after = &messages[succeeded + 1..];
    let miss = after
        .first()
        .is_some_and(|m| m["event"] == "pusher:cache_miss");
    let numbers = events_named(after, "e")
        .iter()
        .map(|m| m["data"].as_str().unwrap().parse().unwrap())
        .collect();
    (miss, numbers)
}

#[test]
fn cache_replay_and_live_events_never_overlap() {
    // Shard 0 publishes 1..=N to a cache channel while sockets on shard 1 subscribe one after
    // the other: each must get the last event before its subscription (or a miss, before the
    // first) and then every later one, each exactly once. Fails when a shard stores an event
    // ahead of its fan-out queue (when the mesh takes it, or at publish time).
    // Small enough that every frame fits in a Unix socket pair's buffer (nothing flushes here).
    const N: u64 = 120;
    let process = Arc::new(ProcessState::default());
    let steps = Arc::new(Steps::default());
    let s = steps.clone();
    run_shards(config(2), process, move |shard| {
        let steps = s.clone();
        async move {
            let channel = "cache-scores";
            if shard.id == 0 {
                let app = shard.app(0).unwrap();
                steps.wait(1).await;
                for i in 1..=N {
                    let data = i.to_string();
                    let text = EventData::Text(&data);
                    shard.publish_event(&app, &[channel], "e", text, None, None);
                    if i % 2 == 0 {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
                steps.reach(2);
            } else {
                let mut sockets = Vec::new();
                steps.reach(1);
                for _ in 0..30 {
                    let socket = TestSocket::open(&shard);
                    shard.subscribe_cache_channel(&socket.conn, channel);
                    sockets.push(socket);
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
                steps.wait(2).await;
                settle().await;
                let mut replays = 0;
                for socket in &mut sockets {
                    let (miss, numbers) = received(&socket.messages());
                    let first = *numbers.first().expect("events after subscribing");
                    assert!(
                        !miss || first == 1,
                        "a miss after event {first} was published"
                    );
                    let expected: Vec<u64> = (first..=N).collect();
                    assert_eq!(numbers, expected, "a duplicate or a gap (miss: {miss})");
                    replays += usize::from(!miss && first > 1);
                }
                assert!(replays > 0, "no socket subscribed mid-stream");
                for socket in sockets {
                    socket.close(&shard);
                }
            }
        }
    });
}
