// A bare WebSocket client over a TCP socket, for tests that need a client to misbehave in ways
// pusher-js never does: stop reading (never answer a close frame), or send frames faster than
// any browser would. RFC 6455 framing of masked text frames only; what it reads is parsed just
// enough to find Pusher events in unfragmented text frames.

import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { DEFAULT_APP } from './helpers.mjs';

/** A masked text frame (client to server) carrying `text`. */
export function textFrame(text) {
  const payload = Buffer.from(text, 'utf8');
  const mask = randomBytes(4);
  let header;
  if (payload.length < 126) {
    header = Buffer.from([0x81, 0x80 | payload.length]);
  } else if (payload.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x81;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    throw new Error('frame too large for this helper');
  }
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([header, mask, masked]);
}

/** Unmasked server frames in `buffer`: [{opcode, text}], and the bytes left over. */
function parseFrames(buffer) {
  const frames = [];
  let at = 0;
  while (buffer.length - at >= 2) {
    const opcode = buffer[at] & 0x0f;
    let length = buffer[at + 1] & 0x7f;
    let start = at + 2;
    if (length === 126) {
      if (buffer.length - at < 4) break;
      length = buffer.readUInt16BE(at + 2);
      start = at + 4;
    } else if (length === 127) {
      if (buffer.length - at < 10) break;
      length = Number(buffer.readBigUInt64BE(at + 2));
      start = at + 10;
    }
    if (buffer.length < start + length) break;
    frames.push({ opcode, text: buffer.subarray(start, start + length).toString('utf8') });
    at = start + length;
  }
  return { frames, rest: buffer.subarray(at) };
}

/**
 * Opens a raw Pusher connection to warren on `port`; resolves once `pusher:connection_established`
 * arrived. Returns { socket, send(object), subscribe(channel) (resolves on
 * pusher_internal:subscription_succeeded), stopReading(), events (every Pusher event read),
 * destroy() }.
 */
export function rawPusher(port, { app = DEFAULT_APP } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const key = randomBytes(16).toString('base64');
    let head = Buffer.alloc(0);
    let upgraded = false;
    let pending = Buffer.alloc(0);
    const events = [];
    const waiters = [];
    const client = {
      socket,
      events,
      send: (object) => socket.write(textFrame(JSON.stringify(object))),
      subscribe(channel) {
        const done = new Promise((res) =>
          waiters.push({ match: (e) => e.event === 'pusher_internal:subscription_succeeded' && e.channel === channel, res }),
        );
        client.send({ event: 'pusher:subscribe', data: { channel } });
        return done;
      },
      /** From now on nothing is read: a close frame from warren is never seen, never answered. */
      stopReading() {
        socket.pause();
        socket.removeAllListeners('data');
      },
      destroy: () => socket.destroy(),
    };
    const onEvent = (event) => {
      events.push(event);
      for (const [i, w] of waiters.entries()) {
        if (w.match(event)) {
          waiters.splice(i, 1);
          w.res(event);
          break;
        }
      }
      if (event.event === 'pusher:connection_established') resolve(client);
    };
    socket.once('error', reject);
    socket.on('connect', () => {
      socket.write(
        `GET /app/${app.key}?protocol=7&client=raw&version=1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk) => {
      if (!upgraded) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!head.subarray(0, 12).toString().includes('101')) {
          reject(new Error(`no upgrade: ${head.toString()}`));
          return;
        }
        upgraded = true;
        chunk = head.subarray(end + 4);
      }
      const { frames, rest } = parseFrames(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const frame of frames) {
        if (frame.opcode !== 1) continue;
        try {
          const event = JSON.parse(frame.text);
          onEvent(event);
        } catch {
          // not a Pusher event
        }
      }
    });
  });
}
