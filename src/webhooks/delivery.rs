//! One thread per webhook receiver: each batch is spooled, signed and `POST`ed, and retried with
//! exponential backoff on network errors and non-2xx answers for the retry period; then it is
//! dead-lettered (logged at error level and counted). Batches to one receiver go in order.

use super::spool::{Spool, SpoolError, Spooled};
use super::WebhookStats;
use crate::auth;
use crate::config::{AppConfig, WebhookSettings, WebhookTarget};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First and longest pause between two attempts.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A batch handed to a delivery thread: already in the spool (`seq`), unless the spool refused it.
#[derive(Debug)]
pub struct Batch {
    /// Spool sequence number, if spooled.
    pub seq: Option<u64>,
    /// The exact request body.
    pub body: String,
}

/// The dispatcher's end of one receiver: batches are written to the spool *here*, when they are
/// handed over, so none waits only in memory while the delivery thread retries an earlier one.
#[derive(Debug)]
pub struct Outlet {
    url: String,
    spool: Arc<Mutex<Spool>>,
    tx: Sender<Batch>,
    stats: Arc<WebhookStats>,
}

impl Outlet {
    /// Spools `body` and queues it for delivery.
    pub fn send(&self, body: String) {
        let seq = match lock(&self.spool).append(&body) {
            Ok(seq) => Some(seq),
            Err(SpoolError::Full) => {
                self.stats.spool_full.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %self.url, "webhook spool is full: this batch is not persisted and is lost if warren stops before it is delivered");
                None
            }
            Err(SpoolError::Io(error)) => {
                tracing::error!(url = %self.url, %error, "cannot write the webhook spool");
                None
            }
        };
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        // The delivery thread lives as long as the process.
        let _ = self.tx.send(Batch { seq, body });
    }
}

/// The spool is shared by the dispatcher (appends) and the delivery thread (acknowledgements);
/// neither holds it for more than one write. A poisoned lock only means a thread panicked
/// mid-write; the file itself stays usable.
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
    let (spool, pending) = Spool::open(&path, settings.spool_max_bytes)
        .map_err(|e| format!("webhook spool {}: {e}", path.display()))?;
    if !pending.is_empty() {
        tracing::info!(url = %target.url, batches = pending.len(), "resending spooled webhooks");
    }
    stats
        .pending
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
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
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("warren-webhook-{}-{}", app.id, index))
        .spawn(move || delivery.run(pending, rx))
        .map_err(|e| format!("cannot start a webhook thread: {e}"))?;
    Ok(Outlet {
        url: target.url.clone(),
        spool,
        tx,
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
    fn run(mut self, pending: Vec<Spooled>, batches: Receiver<Batch>) {
        for spooled in pending {
            self.deliver(Some(spooled.seq), &spooled.body);
        }
        while let Ok(batch) = batches.recv() {
            self.deliver(batch.seq, &batch.body);
        }
    }

    /// Sends one batch until it is accepted or the retry period is over.
    fn deliver(&mut self, seq: Option<u64>, body: &str) {
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
        if let Some(seq) = seq {
            if let Err(error) = lock(&self.spool).ack(seq) {
                tracing::error!(url = %self.url, %error, "cannot write the webhook spool");
            }
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

/// An outlet on a throw-away spool whose batches the test reads from the receiver.
#[cfg(test)]
pub(crate) fn test_outlet(name: &str) -> (Outlet, Receiver<Batch>) {
    let dir =
        std::env::temp_dir().join(format!("warren-outlet-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (spool, _) = Spool::open(&dir.join("test.spool"), 1 << 20).expect("temp spool");
    let (tx, rx) = mpsc::channel();
    let outlet = Outlet {
        url: "http://test".into(),
        spool: Arc::new(Mutex::new(spool)),
        tx,
        stats: Arc::default(),
    };
    (outlet, rx)
}
