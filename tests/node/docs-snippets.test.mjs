// The README and the guides run as written: every fenced code block in them is either run here,
// against the built binary, or carries a reason why not. A block is marked by an HTML comment on
// the line before it (invisible on GitHub):
//
//   <!-- run: client.mjs -->            save the block as client.mjs (a later `node client.mjs`
//                                       block runs it, as the reader would)
//   <!-- run: sh -->                    run the block with bash (a non-zero exit fails)
//   <!-- run: warren.toml mode=append -->  append the block to warren.toml ("add this block")
//   <!-- run: sh signal=HUP -->         the block is `kill -HUP <pid>`: send SIGHUP to the
//                                       document's background `warren` (with background-until:
//                                       then wait for that text in the server's new output)
//   <!-- norun: why -->                 not run here (a long build, root, PHP, ...), and why
//
// `background-until="text"` (or 'text') starts the block and goes on once its output contains the text (a
// server, a subscriber waiting for an event); `expect="text"` requires the text in its output.
// A background block must exit 0 by the end of the document unless it is `warren`, which is
// stopped. Blocks of one document run in order in one fresh directory, with `node_modules` of
// this repository reachable, the binary under test first on PATH as `warren`, and one change to
// the text: ports 6001 (Warren), 6002 (its console) and 3000 (an example auth endpoint) become free ports (tests never
// use fixed ports), and WARREN_PORT gives the first to a plain `warren`; WARREN_BIND=127.0.0.1 keeps the servers on loopback.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, SERVER_BIN, freePort, waitFor } from './helpers.mjs';

/** The documents whose blocks must all run (or say why not). */
const DOCUMENTS = ['README.md', 'docs/deployment.md', 'docs/apps.md', 'docs/wss.md', 'docs/laravel.md', 'docs/console.md'];

/** The ports the documents use (Warren's, its console's, an example auth endpoint's); each becomes a free one. */
const DOCUMENTED_PORTS = ['6001', '6002', '3000'];

const BLOCK_TIMEOUT_MS = 20_000;

/** The fenced blocks of a markdown text, each with the marker comment before it (or null). */
export function fencedBlocks(markdown) {
  const lines = markdown.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(```+)\s*([\w-]*)/.exec(lines[i]);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith(open[1]) && l.trim() === open[1]);
    assert.ok(end > i, `unclosed code block at line ${i + 1}`);
    let before = i - 1;
    while (before >= 0 && lines[before].trim() === '') before--;
    const marker = before >= 0 ? /^<!--\s*(run|norun):\s*(.*?)\s*-->$/.exec(lines[before].trim()) : null;
    blocks.push({
      line: i + 1,
      lang: open[2],
      text: lines.slice(i + 1, end).join('\n') + '\n',
      marker: marker && { kind: marker[1], spec: marker[2] },
    });
    i = end;
  }
  return blocks;
}

/** `client.mjs background-until="x" expect="y"` -> { target: 'client.mjs', backgroundUntil, expect, signal, mode }. */
function parseRunSpec(spec) {
  const [target] = spec.split(/\s+/);
  const options = Object.fromEntries(
    [...spec.matchAll(/([\w-]+)="([^"]*)"|([\w-]+)='([^']*)'|([\w-]+)=(\S+)/g)].map((m) => [m[1] ?? m[3] ?? m[5], m[2] ?? m[4] ?? m[6]]),
  );
  return { target, backgroundUntil: options['background-until'], expect: options.expect, signal: options.signal, mode: options.mode };
}

/** A started block: its output so far, its exit, and a way to stop it. */
function start(command, args, { cwd, env }) {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, output: '', exit: null };
  child.stdout.on('data', (c) => (proc.output += c));
  child.stderr.on('data', (c) => (proc.output += c));
  proc.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve((proc.exit = { code, signal })));
    child.once('error', (error) => resolve((proc.exit = { code: -1, signal: null, error })));
  });
  return proc;
}

/** Runs the blocks of one document in order; returns the processes still running. */
async function runDocument(doc, blocks, t) {
  const dir = await mkdtemp(join(tmpdir(), 'warren-docs-'));
  await symlink(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
  const ports = new Map();
  for (const documented of DOCUMENTED_PORTS) ports.set(documented, String(await freePort()));
  const port = ports.get('6001');
  const withFreePorts = (text) => text.replace(new RegExp(`\\b(${DOCUMENTED_PORTS.join('|')})\\b`, 'g'), (p) => ports.get(p));
  const env = {
    ...process.env,
    PATH: `${dirname(SERVER_BIN)}:${process.env.PATH}`,
    WARREN_BIND: '127.0.0.1',
    WARREN_PORT: port,
    WARREN_LOG: 'info',
  };
  const background = [];
  const failed = (block, proc, why) => `${doc}:${block.line} (${block.marker.spec}) ${why}\n----- output -----\n${proc?.output ?? ''}`;
  try {
    for (const block of blocks) {
      if (block.marker.kind === 'norun') continue;
      const spec = parseRunSpec(block.marker.spec);
      const text = withFreePorts(block.text);
      if (spec.signal) {
        assert.match(text, new RegExp(`kill -${spec.signal}\\b`), `${doc}:${block.line}: signal=${spec.signal} on a block that does not say kill -${spec.signal}`);
        const server = background.find((p) => p.isWarren);
        assert.ok(server, `${doc}:${block.line}: no background warren to signal`);
        const seen = server.output.length;
        server.child.kill(`SIG${spec.signal}`);
        if (spec.backgroundUntil) {
          await waitFor(() => server.output.slice(seen).includes(spec.backgroundUntil), BLOCK_TIMEOUT_MS, `${doc}:${block.line}: the server to print ${JSON.stringify(spec.backgroundUntil)}`)
            .catch((e) => assert.fail(failed(block, server, e.message)));
        }
        continue;
      }
      let proc;
      if (spec.target === 'sh') {
        proc = start('bash', ['-euo', 'pipefail', '-c', text], { cwd: dir, env });
        proc.isWarren = /^\s*warren\b(?!.*--check-config)/m.test(text);
      } else {
        await writeFile(join(dir, spec.target), text, { flag: spec.mode === 'append' ? 'a' : 'w' });
        continue;
      }
      if (spec.backgroundUntil) {
        background.push(proc);
        proc.spec = spec;
        proc.block = block;
        await waitFor(
          () => proc.output.includes(spec.backgroundUntil) || proc.exit,
          BLOCK_TIMEOUT_MS,
          `${doc}:${block.line} to print ${JSON.stringify(spec.backgroundUntil)}`,
        ).catch((e) => assert.fail(failed(block, proc, e.message)));
        assert.ok(!proc.exit || proc.exit.code === 0, failed(block, proc, `exited early: ${JSON.stringify(proc.exit)}`));
        continue;
      }
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), BLOCK_TIMEOUT_MS);
      await proc.exited;
      clearTimeout(timer);
      assert.equal(proc.exit.code, 0, failed(block, proc, `exited with ${JSON.stringify(proc.exit)}`));
      if (spec.expect) assert.ok(proc.output.includes(spec.expect), failed(block, proc, `did not print ${JSON.stringify(spec.expect)}`));
      t.diagnostic(`${doc}:${block.line} ${spec.target} ok`);
    }
    for (const proc of background.filter((p) => !p.isWarren)) {
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), BLOCK_TIMEOUT_MS);
      await proc.exited;
      clearTimeout(timer);
      assert.equal(proc.exit.code, 0, failed(proc.block, proc, `exited with ${JSON.stringify(proc.exit)}`));
      if (proc.spec.expect) assert.ok(proc.output.includes(proc.spec.expect), failed(proc.block, proc, `did not print ${JSON.stringify(proc.spec.expect)}`));
      t.diagnostic(`${doc}:${proc.block.line} ${proc.spec.target} (background) ok`);
    }
  } finally {
    for (const proc of background) {
      if (!proc.exit) proc.child.kill('SIGTERM');
      await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
      if (!proc.exit) proc.child.kill('SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
  }
}

for (const doc of DOCUMENTS) {
  test(`${doc}: every code block runs as written (or says why not)`, { timeout: 120_000 }, async (t) => {
    const blocks = fencedBlocks(await readFile(join(REPO_ROOT, doc), 'utf8'));
    const unmarked = blocks.filter((b) => !b.marker).map((b) => `${doc}:${b.line}`);
    assert.deepEqual(unmarked, [], 'blocks without a <!-- run: ... --> or <!-- norun: why --> marker');
    const norun = blocks.filter((b) => b.marker.kind === 'norun');
    for (const b of norun) assert.ok(b.marker.spec.length > 3, `${doc}:${b.line}: norun needs a reason`);
    await runDocument(doc, blocks, t);
  });
}
