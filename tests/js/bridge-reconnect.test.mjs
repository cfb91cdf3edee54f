// The worker's bridge socket reconnects (extension/background/bridge.js; DESIGN.md "Extension":
// reconnect with exponential backoff capped at 30 s). A fake WebSocket and node:test's mock timers:
// no real sleeps, no real socket.
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';

import { storageArea } from './storage-fake.mjs';

const local = new Map();
const session = new Map();
globalThis.chrome = { storage: { local: storageArea(local), session: storageArea(session) } };

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.listeners = {};
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.made.push(this);
  }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  send(frame) { this.sent.push(JSON.parse(frame)); }
  close(code = 1000) { this.closedWith = code; this.drop(code); }
  /** The connection ends (refused, dropped by the bridge, or closed by us). */
  drop(code = 1006) {
    this.readyState = FakeWebSocket.CLOSED;
    for (const fn of this.listeners.close ?? []) fn({ code });
  }
}
globalThis.WebSocket = FakeWebSocket;

const { connect, disconnect, reconnectNow } = await import('../../extension/background/bridge.js');
const { getStatus } = await import('../../extension/background/state.js');
const { STATUS } = await import('../../extension/common/messages.js');

/** Let the worker's awaits (fake storage) settle; setImmediate is not mocked. */
const settle = () => new Promise((resolve) => setImmediate(resolve));
const sockets = () => FakeWebSocket.made.length;
const last = () => FakeWebSocket.made.at(-1);

beforeEach(async () => {
  local.clear();
  session.clear();
  local.set('token', 'tok-1');
  local.set('bridgeKey', 'k'.repeat(43));
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  await reconnectNow(); // backoff back to 1 s, and a socket open (connecting)
  await settle();
});

afterEach(async () => {
  disconnect();
  await settle();
  mock.timers.reset();
  mock.restoreAll();
  FakeWebSocket.made.length = 0;
});

test('the socket goes to the paired bridge URL', () => {
  assert.equal(sockets(), 1);
  assert.equal(last().url, 'ws://127.0.0.1:8737/v1/rpc');
});

test('after a close the worker reconnects on a timer whose delay doubles up to 30 s', async () => {
  mock.method(Math, 'random', () => 0.5); // no jitter: 0.8 + 0.5 * 0.4 = 1
  const expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  for (const delay of expected) {
    const before = sockets();
    last().drop();
    await settle();
    assert.equal(getStatus(), STATUS.UNREACHABLE);
    mock.timers.tick(delay - 1);
    await settle();
    assert.equal(sockets(), before, `no reconnect before ${delay} ms`);
    mock.timers.tick(1);
    await settle();
    assert.equal(sockets(), before + 1, `reconnected after ${delay} ms`);
    assert.equal(getStatus(), STATUS.UNREACHABLE, 'still shown as unreachable while it tries again');
  }
});

test('the delay has ±20 % jitter', async () => {
  for (const [random, delay] of [[0, 800], [0.999, 1200]]) { // 1000 × (0.8 + 0.999 × 0.4) = 1199.6
    await reconnectNow();
    await settle();
    mock.method(Math, 'random', () => random);
    const before = sockets();
    last().drop();
    await settle();
    mock.timers.tick(delay - 1);
    await settle();
    assert.equal(sockets(), before, `not before ${delay} ms (random ${random})`);
    mock.timers.tick(1);
    await settle();
    assert.equal(sockets(), before + 1, `after ${delay} ms (random ${random})`);
  }
});

test('reconnectNow connects at once and resets the backoff', async () => {
  mock.method(Math, 'random', () => 0.5);
  for (let i = 0; i < 3; i += 1) { // 1 s, 2 s, 4 s: the next wait would be 8 s
    last().drop();
    await settle();
    mock.timers.tick(1000 * 2 ** i);
    await settle();
  }
  last().drop();
  await settle();
  const before = sockets();
  await reconnectNow();
  await settle();
  assert.equal(sockets(), before + 1, 'a new socket without any timer firing');
  mock.timers.tick(60000);
  await settle();
  assert.equal(sockets(), before + 1, 'the pending reconnect timer was cancelled');
  last().drop();
  await settle();
  mock.timers.tick(1000);
  await settle();
  assert.equal(sockets(), before + 2, 'the backoff starts again at 1 s');
});

test('connect() opens one socket only; disconnect() cancels the pending reconnect', async () => {
  await connect();
  await connect();
  assert.equal(sockets(), 1);
  last().drop();
  await settle();
  disconnect();
  mock.timers.tick(60000);
  await settle();
  assert.equal(sockets(), 1);
});

test('without a token there is nothing to reconnect to: not paired, no timer', async () => {
  local.delete('token');
  last().drop(4401);
  await settle();
  assert.equal(getStatus(), STATUS.NOT_PAIRED);
  mock.timers.tick(120000);
  await settle();
  assert.equal(sockets(), 1);
});

test('a close with 4401 while a token is kept retries it', async () => {
  mock.method(Math, 'random', () => 0.5);
  last().drop(4401);
  await settle();
  mock.timers.tick(1000);
  await settle();
  assert.equal(sockets(), 2);
});

test('a socket that cannot even be created is retried with the same backoff', async () => {
  mock.method(Math, 'random', () => 0.5);
  disconnect();
  await settle();
  const Real = globalThis.WebSocket;
  globalThis.WebSocket = class { constructor() { throw new Error('refused'); } };
  try {
    await reconnectNow();
    await settle();
    assert.equal(getStatus(), STATUS.UNREACHABLE);
  } finally {
    globalThis.WebSocket = Real;
  }
  mock.timers.tick(999);
  await settle();
  assert.equal(sockets(), 1);
  mock.timers.tick(1);
  await settle();
  assert.equal(sockets(), 2);
});
