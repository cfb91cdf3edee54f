// Widget ports (extension/background/widgets.js; issue 8 item 6): a port is served nothing until its
// widget attached with the nonce the content script handed it; then it may call only WIDGET_METHODS,
// only about its own peer, and it gets the bridge's events for that peer. Fake bridge: fakes.mjs.
import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { BASE, FakeWebSocket, bridge, calls, connectWorker, resetBridge, rpcError, session, settle, unpairWorker, until } from './fakes.mjs';

const { broadcastStatus, forwardEvent, onConnect, widgetOpenFor } = await import('../../extension/background/widgets.js');
const { mintNonce } = await import('../../extension/background/grants.js');
const { setSession } = await import('../../extension/background/state.js');
const M = await import('../../extension/common/messages.js');
const { WALLET_SIGNIN } = await import('../../extension/common/wallet.js');

const ADDR = `0x${'ab'.repeat(20)}`;
const OTHER = `0x${'cd'.repeat(20)}`;

function widgetPort({ tab = 7, frameId = 3, peer = 'lens%3Abob' } = {}) {
  const listeners = { message: [], disconnect: [] };
  const port = {
    name: M.WIDGET_PORT,
    sender: { id: 'cjhgnfckfielldaiipkgieemaigbpmoe', url: `${BASE}widget/widget.html?peer=${peer}`, tab: { id: tab }, frameId },
    got: [],
    disconnected: false,
    postMessage(msg) { if (port.broken) throw new Error('port closed'); port.got.push(msg); },
    disconnect() { port.disconnected = true; },
    onMessage: { addListener: (fn) => listeners.message.push(fn) },
    onDisconnect: { addListener: (fn) => listeners.disconnect.push(fn) },
    send(msg) { for (const fn of listeners.message) fn(msg); },
    close() { for (const fn of listeners.disconnect) fn(); },
  };
  onConnect(port);
  return port;
}

async function rpc(port, method, params) {
  const id = Math.floor(Math.random() * 1e9);
  port.send({ type: M.WIDGET_RPC, id, method, params });
  await until(() => port.got.some((m) => m.type === M.WIDGET_RPC_RESULT && m.id === id), `an answer to ${method}`);
  const { type, id: _, ...body } = port.got.find((m) => m.type === M.WIDGET_RPC_RESULT && m.id === id);
  return body;
}

/** A widget opened by our content script for lens:bob, attached and showing ADDR. */
async function liveWidget(over = {}) {
  const port = widgetPort(over);
  port.send({ type: M.WIDGET_ATTACH, nonce: await mintNonce(over.tab ?? 7, 'lens:bob') });
  await until(() => port.got.some((m) => m.type === M.WIDGET_GATE), 'the gate answer');
  port.send({ type: M.WIDGET_HELLO, peer: ADDR.toUpperCase().replace('0X', '0x') });
  return port;
}

const REFUSED = { error: { code: -32602, message: 'method or params not allowed' } };

after(unpairWorker);

beforeEach(async () => {
  resetBridge();
  calls.length = 0;
  session.clear();
  bridge.methods.resolve = async () => ({ address: ADDR });
  bridge.methods.canMessage = async () => ({ canMessage: true });
  bridge.methods['messages.list'] = async (p) => ({ messages: [], has_more: false, asked: p });
  bridge.methods['messages.send'] = async (p) => ({ message: { id: 'm1', text: p.text } });
  bridge.methods['messages.markRead'] = async () => ({ unread: 4 });
  await connectWorker();
});

test('a port is served nothing before it attached with a nonce', async () => {
  const port = widgetPort();
  port.send({ type: M.WIDGET_RPC, id: 1, method: 'resolve', params: { peer: 'lens:bob' } });
  port.send({ type: M.WIDGET_HELLO, peer: ADDR });
  port.send({ type: M.WIDGET_RPC, id: 'x', method: 'resolve', params: { peer: 'lens:bob' } });
  await settle();
  assert.deepEqual(port.got, [{ type: M.WIDGET_RPC_RESULT, id: 1, error: { code: -32001, message: 'this chat was not opened by Parley' } }]);
  assert.equal(widgetOpenFor(ADDR), false, 'a hello before the gate names no peer');
});

test('a guessed nonce is refused; a minted one opens the gate and reports the status', async () => {
  const port = widgetPort();
  port.send({ type: M.WIDGET_ATTACH, nonce: 'f'.repeat(32) });
  await until(() => port.got.length > 0, 'an answer');
  assert.deepEqual(port.got, [{ type: M.WIDGET_GATE, ok: false, reason: 'not-opened-by-parley' }]);
  port.send({ type: M.WIDGET_ATTACH });
  await until(() => port.got.length > 1, 'an answer');
  assert.deepEqual(port.got[1], { type: M.WIDGET_GATE, ok: false, reason: 'not-opened-by-parley' });
  const good = widgetPort();
  good.send({ type: M.WIDGET_ATTACH, nonce: await mintNonce(7, 'lens:bob') });
  await until(() => good.got.length > 1, 'gate and status');
  assert.deepEqual(good.got, [{ type: M.WIDGET_GATE, ok: true }, { type: M.WIDGET_STATUS, status: M.STATUS.CONNECTED }]);
});

test('a port that went away before its attach was checked gets nothing', async () => {
  const port = widgetPort();
  port.send({ type: M.WIDGET_ATTACH, nonce: await mintNonce(7, 'lens:bob') });
  port.close();
  await settle();
  assert.deepEqual(port.got, []);
});

test('hello names the conversation: the port gets its status, and the worker knows a widget shows it', async () => {
  const port = await liveWidget();
  await settle();
  assert.deepEqual(port.got.at(-1), { type: M.WIDGET_STATUS, status: M.STATUS.CONNECTED });
  assert.equal(widgetOpenFor(ADDR), true);
  assert.equal(widgetOpenFor(ADDR.toUpperCase().replace('0X', '0x')), true);
  assert.equal(widgetOpenFor(OTHER), false);
  assert.equal(widgetOpenFor('lens:bob'), false);
  port.close();
  assert.equal(widgetOpenFor(ADDR), false, 'a closed port shows nothing');
});

test('only the widget methods, about its own peer, with sane params', async () => {
  const port = await liveWidget();
  const cases = [
    ['messages.delete', { peer: ADDR }],
    ['auth', { token: 'x' }],
    ['resolve', { peer: 'lens:alice' }], // not the peer it was opened for
    ['resolve', { peer: 'lens:<b>' }],
    ['resolve', null],
    ['resolve', [{ peer: 'lens:bob' }]],
    ['canMessage', { address: 'lens:bob' }],
    ['messages.list', { peer: OTHER }],
    ['messages.list', { peer: 'lens:bob' }],
    ['messages.list', {}],
    ['messages.markRead', { peer: OTHER }],
    ['messages.send', { peer: ADDR, text: '' }],
    ['messages.send', { peer: ADDR, text: 'x'.repeat(10001) }],
    ['messages.send', { peer: ADDR, text: 5 }],
    ['messages.send', { peer: OTHER, text: 'hi' }],
  ];
  for (const [method, params] of cases) assert.deepEqual(await rpc(port, method, params), REFUSED, `${method} ${JSON.stringify(params)}`);
  assert.deepEqual(await rpc(port, 'resolve', { peer: 'lens:bob' }), { result: { address: ADDR } });
  assert.deepEqual(await rpc(port, 'canMessage', { address: OTHER }), { result: { canMessage: true } });
  assert.deepEqual((await rpc(port, 'messages.list', { peer: ADDR, limit: 5 })).result.asked, { peer: ADDR, limit: 5 });
  assert.deepEqual(await rpc(port, 'messages.send', { peer: ADDR, text: 'x'.repeat(10000) }), { result: { message: { id: 'm1', text: 'x'.repeat(10000) } } });
});

test('a widget opened for a peer cannot touch another conversation before its hello', async () => {
  const port = widgetPort();
  port.send({ type: M.WIDGET_ATTACH, nonce: await mintNonce(7, 'lens:bob') });
  await until(() => port.got.some((m) => m.type === M.WIDGET_GATE), 'the gate answer');
  assert.deepEqual(await rpc(port, 'messages.list', { peer: ADDR }), REFUSED);
});

test('mark read updates the unread count; bridge errors reach the widget with code and data', async () => {
  const port = await liveWidget();
  assert.deepEqual(await rpc(port, 'messages.markRead', { peer: ADDR }), { result: { unread: 4 } });
  assert.equal(session.get('unread'), 4);
  bridge.methods['messages.markRead'] = async () => ({ unread: 'many' });
  await rpc(port, 'messages.markRead', { peer: ADDR });
  assert.equal(session.get('unread'), 4);
  bridge.methods['messages.send'] = async () => { throw rpcError(-32020, 'relay full', { retry: true }); };
  assert.deepEqual(await rpc(port, 'messages.send', { peer: ADDR, text: 'hi' }), { error: { code: -32020, message: 'relay full', data: { retry: true } } });
  bridge.methods['messages.send'] = async () => { throw rpcError(undefined, 'odd'); };
  assert.deepEqual(await rpc(port, 'messages.send', { peer: ADDR, text: 'hi' }), { error: { code: -32603, message: 'odd', data: null } });
});

test('while not paired a call is answered with the status', async () => {
  const port = await liveWidget();
  await unpairWorker();
  assert.deepEqual(await rpc(port, 'resolve', { peer: 'lens:bob' }), { error: { code: -32000, message: M.STATUS.NOT_PAIRED } });
});

test('events go to the widgets showing their peer; status to every widget; a broken port is dropped', async () => {
  const bob = await liveWidget();
  const carol = await liveWidget({ tab: 8 });
  carol.send({ type: M.WIDGET_HELLO, peer: OTHER });
  await settle();
  bob.got.length = 0;
  carol.got.length = 0;
  forwardEvent('message.new', { message: { id: 'a' } }, ADDR.toUpperCase().replace('0X', '0x'));
  forwardEvent('message.new', { message: { id: 'b' } }, 'not an address');
  assert.deepEqual(bob.got, [{ type: M.WIDGET_EVENT, method: 'message.new', params: { message: { id: 'a' } } }]);
  assert.deepEqual(carol.got, []);
  broadcastStatus('x');
  assert.deepEqual(bob.got.at(-1), { type: M.WIDGET_STATUS, status: 'x' });
  assert.deepEqual(carol.got.at(-1), { type: M.WIDGET_STATUS, status: 'x' });
  bob.broken = true;
  broadcastStatus('y');
  bob.broken = false;
  bob.got.length = 0;
  forwardEvent('message.new', { message: { id: 'c' } }, ADDR);
  assert.deepEqual(bob.got, [], 'the broken port is forgotten');
  await setSession({ status: M.STATUS.CONNECTED });
});

test('reconnect and wallet sign-in over the port', async () => {
  const port = await liveWidget();
  const url = `http://127.0.0.1:8737/signin#t=${'aB3_-'.repeat(8)}`;
  bridge.methods['signin.link'] = async () => ({ url });
  port.send({ type: WALLET_SIGNIN, id: 41 });
  await until(() => port.got.some((m) => m.id === 41), 'the sign-in answer');
  assert.deepEqual(port.got.find((m) => m.id === 41), { type: M.WIDGET_RPC_RESULT, id: 41, result: { opened: true } });
  assert.deepEqual(calls, [['tabs.create', { url, active: true }]]);
  bridge.methods['signin.link'] = async () => ({ url: 'https://evil.example/' });
  port.send({ type: WALLET_SIGNIN, id: 42 });
  await until(() => port.got.some((m) => m.id === 42), 'the sign-in answer');
  const refused = port.got.find((m) => m.id === 42);
  assert.equal(refused.error.code, -32011);
  assert.deepEqual(refused.error.data, { reason: 'bridge' });
  await unpairWorker();
  port.send({ type: WALLET_SIGNIN, id: 43 });
  await until(() => port.got.some((m) => m.id === 43), 'the sign-in answer');
  assert.deepEqual(port.got.find((m) => m.id === 43).error, { code: -32000, message: `Parley bridge: ${M.STATUS.NOT_PAIRED}` });
  assert.equal(calls.length, 1);
});

test('junk over the port is ignored; only mark read changes the unread count; reconnect over the port', async (t) => {
  const port = await liveWidget();
  await settle();
  const before = port.got.length;
  for (const junk of [null, 'x', 5, { type: M.WIDGET_RPC, id: 'x', method: 'resolve', params: { peer: 'lens:bob' } },
    { type: WALLET_SIGNIN }, { type: 'unknown', id: 3 }]) port.send(junk);
  await settle();
  assert.equal(port.got.length, before, 'nothing answered');
  assert.deepEqual(calls, []);
  bridge.methods['messages.list'] = async () => ({ messages: [], unread: 9 });
  session.set('unread', 1);
  await rpc(port, 'messages.list', { peer: ADDR });
  assert.equal(session.get('unread'), 1);
  const sockets = FakeWebSocket.made.length;
  await unpairWorker();
  await connectWorker();
  t.mock.timers.enable({ apis: ['setTimeout'] }); // the backoff timer never fires here
  FakeWebSocket.made.at(-1).close(1006);
  port.send({ type: 'reconnect' });
  await until(() => FakeWebSocket.made.length === sockets + 2, 'a new socket at once');
});

// Issue 12: the new methods, each only about the widget's own conversation and with strict params.
test('issue 12 methods: own peer only, ids 32 lower-case hex, emoji, chunk and size limits, typing, consent', async () => {
  const port = await liveWidget();
  const id = 'a1'.repeat(16);
  const att = `${id}-0`;
  const chunk = 'QUJD'.repeat(256 * 1024 / 4); // exactly 256 KiB of base64
  for (const method of M.WIDGET_METHODS) bridge.methods[method] = async (p) => ({ ok: true, asked: p });
  const good = [
    ['messages.send', { peer: ADDR, text: 'hi', reply_to: id }],
    ['messages.send', { peer: ADDR, text: '', uploads: [id] }],
    ['messages.react', { peer: ADDR, id, emoji: '👍' }],
    ['messages.react', { peer: ADDR, id, emoji: '❤️', remove: true }],
    ['messages.edit', { peer: ADDR, id, text: 'fixed' }],
    ['messages.delete', { peer: ADDR, id }],
    ['typing.set', { peer: ADDR, typing: false }],
    ['consent.get', { peer: ADDR }],
    ['consent.set', { peer: ADDR, action: 'block' }],
    ['attachments.begin', { peer: ADDR, name: 'cat.png', size: 25 * 1024 * 1024, mime: 'image/png' }],
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: 0, data: chunk }],
    ['attachments.cancel', { peer: ADDR, upload_id: id }],
    ['attachments.thumbnail', { peer: ADDR, id: att }],
    ['attachments.read', { peer: ADDR, id: att, offset: 196608, length: 196608 }],
  ];
  for (const [method, params] of good) {
    assert.deepEqual((await rpc(port, method, params)).result?.asked, params, `${method} ${JSON.stringify(params)}`);
  }
  const bad = [
    // another conversation
    ['messages.react', { peer: OTHER, id, emoji: '👍' }],
    ['messages.delete', { peer: OTHER, id }],
    ['consent.set', { peer: OTHER, action: 'accept' }],
    ['typing.set', { peer: OTHER, typing: true }],
    ['attachments.read', { peer: OTHER, id: att, offset: 0, length: 10 }],
    ['attachments.chunk', { peer: 'lens:bob', upload_id: id, offset: 0, data: 'QUJD' }],
    // bad ids
    ['messages.delete', { peer: ADDR, id: id.toUpperCase() }],
    ['messages.delete', { peer: ADDR, id: id.slice(1) }],
    ['messages.delete', { peer: ADDR, id: `${id}0` }],
    ['messages.delete', { peer: ADDR, id: 5 }],
    ['messages.edit', { peer: ADDR, id: '../etc/passwd', text: 'x' }],
    ['messages.send', { peer: ADDR, text: 'hi', reply_to: 'x' }],
    ['messages.send', { peer: ADDR, text: '', uploads: [] }],
    ['messages.send', { peer: ADDR, text: '', uploads: ['nope'] }],
    ['messages.send', { peer: ADDR, text: '', uploads: [id, id] }],
    ['messages.send', { peer: ADDR, text: '', uploads: Array.from({ length: 11 }, (_, i) => i.toString(16).padStart(32, '0')) }],
    ['attachments.thumbnail', { peer: ADDR, id }],
    ['attachments.thumbnail', { peer: ADDR, id: `${id}-0/..` }],
    ['attachments.cancel', { peer: ADDR, upload_id: 'x' }],
    // emoji
    ['messages.react', { peer: ADDR, id, emoji: '' }],
    ['messages.react', { peer: ADDR, id, emoji: '😀'.repeat(9) }], // 36 UTF-8 bytes
    ['messages.react', { peer: ADDR, id, emoji: 'a b' }],
    ['messages.react', { peer: ADDR, id, emoji: '\n' }],
    ['messages.react', { peer: ADDR, id, emoji: '👍', remove: 'yes' }],
    // edit text
    ['messages.edit', { peer: ADDR, id, text: '' }],
    ['messages.edit', { peer: ADDR, id, text: 'x'.repeat(10001) }],
    // chunks and sizes
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: 0, data: `${chunk}QUJD` }],
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: 0, data: 'QUJ' }],
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: 0, data: 'QU<>' }],
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: -1, data: 'QUJD' }],
    ['attachments.chunk', { peer: ADDR, upload_id: id, offset: 1.5, data: 'QUJD' }],
    ['attachments.begin', { peer: ADDR, name: 'big.bin', size: 25 * 1024 * 1024 + 1, mime: 'application/octet-stream' }],
    ['attachments.begin', { peer: ADDR, name: 'x.bin', size: '10', mime: 'application/octet-stream' }],
    ['attachments.begin', { peer: ADDR, name: '../x', size: 10, mime: 'application/octet-stream' }],
    ['attachments.begin', { peer: ADDR, name: 'a\u0000b', size: 10, mime: 'application/octet-stream' }],
    ['attachments.begin', { peer: ADDR, name: 'x'.repeat(256), size: 10, mime: 'application/octet-stream' }],
    ['attachments.begin', { peer: ADDR, name: 'x', size: 10, mime: 'text/html; charset=<b>' }],
    ['attachments.read', { peer: ADDR, id: att, offset: 0, length: 196609 }],
    ['attachments.read', { peer: ADDR, id: att, offset: 0, length: 0 }],
    // typing, consent, unknown keys
    ['typing.set', { peer: ADDR, typing: 'true' }],
    ['typing.set', { peer: ADDR }],
    ['consent.set', { peer: ADDR, action: 'delete-everything' }],
    ['consent.get', { peer: ADDR, folder: 'all' }],
    ['messages.delete', { peer: ADDR, id, also: 1 }],
    ['conversations.list', { peer: ADDR }],
    ['requests.list', { peer: ADDR }],
  ];
  calls.length = 0;
  for (const [method, params] of bad) assert.deepEqual(await rpc(port, method, params), REFUSED, `${method} ${JSON.stringify(params).slice(0, 120)}`);
});

test('issue 12 notifications reach only the widget showing their peer', async () => {
  const mine = await liveWidget();
  const other = await liveWidget({ tab: 8 });
  other.send({ type: M.WIDGET_HELLO, peer: OTHER });
  await settle();
  mine.got.length = 0;
  other.got.length = 0;
  forwardEvent('typing', { peer: ADDR, typing: true }, ADDR);
  forwardEvent('consent.changed', { peer: OTHER, consent: 'blocked' }, OTHER);
  assert.deepEqual(mine.got, [{ type: M.WIDGET_EVENT, method: 'typing', params: { peer: ADDR, typing: true } }]);
  assert.deepEqual(other.got, [{ type: M.WIDGET_EVENT, method: 'consent.changed', params: { peer: OTHER, consent: 'blocked' } }]);
});
