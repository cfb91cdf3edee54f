// The worker's layout state for the floating DM button (issue 11; extension/background/layout.js):
// per-tab modes for the popup, per-site dismissal that persists, every message checked for its
// sender and the site taken from the sender, never from the message.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { storageArea } from './storage-fake.mjs';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const local = new Map();
const session = new Map();
const tabModes = new Map(); // tabId -> what the tab's content script answers (absent: no content script)
globalThis.chrome = {
  runtime: { id: ID, getURL: (path) => `chrome-extension://${ID}/${path}` },
  storage: { local: storageArea(local), session: storageArea(session) },
  tabs: {
    async sendMessage(tabId, msg, options) {
      assert.deepEqual(options, { frameId: 0 });
      assert.equal(msg.type, CONTENT_LAYOUT_QUERY);
      if (!tabModes.has(tabId)) throw new Error('Could not establish connection. Receiving end does not exist.');
      return { mode: tabModes.get(tabId) };
    },
  },
};

const { CONTENT_FALLBACK_DISMISS, CONTENT_LAYOUT, CONTENT_LAYOUT_QUERY, POPUP_LAYOUT_RESTORE, POPUP_LAYOUT_STATE } = await import('../../extension/common/messages.js');
const { forgetLayoutTab, handleLayoutMessage } = await import('../../extension/background/layout.js');

const site = (host, tabId, over = {}) => ({ id: ID, tab: { id: tabId }, frameId: 0, origin: `https://${host}`, url: `https://${host}/u/bob`, ...over });
const popup = { id: ID, url: `chrome-extension://${ID}/popup/popup.html` };
const ask = (msg, sender) => handleLayoutMessage(msg, sender);

beforeEach(() => { local.clear(); session.clear(); tabModes.clear(); });

test('a content script reports its mode; the popup reads it for that tab, checked with the tab', async () => {
  assert.deepEqual(await ask({ type: CONTENT_LAYOUT, mode: 'fallback' }, site('hey.xyz', 4)), { ok: true, dismissed: false });
  tabModes.set(4, 'fallback');
  assert.deepEqual(await ask({ type: POPUP_LAYOUT_STATE, tabId: 4 }, popup), { ok: true, site: 'lens', mode: 'fallback', dismissed: false });
  assert.deepEqual(await ask({ type: POPUP_LAYOUT_STATE, tabId: 5 }, popup), { ok: true, site: null, mode: 'none', dismissed: false });
  // The tab has since left the site (no content script answers): nothing holds, and it is forgotten.
  tabModes.delete(4);
  assert.equal((await ask({ type: POPUP_LAYOUT_STATE, tabId: 4 }, popup)).mode, 'none');
  assert.deepEqual(session.get('layoutTabs'), {});
  // "none" from a content script clears the tab too.
  await ask({ type: CONTENT_LAYOUT, mode: 'placed' }, site('orb.ac', 6));
  assert.deepEqual(session.get('layoutTabs'), { 6: { site: 'orb', mode: 'placed' } });
  await ask({ type: CONTENT_LAYOUT, mode: 'none' }, site('orb.ac', 6));
  assert.deepEqual(session.get('layoutTabs'), {});
  await ask({ type: CONTENT_LAYOUT, mode: 'placed' }, site('firefly.social', 8));
  await forgetLayoutTab(8);
  assert.deepEqual(session.get('layoutTabs'), {});
});

test('dismissal is per site (orb.club and orb.ac are one site), persists in local storage, and the popup restores it', async () => {
  await ask({ type: CONTENT_FALLBACK_DISMISS, site: 'firefly' }, site('orb.club', 3)); // the message's site is ignored
  assert.deepEqual(local.get('fallbackDismissed'), { orb: true });
  assert.deepEqual(await ask({ type: CONTENT_LAYOUT, mode: 'fallback' }, site('orb.ac', 3)), { ok: true, dismissed: true });
  assert.deepEqual(await ask({ type: CONTENT_LAYOUT, mode: 'fallback' }, site('firefly.social', 9)), { ok: true, dismissed: false });
  tabModes.set(3, 'fallback');
  assert.equal((await ask({ type: POPUP_LAYOUT_STATE, tabId: 3 }, popup)).dismissed, true);
  assert.deepEqual(await ask({ type: POPUP_LAYOUT_RESTORE, site: 'nope' }, popup), { ok: false, error: 'unknown site' });
  assert.deepEqual(await ask({ type: POPUP_LAYOUT_RESTORE, site: 'orb' }, popup), { ok: true });
  assert.deepEqual(local.get('fallbackDismissed'), {});
});

test('senders are checked: no page, frame, other site or other extension page may report, dismiss or read', async () => {
  const bad = [
    site('evil.example', 1), site('hey.xyz', 1, { frameId: 2 }), site('hey.xyz', 1, { id: 'someone-else' }),
    site('hey.xyz', 1, { origin: 'http://hey.xyz', url: 'http://hey.xyz/u/bob' }), { id: ID, url: `chrome-extension://${ID}/widget/widget.html` },
  ];
  for (const sender of bad) {
    assert.equal(ask({ type: CONTENT_LAYOUT, mode: 'fallback' }, sender), null);
    assert.equal(ask({ type: CONTENT_FALLBACK_DISMISS }, sender), null);
    assert.equal(ask({ type: POPUP_LAYOUT_STATE, tabId: 1 }, sender), null);
    assert.equal(ask({ type: POPUP_LAYOUT_RESTORE, site: 'lens' }, sender), null);
  }
  assert.equal(ask({ type: POPUP_LAYOUT_STATE, tabId: 1 }, site('hey.xyz', 1)), null, 'a content script cannot read tab state');
  assert.deepEqual(await ask({ type: CONTENT_LAYOUT, mode: 'hidden' }, site('hey.xyz', 1)), { ok: false, error: 'bad layout report' });
  assert.deepEqual(await ask({ type: POPUP_LAYOUT_STATE, tabId: '1' }, popup), { ok: false, error: 'bad tab id' });
  assert.equal(ask({ type: 'parley/popup/get-state' }, popup), null, 'other messages are not ours');
  assert.equal(local.size + session.size, 0);
});
