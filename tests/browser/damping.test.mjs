// A push.js tab with an unknown app key reconnects at once after every close (it resets its
// back-off whenever a socket opens and ignores close codes): ~70 sockets a second against an
// undamped server. With damping the refusal is held on the open socket, so the tab opens a
// handful of sockets instead, and the refusals are counted in /metrics.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { E2E, sleep, startServer } from '../node/helpers.mjs';
import { CLIENTS, launchBrowser, openClient, startSite } from './support.mjs';

let browser;
let site;
before(async () => {
  [browser, site] = await Promise.all([launchBrowser(), startSite({})]);
});
after(async () => {
  await browser?.close();
  await site?.close();
});

/** Sockets one looping tab opens in `ms` against `server`. */
async function socketsOpened(server, ms) {
  const tab = await openClient(browser, site, {
    client: CLIENTS.webman,
    app: { name: 'none', key: 'no-such-key' },
    wsPort: server.port,
  });
  try {
    await sleep(ms);
    return await tab.page.evaluate(() => window.__sockets);
  } finally {
    await tab.close();
  }
}

async function metricsText(server) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  return res.text();
}

test('a looping push.js tab is slowed to a few sockets, and counted', E2E, async () => {
  const damped = await startServer({
    shards: 1,
    env: {
      WARREN_DAMPING__REFUSAL_DELAY_MS: '1000',
      WARREN_DAMPING__REPEAT_AFTER: '2',
      WARREN_DAMPING__REPEAT_DELAY_MS: '1000',
    },
  });
  const undamped = await startServer({ shards: 1 });
  try {
    const withDamping = await socketsOpened(damped, 3_000);
    const without = await socketsOpened(undamped, 3_000);
    // Held 1 s each: at most one socket per second (plus the one open at the end).
    assert.ok(withDamping <= 4, `${withDamping} sockets in 3 s with damping`);
    assert.ok(without > 10 * withDamping, `${without} sockets in 3 s without damping vs ${withDamping} with`);
    const text = await metricsText(damped);
    assert.match(text, /warren_refusals_total\{code="4001",treatment="delayed"\} 2\n/);
    assert.match(text, /warren_refusals_total\{code="4001",treatment="repeat"\} [1-9]/);
  } finally {
    await Promise.all([damped.stop(), undamped.stop()]);
  }
});
