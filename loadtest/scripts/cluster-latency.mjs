// Cross-node publish-to-receive latency: a pusher-js client on node A, `POST /events` on node B.
// Each event carries its send time; prints p50/p90/p99/max in ms. Low rate: this measures the
// path (API -> Redis -> other node -> socket), not throughput.
//
//   node loadtest/scripts/cluster-latency.mjs --a 6501 --b 6502 [--count 2000] [--rate 200]
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const [portA, portB] = [arg('a', 6501), arg('b', 6502)];
const count = arg('count', 2000);
const rate = arg('rate', 200);

const client = new Pusher('app-key', {
  wsHost: '127.0.0.1', wsPort: portA, forceTLS: false, enabledTransports: ['ws'],
  disableStats: true, cluster: 'mt1',
});
const api = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(portB), useTLS: false });
const channel = client.subscribe('latency');
await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));

const samples = [];
channel.bind('tick', ({ sent }) => samples.push(Number(process.hrtime.bigint() - BigInt(sent)) / 1e6));
for (let i = 0; i < count; i++) {
  await api.trigger('latency', 'tick', { sent: process.hrtime.bigint().toString() });
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
