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
