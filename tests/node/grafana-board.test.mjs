// deploy/grafana/warren.json queries only what Warren exports: every metric name in its panel
// and variable queries is in the /metrics output of the running binary, and every label a query
// groups by (or a legend names) is on that metric. The server runs with everything that adds
// metrics: a cluster (a real redis-server) and a webhook receiver; clients produce the labelled
// series (a subscriber gets an event, a refused client event, a closed connection).

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  REPO_ROOT,
  clusterPrefix,
  createClient,
  probe,
  restClient,
  startRedis,
  startServer,
  startWebhookReceiver,
  subscribed,
  tomlValue,
  waitFor,
} from './helpers.mjs';

const BOARD = join(REPO_ROOT, 'deploy', 'grafana', 'warren.json');

/** Labels Prometheus adds at scrape time (not in /metrics), and the histogram bucket label. */
const SCRAPE_LABELS = new Set(['instance', 'job', 'le']);

let redis;
let receiver;
let server;
let spoolDir;
let client;

before(async () => {
  redis = await startRedis();
  receiver = await startWebhookReceiver();
  spoolDir = await mkdtemp(join(tmpdir(), 'warren-grafana-spool-'));
  server = await startServer({
    config: `
[webhooks]
spool_dir = ${tomlValue(spoolDir)}

[[apps]]
id = "${DEFAULT_APP.id}"
key = "${DEFAULT_APP.key}"
secret = "${DEFAULT_APP.secret}"
webhooks = ${tomlValue([{ url: receiver.url }])}

[cluster]
redis_url = "redis://127.0.0.1:${redis.port}/0"
prefix = "${clusterPrefix('grafana')}"
`,
  });
  await waitFor(async () => (await probe(server.port, '/ready')).status === 200, 10_000, 'the node ready (Redis link up)');
});

after(async () => {
  client?.disconnect();
  await server?.stop();
  await receiver?.close();
  await redis?.stop();
  if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
});

/** Every PromQL expression of the board: panel targets and query variables. */
function boardQueries(board) {
  const panels = board.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const targets = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr, legend: t.legendFormat ?? '' })));
  const variables = board.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => ({ where: `variable $${v.name}`, expr: typeof v.query === 'string' ? v.query : v.query.query, legend: '' }));
  return [...targets, ...variables];
}

/** /metrics as a map from sample name (`warren_x_bucket` included) to the label names seen on it. */
async function scrapeLabels(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const labels = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? /.exec(line);
    if (!m) continue;
    const names = labels.get(m[1]) ?? new Set();
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) names.add(pair[1]);
    labels.set(m[1], names);
  }
  return labels;
}

test('every metric and label the Grafana board queries is in the running server\'s /metrics', E2E, async () => {
  // Per-app series and delivered frames: one subscriber, one event.
  client = createClient(server.port);
  await subscribed(client, 'grafana-check');
  const got = new Promise((resolve) => client.channel('grafana-check').bind('tick', resolve));
  await restClient(server.port).trigger('grafana-check', 'tick', {});
  await got;
  client.send_event('client-refused', {}, 'grafana-check'); // public channel: rejected, by reason
  const leaver = createClient(server.port);
  await subscribed(leaver, 'grafana-check');
  leaver.disconnect(); // a close, by code
  await waitFor(async () => {
    const labels = await scrapeLabels(server.port);
    return labels.has('warren_client_events_rejected_total') && labels.has('warren_connections_closed_total');
  }, 5_000, 'the rejection and the close counted');

  const board = JSON.parse(await readFile(BOARD, 'utf8'));
  const queries = boardQueries(board);
  assert.ok(queries.length >= 15, `only ${queries.length} queries on the board`);
  const exported = await scrapeLabels(server.port);
  const problems = [];
  const queried = new Set();
  for (const { where, expr, legend } of queries) {
    const metrics = [...new Set(expr.match(/\bwarren_[a-z0-9_]+/g) ?? [])];
    if (metrics.length === 0) problems.push(`${where}: no warren_ metric in ${expr}`);
    for (const name of metrics) {
      queried.add(name);
      if (!exported.has(name)) problems.push(`${where}: ${name} is not in /metrics`);
    }
    const grouped = [...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((s) => s.trim()));
    const selected = [...expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1].matchAll(/([a-zA-Z_]\w*)\s*[=!]~?/g)].map((l) => l[1]));
    const legendLabels = [...legend.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
    for (const label of new Set([...grouped, ...selected, ...legendLabels])) {
      if (SCRAPE_LABELS.has(label)) continue;
      if (!metrics.some((name) => exported.get(name)?.has(label))) {
        problems.push(`${where}: label "${label}" is on none of ${metrics.join(', ')}`);
      }
    }
  }
  assert.deepEqual(problems, []);
  // The areas the board promises: connections per shard, messages and bytes, latency, webhook
  // queue and failures, cluster link.
  for (const name of [
    'warren_connections',
    'warren_messages_in_total',
    'warren_bytes_out_total',
    'warren_publish_to_write_seconds_bucket',
    'warren_webhooks_pending',
    'warren_webhooks_failed_attempts_total',
    'warren_cluster_link_up',
  ]) {
    assert.ok(queried.has(name), `the board does not show ${name}`);
  }
});
