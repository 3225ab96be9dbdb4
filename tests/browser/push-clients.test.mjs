// The push.js clients users of webman/push and workbunny/webman-push-server ship, unchanged, in
// headless Chromium against the warren binary: connect and socket id, a public channel with an
// event from the `pusher` SDK, a private channel through the auth route shape each project
// documents, a presence roster with member_added / member_removed, a client event to the others
// (not echoed), unsubscribe, heartbeat, and reconnection after a server restart.
//
// As those projects show them, channels are subscribed right after `new Push()` (workbunny
// 2.x sends a public channel's subscribe only from its connect handler).
//
// webman/push and workbunny 2.x run against an app with Pusher's shapes (the default);
// workbunny 3.x against an app with `compat = "workbunny"` (its client reads `data` without
// JSON.parse). workbunny's route answers presence `channel_data` as an object, which warren
// verifies against PHP's json_encode of it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_APP, E2E, appsConfig, restClient, sleep, startServer, uniqueName, waitFor } from '../node/helpers.mjs';
import { CLIENTS, frameData, launchBrowser, openClient, startSite, userFor } from './support.mjs';

const APPS = {
  default: { name: 'default', ...DEFAULT_APP },
  compat: { name: 'compat', id: '4', key: 'workbunny-key', secret: 'workbunny-secret' },
};
const CONFIG = appsConfig([
  { id: APPS.default.id, key: APPS.default.key, secret: APPS.default.secret },
  { id: APPS.compat.id, key: APPS.compat.key, secret: APPS.compat.secret, compat: 'workbunny' },
]);

/** Which client runs against which app. */
const RUNS = [
  { label: 'webman/push', client: CLIENTS.webman, app: APPS.default },
  { label: 'workbunny 2.x', client: CLIENTS.workbunny2, app: APPS.default },
  { label: 'workbunny 3.x', client: CLIENTS.workbunny3, app: APPS.compat },
];

let server;
let site;
let browser;
const pages = [];

before(async () => {
  [server, site, browser] = await Promise.all([startServer({ config: CONFIG }), startSite(APPS), launchBrowser()]);
});
after(async () => {
  await Promise.all(pages.splice(0).map((p) => p.close().catch(() => {})));
  await browser?.close();
  await site?.close();
  await server?.stop();
});

async function open(run, opts = {}) {
  const client = await openClient(browser, site, { client: run.client, app: run.app, wsPort: server.port, ...opts });
  pages.push(client);
  return client;
}

async function closeAll() {
  await Promise.all(pages.splice(0).map((p) => p.close()));
}

/** The presence roster a client was sent, as {ids, hash, count}. */
async function roster(client, channel) {
  const [frame] = await client.nextFrames('pusher_internal:subscription_succeeded', channel);
  return frameData(frame).presence;
}

for (const run of RUNS) {
  describe(`${run.label} push.js (app ${run.app.name})`, () => {
    const rest = () => restClient(server.port, run.app);
    after(closeAll);

    test('connects and gets a socket id', E2E, async () => {
      const a = await open(run);
      assert.match(await a.connected(), /^\d+\.\d+$/);
    });

    test('public channel: an event from the pusher SDK arrives', E2E, async () => {
      const channel = uniqueName('public-news');
      const a = await open(run, { subscriptions: { [channel]: ['news'] } });
      await a.connected();
      await a.nextEvents(channel, 'pusher:subscription_succeeded');
      const payload = { text: 'Grüße / 👋' };
      await rest().trigger(channel, 'news', payload);
      const [data] = await a.nextEvents(channel, 'news');
      // The SDK sends data as a string; webman and workbunny 2.x JSON.parse it, workbunny 3.x
      // hands it over as its server did: as the string.
      if (run.client.parsesData) assert.deepEqual(data, payload);
      else assert.deepEqual(JSON.parse(data), payload);
    });

    test('private channel through the auth route', E2E, async () => {
      const channel = uniqueName('private-orders');
      const a = await open(run, { subscriptions: { [channel]: ['shipped'] } });
      const socketId = await a.connected();
      await a.nextEvents(channel, 'pusher:subscription_succeeded');
      assert.deepEqual(site.authRequests.find((r) => r.channel === channel), { socketId, channel });
      await rest().trigger(channel, 'shipped', { id: 7 });
      assert.equal((await a.nextEvents(channel, 'shipped')).length, 1);
    });

    test('presence: roster, member_added and member_removed', E2E, async () => {
      const channel = uniqueName('presence-room');
      const a = await open(run, { user: 'alice', subscriptions: { [channel]: [] } });
      await a.connected();
      await a.nextEvents(channel, 'pusher:subscription_succeeded');
      assert.deepEqual((await roster(a, channel)).ids, ['alice']);

      const b = await open(run, { user: 'bob', subscriptions: { [channel]: [] } });
      const seenByB = await roster(b, channel);
      assert.deepEqual([...seenByB.ids].sort(), ['alice', 'bob']);
      // user_info has non-ASCII text and slashes: what the route signed is PHP's json_encode.
      assert.deepEqual(seenByB.hash.alice, userFor('alice').user_info);
      const [added] = await a.nextFrames('pusher_internal:member_added', channel);
      assert.deepEqual(frameData(added), userFor('bob'));
      const { users } = await (await rest().get({ path: `/channels/${channel}/users` })).json();
      assert.deepEqual(users.map((u) => u.id).sort(), ['alice', 'bob']);

      await b.unsubscribe(channel);
      const [removed] = await a.nextFrames('pusher_internal:member_removed', channel);
      assert.deepEqual(frameData(removed), { user_id: 'bob' });
    });

    test('a client event reaches the others and is not echoed', E2E, async () => {
      const channel = uniqueName('private-chat');
      const subscriptions = { [channel]: ['client-ping', 'client-pong'] };
      const [a, b] = [await open(run, { user: 'a', subscriptions }), await open(run, { user: 'b', subscriptions })];
      for (const c of [a, b]) {
        await c.nextEvents(channel, 'pusher:subscription_succeeded');
      }
      const payload = { n: 1, text: 'é/ü' };
      await a.trigger(channel, 'client-ping', payload);
      const [data] = await b.nextEvents(channel, 'client-ping');
      // Pusher's shape (a string) is parsed by webman and workbunny 2.x; the compat app relays
      // the object, which is what workbunny 3.x expects.
      assert.deepEqual(data, payload);
      await b.trigger(channel, 'client-pong', { n: 2 });
      await a.nextEvents(channel, 'client-pong');
      // The reply came after the ping: had the ping been echoed, it would be here by now.
      assert.deepEqual(await a.events(channel, 'client-ping'), []);
      assert.deepEqual(await b.events(channel, 'client-pong'), []);
    });

    test('unsubscribe: the channel is left and its events stop', E2E, async () => {
      const [gone, kept] = [uniqueName('public-gone'), uniqueName('public-kept')];
      const a = await open(run, { subscriptions: { [gone]: ['tick'], [kept]: ['tick'] } });
      for (const channel of [gone, kept]) await a.nextEvents(channel, 'pusher:subscription_succeeded');
      await a.unsubscribe(gone);
      const occupied = async () => (await (await rest().get({ path: `/channels/${gone}` })).json()).occupied;
      await waitFor(async () => !(await occupied()), 5_000, `${gone} vacated`);
      await rest().trigger(gone, 'tick', {});
      await rest().trigger(kept, 'tick', {});
      await a.nextEvents(kept, 'tick');
      assert.deepEqual(await a.events(gone, 'tick'), []);
    });

    test('heartbeat: pings are answered and the connection stays', E2E, async () => {
      const a = await open(run, { options: { heartbeat: 200, pingTimeout: 2_000 } });
      const socketId = await a.connected();
      await a.nextFrames('pusher:pong', undefined, 3);
      assert.equal(await a.socketId(), socketId);
      assert.equal(await a.page.evaluate(() => window.__sockets), 1);
    });

    test('reconnects after a server restart and subscribes again', E2E, async () => {
      const own = await startServer({ config: CONFIG });
      try {
        const [pub, priv] = [uniqueName('public-r'), uniqueName('private-r')];
        const subscriptions = { [pub]: ['after'], [priv]: ['after'] };
        const a = await openClient(browser, site, { client: run.client, app: run.app, wsPort: own.port, subscriptions });
        pages.push(a);
        const before = await a.connected();
        for (const channel of [pub, priv]) await a.nextEvents(channel, 'pusher:subscription_succeeded');
        await own.stop();
        await waitFor(async () => (await a.state()) !== 'connected', 5_000, 'the client noticing the stop');
        const again = await startServer({ config: CONFIG, port: own.port });
        Object.assign(own, { stop: again.stop });
        const after = await a.connected(10_000);
        assert.notEqual(after, before);
        // push.js subscribes every channel again (the private one through the auth route again).
        for (const channel of [pub, priv]) await a.nextEvents(channel, 'pusher:subscription_succeeded', 2, 5_000);
        const sdk = restClient(own.port, run.app);
        for (const channel of [pub, priv]) await sdk.trigger(channel, 'after', { ok: true });
        for (const channel of [pub, priv]) await a.nextEvents(channel, 'after');
      } finally {
        await own.stop();
      }
    });
  });
}

describe('why the compat setting exists', () => {
  after(closeAll);

  test('workbunny 3.x on an app with Pusher shapes gets no socket id', E2E, async () => {
    const a = await open({ client: CLIENTS.workbunny3, app: APPS.default });
    await waitFor(async () => (await a.state()) === 'connected', 5_000, 'connected');
    await sleep(100);
    assert.equal(await a.socketId(), null);
  });

  test('webman/push on the compat app cannot read the object data', E2E, async () => {
    const a = await open({ client: CLIENTS.webman, app: APPS.compat });
    await a.nextFrames('pusher:connection_established');
    await sleep(100);
    assert.equal(await a.socketId(), null);
  });
});
