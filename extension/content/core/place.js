// One profile view's placement (issue 11): watch the page (MutationObserver, no polling) for the
// site's action row (core/placement.js via the adapter's findRow) and mount the DM button in it. If no
// row is recognised within FALLBACK_DELAY_MS (one timer), show the floating button instead and tell
// the worker ("fallback"), so the popup can say the layout was not recognised. A row that appears
// later (late render, SPA) wins: the button moves into it and the floating box goes. Everything
// stops when the view's signal aborts (main.js aborts it on every URL change).

import { CONTENT_LAYOUT, CONTENT_LAYOUT_QUERY } from '../../common/messages.js';
import { BUTTON_SELECTOR, mountButton } from './button.js';
import { FALLBACK_DELAY_MS, removeFallback, showFallback } from './fallback.js';

let reported = null; // the last mode told to the worker from this page
let dismissed = null; // the worker's answer: the user hid the floating button on this site
let unrecognised = false; // the last profile view of this page ended in the fallback

/** Tell the worker this page's layout mode (once per change); resolves to whether it is dismissed. */
export async function reportLayout(mode) {
  if (mode === reported && dismissed !== null) return dismissed;
  reported = mode;
  try {
    const reply = await chrome.runtime.sendMessage({ type: CONTENT_LAYOUT, mode });
    dismissed = reply?.dismissed === true;
  } catch {
    dismissed = false;
  }
  return dismissed;
}

/** This page's current layout mode ("placed", "fallback" or "none"). */
export function currentLayout() {
  return reported ?? 'none';
}

/**
 * Answer the worker's CONTENT_LAYOUT_QUERY (it checks its per-tab record with the tab). Only the
 * extension can message a content script; the page cannot.
 */
export function listenForLayoutQueries() {
  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    if (sender?.id !== chrome.runtime.id || msg?.type !== CONTENT_LAYOUT_QUERY) return false;
    sendResponse({ mode: currentLayout() });
    return false;
  });
}

/** Forget what this page learned (tests; a new page starts with a fresh content script anyway). */
export function resetPlacementState() {
  reported = null;
  dismissed = null;
  unrecognised = false;
}

/** While no row is found, the page is searched at most once per this many ms (a busy page mutates a lot). */
export const SEARCH_INTERVAL_MS = 100;

/**
 * Place the DM button for `profile` ({peer}) using `findRow(document)` → {row, followItem} | null.
 * Options: `signal` (required), `site` (for the debug log), `delayMs` (fallback delay; FALLBACK_DELAY_MS).
 */
export function placeButton(profile, { findRow, signal, site = '', delayMs = FALLBACK_DELAY_MS }) {
  if (signal?.aborted) return;
  const { peer } = profile;
  let placed = null; // our button, while it sits in a recognised row
  let timer = null;

  const fallBack = async () => {
    timer = null;
    if (signal.aborted || placed?.isConnected) return;
    // Selectors that stop matching are reported (refined-github's habit): has the site changed?
    console.debug(`[parley] ${site}: no action row recognised on this profile; showing the floating button`);
    unrecognised = true;
    const hidden = await reportLayout('fallback');
    if (signal.aborted || placed?.isConnected || hidden) return;
    showFallback(peer, { onDismiss: () => { dismissed = true; } });
  };
  const arm = (ms) => {
    if (timer === null && !signal.aborted) timer = setTimeout(fallBack, ms);
  };
  // Only a placement that lasts the whole delay says this site's layout is recognised: right after an
  // SPA navigation the previous page's DOM may briefly hold a row that is about to go.
  const stable = setTimeout(() => { if (placed?.isConnected) unrecognised = false; }, delayMs);

  const run = () => {
    if (signal.aborted || placed?.isConnected) return;
    let found = null;
    try {
      found = findRow(document);
    } catch (error) {
      console.debug('[parley] findRow failed', error);
    }
    if (found) {
      const button = mountButton(peer, found.row, found.followItem.nextSibling, { signal });
      if (!button) return;
      placed = button;
      removeFallback();
      reportLayout('placed');
      return;
    }
    if (placed) { // the row went away (re-rendered into something we do not recognise): wait again
      placed = null;
      arm(unrecognised ? 0 : delayMs);
    }
  };

  // Mutations run the search at once, unless one ran less than SEARCH_INTERVAL_MS ago: then once
  // more when the interval is over (the last mutation of a burst is never missed).
  let lastRun = -Infinity;
  let pending = null;
  const throttled = () => {
    if (pending !== null || signal.aborted || placed?.isConnected) return;
    const wait = lastRun + SEARCH_INTERVAL_MS - performance.now();
    if (wait <= 0) {
      lastRun = performance.now();
      run();
      return;
    }
    pending = setTimeout(() => { pending = null; lastRun = performance.now(); run(); }, wait);
  };
  const observer = new MutationObserver(throttled);
  observer.observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['aria-label'] });
  signal.addEventListener('abort', () => {
    observer.disconnect();
    clearTimeout(timer);
    clearTimeout(stable);
    clearTimeout(pending);
  }, { once: true });
  lastRun = performance.now();
  run();
  // The fallback timer always runs (it does nothing if the button sits in a row by then). A page
  // whose layout was not recognised on an earlier profile gets the floating button at once.
  arm(unrecognised ? 0 : delayMs);
}

/** A non-profile page: no button of any kind, and the worker is told so (once). */
export function clearPlacement() {
  for (const b of document.querySelectorAll(BUTTON_SELECTOR)) b.remove();
  removeFallback();
  if (reported !== null && reported !== 'none') reportLayout('none');
}
