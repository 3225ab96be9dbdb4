//! The per-core runtime: wires one core. It builds the core's [`Shard`], connects its mesh,
//! spawns the accept loop (one [`crate::session`] task per connection), the Redis bridge on
//! shard 0 of a clustered node ([`bridge`]), and runs the shard's tick until the process stops,
//! then drains.
//!
//! Dependencies point down from here: `runtime` → `session` → `http`/`shard` → `socket`; nothing
//! below imports this module.

pub mod bridge;

use crate::app::AppRegistry;
use crate::config::Config;
use crate::shard::mesh::MeshEnds;
use crate::shard::{ProcessState, Shard, ShardParts};
use glommio::net::TcpListener;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the accept loop waits after a failed accept (out of file descriptors, most likely).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything a shard thread needs to start.
pub struct ShardSetup {
    /// Index of this shard.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The apps, shared read-only.
    pub apps: Arc<AppRegistry>,
    /// Process-wide flags.
    pub process: Arc<ProcessState>,
    /// This shard's ends of the mesh.
    pub mesh: MeshEnds,
    /// This shard's listening socket (bound with `SO_REUSEPORT`).
    pub listener: OwnedFd,
    /// The Redis link, when clustered.
    pub cluster: Option<Arc<crate::cluster::link::Link>>,
    /// For shard 0 of a clustered node: what the Redis subscriber receives.
    pub cluster_inbound: Option<std::sync::mpsc::Receiver<crate::cluster::link::Inbound>>,
    /// Where webhook events go, when any app has webhooks.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// Runs one shard until the process is asked to stop and its connections have closed.
pub async fn run(setup: ShardSetup) {
    let shard = Shard::new(ShardParts {
        id: setup.id,
        shards: setup.shards,
        config: setup.config,
        apps: setup.apps,
        process: setup.process,
        cluster: setup.cluster,
        webhooks: setup.webhooks,
    });
    shard.attach_mesh(setup.mesh);
    // SAFETY: the fd is a listening TCP socket whose ownership `OwnedFd` hands over here; nothing
    // else closes or uses it.
    let listener = unsafe { TcpListener::from_raw_fd(setup.listener.into_raw_fd()) };
    if let (Some(inbound), Some(cluster)) = (setup.cluster_inbound, &shard.config.cluster) {
        let timeout = Duration::from_secs(cluster.node_timeout);
        glommio::spawn_local(bridge::run(shard.clone(), inbound, timeout)).detach();
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener));
    shard.process.listening.fetch_add(1, Ordering::AcqRel);
    tracing::debug!(shard = shard.id, "shard listening");
    shard.tick_until_stopped().await;
    drop(acceptor);
    shard.process.listening.fetch_sub(1, Ordering::AcqRel);
    shard.drain().await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                // TCP_NODELAY comes from the listener (`server::bind_one`).
                glommio::spawn_local(crate::session::serve(shard.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(shard = shard.id, %error, "accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
