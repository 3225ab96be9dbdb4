// Limits an app can set (issue 11, item 6), through the `pusher` SDK and pusher-js: a request
// body over the app's `max_request_body_bytes` is 413 (another app's larger limit is its own),
// more channels than `max_channels_per_event` and event names over `max_event_name_length` are
// 400, a client event name over the limit is refused on the socket, and a channel name over
// `max_channel_name_length` is a subscription error. Webhook receivers filtered by
// `channel_suffix`. And the one user_id rule (item 7): a numeric presence user_id reaches
// pusher-js (member_added, client-event user_id) and the Node SDK's webhook validator as a string.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  appsConfig,
  createClient,
  nextOf,
  restClient,
  sleep,
  startServer,
  subscribed,
  uniqueName,
  waitForState,
  webhookScope,
} from './helpers.mjs';

const SMALL = Object.freeze({ id: '5', key: 'small-key', secret: 'small-secret' });
const SMALL_LIMITS = {
  max_request_body_bytes: 2000,
  max_channels_per_event: 2,
  max_event_name_length: 20,
  max_channel_name_length: 40,
};

let server;
const clients = [];
before(async () => {
  server = await startServer({
    config: appsConfig([
      { ...DEFAULT_APP, max_request_body_bytes: 4_000_000, max_event_payload_bytes: 3_000_000 },
      { ...SMALL, ...SMALL_LIMITS },
    ]),
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

const status = (promise) => promise.then((r) => r.status, (e) => e.status);

test('a body over the app\'s own limit is 413; a larger limit of another app is that app\'s alone', E2E, async () => {
  const small = restClient(server.port, SMALL);
  const wide = restClient(server.port, DEFAULT_APP);
  const data = 'x'.repeat(2500); // under the payload limit (10 KB), over SMALL's 2000-byte body
  assert.equal(await status(small.trigger('c', 'e', data)), 413);
  assert.equal(await status(small.trigger('c', 'e', 'x'.repeat(100))), 200);
  // The default app raised both limits above Pusher's 1 MiB: a 2 MB body is read and published.
  assert.equal(await status(wide.trigger('c', 'e', 'y'.repeat(2_000_000))), 200);
});

test('more channels than the app allows is 400, and so is an event name over its limit', E2E, async () => {
  const small = restClient(server.port, SMALL);
  assert.equal(await status(small.trigger(['a', 'b'], 'e', {})), 200);
  assert.equal(await status(small.trigger(['a', 'b', 'c'], 'e', {})), 400);
  assert.equal(await status(small.trigger('a', 'e'.repeat(20), {})), 200);
  assert.equal(await status(small.trigger('a', 'e'.repeat(21), {})), 400);
  // The default app keeps Pusher's 100 channels.
  const hundred = Array.from({ length: 100 }, (_, i) => `ch-${i}`);
  assert.equal(await status(restClient(server.port).trigger(hundred, 'e', {})), 200);
});

test('a client event name over the app\'s limit is refused; a channel name over it cannot be subscribed', E2E, async () => {
  const channelName = uniqueName('private-lim');
  const a = await connect({ app: SMALL });
  const b = await connect({ app: SMALL });
  const chA = await subscribed(a, channelName);
  const chB = await subscribed(b, channelName);
  const refused = nextOf(a.connection, ['error'], 3_000);
  chA.trigger(`client-${'n'.repeat(20)}`, {});
  const error = await refused;
  assert.match(JSON.stringify(error), /longer than 20 characters/);
  const ok = nextOf(chB, ['client-short'], 3_000);
  chA.trigger('client-short', { x: 1 });
  assert.deepEqual((await ok).data, { x: 1 });

  const long = `c-${'l'.repeat(40)}`;
  const got = await nextOf(a.subscribe(long), ['pusher:subscription_succeeded', 'pusher:subscription_error'], 3_000);
  assert.equal(got.event, 'pusher:subscription_error');
  assert.equal(got.data.type, 'InvalidChannel');
});

test('a numeric presence user_id reaches pusher-js as a string: member_added and client-event user_id', E2E, async () => {
  const room = uniqueName('presence-numeric');
  const watcher = await connect({ user: { id: 'watcher' } });
  const watched = await subscribed(watcher, room);
  const added = nextOf(watched, ['pusher:member_added'], 3_000);
  const numeric = await connect({ user: { id: 7, info: { n: 7 } } });
  const ch = await subscribed(numeric, room);
  const member = (await added).data;
  assert.strictEqual(member.id, '7');
  assert.deepEqual(member.info, { n: 7 });
  assert.deepEqual(Object.keys(watched.members.members).sort(), ['7', 'watcher']);

  const relayed = nextOf(watched, ['client-hi'], 3_000);
  ch.trigger('client-hi', { hi: 1 });
  const { metadata } = await relayed;
  assert.strictEqual(metadata.user_id, '7');
});

test('webhooks: a receiver filtered by channel_suffix gets only those channels; a numeric user_id validates', E2E, async () => {
  const scope = webhookScope();
  try {
    const all = await scope.receiver();
    const admin = await scope.receiver();
    const hooked = await scope.server({
      targets: [{ url: all.url }, { url: admin.url, filter: { channel_suffix: '-admin' } }],
      settings: { batch_window_ms: 0 },
    });
    const adminRoom = uniqueName('presence-team') + '-admin';
    const userRoom = uniqueName('presence-team') + '-user';
    const pusher = await scope.connect(hooked, { user: { id: 42 } });
    await subscribed(pusher, adminRoom);
    await subscribed(pusher, userRoom);
    const onRoom = (room) => (e) => e.channel === room && e.name === 'member_added';
    await all.waitForEvents(onRoom(adminRoom), 1);
    await all.waitForEvents(onRoom(userRoom), 1);
    const [entry] = await admin.waitForEvents(onRoom(adminRoom), 1);
    assert.deepEqual(entry.event, { name: 'member_added', channel: adminRoom, user_id: '42' });
    await sleep(500);
    assert.deepEqual(
      admin.events(() => true).filter((e) => !e.channel.endsWith('-admin')),
      [],
      'the suffix-filtered receiver got another channel',
    );
    // Every request passed the `pusher` SDK's validator (signature, key, content type).
    assert.deepEqual(all.problems(), []);
    assert.deepEqual(admin.problems(), []);
  } finally {
    await scope.cleanup();
  }
});
