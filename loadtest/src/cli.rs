//! Command line: one subcommand per scenario, each with the shared [`Common`] options.

use clap::{Args, Parser, Subcommand};

/// Drives a running Warren server over real sockets and reports what it cost the server.
#[derive(Debug, Parser)]
#[command(name = "warren-loadtest", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios the harness knows.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open idle connections, each subscribed to one public channel, and measure the server's
    /// resident memory per connection.
    Idle(IdleArgs),
    /// Subscribe many connections to one private channel, send client events from a few of them,
    /// and measure the server's CPU time per delivery.
    ClientEvents(ClientEventsArgs),
}

/// Options every scenario takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Server WebSocket URL (`ws://host:port[/prefix]`); `/app/{key}` is appended.
    #[arg(long, default_value = "ws://127.0.0.1:6001")]
    pub url: String,
    /// App key to connect with.
    #[arg(long, default_value = "app-key")]
    pub key: String,
    /// App secret, used to sign private-channel subscriptions locally.
    #[arg(long, default_value = "app-secret")]
    pub secret: String,
    /// PID of the server process, whose /proc entries are sampled (no server numbers without it).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Client threads (one epoll loop each); connections are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Number of local source addresses (127.0.0.1, 127.0.0.2, ...) to spread connections over;
    /// each gives another ~28k ephemeral ports. 1 means no explicit bind.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u32,
    /// Connections being set up (TCP connect, upgrade, subscribe) at once, per client thread.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up if set-up (connect and subscribe) has not finished after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub setup_timeout_secs: u64,
    /// Print the result as one JSON object on stdout, after the human-readable report.
    #[arg(long)]
    pub json: bool,
}

/// Options of the `idle` scenario.
#[derive(Debug, Args, Clone)]
pub struct IdleArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Public channels to spread them over (connection i joins `loadtest-idle-{i % channels}`).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Seconds to wait after the last subscription before sampling memory.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Extra seconds to keep the connections open after sampling (watching for drops).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

/// Options of the `client-events` scenario.
#[derive(Debug, Args, Clone)]
pub struct ClientEventsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Receiving connections subscribed to the channel.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Client events to send in total, spread evenly over the senders.
    #[arg(long, default_value_t = 100)]
    pub events: usize,
    /// Sending connections (also subscribed, so they receive each other's events).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Events per second per sender (the server's default limit is 10 per connection).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Private channel to use.
    #[arg(long, default_value = "private-loadtest")]
    pub channel: String,
    /// Extra padding bytes in each event's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
}
