// An app with `compat = "workbunny"` (object `data` in pusher:connection_established and in
// relayed client events, for workbunny 3.x's push.js) still serves pusher-js and Laravel Echo:
// both parse `data` only when it is a string. tests/browser covers the push.js clients.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import {
  DEFAULT_APP,
  E2E,
  appsConfig,
  localAuthorizer,
  nextOf,
  serverOptions,
  record,
  recordMessages,
  restClient,
  subscribed,
  uniqueName,
  useServer,
  waitFor,
  waitForState,
} from './helpers.mjs';

const COMPAT_APP = Object.freeze({ id: '4', key: 'workbunny-key', secret: 'workbunny-secret' });
const ctx = useServer({
  config: appsConfig([
    { id: DEFAULT_APP.id, key: DEFAULT_APP.key, secret: DEFAULT_APP.secret },
    { id: COMPAT_APP.id, key: COMPAT_APP.key, secret: COMPAT_APP.secret, compat: 'workbunny' },
  ]),
});

/** Options for pusher-js (also what Echo hands to it) against the test server as `user`. */
function pusherOptions(user) {
  return {
    ...serverOptions(ctx.server.port),
    channelAuthorization: { customHandler: localAuthorizer({ app: COMPAT_APP, user }) },
  };
}

const echos = [];
function echo(user) {
  const e = new Echo({ broadcaster: 'pusher', key: COMPAT_APP.key, Pusher, ...pusherOptions(user) });
  echos.push(e);
  return e;
}

test('pusher-js on the compat app: socket id, object client-event data, presence', E2E, async () => {
  const a = await ctx.connect({ app: COMPAT_APP, user: { id: 'a', info: { name: 'A' } } });
  const b = await ctx.connect({ app: COMPAT_APP, user: { id: 'b', info: { name: 'B' } } });
  assert.match(a.connection.socket_id, /^\d+\.\d+$/);
  const channel = uniqueName('presence-compat');
  const [ca, cb] = [await subscribed(a, channel), await subscribed(b, channel)];
  assert.equal(cb.members.count, 2);
  await waitFor(() => ca.members.count === 2, 5_000, "b in a's member list");
  const raw = recordMessages(b, 'client-note', channel);
  const notes = record(cb, 'client-note');
  ca.trigger('client-note', { text: 'hi', n: 1 });
  await notes.atLeast(1);
  assert.deepEqual(notes.data[0], { text: 'hi', n: 1 });
  // Relayed as an object on this app (pusher-js would have parsed a string to the same value).
  assert.equal(typeof raw.items[0].data, 'object');
  const removed = nextOf(ca, ['pusher:member_removed']);
  b.disconnect();
  assert.equal((await removed).data.id, 'b');
});

test('Laravel Echo on the compat app: private events, presence here/joining, whispers', E2E, async () => {
  try {
    const [one, two] = [echo({ id: 'one', info: { name: 'One' } }), echo({ id: 'two', info: { name: 'Two' } })];
    await waitForState(one.connector.pusher, 'connected');
    assert.match(one.socketId(), /^\d+\.\d+$/);

    const orders = uniqueName('orders');
    const shipped = [];
    one.private(orders).listen('.shipped', (e) => shipped.push(e));
    await waitFor(() => one.connector.pusher.channel(`private-${orders}`)?.subscribed, 5_000, 'private subscribed');
    await restClient(ctx.server.port, COMPAT_APP).trigger(`private-${orders}`, 'shipped', { id: 7 });
    await waitFor(() => shipped.length === 1, 5_000, 'the shipped event');
    assert.deepEqual(shipped[0], { id: 7 });

    const room = uniqueName('room');
    let here = null;
    const joining = [];
    one.join(room).here((members) => (here = members)).joining((m) => joining.push(m));
    await waitFor(() => here, 5_000, 'here()');
    assert.deepEqual(here, [{ name: 'One' }]);
    const whispers = [];
    one.private(orders).listenForWhisper('typing', (e) => whispers.push(e));
    two.join(room);
    await waitFor(() => joining.length === 1, 5_000, 'joining()');
    assert.deepEqual(joining[0], { name: 'Two' });
    two.private(orders);
    await waitFor(() => two.connector.pusher.channel(`private-${orders}`)?.subscribed, 5_000, 'second private');
    two.private(orders).whisper('typing', { who: 'two' });
    await waitFor(() => whispers.length === 1, 5_000, 'the whisper');
    assert.deepEqual(whispers[0], { who: 'two' });
  } finally {
    for (const e of echos.splice(0)) e.disconnect();
  }
});
