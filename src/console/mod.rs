//! The debug console: a page served by Warren (off by default, behind an admin token) that shows
//! live connections per shard, channels with their subscriber counts, presence members and an
//! event log (API publishes, client events, subscribes and unsubscribes, webhooks sent and
//! failed) with filters, and sends a test event.
//!
//! - [`tap`]: the event log and [`tap::record`], the one call the rest of the server makes (a
//!   relaxed atomic load while no viewer is connected: nothing is built).
//! - [`routes`]: its own listener (`[console] bind`/`port`), apart from the client port, one
//!   std thread per request; the page (embedded, `page.html`), the server-sent-events stream,
//!   a state snapshot and the test-event endpoint.
//! - [`upstream`]: the state and the test event come from Warren's own `/metrics` and signed
//!   HTTP API over loopback, so the console needs nothing from the shards but the taps.

pub mod routes;
pub mod tap;
pub mod upstream;

use crate::config::Config;
use routes::Context;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use upstream::{AppCredentials, Upstream};

/// A running console; dropping it does not stop it (it lives as long as the process).
pub struct Console {
    context: Arc<Context>,
    addr: SocketAddr,
}

impl Console {
    /// Starts the console when `config.console.enabled`, for the server listening on
    /// `server_addr`; `Ok(None)` when it is off.
    pub fn start(config: &Config, server_addr: SocketAddr) -> std::io::Result<Option<Console>> {
        let settings = &config.console;
        if !settings.enabled {
            return Ok(None);
        }
        let listener = TcpListener::bind((settings.bind.as_str(), settings.port))?;
        let addr = listener.local_addr()?;
        let context = Arc::new(Context::new(
            &settings.token,
            credentials(config),
            Upstream::new(server_addr),
        ));
        let serving = context.clone();
        std::thread::Builder::new()
            .name("warren-console".into())
            .spawn(move || routes::serve(listener, serving))?;
        Ok(Some(Console { context, addr }))
    }

    /// The address the console listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the apps of a reloaded configuration (the console's own settings change only at a
    /// restart).
    pub fn reload(&self, config: &Config) {
        *self
            .context
            .apps
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = credentials(config);
    }
}

fn credentials(config: &Config) -> Vec<AppCredentials> {
    config
        .apps
        .iter()
        .map(|app| AppCredentials {
            id: app.id.clone(),
            key: app.key.clone(),
            secret: app.secret.clone(),
        })
        .collect()
}
