// Layout state for the floating DM button (issue 11). Content scripts report, per tab, whether the
// profile's action row was recognised ("placed"), not ("fallback"), or the page is no profile
// ("none"); the popup reads it for the active tab and then says the site's layout was not recognised.
// Per-tab state lives in chrome.storage.session (the worker may die at any time); whether the user
// hid the floating button on a site lives in chrome.storage.local (it persists). Neither area is
// readable by content scripts (session storage's default access level; local is never exposed to
// a page), and the site is always derived from the sender, never taken from the message.

import { CONTENT_FALLBACK_DISMISS, CONTENT_LAYOUT, CONTENT_LAYOUT_QUERY, LAYOUT_MODES, POPUP_LAYOUT_RESTORE, POPUP_LAYOUT_STATE } from '../common/messages.js';
import { isExtensionPage, isSiteContentScript } from './senders.js';

/** Site (adapter) of each host: dismissal is per site, so orb.club and orb.ac share one. */
export const HOST_SITE = Object.freeze({ 'hey.xyz': 'lens', 'orb.club': 'orb', 'orb.ac': 'orb', 'firefly.social': 'firefly' });
const SITES = new Set(Object.values(HOST_SITE));
const MAX_TABS = 200;

let queue = Promise.resolve();
/** Run `fn` after every earlier layout write (read-modify-write of storage). */
function serial(fn) {
  const run = queue.then(fn);
  queue = run.catch(() => {});
  return run;
}

/** The site of a content-script sender, or null. */
export function siteOfSender(sender) {
  try {
    return HOST_SITE[new URL(sender.origin ?? sender.url).hostname] ?? null;
  } catch {
    return null;
  }
}

async function loadTabs() {
  const { layoutTabs } = await chrome.storage.session.get('layoutTabs');
  return layoutTabs && typeof layoutTabs === 'object' ? layoutTabs : {};
}

async function loadDismissed() {
  const { fallbackDismissed } = await chrome.storage.local.get('fallbackDismissed');
  return fallbackDismissed && typeof fallbackDismissed === 'object' ? fallbackDismissed : {};
}

/** Record `mode` for the sender's tab; answers {dismissed} for the sender's site. */
export function reportLayout(sender, mode) {
  const site = siteOfSender(sender);
  if (!site || !LAYOUT_MODES.includes(mode)) return Promise.resolve({ ok: false, error: 'bad layout report' });
  return serial(async () => {
    const tabs = await loadTabs();
    delete tabs[sender.tab.id];
    if (mode !== 'none') tabs[sender.tab.id] = { site, mode };
    const ids = Object.keys(tabs);
    for (const id of ids.slice(0, Math.max(0, ids.length - MAX_TABS))) delete tabs[id];
    await chrome.storage.session.set({ layoutTabs: tabs });
    return { ok: true, dismissed: (await loadDismissed())[site] === true };
  });
}

/** The user hid the floating button on the sender's site. */
export function dismissFallback(sender) {
  const site = siteOfSender(sender);
  if (!site) return Promise.resolve({ ok: false });
  return serial(async () => {
    await chrome.storage.local.set({ fallbackDismissed: { ...(await loadDismissed()), [site]: true } });
    return { ok: true };
  });
}

/** The current mode of the content script in `tabId`'s top frame, or "none" when none answers. */
async function askTab(tabId) {
  try {
    const reply = await chrome.tabs.sendMessage(tabId, { type: CONTENT_LAYOUT_QUERY }, { frameId: 0 });
    return LAYOUT_MODES.includes(reply?.mode) ? reply.mode : 'none';
  } catch {
    return 'none'; // no content script of ours there any more (another site, or the tab is gone)
  }
}

/**
 * {site, mode, dismissed} for `tabId`: the tab's last report, checked with the tab itself (it may
 * have navigated elsewhere since); mode "none" when nothing holds.
 */
export async function layoutOfTab(tabId) {
  const none = { ok: true, site: null, mode: 'none', dismissed: false };
  const entry = (await loadTabs())[tabId];
  if (!entry) return none;
  const mode = await askTab(tabId);
  if (mode === 'none') {
    await forgetLayoutTab(tabId);
    return none;
  }
  return { ok: true, site: entry.site, mode, dismissed: (await loadDismissed())[entry.site] === true };
}

/** Show the floating button on `site` again. */
export function restoreFallback(site) {
  if (!SITES.has(site)) return Promise.resolve({ ok: false, error: 'unknown site' });
  return serial(async () => {
    const dismissed = await loadDismissed();
    delete dismissed[site];
    await chrome.storage.local.set({ fallbackDismissed: dismissed });
    return { ok: true };
  });
}

/** Forget a tab's layout (closed, or a new document is loading in it). */
export function forgetLayoutTab(tabId) {
  return serial(async () => {
    const tabs = await loadTabs();
    if (!(tabId in tabs)) return;
    delete tabs[tabId];
    await chrome.storage.session.set({ layoutTabs: tabs });
  });
}

/** The worker's answer to a layout message, or null when the message is not one (or the sender may not send it). */
export function handleLayoutMessage(msg, sender) {
  if (msg.type === CONTENT_LAYOUT && isSiteContentScript(sender)) return reportLayout(sender, msg.mode);
  if (msg.type === CONTENT_FALLBACK_DISMISS && isSiteContentScript(sender)) return dismissFallback(sender);
  if (msg.type === POPUP_LAYOUT_STATE && isExtensionPage(sender, 'popup/popup.html')) {
    return Number.isInteger(msg.tabId) ? layoutOfTab(msg.tabId) : Promise.resolve({ ok: false, error: 'bad tab id' });
  }
  if (msg.type === POPUP_LAYOUT_RESTORE && isExtensionPage(sender, 'popup/popup.html')) return restoreFallback(msg.site);
  return null;
}
