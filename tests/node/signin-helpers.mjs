// User sign-in for the Node suite (PROTOCOL.md §2.9): a real HTTP `userAuthentication`
// endpoint that signs with the `pusher` SDK's `authenticateUser`, as an app's backend would,
// and pusher-js clients that sign in through it.

import { createServer } from 'node:http';
import { after, before } from 'node:test';
import Pusher from 'pusher-js';
import PusherRest from 'pusher';
import { DEFAULT_APP, nextOf, serverOptions, waitFor, waitForState } from './helpers.mjs';

/**
 * Starts the user-auth endpoint: POST with `socket_id` and `user` (the id) in the form body, an
 * optional `watchlist` (comma-separated ids) and `bad=1` to sign with a wrong secret. Resolves
 * with `{ url, close() }`.
 */
export async function startUserAuth(app = DEFAULT_APP) {
  const signer = (secret) =>
    new PusherRest({ appId: app.id, key: app.key, secret, host: '127.0.0.1', useTLS: false });
  const good = signer(app.secret);
  const bad = signer('not-the-secret');
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const userData = { id: form.get('user'), user_info: { name: form.get('user') } };
      const watchlist = form.get('watchlist');
      if (watchlist) userData.watchlist = watchlist.split(',');
      const answer = (form.get('bad') === '1' ? bad : good).authenticateUser(form.get('socket_id'), userData);
      res.writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/pusher/user-auth`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** The endpoint for a test file (before/after hooks); `.url` once started. */
export function useUserAuth(app = DEFAULT_APP) {
  const auth = { url: null };
  let endpoint;
  before(async () => {
    endpoint = await startUserAuth(app);
    auth.url = endpoint.url;
  });
  after(async () => endpoint?.close());
  return auth;
}

/**
 * A pusher-js client of the server on `port` that signs in as `user` through `authUrl`, with
 * `watchlist` (ids) and `bad` (a wrong signature). Does not call `signin()`.
 */
export function userClient(port, authUrl, { user, watchlist, bad = false, app = DEFAULT_APP }) {
  const params = { user };
  if (watchlist) params.watchlist = watchlist.join(',');
  if (bad) params.bad = '1';
  return new Pusher(app.key, {
    ...serverOptions(port),
    userAuthentication: { endpoint: authUrl, transport: 'ajax', params },
  });
}

/** Records every raw protocol message named `event` a client gets. */
export function messages(pusher, event) {
  const items = [];
  pusher.connection.bind('message', (m) => {
    if (m.event === event) items.push(m);
  });
  return {
    items,
    atLeast: (n, ms = 5_000) => waitFor(() => items.length >= n, ms, `${n} x ${event} (saw ${items.length})`),
  };
}

/**
 * Connects, signs in and waits until the client is subscribed to its `#server-to-user-` channel
 * (so that `sendToUser` reaches it). Resolves with the client.
 */
export async function signedIn(port, authUrl, options, track = () => {}) {
  const pusher = userClient(port, authUrl, options);
  track(pusher);
  const success = messages(pusher, 'pusher:signin_success');
  const joined = messages(pusher, 'pusher_internal:subscription_succeeded');
  pusher.signin();
  await waitForState(pusher, 'connected');
  await success.atLeast(1);
  await joined.atLeast(1);
  return pusher;
}

/** Waits for the next `watchlist` event `online` or `offline`; resolves `{event, ids}`. */
export async function nextWatchlist(pusher, ms = 5_000) {
  const { event, data } = await nextOf(pusher.user.watchlist, ['online', 'offline'], ms);
  return { event, ids: [...data.user_ids].sort() };
}
