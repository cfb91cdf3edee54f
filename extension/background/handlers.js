// chrome.runtime.onMessage handlers, tiered by sender (DESIGN.md "Extension": every message checked).

import {
  CONTENT_LOOKUP_PEER, CONTENT_OPEN_WIDGET, POPUP_GET_STATE, POPUP_OPEN_INBOX, POPUP_PAIR, POPUP_SET_BRIDGE_URL, POPUP_UNPAIR, RECONNECT,
  STATUS,
} from '../common/messages.js';
import { POPUP_BACKUP_CONFIRM_KEY, POPUP_BACKUP_CREATE_KEY, POPUP_BACKUP_SET_REMOTE, POPUP_BACKUP_STATUS } from '../common/popup-only.js';
import { isPeer } from '../common/peer.js';
import { unresolvedFrom } from '../common/labels.js';
import { call, connect, disconnect, pair, reconnectNow } from './bridge.js';
import { getBridgeUrl, getSession, getStatus, getToken, setBridgeUrl, setPairing, setSession, waitConnected } from './state.js';
import { isExtensionPage, isSiteContentScript } from './senders.js';
import { WALLET_SIGNIN } from '../common/wallet.js';
import { openInbox, openSignin } from './wallet.js';
import { mintNonce } from './grants.js';
import { handleLayoutMessage } from './layout.js';
import { backupStatus, confirmKey, createKey, setRemote } from './backup.js';

const PAIR_CODE_RE = /^[A-Za-z0-9-]{4,32}$/;

/** Why a lookup could not reach the bridge, by connection status (common/labels.js has the words). */
const UNAVAILABLE_REASON = { [STATUS.NOT_PAIRED]: 'not-paired', [STATUS.NOT_VERIFIED]: 'not-verified', [STATUS.UNREACHABLE]: 'unreachable' };

/**
 * Ask the bridge about `peer` (issue 4 part 4). The content script learns only the state, a reason
 * word and the bridge's short explanation: ready | unavailable (not-on-parley: the name resolved to a
 * wallet with no Parley installation; not-paired, unreachable, not-verified: the bridge could not be
 * asked) | unresolved (the name could not be resolved: not found, name service unreachable, …).
 */
async function lookupPeer(peer) {
  if (!isPeer(peer)) return { state: 'unresolved', reason: 'malformed', detail: 'not a name Parley understands' };
  if (getStatus() !== STATUS.CONNECTED) {
    await connect();
    if (!(await waitConnected(4000))) return { state: 'unavailable', reason: UNAVAILABLE_REASON[getStatus()] ?? 'unreachable' };
  }
  let resolved;
  try {
    resolved = await call('resolve', { peer });
  } catch (error) {
    // Not found, or the name service could not be asked: no wallet is known for the name, so whether
    // it is on Parley is unknown too. The widget says the same for this error (common/labels.js).
    return unresolvedFrom(error);
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
    return { ...unresolvedFrom(error), reason: 'relay' }; // the relays could not be asked (same words in the widget)
  }
}

/** How many message requests wait (issue 12), or null when the bridge cannot be asked now. */
async function requestCount() {
  if (getStatus() !== STATUS.CONNECTED) return null;
  try {
    const reply = await call('requests.list');
    return Array.isArray(reply?.requests) ? reply.requests.length : null;
  } catch {
    return null;
  }
}

async function stateSnapshot() {
  // paired: a token is kept (the popup then shows the pairing, not the code field, issue 11).
  return {
    ...(await getSession()), status: getStatus(), bridgeUrl: await getBridgeUrl(), paired: (await getToken()) !== null,
    requests: await requestCount(),
  };
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
    case POPUP_OPEN_INBOX:
      try {
        return { ok: true, ...(await openInbox(msg.folder)) };
      } catch (error) {
        return { ok: false, error: String(error.message ?? error) };
      }
    // The backup (issue 15): the popup's only, like the inbox link (backup.js).
    case POPUP_BACKUP_STATUS:
      return backupStatus();
    case POPUP_BACKUP_CREATE_KEY:
      return createKey(msg.replace === true);
    case POPUP_BACKUP_CONFIRM_KEY:
      return confirmKey(msg.recoveryKey);
    case POPUP_BACKUP_SET_REMOTE:
      return setRemote(msg.enabled);
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
