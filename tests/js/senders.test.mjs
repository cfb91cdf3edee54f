// Sender checks (extension/background/senders.js; DESIGN.md "Extension": every message checked for
// its sender), and the two listeners that rely on them: handlers.onMessage and widgets.onConnect.
// chrome.runtime is a fake with the extension's id and getURL.
import { test } from 'node:test';
import assert from 'node:assert/strict';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const OTHER_ID = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const BASE = `chrome-extension://${ID}/`;

const session = new Map();
globalThis.chrome = {
  runtime: { id: ID, getURL: (path) => `${BASE}${path}` },
  storage: {
    session: {
      async get(keys) {
        const list = Array.isArray(keys) ? keys : [keys];
        return Object.fromEntries(list.filter((k) => session.has(k)).map((k) => [k, structuredClone(session.get(k))]));
      },
      async set(obj) { for (const [k, v] of Object.entries(obj)) session.set(k, structuredClone(v)); },
    },
    local: {
      async get() { return {}; },
      async set() {},
      async remove() {},
    },
  },
};

const { SITE_HOSTS, isExtensionPage, isSiteContentScript } = await import('../../extension/background/senders.js');
const { onMessage } = await import('../../extension/background/handlers.js');
const { onConnect } = await import('../../extension/background/widgets.js');
const { CONTENT_OPEN_WIDGET, POPUP_GET_STATE, WIDGET_PORT } = await import('../../extension/common/messages.js');

const POPUP = `${BASE}popup/popup.html`;
const WIDGET = `${BASE}widget/widget.html`;
const page = (url, over = {}) => ({ id: ID, url, ...over });
const site = (url, over = {}) => ({ id: ID, url, origin: new URL(url).origin, tab: { id: 5 }, frameId: 0, ...over });

test('extension pages: exactly our page at that path, with or without a query or fragment', () => {
  assert.equal(isExtensionPage(page(POPUP), 'popup/popup.html'), true);
  assert.equal(isExtensionPage(page(`${POPUP}?x=1`), 'popup/popup.html'), true);
  assert.equal(isExtensionPage(page(`${POPUP}#top`), 'popup/popup.html'), true);
  assert.equal(isExtensionPage(page(`${WIDGET}?peer=lens%3Abob`), 'widget/widget.html'), true);
});

test('extension pages: another extension, another page of ours, prefix tricks and missing fields are refused', () => {
  const cases = [
    [{ id: OTHER_ID, url: POPUP }, 'another extension (its id)'],
    [{ id: OTHER_ID, url: `chrome-extension://${OTHER_ID}/popup/popup.html` }, 'another extension (its page)'],
    [page(WIDGET), 'our widget page is not the popup'],
    [page(`${BASE}options/options.html`), 'another page of ours'],
    [page(`${POPUP}.evil`), 'a path that only starts with the page'],
    [page(`${POPUP}.evil?x`), 'prefix plus query'],
    [page(`${POPUP}x#`), 'prefix plus fragment'],
    [page(`${BASE}popup/popup.htm`), 'a shorter path'],
    [page(`${BASE}popup/popup.html/../widget/widget.html`), 'dot segments after the page'],
    [page(`https://hey.xyz/popup/popup.html`), 'a site page'],
    [page(`https://hey.xyz/?${POPUP}`), 'the page URL inside a query'],
    [{ id: ID }, 'no url'],
    [{ id: ID, url: 42 }, 'a url that is not a string'],
    [{ url: POPUP }, 'no id'],
    [null, 'no sender'],
    [undefined, 'undefined sender'],
  ];
  for (const [sender, why] of cases) assert.equal(isExtensionPage(sender, 'popup/popup.html'), false, why);
});

test('content scripts: the top frame of a tab on each of the sites, by origin or by url', () => {
  for (const host of SITE_HOSTS) {
    assert.equal(isSiteContentScript(site(`https://${host}/u/alice`)), true, host);
    assert.equal(isSiteContentScript(site(`https://${host}/u/alice`, { origin: undefined })), true, `${host} by url`);
  }
  assert.deepEqual([...SITE_HOSTS].sort(), ['firefly.social', 'hey.xyz', 'orb.ac', 'orb.club']);
});

test('content scripts: other extensions, frames, schemes, hosts and malformed senders are refused', () => {
  const cases = [
    [site('https://hey.xyz/u/alice', { id: OTHER_ID }), 'another extension'],
    [site('https://hey.xyz/u/alice', { id: undefined }), 'no id (a web page)'],
    [site('https://hey.xyz/u/alice', { frameId: 3 }), 'a subframe'],
    [site('https://hey.xyz/u/alice', { frameId: undefined }), 'no frame id'],
    [site('https://hey.xyz/u/alice', { frameId: '0' }), 'frame id as a string'],
    [site('https://hey.xyz/u/alice', { tab: undefined }), 'not in a tab'],
    [site('https://hey.xyz/u/alice', { tab: null }), 'tab null'],
    [site('http://hey.xyz/u/alice'), 'http instead of https'],
    [site('https://hey.xyz.evil.com/u/alice'), 'a site host as a subdomain of another'],
    [site('https://evilhey.xyz/u/alice'), 'a look-alike host'],
    [site('https://www.hey.xyz/u/alice'), 'a subdomain of a site'],
    [site('https://example.com/u/alice'), 'another host'],
    [site('https://orb.club.evil.com/'), 'orb look-alike'],
    [site('https://hey.xyz.evil.com/', { origin: undefined }), 'a look-alike host by url'],
    [site('https://evil.com/', { origin: 'https://evil.com', url: 'https://hey.xyz/u/alice' }), 'the origin wins over the url'],
    [{ ...site('https://hey.xyz/'), origin: 'not a url', url: 'https://hey.xyz/' }, 'a bad origin'],
    [{ ...site('https://hey.xyz/'), origin: undefined, url: 'hey.xyz' }, 'a bad url'],
    [{ ...site('https://hey.xyz/'), origin: undefined, url: undefined }, 'no url at all'],
    [site(`${BASE}popup/popup.html`), 'an extension page is not a content script'],
    [null, 'no sender'],
  ];
  for (const [sender, why] of cases) assert.equal(isSiteContentScript(sender), false, why);
});

// --- the listeners -----------------------------------------------------------------------------------

function ask(msg, sender) {
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  const async = onMessage(msg, sender, answered);
  return { async, answer };
}

test('handlers: a popup message is answered only for the popup page', async () => {
  const ok = ask({ type: POPUP_GET_STATE }, page(POPUP));
  assert.equal(ok.async, true);
  const state = await ok.answer;
  assert.equal(typeof state.status, 'string');
  assert.equal(state.bridgeUrl, 'http://127.0.0.1:8737');
  for (const sender of [page(WIDGET), page(`${POPUP}.evil`), { id: OTHER_ID, url: POPUP },
    site('https://hey.xyz/u/alice'), null]) {
    let called = false;
    assert.equal(onMessage({ type: POPUP_GET_STATE }, sender, () => { called = true; }), false, JSON.stringify(sender));
    assert.equal(called, false);
  }
});

test('handlers: a widget nonce is minted only for a site content script in a top frame', async () => {
  const ok = ask({ type: CONTENT_OPEN_WIDGET, peer: 'lens:bob' }, site('https://hey.xyz/u/bob'));
  assert.equal(ok.async, true);
  assert.match((await ok.answer).nonce, /^[0-9a-f]{32}$/);
  for (const sender of [site('https://hey.xyz/u/bob', { frameId: 2 }), site('https://evilhey.xyz/u/bob'),
    site('http://hey.xyz/u/bob'), site('https://hey.xyz/u/bob', { tab: undefined }), page(WIDGET)]) {
    assert.equal(onMessage({ type: CONTENT_OPEN_WIDGET, peer: 'lens:bob' }, sender, () => {}), false, JSON.stringify(sender));
  }
  // The popup page is trusted, but not with content messages: it gets no nonce.
  const fromPopup = ask({ type: CONTENT_OPEN_WIDGET, peer: 'lens:bob' }, page(POPUP));
  assert.deepEqual(await fromPopup.answer, { ok: false, error: 'unknown message' });
});

test('handlers: malformed messages are ignored', () => {
  for (const msg of [null, 'x', 42, {}, { type: 7 }]) assert.equal(onMessage(msg, page(POPUP), () => {}), false);
});

function fakePort(sender, name = WIDGET_PORT) {
  const port = {
    name, sender, disconnected: false, listeners: 0,
    disconnect() { port.disconnected = true; },
    postMessage() {},
    onDisconnect: { addListener() { port.listeners += 1; } },
    onMessage: { addListener() { port.listeners += 1; } },
  };
  return port;
}

test('widgets: a port is kept only from our widget page with the widget port name', () => {
  const good = fakePort(page(`${WIDGET}?peer=lens%3Abob`, { tab: { id: 5 }, frameId: 3 }));
  onConnect(good);
  assert.equal(good.disconnected, false);
  assert.equal(good.listeners, 2);
  for (const port of [fakePort(page(`${WIDGET}?peer=lens%3Abob`), 'other-port'), fakePort(page(POPUP)),
    fakePort({ id: OTHER_ID, url: `${WIDGET}?peer=lens%3Abob` }), fakePort(page(`${WIDGET}.evil?peer=lens%3Abob`)),
    fakePort(site('https://hey.xyz/u/bob')), fakePort(undefined)]) {
    onConnect(port);
    assert.equal(port.disconnected, true, JSON.stringify(port.sender));
    assert.equal(port.listeners, 0);
  }
});
