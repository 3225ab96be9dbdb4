// HTTP API refusals (PROTOCOL.md §5.1, §5.3): every bad request gets its status
// and publishes nothing, which a pusher-js subscriber on the target channel
// checks. Requests are signed by hand (signRequest) so they can be forged:
// wrong secret, stale timestamp, unknown app, another app's key, bad body_md5,
// missing auth parameters; then bad bodies: malformed JSON, non-string data,
// data over 10 KB, 101 channels, 11 batch events, invalid channel names; and
// the per-app backend rate limit (429).

import assert from 'node:assert/strict';
import { connect as netConnect } from 'node:net';
import { test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  apiRequest,
  appsConfig,
  md5Hex,
  recordAll,
  shardOf,
  signRequest,
  sleep,
  subscribed,
  uniqueName,
  useServer,
} from './helpers.mjs';

const OTHER_APP = Object.freeze({ id: '4', key: 'other-key', secret: 'other-secret' });
const LIMITED_APP = Object.freeze({ id: '5', key: 'limited-key', secret: 'limited-secret' });
const DISABLED = Object.freeze({ id: '6', key: 'disabled-key', secret: 'disabled-secret' });
const RATE = 5;

const ctx = useServer({
  config: appsConfig([
    DEFAULT_APP,
    OTHER_APP,
    { ...LIMITED_APP, max_backend_events_per_second: RATE },
    { ...DISABLED, enabled: false },
  ]),
});

/** How long "nothing arrives" is watched for. */
const QUIET_MS = 300;
const EVENTS = `/apps/${DEFAULT_APP.id}/events`;
const BATCH = `/apps/${DEFAULT_APP.id}/batch_events`;
const now = () => Math.floor(Date.now() / 1000);

/** Subscribers of `app` on both shards (two or more) on a fresh public channel; `got` records what both receive. */
async function watched(prefix = 'api-err', app = DEFAULT_APP) {
  const channel = uniqueName(prefix);
  const clients = [];
  while (clients.length < 2 || new Set(clients.map((c) => shardOf(c.connection.socket_id))).size < 2) {
    assert.ok(clients.length < 16, 'clients on both shards');
    clients.push(await ctx.connect({ app }));
  }
  const recorders = await Promise.all(clients.map(async (c) => recordAll(await subscribed(c, channel))));
  return {
    channel,
    subscribers: clients.length,
    got: {
      get count() {
        return recorders.reduce((n, r) => n + r.count, 0);
      },
      get items() {
        return recorders.flatMap((r) => r.items);
      },
      atLeast: (n, ms) => Promise.all(recorders.map((r) => r.atLeast(n, ms))),
    },
  };
}

async function assertNothingPublished(got, what) {
  await sleep(QUIET_MS);
  assert.deepEqual(got.items, [], `${what}: nothing may be published`);
}

/** A valid single-event body for `channel`. */
const eventBody = (channel, extra = {}) => JSON.stringify({ name: 'leak', data: '{"leaked":true}', channel, ...extra });

const post = (path, body, opts) => apiRequest(ctx.server.port, 'POST', path, { body, ...opts });
const get = (path, opts) => apiRequest(ctx.server.port, 'GET', path, opts);

test('a correctly signed request is accepted (the control case)', E2E, async () => {
  const { channel, got } = await watched();
  const res = await post(EVENTS, eventBody(channel));
  assert.equal(res.status, 200, res.text);
  await got.atLeast(1);
  assert.deepEqual(got.items[0], { event: 'leak', data: { leaked: true } });
  // A timestamp well inside the 600 s window is fine too, in either direction.
  assert.equal((await post(EVENTS, eventBody(channel), { timestamp: now() - 500 })).status, 200);
  assert.equal((await post(EVENTS, eventBody(channel), { timestamp: now() + 500 })).status, 200);
  // pusher-http-python sends body_md5 of the empty body on GET: accepted.
  const pythonStyle = await get(`/apps/1/channels/${channel}`, { bodyMd5: md5Hex('') });
  assert.equal(pythonStyle.status, 200, pythonStyle.text);
});

test('wrong secret: 401, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  const res = await post(EVENTS, eventBody(channel), { secret: 'not-the-secret' });
  assert.equal(res.status, 401, res.text);
  assert.match(res.text, /signature/i);
  await assertNothingPublished(got, 'wrong secret');
});

test('a body other than the one signed: 401, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  const signed = eventBody(channel);
  const sent = eventBody(channel, { name: 'swapped' });
  // The query (body_md5 included) is for `signed`; the body sent is `sent`.
  const res = await fetch(`http://127.0.0.1:${ctx.server.port}${EVENTS}?${signRequest('POST', EVENTS, {}, signed)}`, {
    method: 'POST',
    body: sent,
    headers: { 'content-type': 'application/json' },
  });
  assert.equal(res.status, 401, await res.text());
  await assertNothingPublished(got, 'swapped body');
});

test('stale or future timestamp (600 s or more away): 401, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  for (const timestamp of [now() - 601, now() - 3600, now() + 601, 0]) {
    const res = await post(EVENTS, eventBody(channel), { timestamp });
    assert.equal(res.status, 401, `timestamp ${timestamp}: ${res.text}`);
    assert.match(res.text, /timestamp/i);
  }
  await assertNothingPublished(got, 'stale timestamp');
});

test('unknown app id: 404, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  for (const id of ['999', 'nope']) {
    const path = `/apps/${id}/events`;
    const res = await post(path, eventBody(channel));
    assert.equal(res.status, 404, `${path}: ${res.text}`);
  }
  await assertNothingPublished(got, 'unknown app');
});

test("another app's key and secret for this app id: 401, nothing published", E2E, async () => {
  const { channel, got } = await watched();
  // Correctly signed with app 4's credentials, but for app 1's path.
  const res = await post(EVENTS, eventBody(channel), { key: OTHER_APP.key, secret: OTHER_APP.secret });
  assert.equal(res.status, 401, res.text);
  // App 1's key with app 4's secret.
  const mixed = await post(EVENTS, eventBody(channel), { key: DEFAULT_APP.key, secret: OTHER_APP.secret });
  assert.equal(mixed.status, 401, mixed.text);
  // And app 1's credentials on app 4's path.
  const reverse = await post(`/apps/${OTHER_APP.id}/events`, eventBody(channel));
  assert.equal(reverse.status, 401, reverse.text);
  // The other app's own credentials on its own path work (and reach nobody on app 1).
  const own = await post(`/apps/${OTHER_APP.id}/events`, eventBody(channel), {
    key: OTHER_APP.key,
    secret: OTHER_APP.secret,
  });
  assert.equal(own.status, 200, own.text);
  await assertNothingPublished(got, "another app's key");
});

test('a disabled app: 403, nothing published', E2E, async () => {
  const res = await post(`/apps/${DISABLED.id}/events`, eventBody('anything'), {
    key: DISABLED.key,
    secret: DISABLED.secret,
  });
  assert.equal(res.status, 403, res.text);
});

test('wrong body_md5: 401 on GET and on POST, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  const wrong = md5Hex('something else');
  for (const path of ['/apps/1/channels', `/apps/1/channels/${channel}`]) {
    const res = await get(path, { bodyMd5: wrong });
    assert.equal(res.status, 401, `GET ${path}: ${res.text}`);
  }
  const postRes = await post(EVENTS, eventBody(channel), { bodyMd5: wrong });
  assert.equal(postRes.status, 401, postRes.text);
  // A body without body_md5 at all.
  const missing = await post(EVENTS, eventBody(channel), { bodyMd5: null });
  assert.equal(missing.status, 401, missing.text);
  await assertNothingPublished(got, 'wrong body_md5');
});

test('missing auth parameters: 401, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  const body = eventBody(channel);
  const bare = await fetch(`http://127.0.0.1:${ctx.server.port}${EVENTS}`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json' },
  });
  assert.equal(bare.status, 401, `no query at all: ${await bare.text()}`);
  for (const name of ['auth_key', 'auth_signature', 'auth_timestamp', 'auth_version']) {
    const res = await post(EVENTS, body, { omit: [name] });
    assert.equal(res.status, 401, `without ${name}: ${res.text}`);
  }
  const badVersion = await post(EVENTS, body, { version: '2.0' });
  assert.equal(badVersion.status, 401, `auth_version=2.0: ${badVersion.text}`);
  const bareGet = await fetch(`http://127.0.0.1:${ctx.server.port}/apps/1/channels`);
  assert.equal(bareGet.status, 401, `GET without auth: ${await bareGet.text()}`);
  await assertNothingPublished(got, 'missing auth parameters');
});

test('the unprefixed /users/{id}/terminate_connections: a missing or unknown auth_key is 401', E2E, async () => {
  // pusher-http-python posts here without /apps/{id}; the app is the one whose key signed it.
  const path = '/users/alice/terminate_connections';
  const ok = await post(path, '{}');
  assert.equal(ok.status, 200, ok.text);
  const noKey = await post(path, '{}', { omit: ['auth_key'] });
  assert.equal(noKey.status, 401, `without auth_key: ${noKey.status} ${noKey.text}`);
  const unknownKey = await post(path, '{}', { key: 'no-such-key', secret: 'whatever' });
  assert.equal(unknownKey.status, 401, `unknown auth_key: ${unknownKey.status} ${unknownKey.text}`);
  const wrongSecret = await post(path, '{}', { secret: 'not-the-secret' });
  assert.equal(wrongSecret.status, 401, wrongSecret.text);
});

/** Write `raw` on a fresh TCP connection; resolves with the responses read until the server closes or 1 s passes. */
function rawExchange(raw) {
  return new Promise((resolvePromise, reject) => {
    const socket = netConnect(ctx.server.port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolvePromise({ responses: parseResponses(buffer), closed, raw: buffer.toString('utf8') });
    };
    const timer = setTimeout(finish, 1_000);
    socket.on('data', (chunk) => (buffer = Buffer.concat([buffer, chunk])));
    socket.on('end', () => {
      closed = true;
      finish();
    });
    socket.on('error', reject);
    socket.once('connect', () => socket.write(raw));
  });
}

/** Split `buffer` into complete HTTP/1.1 responses (Content-Length framed). */
function parseResponses(buffer) {
  const responses = [];
  let rest = buffer;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    const length = Number(
      lines.find((l) => l.toLowerCase().startsWith('content-length:'))?.split(':')[1].trim() ?? 0,
    );
    if (rest.length < end + 4 + length) break;
    responses.push({ status: Number(statusLine.split(' ')[1]), body: rest.subarray(end + 4, end + 4 + length).toString('utf8') });
    rest = rest.subarray(end + 4 + length);
  }
  return responses;
}

test('a chunked request body is decoded, or refused without its bytes being read as another request', E2E, async () => {
  const { channel, got } = await watched();
  const body = JSON.stringify({ name: 'chunked', data: '{"c":1}', channel });
  const half = Math.floor(body.length / 2);
  const chunk = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
  const raw =
    `POST ${EVENTS}?${signRequest('POST', EVENTS, {}, body)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
    `${chunk(body.slice(0, half))}${chunk(body.slice(half))}0\r\n\r\n` +
    // A pipelined follow-up: answered only if the chunked body was consumed correctly.
    `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
  const { responses, raw: answer } = await rawExchange(raw);
  assert.ok(responses.length >= 1, `a response: ${JSON.stringify(answer)}`);
  const [first, ...more] = responses;
  // Either it decodes chunked (200 and delivered), or it refuses the framing (400/411/501), never
  // a signature error computed over an empty body.
  assert.ok([200, 400, 411, 501].includes(first.status), `first response: ${JSON.stringify(answer)}`);
  // Whatever follows must be the /health answer, not an answer to the chunk bytes.
  assert.ok(
    more.length === 0 || (more.length === 1 && more[0].status === 200 && more[0].body === 'OK'),
    `the chunk bytes were answered as a request of their own: ${JSON.stringify(answer)}`,
  );
  if (first.status === 200) {
    await got.atLeast(1);
    assert.deepEqual(got.items, [{ event: 'chunked', data: { c: 1 } }]);
  } else {
    await assertNothingPublished(got, 'refused chunked body');
  }
});

test('malformed JSON and bodies of the wrong shape: 400, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  const bodies = [
    '{"name":"leak","data":"x","channel":', // truncated
    `{"name":"leak","data":"x","channel":"${channel}",}`, // trailing comma
    'not json at all',
    `["leak","x","${channel}"]`,
    JSON.stringify({ data: 'x', channel }), // no name
    JSON.stringify({ name: 'leak', channel }), // no data
    JSON.stringify({ name: 'leak', data: 'x' }), // no channel
    JSON.stringify({ name: 'leak', data: 'x', channels: [] }),
    JSON.stringify({ name: 'leak', data: 'x', channels: channel }), // not an array
    JSON.stringify({ name: 'leak', data: 'x', channel, socket_id: 'not-a-socket-id' }),
    JSON.stringify({ name: 'x'.repeat(201), data: 'x', channel }),
  ];
  for (const body of bodies) {
    const res = await post(EVENTS, body);
    assert.equal(res.status, 400, `${body}: ${res.text}`);
  }
  const batchBodies = ['{"batch":', '{"batch":{}}', JSON.stringify({ batch: [eventBody(channel)] }), '{}'];
  for (const body of batchBodies) {
    const res = await post(BATCH, body);
    assert.equal(res.status, 400, `batch ${body}: ${res.text}`);
  }
  await assertNothingPublished(got, 'malformed JSON');
});

test('data that is not a string: 400, nothing published', E2E, async () => {
  const { channel, got } = await watched();
  for (const data of [{ leaked: true }, 42, true, ['a'], null]) {
    const res = await post(EVENTS, JSON.stringify({ name: 'leak', data, channel }));
    assert.equal(res.status, 400, `data ${JSON.stringify(data)}: ${res.text}`);
    const batch = await post(BATCH, JSON.stringify({ batch: [{ name: 'leak', data, channel }] }));
    assert.equal(batch.status, 400, `batch data ${JSON.stringify(data)}: ${batch.text}`);
  }
  await assertNothingPublished(got, 'non-string data');
});

test('data over 10 KB: 413, nothing published; exactly 10240 bytes is accepted', E2E, async () => {
  const { channel, got } = await watched();
  const over = [
    'x'.repeat(10241),
    'é'.repeat(5121), // 10242 bytes, 5121 characters: the limit is in bytes
    'x'.repeat(64 * 1024),
  ];
  for (const data of over) {
    const res = await post(EVENTS, JSON.stringify({ name: 'leak', data, channel }));
    assert.equal(res.status, 413, `${Buffer.byteLength(data)} bytes: ${res.text.slice(0, 200)}`);
    const batch = await post(BATCH, JSON.stringify({ batch: [{ name: 'leak', data, channel }] }));
    assert.equal(batch.status, 413, `batch, ${Buffer.byteLength(data)} bytes: ${batch.text.slice(0, 200)}`);
  }
  await assertNothingPublished(got, 'data over 10 KB');

  const exact = 'y'.repeat(10240);
  const ok = await post(EVENTS, JSON.stringify({ name: 'big', data: exact, channel }));
  assert.equal(ok.status, 200, ok.text);
  await got.atLeast(1);
  assert.deepEqual(got.items[0], { event: 'big', data: exact });
});

test('a body over every app\'s limit is refused unread, and the client still gets its 413 (not a reset)', E2E, async () => {
  // 2 MB is over every app's max_request_body_bytes here (the default, 1 MiB), so the server
  // answers as soon as it has the head, while the client is still sending. Closing then would
  // reset the connection and could destroy the answer before the client reads it.
  const { channel, got } = await watched();
  for (let i = 0; i < 5; i += 1) {
    const res = await post(EVENTS, JSON.stringify({ name: 'leak', data: 'x'.repeat(2_000_000), channel }));
    assert.equal(res.status, 413, res.text.slice(0, 200));
    assert.match(res.text, /too large/);
  }
  await assertNothingPublished(got, 'a body over every limit');
});

test('101 channels: 400, nothing published; 100 channels are accepted', E2E, async () => {
  const { channel, got } = await watched();
  const fillers = (n) => Array.from({ length: n }, (_, i) => `${channel}-filler-${i}`);
  const res = await post(EVENTS, JSON.stringify({ name: 'leak', data: 'x', channels: [channel, ...fillers(100)] }));
  assert.equal(res.status, 400, res.text);
  await assertNothingPublished(got, '101 channels');

  const ok = await post(EVENTS, JSON.stringify({ name: 'hundred', data: 'x', channels: [...fillers(99), channel] }));
  assert.equal(ok.status, 200, ok.text);
  await got.atLeast(1);
  assert.deepEqual(got.items[0], { event: 'hundred', data: 'x' });
});

test('11 batch events: 400 and none of them is published; one bad event spoils the batch', E2E, async () => {
  const { channel, got } = await watched();
  const event = (i) => ({ name: `leak-${i}`, data: String(i), channel });
  const eleven = await post(BATCH, JSON.stringify({ batch: Array.from({ length: 11 }, (_, i) => event(i)) }));
  assert.equal(eleven.status, 400, eleven.text);
  await assertNothingPublished(got, '11 batch events');

  // Ten events, the last one invalid: none of the nine valid ones goes out.
  for (const bad of [
    { name: 'bad', data: { not: 'a string' }, channel },
    { name: 'bad', data: 'x', channel: 'bad:channel' },
    { name: 'bad', data: 'x'.repeat(10241), channel },
    { data: 'x', channel },
  ]) {
    const batch = [...Array.from({ length: 9 }, (_, i) => event(i)), bad];
    const res = await post(BATCH, JSON.stringify({ batch }));
    assert.ok([400, 413].includes(res.status), `batch ending in ${JSON.stringify(bad).slice(0, 80)}: ${res.status} ${res.text}`);
  }
  await assertNothingPublished(got, 'a batch with one bad event');

  // Ten valid events are fine.
  const ten = await post(BATCH, JSON.stringify({ batch: Array.from({ length: 10 }, (_, i) => event(i)) }));
  assert.equal(ten.status, 200, ten.text);
  await got.atLeast(10);
  assert.deepEqual(
    got.items.slice(0, 10).map((i) => i.event),
    Array.from({ length: 10 }, (_, i) => `leak-${i}`),
  );
});

test('invalid channel names: 400, nothing published (not even to the valid channels)', E2E, async () => {
  const { channel, got } = await watched();
  const invalid = ['bad name', 'bad:name', 'c'.repeat(201), '', 'ünïcode', 'slash/name', '#not-a-user-channel', 'a*b'];
  for (const bad of invalid) {
    const single = await post(EVENTS, JSON.stringify({ name: 'leak', data: 'x', channel: bad }));
    assert.equal(single.status, 400, `channel ${JSON.stringify(bad)}: ${single.text}`);
    const mixed = await post(EVENTS, JSON.stringify({ name: 'leak', data: 'x', channels: [channel, bad] }));
    assert.equal(mixed.status, 400, `channels [valid, ${JSON.stringify(bad)}]: ${mixed.text}`);
  }
  const nonString = await post(EVENTS, JSON.stringify({ name: 'leak', data: 'x', channels: [channel, 7] }));
  assert.equal(nonString.status, 400, nonString.text);
  await assertNothingPublished(got, 'invalid channel names');

  // The longest valid name (200) and every allowed punctuation character are accepted.
  const longest = `${channel}-`.padEnd(200, 'z');
  const punct = `${channel}_-=@,.;`;
  const ok = await post(EVENTS, JSON.stringify({ name: 'fine', data: 'x', channels: [longest, punct, channel] }));
  assert.equal(ok.status, 200, ok.text);
  await got.atLeast(1);
});

/**
 * Run `burst(tag)` early in a fresh second, so its requests fall inside one
 * second of the server's clock (the same clock: both run here); retried with a
 * new tag when it straddled a second boundary anyway. Resolves with its result.
 */
async function inOneSecond(burst) {
  for (let attempt = 0; attempt < 3; attempt++) {
    await sleep(1000 - (Date.now() % 1000) + 10);
    const second = now();
    const result = await burst(`try${attempt}`);
    if (now() === second) return result;
  }
  throw new Error('three bursts in a row straddled a second boundary');
}

const limitedAuth = { key: LIMITED_APP.key, secret: LIMITED_APP.secret };
const limited = (body) => post(`/apps/${LIMITED_APP.id}/events`, body, limitedAuth);
const limitedBatch = (body) => post(`/apps/${LIMITED_APP.id}/batch_events`, body, limitedAuth);

test(`backend rate limit (${RATE}/s): the 6th event within a second gets 429 and is not delivered`, E2E, async () => {
  const { channel, got, subscribers } = await watched('api-limited', LIMITED_APP);
  const { tag, statuses } = await inOneSecond(async (tag) => {
    const statuses = [];
    for (let i = 1; i <= RATE + 1; i++) {
      statuses.push((await limited(JSON.stringify({ name: `${tag}-${i}`, data: String(i), channel }))).status);
    }
    return { tag, statuses };
  });
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
  await sleep(QUIET_MS);
  const names = got.items.map((i) => i.event).filter((n) => n.startsWith(`${tag}-`));
  assert.equal(names.length, subscribers * RATE, `every subscriber got the ${RATE} accepted events (got ${names})`);
  assert.ok(!names.includes(`${tag}-${RATE + 1}`), `the refused event is not delivered (got ${names})`);

  // The next second has a fresh allowance.
  const again = await inOneSecond(async () => limited(JSON.stringify({ name: 'next-second', data: 'x', channel })));
  assert.equal(again.status, 200, again.text);
});

test('backend rate limit counts batch events; an over-limit batch is refused whole', E2E, async () => {
  const { channel, got, subscribers } = await watched('api-limited-batch', LIMITED_APP);
  const batchOf = (n, tag) =>
    JSON.stringify({ batch: Array.from({ length: n }, (_, i) => ({ name: `${tag}-${i}`, data: 'x', channel })) });

  const { tag, six, five, one } = await inOneSecond(async (tag) => ({
    tag,
    // Refused whole, and uses up none of the allowance.
    six: await limitedBatch(batchOf(RATE + 1, `${tag}-six`)),
    five: await limitedBatch(batchOf(RATE, `${tag}-five`)),
    one: await limited(JSON.stringify({ name: `${tag}-one-more`, data: 'x', channel })),
  }));
  assert.equal(six.status, 429, six.text);
  assert.equal(five.status, 200, five.text);
  assert.equal(one.status, 429, one.text);
  await sleep(QUIET_MS);
  const names = got.items.map((i) => i.event);
  assert.equal(names.filter((n) => n.startsWith(`${tag}-six-`)).length, 0, `no event of the refused batch (got ${names})`);
  assert.ok(!names.includes(`${tag}-one-more`), `the refused event is not delivered (got ${names})`);
  assert.equal(names.filter((n) => n.startsWith(`${tag}-five-`)).length, subscribers * RATE, 'every subscriber got the 5 accepted events');
});
