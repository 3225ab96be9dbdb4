//! Unit tests of the dispatcher: grace window, filters, batching, stop and the journal.

use super::*;
use crate::webhooks::spool::Spool;
use std::sync::Mutex;

type TestSpool = Arc<Mutex<Spool>>;

fn dispatcher(targets: Vec<(WebhookTarget, delivery::Outlet)>) -> Dispatcher {
    let settings = WebhookSettings {
        grace_ms: 1000,
        batch_window_ms: 10,
        max_batch_size: 2,
        ..WebhookSettings::default()
    };
    let targets = targets
        .into_iter()
        .map(|(c, tx)| Target::new(&c, tx))
        .collect();
    Dispatcher::new(vec![targets], &settings)
}

fn target(prefix: Option<&str>, events: &[&str]) -> WebhookTarget {
    filtered_target(prefix, None, events)
}

fn filtered_target(prefix: Option<&str>, suffix: Option<&str>, events: &[&str]) -> WebhookTarget {
    WebhookTarget {
        url: "http://x".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        filter: WebhookFilter {
            channel_prefix: prefix.map(str::to_string),
            channel_suffix: suffix.map(str::to_string),
        },
        headers: Default::default(),
    }
}

fn outlet(name: &str) -> (delivery::Outlet, TestSpool) {
    let (outlet, spool, _) = delivery::test_outlet(name, 1 << 20);
    (outlet, spool)
}

/// The next spooled batch's events as `name:channel`, if there is one.
fn next_batch(spool: &TestSpool) -> Option<Vec<String>> {
    let batch = spool.lock().unwrap().next_unread().unwrap()?;
    let value: Value = serde_json::from_str(&batch.body).unwrap();
    Some(
        value["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["name"].as_str().unwrap(),
                    e["channel"].as_str().unwrap()
                )
            })
            .collect(),
    )
}

fn vacated(channel: &str) -> WebhookEvent {
    WebhookEvent::ChannelVacated {
        channel: channel.into(),
    }
}

fn occupied(channel: &str) -> WebhookEvent {
    WebhookEvent::ChannelOccupied {
        channel: channel.into(),
    }
}

fn journal(name: &str) -> (Journal, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "warren-dispatcher-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("app-1-reported.journal");
    (Journal::open(&path).unwrap().0, path)
}

#[test]
fn a_reload_within_the_grace_window_sends_nothing() {
    let (tx, spool) = outlet("t2");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let t0 = Instant::now();
    d.accept(0, vacated("c"), t0);
    d.accept(
        0,
        WebhookEvent::MemberRemoved {
            channel: "presence-p".into(),
            user_id: "u".into(),
        },
        t0,
    );
    d.accept(0, occupied("c"), t0 + Duration::from_millis(500));
    d.accept(
        0,
        WebhookEvent::MemberAdded {
            channel: "presence-p".into(),
            user_id: "u".into(),
        },
        t0 + Duration::from_millis(500),
    );
    d.release_due(t0 + Duration::from_secs(5));
    d.flush_due(t0 + Duration::from_secs(5));
    assert_eq!(next_batch(&spool), None);
}

#[test]
fn held_events_go_after_the_window_and_batches_split_at_the_limit() {
    let (tx, spool) = outlet("t3");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let t0 = Instant::now();
    d.accept(0, occupied("a"), t0);
    d.accept(0, vacated("b"), t0);
    d.accept(0, occupied("c"), t0);
    assert_eq!(
        next_batch(&spool).unwrap(),
        vec!["channel_occupied:a", "channel_occupied:c"]
    );
    d.release_due(t0 + Duration::from_millis(999));
    d.flush_due(t0 + Duration::from_millis(999));
    assert_eq!(next_batch(&spool), None);
    d.release_due(t0 + Duration::from_millis(1000));
    d.flush_due(t0 + Duration::from_millis(1020));
    assert_eq!(next_batch(&spool).unwrap(), vec!["channel_vacated:b"]);
}

#[test]
fn filters_by_event_name_and_channel_prefix() {
    let (tx, spool) = outlet("t4");
    let mut d = dispatcher(vec![(target(Some("presence-"), &["member_added"]), tx)]);
    let t0 = Instant::now();
    d.accept(0, occupied("presence-a"), t0);
    d.accept(
        0,
        WebhookEvent::MemberAdded {
            channel: "other".into(),
            user_id: "u".into(),
        },
        t0,
    );
    d.accept(
        0,
        WebhookEvent::MemberAdded {
            channel: "presence-a".into(),
            user_id: "u".into(),
        },
        t0,
    );
    d.flush_due(t0 + Duration::from_millis(20));
    assert_eq!(next_batch(&spool).unwrap(), vec!["member_added:presence-a"]);
    assert_eq!(next_batch(&spool), None);
}

#[test]
fn stopping_sends_held_events_as_due_and_spools_open_batches() {
    let (tx, spool) = outlet("t5");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let t0 = Instant::now();
    d.accept(0, occupied("a"), t0);
    d.accept(0, vacated("b"), t0);
    d.stop();
    assert_eq!(
        next_batch(&spool).unwrap(),
        vec!["channel_occupied:a", "channel_vacated:b"]
    );
    assert_eq!(next_batch(&spool), None);
}

#[test]
fn the_journal_keeps_what_was_reported_until_its_vacate_is_spooled() {
    let (tx, _spool) = outlet("t6");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let (journal, path) = journal("t6");
    d.journals = vec![Some(journal)];
    let t0 = Instant::now();
    d.accept(0, occupied("a"), t0);
    d.accept(0, occupied("b"), t0);
    d.accept(0, vacated("a"), t0);
    // Vacated, but only held (grace window): still owed.
    assert_eq!(left(&path), vec!["a", "b"]);
    d.release_due(t0 + Duration::from_millis(1000));
    // Routed into an open batch, not yet spooled: still owed.
    d.retract_flushed();
    assert_eq!(left(&path), vec!["a", "b"]);
    d.flush_due(t0 + Duration::from_millis(1010));
    d.retract_flushed();
    assert_eq!(left(&path), vec!["b"]);
}

#[test]
fn what_a_crashed_run_owes_is_replayed_or_settled_by_a_return() {
    let (tx, spool) = outlet("t7");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let (mut journal, path) = journal("t7");
    for channel in ["back", "gone"] {
        journal.add(&(channel.into(), None)).unwrap();
    }
    journal
        .add(&("presence-p".into(), Some("u".into())))
        .unwrap();
    drop(journal);
    let (journal, owed) = Journal::open(&path).unwrap();
    d.journals = vec![Some(journal)];
    d.owe(owed.into_iter().map(|e| (0, e)).collect());
    let t0 = Instant::now();
    // A client is back on "back" before the replay: its occupation is sent (clustered,
    // another node may have reported it vacated meanwhile) and it is no longer owed.
    d.accept(0, occupied("back"), t0);
    d.replay_owed(t0);
    d.release_due(t0 + Duration::from_millis(1000));
    d.flush_due(t0 + Duration::from_millis(1010));
    d.retract_flushed();
    assert_eq!(
        next_batch(&spool).unwrap(),
        vec!["channel_occupied:back", "member_removed:presence-p"]
    );
    assert_eq!(next_batch(&spool).unwrap(), vec!["channel_vacated:gone"]);
    assert_eq!(next_batch(&spool), None);
    assert_eq!(left(&path), vec!["back"]);
}

#[test]
fn discarding_what_is_owed_sends_nothing_and_clears_the_journal() {
    let (tx, spool) = outlet("t8");
    let mut d = dispatcher(vec![(target(None, &[]), tx)]);
    let (mut journal, path) = journal("t8");
    journal.add(&("c".into(), None)).unwrap();
    d.journals = vec![Some(journal)];
    d.owe(vec![(0, ("c".into(), None))]);
    d.discard_owed();
    d.stop();
    assert_eq!(next_batch(&spool), None);
    assert!(left(&path).is_empty());
}

/// The channels (and `channel/user` members) the journal at `path` still holds.
fn left(path: &std::path::Path) -> Vec<String> {
    let mut entries: Vec<Entry> = crate::webhooks::journal::read_live(path)
        .unwrap()
        .into_iter()
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|(c, u)| u.map_or(c.clone(), |u| format!("{c}/{u}")))
        .collect()
}

#[test]
fn filters_by_channel_suffix_and_passes_cache_misses() {
    let (tx, spool) = outlet("t5-suffix");
    let mut d = dispatcher(vec![(filtered_target(None, Some("-admin"), &[]), tx)]);
    let t0 = Instant::now();
    for channel in ["cache-team-admin", "cache-admin-team", "private-admin"] {
        d.accept(
            0,
            WebhookEvent::CacheMiss {
                channel: channel.into(),
            },
            t0,
        );
    }
    d.flush_due(t0 + Duration::from_millis(20));
    assert_eq!(
        next_batch(&spool).unwrap(),
        vec!["cache_miss:cache-team-admin", "cache_miss:private-admin"]
    );
    assert_eq!(next_batch(&spool), None);
}
