// Signed-in users across a cluster of three nodes joined through one real Redis: sendToUser
// posted to one node reaches the user's sockets on every node, in order; watchlist online and
// offline follow the user's first and last socket anywhere in the cluster (and the initial
// statuses of a watcher on another node); terminate_connections closes the user's signed-in
// sockets on every node; a node that stops takes its users offline.
//
// Needs redis-server (Debian package `redis-server`, or REDIS_SERVER=/path).

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { clusterPrefix, clusterScope, errorCode, record, sleep, uniqueName, useCluster } from './helpers.mjs';
import { messages, nextWatchlist, signedIn, useUserAuth, userClient } from './signin-helpers.mjs';

const ctx = useCluster({ nodes: 3, prefix: clusterPrefix('cluster-users') });
const auth = useUserAuth();
const clients = [];
const track = (pusher) => clients.push(pusher);
afterEach(() => {
  for (const pusher of clients.splice(0)) pusher.disconnect();
});

const T = Object.freeze({ timeout: 45_000 });
const PROPAGATION_MS = 5_000;
const QUIET_MS = 1_000;

const signIn = (node, options) => signedIn(node.port, auth.url, options, track);

test('sendToUser on one node reaches the user on every node, in order', T, async () => {
  const user = uniqueName('everywhere');
  const sockets = [];
  for (const node of ctx.nodes) sockets.push(await signIn(node, { user }), await signIn(node, { user }));
  const other = await signIn(ctx.nodes[1], { user: uniqueName('someone-else') });
  const got = sockets.map((p) => record(p.user, 'note'));
  const otherGot = record(other.user, 'note');
  // Subscriptions reach the other nodes' channel tables at once; give the link a moment anyway.
  await sleep(200);
  const rest = ctx.nodes[0].rest();
  for (let n = 0; n < 20; n++) await rest.sendToUser(user, 'note', { n });
  for (const seen of got) {
    await seen.atLeast(20, PROPAGATION_MS);
    assert.deepEqual(seen.data.map((d) => d.n), [...Array(20).keys()]);
  }
  await sleep(QUIET_MS);
  for (const seen of got) assert.equal(seen.count, 20, 'exactly once');
  assert.equal(otherGot.count, 0);
});

test('watchlist online and offline follow the first and last socket anywhere', T, async () => {
  const [a, b, c] = ctx.nodes;
  const watched = uniqueName('watched');
  const watcher = userClient(a.port, auth.url, { user: uniqueName('watcher'), watchlist: [watched] });
  track(watcher);
  const initial = nextWatchlist(watcher);
  watcher.signin();
  assert.deepEqual(await initial, { event: 'offline', ids: [watched] });

  let next = nextWatchlist(watcher, PROPAGATION_MS);
  const onB = await signIn(b, { user: watched });
  assert.deepEqual(await next, { event: 'online', ids: [watched] });

  const events = messages(watcher, 'pusher_internal:watchlist_events');
  const onC = await signIn(c, { user: watched });
  // A watcher on C sees the user online at once, though the user's sockets are on B and C.
  const late = userClient(c.port, auth.url, { user: uniqueName('late'), watchlist: [watched] });
  track(late);
  const lateInitial = nextWatchlist(late);
  late.signin();
  assert.deepEqual(await lateInitial, { event: 'online', ids: [watched] });

  onB.disconnect();
  await sleep(QUIET_MS);
  assert.equal(events.items.length, 0, 'the user is still online on C');
  next = nextWatchlist(watcher, PROPAGATION_MS);
  const lateNext = nextWatchlist(late, PROPAGATION_MS);
  onC.disconnect();
  assert.deepEqual(await next, { event: 'offline', ids: [watched] });
  assert.deepEqual(await lateNext, { event: 'offline', ids: [watched] });
});

test('terminate_connections on one node closes the signed-in sockets on every node', T, async () => {
  const user = uniqueName('terminated');
  const sockets = [];
  for (const node of ctx.nodes) sockets.push(await signIn(node, { user }));
  const bystander = await signIn(ctx.nodes[2], { user: uniqueName('bystander') });
  const closed = sockets.map((p) => record(p.connection, 'error'));
  await ctx.nodes[0].rest().terminateUserConnections(user);
  for (const errors of closed) {
    await errors.atLeast(1, PROPAGATION_MS);
    assert.equal(errorCode(errors.data[0]), 4009);
  }
  await sleep(200);
  assert.equal(bystander.connection.state, 'connected');
});

test('a node that joins late learns the users of the others; one that dies takes its users offline', T, async (t) => {
  const scope = clusterScope({ prefix: clusterPrefix('cluster-users-stop') });
  t.after(() => scope.cleanup(false));
  await scope.redis();
  const a = await scope.node();
  const b = await scope.node();
  const watched = uniqueName('on-b');
  const watcher = userClient(a.port, auth.url, { user: uniqueName('watcher'), watchlist: [watched] });
  track(watcher);
  const initial = nextWatchlist(watcher);
  watcher.signin();
  await initial;
  const next = nextWatchlist(watcher, PROPAGATION_MS);
  await signIn(b, { user: watched });
  assert.deepEqual(await next, { event: 'online', ids: [watched] });
  // A node that joins now learns B's users from B's snapshot.
  const c = await scope.node();
  const late = userClient(c.port, auth.url, { user: uniqueName('late'), watchlist: [watched] });
  track(late);
  const lateInitial = nextWatchlist(late);
  await sleep(500);
  late.signin();
  assert.deepEqual(await lateInitial, { event: 'online', ids: [watched] });
  const gone = [nextWatchlist(watcher, 15_000), nextWatchlist(late, 15_000)];
  await b.kill9();
  for (const offline of gone) assert.deepEqual(await offline, { event: 'offline', ids: [watched] });
});
