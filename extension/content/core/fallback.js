// The floating DM button (issue 11): when a profile page shows no recognised action row within
// FALLBACK_DELAY_MS, a small fixed box in the bottom-left corner holds the same DM button (same
// hooks: data-parley="dm-button") and a dismiss control. The feature never silently disappears when
// a site changes its markup. It is never shown on a non-profile page (main.js only places on
// profiles and removes it on every navigation).
//
// Dismissing is per site and persists (the worker keeps it in chrome.storage.local, keyed by the
// site it derives from the sender, never from the message). Only a trusted click dismisses: the
// page's own scripts (el.click(), dispatchEvent) produce untrusted events, so a hostile page cannot
// turn the feature off for the user. The box is placed bottom-left so it never sits under the
// widget (bottom-right), which refuses to act while anything covers it.

import { CONTENT_FALLBACK_DISMISS } from '../../common/messages.js';
import { createButton, startLookup } from './button.js';

export const FALLBACK_SELECTOR = '[data-parley="dm-fallback"]';
export const FALLBACK_DELAY_MS = 2000;

function style(el, props) {
  for (const [name, value] of Object.entries(props)) el.style.setProperty(name, value, 'important');
}

/** The floating box currently in the page, or null. */
export function currentFallback() {
  return document.querySelector(FALLBACK_SELECTOR);
}

/** Remove the floating box (only when it belongs to another peer, if `exceptPeer` is given). */
export function removeFallback(exceptPeer = null) {
  for (const box of document.querySelectorAll(FALLBACK_SELECTOR)) {
    if (exceptPeer === null || box.dataset.parleyPeer !== exceptPeer) box.remove();
  }
}

/**
 * Show the floating box for `peer` (at most one per page). `onDismiss()` runs after a trusted click
 * on the dismiss control, once the box is gone. Returns the box.
 */
export function showFallback(peer, { onDismiss } = {}) {
  removeFallback(peer);
  const existing = currentFallback();
  if (existing) return existing;
  const box = document.createElement('div');
  box.dataset.parley = 'dm-fallback';
  box.dataset.parleyPeer = peer;
  box.setAttribute('role', 'complementary');
  box.setAttribute('aria-label', 'Parley');
  box.title = 'Parley did not recognise this page’s layout; its button waits here.';
  style(box, {
    position: 'fixed', left: '12px', bottom: '12px', 'z-index': '2147483646', display: 'flex',
    'align-items': 'center', gap: '2px', padding: '2px', margin: '0', background: '#fff',
    'border-radius': '999px', 'box-shadow': '0 2px 10px rgba(0,0,0,.2)', 'font-family': 'sans-serif',
    width: 'auto', height: 'auto', opacity: '1', visibility: 'visible', transform: 'none',
  });
  const button = createButton(peer);
  button.style.setProperty('font-size', '13px');
  button.style.setProperty('padding', '4px 12px');
  const dismiss = document.createElement('button');
  dismiss.type = 'button';
  dismiss.dataset.parley = 'fallback-dismiss';
  dismiss.setAttribute('aria-label', 'Hide the Parley button on this site');
  dismiss.title = 'Hide the Parley button on this site (the Parley popup can bring it back)';
  dismiss.textContent = '×';
  style(dismiss, {
    border: '0', background: 'transparent', color: '#555', cursor: 'pointer', 'font-size': '16px',
    'line-height': '16px', padding: '4px 8px', 'border-radius': '999px',
  });
  dismiss.addEventListener('click', (event) => {
    event.preventDefault();
    event.stopPropagation();
    if (!event.isTrusted) return; // the page's scripts cannot hide Parley
    box.remove();
    chrome.runtime.sendMessage({ type: CONTENT_FALLBACK_DISMISS }).catch(() => {});
    onDismiss?.();
  });
  box.append(button, dismiss);
  document.body.append(box);
  startLookup(button, peer);
  return box;
}
