// A cluster of three nodes joined through one Redis (the [cluster] section):
// events published on one node (HTTP API or client events) reach subscribers
// on every node exactly once, socket_id exclusion across nodes, presence that
// spans nodes (one member per user, member_added on the first socket anywhere,
// member_removed after the last), HTTP queries that agree whichever node
// answers, the `info` counts of /events, and terminate_connections closing a
// user's sockets on every node.
//
// Needs redis-server (Debian package `redis-server`, or REDIS_SERVER=/path).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  clusterPrefix,
  disarmCloseTimer,
  errorCode,
  eventually,
  joinPresence,
  nextOf,
  presenceUserIds,
  record,
  recordAll,
  recordMessages,
  restGet,
  sleep,
  subscribed,
  uniqueName,
  useCluster,
  waitFor,
  waitForState,
} from './helpers.mjs';

const ctx = useCluster({ nodes: 3, prefix: clusterPrefix('cluster') });

/** Per-test limit: cross-node waits add up. */
const T = Object.freeze({ timeout: 45_000 });
/** How long to wait for something that must NOT arrive (a duplicate, an excluded socket's copy). */
const QUIET_MS = 1_000;
/** How long cross-node propagation may take before a test gives up. */
const PROPAGATION_MS = 5_000;

const OBS = { id: 'obs', info: { name: 'Observer' } };
const ALICE = { id: 'alice', info: { name: 'Alice' } };
const BOB = { id: 'bob', info: { name: 'Bob' } };

const get = restGet;
const userIds = presenceUserIds;
const join = joinPresence;

/** `eventually` on every node: the same answer whichever node is asked. */
async function everyNode(fn, expected, what, ms = PROPAGATION_MS) {
  for (const node of ctx.nodes) await eventually(() => fn(node), expected, `${what} (asked ${node.name})`, ms);
}

/** Sort `{event, data}` records by event name (events from different nodes have no common order). */
const byEvent = (items) => [...items].sort((a, b) => (a.event < b.event ? -1 : a.event > b.event ? 1 : 0));

test('an API event triggered on any node reaches the subscribers on every node exactly once', T, async () => {
  const pub = uniqueName('cluster-pub');
  const priv = uniqueName('private-cluster');
  const clients = await Promise.all(ctx.nodes.map((node) => node.connect()));
  const got = [];
  for (const pusher of clients) {
    got.push({ pub: recordAll(await subscribed(pusher, pub)), priv: recordAll(await subscribed(pusher, priv)) });
  }

  for (const [i, node] of ctx.nodes.entries()) {
    const res = await node.rest().trigger(pub, `from-node${i}`, { i });
    assert.equal(res.status, 200);
    await node.rest().trigger(priv, `from-node${i}`, { i, private: true });
  }

  const expectPub = ctx.nodes.map((_, i) => ({ event: `from-node${i}`, data: { i } }));
  const expectPriv = ctx.nodes.map((_, i) => ({ event: `from-node${i}`, data: { i, private: true } }));
  for (const g of got) {
    await g.pub.atLeast(3, PROPAGATION_MS);
    await g.priv.atLeast(3, PROPAGATION_MS);
  }
  await sleep(QUIET_MS);
  got.forEach((g, n) => {
    assert.deepEqual(byEvent(g.pub.items), expectPub, `public channel, client on node${n}`);
    assert.deepEqual(byEvent(g.priv.items), expectPriv, `private channel, client on node${n}`);
  });
});

test('one API call to several channels and a batch reach every node once per channel', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const a = uniqueName('cluster-multi-a');
  const b = uniqueName('cluster-multi-b');
  // a: subscribers on node1 and node2; b: on node2 only; nobody on node0, the publisher.
  const c1 = await n1.connect();
  const c2 = await n2.connect();
  const at1a = recordAll(await subscribed(c1, a));
  const at2a = recordAll(await subscribed(c2, a));
  const at2b = recordAll(await subscribed(c2, b));

  await n0.rest().trigger([a, b], 'multi', { m: 1 });
  await n1.rest().triggerBatch([
    { channel: a, name: 'batch-1', data: JSON.stringify({ k: 1 }) },
    { channel: b, name: 'batch-2', data: JSON.stringify({ k: 2 }) },
    { channel: a, name: 'batch-3', data: JSON.stringify({ k: 3 }) },
  ]);

  await at1a.atLeast(3, PROPAGATION_MS);
  await at2a.atLeast(3, PROPAGATION_MS);
  await at2b.atLeast(2, PROPAGATION_MS);
  await sleep(QUIET_MS);
  const onA = [
    { event: 'batch-1', data: { k: 1 } },
    { event: 'batch-3', data: { k: 3 } },
    { event: 'multi', data: { m: 1 } },
  ];
  assert.deepEqual(byEvent(at1a.items), onA, 'channel a on node1');
  assert.deepEqual(byEvent(at2a.items), onA, 'channel a on node2');
  assert.deepEqual(
    byEvent(at2b.items),
    [
      { event: 'batch-2', data: { k: 2 } },
      { event: 'multi', data: { m: 1 } },
    ],
    'channel b on node2',
  );
  // Events of one publisher (node1's batch) keep their order; node0's and node1's may interleave.
  for (const [where, g] of Object.entries({ node1: at1a, node2: at2a })) {
    const batch = g.events.filter((e) => e.startsWith('batch-'));
    assert.deepEqual(batch, ['batch-1', 'batch-3'], `batch order on ${where}`);
  }
});

test('client events reach the subscribers on the other nodes once, never the sender', T, async () => {
  const room = uniqueName('private-cluster-chat');
  // One sender per node, plus a listener on node0 that sees node0's sender locally.
  const senders = await Promise.all(ctx.nodes.map((node) => node.connect()));
  const listener = await ctx.nodes[0].connect();
  const channels = [];
  for (const pusher of senders) channels.push(await subscribed(pusher, room));
  const got = channels.map((ch) => recordAll(ch));
  const atListener = recordAll(await subscribed(listener, room));

  channels.forEach((ch, i) => assert.equal(ch.trigger('client-ping', { from: i }), true));

  for (const g of got) await g.atLeast(2, PROPAGATION_MS);
  await atListener.atLeast(3, PROPAGATION_MS);
  await sleep(QUIET_MS);
  const fromEach = (senderIds) => senderIds.map((j) => ({ event: 'client-ping', data: { from: j } }));
  const sorted = (g) => [...g.items].sort((x, y) => x.data.from - y.data.from);
  got.forEach((g, i) => {
    const others = [0, 1, 2].filter((j) => j !== i);
    assert.deepEqual(sorted(g), fromEach(others), `sender on node${i}: the other two once each, nothing of its own`);
  });
  assert.deepEqual(sorted(atListener), fromEach([0, 1, 2]), 'listener on node0: each sender once, its neighbour too');
});

test('a client event on a presence channel carries the sender user_id to other nodes', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const room = uniqueName('presence-cluster-chat');
  const sender = await join(n1, room, ALICE);
  const others = [await join(n0, room, BOB), await join(n2, room, OBS)];
  const got = others.map((m) => record(m.channel, 'client-hi'));
  const raw = others.map((m) => recordMessages(m.pusher, 'client-hi', room));
  const atSender = record(sender.channel, 'client-hi');

  sender.channel.trigger('client-hi', { hello: 'there' });
  for (const g of got) await g.atLeast(1, PROPAGATION_MS);
  await sleep(QUIET_MS);
  got.forEach((g, i) => {
    assert.equal(g.count, 1, `receiver ${i}: exactly once`);
    assert.deepEqual(g.items[0].data, { hello: 'there' });
    assert.equal(g.items[0].metadata?.user_id, 'alice');
    assert.equal(raw[i].items[0].user_id, 'alice', 'top-level user_id in the frame');
  });
  assert.equal(atSender.count, 0, 'not echoed to the sender');
});

test('socket_id exclusion works across nodes', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const pub = uniqueName('cluster-exclude');
  const clients = [await n0.connect(), await n1.connect(), await n2.connect()];
  const got = [];
  for (const pusher of clients) got.push(recordAll(await subscribed(pusher, pub)));
  const ids = clients.map((c) => c.connection.socket_id);

  // node1's API excludes the client on node0; node2's API excludes its own client;
  // node0's API excludes the client on node2, in a batch.
  await n1.rest().trigger(pub, 'not-for-0', { x: 0 }, { socket_id: ids[0] });
  await n2.rest().trigger(pub, 'not-for-2', { x: 2 }, { socket_id: ids[2] });
  await n0.rest().triggerBatch([{ channel: pub, name: 'batch-not-for-2', data: '"b"', socket_id: ids[2] }]);
  // A marker everyone gets, after the rest, from the same node as the last one.
  await n0.rest().trigger(pub, 'marker', {});

  await got[0].atLeast(3, PROPAGATION_MS);
  await got[1].atLeast(4, PROPAGATION_MS);
  await got[2].atLeast(2, PROPAGATION_MS);
  await sleep(QUIET_MS);
  const names = got.map((g) => g.events.sort());
  assert.deepEqual(names[0], ['batch-not-for-2', 'marker', 'not-for-2'], 'client on node0');
  assert.deepEqual(names[1], ['batch-not-for-2', 'marker', 'not-for-0', 'not-for-2'], 'client on node1');
  assert.deepEqual(names[2], ['marker', 'not-for-0'], 'client on node2');
});

test('presence spans nodes: one member per user, added on its first socket, gone after its last', T, async () => {
  const [A, B, C] = ctx.nodes;
  const room = uniqueName('presence-cluster');

  // The observer on node C.
  const obs = await join(C, room, OBS);
  assert.deepEqual([...obs.presence.ids].sort(), ['obs']);

  // Alice's first socket, on node A (once A knows the observer).
  await eventually(() => userIds(A, room), ['obs'], 'node A knows the observer');
  const a1 = await join(A, room, ALICE);
  assert.deepEqual([...a1.presence.ids].sort(), ['alice', 'obs'], 'a1 subscription_succeeded lists the remote member');
  assert.equal(a1.presence.count, 2);
  assert.deepEqual(a1.channel.members.get('obs'), { id: 'obs', info: OBS.info }, 'user_info of a remote member');
  await obs.rawAdded.atLeast(1, PROPAGATION_MS);
  assert.deepEqual(obs.added.data, [{ id: 'alice', info: ALICE.info }]);

  // Alice's second socket, on node B (once B knows her: then it is not her first socket).
  await eventually(() => userIds(B, room), ['alice', 'obs'], 'node B knows alice and the observer');
  const a2 = await join(B, room, ALICE);
  assert.deepEqual([...a2.presence.ids].sort(), ['alice', 'obs'], 'a2 subscription_succeeded: alice once');
  assert.equal(a2.presence.count, 2);

  // Bob on node A, next to alice's first socket (so every node has a member socket to notify).
  const bob = await join(A, room, BOB);
  assert.deepEqual([...bob.presence.ids].sort(), ['alice', 'bob', 'obs']);
  assert.equal(bob.presence.count, 3);

  for (const [who, m] of Object.entries({ obs, a1, a2 })) {
    await waitFor(
      () => m.rawAdded.data.some((d) => d.user_id === 'bob'),
      PROPAGATION_MS,
      `member_added for bob at ${who}`,
    );
  }
  await sleep(QUIET_MS);
  assert.deepEqual(
    obs.rawAdded.data.map((d) => d.user_id),
    ['alice', 'bob'],
    'the observer gets one member_added per user, not one per socket',
  );
  assert.deepEqual(a1.rawAdded.data.map((d) => d.user_id), ['bob'], 'a1: only bob (nothing for her own other socket)');
  assert.deepEqual(a2.rawAdded.data.map((d) => d.user_id), ['bob'], 'a2: only bob');
  assert.deepEqual(bob.rawAdded.data, [], 'the joiner gets no member_added for itself');
  for (const [who, m] of Object.entries({ obs, a1, a2, bob })) {
    assert.equal(m.channel.members.count, 3, `${who} sees 3 members`);
  }
  await everyNode((n) => userIds(n, room), ['alice', 'bob', 'obs'], '/users');
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 3, subscription_count: 4 },
    'counts with alice on two nodes',
  );

  // Alice's socket on A leaves: she still has one on B, so nobody sees her go.
  a1.pusher.disconnect();
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 3, subscription_count: 3 },
    'a1 gone, alice still a member',
  );
  await sleep(QUIET_MS);
  for (const [who, m] of Object.entries({ obs, a2, bob })) {
    assert.deepEqual(m.rawRemoved.data, [], `${who}: no member_removed while alice has a socket on node B`);
    assert.equal(m.channel.members.count, 3, `${who} still sees 3 members`);
  }

  // Her last socket, on B, leaves: one member_removed for everyone left (obs on C, bob on A).
  a2.pusher.disconnect();
  for (const [who, m] of Object.entries({ obs, bob })) {
    await waitFor(() => m.rawRemoved.count >= 1, PROPAGATION_MS, `member_removed for alice at ${who}`);
  }
  await sleep(QUIET_MS);
  for (const [who, m] of Object.entries({ obs, bob })) {
    assert.deepEqual(m.rawRemoved.data.map((d) => d.user_id), ['alice'], `${who}: exactly one member_removed`);
    assert.equal(m.channel.members.count, 2);
  }
  await everyNode((n) => userIds(n, room), ['bob', 'obs'], '/users after alice left');
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 2, subscription_count: 2 },
    'counts after alice left',
  );
});

test('HTTP queries give the same answers whichever node is asked', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const tag = uniqueName('cq');
  const pub = `${tag}-pub`;
  const priv = `private-${tag}-priv`;
  const room = `presence-${tag}-room`;
  // pub: one subscriber on node0, two on node1. room: alice on node0 and node2, bob on node1.
  // priv: one subscriber on node2 only.
  const x0 = await n0.connect({ user: ALICE });
  const x1 = await n1.connect({ user: BOB });
  const y1 = await n1.connect();
  const x2 = await n2.connect({ user: ALICE });
  await subscribed(x0, pub);
  await subscribed(x1, pub);
  await subscribed(y1, pub);
  await subscribed(x0, room);
  await subscribed(x1, room);
  await subscribed(x2, room);
  await subscribed(x2, priv);

  await everyNode((n) => get(n, '/channels', { filter_by_prefix: tag }), { channels: { [pub]: {} } }, 'public list');
  await everyNode(
    (n) => get(n, '/channels', { filter_by_prefix: `private-${tag}` }),
    { channels: { [priv]: {} } },
    'private list',
  );
  await everyNode(
    (n) => get(n, '/channels', { filter_by_prefix: `presence-${tag}`, info: 'user_count' }),
    { channels: { [room]: { user_count: 2 } } },
    'presence list with user_count',
  );
  await everyNode(
    async (n) => {
      const { channels } = await get(n, '/channels');
      return [pub, priv, room].map((c) => channels[c]);
    },
    [{}, {}, {}],
    'unfiltered list has all three',
  );
  await everyNode(
    (n) => get(n, `/channels/${pub}`, { info: 'subscription_count' }),
    { occupied: true, subscription_count: 3 },
    'public channel info',
  );
  await everyNode(
    (n) => get(n, `/channels/${priv}`, { info: 'subscription_count' }),
    { occupied: true, subscription_count: 1 },
    'private channel info',
  );
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 2, subscription_count: 3 },
    'presence channel info',
  );
  await everyNode((n) => userIds(n, room), ['alice', 'bob'], 'presence users');
  await everyNode((n) => get(n, `/channels/${tag}-nobody`), { occupied: false }, 'an empty channel');

  // x2 (alice on node2, also the only one in priv) leaves: alice stays through node0, priv empties.
  x2.disconnect();
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 2, subscription_count: 2 },
    'room after x2 left',
  );
  await everyNode((n) => get(n, `/channels/${priv}`), { occupied: false }, 'priv vacated');
  const privList = (n) => get(n, '/channels', { filter_by_prefix: `private-${tag}` });
  await everyNode(privList, { channels: {} }, 'priv unlisted');

  // x0 (alice on node0) leaves too: alice is gone; pub keeps node1's two.
  x0.disconnect();
  await everyNode((n) => userIds(n, room), ['bob'], 'users after alice left');
  await everyNode(
    (n) => get(n, '/channels', { filter_by_prefix: `presence-${tag}`, info: 'user_count' }),
    { channels: { [room]: { user_count: 1 } } },
    'presence list after alice left',
  );
  await everyNode(
    (n) => get(n, `/channels/${pub}`, { info: 'subscription_count' }),
    { occupied: true, subscription_count: 2 },
    'public channel after x0 left',
  );
});

test('the info of POST /events counts subscribers on every node', T, async () => {
  const [n0, n1, n2] = ctx.nodes;
  const pub = uniqueName('cluster-info');
  const room = uniqueName('presence-cluster-info');
  // pub: two subscribers on node1, one on node2, none on node0.
  // room: alice on node1 and node2, bob on node0: 2 users, 3 subscriptions.
  const p1 = [await n1.connect(), await n1.connect()];
  const p2 = await n2.connect();
  for (const c of [...p1, p2]) await subscribed(c, pub);
  await subscribed(await n1.connect({ user: ALICE }), room);
  await subscribed(await n2.connect({ user: ALICE }), room);
  await subscribed(await n0.connect({ user: BOB }), room);

  // Let the cluster settle first (presence membership propagates asynchronously).
  await everyNode(
    (n) => get(n, `/channels/${room}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 2, subscription_count: 3 },
    'room settled',
  );

  for (const node of ctx.nodes) {
    const one = await node.rest().trigger(pub, 'counted', { c: 1 }, { info: 'subscription_count' });
    assert.deepEqual(
      await one.json(),
      { channels: { [pub]: { subscription_count: 3 } } },
      `trigger with info on ${node.name}`,
    );
    const both = await node.rest().trigger([room, pub], 'counted', { c: 2 }, { info: 'user_count,subscription_count' });
    assert.deepEqual(
      await both.json(),
      {
        channels: {
          [room]: { user_count: 2, subscription_count: 3 },
          [pub]: { subscription_count: 3 },
        },
      },
      `trigger to two channels with info on ${node.name}`,
    );
  }
  const batch = await n0.rest().triggerBatch([
    { channel: pub, name: 'b1', data: '1', info: 'subscription_count' },
    { channel: room, name: 'b2', data: '2', info: 'user_count,subscription_count' },
  ]);
  assert.deepEqual(await batch.json(), {
    batch: [{ subscription_count: 3 }, { user_count: 2, subscription_count: 3 }],
  });
});

test('terminate_connections on one node closes the user’s sockets on every node', T, async () => {
  const [A, B, C] = ctx.nodes;
  const room = uniqueName('presence-cluster-terminate');
  const pub = uniqueName('cluster-terminate-pub');
  const alice = [];
  const bobs = [];
  for (const node of [A, B, C]) {
    alice.push(await join(node, room, ALICE));
    bobs.push(await join(node, room, BOB));
  }
  for (const b of bobs) await subscribed(b.pusher, pub);
  await everyNode((n) => userIds(n, room), ['alice', 'bob'], 'everyone known everywhere');

  const disarm = alice.map((m) => disarmCloseTimer(m.pusher));
  const errors = alice.map((m) => nextOf(m.pusher.connection, ['error'], PROPAGATION_MS));
  const bobErrors = bobs.map((m) => record(m.pusher.connection, 'error'));

  const res = await A.rest().terminateUserConnections('alice');
  assert.equal(res.status, 200);

  for (const [i, pending] of errors.entries()) {
    const { data } = await pending.catch((e) => {
      throw new Error(`alice's socket on node${i}: ${e.message}`);
    });
    assert.equal(errorCode(data), 4009, `alice's socket on node${i}: ${JSON.stringify(data)}`);
  }
  for (const m of alice) await waitForState(m.pusher, 'disconnected');
  disarm.forEach((f) => f());

  await everyNode((n) => userIds(n, room), ['bob'], 'alice gone everywhere');
  for (const [i, b] of bobs.entries()) {
    await waitFor(() => b.rawRemoved.count >= 1, PROPAGATION_MS, `member_removed for alice at bob on node${i}`);
  }
  await sleep(QUIET_MS);
  for (const [i, b] of bobs.entries()) {
    assert.equal(b.pusher.connection.state, 'connected', `bob on node${i} stays connected`);
    assert.deepEqual(bobErrors[i].data, [], `bob on node${i}: no error`);
    assert.deepEqual(b.rawRemoved.data.map((d) => d.user_id), ['alice'], `bob on node${i}: one member_removed`);
  }

  // Bob still gets events on every node.
  const got = bobs.map((b) => recordAll(b.pusher.channel(pub)));
  await C.rest().trigger(pub, 'still-here', {});
  for (const g of got) await g.atLeast(1, PROPAGATION_MS);
});
