// Rejections (PROTOCOL.md §1.3, §2.4, §2.7, §2.10): a forged private-channel
// signature gets pusher:subscription_error and leaves the socket usable; client
// events on a public channel or for an app without client events get a
// pusher:error and reach nobody; an unknown or disabled app key is refused with
// 4001 / 4003 and pusher-js does not reconnect.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEFAULT_APP,
  DISABLED_APP,
  E2E,
  MULTI_APP_CONFIG,
  NO_CLIENT_EVENTS_APP,
  errorCode,
  nextOf,
  record,
  sleep,
  subscribed,
  uniqueName,
  useServer,
  waitFor,
  waitForState,
} from './helpers.mjs';

const ctx = useServer({ config: MULTI_APP_CONFIG });

test('a forged private-channel signature gets pusher:subscription_error, the connection stays usable', E2E, async () => {
  const pusher = await ctx.connect({
    secretFor: (channel) => (channel.includes('forged') ? 'not-the-secret' : DEFAULT_APP.secret),
  });
  const forged = pusher.subscribe(uniqueName('private-forged'));
  const { event, data } = await nextOf(forged, ['pusher:subscription_error', 'pusher:subscription_succeeded']);

  assert.equal(event, 'pusher:subscription_error');
  assert.equal(data.type, 'AuthError');
  assert.equal(data.status, 401);
  assert.equal(typeof data.error, 'string');
  assert.equal(forged.subscribed, false);

  await sleep(200);
  assert.equal(pusher.connection.state, 'connected');
  const ok = await subscribed(pusher, uniqueName('private-ok'));
  assert.equal(ok.subscribed, true);
});

/**
 * Two clients of `app` join `channelName`; A sends a client event. The server
 * must refuse it (pusher-js refuses to send, or A gets a pusher:error with a
 * message), B must receive nothing, and A must stay connected.
 */
async function expectClientEventRefused(app, channelName) {
  const [a, b] = await Promise.all([ctx.connect({ app }), ctx.connect({ app })]);
  const [chA, chB] = await Promise.all([subscribed(a, channelName), subscribed(b, channelName)]);
  const errorsAtA = record(a.connection, 'error');
  const atB = record(chB, 'client-sneaky');

  const sent = chA.trigger('client-sneaky', { x: 1 });
  if (sent !== false) {
    await errorsAtA.atLeast(1, 3_000);
    const [err] = errorsAtA.data;
    assert.equal(err.type, 'PusherError', `a pusher:error frame, got ${JSON.stringify(err)}`);
    assert.equal(typeof err.data?.message, 'string', 'the pusher:error data carries a message');
  }
  await sleep(300);

  assert.equal(atB.count, 0, 'the refused client event must not be relayed');
  assert.equal(a.connection.state, 'connected');
  assert.equal(b.connection.state, 'connected');
}

test('a client event on a public channel is refused and not relayed', E2E, () =>
  expectClientEventRefused(DEFAULT_APP, uniqueName('public-lobby')),
);

test('a client event for an app with client events disabled is refused and not relayed', E2E, () =>
  expectClientEventRefused(NO_CLIENT_EVENTS_APP, uniqueName('private-quiet')),
);

/**
 * A client with `app`'s key must never connect: an `error` carrying `code`
 * arrives, the state ends failed / unavailable / disconnected, and pusher-js
 * does not try again (close codes 4001-4099 mean "do not reconnect").
 */
async function expectRefused(app, code) {
  const pusher = ctx.open({ app });
  const errors = record(pusher.connection, 'error');
  const states = record(pusher.connection, 'state_change');

  const err = await waitFor(() => errors.data.find((e) => errorCode(e) != null), 5_000, 'an error with a code');
  assert.equal(errorCode(err), code, `error ${JSON.stringify(err)}`);
  await waitForState(pusher, ['failed', 'unavailable', 'disconnected']);
  await sleep(1_500);

  // The first 'connecting' happens inside the constructor, before `states` was bound.
  const visited = states.data.map((s) => s.current);
  assert.ok(!visited.includes('connected'), `states: ${visited.join(' -> ')}`);
  assert.ok(!visited.includes('connecting'), `no reconnect; states: ${visited.join(' -> ')}`);
}

test('an unknown app key is refused with 4001', E2E, () =>
  expectRefused({ key: 'no-such-key', secret: 'whatever' }, 4001),
);

test('a disabled app key is refused with 4003', E2E, () => expectRefused(DISABLED_APP, 4003));
