#!/usr/bin/env bash
# The whole peer comparison of issue 15's table: Warren, soketi, sockudo and the harness's raw
# writer, one fresh server per row, the server on one core (taskset -c $SERVER_CPU) and the
# harness on another (taskset -c $HARNESS_CPU). Every row is printed and recorded with the exact
# commands that produced it (server start + harness run).
#
#   bash loadtest/scripts/compare-peers.sh [servers...]     # default: warren soketi sockudo raw
#
# Servers: warren ($WARREN_BIN), warren-before ($WARREN_BEFORE_BIN: an older build, for a
# before/after table in the same run), soketi, sockudo, raw (the harness's own writer; fan-out
# rows only).
#
# Run from the project root after
#   cargo build --release --bin warren && cargo build --release -p warren-loadtest
# and (for the peers) `bash ../shared/peers/install.sh`; a peer whose start script is missing
# or fails is skipped with a note. Never in CI: it takes ~10 minutes and needs the peers.
#
# Env: WARREN_BIN (target/release/warren), LOADTEST_BIN (target/release/warren-loadtest),
# WARREN_BEFORE_BIN (for warren-before), PEERS_DIR (../shared/peers), OUT_DIR (/tmp/compare-peers-<time>), SERVER_CPU (0),
# HARNESS_CPU (1), ROWS (all: idle fanout saturation saturation-45 connections api-channels api-channels-quiet api-latency
# api-latency-0 api-latency-5k api-latency-10k client-events),
# CONNECT_THREADS (harness threads for the connections row, 2), REPEAT (1: runs per cell),
# API_LATENCY_MESSAGES (triggers in the api-latency row, 300).
# Output: $OUT_DIR/commands.txt (every command, in order), $OUT_DIR/<row>-<server>-<n>.{out,json,log},
# $OUT_DIR/table.md (the summary table, also printed).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WARREN_BIN="${WARREN_BIN:-target/release/warren}"
LOADTEST_BIN="${LOADTEST_BIN:-target/release/warren-loadtest}"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/peers}"
OUT_DIR="${OUT_DIR:-/tmp/compare-peers-$(date -u +%Y%m%dT%H%M%S)}"
SERVER_CPU="${SERVER_CPU:-0}"
HARNESS_CPU="${HARNESS_CPU:-1}"
ROWS="${ROWS:-idle fanout saturation saturation-45 connections api-channels api-channels-quiet api-latency api-latency-0 api-latency-5k api-latency-10k client-events}"
WARREN_BEFORE_BIN="${WARREN_BEFORE_BIN:-}"
CONNECT_THREADS="${CONNECT_THREADS:-2}"
REPEAT="${REPEAT:-1}"
API_LATENCY_MESSAGES="${API_LATENCY_MESSAGES:-300}"
SERVERS=("$@")
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(warren soketi sockudo raw)
mkdir -p "$OUT_DIR"
COMMANDS="$OUT_DIR/commands.txt"
: >"$COMMANDS"
[ -x "$LOADTEST_BIN" ] || { echo "compare-peers: $LOADTEST_BIN missing (cargo build --release -p warren-loadtest)" >&2; exit 1; }

port_of() { case $1 in warren) echo 6150 ;; warren-before) echo 6160 ;; soketi) echo 6101 ;; sockudo) echo 6201 ;; esac; }

# The command line that starts server $1 in the foreground (it must exec the server).
start_command() {
  case $1 in
    warren) echo "taskset -c $SERVER_CPU $WARREN_BIN --port 6150 --bind 127.0.0.1 --shards 1" ;;
    warren-before) echo "taskset -c $SERVER_CPU $WARREN_BEFORE_BIN --port 6160 --bind 127.0.0.1 --shards 1" ;;
    soketi) echo "env PORT=6101 taskset -c $SERVER_CPU $PEERS_DIR/start-soketi.sh" ;;
    sockudo) echo "env PORT=6201 taskset -c $SERVER_CPU $PEERS_DIR/start-sockudo.sh" ;;
  esac
}

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

SERVER_PID=
start_server() { # name log
  local cmd; cmd=$(start_command "$1")
  echo "\$ $cmd &" >>"$COMMANDS"
  # shellcheck disable=SC2086
  bash -c "exec $cmd" >"$2" 2>&1 &
  SERVER_PID=$!
  if ! wait_port "$(port_of "$1")" 30; then
    echo "compare-peers: $1 did not open its port (log $2)" >&2
    stop_server; return 1
  fi
  sleep 3 # start-up work (soketi's JIT, allocations) is not part of the row
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local i
  kill -TERM "$SERVER_PID" 2>/dev/null
  for ((i = 0; i < 150; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  echo "\$ kill -TERM \$SPID; wait \$SPID" >>"$COMMANDS"
  SERVER_PID=
  sleep 1 # io_uring memlock is released only after the process is gone
}

# The harness arguments of row $1 against server $2 (after the scenario's --url etc.).
row_args() {
  case $1 in
    idle) echo "idle --connections 10000 --channels 1 --source-ips 4 --json" ;;
    fanout) echo "fanout --subscribers 5000 --rate 10 --duration-secs 10 --payload-bytes 100 --json" ;;
    saturation) echo "fanout --subscribers 9960 --rate 20 --duration-secs 10 --payload-bytes 100 --json" ;;
    saturation-45) echo "fanout --subscribers 9960 --rate 45 --duration-secs 10 --payload-bytes 100 --json" ;;
    connections) echo "connections --connections 10000 --channels-per-connection 3 --channel-pool 1000 --private --hold-secs 2 --threads $CONNECT_THREADS --source-ips 4 --json" ;;
    api-channels) echo "channels --connections 1000 --rate 3000 --duration-secs 5 --json" ;;
    api-channels-quiet) echo "channels --connections 1000 --quiet-connections 12000 --rate 3000 --duration-secs 5 --source-ips 4 --json" ;;
    api-latency) echo "api-latency --subscribers 5000 --messages $API_LATENCY_MESSAGES --json" ;;
    api-latency-0) echo "api-latency --subscribers 0 --messages 100 --rate 10 --json" ;;
    api-latency-5k) echo "api-latency --subscribers 5000 --messages 100 --rate 10 --json" ;;
    api-latency-10k) echo "api-latency --subscribers 10000 --messages 100 --rate 10 --source-ips 4 --json" ;;
    client-events) echo "client-events --subscribers 1000 --events 100 --senders 10 --rate 10 --json" ;;
  esac
}

raw_args() {
  case $1 in
    fanout) echo "raw-fanout --raw-cpu $SERVER_CPU --subscribers 5000 --rate 10 --duration-secs 10 --payload-bytes 100 --json" ;;
    saturation) echo "raw-fanout --raw-cpu $SERVER_CPU --subscribers 9960 --rate 20 --duration-secs 10 --payload-bytes 100 --json" ;;
    saturation-45) echo "raw-fanout --raw-cpu $SERVER_CPU --subscribers 9960 --rate 45 --duration-secs 10 --payload-bytes 100 --json" ;;
    *) return 1 ;;
  esac
}

run_cell() { # row server n
  local row=$1 server=$2 n=$3 base="$OUT_DIR/$1-$2-$3" cmd
  if [ "$server" = raw ]; then
    local args; args=$(raw_args "$row") || return 0
    cmd="taskset -c $HARNESS_CPU $LOADTEST_BIN $args"
  else
    local port; port=$(port_of "$server")
    start_server "$server" "$base.log" || { echo "$row $server: did not start" >>"$OUT_DIR/skipped.txt"; return 0; }
    cmd="taskset -c $HARNESS_CPU $LOADTEST_BIN $(row_args "$row" "$server" | sed "s|^\([a-z-]*\) |\1 --url ws://127.0.0.1:$port --app-id 1 --key app-key --secret app-secret --server-pid \$SPID |")"
  fi
  echo "== $row / $server (#$n)"
  echo "# $row / $server (#$n)" >>"$COMMANDS"
  echo "\$ $cmd" >>"$COMMANDS"
  SPID="$SERVER_PID" bash -c "${cmd//\$SPID/$SERVER_PID}" >"$base.out" 2>"$base.err"
  echo "rc=$?" >>"$COMMANDS"
  grep '^{' "$base.out" | tail -1 >"$base.json"
  [ "$server" = raw ] || stop_server
}

have_server() {
  case $1 in
    warren) [ -x "$WARREN_BIN" ] ;;
    warren-before) [ -n "$WARREN_BEFORE_BIN" ] && [ -x "$WARREN_BEFORE_BIN" ] ;;
    soketi) [ -d /opt/peers/soketi/node_modules ] ;;
    sockudo) [ -x /opt/peers/sockudo/bin/sockudo ] ;;
    raw) true ;;
    *) false ;;
  esac
}

trap 'stop_server' EXIT
for row in $ROWS; do
  for server in "${SERVERS[@]}"; do
    if ! have_server "$server"; then
      echo "$row $server: not installed" >>"$OUT_DIR/skipped.txt"
      continue
    fi
    for ((n = 1; n <= REPEAT; n++)); do run_cell "$row" "$server" "$n"; done
  done
done

python3 - "$OUT_DIR" "${SERVERS[@]}" <<'PY' | tee "$OUT_DIR/table.md"
import json, os, sys
out, servers = sys.argv[1], sys.argv[2:]
def cells(row, server):
    found = []
    n = 1
    while os.path.exists(f"{out}/{row}-{server}-{n}.json"):
        text = open(f"{out}/{row}-{server}-{n}.json").read().strip()
        if text:
            j = json.loads(text)
            found.append(j.get("figures", j))
        n += 1
    return found
def fmt(vals, f):
    vs = []
    for v in vals:
        try:
            x = f(v)
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        if x is not None:
            vs.append(x)
    return " / ".join(vs) if vs else "—"
rows = [
    ("idle subscribed connection, server RSS (10k), KB", "idle", lambda f: f"{f['kb_per_connection']:.2f}"),
    ("fan-out 5k × 10/s: CPU-s per million deliveries", "fanout", lambda f: f"{f['server_cpu_s_per_million_deliveries']:.2f}"),
    ("same, p50 / p99 ms", "fanout", lambda f: f"{f['latency_p50_ms']:.1f} / {f['latency_p99_ms']:.1f}"),
    ("past saturation 9,960 × 20/s: deliveries/s, lost", "saturation", lambda f: f"{f['deliveries_per_s']/1000:.1f}k, {f['lost']}"),
    ("same, CPU-s per million deliveries", "saturation", lambda f: f"{f['server_cpu_s_per_million_deliveries']:.2f}"),
    ("9,960 × 45/s (past saturation where the core outruns 20/s): deliveries/s, lost", "saturation-45", lambda f: f"{f['deliveries_per_s']/1000:.1f}k, {f['lost']}"),
    ("same, CPU-s per million deliveries", "saturation-45", lambda f: f"{f['server_cpu_s_per_million_deliveries']:.2f}"),
    ("connect + 3 private subscriptions per second (10k)", "connections", lambda f: f"{f['connects_per_s']/1000:.1f}k"),
    ("same, per second of server CPU", "connections", lambda f: f"{f['connects_per_server_cpu_s']/1000:.1f}k"),
    ("API publish to 1-subscriber channels at 3k/s, CPU µs per publish", "api-channels", lambda f: f"{f['server_cpu_s']*1e6/f['messages_published']:.0f}"),
    ("same, while 12,000 idle connections are held", "api-channels-quiet", lambda f: f"{f['server_cpu_s']*1e6/f['messages_published']:.0f}"),
    ("back-to-back SDK triggers, 5k subscribers: triggers/s, answer p50 / p99 ms", "api-latency", lambda f: f"{f['triggers_per_s']:.1f}/s, {f['trigger_p50_ms']:.1f} / {f['trigger_p99_ms']:.1f}"),
    ("trigger answer at 10/s, empty channel: p50 / p99 ms", "api-latency-0", lambda f: f"{f['trigger_p50_ms']:.2f} / {f['trigger_p99_ms']:.2f}"),
    ("same, 5k subscribers", "api-latency-5k", lambda f: f"{f['trigger_p50_ms']:.2f} / {f['trigger_p99_ms']:.2f}"),
    ("same, 10k subscribers", "api-latency-10k", lambda f: f"{f['trigger_p50_ms']:.2f} / {f['trigger_p99_ms']:.2f}"),
    ("client events, 1,000 subscribers + 10 senders: server CPU ms per 100k deliveries, lost", "client-events", lambda f: f"{f['cpu_ms_per_100k']:.0f}, {f['lost']}"),
]
print("| figure | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
for label, row, f in rows:
    print(f"| {label} | " + " | ".join(fmt(cells(row, s), f) for s in servers) + " |")
print()
print(f"commands: {out}/commands.txt")
PY
