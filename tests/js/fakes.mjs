// Shared fakes for the worker tests (not a test file itself): chrome.* in memory, and a WebSocket
// whose far end is a fake bridge that proves itself with a real Ed25519 key and answers JSON-RPC
// from a table that tests edit (`bridge.methods`). Import it before any extension module.
import assert from 'node:assert/strict';

import { b64uDecode, b64uEncode, proofMessage } from '../../extension/common/bridge-proof.js';
import { storageArea } from './storage-fake.mjs';

export const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
export const ORIGIN = `chrome-extension://${ID}`;
export const BASE = `${ORIGIN}/`;

export const local = new Map();
export const session = new Map();
/** Every chrome.* call that acts outside storage: [api, ...args]. */
export const calls = [];
const sessionListeners = [];

const events = () => {
  const listeners = [];
  return { listeners, addListener: (fn) => listeners.push(fn), fire: (...args) => listeners.map((fn) => fn(...args)) };
};

globalThis.chrome = {
  runtime: {
    id: ID,
    getURL: (path) => `${BASE}${path}`,
    onMessage: events(), onConnect: events(), onStartup: events(), onInstalled: events(),
  },
  storage: { local: storageArea(local), session: storageArea(session, sessionListeners) },
  tabs: { onRemoved: events(), async create(props) { calls.push(['tabs.create', props]); return { id: 99 }; } },
  action: {
    async setBadgeText(props) { calls.push(['setBadgeText', props]); },
    async setBadgeBackgroundColor(props) { calls.push(['setBadgeBackgroundColor', props]); },
  },
  notifications: { create(id, props) { calls.push(['notifications.create', id, props]); } },
  alarms: {
    onAlarm: events(),
    async get(name) { return calls.some(([api, n]) => api === 'alarms.create' && n === name) ? { name } : undefined; },
    create(name, props) { calls.push(['alarms.create', name, props]); },
  },
};
globalThis.location = { origin: ORIGIN };

const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
export const BRIDGE_KEY = b64uEncode(new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey)));

/** The fake bridge's answers: method → async (params) => result (throw {code, message, data} for an error). */
export const bridge = { methods: {} };
export function resetBridge() {
  bridge.methods = {
    async hello(params) {
      const challenge = b64uDecode(params.challenge, 32);
      const host = '127.0.0.1:8737';
      const signature = await crypto.subtle.sign({ name: 'Ed25519' }, pair.privateKey, proofMessage(challenge, ORIGIN, host));
      return { v: 1, key: BRIDGE_KEY, signature: b64uEncode(new Uint8Array(signature)) };
    },
    async auth() { return { ok: true }; },
    async status() { return { address: '0x1', unread: 0, version: 'test' }; },
    async ping() { return 'pong'; },
  };
}
resetBridge();

export const rpcError = (code, message, data) => Object.assign(new Error(message), { code, data });

export class FakeWebSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    this.sent = [];
    FakeWebSocket.made.push(this);
    queueMicrotask(() => { this.readyState = 1; this.emit('open', {}); });
  }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  emit(type, event) { for (const fn of this.listeners[type] ?? []) fn(event); }
  send(frame) {
    const msg = JSON.parse(frame);
    this.sent.push(msg);
    const handler = bridge.methods[msg.method];
    if (!handler) return;
    Promise.resolve().then(() => handler(msg.params ?? {})).then(
      (result) => this.reply({ jsonrpc: '2.0', id: msg.id, result }),
      (error) => this.reply({ jsonrpc: '2.0', id: msg.id, error: { code: error.code, message: error.message, data: error.data } }),
    );
  }
  reply(msg) { if (this.readyState === 1) this.emit('message', { data: JSON.stringify(msg) }); }
  close(code = 1000) { this.readyState = 3; this.emit('close', { code }); }
}
globalThis.WebSocket = FakeWebSocket;

/** Wait (by turns of the event loop, never by the clock) until `cond()` holds. */
export async function until(cond, what) {
  for (let i = 0; i < 20000; i += 1) {
    if (await cond()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`never happened: ${what}`);
}

export async function settle() {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/** A paired worker connected to the fake bridge (imports bridge.js and state.js lazily). */
export async function connectWorker() {
  const { disconnect, reconnectNow } = await import('../../extension/background/bridge.js');
  const { getStatus } = await import('../../extension/background/state.js');
  disconnect();
  local.set('token', 'tok-1');
  local.set('bridgeKey', BRIDGE_KEY);
  await reconnectNow();
  await until(() => getStatus() === 'connected', 'the worker is connected');
}

/** Drop the worker's socket and forget the pairing, so the status is "not paired". */
export async function unpairWorker() {
  const { disconnect } = await import('../../extension/background/bridge.js');
  const { setSession } = await import('../../extension/background/state.js');
  disconnect();
  local.clear();
  await setSession({ status: 'not paired' });
}
