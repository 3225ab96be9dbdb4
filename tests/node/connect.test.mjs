// Connection and public channels: the handshake gives a well-formed socket id,
// a public subscription succeeds, and one connection can hold many channels.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { E2E, subscribed, uniqueName, useServer } from './helpers.mjs';

const ctx = useServer();

test('connects and gets a socket id of the form digits.digits', E2E, async () => {
  const pusher = await ctx.connect();
  assert.equal(pusher.connection.state, 'connected');
  assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
});

test('two connections get different socket ids', E2E, async () => {
  const [a, b] = await Promise.all([ctx.connect(), ctx.connect()]);
  assert.notEqual(a.connection.socket_id, b.connection.socket_id);
});

test('public channel subscription succeeds', E2E, async () => {
  const pusher = await ctx.connect();
  const channel = await subscribed(pusher, uniqueName('public-news'));
  assert.equal(channel.subscribed, true);
});

test('one connection subscribes to 50 public channels', E2E, async () => {
  const pusher = await ctx.connect();
  const names = Array.from({ length: 50 }, () => uniqueName('many'));
  const channels = await Promise.all(names.map((name) => subscribed(pusher, name, 10_000)));
  assert.equal(channels.filter((c) => c.subscribed).length, 50);
  assert.equal(pusher.connection.state, 'connected');
});
