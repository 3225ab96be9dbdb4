//! One thread per webhook receiver: each batch is spooled, signed and `POST`ed, and retried with
//! exponential backoff on network errors and non-2xx answers for the retry period; then it is
//! dead-lettered (logged at error level and counted). Batches to one receiver go in order.

use super::spool::{Spool, SpoolError, Spooled};
use super::WebhookStats;
use crate::auth;
use crate::config::{AppConfig, WebhookSettings, WebhookTarget};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First and longest pause between two attempts.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The dispatcher's end of one receiver. Batches go to the spool *here*, when they are handed
/// over: the spool file is the receiver's queue, and the delivery thread reads it back in order,
/// so memory holds no batch but the one in flight however long the receiver fails. The channel
/// only wakes the thread (capacity 1: one pending wake-up covers any number of new batches).
#[derive(Debug)]
pub struct Outlet {
    url: String,
    spool: Arc<Mutex<Spool>>,
    wake: SyncSender<()>,
    stats: Arc<WebhookStats>,
}

impl Outlet {
    /// Spools `body` and wakes the delivery thread. A full spool (`spool_max_bytes`) drops the
    /// batch (the newest one: what is already spooled keeps its order), counted and logged.
    pub fn send(&self, body: String) {
        let appended = {
            let mut spool = lock(&self.spool);
            let appended = spool.append(&body);
            if appended.is_ok() {
                // Counted before the delivery thread can read (and uncount) it.
                self.stats.pending.fetch_add(1, Ordering::Relaxed);
            }
            appended
        };
        match appended {
            Ok(_) => {
                // A full wake-up channel already holds a wake-up; a closed one means the process
                // is exiting.
                let _ = self.wake.try_send(());
            }
            Err(SpoolError::Full) => {
                self.stats
                    .dropped_spool_full
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.spool_full_log.note(|dropped| {
                    tracing::error!(url = %self.url, dropped, "webhook spool is full: new batches are dropped until the receiver catches up");
                });
            }
            Err(SpoolError::Io(error)) => {
                self.stats
                    .dropped_spool_error
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.spool_error_log.note(|dropped| {
                    tracing::error!(url = %self.url, %error, dropped, "cannot write the webhook spool: batches dropped");
                });
            }
        }
    }
}

/// The spool is shared by the dispatcher (appends) and the delivery thread (reads and
/// acknowledgements); neither holds it for more than one record. A poisoned lock only means a
/// thread panicked mid-write; the file itself stays usable.
fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the receiver's thread (sending what an earlier run left in its spool first); returns
/// the dispatcher's outlet for new batches.
pub fn start(
    app: &AppConfig,
    index: usize,
    target: &WebhookTarget,
    settings: &WebhookSettings,
    stats: Arc<WebhookStats>,
) -> Result<Outlet, String> {
    let path = PathBuf::from(&settings.spool_dir).join(format!("app-{}-{}.spool", app.id, index));
    let spool = Spool::open(&path, settings.spool_max_bytes)
        .map_err(|e| format!("webhook spool {}: {e}", path.display()))?;
    let pending = spool.unacked();
    if pending > 0 {
        tracing::info!(url = %target.url, batches = pending, "resending spooled webhooks");
    }
    stats.pending.fetch_add(pending as u64, Ordering::Relaxed);
    let spool = Arc::new(Mutex::new(spool));
    let delivery = Delivery {
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build(),
        app_id: app.id.clone(),
        url: target.url.clone(),
        headers: target.headers.clone().into_iter().collect(),
        key: app.key.clone(),
        secret: app.secret.clone(),
        retry_for: Duration::from_secs(settings.retry_for_secs),
        stats: stats.clone(),
        spool: spool.clone(),
    };
    let (wake, woken) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("warren-webhook-{}-{}", app.id, index))
        .spawn(move || delivery.run(woken))
        .map_err(|e| format!("cannot start a webhook thread: {e}"))?;
    Ok(Outlet {
        url: target.url.clone(),
        spool,
        wake,
        stats,
    })
}

/// The state of one receiver's thread.
struct Delivery {
    agent: ureq::Agent,
    app_id: String,
    url: String,
    headers: Vec<(String, String)>,
    key: String,
    secret: String,
    retry_for: Duration,
    stats: Arc<WebhookStats>,
    spool: Arc<Mutex<Spool>>,
}

impl Delivery {
    /// Delivers the spool's batches in order, sleeping until woken when it has read them all.
    fn run(mut self, woken: Receiver<()>) {
        loop {
            match self.next_batch() {
                Some(batch) => self.deliver(batch),
                None => {
                    if woken.recv().is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn next_batch(&self) -> Option<Spooled> {
        lock(&self.spool).next_unread().unwrap_or_else(|error| {
            tracing::error!(url = %self.url, %error, "cannot read the webhook spool");
            None
        })
    }

    /// Sends one batch until it is accepted or the retry period is over.
    fn deliver(&mut self, Spooled { seq, body }: Spooled) {
        let body = body.as_str();
        let signature = auth::sign(&self.secret, body);
        let started = Instant::now();
        let mut pause = RETRY_MIN;
        loop {
            match self.attempt(body, &signature) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    crate::console::tap::webhook_sent(&self.app_id, &self.url, body);
                    break;
                }
                Err(reason) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    crate::console::tap::webhook_failed(&self.app_id, &self.url, body, &reason);
                    if started.elapsed() + pause > self.retry_for {
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(url = %self.url, %reason, body, "webhook dead-lettered after the retry period");
                        break;
                    }
                    tracing::warn!(url = %self.url, %reason, retry_in_ms = pause.as_millis() as u64, "webhook delivery failed");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = lock(&self.spool).ack(seq) {
            tracing::error!(url = %self.url, %error, "cannot write the webhook spool");
        }
    }

    fn attempt(&self, body: &str, signature: &str) -> Result<(), String> {
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json")
            .set("X-Pusher-Key", &self.key)
            .set("X-Pusher-Signature", signature);
        for (name, value) in &self.headers {
            request = request.set(name, value);
        }
        match request.send_string(body) {
            Ok(response) if (200..300).contains(&response.status()) => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status())),
            Err(ureq::Error::Status(status, _)) => Err(format!("HTTP {status}")),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// An outlet on a throw-away spool, and the spool, from which the test reads the batches.
#[cfg(test)]
pub(crate) fn test_outlet(name: &str, max_bytes: u64) -> (Outlet, Arc<Mutex<Spool>>, Receiver<()>) {
    let dir =
        std::env::temp_dir().join(format!("warren-outlet-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Arc::new(Mutex::new(
        Spool::open(&dir.join("test.spool"), max_bytes).expect("temp spool"),
    ));
    let (wake, woken) = mpsc::sync_channel(1);
    let outlet = Outlet {
        url: "http://test".into(),
        spool: spool.clone(),
        wake,
        stats: Arc::default(),
    };
    (outlet, spool, woken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spool_drops_the_newest_batch_and_counts_it_holding_nothing_in_memory() {
        let (outlet, spool, woken) = test_outlet("full", 200);
        for n in 0..1000 {
            outlet.send(format!("{{\"n\":{n}}}"));
        }
        let kept = lock(&spool).unacked() as u64;
        assert!(kept > 0 && kept < 1000, "{kept} kept");
        assert_eq!(outlet.stats.pending.load(Ordering::Relaxed), kept);
        assert_eq!(
            outlet.stats.dropped_spool_full.load(Ordering::Relaxed),
            1000 - kept
        );
        // One wake-up, however many batches: the channel holds no batch.
        assert!(woken.try_recv().is_ok());
        assert!(woken.try_recv().is_err());
        // The oldest are kept, in order; once read and acknowledged, there is room again.
        let first = lock(&spool).next_unread().unwrap().unwrap();
        assert_eq!(first.body, r#"{"n":0}"#);
        for seq in 1..=kept {
            let mut spool = lock(&spool);
            if seq > 1 {
                spool.next_unread().unwrap().unwrap();
            }
            spool.ack(seq).unwrap();
        }
        outlet.send(r#"{"n":"again"}"#.into());
        assert_eq!(lock(&spool).unacked(), 1);
    }
}
