// deploy/nginx/warren.conf, as shipped, in front of warren: nginx terminates TLS (a self-signed
// certificate for localhost) and proxies the WebSocket endpoint and the HTTP API. pusher-js
// connects over wss://, the `pusher` SDK publishes over https://, both through nginx.
//
// CI installs nginx (.ci/run: apt-get install nginx); without it this file fails and says so.

import { ok, strictEqual, match } from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  DEFAULT_APP,
  appsConfig,
  E2E,
  createTlsClient,
  errorCode,
  httpsGet,
  nextOf,
  probe,
  record,
  startNginx,
  startServer,
  subscribed,
  tlsRestClient,
  uniqueName,
  waitFor,
  waitForState,
} from './helpers.mjs';

// pusher-js's Node transport (faye-websocket) calls tls.connect without TLS options, so the
// self-signed certificate can only be accepted process-wide. Everything else here (the SDK,
// /health) verifies the certificate with an agent that trusts it.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

/** pusher-js clients over wss:// to nginx on `port`, disconnected by `disconnectAll()`. */
function tlsClients() {
  const clients = [];
  return {
    open(port, opts) {
      const pusher = createTlsClient(port, opts);
      clients.push(pusher);
      return pusher;
    },
    async connect(port, opts) {
      const pusher = this.open(port, opts);
      await waitForState(pusher, 'connected', 10_000);
      return pusher;
    },
    disconnectAll() {
      for (const pusher of clients.splice(0)) pusher.disconnect();
    },
  };
}

/** Open WebSocket connections on a warren node, from its /metrics (summed over shards). */
async function connectionsOn(server) {
  const { status, text } = await probe(server.port, '/metrics');
  if (status !== 200) return -1;
  return [...text.matchAll(/^warren_connections\{shard="\d+"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

describe('nginx (deploy/nginx/warren.conf) in front of one node', E2E, () => {
  let server;
  let nginx;
  const clients = tlsClients();

  before(async () => {
    server = await startServer();
    try {
      nginx = await startNginx({ upstreamPorts: [server.port] });
    } catch (e) {
      await server.stop();
      throw e;
    }
  });
  afterEach(async (t) => {
    clients.disconnectAll();
    if (t.passed === false) {
      server?.printLog(`after failed test "${t.name}"`);
      await nginx?.printLog(`after failed test "${t.name}"`);
    }
  });
  after(async () => {
    await nginx?.stop();
    await server?.stop();
  });

  test('/health, /ready and /metrics over https; plain http is redirected', async () => {
    const health = await httpsGet(nginx.httpsPort, '/health', nginx.agent);
    strictEqual(health.status, 200, health.text);
    const ready = await httpsGet(nginx.httpsPort, '/ready', nginx.agent);
    strictEqual(ready.status, 200, ready.text);
    // The test connects from 127.0.0.1, which the config allows.
    const metrics = await httpsGet(nginx.httpsPort, '/metrics', nginx.agent);
    strictEqual(metrics.status, 200);
    match(metrics.text, /^warren_connections_opened_total \d+$/m);

    const res = await fetch(`http://127.0.0.1:${nginx.httpPort}/health`, { redirect: 'manual' });
    strictEqual(res.status, 301);
    match(res.headers.get('location'), /^https:\/\/127\.0\.0\.1\/health$/);
  });

  test('a wss:// client on a private channel gets an event published over https:// with the SDK', async () => {
    const pusher = await clients.connect(nginx.httpsPort);
    match(pusher.connection.socket_id, /^\d+\.\d+$/);
    const name = uniqueName('private-nginx');
    const channel = await subscribed(pusher, name);
    const got = nextOf(channel, ['greeting'], 5_000);

    const rest = tlsRestClient(nginx.httpsPort, nginx.agent);
    const res = await rest.trigger(name, 'greeting', { hello: 'through nginx' });
    strictEqual(res.status, 200);
    const { data } = await got;
    strictEqual(data.hello, 'through nginx');

    // A query through nginx, on the same keep-alive agent.
    const info = await (await rest.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
    strictEqual(info.occupied, true);
    strictEqual(info.subscription_count, 1);
  });

  test('a client event between two wss:// clients', async () => {
    const name = uniqueName('private-nginx-client');
    const sender = await clients.connect(nginx.httpsPort);
    const receiver = await clients.connect(nginx.httpsPort);
    const senderChannel = await subscribed(sender, name);
    const receiverChannel = await subscribed(receiver, name);
    const echoed = record(senderChannel, 'client-ping');
    const got = nextOf(receiverChannel, ['client-ping'], 5_000);

    ok(senderChannel.trigger('client-ping', { n: 1 }), 'pusher-js refused to send the client event');
    const { data } = await got;
    strictEqual(data.n, 1);
    // And the other way, which also shows the sender never got its own event back.
    const back = nextOf(senderChannel, ['client-pong'], 5_000);
    ok(receiverChannel.trigger('client-pong', { n: 2 }));
    strictEqual((await back).data.n, 2);
    strictEqual(echoed.count, 0, 'the sender received its own client event');
  });
});

describe('nginx in front of two nodes: a stopping node drains to the other', E2E, () => {
  const nodes = [];
  let nginx;
  const clients = tlsClients();

  before(async () => {
    try {
      const config = appsConfig([DEFAULT_APP], { activity_timeout: 120, shutdown_grace: 1 });
      nodes.push(await startServer({ config }), await startServer({ config }));
      nginx = await startNginx({ upstreamPorts: nodes.map((n) => n.port) });
    } catch (e) {
      await Promise.all(nodes.map((n) => n.stop()));
      throw e;
    }
  });
  afterEach(async (t) => {
    clients.disconnectAll();
    if (t.passed === false) {
      nodes.forEach((n, i) => n.printLog(`node ${i} after failed test "${t.name}"`));
      await nginx?.printLog(`after failed test "${t.name}"`);
    }
  });
  after(async () => {
    await nginx?.stop();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  test('clients of a node stopped with SIGTERM get 4200 and reconnect through nginx to the other', async () => {
    const pusher = await clients.connect(nginx.httpsPort);
    const errors = [];
    pusher.connection.bind('error', (e) => errors.push(errorCode(e)));
    const name = uniqueName('private-drain');
    const channel = await subscribed(pusher, name);
    const firstSocket = pusher.connection.socket_id;

    const counts = await waitFor(
      async () => {
        const c = await Promise.all(nodes.map(connectionsOn));
        return c[0] + c[1] === 1 ? c : null;
      },
      5_000,
      'the client on exactly one node',
    );
    const [gone, survivor] = counts[0] === 1 ? [nodes[0], nodes[1]] : [nodes[1], nodes[0]];

    const resubscribed = nextOf(channel, ['pusher:subscription_succeeded'], 15_000);
    const info = await gone.stop();
    strictEqual(info.code, 0, `the stopped node exited with ${JSON.stringify(info)}`);

    await waitFor(() => pusher.connection.socket_id !== firstSocket && pusher.connection.state === 'connected', 15_000,
      `a new connection (state ${pusher.connection.state})`);
    ok(errors.includes(4200), `close code 4200 reached the client through nginx (errors: ${JSON.stringify(errors)})`);
    await resubscribed;
    strictEqual(await connectionsOn(survivor), 1);

    // Publishing through nginx reaches it on the surviving node.
    const got = nextOf(channel, ['after-drain'], 5_000);
    await tlsRestClient(nginx.httpsPort, nginx.agent, DEFAULT_APP).trigger(name, 'after-drain', { ok: true });
    strictEqual((await got).data.ok, true);
  });
});
