// Webhooks (PROTOCOL.md §6): a real HTTP receiver in the test checks every
// request with the `pusher` SDK's own validator (signature, key, exact
// Content-Type) plus the app's custom header, and the tests check the event
// objects (§6.3), their order within one scenario, the grace window that
// holds channel_vacated / member_removed (a return within it cancels both),
// one member_added / member_removed per user however many sockets it has,
// per-receiver filters by event name and channel prefix, and batching.
//
// Each test starts its own receiver(s) and warren (grace_ms 500 unless said
// otherwise) with a fresh spool directory; faults are in webhooks-faults.test.mjs.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { DEFAULT_APP, E2E, named, restClient, sleep, subscribed, uniqueName, waitFor, webhookScope } from './helpers.mjs';

const GRACE_MS = 500;
const HEADERS = Object.freeze({ 'X-Custom': 'v' });
/** Timer slack allowed on "not before the grace window" lower bounds. */
const SLACK_MS = 5;

let scope;
beforeEach(() => {
  scope = webhookScope();
});
afterEach(async (t) => {
  await scope.cleanup(t.passed === false);
});

/** One receiver (checking the custom header) and a server sending it everything. */
async function oneReceiver(settings = {}) {
  const rx = await scope.receiver({ expectHeaders: HEADERS });
  const server = await scope.server({ targets: [{ url: rx.url, headers: HEADERS }], settings });
  return { rx, server };
}

const on = (channel) => (e) => e.channel === channel;

/** GET /channels/{channel} through the SDK until `occupied` is false (the server has seen the leave). */
async function waitUnoccupied(server, channel) {
  const rest = restClient(server.port);
  await waitFor(
    async () => {
      const res = await rest.get({ path: `/channels/${channel}` });
      return (await res.json()).occupied === false;
    },
    5_000,
    `${channel} unoccupied`,
  );
}

/** GET /channels/{room}?info=subscription_count until it is `n`. */
async function waitSubscriptions(server, room, n) {
  const rest = restClient(server.port);
  await waitFor(
    async () => {
      const res = await rest.get({ path: `/channels/${room}`, params: { info: 'subscription_count' } });
      return (await res.json()).subscription_count === n;
    },
    5_000,
    `${n} subscriptions to ${room}`,
  );
}

/** Index of the first event matching `pred` in `events` (asserting there is one). */
function indexOf(events, pred, what) {
  const i = events.findIndex(pred);
  assert.ok(i >= 0, `no ${what} in ${JSON.stringify(events)}`);
  return i;
}

const sortKey = (e) => JSON.stringify(Object.entries(e).sort());
const sorted = (events) => [...events].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));

test('channel_occupied then channel_vacated: exact objects, valid signature, vacated held for the grace window', E2E, async () => {
  const { rx, server } = await oneReceiver();
  const channel = uniqueName('wh-pub');
  const pusher = await scope.connect(server);
  await subscribed(pusher, channel);

  const [occupied] = await rx.waitForEvents(on(channel), 1);
  assert.deepEqual(occupied.event, { name: 'channel_occupied', channel });

  const leftAt = Date.now();
  pusher.unsubscribe(channel);
  const entries = await rx.waitForEvents(on(channel), 2);
  assert.deepEqual(
    entries.map((e) => e.event),
    [
      { name: 'channel_occupied', channel },
      { name: 'channel_vacated', channel },
    ],
  );
  assert.ok(
    entries[1].at - leftAt >= GRACE_MS - SLACK_MS,
    `channel_vacated came ${entries[1].at - leftAt} ms after the leave, before the ${GRACE_MS} ms grace window`,
  );

  // Every request: POST, exact Content-Type, the custom header, the SDK's validation.
  assert.deepEqual(rx.problems(), []);
  for (const r of rx.requests) {
    assert.equal(r.headers['x-pusher-key'], 'app-key');
    assert.match(r.headers['x-pusher-signature'], /^[0-9a-f]{64}$/);
    assert.equal(r.headers['x-custom'], 'v');
    assert.deepEqual(Object.keys(JSON.parse(r.rawBody)).sort(), ['events', 'time_ms']);
  }
  assert.equal(rx.events(on(channel)).length, 2, 'nothing else about the channel');
});

test('member_added and member_removed on a presence channel: exact objects, added before removed', E2E, async () => {
  const { rx, server } = await oneReceiver();
  const room = uniqueName('presence-wh');
  const pusher = await scope.connect(server, { user: { id: 'u1', info: { name: 'One' } } });
  await subscribed(pusher, room);
  await rx.waitForEvents(named('member_added', room), 1);

  const leftAt = Date.now();
  pusher.disconnect();
  await rx.waitForEvents(named('member_removed', room), 1);
  await rx.waitForEvents(named('channel_vacated', room), 1);

  const events = rx.events(on(room));
  assert.deepEqual(
    sorted(events),
    sorted([
      { name: 'channel_occupied', channel: room },
      { name: 'member_added', channel: room, user_id: 'u1' },
      { name: 'member_removed', channel: room, user_id: 'u1' },
      { name: 'channel_vacated', channel: room },
    ]),
  );
  assert.ok(indexOf(events, named('member_added', room), 'member_added') < indexOf(events, named('member_removed', room), 'member_removed'));
  assert.ok(indexOf(events, named('channel_occupied', room), 'occupied') < indexOf(events, named('channel_vacated', room), 'vacated'));
  const removedAt = rx.entries(named('member_removed', room))[0].at;
  assert.ok(removedAt - leftAt >= GRACE_MS - SLACK_MS, `member_removed ${removedAt - leftAt} ms after the leave`);
  assert.deepEqual(rx.problems(), []);
});

test('client_event: name, channel, event, data as a string, socket_id; user_id only on presence channels', E2E, async () => {
  const { rx, server } = await oneReceiver();
  const privateChannel = uniqueName('private-wh');
  const room = uniqueName('presence-wh');
  const sender = await scope.connect(server, { user: { id: 'sender-7', info: {} } });
  const other = await scope.connect(server, { user: { id: 'other', info: {} } });
  const priv = await subscribed(sender, privateChannel);
  await subscribed(other, privateChannel);
  const pres = await subscribed(sender, room);
  await subscribed(other, room);
  const socketId = sender.connection.socket_id;

  assert.ok(priv.trigger('client-object', { a: 1, s: 'x' }));
  assert.ok(priv.trigger('client-string', 'plain "text"'));
  assert.ok(pres.trigger('client-presence', { n: [1, 2] }));

  const isClient = (e) => e.name === 'client_event';
  await rx.waitForEvents(isClient, 3);
  assert.deepEqual(rx.events((e) => isClient(e) && e.channel === privateChannel), [
    { name: 'client_event', channel: privateChannel, event: 'client-object', data: '{"a":1,"s":"x"}', socket_id: socketId },
    { name: 'client_event', channel: privateChannel, event: 'client-string', data: 'plain "text"', socket_id: socketId },
  ]);
  assert.deepEqual(rx.events((e) => isClient(e) && e.channel === room), [
    { name: 'client_event', channel: room, event: 'client-presence', data: '{"n":[1,2]}', socket_id: socketId, user_id: 'sender-7' },
  ]);
  assert.deepEqual(rx.problems(), []);
});

test('a channel re-occupied within the grace window: no channel_vacated and no second channel_occupied', E2E, async () => {
  const grace = 1_000;
  const { rx, server } = await oneReceiver({ grace_ms: grace });
  const channel = uniqueName('wh-reload');
  const first = await scope.connect(server);
  const second = await scope.connect(server);
  await subscribed(first, channel);
  await rx.waitForEvents(on(channel), 1);

  const leftAt = Date.now();
  first.disconnect();
  await waitUnoccupied(server, channel); // the server has seen the channel empty ...
  await subscribed(second, channel); // ... and a new subscriber comes back within the window
  const backAfter = Date.now() - leftAt;
  assert.ok(backAfter < grace, `precondition: came back ${backAfter} ms after the leave, not within ${grace} ms`);

  // Past the first leave's window, the last subscriber leaves for good.
  await waitFor(() => Date.now() - leftAt > grace + 100, grace + 1_000, 'the first grace window to pass');
  const finalLeaveAt = Date.now();
  second.unsubscribe(channel);
  await rx.waitForEvents(named('channel_vacated', channel), 1);

  const entries = rx.entries(on(channel));
  assert.deepEqual(
    entries.map((e) => e.event),
    [
      { name: 'channel_occupied', channel },
      { name: 'channel_vacated', channel },
    ],
  );
  assert.ok(entries[1].at - finalLeaveAt >= grace - SLACK_MS, 'the vacated is the final leave, held for the window');
  assert.deepEqual(rx.problems(), []);
});

test('a presence user who rejoins within the grace window: no member_removed / channel_vacated, no second member_added / channel_occupied', E2E, async () => {
  const grace = 1_000;
  const { rx, server } = await oneReceiver({ grace_ms: grace });
  const room = uniqueName('presence-reload');
  const user = { id: 'reloader', info: { tab: 1 } };
  const first = await scope.connect(server, { user });
  const second = await scope.connect(server, { user: { ...user, info: { tab: 2 } } });
  await subscribed(first, room);
  await rx.waitForEvents(on(room), 2);

  const leftAt = Date.now();
  first.disconnect();
  await waitUnoccupied(server, room);
  await subscribed(second, room);
  const backAfter = Date.now() - leftAt;
  assert.ok(backAfter < grace, `precondition: rejoined ${backAfter} ms after the leave, not within ${grace} ms`);

  await waitFor(() => Date.now() - leftAt > grace + 100, grace + 1_000, 'the first grace window to pass');
  const finalLeaveAt = Date.now();
  second.disconnect();
  await rx.waitForEvents(named('member_removed', room), 1);
  await rx.waitForEvents(named('channel_vacated', room), 1);

  const events = rx.events(on(room));
  assert.deepEqual(
    sorted(events),
    sorted([
      { name: 'channel_occupied', channel: room },
      { name: 'member_added', channel: room, user_id: 'reloader' },
      { name: 'member_removed', channel: room, user_id: 'reloader' },
      { name: 'channel_vacated', channel: room },
    ]),
  );
  assert.ok(indexOf(events, named('member_added', room), 'added') < indexOf(events, named('member_removed', room), 'removed'));
  const removedAt = rx.entries(named('member_removed', room))[0].at;
  assert.ok(removedAt - finalLeaveAt >= grace - SLACK_MS, 'the member_removed is the final leave, held for the window');
  assert.deepEqual(rx.problems(), []);
});

test('a presence user with three sockets: one member_added, one member_removed after the last socket leaves', E2E, async () => {
  const { rx, server } = await oneReceiver();
  const room = uniqueName('presence-tabs');
  const marker = uniqueName('presence-marker');
  const user = { id: 'tabby', info: {} };
  const tabs = [];
  for (let i = 0; i < 3; i++) tabs.push(await scope.connect(server, { user }));
  for (const tab of tabs) await subscribed(tab, room);
  // member_added is reported before a join is answered: a marker joined after the
  // three tabs comes after any member_added the tabs caused.
  await subscribed(tabs[0], marker);
  await rx.waitForEvents(named('member_added', marker), 1);
  assert.deepEqual(rx.events(named('member_added', room)), [{ name: 'member_added', channel: room, user_id: 'tabby' }]);

  // Two of the three sockets leave: the server sees them go, the grace window passes, nothing.
  const firstLeavesAt = Date.now();
  tabs[0].disconnect();
  tabs[1].disconnect();
  await waitSubscriptions(server, room, 1);
  await sleep(Math.max(0, firstLeavesAt + GRACE_MS + 300 - Date.now())); // a would-be member_removed is due by now
  assert.deepEqual(rx.events(named('member_removed', room)), [], 'no member_removed while a socket remains');

  const lastLeaveAt = Date.now();
  tabs[2].disconnect();
  const [removed] = await rx.waitForEvents(named('member_removed', room), 1);
  assert.deepEqual(removed.event, { name: 'member_removed', channel: room, user_id: 'tabby' });
  assert.ok(removed.at - lastLeaveAt >= GRACE_MS - SLACK_MS);
  await rx.waitForEvents(named('channel_vacated', room), 1);
  assert.equal(rx.events(named('member_added', room)).length, 1);
  assert.equal(rx.events(named('member_removed', room)).length, 1);
  assert.deepEqual(rx.problems(), []);
});

test('filters: by channel_prefix and by event names; each receiver of an app gets its own stream', E2E, async () => {
  const presenceMembers = await scope.receiver({ expectHeaders: { 'X-Receiver': 'members' } });
  const occupiedOnly = await scope.receiver({ expectHeaders: { 'X-Receiver': 'occupied' } });
  const privateOnly = await scope.receiver({ expectHeaders: { 'X-Receiver': 'private' } });
  const everything = await scope.receiver({ expectHeaders: { 'X-Receiver': 'all' } });
  const server = await scope.server({
    targets: [
      {
        url: presenceMembers.url,
        events: ['member_added', 'member_removed'],
        filter: { channel_prefix: 'presence-' },
        headers: { 'X-Receiver': 'members' },
      },
      { url: occupiedOnly.url, events: ['channel_occupied'], headers: { 'X-Receiver': 'occupied' } },
      { url: privateOnly.url, filter: { channel_prefix: 'private-' }, headers: { 'X-Receiver': 'private' } },
      { url: everything.url, events: [], headers: { 'X-Receiver': 'all' } },
    ],
  });
  const pub = uniqueName('wh-filter');
  const priv = uniqueName('private-filter');
  const room = uniqueName('presence-filter');
  const pusher = await scope.connect(server, { user: { id: 'f1', info: {} } });
  await subscribed(pusher, pub);
  const privChannel = await subscribed(pusher, priv);
  const roomChannel = await subscribed(pusher, room);
  privChannel.trigger('client-p', { p: 1 });
  roomChannel.trigger('client-r', 'r');
  const socketId = pusher.connection.socket_id;

  const occ = (channel) => ({ name: 'channel_occupied', channel });
  const added = (channel) => ({ name: 'member_added', channel, user_id: 'f1' });
  const clientP = { name: 'client_event', channel: priv, event: 'client-p', data: '{"p":1}', socket_id: socketId };
  const clientR = { name: 'client_event', channel: room, event: 'client-r', data: 'r', socket_id: socketId, user_id: 'f1' };
  const phase1 = [occ(pub), occ(priv), occ(room), added(room), clientP, clientR];
  // Once the unfiltered receiver has all of phase 1, the dispatcher has routed all of it.
  await everything.waitForEvents(() => true, phase1.length);

  // Markers, one each receiver accepts; batches to one receiver arrive in order,
  // so anything routed wrongly in phase 1 arrives before them.
  const markerRoom = uniqueName('presence-marker');
  const markerPriv = uniqueName('private-marker');
  await subscribed(pusher, markerRoom);
  await subscribed(pusher, markerPriv);
  await presenceMembers.waitForEvents(named('member_added', markerRoom), 1);
  await occupiedOnly.waitForEvents(named('channel_occupied', markerPriv), 1);
  await occupiedOnly.waitForEvents(named('channel_occupied', markerRoom), 1);
  await privateOnly.waitForEvents(named('channel_occupied', markerPriv), 1);
  await everything.waitForEvents(() => true, phase1.length + 3);

  assert.deepEqual(presenceMembers.events(), [added(room), added(markerRoom)]);
  assert.deepEqual(sorted(occupiedOnly.events()), sorted([occ(pub), occ(priv), occ(room), occ(markerRoom), occ(markerPriv)]));
  assert.deepEqual(sorted(privateOnly.events()), sorted([occ(priv), clientP, occ(markerPriv)]));
  assert.deepEqual(
    sorted(everything.events()),
    sorted([...phase1, occ(markerRoom), added(markerRoom), occ(markerPriv)]),
  );
  for (const rx of [presenceMembers, occupiedOnly, privateOnly, everything]) assert.deepEqual(rx.problems(), []);
});

test('batching: events within the batch window go in one request', E2E, async () => {
  const { rx, server } = await oneReceiver({ batch_window_ms: 1_000, max_batch_size: 50 });
  const pusher = await scope.connect(server);
  const channels = [1, 2, 3, 4, 5].map(() => uniqueName('wh-batch'));
  for (const channel of channels) pusher.subscribe(channel); // back to back, not awaited
  await rx.waitForEvents(() => true, channels.length);
  assert.equal(rx.requests.length, 1, `one request, got:\n${rx.summary()}`);
  assert.deepEqual(sorted(rx.requests[0].events), sorted(channels.map((channel) => ({ name: 'channel_occupied', channel }))));
  assert.deepEqual(rx.problems(), []);
});

test('batching: a batch is sent as soon as it holds max_batch_size events', E2E, async () => {
  const { rx, server } = await oneReceiver({ batch_window_ms: 2_000, max_batch_size: 2 });
  const pusher = await scope.connect(server);
  const channels = [1, 2, 3, 4, 5].map(() => uniqueName('wh-split'));
  const startedAt = Date.now();
  for (const channel of channels) pusher.subscribe(channel);
  await rx.waitForEvents(() => true, 4);
  assert.ok(Date.now() - startedAt < 2_000, 'the two full batches did not wait for the window');
  await rx.waitForEvents(() => true, 5);
  assert.deepEqual(
    rx.requests.map((r) => r.events.length),
    [2, 2, 1],
    `requests:\n${rx.summary()}`,
  );
  assert.deepEqual(sorted(rx.events()), sorted(channels.map((channel) => ({ name: 'channel_occupied', channel }))));
  assert.deepEqual(rx.problems(), []);
});

test('subscription_count: every change of a non-presence channel, for apps with the feature on', E2E, async () => {
  const rx = await scope.receiver({});
  const app = { ...DEFAULT_APP, extra: { enable_subscription_count_webhooks: true } };
  const server = await scope.server({ targets: [{ url: rx.url, events: ['subscription_count'] }], app });
  const channel = uniqueName('wh-count');
  const room = uniqueName('presence-wh-count');
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const pusher = await scope.connect(server, { user: { id: `u${i}`, info: {} } });
    await subscribed(pusher, channel);
    clients.push(pusher);
  }
  await subscribed(clients[0], room);
  clients[2].disconnect();
  const entries = await rx.waitForEvents(on(channel), 4);
  assert.deepEqual(
    entries.map((e) => e.event),
    [1, 2, 3, 2].map((n) => ({ name: 'subscription_count', channel, subscription_count: n })),
  );
  await sleep(300);
  assert.deepEqual(rx.events(on(room)), [], 'no subscription_count for presence channels');
  assert.deepEqual(rx.problems(), []);
});
