// Cache channels (PROTOCOL.md §2.8, §5.2): the last event published through the HTTP API to a
// cache-, private-cache-, presence-cache- channel reaches each new subscriber right after
// subscription_succeeded; a channel with nothing cached gets `pusher:cache_miss`; client events
// and events over the payload limit are not cached; entries expire after `cache_ttl_secs`;
// `GET /channels/{name}?info=cache` through the `pusher` SDK's `get`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEFAULT_APP,
  E2E,
  appsConfig,
  nextOf,
  restClient,
  shardOf,
  sleep,
  subscribed,
  uniqueName,
  useServer,
  waitFor,
  webhookScope,
} from './helpers.mjs';

const TTL_SECS = 2;
const ctx = useServer({
  config: appsConfig([{ ...DEFAULT_APP, cache_ttl_secs: TTL_SECS }]),
  shards: 3,
});
const rest = () => restClient(ctx.server.port);

/** Every message `pusher` receives on `channelName`, in arrival order (`pusher_internal:*` included). */
function messagesOn(pusher, channelName) {
  const seen = [];
  pusher.connection.bind('message', (m) => {
    if (m.channel === channelName) seen.push({ event: m.event, data: m.data });
  });
  return seen;
}

/** Subscribe with a fresh client and resolve with the messages of its first second on `channelName`. */
async function firstMessages(channelName, opts = {}) {
  const pusher = await ctx.connect(opts);
  const seen = messagesOn(pusher, channelName);
  await subscribed(pusher, channelName);
  await waitFor(() => seen.length >= 2, 3_000, `replay or cache_miss on ${channelName} (saw ${JSON.stringify(seen)})`);
  await sleep(300);
  return { pusher, seen };
}

const SUCCEEDED = 'pusher_internal:subscription_succeeded';

test('a new subscriber gets the last API event right after subscription_succeeded, exactly once', E2E, async () => {
  const channel = uniqueName('cache-score');
  await rest().trigger(channel, 'score', { goals: 1 });
  await rest().trigger(channel, 'score', { goals: 2 });
  const { seen } = await firstMessages(channel);
  assert.deepEqual(seen.map((m) => m.event), [SUCCEEDED, 'score']);
  assert.deepEqual(seen[1].data, { goals: 2 });

  // pusher-js hands the replay to the channel's binding like any event; later events are live.
  const pusher = await ctx.connect();
  const channelObj = pusher.subscribe(channel);
  const replayed = await nextOf(channelObj, ['score'], 3_000);
  assert.deepEqual(replayed.data, { goals: 2 });
  const live = nextOf(channelObj, ['score'], 3_000);
  await rest().trigger(channel, 'score', { goals: 3 });
  assert.deepEqual((await live).data, { goals: 3 });
});

test('a cache channel with nothing cached sends pusher:cache_miss, which pusher-js passes to the channel', E2E, async () => {
  const channel = uniqueName('cache-empty');
  const pusher = await ctx.connect();
  const ch = pusher.subscribe(channel);
  const got = await nextOf(ch, ['pusher:cache_miss', 'pusher:subscription_error'], 3_000);
  assert.equal(got.event, 'pusher:cache_miss');
  // A channel that is not a cache channel gets neither.
  const plain = uniqueName('plain');
  await rest().trigger(plain, 'e', { x: 1 });
  const { seen } = await (async () => {
    const p = await ctx.connect();
    const s = messagesOn(p, plain);
    await subscribed(p, plain);
    await sleep(500);
    return { seen: s };
  })();
  assert.deepEqual(seen.map((m) => m.event), [SUCCEEDED]);
});

test('private-cache and presence-cache channels replay after their subscription_succeeded', E2E, async () => {
  const priv = uniqueName('private-cache-doc');
  await rest().trigger(priv, 'saved', { v: 7 });
  const a = await firstMessages(priv);
  assert.deepEqual(a.seen.map((m) => m.event), [SUCCEEDED, 'saved']);
  assert.deepEqual(a.seen[1].data, { v: 7 });

  const room = uniqueName('presence-cache-room');
  await rest().trigger(room, 'topic', { t: 'cats' });
  const b = await firstMessages(room, { user: { id: 'u1' } });
  assert.deepEqual(b.seen.map((m) => m.event), [SUCCEEDED, 'topic']);
  assert.deepEqual(b.seen[1].data, { t: 'cats' });
  // pusher-js saw the roster before the replay.
  assert.equal(b.pusher.channel(room).members.count, 1);
});

test('client events are never cached; the API event before them stays the replay', E2E, async () => {
  const channel = uniqueName('private-cache-chat');
  await rest().trigger(channel, 'state', { s: 'api' });
  const sender = await ctx.connect();
  const ch = await subscribed(sender, channel);
  assert.equal(ch.trigger('client-typing', { s: 'client' }), true);
  await sleep(300);
  const { seen } = await firstMessages(channel);
  assert.deepEqual(seen.map((m) => m.event), [SUCCEEDED, 'state']);

  const fresh = uniqueName('private-cache-clientonly');
  const s2 = await ctx.connect();
  const ch2 = await subscribed(s2, fresh);
  ch2.trigger('client-x', { s: 'client' });
  await sleep(300);
  const after = await firstMessages(fresh);
  assert.deepEqual(after.seen.map((m) => m.event), [SUCCEEDED, 'pusher:cache_miss']);
});

test('an event over the payload limit is refused (413) and not cached', E2E, async () => {
  const channel = uniqueName('cache-big');
  await rest().trigger(channel, 'small', { n: 1 });
  await assert.rejects(rest().trigger(channel, 'big', { blob: 'x'.repeat(11_000) }), (e) => e.status === 413);
  const { seen } = await firstMessages(channel);
  assert.deepEqual(seen.map((m) => m.event), [SUCCEEDED, 'small']);
});

test('GET /channels/{name}?info=cache through the SDK: the data string and its ttl, null when empty', E2E, async () => {
  const channel = uniqueName('cache-info');
  const get = async (name, info = 'cache') => rest().get({ path: `/channels/${name}`, params: { info } });
  assert.deepEqual(await (await get(channel)).json(), { occupied: false, cache: null });
  await rest().trigger(channel, 'e', { p: 1 });
  const body = await waitFor(async () => {
    const b = await (await get(channel)).json();
    return b.cache ? b : null;
  }, 3_000, 'a cached event in info=cache');
  assert.equal(body.cache.data, JSON.stringify({ p: 1 }));
  assert.ok(body.cache.ttl >= 1 && body.cache.ttl <= TTL_SECS, `ttl ${body.cache.ttl}`);
  await assert.rejects(get(uniqueName('not-cache')), (e) => e.status === 400);
});

test('a cached event expires after cache_ttl_secs', E2E, async () => {
  const channel = uniqueName('cache-ttl');
  await rest().trigger(channel, 'e', { p: 1 });
  await sleep(TTL_SECS * 1000 + 1_200);
  const { seen } = await firstMessages(channel);
  assert.deepEqual(seen.map((m) => m.event), [SUCCEEDED, 'pusher:cache_miss']);
});

test('the cache_miss webhook goes once per channel however many subscribers miss, and passes the SDK validator', E2E, async () => {
  const scope = webhookScope();
  try {
    const rx = await scope.receiver();
    const hooked = await scope.server({ targets: [{ url: rx.url, events: ['cache_miss'] }], shards: 3 });
    const channel = uniqueName('cache-hooked');
    // Subscribers on every shard miss (the kernel spreads connections over the shards).
    const shards = new Set();
    for (let i = 0; i < 30 && shards.size < 3; i++) {
      const pusher = await scope.connect(hooked);
      shards.add(shardOf(pusher.connection.socket_id));
      await nextOf(pusher.subscribe(channel), ['pusher:cache_miss'], 3_000);
    }
    assert.equal(shards.size, 3, 'subscribers on every shard');
    const [entry] = await rx.waitForEvents((e) => e.channel === channel, 1);
    assert.deepEqual(entry.event, { name: 'cache_miss', channel });
    await sleep(800);
    assert.equal(rx.events((e) => e.channel === channel).length, 1, 'one cache_miss webhook');
    assert.deepEqual(rx.problems(), []);
    // A channel with a cached event sends none.
    const full = uniqueName('cache-hooked-full');
    await restClient(hooked.port).trigger(full, 'e', {});
    const pusher = await scope.connect(hooked);
    await nextOf(pusher.subscribe(full), ['e'], 3_000);
    await sleep(800);
    assert.equal(rx.events((e) => e.channel === full).length, 0);
  } finally {
    await scope.cleanup();
  }
});
