// HTTP API queries (PROTOCOL.md §5.2), through the real `pusher` server SDK
// against channels that real pusher-js clients occupy over both shards:
// GET /channels (filter_by_prefix, info=user_count), GET /channels/{name},
// GET /channels/{presence}/users, the counts dropping as clients unsubscribe or
// disconnect, and POST /users/{id}/terminate_connections.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  E2E,
  errorCode,
  nextOf,
  recordAll,
  restClient,
  shardOf,
  sleep,
  subscribed,
  uniqueName,
  useServer,
  waitFor,
  waitForState,
} from './helpers.mjs';

const ctx = useServer();

const ALICE = { id: 'alice', info: { name: 'Alice' } };
const BOB = { id: 'bob', info: { name: 'Bob' } };
const CAROL = { id: 'carol', info: { name: 'Carol' } };

const rest = () => restClient(ctx.server.port);

/** GET through the SDK; resolves with the decoded JSON (the SDK rejects on >= 400). */
async function get(path, params) {
  const res = await rest().get({ path, params });
  assert.equal(res.status, 200);
  return res.json();
}

/** GET through the SDK that must fail: resolves with the status. */
async function getStatus(path, params) {
  try {
    const res = await rest().get({ path, params });
    return res.status;
  } catch (e) {
    if (e.status === undefined) throw e;
    return e.status;
  }
}

/** Connect clients (as `users`, cycled) until there are `n` of them on both shards. */
async function connectSpread(n, users = [undefined]) {
  const clients = [];
  for (let i = 0; i < n + 16; i++) {
    if (clients.length >= n && new Set(clients.map((c) => shardOf(c.connection.socket_id))).size >= 2) break;
    clients.push(await ctx.connect({ user: users[clients.length % users.length] }));
  }
  assert.ok(new Set(clients.map((c) => shardOf(c.connection.socket_id))).size >= 2, 'clients on both shards');
  return clients;
}

/**
 * pusher-js (Node build) calls close() on its faye-websocket again when the
 * server closes with a "refused" code (4001-4099) on an open connection; faye
 * then arms a 30 s close timer on the already-closed socket that keeps the test
 * process alive. Grab the socket now; the returned function clears that timer.
 */
function disarmCloseTimer(pusher) {
  const socket = pusher.connection.connection?.transport?.socket;
  return () => clearTimeout(socket?._closeTimer);
}

/** Poll until `fn()` deep-equals `expected` (counts settle asynchronously after a disconnect). */
async function eventually(fn, expected, what, ms = 5_000) {
  let last;
  try {
    await waitFor(
      async () => {
        last = await fn();
        try {
          assert.deepEqual(last, expected);
          return true;
        } catch {
          return false;
        }
      },
      ms,
      what,
    );
  } catch (e) {
    assert.deepEqual(last, expected, `${what}: ${e.message}`);
  }
}

test('GET /channels lists occupied channels, filtered by prefix', E2E, async () => {
  const tag = uniqueName('list');
  const pub = [`${tag}-a`, `${tag}-b`];
  const priv = `private-${tag}-c`;
  const room = `presence-${tag}-d`;
  const clients = await connectSpread(4, [ALICE, BOB]);
  for (const c of clients) {
    await subscribed(c, pub[0]);
    await subscribed(c, room);
  }
  await subscribed(clients[0], pub[1]);
  await subscribed(clients[1], priv);

  const all = await get('/channels');
  for (const name of [...pub, priv, room]) assert.deepEqual(all.channels[name], {}, `${name} in ${JSON.stringify(all)}`);

  assert.deepEqual(await get('/channels', { filter_by_prefix: tag }), {
    channels: { [pub[0]]: {}, [pub[1]]: {} },
  });
  assert.deepEqual(await get('/channels', { filter_by_prefix: `private-${tag}` }), { channels: { [priv]: {} } });
  assert.deepEqual(await get('/channels', { filter_by_prefix: `presence-${tag}` }), { channels: { [room]: {} } });
  assert.deepEqual(await get('/channels', { filter_by_prefix: `presence-${tag}`, info: 'user_count' }), {
    channels: { [room]: { user_count: 2 } },
  });
  assert.deepEqual(await get('/channels', { filter_by_prefix: `nothing-${tag}` }), { channels: {} });

  // user_count only with a presence- prefix.
  assert.equal(await getStatus('/channels', { info: 'user_count' }), 400);
  assert.equal(await getStatus('/channels', { filter_by_prefix: tag, info: 'user_count' }), 400);
  assert.equal(await getStatus('/channels', { filter_by_prefix: 'private-', info: 'user_count' }), 400);
  assert.equal(await getStatus('/channels', { info: 'no_such_attribute' }), 400);
});

test('GET /channels/{name}: occupied, user_count, subscription_count', E2E, async () => {
  const pub = uniqueName('info');
  const room = uniqueName('presence-info');
  // Alice has two sockets, Bob one; spread over both shards.
  const clients = await connectSpread(3, [ALICE, BOB, ALICE]);
  for (const c of clients) {
    await subscribed(c, pub);
    await subscribed(c, room);
  }

  assert.deepEqual(await get(`/channels/${pub}`), { occupied: true });
  assert.deepEqual(await get(`/channels/${pub}`, { info: 'subscription_count' }), {
    occupied: true,
    subscription_count: clients.length,
  });
  assert.deepEqual(await get(`/channels/${room}`, { info: 'user_count' }), { occupied: true, user_count: 2 });
  assert.deepEqual(await get(`/channels/${room}`, { info: 'user_count,subscription_count' }), {
    occupied: true,
    user_count: 2,
    subscription_count: clients.length,
  });

  const empty = uniqueName('info-empty');
  assert.deepEqual(await get(`/channels/${empty}`), { occupied: false });
  assert.deepEqual(await get(`/channels/${empty}`, { info: 'subscription_count' }), {
    occupied: false,
    subscription_count: 0,
  });
  assert.deepEqual(await get(`/channels/presence-${empty}`, { info: 'user_count' }), {
    occupied: false,
    user_count: 0,
  });

  // user_count does not apply to a public channel.
  assert.equal(await getStatus(`/channels/${pub}`, { info: 'user_count' }), 400);
  assert.equal(await getStatus(`/channels/${pub}`, { info: 'bogus' }), 400);
  assert.equal(await getStatus('/channels/bad:name'), 400);
});

test('GET /channels/{presence}/users lists each user once', E2E, async () => {
  const room = uniqueName('presence-users');
  const clients = await connectSpread(4, [ALICE, BOB, ALICE, CAROL]);
  for (const c of clients) await subscribed(c, room);
  const users = new Set(clients.map((_, i) => [ALICE, BOB, ALICE, CAROL][i % 4].id));

  const body = await get(`/channels/${room}/users`);
  assert.deepEqual(Object.keys(body), ['users']);
  for (const u of body.users) assert.deepEqual(Object.keys(u), ['id'], 'ids only, no user_info');
  assert.deepEqual(body.users.map((u) => u.id).sort(), [...users].sort());

  assert.deepEqual(await get(`/channels/${uniqueName('presence-nobody')}/users`), { users: [] });
  assert.equal(await getStatus(`/channels/${uniqueName('public')}/users`), 400);
  assert.equal(await getStatus(`/channels/${uniqueName('private-x')}/users`), 400);
});

test('counts drop and channels disappear as subscribers unsubscribe and disconnect', E2E, async () => {
  const tag = uniqueName('drop');
  const pub = `${tag}-pub`;
  const room = `presence-${tag}-room`;
  const [a1, b, a2] = await connectSpread(3, [ALICE, BOB, ALICE]);
  for (const c of [a1, b, a2]) {
    await subscribed(c, pub);
    await subscribed(c, room);
  }
  const roomInfo = () => get(`/channels/${room}`, { info: 'user_count,subscription_count' });
  const pubInfo = () => get(`/channels/${pub}`, { info: 'subscription_count' });
  const users = async () => (await get(`/channels/${room}/users`)).users.map((u) => u.id).sort();
  const listed = async () => Object.keys((await get('/channels', { filter_by_prefix: tag })).channels);
  const listedRooms = async () =>
    (await get('/channels', { filter_by_prefix: `presence-${tag}`, info: 'user_count' })).channels;

  assert.deepEqual(await roomInfo(), { occupied: true, user_count: 2, subscription_count: 3 });
  assert.deepEqual(await users(), ['alice', 'bob']);

  // One of Alice's two sockets leaves the room: still two users, one socket fewer.
  a1.unsubscribe(room);
  await eventually(roomInfo, { occupied: true, user_count: 2, subscription_count: 2 }, 'a1 left the room');
  assert.deepEqual(await users(), ['alice', 'bob']);

  // Bob disconnects: he leaves both channels.
  b.disconnect();
  await eventually(roomInfo, { occupied: true, user_count: 1, subscription_count: 1 }, 'bob gone from the room');
  await eventually(pubInfo, { occupied: true, subscription_count: 2 }, 'bob gone from the public channel');
  assert.deepEqual(await users(), ['alice']);
  assert.deepEqual(await listedRooms(), { [room]: { user_count: 1 } });

  // Alice's last socket in the room disconnects: the room is empty and unlisted.
  a2.disconnect();
  await eventually(roomInfo, { occupied: false, user_count: 0, subscription_count: 0 }, 'room vacated');
  assert.deepEqual(await users(), []);
  assert.deepEqual(await listedRooms(), {});
  await eventually(pubInfo, { occupied: true, subscription_count: 1 }, 'a2 gone from the public channel');
  assert.deepEqual(await listed(), [pub]);

  a1.unsubscribe(pub);
  await eventually(pubInfo, { occupied: false, subscription_count: 0 }, 'public channel vacated');
  await eventually(listed, [], 'no channel listed under the prefix');
});

test('terminateUserConnections closes every connection of that user, and only those', E2E, async () => {
  const room = uniqueName('presence-terminate');
  const other = uniqueName('presence-terminate-other');
  const pub = uniqueName('terminate-pub');
  // Alice: sockets on both shards (one of them in another presence channel only); Bob and Carol too.
  const alice = await connectSpread(2, [ALICE]);
  const others = await connectSpread(3, [BOB, CAROL]);
  for (const c of [...alice, ...others]) {
    await subscribed(c, room);
    await subscribed(c, pub);
  }
  const extraAlice = await ctx.connect({ user: ALICE });
  await subscribed(extraAlice, other);
  const aliceSockets = [...alice, extraAlice];

  const disarm = aliceSockets.map(disarmCloseTimer);
  const errors = aliceSockets.map((c) => nextOf(c.connection, ['error'], 5_000));
  const otherErrors = others.map((c) => {
    const seen = [];
    c.connection.bind('error', (e) => seen.push(e));
    return seen;
  });

  const res = await rest().terminateUserConnections('alice');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  for (const [i, pending] of errors.entries()) {
    const { data } = await pending;
    assert.equal(errorCode(data), 4009, `alice socket ${i}: ${JSON.stringify(data)}`);
  }
  // 4009 is a "refused" close code: pusher-js does not reconnect.
  for (const c of aliceSockets) await waitForState(c, 'disconnected');
  disarm.forEach((f) => f());
  await sleep(300);
  for (const c of aliceSockets) assert.equal(c.connection.state, 'disconnected');

  for (const c of others) assert.equal(c.connection.state, 'connected');
  assert.deepEqual(otherErrors.flat(), []);
  await eventually(
    async () => (await get(`/channels/${room}/users`)).users.map((u) => u.id).sort(),
    ['bob', 'carol'],
    'alice gone from the room',
  );
  await eventually(() => get(`/channels/${other}`), { occupied: false }, 'the room only alice was in is vacated');

  // The others still receive events.
  const got = others.map((c) => recordAll(c.channel(pub)));
  await rest().trigger(pub, 'still-here', { ok: true });
  for (const g of got) await g.atLeast(1);
  await eventually(
    () => get(`/channels/${pub}`, { info: 'subscription_count' }),
    { occupied: true, subscription_count: others.length },
    'only the others remain',
  );

  // A user with no connection: still {}.
  const none = await rest().terminateUserConnections('nobody-here');
  assert.equal(none.status, 200);
});
