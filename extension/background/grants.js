// Which widget frames may come alive (issue 8 item 6, clickjacking). widget.html is web-accessible,
// so a site can frame it itself; only a frame our content script opened may act. The content script
// asks for a one-time nonce bound to (tab, peer) and posts it to its own iframe for the extension's
// origin only (the page cannot read it); the widget presents it over its port, and the worker records
// a grant for (tab, the port's frame id, peer). A grant lets that same frame re-attach after the worker
// restarted. Both live in chrome.storage.session (the worker may die at any time).
import { isPeer } from '../common/peer.js';

const NONCE_TTL_MS = 30000;
const MAX_NONCES = 20;
const MAX_GRANTS = 50;

let queue = Promise.resolve();
/** Run `fn` after every earlier grant operation (read-modify-write of storage.session). */
function serial(fn) {
  const run = queue.then(fn);
  queue = run.catch(() => {});
  return run;
}

async function load() {
  const { widgetNonces, widgetGrants } = await chrome.storage.session.get(['widgetNonces', 'widgetGrants']);
  return {
    nonces: widgetNonces && typeof widgetNonces === 'object' ? widgetNonces : {},
    grants: Array.isArray(widgetGrants) ? widgetGrants : [],
  };
}

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The `peer` query parameter of a widget page URL, or null. */
export function peerOfWidgetUrl(url) {
  try {
    const peer = new URL(url).searchParams.get('peer');
    return isPeer(peer) ? peer : null;
  } catch {
    return null;
  }
}

/** Mint a nonce for the widget that the content script of tab `tabId` opened for `peer`. */
export function mintNonce(tabId, peer) {
  if (!Number.isInteger(tabId) || !isPeer(peer)) return Promise.resolve(null);
  return serial(async () => {
    const { nonces } = await load();
    const now = Date.now();
    const live = Object.entries(nonces).filter(([, v]) => v && v.exp > now).slice(-(MAX_NONCES - 1));
    const nonce = randomHex(16);
    live.push([nonce, { tabId, peer, exp: now + NONCE_TTL_MS }]);
    await chrome.storage.session.set({ widgetNonces: Object.fromEntries(live) });
    return nonce;
  });
}

/**
 * Mint a nonce for a widget window the worker opens itself (WIDGET_POPOUT): a top-level page, which no
 * site can cover or frame. It travels in that window's URL fragment, which only the extension sees.
 */
export function mintWindowNonce(peer) {
  if (!isPeer(peer)) return Promise.resolve(null);
  return serial(async () => {
    const { nonces } = await load();
    const now = Date.now();
    const live = Object.entries(nonces).filter(([, v]) => v && v.exp > now).slice(-(MAX_NONCES - 1));
    const nonce = randomHex(16);
    live.push([nonce, { tabId: null, top: true, peer, exp: now + NONCE_TTL_MS }]);
    await chrome.storage.session.set({ widgetNonces: Object.fromEntries(live) });
    return nonce;
  });
}

/**
 * May the widget behind `sender` (a port's MessageSender) come alive? With a nonce: it must be
 * unexpired, unused and minted for this very tab and peer (it is used up either way), and the widget
 * must be a subframe. Without one: a grant for this tab, frame and peer must exist. Resolves the
 * granted peer or null.
 */
export function admit(sender, nonce) {
  const tabId = sender?.tab?.id;
  const frameId = sender?.frameId;
  const peer = peerOfWidgetUrl(sender?.url);
  if (!Number.isInteger(tabId) || !Number.isInteger(frameId) || peer === null) return Promise.resolve(null);
  return serial(async () => {
    const { nonces, grants } = await load();
    const same = (g) => g.tabId === tabId && g.frameId === frameId && g.peer === peer;
    if (nonce === null) return grants.some(same) ? peer : null;
    if (typeof nonce !== 'string' || !Object.hasOwn(nonces, nonce)) return null;
    const entry = nonces[nonce];
    delete nonces[nonce];
    // A frame's nonce: this tab, a subframe. A window's nonce (mintWindowNonce): a top-level page.
    const where = entry?.top === true ? frameId === 0 : entry?.tabId === tabId && frameId > 0;
    const ok = Boolean(entry) && entry.exp > Date.now() && entry.peer === peer && where;
    const next = ok ? [...grants.filter((g) => !same(g)), { tabId, frameId, peer }].slice(-MAX_GRANTS) : grants;
    await chrome.storage.session.set({ widgetNonces: nonces, widgetGrants: next });
    return ok ? peer : null;
  });
}

/** Forget the grants of a closed tab. */
export function forgetTab(tabId) {
  return serial(async () => {
    const { grants } = await load();
    await chrome.storage.session.set({ widgetGrants: grants.filter((g) => g.tabId !== tabId) });
  });
}
