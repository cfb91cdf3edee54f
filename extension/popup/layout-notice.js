// Popup block for issue 11 (kept apart from popup.js): when the active tab's content script could
// not recognise the site's layout and shows the floating DM button instead, say so, and offer to
// bring the floating button back on a site where the user hid it.
//
// The tab: the active tab of the popup's window. When the popup is opened as a page in a tab of its
// own (chrome-extension://…/popup/popup.html?tab=N, as the e2e tests and a pinned popup do), the tab
// id comes from ?tab=.

import { POPUP_LAYOUT_RESTORE, POPUP_LAYOUT_STATE } from '../common/messages.js';

const SITE_NAMES = Object.freeze({ lens: 'Hey', orb: 'Orb', firefly: 'Firefly' });

async function targetTabId() {
  const own = await chrome.tabs.getCurrent();
  if (own) {
    const id = Number(new URLSearchParams(location.search).get('tab'));
    return Number.isInteger(id) && id >= 0 ? id : null;
  }
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return Number.isInteger(tab?.id) ? tab.id : null;
}

async function showLayoutNotice() {
  const notice = document.querySelector('[data-parley="layout-notice"]');
  const text = document.querySelector('[data-parley="layout-notice-text"]');
  const restore = document.querySelector('[data-parley="layout-restore"]');
  if (!notice || !text || !restore) return;
  const tabId = await targetTabId();
  const state = tabId === null ? null : await chrome.runtime.sendMessage({ type: POPUP_LAYOUT_STATE, tabId });
  const site = SITE_NAMES[state?.site];
  if (!state?.ok || state.mode !== 'fallback' || !site) {
    notice.hidden = true;
    notice.dataset.parleyLayout = state?.mode ?? 'none';
    return;
  }
  notice.dataset.parleyLayout = 'fallback';
  text.textContent = state.dismissed
    ? `This site’s layout was not recognised (${site}), and you hid Parley’s floating button here.`
    : `This site’s layout was not recognised (${site}): Parley’s button floats in the bottom-left corner.`;
  restore.hidden = !state.dismissed;
  restore.onclick = async () => {
    const reply = await chrome.runtime.sendMessage({ type: POPUP_LAYOUT_RESTORE, site: state.site });
    if (reply?.ok) {
      restore.hidden = true;
      text.textContent = `This site’s layout was not recognised (${site}): reload the page to see Parley’s floating button.`;
    }
  };
  notice.hidden = false;
}

showLayoutNotice().catch(() => {});
