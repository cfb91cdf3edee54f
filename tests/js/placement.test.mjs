// Placement of the DM button (issue 11): the action row is the nearest common ancestor of a
// follow-like and a menu-like button within a few wrappers (core/placement.js, sites/*/selectors.js),
// and a profile with no recognised row gets the floating button after a delay (core/place.js,
// core/fallback.js). jsdom with a fake chrome.runtime; the e2e suite runs the same on real Chromium.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { JSDOM } from 'jsdom';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'https://hey.xyz/u/bob' });
const { window } = dom;
globalThis.window = window;
globalThis.document = window.document;
globalThis.location = window.location;
globalThis.MutationObserver = window.MutationObserver;

const sent = [];
let dismissedReply = false;
globalThis.chrome = {
  runtime: {
    id: ID,
    getURL: (path) => `chrome-extension://${ID}/${path}`,
    sendMessage: async (msg) => {
      sent.push(msg);
      if (msg.type === CONTENT_LAYOUT) return { ok: true, dismissed: dismissedReply };
      return { state: 'ready', reason: null };
    },
    onMessage: { addListener: () => {} },
  },
};

const { CONTENT_FALLBACK_DISMISS, CONTENT_LAYOUT } = await import('../../extension/common/messages.js');
const { MAX_WRAPPERS, accessibleName, byName, findActionRow } = await import('../../extension/content/core/placement.js');
const { FALLBACK_DELAY_MS, FALLBACK_SELECTOR } = await import('../../extension/content/core/fallback.js');
const { SEARCH_INTERVAL_MS, clearPlacement, currentLayout, placeButton, resetPlacementState } = await import('../../extension/content/core/place.js');
const lens = await import('../../extension/content/sites/lens/selectors.js');
const orb = await import('../../extension/content/sites/orb/selectors.js');
const firefly = await import('../../extension/content/sites/firefly/selectors.js');

const settle = async () => { for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setImmediate(resolve)); };
const body = document.body;
const BUTTON = '[data-parley="dm-button"]';

/** Build DOM from a nested array spec: [tag, attrs, ...children] or a string (text). */
function el(spec) {
  if (typeof spec === 'string') return document.createTextNode(spec);
  const [tag, attrs = {}, ...children] = spec;
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(el(c));
  return node;
}
function page(...specs) {
  body.replaceChildren(...specs.map(el));
}
const wrap = (n, inner) => (n === 0 ? inner : ['div', { class: `w${n}` }, wrap(n - 1, inner)]);
const follow = (label = 'Follow') => ['button', { 'aria-label': label, id: 'follow' }, label];
/** A view's AbortController, aborted after the test even when it fails (a live view of a failed
 * test would fight the next test's view over the one DM button). */
const view = (t) => { const ctl = new AbortController(); t.after(() => ctl.abort()); return ctl; };
const more = (label = 'More') => ['button', { 'aria-label': label, id: 'more' }, '⋯'];

beforeEach((t) => {
  t.mock.method(console, 'debug', () => {}); // the "no row recognised" report (asserted where it matters)
  sent.length = 0;
  dismissedReply = false;
  resetPlacementState();
  body.replaceChildren();
});

test('accessible names: aria-label first, else the text, whitespace folded; byName ignores case', () => {
  page(['button', { id: 'a', 'aria-label': 'Follow' }, 'x'], ['button', { id: 'b' }, ['svg'], ['div', {}, '  Edit\n Account ']]);
  assert.equal(accessibleName(document.getElementById('a')), 'Follow');
  assert.equal(accessibleName(document.getElementById('b')), 'Edit Account');
  assert.equal(byName(['edit account'])(document.getElementById('b')), true);
  assert.equal(byName(['Follow'])(document.getElementById('b')), false);
});

test('the row: direct children (the old replicas) and Hey’s real wrappers (heyxyz/hey, March 2025)', () => {
  page(['div', { id: 'row' }, follow(), more()]);
  let found = lens.findRow(document);
  assert.equal(found.row.id, 'row');
  assert.equal(found.followItem.id, 'follow');
  assert.equal(found.menuItem.id, 'more');
  // Account/Details.tsx: div.flex.items-center.space-x-2 > [div.contents > Follow, div.relative > More]
  page(['div', { class: 'space-y-5' }, ['div', { id: 'row', class: 'flex items-center space-x-2' },
    ['div', { class: 'contents', id: 'fw' }, follow()], ['div', { class: 'relative', id: 'mw' }, more()]]]);
  found = lens.findRow(document);
  assert.equal(found.row.id, 'row');
  assert.equal(found.followItem.id, 'fw');
  assert.equal(found.menuItem.id, 'mw');
  // Your own page: a bare "Edit Account" button (an icon and a <div> of text, no aria-label).
  page(['div', { id: 'row' }, ['button', {}, ['svg'], ['div', {}, 'Edit Account']], ['div', { class: 'relative' }, more()]]);
  assert.equal(lens.findRow(document).row.id, 'row');
});

test('the row: up to MAX_WRAPPERS wrappers on each side, not more; both buttons are needed', () => {
  assert.equal(MAX_WRAPPERS, 4);
  for (const [f, m, ok] of [[4, 4, true], [4, 0, true], [0, 4, true], [5, 0, false], [0, 5, false], [5, 5, false]]) {
    page(['section', {}, ['div', { id: 'row' }, wrap(f, follow()), wrap(m, more())]]);
    const found = lens.findRow(document);
    assert.equal(found?.row.id ?? null, ok ? 'row' : null, `follow wrapped ${f}, more wrapped ${m}`);
  }
  page(['div', { id: 'row' }, follow(), ['button', {}, 'Share']]);
  assert.equal(lens.findRow(document), null, 'no menu: no row');
  page(['div', { id: 'row' }, ['button', {}, 'Subscribe'], more()]);
  assert.equal(lens.findRow(document), null, 'no follow-like button: no row');
});

test('the row: the first follow-like button with a partner wins, with its closest menu; ours never count', () => {
  page(['div', { id: 'header' }, ['div', { id: 'row' }, ['div', {}, follow()], ['div', {}, more()]], ['div', {}, ['button', { 'aria-label': 'More' }, 'post menu']]],
    ['aside', {}, ['div', { id: 'side' }, ['button', {}, 'Follow'], ['button', { 'aria-label': 'More' }, '⋯']]]);
  assert.equal(lens.findRow(document).row.id, 'row');
  page(['div', { id: 'row' }, ['button', { 'data-parley': 'dm-button', 'aria-label': 'Follow' }, 'Follow'], more()]);
  assert.equal(lens.findRow(document), null);
});

test('Orb: no <main> needed; Share or an ARIA menu button is the partner', () => {
  page(['div', { id: 'app' }, ['section', {}, ['h1', {}, 'Alice'], ['div', { id: 'row' }, ['span', {}, ['button', {}, 'Follow']], ['button', { 'aria-label': 'Share' }, '↗']]]]);
  assert.equal(orb.findRow(document).row.id, 'row');
  page(['div', { id: 'row' }, ['button', {}, 'Edit Profile'], ['button', { 'aria-haspopup': 'menu' }, '…']]);
  assert.equal(orb.findRow(document).row.id, 'row');
});

test('Firefly: Profile/Info.tsx’s shape (address, then div.ml-auto with Follow and a headlessui menu)', () => {
  page(['div', { class: 'flex w-full items-center gap-2' }, ['address', {}, 'Alice'],
    ['div', { id: 'row', class: 'ml-auto flex items-center gap-2' }, ['button', {}, 'Follow Back'], ['div', { class: 'relative' }, more()]]]);
  const found = firefly.findRow(document);
  assert.equal(found.row.id, 'row');
  assert.equal(found.followItem.textContent, 'Follow Back');
});

test('placeButton: a row present now gets the button after the follow wrapper; the worker hears "placed"', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['div', { id: 'row' }, ['div', { class: 'contents', id: 'fw' }, follow()], ['div', { class: 'relative', id: 'mw' }, more()]]);
  const ctl = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: ctl.signal });
  const b = document.querySelector(BUTTON);
  assert.equal(b.parentElement.id, 'row');
  assert.equal(b.previousElementSibling.id, 'fw');
  assert.equal(b.nextElementSibling.id, 'mw');
  t.mock.timers.tick(FALLBACK_DELAY_MS * 2);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'no floating button once placed');
  assert.deepEqual(sent.filter((m) => m.type === CONTENT_LAYOUT), [{ type: CONTENT_LAYOUT, mode: 'placed' }]);
  assert.equal(currentLayout(), 'placed');
  ctl.abort();
});

test('placeButton: no row within the delay → the floating button, then a late row takes over', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['div', { id: 'header' }, ['h1', {}, 'Bob'], ['button', {}, 'Subscribe']]);
  const debug = t.mock.method(console, 'debug', () => {});
  const ctl = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: ctl.signal, site: 'lens' });
  t.mock.timers.tick(FALLBACK_DELAY_MS - 1);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'not before the delay');
  t.mock.timers.tick(1);
  await settle();
  const box = document.querySelector(FALLBACK_SELECTOR);
  assert.ok(box, 'the floating button after the delay');
  assert.equal(box.dataset.parleyPeer, 'lens:bob');
  assert.equal(box.style.getPropertyValue('position'), 'fixed');
  assert.equal(box.querySelector(BUTTON).dataset.parleyPeer, 'lens:bob');
  assert.ok(box.querySelector('[data-parley="fallback-dismiss"]'));
  assert.equal(currentLayout(), 'fallback');
  assert.equal(debug.mock.callCount(), 1);
  assert.match(debug.mock.calls[0].arguments[0], /lens: no action row recognised/);
  assert.equal(box.querySelector(BUTTON).dataset.parleyState, 'ready', 'its lookup ran (cached from the last test)');
  // The SPA renders the real row later: the button moves into it, the box goes.
  document.getElementById('header').append(el(['div', { id: 'row' }, ['div', {}, follow()], ['div', {}, more()]]));
  await settle();
  t.mock.timers.tick(SEARCH_INTERVAL_MS); // (the search runs at most once per interval)
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null);
  assert.deepEqual([...document.querySelectorAll(BUTTON)].map((b) => b.parentElement.id), ['row']);
  assert.equal(currentLayout(), 'placed');
  ctl.abort();
});

test('placeButton: aborted views show nothing; a dismissed site gets no floating button; next profile is immediate', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['p', {}, 'nothing recognisable']);
  const first = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: first.signal });
  first.abort();
  t.mock.timers.tick(FALLBACK_DELAY_MS * 2);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'the aborted view’s timer was cleared');
  assert.deepEqual(sent, []);
  dismissedReply = true;
  const second = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: second.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'hidden on this site');
  assert.equal(currentLayout(), 'fallback', 'the layout is still reported as not recognised');
  second.abort();
  dismissedReply = false;
  resetPlacementState();
  const third = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: third.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS);
  await settle();
  third.abort();
  const fourth = view(t);
  placeButton({ peer: 'lens:carol' }, { findRow: lens.findRow, signal: fourth.signal });
  t.mock.timers.tick(0);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR)?.dataset.parleyPeer, 'lens:carol',
    'the page was not recognised before: the next profile gets the floating button at once');
  clearPlacement();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'a non-profile page: no floating button');
  assert.equal(document.querySelector(BUTTON), null);
  await settle();
  assert.equal(sent.filter((m) => m.type === CONTENT_LAYOUT).at(-1).mode, 'none');
  fourth.abort();
});

test('the dismiss control ignores untrusted (script-made) clicks', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['p', {}, 'nothing recognisable']);
  const ctl = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: ctl.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS);
  await settle();
  const dismiss = document.querySelector('[data-parley="fallback-dismiss"]');
  dismiss.click();
  dismiss.dispatchEvent(new window.MouseEvent('click', { bubbles: true }));
  await settle();
  assert.ok(document.querySelector(FALLBACK_SELECTOR), 'still there');
  assert.equal(sent.filter((m) => m.type === CONTENT_FALLBACK_DISMISS).length, 0);
  ctl.abort();
});

test('a row left over from the previous page does not make the site “recognised”', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['p', {}, 'nothing recognisable']);
  const first = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow: lens.findRow, signal: first.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS);
  await settle();
  assert.ok(document.querySelector(FALLBACK_SELECTOR), 'not recognised');
  first.abort();
  // SPA navigation from a feed whose "who to follow" card has Follow + More: the new view briefly
  // finds that card (the feed is not re-rendered yet) and mounts there.
  page(['div', { id: 'card' }, follow(), more()]);
  const second = view(t);
  placeButton({ peer: 'lens:carol' }, { findRow: lens.findRow, signal: second.signal });
  assert.equal(document.querySelector(BUTTON).parentElement.id, 'card');
  t.mock.timers.tick(0);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null);
  page(['h1', {}, 'Carol']); // the profile renders, with no recognisable row
  await settle();
  t.mock.timers.tick(SEARCH_INTERVAL_MS);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR)?.dataset.parleyPeer, 'lens:carol', 'floating at once, as before');
  second.abort();
  // A placement that lasts the delay does make it recognised: the next view waits the delay again.
  page(['div', { id: 'row' }, follow(), more()]);
  const third = view(t);
  placeButton({ peer: 'lens:dan' }, { findRow: lens.findRow, signal: third.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS);
  await settle();
  third.abort();
  page(['h1', {}, 'Erin']);
  const fourth = view(t);
  placeButton({ peer: 'lens:erin' }, { findRow: lens.findRow, signal: fourth.signal });
  t.mock.timers.tick(FALLBACK_DELAY_MS - 1);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR), null, 'waits the delay again');
  t.mock.timers.tick(1);
  await settle();
  assert.equal(document.querySelector(FALLBACK_SELECTOR)?.dataset.parleyPeer, 'lens:erin');
  fourth.abort();
});

test('a busy page is searched at most once per interval, and its last mutation is never missed', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  page(['div', { id: 'feed' }]);
  let searches = 0;
  const findRow = (root) => { searches += 1; return lens.findRow(root); };
  const ctl = view(t);
  placeButton({ peer: 'lens:bob' }, { findRow, signal: ctl.signal });
  assert.equal(searches, 1);
  const feed = document.getElementById('feed');
  for (let i = 0; i < 50; i += 1) {
    feed.append(el(['article', {}, ['button', { 'aria-label': 'More' }, '⋯']]));
    await settle();
  }
  assert.ok(searches <= 3, `${searches} searches for 50 mutation batches`);
  feed.append(el(['div', { id: 'row' }, follow(), more()])); // the burst's last mutation brings the row
  await settle();
  t.mock.timers.tick(SEARCH_INTERVAL_MS);
  await settle();
  assert.equal(document.querySelector(BUTTON)?.parentElement.id, 'row');
  const after = searches;
  feed.append(el(['p', {}, 'more posts']));
  await settle();
  t.mock.timers.tick(SEARCH_INTERVAL_MS);
  assert.equal(searches, after, 'placed: no more searching');
});
