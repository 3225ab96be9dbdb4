// The debug console in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright's
// playwright-core): refused without the admin token (401, the page never served), served with
// it; it shows a pusher-js connection (connections per shard, the channel with its subscriber
// count and presence members), an HTTP API publish, a client event, the subscribes and a webhook
// that failed once and was then sent (a real receiver answering 500, then 200) in its event log, filters the log, and its form sends a test event that the pusher-js client
// receives. Saves a screenshot as docs/console.png.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  DEFAULT_APP,
  REPO_ROOT,
  createClient,
  freePort,
  nextOf,
  restClient,
  startServer,
  startWebhookReceiver,
  subscribed,
  tomlValue,
} from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'console-test-token-0123456789';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let server;
let receiver;
let spoolDir;
let consolePort;
let browser;
let profileDir;
const clients = [];

before(async () => {
  consolePort = await freePort();
  let answered = 0;
  receiver = await startWebhookReceiver({ respond: () => (answered++ === 0 ? 500 : 200) });
  spoolDir = await mkdtemp(join(tmpdir(), 'warren-console-spool-'));
  server = await startServer({
    config: `
[webhooks]
spool_dir = ${tomlValue(spoolDir)}
batch_window_ms = 10

[[apps]]
id = "${DEFAULT_APP.id}"
key = "${DEFAULT_APP.key}"
secret = "${DEFAULT_APP.secret}"
webhooks = ${tomlValue([{ url: receiver.url, events: ['channel_occupied'] }])}

[console]
enabled = true
token = "${TOKEN}"
bind = "127.0.0.1"
port = ${consolePort}
`,
  });
  profileDir = await mkdtemp(join(tmpdir(), 'warren-console-chromium-'));
  browser = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await browser?.close();
  await server?.stop();
  await receiver?.close();
  if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
});

const consoleUrl = (path, token) => `http://127.0.0.1:${consolePort}${path}${token ? `?token=${encodeURIComponent(token)}` : ''}`;

test('without the admin token every console path is 401 and the page is not served', { timeout: 30_000 }, async () => {
  const page = await browser.newPage();
  for (const [path, token] of [['/console'], ['/console', 'wrong-token-0123456789'], ['/console/events'], ['/console/state']]) {
    const response = await page.goto(consoleUrl(path, token));
    assert.equal(response.status(), 401, `${path} with ${token ?? 'no token'}`);
    const text = await page.textContent('body');
    assert.match(text, /^401: the console needs its admin token/);
    assert.doesNotMatch(await page.content(), /Warren debug console/);
  }
  const post = await fetch(consoleUrl('/console/trigger'), { method: 'POST', body: '{}' });
  assert.equal(post.status, 401);
  await page.close();
});

test('with the token the page shows a connection, its channel and members, and the events a test produces', { timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  const response = await page.goto(consoleUrl('/console', TOKEN));
  assert.equal(response.status(), 200);
  await page.waitForSelector('#status:has-text("live")');

  // A pusher-js client on a public and a presence channel; another member on the presence one.
  const client = createClient(server.port, { user: { id: 'ada', info: { name: 'Ada' } } });
  const other = createClient(server.port, { user: { id: 'bob', info: { name: 'Bob' } } });
  clients.push(client, other);
  await subscribed(client, 'console-demo');
  await subscribed(client, 'presence-console-room');
  await subscribed(other, 'presence-console-room');
  await subscribed(other, 'private-console-chat');
  await subscribed(client, 'private-console-chat');

  // Connections per shard add up to the two clients.
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#shards tbody tr td.num')].reduce((n, td) => n + Number(td.textContent), 0) === 2,
  );
  await page.waitForSelector('#channels td:has-text("console-demo")');
  await page.waitForSelector('#channels td:has-text("presence-console-room (members: ada, bob)")');

  // An HTTP API publish and a client event appear in the log.
  await restClient(server.port).trigger('console-demo', 'order-shipped', { order: 42 });
  const whisper = nextOf(other.channel('private-console-chat'), ['client-typing']);
  client.channel('private-console-chat').trigger('client-typing', { name: 'Ada' });
  await whisper;
  await page.waitForSelector('#log tr:has(.kind.api_publish):has-text("order-shipped")');
  await page.waitForSelector('#log tr:has(.kind.client_event):has-text("client-typing")');
  await page.waitForSelector('#log tr:has(.kind.subscribe):has-text("presence-console-room")');
  // channel_occupied for console-demo: refused once by the receiver (500), then delivered.
  await page.waitForSelector('#log tr:has(.kind.webhook_failed):has-text("channel_occupied"):has-text("HTTP 500")', { timeout: 15_000 });
  await page.waitForSelector('#log tr:has(.kind.webhook_sent):has-text("channel_occupied"):has-text("delivered")', { timeout: 15_000 });

  // Filters: by event name, then by kind.
  await page.fill('#filter-event', 'order-shipped');
  await page.waitForFunction(() => document.querySelectorAll('#log tbody tr').length === 1);
  await page.fill('#filter-event', '');
  await page.selectOption('#filter-kind', 'client_event');
  await page.waitForFunction(() => [...document.querySelectorAll('#log tbody tr .kind')].every((k) => k.textContent === 'client_event'));
  await page.selectOption('#filter-kind', '');

  // An unsubscribe, and a closed connection leaving its channels.
  other.unsubscribe('private-console-chat');
  await page.waitForSelector('#log tr:has(.kind.unsubscribe):has-text("private-console-chat")');
  other.disconnect();
  await page.waitForSelector('#log tr:has(.kind.unsubscribe):has-text("presence-console-room"):has-text("connection closed")');
  await page.waitForSelector('#channels td:has-text("presence-console-room (members: ada)")');

  // The form sends a test event through the signed API; the pusher-js client receives it.
  const received = nextOf(client.channel('console-demo'), ['from-the-console']);
  await page.selectOption('#send-app', DEFAULT_APP.id);
  await page.fill('#send-channel', 'console-demo');
  await page.fill('#send-event', 'from-the-console');
  await page.fill('#send-data', '{"hello":"browser"}');
  await page.click('#send-button');
  const { data } = await received;
  assert.deepEqual(data, { hello: 'browser' });
  await page.waitForSelector('#send-result:has-text("sent (HTTP API 200)")');
  await page.waitForSelector('#log tr:has(.kind.api_publish):has-text("from-the-console")');

  await page.screenshot({ path: join(REPO_ROOT, 'docs', 'console.png'), fullPage: true });
  await page.close();
});

test('bad console requests get a clear status and change nothing', { timeout: 30_000 }, async () => {
  const auth = { Authorization: `Bearer ${TOKEN}` };
  const post = (body) => fetch(consoleUrl('/console/trigger'), { method: 'POST', headers: auth, body });
  let res = await post('not json');
  assert.equal(res.status, 400);
  assert.match((await res.json()).error, /expected/);
  res = await post(JSON.stringify({ app: '99', channel: 'c', event: 'e', data: '{}' }));
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { error: 'no such app' });
  res = await post(JSON.stringify({ app: DEFAULT_APP.id, channel: 'bad channel name!', event: 'e', data: '{}' }));
  assert.equal(res.status, 400, 'the HTTP API refuses the channel name; the console passes its answer on');
  assert.equal((await res.json()).api_status, 400);
  res = await post('x'.repeat(70 * 1024));
  assert.equal(res.status, 413);
  res = await fetch(consoleUrl('/console/nothing'), { headers: auth });
  assert.equal(res.status, 404);
  res = await fetch(consoleUrl('/console/trigger'), { headers: auth });
  assert.equal(res.status, 405);
  // The server is still fine.
  res = await fetch(consoleUrl('/console/state'), { headers: auth });
  assert.equal(res.status, 200);
  assert.ok(Array.isArray((await res.json()).shards));
});
