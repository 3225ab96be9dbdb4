// Laravel Echo 2.x (with pusher-js, the `pusher` broadcaster) against Warren, with the options of
// docs/laravel.md. A small HTTP server plays Laravel's `POST /broadcasting/auth` route: it reads
// the form body (`socket_id`, `channel_name`) as Laravel does, identifies the user by the bearer
// token Echo sends, applies channel rules like routes/channels.php, and signs with the `pusher`
// SDK (as Laravel's PusherBroadcaster does with the PHP SDK). The backend side publishes as
// Laravel does: the event's class name (`App\Events\...`) as the event name, public properties as
// the data.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { DEFAULT_APP, E2E, restClient, startServer, waitFor } from './helpers.mjs';

/** Users by bearer token (Laravel's auth guard). */
const USERS = {
  'token-ada': { id: 1, name: 'Ada' },
  'token-bob': { id: 2, name: 'Bob' },
};

/** routes/channels.php: what a user may join; presence rules return the member's info. */
function channelRule(user, channelName) {
  let m = /^private-orders\.(\d+)$/.exec(channelName);
  if (m) return Number(m[1]) === user.id;
  if (/^private-chat\.\d+$/.test(channelName)) return true;
  m = /^presence-room\.(\d+)$/.exec(channelName);
  if (m) return { id: user.id, name: user.name };
  return false;
}

let warren;
let auth;
let authUrl;
const authRequests = [];
const echos = [];

/** Starts the stand-in for Laravel's /broadcasting/auth route. */
async function startAuthRoute() {
  const sdk = restClient(warren.port);
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const form = new URLSearchParams(body);
    authRequests.push({ path: req.url, headers: req.headers, form: Object.fromEntries(form) });
    const user = USERS[(req.headers.authorization ?? '').replace(/^Bearer /, '')];
    const channelName = form.get('channel_name');
    const rule = user && req.url === '/broadcasting/auth' ? channelRule(user, channelName) : false;
    if (!rule) {
      res.writeHead(403, { 'Content-Type': 'application/json' }).end('{"message":"This action is unauthorized."}');
      return;
    }
    const presence = typeof rule === 'object' ? { user_id: String(rule.id), user_info: rule } : undefined;
    const answer = sdk.authorizeChannel(form.get('socket_id'), channelName, presence);
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(answer));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** An Echo instance configured as docs/laravel.md says (host, port, scheme from the .env). */
function echoFor(token) {
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key: DEFAULT_APP.key,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: warren.port,
    wssPort: warren.port,
    forceTLS: false,
    enabledTransports: ['ws', 'wss'],
    disableStats: true,
    authEndpoint: authUrl,
    // A fresh headers object per instance: Echo's `bearerToken` option writes into its shared
    // default `auth.headers`, so several Echo instances in one process (not a browser's case)
    // would all send the last one's token.
    auth: { headers: { Authorization: `Bearer ${token}` } },
  });
  echos.push(echo);
  return echo;
}

/** Resolves once the Echo channel's subscription succeeded; rejects on its error callback. */
function subscribedEcho(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribed(resolve);
    channel.error((e) => reject(new Error(`subscription failed: ${JSON.stringify(e)}`)));
  });
}

/** Resolves with the first payload a listener gets (or rejects after `ms`). */
function first(register, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms);
    register((payload) => {
      clearTimeout(timer);
      resolve(payload);
    });
  });
}

before(async () => {
  warren = await startServer();
  auth = await startAuthRoute();
  authUrl = `http://127.0.0.1:${auth.address().port}/broadcasting/auth`;
});

after(async () => {
  for (const echo of echos) echo.disconnect();
  auth?.close();
  await warren?.stop();
});

test('a public channel: Echo.channel(...).listen gets an event Laravel broadcasts', E2E, async () => {
  const echo = echoFor('token-ada');
  const channel = echo.channel('orders');
  await subscribedEcho(channel);
  const got = first((cb) => channel.listen('OrderShipped', cb));
  // Laravel broadcasts `new OrderShipped($order)` under its class name.
  await restClient(warren.port).trigger('orders', 'App\\Events\\OrderShipped', { order: { id: 7 } });
  assert.deepEqual(await got, { order: { id: 7 } });
  // broadcastAs('order.shipped'): Echo listens with a leading dot.
  const custom = first((cb) => channel.listen('.order.shipped', cb));
  await restClient(warren.port).trigger('orders', 'order.shipped', { order: { id: 8 } });
  assert.deepEqual(await custom, { order: { id: 8 } });
});

test('a private channel: Echo.private(...) authorizes at /broadcasting/auth and listens', E2E, async () => {
  const echo = echoFor('token-ada');
  const channel = echo.private('orders.1');
  await subscribedEcho(channel);
  const request = authRequests.findLast((r) => r.form.channel_name === 'private-orders.1');
  assert.equal(request.headers.authorization, 'Bearer token-ada');
  assert.equal(request.form.socket_id, echo.socketId());
  const got = first((cb) => channel.listen('OrderShipped', cb));
  await restClient(warren.port).trigger('private-orders.1', 'App\\Events\\OrderShipped', { order: { id: 1 } });
  assert.deepEqual(await got, { order: { id: 1 } });
});

test("a private channel the route refuses (someone else's orders) fails with the route's 403", E2E, async () => {
  const echo = echoFor('token-bob');
  await assert.rejects(subscribedEcho(echo.private('orders.1')), /subscription failed.*403/);
});

test('whisper: a client event on a private channel reaches the other user, not the sender', E2E, async () => {
  const [ada, bob] = [echoFor('token-ada'), echoFor('token-bob')];
  const [adaChat, bobChat] = [ada.private('chat.5'), bob.private('chat.5')];
  await Promise.all([subscribedEcho(adaChat), subscribedEcho(bobChat)]);
  const echoedToSender = [];
  adaChat.listenForWhisper('typing', (e) => echoedToSender.push(e));
  const got = first((cb) => bobChat.listenForWhisper('typing', cb));
  adaChat.whisper('typing', { name: 'Ada' });
  assert.deepEqual(await got, { name: 'Ada' });
  assert.deepEqual(echoedToSender, []);
});

test('a presence channel: Echo.join(...).here/joining/leaving with the members the route returned', E2E, async () => {
  const [ada, bob] = [echoFor('token-ada'), echoFor('token-bob')];
  const adaRoom = ada.join('room.9');
  const here = await first((cb) => adaRoom.here(cb));
  assert.deepEqual(here, [{ id: 1, name: 'Ada' }]);
  const joining = first((cb) => adaRoom.joining(cb));
  const bobRoom = bob.join('room.9');
  const bobHere = await first((cb) => bobRoom.here(cb));
  assert.deepEqual(
    bobHere.map((m) => m.name).sort(),
    ['Ada', 'Bob'],
  );
  assert.deepEqual(await joining, { id: 2, name: 'Bob' });
  const leaving = first((cb) => adaRoom.leaving(cb));
  bob.leave('room.9');
  assert.deepEqual(await leaving, { id: 2, name: 'Bob' });
  await waitFor(async () => {
    const res = await restClient(warren.port).get({ path: '/channels/presence-room.9/users' });
    return (await res.json()).users.length === 1;
  }, 5_000, 'the HTTP API to list one member');
});
