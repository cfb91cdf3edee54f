// The chat widget (DESIGN.md "Extension": widget). An extension page inside an iframe on the social
// site. It talks to the service worker over a chrome.runtime port (extension-internal: the hosting
// page and the content script are never on the path, unlike a MessageChannel handed over by the
// content script). Message text is rendered with textContent only.

import {
  RECONNECT, STATUS, WIDGET_EVENT, WIDGET_HELLO, WIDGET_PORT, WIDGET_RPC, WIDGET_RPC_RESULT, WIDGET_STATUS,
} from '../common/messages.js';
import { isPeer, normalizeAddress, normalizeMessageAddresses } from '../common/peer.js';

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

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

function setComposerEnabled() {
  const on = loaded && canMessage && status === STATUS.CONNECTED;
  composer.disabled = !on;
  sendButton.disabled = !on;
}

function rpc(method, params) {
  return new Promise((resolve, reject) => {
    if (!port) { reject(new Error('not connected to Parley')); return; }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    port.postMessage({ type: WIDGET_RPC, id, method, params });
  });
}

function formatTime(ms) {
  const date = new Date(Number(ms));
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString();
}

function renderMessage(raw, { prepend = false } = {}) {
  const message = normalizeMessageAddresses(raw);
  if (!message || typeof message.id !== 'string' || shown.has(message.id)) return;
  shown.add(message.id);
  const item = document.createElement('li');
  item.dataset.parley = 'message';
  item.dataset.direction = message.direction === 'out' ? 'out' : 'in';
  item.dataset.state = message.state === 'queued' ? 'queued' : 'sent';
  item.dataset.id = message.id;
  item.textContent = String(message.text ?? '');
  item.title = formatTime(message.sent_at);
  if (prepend) list.prepend(item);
  else {
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }
}

async function markRead() {
  if (!address || document.visibilityState !== 'visible' || status !== STATUS.CONNECTED) return;
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
    $('peer-name').textContent = resolved.name || peer;
    $('peer-address').textContent = address;
    port.postMessage({ type: WIDGET_HELLO, peer: address });
    const can = await rpc('canMessage', { address });
    canMessage = can?.canMessage === true;
    const page = await rpc('messages.list', { peer: address, before: null, limit: 50 });
    list.replaceChildren();
    shown.clear();
    for (const message of page.messages) renderMessage(message);
    earlier.hidden = !page.has_more;
    loaded = true;
    showError(canMessage ? '' : `${peer} has not set up Parley yet, so messages cannot be delivered.`);
    markRead();
  } catch (error) {
    showError(String(error.message ?? error));
  } finally {
    loading = false;
    setComposerEnabled();
  }
}

function onStatus(next) {
  status = next;
  if (status === STATUS.CONNECTED) {
    load();
  } else if (status === STATUS.NOT_PAIRED) {
    showError('This browser is not paired with Parley. Open the Parley popup to pair it.');
  } else if (status === STATUS.UNREACHABLE) {
    showError('The Parley bridge is not reachable. Is `parley run` running? Retrying…');
  }
  setComposerEnabled();
}

function onPortMessage(msg) {
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === WIDGET_RPC_RESULT && pending.has(msg.id)) {
    const { resolve, reject } = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) reject(Object.assign(new Error(String(msg.error.message)), { code: msg.error.code }));
    else resolve(msg.result);
  } else if (msg.type === WIDGET_STATUS) {
    onStatus(msg.status);
  } else if (msg.type === WIDGET_EVENT && msg.method === 'message.new') {
    const message = normalizeMessageAddresses(msg.params?.message);
    if (message && address && normalizeAddress(message.peer) === address) {
      renderMessage(message);
      if (message.direction === 'in') markRead();
    }
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
  if (address) port.postMessage({ type: WIDGET_HELLO, peer: address });
}

async function send(event) {
  event.preventDefault();
  const text = composer.value.trim();
  if (!text || !address || sendButton.disabled) return;
  sendButton.disabled = true;
  try {
    const { message } = await rpc('messages.send', { peer: address, text });
    composer.value = '';
    renderMessage(message);
  } catch (error) {
    showError(`Not sent: ${String(error.message ?? error)}`);
  } finally {
    setComposerEnabled();
    composer.focus();
  }
}

if (!isPeer(peer)) {
  showError('This chat has no valid peer.');
} else {
  $('peer-name').textContent = peer;
  $('compose-form').addEventListener('submit', send);
  composer.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) send(event);
  });
  earlier.addEventListener('click', loadEarlier);
  document.addEventListener('visibilitychange', markRead);
  connectPort();
  chrome.runtime.sendMessage({ type: RECONNECT }).catch(() => {});
}
