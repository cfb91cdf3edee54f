// The backup in the worker (issue 15 item 8; extension/background/backup.js, handlers.js, widgets.js):
// only the popup page reaches `backup.*`. A widget (an iframe in a site's page) is refused over its
// port and over runtime messages, a site's content script is not answered, and nothing reaches the
// bridge for them. The recovery key goes from the bridge to the popup once and is kept nowhere.
// The bridge is the fake in fakes.mjs.
import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { BASE, FakeWebSocket, bridge, calls, connectWorker, local, resetBridge, rpcError, session, settle, unpairWorker, until } from './fakes.mjs';

const { onMessage } = await import('../../extension/background/handlers.js');
const { onConnect } = await import('../../extension/background/widgets.js');
const { mintNonce } = await import('../../extension/background/grants.js');
const M = await import('../../extension/common/messages.js');
const P = await import('../../extension/common/popup-only.js');

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const ADDR = `0x${'ab'.repeat(20)}`;
const KEY = 'abcd efgh ijkl mnop qrst uvwx yz01 2345 6789 abcd efgh ijkl mnop qrst uvwx yz01';
const POPUP = { id: ID, url: `${BASE}popup/popup.html` };
const WIDGET = { id: ID, url: `${BASE}widget/widget.html?peer=lens%3Abob`, tab: { id: 7 }, frameId: 3 };
const SITE = { id: ID, url: 'https://hey.xyz/u/bob', origin: 'https://hey.xyz', tab: { id: 7 }, frameId: 0 };
const OTHER_EXTENSION = { id: 'a'.repeat(32), url: `chrome-extension://${'a'.repeat(32)}/popup/popup.html` };
const BACKUP_MESSAGES = [
  { type: P.POPUP_BACKUP_STATUS },
  { type: P.POPUP_BACKUP_CREATE_KEY },
  { type: P.POPUP_BACKUP_CREATE_KEY, replace: true },
  { type: P.POPUP_BACKUP_CONFIRM_KEY, recoveryKey: KEY },
  { type: P.POPUP_BACKUP_SET_REMOTE, enabled: true },
];
const STATUS = {
  enabled: true, has_key: true, confirmed: true, last_backup_at: 1_700_000_000_000, size: 1_258_291, segments: 3,
  relays: [
    { url: 'http://127.0.0.1:9001', state: 'ok', last_at: 1_700_000_000_000, error: null },
    { url: 'http://127.0.0.1:9002', state: 'error', last_at: null, error: 'x'.repeat(500) },
  ],
  standby: { installation_id: 'i'.repeat(32), created_at: 5 },
};

function ask(msg, sender) {
  return new Promise((resolve) => {
    assert.equal(onMessage(msg, sender, resolve), true, 'answered asynchronously');
  });
}

/** Every backup.* call that reached the fake bridge, in order: [method, params]. */
const asked = [];

function sentToBridge() {
  return FakeWebSocket.made.flatMap((ws) => ws.sent).filter((m) => String(m.method).startsWith('backup.'));
}

after(unpairWorker);

beforeEach(async () => {
  resetBridge();
  calls.length = 0;
  asked.length = 0;
  for (const ws of FakeWebSocket.made) ws.sent.length = 0;
  bridge.methods['backup.status'] = async (p) => { asked.push(['backup.status', p]); return { ...STATUS, secret: 'not for the popup' }; };
  bridge.methods['backup.createKey'] = async (p) => { asked.push(['backup.createKey', p]); return { recovery_key: KEY }; };
  bridge.methods['backup.confirmKey'] = async (p) => { asked.push(['backup.confirmKey', p]); return { confirmed: true, enabled: true }; };
  bridge.methods['backup.setRemote'] = async (p) => { asked.push(['backup.setRemote', p]); return { ...STATUS, enabled: p.enabled }; };
  await connectWorker();
});

test('popup: the status, rebuilt from known fields (strings cut, junk dropped)', async () => {
  const reply = await ask({ type: P.POPUP_BACKUP_STATUS }, POPUP);
  assert.equal(reply.ok, true);
  assert.deepEqual(asked, [['backup.status', {}]]);
  assert.equal(reply.status.secret, undefined);
  assert.equal(reply.status.size, 1_258_291);
  assert.equal(reply.status.last_backup_at, 1_700_000_000_000);
  assert.deepEqual(reply.status.relays.map((r) => r.state), ['ok', 'error']);
  assert.equal(reply.status.relays[1].error.length, 200);
  assert.deepEqual(reply.status.standby, { installation_id: 'i'.repeat(32), created_at: 5 });
  bridge.methods['backup.status'] = async () => ({ has_key: 'yes', enabled: 1, relays: [null, { state: 'evil', url: 7 }], size: -4 });
  const odd = (await ask({ type: P.POPUP_BACKUP_STATUS }, POPUP)).status;
  assert.deepEqual([odd.has_key, odd.enabled, odd.size, odd.relays], [false, false, 0, [{ url: '', state: 'pending', last_at: null, error: null }]]);
  bridge.methods['backup.status'] = async () => 'nothing';
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_STATUS }, POPUP), { ok: false, error: 'the bridge sent no backup status', reason: 'error' });
  bridge.methods['backup.status'] = async () => { throw rpcError(-32601, 'Method not found'); };
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_STATUS }, POPUP),
    { ok: false, error: 'this bridge has no backups (update Parley)', reason: 'unsupported' });
});

test('popup: createKey hands the key over once and keeps it nowhere; a key that exists is the bridge\'s refusal', async () => {
  const reply = await ask({ type: P.POPUP_BACKUP_CREATE_KEY }, POPUP);
  assert.deepEqual(reply, { ok: true, recoveryKey: KEY });
  await ask({ type: P.POPUP_BACKUP_CREATE_KEY, replace: true }, POPUP);
  await ask({ type: P.POPUP_BACKUP_CREATE_KEY, replace: 'yes' }, POPUP);
  assert.deepEqual(asked, [['backup.createKey', {}], ['backup.createKey', { replace: true }], ['backup.createKey', {}]]);
  const squeezed = KEY.replaceAll(' ', '');
  for (const [name, area] of [['local', local], ['session', session]]) {
    const all = JSON.stringify([...area.entries()]);
    assert.ok(!all.includes(KEY) && !all.includes(squeezed) && !all.includes(KEY.slice(0, 14)), `the key is not in storage.${name}`);
  }
  bridge.methods['backup.createKey'] = async () => { throw rpcError(-32010, 'a recovery key exists', { reason: 'exists' }); };
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_CREATE_KEY }, POPUP), { ok: false, error: 'a recovery key exists', reason: 'exists' });
  for (const bad of [null, {}, { recovery_key: 7 }, { recovery_key: squeezed }, { recovery_key: `${KEY} more` }, { recovery_key: `<b>${KEY}</b>` }]) {
    bridge.methods['backup.createKey'] = async () => bad;
    assert.deepEqual(await ask({ type: P.POPUP_BACKUP_CREATE_KEY }, POPUP), { ok: false, error: 'the bridge sent no recovery key', reason: 'error' }, JSON.stringify(bad));
  }
});

test('popup: confirmKey sends what was typed; a mismatch says so; junk never reaches the bridge', async () => {
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_CONFIRM_KEY, recoveryKey: KEY.toUpperCase() }, POPUP), { ok: true, confirmed: true, enabled: true });
  assert.deepEqual(asked, [['backup.confirmKey', { recovery_key: KEY.toUpperCase() }]]);
  bridge.methods['backup.confirmKey'] = async () => { throw rpcError(-32010, 'this is not the recovery key that was shown', { reason: 'mismatch' }); };
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_CONFIRM_KEY, recoveryKey: KEY.replace('abcd', 'abce') }, POPUP),
    { ok: false, error: 'this is not the recovery key that was shown', reason: 'mismatch' });
  bridge.methods['backup.confirmKey'] = async () => ({ confirmed: false });
  assert.equal((await ask({ type: P.POPUP_BACKUP_CONFIRM_KEY, recoveryKey: KEY }, POPUP)).reason, 'mismatch', 'only confirmed: true confirms');
  asked.length = 0;
  for (const typed of [undefined, 42, '', '   ', 'k'.repeat(201), { key: KEY }]) {
    const reply = await ask({ type: P.POPUP_BACKUP_CONFIRM_KEY, recoveryKey: typed }, POPUP);
    assert.deepEqual([reply.ok, reply.reason], [false, 'malformed'], String(typed));
  }
  assert.deepEqual(asked, []);
});

test('popup: setRemote takes true or false only and answers the new status', async () => {
  const off = await ask({ type: P.POPUP_BACKUP_SET_REMOTE, enabled: false }, POPUP);
  assert.equal(off.ok, true);
  assert.equal(off.status.enabled, false);
  for (const enabled of ['true', 1, null, undefined]) {
    assert.equal((await ask({ type: P.POPUP_BACKUP_SET_REMOTE, enabled }, POPUP)).ok, false);
  }
  assert.deepEqual(asked, [['backup.setRemote', { enabled: false }]]);
  bridge.methods['backup.setRemote'] = async () => { throw rpcError(-32010, 'confirm your recovery key first', { reason: 'unconfirmed' }); };
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_SET_REMOTE, enabled: true }, POPUP),
    { ok: false, error: 'confirm your recovery key first', reason: 'unconfirmed' });
});

test('while the bridge is away the popup is told so, and nothing is sent', async () => {
  await unpairWorker();
  assert.deepEqual(await ask({ type: P.POPUP_BACKUP_CREATE_KEY }, POPUP), { ok: false, error: 'Parley bridge: not paired', reason: 'bridge' });
  assert.deepEqual(asked, []);
});

test('a widget page, a site\'s content script, another extension: backup messages are not answered and reach nothing', async () => {
  for (const sender of [WIDGET, SITE, OTHER_EXTENSION, { ...POPUP, id: undefined }, { id: ID, url: `${BASE}popup/popup.html.evil` }]) {
    for (const msg of BACKUP_MESSAGES) {
      let answered = null;
      assert.equal(onMessage(msg, sender, (r) => { answered = r; }), false, `${msg.type} from ${sender.url}`);
      await settle();
      assert.equal(answered, null);
    }
  }
  assert.deepEqual(sentToBridge(), []);
  assert.deepEqual(asked, []);
});

function widgetPort() {
  const listeners = { message: [], disconnect: [] };
  const port = {
    name: M.WIDGET_PORT,
    sender: WIDGET,
    got: [],
    postMessage(msg) { port.got.push(msg); },
    disconnect() {},
    onMessage: { addListener: (fn) => listeners.message.push(fn) },
    onDisconnect: { addListener: (fn) => listeners.disconnect.push(fn) },
    send(msg) { for (const fn of listeners.message) fn(msg); },
  };
  onConnect(port);
  return port;
}

test('a widget admitted for a conversation gets "method not allowed" for every backup method, with any params', async () => {
  bridge.methods.resolve = async () => ({ address: ADDR });
  const port = widgetPort();
  port.send({ type: M.WIDGET_ATTACH, nonce: await mintNonce(7, 'lens:bob') });
  await until(() => port.got.some((m) => m.type === M.WIDGET_GATE && m.ok === true), 'the gate opens');
  port.send({ type: M.WIDGET_HELLO, peer: ADDR });
  let id = 0;
  const methods = [...P.NEVER_WIDGET_METHODS, 'backup.export', 'backup.anything'];
  for (const method of methods) {
    for (const params of [{}, { peer: ADDR }, { peer: ADDR, replace: true }, { peer: ADDR, recovery_key: KEY }, { peer: ADDR, enabled: true }]) {
      id += 1;
      port.send({ type: M.WIDGET_RPC, id, method, params });
      await until(() => port.got.some((m) => m.type === M.WIDGET_RPC_RESULT && m.id === id), `an answer to ${method}`);
      const { type, id: _, ...body } = port.got.find((m) => m.type === M.WIDGET_RPC_RESULT && m.id === id);
      assert.deepEqual(body, { error: { code: -32602, message: 'method or params not allowed' } }, `${method} ${JSON.stringify(params)}`);
    }
  }
  assert.deepEqual(sentToBridge(), [], 'nothing about the backup reached the bridge');
  // The same port still works for what a widget may do (the refusals are not a broken port).
  id += 1;
  port.send({ type: M.WIDGET_RPC, id, method: 'resolve', params: { peer: 'lens:bob' } });
  await until(() => port.got.some((m) => m.id === id), 'resolve answered');
  assert.deepEqual(port.got.find((m) => m.id === id).result, { address: ADDR });
  assert.ok(!M.WIDGET_METHODS.some((m) => P.NEVER_WIDGET_METHODS.includes(m) || m.startsWith('backup.')), 'no backup method in WIDGET_METHODS');
});
