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
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First and longest pause between two attempts.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Starts the receiver's thread (sending what an earlier run left in its spool first); returns
/// the inlet for new batches.
pub fn start(
    app: &AppConfig,
    index: usize,
    target: &WebhookTarget,
    settings: &WebhookSettings,
    stats: Arc<WebhookStats>,
) -> Result<Sender<String>, String> {
    let path = PathBuf::from(&settings.spool_dir).join(format!("app-{}-{}.spool", app.id, index));
    let (spool, pending) = Spool::open(&path, settings.spool_max_bytes)
        .map_err(|e| format!("webhook spool {}: {e}", path.display()))?;
    if !pending.is_empty() {
        tracing::info!(url = %target.url, batches = pending.len(), "resending spooled webhooks");
    }
    stats
        .pending
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
    let sender = Delivery {
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build(),
        url: target.url.clone(),
        headers: target.headers.clone().into_iter().collect(),
        key: app.key.clone(),
        secret: app.secret.clone(),
        retry_for: Duration::from_secs(settings.retry_for_secs),
        stats,
        spool,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("warren-webhook-{}-{}", app.id, index))
        .spawn(move || sender.run(pending, rx))
        .map_err(|e| format!("cannot start a webhook thread: {e}"))?;
    Ok(tx)
}

/// The state of one receiver's thread.
struct Delivery {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    key: String,
    secret: String,
    retry_for: Duration,
    stats: Arc<WebhookStats>,
    spool: Spool,
}

impl Delivery {
    fn run(mut self, pending: Vec<Spooled>, batches: Receiver<String>) {
        for spooled in pending {
            self.deliver(Some(spooled.seq), &spooled.body);
        }
        while let Ok(body) = batches.recv() {
            self.stats.pending.fetch_add(1, Ordering::Relaxed);
            let seq = match self.spool.append(&body) {
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
            self.deliver(seq, &body);
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
                    break;
                }
                Err(reason) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
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
            if let Err(error) = self.spool.ack(seq) {
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
