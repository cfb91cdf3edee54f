// The popup (DESIGN.md "Extension": popup; "Stable test hooks"). Shows status, identity and
// unread from chrome.storage.session (kept current through onChanged) and pairs with the bridge.

import { BridgeUrlError, DEFAULT_BRIDGE_URL, normalizeBridgeUrl } from '../common/bridge-url.js';
import { POPUP_GET_STATE, POPUP_PAIR, RECONNECT } from '../common/messages.js';
import { WALLET_SIGNIN } from '../common/wallet.js';

const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);

function showError(text) {
  $('error').textContent = text ?? '';
  $('error').hidden = !text;
}

function render(state) {
  if (typeof state.status === 'string') $('status').textContent = state.status;
  if ('identity' in state) {
    $('address').textContent = state.identity?.address || '—';
    $('did').textContent = state.identity?.did || '—';
  }
  if ('unread' in state) $('unread').textContent = String(Number.isInteger(state.unread) ? state.unread : 0);
  if ('lastError' in state && state.lastError) showError(state.lastError);
}

async function pair(event) {
  event.preventDefault();
  showError('');
  let url;
  try {
    url = normalizeBridgeUrl($('bridge-url').value || DEFAULT_BRIDGE_URL);
  } catch (error) {
    showError(error instanceof BridgeUrlError ? error.message : String(error));
    return;
  }
  $('bridge-url').value = url;
  const code = $('pair-code').value.trim();
  if (!code) {
    showError('Enter the code `parley pair` printed.');
    return;
  }
  $('pair-submit').disabled = true;
  const platform = navigator.userAgentData?.platform || navigator.platform || 'this computer';
  try {
    const reply = await chrome.runtime.sendMessage({ type: POPUP_PAIR, url, code, name: `Chrome on ${platform}` });
    if (!reply?.ok) showError(reply?.error ?? 'pairing failed');
    else $('pair-code').value = '';
  } finally {
    $('pair-submit').disabled = false;
  }
}

/** Open the bridge's own wallet sign-in page in a new tab (the worker checks the link). */
async function signin() {
  showError('');
  const reply = await chrome.runtime.sendMessage({ type: WALLET_SIGNIN });
  if (!reply?.ok) showError(reply?.error ?? 'could not open the sign-in page');
}

async function init() {
  $('signin').addEventListener('click', signin);
  $('pair-form').addEventListener('submit', pair);
  $('reconnect').addEventListener('click', () => chrome.runtime.sendMessage({ type: RECONNECT }));
  // The snapshot below answers after an await: whatever changed meanwhile is newer than it, and
  // whatever the user typed meanwhile is theirs. Neither may be overwritten by it.
  const changedMeanwhile = new Set();
  let typedUrl = false;
  $('bridge-url').addEventListener('input', () => { typedUrl = true; }, { once: true });
  chrome.storage.session.onChanged.addListener((changes) => {
    const patch = {};
    for (const [key, change] of Object.entries(changes)) {
      patch[key] = change.newValue;
      changedMeanwhile.add(key);
    }
    render(patch);
  });
  const state = await chrome.runtime.sendMessage({ type: POPUP_GET_STATE });
  if (state && typeof state === 'object') {
    render(Object.fromEntries(Object.entries(state).filter(([key]) => !changedMeanwhile.has(key))));
    if (state.bridgeUrl && !typedUrl) $('bridge-url').value = state.bridgeUrl;
  }
  document.body.dataset.parleyReady = 'true'; // a stable hook: the opening snapshot is applied
}

init();
