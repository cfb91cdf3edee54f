// Widget ports (DESIGN.md "Extension": widget). A widget is an extension page in an iframe; it opens
// a chrome.runtime port named WIDGET_PORT, names its peer with WIDGET_HELLO, and may call only the
// methods in WIDGET_METHODS. Bridge notifications for that peer are forwarded to it.
// A port is served nothing until its widget attached with the nonce the content script handed it
// (grants.js, issue 8 item 6): a widget the page framed itself stays inert.

import {
  CONSENT_ACTIONS, LIMITS, STATUS, WIDGET_ATTACH, WIDGET_EVENT, WIDGET_GATE, WIDGET_HELLO, WIDGET_METHODS, WIDGET_POPOUT, WIDGET_PORT, WIDGET_RPC,
  WIDGET_RPC_RESULT, WIDGET_STATUS,
} from '../common/messages.js';
import { isPeer, normalizeAddress } from '../common/peer.js';
import { NEVER_WIDGET_METHODS } from '../common/popup-only.js';
import { call, connect, reconnectNow } from './bridge.js';
import { getStatus, setSession, waitConnected } from './state.js';
import { isExtensionPage } from './senders.js';
import { admit, mintWindowNonce } from './grants.js';
import { WALLET_SIGNIN } from '../common/wallet.js';
import { openSignin } from './wallet.js';

const ports = new Map(); // port -> {peer: lower-case address | null, granted: peer the widget was opened for | null}

/** True when an open widget shows the conversation with `address`. */
export function widgetOpenFor(address) {
  const wanted = normalizeAddress(address);
  if (!wanted) return false;
  for (const info of ports.values()) if (info.peer === wanted) return true;
  return false;
}

function post(port, message) {
  try { port.postMessage(message); } catch { ports.delete(port); }
}

export function broadcastStatus(status) {
  for (const port of ports.keys()) post(port, { type: WIDGET_STATUS, status });
}

/** Forward a bridge notification to the widgets showing its peer. */
export function forwardEvent(method, params, address) {
  const wanted = normalizeAddress(address);
  if (!wanted) return;
  for (const [port, info] of ports) if (info.peer === wanted) post(port, { type: WIDGET_EVENT, method, params });
}

const HEX_ID = /^[0-9a-f]{32}$/;
const ATTACHMENT_ID = /^[0-9a-f]{32}-[0-9]{1,2}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MIME = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$/i;
const utf8Length = (text) => new TextEncoder().encode(text).length;

const isId = (value) => typeof value === 'string' && HEX_ID.test(value);
const isSize = (value, max) => Number.isSafeInteger(value) && value >= 0 && value <= max;

/** Only these keys (and `peer`), every one of them checked: anything else is refused. */
function onlyKeys(params, allowed) {
  return Object.keys(params).every((key) => key === 'peer' || allowed.includes(key));
}

function validEmoji(emoji) {
  // 1..32 UTF-8 bytes, no ASCII whitespace or control characters (PROTOCOL §6.7 decode rules).
  // eslint-disable-next-line no-control-regex
  return typeof emoji === 'string' && emoji.length > 0 && utf8Length(emoji) <= LIMITS.EMOJI_MAX && !/[\x00-\x20\x7f]/.test(emoji);
}

function validFileName(name) {
  // eslint-disable-next-line no-control-regex
  return typeof name === 'string' && name.length > 0 && utf8Length(name) <= 255 && !/[\x00-\x1f\x7f/\\]/.test(name);
}

function validBase64Chunk(data) {
  return typeof data === 'string' && data.length > 0 && data.length <= LIMITS.CHUNK_B64_MAX
    && data.length % 4 === 0 && BASE64.test(data);
}

function validSend(params) {
  if (!onlyKeys(params, ['text', 'reply_to', 'uploads'])) return false;
  if (typeof params.text !== 'string' || params.text.length > LIMITS.TEXT_MAX) return false;
  if (params.reply_to !== undefined && params.reply_to !== null && !isId(params.reply_to)) return false;
  if (params.uploads === undefined) return params.text.length > 0;
  const { uploads } = params;
  return Array.isArray(uploads) && uploads.length > 0 && uploads.length <= LIMITS.FILES_MAX
    && uploads.every(isId) && new Set(uploads).size === uploads.length;
}

/** Per method: params (beyond `peer`, checked before) a widget may pass. Issue 12 methods are strict. */
const CHECKS = {
  'messages.list': () => true,
  'messages.markRead': () => true,
  'messages.send': validSend,
  'messages.react': (p) => onlyKeys(p, ['id', 'emoji', 'remove']) && isId(p.id) && validEmoji(p.emoji)
    && (p.remove === undefined || typeof p.remove === 'boolean'),
  'messages.edit': (p) => onlyKeys(p, ['id', 'text']) && isId(p.id) && typeof p.text === 'string'
    && p.text.trim().length > 0 && p.text.length <= LIMITS.TEXT_MAX,
  'messages.delete': (p) => onlyKeys(p, ['id']) && isId(p.id),
  'typing.set': (p) => onlyKeys(p, ['typing']) && typeof p.typing === 'boolean',
  'consent.get': (p) => onlyKeys(p, []),
  'consent.set': (p) => onlyKeys(p, ['action']) && CONSENT_ACTIONS.includes(p.action),
  'attachments.begin': (p) => onlyKeys(p, ['name', 'size', 'mime']) && validFileName(p.name)
    && isSize(p.size, LIMITS.FILE_MAX) && typeof p.mime === 'string' && p.mime.length <= 127 && MIME.test(p.mime),
  'attachments.chunk': (p) => onlyKeys(p, ['upload_id', 'offset', 'data']) && isId(p.upload_id)
    && isSize(p.offset, LIMITS.FILE_MAX) && validBase64Chunk(p.data),
  'attachments.cancel': (p) => onlyKeys(p, ['upload_id']) && isId(p.upload_id),
  'attachments.thumbnail': (p) => onlyKeys(p, ['id']) && typeof p.id === 'string' && ATTACHMENT_ID.test(p.id),
  'attachments.read': (p) => onlyKeys(p, ['id', 'offset', 'length']) && typeof p.id === 'string' && ATTACHMENT_ID.test(p.id)
    && isSize(p.offset, LIMITS.FILE_MAX) && Number.isSafeInteger(p.length) && p.length > 0 && p.length <= LIMITS.CHUNK_MAX,
};

function validParams(method, params, info) {
  if (!params || typeof params !== 'object' || Array.isArray(params)) return false;
  if (method === 'resolve') return isPeer(params.peer) && params.peer === info.granted;
  if (method === 'canMessage') return normalizeAddress(params.address) !== null;
  // Everything else: only the conversation this widget showed (its hello, after resolving its own peer).
  if (normalizeAddress(params.peer) === null || normalizeAddress(params.peer) !== info.peer) return false;
  const check = CHECKS[method];
  return check !== undefined && check(params) === true;
}

async function handleRpc(port, msg) {
  const reply = (body) => post(port, { type: WIDGET_RPC_RESULT, id: msg.id, ...body });
  const info = ports.get(port);
  // Never a widget's, whatever the list below says: the backup (issue 15) and the bridge's page links.
  const never = typeof msg.method !== 'string' || NEVER_WIDGET_METHODS.includes(msg.method) || msg.method.startsWith('backup.');
  if (never || !info?.granted || !WIDGET_METHODS.includes(msg.method) || !validParams(msg.method, msg.params, info)) {
    reply({ error: { code: -32602, message: 'method or params not allowed' } });
    return;
  }
  if (getStatus() !== STATUS.CONNECTED) await connect();
  if (getStatus() !== STATUS.CONNECTED && !(await waitConnected(3000))) {
    reply({ error: { code: -32000, message: getStatus() } });
    return;
  }
  try {
    const result = await call(msg.method, msg.params);
    if (msg.method === 'messages.markRead' && result && Number.isInteger(result.unread)) {
      await setSession({ unread: result.unread });
    }
    reply({ result });
  } catch (error) {
    reply({ error: { code: error.code ?? -32603, message: String(error.message ?? error), data: error.data ?? null } });
  }
}

/** "Connect wallet" in a widget: open the bridge's own sign-in page in a new tab (issue 8 item 1). */
async function handleWallet(port, msg) {
  const reply = (body) => post(port, { type: WIDGET_RPC_RESULT, id: msg.id, ...body });
  try {
    if (getStatus() !== STATUS.CONNECTED && !(await waitConnected(3000))) {
      reply({ error: { code: -32000, message: `Parley bridge: ${getStatus()}` } });
      return;
    }
    reply({ result: await openSignin() });
  } catch (error) {
    reply({ error: { code: -32011, message: String(error.message ?? error), data: { reason: error.reason ?? 'error' } } });
  }
}

/**
 * Open the conversation with `peer` (the one the asking frame was admitted for) in a popup window of
 * our own, with a window nonce in its URL fragment (Firefox: no IntersectionObserver v2, so a framed
 * widget never acts; a top-level window of ours cannot be covered by a page).
 */
export async function popOut(peer) {
  const nonce = await mintWindowNonce(peer);
  if (!nonce) return;
  const url = chrome.runtime.getURL(`widget/widget.html?peer=${encodeURIComponent(peer)}#w=${nonce}`);
  await chrome.windows.create({ url, type: 'popup', width: 380, height: 600 });
}

/** chrome.runtime.onConnect listener for widget pages. */
export function onConnect(port) {
  if (port.name !== WIDGET_PORT || !isExtensionPage(port.sender, 'widget/widget.html')) {
    port.disconnect();
    return;
  }
  ports.set(port, { peer: null, granted: null });
  port.onDisconnect.addListener(() => ports.delete(port));
  port.onMessage.addListener((msg) => {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === WIDGET_ATTACH) {
      admit(port.sender, msg.nonce ?? null).then((granted) => {
        if (!ports.has(port)) return;
        if (granted) ports.set(port, { ...ports.get(port), granted });
        post(port, granted ? { type: WIDGET_GATE, ok: true } : { type: WIDGET_GATE, ok: false, reason: 'not-opened-by-parley' });
        if (granted) post(port, { type: WIDGET_STATUS, status: getStatus() });
      });
      return;
    }
    if (!ports.get(port)?.granted) {
      if (Number.isInteger(msg.id)) post(port, { type: WIDGET_RPC_RESULT, id: msg.id, error: { code: -32001, message: 'this chat was not opened by Parley' } });
      return;
    }
    if (msg.type === WIDGET_HELLO) {
      const peer = normalizeAddress(msg.peer);
      ports.set(port, { ...ports.get(port), peer });
      post(port, { type: WIDGET_STATUS, status: getStatus() });
    } else if (msg.type === WIDGET_RPC && Number.isInteger(msg.id)) {
      handleRpc(port, msg);
    } else if (msg.type === 'reconnect') {
      reconnectNow();
    } else if (msg.type === WIDGET_POPOUT) {
      popOut(ports.get(port).granted).catch((error) => console.debug('[parley] popout failed', error));
    } else if (msg.type === WALLET_SIGNIN && Number.isInteger(msg.id)) {
      handleWallet(port, msg);
    }
  });
}
