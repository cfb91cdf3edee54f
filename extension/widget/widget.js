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
  LIMITS, REACTIONS, RECONNECT, STATUS, WIDGET_ATTACH, WIDGET_EVENT, WIDGET_GATE, WIDGET_HELLO, WIDGET_NONCE, WIDGET_POPOUT, WIDGET_PORT,
  WIDGET_RPC, WIDGET_RPC_RESULT, WIDGET_STATUS,
} from '../common/messages.js';
import { isPeer, normalizeAddress, normalizeMessageAddresses } from '../common/peer.js';
import {
  RESOLVE_ERROR, messageLabel, messageState, peerLabel, stateAdvances, unresolvedFrom,
} from '../common/labels.js';
import { WALLET_SIGNIN, shortAddress } from '../common/wallet.js';

// The words of the chat's parts from issue 12 (the inbox page has its own copy).

const CHAT_WORDS = Object.freeze({
  edited: 'edited',
  tombstone: 'This message was deleted',
  unsupported: 'Sent with a newer Parley: shown as its plain-text fallback',
  typing: 'typing…',
  request: 'wants to message you. They won’t know you have seen this until you reply or accept.',
  declined: 'You declined this conversation. Accept it to move it to your inbox.',
  blocked: 'You blocked this account: nothing they send reaches you.',
  tooLarge: 'is larger than 25 MB: Parley sends files up to 25 MB.',
  dropHint: 'Drop files to send them',
});

/** `held` messages a requester sent beyond the limit, kept as a count only. */
function heldLabel(held) {
  const n = Number.isSafeInteger(held) && held > 0 ? held : 0;
  return n === 0 ? '' : `${n} more message${n === 1 ? '' : 's'} held until you accept`;
}

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
  $('attach').disabled = !on || editing !== null;
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
const messages = new Map(); // id → the latest message dict shown (for reply, edit, re-render)

function messageElement(id) {
  return [...list.querySelectorAll('[data-parley="message"]')].find((el) => el.dataset.id === id) ?? null;
}

/** Show `state` on an outgoing message's element and its visible, announced label (issue 11). */
function showState(item, state) {
  if (!stateAdvances(item.dataset.state, state)) return;
  item.dataset.state = state;
  const label = item.parentElement?.querySelector('[data-parley="message-state"]');
  if (label) {
    const { text, title } = messageLabel(state);
    label.textContent = text;
    label.title = title;
    label.dataset.state = state;
    label.hidden = state === 'read'; // the receipt inside the message says it (issue 12)
  }
  showReceipt(item);
}

/** "Read" inside an own message once the peer's receipt arrived (issue 12). */
function showReceipt(item) {
  const wanted = item.dataset.direction === 'out' && item.dataset.state === 'read';
  const receipt = item.querySelector(':scope > [data-parley="receipt"]');
  if (wanted && !receipt) {
    const mark = el('small', 'receipt', 'Read');
    mark.title = 'They have read it';
    const menu = item.querySelector(':scope > [data-parley="menu"]');
    if (menu) menu.before(mark);
    else item.append(mark);
  } else if (!wanted && receipt) {
    receipt.remove();
  }
}

function el(tag, hook, text) {
  const node = document.createElement(tag);
  if (hook) node.dataset.parley = hook;
  if (text !== undefined) node.textContent = text;
  return node;
}

const ID_RE = /^[0-9a-f]{32}$/;
const isId = (value) => typeof value === 'string' && ID_RE.test(value);
const ATTACHMENT_ID_RE = /^[0-9a-f]{32}-[0-9]{1,2}$/;
const IMAGE_MIME = /^image\/(png|jpeg|gif|webp)$/;
const THUMB_URL = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}$/;
const thumbnails = new Map(); // attachment id → data URL (or null: none)

function formatSize(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

function who(addr) {
  if (typeof addr !== 'string') return '?';
  const lower = addr.toLowerCase();
  if (myAddress && lower === myAddress.toLowerCase()) return 'You';
  if (address && lower === address) return $('peer-name').textContent || shortAddress(lower);
  return shortAddress(lower);
}

function isOwn(message) {
  return message.direction === 'out';
}

/** The quote of the message a reply answers (peer text: textContent only). */
function replyQuote(preview) {
  const quote = el('blockquote', 'reply-quote');
  if (!preview || typeof preview !== 'object') {
    quote.textContent = 'Reply to a message not shown here';
    return quote;
  }
  const author = el('strong', null, who(preview.sender));
  const body = el('span', 'reply-quote-text', preview.deleted === true ? CHAT_WORDS.tombstone : String(preview.text ?? '').slice(0, 200));
  quote.append(author, ': ', body);
  if (isId(preview.id)) {
    quote.dataset.replyTo = preview.id;
    quote.addEventListener('click', () => messageElement(preview.id)?.scrollIntoView({ block: 'center' }));
  }
  return quote;
}

function attachmentCard(file) {
  const card = el('div', 'attachment');
  const id = typeof file.id === 'string' && ATTACHMENT_ID_RE.test(file.id) ? file.id : '';
  card.dataset.attachmentId = id;
  card.dataset.state = typeof file.state === 'string' ? file.state.slice(0, 16) : '';
  const mime = typeof file.mime === 'string' ? file.mime.slice(0, 127) : 'application/octet-stream';
  if (file.thumbnail === true && IMAGE_MIME.test(mime) && id) {
    const img = el('img', 'thumbnail');
    img.alt = String(file.name ?? '').slice(0, 255);
    img.hidden = true;
    card.append(img);
    loadThumbnail(id, img);
  }
  const line = el('div', 'attachment-info');
  line.append(el('span', 'attachment-name', String(file.name ?? 'file').slice(0, 255)), ' ', el('small', 'attachment-size', formatSize(file.size)));
  card.append(line);
  const progress = el('progress', 'progress');
  progress.max = 1;
  progress.value = 0;
  progress.hidden = true;
  const p = file.progress;
  if (p && Number.isSafeInteger(p.done) && Number.isSafeInteger(p.total) && p.total > 0) {
    progress.max = p.total;
    progress.value = Math.min(p.done, p.total);
    progress.hidden = p.done >= p.total;
  }
  card.append(progress);
  if (card.dataset.state === 'failed' || card.dataset.state === 'refused') {
    card.append(el('small', 'attachment-error', card.dataset.state === 'refused'
      ? 'Not downloaded: it is on a relay Parley does not know'
      : 'This file could not be downloaded or did not match what was sent'));
  } else if (id) {
    const save = el('button', 'save', 'Save');
    save.type = 'button';
    save.title = `Save ${String(file.name ?? 'the file').slice(0, 255)}`;
    save.addEventListener('click', () => saveAttachment(card, id, String(file.name ?? 'file'), mime, file.size));
    card.append(save);
  }
  return card;
}

async function loadThumbnail(id, img) {
  let url = thumbnails.get(id);
  if (url === undefined) {
    try {
      const result = await rpc('attachments.thumbnail', { peer: address, id });
      url = typeof result?.data_url === 'string' && result.data_url.length < 2_000_000 && THUMB_URL.test(result.data_url) ? result.data_url : null;
    } catch {
      return; // not downloaded yet: the next message.updated tries again
    }
    if (url) thumbnails.set(id, url); // none yet (still downloading): asked again on the next render
  }
  if (url) {
    img.src = url;
    img.hidden = false;
  }
}

/** The reaction chips: "👍 2", who reacted in the title; a click toggles our own. */
function reactionChips(message) {
  const box = el('div', 'reactions');
  const reactions = message.reactions && typeof message.reactions === 'object' && !Array.isArray(message.reactions) ? message.reactions : {};
  for (const [emoji, reactors] of Object.entries(reactions).slice(0, 50)) {
    if (!Array.isArray(reactors) || reactors.length === 0 || typeof emoji !== 'string' || emoji.length > 32) continue;
    const addrs = reactors.filter((a) => typeof a === 'string').map((a) => a.toLowerCase());
    const mine = Boolean(myAddress) && addrs.includes(myAddress.toLowerCase());
    const chip = el('button', 'reaction', `${emoji} ${addrs.length}`);
    chip.type = 'button';
    chip.dataset.emoji = emoji;
    chip.dataset.mine = String(mine);
    chip.title = addrs.map(who).join(', ');
    chip.addEventListener('click', () => react(message.id, emoji, mine));
    box.append(chip);
  }
  box.hidden = box.childElementCount === 0;
  return box;
}

// --- the message menu (issue 12): reply, react, edit and delete (own, not deleted) -----------------

function closeMenus(except = null) {
  for (const menu of list.querySelectorAll('[data-parley="menu-panel"]')) {
    if (menu !== except) {
      menu.parentElement?.querySelector(':scope > [data-parley="menu"]')?.setAttribute('aria-expanded', 'false');
      menu.remove();
    }
  }
}

function menuButton(hook, text, onClick) {
  const button = el('button', hook, text);
  button.type = 'button';
  button.addEventListener('click', (event) => {
    event.stopPropagation();
    closeMenus();
    onClick();
  });
  return button;
}

function openMenu(item) {
  const open = item.querySelector(':scope > [data-parley="menu-panel"]');
  closeMenus(open);
  if (open) {
    open.remove();
    item.querySelector(':scope > [data-parley="menu"]').setAttribute('aria-expanded', 'false');
    return;
  }
  const message = messages.get(item.dataset.id);
  if (!message) return;
  // Built when opened and removed when closed: the message's text stays only its own while closed.
  const panel = el('div', 'menu-panel');
  panel.setAttribute('role', 'menu');
  panel.append(menuButton('menu-reply', 'Reply', () => startReply(message)));
  const reactRow = el('div', 'menu-react');
  reactRow.setAttribute('role', 'group');
  reactRow.setAttribute('aria-label', 'React');
  for (const emoji of REACTIONS) {
    const mine = isMine(message, emoji);
    const choice = menuButton('react-choice', emoji, () => react(message.id, emoji, mine));
    choice.dataset.emoji = emoji;
    choice.title = mine ? `Remove ${emoji}` : `React ${emoji}`;
    reactRow.append(choice);
  }
  panel.append(reactRow);
  if (isOwn(message) && message.deleted !== true) {
    if ((message.attachments ?? []).length === 0 || String(message.text ?? '')) {
      panel.append(menuButton('menu-edit', 'Edit', () => startEdit(message)));
    }
    panel.append(menuButton('menu-delete', 'Delete for everyone', () => remove(message)));
  }
  item.append(panel);
  item.querySelector(':scope > [data-parley="menu"]').setAttribute('aria-expanded', 'true');
}

function isMine(message, emoji) {
  const reactors = message.reactions?.[emoji];
  return Array.isArray(reactors) && Boolean(myAddress) && reactors.some((a) => String(a).toLowerCase() === myAddress.toLowerCase());
}

/** Build a message's inside from its dict: quote, text or tombstone, files, marks, reactions, menu. */
function fillMessage(item, message) {
  messages.set(message.id, message);
  const deleted = message.deleted === true;
  const parts = [];
  item.dataset.kind = typeof message.kind === 'string' ? message.kind.slice(0, 16) : 'text';
  item.dataset.deleted = String(deleted);
  if (!deleted && (message.reply_to || message.reply_preview)) parts.push(replyQuote(message.reply_preview));
  if (deleted) {
    parts.push(el('em', 'tombstone', CHAT_WORDS.tombstone));
  } else {
    const text = String(message.text ?? '');
    if (text || (message.attachments ?? []).length === 0) parts.push(el('span', 'text', text));
    for (const file of Array.isArray(message.attachments) ? message.attachments.slice(0, LIMITS.FILES_MAX) : []) {
      if (file && typeof file === 'object') parts.push(attachmentCard(file));
    }
    if (message.unsupported === true) parts.push(el('small', 'unsupported', CHAT_WORDS.unsupported));
    if (message.edited === true) parts.push(el('small', 'edited-mark', CHAT_WORDS.edited));
  }
  parts.push(reactionChips(message));
  const menu = el('button', 'menu');
  menu.type = 'button';
  menu.setAttribute('aria-label', 'Message menu');
  menu.setAttribute('aria-haspopup', 'menu');
  menu.setAttribute('aria-expanded', 'false');
  menu.title = 'Reply, react, edit or delete';
  menu.addEventListener('click', (event) => { event.stopPropagation(); openMenu(item); });
  parts.push(menu);
  const flagged = item.dataset.flagged === 'true';
  delete item.dataset.flagged;
  item.replaceChildren(...parts);
  if (flagged) applyFlag(item, message);
  showReceipt(item);
}

/** A message already shown changed: delivered, failed, read, flagged, edited, deleted, reacted to. */
function updateMessage(raw) {
  const message = normalizeMessageAddresses(raw);
  if (!message || typeof message.id !== 'string') return;
  const item = messageElement(message.id);
  if (!item) return;
  const before = messages.get(message.id) ?? {};
  const merged = { ...before, ...message };
  if (JSON.stringify({ ...before, state: null, read: null }) !== JSON.stringify({ ...merged, state: null, read: null })) {
    fillMessage(item, merged);
  } else {
    messages.set(message.id, merged);
  }
  if (item.dataset.direction === 'out') showState(item, messageState(message));
  applyFlag(item, message);
}

// One row per message: the message element (quote, text, files, marks, reactions, menu; a flag) and,
// for an outgoing message, its state label next to it.
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
  item.title = formatTime(message.sent_at);
  row.append(item);
  fillMessage(item, message);
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

// --- acting on a message (issue 12): every action only while the widget is seen (issue 8 item 6) ---

/** Run `action` only when the widget may act; otherwise count the refusal and say why. */
async function act(what, action) {
  if (!address || status !== STATUS.CONNECTED) return null;
  if (!canAct()) {
    refuse();
    showError(`Not done (${what}): the chat was hidden, covered or had only just appeared. Try again.`);
    return null;
  }
  try {
    const result = await action();
    showError('');
    return result;
  } catch (error) {
    showError(`Not done (${what}): ${String(error.message ?? error)}`);
    return null;
  }
}

async function react(id, emoji, remove) {
  const result = await act('reaction', () => rpc('messages.react', { peer: address, id, emoji, ...(remove ? { remove: true } : {}) }));
  if (result?.message) updateMessage(result.message);
}

async function remove(message) {
  const result = await act('delete', () => rpc('messages.delete', { peer: address, id: message.id }));
  if (result?.message) updateMessage(result.message);
  if (editing === message.id) cancelEdit();
}

let replyTo = null; // id the next message answers
let editing = null; // id of our own message the composer edits

function startReply(message) {
  cancelEdit();
  replyTo = message.id;
  const preview = $('reply-preview');
  const text = message.deleted === true ? CHAT_WORDS.tombstone : String(message.text ?? '') || String(message.attachments?.[0]?.name ?? '');
  $('reply-preview-text').textContent = `Replying to ${who(message.sender)}: ${text.slice(0, 120)}`;
  preview.hidden = false;
  composer.focus();
}

function cancelReply() {
  replyTo = null;
  $('reply-preview').hidden = true;
  $('reply-preview-text').textContent = '';
}

function startEdit(message) {
  cancelReply();
  editing = message.id;
  composer.value = String(message.text ?? '');
  $('edit-preview').hidden = false;
  setComposerEnabled();
  composer.focus();
}

function cancelEdit() {
  if (editing === null) return;
  editing = null;
  $('edit-preview').hidden = true;
  composer.value = '';
}

// --- consent: the request banner (issue 12) -------------------------------------------------------

let consent = 'allowed';

function showConsent(info) {
  if (!info || typeof info !== 'object') return;
  const state = ['allowed', 'requested', 'declined', 'blocked'].includes(info.consent) ? info.consent : 'allowed';
  consent = state;
  document.body.dataset.parleyConsent = state;
  const banner = $('requests-banner');
  banner.hidden = !(state === 'requested' || state === 'declined');
  banner.dataset.state = state;
  $('request-peer').textContent = state === 'requested' ? ($('peer-name').textContent || shortAddress(address)) : '';
  $('request-text').textContent = state === 'requested' ? CHAT_WORDS.request : CHAT_WORDS.declined;
  $('decline').hidden = state === 'declined';
  if (Number.isSafeInteger(info.held)) {
    const held = $('held-count');
    held.textContent = heldLabel(info.held);
    held.hidden = !held.textContent;
  }
  $('blocked-banner').hidden = state !== 'blocked';
  $('blocked-text').textContent = state === 'blocked' ? CHAT_WORDS.blocked : '';
}

async function loadConsent() {
  try {
    showConsent(await rpc('consent.get', { peer: address }));
  } catch {
    showConsent({ consent: 'allowed' }); // a bridge from before consent: every conversation is allowed
  }
}

async function setConsent(action) {
  const result = await act(action, () => rpc('consent.set', { peer: address, action }));
  if (result) showConsent(result);
}

// --- typing (issue 12): dots while they type; ours at most every 3 s, never to a request ------------

const TYPING_SHOW_MS = 6000;
const TYPING_EVERY_MS = 3000;
let typingTimer = null;
let typingSentAt = 0;
let typingOn = false;

function showTyping(on) {
  clearTimeout(typingTimer);
  typingTimer = null;
  const box = $('typing');
  box.hidden = !on;
  $('typing-text').textContent = on ? `${$('peer-name').textContent || 'They'} is ${CHAT_WORDS.typing}` : '';
  if (on) typingTimer = setTimeout(() => showTyping(false), TYPING_SHOW_MS);
}

function setTyping(on) {
  if (!address || status !== STATUS.CONNECTED || consent !== 'allowed' || !canAct()) return;
  const now = Date.now();
  if (on && typingOn && now - typingSentAt < TYPING_EVERY_MS) return;
  if (!on && !typingOn) return;
  typingOn = on;
  typingSentAt = now;
  rpc('typing.set', { peer: address, typing: on }).catch(() => {});
}

function onComposerInput() {
  if (editing !== null) return; // an edit is not typing a new message
  setTyping(composer.value.trim().length > 0);
}

// --- attachments (issue 12): pick or drop, upload in chunks, send; thumbnails and Save -------------

let staged = []; // File objects waiting for Send

function renderStaged() {
  const box = $('attach-list');
  box.replaceChildren(...staged.map((file, i) => {
    const chip = el('span', 'staged-file');
    chip.append(el('span', null, `${file.name} (${formatSize(file.size)})`));
    const drop = el('button', 'staged-remove', '×');
    drop.type = 'button';
    drop.title = `Remove ${file.name}`;
    drop.addEventListener('click', () => { staged.splice(i, 1); renderStaged(); });
    chip.append(drop);
    return chip;
  }));
  box.hidden = staged.length === 0;
  setComposerEnabled();
}

/** Stage files for sending; a file over 25 MB is refused here, before anything is uploaded. */
function addFiles(fileList) {
  const files = [...(fileList ?? [])];
  const refused = files.filter((file) => file.size > LIMITS.FILE_MAX);
  const room = LIMITS.FILES_MAX - staged.length;
  const ok = files.filter((file) => file.size <= LIMITS.FILE_MAX);
  staged = staged.concat(ok.slice(0, Math.max(0, room)));
  renderStaged();
  if (refused.length) {
    showError(`Not attached: ${refused.map((file) => `“${file.name}”`).join(', ')} ${CHAT_WORDS.tooLarge}`);
  } else if (ok.length > room) {
    showError(`At most ${LIMITS.FILES_MAX} files per message.`);
  } else {
    showError('');
  }
}

/** A file's name as the bridge accepts it: 1..255 UTF-8 bytes, no slash, backslash or control character. */
function safeName(name) {
  // eslint-disable-next-line no-control-regex
  let out = String(name ?? '').replace(/[\u0000-\u001f\u007f/\\]/g, '_') || 'file';
  while (new TextEncoder().encode(out).length > 255) out = out.slice(0, -1);
  return out;
}

function safeMime(type) {
  return /^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$/i.test(type ?? '') ? type : 'application/octet-stream';
}

function toBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function showUploadProgress(done, total) {
  const bar = $('upload-progress');
  bar.max = Math.max(total, 1);
  bar.value = Math.min(done, total);
  bar.hidden = total === 0 || done >= total;
  bar.title = `Uploading: ${formatSize(done)} of ${formatSize(total)}`;
}

/** Upload every staged file to the bridge in chunks; resolves their upload ids. */
async function uploadStaged(files) {
  const total = files.reduce((sum, file) => sum + file.size, 0);
  let done = 0;
  const ids = [];
  showUploadProgress(0, total);
  try {
    for (const file of files) {
      const begun = await rpc('attachments.begin', { peer: address, name: safeName(file.name), size: file.size, mime: safeMime(file.type) });
      const uploadId = begun?.upload_id;
      if (!isId(uploadId)) throw new Error('the bridge refused the file');
      ids.push(uploadId);
      const chunk = Math.min(Number.isSafeInteger(begun.chunk_size) && begun.chunk_size > 0 ? begun.chunk_size : LIMITS.CHUNK_MAX, LIMITS.CHUNK_MAX);
      for (let offset = 0; offset < file.size; offset += chunk) {
        const bytes = new Uint8Array(await file.slice(offset, offset + chunk).arrayBuffer());
        await rpc('attachments.chunk', { peer: address, upload_id: uploadId, offset, data: toBase64(bytes) });
        done += bytes.length;
        showUploadProgress(done, total);
      }
    }
    return ids;
  } catch (error) {
    for (const uploadId of ids) rpc('attachments.cancel', { peer: address, upload_id: uploadId }).catch(() => {});
    throw error;
  } finally {
    showUploadProgress(0, 0);
  }
}

/** Save: read the file from the bridge in chunks, then hand it to the browser as a download. */
async function saveAttachment(card, id, name, mime, size) {
  const button = card.querySelector('[data-parley="save"]');
  const progress = card.querySelector('[data-parley="progress"]');
  if (button) button.disabled = true;
  try {
    const parts = [];
    let offset = 0;
    let total = Number.isSafeInteger(size) ? size : 0;
    for (;;) {
      const chunk = await rpc('attachments.read', { peer: address, id, offset, length: LIMITS.CHUNK_MAX });
      if (typeof chunk?.data !== 'string') throw new Error('the bridge sent no data');
      const bytes = fromBase64(chunk.data);
      parts.push(bytes);
      offset += bytes.length;
      if (Number.isSafeInteger(chunk.size)) total = chunk.size;
      progress.max = Math.max(total, 1);
      progress.value = Math.min(offset, total);
      progress.hidden = false;
      if (chunk.eof === true || bytes.length === 0 || offset > LIMITS.FILE_MAX) break;
    }
    const url = URL.createObjectURL(new Blob(parts, { type: safeMime(mime) }));
    const link = el('a');
    link.href = url;
    link.download = safeName(name);
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    card.dataset.saved = 'true';
    showError('');
  } catch (error) {
    showError(`Not saved: ${String(error.message ?? error)}`);
  } finally {
    progress.hidden = true;
    if (button) button.disabled = false;
  }
}

function onProgress(params) {
  if (!params || typeof params.id !== 'string') return;
  const card = [...list.querySelectorAll('[data-parley="attachment"]')].find((c) => c.dataset.attachmentId === params.id);
  const bar = card?.querySelector('[data-parley="progress"]');
  if (!bar || !Number.isSafeInteger(params.done) || !Number.isSafeInteger(params.total) || params.total <= 0) return;
  bar.max = params.total;
  bar.value = Math.min(params.done, params.total);
  bar.hidden = params.done >= params.total;
  bar.dataset.phase = params.phase === 'upload' ? 'upload' : 'download';
}

function watchDrops() {
  const hint = $('drop-hint');
  hint.textContent = CHAT_WORDS.dropHint;
  const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes('Files');
  document.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    hint.hidden = false;
  });
  document.addEventListener('dragleave', (event) => {
    if (event.relatedTarget === null) hint.hidden = true;
  });
  document.addEventListener('drop', (event) => {
    if (!hasFiles(event) && !(event.dataTransfer?.files?.length)) return;
    event.preventDefault();
    hint.hidden = true;
    if (loaded && canMessage) addFiles(event.dataTransfer.files);
  });
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
    await loadConsent();
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
      if (message.direction === 'in') {
        showTyping(false);
        markRead();
      }
    }
  } else if (msg.type === WIDGET_EVENT && msg.method === 'message.updated') {
    const message = normalizeMessageAddresses(msg.params?.message);
    if (message && address && normalizeAddress(message.peer) === address) updateMessage(message);
  } else if (msg.type === WIDGET_EVENT && address && normalizeAddress(msg.params?.peer) === address) {
    if (msg.method === 'typing') showTyping(msg.params.typing === true);
    else if (msg.method === 'consent.changed') showConsent(msg.params);
    else if (msg.method === 'attachment.progress') onProgress(msg.params);
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
  const files = editing === null ? staged.slice() : [];
  if ((!text && files.length === 0) || !address || sendButton.disabled) return;
  if (!canAct()) {
    refuse();
    showError(!TOP_LEVEL && !HAS_IO_V2
      ? 'Not sent: this browser cannot tell whether the page covers this chat. Use "Open in a window to send".'
      : 'Not sent: the chat was hidden, covered or had only just appeared. Check the message and send it again.');
    return;
  }
  if (editing !== null) {
    await sendEdit(editing, text);
    return;
  }
  sendButton.disabled = true;
  $('attach').disabled = true;
  // Cleared now, not when the bridge answers: what the user types meanwhile is the next message.
  composer.value = '';
  sendingTexts.push(text);
  typingOn = false; // sending ends typing on the bridge's side too
  try {
    const params = { peer: address, text };
    if (replyTo) params.reply_to = replyTo;
    if (files.length) params.uploads = await uploadStaged(files);
    const { message } = await rpc('messages.send', params);
    cancelReply();
    staged = staged.filter((file) => !files.includes(file));
    renderStaged();
    renderMessage(message);
    updateMessage(message); // "Sending…" becomes what the bridge did: sent, or queued to retry
    if (consent !== 'allowed') loadConsent(); // replying to a request accepts it
  } catch (error) {
    // Whatever the bridge queued before the error stays queued there: say so, not "Sending…".
    for (const item of list.querySelectorAll('[data-parley="message"][data-state="sending"]')) {
      if (item.querySelector('[data-parley="text"]')?.textContent === text) showState(item, 'queued');
    }
    showError(`Not sent: ${String(error.message ?? error)}`);
    if (!composer.value) composer.value = text; // nothing typed since: the text is given back to try again
  } finally {
    const left = sendingTexts.indexOf(text);
    if (left >= 0) sendingTexts.splice(left, 1);
    setComposerEnabled();
    composer.focus();
  }
}

async function sendEdit(id, text) {
  sendButton.disabled = true;
  try {
    const { message } = await rpc('messages.edit', { peer: address, id, text });
    editing = null;
    $('edit-preview').hidden = true;
    composer.value = '';
    if (message) updateMessage(message);
    showError('');
  } catch (error) {
    showError(`Not edited: ${String(error.message ?? error)}`);
  } finally {
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
  composer.addEventListener('input', onComposerInput);
  $('reply-cancel').addEventListener('click', cancelReply);
  $('edit-cancel').addEventListener('click', () => { cancelEdit(); setComposerEnabled(); });
  $('attach').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', () => {
    addFiles($('file-input').files);
    $('file-input').value = '';
  });
  for (const action of ['accept', 'block', 'decline', 'unblock']) $(action).addEventListener('click', () => setConsent(action));
  document.addEventListener('click', () => closeMenus());
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') closeMenus(); });
  watchDrops();
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
