// Prometheus metrics at /metrics: the exposition parses as the text format (every sample line
// is `name{labels} value` under a # TYPE line), and the counters move as clients and the HTTP
// API do things: connections opened/closed, frames out, HTTP requests by route and status,
// client events rejected by reason, the publish-to-write histogram.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { E2E, restClient, subscribed, uniqueName, useServer, waitFor } from './helpers.mjs';

const ctx = useServer();

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*)?\})? (-?[0-9.eE+-]+|\+Inf|NaN)$/;

/** Scrapes /metrics and parses it strictly; returns a map from `name{labels}` to value. */
async function scrape() {
  const res = await fetch(`http://127.0.0.1:${ctx.server.port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const samples = new Map();
  const typed = new Set();
  for (const line of (await res.text()).split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line);
    if (type) {
      typed.add(type[1]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(m[1]) || typed.has(family), `sample before its # TYPE: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[5]));
  }
  return samples;
}

const sum = (samples, prefix) =>
  [...samples].filter(([k]) => k === prefix || k.startsWith(`${prefix}{`)).reduce((n, [, v]) => n + v, 0);

test('metrics parse as the Prometheus text format and move with traffic', E2E, async () => {
  const before = await scrape();
  const channel = uniqueName('metrics');
  const [a, b] = await Promise.all([ctx.connect(), ctx.connect()]);
  await Promise.all([subscribed(a, channel), subscribed(b, channel)]);
  const received = new Promise((resolve) => b.channel(channel).bind('tick', resolve));
  const res = await restClient(ctx.server.port).trigger(channel, 'tick', { n: 1 });
  assert.equal(res.status, 200);
  await received;
  // A client event on a public channel is refused: counted by reason.
  a.send_event('client-nope', { x: 1 }, channel);
  await waitFor(async () => sum(await scrape(), 'warren_client_events_rejected_total{reason="public_channel"}') >= 1, 5_000, 'rejection counted');

  const after = await scrape();
  assert.equal(sum(after, 'warren_connections') - sum(before, 'warren_connections'), 2, 'open connections gauge');
  assert.ok(after.has('warren_connections{shard="0"}') && after.has('warren_connections{shard="1"}'), 'per-shard gauges');
  assert.equal(sum(after, 'warren_connections_opened_total') - sum(before, 'warren_connections_opened_total'), 2);
  assert.ok(sum(after, 'warren_messages_out_total{app="1"}') - sum(before, 'warren_messages_out_total{app="1"}') >= 2 + 2 + 2, 'established + subscribed + the event');
  assert.ok(sum(after, 'warren_messages_in_total{app="1"}') > sum(before, 'warren_messages_in_total{app="1"}'));
  assert.equal(
    sum(after, 'warren_http_requests_total{route="events",status="200"}') - sum(before, 'warren_http_requests_total{route="events",status="200"}'),
    1,
  );
  assert.ok(sum(after, 'warren_subscriptions{app="1"}') >= 2);
  assert.ok(after.get('warren_publish_to_write_seconds_count') > (before.get('warren_publish_to_write_seconds_count') ?? 0));
  assert.equal(after.get('warren_publish_to_write_seconds_bucket{le="+Inf"}'), after.get('warren_publish_to_write_seconds_count'));

  a.disconnect();
  await waitFor(async () => sum(await scrape(), 'warren_connections_closed_total') > sum(before, 'warren_connections_closed_total'), 5_000, 'close counted');
  const bad = await restClient(ctx.server.port, { id: '1', key: 'app-key', secret: 'wrong' }).trigger(channel, 'x', {}).catch((e) => e);
  assert.equal(bad.status, 401);
  await waitFor(async () => sum(await scrape(), 'warren_http_requests_total{route="events",status="401"}') === 1, 5_000, '401 counted');
});
