// User sign-in, server-to-user events, watchlists and terminate-by-user (PROTOCOL.md §2.9, §5,
// §6) with stock pusher-js against a 2-shard server, signed by a real `userAuthentication`
// endpoint that uses the `pusher` SDK's `authenticateUser`; events sent with its `sendToUser`.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  appsConfig,
  createClient,
  startServer,
  waitForState,
  errorCode,
  record,
  restClient,
  shardOf,
  sleep,
  subscribed,
  uniqueName,
  useServer,
} from './helpers.mjs';
import { messages, nextWatchlist, signedIn, useUserAuth, userClient } from './signin-helpers.mjs';

const ctx = useServer();
const auth = useUserAuth();
const clients = [];
const track = (pusher) => clients.push(pusher);
afterEach(() => {
  for (const pusher of clients.splice(0)) pusher.disconnect();
});

const signIn = (options) => signedIn(ctx.server.port, auth.url, options, track);

test('signin() then user.bind() gets sendToUser on every socket of the user, in order', E2E, async () => {
  const user = uniqueName('alice');
  // Sign in sockets until both shards hold some (the kernel spreads connections by hash).
  const sockets = [];
  while (sockets.length < 3 || new Set(sockets.map((p) => shardOf(p.connection.socket_id))).size < 2) {
    assert.ok(sockets.length < 24, 'the kernel never picked the second shard');
    sockets.push(await signIn({ user }));
  }
  const other = await signIn({ user: uniqueName('bob') });

  const got = sockets.map((p) => record(p.user, 'note'));
  const otherGot = record(other.user, 'note');
  const rest = restClient(ctx.server.port);
  for (let n = 0; n < 20; n++) await rest.sendToUser(user, 'note', { n });
  for (const seen of got) {
    await seen.atLeast(20);
    assert.deepEqual(seen.data.map((d) => d.n), [...Array(20).keys()]);
  }
  await sleep(100);
  assert.equal(otherGot.count, 0, 'another user gets nothing');
});

test('a socket may subscribe only to its own #server-to-user channel', E2E, async () => {
  const pusher = await signIn({ user: uniqueName('carol') });
  // pusher-js refuses to subscribe to a #server-to-user channel itself: send the frame raw.
  const channel = `#server-to-user-${uniqueName('dave')}`;
  const refused = messages(pusher, 'pusher:subscription_error');
  pusher.send_event('pusher:subscribe', { channel });
  await refused.atLeast(1);
  assert.equal(refused.items[0].channel, channel);
  assert.equal(refused.items[0].data.type, 'AuthError');
});

test('a bad sign-in signature is error 4009 and the socket still works', E2E, async () => {
  const pusher = userClient(ctx.server.port, auth.url, { user: uniqueName('eve'), bad: true });
  track(pusher);
  const errors = record(pusher.connection, 'error');
  pusher.signin();
  await errors.atLeast(1);
  assert.equal(errorCode(errors.data[0]), 4009);
  assert.match(errors.data[0].data.message, /Sign-in refused/);
  const room = uniqueName('after-bad-signin');
  const channel = await subscribed(pusher, room);
  const seen = record(channel, 'ping');
  await restClient(ctx.server.port).trigger(room, 'ping', { ok: true });
  await seen.atLeast(1);
  assert.equal(pusher.connection.state, 'connected');
});

test('signing in twice is refused with 4009 and keeps the first sign-in', E2E, async () => {
  const user = uniqueName('frank');
  const pusher = await signIn({ user });
  const errors = record(pusher.connection, 'error');
  pusher.send_event('pusher:signin', { auth: 'app-key:00', user_data: JSON.stringify({ id: 'someone-else' }) });
  await errors.atLeast(1);
  assert.equal(errorCode(errors.data[0]), 4009);
  assert.match(errors.data[0].data.message, /already signed in/);
  const notes = record(pusher.user, 'note');
  await restClient(ctx.server.port).sendToUser(user, 'note', { still: 'me' });
  await notes.atLeast(1);
});

test('sendToUser with an invalid user id is 400', E2E, async () => {
  const rest = restClient(ctx.server.port);
  await assert.rejects(rest.sendToUser('not valid!', 'note', {}), (e) => e.status === 400);
  await assert.rejects(rest.sendToUser('x'.repeat(129), 'note', {}), (e) => e.status === 400);
});

test('watchlist: initial statuses, then online and offline of two users', E2E, async () => {
  const [a, b] = [uniqueName('wa'), uniqueName('wb')];
  const watcher = userClient(ctx.server.port, auth.url, { user: uniqueName('watcher'), watchlist: [a, b] });
  track(watcher);
  const initial = nextWatchlist(watcher);
  watcher.signin();
  assert.deepEqual(await initial, { event: 'offline', ids: [a, b].sort() });

  let next = nextWatchlist(watcher);
  const a1 = await signIn({ user: a });
  assert.deepEqual(await next, { event: 'online', ids: [a] });

  // b with two sockets: online once, offline after the last one.
  next = nextWatchlist(watcher);
  const b1 = await signIn({ user: b });
  assert.deepEqual(await next, { event: 'online', ids: [b] });
  const b2 = await signIn({ user: b });
  const events = record(watcher.user.watchlist, 'offline');
  const online = record(watcher.user.watchlist, 'online');
  b1.disconnect();
  await sleep(300);
  assert.equal(events.count + online.count, 0, 'one of two sockets gone changes nothing');
  b2.disconnect();
  await events.atLeast(1);
  assert.deepEqual(events.data[0].user_ids, [b]);

  a1.disconnect();
  await events.atLeast(2);
  assert.deepEqual(events.data[1].user_ids, [a]);

  // A second watcher signing in now sees a online again in its initial statuses.
  const a2 = await signIn({ user: a });
  const late = userClient(ctx.server.port, auth.url, { user: uniqueName('late'), watchlist: [a, b] });
  track(late);
  const statuses = messages(late, 'pusher_internal:watchlist_events');
  late.signin();
  await statuses.atLeast(1);
  // One event lists every watched id, whichever shards their online states live on.
  assert.deepEqual(statuses.items[0].data.events, [
    { name: 'online', user_ids: [a] },
    { name: 'offline', user_ids: [b] },
  ]);
  a2.disconnect();
});

test('a watchlist over 100 ids signs in, with a 4302 warning naming the ids kept', E2E, async () => {
  const ids = Array.from({ length: 105 }, (_, i) => `w${i}`);
  const pusher = userClient(ctx.server.port, auth.url, { user: uniqueName('many'), watchlist: ids });
  track(pusher);
  const success = messages(pusher, 'pusher:signin_success');
  const errors = record(pusher.connection, 'error');
  pusher.signin();
  await success.atLeast(1);
  await errors.atLeast(1);
  assert.equal(errorCode(errors.data[0]), 4302);
  assert.match(errors.data[0].data.message, /105 user ids given, at most 100/);
  assert.ok(!errors.data[0].data.message.includes('"w100"'));
  assert.equal(pusher.connection.state, 'connected');
});

test('terminate_connections closes every signed-in socket of the user', E2E, async () => {
  const user = uniqueName('gone');
  const sockets = [await signIn({ user }), await signIn({ user }), await signIn({ user })];
  const bystander = await signIn({ user: uniqueName('stays') });
  const closed = sockets.map((p) => record(p.connection, 'error'));
  await restClient(ctx.server.port).terminateUserConnections(user);
  for (const errors of closed) {
    await errors.atLeast(1);
    assert.equal(errorCode(errors.data[0]), 4009);
  }
  await sleep(200);
  assert.equal(bystander.connection.state, 'connected');
});

test('signin_timeout_secs closes sockets that neither sign in nor authorize a channel', E2E, async (t) => {
  const server = await startServer({
    config: appsConfig([{ ...DEFAULT_APP, signin_timeout_secs: 1 }]),
  });
  t.after(() => server.stop());
  const idle = createClient(server.port);
  const privateOnly = createClient(server.port);
  track(idle);
  track(privateOnly);
  const signedInSocket = await signedIn(server.port, auth.url, { user: uniqueName('in-time') }, track);
  await waitForState(idle, 'connected');
  await waitForState(privateOnly, 'connected');
  await subscribed(privateOnly, uniqueName('private-authorized'));
  const errors = record(idle.connection, 'error');
  await errors.atLeast(1, 5_000);
  assert.equal(errorCode(errors.data[0]), 4009);
  assert.match(errors.data[0].data.message, /not authorized within timeout/);
  await sleep(1_500);
  assert.equal(signedInSocket.connection.state, 'connected');
  assert.equal(privateOnly.connection.state, 'connected');
});
