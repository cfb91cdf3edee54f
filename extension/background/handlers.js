// chrome.runtime.onMessage handlers, tiered by sender (DESIGN.md "Extension": every message checked).

import {
  CONTENT_LOOKUP_PEER, POPUP_GET_STATE, POPUP_PAIR, POPUP_SET_BRIDGE_URL, POPUP_UNPAIR, RECONNECT, STATUS,
} from '../common/messages.js';
import { isPeer } from '../common/peer.js';
import { call, connect, disconnect, pair, reconnectNow } from './bridge.js';
import { getBridgeUrl, getSession, getStatus, setBridgeUrl, setSession, setToken, waitConnected } from './state.js';
import { isExtensionPage, isSiteContentScript } from './senders.js';

const PAIR_CODE_RE = /^[A-Za-z0-9-]{4,32}$/;

async function lookupPeer(peer) {
  if (!isPeer(peer)) return { state: 'unavailable', reason: 'error' };
  if (getStatus() !== STATUS.CONNECTED) {
    await connect();
    if (!(await waitConnected(4000))) {
      return { state: 'unavailable', reason: getStatus() === STATUS.NOT_PAIRED ? 'not-paired' : 'unreachable' };
    }
  }
  try {
    const resolved = await call('resolve', { peer });
    if (!resolved || typeof resolved.address !== 'string') return { state: 'unavailable', reason: 'cannot-resolve' };
    const can = await call('canMessage', { address: resolved.address });
    return can && can.canMessage === true
      ? { state: 'ready', reason: null }
      : { state: 'unavailable', reason: 'not-on-parley' };
  } catch (error) {
    return { state: 'unavailable', reason: error.code === -32004 ? 'cannot-resolve' : 'error' };
  }
}

async function stateSnapshot() {
  return { ...(await getSession()), status: getStatus(), bridgeUrl: await getBridgeUrl() };
}

async function handlePopup(msg) {
  switch (msg.type) {
    case POPUP_GET_STATE:
      return stateSnapshot();
    case POPUP_SET_BRIDGE_URL: {
      const bridgeUrl = await setBridgeUrl(msg.url);
      disconnect();
      await reconnectNow();
      return { ok: true, bridgeUrl };
    }
    case POPUP_PAIR: {
      if (typeof msg.code !== 'string' || !PAIR_CODE_RE.test(msg.code.trim())) return { ok: false, error: 'bad pairing code' };
      if (typeof msg.url === 'string') await setBridgeUrl(msg.url);
      const name = typeof msg.name === 'string' ? msg.name.slice(0, 80) : 'Chrome';
      try {
        await pair(msg.code.trim().toUpperCase(), name);
        return { ok: true };
      } catch (error) {
        return { ok: false, error: String(error.message ?? error) };
      }
    }
    case POPUP_UNPAIR:
      await setToken(null);
      disconnect();
      await setSession({ status: STATUS.NOT_PAIRED, identity: null, unread: 0 });
      return { ok: true };
    case RECONNECT:
      await reconnectNow();
      return { ok: true };
    default:
      return { ok: false, error: 'unknown message' };
  }
}

/** chrome.runtime.onMessage listener. Returns true when it will answer asynchronously. */
export function onMessage(msg, sender, sendResponse) {
  if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return false;
  let work = null;
  if (msg.type === CONTENT_LOOKUP_PEER && isSiteContentScript(sender)) {
    work = lookupPeer(msg.peer);
  } else if (msg.type === RECONNECT && isExtensionPage(sender, 'widget/widget.html')) {
    work = reconnectNow().then(() => ({ ok: true }));
  } else if (isExtensionPage(sender, 'popup/popup.html')) {
    work = handlePopup(msg);
  }
  if (!work) return false;
  work.then(sendResponse, (error) => sendResponse({ ok: false, error: String(error?.message ?? error) }));
  return true;
}
