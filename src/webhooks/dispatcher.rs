//! The dispatcher thread: holds `channel_vacated` and `member_removed` for the grace window
//! (a re-occupation or re-join within it cancels both events), applies each receiver's filter,
//! and batches events per receiver for at most the batch window.

use super::{delivery, WebhookEvent, WebhookStats};
use crate::app::AppRegistry;
use crate::config::{Config, WebhookFilter, WebhookSettings, WebhookTarget};
use ahash::AHashMap;
use serde_json::{json, Value};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where shards send (app index, event).
pub type Inlet = Sender<(u32, WebhookEvent)>;

/// Starts one delivery thread per receiver and the dispatcher; returns the events' inlet and the
/// dispatcher thread (which ends, having spooled everything it held, once the inlet is dropped).
pub fn start(
    config: &Config,
    apps: &AppRegistry,
    stats: Arc<WebhookStats>,
) -> Result<(Inlet, std::thread::JoinHandle<()>), String> {
    let mut targets = Vec::new();
    for app in apps.iter() {
        let mut app_targets = Vec::new();
        for (index, target) in app.config.webhooks.iter().enumerate() {
            let outlet =
                delivery::start(&app.config, index, target, &config.webhooks, stats.clone())?;
            app_targets.push(Target::new(target, outlet));
        }
        targets.push(app_targets);
    }
    let (tx, rx) = mpsc::channel();
    let dispatcher = Dispatcher::new(targets, &config.webhooks);
    let thread = std::thread::Builder::new()
        .name("warren-webhooks".into())
        .spawn(move || dispatcher.run(rx))
        .map_err(|e| format!("cannot start the webhook dispatcher: {e}"))?;
    Ok((tx, thread))
}

/// One receiver as the dispatcher sees it: its filter and its open batch.
struct Target {
    filter: WebhookFilter,
    events: Vec<String>,
    outlet: delivery::Outlet,
    batch: Vec<Value>,
    opened: Option<Instant>,
}

impl Target {
    fn new(config: &WebhookTarget, outlet: delivery::Outlet) -> Self {
        Target {
            filter: config.filter.clone(),
            events: config.events.clone(),
            outlet,
            batch: Vec::new(),
            opened: None,
        }
    }

    fn wants(&self, event: &WebhookEvent) -> bool {
        (self.events.is_empty() || self.events.iter().any(|e| e == event.name()))
            && self.filter.matches(event.channel())
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.batch);
        self.opened = None;
        let body = json!({ "time_ms": unix_millis(), "events": events }).to_string();
        self.outlet.send(body);
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a held event is waiting for: a channel's re-occupation or a user's return.
type HeldKey = (u32, String, Option<String>);

struct Dispatcher {
    targets: Vec<Vec<Target>>,
    held: AHashMap<HeldKey, (Instant, WebhookEvent)>,
    grace: Duration,
    window: Duration,
    max_batch: usize,
}

impl Dispatcher {
    fn new(targets: Vec<Vec<Target>>, settings: &WebhookSettings) -> Self {
        Dispatcher {
            targets,
            held: AHashMap::new(),
            grace: Duration::from_millis(settings.grace_ms),
            window: Duration::from_millis(settings.batch_window_ms),
            max_batch: settings.max_batch_size.max(1),
        }
    }

    fn run(mut self, events: Receiver<(u32, WebhookEvent)>) {
        loop {
            match events.recv_timeout(self.next_deadline()) {
                Ok((app, event)) => self.accept(app, event, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.release_due(Instant::now());
            self.flush_due(Instant::now());
        }
        // Stopping: nothing held back is lost.
        self.release_due(Instant::now() + self.grace);
        for target in self.targets.iter_mut().flatten() {
            target.flush();
        }
    }

    /// How long to wait for the next event before something falls due.
    fn next_deadline(&self) -> Duration {
        let now = Instant::now();
        let held = self.held.values().map(|(due, _)| *due);
        let batches = self
            .targets
            .iter()
            .flatten()
            .filter_map(|t| t.opened)
            .map(|at| at + self.window);
        held.chain(batches)
            .min()
            .map_or(Duration::from_secs(1), |due| {
                due.saturating_duration_since(now)
            })
    }

    fn accept(&mut self, app: u32, event: WebhookEvent, now: Instant) {
        match &event {
            WebhookEvent::ChannelVacated { channel } => {
                self.hold((app, channel.clone(), None), event, now)
            }
            WebhookEvent::MemberRemoved { channel, user_id } => {
                self.hold((app, channel.clone(), Some(user_id.clone())), event, now)
            }
            WebhookEvent::ChannelOccupied { channel } => {
                if self.held.remove(&(app, channel.clone(), None)).is_none() {
                    self.route(app, event, now);
                }
            }
            WebhookEvent::MemberAdded { channel, user_id } => {
                if self
                    .held
                    .remove(&(app, channel.clone(), Some(user_id.clone())))
                    .is_none()
                {
                    self.route(app, event, now);
                }
            }
            WebhookEvent::ClientEvent { .. }
            | WebhookEvent::SubscriptionCount { .. }
            | WebhookEvent::CacheMiss { .. } => self.route(app, event, now),
        }
    }

    fn hold(&mut self, key: HeldKey, event: WebhookEvent, now: Instant) {
        let app = key.0;
        if let Some((_, earlier)) = self.held.insert(key, (now + self.grace, event)) {
            self.route(app, earlier, now);
        }
    }

    fn release_due(&mut self, now: Instant) {
        let due: Vec<HeldKey> = self
            .held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some((_, event)) = self.held.remove(&key) {
                self.route(key.0, event, now);
            }
        }
    }

    fn route(&mut self, app: u32, event: WebhookEvent, now: Instant) {
        let Some(targets) = self.targets.get_mut(app as usize) else {
            return;
        };
        for target in targets.iter_mut().filter(|t| t.wants(&event)) {
            target.batch.push(event.to_json());
            target.opened.get_or_insert(now);
            if target.batch.len() >= self.max_batch {
                target.flush();
            }
        }
    }

    fn flush_due(&mut self, now: Instant) {
        for target in self.targets.iter_mut().flatten() {
            if target.opened.is_some_and(|at| now >= at + self.window) {
                target.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn filtered_target(
        prefix: Option<&str>,
        suffix: Option<&str>,
        events: &[&str],
    ) -> WebhookTarget {
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

    fn names(batch: delivery::Batch) -> Vec<String> {
        assert!(batch.seq.is_some(), "spooled when handed over");
        let value: Value = serde_json::from_str(&batch.body).unwrap();
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
            .collect()
    }

    #[test]
    fn a_reload_within_the_grace_window_sends_nothing() {
        let (tx, rx) = delivery::test_outlet("t2");
        let mut d = dispatcher(vec![(target(None, &[]), tx)]);
        let t0 = Instant::now();
        d.accept(
            0,
            WebhookEvent::ChannelVacated {
                channel: "c".into(),
            },
            t0,
        );
        d.accept(
            0,
            WebhookEvent::MemberRemoved {
                channel: "presence-p".into(),
                user_id: "u".into(),
            },
            t0,
        );
        d.accept(
            0,
            WebhookEvent::ChannelOccupied {
                channel: "c".into(),
            },
            t0 + Duration::from_millis(500),
        );
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
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn held_events_go_after_the_window_and_batches_split_at_the_limit() {
        let (tx, rx) = delivery::test_outlet("t3");
        let mut d = dispatcher(vec![(target(None, &[]), tx)]);
        let t0 = Instant::now();
        d.accept(
            0,
            WebhookEvent::ChannelOccupied {
                channel: "a".into(),
            },
            t0,
        );
        d.accept(
            0,
            WebhookEvent::ChannelVacated {
                channel: "b".into(),
            },
            t0,
        );
        d.accept(
            0,
            WebhookEvent::ChannelOccupied {
                channel: "c".into(),
            },
            t0,
        );
        assert_eq!(
            names(rx.try_recv().unwrap()),
            vec!["channel_occupied:a", "channel_occupied:c"]
        );
        d.release_due(t0 + Duration::from_millis(999));
        d.flush_due(t0 + Duration::from_millis(999));
        assert!(rx.try_recv().is_err());
        d.release_due(t0 + Duration::from_millis(1000));
        d.flush_due(t0 + Duration::from_millis(1020));
        assert_eq!(names(rx.try_recv().unwrap()), vec!["channel_vacated:b"]);
    }

    #[test]
    fn filters_by_event_name_and_channel_prefix() {
        let (tx, rx) = delivery::test_outlet("t4");
        let mut d = dispatcher(vec![(target(Some("presence-"), &["member_added"]), tx)]);
        let t0 = Instant::now();
        d.accept(
            0,
            WebhookEvent::ChannelOccupied {
                channel: "presence-a".into(),
            },
            t0,
        );
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
        assert_eq!(
            names(rx.try_recv().unwrap()),
            vec!["member_added:presence-a"]
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn filters_by_channel_suffix_and_passes_cache_misses() {
        let (tx, rx) = delivery::test_outlet("t5");
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
            names(rx.try_recv().unwrap()),
            vec!["cache_miss:cache-team-admin", "cache_miss:private-admin"]
        );
        assert!(rx.try_recv().is_err());
    }
}
