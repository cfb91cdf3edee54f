// chrome.runtime.onMessage handlers, tiered by sender (DESIGN.md "Extension": every message checked).

import {
  CONTENT_LOOKUP_PEER, CONTENT_OPEN_WIDGET, POPUP_GET_STATE, POPUP_PAIR, POPUP_SET_BRIDGE_URL, POPUP_UNPAIR, RECONNECT, STATUS,
} from '../common/messages.js';
import { isPeer } from '../common/peer.js';
import { call, connect, disconnect, pair, reconnectNow } from './bridge.js';
import { getBridgeUrl, getSession, getStatus, setBridgeUrl, setPairing, setSession, waitConnected } from './state.js';
import { isExtensionPage, isSiteContentScript } from './senders.js';
import { WALLET_SIGNIN } from '../common/wallet.js';
import { openSignin } from './wallet.js';
import { mintNonce } from './grants.js';
import { handleLayoutMessage } from './layout.js';

const PAIR_CODE_RE = /^[A-Za-z0-9-]{4,32}$/;

/** Resolver answers that mean "no wallet known for this name" (→ invite), not "could not ask". */
const NOT_FOUND_REASONS = new Set(['unknown', 'not-found', 'not_found', 'no-address', 'none']);

function detailOf(error) {
  const data = error && typeof error.data === 'object' && error.data ? error.data : {};
  const text = typeof data.detail === 'string' && data.detail ? data.detail : String(error?.message ?? 'error');
  return text.slice(0, 200);
}

/**
 * Ask the bridge about `peer` (issue 4 part 4). The content script learns only the state, a reason
 * word and the bridge's short explanation: ready | unavailable (not-on-parley, not-paired,
 * unreachable) | unresolved (the name could not be resolved: name service unreachable, …).
 */
async function lookupPeer(peer) {
  if (!isPeer(peer)) return { state: 'unresolved', reason: 'malformed', detail: 'not a name Parley understands' };
  if (getStatus() !== STATUS.CONNECTED) {
    await connect();
    if (!(await waitConnected(4000))) {
      return { state: 'unavailable', reason: getStatus() === STATUS.NOT_PAIRED ? 'not-paired' : 'unreachable' };
    }
  }
  let resolved;
  try {
    resolved = await call('resolve', { peer });
  } catch (error) {
    if (error.code === -32004 && NOT_FOUND_REASONS.has(String(error.data?.reason ?? ''))) {
      return { state: 'unavailable', reason: 'not-on-parley' };
    }
    return { state: 'unresolved', reason: String(error.data?.reason ?? 'error').slice(0, 40), detail: detailOf(error) };
  }
  if (!resolved || typeof resolved.address !== 'string') {
    return { state: 'unresolved', reason: 'error', detail: 'the bridge gave no address' };
  }
  try {
    const can = await call('canMessage', { address: resolved.address });
    return can && can.canMessage === true
      ? { state: 'ready', reason: null }
      : { state: 'unavailable', reason: 'not-on-parley' };
  } catch (error) {
    return { state: 'unresolved', reason: 'relay', detail: detailOf(error) };
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
      await setPairing(null);
      disconnect();
      await setSession({ status: STATUS.NOT_PAIRED, identity: null, unread: 0 });
      return { ok: true };
    case RECONNECT:
      await reconnectNow();
      return { ok: true };
    case WALLET_SIGNIN:
      try {
        return { ok: true, ...(await openSignin()) };
      } catch (error) {
        return { ok: false, error: String(error.message ?? error) };
      }
    default:
      return { ok: false, error: 'unknown message' };
  }
}

/** chrome.runtime.onMessage listener. Returns true when it will answer asynchronously. */
export function onMessage(msg, sender, sendResponse) {
  if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return false;
  let work = handleLayoutMessage(msg, sender); // issue 11: layout state (layout.js checks the sender)
  if (work) {
    // answered below
  } else if (msg.type === CONTENT_LOOKUP_PEER && isSiteContentScript(sender)) {
    work = lookupPeer(msg.peer);
  } else if (msg.type === CONTENT_OPEN_WIDGET && isSiteContentScript(sender)) {
    work = mintNonce(sender.tab.id, msg.peer).then((nonce) => ({ nonce }));
  } else if (msg.type === RECONNECT && isExtensionPage(sender, 'widget/widget.html')) {
    work = reconnectNow().then(() => ({ ok: true }));
  } else if (isExtensionPage(sender, 'popup/popup.html')) {
    work = handlePopup(msg);
  }
  if (!work) return false;
  work.then(sendResponse, (error) => sendResponse({ ok: false, error: String(error?.message ?? error) }));
  return true;
}
