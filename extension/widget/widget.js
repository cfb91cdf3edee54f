// The chat widget (DESIGN.md "Extension": widget). An extension page inside an iframe on the social
// site. It talks to the service worker over a chrome.runtime port (extension-internal: the hosting
// page and the content script are never on the path, unlike a MessageChannel handed over by the
// content script). Message text is rendered with textContent only.
//
// Clickjacking (issue 8 item 6). The widget comes alive only when the worker admits it: the content
// script that opened this frame posts a one-time nonce (bound by the worker to this tab, frame and
// peer), and the widget presents it over its port. A frame the page made itself never gets one: it
// shows nothing, loads nothing, marks nothing read (body[data-parley-gate="refused"]). And a live
// widget acts (send, mark read) only while IntersectionObserver v2 reports it visible — not covered,
// not transparent, not transformed — and only after it has been so for INPUT_GRACE_MS
// (body[data-parley-actionable] says which); every refusal is counted in body[data-parley-refused].

import {
  RECONNECT, STATUS, WIDGET_ATTACH, WIDGET_EVENT, WIDGET_GATE, WIDGET_HELLO, WIDGET_NONCE, WIDGET_POPOUT, WIDGET_PORT,
  WIDGET_RPC, WIDGET_RPC_RESULT, WIDGET_STATUS,
} from '../common/messages.js';
import { isPeer, normalizeAddress, normalizeMessageAddresses } from '../common/peer.js';
import {
  RESOLVE_ERROR, messageLabel, messageState, peerLabel, stateAdvances, unresolvedFrom,
} from '../common/labels.js';
import { WALLET_SIGNIN, shortAddress } from '../common/wallet.js';

const $ = (hook) => document.querySelector(`[data-parley="${hook}"]`);
const list = $('messages');
const composer = $('composer');
const sendButton = $('send');
const errorBox = $('error');
const earlier = $('load-earlier');

const peer = new URLSearchParams(location.search).get('peer') ?? '';
let port = null;
let nextId = 1;
const pending = new Map();
let address = null;
let canMessage = false;
let status = STATUS.CONNECTING;
let loaded = false;
let loading = false;
const shown = new Set();

// --- the gate and the visibility guard (issue 8 item 6) --------------------------------------------

const NONCE_WAIT_MS = 8000;
const INPUT_GRACE_MS = 800;
let gate = 'waiting'; // waiting → live | refused
let visibleSince = null; // performance.now() when IntersectionObserver v2 last reported "visible"
// Firefox has no IntersectionObserver v2: a framed widget there never acts, and offers to open the
// conversation in a window of the worker's own (WIDGET_POPOUT). That window is a top-level page of
// ours, which no site can cover or frame: it acts once visible for INPUT_GRACE_MS.
const TOP_LEVEL = window.top === window;
const HAS_IO_V2 = typeof IntersectionObserverEntry !== 'undefined' && 'isVisible' in IntersectionObserverEntry.prototype;
// A window's one-time nonce (grants.js mintWindowNonce) arrives in the fragment; it is dropped at once.
const windowNonce = TOP_LEVEL ? (/^#w=([0-9a-f]{32})$/.exec(location.hash)?.[1] ?? null) : null;
if (TOP_LEVEL && location.hash) history.replaceState(null, '', location.pathname + location.search);
let refusals = 0;
let readPending = false;

function setGate(next) {
  gate = next;
  document.body.dataset.parleyGate = next;
}

/** Visible (not covered, transparent or transformed) for at least INPUT_GRACE_MS, in a visible tab. */
function canAct() {
  return gate === 'live' && visibleSince !== null && document.visibilityState === 'visible'
    && performance.now() - visibleSince >= INPUT_GRACE_MS;
}

/** Publish whether the widget may act now (body[data-parley-actionable]); do a deferred mark-read. */
function settle() {
  const ok = canAct();
  document.body.dataset.parleyActionable = String(ok);
  if (ok && readPending) markRead();
}

function refuse() {
  refusals += 1;
  document.body.dataset.parleyRefused = String(refusals);
}

function watchVisibility() {
  if (TOP_LEVEL) {
    // Our own window: nothing of a page's can be over it. Visible (the tab shown) for the grace period.
    document.body.dataset.parleyVisible = 'true';
    visibleSince = performance.now();
    setTimeout(settle, INPUT_GRACE_MS + 50);
    return;
  }
  let observer;
  try {
    observer = new IntersectionObserver((entries) => {
      const entry = entries[entries.length - 1];
      const visible = entry.isIntersecting && entry.isVisible === true; // no v2 support: never visible
      document.body.dataset.parleyVisible = String(visible);
      if (!visible) {
        visibleSince = null;
        settle();
        return;
      }
      if (visibleSince !== null) return;
      visibleSince = performance.now();
      setTimeout(settle, INPUT_GRACE_MS + 50);
    }, { trackVisibility: true, delay: 100, threshold: [0, 1] });
  } catch {
    return; // without IntersectionObserver v2 the widget never acts
  }
  observer.observe(document.body);
}

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

function setComposerEnabled() {
  const on = loaded && canMessage && status === STATUS.CONNECTED;
  composer.disabled = !on;
  sendButton.disabled = !on;
}

function portCall(message) {
  return new Promise((resolve, reject) => {
    if (!port) { reject(new Error('not connected to Parley')); return; }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    port.postMessage({ ...message, id });
  });
}

function rpc(method, params) {
  return portCall({ type: WIDGET_RPC, method, params });
}

// --- header: handle, short address, verified (issue 4 part 4) -----------------------------------

function handleOf(resolved) {
  if (typeof resolved?.handle === 'string' && resolved.handle) return resolved.handle.slice(0, 80);
  if (!peer.startsWith('0x')) return peer;
  return typeof resolved?.name === 'string' && resolved.name ? resolved.name.slice(0, 80) : shortAddress(address);
}

function renderHeader(resolved, verified) {
  $('peer-name').textContent = handleOf(resolved);
  const addr = $('peer-address');
  addr.textContent = shortAddress(address);
  addr.dataset.address = address;
  const chosen = typeof resolved?.chosen?.reason === 'string' ? ` (${resolved.chosen.reason.slice(0, 160)})` : '';
  addr.title = `${String(resolved?.address ?? address)}${chosen}`;
  const badge = $('peer-verified');
  badge.hidden = false;
  badge.dataset.verified = verified ? 'true' : 'false';
  badge.textContent = verified ? '✓ verified' : 'not verified';
  badge.title = verified
    ? 'Their signed Parley statement checks out for this name.'
    : 'No signed Parley statement checks out for this name yet.';
}

// --- invite (not on Parley yet) -------------------------------------------------------------------

let myAddress = '';

function inviteText() {
  const me = myAddress ? ` Message me at ${myAddress}` : '';
  return `I'm on Parley — private messages across Lens, Orb and Firefly.${me}. Get it: install the Parley browser extension and run \`parley init\` then \`parley run\`.`;
}

function showInvite(on) {
  $('invite').hidden = !on;
  if (!on) return;
  $('invite-peer').textContent = $('peer-name').textContent || peer;
  $('invite-text').value = inviteText();
}

async function copyInvite() {
  const text = $('invite-text').value;
  try {
    await navigator.clipboard.writeText(text);
    $('invite-copied').textContent = 'Copied';
  } catch {
    $('invite-text').focus();
    $('invite-text').select();
    $('invite-copied').textContent = 'Press Ctrl+C (⌘C) to copy';
  }
}

// --- sign in with the browser wallet (issue 4 part 3; issue 8 item 1) -------------------------------

function renderMe(identity) {
  myAddress = typeof identity?.address === 'string' ? identity.address : '';
  $('me').textContent = myAddress ? shortAddress(myAddress) : '—';
  $('me').title = myAddress;
  $('me').dataset.address = myAddress.toLowerCase();
  if (!$('invite').hidden) $('invite-text').value = inviteText();
}

function walletStatus(text, state) {
  const box = $('wallet-status');
  box.textContent = text ?? '';
  box.dataset.state = state ?? '';
  box.hidden = !text;
}

// The wallet is never asked from this site's page: the worker opens the bridge's own sign-in page
// (http://127.0.0.1:PORT/signin) in a new tab, where the user picks the wallet and confirms.
async function openSignin() {
  $('connect-wallet').disabled = true;
  walletStatus('Opening Parley’s sign-in page…', 'busy');
  try {
    await portCall({ type: WALLET_SIGNIN });
    walletStatus('Sign in on the Parley page that just opened in a new tab (it is served by your own bridge).', 'ok');
  } catch (error) {
    walletStatus(String(error.message ?? error), 'error');
  } finally {
    $('connect-wallet').disabled = false;
  }
}

function formatTime(ms) {
  const date = new Date(Number(ms));
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString();
}

// A message accepted on its sender's signed statement whose installation later turned out revoked
// or never registered carries a flag from the bridge: show it on the message, as text only.
function applyFlag(item, message) {
  if (typeof message.flag !== 'string' || !message.flag || item.dataset.flagged === 'true') return;
  item.dataset.flagged = 'true';
  const note = document.createElement('small');
  note.dataset.parley = 'flag';
  note.textContent = "\u26a0 not verified: the sender's device was revoked or never registered";
  item.append(note);
}

const sendingTexts = []; // texts of sends in flight: their message.new (state queued) shows "Sending…"

function messageElement(id) {
  return [...list.querySelectorAll('[data-parley="message"]')].find((el) => el.dataset.id === id) ?? null;
}

/** Show `state` on an outgoing message's element and its visible, announced label (issue 11). */
function showState(item, state) {
  if (!stateAdvances(item.dataset.state, state)) return;
  item.dataset.state = state;
  const label = item.parentElement?.querySelector('[data-parley="message-state"]');
  if (!label) return;
  const { text, title } = messageLabel(state);
  label.textContent = text;
  label.title = title;
  label.dataset.state = state;
}

/** A message already shown changed: delivered, failed, or flagged. */
function updateMessage(raw) {
  const message = normalizeMessageAddresses(raw);
  if (!message || typeof message.id !== 'string') return;
  const item = messageElement(message.id);
  if (!item) return;
  if (item.dataset.direction === 'out') showState(item, messageState(message));
  applyFlag(item, message);
}

// One row per message: the message element (text only, plus a flag) and, for an outgoing message,
// its state label next to it.
function renderMessage(raw, { prepend = false } = {}) {
  const message = normalizeMessageAddresses(raw);
  if (!message || typeof message.id !== 'string' || shown.has(message.id)) return;
  shown.add(message.id);
  const direction = message.direction === 'out' ? 'out' : 'in';
  const row = document.createElement('li');
  row.dataset.parley = 'message-row';
  row.dataset.direction = direction;
  const item = document.createElement('div');
  item.dataset.parley = 'message';
  item.dataset.direction = direction;
  item.dataset.id = message.id;
  item.textContent = String(message.text ?? '');
  item.title = formatTime(message.sent_at);
  row.append(item);
  if (direction === 'out') {
    const label = document.createElement('small');
    label.dataset.parley = 'message-state';
    row.append(label);
    let state = messageState(message);
    const sending = state === 'queued' ? sendingTexts.indexOf(String(message.text ?? '')) : -1;
    if (sending >= 0) {
      sendingTexts.splice(sending, 1);
      state = 'sending';
    }
    showState(item, state);
  } else {
    item.dataset.state = messageState(message);
  }
  applyFlag(item, message);
  if (prepend) list.prepend(row);
  else {
    list.append(row);
    list.scrollTop = list.scrollHeight;
  }
}

async function markRead() {
  if (!address || status !== STATUS.CONNECTED) return;
  if (!canAct()) {
    // Hidden, covered or just shown: mark read once it has been really visible for a moment.
    readPending = true;
    if (document.visibilityState === 'visible') refuse();
    return;
  }
  readPending = false;
  try { await rpc('messages.markRead', { peer: address }); } catch { /* shown through status */ }
}

async function loadEarlier() {
  const first = list.querySelector('[data-parley="message"]');
  try {
    const page = await rpc('messages.list', { peer: address, before: first ? first.dataset.id : null, limit: 50 });
    for (const message of [...page.messages].reverse()) renderMessage(message, { prepend: true });
    earlier.hidden = !page.has_more;
  } catch (error) {
    showError(String(error.message ?? error));
  }
}

async function load() {
  if (loading || status !== STATUS.CONNECTED) return;
  loading = true;
  try {
    const resolved = await rpc('resolve', { peer });
    address = normalizeAddress(resolved?.address);
    if (!address) throw new Error('Parley could not find a wallet for this account.');
    port.postMessage({ type: WIDGET_HELLO, peer: address });
    // The bridge's own canMessage failure (relays unreachable), not the worker's (-32000: not connected).
    const can = await rpc('canMessage', { address }).catch((error) => {
      throw Number.isInteger(error.code) && error.code <= -32001 && error.code >= -32099 ? Object.assign(error, { stage: 'canMessage' }) : error;
    });
    canMessage = can?.canMessage === true;
    renderHeader(resolved, typeof resolved.verified === 'boolean' ? resolved.verified : canMessage);
    document.body.dataset.parleyPeerState = canMessage ? 'ready' : 'unavailable';
    document.body.dataset.parleyPeerReason = canMessage ? '' : 'not-on-parley';
    showInvite(!canMessage);
    const page = await rpc('messages.list', { peer: address, before: null, limit: 50 });
    list.replaceChildren();
    shown.clear();
    for (const message of page.messages) renderMessage(message);
    earlier.hidden = !page.has_more;
    loaded = true;
    showError('');
    markRead();
  } catch (error) {
    if (error.code === RESOLVE_ERROR || error.stage === 'canMessage') {
      // The DM button said the same for this name (common/labels.js, background/handlers.js lookupPeer).
      const { state, reason, detail } = error.stage === 'canMessage' ? { ...unresolvedFrom(error), reason: 'relay' } : unresolvedFrom(error);
      document.body.dataset.parleyPeerState = state;
      document.body.dataset.parleyPeerReason = reason;
      showError(`${peerLabel(state, reason, detail).text} ${peer}: ${detail}`);
    } else {
      showError(String(error.message ?? error));
    }
  } finally {
    loading = false;
    setComposerEnabled();
  }
}

function onStatus(next) {
  status = next;
  if (gate !== 'live') return;
  if (status === STATUS.CONNECTED) {
    load();
  } else if (status === STATUS.NOT_PAIRED) {
    showError('This browser is not paired with Parley. Open the Parley popup to pair it.');
  } else if (status === STATUS.UNREACHABLE) {
    showError('The Parley bridge is not reachable. Is `parley run` running? Retrying…');
  } else if (status === STATUS.NOT_VERIFIED) {
    showError('Something on the Parley bridge’s port could not prove it is your bridge, so nothing was sent to it. Is `parley run` running? Retrying…');
  }
  setComposerEnabled();
}

function onPortMessage(msg) {
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === WIDGET_RPC_RESULT && pending.has(msg.id)) {
    const { resolve, reject } = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) reject(Object.assign(new Error(String(msg.error.message)), { code: msg.error.code, data: msg.error.data ?? null }));
    else resolve(msg.result);
  } else if (msg.type === WIDGET_GATE) {
    onGate(msg);
  } else if (msg.type === WIDGET_STATUS) {
    onStatus(msg.status);
  } else if (msg.type === WIDGET_EVENT && msg.method === 'message.new') {
    const message = normalizeMessageAddresses(msg.params?.message);
    if (message && address && normalizeAddress(message.peer) === address) {
      renderMessage(message);
      if (message.direction === 'in') markRead();
    }
  } else if (msg.type === WIDGET_EVENT && msg.method === 'message.updated') {
    const message = normalizeMessageAddresses(msg.params?.message);
    if (message && address && normalizeAddress(message.peer) === address) updateMessage(message);
  }
}

function connectPort() {
  port = chrome.runtime.connect({ name: WIDGET_PORT });
  port.onMessage.addListener(onPortMessage);
  port.onDisconnect.addListener(() => {
    port = null;
    for (const { reject } of pending.values()) reject(new Error('Parley restarted; reconnecting…'));
    pending.clear();
    onStatus(STATUS.CONNECTING);
    setTimeout(connectPort, 500); // the worker was stopped; a new connect() wakes it
  });
  // After a worker restart the grant (tab, frame, peer) lets this frame back in without a nonce.
  if (gate === 'live') port.postMessage({ type: WIDGET_ATTACH, nonce: null });
  if (address) port.postMessage({ type: WIDGET_HELLO, peer: address });
}

function refuseForGood() {
  setGate('refused');
  showError('This chat can only be opened from the Parley button on a profile page.');
  setComposerEnabled();
}

function onGate(msg) {
  if (msg.ok === true && gate !== 'refused') {
    if (gate === 'live') return;
    setGate('live');
    if (!TOP_LEVEL && !HAS_IO_V2) offerWindow();
    start();
  } else if (gate !== 'live') {
    refuseForGood();
  }
}

/** Firefox: this frame cannot prove it is uncovered, so sending happens in a window of our own. */
function offerWindow() {
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.parley = 'popout';
  button.textContent = 'Open in a window to send';
  button.title = 'This browser cannot tell whether the page covers this chat, so Parley sends from a window of its own.';
  button.addEventListener('click', () => { port?.postMessage({ type: WIDGET_POPOUT }); });
  errorBox.before(button);
}

function onWindowMessage(event) {
  // Only the content script in the parent page has a nonce; the page may post too, but cannot guess one.
  if (event.source !== window.parent || gate !== 'waiting' || !port) return;
  const data = event.data;
  if (!data || typeof data !== 'object' || data.type !== WIDGET_NONCE || typeof data.nonce !== 'string' || data.nonce.length > 64) return;
  port.postMessage({ type: WIDGET_ATTACH, nonce: data.nonce });
}

function start() {
  $('peer-name').textContent = peer;
  // Firefox gives an extension frame inside a web page no storage.session: the frame then shows no
  // "You:" address, and the rest of start() must still run.
  const session = chrome.storage.session;
  if (session) {
    session.get('identity').then(({ identity }) => renderMe(identity)).catch(() => {});
    session.onChanged.addListener((changes) => {
      if (changes.identity) renderMe(changes.identity.newValue);
    });
  }
  chrome.runtime.sendMessage({ type: RECONNECT }).catch(() => {});
  onStatus(status);
}

async function send(event) {
  event.preventDefault();
  const text = composer.value.trim();
  if (!text || !address || sendButton.disabled) return;
  if (!canAct()) {
    refuse();
    showError(!TOP_LEVEL && !HAS_IO_V2
      ? 'Not sent: this browser cannot tell whether the page covers this chat. Use "Open in a window to send".'
      : 'Not sent: the chat was hidden, covered or had only just appeared. Check the message and send it again.');
    return;
  }
  sendButton.disabled = true;
  sendingTexts.push(text);
  try {
    const { message } = await rpc('messages.send', { peer: address, text });
    composer.value = '';
    renderMessage(message);
    updateMessage(message); // "Sending…" becomes what the bridge did: sent, or queued to retry
  } catch (error) {
    // Whatever the bridge queued before the error stays queued there: say so, not "Sending…".
    for (const item of list.querySelectorAll('[data-parley="message"][data-state="sending"]')) {
      if (item.textContent === text) showState(item, 'queued');
    }
    showError(`Not sent: ${String(error.message ?? error)}`);
  } finally {
    const left = sendingTexts.indexOf(text);
    if (left >= 0) sendingTexts.splice(left, 1);
    setComposerEnabled();
    composer.focus();
  }
}

setGate('waiting');
if (!isPeer(peer)) {
  refuseForGood();
} else {
  $('compose-form').addEventListener('submit', send);
  composer.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) send(event);
  });
  earlier.addEventListener('click', loadEarlier);
  $('connect-wallet').addEventListener('click', openSignin);
  $('invite-copy').addEventListener('click', copyInvite);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && visibleSince !== null) visibleSince = performance.now(); // the grace again
    settle();
    setTimeout(settle, INPUT_GRACE_MS + 50);
  });
  window.addEventListener('message', onWindowMessage);
  watchVisibility();
  connectPort();
  if (windowNonce) port.postMessage({ type: WIDGET_ATTACH, nonce: windowNonce });
  setTimeout(() => { if (gate === 'waiting') refuseForGood(); }, NONCE_WAIT_MS);
}
