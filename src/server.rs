//! Starting and stopping a Warren node in-process: binds one `SO_REUSEPORT` listener per shard,
//! builds the shard mesh, starts one pinned glommio executor per shard, and hands back a
//! [`ServerHandle`]. The binary, the tests and the load harness all start servers this way.

use crate::app::AppRegistry;
use crate::cluster::link::Link;
use crate::config::Config;
use crate::runtime::{self, ShardSetup};
use crate::shard::{mesh, ProcessState};
use crate::webhooks::Webhooks;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long start-up waits for the shards to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running node.
pub struct ServerHandle {
    local_addr: SocketAddr,
    process: Arc<ProcessState>,
    current_apps: Arc<std::sync::Mutex<Arc<AppRegistry>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    webhooks: Option<Arc<Webhooks>>,
}

/// Applies a new configuration's apps to a running server: apps are added, changed (limits,
/// secrets) and removed without touching other apps' connections. Server settings (ports,
/// shards, timeouts), the cluster and the webhook receivers need a restart.
#[derive(Clone)]
pub struct Reloader {
    process: Arc<ProcessState>,
    current: Arc<std::sync::Mutex<Arc<AppRegistry>>>,
}

impl Reloader {
    /// Publishes `config`'s apps to every shard (they apply it within 100 ms).
    pub fn reload(&self, config: &Config) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Arc::new(current.reloaded(config));
        *current = fresh.clone();
        *self
            .process
            .reloaded_apps
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        self.process.apps_generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Starts a node with `config`; returns once every shard accepts connections.
pub fn start(config: Config) -> Result<ServerHandle, StartError> {
    let config = Arc::new(config);
    let shards = config.server.effective_shards();
    let (local_addr, listeners) = bind_listeners(&config, shards)?;
    let apps = Arc::new(AppRegistry::new(&config));
    let process = Arc::new(ProcessState::default());
    process.shards.store(shards, Ordering::Release);
    let (cluster, mut cluster_inbound) = match &config.cluster {
        Some(settings) => {
            let (link, inbound) =
                Link::start(settings, process.stop.clone()).map_err(StartError)?;
            tracing::info!(node = %link.node_id, "clustered through Redis");
            (Some(Arc::new(link)), Some(inbound))
        }
        None => (None, None),
    };
    let webhooks = Webhooks::start(&config, &apps).map_err(StartError)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = Vec::with_capacity(shards);
    for (id, (ends, listener)) in mesh::build(shards).into_iter().zip(listeners).enumerate() {
        let setup = ShardSetup {
            id,
            shards,
            config: config.clone(),
            apps: apps.clone(),
            process: process.clone(),
            mesh: ends,
            listener,
            cluster: cluster.clone(),
            webhooks: webhooks.clone(),
            cluster_inbound: if id == 0 {
                cluster_inbound.take()
            } else {
                None
            },
        };
        let placement = if shards <= cpus {
            Placement::Fixed(id)
        } else {
            Placement::Unbound
        };
        threads.push(spawn_shard(
            setup,
            placement,
            config.server.io_memory_kib * 1024,
        )?);
    }
    let handle = ServerHandle {
        local_addr,
        current_apps: Arc::new(std::sync::Mutex::new(apps)),
        process,
        threads,
        webhooks,
    };
    handle.wait_listening()?;
    Ok(handle)
}

/// Binds `shards` listeners on the configured address. The first one picks the port when the
/// configuration says 0; the others share it.
fn bind_listeners(
    config: &Config,
    shards: usize,
) -> Result<(SocketAddr, Vec<OwnedFd>), StartError> {
    let ip: IpAddr = config
        .server
        .bind
        .parse()
        .map_err(|_| StartError(format!("invalid bind address {}", config.server.bind)))?;
    let mut addr = SocketAddr::new(ip, config.server.port);
    ensure_port_free(addr)?;
    let mut listeners = Vec::with_capacity(shards);
    for _ in 0..shards {
        let socket = bind_one(addr, config.server.listen_backlog)
            .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
        addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        listeners.push(OwnedFd::from(socket));
    }
    Ok((addr, listeners))
}

/// Refuses to start on a port another process already listens on. With `SO_REUSEPORT` a second
/// server would otherwise bind the same port and silently take half the connections; a probe bound
/// without `SO_REUSEPORT` fails instead.
fn ensure_port_free(addr: SocketAddr) -> Result<(), StartError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| StartError(format!("cannot create a socket: {e}")))?;
    let _ = probe.set_reuse_address(true);
    probe.bind(&addr.into()).map_err(|e| {
        StartError(format!(
            "cannot listen on {addr}: {e} (is another server running?)"
        ))
    })
}

/// One listening socket: `SO_REUSEPORT` (one per shard on the same port), non-blocking, and
/// `TCP_NODELAY`, which Linux copies to every accepted socket (one `setsockopt` fewer per
/// connection; `accepted_sockets_inherit_nodelay` checks it).
fn bind_one(addr: SocketAddr, backlog: i32) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// Starts one shard's executor thread. Creating io_uring rings can fail for a moment while a
/// previous server's locked memory is being released, so start-up retries a few times.
fn spawn_shard(
    setup: ShardSetup,
    placement: Placement,
    io_memory: usize,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    let name = format!("warren-shard-{}", setup.id);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut setup = Some(setup);
            for attempt in 0..50 {
                let builder = LocalExecutorBuilder::new(placement.clone())
                    .name(&name)
                    .io_memory(io_memory);
                match builder.make() {
                    Ok(executor) => {
                        let setup = setup.take().expect("the shard starts once");
                        executor.run(runtime::run(setup));
                        return;
                    }
                    Err(error) if attempt < 49 => {
                        tracing::debug!(%error, attempt, "executor start failed; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(error) => tracing::error!(%error, "cannot start shard executor"),
                }
            }
        })
        .map_err(|e| StartError(format!("cannot start shard thread: {e}")))
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that applies configuration reloads (for a SIGHUP handler on another thread).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            process: self.process.clone(),
            current: self.current_apps.clone(),
        }
    }

    /// The flag that stops the server when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.process.stop.clone()
    }

    fn wait_listening(&self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.process.all_listening() {
            if Instant::now() > deadline || self.threads.iter().any(|t| t.is_finished()) {
                self.process.stop.store(true, Ordering::Release);
                return Err(StartError("shards did not start (see the log)".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Blocks until the server stops (after the stop flag is set and connections have closed).
    pub fn wait(mut self) {
        self.join();
    }

    /// Joins the shards, then lets the webhook dispatcher spool what it still holds.
    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(webhooks) = self.webhooks.take() {
            webhooks.stop();
        }
    }

    /// Stops the server gracefully: every client gets close code 4200; returns when done.
    pub fn shutdown(self) {
        self.process.stop.store(true, Ordering::Release);
        self.wait();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.process.stop.store(true, Ordering::Release);
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let socket = bind_one("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = TcpListener::from(socket);
        let _client = TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY is copied from the listener"
        );
    }
}
