// The worker's session with the bridge (extension/background/bridge.js; issue 8 item 9): the bridge
// proves its key before the token goes out, pairing sends a proof and never the code, calls and
// notifications over JSON-RPC 2.0, call timeouts and pings. A fake WebSocket plays the bridge with a
// real Ed25519 key (WebCrypto); timers are node:test mock timers.
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';

import { storageArea } from './storage-fake.mjs';

import { b64uDecode, b64uEncode, pairProof, proofMessage } from '../../extension/common/bridge-proof.js';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const ORIGIN = `chrome-extension://${ID}`;
const HOST = '127.0.0.1:8737';
const CODE = 'K7QF-M2XP';

const local = new Map();
const session = new Map();
globalThis.chrome = { storage: { local: storageArea(local), session: storageArea(session) } };
globalThis.location = { origin: ORIGIN };

async function keyPair() {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  return { pair, key: b64uEncode(new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey))) };
}
const BRIDGE = await keyPair();
const SQUATTER = await keyPair();

/** The fake bridge: how it answers each method (tests replace entries). */
let bridge;
function honestBridge() {
  return {
    signer: BRIDGE,
    code: CODE,
    token: 'tok-1',
    challenge: null,
    async hello(params) {
      this.challenge = b64uDecode(params.challenge, 32);
      const signature = await crypto.subtle.sign({ name: 'Ed25519' }, this.signer.pair.privateKey, proofMessage(this.challenge, ORIGIN, HOST));
      return { v: 1, key: this.signer.key, signature: b64uEncode(new Uint8Array(signature)) };
    },
    async auth(params) { return { ok: params.token === this.token }; },
    async pair(params) {
      const keyBytes = b64uDecode(this.signer.key, 32);
      const expected = b64uEncode(await pairProof(this.code, 'client', this.challenge, keyBytes));
      if (params.proof !== expected) throw Object.assign(new Error('bad proof'), { code: -32001 });
      return { token: 'tok-new', bridge_key: this.signer.key, proof: b64uEncode(await pairProof(this.code, 'bridge', this.challenge, keyBytes)) };
    },
    async status() {
      return { address: '0xAbC', did: 'did:pkh:x', installation_id: 'inst', unread: 3, relay: { url: 'ws://relay', connected: 1 }, version: '1.2' };
    },
    async ping() { return 'pong'; },
  };
}

class FakeWebSocket {
  static OPEN = 1;
  static CLOSED = 3;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.made.push(this);
  }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  emit(type, event) { for (const fn of this.listeners[type] ?? []) fn(event); }
  open() { this.readyState = FakeWebSocket.OPEN; this.emit('open', {}); }
  receive(data) { this.emit('message', { data: typeof data === 'string' ? data : JSON.stringify(data) }); }
  send(frame) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('not open');
    const msg = JSON.parse(frame);
    this.sent.push(msg);
    const handler = bridge[msg.method];
    if (!handler) return; // a bridge that never answers this
    Promise.resolve(handler.call(bridge, msg.params ?? {})).then(
      (result) => { if (this.readyState === FakeWebSocket.OPEN) this.receive({ jsonrpc: '2.0', id: msg.id, result }); },
      (error) => { this.receive({ jsonrpc: '2.0', id: msg.id, error: { code: error.code, message: error.message, data: error.data } }); },
    );
  }
  close(code = 1000) {
    this.closedWith = code;
    this.readyState = FakeWebSocket.CLOSED;
    this.emit('close', { code });
  }
}
globalThis.WebSocket = FakeWebSocket;

const { CLOSE_NOT_VERIFIED, CLOSE_UNAUTHORIZED, RpcError, call, connect, disconnect, isConnected, onNotification, pair, reconnectNow } =
  await import('../../extension/background/bridge.js');
const { getStatus, setSession } = await import('../../extension/background/state.js');
const { STATUS } = await import('../../extension/common/messages.js');

/** Wait (by turns of the event loop, never by the clock) until `cond()` holds. */
async function until(cond, what) {
  for (let i = 0; i < 20000; i += 1) {
    if (cond()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`never happened: ${what}`);
}
const settle = async () => { for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve)); };
const last = () => FakeWebSocket.made.at(-1);
const methods = (sock) => sock.sent.map((m) => m.method);

beforeEach(async () => {
  local.clear();
  session.clear();
  local.set('token', 'tok-1');
  local.set('bridgeKey', BRIDGE.key);
  bridge = honestBridge();
  await setSession({ status: STATUS.CONNECTING }); // what a fresh worker starts with
  session.clear();
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  mock.method(Math, 'random', () => 0.5);
  await reconnectNow();
  await settle();
});

afterEach(async () => {
  disconnect();
  await settle();
  mock.timers.reset();
  mock.restoreAll();
  FakeWebSocket.made.length = 0;
});

async function connected() {
  last().open();
  await until(() => getStatus() === STATUS.CONNECTED, 'connected');
  await until(() => session.get('version') === '1.2', 'status refreshed');
  return last();
}

test('the bridge proves its key before the token goes out; then the worker is connected', async () => {
  assert.equal(getStatus(), STATUS.CONNECTING);
  assert.equal(isConnected(), false);
  const sock = await connected();
  assert.deepEqual(methods(sock), ['hello', 'auth', 'status']);
  assert.equal(sock.sent[0].jsonrpc, '2.0');
  assert.equal(sock.sent[0].params.v, 1);
  assert.equal(b64uDecode(sock.sent[0].params.challenge, 32).length, 32);
  assert.deepEqual(sock.sent[1].params, { token: 'tok-1' });
  assert.equal(isConnected(), true);
  assert.deepEqual(session.get('identity'), { address: '0xAbC', did: 'did:pkh:x', installation_id: 'inst' });
  assert.equal(session.get('unread'), 3);
  assert.deepEqual(session.get('relay'), { url: 'ws://relay', connected: true });
  assert.equal(session.get('lastError'), null);
});

test('each connection gets a fresh challenge', async () => {
  const first = (await connected()).sent[0].params.challenge;
  last().close(1006);
  await settle();
  mock.timers.tick(1000);
  await settle();
  const second = (await connected()).sent[0].params.challenge;
  assert.notEqual(first, second);
});

test('a squatter with another key gets neither the token nor anything else', async () => {
  bridge.signer = SQUATTER;
  const sock = last();
  sock.open();
  await until(() => getStatus() === STATUS.NOT_VERIFIED, 'not verified');
  assert.deepEqual(methods(sock), ['hello']);
  assert.equal(sock.closedWith, CLOSE_NOT_VERIFIED);
  assert.match(session.get('lastError'), /^bridge not verified: a different key/);
  await settle();
  assert.equal(getStatus(), STATUS.NOT_VERIFIED, 'the close keeps "not verified" shown');
  mock.timers.tick(1000);
  await settle();
  assert.equal(FakeWebSocket.made.length, 2, 'and it tries again later');
});

test('a proof signed for another challenge (a replay) is refused', async () => {
  bridge.hello = async () => {
    const old = proofMessage(new Uint8Array(32), ORIGIN, HOST);
    const signature = await crypto.subtle.sign({ name: 'Ed25519' }, BRIDGE.pair.privateKey, old);
    return { v: 1, key: BRIDGE.key, signature: b64uEncode(new Uint8Array(signature)) };
  };
  last().open();
  await until(() => getStatus() === STATUS.NOT_VERIFIED, 'not verified');
  assert.deepEqual(methods(last()), ['hello']);
  assert.match(session.get('lastError'), /a bad signature/);
});

test('no bridge key from pairing: nothing is sent but hello, and the user is told to pair again', async () => {
  local.delete('bridgeKey');
  last().open();
  await until(() => getStatus() === STATUS.NOT_VERIFIED, 'not verified');
  assert.deepEqual(methods(last()), []);
  assert.match(session.get('lastError'), /pair again/);
});

test('a bridge that does not answer hello is not verified', async () => {
  delete bridge.hello;
  last().open();
  await settle();
  mock.timers.tick(15000);
  await until(() => getStatus() === STATUS.NOT_VERIFIED, 'not verified');
  assert.match(session.get('lastError'), /no proof \(bridge did not answer hello\)/);
});

test('a refused token is forgotten: not paired, no retry', async () => {
  bridge.token = 'another';
  const sock = last();
  sock.open();
  await until(() => getStatus() === STATUS.NOT_PAIRED, 'not paired');
  assert.equal(sock.closedWith, CLOSE_UNAUTHORIZED);
  assert.equal(local.has('token'), false);
  assert.equal(local.has('bridgeKey'), false);
  mock.timers.tick(60000);
  await settle();
  assert.equal(FakeWebSocket.made.length, 1);
});

test('call() returns results and rejects bridge errors as RpcError with code and data', async () => {
  const sock = await connected();
  bridge.echo = async (params) => ({ got: params });
  bridge.fail = async () => { throw Object.assign(new Error('no such peer'), { code: -32004, data: { reason: 'unknown' } }); };
  assert.deepEqual(await call('echo', { a: 1 }), { got: { a: 1 } });
  const error = await call('fail', {}).then(() => null, (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.name, 'RpcError');
  assert.equal(error.code, -32004);
  assert.equal(error.message, 'no such peer');
  assert.deepEqual(error.data, { reason: 'unknown' });
  const sentEcho = sock.sent.find((m) => m.method === 'echo');
  assert.deepEqual(sentEcho, { jsonrpc: '2.0', id: sentEcho.id, method: 'echo', params: { a: 1 } });
  await call('echo');
  assert.equal('params' in sock.sent.at(-1), false, 'no params member when there are none');
});

test('a bridge error without a numeric code or a message still rejects', async () => {
  await connected();
  const sock = last();
  const p = call('odd');
  const { id } = sock.sent.at(-1);
  sock.receive({ jsonrpc: '2.0', id, error: { code: 'x' } });
  const error = await p.then(() => null, (e) => e);
  assert.equal(error.code, -32603);
  assert.equal(error.message, 'error');
});

test('call() before the bridge is connected rejects with the status, sending nothing', async () => {
  const error = await call('status').then(() => null, (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.code, -32000);
  assert.equal(error.message, STATUS.CONNECTING);
  assert.deepEqual(last().sent, []);
});

test('a call the bridge never answers times out after 15 s', async () => {
  await connected();
  const p = call('silent');
  let outcome = null;
  p.then(() => { outcome = 'resolved'; }, (e) => { outcome = e; });
  mock.timers.tick(14999);
  await settle();
  assert.equal(outcome, null);
  mock.timers.tick(1);
  await settle();
  assert.ok(outcome instanceof RpcError);
  assert.equal(outcome.message, 'bridge did not answer silent');
});

test('frames that are not JSON-RPC 2.0 answers are ignored; notifications reach every handler', async () => {
  const sock = await connected();
  const seen = [];
  const debug = mock.method(console, 'debug', () => {});
  onNotification(() => { throw new Error('a broken handler'); });
  onNotification((method, params) => seen.push([method, params]));
  const p = call('slow');
  const { id } = sock.sent.at(-1);
  for (const junk of ['not json', '[]', 'null', JSON.stringify({ jsonrpc: '1.0', id, result: 'wrong' }),
    JSON.stringify({ id, result: 'no version' }), JSON.stringify({ jsonrpc: '2.0', id: id + 100, result: 'unknown id' })]) sock.receive(junk);
  sock.emit('message', { data: new ArrayBuffer(4) });
  sock.receive({ jsonrpc: '2.0', method: 'message.new', params: { x: 1 } });
  sock.receive({ jsonrpc: '2.0', method: 'conversation.updated' });
  sock.receive({ jsonrpc: '2.0', id: 99, method: 'not.a.notification' });
  sock.receive({ jsonrpc: '2.0', id, result: 'right' });
  assert.equal(await p, 'right');
  assert.deepEqual(seen, [['message.new', { x: 1 }], ['conversation.updated', {}]]);
  assert.equal(debug.mock.callCount(), 2, 'the broken handler was logged, once per notification');
});

test('a socket that closes fails the calls in flight', async () => {
  const sock = await connected();
  const p = call('slow');
  sock.close(1006);
  const error = await p.then(() => null, (e) => e);
  assert.equal(error.message, 'bridge connection closed');
  await settle();
  assert.equal(getStatus(), STATUS.UNREACHABLE);
  assert.equal(isConnected(), false);
});

test('pings every 20 s; an unanswered ping closes the socket', async () => {
  const sock = await connected();
  const before = sock.sent.length;
  mock.timers.tick(19999);
  assert.equal(sock.sent.length, before);
  mock.timers.tick(1);
  assert.equal(sock.sent.at(-1).method, 'ping');
  await settle();
  assert.equal(sock.closedWith, null, 'an answered ping keeps the socket');
  delete bridge.ping;
  mock.timers.tick(20000);
  mock.timers.tick(15000);
  await settle();
  assert.equal(sock.closedWith, 4000);
});

test('a good handshake resets the backoff to 1 s', async () => {
  for (let i = 0; i < 3; i += 1) {
    last().close(1006);
    await settle();
    mock.timers.tick(1000 * 2 ** i);
    await settle();
  }
  await connected();
  last().close(1006);
  await settle();
  const before = FakeWebSocket.made.length;
  mock.timers.tick(1000);
  await settle();
  assert.equal(FakeWebSocket.made.length, before + 1);
});

test('pairing: a proof of the code goes out, never the code; the bridge proves it too; token and key are kept', async () => {
  disconnect();
  local.clear();
  const result = pair(CODE, 'My Chrome');
  await settle();
  const sock = last();
  sock.open();
  assert.deepEqual(await result, { ok: true });
  assert.deepEqual(methods(sock).slice(0, 2), ['hello', 'pair']);
  assert.equal(sock.sent[1].params.name, 'My Chrome');
  const frames = JSON.stringify(sock.sent);
  assert.equal(frames.includes(CODE), false);
  assert.equal(frames.includes(CODE.replace('-', '')), false);
  assert.equal(local.get('token'), 'tok-new');
  assert.equal(local.get('bridgeKey'), BRIDGE.key);
  await until(() => getStatus() === STATUS.CONNECTED, 'connected');
  assert.equal(methods(sock).includes('auth'), false);
});

test('pairing with a bridge that does not know the code fails, and nothing is stored', async () => {
  disconnect();
  local.clear();
  bridge.pair = async () => ({ token: 'tok-evil', bridge_key: BRIDGE.key, proof: b64uEncode(new Uint8Array(32)) });
  const result = pair(CODE, 'Chrome');
  await settle();
  last().open();
  const error = await result.then(() => null, (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.message, 'bridge not verified: the bridge does not know the pairing code');
  assert.equal(local.has('token'), false);
  await until(() => /^bridge not verified/.test(session.get('lastError')), 'the session says why');
});

test('pairing with a bridge that sends no token fails with that reason', async () => {
  disconnect();
  local.clear();
  bridge.pair = async () => ({ bridge_key: BRIDGE.key });
  const result = pair(CODE, 'Chrome');
  await settle();
  last().open();
  const error = await result.then(() => null, (e) => e);
  assert.equal(error.message, 'bridge sent no token');
  await until(() => last().closedWith !== null, 'the socket is closed');
  assert.equal(last().closedWith, CLOSE_UNAUTHORIZED);
  assert.equal(session.get('lastError'), 'pairing failed: bridge sent no token');
});

test('pairing while the bridge is unreachable rejects', async () => {
  disconnect();
  const result = pair(CODE, 'Chrome');
  await settle();
  last().close(1006);
  const error = await result.then(() => null, (e) => e);
  assert.equal(error.message, 'bridge unreachable');
});

test('a second pairing supersedes the first', async () => {
  disconnect();
  const first = pair(CODE, 'one');
  await settle();
  const second = pair(CODE, 'two');
  const error = await first.then(() => null, (e) => e);
  assert.equal(error.message, 'superseded');
  await settle();
  last().open();
  assert.deepEqual(await second, { ok: true });
});

test('connect() without a token and without a pairing says not paired and opens nothing', async () => {
  disconnect();
  local.clear();
  FakeWebSocket.made.length = 0;
  await connect();
  assert.equal(FakeWebSocket.made.length, 0);
  assert.equal(getStatus(), STATUS.NOT_PAIRED);
});

test('a status answer with missing or odd fields is stored with safe defaults', async () => {
  bridge.status = async () => ({ unread: 'many', relay: 'up' });
  last().open();
  await until(() => session.get('version') === '', 'status refreshed');
  assert.deepEqual(session.get('identity'), { address: '', did: '', installation_id: '' });
  assert.equal(session.get('unread'), 0);
  assert.equal(session.get('relay'), null);
  session.delete('version');
  bridge.status = async () => ({ relay: {} });
  disconnect();
  await reconnectNow();
  last().open();
  await until(() => session.get('version') === '', 'status refreshed again');
  assert.deepEqual(session.get('relay'), { url: '', connected: false });
});

test('a status answer that is not an object changes nothing', async () => {
  session.set('identity', 'kept');
  bridge.status = async () => 'nonsense';
  last().open();
  await until(() => getStatus() === STATUS.CONNECTED, 'connected');
  await until(() => last().sent.some((m) => m.method === 'status'), 'status asked');
  await settle();
  assert.equal(session.get('identity'), 'kept');
});

test('a frame that cannot be sent fails its call at once', async () => {
  const sock = await connected();
  sock.send = () => { throw new Error('gone'); };
  const error = await call('status').then(() => null, (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.message, 'bridge socket is not open');
});

test('a call on a socket that is not open is refused with the status', async () => {
  const sock = await connected();
  sock.readyState = 3;
  const error = await call('status').then(() => null, (e) => e);
  assert.equal(error.message, STATUS.CONNECTED);
  assert.equal(sock.sent.filter((m) => m.method === 'status').length, 1, 'only the handshake status');
});

test('pairing when no socket can be made rejects with the reason and says not paired', async () => {
  disconnect();
  local.clear();
  const Real = globalThis.WebSocket;
  globalThis.WebSocket = class { constructor() { throw new Error('refused'); } };
  try {
    const error = await pair(CODE, 'Chrome').then(() => null, (e) => e);
    assert.equal(error.message, 'bridge unreachable (refused)');
    await settle();
    assert.equal(getStatus(), STATUS.NOT_PAIRED);
    assert.equal(session.get('lastError'), 'refused');
  } finally {
    globalThis.WebSocket = Real;
  }
  mock.timers.tick(60000);
  await settle();
  assert.equal(FakeWebSocket.made.length, 1, 'no token: no retry');
});

test('disconnect() closes the socket for good: its close event schedules nothing', async () => {
  const sock = await connected();
  disconnect();
  assert.equal(sock.closedWith, 1000);
  assert.equal(isConnected(), false);
  mock.timers.tick(120000);
  await settle();
  assert.equal(FakeWebSocket.made.length, 1);
});

test('pairing: a bridge that names another key than the one it proved with is refused', async () => {
  disconnect();
  local.clear();
  const honestPair = bridge.pair;
  bridge.pair = async function (params) { return { ...(await honestPair.call(this, params)), bridge_key: SQUATTER.key }; };
  const result = pair(CODE, 'Chrome');
  await settle();
  last().open();
  const error = await result.then(() => null, (e) => e);
  assert.equal(error?.message, 'bridge not verified: the bridge does not know the pairing code');
  assert.equal(local.has('token'), false);
});
