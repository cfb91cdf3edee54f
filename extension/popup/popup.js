// The popup (DESIGN.md "Extension": popup; "Stable test hooks"). Shows status, identity and
// unread from chrome.storage.session (kept current through onChanged) and pairs with the bridge.

import { BridgeUrlError, DEFAULT_BRIDGE_URL, normalizeBridgeUrl } from '../common/bridge-url.js';
import { POPUP_GET_STATE, POPUP_OPEN_INBOX, POPUP_PAIR, POPUP_UNPAIR, RECONNECT, STATUS } from '../common/messages.js';
import { peerLabel } from '../common/labels.js';
import { WALLET_SIGNIN } from '../common/wallet.js';
import { backupConnection, initBackup } from './backup.js';

const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);

function showError(text) {
  $('error').textContent = text ?? '';
  $('error').hidden = !text;
}

// --- the pairing shown (issue 11): once paired, the pairing and how to redo or undo it, not the code field.
let paired = false;
let pairingAgain = false; // "Pair again…" opened the form in this popup: kept open until a pairing works
let bridgeUrl = DEFAULT_BRIDGE_URL;
// Keys whose value changed after the opening snapshot was asked for: that snapshot is older for them.
const changedMeanwhile = new Set();

/** What a status says about the pairing: a token is kept (true), none is (false), or unknown (null). */
function pairedBy(status) {
  if (status === STATUS.NOT_PAIRED) return false;
  // Connected, or unreachable (the worker says so only with a token kept: background/bridge.js).
  if (status === STATUS.CONNECTED || status === STATUS.UNREACHABLE) return true;
  return null; // connecting, or not verified (a first pairing refused by a stand-in, too): either
}

function renderPairing() {
  const showForm = !paired || pairingAgain;
  $('pair-fields').hidden = !showForm;
  $('pair-hint').hidden = !showForm;
  $('paired').hidden = !paired;
  $('pair-again').hidden = pairingAgain;
  $('paired-url').textContent = bridgeUrl;
  document.body.dataset.parleyPaired = String(paired);
}

/** The bridge is down or unproven while paired: say so in the words the DM button uses. */
function renderBridgeHint(status) {
  const reason = status === STATUS.UNREACHABLE ? 'unreachable' : status === STATUS.NOT_VERIFIED ? 'not-verified' : null;
  const hint = $('bridge-hint');
  hint.hidden = reason === null;
  if (reason === null) return;
  const { text, title } = peerLabel('unavailable', reason);
  hint.textContent = `${text}. ${title}`;
}

function render(state) {
  if (typeof state.status === 'string') {
    $('status').textContent = state.status;
    const known = pairedBy(state.status);
    if (known !== null) paired = known;
    renderBridgeHint(state.status);
    backupConnection(state.status); // the Backup part (issue 15) asks the bridge only while connected
  }
  if (typeof state.paired === 'boolean' && pairedBy(state.status) === null) paired = state.paired;
  if (typeof state.bridgeUrl === 'string') bridgeUrl = state.bridgeUrl;
  renderPairing();
  if ('identity' in state) {
    $('address').textContent = state.identity?.address || '—';
    $('did').textContent = state.identity?.did || '—';
  }
  if ('unread' in state) $('unread').textContent = String(Number.isInteger(state.unread) ? state.unread : 0);
  if ('requests' in state) {
    // Message requests (issue 12): strangers' first messages, which raise no notification.
    const n = Number.isInteger(state.requests) && state.requests > 0 ? state.requests : 0;
    $('requests').hidden = n === 0;
    $('requests-count').textContent = String(n);
    $('requests').setAttribute('aria-label', `${n} message request${n === 1 ? '' : 's'}`);
  }
  if ('lastError' in state && state.lastError) showError(state.lastError);
}

/** Open the bridge's own inbox page (the worker checks the one-time link), at Requests if asked. */
async function openInbox(folder) {
  showError('');
  const reply = await chrome.runtime.sendMessage({ type: POPUP_OPEN_INBOX, folder });
  if (!reply?.ok) showError(reply?.error ?? 'could not open the inbox page');
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
    else {
      $('pair-code').value = '';
      bridgeUrl = url;
      paired = true;
      changedMeanwhile.add('bridgeUrl').add('paired');
      pairingAgain = false;
      renderPairing();
    }
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
  initBackup();
  $('signin').addEventListener('click', signin);
  $('open-inbox').addEventListener('click', () => openInbox('inbox'));
  $('requests').addEventListener('click', () => openInbox('requests'));
  $('pair-form').addEventListener('submit', pair);
  $('reconnect').addEventListener('click', () => chrome.runtime.sendMessage({ type: RECONNECT }));
  $('pair-again').addEventListener('click', () => {
    pairingAgain = true;
    renderPairing();
    $('pair-code').focus();
  });
  $('unpair').addEventListener('click', async () => {
    showError('');
    const reply = await chrome.runtime.sendMessage({ type: POPUP_UNPAIR });
    if (!reply?.ok) showError(reply?.error ?? 'could not unpair');
  });
  // The snapshot below answers after an await: whatever changed meanwhile is newer than it, and
  // whatever the user typed meanwhile is theirs. Neither may be overwritten by it.
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
    const fresh = Object.fromEntries(Object.entries(state).filter(([key]) => !changedMeanwhile.has(key)));
    // The token check is as old as the snapshot: a status seen meanwhile says more about the pairing.
    if (changedMeanwhile.has('status')) delete fresh.paired;
    render(fresh);
    if (state.bridgeUrl && !typedUrl && !changedMeanwhile.has('bridgeUrl')) $('bridge-url').value = state.bridgeUrl;
  }
  document.body.dataset.parleyReady = 'true'; // a stable hook: the opening snapshot is applied
}

init();
