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
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Open idle connections, each subscribed to one public channel, and measure the server's
    /// resident memory per connection.
    Idle(IdleArgs),
    /// Subscribe many connections to one private channel, send client events from a few of them,
    /// and measure the server's CPU time per delivery.
    ClientEvents(ClientEventsArgs),
    /// S subscribers on one public channel; messages published at R/s through the HTTP API (or
    /// as client events on a private channel); latency, throughput, loss and server CPU.
    Fanout(FanoutArgs),
    /// The physical limit: a minimal one-thread epoll WebSocket server inside the harness writes
    /// one pre-framed message to each of N connections at R/s. Same figures as `fanout`.
    RawFanout(FanoutArgs),
    /// N connections, each on its own public channel; messages published through the API to
    /// random channels at R/s.
    Channels(ChannelsArgs),
    /// A connect/disconnect storm while a fanout runs: latency and loss of the steady
    /// subscribers.
    Churn(ChurnArgs),
    /// Ramp to N connections (each on K channels from a pool), hold, and report set-up rate,
    /// failures by reason and server memory per connection.
    Connections(ConnectionsArgs),
    /// Join/leave churn on presence channels: steady members count the member_added /
    /// member_removed events of the churners and compare them with what was expected.
    Presence(PresenceArgs),
    /// S subscribers on one channel while a publisher calls the signed HTTP API back to back
    /// (or at `--rate`): how long each trigger takes to be answered, and whether every
    /// subscriber got every event.
    ApiLatency(ApiLatencyArgs),
    /// Run one scenario against several servers and print the figures side by side.
    Compare(CompareArgs),
}

/// Options of `compare`.
#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// Servers to compare, as `name=ws://host:port,...`; the first is the baseline of the ratios.
    /// The API URL of each is `http://host:port` of its WebSocket URL.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// Server pids for /proc sampling, as `name=PID,...` (optional).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<String>,
    /// Start a server before its run and stop it after, as `name=COMMAND` (repeat per
    /// server), e.g. `--start 'soketi=PORT=6101 ../shared/peers/start-soketi.sh'`. The command
    /// must `exec` the server (the peers' start scripts do) so that its pid is sampled; each
    /// server is then fresh for its run. Servers without one must already run.
    #[arg(long)]
    pub start: Vec<String>,
    /// Directory for the started servers' logs (`NAME.log`); default: discarded.
    #[arg(long)]
    pub start_logs: Option<std::path::PathBuf>,
    /// The scenario (its `--url`, `--api` and `--server-pid` are replaced per server).
    #[command(subcommand)]
    pub scenario: Compared,
}

/// The scenarios `compare` can run.
#[derive(Debug, Clone, Subcommand)]
pub enum Compared {
    /// See `fanout`.
    Fanout(FanoutArgs),
    /// See `channels`.
    Channels(ChannelsArgs),
    /// See `connections`.
    Connections(ConnectionsArgs),
    /// See `api-latency`.
    ApiLatency(ApiLatencyArgs),
}

impl Compared {
    /// The scenario to run.
    pub fn scenario(&self) -> Scenario {
        match self.clone() {
            Compared::Fanout(a) => Scenario::Fanout(a),
            Compared::Channels(a) => Scenario::Channels(a),
            Compared::Connections(a) => Scenario::Connections(a),
            Compared::ApiLatency(a) => Scenario::ApiLatency(a),
        }
    }
}

/// How `fanout` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Signed `POST /apps/{id}/events` over keep-alive HTTP/1.1.
    Api,
    /// Client events from sender connections on a private channel.
    ClientEvents,
}

/// Publishing options shared by the delivery scenarios.
#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Messages per second (in total).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of publishing (messages = rate × duration).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Length of each message's `data` string, in bytes (padded; at least the header's length).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
}

/// Options of `fanout` and `raw-fanout`.
#[derive(Debug, Args, Clone)]
pub struct FanoutArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Publishing options.
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// How messages are published (`fanout` only).
    #[arg(long, value_enum, default_value_t = Via::Api)]
    pub via: Via,
    /// Sender connections with `--via client-events` (messages go round-robin; the server's
    /// default limit is 10 client events per second per connection).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Channel name (default `loadtest-fanout`, or `private-loadtest-fanout` for client events).
    #[arg(long)]
    pub channel: Option<String>,
    /// `raw-fanout` only: pin the raw server thread to this CPU (to mirror a server started
    /// with `taskset -c`).
    #[arg(long)]
    pub raw_cpu: Option<usize>,
    /// `raw-fanout` only: how the raw server writes the fan-out (`io-uring`: one SEND SQE per
    /// socket and message; `epoll`: one `send(2)` per socket and message).
    #[arg(long, value_enum, default_value_t = RawEngine::IoUring)]
    pub raw_engine: RawEngine,
}

/// The raw server's fan-out write path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawEngine {
    /// `send(2)` per socket from the epoll loop.
    Epoll,
    /// io_uring SEND SQEs, submitted in batches.
    IoUring,
}

/// Options of `api-latency`.
#[derive(Debug, Args, Clone)]
pub struct ApiLatencyArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers listening on the channel (0: an empty channel).
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// Triggers to send.
    #[arg(long, default_value_t = 1_000)]
    pub messages: u64,
    /// Triggers per second on a fixed schedule; without it, each trigger is sent as soon as the
    /// previous one was answered (as a backend calling `trigger()` in a loop does).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Length of each event's `data` string, in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Seconds to wait for outstanding deliveries after the last trigger.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Channel name.
    #[arg(long, default_value = "loadtest-api-latency")]
    pub channel: String,
}

/// Options of `churn`.
#[derive(Debug, Args, Clone)]
pub struct ChurnArgs {
    /// The fanout that runs meanwhile.
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Connections that churn (on the same channel, not counted as receivers).
    #[arg(long, default_value_t = 100)]
    pub churn_connections: usize,
    /// Disconnects (each followed by a reconnect and resubscribe) per second.
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
}

/// Options of `channels`.
#[derive(Debug, Args, Clone)]
pub struct ChannelsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Publishing options.
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Connections, each on its own channel `loadtest-ch-{i}`.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Connections more, all on one channel that is never published to (`loadtest-quiet`):
    /// idle sockets the server holds while the publishes run (what a publish costs on a busy
    /// box).
    #[arg(long, default_value_t = 0)]
    pub quiet_connections: usize,
}

/// Options of `connections`.
#[derive(Debug, Args, Clone)]
pub struct ConnectionsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Channels each connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub channels_per_connection: usize,
    /// Size of the channel pool (connection i takes channels i, i+1, ... modulo the pool).
    #[arg(long, default_value_t = 100)]
    pub channel_pool: usize,
    /// Use private channels (auth signed locally with the secret).
    #[arg(long)]
    pub private: bool,
    /// Seconds to hold the connections open after the ramp.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
}

/// Options of `presence`.
#[derive(Debug, Args, Clone)]
pub struct PresenceArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Presence channels (`presence-loadtest-{i}`).
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Steady members per channel (join during set-up and stay; one user each).
    #[arg(long, default_value_t = 20)]
    pub members: usize,
    /// Churners per channel (connections that join and leave repeatedly; one user each).
    #[arg(long, default_value_t = 2)]
    pub churners: usize,
    /// Join/leave cycles per second, over all churners.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of churning (cycles = rate × duration).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds to wait for outstanding member events after the last leave.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
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
    /// HTTP API base URL (`http://host:port`); default: host and port of `--url`.
    #[arg(long)]
    pub api: Option<String>,
    /// App id, for the HTTP API's path.
    #[arg(long, default_value = "1")]
    pub app_id: String,
    /// Write the JSON report to this file.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Write an SVG chart (latency percentiles, deliveries/s, connections over time).
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
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
    /// Sign every connection in (`pusher:signin`, user `loadtest-user-{i}`, signed by the
    /// harness with `--secret`) before it subscribes: the memory of a signed-in idle socket.
    #[arg(long)]
    pub signin: bool,
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
