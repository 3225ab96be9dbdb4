// `pusher_internal:subscription_count` (PROTOCOL.md §2.9/§1.4): with the app's
// `enable_subscription_count_events`, every change of a non-presence channel's count reaches its
// subscribers, which pusher-js surfaces as `pusher:subscription_count` on the channel (and in
// `channel.subscriptionCount`); never on presence channels; off by default. The cluster-wide
// sum is in cluster-cache-counts.test.mjs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  appsConfig,
  createClient,
  record,
  sleep,
  startServer,
  subscribed,
  uniqueName,
  waitForState,
} from './helpers.mjs';

const OFF_APP = Object.freeze({ id: '9', key: 'off-key', secret: 'off-secret' });
let server;
const clients = [];
before(async () => {
  server = await startServer({
    config: appsConfig([{ ...DEFAULT_APP, enable_subscription_count_events: true }, OFF_APP]),
    shards: 3,
  });
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

async function connect(opts) {
  const pusher = createClient(server.port, opts);
  clients.push(pusher);
  await waitForState(pusher, 'connected');
  return pusher;
}

const counts = (rec) => rec.data.map((d) => d.subscription_count);

test('a subscriber sees the count go up and down as a second client subscribes and unsubscribes', E2E, async () => {
  const name = uniqueName('counted');
  const first = await connect();
  const channel = first.subscribe(name);
  const seen = record(channel, 'pusher:subscription_count');
  await seen.atLeast(1);
  assert.deepEqual(counts(seen), [1], 'its own subscription');

  const second = await connect();
  const other = await subscribed(second, name);
  await seen.atLeast(2);
  assert.equal(channel.subscriptionCount, 2);
  second.unsubscribe(name);
  await seen.atLeast(3);
  await sleep(300);
  assert.deepEqual(counts(seen), [1, 2, 1]);
  assert.ok(other);

  // A closed connection counts as an unsubscribe too.
  const third = await connect();
  await subscribed(third, name);
  await seen.atLeast(4);
  third.disconnect();
  await seen.atLeast(5);
  assert.deepEqual(counts(seen).slice(3), [2, 1]);
});

test('private channels are counted, presence channels are not', E2E, async () => {
  const priv = uniqueName('private-counted');
  const a = await connect();
  const seen = record(a.subscribe(priv), 'pusher:subscription_count');
  await seen.atLeast(1);
  const b = await connect();
  await subscribed(b, priv);
  await seen.atLeast(2);
  assert.deepEqual(counts(seen), [1, 2]);

  const room = uniqueName('presence-counted');
  const c = await connect({ user: { id: 'u1' } });
  const roomSeen = record(c.subscribe(room), 'pusher:subscription_count');
  const d = await connect({ user: { id: 'u2' } });
  await subscribed(d, room);
  await sleep(500);
  assert.equal(roomSeen.count, 0);
});

test('off by default: an app without the option sends no counts', E2E, async () => {
  const name = uniqueName('uncounted');
  const a = await connect({ app: OFF_APP });
  const seen = record(await subscribed(a, name), 'pusher:subscription_count');
  const b = await connect({ app: OFF_APP });
  await subscribed(b, name);
  await sleep(500);
  assert.equal(seen.count, 0);
});
