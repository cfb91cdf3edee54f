// The worker's message handlers (extension/background/handlers.js): what a site content script
// learns about a peer (issue 4 part 4), and the popup's commands. The bridge is the fake in fakes.mjs.
import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { BASE, FakeWebSocket, bridge, calls, connectWorker, local, resetBridge, rpcError, session, settle, unpairWorker, until } from './fakes.mjs';

const { onMessage } = await import('../../extension/background/handlers.js');
const { getStatus, setSession } = await import('../../extension/background/state.js');
const M = await import('../../extension/common/messages.js');
const { WALLET_SIGNIN } = await import('../../extension/common/wallet.js');

const ADDR = `0x${'ab'.repeat(20)}`;
const SITE = { id: 'cjhgnfckfielldaiipkgieemaigbpmoe', url: 'https://hey.xyz/u/bob', tab: { id: 4 }, frameId: 0 };
const POPUP = { id: SITE.id, url: `${BASE}popup/popup.html` };
const WIDGET = { id: SITE.id, url: `${BASE}widget/widget.html?peer=lens%3Abob` };

function ask(msg, sender) {
  return new Promise((resolve) => {
    assert.equal(onMessage(msg, sender, resolve), true, 'answered asynchronously');
  });
}
const lookup = (peer) => ask({ type: M.CONTENT_LOOKUP_PEER, peer }, SITE);

after(unpairWorker); // no socket, ping or reconnect timer keeps the process alive

beforeEach(async () => {
  resetBridge();
  calls.length = 0;
  await connectWorker();
});

test('lookup: a peer on Parley is ready; one that cannot receive is not on Parley', async () => {
  const asked = [];
  bridge.methods.resolve = async (p) => { asked.push(['resolve', p]); return { address: ADDR }; };
  bridge.methods.canMessage = async (p) => { asked.push(['canMessage', p]); return { canMessage: true }; };
  assert.deepEqual(await lookup('lens:bob'), { state: 'ready', reason: null });
  assert.deepEqual(asked, [['resolve', { peer: 'lens:bob' }], ['canMessage', { address: ADDR }]]);
  bridge.methods.canMessage = async () => ({ canMessage: 'yes' });
  assert.deepEqual(await lookup('lens:bob'), { state: 'unavailable', reason: 'not-on-parley' });
  bridge.methods.canMessage = async () => null;
  assert.deepEqual(await lookup('lens:bob'), { state: 'unavailable', reason: 'not-on-parley' });
});

test('lookup: a malformed peer never reaches the bridge', async () => {
  const before = FakeWebSocket.made.at(-1).sent.length;
  assert.deepEqual(await lookup('lens:<b>'), { state: 'unresolved', reason: 'malformed', detail: 'not a name Parley understands' });
  assert.equal(FakeWebSocket.made.at(-1).sent.length, before);
});

test('lookup: a name that could not be resolved (not found, or the service down) is unresolved, with the reason: never "not on Parley"', async () => {
  // Issue 11: the button said "Not on Parley yet" for a name not found, while the widget said
  // "Couldn't resolve". No wallet is known for such a name, so nobody knows whether it is on Parley.
  for (const reason of ['unknown', 'unreachable', 'contacts']) {
    bridge.methods.resolve = async () => { throw rpcError(-32004, 'cannot resolve', { reason, detail: 'not in your contacts' }); };
    assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason, detail: 'not in your contacts' }, reason);
  }
  bridge.methods.resolve = async () => { throw rpcError(-32004, 'resolver down', { reason: 'name-service', detail: 'x'.repeat(300) }); };
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'name-service', detail: 'x'.repeat(200) });
  bridge.methods.resolve = async () => { throw rpcError(-32000, 'boom', { reason: 'unknown', detail: '' }); };
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'unknown', detail: 'boom' }, 'only -32004 means not found');
  bridge.methods.resolve = async () => { throw rpcError(-32004, 'odd', null); };
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'error', detail: 'odd' });
  bridge.methods.resolve = async () => { throw rpcError(-32004, 'long', { reason: 'r'.repeat(60) }); };
  assert.equal((await lookup('lens:bob')).reason, 'r'.repeat(40));
});

test('lookup: no address, or a relay failure, is unresolved', async () => {
  bridge.methods.resolve = async () => ({ address: 7 });
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'error', detail: 'the bridge gave no address' });
  bridge.methods.resolve = async () => null;
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'error', detail: 'the bridge gave no address' });
  bridge.methods.resolve = async () => ({ address: ADDR });
  bridge.methods.canMessage = async () => { throw rpcError(-32010, 'relay down', { detail: 'relay said no' }); };
  assert.deepEqual(await lookup('lens:bob'), { state: 'unresolved', reason: 'relay', detail: 'relay said no' });
});

test('lookup while not paired: unavailable, not paired', async () => {
  await unpairWorker();
  assert.deepEqual(await lookup('lens:bob'), { state: 'unavailable', reason: 'not-paired' });
});

test('lookup while the bridge is down: unavailable, unreachable after a bounded wait', async (t) => {
  await unpairWorker();
  local.set('token', 'tok-1');
  local.set('bridgeKey', 'x');
  await setSession({ status: M.STATUS.CONNECTING });
  bridge.methods.hello = () => new Promise(() => {}); // never proves itself
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const answer = lookup('lens:bob');
  await settle();
  t.mock.timers.tick(4000);
  assert.deepEqual(await answer, { state: 'unavailable', reason: 'unreachable' });
});

test('popup: state snapshot', async () => {
  await setSession({ unread: 2, identity: { address: '0x1' }, lastError: 'e', relay: { url: 'ws://r', connected: true }, version: '9' });
  const state = await ask({ type: M.POPUP_GET_STATE }, POPUP);
  assert.equal(state.lastError, 'e');
  assert.deepEqual(state.relay, { url: 'ws://r', connected: true });
  assert.equal(state.version, '9');
  assert.equal(state.status, M.STATUS.CONNECTED);
  assert.equal(state.unread, 2);
  assert.deepEqual(state.identity, { address: '0x1' });
  assert.equal(state.bridgeUrl, 'http://127.0.0.1:8737');
  assert.equal(state.paired, true);
  await unpairWorker();
  assert.equal((await ask({ type: M.POPUP_GET_STATE }, POPUP)).paired, false);
});

test('popup: a new bridge URL is stored normalised and the worker reconnects there', async () => {
  const before = FakeWebSocket.made.length;
  assert.deepEqual(await ask({ type: M.POPUP_SET_BRIDGE_URL, url: '9001' }, POPUP), { ok: true, bridgeUrl: 'http://127.0.0.1:9001' });
  assert.equal(local.get('bridgeUrl'), 'http://127.0.0.1:9001');
  assert.equal(FakeWebSocket.made.length, before + 1);
  assert.equal(FakeWebSocket.made.at(-1).url, 'ws://127.0.0.1:9001/v1/rpc');
  const bad = await ask({ type: M.POPUP_SET_BRIDGE_URL, url: 'http://evil.example' }, POPUP);
  assert.equal(bad.ok, false);
  assert.equal(typeof bad.error, 'string');
  assert.equal(local.get('bridgeUrl'), 'http://127.0.0.1:9001');
  local.delete('bridgeUrl');
});

test('popup: pairing codes are checked before anything is sent', async () => {
  for (const code of ['', 'abc', 'K7QF M2XP', 'x'.repeat(33), 'K7QF_M2XP', 42]) {
    assert.deepEqual(await ask({ type: M.POPUP_PAIR, code }, POPUP), { ok: false, error: 'bad pairing code' }, String(code));
  }
});

test('popup: pairing with a good code pairs (trimmed, upper case), and a failure is reported', async () => {
  let proofSeen = null;
  bridge.methods.pair = async (p) => { proofSeen = p; throw rpcError(-32001, 'wrong code'); };
  const reply = await ask({ type: M.POPUP_PAIR, code: ' k7qf-m2xp ', name: 'n'.repeat(100), url: '8737' }, POPUP);
  assert.deepEqual(reply, { ok: false, error: 'wrong code' });
  assert.equal(proofSeen.name, 'n'.repeat(80));
  assert.equal(typeof proofSeen.proof, 'string');
  await ask({ type: M.POPUP_PAIR, code: 'K7QF-M2XP', name: 5 }, POPUP);
  assert.equal(proofSeen.name, 'Chrome');
});

test('popup: unpair forgets the token and says not paired', async () => {
  assert.deepEqual(await ask({ type: M.POPUP_UNPAIR }, POPUP), { ok: true });
  assert.equal(local.has('token'), false);
  assert.equal(local.has('bridgeKey'), false);
  assert.equal(getStatus(), M.STATUS.NOT_PAIRED);
  assert.equal(session.get('identity'), null);
  assert.equal(session.get('unread'), 0);
});

test('popup and widget: reconnect now', async () => {
  const before = FakeWebSocket.made.length;
  await unpairWorker();
  local.set('token', 'tok-1');
  local.set('bridgeKey', 'k');
  assert.deepEqual(await ask({ type: M.RECONNECT }, POPUP), { ok: true });
  assert.equal(FakeWebSocket.made.length, before + 1);
  FakeWebSocket.made.at(-1).close(1006);
  assert.deepEqual(await ask({ type: M.RECONNECT }, WIDGET), { ok: true });
  assert.equal(FakeWebSocket.made.length, before + 2);
  assert.equal(onMessage({ type: M.POPUP_GET_STATE }, WIDGET, () => {}), false, 'the widget page may only ask to reconnect');
});

test('popup: wallet sign-in opens the bridge page the bridge named, and only that', async () => {
  const url = `http://127.0.0.1:8737/signin#t=${'aB3_-'.repeat(8)}`;
  bridge.methods['signin.link'] = async () => ({ url });
  assert.deepEqual(await ask({ type: WALLET_SIGNIN }, POPUP), { ok: true, opened: true });
  assert.deepEqual(calls, [['tabs.create', { url, active: true }]]);
  bridge.methods['signin.link'] = async () => ({ url: 'https://evil.example/signin' });
  const bad = await ask({ type: WALLET_SIGNIN }, POPUP);
  assert.equal(bad.ok, false);
  assert.match(bad.error, /unexpected link to its sign-in page; nothing was opened/);
  bridge.methods['signin.link'] = async () => { throw rpcError(-32000, 'locked'); };
  assert.deepEqual(await ask({ type: WALLET_SIGNIN }, POPUP), { ok: false, error: 'The bridge could not open its sign-in page: locked' });
  assert.equal(calls.length, 1);
});

test('popup: the inbox page (issue 12) opens from the link the bridge named, at Requests when asked; the state counts requests', async () => {
  const token = 'aB3_-'.repeat(8);
  const asked = [];
  bridge.methods['inbox.link'] = async (p) => {
    asked.push(p);
    return { url: `http://127.0.0.1:8737/login${p.folder === 'requests' ? '?folder=requests' : ''}#t=${token}` };
  };
  assert.deepEqual(await ask({ type: M.POPUP_OPEN_INBOX, folder: 'requests' }, POPUP), { ok: true, opened: true });
  assert.deepEqual(await ask({ type: M.POPUP_OPEN_INBOX, folder: 'anything else' }, POPUP), { ok: true, opened: true });
  assert.deepEqual(asked, [{ folder: 'requests' }, { folder: 'inbox' }]);
  assert.deepEqual(calls, [
    ['tabs.create', { url: `http://127.0.0.1:8737/login?folder=requests#t=${token}`, active: true }],
    ['tabs.create', { url: `http://127.0.0.1:8737/login#t=${token}`, active: true }],
  ]);
  // A link elsewhere, or to another folder than asked, opens nothing.
  for (const url of ['https://evil.example/login#t=' + token, `http://127.0.0.1:8737/login#t=${token}`]) {
    bridge.methods['inbox.link'] = async () => ({ url });
    const bad = await ask({ type: M.POPUP_OPEN_INBOX, folder: 'requests' }, POPUP);
    assert.equal(bad.ok, false);
    assert.match(bad.error, /unexpected link to its inbox page; nothing was opened/);
  }
  assert.equal(calls.length, 2);
  assert.equal(onMessage({ type: M.POPUP_OPEN_INBOX }, WIDGET, () => {}), false, 'a widget may not open it');
  bridge.methods['requests.list'] = async () => ({ requests: [{ peer: ADDR }, { peer: ADDR }] });
  assert.equal((await ask({ type: M.POPUP_GET_STATE }, POPUP)).requests, 2);
  bridge.methods['requests.list'] = async () => { throw rpcError(-32601, 'Method not found'); }; // an older bridge
  assert.equal((await ask({ type: M.POPUP_GET_STATE }, POPUP)).requests, null);
});

test('popup: unknown messages are answered as such', async () => {
  assert.deepEqual(await ask({ type: 'parley/popup/nope' }, POPUP), { ok: false, error: 'unknown message' });
});

test('a handler that throws is answered with its error', async (t) => {
  t.mock.method(chrome.storage.session, 'get', async () => { throw new Error('storage gone'); });
  assert.deepEqual(await ask({ type: M.POPUP_GET_STATE }, POPUP), { ok: false, error: 'storage gone' });
});

