// Cross-node delivery across a Redis outage (docs/architecture.md, "Cluster": numbered
// envelopes, the publisher's replay log, in-order delivery at the receivers): Redis is
// stopped and started again on the same port while node A's HTTP API publishes ~100
// numbered events a second; the clients on nodes B and C must get every event A answered
// 200 for, once, in order, for a ~2 s and a ~10 s outage (within the default
// outage_buffer_secs), and for subscriptions cut while publishing goes on (each receiver
// asks for a replay of what it missed). Presence members do not leave and re-join for an outage shorter
// than node_timeout. Beyond the buffer, the drop is counted in /metrics and logged.
//
// Each test starts its own Redis and three nodes and stops them in `finally`. Needs
// redis-server (or REDIS_SERVER=/path).

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import {
  clusterPrefix,
  clusterScope,
  eventually,
  joinPresence,
  logCount,
  presenceUserIds,
  sleep,
  subscribed,
  uniqueName,
  waitFor,
} from './helpers.mjs';

const PROPAGATION_MS = 5_000;

/** Run `body(scope)` with a fresh cluster scope; stop everything afterwards (logs when it failed). */
async function withCluster(label, body) {
  const scope = clusterScope({ prefix: clusterPrefix(label) });
  let failed = true;
  try {
    await body(scope);
    failed = false;
  } finally {
    await scope.cleanup(failed);
  }
}

/** One sample of a node's /metrics, `name{labels}` exactly as written (0 if absent). */
async function metric(node, sample) {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

/** Send one inline command to Redis on `port`; resolves with its first reply line. */
function redisCommand(port, command) {
  return new Promise((resolvePromise, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) {
        socket.destroy();
        resolvePromise(reply.split('\r\n')[0]);
      }
    });
    socket.on('error', reject);
  });
}

/** A node's cluster id, from its start-up log line. */
function nodeId(node) {
  // eslint-disable-next-line no-control-regex
  const log = node.log().replace(/\x1b\[[0-9;]*m/g, '');
  const id = /clustered through Redis node=([0-9a-f]+)/.exec(log)?.[1];
  assert.ok(id, `${node.name}'s node id in its log`);
  return id;
}

/**
 * Watch the bus on Redis for `id`'s heartbeats: `last` is when the latest was seen (0: none
 * yet); `close()` ends the watch.
 */
function watchHeartbeats(port, channel, id) {
  const socket = connect({ host: '127.0.0.1', port });
  const watch = { last: 0, close: () => socket.destroy() };
  socket.setEncoding('utf8');
  socket.on('connect', () => socket.write(`SUBSCRIBE ${channel}\r\n`));
  socket.on('data', (chunk) => {
    const mine = chunk.split('\r\n').some((l) => l.includes(`"node":"${id}"`) && l.includes('"t":"Heartbeat"'));
    if (mine) watch.last = Date.now();
  });
  socket.on('error', () => {});
  return watch;
}

/**
 * Publish `{i}` as event `tick` on `channel` through `node`'s HTTP API, one call after
 * the other, about every `everyMs`, until `stop()` is called. `sent` lists the i's the
 * API answered 200 for, `failures` the others.
 */
function startTicking(node, channel, everyMs = 10) {
  const ticker = { sent: [], failures: [], running: true };
  ticker.done = (async () => {
    for (let i = 0; ticker.running; i++) {
      const at = Date.now();
      try {
        const res = await node.rest().trigger(channel, 'tick', { i });
        if (res.status === 200) ticker.sent.push(i);
        else ticker.failures.push({ i, status: res.status });
      } catch (e) {
        ticker.failures.push({ i, status: e.status, error: e.message });
      }
      await sleep(Math.max(0, at + everyMs - Date.now()));
    }
  })();
  ticker.stop = async () => {
    ticker.running = false;
    await ticker.done;
  };
  return ticker;
}

/** A pusher-js client of `node` subscribed to `channel`, recording the `i` of every tick. */
async function tickReceiver(node, channel) {
  const got = [];
  (await subscribed(await node.connect(), channel)).bind('tick', (d) => got.push(d.i));
  return got;
}

/** Repeats, losses and order of `got` against `sent`, for messages. */
function compare(got, sent) {
  const seen = new Set(got);
  const lost = sent.filter((i) => !seen.has(i));
  const duplicated = got.length - seen.size;
  const inOrder = got.every((i, k) => k === 0 || i > got[k - 1]);
  return { lost: lost.length, duplicated, inOrder };
}

/**
 * Three nodes with the default node_timeout and heartbeat; presence members on B and C
 * seen from A; A publishes ~100 ticks/s while Redis is down for `downMs`. Every client on
 * B and C gets every tick once, in order, and A's presence observer sees no member leave
 * or join.
 */
async function outageUnderTraffic(t, label, downMs) {
  await withCluster(label, async (scope) => {
    const redis = await scope.redis();
    const options = { nodeTimeout: null, heartbeatInterval: null };
    const A = await scope.node(options);
    const B = await scope.node(options);
    const C = await scope.node(options);
    const pub = uniqueName(`${label}-pub`);
    const room = uniqueName(`presence-${label}`);

    const obs = await joinPresence(A, room, { id: 'obs' });
    await joinPresence(B, room, { id: 'bob' });
    await joinPresence(C, room, { id: 'carol' });
    for (const n of [A, B, C]) {
      await eventually(() => presenceUserIds(n, room), ['bob', 'carol', 'obs'], `room on ${n.name}`);
    }
    await waitFor(() => obs.rawAdded.count >= 2, PROPAGATION_MS, 'member_added for bob and carol at obs');
    const addedBefore = obs.rawAdded.count;

    const atB = await tickReceiver(B, pub);
    const atC = await tickReceiver(C, pub);
    const ticker = startTicking(A, pub);
    try {
      await waitFor(() => atB.length >= 50 && atC.length >= 50, PROPAGATION_MS, '50 ticks on B and C first');
      const stoppedAt = Date.now();
      await redis.stop();
      await sleep(Math.max(0, stoppedAt + downMs - Date.now()));
      await redis.start();
      t.diagnostic(`Redis down for ${Date.now() - stoppedAt} ms; ${ticker.sent.length} ticks sent so far`);
      await sleep(3_000);
    } finally {
      await ticker.stop();
    }
    const { sent, failures } = ticker;
    assert.deepEqual(failures, [], 'A answered every trigger with 200, also while Redis was down');
    const last = sent.at(-1);
    await waitFor(
      () => atB.includes(last) && atC.includes(last),
      15_000,
      `the last tick (${last}) on B and C`,
    ).catch(() => {});
    await sleep(500);
    for (const [who, got] of Object.entries({ B: atB, C: atC })) {
      const result = compare(got, sent);
      t.diagnostic(`${who}: ${got.length} of ${sent.length} ticks; ${JSON.stringify(result)}`);
      assert.deepEqual(result, { lost: 0, duplicated: 0, inOrder: true }, `${who}'s client`);
      assert.deepEqual(got, sent, `${who}'s client got every tick A accepted, once, in order`);
    }

    // Presence: nobody left or re-joined on A's side, and the room is whole everywhere.
    for (const n of [A, B, C]) {
      await eventually(() => presenceUserIds(n, room), ['bob', 'carol', 'obs'], `room on ${n.name} after`);
    }
    const ids = (r) => r.data.map((d) => d.user_id);
    assert.deepEqual(ids(obs.rawRemoved), [], 'obs saw no member_removed');
    assert.equal(obs.rawAdded.count, addedBefore, `obs saw no new member_added: ${ids(obs.rawAdded)}`);
    for (const n of [A, B, C]) {
      assert.equal(await metric(n, 'warren_cluster_messages_missed_total'), 0, `${n.name}: nothing missed`);
    }
  });
}

test('Redis down ~2 s under 100 msgs/s: clients on the other nodes get every message once, in order', {
  timeout: 90_000,
}, (t) => outageUnderTraffic(t, 'outage-2s', 2_000));

test('Redis down ~10 s under 100 msgs/s: clients on the other nodes get every message once, in order', {
  timeout: 120_000,
}, (t) => outageUnderTraffic(t, 'outage-10s', 10_000));

test('subscriptions cut while publishing goes on (CLIENT KILL TYPE pubsub, 3 times): nothing lost or repeated', {
  timeout: 60_000,
}, (t) =>
  withCluster('blip', async (scope) => {
    const redis = await scope.redis();
    const A = await scope.node();
    const B = await scope.node();
    const C = await scope.node();
    const pub = uniqueName('blip-pub');
    const atB = await tickReceiver(B, pub);
    const atC = await tickReceiver(C, pub);
    const ticker = startTicking(A, pub);
    try {
      await waitFor(() => atB.length >= 50 && atC.length >= 50, PROPAGATION_MS, '50 ticks on B and C first');
      for (let k = 0; k < 3; k++) {
        const killed = await redisCommand(redis.port, 'CLIENT KILL TYPE pubsub');
        t.diagnostic(`CLIENT KILL TYPE pubsub: ${killed}`);
        await sleep(1_000);
      }
      await sleep(1_000);
    } finally {
      await ticker.stop();
    }
    assert.deepEqual(ticker.failures, [], 'A answered every trigger with 200');
    const last = ticker.sent.at(-1);
    await waitFor(() => atB.includes(last) && atC.includes(last), 10_000, 'the last tick on B and C').catch(() => {});
    await sleep(500);
    for (const [who, got] of Object.entries({ B: atB, C: atC })) {
      const result = compare(got, ticker.sent);
      t.diagnostic(`${who}: ${got.length} of ${ticker.sent.length} ticks; ${JSON.stringify(result)}`);
      assert.deepEqual(got, ticker.sent, `${who}'s client got every tick A accepted, once, in order`);
    }
  }));

test('a 5 s Redis outage (node_timeout 6 s, heartbeats every 3 s): no member_removed or member_added for members still there', {
  timeout: 60_000,
}, (t) =>
  withCluster('no-flap', async (scope) => {
    const redis = await scope.redis();
    const options = { nodeTimeout: 6, heartbeatInterval: 3 };
    const A = await scope.node(options);
    const B = await scope.node(options);
    const room = uniqueName('presence-no-flap');

    const alice = await joinPresence(A, room, { id: 'alice' });
    await eventually(() => presenceUserIds(B, room), ['alice'], 'alice known on B');
    const bob = await joinPresence(B, room, { id: 'bob' });
    await waitFor(() => alice.rawAdded.count === 1, PROPAGATION_MS, 'member_added for bob at alice');

    // Redis stops just before B's next heartbeat, so that A has not heard from B for ~3 s
    // already: a node that counted the outage as silence would drop B before or right after
    // Redis is back (3 s + 5 s > node_timeout), though the outage is shorter than node_timeout.
    const watch = watchHeartbeats(redis.port, `${scope.prefix}:bus`, nodeId(B));
    try {
      await waitFor(() => watch.last > 0, 10_000, "one of B's heartbeats on the bus");
      const first = watch.last;
      await waitFor(() => watch.last > first, 10_000, "B's next heartbeat on the bus");
      await sleep(Math.max(0, watch.last + 2_700 - Date.now()));
    } finally {
      watch.close();
    }
    const stoppedAt = Date.now();
    await redis.stop();
    await sleep(Math.max(0, stoppedAt + 5_000 - Date.now()));
    await redis.start();
    await A.waitReady(10_000);
    await B.waitReady(10_000);
    // Long enough for a flap to show: the old silence check, the snapshots after the relink.
    await sleep(8_000);
    t.diagnostic(`Redis down ~5 s; checked ${Date.now() - stoppedAt} ms after it went down`);

    const ids = (r) => r.data.map((d) => d.user_id);
    assert.deepEqual(ids(alice.rawRemoved), [], 'alice (A) saw no member_removed');
    assert.deepEqual(ids(alice.rawAdded), ['bob'], 'alice (A) saw member_added for bob once, before the outage');
    assert.deepEqual(ids(bob.rawRemoved), [], 'bob (B) saw no member_removed');
    assert.deepEqual(ids(bob.rawAdded), [], 'bob (B) saw no member_added');
    for (const n of [A, B]) await eventually(() => presenceUserIds(n, room), ['alice', 'bob'], `room on ${n.name}`);
  }));

test('Redis away beyond outage_buffer_secs: the drop is counted in /metrics and logged, the rest stays in order', {
  timeout: 60_000,
}, (t) =>
  withCluster('over-bound', async (scope) => {
    const redis = await scope.redis();
    const options = { extraToml: 'outage_buffer_secs = 2' };
    const A = await scope.node(options);
    const B = await scope.node(options);
    const pub = uniqueName('over-bound-pub');
    const atB = await tickReceiver(B, pub);
    const ticker = startTicking(A, pub, 20);
    try {
      await waitFor(() => atB.length >= 20, PROPAGATION_MS, '20 ticks on B first');
      await redis.stop();
      await sleep(5_000);
      await redis.start();
      await A.waitReady(10_000);
      await sleep(2_000);
    } finally {
      await ticker.stop();
    }
    const dropped = 'warren_cluster_messages_dropped_total{reason="outage_too_long"}';
    const droppedOnA = await metric(A, dropped);
    t.diagnostic(`A: ${dropped} ${droppedOnA}; B got ${atB.length} of ${ticker.sent.length}`);
    assert.ok(droppedOnA > 0, `A counts the envelopes it dropped (${droppedOnA})`);
    assert.ok(logCount(A, 'dropping this node') >= 1, "A's log says it drops envelopes");
    const last = ticker.sent.at(-1);
    await waitFor(() => atB.includes(last), PROPAGATION_MS, 'the last tick on B');
    const result = compare(atB, ticker.sent);
    assert.equal(result.duplicated, 0, 'no tick twice on B');
    assert.ok(result.inOrder, `B's ticks in order: ${atB.join(',')}`);
    assert.ok(result.lost > 0, 'some ticks were lost (beyond the buffer)');
    await waitFor(
      async () => (await metric(B, 'warren_cluster_messages_missed_total')) > 0,
      PROPAGATION_MS,
      'B counts the envelopes it never got',
    );
    assert.ok(logCount(B, 'were lost on the cluster bus') >= 1, "B's log says envelopes were lost");
  }));
