//! The dispatcher thread: holds `channel_vacated` and `member_removed` for the grace window
//! (a re-occupation or re-join within it cancels both events), applies each receiver's filter,
//! batches events per receiver for at most the batch window, and keeps each app's
//! [`Journal`] of what it has reported.
//!
//! Its inlet is bounded ([`INLET_CAPACITY`] messages): shards `try_send` into it and count what a
//! full inlet refuses (see [`super::Webhooks::emit`]).

use super::journal::{Entry, Journal};
use super::{delivery, WebhookEvent, WebhookStats};
use crate::app::AppRegistry;
use crate::config::{Config, WebhookFilter, WebhookSettings, WebhookTarget};
use ahash::AHashMap;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most messages waiting in the dispatcher's inlet. The channel allocates its slots up front;
/// events are boxed so that a slot is two words (1 MiB in all), the event's own allocation
/// existing only while it waits.
pub const INLET_CAPACITY: usize = 65_536;

/// What the dispatcher is told.
#[derive(Debug)]
pub enum Inbound {
    /// A shard's event of app index `.0`.
    Event(u32, Box<WebhookEvent>),
    /// Send what an earlier run owes (see [`super::Webhooks::replay_owed`]).
    ReplayOwed,
    /// Forget what an earlier run owes (another node reports it).
    DiscardOwed,
    /// Send everything held as due now, hand every batch to the spool, and end.
    Stop,
}

/// Where shards send.
pub type Inlet = SyncSender<Inbound>;

/// Starts one delivery thread per receiver and the dispatcher; returns the inlet and the
/// dispatcher thread (which ends, having spooled everything it held, at [`Inbound::Stop`] or once
/// the inlet is dropped). With `replay_owed_at_start`, what an earlier run owes is sent at once.
pub fn start(
    config: &Config,
    apps: &AppRegistry,
    stats: Arc<WebhookStats>,
    replay_owed_at_start: bool,
) -> Result<(Inlet, std::thread::JoinHandle<()>), String> {
    let mut targets = Vec::new();
    let mut journals = Vec::new();
    let mut owed = Vec::new();
    for (app_index, app) in apps.iter().enumerate() {
        let mut app_targets = Vec::new();
        for (index, target) in app.config.webhooks.iter().enumerate() {
            let outlet =
                delivery::start(&app.config, index, target, &config.webhooks, stats.clone())?;
            app_targets.push(Target::new(target, outlet));
        }
        let journal = if app_targets.is_empty() {
            None
        } else {
            let (journal, left) = open_journal(&config.webhooks, &app.config.id)?;
            owed.extend(left.into_iter().map(|entry| (app_index as u32, entry)));
            Some(journal)
        };
        targets.push(app_targets);
        journals.push(journal);
    }
    let (tx, rx) = mpsc::sync_channel(INLET_CAPACITY);
    let mut dispatcher = Dispatcher::new(targets, &config.webhooks);
    dispatcher.journals = journals;
    dispatcher.owe(owed);
    if replay_owed_at_start {
        dispatcher.replay_owed(Instant::now());
    }
    let thread = std::thread::Builder::new()
        .name("warren-webhooks".into())
        .spawn(move || dispatcher.run(rx, &stats))
        .map_err(|e| format!("cannot start the webhook dispatcher: {e}"))?;
    Ok((tx, thread))
}

/// Opens app `app_id`'s journal; returns it and what the last run left in it.
fn open_journal(settings: &WebhookSettings, app_id: &str) -> Result<(Journal, Vec<Entry>), String> {
    let path = PathBuf::from(&settings.spool_dir).join(format!("app-{app_id}-reported.journal"));
    let (journal, left) =
        Journal::open(&path).map_err(|e| format!("webhook journal {}: {e}", path.display()))?;
    if !left.is_empty() {
        tracing::warn!(app = %app_id, owed = left.len(), "the last run stopped without taking back what it reported to webhook receivers (a crash?)");
    }
    Ok((journal, left))
}

/// One receiver as the dispatcher sees it: its filter and its open batch.
struct Target {
    filter: WebhookFilter,
    events: Vec<String>,
    outlet: delivery::Outlet,
    batch: Vec<Value>,
    opened: Option<Instant>,
    /// Batches handed to the outlet so far.
    flushes: u64,
}

impl Target {
    fn new(config: &WebhookTarget, outlet: delivery::Outlet) -> Self {
        Target {
            filter: config.filter.clone(),
            events: config.events.clone(),
            outlet,
            batch: Vec::new(),
            opened: None,
            flushes: 0,
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
        self.flushes += 1;
        let body = json!({ "time_ms": unix_millis(), "events": events }).to_string();
        self.outlet.send(body);
    }

    /// Whether every event routed before `flushes` was `seen` has left for the spool.
    fn flushed_since(&self, seen: u64) -> bool {
        self.flushes > seen || self.batch.is_empty()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a held event is waiting for: a channel's re-occupation or a user's return.
type HeldKey = (u32, String, Option<String>);

/// A `channel_vacated`/`member_removed` routed into batches, by app and journal entry: the journal
/// forgets the entry once every batch it may be in has been spooled (the value: `flushes` of the
/// app's targets when it was routed).
type Retractions = AHashMap<(u32, Entry), Vec<u64>>;

struct Dispatcher {
    targets: Vec<Vec<Target>>,
    journals: Vec<Option<Journal>>,
    held: AHashMap<HeldKey, (Instant, WebhookEvent)>,
    /// What an earlier run reported and did not take back; a re-occupation or re-join settles
    /// an entry, a replay sends it (through the grace window), a discard forgets it.
    owed: AHashMap<HeldKey, WebhookEvent>,
    retractions: Retractions,
    grace: Duration,
    window: Duration,
    max_batch: usize,
}

impl Dispatcher {
    fn new(targets: Vec<Vec<Target>>, settings: &WebhookSettings) -> Self {
        Dispatcher {
            journals: targets.iter().map(|_| None).collect(),
            targets,
            held: AHashMap::new(),
            owed: AHashMap::new(),
            retractions: Retractions::default(),
            grace: Duration::from_millis(settings.grace_ms),
            window: Duration::from_millis(settings.batch_window_ms),
            max_batch: settings.max_batch_size.max(1),
        }
    }

    fn run(mut self, inlet: Receiver<Inbound>, stats: &WebhookStats) {
        loop {
            match inlet.recv_timeout(self.next_deadline()) {
                Ok(Inbound::Event(app, event)) => {
                    stats.inlet_depth.fetch_sub(1, Ordering::Relaxed);
                    self.accept(app, *event, Instant::now());
                }
                Ok(Inbound::ReplayOwed) => self.replay_owed(Instant::now()),
                Ok(Inbound::DiscardOwed) => self.discard_owed(),
                Ok(Inbound::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            self.release_due(now);
            self.flush_due(now);
            self.retract_flushed();
            self.sync_journals(false);
        }
        self.stop();
    }

    /// Stopping: every held event is sent as due now (nothing held back is lost), every batch
    /// goes to the spool, and the journals are synced.
    fn stop(&mut self) {
        self.release_due(Instant::now() + self.grace);
        for target in self.targets.iter_mut().flatten() {
            target.flush();
        }
        self.retract_flushed();
        self.sync_journals(true);
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
                self.report_unless_cancelling((app, channel.clone(), None), event, now)
            }
            WebhookEvent::MemberAdded { channel, user_id } => self.report_unless_cancelling(
                (app, channel.clone(), Some(user_id.clone())),
                event,
                now,
            ),
            WebhookEvent::ClientEvent { .. }
            | WebhookEvent::SubscriptionCount { .. }
            | WebhookEvent::CacheMiss { .. } => self.route(app, event, now),
        }
    }

    /// An occupation or join is sent unless it cancels a held vacate or leave (then the
    /// receiver never heard of the gap). It also settles an owed entry for the same channel or
    /// member, which is then not replayed; it is still sent, since another node may have reported
    /// the entry gone meanwhile (clustered, before [`Inbound::DiscardOwed`]): at worst the
    /// receiver hears of an occupation twice, never misses one.
    fn report_unless_cancelling(&mut self, key: HeldKey, event: WebhookEvent, now: Instant) {
        self.owed.remove(&key);
        if self.held.remove(&key).is_none() {
            self.report(key.0, event, now);
        }
    }

    fn hold(&mut self, key: HeldKey, event: WebhookEvent, now: Instant) {
        let app = key.0;
        if let Some((_, earlier)) = self.held.insert(key, (now + self.grace, event)) {
            self.report(app, earlier, now);
        }
    }

    /// Sends the held events that are due, oldest first; at the same instant members before
    /// channels (a `member_removed` before its channel's `channel_vacated`).
    fn release_due(&mut self, now: Instant) {
        let mut due: Vec<(Instant, HeldKey)> = self
            .held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, (at, _))| (*at, k.clone()))
            .collect();
        due.sort_by(|(a_at, a), (b_at, b)| (a_at, a.2.is_none(), a).cmp(&(b_at, b.2.is_none(), b)));
        for (_, key) in due {
            if let Some((_, event)) = self.held.remove(&key) {
                self.report(key.0, event, now);
            }
        }
    }

    /// Routes an occupancy or presence event and keeps the journal in step: an occupation or
    /// join is recorded *before* it can reach the spool, a vacate or leave is forgotten only
    /// *after* it has (so a crash in between sends one too many, never one too few).
    fn report(&mut self, app: u32, event: WebhookEvent, now: Instant) {
        let (entry, taken_back) = match &event {
            WebhookEvent::ChannelOccupied { channel } => ((channel.clone(), None), false),
            WebhookEvent::ChannelVacated { channel } => ((channel.clone(), None), true),
            WebhookEvent::MemberAdded { channel, user_id } => {
                ((channel.clone(), Some(user_id.clone())), false)
            }
            WebhookEvent::MemberRemoved { channel, user_id } => {
                ((channel.clone(), Some(user_id.clone())), true)
            }
            WebhookEvent::ClientEvent { .. }
            | WebhookEvent::SubscriptionCount { .. }
            | WebhookEvent::CacheMiss { .. } => {
                return self.route(app, event, now);
            }
        };
        if !taken_back {
            // A vacate routed just before, not yet spooled, must not take this one back.
            self.retractions.remove(&(app, entry.clone()));
            self.journal(app, |journal| journal.add(&entry));
        }
        self.route(app, event, now);
        if taken_back {
            let flushes = self.targets[app as usize]
                .iter()
                .map(|t| t.flushes)
                .collect();
            self.retractions.insert((app, entry), flushes);
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

    /// Forgets the journal entries whose vacate or leave is now in every spool it goes to.
    fn retract_flushed(&mut self) {
        if self.retractions.is_empty() {
            return;
        }
        let targets = &self.targets;
        let mut done = Vec::new();
        self.retractions.retain(|(app, entry), flushes| {
            let spooled = targets[*app as usize]
                .iter()
                .zip(flushes.iter())
                .all(|(target, seen)| target.flushed_since(*seen));
            if spooled {
                done.push((*app, entry.clone()));
            }
            !spooled
        });
        for (app, entry) in done {
            self.journal(app, |journal| journal.remove(&entry));
        }
    }

    /// Takes on what an earlier run reported and did not take back.
    fn owe(&mut self, entries: Vec<(u32, Entry)>) {
        for (app, (channel, user_id)) in entries {
            let event = match &user_id {
                None => WebhookEvent::ChannelVacated {
                    channel: channel.clone(),
                },
                Some(user_id) => WebhookEvent::MemberRemoved {
                    channel: channel.clone(),
                    user_id: user_id.clone(),
                },
            };
            self.owed.insert((app, channel, user_id), event);
        }
    }

    /// Sends what an earlier run owes, through the grace window like any vacate or leave (a
    /// client back within it cancels its entry).
    fn replay_owed(&mut self, now: Instant) {
        let owed: Vec<(HeldKey, WebhookEvent)> = self.owed.drain().collect();
        if !owed.is_empty() {
            tracing::info!(
                events = owed.len(),
                "sending the channel_vacated and member_removed webhooks the last run owed"
            );
        }
        for (key, event) in owed {
            self.hold(key, event, now);
        }
    }

    /// Forgets what an earlier run owes (clustered: the live nodes report it).
    fn discard_owed(&mut self) {
        let owed: Vec<HeldKey> = self.owed.drain().map(|(key, _)| key).collect();
        for (app, channel, user_id) in owed {
            self.journal(app, |journal| journal.remove(&(channel, user_id)));
        }
    }

    fn sync_journals(&mut self, now: bool) {
        let at = Instant::now();
        for app in 0..self.journals.len() as u32 {
            self.journal(app, |journal| {
                if now {
                    journal.sync()
                } else {
                    journal.tick(at)
                }
            });
        }
    }

    /// Runs `write` on app `app`'s journal, logging a failure (the journal is best effort: a
    /// node that cannot write it still sends its webhooks).
    fn journal(&mut self, app: u32, write: impl FnOnce(&mut Journal) -> std::io::Result<()>) {
        if let Some(Some(journal)) = self.journals.get_mut(app as usize) {
            if let Err(error) = write(journal) {
                tracing::error!(%error, "cannot write the webhook journal");
            }
        }
    }
}

#[cfg(test)]
mod tests;
