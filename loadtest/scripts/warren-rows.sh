#!/usr/bin/env bash
# The rows of docs/benchmarks.md that only Warren has (the peer table is compare-peers.sh):
# `channels` and `churn`, the client-event fan-out, webhook delivery rate, cross-node latency
# through a real redis-server, and the criterion benches. One fresh server per row, pinned to
# $SERVER_CPU, the harness on $HARNESS_CPU. Every command is recorded before it runs.
#
#   bash loadtest/scripts/warren-rows.sh [rows...]   # default: channels churn client-events webhooks cluster criterion
#
# Run from the project root after `cargo build --release --bin warren -p warren-loadtest` and
# `npm ci` (the cluster row uses pusher-js and the `pusher` SDK; the webhooks row a Node
# receiver); the cluster row needs `redis-server` on PATH. Never in CI (~5 minutes; criterion
# another ~5).
#
# Env: WARREN_BIN (target/release/warren), LOADTEST_BIN (target/release/warren-loadtest),
# OUT_DIR (/tmp/warren-rows-<time>), SERVER_CPU (0), HARNESS_CPU (1).
# Output: $OUT_DIR/commands.txt, $OUT_DIR/<row>*.{out,log}, the figures printed per row.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WARREN_BIN="${WARREN_BIN:-target/release/warren}"
LOADTEST_BIN="${LOADTEST_BIN:-target/release/warren-loadtest}"
OUT_DIR="${OUT_DIR:-/tmp/warren-rows-$(date -u +%Y%m%dT%H%M%S)}"
SERVER_CPU="${SERVER_CPU:-0}"
HARNESS_CPU="${HARNESS_CPU:-1}"
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(channels churn client-events webhooks cluster criterion)
mkdir -p "$OUT_DIR"
COMMANDS="$OUT_DIR/commands.txt"
: >"$COMMANDS"
CREDS="--app-id 1 --key app-key --secret app-secret"
PIDS=()

# Runs and records a command line (through bash, so redirections in it work).
run() { echo "\$ $*" >>"$COMMANDS"; bash -c "$*"; }
# Starts a command line in the background, recorded; its pid is appended to PIDS.
start() { echo "\$ $* &" >>"$COMMANDS"; bash -c "exec $*" & PIDS+=($!); }
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; PIDS=(); }
trap stop_all EXIT

wait_port() { # port
  local i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "warren-rows: nothing listens on $1" >&2
  return 1
}

# Starts Warren on `port` with extra arguments; WARREN_PID is its pid.
start_warren() { # port [args...]
  local port=$1; shift
  start "taskset -c $SERVER_CPU $WARREN_BIN --port $port --bind 127.0.0.1 --shards 1 --log error $*"
  WARREN_PID=${PIDS[-1]}
  wait_port "$port" && sleep 1
}

harness() { # scenario args... (the server pid is the last started Warren)
  run "taskset -c $HARNESS_CPU $LOADTEST_BIN $* --server-pid $WARREN_PID"
}

row_channels() {
  start_warren 6611
  harness "channels --url ws://127.0.0.1:6611 $CREDS --connections 10000 --rate 1000 --duration-secs 10 --source-ips 4" \
    | tee "$OUT_DIR/channels.out"
  stop_all
}

row_churn() {
  start_warren 6612
  harness "churn --url ws://127.0.0.1:6612 $CREDS --subscribers 5000 --rate 10 --churn-connections 500 --churn-rate 200 --duration-secs 10 --source-ips 4" \
    | tee "$OUT_DIR/churn.out"
  stop_all
}

row_client_events() {
  start_warren 6613
  harness "client-events --url ws://127.0.0.1:6613 $CREDS --subscribers 1000 --events 100 --senders 10 --rate 10" \
    | tee "$OUT_DIR/client-events.out"
  stop_all
}

# Every client event becomes a `client_event` webhook to a Node receiver that counts events and
# requests; the client-event limit is raised so that one sender can send 100,000 a second.
row_webhooks() {
  local spool="$OUT_DIR/spool" config="$OUT_DIR/webhooks.toml"
  rm -rf "$spool"; mkdir -p "$spool"
  cat >"$config" <<EOF
[server]
bind = "127.0.0.1"
port = 6614
[webhooks]
batch_window_ms = 50
max_batch_size = 50
spool_dir = "$spool"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
max_client_events_per_second = 1000000
webhooks = [{ url = "http://127.0.0.1:6799/hook", events = ["client_event"] }]
EOF
  cat >"$OUT_DIR/receiver.mjs" <<'EOF'
import { createServer } from 'node:http';
let events = 0, requests = 0, first = 0, last = 0;
createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const n = JSON.parse(body).events.filter((e) => e.name === 'client_event').length;
    if (n) { events += n; requests += 1; last = Date.now(); first ||= last; }
    res.end('{}');
  });
}).listen(6799, '127.0.0.1');
process.on('SIGTERM', () => {
  console.log(JSON.stringify({ events, requests, receiver_ms: last - first }));
  process.exit(0);
});
EOF
  start "node $OUT_DIR/receiver.mjs >$OUT_DIR/webhooks-receiver.out"
  local receiver=${PIDS[-1]}
  start_warren 6614 "--config $config"
  harness "client-events --url ws://127.0.0.1:6614 $CREDS --subscribers 1 --events 100000 --senders 1 --rate 100000" \
    | tee "$OUT_DIR/webhooks.out"
  sleep 3 # the last batches
  kill "$receiver"; wait "$receiver" 2>/dev/null
  stop_all
  echo "receiver: $(cat "$OUT_DIR/webhooks-receiver.out")"
}

# Two nodes through Debian's redis-server, node A on $SERVER_CPU, node B on $HARNESS_CPU.
row_cluster() {
  command -v redis-server >/dev/null || { echo "warren-rows: no redis-server, cluster row skipped"; return; }
  start "redis-server --port 6620 --save '' --appendonly no >$OUT_DIR/redis.log"
  wait_port 6620
  local cluster="WARREN_CLUSTER__REDIS_URL=redis://127.0.0.1:6620/0"
  start "env $cluster taskset -c $SERVER_CPU $WARREN_BIN --port 6621 --bind 127.0.0.1 --shards 1 --log error"
  start "env $cluster taskset -c $HARNESS_CPU $WARREN_BIN --port 6622 --bind 127.0.0.1 --shards 1 --log error"
  wait_port 6621 && wait_port 6622 && sleep 3 # the nodes hear each other's heartbeat
  local script=loadtest/scripts/cluster-latency.mjs
  echo "same node:"; run "node $script --a 6621 --b 6621 --count 2000 --rate 200" | tee "$OUT_DIR/cluster-same.out"
  echo "across nodes:"; run "node $script --a 6621 --b 6622 --count 2000 --rate 200" | tee "$OUT_DIR/cluster-across.out"
  echo "sendToUser across nodes:"; run "node $script --a 6621 --b 6622 --count 2000 --rate 200 --user" | tee "$OUT_DIR/cluster-user.out"
  stop_all
}

row_criterion() {
  run "cargo bench --bench protocol --bench webhook_spool --bench channels -- --noplot --output-format bencher" \
    | grep '^test ' | tee "$OUT_DIR/criterion.out"
}

for row in "${ROWS[@]}"; do
  echo "== $row"
  "row_${row//-/_}"
done
echo "commands: $COMMANDS"
