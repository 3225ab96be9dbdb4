// Webhooks across a graceful stop, a crash and a failing receiver (issue 12), with the real
// binary and real receivers:
// - SIGTERM while clients hold channels and never answer the close frame: every
//   channel_vacated is delivered before warren exits;
// - SIGKILL with occupied channels and present members, restarted on the same spool_dir: the
//   owed channel_vacated and member_removed arrive, each once (the reported-state journal);
// - a receiver answering 500 under a stream of events: the spool is the queue, bounded by
//   spool_max_bytes, the newest batches dropped and counted, drained once the receiver is back;
// - configured headers may not name Content-Type / X-Pusher-*; what a receiver reads on the
//   wire has exactly one of each plus the configured extras.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { DEFAULT_APP, E2E, SERVER_BIN, named, subscribed, uniqueName, waitFor, webhookConfig, webhookScope } from './helpers.mjs';
import { rawPusher } from './raw-ws.mjs';

const SLOW = { timeout: 60_000 };

let scope;
beforeEach(() => {
  scope = webhookScope();
});
afterEach(async (t) => {
  await scope.cleanup(t.passed === false);
});

const count = (events, pred) => events.filter(pred).length;

/** Scrapes /metrics into a map from `name{labels}` to value. */
async function metrics(server) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  const text = await res.text();
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/**
 * SIGTERM while `N` raw clients each hold a channel and never read again (so they never answer
 * warren's close frame); returns the channels whose channel_vacated was delivered before exit.
 */
async function vacatedAcrossSigterm(N, shards) {
  const rx = await scope.receiver();
  const server = await scope.server({ targets: [{ url: rx.url }], shards });
  const channels = Array.from({ length: N }, () => uniqueName('wh-term'));
  const clients = [];
  for (const channel of channels) {
    const client = await rawPusher(server.port);
    clients.push(client);
    await client.subscribe(channel);
  }
  await rx.waitForEvents((e) => e.name === 'channel_occupied', N);
  for (const client of clients) client.stopReading();

  const exit = await server.stop();
  for (const client of clients) client.destroy();
  assert.notEqual(exit?.signal, 'SIGKILL', 'warren exited on its own after SIGTERM');
  assert.deepEqual(rx.problems(), []);
  const events = rx.events();
  return { rx, server, vacated: channels.filter((c) => count(events, named('channel_vacated', c)) === 1) };
}

test('SIGTERM, one shard, 10 occupied channels whose clients never answer the close frame: 10 of 10 channel_vacated delivered before exit', { ...E2E, ...SLOW }, async () => {
  const { rx, vacated, server } = await vacatedAcrossSigterm(10, 1);
  assert.equal(vacated.length, 10, `channel_vacated delivered for ${vacated.length} of 10:\n${rx.summary()}`);

  // A graceful stop owes nothing: restarted on the same spool_dir, nothing is sent again.
  const again = await scope.server({ targets: [{ url: rx.url }], settings: { spool_dir: server.spoolDir }, shards: 1 });
  const marker = uniqueName('wh-term-marker');
  await subscribed(await scope.connect(again), marker);
  await rx.waitForEvents(named('channel_occupied', marker), 1);
  assert.equal(rx.events((e) => e.name === 'channel_vacated').length, 10, rx.summary());
});

// With two shards a client's last unsubscribe must reach its channel's home shard (which emits
// channel_vacated) before that shard stops: each shard passes a barrier with its peers after its
// connections are gone, and none stops before all have (Shard::drain).
test('SIGTERM, two shards, 10 occupied channels whose clients never answer the close frame: 10 of 10 channel_vacated delivered before exit', { ...E2E, ...SLOW }, async () => {
  const { rx, vacated } = await vacatedAcrossSigterm(10, 2);
  assert.equal(vacated.length, 10, `channel_vacated delivered for ${vacated.length} of 10:\n${rx.summary()}`);
});

test('SIGTERM, two shards, clients that never answer the close frame, then a restart on the same spool_dir: each channel_vacated arrives exactly once across the stop and the restart', { ...E2E, ...SLOW }, async () => {
  const { rx, server } = await vacatedAcrossSigterm(10, 2);
  // Whatever the stop did not send (see the test above), the journal still owes.
  const again = await scope.server({ targets: [{ url: rx.url }], settings: { spool_dir: server.spoolDir } });
  const channels = rx.events((e) => e.name === 'channel_occupied').map((e) => e.channel);
  await rx.waitForEvents((e) => e.name === 'channel_vacated', 10, 10_000, 'a channel_vacated for each channel');
  const marker = uniqueName('wh-term-marker');
  await subscribed(await scope.connect(again), marker);
  await rx.waitForEvents(named('channel_occupied', marker), 1);
  const vacated = rx.events((e) => e.name === 'channel_vacated').map((e) => e.channel);
  assert.deepEqual([...vacated].sort(), [...channels].sort(), rx.summary());
});

test('SIGKILL with occupied channels and present members, restarted on the same spool_dir: every owed channel_vacated and member_removed arrives once', { ...E2E, ...SLOW }, async () => {
  const rx = await scope.receiver();
  const targets = [{ url: rx.url }];
  const first = await scope.server({ targets });
  const room = uniqueName('presence-kill');
  const publics = [uniqueName('wh-kill'), uniqueName('wh-kill'), uniqueName('wh-kill')];
  const alice = await scope.connect(first, { user: { id: 'alice', info: {} } });
  const bob = await scope.connect(first, { user: { id: 'bob', info: {} } });
  for (const channel of [room, ...publics]) await subscribed(alice, channel);
  await subscribed(bob, room);
  await rx.waitForEvents((e) => e.name === 'channel_occupied', 4);
  await rx.waitForEvents((e) => e.name === 'member_added', 2);

  await first.kill9();
  scope.disconnectClients();
  assert.equal(count(rx.events(), (e) => e.name === 'channel_vacated' || e.name === 'member_removed'), 0);

  const second = await scope.server({ targets, settings: { spool_dir: first.spoolDir } });
  const owed = [
    ...[room, ...publics].map((channel) => ({ name: 'channel_vacated', channel })),
    { name: 'member_removed', channel: room, user_id: 'alice' },
    { name: 'member_removed', channel: room, user_id: 'bob' },
  ];
  const isOwed = (e) => e.name === 'channel_vacated' || e.name === 'member_removed';
  await rx.waitForEvents(isOwed, owed.length, 15_000, 'owed events after the restart');
  // A marker after the replay: anything sent twice would arrive before it.
  const marker = uniqueName('wh-kill-marker');
  await subscribed(await scope.connect(second), marker);
  await rx.waitForEvents(named('channel_occupied', marker), 1);
  const key = (e) => JSON.stringify(Object.entries(e).sort());
  const got = rx.events(isOwed).map(key).sort();
  assert.deepEqual(got, owed.map(key).sort(), 'each owed event exactly once');
  assert.deepEqual(rx.problems(), []);
});

test('a receiver answering 500 under a stream of events: the spool bounds the queue, the newest batches are dropped and counted, and it drains once the receiver is back', { ...E2E, ...SLOW }, async () => {
  let healthy = false;
  const rx = await scope.receiver({ respond: () => (healthy ? 200 : 500) });
  const server = await scope.server({
    targets: [{ url: rx.url }],
    settings: { spool_max_bytes: 4096, max_batch_size: 1, batch_window_ms: 1, grace_ms: 0, retry_for_secs: 600 },
  });
  const client = await rawPusher(server.port);
  const EVENTS = 300;
  const channels = Array.from({ length: EVENTS }, () => uniqueName('wh-flood'));
  for (const channel of channels) client.send({ event: 'pusher:subscribe', data: { channel } });
  let m;
  await waitFor(
    async () => {
      m = await metrics(server);
      return m.get('warren_webhooks_pending') + m.get('warren_webhooks_batches_dropped_total{reason="spool_full"}') === EVENTS;
    },
    15_000,
    'every batch either spooled or dropped',
  );
  const kept = m.get('warren_webhooks_pending');
  const dropped = m.get('warren_webhooks_batches_dropped_total{reason="spool_full"}');
  assert.ok(dropped > 0, `dropped ${dropped}`);
  assert.ok(kept > 0 && kept * 60 <= 4096, `${kept} batches kept in a 4096-byte spool`);
  assert.ok(server.log().includes('webhook spool is full'), 'the drop is logged');

  healthy = true;
  await rx.waitForEvents((e) => e.name === 'channel_occupied', kept, 40_000, 'the kept batches once the receiver is back');
  await waitFor(async () => (await metrics(server)).get('warren_webhooks_pending') === 0, 5_000, 'an empty queue');
  // Each kept batch delivered once; the dropped ones never.
  const delivered = rx.events((e) => e.name === 'channel_occupied').map((e) => e.channel);
  assert.equal(new Set(delivered).size, kept, `${kept} distinct channels: ${delivered}`);
  assert.ok(delivered.every((c) => channels.includes(c)));
  client.destroy();
});

test('a webhook header that Warren sets itself is refused at config load, naming the key', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'warren-headers-'));
  try {
    for (const name of ['X-Pusher-Signature', 'x-pusher-key', 'Content-Type']) {
      const config = webhookConfig({
        targets: [{ url: 'http://127.0.0.1:9/a' }, { url: 'http://127.0.0.1:9/b', headers: { 'X-Ok': '1', [name]: 'forged' } }],
        settings: { spool_dir: join(dir, 'spool') },
      });
      const path = join(dir, 'warren.toml');
      await writeFile(path, config);
      const run = spawnSync(SERVER_BIN, ['--config', path, '--check-config'], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(run.status, 2, `${name}: exit status (stdout ${run.stdout}, stderr ${run.stderr})`);
      assert.ok(run.stderr.includes(`apps[0].webhooks[1].headers.${name}`), `${name}: ${run.stderr}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A receiver that records the raw request heads it reads off the socket and answers 200. */
async function rawReceiver() {
  const heads = [];
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffer = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffer.length < end + 4 + length) return;
        heads.push({ head, body: buffer.subarray(end + 4, end + 4 + length).toString('utf8') });
        buffer = buffer.subarray(end + 4 + length);
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { heads, url: `http://127.0.0.1:${server.address().port}/hook`, close: () =>
      new Promise((r) => {
        server.close(r);
        for (const socket of sockets) socket.destroy();
      }),
  };
}

test('on the wire, a webhook request has exactly one Content-Type, X-Pusher-Key and X-Pusher-Signature, plus the configured extras once each', E2E, async () => {
  const rx = await rawReceiver();
  try {
    const extras = { 'X-Custom': 'v', Authorization: 'Bearer t' };
    const server = await scope.server({ targets: [{ url: rx.url, headers: extras }] });
    await subscribed(await scope.connect(server), uniqueName('wh-raw'));
    await waitFor(() => rx.heads.length >= 1, 10_000, 'a webhook request');
    const { head, body } = rx.heads[0];
    const fields = head.split('\r\n').slice(1).map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
    });
    const values = (name) => fields.filter(([n]) => n === name).map(([, v]) => v);
    assert.deepEqual(values('content-type'), ['application/json'], head);
    assert.deepEqual(values('x-pusher-key'), [DEFAULT_APP.key], head);
    const signature = createHmac('sha256', DEFAULT_APP.secret).update(body).digest('hex');
    assert.deepEqual(values('x-pusher-signature'), [signature], head);
    assert.deepEqual(values('x-custom'), ['v'], head);
    assert.deepEqual(values('authorization'), ['Bearer t'], head);
    const pusherHeaders = fields.filter(([n]) => n.startsWith('x-pusher-')).map(([n]) => n);
    assert.deepEqual(pusherHeaders.sort(), ['x-pusher-key', 'x-pusher-signature'], head);
  } finally {
    await rx.close();
  }
});
