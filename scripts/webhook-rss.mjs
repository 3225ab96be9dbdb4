#!/usr/bin/env node
// Measures warren's resident memory while one webhook receiver answers 500 to everything and a
// raw client makes ~1,000 webhook events a second (subscribe + unsubscribe of fresh channels,
// grace_ms 0): RSS at the start and after SECONDS (default 30), and the webhook metrics.
// Issue 12 item 3; a measurement, not a test. Usage:
//   node scripts/webhook-rss.mjs [SECONDS]            (WARREN_BIN=... for another binary)
//   SPOOL_MAX_BYTES=65536 node scripts/webhook-rss.mjs  (a small spool, to see drops counted)

import { readFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, startWebhookReceiver, webhookConfig } from '../tests/node/helpers.mjs';
import { rawPusher } from '../tests/node/raw-ws.mjs';

const seconds = Number(process.argv[2] ?? 30);
const rssKib = async (pid) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const receiver = await startWebhookReceiver({ respond: () => 500 });
const spool = await mkdtemp(join(tmpdir(), 'warren-rss-spool-'));
const settings = { grace_ms: 0, retry_for_secs: 3600, spool_dir: spool };
if (process.env.SPOOL_MAX_BYTES) settings.spool_max_bytes = Number(process.env.SPOOL_MAX_BYTES);
const server = await startServer({ config: webhookConfig({ targets: [{ url: receiver.url }], settings }) });
const client = await rawPusher(server.port);
let n = 0;
let events = 0;
const timer = setInterval(() => {
  for (let i = 0; i < 5; i++) {
    const channel = `rss-${++n}`;
    client.send({ event: 'pusher:subscribe', data: { channel } });
    client.send({ event: 'pusher:unsubscribe', data: { channel } });
    events += 2;
  }
}, 10);
await sleep(1000);
const before = await rssKib(server.pid);
const eventsBefore = events;
await sleep(seconds * 1000);
const after = await rssKib(server.pid);
const rate = Math.round((events - eventsBefore) / seconds);
clearInterval(timer);
const metrics = (await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text())
  .split('\n')
  .filter((l) => l.startsWith('warren_webhooks_'))
  .join('\n');
console.log(`RSS ${(before / 1024).toFixed(1)} MiB -> ${(after / 1024).toFixed(1)} MiB in ${seconds} s (+${((after - before) / 1024).toFixed(1)} MiB) at ${rate} events/s sent, receiver failing`);
console.log(metrics);
client.destroy();
await server.kill9();
await receiver.close();
await rm(spool, { recursive: true, force: true });
process.exit(0);
