// Cluster faults: a node killed with SIGKILL (its presence members leave the
// survivors within node_timeout, its subscriptions stop counting), Redis
// restarted under traffic (no node exits, local delivery goes on, cross-node
// delivery resumes, presence converges), Redis away for longer than
// node_timeout while members join and leave (presence converges once it is
// back), and a node started while Redis is down (serves local clients, /ready
// 503, then joins once Redis is up).
//
// Each test starts its own Redis and nodes (node_timeout 3 s, heartbeat 1 s)
// and stops them in `finally`. Needs redis-server (or REDIS_SERVER=/path).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  clusterPrefix,
  clusterScope,
  eventually,
  freePort,
  joinPresence,
  presenceUserIds,
  recordAll,
  restGet,
  sleep,
  subscribed,
  uniqueName,
  waitFor,
} from './helpers.mjs';

const NODE_TIMEOUT_S = 3;
const QUIET_MS = 1_000;
const PROPAGATION_MS = 5_000;

/**
 * Run `body(scope)` with a fresh cluster scope; stop everything it started
 * afterwards, printing the logs when it failed.
 */
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

/** `eventually` on each of `nodes`. */
async function onEach(nodes, fn, expected, what, ms = PROPAGATION_MS) {
  for (const node of nodes) await eventually(() => fn(node), expected, `${what} (asked ${node.name})`, ms);
}

const roomInfo = (room) => (node) => restGet(node, `/channels/${room}`, { info: 'user_count,subscription_count' });
const subscriptionCount = (channel) => async (node) =>
  (await restGet(node, `/channels/${channel}`, { info: 'subscription_count' })).subscription_count;

test('kill -9 of a node: its members leave the survivors within node_timeout, its subscriptions stop counting', {
  timeout: 60_000,
}, (t) =>
  withCluster('kill', async (scope) => {
    await scope.redis();
    const A = await scope.node();
    const B = await scope.node();
    const C = await scope.node();
    const room = uniqueName('presence-kill');
    const pub = uniqueName('kill-pub');

    // room: obs on A; bob and alice on B; alice and carol on C (carol only there).
    // pub: obs (A), bob (B), alice and carol on C: 4 subscriptions, 2 of them on C.
    const obs = await joinPresence(A, room, { id: 'obs' });
    await onEach([B], (n) => presenceUserIds(n, room), ['obs'], 'obs known');
    const bob = await joinPresence(B, room, { id: 'bob' });
    const aliceB = await joinPresence(B, room, { id: 'alice' });
    await onEach([C], (n) => presenceUserIds(n, room), ['alice', 'bob', 'obs'], 'A and B members known');
    const aliceC = await joinPresence(C, room, { id: 'alice' });
    const carol = await joinPresence(C, room, { id: 'carol' });
    for (const m of [obs, bob, aliceC, carol]) await subscribed(m.pusher, pub);
    await onEach([A, B, C], (n) => presenceUserIds(n, room), ['alice', 'bob', 'carol', 'obs'], 'everyone known');
    await onEach([A, B, C], roomInfo(room), { occupied: true, user_count: 4, subscription_count: 5 }, 'room');
    await onEach([A, B, C], subscriptionCount(pub), 4, 'pub');
    const survivors = { obs, bob, aliceB };
    for (const m of Object.values(survivors)) assert.equal(m.channel.members.count, 4);

    const killedAt = Date.now();
    const info = await C.kill9();
    assert.equal(info?.signal, 'SIGKILL');
    const deadlineMs = (NODE_TIMEOUT_S + 2) * 1_000;

    for (const [who, m] of Object.entries(survivors)) {
      await waitFor(
        () => m.rawRemoved.count >= 1,
        Math.max(0, killedAt + deadlineMs - Date.now()),
        `member_removed for carol at ${who} within ${deadlineMs} ms of the kill`,
      );
    }
    t.diagnostic(`member_removed for carol everywhere ${Date.now() - killedAt} ms after the kill`);
    await sleep(QUIET_MS);
    for (const [who, m] of Object.entries(survivors)) {
      assert.deepEqual(
        m.rawRemoved.data.map((d) => d.user_id),
        ['carol'],
        `${who}: one member_removed, for carol only (alice still has a socket on B)`,
      );
      assert.deepEqual(Object.keys(m.channel.members.members).sort(), ['alice', 'bob', 'obs'], `${who}'s member list`);
    }

    // Counts on the survivors: C's subscriptions are gone (HTTP queries may wait for the dead node once).
    await onEach([A, B], (n) => presenceUserIds(n, room), ['alice', 'bob', 'obs'], 'users after the kill', 3_000);
    await onEach(
      [A, B],
      roomInfo(room),
      { occupied: true, user_count: 3, subscription_count: 3 },
      'room after the kill',
      3_000,
    );
    await onEach([A, B], subscriptionCount(pub), 2, 'pub after the kill', 3_000);
    t.diagnostic(`counts settled ${Date.now() - killedAt} ms after the kill`);

    // The survivors still form a cluster.
    assert.ok(A.running() && B.running(), 'the survivors are running');
    const atBob = recordAll(bob.pusher.channel(pub));
    const atObs = recordAll(obs.pusher.channel(pub));
    await A.rest().trigger(pub, 'after-kill', { ok: true });
    await atBob.atLeast(1, PROPAGATION_MS);
    await atObs.atLeast(1, PROPAGATION_MS);
    await sleep(QUIET_MS);
    assert.equal(atBob.count, 1);
    assert.equal(atObs.count, 1);
  }));

test('Redis restarted under traffic: no node exits, local delivery goes on, cross-node delivery resumes', {
  timeout: 90_000,
}, (t) =>
  withCluster('redis-restart', async (scope) => {
    const redis = await scope.redis();
    const A = await scope.node();
    const B = await scope.node();
    const pub = uniqueName('restart-pub');
    const room = uniqueName('presence-restart');

    const alice = await joinPresence(A, room, { id: 'alice' });
    await onEach([B], (n) => presenceUserIds(n, room), ['alice'], 'alice known on B');
    const bob = await joinPresence(B, room, { id: 'bob' });
    await onEach([A, B], (n) => presenceUserIds(n, room), ['alice', 'bob'], 'room before the outage');

    // One subscriber of pub on each node; each records when every tick arrived.
    const subA = await A.connect();
    const subB = await B.connect();
    const atA = [];
    const atB = [];
    (await subscribed(subA, pub)).bind('tick', (d) => atA.push({ i: d.i, at: Date.now() }));
    (await subscribed(subB, pub)).bind('tick', (d) => atB.push({ i: d.i, at: Date.now() }));

    // ~20 events a second through A's HTTP API.
    const sent = [];
    const failures = [];
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing; i++) {
        const at = Date.now();
        try {
          const res = await A.rest().trigger(pub, 'tick', { i });
          if (res.status === 200) sent.push({ i, at });
          else failures.push({ i, at, status: res.status });
        } catch (e) {
          failures.push({ i, at, status: e.status, error: e.message });
        }
        await sleep(50);
      }
    })();

    let carol;
    try {
      await waitFor(() => atA.length >= 10 && atB.length >= 10, PROPAGATION_MS, '10 ticks on both nodes first');

      const stoppedAt = Date.now();
      await redis.stop();
      // While Redis is down, carol joins the room on B.
      carol = await joinPresence(B, room, { id: 'carol' });
      // /ready reports the lost link; /health does not care.
      for (const node of [A, B]) {
        let last;
        await waitFor(
          async () => (last = await node.ready()).status === 503,
          1_500,
          `/ready 503 on ${node.name} while Redis is down`,
        ).catch((e) => {
          throw new Error(`${e.message}; last answer ${JSON.stringify(last)}`);
        });
        assert.match(last.text, /redis|cluster/i, `${node.name}: /ready says what is missing`);
        assert.equal((await node.health()).status, 200, `${node.name}: /health while Redis is down`);
      }
      await sleep(Math.max(0, stoppedAt + 2_000 - Date.now()));
      const restartAt = Date.now();
      await redis.start();
      const upAt = Date.now();
      t.diagnostic(`Redis down for ${restartAt - stoppedAt} ms (SIGTERM to PING answered: ${upAt - stoppedAt} ms)`);

      // The first tick published after Redis answered PING, once there is one.
      const firstAfter = () => sent.find((s) => s.at >= upAt)?.i;
      const resumed = () => atB.find((x) => firstAfter() !== undefined && x.i >= firstAfter());
      await waitFor(resumed, 10_000, 'node B to receive a tick published after Redis came back').catch((e) => {
        throw new Error(`${e.message}; B's last tick ${JSON.stringify(atB.at(-1))}, ${sent.length} sent`);
      });
      t.diagnostic(`cross-node delivery resumed ${resumed().at - upAt} ms after Redis answered PING`);

      // During the outage A's own subscriber went on receiving.
      const duringOutage = atA.filter((x) => x.at >= stoppedAt + 100 && x.at <= restartAt).length;
      t.diagnostic(`A's subscriber received ${duringOutage} ticks while Redis was down`);
      assert.ok(duringOutage >= 15, `A's local subscriber got ${duringOutage} ticks during the 2 s outage`);
      await sleep(1_000);
    } finally {
      publishing = false;
      await publisher;
    }

    await A.waitReady(5_000);
    await B.waitReady(5_000);
    assert.ok(A.running(), `node A is running (exit: ${JSON.stringify(A.exitInfo())})`);
    assert.ok(B.running(), `node B is running (exit: ${JSON.stringify(B.exitInfo())})`);
    for (const [who, c] of Object.entries({ subA, subB, alice: alice.pusher, bob: bob.pusher, carol: carol.pusher })) {
      assert.equal(c.connection.state, 'connected', `${who} stays connected`);
    }
    assert.deepEqual(failures, [], 'A answered every trigger, also while Redis was down');

    // A delivered every tick to its own subscriber, once and in order.
    const allTicks = `A's subscriber has all ${sent.length} ticks`;
    await waitFor(() => atA.length >= sent.length, 3_000, allTicks).catch(() => {});
    assert.deepEqual(
      atA.map((x) => x.i),
      sent.map((s) => s.i),
      "A's local subscriber got every tick, once, in order",
    );
    // B: ticks published while Redis was down may be lost, or sent late from a backlog; a
    // pipeline retried after a failed publish may repeat some (at-least-once). What B sees
    // for the first time must still come in publishing order.
    const bIds = atB.map((x) => x.i);
    const firstSeen = [...new Set(bIds)];
    assert.ok(
      firstSeen.every((i, k) => k === 0 || i > firstSeen[k - 1]),
      `B's ticks are in publishing order: ${bIds.join(',')}`,
    );
    const sentIds = new Set(sent.map((s) => s.i));
    assert.deepEqual(
      firstSeen.filter((i) => !sentIds.has(i)),
      [],
      'B only gets ticks A accepted',
    );
    if (bIds.length !== firstSeen.length) t.diagnostic(`B got ${bIds.length - firstSeen.length} duplicate ticks`);
    const lastSent = sent.at(-1).i;
    await waitFor(() => atB.some((x) => x.i === lastSent), PROPAGATION_MS, 'B gets the last tick');
    t.diagnostic(`${sent.length} ticks sent; B got ${atB.length}`);

    // Presence converges across the nodes, carol (joined on B during the outage) included. (A
    // node may time the other out during the outage and send member_removed, then member_added
    // again: only the end state is asserted.)
    for (const [who, m] of Object.entries({ alice, bob })) {
      const ids = (r) => r.data.map((d) => d.user_id).join(',') || '-';
      t.diagnostic(`${who} saw member_added ${ids(m.rawAdded)}, member_removed ${ids(m.rawRemoved)}`);
    }
    const everyone = ['alice', 'bob', 'carol'];
    await onEach([A, B], (n) => presenceUserIds(n, room), everyone, 'room after recovery', 10_000);
    const threeUsers = { occupied: true, user_count: 3, subscription_count: 3 };
    await onEach([A, B], roomInfo(room), threeUsers, 'room counts', 10_000);
    await onEach([A, B], subscriptionCount(pub), 2, 'pub count after recovery', 10_000);
    for (const [who, m] of Object.entries({ alice, bob, carol })) {
      await eventually(
        () => Object.keys(m.channel.members.members).sort(),
        everyone,
        `${who}'s member list (pusher-js) after recovery`,
        10_000,
      );
    }
  }));

test('Redis away longer than node_timeout: membership changes made meanwhile converge once it is back', {
  timeout: 60_000,
}, (t) =>
  withCluster('redis-long', async (scope) => {
    const redis = await scope.redis();
    const A = await scope.node();
    const B = await scope.node();
    const room = uniqueName('presence-long');
    const pub = uniqueName('long-pub');

    const alice = await joinPresence(A, room, { id: 'alice' });
    await onEach([B], (n) => presenceUserIds(n, room), ['alice'], 'alice known on B');
    const bob = await joinPresence(B, room, { id: 'bob' });
    const dan = await joinPresence(B, room, { id: 'dan' });
    await onEach([A, B], (n) => presenceUserIds(n, room), ['alice', 'bob', 'dan'], 'room before the outage');
    const atB = recordAll(await subscribed(dan.pusher, pub));

    // Redis goes away for longer than node_timeout; meanwhile carol joins on A and bob leaves on B.
    await redis.stop();
    const carol = await joinPresence(A, room, { id: 'carol' });
    bob.pusher.unsubscribe(room);
    await sleep((NODE_TIMEOUT_S + 2) * 1_000);
    await redis.start();
    const upAt = Date.now();

    const everyone = ['alice', 'carol', 'dan'];
    await onEach([A, B], (n) => presenceUserIds(n, room), everyone, 'room after recovery', 10_000);
    const threeUsers = { occupied: true, user_count: 3, subscription_count: 3 };
    await onEach([A, B], roomInfo(room), threeUsers, 'room counts', 10_000);
    for (const [who, m] of Object.entries({ alice, carol, dan })) {
      await eventually(
        () => Object.keys(m.channel.members.members).sort(),
        everyone,
        `${who}'s member list (pusher-js) after recovery`,
        10_000,
      );
    }
    t.diagnostic(`converged ${Date.now() - upAt} ms after Redis answered PING`);

    await A.rest().trigger(pub, 'after-long-outage', {});
    await atB.atLeast(1, PROPAGATION_MS);
    assert.ok(A.running() && B.running(), 'both nodes running');
  }));

test('a node started while Redis is down serves local clients, then joins once Redis is up', {
  timeout: 60_000,
}, (t) =>
  withCluster('redis-late', async (scope) => {
    const port = await freePort();
    const A = await scope.node({ redisPort: port, waitReady: false });

    assert.equal((await A.health()).status, 200, '/health while Redis is down');
    for (let k = 0; k < 5; k++) {
      const ready = await A.ready();
      assert.equal(ready.status, 503, `/ready while Redis is down: ${JSON.stringify(ready)}`);
      assert.match(ready.text, /redis|cluster/i, '/ready says what is missing');
      await sleep(200);
    }

    // A local client works.
    const pub = uniqueName('late-pub');
    const room = uniqueName('presence-late');
    const c1 = await A.connect();
    const atA = recordAll(await subscribed(c1, pub));
    const alice = await joinPresence(A, room, { id: 'alice' });
    assert.deepEqual([...alice.presence.ids], ['alice']);
    const res = await A.rest().trigger(pub, 'local', { n: 1 });
    assert.equal(res.status, 200);
    await atA.atLeast(1, PROPAGATION_MS);
    assert.deepEqual(atA.items, [{ event: 'local', data: { n: 1 } }]);

    // Redis comes up, then a second node.
    const redis = await scope.redis({ port });
    const upAt = Date.now();
    const B = await scope.node({ redisPort: port, waitReady: false });
    await A.waitReady(10_000);
    t.diagnostic(`node A ready ${Date.now() - upAt} ms after Redis answered PING`);
    await B.waitReady(10_000);
    assert.ok(redis.running());

    // Cross-node delivery both ways.
    const c2 = await B.connect();
    const atB = recordAll(await subscribed(c2, pub));
    await A.rest().trigger(pub, 'a-to-b', { n: 2 });
    await atB.atLeast(1, PROPAGATION_MS);
    await B.rest().trigger(pub, 'b-to-a', { n: 3 });
    await atA.atLeast(3, PROPAGATION_MS);
    await sleep(QUIET_MS);
    assert.deepEqual(atA.events, ['local', 'a-to-b', 'b-to-a']);
    // 'local' was published before Redis was up, before B's client subscribed; a node that keeps
    // a backlog of unpublished envelopes may still deliver it to B late: reported, not asserted.
    if (atB.events.includes('local')) t.diagnostic(`B's client got the pre-Redis 'local' event late: ${atB.events}`);
    assert.deepEqual(
      atB.events.filter((e) => e !== 'local'),
      ['a-to-b', 'b-to-a'],
    );

    // The presence member that joined on A before the link was up is known to B.
    await onEach([A, B], (n) => presenceUserIds(n, room), ['alice'], 'alice, joined while Redis was down');
    const bob = await joinPresence(B, room, { id: 'bob' });
    assert.deepEqual([...bob.presence.ids].sort(), ['alice', 'bob'], "bob's subscription_succeeded lists alice");
    await waitFor(() => alice.rawAdded.count >= 1, PROPAGATION_MS, 'member_added for bob at alice');
    assert.deepEqual(alice.rawAdded.data.map((d) => d.user_id), ['bob']);
    await onEach([A, B], subscriptionCount(pub), 2, 'pub counts both nodes');
  }));
