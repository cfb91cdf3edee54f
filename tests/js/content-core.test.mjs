// The content script's core (extension/content/core: button, widget container, navigation; placement
// and the floating button are in placement.test.mjs)
// in a jsdom page on hey.xyz, with a fake chrome.runtime. The sources are imported, not the bundle.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { JSDOM } from 'jsdom';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const dom = new JSDOM('<!doctype html><html><body><main><div id="row"><span id="name">bob</span></div></main></body></html>', { url: 'https://hey.xyz/u/bob' });
const { window } = dom;
globalThis.window = window;
globalThis.document = window.document;
globalThis.location = window.location;
globalThis.MutationObserver = window.MutationObserver;
globalThis.addEventListener = window.addEventListener.bind(window);

const sent = [];
let reply = async () => ({ state: 'ready', reason: null });
globalThis.chrome = {
  runtime: {
    id: ID,
    getURL: (path) => `chrome-extension://${ID}/${path}`,
    sendMessage: async (msg) => { sent.push(msg); return reply(msg); },
  },
};

const { BUTTON_SELECTOR, mountButton, removeButtons, setButtonState } = await import('../../extension/content/core/button.js');
const { closeWidget, openWidget, widgetUrl } = await import('../../extension/content/core/widget.js');
const { watchUrl } = await import('../../extension/content/core/navigation.js');
const { CONTENT_LOOKUP_PEER, CONTENT_OPEN_WIDGET, WIDGET_NONCE } = await import('../../extension/common/messages.js');

const settle = async () => { for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setImmediate(resolve)); };
const row = () => document.getElementById('row');
const buttons = () => [...document.querySelectorAll(BUTTON_SELECTOR)];

beforeEach(() => {
  sent.length = 0;
  reply = async () => ({ state: 'ready', reason: null });
  removeButtons();
  closeWidget();
});

test('button states: text and title, with the bridge detail as text only', () => {
  const b = document.createElement('button');
  setButtonState(b, 'ready');
  assert.deepEqual([b.textContent, b.title, b.dataset.parleyState, b.dataset.parleyReason], ['Message', 'Send a private message with Parley', 'ready', '']);
  setButtonState(b, 'loading');
  assert.deepEqual([b.textContent, b.title], ['Message', 'Checking Parley…']);
  setButtonState(b, 'unresolved', 'timeout', '<img src=x onerror=alert(1)>'.padEnd(300, 'z'));
  assert.equal(b.textContent, 'Couldn’t resolve');
  assert.equal(b.title, `Parley couldn’t resolve this account: ${'<img src=x onerror=alert(1)>'.padEnd(200, 'z')}`);
  assert.equal(b.children.length, 0);
  assert.equal(b.dataset.parleyReason, 'timeout');
  setButtonState(b, 'unresolved', 'x');
  assert.equal(b.title, 'Parley couldn’t resolve this account');
  setButtonState(b, 'unavailable', 'not-paired');
  assert.deepEqual([b.textContent, b.title], ['Pair Parley', 'Pair this browser with your Parley bridge (open the Parley popup).']);
  // Issue 11: a paired browser whose bridge is stopped is not asked to pair again.
  setButtonState(b, 'unavailable', 'unreachable');
  assert.equal(b.textContent, 'Parley bridge not running');
  assert.match(b.title, /is paired, but the Parley bridge is not running or not reachable/);
  setButtonState(b, 'unavailable', 'not-verified');
  assert.equal(b.textContent, 'Parley bridge not verified');
  setButtonState(b, 'unavailable', 'not-on-parley');
  assert.equal(b.textContent, 'Not on Parley yet');
  setButtonState(b, 'unavailable', 'something-new');
  assert.equal(b.textContent, 'Not on Parley yet');
});

test('mount: one button per page, with its hooks, that asks the worker about the peer', async () => {
  const b = mountButton('lens:bob', row(), document.getElementById('name'));
  assert.equal(b.tagName, 'BUTTON');
  assert.equal(b.type, 'button');
  assert.equal(b.dataset.parley, 'dm-button');
  assert.equal(b.dataset.parleyPeer, 'lens:bob');
  assert.equal(b.getAttribute('aria-label'), 'Message on Parley');
  assert.equal(b.dataset.parleyState, 'loading');
  assert.equal(b.nextSibling, document.getElementById('name'), 'placed before the anchor');
  assert.equal(b.style.getPropertyValue('background'), 'rgb(88, 70, 220)');
  assert.equal(mountButton('lens:bob', row(), null), b, 'mounting again keeps the same button');
  await settle();
  assert.equal(b.dataset.parleyState, 'ready');
  assert.deepEqual(sent, [{ type: CONTENT_LOOKUP_PEER, peer: 'lens:bob' }], 'one lookup, cached');
  const c = mountButton('lens:carol', document.querySelector('main'), document.getElementById('name'));
  assert.deepEqual(buttons(), [c], 'a button for another peer replaces it');
  assert.equal(c.parentElement, document.querySelector('main'));
  assert.equal(document.querySelector('main').lastElementChild, c, 'an anchor elsewhere is ignored: appended');
  removeButtons('lens:carol');
  assert.deepEqual(buttons(), [c]);
  removeButtons('lens:bob');
  assert.deepEqual(buttons(), []);
});

test('mount: an aborted view mounts nothing; failed and odd answers become "couldn’t resolve"', async () => {
  const ctl = new AbortController();
  ctl.abort();
  assert.equal(mountButton('lens:dan', row(), null, { signal: ctl.signal }), null);
  reply = async () => { throw new Error('no worker'); };
  const b = mountButton('lens:erin', row(), null);
  await settle();
  assert.deepEqual([b.dataset.parleyState, b.dataset.parleyReason, b.title], ['unresolved', 'error', 'Parley couldn’t resolve this account: Parley did not answer']);
  removeButtons();
  reply = async () => ({ state: 'hacked' });
  const c = mountButton('lens:fay', row(), null);
  await settle();
  assert.equal(c.title, 'Parley couldn’t resolve this account: no answer from Parley');
  removeButtons();
  reply = async () => ({ state: 'unavailable', reason: 'not-on-parley' });
  mountButton('lens:fay', row(), null);
  await settle();
  assert.equal(sent.filter((m) => m.peer === 'lens:fay').length, 2, 'an answer that is not "ready" is not cached');
  removeButtons();
  reply = async () => new Promise(() => {});
  const gone = mountButton('lens:gil', row(), null);
  gone.remove();
  await settle();
  assert.equal(gone.dataset.parleyState, 'loading');
});

test('the button opens the widget: one container, an iframe on the widget page for that peer', async () => {
  reply = async (msg) => (msg.type === CONTENT_OPEN_WIDGET ? { nonce: 'n'.repeat(32) } : { state: 'ready', reason: null });
  const b = mountButton('lens:bob', row(), null);
  let propagated = false;
  document.body.addEventListener('click', () => { propagated = true; }, { once: true });
  b.click();
  assert.equal(propagated, false, 'the click stays with the button');
  const frame = document.querySelector('iframe[data-parley="widget"]');
  assert.equal(frame.src, `chrome-extension://${ID}/widget/widget.html?peer=lens%3Abob`);
  assert.equal(frame.dataset.parleyPeer, 'lens:bob');
  assert.equal(frame.referrerPolicy, 'no-referrer');
  assert.equal(frame.allow, 'clipboard-write');
  const container = document.querySelector('[data-parley="widget-container"]');
  assert.equal(container.style.getPropertyPriority('position'), 'important');
  assert.equal(container.style.getPropertyValue('position'), 'fixed');
  assert.equal(openWidget('lens:bob'), frame, 'the same peer keeps its frame');
  const other = openWidget('0xabc');
  assert.notEqual(other, frame);
  assert.equal(document.querySelectorAll('[data-parley="widget-container"]').length, 1);
  assert.equal(widgetUrl('a b&c'), `chrome-extension://${ID}/widget/widget.html?peer=a%20b%26c`);
  document.querySelector('[data-parley="widget-close"]').click();
  assert.equal(document.querySelector('[data-parley="widget-container"]'), null);
});

test('the widget frame gets its nonce for the extension origin only, after it loaded', async () => {
  reply = async () => ({ nonce: 'n'.repeat(32) });
  const frame = openWidget('lens:bob');
  const posts = [];
  Object.defineProperty(frame, 'contentWindow', { value: { postMessage: (...args) => posts.push(args) } });
  frame.dispatchEvent(new window.Event('load'));
  await settle();
  assert.deepEqual(sent, [{ type: CONTENT_OPEN_WIDGET, peer: 'lens:bob' }]);
  assert.deepEqual(posts, [[{ type: WIDGET_NONCE, nonce: 'n'.repeat(32) }, `chrome-extension://${ID}`]]);
  for (const answer of [async () => ({}), async () => { throw new Error('x'); }]) {
    reply = answer;
    frame.dispatchEvent(new window.Event('load'));
    await settle();
  }
  reply = async () => ({ nonce: 'm'.repeat(32) });
  closeWidget();
  frame.dispatchEvent(new window.Event('load'));
  await settle();
  assert.equal(posts.length, 1, 'no nonce without one, or to a frame no longer in the page');
});

test('watchUrl: now, then on each change of href only, until aborted', async (t) => {
  t.mock.method(console, 'debug', () => {});
  const seen = [];
  const ctl = new window.AbortController(); // the window's listeners take the window's AbortSignal
  watchUrl((href) => { seen.push(href); if (href.endsWith('#boom')) throw new Error('handler failed'); }, { signal: ctl.signal });
  assert.deepEqual(seen, ['https://hey.xyz/u/bob']);
  window.history.pushState({}, '', '/u/carol');
  document.body.append(document.createElement('i'));
  await settle();
  window.dispatchEvent(new window.PopStateEvent('popstate'));
  assert.deepEqual(seen, ['https://hey.xyz/u/bob', 'https://hey.xyz/u/carol']);
  window.location.hash = 'boom';
  window.dispatchEvent(new window.HashChangeEvent('hashchange'));
  assert.equal(seen.at(-1), 'https://hey.xyz/u/carol#boom');
  window.history.pushState({}, '', '/u/dan');
  ctl.abort();
  window.dispatchEvent(new window.PopStateEvent('popstate'));
  document.body.append(document.createElement('i'));
  await settle();
  assert.equal(seen.at(-1), 'https://hey.xyz/u/carol#boom');
  const nav = new window.EventTarget();
  globalThis.navigation = nav;
  const more = [];
  const ctl2 = new window.AbortController();
  watchUrl((href) => more.push(href), { signal: ctl2.signal });
  window.history.pushState({}, '', '/u/erin');
  nav.dispatchEvent(new window.Event('currententrychange'));
  assert.deepEqual(more, ['https://hey.xyz/u/dan', 'https://hey.xyz/u/erin']);
  ctl2.abort();
  delete globalThis.navigation;
});
