// HTTP API publishing (PROTOCOL.md §5.2), through the real `pusher` server SDK
// and received by real pusher-js clients: POST /events to one and to several
// channels, socket_id exclusion, the `info` attributes of /events and
// /batch_events with subscribers spread over both shards, the deprecated
// POST /channels/{name}/events, and HTTP keep-alive and pipelining.

import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import { test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  apiRequest,
  recordAll,
  restClient,
  shardOf,
  signRequest,
  sleep,
  subscribed,
  uniqueName,
  useServer,
} from './helpers.mjs';

const ctx = useServer();

const ALICE = { id: 'alice', info: { name: 'Alice' } };
const BOB = { id: 'bob', info: { name: 'Bob' } };

/** How long "nothing arrives" is watched for. */
const QUIET_MS = 300;

const rest = () => restClient(ctx.server.port);

/**
 * Connect clients until there are at least `n` and both shards own one (the
 * kernel spreads connections over the shards' listeners). `users[i]` is the
 * presence user of client i (cycled).
 */
async function connectSpread(n, users = [undefined]) {
  const clients = [];
  for (let i = 0; i < n + 16; i++) {
    if (clients.length >= n && new Set(clients.map((c) => shardOf(c.connection.socket_id))).size >= 2) break;
    clients.push(await ctx.connect({ user: users[clients.length % users.length] }));
  }
  const shards = new Set(clients.map((c) => shardOf(c.connection.socket_id)));
  assert.ok(shards.size >= 2, `clients on both shards (got shards ${[...shards]})`);
  return clients;
}

/** Subscribe every client to `channelName`; resolves with one recorder per client. */
async function subscribeAll(clients, channelName) {
  const channels = await Promise.all(clients.map((c) => subscribed(c, channelName)));
  return channels.map(recordAll);
}

test('trigger to one channel: every subscriber gets exactly the data', E2E, async () => {
  const name = uniqueName('api-one');
  const clients = await connectSpread(2);
  const got = await subscribeAll(clients, name);
  const data = { text: 'héllo ✓', n: 42, nested: { list: [1, 'two', null], ok: true } };

  const res = await rest().trigger(name, 'my-event', data);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  for (const g of got) {
    await g.atLeast(1);
    assert.deepEqual(g.items, [{ event: 'my-event', data }]);
  }

  // A string is sent as is: not JSON, so pusher-js hands it over verbatim.
  await rest().trigger(name, 'text-event', 'just "text", not JSON');
  for (const g of got) {
    await g.atLeast(2);
    assert.deepEqual(g.items[1], { event: 'text-event', data: 'just "text", not JSON' });
  }
  await sleep(QUIET_MS);
  assert.deepEqual(
    got.map((g) => g.count),
    got.map(() => 2),
    'no duplicates',
  );
});

test('trigger to several channels: each channel gets it once', E2E, async () => {
  const names = [uniqueName('api-many-a'), uniqueName('api-many-b'), uniqueName('private-api-many-c')];
  const clients = await connectSpread(3);
  const perChannel = await Promise.all(names.map((n) => subscribeAll(clients, n)));
  const data = { hello: 'all', at: Date.now() };

  const res = await rest().trigger(names, 'fanout', data);
  assert.equal(res.status, 200);

  for (const got of perChannel) {
    for (const g of got) await g.atLeast(1);
  }
  await sleep(QUIET_MS);
  for (const got of perChannel) {
    for (const g of got) assert.deepEqual(g.items, [{ event: 'fanout', data }]);
  }
});

test('socket_id excludes exactly that connection', E2E, async () => {
  const name = uniqueName('api-exclude');
  const clients = await connectSpread(2);
  const a = clients[0];
  const b = clients.find((c) => shardOf(c.connection.socket_id) !== shardOf(a.connection.socket_id));
  const [gotA, gotB] = await subscribeAll([a, b], name);

  await rest().trigger(name, 'not-for-a', { x: 1 }, { socket_id: a.connection.socket_id });
  await gotB.atLeast(1);
  assert.deepEqual(gotB.items, [{ event: 'not-for-a', data: { x: 1 } }]);

  // A and B sit on different shards: exclusion works whichever shard the excluded socket is on.
  await rest().trigger(name, 'not-for-b', { x: 2 }, { socket_id: b.connection.socket_id });
  await gotA.atLeast(1);
  await sleep(QUIET_MS);
  assert.deepEqual(gotA.items, [{ event: 'not-for-b', data: { x: 2 } }]);
  assert.deepEqual(gotB.items, [{ event: 'not-for-a', data: { x: 1 } }]);
});

test('trigger with info answers with the counts over both shards', E2E, async () => {
  const publicName = uniqueName('api-info');
  const room = uniqueName('presence-api-info');
  // Alice and Bob with two sockets each, spread over the shards.
  const members = await connectSpread(4, [ALICE, BOB]);
  await subscribeAll(members, room);
  const watchers = await connectSpread(5);
  const got = await subscribeAll(watchers, publicName);

  const res = await rest().trigger(publicName, 'counted', { c: 1 }, { info: 'subscription_count' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { channels: { [publicName]: { subscription_count: watchers.length } } });
  for (const g of got) await g.atLeast(1);

  const both = await rest().trigger([room, publicName], 'counted', { c: 2 }, { info: 'user_count,subscription_count' });
  assert.deepEqual(await both.json(), {
    channels: {
      [room]: { user_count: 2, subscription_count: members.length },
      // user_count applies to presence channels only.
      [publicName]: { subscription_count: watchers.length },
    },
  });

  // An unoccupied channel reports zero.
  const empty = uniqueName('api-info-empty');
  const none = await rest().trigger(empty, 'counted', 'x', { info: 'subscription_count' });
  assert.deepEqual(await none.json(), { channels: { [empty]: { subscription_count: 0 } } });
});

test('triggerBatch delivers every event in order; info gives one entry per event', E2E, async () => {
  const a = uniqueName('api-batch-a');
  const b = uniqueName('api-batch-b');
  const room = uniqueName('presence-api-batch');
  const clients = await connectSpread(4, [ALICE, BOB, ALICE]);
  const gotA = await subscribeAll(clients, a);
  const gotB = await subscribeAll(clients.slice(0, 2), b);
  await subscribeAll(clients, room);

  const plain = await rest().triggerBatch([
    { channel: a, name: 'first', data: { i: 1 } },
    { channel: b, name: 'second', data: 'two' },
    { channel: a, name: 'third', data: { i: 3 } },
  ]);
  assert.equal(plain.status, 200);
  assert.deepEqual(await plain.json(), {});
  for (const g of gotA) await g.atLeast(2);
  for (const g of gotB) await g.atLeast(1);
  for (const g of gotA) {
    assert.deepEqual(g.items, [
      { event: 'first', data: { i: 1 } },
      { event: 'third', data: { i: 3 } },
    ]);
  }
  for (const g of gotB) assert.deepEqual(g.items, [{ event: 'second', data: 'two' }]);

  const withInfo = await rest().triggerBatch([
    { channel: a, name: 'fourth', data: { i: 4 }, info: 'subscription_count' },
    { channel: b, name: 'fifth', data: { i: 5 } },
    { channel: room, name: 'sixth', data: { i: 6 }, info: 'user_count,subscription_count' },
    { channel: b, name: 'seventh', data: { i: 7 }, info: 'subscription_count' },
  ]);
  assert.equal(withInfo.status, 200);
  assert.deepEqual(await withInfo.json(), {
    batch: [
      { subscription_count: clients.length },
      {},
      { user_count: 2, subscription_count: clients.length },
      { subscription_count: 2 },
    ],
  });
  for (const g of gotA) await g.atLeast(3);
  for (const g of gotB) await g.atLeast(3);
  await sleep(QUIET_MS);
  for (const g of gotA) assert.deepEqual(g.events, ['first', 'third', 'fourth']);
  for (const g of gotB) assert.deepEqual(g.events, ['second', 'fifth', 'seventh']);
});

test('deprecated POST /apps/{id}/channels/{name}/events: 202 and delivered', E2E, async () => {
  const name = uniqueName('api-legacy');
  const [a, b] = await connectSpread(2);
  const [gotA, gotB] = await subscribeAll([a, b], name);
  const path = `/apps/${DEFAULT_APP.id}/channels/${name}/events`;

  const body = JSON.stringify({ legacy: true, list: [1, 2] });
  const res = await apiRequest(ctx.server.port, 'POST', path, { params: { name: 'old-style' }, body });
  assert.equal(res.status, 202, res.text);
  for (const g of [gotA, gotB]) {
    await g.atLeast(1);
    assert.deepEqual(g.items, [{ event: 'old-style', data: { legacy: true, list: [1, 2] } }]);
  }

  const excluded = await apiRequest(ctx.server.port, 'POST', path, {
    params: { name: 'old-style-2', socket_id: a.connection.socket_id },
    body: 'raw text body',
  });
  assert.equal(excluded.status, 202, excluded.text);
  await gotB.atLeast(2);
  await sleep(QUIET_MS);
  assert.deepEqual(gotB.items[1], { event: 'old-style-2', data: 'raw text body' });
  assert.equal(gotA.count, 1, 'the socket_id in the query is excluded');
});

/** One request with node:http over `agent`; resolves with {status, body, reused, localPort}. */
function httpCall(agent, method, path, body = '') {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: ctx.server.port,
        method,
        path,
        agent,
        headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () =>
          resolvePromise({ status: res.statusCode, body: text, reused: req.reusedSocket, localPort: res.socket?.localPort }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('keep-alive: several API requests on one connection', E2E, async () => {
  const name = uniqueName('api-keepalive');
  const [client] = await connectSpread(1);
  const [got] = await subscribeAll([client], name);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const results = [];
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) {
        const body = JSON.stringify({ name: 'ka', channel: name, data: String(i) });
        const path = '/apps/1/events';
        results.push(await httpCall(agent, 'POST', `${path}?${signRequest('POST', path, {}, body)}`, body));
      } else {
        const path = `/apps/1/channels/${name}`;
        const query = signRequest('GET', path, { info: 'subscription_count' });
        results.push(await httpCall(agent, 'GET', `${path}?${query}`));
      }
    }
    assert.deepEqual(
      results.map((r) => r.status),
      [200, 200, 200, 200, 200, 200],
      JSON.stringify(results),
    );
    assert.deepEqual(JSON.parse(results[1].body), { occupied: true, subscription_count: 1 });
    assert.deepEqual(
      results.map((r) => r.reused),
      [false, true, true, true, true, true],
      'every request after the first reuses the connection',
    );
    assert.equal(new Set(results.map((r) => r.localPort)).size, 1);
    await got.atLeast(3);
    assert.deepEqual(got.data, ['0', '2', '4'].map(Number));

    // The SDK over a keep-alive agent too.
    const sdk = restClient(ctx.server.port, DEFAULT_APP, { agent });
    for (let i = 0; i < 3; i++) await sdk.trigger(name, 'sdk-ka', { i });
    await got.atLeast(6);
    assert.deepEqual(got.data.slice(3), [{ i: 0 }, { i: 1 }, { i: 2 }]);
  } finally {
    agent.destroy();
  }
});

/** Split `buffer` into complete HTTP/1.1 responses (Content-Length framed). */
function parseResponses(buffer) {
  const responses = [];
  let rest = buffer;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.subarray(0, end).toString('latin1');
    const [statusLine, ...lines] = head.split('\r\n');
    const headers = Object.fromEntries(
      lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
    );
    const length = Number(headers['content-length'] ?? 0);
    if (rest.length < end + 4 + length) break;
    responses.push({
      status: Number(statusLine.split(' ')[1]),
      headers,
      body: rest.subarray(end + 4, end + 4 + length).toString('utf8'),
    });
    rest = rest.subarray(end + 4 + length);
  }
  return responses;
}

test('pipelining: two requests in one TCP write get two responses, in order', E2E, async () => {
  const name = uniqueName('api-pipeline');
  const [client] = await connectSpread(1);
  const [got] = await subscribeAll([client], name);

  const body = JSON.stringify({ name: 'piped', channel: name, data: '{"p":1}' });
  const postPath = '/apps/1/events';
  const getPath = `/apps/1/channels/${name}`;
  const requests =
    `POST ${postPath}?${signRequest('POST', postPath, {}, body)} HTTP/1.1\r\n` +
    `Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}` +
    `GET ${getPath}?${signRequest('GET', getPath, { info: 'subscription_count' })} HTTP/1.1\r\n` +
    `Host: 127.0.0.1\r\n\r\n`;

  const socket = netConnect(ctx.server.port, '127.0.0.1');
  try {
    const responses = await new Promise((resolvePromise, reject) => {
      let buffer = Buffer.alloc(0);
      const timer = setTimeout(
        () => reject(new Error(`timed out; got ${JSON.stringify(buffer.toString('utf8'))}`)),
        5_000,
      );
      socket.on('error', reject);
      socket.on('data', (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        const parsed = parseResponses(buffer);
        if (parsed.length >= 2) {
          clearTimeout(timer);
          resolvePromise(parsed);
        }
      });
      socket.once('connect', () => socket.write(requests));
    });
    assert.equal(responses.length, 2);
    assert.equal(responses[0].status, 200, responses[0].body);
    assert.deepEqual(JSON.parse(responses[0].body), {});
    assert.equal(responses[1].status, 200, responses[1].body);
    assert.deepEqual(JSON.parse(responses[1].body), { occupied: true, subscription_count: 1 });
    await got.atLeast(1);
    assert.deepEqual(got.items, [{ event: 'piped', data: { p: 1 } }]);
  } finally {
    socket.destroy();
  }
});
