// Worker state, badge and notifications (extension/background/state.js, notify.js) and the worker's
// entry (index.js): bridge notifications routed to widgets, notifications, the badge and the session.
import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { BASE, FakeWebSocket, calls, connectWorker, local, resetBridge, session, settle, unpairWorker, until } from './fakes.mjs';

const state = await import('../../extension/background/state.js');
const { notifyMessage, setBadge } = await import('../../extension/background/notify.js');
const { STATUS, WIDGET_ATTACH, WIDGET_EVENT, WIDGET_HELLO, WIDGET_PORT } = await import('../../extension/common/messages.js');

const ADDR = `0x${'ab'.repeat(20)}`;
const ADDR_MIXED = `0x${'aB'.repeat(20)}`;
const OTHER_IN = `0x${'cd'.repeat(20)}`;

after(unpairWorker);

beforeEach(() => {
  calls.length = 0;
});

test('waitConnected: at once when connected or not paired, on the next status change, or false after the wait', async (t) => {
  await state.setSession({ status: STATUS.CONNECTED });
  assert.equal(await state.waitConnected(10), true);
  await state.setSession({ status: STATUS.NOT_PAIRED });
  assert.equal(await state.waitConnected(10), false);
  t.mock.timers.enable({ apis: ['setTimeout'] });
  await state.setSession({ status: STATUS.CONNECTING });
  const a = state.waitConnected(1000);
  await state.setSession({ status: STATUS.CONNECTED });
  assert.equal(await a, true);
  await state.setSession({ status: STATUS.CONNECTING });
  const b = state.waitConnected(1000);
  await state.setSession({ status: STATUS.UNREACHABLE });
  assert.equal(await b, false);
  await state.setSession({ status: STATUS.CONNECTING });
  let c = null;
  state.waitConnected(1000).then((v) => { c = v; });
  t.mock.timers.tick(999);
  await settle();
  assert.equal(c, null);
  t.mock.timers.tick(1);
  await settle();
  assert.equal(c, false);
  await state.setSession({ status: STATUS.CONNECTED });
  assert.equal(c, false, 'a late status change does not resolve it again');
});

test('status listeners: called on changes only, a throwing one does not stop the others, and they can be removed', async (t) => {
  t.mock.method(console, 'debug', () => {});
  const seen = [];
  const offBad = state.onStatus(() => { throw new Error('bad listener'); });
  const off = state.onStatus((s) => seen.push(s));
  await state.setSession({ status: 'a' });
  await state.setSession({ status: 'a' });
  await state.setSession({ unread: 1 });
  await state.setSession({ status: 'b' });
  off();
  offBad();
  await state.setSession({ status: 'c' });
  assert.deepEqual(seen, ['a', 'b']);
  assert.equal(session.get('status'), 'c');
  assert.equal(state.getStatus(), 'c');
});

test('token, bridge key and bridge URL in local storage', async () => {
  local.clear();
  assert.equal(await state.getToken(), null);
  assert.equal(await state.getBridgeKey(), null);
  await state.setPairing('tok', 'key');
  assert.equal(await state.getToken(), 'tok');
  assert.equal(await state.getBridgeKey(), 'key');
  await state.setPairing('tok2', null);
  assert.equal(local.has('token'), false, 'a token is never kept without its key');
  assert.equal(local.has('bridgeKey'), false);
  await state.setToken('t3');
  assert.equal(await state.getToken(), 't3');
  await state.setToken('');
  assert.equal(local.has('token'), false);
  local.set('token', 5);
  local.set('bridgeKey', '');
  assert.equal(await state.getToken(), null);
  assert.equal(await state.getBridgeKey(), null);
  assert.equal(await state.getBridgeUrl(), 'http://127.0.0.1:8737');
  local.set('bridgeUrl', 'http://evil.example');
  assert.equal(await state.getBridgeUrl(), 'http://127.0.0.1:8737', 'a bad stored URL falls back to the default');
  assert.equal(await state.setBridgeUrl('localhost:9000'), 'http://localhost:9000');
  assert.equal(await state.getBridgeUrl(), 'http://localhost:9000');
  await assert.rejects(state.setBridgeUrl('http://evil.example'));
  local.clear();
});

test('badge: the unread count, 99+ above 99, nothing for zero or junk', async () => {
  for (const [n, text] of [[3, '3'], [99, '99'], [100, '99+'], [0, ''], [-2, ''], [1.5, ''], ['7', ''], [undefined, '']]) {
    calls.length = 0;
    await setBadge(n);
    assert.deepEqual(calls, [['setBadgeText', { text }], ['setBadgeBackgroundColor', { color: '#5846dc' }]], String(n));
  }
});

test('a notification names the sender only, never the text', () => {
  notifyMessage({ id: 'm7', sender: ADDR, text: 'secret words' });
  notifyMessage({ sender: '0x12', text: 'x' });
  assert.deepEqual(calls[0], ['notifications.create', 'parley:m7', {
    type: 'basic', iconUrl: `${BASE}icons/icon-128.png`, title: 'New Parley message', message: 'From 0xabab…abab', priority: 1,
  }]);
  assert.equal(JSON.stringify(calls).includes('secret'), false);
  assert.match(calls[1][1], /^parley:\d+$/);
  assert.equal(calls[1][2].message, 'From 0x12');
});

// --- index.js: the worker's entry -------------------------------------------------------------------

test('the worker registers its listeners, an alarm every 30 s, and connects', async () => {
  resetBridge();
  local.set('token', 'tok-1');
  const before = FakeWebSocket.made.length;
  await import('../../extension/background/index.js');
  await until(() => FakeWebSocket.made.length === before + 1, 'a socket');
  for (const e of [chrome.runtime.onMessage, chrome.runtime.onConnect, chrome.tabs.onRemoved, chrome.runtime.onStartup,
    chrome.runtime.onInstalled, chrome.alarms.onAlarm]) assert.equal(e.listeners.length, 1);
  await until(() => calls.some(([api]) => api === 'alarms.create'), 'the alarm');
  assert.deepEqual(calls.find(([api]) => api === 'alarms.create'), ['alarms.create', 'parley-reconnect', { periodInMinutes: 0.5 }]);
});

test('the reconnect alarm connects only when not connected, and only for its own name', async () => {
  await unpairWorker();
  local.set('token', 'tok-1');
  local.set('bridgeKey', 'k');
  const before = FakeWebSocket.made.length;
  chrome.alarms.onAlarm.fire({ name: 'other' });
  await settle();
  assert.equal(FakeWebSocket.made.length, before);
  chrome.alarms.onAlarm.fire({ name: 'parley-reconnect' });
  await until(() => FakeWebSocket.made.length === before + 1, 'a socket');
  await connectWorker();
  const now = FakeWebSocket.made.length;
  chrome.alarms.onAlarm.fire({ name: 'parley-reconnect' });
  await settle();
  assert.equal(FakeWebSocket.made.length, now);
});

function notify(method, params) {
  FakeWebSocket.made.at(-1).emit('message', { data: JSON.stringify({ jsonrpc: '2.0', method, params }) });
}

function widgetFor(tab) {
  const got = [];
  const listeners = [];
  const port = {
    name: WIDGET_PORT, sender: { id: chrome.runtime.id, url: `${BASE}widget/widget.html?peer=lens%3Abob`, tab: { id: tab }, frameId: 2 },
    postMessage: (m) => got.push(m), disconnect() {},
    onMessage: { addListener: (fn) => listeners.push(fn) }, onDisconnect: { addListener() {} },
  };
  chrome.runtime.onConnect.fire(port);
  return { got, send: (m) => listeners.forEach((fn) => fn(m)) };
}

test('bridge notifications: a new message goes to its open widget, or else to a notification', async () => {
  await connectWorker();
  calls.length = 0;
  notify('message.new', { message: { id: 'n1', peer: ADDR_MIXED, sender: ADDR_MIXED, direction: 'in', text: 'hi' }, consent: 'allowed' });
  notify('message.new', { message: { id: 'n2', peer: ADDR, direction: 'out', text: 'mine' }, consent: 'allowed' });
  notify('message.new', { message: { id: 'n3', peer: 'lens:bob', direction: 'in' } });
  notify('message.new', { message: null });
  assert.deepEqual(calls.filter(([api]) => api === 'notifications.create').map((c) => c[1]), ['parley:n1']);
  const { got, send } = widgetFor(11);
  const { mintNonce } = await import('../../extension/background/grants.js');
  send({ type: WIDGET_ATTACH, nonce: await mintNonce(11, 'lens:bob') });
  await until(() => got.length >= 2, 'the gate');
  send({ type: WIDGET_HELLO, peer: ADDR });
  calls.length = 0;
  got.length = 0;
  notify('message.new', { message: { id: 'n4', peer: ADDR_MIXED, sender: ADDR_MIXED, direction: 'in', text: 'hi' }, consent: 'allowed' });
  assert.deepEqual(calls, [], 'no notification while its widget is open');
  assert.deepEqual(got, [{ type: WIDGET_EVENT, method: 'message.new', params: { message: { id: 'n4', peer: ADDR, sender: ADDR, direction: 'in', text: 'hi' }, consent: 'allowed' } }]);
  got.length = 0;
  notify('message.updated', { message: { id: 'n4', peer: ADDR_MIXED, state: 'sent' } });
  notify('message.updated', { message: { id: 'n5', peer: 'nope' } });
  notify('message.updated', { message: { id: 'n6', peer: OTHER_IN, direction: 'in', text: 'x' } });
  notify('conversation.updated', { peer: OTHER_IN, message: { id: 'n7', peer: OTHER_IN, direction: 'in' } });
  notify('message.updated', {});
  notify('conversation.updated', { peer: ADDR_MIXED, total_unread: 6 });
  notify('conversation.updated', { peer: 'nope', total_unread: 1 });
  notify('other.thing', { peer: ADDR });
  assert.deepEqual(calls.filter(([api]) => api === 'notifications.create'), [], 'an update is never a new message');
  assert.deepEqual(got, [
    { type: WIDGET_EVENT, method: 'message.updated', params: { message: { id: 'n4', peer: ADDR, state: 'sent' } } },
    { type: WIDGET_EVENT, method: 'conversation.updated', params: { peer: ADDR, total_unread: 6 } },
  ]);
  await until(() => session.get('unread') === 6, 'the unread count');
  await until(() => calls.some(([api, p]) => api === 'setBadgeText' && p.text === '6'), 'the badge');
  notify('conversation.updated', { peer: ADDR, total_unread: 'x' });
  await settle();
  assert.equal(session.get('unread'), 6);
});

test('issue 12: a message request, a declined or blocked conversation, or no consent at all raises no notification', async () => {
  await connectWorker();
  calls.length = 0;
  notify('message.new', { message: { id: 'r1', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' }, consent: 'requested' });
  notify('message.new', { message: { id: 'r2', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' }, consent: 'declined' });
  notify('message.new', { message: { id: 'r3', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' }, consent: 'blocked' });
  notify('message.new', { message: { id: 'r4', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' } });
  notify('message.new', { message: { id: 'r5', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' }, consent: 'ALLOWED' });
  assert.deepEqual(calls.filter(([api]) => api === 'notifications.create'), [], 'a request never notifies');
  notify('message.new', { message: { id: 'r6', peer: OTHER_IN, sender: OTHER_IN, direction: 'in', text: 'hi' }, consent: 'allowed' });
  assert.deepEqual(calls.filter(([api]) => api === 'notifications.create').map((c) => c[1]), ['parley:r6']);
});

test('identity.changed: the bridge acts for another wallet', async () => {
  await connectWorker();
  notify('identity.changed', { address: ADDR_MIXED, did: 'did:x' });
  await until(() => session.get('identity')?.address === ADDR_MIXED, 'the identity');
  assert.deepEqual(session.get('identity'), { address: ADDR_MIXED, did: 'did:x', installation_id: '' });
  notify('identity.changed', { address: 'nope' });
  await settle();
  assert.equal(session.get('identity').address, ADDR_MIXED);
});

test('a closed tab forgets its widget grants; startup and install connect', async () => {
  const { admit, mintNonce } = await import('../../extension/background/grants.js');
  const sender = { tab: { id: 12 }, frameId: 2, url: `${BASE}widget/widget.html?peer=lens%3Abob` };
  assert.equal(await admit(sender, await mintNonce(12, 'lens:bob')), 'lens:bob');
  chrome.tabs.onRemoved.fire(12);
  assert.equal(await admit(sender, null), null);
  await unpairWorker();
  local.set('token', 'tok-1');
  local.set('bridgeKey', 'k');
  const before = FakeWebSocket.made.length;
  chrome.runtime.onStartup.fire();
  await until(() => FakeWebSocket.made.length === before + 1, 'a socket on startup');
  await unpairWorker();
  local.set('token', 'tok-1');
  chrome.runtime.onInstalled.fire();
  await until(() => FakeWebSocket.made.length === before + 2, 'a socket on install');
});
