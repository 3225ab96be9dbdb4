//! Servers that `compare` starts itself (`--start name='command'`): the command runs under
//! `bash -c 'exec …'` so that the child's pid is the server's, the harness waits for its port,
//! measures it, then stops it with SIGTERM (SIGKILL after a grace period) and reaps it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Quiet time after the port opens, so that start-up work is not measured.
const SETTLE: Duration = Duration::from_secs(2);

/// A server process started by the harness; stopped when dropped.
#[derive(Debug)]
pub struct Launched {
    child: Child,
    name: String,
}

impl Launched {
    /// Runs `command` (a shell command line whose last step `exec`s the server, as the peers'
    /// start scripts do) and waits until `addr` accepts connections. Its output goes to
    /// `log`, when given, else is discarded.
    pub fn start(
        name: &str,
        command: &str,
        addr: SocketAddr,
        log: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let copy = file.try_clone().map_err(|e| e.to_string())?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({command}): {e}"))?;
        let mut launched = Self {
            child,
            name: name.to_string(),
        };
        launched.wait_for_port(addr)?;
        std::thread::sleep(SETTLE);
        Ok(launched)
    }

    /// The server's pid (the child's: the command `exec`s it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_port(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited at start ({status})", self.name));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{} did not open {addr} within {START_TIMEOUT:?}",
            self.name
        ))
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet (we reap it
        // below), so the pid cannot have been reused by another process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "warren-loadtest: {} still up after SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_waits_for_the_port_and_stops_the_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let command = format!(
            "python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",{port})); s.listen(); time.sleep(60)'"
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = Launched::start("listener", &command, addr, None).expect("starts");
        let pid = server.pid();
        // `exec`: the child is the server itself, not a shell around it.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(comm.starts_with("python3"), "{comm}");
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_server_that_exits_at_start_is_reported() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let error = Launched::start("broken", "false", addr, None).unwrap_err();
        assert!(error.contains("exited at start"), "{error}");
    }
}
