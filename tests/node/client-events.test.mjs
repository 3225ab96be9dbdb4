// Client events (PROTOCOL.md §2.7): relay to the other subscribers of a private
// channel but never back to the sender, the sender's user_id on presence
// channels, and the per-connection rate limit (10/s, excess answered with
// pusher:error 4301 while the socket stays open).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { E2E, errorCode, record, sleep, subscribed, uniqueName, useServer } from './helpers.mjs';

const ctx = useServer();

/** Connect one client per user (or anonymous ones) and subscribe each to `channelName`. */
async function joinAll(channelName, users) {
  const clients = await Promise.all(users.map((user) => ctx.connect({ user })));
  const channels = await Promise.all(clients.map((pusher) => subscribed(pusher, channelName)));
  return { clients, channels };
}

test('client event on a private channel reaches the other subscriber and not the sender', E2E, async () => {
  const {
    channels: [chA, chB],
  } = await joinAll(uniqueName('private-chat'), [undefined, undefined]);
  const atA = record(chA, 'client-typing');
  const atB = record(chB, 'client-typing');

  assert.equal(chA.trigger('client-typing', { x: 1 }), true);
  await atB.atLeast(1);
  await sleep(300);

  assert.deepEqual(atB.data, [{ x: 1 }]);
  assert.equal(atA.count, 0, 'the sender must not get its own client event back');
});

test('client event on a presence channel carries the sender user_id', E2E, async () => {
  const {
    channels: [chA, chB],
  } = await joinAll(uniqueName('presence-chat'), [{ id: 'sender-1' }, { id: 'receiver-2' }]);
  const atB = record(chB, 'client-hi');

  chA.trigger('client-hi', { hello: 'there' });
  await atB.atLeast(1);

  assert.deepEqual(atB.items[0].data, { hello: 'there' });
  assert.equal(atB.items[0].metadata?.user_id, 'sender-1');
});

test('client events over 10 per second are dropped with pusher:error 4301', E2E, async () => {
  const {
    clients: [a],
    channels: [chA, chB],
  } = await joinAll(uniqueName('private-burst'), [undefined, undefined]);
  const errorsAtA = record(a.connection, 'error');
  const atB = record(chB, 'client-burst');

  for (let i = 0; i < 30; i++) chA.trigger('client-burst', { i });
  await errorsAtA.atLeast(1, 3_000);
  await sleep(1_000); // let everything the server let through arrive

  const codes = errorsAtA.data.map(errorCode);
  assert.ok(codes.includes(4301), `expected a pusher:error with code 4301, got ${JSON.stringify(errorsAtA.data)}`);
  assert.ok(atB.count >= 1 && atB.count <= 11, `B received ${atB.count} of 30 events, expected 1..11`);
  const relayed = atB.data.map((d) => d.i);
  assert.equal(relayed[0], 0, 'the first event is let through');
  assert.ok(
    relayed.every((i, k) => k === 0 || i > relayed[k - 1]),
    `relayed in order: ${relayed}`,
  );
  assert.equal(a.connection.state, 'connected');

  // The limit is a rate, not a ban: a second later A may send again.
  await sleep(200);
  const later = record(chB, 'client-after');
  chA.trigger('client-after', { ok: true });
  await later.atLeast(1);
  assert.equal(a.connection.state, 'connected');
});
