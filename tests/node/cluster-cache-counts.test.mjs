// Cache channels and subscription counts across a cluster of three nodes joined through one
// real Redis: a cache subscriber on one node gets what was last published on another; the
// `pusher_internal:subscription_count` a subscriber sees is the sum over every node, a node
// that joins late learns the others' counts, and a dead node's subscribers stop counting; the
// `subscription_count` webhook carries the cluster-wide count, once per change.
//
// Needs redis-server (Debian package `redis-server`, or REDIS_SERVER=/path).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  clusterPrefix,
  clusterScope,
  nextOf,
  record,
  sleep,
  startWebhookReceiver,
  subscribed,
  uniqueName,
  useCluster,
  waitFor,
} from './helpers.mjs';

const APP_TOML = 'enable_subscription_count_events = true\ncache_ttl_secs = 60';
const ctx = useCluster({ nodes: 3, prefix: clusterPrefix('cache-counts'), nodeOptions: { appToml: APP_TOML } });

const T = Object.freeze({ timeout: 45_000 });
const PROPAGATION_MS = 5_000;

const counts = (rec) => rec.data.map((d) => d.subscription_count);
/** Wait until the last count `rec` saw is `n`. */
const lastCount = (rec, n, what) =>
  waitFor(() => counts(rec).at(-1) === n, PROPAGATION_MS, `${what}: count ${n} (saw ${JSON.stringify(counts(rec))})`);

test('a cache subscriber on one node gets the event last published on another', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const channel = uniqueName('cache-cluster');
  const priv = uniqueName('private-cache-cluster');
  await n0.rest().trigger(channel, 'state', { v: 1 });
  await n2.rest().trigger(channel, 'state', { v: 2 });
  await n0.rest().trigger(priv, 'state', { p: true });
  // The last publish (node2's) has reached node1 once node1 answers info=cache with it.
  await waitFor(async () => {
    const res = await n1.rest().get({ path: `/channels/${channel}`, params: { info: 'cache' } });
    return (await res.json()).cache?.data === JSON.stringify({ v: 2 });
  }, PROPAGATION_MS, 'node1 to cache node2\'s event');
  for (const node of [n1, n2]) {
    const pusher = await node.connect();
    const replay = nextOf(pusher.subscribe(channel), ['state', 'pusher:cache_miss'], PROPAGATION_MS);
    assert.deepEqual(await replay, { event: 'state', data: { v: 2 }, metadata: {} }, node.name);
    await waitFor(async () => {
      const res = await node.rest().get({ path: `/channels/${priv}`, params: { info: 'cache' } });
      return (await res.json()).cache;
    }, PROPAGATION_MS, `${node.name} to cache the private event`);
    const got = await nextOf(pusher.subscribe(priv), ['state', 'pusher:cache_miss'], PROPAGATION_MS);
    assert.deepEqual(got.data, { p: true }, `${node.name} private`);
  }
});

test('subscription_count is the sum over every node', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const name = uniqueName('counted-cluster');
  const a = await n0.connect();
  const atA = record(a.subscribe(name), 'pusher:subscription_count');
  await lastCount(atA, 1, 'node0 alone');
  const b = await n1.connect();
  const atB = record(b.subscribe(name), 'pusher:subscription_count');
  await lastCount(atA, 2, 'node0 after node1 subscribed');
  await lastCount(atB, 2, 'node1 after its own subscription');
  const c = await n2.connect();
  await subscribed(c, name);
  await lastCount(atA, 3, 'node0 after node2 subscribed');
  await lastCount(atB, 3, 'node1 after node2 subscribed');
  c.unsubscribe(name);
  await lastCount(atA, 2, 'node0 after node2 unsubscribed');
  await lastCount(atB, 2, 'node1 after node2 unsubscribed');
});

test('a node that joins late learns the counts of the others; a dead node stops counting', T, async () => {
  const [n0] = ctx.nodes;
  const name = uniqueName('counted-late');
  const a = await n0.connect();
  const atA = record(a.subscribe(name), 'pusher:subscription_count');
  await lastCount(atA, 1, 'node0 alone');

  const late = await ctx.node({ appToml: APP_TOML, name: 'late' });
  await sleep(500);
  const d = await late.connect();
  const atD = record(d.subscribe(name), 'pusher:subscription_count');
  await lastCount(atD, 2, 'the late node: node0\'s subscriber and its own');
  await lastCount(atA, 2, 'node0 after the late node subscribed');

  // Killed without a goodbye: the others drop it after node_timeout (3 s).
  await late.kill9();
  await lastCount(atA, 1, 'node0 after the late node died');
});

test('the subscription_count webhook is the cluster-wide count, sent once per change', T, async () => {
  const rx = await startWebhookReceiver();
  const scope = clusterScope({ prefix: clusterPrefix('count-webhook') });
  const dirs = [];
  try {
    await scope.redis();
    const nodes = [];
    for (let i = 0; i < 2; i++) {
      const dir = await mkdtemp(join(tmpdir(), 'warren-count-spool-'));
      dirs.push(dir);
      nodes.push(
        await scope.node({
          appToml: `enable_subscription_count_webhooks = true\nwebhooks = [{ url = "${rx.url}", events = ["subscription_count"] }]`,
          extraToml: `\n[webhooks]\nspool_dir = "${dir}"\nbatch_window_ms = 0`,
        }),
      );
    }
    const name = uniqueName('counted-hooked');
    const counts = () => rx.events((e) => e.channel === name).map((e) => e.subscription_count);
    const a = await nodes[0].connect();
    await subscribed(a, name);
    await waitFor(() => counts().length === 1, PROPAGATION_MS, 'the first count');
    await sleep(300); // node0's count has reached node1
    const b = await nodes[1].connect();
    await subscribed(b, name);
    await waitFor(() => counts().length === 2, PROPAGATION_MS, 'the second count');
    a.unsubscribe(name);
    await waitFor(() => counts().length === 3, PROPAGATION_MS, 'the third count');
    await sleep(500);
    assert.deepEqual(counts(), [1, 2, 1], 'one webhook per change, each the sum over both nodes');
    assert.deepEqual(rx.problems(), []);
  } finally {
    await scope.cleanup(false);
    await rx.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
});
