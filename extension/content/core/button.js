// The DM button (DESIGN.md "Stable test hooks"): <button data-parley="dm-button"
// data-parley-peer="…" data-parley-state="loading|ready|unavailable" aria-label="Message on Parley">.
// There is at most one per page; mounting again moves or replaces it, never doubles it.

import { CONTENT_LOOKUP_PEER } from '../../common/messages.js';
import { peerLabel } from '../../common/labels.js';
import { openWidget } from './widget.js';

export const BUTTON_SELECTOR = '[data-parley="dm-button"]';
const LOOKUP_TTL_MS = 15000;
const lookups = new Map(); // peer -> {at, promise}

const STATES = new Set(['ready', 'unavailable', 'unresolved']);

function lookup(peer) {
  const cached = lookups.get(peer);
  if (cached && Date.now() - cached.at < LOOKUP_TTL_MS) return cached.promise;
  const promise = chrome.runtime
    .sendMessage({ type: CONTENT_LOOKUP_PEER, peer })
    .then((reply) => (reply && STATES.has(reply.state) ? reply : { state: 'unresolved', reason: 'error', detail: 'no answer from Parley' }))
    .catch(() => ({ state: 'unresolved', reason: 'error', detail: 'Parley did not answer' }));
  lookups.set(peer, { at: Date.now(), promise });
  promise.then((r) => { if (r.state !== 'ready') lookups.delete(peer); });
  return promise;
}

/**
 * Show exactly one of: "Message" (ready); "Not on Parley yet", "Pair Parley", "Parley bridge not
 * running" or "Parley bridge not verified" (unavailable); or "Couldn't resolve" with the bridge's
 * reason in the title (unresolved). The words come from common/labels.js, shared with the widget.
 * Every state stays clickable: the widget then explains, invites or retries.
 */
export function setButtonState(button, state, reason, detail) {
  button.dataset.parleyState = state;
  button.dataset.parleyReason = reason ?? '';
  const { text, title } = peerLabel(state, reason, detail);
  button.textContent = text;
  button.title = title;
}

/** A new DM button for `peer` (not yet in the page), in the "loading" state until its lookup answers. */
export function createButton(peer) {
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.parley = 'dm-button';
  button.dataset.parleyPeer = peer;
  button.setAttribute('aria-label', 'Message on Parley');
  for (const [name, value] of Object.entries({
    'margin-inline': '4px', padding: '6px 14px', 'border-radius': '999px', border: '1px solid #5846dc',
    background: '#5846dc', color: '#fff', 'font-weight': '600', cursor: 'pointer', 'font-size': '14px',
  })) button.style.setProperty(name, value);
  setButtonState(button, 'loading');
  button.addEventListener('click', (event) => {
    event.preventDefault();
    event.stopPropagation();
    openWidget(peer);
  });
  return button;
}

/**
 * Mount the DM button for `peer` into `parent` before `before` (null = append). Any other DM button
 * on the page (another peer, or a copy left in a re-rendered row) is removed first.
 */
export function mountButton(peer, parent, before, { signal } = {}) {
  if (signal?.aborted) return null;
  for (const existing of document.querySelectorAll(BUTTON_SELECTOR)) {
    if (existing.dataset.parleyPeer !== peer || existing.parentElement !== parent) existing.remove();
  }
  const current = parent.querySelector(`:scope > ${BUTTON_SELECTOR}`);
  if (current) return current;
  const button = createButton(peer);
  parent.insertBefore(button, before && before.parentNode === parent ? before : null);
  startLookup(button, peer);
  return button;
}

/** Ask the worker about `peer` and show the answer on `button` (once it is in the page). */
export function startLookup(button, peer) {
  lookup(peer).then((reply) => {
    if (button.isConnected) setButtonState(button, reply.state, reply.reason, reply.detail);
  });
}

/** Remove every DM button whose peer differs from `peer` (all of them when `peer` is null). */
export function removeButtons(peer = null) {
  for (const existing of document.querySelectorAll(BUTTON_SELECTOR)) {
    if (peer === null || existing.dataset.parleyPeer !== peer) existing.remove();
  }
}
