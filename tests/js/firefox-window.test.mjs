// Firefox has no IntersectionObserver v2, so a framed widget never acts there; it offers a window of
// the worker's own instead (extension/background/widgets.js popOut). Such a window is admitted with a
// window nonce (grants.js mintWindowNonce) only as a top-level page, never as a frame, and a frame's
// nonce never admits a top-level page. chrome.storage.session and chrome.windows are fakes.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

const store = new Map();
const windows = [];
globalThis.chrome = {
  runtime: { id: 'parley@parley.invalid', getURL: (path) => `moz-extension://0b7c9f3e-5a41-4d2b-9c8e-2f6a1d3b4c5e/${path}` },
  windows: { create: async (opts) => { windows.push(opts); return { id: 1, tabs: [{ id: 99 }] }; } },
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

const { admit, mintNonce, mintWindowNonce } = await import('../../extension/background/grants.js');

const URL_BOB = 'moz-extension://0b7c9f3e-5a41-4d2b-9c8e-2f6a1d3b4c5e/widget/widget.html?peer=lens%3Abob';
const sender = (over = {}) => ({ tab: { id: 99 }, frameId: 0, url: URL_BOB, ...over });

beforeEach(() => { store.clear(); windows.length = 0; });

test('a window nonce admits a top-level widget page once, for its peer, then its grant does', async () => {
  const nonce = await mintWindowNonce('lens:bob');
  assert.match(nonce, /^[0-9a-f]{32}$/);
  assert.equal(await admit(sender(), nonce), 'lens:bob');
  assert.equal(await admit(sender(), nonce), null, 'single use');
  assert.equal(await admit(sender(), null), 'lens:bob', 'the grant lets the same window re-attach');
  assert.equal(await admit(sender({ tab: { id: 100 } }), null), null);
});

test('a window nonce never admits a frame, another peer, or after it expired; a frame nonce never a top-level page', async () => {
  assert.equal(await admit(sender({ frameId: 2, tab: { id: 7 } }), await mintWindowNonce('lens:bob')), null, 'a frame (a page could frame it)');
  assert.equal(await admit(sender({ url: URL_BOB.replace('bob', 'carol') }), await mintWindowNonce('lens:bob')), null, 'another peer');
  assert.equal(await admit(sender({ tab: { id: 7 } }), await mintNonce(7, 'lens:bob')), null, 'a frame nonce at top level');
  assert.equal(await mintWindowNonce('not a peer'), null);
  const nonce = await mintWindowNonce('lens:bob');
  const saved = Date.now;
  Date.now = () => saved() + 31_000;
  try {
    assert.equal(await admit(sender(), nonce), null, 'expired after 30 s');
  } finally {
    Date.now = saved;
  }
});

test('popOut opens our widget page for the granted peer in a popup window, the nonce in the fragment', async () => {
  const { popOut } = await import('../../extension/background/widgets.js');
  await popOut('lens:bob');
  assert.equal(windows.length, 1);
  assert.equal(windows[0].type, 'popup');
  const url = new URL(windows[0].url);
  assert.equal(url.href.split(/[?#]/)[0], 'moz-extension://0b7c9f3e-5a41-4d2b-9c8e-2f6a1d3b4c5e/widget/widget.html');
  assert.equal(url.searchParams.get('peer'), 'lens:bob');
  const nonce = /^#w=([0-9a-f]{32})$/.exec(url.hash)[1];
  assert.equal(await admit(sender(), nonce), 'lens:bob');
});
