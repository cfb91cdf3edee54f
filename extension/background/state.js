// Worker state (DESIGN.md "Extension": state in chrome.storage.session because the worker may die at
// any time). Session: {status, identity, unread, lastError, relay, version}. Local: {token, bridgeKey, bridgeUrl}.

import { DEFAULT_BRIDGE_URL, normalizeBridgeUrl } from '../common/bridge-url.js';
import { STATUS } from '../common/messages.js';

const statusListeners = new Set();
let currentStatus = STATUS.CONNECTING;

export function getStatus() {
  return currentStatus;
}

/** Merge `patch` into the session state (the popup and widgets watch storage.onChanged). */
export async function setSession(patch) {
  if ('status' in patch && patch.status !== currentStatus) {
    currentStatus = patch.status;
    for (const listener of [...statusListeners]) {
      try { listener(currentStatus); } catch (error) { console.debug('[parley] status listener', error); }
    }
  }
  await chrome.storage.session.set(patch);
}

export async function getSession() {
  return chrome.storage.session.get(['status', 'identity', 'unread', 'lastError', 'relay', 'version']);
}

export function onStatus(listener) {
  statusListeners.add(listener);
  return () => statusListeners.delete(listener);
}

/**
 * Resolve true once the status is CONNECTED; false after `ms`, at once when NOT_PAIRED, or when
 * the status changes to anything but CONNECTED/CONNECTING.
 */
export function waitConnected(ms) {
  if (currentStatus === STATUS.CONNECTED) return Promise.resolve(true);
  if (currentStatus === STATUS.NOT_PAIRED) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => { off(); resolve(false); }, ms);
    const off = onStatus((status) => {
      if (status !== STATUS.CONNECTING) {
        clearTimeout(timer); off(); resolve(status === STATUS.CONNECTED);
      }
    });
  });
}

export async function getToken() {
  const { token } = await chrome.storage.local.get('token');
  return typeof token === 'string' && token ? token : null;
}

export async function setToken(token) {
  if (token) await chrome.storage.local.set({ token });
  else await chrome.storage.local.remove('token');
}

/** The paired bridge's Ed25519 public key (unpadded base64url), learnt at pairing. */
export async function getBridgeKey() {
  const { bridgeKey } = await chrome.storage.local.get('bridgeKey');
  return typeof bridgeKey === 'string' && bridgeKey ? bridgeKey : null;
}

/** Store the token together with the key of the bridge that issued it (null: forget both). */
export async function setPairing(token, bridgeKey) {
  if (token && bridgeKey) await chrome.storage.local.set({ token, bridgeKey });
  else await chrome.storage.local.remove(['token', 'bridgeKey']);
}

export async function getBridgeUrl() {
  const { bridgeUrl } = await chrome.storage.local.get('bridgeUrl');
  try {
    return normalizeBridgeUrl(typeof bridgeUrl === 'string' ? bridgeUrl : DEFAULT_BRIDGE_URL);
  } catch {
    return DEFAULT_BRIDGE_URL;
  }
}

export async function setBridgeUrl(url) {
  const normalized = normalizeBridgeUrl(url);
  await chrome.storage.local.set({ bridgeUrl: normalized });
  return normalized;
}
