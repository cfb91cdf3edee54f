// Which widget frames may come alive (issue 8 item 6; extension/background/grants.js), with
// chrome.storage.session replaced by an in-memory fake.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

const store = new Map();
globalThis.chrome = {
  storage: {
    session: {
      async get(keys) {
        return Object.fromEntries(keys.filter((k) => store.has(k)).map((k) => [k, structuredClone(store.get(k))]));
      },
      async set(obj) {
        for (const [k, v] of Object.entries(obj)) store.set(k, structuredClone(v));
      },
    },
  },
};

const { admit, forgetTab, mintNonce, peerOfWidgetUrl } = await import('../../extension/background/grants.js');

const URL_BOB = 'chrome-extension://cjhgnfckfielldaiipkgieemaigbpmoe/widget/widget.html?peer=lens%3Abob';
const sender = (over = {}) => ({ tab: { id: 7 }, frameId: 3, url: URL_BOB, ...over });

beforeEach(() => store.clear());

test('the widget our content script opened is admitted once with its nonce, then by its grant', async () => {
  const nonce = await mintNonce(7, 'lens:bob');
  assert.match(nonce, /^[0-9a-f]{32}$/);
  assert.equal(await admit(sender(), nonce), 'lens:bob');
  assert.equal(await admit(sender(), nonce), null, 'a nonce works once');
  assert.equal(await admit(sender(), null), 'lens:bob', 'the same frame re-attaches after a worker restart');
  assert.equal(await admit(sender({ frameId: 4 }), null), null, 'another frame of the tab has no grant');
  await forgetTab(7);
  assert.equal(await admit(sender(), null), null, 'a closed tab forgets its grants');
});

test('a frame the page made itself is refused: no nonce, a guessed nonce, or one for another tab or peer', async () => {
  assert.equal(await admit(sender(), null), null);
  assert.equal(await admit(sender(), 'f'.repeat(32)), null);
  const other = await mintNonce(8, 'lens:bob');
  assert.equal(await admit(sender(), other), null, 'minted for another tab');
  const forAlice = await mintNonce(7, 'lens:alice');
  assert.equal(await admit(sender(), forAlice), null, 'minted for another peer');
  assert.equal(await admit(sender({ url: URL_BOB.replace('lens%3Abob', 'lens%3Aalice') }), forAlice), null, 'a refused nonce is used up');
  const fresh = await mintNonce(7, 'lens:alice');
  assert.equal(await admit(sender({ url: URL_BOB.replace('lens%3Abob', 'lens%3Aalice') }), fresh), 'lens:alice');
  const top = await mintNonce(7, 'lens:bob');
  assert.equal(await admit(sender({ frameId: 0 }), top), null, 'never the top frame');
  assert.equal(await admit(sender({ tab: undefined }), await mintNonce(7, 'lens:bob')), null, 'not outside a tab');
});

test('nonces expire and are bounded', async (t) => {
  const nonce = await mintNonce(7, 'lens:bob');
  const realNow = Date.now;
  t.mock.method(Date, 'now', () => realNow() + 31000);
  assert.equal(await admit(sender(), nonce), null, 'expired after 30 s');
  t.mock.restoreAll();
  const many = [];
  for (let i = 0; i < 25; i += 1) many.push(await mintNonce(7, 'lens:bob'));
  assert.equal(Object.keys(store.get('widgetNonces')).length, 20);
  assert.equal(await admit(sender(), many[0]), null, 'the oldest were dropped');
  assert.equal(await admit(sender(), many[24]), 'lens:bob');
});

test('mint refuses what is not a peer; the widget URL names its peer', async () => {
  assert.equal(await mintNonce(7, '<script>'), null);
  assert.equal(await mintNonce('7', 'lens:bob'), null);
  assert.equal(peerOfWidgetUrl(URL_BOB), 'lens:bob');
  assert.equal(peerOfWidgetUrl('chrome-extension://x/widget/widget.html?peer=%3Cb%3E'), null);
  assert.equal(peerOfWidgetUrl('not a url'), null);
});

test('admit needs a tab id, an integer frame id and a widget URL naming a peer', async () => {
  const nonce = await mintNonce(7, 'lens:bob');
  for (const bad of [sender({ tab: { id: '7' } }), sender({ frameId: undefined }), sender({ frameId: 1.5 }),
    sender({ url: 'chrome-extension://x/widget/widget.html' }), sender({ url: undefined }), undefined, null]) {
    assert.equal(await admit(bad, nonce), null, JSON.stringify(bad));
  }
  assert.equal(await admit(sender(), nonce), 'lens:bob', 'the refusals above did not use the nonce up');
  assert.equal(await admit(sender(), 42), null, 'a nonce that is not a string');
  assert.equal(await admit(sender(), 'toString'), null, 'nor a name every object has');
});

test('a grant is for its tab, frame and peer only; re-granting does not duplicate; closing a tab forgets only that tab', async () => {
  assert.equal(await admit(sender(), await mintNonce(7, 'lens:bob')), 'lens:bob');
  assert.equal(await admit(sender(), await mintNonce(7, 'lens:bob')), 'lens:bob');
  assert.equal(store.get('widgetGrants').length, 1);
  assert.equal(await admit(sender({ tab: { id: 9 } }), await mintNonce(9, 'lens:bob')), 'lens:bob');
  for (const other of [sender({ tab: { id: 8 } }), sender({ frameId: 5 }), sender({ url: URL_BOB.replace('lens%3Abob', 'lens%3Aalice') })]) {
    assert.equal(await admit(other, null), null, JSON.stringify(other));
  }
  await forgetTab(7);
  assert.equal(await admit(sender(), null), null);
  assert.equal(await admit(sender({ tab: { id: 9 } }), null), 'lens:bob', 'the other tab keeps its grant');
});

test('at most 50 grants are kept, the newest', async () => {
  for (let tab = 1; tab <= 51; tab += 1) {
    assert.equal(await admit(sender({ tab: { id: tab } }), await mintNonce(tab, 'lens:bob')), 'lens:bob');
  }
  assert.equal(store.get('widgetGrants').length, 50);
  assert.equal(await admit(sender({ tab: { id: 1 } }), null), null, 'the oldest went');
  assert.equal(await admit(sender({ tab: { id: 51 } }), null), 'lens:bob');
});

test('a nonce is good until its expiry instant, not at it; expired nonces are dropped at the next mint', async (t) => {
  const start = Date.now();
  t.mock.method(Date, 'now', () => start);
  const nonce = await mintNonce(7, 'lens:bob');
  const late = await mintNonce(7, 'lens:bob');
  Date.now.mock.mockImplementation(() => start + 29999);
  assert.equal(await admit(sender(), nonce), 'lens:bob');
  Date.now.mock.mockImplementation(() => start + 30000);
  assert.equal(await admit(sender(), late), null);
  await mintNonce(7, 'lens:bob');
  assert.equal(Object.keys(store.get('widgetNonces')).length, 1, 'only the new nonce is kept');
});

test('junk in storage is treated as empty', async () => {
  store.set('widgetNonces', 'junk');
  store.set('widgetGrants', { 0: { tabId: 7, frameId: 3, peer: 'lens:bob' }, length: 1 });
  assert.equal(await admit(sender(), null), null);
  const nonce = await mintNonce(7, 'lens:bob');
  assert.deepEqual(Object.keys(store.get('widgetNonces')), [nonce]);
  store.set('widgetNonces', { [nonce]: null, other: { tabId: 7, peer: 'lens:bob', exp: Date.now() + 1000 } });
  assert.equal(await admit(sender(), nonce), null, 'an empty entry admits nothing');
  const next = await mintNonce(7, 'lens:bob');
  assert.deepEqual(Object.keys(store.get('widgetNonces')).sort(), ['other', next].sort(), 'empty entries are dropped');
});
