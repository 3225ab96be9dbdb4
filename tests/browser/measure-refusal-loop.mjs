// Measures what one looping push.js tab (unknown app key) costs the server, without and with
// damping: the server's CPU time (utime + stime from /proc/<pid>/stat) and the sockets the tab
// opened over a window. A measurement, not a test (node --test does not pick it up):
//
//   WARREN_BIN=target/release/warren node tests/browser/measure-refusal-loop.mjs [seconds]
//
// Results are recorded in docs/benchmarks.md.

import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { SERVER_BIN, sleep, startServer } from '../node/helpers.mjs';
import { CLIENTS, launchBrowser, openClient, startSite } from './support.mjs';

const SECONDS = Number(process.argv[2] ?? 20);
const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/** CPU seconds (user + system) the process has used so far. */
async function cpuSeconds(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

async function measure(browser, site, label, env, { tab: withTab = true } = {}) {
  const server = await startServer({ shards: 1, env });
  try {
    const before = await cpuSeconds(server.pid);
    const tab = withTab
      ? await openClient(browser, site, {
          client: CLIENTS.webman,
          app: { name: 'none', key: 'no-such-key' },
          wsPort: server.port,
        })
      : null;
    await sleep(SECONDS * 1000);
    const sockets = tab ? await tab.page.evaluate(() => window.__sockets) : 0;
    const used = (await cpuSeconds(server.pid)) - before;
    await tab?.close();
    return { label, seconds: SECONDS, sockets, socketsPerSecond: +(sockets / SECONDS).toFixed(1), cpuSeconds: +used.toFixed(2), cpuPercent: +((100 * used) / SECONDS).toFixed(2) };
  } finally {
    await server.stop();
  }
}

const [browser, site] = await Promise.all([launchBrowser(), startSite({})]);
try {
  const rows = [
    await measure(browser, site, 'idle server, no tab', {}, { tab: false }),
    await measure(browser, site, 'damping off', { WARREN_DAMPING__REFUSAL_DELAY_MS: '0' }),
    // The shipped defaults: held 2 s, from the 4th refusal within 60 s held 10 s, bare close.
    await measure(browser, site, 'damping on (defaults)', { WARREN_DAMPING__REFUSAL_DELAY_MS: '2000' }),
  ];
  console.log(`server: ${SERVER_BIN}`);
  console.table(rows);
} finally {
  await browser.close();
  await site.close();
}
