// Shared helpers for the Node.js end-to-end suite: start and stop the warren
// binary, create pusher-js clients that authorize channels locally (HMAC with
// the app secret, no auth endpoint), and wait for events with timeouts so a
// missing event fails a test instead of hanging it.

import { deepStrictEqual } from 'node:assert';
import { spawn } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before } from 'node:test';
import Pusher from 'pusher-js';
import PusherRest from 'pusher';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVER_BIN = resolve(REPO_ROOT, process.env.WARREN_BIN ?? 'target/debug/warren');

/** The server's embedded default app. */
export const DEFAULT_APP = Object.freeze({ id: '1', key: 'app-key', secret: 'app-secret' });
export const DISABLED_APP = Object.freeze({ id: '2', key: 'disabled-key', secret: 's2' });
export const NO_CLIENT_EVENTS_APP = Object.freeze({ id: '3', key: 'noclient-key', secret: 's3' });

/** A config with the default app plus a disabled app and one without client events. */
export const MULTI_APP_CONFIG = `
[server]
activity_timeout = 120

[[apps]]
id = "${DEFAULT_APP.id}"
key = "${DEFAULT_APP.key}"
secret = "${DEFAULT_APP.secret}"

[[apps]]
id = "${DISABLED_APP.id}"
key = "${DISABLED_APP.key}"
secret = "${DISABLED_APP.secret}"
enabled = false

[[apps]]
id = "${NO_CLIENT_EVENTS_APP.id}"
key = "${NO_CLIENT_EVENTS_APP.key}"
secret = "${NO_CLIENT_EVENTS_APP.secret}"
enable_client_events = false
`;

/** Options for every e2e test: a hung test fails after this long. */
export const E2E = Object.freeze({ timeout: 30_000 });

const STARTUP_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_TAIL_CHARS = 20_000;

// ---------------------------------------------------------------- timing

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Like sleep, but does not keep the process alive (for timeouts raced against other work). */
const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref());

/** Resolve once `cond()` returns a truthy value (polled); reject after `ms`. */
export async function waitFor(cond, ms = 5_000, what = 'condition') {
  const until = Date.now() + ms;
  for (;;) {
    const value = await cond();
    if (value) return value;
    if (Date.now() >= until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Resolve with `{event, data, metadata}` for whichever of `events` fires first
 * on a pusher-js emitter (a channel, `pusher.connection`, ...); reject after `ms`.
 */
export function nextOf(emitter, events, ms = 5_000) {
  return new Promise((resolvePromise, reject) => {
    const listeners = events.map((event) => [event, (data, metadata) => finish({ event, data, metadata })]);
    const unbindAll = () => listeners.forEach(([event, fn]) => emitter.unbind(event, fn));
    const timer = setTimeout(() => {
      unbindAll();
      reject(new Error(`timed out after ${ms} ms waiting for ${events.map((e) => `'${e}'`).join(' or ')}`));
    }, ms);
    function finish(result) {
      clearTimeout(timer);
      unbindAll();
      resolvePromise(result);
    }
    listeners.forEach(([event, fn]) => emitter.bind(event, fn));
  });
}

/**
 * An append-only list of observations (each with a `data` field): `.items`,
 * `.count`, `.data` (the `data` fields) and a timed `atLeast(n, ms)` wait.
 */
function collector(label) {
  const items = [];
  return {
    items,
    get count() {
      return items.length;
    },
    get data() {
      return items.map((i) => i.data);
    },
    atLeast(n, ms = 5_000) {
      return waitFor(() => items.length >= n, ms, `${n} x ${label} (saw ${items.length})`);
    },
  };
}

/** Record every `event` on a pusher-js emitter as `{data, metadata}` (see collector). */
export function record(emitter, event) {
  const c = collector(`'${event}'`);
  emitter.bind(event, (data, metadata) => c.items.push({ data, metadata }));
  return c;
}

/**
 * Record the decoded protocol messages named `event` that a client receives on
 * `channelName`, internal ones (`pusher_internal:*`) included. pusher-js hides
 * some duplicates (a second member_removed for an unknown member), the raw
 * messages do not.
 */
export function recordMessages(pusher, event, channelName) {
  const c = collector(`message '${event}' on ${channelName}`);
  pusher.connection.bind('message', (m) => {
    if (m.event === event && m.channel === channelName) c.items.push(m);
  });
  return c;
}

// ---------------------------------------------------------------- server

/** Find a free TCP port on 127.0.0.1 by binding to port 0 and closing. */
export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePromise(port));
    });
  });
}

/**
 * Start the warren binary on a free port and wait until GET /health is 200.
 * `config` is optional TOML text, written to a temp file and passed as --config.
 * `shards` (default 2) is passed as --shards. `env` adds environment variables; refusals are
 * answered at once (damping off, `WARREN_DAMPING__REFUSAL_DELAY_MS=0`) unless `env` says
 * otherwise, so that tests of refusals need not wait.
 * Returns { port, pid, log(), printLog(reason), stop(), kill9(), running(), exitInfo() }.
 */
export async function startServer({ config, shards = 2, env = {}, port: wantedPort } = {}) {
  await access(SERVER_BIN, fsConstants.X_OK).catch(() => {
    throw new Error(`no executable at ${SERVER_BIN}: build it with \`cargo build\` or set WARREN_BIN`);
  });
  const port = wantedPort ?? (await freePort());
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--shards', String(shards)];
  let tmpDir = null;
  let configPath = null;
  if (config) {
    tmpDir = await mkdtemp(join(tmpdir(), 'warren-e2e-'));
    configPath = join(tmpDir, 'warren.toml');
    await writeFile(configPath, config);
    args.push('--config', configPath);
  }

  const child = spawn(SERVER_BIN, args, {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      WARREN_LOG: process.env.WARREN_LOG ?? 'info',
      WARREN_DAMPING__REFUSAL_DELAY_MS: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const append = (chunk) => {
    output = (output + chunk).slice(-LOG_TAIL_CHARS);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  trackChild(child);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let exitInfo = null;
  exited.then((info) => (exitInfo = info));
  const spawnError = new Promise((r) => child.once('error', r));
  const running = () => exitInfo === null && child.pid !== undefined;

  const server = {
    port,
    pid: child.pid,
    /** The config file the server was started with (null for the embedded default). */
    configPath,
    /** Sends a signal to the process (e.g. 'SIGHUP' to reload the configuration). */
    signal: (name) => child.kill(name),
    log: () => output,
    /** Whether the process is still running. */
    running,
    /** `{code, signal}` once the process has exited, else null. */
    exitInfo: () => exitInfo,
    /** SIGKILL the process (no shutdown of any kind) and wait for it to be gone. */
    async kill9() {
      if (running()) {
        child.kill('SIGKILL');
        await Promise.race([exited, deadline(STOP_TIMEOUT_MS)]);
      }
      return exitInfo;
    },
    printLog(reason) {
      process.stderr.write(`\n----- warren output (${reason}) -----\n${output}\n----- end -----\n`);
    },
    async stop() {
      if (running()) {
        child.kill('SIGTERM');
        const timeout = deadline(STOP_TIMEOUT_MS).then(() => 'timeout');
        if ((await Promise.race([exited, timeout])) === 'timeout') {
          server.printLog(`did not exit ${STOP_TIMEOUT_MS} ms after SIGTERM, killing`);
          child.kill('SIGKILL');
          await Promise.race([exited, deadline(STOP_TIMEOUT_MS)]);
        }
      }
      if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
      return exitInfo;
    },
  };

  try {
    await Promise.race([
      waitFor(() => healthy(port), STARTUP_TIMEOUT_MS, `GET /health on port ${port}`),
      spawnError.then((e) => {
        throw new Error(`cannot start ${SERVER_BIN}: ${e.message}`);
      }),
      exited.then(({ code, signal }) => {
        throw new Error(`warren exited during start-up (code ${code}, signal ${signal})`);
      }),
    ]);
  } catch (e) {
    server.printLog('start-up failed');
    await server.stop();
    throw e;
  }
  return server;
}

/**
 * Every child process the helpers start (warren, redis-server). Whatever is still
 * running when the test process exits, or is interrupted, is killed, so a failed
 * or cancelled test leaves nothing behind.
 */
const liveChildren = new Set();
let exitHooked = false;
function trackChild(child) {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => liveChildren.delete(child));
  if (!exitHooked) {
    exitHooked = true;
    const killAll = () => {
      for (const c of liveChildren) {
        try {
          c.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    };
    process.once('exit', killAll);
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => {
        killAll();
        process.kill(process.pid, signal);
      });
    }
  }
}

async function healthy(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- auth

const hmacHex = (secret, text) => createHmac('sha256', secret).update(text).digest('hex');

/** `key:hex(HMAC(secret, socketId:channel[:channelData]))`, per PROTOCOL.md §4. */
export function channelAuth({ key, secret }, socketId, channel, channelData) {
  const toSign = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${key}:${hmacHex(secret, toSign)}`;
}

/**
 * A pusher-js `channelAuthorization.customHandler` that signs locally.
 * `user` ({id, info}) is required for presence channels; `secretFor(channel)`
 * picks the signing secret (tests use it to forge a bad signature).
 */
export function localAuthorizer({ app, user, secretFor = () => app.secret }) {
  return ({ socketId, channelName }, callback) => {
    const signer = { key: app.key, secret: secretFor(channelName) };
    if (channelName.startsWith('presence-')) {
      if (!user) return callback(new Error(`no user given for ${channelName}`), null);
      const channelData = JSON.stringify({ user_id: user.id, user_info: user.info ?? {} });
      callback(null, { auth: channelAuth(signer, socketId, channelName, channelData), channel_data: channelData });
    } else {
      callback(null, { auth: channelAuth(signer, socketId, channelName) });
    }
  };
}

// ---------------------------------------------------------------- clients

/** pusher-js options for the test server on `port`: plain ws on loopback, no stats. */
export function serverOptions(port) {
  return {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
  };
}

/** A webhook event predicate: event `name` on `channel`. */
export const named = (name, channel) => (e) => e.name === name && e.channel === channel;

/** Create a pusher-js client for the server on `port` (does not wait for it to connect). */
export function createClient(port, { app = DEFAULT_APP, user, secretFor } = {}) {
  return new Pusher(app.key, {
    ...serverOptions(port),
    channelAuthorization: { customHandler: localAuthorizer({ app, user, secretFor }) },
  });
}

/** Wait until `pusher.connection.state` is one of `states`. */
export function waitForState(pusher, states, ms = 5_000) {
  const wanted = [].concat(states);
  return waitFor(
    () => wanted.includes(pusher.connection.state),
    ms,
    `connection state ${wanted.join('|')} (is ${pusher.connection.state})`,
  );
}

/** Subscribe and wait for `pusher:subscription_succeeded`; resolves with the channel. */
export async function subscribed(pusher, channelName, ms = 5_000) {
  const channel = pusher.subscribe(channelName);
  const { event, data } = await nextOf(channel, ['pusher:subscription_succeeded', 'pusher:subscription_error'], ms);
  if (event === 'pusher:subscription_error') {
    throw new Error(`subscription to ${channelName} failed: ${JSON.stringify(data)}`);
  }
  return channel;
}

/**
 * The close / error code carried by a pusher-js connection `error` event. A
 * `pusher:error` frame gives {type:'PusherError', data:{code}}; a rejected
 * handshake or a close code gives {type:'WebSocketError', error:{type:'PusherError', data:{code}}}.
 */
export function errorCode(err) {
  return err?.data?.code ?? err?.error?.data?.code;
}

let uniqueCounter = 0;
/** A channel name unique within this process, so tests sharing a server do not interfere. */
export const uniqueName = (prefix) => `${prefix}-${process.pid}-${++uniqueCounter}`;

// ---------------------------------------------------------------- per-file fixture

/**
 * Start one server for the test file (before/after hooks) and track clients so
 * each test's clients are disconnected after it. On a failed test the server's
 * recent output is printed. Returns { server, connect(opts), open(opts) }:
 * `open` creates a client without waiting, `connect` waits for `connected`.
 */
export function useServer(options) {
  const clients = [];
  const ctx = {
    server: null,
    open(opts) {
      const pusher = createClient(ctx.server.port, opts);
      clients.push(pusher);
      return pusher;
    },
    async connect(opts) {
      const pusher = ctx.open(opts);
      await waitForState(pusher, 'connected');
      return pusher;
    },
  };
  before(async () => {
    ctx.server = await startServer(options);
  });
  afterEach((t) => {
    for (const pusher of clients.splice(0)) pusher.disconnect();
    if (t.passed === false && ctx.server) ctx.server.printLog(`after failed test "${t.name}"`);
  });
  after(async () => {
    const info = await ctx.server?.stop();
    if (info && info.code !== 0 && info.signal !== 'SIGTERM') {
      ctx.server.printLog(`exited with code ${info.code}, signal ${info.signal}`);
    }
  });
  return ctx;
}

// ---------------------------------------------------------------- HTTP API (PROTOCOL.md §5)

/** Lower-hex MD5 of a string or buffer. */
export const md5Hex = (body) => createHash('md5').update(body).digest('hex');

/**
 * A signed query string for an HTTP API request (PROTOCOL.md §5.1), built by
 * hand rather than by the SDK so tests can forge bad ones. The string to sign
 * is `METHOD\nPATH\nk=v&...` over every parameter but auth_signature, keys
 * lower-cased and sorted, values unescaped; auth_key, auth_timestamp,
 * auth_version=1.0 and (for a non-empty body) body_md5 are added.
 *
 * `opts`: `key`, `secret` (default: the default app), `timestamp` (Unix
 * seconds, default now), `version` ('1.0'), `bodyMd5` (overrides the computed
 * one; `null` leaves it out), `omit` (parameter names left out of the final
 * query, after signing), `signature` (overrides the computed one).
 */
export function signRequest(method, path, params = {}, body = '', opts = {}) {
  const { key = DEFAULT_APP.key, secret = DEFAULT_APP.secret, version = '1.0', omit = [] } = opts;
  const timestamp = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const all = { ...params, auth_key: key, auth_timestamp: String(timestamp), auth_version: version };
  const bodyMd5 = opts.bodyMd5 === undefined ? (body.length > 0 ? md5Hex(body) : undefined) : opts.bodyMd5;
  if (bodyMd5 != null) all.body_md5 = bodyMd5;
  const sorted = Object.entries(all)
    .map(([k, v]) => [k.toLowerCase(), String(v)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  all.auth_signature = opts.signature ?? hmacHex(secret, `${method.toUpperCase()}\n${path}\n${sorted}`);
  for (const name of omit) delete all[name];
  return new URLSearchParams(all).toString();
}

/**
 * Send a hand-signed HTTP API request with fetch. `body` is a string (an object
 * is JSON-encoded); `params` are the request's own query parameters; the other
 * options go to signRequest. Resolves with `{status, text, json}` (`json` is
 * undefined when the body is not JSON).
 */
export async function apiRequest(port, method, path, { params = {}, body = '', ...opts } = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const query = signRequest(method, path, params, raw, opts);
  const res = await fetch(`http://127.0.0.1:${port}${path}?${query}`, {
    method,
    body: method === 'GET' ? undefined : raw,
    headers: raw ? { 'content-type': 'application/json' } : {},
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

/** The `pusher` server SDK (pusher-http-node) pointed at the server on `port`. */
export function restClient(port, app = DEFAULT_APP, options = {}) {
  return new PusherRest({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
    ...options,
  });
}

/**
 * Record every non-`pusher:` event a pusher-js channel emits, as `{event, data}`
 * (see collector); `.events` lists the event names.
 */
export function recordAll(channel) {
  const c = collector(`events on ${channel.name}`);
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) c.items.push({ event, data });
  });
  Object.defineProperty(c, 'events', { get: () => c.items.map((i) => i.event) });
  return c;
}

/** TOML text for a config with these apps (objects of AppConfig fields) and `[server]` settings. */
export function appsConfig(apps, server = { activity_timeout: 120 }) {
  const value = (v) => (typeof v === 'string' ? JSON.stringify(v) : String(v));
  const table = (name, fields) =>
    `${name}\n${Object.entries(fields)
      .map(([k, v]) => `${k} = ${value(v)}`)
      .join('\n')}\n`;
  return [table('[server]', server), ...apps.map((app) => table('[[apps]]', app))].join('\n');
}

/** The shard that owns a socket: the low 10 bits of the socket id's second part. */
export const shardOf = (socketId) => Number(BigInt(socketId.split('.')[1]) & 1023n);

/**
 * pusher-js (Node build) calls close() on its faye-websocket again when the
 * server closes with a "refused" code (4001-4099) on an open connection; faye
 * then arms a 30 s close timer on the already-closed socket that keeps the test
 * process alive. Call this while the socket is open; the returned function
 * clears that timer once the connection is closed.
 */
export function disarmCloseTimer(pusher) {
  const socket = pusher.connection.connection?.transport?.socket;
  return () => clearTimeout(socket?._closeTimer);
}

// ---------------------------------------------------------------- cluster (Redis)

/** The redis-server binary (Debian's package; override with REDIS_SERVER). */
export const REDIS_SERVER_BIN = process.env.REDIS_SERVER ?? 'redis-server';

/** Resolve true when a Redis server answers a raw `PING` on `port` with `+PONG`. */
export function redisPing(port, ms = 1_000) {
  return new Promise((resolvePromise) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok) => {
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

/**
 * Start `redis-server` on `port` (a free one by default), without persistence,
 * and wait until it answers PING. Returns
 * { port, log(), running(), start(), stop(), kill(), restart({downMs}) }:
 * `stop` is SIGTERM, `kill` SIGKILL; `start` starts it again on the same port.
 */
export async function startRedis({ port } = {}) {
  port ??= await freePort();
  let child = null;
  let exited = null;
  let exitInfo = null;
  let output = '';
  const running = () => child !== null && exitInfo === null;

  async function start() {
    if (running()) return;
    exitInfo = null;
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    child = spawn(REDIS_SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    trackChild(child);
    const append = (chunk) => {
      output = (output + chunk).slice(-LOG_TAIL_CHARS);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    exited.then((info) => (exitInfo = info));
    const spawnError = new Promise((r) => child.once('error', r));
    try {
      await Promise.race([
        waitFor(() => redisPing(port, 500), STARTUP_TIMEOUT_MS, `redis-server PING on port ${port}`),
        spawnError.then((e) => {
          throw new Error(`cannot start ${REDIS_SERVER_BIN} (install redis-server or set REDIS_SERVER): ${e.message}`);
        }),
        exited.then(({ code, signal }) => {
          throw new Error(`redis-server exited during start-up (code ${code}, signal ${signal}):\n${output}`);
        }),
      ]);
    } catch (e) {
      await halt('SIGKILL');
      throw e;
    }
  }

  async function halt(signal) {
    if (!running()) return;
    child.kill(signal);
    if ((await Promise.race([exited, deadline(STOP_TIMEOUT_MS).then(() => 'timeout')])) === 'timeout') {
      child.kill('SIGKILL');
      await Promise.race([exited, deadline(STOP_TIMEOUT_MS)]);
    }
  }

  const redis = {
    port,
    log: () => output,
    running,
    start,
    stop: () => halt('SIGTERM'),
    kill: () => halt('SIGKILL'),
    async restart({ downMs = 0 } = {}) {
      await halt('SIGTERM');
      if (downMs > 0) await sleep(downMs);
      await start();
    },
  };
  await start();
  return redis;
}

/** A prefix for the cluster's Redis channels and keys, unique to this process and call. */
export const clusterPrefix = (label) => `warren-test-${label}-${process.pid}-${Date.now().toString(36)}`;

/**
 * TOML for one cluster node: `[server]`, the default app and `[cluster]`.
 * `extraToml` goes at the very end (bare keys there land in `[cluster]`); `appToml` inside the
 * default app's table.
 * `nodeTimeout` / `heartbeatInterval` null: the line is left out (the server's default).
 */
export function clusterConfig({ redisPort, prefix, nodeTimeout = 3, heartbeatInterval = 1, extraToml = '', appToml = '' }) {
  return `
[server]
activity_timeout = 120
shutdown_grace = 1

[[apps]]
id = "${DEFAULT_APP.id}"
key = "${DEFAULT_APP.key}"
secret = "${DEFAULT_APP.secret}"
${appToml}

[cluster]
redis_url = "redis://127.0.0.1:${redisPort}/0"
prefix = "${prefix}"
${nodeTimeout === null ? '' : `node_timeout = ${nodeTimeout}`}
${heartbeatInterval === null ? '' : `heartbeat_interval = ${heartbeatInterval}`}
${extraToml}
`;
}

/** `{status, text}` of a plain GET on a server's port (e.g. /health, /ready); status 0 if unreachable. */
export async function probe(port, path) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: 0, text: String(e) };
  }
}

/**
 * Start one cluster node (see clusterConfig) and, unless `waitReady` is false,
 * wait until its GET /ready is 200 (the Redis link is up). Returns the server
 * (startServer's object: port, stop(), kill9(), running(), log(), ...) plus:
 * `name`; `rest()`, the `pusher` SDK bound to this node; `open(opts)` /
 * `connect(opts)`, pusher-js clients of this node (tracked);
 * `disconnectClients()`; `ready()` and `health()` ({status, text}); `waitReady(ms)`.
 */
export async function startNode({
  redisPort,
  prefix,
  shards = 2,
  extraToml = '',
  appToml = '',
  nodeTimeout,
  heartbeatInterval,
  name = 'node',
  waitReady = true,
  readyTimeoutMs = 10_000,
}) {
  const config = clusterConfig({ redisPort, prefix, nodeTimeout, heartbeatInterval, extraToml, appToml });
  const server = await startServer({ config, shards });
  const clients = [];
  const node = Object.assign(server, {
    name,
    rest: (app = DEFAULT_APP, options = {}) => restClient(server.port, app, options),
    open(opts) {
      const pusher = createClient(server.port, opts);
      clients.push(pusher);
      return pusher;
    },
    async connect(opts) {
      const pusher = node.open(opts);
      await waitForState(pusher, 'connected');
      return pusher;
    },
    disconnectClients() {
      for (const pusher of clients.splice(0)) pusher.disconnect();
    },
    ready: () => probe(server.port, '/ready'),
    health: () => probe(server.port, '/health'),
    async waitReady(ms = readyTimeoutMs) {
      let last;
      await waitFor(
        async () => (last = await node.ready()).status === 200,
        ms,
        `GET /ready 200 on ${name} (port ${server.port})`,
      ).catch((e) => {
        throw new Error(`${e.message}; last answer ${last?.status} ${JSON.stringify(last?.text)}`);
      });
    },
  });
  const stop = server.stop;
  node.stop = async () => {
    node.disconnectClients();
    return stop();
  };
  if (waitReady) {
    try {
      await node.waitReady();
    } catch (e) {
      node.printLog(`${name} not ready`);
      await node.stop();
      throw e;
    }
  }
  return node;
}

/**
 * A set of Redis servers and nodes started for one test (or file), stopped
 * together by `cleanup()`. `redis(opts)` and `node(opts)` start and track them
 * (`node` defaults `prefix` and `redisPort` to the scope's). `cleanup(failed)`
 * disconnects the clients, prints every log when `failed`, and stops everything.
 */
export function clusterScope({ prefix }) {
  const redises = [];
  const nodes = [];
  const scope = {
    prefix,
    redises,
    nodes,
    async redis(opts) {
      const r = await startRedis(opts);
      redises.push(r);
      return r;
    },
    async node(opts = {}) {
      const n = await startNode({
        prefix,
        redisPort: redises[0]?.port,
        name: `node${nodes.length}`,
        ...opts,
      });
      nodes.push(n);
      return n;
    },
    disconnectClients() {
      for (const n of nodes) n.disconnectClients();
    },
    printLogs(reason) {
      for (const n of nodes) n.printLog(`${n.name}, port ${n.port}: ${reason}`);
      for (const r of redises) {
        process.stderr.write(`\n----- redis-server ${r.port} (${reason}) -----\n${r.log()}\n----- end -----\n`);
      }
    },
    async cleanup(failed = false) {
      scope.disconnectClients();
      if (failed) scope.printLogs('after a failed test');
      await Promise.all(
        nodes.splice(0).map(async (n) => {
          const info = await n.stop();
          if (!failed && info && info.code !== 0 && info.signal !== 'SIGTERM' && info.signal !== 'SIGKILL') {
            n.printLog(`${n.name} exited with code ${info.code}, signal ${info.signal}`);
          }
        }),
      );
      await Promise.all(redises.splice(0).map((r) => r.kill()));
    },
  };
  return scope;
}

/**
 * Start Redis and `nodes` cluster nodes for the test file (before/after hooks);
 * clients are disconnected after each test and logs printed after a failed one.
 * Returns the scope (see clusterScope): `ctx.nodes[i]`, `ctx.redises[0]`.
 */
export function useCluster({ nodes = 3, prefix, nodeOptions = {} }) {
  const scope = clusterScope({ prefix });
  before(async () => {
    try {
      await scope.redis();
      for (let i = 0; i < nodes; i++) await scope.node(nodeOptions);
    } catch (e) {
      await scope.cleanup(true);
      throw e;
    }
  });
  afterEach((t) => {
    scope.disconnectClients();
    if (t.passed === false) scope.printLogs(`after failed test "${t.name}"`);
  });
  after(() => scope.cleanup(false));
  return scope;
}

/** Poll until `fn()` deep-equals `expected` (node:assert deepStrictEqual); else fail showing the last value. */
export async function eventually(fn, expected, what, ms = 5_000) {
  let last;
  const matches = () => {
    try {
      deepStrictEqual(last, expected);
      return true;
    } catch {
      return false;
    }
  };
  try {
    await waitFor(
      async () => {
        last = await fn();
        return matches();
      },
      ms,
      what,
    );
  } catch (e) {
    deepStrictEqual(last, expected, `${what}: ${e.message}`);
  }
  return last;
}

/**
 * Connect to `node` (anything with `connect(opts)`: a cluster node, a useServer
 * context) as `user`, join the presence channel `room`, and record its member
 * events. Resolves with { pusher, channel, presence (the subscription_succeeded
 * data's `presence`), added, removed (pusher-js events), rawAdded, rawRemoved
 * (the protocol messages, whose data is {user_id, user_info}) }.
 */
export async function joinPresence(node, room, user) {
  const pusher = await node.connect({ user });
  const succeeded = recordMessages(pusher, 'pusher_internal:subscription_succeeded', room);
  const rawAdded = recordMessages(pusher, 'pusher_internal:member_added', room);
  const rawRemoved = recordMessages(pusher, 'pusher_internal:member_removed', room);
  const channel = await subscribed(pusher, room);
  return {
    pusher,
    channel,
    presence: succeeded.items[0].data.presence,
    added: record(channel, 'pusher:member_added'),
    removed: record(channel, 'pusher:member_removed'),
    rawAdded,
    rawRemoved,
  };
}

/** GET an HTTP API path through a node's `pusher` SDK; resolves with the decoded JSON (the SDK rejects on >= 400). */
export async function restGet(node, path, params) {
  const res = await node.rest().get({ path, params });
  return res.json();
}

/** The sorted user ids GET /channels/{room}/users answers on `node`. */
export async function presenceUserIds(node, room) {
  return (await restGet(node, `/channels/${room}/users`)).users.map((u) => u.id).sort();
}

// ---------------------------------------------------------------- webhooks (PROTOCOL.md §6)
//
// A real HTTP receiver that checks every request with the `pusher` SDK's own
// webhook validator, a TOML builder for `[webhooks]` and per-app targets, a
// reader of the on-disk spool, and a per-test scope that starts (and cleans up)
// receivers, servers, spool directories and clients.

import { createServer as createHttpServer } from 'node:http';
import { readFile as readFileText } from 'node:fs/promises';

/** A TOML value: string, number, boolean, array or (inline) table. */
export function tomlValue(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(', ')}]`;
  const fields = Object.entries(value).filter(([, v]) => v !== undefined);
  return `{ ${fields.map(([k, v]) => `${JSON.stringify(k)} = ${tomlValue(v)}`).join(', ')} }`;
}

/**
 * TOML for one app with webhook `targets` ({url, events, filter: {channel_prefix}, headers})
 * and the global `[webhooks]` `settings` (batch_window_ms, grace_ms, spool_dir, ...).
 */
export function webhookConfig({ app = DEFAULT_APP, targets, settings = {}, server = {} }) {
  const table = (fields) =>
    Object.entries(fields)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k} = ${tomlValue(v)}`)
      .join('\n');
  return `
[server]
${table({ activity_timeout: 120, shutdown_grace: 1, ...server })}

[webhooks]
${table(settings)}

[[apps]]
${table({ id: app.id, key: app.key, secret: app.secret, ...(app.extra ?? {}) })}
webhooks = ${tomlValue(targets)}
`;
}

/** The batches still pending in a spool file (`P seq body` lines without an `A seq`), as raw bodies in order. */
export async function readSpool(spoolDir, { appId = DEFAULT_APP.id, index = 0 } = {}) {
  let text;
  try {
    text = await readFileText(join(spoolDir, `app-${appId}-${index}.spool`), 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
  const pending = [];
  for (const line of text.split('\n')) {
    const m = /^P (\d+) (.*)$/.exec(line);
    if (m) {
      try {
        JSON.parse(m[2]);
        pending.push({ seq: Number(m[1]), body: m[2] });
      } catch {
        // a torn last line
      }
      continue;
    }
    const a = /^A (\d+)$/.exec(line);
    if (a) {
      const i = pending.findIndex((p) => p.seq === Number(a[1]));
      if (i >= 0) pending.splice(i, 1);
    }
  }
  return pending.map((p) => p.body);
}

/** How many times `text` occurs in a server's (recent) output, ANSI colours removed. */
export function logCount(server, text) {
  // eslint-disable-next-line no-control-regex
  return server.log().replace(/\x1b\[[0-9;]*m/g, '').split(text).length - 1;
}

/**
 * Start an HTTP webhook receiver on 127.0.0.1 (`port`, default a free one;
 * `listening: false` reserves the port but does not listen until `listen()`).
 * Every request is checked with `pusher.webhook({headers, rawBody})` of the
 * `pusher` SDK for `app` (isValid(), getEvents(), getTime()) and answered with
 * the status `respond(request)` returns (default 200), or resolves to (to
 * answer late).
 *
 * The receiver: `url`, `port`, `requests` (every request: {index, at, method,
 * path, headers, rawBody, valid, events, time, status (0 until answered),
 * aborted (the sender had closed the connection before the answer)}),
 * `accepted` (the 2xx ones answered to a waiting sender), `entries(pred)` ({event, at, request} of accepted requests' events,
 * in arrival order), `events(pred)`, `waitForEvents(pred, n, ms)` (resolves
 * with the first n entries once there are n), `waitForRequests(n, ms)`,
 * `problems()` (every way a request broke the contract: method, path, exact
 * Content-Type, SDK validation, `expectHeaders`, time_ms, empty events),
 * `listen()`, `close()`, `summary()`.
 */
export async function startWebhookReceiver({
  app = DEFAULT_APP,
  port,
  listening = true,
  respond = () => 200,
  path = '/hook',
  expectHeaders = {},
} = {}) {
  port ??= await freePort();
  const validator = new PusherRest({ appId: app.id, key: app.key, secret: app.secret });
  const requests = [];
  const server = createHttpServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const webhook = validator.webhook({ headers: req.headers, rawBody });
      const valid = webhook.isValid();
      const request = {
        index: requests.length,
        at: Date.now(),
        method: req.method,
        path: req.url,
        headers: req.headers,
        rawBody,
        valid,
        events: valid ? webhook.getEvents() : null,
        time: valid ? webhook.getTime() : null,
        status: 0,
        aborted: false,
      };
      requests.push(request);
      const answer = (status) => {
        request.status = status;
        if (res.destroyed || res.socket?.destroyed) {
          request.aborted = true; // the sender gave up (timeout) before the answer
          return;
        }
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(status >= 200 && status < 300 ? 'ok' : 'failed');
      };
      let status;
      try {
        status = respond(request);
      } catch {
        status = 500;
      }
      if (typeof status?.then === 'function') status.then(answer, () => answer(500));
      else answer(status);
    });
  });
  let isListening = false;

  const accepted = () => requests.filter((r) => r.status >= 200 && r.status < 300 && !r.aborted);
  const entries = (pred = () => true) =>
    accepted().flatMap((request) =>
      (request.events ?? []).filter((event) => pred(event)).map((event) => ({ event, at: request.at, request })),
    );

  const receiver = {
    port,
    url: `http://127.0.0.1:${port}${path}`,
    requests,
    get accepted() {
      return accepted();
    },
    entries,
    events: (pred) => entries(pred).map((e) => e.event),
    async waitForEvents(pred, n = 1, ms = 10_000, what = 'webhook events') {
      await waitFor(() => entries(pred).length >= n, ms, `${n} ${what} (got ${JSON.stringify(entries(pred).map((e) => e.event))})`);
      return entries(pred).slice(0, n);
    },
    waitForRequests(n, ms = 10_000) {
      return waitFor(() => requests.length >= n, ms, `${n} webhook requests (got ${requests.length})`);
    },
    problems() {
      const out = [];
      for (const r of requests) {
        const where = `request ${r.index}`;
        if (r.method !== 'POST') out.push(`${where}: method ${r.method}`);
        if (r.path !== path) out.push(`${where}: path ${r.path}`);
        if (r.headers['content-type'] !== 'application/json') {
          out.push(`${where}: Content-Type ${JSON.stringify(r.headers['content-type'])}`);
        }
        if (!r.valid) out.push(`${where}: the pusher SDK says invalid: ${JSON.stringify({ headers: r.headers, body: r.rawBody })}`);
        for (const [name, value] of Object.entries(expectHeaders)) {
          if (r.headers[name.toLowerCase()] !== value) {
            out.push(`${where}: header ${name} is ${JSON.stringify(r.headers[name.toLowerCase()])}, not ${JSON.stringify(value)}`);
          }
        }
        if (r.valid) {
          const t = r.time.getTime();
          if (!Number.isInteger(JSON.parse(r.rawBody).time_ms) || Math.abs(r.at - t) > 120_000) {
            out.push(`${where}: time_ms ${JSON.parse(r.rawBody).time_ms} vs received at ${r.at}`);
          }
          if (!Array.isArray(r.events) || r.events.length === 0) out.push(`${where}: no events`);
        }
      }
      return out;
    },
    listening: () => isListening,
    listen() {
      if (isListening) return Promise.resolve();
      return new Promise((resolvePromise, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          isListening = true;
          resolvePromise();
        });
      });
    },
    close() {
      if (!isListening) return Promise.resolve();
      isListening = false;
      return new Promise((resolvePromise) => {
        server.close(() => resolvePromise());
        server.closeAllConnections();
      });
    },
    summary() {
      return requests
        .map((r) => `#${r.index} +${r.at} ${r.method} ${r.path} -> ${r.status}${r.aborted ? ' (sender gone)' : ''} ${r.rawBody}`)
        .join('\n');
    },
  };
  if (listening) await receiver.listen();
  return receiver;
}

/**
 * Receivers, warren servers (with webhook configs), spool directories and
 * pusher-js clients started for one test; `cleanup(failed)` disconnects and
 * stops all of them, removes the directories, and when `failed` prints the
 * servers' output and every request each receiver got.
 *
 * `server({targets, settings, app, shards})` starts warren with `grace_ms`
 * 500 and a fresh spool directory unless `settings` says otherwise; the
 * server gets `spoolDir` and `config`.
 */
export function webhookScope() {
  const receivers = [];
  const servers = [];
  const dirs = [];
  const clients = [];
  const scope = {
    receivers,
    servers,
    async receiver(opts) {
      const r = await startWebhookReceiver(opts);
      receivers.push(r);
      return r;
    },
    async spoolDir() {
      const dir = await mkdtemp(join(tmpdir(), 'warren-webhook-spool-'));
      dirs.push(dir);
      return dir;
    },
    async server({ targets, settings = {}, app = DEFAULT_APP, shards = 2 }) {
      const spoolDir = settings.spool_dir ?? (await scope.spoolDir());
      const config = webhookConfig({ app, targets, settings: { grace_ms: 500, ...settings, spool_dir: spoolDir } });
      const server = await startServer({ config, shards });
      server.spoolDir = spoolDir;
      server.config = config;
      servers.push(server);
      return server;
    },
    open(server, opts) {
      const pusher = createClient(server.port, opts);
      clients.push(pusher);
      return pusher;
    },
    async connect(server, opts) {
      const pusher = scope.open(server, opts);
      await waitForState(pusher, 'connected');
      return pusher;
    },
    disconnectClients() {
      for (const pusher of clients.splice(0)) pusher.disconnect();
    },
    async cleanup(failed = false) {
      scope.disconnectClients();
      if (failed) {
        servers.forEach((s, i) => s.printLog(`server ${i}, port ${s.port}, after a failed test`));
        receivers.forEach((r, i) =>
          process.stderr.write(`\n----- webhook receiver ${i} (${r.url}) -----\n${r.summary()}\n----- end -----\n`),
        );
      }
      await Promise.all(servers.splice(0).map((s) => s.stop()));
      await Promise.all(receivers.splice(0).map((r) => r.close()));
      await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
    },
  };
  return scope;
}

// ---------------------------------------------------------------- nginx in front (deploy/nginx)
//
// nginx terminating TLS in front of warren, run unprivileged from a temp directory with
// deploy/nginx/warren.conf included as it ships (only its ports, upstream address, certificate
// and log paths replaced), a self-signed certificate for `localhost`, and pusher-js / pusher SDK
// clients that go through it over wss:// and https://.

import { execFile } from 'node:child_process';
import { lookup as dnsLookup } from 'node:dns/promises';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** The nginx binary (Debian's package; override with NGINX). */
export const NGINX_BIN = process.env.NGINX ?? '/usr/sbin/nginx';
/** The shipped nginx site configuration. */
export const NGINX_SITE_CONF = join(REPO_ROOT, 'deploy', 'nginx', 'warren.conf');

/** Run a command; resolve with stdout, reject with its stderr. */
function run(file, args) {
  return new Promise((resolvePromise, reject) => {
    execFile(file, args, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      else resolvePromise(stdout);
    });
  });
}

/**
 * A self-signed certificate for `localhost` (RSA 2048, one day) in `dir`.
 * Resolves with { certPath, keyPath, cert (PEM text, usable as a CA) }.
 */
export async function selfSignedCert(dir) {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', keyPath, '-out', certPath,
  ]);
  return { certPath, keyPath, cert: await readFileText(certPath, 'utf8') };
}

/** Replace every occurrence of `from` in `text`, failing when there is none (the file changed). */
function substitute(text, from, to, what) {
  if (!text.includes(from)) {
    throw new Error(`${NGINX_SITE_CONF} no longer contains ${JSON.stringify(from)} (${what}): update the nginx helpers`);
  }
  return text.split(from).join(to);
}

/**
 * deploy/nginx/warren.conf with only deployment-specific strings replaced: the https and http
 * listen lines (on each of `hosts`), the upstream server line (one per entry of `upstreamPorts`,
 * on 127.0.0.1), the certificate paths and the access log directory.
 */
export function templateSiteConf(text, { httpsPort, httpPort, hosts, upstreamPorts, certPath, keyPath, logDir }) {
  const listen = (port, suffix) => hosts.map((h) => `listen ${h.includes(':') ? `[${h}]` : h}:${port}${suffix};`).join(' ');
  let out = text;
  out = substitute(out, 'listen 443 ssl;', listen(httpsPort, ' ssl'), 'https listen');
  out = substitute(out, 'listen 80;', listen(httpPort, ''), 'http listen');
  // The upstream line, options (max_fails=...) kept, once per node.
  const upstream = /^(\s*)server 127\.0\.0\.1:6001( [^;]*)?;/m;
  const line = upstream.exec(out);
  if (!line) throw new Error(`${NGINX_SITE_CONF} no longer has a "server 127.0.0.1:6001 ...;" line: update the nginx helpers`);
  out = out.replace(upstream, upstreamPorts.map((p) => `${line[1]}server 127.0.0.1:${p}${line[2] ?? ''};`).join('\n'));
  out = substitute(out, '/etc/ssl/warren/fullchain.pem', certPath, 'ssl_certificate');
  out = substitute(out, '/etc/ssl/warren/privkey.pem', keyPath, 'ssl_certificate_key');
  out = substitute(out, '/var/log/nginx/', `${logDir}/`, 'access_log');
  return out;
}

/** The addresses `localhost` resolves to here (nginx listens on each, clients use the name). */
async function localhostAddresses() {
  try {
    const all = await dnsLookup('localhost', { all: true });
    const addrs = [...new Set(all.map((a) => a.address))].filter((a) => a === '127.0.0.1' || a === '::1');
    return addrs.length ? addrs : ['127.0.0.1'];
  } catch {
    return ['127.0.0.1'];
  }
}

/** Resolve true once a TCP connection to 127.0.0.1:`port` is accepted. */
function tcpOpen(port) {
  return new Promise((resolvePromise) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.once('error', () => resolvePromise(false));
  });
}

/**
 * Start nginx (master + one worker, `daemon off`, everything under a fresh temp directory) with
 * deploy/nginx/warren.conf in front of the warren nodes on `upstreamPorts`, and wait until its
 * https port accepts connections (`workerConnections`: nginx's worker_connections, 1024 by
 * default; each proxied WebSocket takes two). Returns
 * { httpsPort, httpPort, dir, conf (the templated site), cert, agent (an https.Agent that
 * trusts the certificate and verifies it), log(), printLog(reason), running(), stop() }.
 */
export async function startNginx({ upstreamPorts, workerConnections = 1024 }) {
  await access(NGINX_BIN, fsConstants.X_OK).catch(() => {
    throw new Error(
      `no nginx at ${NGINX_BIN}: install it (apt-get install nginx; .ci/run does) or set NGINX to its path`,
    );
  });
  const dir = await mkdtemp(join(tmpdir(), 'warren-nginx-'));
  const { certPath, keyPath, cert } = await selfSignedCert(dir);
  const [httpsPort, httpPort] = [await freePort(), await freePort()];
  const conf = templateSiteConf(await readFileText(NGINX_SITE_CONF, 'utf8'), {
    httpsPort,
    httpPort,
    hosts: await localhostAddresses(),
    upstreamPorts,
    certPath,
    keyPath,
    logDir: dir,
  });
  await writeFile(join(dir, 'warren.conf'), conf);
  const root = process.getuid?.() === 0;
  await writeFile(
    join(dir, 'nginx.conf'),
    `# written by tests/node/helpers.mjs (startNginx)
${root ? 'user root;  # workers would otherwise switch to nobody, who cannot enter this 0700 directory' : ''}
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections ${workerConnections}; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${dir}/warren.conf;
}
`,
  );

  // Its own process group, so that the master and its workers can be signalled together.
  const child = spawn(NGINX_BIN, ['-c', join(dir, 'nginx.conf'), '-p', dir, '-e', join(dir, 'error.log')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const append = (chunk) => {
    output = (output + chunk).slice(-LOG_TAIL_CHARS);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  let exitInfo = null;
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  exited.then((info) => (exitInfo = info));
  const spawnError = new Promise((r) => child.once('error', r));
  const running = () => exitInfo === null && child.pid !== undefined;
  const killGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  const onExit = () => killGroup('SIGKILL');
  process.once('exit', onExit);

  const errorLog = async () => readFileText(join(dir, 'error.log'), 'utf8').catch(() => '');
  const nginx = {
    pid: child.pid,
    httpsPort,
    httpPort,
    dir,
    conf,
    cert,
    agent: new HttpsAgent({ ca: cert, rejectUnauthorized: true, keepAlive: true }),
    running,
    log: async () => `${output}${await errorLog()}`,
    async printLog(reason) {
      process.stderr.write(`\n----- nginx output and error.log (${reason}) -----\n${await nginx.log()}\n----- end -----\n`);
    },
    /** Fast shutdown (SIGTERM to the master, which stops its workers), then the whole group is killed. */
    async stop() {
      nginx.agent.destroy();
      if (running()) {
        killGroup('SIGTERM');
        if ((await Promise.race([exited, deadline(STOP_TIMEOUT_MS).then(() => 'timeout')])) === 'timeout') {
          await nginx.printLog(`did not exit ${STOP_TIMEOUT_MS} ms after SIGTERM, killing`);
        }
      }
      killGroup('SIGKILL');
      process.removeListener('exit', onExit);
      await rm(dir, { recursive: true, force: true });
      return exitInfo;
    },
  };

  try {
    await Promise.race([
      waitFor(() => tcpOpen(httpsPort), STARTUP_TIMEOUT_MS, `nginx accepting on port ${httpsPort}`),
      spawnError.then((e) => {
        throw new Error(`cannot start ${NGINX_BIN}: ${e.message}`);
      }),
      exited.then(({ code, signal }) => {
        throw new Error(`nginx exited during start-up (code ${code}, signal ${signal})`);
      }),
    ]);
  } catch (e) {
    await nginx.printLog('start-up failed');
    await nginx.stop();
    throw e;
  }
  return nginx;
}

/**
 * A pusher-js client that connects through nginx over wss://localhost:`port`. pusher-js's Node
 * build (faye-websocket) takes no TLS options, so the caller must trust the self-signed
 * certificate process-wide (NODE_TLS_REJECT_UNAUTHORIZED=0).
 */
export function createTlsClient(port, { app = DEFAULT_APP, user, secretFor } = {}) {
  return new Pusher(app.key, {
    wsHost: 'localhost',
    wssPort: port,
    forceTLS: true,
    // pusher-js's default strategy with forceTLS only tries its 'ws' transport (over TLS);
    // enabledTransports: ['wss'] alone leaves it nothing to try (state 'failed').
    enabledTransports: ['ws', 'wss'],
    disableStats: true,
    cluster: 'mt1',
    channelAuthorization: { customHandler: localAuthorizer({ app, user, secretFor }) },
  });
}

/** The `pusher` server SDK pointed at nginx's https port, verifying its certificate with `agent`. */
export function tlsRestClient(port, agent, app = DEFAULT_APP) {
  return new PusherRest({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: 'localhost',
    port: String(port),
    useTLS: true,
    agent,
  });
}

/** GET https://localhost:`port``path` with `agent`; resolves with { status, headers, text }. */
export function httpsGet(port, path, agent) {
  return new Promise((resolvePromise, reject) => {
    const req = httpsRequest({ host: 'localhost', port, path, method: 'GET', agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolvePromise({ status: res.statusCode, headers: res.headers, text }));
      res.on('error', reject);
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`GET https://localhost:${port}${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}
