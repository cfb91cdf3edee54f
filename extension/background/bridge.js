// The one WebSocket to the bridge (DESIGN.md "Extension": service worker; local API contract:
// JSON-RPC 2.0 at ws://127.0.0.1:PORT/v1/rpc, 20 s ping, reconnect with exponential backoff capped
// at 30 s, close code 4401 = bad token → drop it, "not paired").
//
// Port squatting (issue 8 item 9): whatever listens on the port must first prove it is the paired
// bridge. The first frame is `hello {challenge}`; only a valid signature by the key learnt at pairing
// (common/bridge-proof.js) lets `auth {token}` (or, while pairing, `pair {proof}`) go out. Otherwise
// the socket is dropped, the status is "bridge not verified", and neither the token nor any text is
// ever sent to it. At pairing the key is learnt, and the code never crosses the socket: the extension
// and the bridge each prove with an HMAC that they know it (a stand-in learns nothing usable).

import { b64uDecode, b64uEncode, newChallenge, pairProof, verifyProof } from '../common/bridge-proof.js';
import { wsUrlFor } from '../common/bridge-url.js';
import { STATUS } from '../common/messages.js';
import { getBridgeKey, getBridgeUrl, getStatus, getToken, setPairing, setSession } from './state.js';

const PING_MS = 20000;
const CALL_TIMEOUT_MS = 15000;
const BACKOFF_START_MS = 1000;
const BACKOFF_CAP_MS = 30000;
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_NOT_VERIFIED = 4403;

export class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.name = 'RpcError';
    this.code = code;
    this.data = data;
  }
}

let socket = null;
let nextId = 1;
const pending = new Map();
let pingTimer = null;
let reconnectTimer = null;
let backoffMs = BACKOFF_START_MS;
let pairRequest = null; // {code, name, resolve, reject}
const notificationHandlers = new Set();

/** Register `handler(method, params)` for bridge notifications (message.new, conversation.updated). */
export function onNotification(handler) {
  notificationHandlers.add(handler);
}

function send(sock, method, params) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new RpcError(-32000, `bridge did not answer ${method}`));
    }, CALL_TIMEOUT_MS);
    pending.set(id, { resolve, reject, timer });
    try {
      sock.send(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) }));
    } catch {
      clearTimeout(timer);
      pending.delete(id);
      reject(new RpcError(-32000, 'bridge socket is not open'));
    }
  });
}

/** Call a JSON-RPC method on the authenticated bridge socket. Rejects with RpcError. */
export function call(method, params) {
  if (!socket || socket.readyState !== WebSocket.OPEN || getStatus() !== STATUS.CONNECTED) {
    return Promise.reject(new RpcError(-32000, getStatus()));
  }
  return send(socket, method, params);
}

function failPending(reason) {
  for (const [id, entry] of pending) {
    clearTimeout(entry.timer);
    entry.reject(new RpcError(-32000, reason));
    pending.delete(id);
  }
}

function onMessage(event) {
  let msg;
  try {
    msg = JSON.parse(typeof event.data === 'string' ? event.data : '');
  } catch {
    return;
  }
  if (!msg || typeof msg !== 'object' || msg.jsonrpc !== '2.0') return;
  if ('id' in msg && msg.id !== null && pending.has(msg.id)) {
    const entry = pending.get(msg.id);
    pending.delete(msg.id);
    clearTimeout(entry.timer);
    if (msg.error && typeof msg.error === 'object') {
      entry.reject(new RpcError(Number(msg.error.code) || -32603, String(msg.error.message ?? 'error'), msg.error.data));
    } else {
      entry.resolve(msg.result);
    }
    return;
  }
  if (typeof msg.method === 'string' && !('id' in msg)) {
    for (const handler of notificationHandlers) {
      try { handler(msg.method, msg.params ?? {}); } catch (error) { console.debug('[parley] notification handler', error); }
    }
  }
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  const delay = Math.min(backoffMs, BACKOFF_CAP_MS) * (0.8 + Math.random() * 0.4);
  backoffMs = Math.min(backoffMs * 2, BACKOFF_CAP_MS);
  reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, delay);
}

function startPing(sock) {
  clearInterval(pingTimer);
  pingTimer = setInterval(() => {
    send(sock, 'ping').catch(() => { if (socket === sock) sock.close(4000, 'ping timeout'); });
  }, PING_MS);
}

async function refreshStatus() {
  const st = await call('status');
  if (!st || typeof st !== 'object') return;
  await setSession({
    identity: { address: String(st.address ?? ''), did: String(st.did ?? ''), installation_id: String(st.installation_id ?? '') },
    unread: Number.isInteger(st.unread) ? st.unread : 0,
    relay: st.relay && typeof st.relay === 'object' ? { url: String(st.relay.url ?? ''), connected: Boolean(st.relay.connected) } : null,
    version: String(st.version ?? ''),
  });
}

class NotVerified extends Error {}

/** hello → the bridge's proof; resolves the verified key (base64url) or throws NotVerified. */
async function verifyBridge(sock, url, expectedKey) {
  const challenge = newChallenge();
  let hello;
  try {
    hello = await send(sock, 'hello', { v: 1, challenge: b64uEncode(challenge) });
  } catch (error) {
    throw new NotVerified(`no proof (${error.message})`);
  }
  const host = new URL(url).host;
  if (!(await verifyProof(hello, challenge, location.origin, host, expectedKey))) {
    throw new NotVerified(expectedKey !== null && hello?.key !== expectedKey ? 'a different key' : 'a bad signature');
  }
  return { key: hello.key, challenge };
}

async function handshake(sock, token, url) {
  const request = pairRequest;
  try {
    const expectedKey = request ? null : await getBridgeKey();
    if (!request && !expectedKey) throw new NotVerified('no bridge key from pairing: pair again');
    const { key, challenge } = await verifyBridge(sock, url, expectedKey);
    if (socket !== sock) return;
    if (request) {
      // The code itself never goes out: a proof that we know it, and the bridge must prove it too.
      const keyBytes = b64uDecode(key, 32);
      const proof = await pairProof(request.code, 'client', challenge, keyBytes);
      const result = await send(sock, 'pair', { proof: b64uEncode(proof), name: request.name });
      if (!result || typeof result.token !== 'string' || !result.token) throw new RpcError(-32603, 'bridge sent no token');
      const expected = b64uEncode(await pairProof(request.code, 'bridge', challenge, keyBytes));
      if (result.bridge_key !== key || result.proof !== expected) throw new NotVerified('the bridge does not know the pairing code');
      await setPairing(result.token, key);
      pairRequest = null;
      request.resolve({ ok: true });
    } else {
      const result = await send(sock, 'auth', { token });
      if (!result || result.ok !== true) throw new RpcError(-32001, 'not authenticated');
    }
  } catch (error) {
    if (request) {
      pairRequest = null;
      request.reject(error instanceof NotVerified ? new RpcError(-32000, `bridge not verified: ${error.message}`) : error);
      await setSession({ lastError: `pairing failed: ${error.message}` });
    }
    if (error instanceof NotVerified) {
      notVerified.add(sock);
      await setSession({ status: STATUS.NOT_VERIFIED, lastError: `bridge not verified: ${error.message}` });
      if (socket === sock) sock.close(CLOSE_NOT_VERIFIED, 'bridge not verified');
      return;
    }
    if (!request) await setPairing(null);
    if (socket === sock) sock.close(CLOSE_UNAUTHORIZED, 'handshake failed');
    return;
  }
  if (socket !== sock) return;
  backoffMs = BACKOFF_START_MS;
  await setSession({ status: STATUS.CONNECTED, lastError: null });
  startPing(sock);
  refreshStatus().catch((error) => console.debug('[parley] status failed', error));
}

const notVerified = new WeakSet();

/** Open the socket if we have a token (or a pairing is pending) and none is open. */
export async function connect() {
  if (socket) return;
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  const token = await getToken();
  if (socket) return; // another connect() won the race while we awaited
  if (!token && !pairRequest) {
    await setSession({ status: STATUS.NOT_PAIRED });
    return;
  }
  const url = wsUrlFor(await getBridgeUrl());
  if (socket) return;
  let sock;
  try {
    sock = new WebSocket(url);
  } catch (error) {
    if (pairRequest) {
      const request = pairRequest;
      pairRequest = null;
      request.reject(new RpcError(-32000, `bridge unreachable (${error.message ?? error})`));
    }
    await setSession({ status: token ? STATUS.UNREACHABLE : STATUS.NOT_PAIRED, lastError: String(error.message ?? error) });
    if (token) scheduleReconnect();
    return;
  }
  socket = sock;
  // Listeners go on before any await: a refused connection can close the socket within one tick.
  sock.addEventListener('open', () => { handshake(sock, token, url); });
  sock.addEventListener('message', onMessage);
  sock.addEventListener('close', (event) => { onClose(sock, event); });
  if (getStatus() !== STATUS.UNREACHABLE && getStatus() !== STATUS.NOT_VERIFIED) await setSession({ status: STATUS.CONNECTING });
}

async function onClose(sock, event) {
  if (socket !== sock) return;
  socket = null;
  clearInterval(pingTimer);
  failPending('bridge connection closed');
  if (pairRequest) {
    const request = pairRequest;
    pairRequest = null;
    request.reject(new RpcError(-32000, 'bridge unreachable'));
  }
  if (event.code === CLOSE_UNAUTHORIZED) {
    if (!(await getToken())) {
      await setSession({ status: STATUS.NOT_PAIRED });
      return;
    }
    // a pairing attempt failed while an older token is kept: try it again
  }
  const token = await getToken();
  if (!token) {
    await setSession({ status: STATUS.NOT_PAIRED });
    return;
  }
  // A stand-in that failed the proof keeps "bridge not verified" shown while we retry.
  if (!notVerified.has(sock)) await setSession({ status: STATUS.UNREACHABLE });
  scheduleReconnect();
}

/** Retry now (popup/widget asked), resetting the backoff. */
export function reconnectNow() {
  backoffMs = BACKOFF_START_MS;
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  return connect();
}

/** Close the socket (e.g. the bridge URL changed or the user unpaired). */
export function disconnect() {
  const sock = socket;
  socket = null;
  clearInterval(pingTimer);
  clearTimeout(reconnectTimer);
  failPending('bridge connection closed');
  if (sock) sock.close(1000, 'bye');
}

/** Pair with the code `parley pair` printed; resolves {ok: true} once the token is stored. */
export function pair(code, name) {
  disconnect();
  if (pairRequest) pairRequest.reject(new RpcError(-32000, 'superseded'));
  return new Promise((resolve, reject) => {
    pairRequest = { code, name, resolve, reject };
    connect().catch(reject);
  });
}

export function isConnected() {
  return socket !== null && getStatus() === STATUS.CONNECTED;
}
