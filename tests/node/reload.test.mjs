// Live reload: SIGHUP re-reads the configuration. An app is added and used, another app's
// secret changes (old signatures refused, new accepted), an app is removed (its sockets closed
// with 4001), an invalid file is refused (the running configuration stays) — while a client of
// an untouched app keeps receiving on the same connection, never reconnecting.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, test } from 'node:test';
import {
  E2E,
  appsConfig,
  createClient,
  errorCode,
  nextOf,
  restClient,
  startServer,
  subscribed,
  uniqueName,
  waitFor,
  waitForState,
} from './helpers.mjs';

const STEADY = { id: '1', key: 'app-key', secret: 'app-secret' };
const ROTATED = { id: '2', key: 'rotated-key', secret: 'old-secret' };
const DOOMED = { id: '3', key: 'doomed-key', secret: 's3' };
const ADDED = { id: '4', key: 'added-key', secret: 's4' };

const clients = [];
let server;
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

function client(app) {
  const pusher = createClient(server.port, { app });
  clients.push(pusher);
  return pusher;
}

async function reload(apps) {
  await writeFile(server.configPath, appsConfig(apps));
  server.signal('SIGHUP');
}

test('SIGHUP adds, changes and removes apps without touching the others', E2E, async () => {
  server = await startServer({ config: appsConfig([STEADY, ROTATED, DOOMED]) });
  const steady = client(STEADY);
  await waitForState(steady, 'connected');
  const steadyId = steady.connection.socket_id;
  const channel = uniqueName('reload');
  const received = [];
  (await subscribed(steady, channel)).bind('tick', (d) => received.push(d.n));
  let reconnects = 0;
  steady.connection.bind('state_change', ({ current }) => current === 'connecting' && reconnects++);
  const doomed = client(DOOMED);
  await waitForState(doomed, 'connected');
  const doomedError = nextOf(doomed.connection, ['error'], 10_000);
  let n = 0;
  const tick = async () => {
    const res = await restClient(server.port, STEADY).trigger(channel, 'tick', { n: ++n });
    assert.equal(res.status, 200);
  };
  await tick();

  await reload([STEADY, { ...ROTATED, secret: 'new-secret' }, ADDED]);

  // The removed app's socket is closed with 4001 (pusher-js reports the refusal).
  const { data } = await doomedError;
  assert.equal(errorCode(data), 4001);
  await waitForState(doomed, ['disconnected', 'failed'], 5_000);
  // The changed app: old secret refused, new one accepted (wait for the shards to apply it).
  await waitFor(
    async () => {
      const res = await restClient(server.port, ROTATED).trigger('c', 'e', {}).catch((e) => e);
      return res.status === 401;
    },
    5_000,
    'old secret refused',
  );
  const fresh = await restClient(server.port, { ...ROTATED, secret: 'new-secret' }).trigger('c', 'e', {});
  assert.equal(fresh.status, 200);
  // The added app accepts connections and subscriptions.
  const added = client(ADDED);
  await subscribed(added, uniqueName('added'));

  // A broken file is refused; everything keeps working.
  await writeFile(server.configPath, 'apps = [');
  server.signal('SIGHUP');
  await waitFor(() => server.log().includes('configuration reload refused'), 5_000, 'refusal logged');
  await tick();
  await tick();
  await waitFor(() => received.length === 3, 5_000, 'every tick received');
  assert.deepEqual(received, [1, 2, 3]);
  assert.equal(steady.connection.socket_id, steadyId, 'same connection');
  assert.equal(reconnects, 0, 'never reconnected');
  assert.equal(steady.connection.state, 'connected');
});
