// The chat widget renders message text as text (extension/widget/widget.js; DESIGN.md "Extension":
// message text is rendered with textContent only). The page runs in a jsdom document built from
// widget.html, with a fake chrome.runtime port that plays the worker: it admits the widget, says
// "connected" and answers the widget's RPCs with hostile message text.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const ID = 'cjhgnfckfielldaiipkgieemaigbpmoe';
const PEER_ADDRESS = `0x${'ab'.repeat(20)}`;
const HOSTILE = [
  '<img src=x onerror="globalThis.pwned = 1">',
  '<b>bold</b> & <i>more</i>',
  '<svg><script>globalThis.pwned = 2</script></svg>',
  '</li><li data-parley="message">forged</li>',
];

const html = readFileSync(new URL('../../extension/widget/widget.html', import.meta.url), 'utf8')
  .replace(/<script[^>]*><\/script>/g, '')
  .replace(/<link[^>]*>/g, '');
const dom = new JSDOM(html, { url: `chrome-extension://${ID}/widget/widget.html?peer=lens%3Abob` });
const { window } = dom;
const { document } = window;
globalThis.window = window;
globalThis.document = document;
globalThis.location = window.location;

/** The worker's end of the widget port. */
const worker = {
  listeners: [],
  posted: [],
  deliver(msg) { for (const fn of this.listeners) fn(msg); },
  answer({ id, method, params }) {
    if (method === 'resolve') return { address: PEER_ADDRESS, handle: 'bob', verified: true };
    if (method === 'canMessage') return { canMessage: true };
    if (method === 'messages.list') {
      return {
        messages: HOSTILE.map((text, i) => ({ id: `m${i}`, peer: PEER_ADDRESS, direction: i % 2 ? 'out' : 'in', text, sent_at: 0 })),
        has_more: false,
      };
    }
    if (method === 'messages.markRead') return { unread: 0 };
    throw new Error(`unexpected ${method} ${id} ${JSON.stringify(params)}`);
  },
};
const port = {
  onMessage: { addListener: (fn) => worker.listeners.push(fn) },
  onDisconnect: { addListener() {} },
  postMessage(msg) {
    worker.posted.push(msg);
    if (msg.type === 'rpc') queueMicrotask(() => worker.deliver({ type: 'rpc-result', id: msg.id, result: worker.answer(msg) }));
  },
};
globalThis.chrome = {
  runtime: { id: ID, connect: () => port, sendMessage: async () => ({ ok: true }) },
  storage: { session: { get: async () => ({}), onChanged: { addListener() {} } } },
};

// The widget's timers (nonce wait, visibility grace) must not hold the test process open.
mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
await import('../../extension/widget/widget.js');

const settle = () => new Promise((resolve) => setImmediate(resolve));
const items = () => [...document.querySelectorAll('[data-parley="messages"] > li > [data-parley="message"]')];

function assertTextOnly(expected) {
  const shown = items();
  assert.deepEqual(shown.map((li) => li.textContent), expected);
  assert.equal(document.querySelectorAll('[data-parley="messages"] > li').length, shown.length, 'one row per message');
  for (const li of shown) {
    assert.equal(li.dataset.parley, 'message');
    assert.equal(li.children.length, 0, `no element made from ${JSON.stringify(li.textContent)}`);
  }
  assert.equal(document.querySelectorAll('img, b, i, svg, script').length, 0);
  assert.equal(globalThis.pwned, undefined);
}

test('hostile message text from the bridge is shown as literal text and makes no elements', async () => {
  worker.deliver({ type: 'gate', ok: true });
  worker.deliver({ type: 'status', status: 'connected' });
  await settle();
  assert.equal(document.body.dataset.parleyGate, 'live');
  assert.ok(worker.posted.some((m) => m.type === 'rpc' && m.method === 'messages.list'), 'the widget loaded its messages');
  assertTextOnly(HOSTILE);
});

test('a new message pushed by the worker is shown as literal text too', async () => {
  const text = '<img src=x onerror="globalThis.pwned = 3"><a href="javascript:alert(1)">link</a>';
  worker.deliver({
    type: 'event', method: 'message.new',
    params: { message: { id: 'm-new', peer: PEER_ADDRESS.toUpperCase().replace('0X', '0x'), direction: 'in', text, sent_at: 0 } },
  });
  await settle();
  assertTextOnly([...HOSTILE, text]);
  assert.equal(document.querySelectorAll('a').length, 0);
});

test('a message for another peer is not shown in this conversation', async () => {
  worker.deliver({
    type: 'event', method: 'message.new',
    params: { message: { id: 'm-other', peer: `0x${'cd'.repeat(20)}`, direction: 'in', text: 'elsewhere', sent_at: 0 } },
  });
  await settle();
  assert.equal(items().some((li) => li.textContent === 'elsewhere'), false);
});

// Issue 11: an outgoing message shows its state as a visible text label next to it, and the bridge's
// message.updated changes it in the open widget (it used to stay "queued", 60 % opacity, no label).
const labelOf = (id) => document.querySelector(`[data-parley="message"][data-id="${id}"]`)?.parentElement.querySelector('[data-parley="message-state"]');
const stateOf = (id) => document.querySelector(`[data-parley="message"][data-id="${id}"]`)?.dataset.state;
const outMessage = (id, state) => ({ id, peer: PEER_ADDRESS, direction: 'out', text: `to bob ${id}`, sent_at: 0, state });

test('an outgoing message is labelled with its state, and message.updated relabels it live', async () => {
  worker.deliver({ type: 'event', method: 'message.new', params: { message: outMessage('m-q', 'queued') } });
  await settle();
  assert.equal(stateOf('m-q'), 'queued');
  assert.equal(labelOf('m-q').textContent, 'Queued — will retry');
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: outMessage('m-q', 'sent') } });
  await settle();
  assert.equal(stateOf('m-q'), 'sent');
  assert.equal(labelOf('m-q').textContent, 'Sent');
  assert.equal(labelOf('m-q').dataset.state, 'sent');
  // A late answer still saying "queued" (sent while the reply was on its way) does not undo it.
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: outMessage('m-q', 'queued') } });
  await settle();
  assert.equal(labelOf('m-q').textContent, 'Sent');

  worker.deliver({ type: 'event', method: 'message.new', params: { message: outMessage('m-f', 'queued') } });
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: outMessage('m-f', 'failed') } });
  await settle();
  assert.equal(labelOf('m-f').textContent, 'Failed — not sent');
  // The message element itself keeps only the text (the label is its sibling in the row).
  assert.equal(document.querySelector('[data-parley="message"][data-id="m-f"]').textContent, 'to bob m-f');
});

test('an update for another peer changes nothing; incoming messages carry no delivery label', async () => {
  worker.deliver({ type: 'event', method: 'message.new', params: { message: outMessage('m-x', 'queued') } });
  worker.deliver({
    type: 'event', method: 'message.updated',
    params: { message: { ...outMessage('m-x', 'sent'), peer: `0x${'cd'.repeat(20)}` } },
  });
  await settle();
  assert.equal(labelOf('m-x').textContent, 'Queued — will retry');
  assert.equal(labelOf('m0'), null, 'no label on an incoming message');
});
