// Helpers for the browser suite: headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), a tiny site the test serves itself (the page that loads a push.js copy from
// tests/browser/clients/, and an auth route in the shape webman/push or workbunny document), and
// a page-side view of what a push.js client saw.

import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT, waitFor } from '../node/helpers.mjs';

/** Chromium (Debian's package; override with CHROMIUM). */
export const CHROMIUM_BIN = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CLIENTS_DIR = resolve(REPO_ROOT, 'tests', 'browser', 'clients');

/**
 * The three push.js copies. `route` is the auth route shape that project documents;
 * `parsesData` whether the client JSON.parse's a frame's `data` (webman, workbunny 2.x) or hands
 * it over as it arrived (workbunny 3.x).
 */
export const CLIENTS = Object.freeze({
  webman: { file: 'push-webman-bad36ce.js', route: 'webman', parsesData: true },
  workbunny2: { file: 'push-workbunny-3517eba.js', route: 'workbunny', parsesData: true },
  workbunny3: { file: 'push-workbunny-952fafd.js', route: 'workbunny', parsesData: false },
});

/** Starts Chromium with a fresh profile; `close()` stops it and removes the profile. */
export async function launchBrowser() {
  const profile = await mkdtemp(join(tmpdir(), 'warren-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- PHP's json_encode

/**
 * PHP's `json_encode` with its default flags, for the values an auth route signs: what
 * JSON.stringify writes, with `/` escaped as `\/` and every non-ASCII UTF-16 unit as `\uXXXX`
 * (lower-case hex), as PHP does.
 */
export function phpJsonEncode(value) {
  return JSON.stringify(value)
    .replace(/\//g, '\\/')
    .replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const hmacHex = (secret, text) => createHmac('sha256', secret).update(text).digest('hex');

/** The user a test's auth route signs in as: `user_info` has non-ASCII text and slashes. */
export const userFor = (id) => ({ user_id: id, user_info: { name: `Zoë 🐇 ${id}`, avatar: `https://example.test/u/${id}.png` } });

/**
 * The auth route's answer, in the shape each project's sample route gives:
 * - webman: webman/push's route calls `$pusher->socketAuth()` / `presenceAuth()` (the
 *   pusher-php-server API): `channel_data` is the JSON string it signed (PHP's json_encode).
 * - workbunny: its sample route signs `json_encode($channelData)` and answers the array itself,
 *   so `channel_data` arrives as a JSON object.
 */
function authAnswer(style, app, socketId, channel, userId) {
  if (!channel.startsWith('presence-')) {
    return phpJsonEncode({ auth: `${app.key}:${hmacHex(app.secret, `${socketId}:${channel}`)}` });
  }
  const channelData = userFor(userId);
  const signed = phpJsonEncode(channelData);
  const auth = `${app.key}:${hmacHex(app.secret, `${socketId}:${channel}:${signed}`)}`;
  return style === 'workbunny'
    ? phpJsonEncode({ channel_data: channelData, auth })
    : phpJsonEncode({ auth, channel_data: signed });
}

// ---------------------------------------------------------------- the site

/**
 * Serves `/page/<client file>` (a page that loads that push.js), `/clients/<file>`, and
 * `POST /auth?style=webman|workbunny&app=<name>&user=<id>` for the apps in `apps` (name →
 * {key, secret}). Every auth request is kept in `authRequests` ({socketId, channel}).
 */
export async function startSite(apps) {
  const authRequests = [];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const send = (status, type, body) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    try {
      if (req.method === 'GET' && url.pathname.startsWith('/page/')) {
        const file = url.pathname.slice('/page/'.length);
        return send(200, 'text/html', `<!doctype html><meta charset="utf-8"><title>${file}</title><script src="/clients/${file}"></script>`);
      }
      if (req.method === 'GET' && url.pathname.startsWith('/clients/')) {
        const file = url.pathname.slice('/clients/'.length);
        if (!Object.values(CLIENTS).some((c) => c.file === file)) return send(404, 'text/plain', 'no such client');
        return send(200, 'application/javascript', await readFile(join(CLIENTS_DIR, file)));
      }
      if (req.method === 'POST' && url.pathname === '/auth') {
        let body = '';
        for await (const chunk of req) body += chunk;
        const form = new URLSearchParams(body);
        const socketId = form.get('socket_id');
        const channel = form.get('channel_name');
        authRequests.push({ socketId, channel });
        const app = apps[url.searchParams.get('app')];
        if (!app || !channel) return send(400, 'application/json', '{"error":"Required channel_name"}');
        if (!/^\d+\.\d+$/.test(socketId ?? '')) return send(400, 'application/json', '{"error":"Required socket_id"}');
        const answer = authAnswer(url.searchParams.get('style'), app, socketId, channel, url.searchParams.get('user'));
        return send(200, 'application/json', answer);
      }
      send(404, 'text/plain', 'not found');
    } catch (e) {
      send(500, 'text/plain', String(e));
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    authRequests,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------- a client in a page

/**
 * Runs before push.js in every page: records every frame the page's WebSockets receive
 * (`__frames`, decoded) and every connection opened (`__sockets`), so that tests can see what
 * push.js does not expose (presence rosters, member events, pongs). push.js itself is untouched.
 */
function recorder() {
  window.__frames = [];
  window.__sockets = 0;
  window.__events = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets += 1;
      this.addEventListener('message', (e) => {
        try {
          window.__frames.push(JSON.parse(e.data));
        } catch {
          window.__frames.push({ unparsable: e.data });
        }
      });
    }
  };
  /** Subscribe (once) and record `events` on the channel as {channel, event, data}. */
  window.__subscribe = (name, events) => {
    const channel = window.push.channels[name] ?? window.push.subscribe(name);
    for (const event of ['pusher:subscription_succeeded', ...events]) {
      channel.on(event, (data) => window.__events.push({ channel: name, event, data }));
    }
  };
}

/**
 * Opens a page with `client` (an entry of CLIENTS) connected to warren on `wsPort` as `user`
 * of `app` ({name, key}); `options` are more `new Push()` options (heartbeat…). `subscriptions`
 * (channel → event names to record) are subscribed right after `new Push()`, in the same turn,
 * as the projects show it (workbunny 2.x sends a public channel's subscribe only from its
 * connect handler, so a later subscribe to a public channel would never be sent). Returns a
 * handle with small waits on what the page saw.
 */
export async function openClient(browser, site, { client, app, wsPort, user = '1', options = {}, subscriptions = {} }) {
  const page = await browser.context.newPage();
  await page.addInitScript(recorder);
  await page.goto(`${site.url}/page/${client.file}`);
  const auth = `${site.url}/auth?style=${client.route}&app=${app.name}&user=${encodeURIComponent(user)}`;
  await page.evaluate(
    ({ url, appKey, auth, options, subscriptions }) => {
      window.push = new window.Push({ url, app_key: appKey, auth, ...options });
      for (const [channel, events] of Object.entries(subscriptions)) window.__subscribe(channel, events);
    },
    { url: `ws://127.0.0.1:${wsPort}`, appKey: app.key, auth, options, subscriptions },
  );
  const evaluate = (fn, arg) => page.evaluate(fn, arg);
  const handle = {
    page,
    socketId: () => evaluate(() => window.push.connection.socket_id ?? null),
    state: () => evaluate(() => window.push.connection.state),
    frames: (event, channel) =>
      evaluate(([e, c]) => window.__frames.filter((f) => f.event === e && (c === undefined || f.channel === c)), [event, channel]),
    events: (channel, event) =>
      evaluate(([c, e]) => window.__events.filter((x) => x.channel === c && x.event === e).map((x) => x.data), [channel, event]),
    /** Resolves with the socket id once push.js says it is connected and has one. */
    connected: (ms = 5_000) =>
      waitFor(
        async () => ((await handle.state()) === 'connected' ? handle.socketId() : null),
        ms,
        `${client.file} connected with a socket id (state ${page.isClosed() ? 'closed' : 'pending'})`,
      ),
    subscribe: (channel, events = []) => evaluate(([c, e]) => window.__subscribe(c, e), [channel, events]),
    unsubscribe: (channel) => evaluate((c) => window.push.unsubscribe(c), channel),
    trigger: (channel, event, data) =>
      evaluate(([c, e, d]) => window.push.channels[c].trigger(e, d), [channel, event, data]),
    /** Waits for at least `n` `event`s on `channel` (as push.js emitted them); resolves with their data. */
    async nextEvents(channel, event, n = 1, ms = 5_000) {
      return waitFor(async () => {
        const seen = await handle.events(channel, event);
        return seen.length >= n ? seen : null;
      }, ms, `${n} x ${event} on ${channel} in ${client.file}`);
    },
    /** Waits for at least `n` frames named `event` (on `channel`); resolves with them. */
    async nextFrames(event, channel, n = 1, ms = 5_000) {
      return waitFor(async () => {
        const seen = await handle.frames(event, channel);
        return seen.length >= n ? seen : null;
      }, ms, `${n} x ${event} frame${channel ? ` on ${channel}` : ''} in ${client.file}`);
    },
    close: () => page.close(),
  };
  return handle;
}

/** A frame's `data` as an object, whether it came as a JSON-encoded string or as an object. */
export const frameData = (frame) => (typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data);
