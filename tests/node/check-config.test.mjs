// `warren --check-config` as an operator runs it: the effective listen address, shards, apps
// (ids and keys), cluster and webhook receivers, from file + environment + flags, and never a
// secret (app secrets, a Redis password, a webhook URL's password, webhook header values).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, SERVER_BIN } from './helpers.mjs';

/** Run the binary; resolves with { code, stdout, stderr }. */
function warren(args, env = {}) {
  return new Promise((resolve) => {
    execFile(SERVER_BIN, args, { cwd: REPO_ROOT, env: { ...process.env, ...env } }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}

const CONFIG = `
[server]
bind = "127.0.0.1"
port = 7011
shards = 3

[[apps]]
id = "1"
key = "first-key"
secret = "first-secret-SECRET"

[[apps]]
id = "2"
key = "second-key"
secret = "second-secret-SECRET"
webhooks = [{ url = "https://hooks:hookpass-SECRET@hooks.example.test/pusher", events = ["channel_occupied"], headers = { "Authorization" = "Bearer token-SECRET" } }]

[cluster]
redis_url = "redis://default:redispass-SECRET@10.1.2.3:6379/0"
prefix = "prod"
`;

test('--check-config prints the effective listen address, shards, apps, cluster and webhooks, never a secret', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'warren-check-config-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'warren.toml');
  await writeFile(path, CONFIG);
  const { code, stdout, stderr } = await warren(['--config', path, '--check-config', '--port', '7012'], {
    WARREN_APPS__2__ID: '3',
    WARREN_APPS__2__KEY: 'env-key',
    WARREN_APPS__2__SECRET: 'env-secret-SECRET',
    WARREN_LOG: 'error',
  });
  assert.equal(code, 0, stderr);
  for (const line of [
    'listen: 127.0.0.1:7012', // the flag wins over the file
    'shards: 3',
    'apps: 3',
    'app id 1 key first-key',
    'app id 2 key second-key',
    'app id 3 key env-key',
    'webhook https://hooks:***@hooks.example.test/pusher (channel_occupied; headers Authorization (values hidden))',
    'cluster: redis redis://default:***@10.1.2.3:6379/0 (prefix "prod")',
  ]) {
    assert.ok(stdout.split('\n').some((l) => l.trim() === line), `no line ${JSON.stringify(line)} in:\n${stdout}`);
  }
  assert.doesNotMatch(stdout + stderr, /SECRET/, 'a secret was printed');
});

test('--check-config refuses an app added from the environment without its id, naming the variables', async () => {
  const { code, stdout, stderr } = await warren(['--check-config'], { WARREN_APPS__1__KEY: 'lonely-key' });
  assert.equal(code, 2, stdout);
  assert.match(stderr, /apps\[1\]\.id: missing; .*WARREN_APPS__1__ID, WARREN_APPS__1__KEY, WARREN_APPS__1__SECRET/);
});
