//! Shard-level tests: real shards on real glommio executors joined by a real mesh, with no
//! listener. Connections are one end of a Unix socket pair; the test reads what the shard wrote
//! from the other end.

use super::{ProcessState, Shard, ShardParts};
use crate::app::AppRegistry;
use crate::config::Config;
use crate::protocol::inbound::PresenceMember;
use crate::socket::{Connection, PresenceIdentity, Subscription};
use glommio::{LocalExecutorBuilder, Placement};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared between the test shards' threads: a step counter they wait on.
#[derive(Default)]
pub(super) struct Steps(AtomicUsize);

impl Steps {
    pub(super) fn reach(&self, step: usize) {
        self.0.fetch_max(step, Ordering::AcqRel);
    }

    pub(super) async fn wait(&self, step: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.load(Ordering::Acquire) < step {
            assert!(Instant::now() < deadline, "step {step} never reached");
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
}

pub(super) fn config(shards: usize) -> Config {
    let mut config = Config::embedded_default();
    config.server.shards = shards;
    config.server.gather_timeout_ms = 300;
    config
}

/// Runs `body(shard)` on each of `shards` shards (each on its own executor thread, joined by a
/// mesh) and waits for all of them.
pub(super) fn run_shards<F, Fut>(config: Config, process: Arc<ProcessState>, body: F)
where
    F: Fn(Rc<Shard>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let shards = config.server.shards;
    let config = Arc::new(config);
    let apps = Arc::new(AppRegistry::new(&config));
    process.shards.store(shards, Ordering::Release);
    let handles: Vec<_> = super::mesh::build(shards)
        .into_iter()
        .enumerate()
        .map(|(id, ends)| {
            let parts = ShardParts {
                id,
                shards,
                config: config.clone(),
                apps: apps.clone(),
                process: process.clone(),
                cluster: None,
                webhooks: None,
            };
            let body = body.clone();
            start_executor(move || async move {
                let shard = Shard::new(parts);
                shard.attach_mesh(ends);
                body(shard).await;
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a test shard panicked");
    }
}

fn start_executor<G, Fut>(make: G) -> std::thread::JoinHandle<()>
where
    G: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        let mut make = Some(make);
        for _ in 0..50 {
            let builder = LocalExecutorBuilder::new(Placement::Unbound).io_memory(64 * 1024);
            if let Ok(executor) = builder.make() {
                let make = make.take().expect("runs once");
                executor.run(make());
                return;
            }
            // Locked memory of an earlier test's rings is released asynchronously.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no executor could be made");
    })
}

/// A connection of app 0 on `shard` whose peer end the test reads.
pub(super) struct TestSocket {
    /// The shard's side.
    pub(super) conn: Rc<Connection>,
    peer: UnixStream,
    _ours: UnixStream,
}

impl TestSocket {
    pub(super) fn open(shard: &Shard) -> TestSocket {
        TestSocket::open_for(shard, 0)
    }

    /// A connection whose send buffer holds only a few kilobytes: writes to it stop short.
    pub(super) fn open_with_small_buffer(shard: &Shard) -> TestSocket {
        let socket = TestSocket::open(shard);
        socket2::SockRef::from(&socket._ours)
            .set_send_buffer_size(2048)
            .unwrap();
        socket
    }

    fn open_for(shard: &Shard, app: u32) -> TestSocket {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let app = shard.app(app).unwrap();
        // SAFETY: `ours` lives in the returned struct beside the connection, and the test marks
        // the connection closed (`close`) before dropping it.
        let conn = unsafe {
            Connection::new(
                shard.new_socket_id(),
                app,
                ours.as_raw_fd(),
                1 << 20,
                Instant::now(),
            )
        };
        let conn = Rc::new(conn);
        shard.register(conn.clone());
        TestSocket {
            conn,
            peer,
            _ours: ours,
        }
    }

    pub(super) fn subscribe(&self, shard: &Shard, channel: &str) {
        self.conn.add_subscription(Subscription {
            channel: channel.into(),
            presence: None,
            active: true,
        });
        shard.add_local_subscriber(&self.conn, channel);
    }

    fn join(&self, shard: &Shard, channel: &str, user: &str) {
        self.conn.add_subscription(Subscription {
            channel: channel.into(),
            presence: Some(PresenceIdentity {
                user_id: user.into(),
            }),
            active: false,
        });
        let member = PresenceMember {
            user_id: user.into(),
            user_id_json: serde_json::to_string(user).unwrap(),
            user_info_json: None,
        };
        shard.presence_join(&self.conn, channel, member);
    }

    /// Every text message written so far, as JSON values.
    pub(super) fn messages(&mut self) -> Vec<serde_json::Value> {
        let mut bytes = Vec::new();
        self.read_bytes(&mut bytes);
        parse_server_frames(&bytes)
    }

    /// Appends the bytes written so far (perhaps ending inside a frame) to `into`.
    pub(super) fn read_bytes(&mut self, into: &mut Vec<u8>) {
        let mut buf = [0u8; 65536];
        while let Ok(n) = self.peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&buf[..n]);
        }
    }

    pub(super) fn close(self, shard: &Shard) {
        self.conn.mark_closed();
        shard.unregister(&self.conn);
    }
}

/// Decodes unmasked server text frames.
pub(super) fn parse_server_frames(mut bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = &bytes[header..header + len];
        if opcode == 1 {
            out.push(serde_json::from_slice(payload).unwrap());
        }
        bytes = &bytes[header + len..];
    }
    out
}

pub(super) fn events_named<'a>(
    messages: &'a [serde_json::Value],
    name: &str,
) -> Vec<&'a serde_json::Value> {
    messages.iter().filter(|m| m["event"] == name).collect()
}

/// Lets the shard's tasks (mesh readers, fan-out) run for a while.
pub(super) async fn settle() {
    glommio::timer::sleep(Duration::from_millis(100)).await;
}

/// A presence channel whose home is shard `home` of 2.
fn presence_channel_homed_at(home: usize) -> String {
    (0..)
        .map(|i| format!("presence-room-{i}"))
        .find(|c| crate::channels::home_shard(0, c, 2) == home)
        .unwrap()
}

#[test]
fn presence_roster_and_member_events_never_overlap() {
    // Sockets on the shard that is *not* the home join one after the other while member events
    // are in flight: each socket must see every other user exactly once, either in its roster or
    // as a member_added, never both.
    let process = Arc::new(ProcessState::default());
    let steps = Arc::new(Steps::default());
    let channel = presence_channel_homed_at(0);
    let views: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let (s, v) = (steps.clone(), views.clone());
    run_shards(config(2), process, move |shard| {
        let (steps, views, channel) = (s.clone(), v.clone(), channel.clone());
        async move {
            if shard.id == 1 {
                let mut sockets: Vec<TestSocket> = Vec::new();
                for user in 0..20 {
                    let socket = TestSocket::open(&shard);
                    socket.join(&shard, &channel, &format!("u{user}"));
                    sockets.push(socket);
                    if user % 3 == 0 {
                        glommio::yield_if_needed().await;
                    }
                }
                glommio::timer::sleep(Duration::from_millis(300)).await;
                let mut seen = Vec::new();
                for socket in &mut sockets {
                    let messages = socket.messages();
                    let mut users: Vec<String> = Vec::new();
                    for m in events_named(&messages, "pusher_internal:subscription_succeeded") {
                        let data: serde_json::Value =
                            serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
                        let ids = data["presence"]["ids"].as_array().unwrap();
                        users.extend(ids.iter().map(|i| i.as_str().unwrap().to_string()));
                    }
                    for m in events_named(&messages, "pusher_internal:member_added") {
                        let data: serde_json::Value =
                            serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
                        users.push(data["user_id"].as_str().unwrap().to_string());
                    }
                    seen.push(users);
                }
                *views.lock().unwrap() = seen;
                for socket in sockets {
                    socket.close(&shard);
                }
                steps.reach(1);
            } else {
                steps.wait(1).await;
            }
            settle().await;
        }
    });
    let views = views.lock().unwrap();
    assert_eq!(views.len(), 20);
    for (i, users) in views.iter().enumerate() {
        let mut sorted = users.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            users.len(),
            "socket {i} saw a user twice: {users:?}"
        );
        assert_eq!(
            users.len(),
            20,
            "socket {i} did not see every user: {users:?}"
        );
    }
}

#[test]
fn an_accepted_publish_reaches_every_shard_in_order() {
    // Publishes alternate between the two shards, each made once the previous one was
    // accepted: subscribers on both shards get them in publish order.
    let process = Arc::new(ProcessState::default());
    let subscribed: Arc<AtomicUsize> = Arc::default();
    let steps = Arc::new(Steps::default());
    let received: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let (sub, s, r) = (subscribed.clone(), steps.clone(), received.clone());
    run_shards(config(2), process, move |shard| {
        let (subscribed, steps, received) = (sub.clone(), s.clone(), r.clone());
        async move {
            let mut socket = TestSocket::open(&shard);
            socket.subscribe(&shard, "orders");
            subscribed.fetch_add(1, Ordering::AcqRel);
            while subscribed.load(Ordering::Acquire) < 2 {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
            let app = shard.app(0).unwrap();
            for n in 0..40 {
                // Publish n is made by shard n % 2 once publish n - 1 was accepted.
                steps.wait(n).await;
                if n % 2 == shard.id {
                    let data = n.to_string();
                    let accepted = shard.publish(&app, &["orders"], "e", &data, None).await;
                    assert_eq!(accepted, Ok(()));
                    steps.reach(n + 1);
                }
            }
            settle().await;
            let order: Vec<String> = events_named(&socket.messages(), "e")
                .iter()
                .map(|m| m["data"].as_str().unwrap().to_string())
                .collect();
            received.lock().unwrap().push(order);
            steps.reach(100);
            steps.wait(100).await;
            socket.close(&shard);
            settle().await;
        }
    });
    let expected: Vec<String> = (0..40).map(|n| n.to_string()).collect();
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 2);
    for order in received.iter() {
        assert_eq!(order, &expected);
    }
}

#[test]
fn a_stuck_shard_makes_a_gather_partial_not_a_hang() {
    let process = Arc::new(ProcessState::default());
    let steps = Arc::new(Steps::default());
    let outcome: Arc<Mutex<Option<(usize, usize, Duration)>>> = Arc::default();
    let (s, o) = (steps.clone(), outcome.clone());
    run_shards(config(2), process, move |shard| {
        let (steps, outcome) = (s.clone(), o.clone());
        async move {
            if shard.id == 1 {
                steps.reach(1);
                // Holds its thread without yielding: it cannot answer anything.
                std::thread::sleep(Duration::from_millis(1000));
                steps.wait(2).await;
            } else {
                steps.wait(1).await;
                let started = Instant::now();
                let gathered = shard.gather(|s| s.id).await;
                let took = started.elapsed();
                *outcome.lock().unwrap() = Some((gathered.answers.len(), gathered.missing, took));
                // The late answer arrives after the deadline and is dropped, not mixed up.
                glommio::timer::sleep(Duration::from_millis(1000)).await;
                let again = shard.gather(|s| s.id).await;
                assert!(again.is_complete(), "answers after the stall: {again:?}");
                steps.reach(2);
            }
        }
    });
    let (answers, missing, took) = outcome.lock().unwrap().unwrap();
    assert_eq!((answers, missing), (1, 1));
    assert!(
        took < Duration::from_millis(900),
        "the gather waited {took:?}"
    );
}

#[test]
fn messages_for_an_app_added_by_a_reload_are_handled_before_the_next_tick() {
    // Shard 0 applies a reload that adds an app, and at once joins a presence channel of it
    // homed on shard 1 and publishes to it. Shard 1 has not ticked, so it learns of the app
    // from these messages: it must neither panic nor drop the join.
    let process = Arc::new(ProcessState::default());
    let mut base = config(2);
    let mut reloaded = base.clone();
    let mut second = reloaded.apps[0].clone();
    second.id = "2".into();
    second.key = "second-key".into();
    reloaded.apps.push(second);
    base.apps.truncate(1);
    let registry = Arc::new(AppRegistry::new(&base).reloaded(&reloaded));
    let channel = (0..)
        .map(|i| format!("presence-new-{i}"))
        .find(|c| crate::channels::home_shard(1, c, 2) == 1)
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (p, g) = (process.clone(), seen.clone());
    run_shards(base, process, move |shard| {
        let (process, seen, registry, channel) =
            (p.clone(), g.clone(), registry.clone(), channel.clone());
        async move {
            if shard.id == 0 {
                *process.reloaded_apps.lock().unwrap() = Some(registry);
                process.apps_generation.fetch_add(1, Ordering::AcqRel);
                shard.apply_reloaded_apps();
                let mut socket = TestSocket::open_for(&shard, 1);
                socket.join(&shard, &channel, "newcomer");
                let app = shard.app(1).unwrap();
                let accepted = shard.publish(&app, &["news"], "e", "hello", None).await;
                assert_eq!(accepted, Ok(()));
                glommio::timer::sleep(Duration::from_millis(300)).await;
                let names = socket
                    .messages()
                    .iter()
                    .map(|m| m["event"].to_string())
                    .collect();
                *seen.lock().unwrap() = names;
                socket.close(&shard);
            }
            glommio::timer::sleep(Duration::from_millis(500)).await;
        }
    });
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|e| e.contains("subscription_succeeded")),
        "the join was answered: {seen:?}"
    );
}

#[test]
fn terminate_closes_the_users_sockets_on_every_shard() {
    let process = Arc::new(ProcessState::default());
    let steps = Arc::new(Steps::default());
    let closed: Arc<AtomicUsize> = Arc::default();
    let channel = presence_channel_homed_at(1);
    let (s, c) = (steps.clone(), closed.clone());
    run_shards(config(2), process, move |shard| {
        let (steps, closed, channel) = (s.clone(), c.clone(), channel.clone());
        async move {
            let alice = TestSocket::open(&shard);
            alice.join(&shard, &channel, "alice");
            let bob = TestSocket::open(&shard);
            bob.join(&shard, &channel, "bob");
            steps.reach(1);
            steps.wait(1).await;
            settle().await;
            if shard.id == 0 {
                let app = shard.app(0).unwrap();
                assert_eq!(shard.terminate_everywhere(&app, "alice").await, 2);
                steps.reach(2);
            }
            steps.wait(2).await;
            if alice
                .conn
                .close_request()
                .is_some_and(|r| r.code == Some(4009))
            {
                closed.fetch_add(1, Ordering::AcqRel);
            }
            assert!(bob.conn.close_request().is_none(), "bob was not terminated");
            steps.reach(3);
            steps.wait(3).await;
            alice.close(&shard);
            bob.close(&shard);
            settle().await;
        }
    });
    assert_eq!(closed.load(Ordering::Acquire), 2);
}

/// Cache channels' replay against live deliveries.
mod cache;
mod fanout_writes;

#[test]
fn a_full_fan_out_queue_refuses_publishes_until_it_drains() {
    let process = Arc::new(ProcessState::default());
    let mut config = config(1);
    config.server.fanout_queue_writes = 3;
    let outcomes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let o = outcomes.clone();
    run_shards(config, process, move |shard| {
        let outcomes = o.clone();
        async move {
            let socket = TestSocket::open(&shard);
            socket.subscribe(&shard, "busy");
            let app = shard.app(0).unwrap();
            // Each publish costs 2 writes (one subscriber + 1); nothing runs the queue in
            // between, so the second one finds it at its bound.
            for _ in 0..3 {
                let accepted = shard.publish(&app, &["busy"], "e", "x", None).await;
                outcomes.lock().unwrap().push(accepted.is_ok());
            }
            settle().await;
            let accepted = shard.publish(&app, &["busy"], "e", "x", None).await;
            outcomes.lock().unwrap().push(accepted.is_ok());
            settle().await;
            socket.close(&shard);
        }
    });
    assert_eq!(*outcomes.lock().unwrap(), vec![true, true, false, true]);
}
