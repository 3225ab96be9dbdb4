// Cross-node publish-to-receive latency: a pusher-js client on node A, `POST /events` on node B.
// Each event carries its send time; prints p50/p90/p99/max in ms. Low rate: this measures the
// path (API -> Redis -> other node -> socket), not throughput. With `--user`, the client signs in
// (the script signs `user_data` itself with the SDK's authenticateUser) and the events go through
// `sendToUser` to `#server-to-user-latency-user` instead of a public channel.
//
//   node loadtest/scripts/cluster-latency.mjs --a 6501 --b 6502 [--count 2000] [--rate 200] [--user]
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const [portA, portB] = [arg('a', 6501), arg('b', 6502)];
const count = arg('count', 2000);
const rate = arg('rate', 200);

const toUser = process.argv.includes('--user');
const USER = 'latency-user';
const api = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(portB), useTLS: false });
const client = new Pusher('app-key', {
  wsHost: '127.0.0.1', wsPort: portA, forceTLS: false, enabledTransports: ['ws'],
  disableStats: true, cluster: 'mt1',
  userAuthentication: {
    customHandler: ({ socketId }, callback) => callback(null, api.authenticateUser(socketId, { id: USER })),
  },
});
let receiver;
if (toUser) {
  client.signin();
  // Signed in once pusher-js has subscribed to its #server-to-user- channel.
  await new Promise((resolve) => client.connection.bind('message', (m) => {
    if (m.event === 'pusher_internal:subscription_succeeded' && m.channel === `#server-to-user-${USER}`) resolve();
  }));
  receiver = client.user;
} else {
  receiver = client.subscribe('latency');
  await new Promise((resolve) => receiver.bind('pusher:subscription_succeeded', resolve));
}
const send = (data) => (toUser ? api.sendToUser(USER, 'tick', data) : api.trigger('latency', 'tick', data));

const samples = [];
receiver.bind('tick', ({ sent }) => samples.push(Number(process.hrtime.bigint() - BigInt(sent)) / 1e6));
for (let i = 0; i < count; i++) {
  await send({ sent: process.hrtime.bigint().toString() });
  await new Promise((resolve) => setTimeout(resolve, 1000 / rate));
}
await new Promise((resolve) => setTimeout(resolve, 1000));
client.disconnect();
if (samples.length === 0) {
  console.log(`received 0/${count}: is the cluster link up on both nodes?`);
  process.exit(1);
}
samples.sort((x, y) => x - y);
const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))].toFixed(3);
console.log(`received ${samples.length}/${count}; latency ms p50 ${at(0.5)} p90 ${at(0.9)} p99 ${at(0.99)} max ${at(1)}`);
