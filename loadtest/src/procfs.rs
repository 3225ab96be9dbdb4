//! Sampling of the server process (and of the machine) through `/proc`.

use std::fs;
use std::io;
use std::time::Instant;

/// One reading of a process's memory and CPU counters.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When the sample was taken.
    pub at: Instant,
    /// `VmRSS` from `/proc/PID/status`, in KiB.
    pub rss_kb: u64,
    /// `RssAnon` (heap, stacks, anonymous maps), in KiB.
    pub rss_anon_kb: u64,
    /// `RssFile` (mapped files: the binary, libraries), in KiB.
    pub rss_file_kb: u64,
    /// `utime + stime` of the whole process from `/proc/PID/stat`, in clock ticks.
    pub cpu_ticks: u64,
    /// Time on CPU summed over the live threads' `/proc/PID/task/*/schedstat`, in nanoseconds.
    /// Finer than `cpu_ticks`, but threads that have exited are missing from it.
    pub cpu_sched_ns: u64,
    /// Number of threads.
    pub threads: u64,
}

impl ProcSample {
    /// Reads the counters of process `pid`.
    pub fn read(pid: u32) -> io::Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            at: Instant::now(),
            rss_kb: field("VmRSS"),
            rss_anon_kb: field("RssAnon"),
            rss_file_kb: field("RssFile"),
            threads: field("Threads"),
            cpu_ticks: read_cpu_ticks(pid)?,
            cpu_sched_ns: read_sched_ns(pid),
        })
    }

    /// CPU time between `self` (earlier) and `later`, in milliseconds, from `utime + stime`.
    pub fn cpu_ms_until(&self, later: &ProcSample) -> f64 {
        later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 * 1000.0 / clock_ticks_per_sec()
    }

    /// CPU time between `self` (earlier) and `later`, in milliseconds, from schedstat.
    pub fn sched_ms_until(&self, later: &ProcSample) -> f64 {
        later.cpu_sched_ns.saturating_sub(self.cpu_sched_ns) as f64 / 1e6
    }
}

/// `utime + stime` (fields 14 and 15 of `/proc/PID/stat`), which cover all threads.
fn read_cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))?;
    // after_comm starts at field 3 (state), so utime (14) and stime (15) are items 11 and 12.
    let mut fields = after_comm.split_whitespace().skip(11);
    let mut next = || -> io::Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
    };
    Ok(next()? + next()?)
}

/// Sum of the first field (time on CPU, ns) of every live thread's schedstat; 0 if unreadable.
fn read_sched_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat` times (100 on Linux).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Machine-wide kernel memory that grows with sockets: both ends of every loopback connection,
/// the harness's included.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSample {
    /// `Slab` from `/proc/meminfo`, in KiB.
    pub slab_kb: u64,
    /// TCP buffer memory (`TCP: ... mem N` from `/proc/net/sockstat`), in KiB.
    pub tcp_mem_kb: u64,
    /// TCP sockets in use (`TCP: inuse N`).
    pub tcp_inuse: u64,
}

impl KernelSample {
    /// Reads the counters; missing files give zeros.
    pub fn read() -> Self {
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let slab_kb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let sockstat = fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let tcp: Vec<&str> = sockstat
            .lines()
            .find_map(|l| l.strip_prefix("TCP:"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let value = |name: &str| -> u64 {
            tcp.iter()
                .position(|w| *w == name)
                .and_then(|i| tcp.get(i + 1)?.parse().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf has no preconditions.
        let page_kb = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64 / 1024;
        Self {
            slab_kb,
            tcp_mem_kb: value("mem") * page_kb,
            tcp_inuse: value("inuse"),
        }
    }
}

/// CPU time and nothing else of one thread of this process (`/proc/self/task/TID/stat` and
/// `schedstat`); memory fields are 0.
pub fn read_own_thread(tid: i32) -> io::Result<ProcSample> {
    let pid = std::process::id();
    let base = format!("/proc/{pid}/task/{tid}");
    let stat = fs::read_to_string(format!("{base}/stat"))?;
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let sched = fs::read_to_string(format!("{base}/schedstat"))?;
    Ok(ProcSample {
        at: Instant::now(),
        rss_kb: 0,
        rss_anon_kb: 0,
        rss_file_kb: 0,
        cpu_ticks: f.iter().sum(),
        cpu_sched_ns: sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        threads: 1,
    })
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The current soft open-file limit.
pub fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// The size of the ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> u64 {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [lo, hi] if hi >= lo => hi - lo + 1,
        _ => 28_232,
    }
}

/// Says which limit would cap a run that needs `fds` descriptors in this process and
/// `connections` outgoing connections to one server address over `source_ips` addresses.
pub fn capacity_notes(
    fds: usize,
    connections: usize,
    source_ips: u32,
    loopback: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    let limit = nofile_limit();
    if (fds as u64 + 64) > limit {
        notes.push(format!(
            "LIMIT: the run needs ~{} file descriptors but the open-file limit is {limit}; at most ~{} connections can open (raise `ulimit -n`)",
            fds + 64,
            limit.saturating_sub(64)
        ));
    }
    let ports = ephemeral_ports();
    let ips = if loopback {
        source_ips.max(1) as u64
    } else {
        1
    };
    if connections as u64 > ports * ips {
        notes.push(format!(
            "LIMIT: {connections} connections to one server address need more than the {ports} ephemeral ports of {ips} source address(es); at most {} can open (use --source-ips {})",
            ports * ips,
            (connections as u64).div_ceil(ports)
        ));
    }
    notes
}

/// Raises the soft open-file limit to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit with cur <= max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let sample = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.rss_kb > 0);
        assert!(sample.threads >= 1);
        let later = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.cpu_ms_until(&later) >= 0.0);
    }
}
