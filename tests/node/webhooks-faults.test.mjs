// Webhook delivery under faults (PROTOCOL.md §6.2): a receiver that is not
// listening for a while, one that answers 500 at first, one that keeps
// failing past retry_for_secs (dead letter), a failing receiver next to a
// healthy one, and warren SIGKILLed with batches pending, then restarted on
// the same spool_dir. Every request is checked with the `pusher` SDK's
// validator (see startWebhookReceiver in helpers.mjs).
//
// Delivery retries back off 0.5 s, 1 s, 2 s, ... so these tests wait on the
// receiver or on warren's "webhook delivery failed" log lines, never on fixed
// sleeps.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { E2E, logCount, named, readSpool, subscribed, uniqueName, waitFor, webhookScope } from './helpers.mjs';

const HEADERS = Object.freeze({ 'X-Custom': 'v' });
const FAILED = 'webhook delivery failed';
const DEAD = 'webhook dead-lettered';
const SLACK_MS = 5;
const FAULTS = { timeout: 60_000 };

let scope;
beforeEach(() => {
  scope = webhookScope();
});
afterEach(async (t) => {
  await scope.cleanup(t.passed === false);
});

const occ = (channel) => ({ name: 'channel_occupied', channel });
const sortKey = (e) => JSON.stringify(Object.entries(e).sort());
const sorted = (events) => [...events].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));

/** Wait until warren has logged `text` at least `n` times. */
function waitLog(server, text, n, ms = 15_000) {
  return waitFor(() => logCount(server, text) >= n, ms, `${n} x "${text}" in warren's log (saw ${logCount(server, text)})`);
}

/** Each event of `expected` occurs exactly once in `events`, and nothing else does. */
function assertExactlyOnce(events, expected, what) {
  assert.deepEqual(sorted(events), sorted(expected), what);
}

test('receiver down (not listening) for ~2 s, then up: every event arrives exactly once, batches in order', { ...E2E, ...FAULTS }, async () => {
  const rx = await scope.receiver({ listening: false, expectHeaders: HEADERS });
  const server = await scope.server({ targets: [{ url: rx.url, headers: HEADERS }] });
  const pusher = await scope.connect(server, { user: { id: 'd1', info: {} } });

  const first = uniqueName('wh-down');
  await subscribed(pusher, first);
  await waitLog(server, FAILED, 1); // the first batch is being retried

  const room = uniqueName('presence-down');
  const channel = await subscribed(pusher, room);
  channel.trigger('client-down', { k: 'v' });
  const socketId = pusher.connection.socket_id;
  await waitLog(server, FAILED, 3); // attempts at 0, 0.5 s, 1.5 s: down ~1.5 s, next try 2 s later
  await rx.listen();

  const expected = [
    occ(first),
    occ(room),
    { name: 'member_added', channel: room, user_id: 'd1' },
    { name: 'client_event', channel: room, event: 'client-down', data: '{"k":"v"}', socket_id: socketId, user_id: 'd1' },
  ];
  await rx.waitForEvents(() => true, expected.length, 15_000);
  // A marker after the backlog: anything sent twice would arrive before it.
  const marker = uniqueName('wh-down-marker');
  await subscribed(pusher, marker);
  await rx.waitForEvents(named('channel_occupied', marker), 1);

  const events = rx.events();
  assert.deepEqual(events[0], occ(first), 'the first batch first');
  assert.deepEqual(events.at(-1), occ(marker), 'the new event after the backlog');
  assertExactlyOnce(events, [...expected, occ(marker)], 'every event once');
  assert.ok(rx.requests.every((r) => r.status === 200));
  assert.deepEqual(rx.problems(), []);
});

test('receiver answering 500 to the first 2 attempts: retried with backoff, same body, then the next batch, nothing else duplicated', { ...E2E, ...FAULTS }, async () => {
  let seen = 0;
  const rx = await scope.receiver({ expectHeaders: HEADERS, respond: () => (seen++ < 2 ? 500 : 200) });
  const server = await scope.server({ targets: [{ url: rx.url, headers: HEADERS }] });
  const pusher = await scope.connect(server);

  const one = uniqueName('wh-500');
  await subscribed(pusher, one);
  await rx.waitForRequests(1);
  const two = uniqueName('wh-500'); // a second batch, queued behind the failing one
  await subscribed(pusher, two);

  await rx.waitForEvents(() => true, 2, 15_000);
  assert.deepEqual(rx.events(), [occ(one), occ(two)], 'delivered once each, in order');
  assert.deepEqual(
    rx.requests.map((r) => r.status),
    [500, 500, 200, 200],
    `requests:\n${rx.summary()}`,
  );
  const [a, b, c, d] = rx.requests;
  assert.equal(b.rawBody, a.rawBody, 'a retry resends the same body');
  assert.equal(c.rawBody, a.rawBody, 'a retry resends the same body');
  assert.equal(c.headers['x-pusher-signature'], a.headers['x-pusher-signature']);
  assert.deepEqual(d.events, [occ(two)]);
  assert.ok(b.at - a.at >= 500 - SLACK_MS, `second attempt ${b.at - a.at} ms after the first (backoff 500 ms)`);
  assert.ok(c.at - b.at >= 1_000 - SLACK_MS, `third attempt ${c.at - b.at} ms after the second (backoff 1 s)`);
  assert.deepEqual(rx.problems(), []);
});

test('a batch still failing after retry_for_secs is dead-lettered; the next batch is delivered', { ...E2E, ...FAULTS }, async () => {
  let healthy = false;
  const rx = await scope.receiver({ expectHeaders: HEADERS, respond: () => (healthy ? 200 : 500) });
  const server = await scope.server({ targets: [{ url: rx.url, headers: HEADERS }], settings: { retry_for_secs: 1 } });
  const pusher = await scope.connect(server);

  const lost = uniqueName('wh-dead');
  await subscribed(pusher, lost);
  await waitLog(server, DEAD, 1); // attempts at 0 and 0.5 s; the next pause (1 s) would pass retry_for_secs
  const failedAttempts = rx.requests.length;
  assert.ok(failedAttempts >= 2, `at least two attempts before giving up, got ${failedAttempts}`);
  assert.ok(rx.requests.every((r) => r.status === 500 && r.rawBody === rx.requests[0].rawBody));

  healthy = true;
  const next = uniqueName('wh-after-dead');
  await subscribed(pusher, next);
  await rx.waitForEvents(() => true, 1);
  assert.deepEqual(rx.events(), [occ(next)], 'the dead-lettered batch is not sent again');
  assert.equal(rx.requests.length, failedAttempts + 1);
  await waitFor(async () => (await readSpool(server.spoolDir)).length === 0, 5_000, 'an empty spool');
  assert.deepEqual(rx.problems(), []);
});

test('a receiver slower than timeout_ms: the attempt is abandoned and retried with the same body', { ...E2E, ...FAULTS }, async () => {
  let seen = 0;
  const sleepThen = (ms, status) => new Promise((r) => setTimeout(() => r(status), ms));
  // The first request is answered (200) only after 1.5 s; warren's timeout is 300 ms.
  const rx = await scope.receiver({ expectHeaders: HEADERS, respond: () => (seen++ === 0 ? sleepThen(1_500, 200) : 200) });
  const server = await scope.server({ targets: [{ url: rx.url, headers: HEADERS }], settings: { timeout_ms: 300 } });
  const pusher = await scope.connect(server);
  const channel = uniqueName('wh-slow');
  await subscribed(pusher, channel);

  await rx.waitForEvents(() => true, 1, 10_000);
  await waitFor(() => rx.requests[0].status !== 0, 5_000, 'the slow answer');
  assert.equal(rx.requests.length, 2, `requests:\n${rx.summary()}`);
  const [slow, retry] = rx.requests;
  assert.ok(slow.aborted, 'warren closed the connection before the slow answer');
  assert.equal(retry.rawBody, slow.rawBody);
  assert.ok(retry.at - slow.at >= 300 + 500 - SLACK_MS, `retry ${retry.at - slow.at} ms after the first attempt (timeout + backoff)`);
  assert.ok(retry.at - slow.at < 1_500, 'the retry did not wait for the slow answer');
  assert.deepEqual(rx.events(), [occ(channel)]);
  assert.equal(logCount(server, FAILED), 1);
  assert.deepEqual(rx.problems(), []);
});

test('a failing receiver does not hold back another receiver of the same app', { ...E2E, ...FAULTS }, async () => {
  const failing = await scope.receiver({ respond: () => 503 });
  const healthy = await scope.receiver();
  const server = await scope.server({ targets: [{ url: failing.url }, { url: healthy.url }] });
  const pusher = await scope.connect(server);
  const channels = [uniqueName('wh-iso'), uniqueName('wh-iso')];
  await subscribed(pusher, channels[0]);
  await failing.waitForRequests(1);
  await subscribed(pusher, channels[1]);
  await healthy.waitForEvents(() => true, 2);
  assert.deepEqual(healthy.events(), channels.map(occ));
  assert.equal(failing.accepted.length, 0);
  assert.deepEqual([...failing.problems(), ...healthy.problems()], []);
});

test('warren SIGKILLed while the receiver is down: after a restart on the same spool_dir every pending batch arrives, same bodies, in order', { ...E2E, ...FAULTS }, async () => {
  const rx = await scope.receiver({ listening: false, expectHeaders: HEADERS });
  const targets = [{ url: rx.url, headers: HEADERS }];
  const first = await scope.server({ targets });
  const pusher = await scope.connect(first, { user: { id: 'k1', info: {} } });

  // Batch 1, spooled and being retried.
  const one = uniqueName('wh-kill');
  await subscribed(pusher, one);
  await waitLog(first, FAILED, 1);
  await waitFor(async () => (await readSpool(first.spoolDir)).length >= 1, 5_000, 'batch 1 in the spool');

  // More batches while batch 1 is retried.
  const room = uniqueName('presence-kill');
  const channel = await subscribed(pusher, room);
  channel.trigger('client-kill', 'payload');
  const three = uniqueName('wh-kill');
  await subscribed(pusher, three);
  const socketId = pusher.connection.socket_id;
  const failedSoFar = logCount(first, FAILED);
  await waitLog(first, FAILED, failedSoFar + 1); // a retry later: every batch has long left the dispatcher

  const expected = [
    occ(one),
    occ(room),
    { name: 'member_added', channel: room, user_id: 'k1' },
    { name: 'client_event', channel: room, event: 'client-kill', data: 'payload', socket_id: socketId, user_id: 'k1' },
    occ(three),
  ];
  await first.kill9();
  scope.disconnectClients();
  const spooled = await readSpool(first.spoolDir);
  const spooledEvents = spooled.flatMap((body) => JSON.parse(body).events);

  const second = await scope.server({ targets, settings: { spool_dir: first.spoolDir } });
  await rx.listen();
  let missing;
  try {
    // Every event pending at the kill, at least once.
    await waitFor(
      () => {
        const got = rx.events().map(sortKey);
        missing = expected.filter((e) => !got.includes(sortKey(e)));
        return missing.length === 0;
      },
      15_000,
      'every pending event',
    );
  } catch (e) {
    assert.fail(
      `${e.message}: missing ${JSON.stringify(missing)}; the spool held ${spooled.length} batch(es) ` +
        `${JSON.stringify(spooledEvents)} at the kill; received after the restart:\n${rx.summary()}`,
    );
  }
  // The spooled batches are resent first, with the very same bodies.
  assert.deepEqual(
    rx.accepted.slice(0, spooled.length).map((r) => r.rawBody),
    spooled,
    'the spooled bodies, resent unchanged and in order',
  );

  // A new event after the restart comes after the resent backlog.
  const pusher2 = await scope.connect(second);
  const after = uniqueName('wh-after-restart');
  await subscribed(pusher2, after);
  await rx.waitForEvents(named('channel_occupied', after), 1);
  assert.deepEqual(rx.events().at(-1), occ(after));
  await waitFor(async () => (await readSpool(first.spoolDir)).length === 0, 5_000, 'an empty spool once delivered');
  assert.deepEqual(rx.problems(), []);
});

test('warren SIGKILLed while the receiver answers 503: the restarted server resends the recorded body unchanged', { ...E2E, ...FAULTS }, async () => {
  let healthy = false;
  const rx = await scope.receiver({ expectHeaders: HEADERS, respond: () => (healthy ? 200 : 503) });
  const targets = [{ url: rx.url, headers: HEADERS }];
  const first = await scope.server({ targets, settings: { batch_window_ms: 300 } });
  const pusher = await scope.connect(first);
  const channels = [uniqueName('wh-503'), uniqueName('wh-503'), uniqueName('wh-503')];
  for (const channel of channels) pusher.subscribe(channel); // one batch
  await rx.waitForRequests(2); // a first attempt and a retry, both refused
  const recorded = rx.requests[0].rawBody;
  assertExactlyOnce(JSON.parse(recorded).events, channels.map(occ), 'the refused batch');

  await first.kill9();
  scope.disconnectClients();
  const refused = rx.requests.length;
  healthy = true;
  await scope.server({ targets, settings: { spool_dir: first.spoolDir } });
  await rx.waitForEvents(() => true, channels.length, 15_000);
  const resent = rx.requests.slice(refused);
  assert.equal(resent[0].status, 200);
  assert.equal(resent[0].rawBody, recorded, 'the same body as the refused attempts');
  assert.equal(resent[0].headers['x-pusher-signature'], rx.requests[0].headers['x-pusher-signature']);
  assertExactlyOnce(rx.events(), channels.map(occ), 'each event delivered once');
  assert.deepEqual(rx.problems(), []);
});
