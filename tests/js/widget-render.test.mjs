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
const dom = new JSDOM(html, { url: `chrome-extension://${ID}/widget/widget.html?peer=lens%3Abob`, pretendToBeVisual: true });
const { window } = dom;
const { document } = window;
globalThis.window = window;
globalThis.document = document;
globalThis.location = window.location;
// The widget acts (sends, reacts, marks read) only once it has been visible for 800 ms: a clock of our own.
let clock = 0;
Object.defineProperty(globalThis, 'performance', { value: { now: () => clock }, configurable: true });
const ME = `0x${'ee'.repeat(20)}`;
const hex = (n) => n.toString(16).padStart(32, '0');

/** The worker's end of the widget port. */
const worker = {
  listeners: [],
  posted: [],
  extra: {},
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
    if (method === 'consent.get') return { peer: PEER_ADDRESS, consent: 'allowed', held: 0, dropped: 0 };
    if (worker.extra[method]) return worker.extra[method](params);
    if (method === 'typing.set') return { sent: true };
    throw new Error(`unexpected ${method} ${id} ${JSON.stringify(params)}`);
  },
};
const port = {
  onMessage: { addListener: (fn) => worker.listeners.push(fn) },
  onDisconnect: { addListener() {} },
  postMessage(msg) {
    worker.posted.push(msg);
    if (msg.type !== 'rpc') return;
    const result = worker.answer(msg);
    if (result instanceof Promise) result.then((r) => worker.deliver({ type: 'rpc-result', id: msg.id, result: r }));
    else queueMicrotask(() => worker.deliver({ type: 'rpc-result', id: msg.id, result }));
  },
};
globalThis.chrome = {
  runtime: { id: ID, connect: () => port, sendMessage: async () => ({ ok: true }) },
  storage: { session: { get: async () => ({ identity: { address: ME } }), onChanged: { addListener() {} } } },
};

// The widget's timers (nonce wait, visibility grace) must not hold the test process open.
mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
await import('../../extension/widget/widget.js');

const settle = () => new Promise((resolve) => setImmediate(resolve));
const items = () => [...document.querySelectorAll('[data-parley="messages"] > li > [data-parley="message"]')];

function assertTextOnly(expected) {
  const shown = items();
  // A plain message's element holds its text only (the menu button has no text of its own), so what
  // the e2e suites read from [data-parley="message"] stays the message's text.
  assert.deepEqual(shown.map((li) => li.textContent), expected);
  assert.equal(document.querySelectorAll('[data-parley="messages"] > li').length, shown.length, 'one row per message');
  for (const li of shown) {
    assert.equal(li.dataset.parley, 'message');
    assert.deepEqual([...li.children].map((c) => c.dataset.parley), ['text', 'reactions', 'menu']);
    assert.equal(li.querySelector('[data-parley="text"]').children.length, 0, `no element made from ${JSON.stringify(li.textContent)}`);
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

// --- issue 12: each message shape, the menu, the banner, typing --------------------------------------

const shape = (n, over) => ({ id: hex(n), peer: PEER_ADDRESS, sender: PEER_ADDRESS, direction: 'in', text: `m${n}`, sent_at: 0, state: 'received', reactions: {}, attachments: [], ...over });
const push = async (message) => { worker.deliver({ type: 'event', method: 'message.new', params: { message } }); await settle(); };
const msg = (n) => document.querySelector(`[data-parley="message"][data-id="${hex(n)}"]`);
const hook = (n, name) => msg(n)?.querySelector(`[data-parley="${name}"]`);
const rpcs = (method) => worker.posted.filter((m) => m.type === 'rpc' && m.method === method).map((m) => m.params);

test('a reply quotes its target as text; reactions count and name who; edited, tombstone, unsupported, receipt', async () => {
  await push(shape(100, { kind: 'reply', reply_to: hex(1), reply_preview: { id: hex(1), sender: PEER_ADDRESS, text: HOSTILE[0], deleted: false } }));
  assert.equal(hook(100, 'reply-quote-text').textContent, HOSTILE[0]);
  assert.equal(hook(100, 'text').textContent, 'm100');
  await push(shape(101, { reactions: { '👍': [PEER_ADDRESS, ME.toUpperCase().replace('0X', '0x')], '<b>x</b>': [PEER_ADDRESS] } }));
  const chips = [...msg(101).querySelectorAll('[data-parley="reaction"]')];
  assert.deepEqual(chips.map((c) => c.textContent), ['👍 2', '<b>x</b> 1']);
  assert.equal(chips[0].dataset.emoji, '👍');
  assert.match(chips[0].title, /bob/);
  assert.match(chips[0].title, /You/);
  assert.equal(chips[0].dataset.mine, 'true');
  await push(shape(102, { edited: true, text: 'better' }));
  assert.equal(hook(102, 'edited-mark').textContent, 'edited');
  await push(shape(103, { deleted: true, text: '' }));
  assert.equal(hook(103, 'tombstone').textContent, 'This message was deleted');
  assert.equal(hook(103, 'text'), null);
  await push(shape(104, { kind: 'unknown', unsupported: true, text: 'fallback <i>text</i>' }));
  assert.equal(hook(104, 'text').textContent, 'fallback <i>text</i>');
  assert.ok(hook(104, 'unsupported').textContent.length > 0);
  await push(shape(105, { direction: 'out', sender: ME, state: 'read' }));
  assert.equal(hook(105, 'receipt').textContent, 'Read');
  assert.equal(msg(105).dataset.state, 'read');
  await push(shape(106, { direction: 'out', sender: ME, state: 'sent' }));
  assert.equal(hook(106, 'receipt'), null);
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: shape(106, { direction: 'out', sender: ME, state: 'read' }) } });
  await settle();
  assert.equal(hook(106, 'receipt').textContent, 'Read', 'the receipt arrives live');
  assert.equal(document.querySelectorAll('img, b, i, svg, script').length, 0);
  assert.equal(globalThis.pwned, undefined);
});

test('message.updated re-renders an edit, a delete and a reaction in place', async () => {
  await push(shape(110, { direction: 'out', sender: ME, text: 'first' }));
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: shape(110, { direction: 'out', sender: ME, text: 'second', edited: true, reactions: { '❤️': [PEER_ADDRESS] } }) } });
  await settle();
  assert.equal(hook(110, 'text').textContent, 'second');
  assert.equal(hook(110, 'edited-mark').textContent, 'edited');
  assert.equal(hook(110, 'reaction').textContent, '❤️ 1');
  worker.deliver({ type: 'event', method: 'message.updated', params: { message: shape(110, { direction: 'out', sender: ME, text: '', deleted: true }) } });
  await settle();
  assert.equal(hook(110, 'tombstone').textContent, 'This message was deleted');
  assert.equal(hook(110, 'text'), null);
});

test('attachments: card with name and size, thumbnail only from an image data URL, Save, progress', async () => {
  const calls = [];
  worker.extra['attachments.thumbnail'] = (p) => {
    calls.push(p.id);
    return { data_url: p.id.endsWith('-0') ? 'data:image/png;base64,iVBORw0KGgo=' : 'data:text/html;base64,PHNjcmlwdD4=' };
  };
  await push(shape(120, {
    kind: 'attachment', text: 'caption',
    attachments: [
      { id: `${hex(120)}-0`, name: 'cat <b>.png', size: 5 * 1024 * 1024, sha256: 'ab'.repeat(32), mime: 'image/png', state: 'done', thumbnail: true, progress: null },
      { id: `${hex(120)}-1`, name: 'evil.png', size: 10, sha256: 'ab'.repeat(32), mime: 'image/png', state: 'done', thumbnail: true, progress: null },
      { id: `${hex(120)}-2`, name: 'notes.pdf', size: 2048, sha256: 'ab'.repeat(32), mime: 'application/pdf', state: 'downloading', thumbnail: false, progress: { done: 1024, total: 2048 } },
    ],
  }));
  await settle();
  const cards = [...msg(120).querySelectorAll('[data-parley="attachment"]')];
  assert.deepEqual(cards.map((c) => c.dataset.attachmentId), [0, 1, 2].map((i) => `${hex(120)}-${i}`));
  assert.equal(cards[0].querySelector('[data-parley="attachment-name"]').textContent, 'cat <b>.png');
  assert.equal(cards[0].querySelector('[data-parley="attachment-size"]').textContent, '5.0 MB');
  assert.equal(cards[0].querySelector('[data-parley="thumbnail"]').src, 'data:image/png;base64,iVBORw0KGgo=');
  assert.equal(cards[1].querySelector('[data-parley="thumbnail"]').hidden, true, 'a non-image data URL is never shown');
  assert.equal(cards[1].querySelector('[data-parley="thumbnail"]').getAttribute('src'), null);
  assert.equal(cards[2].querySelector('[data-parley="thumbnail"]'), null, 'no thumbnail for a non-image');
  assert.deepEqual(calls, [`${hex(120)}-0`, `${hex(120)}-1`]);
  assert.equal(cards.every((c) => c.querySelector('[data-parley="save"]')), true);
  const bar = cards[2].querySelector('[data-parley="progress"]');
  assert.deepEqual([bar.value, bar.max, bar.hidden], [1024, 2048, false]);
  worker.deliver({ type: 'event', method: 'attachment.progress', params: { id: `${hex(120)}-2`, peer: PEER_ADDRESS, phase: 'download', done: 2048, total: 2048 } });
  assert.equal(bar.hidden, true);
  assert.equal(hook(120, 'text').textContent, 'caption');
  assert.equal(document.querySelectorAll('b').length, 0);
});

test('the menu: reply, six reactions, edit and delete on own messages only; each calls its method', async () => {
  clock += 5000; // visible long enough to act
  worker.extra['messages.react'] = (p) => ({ message: shape(130, { reactions: { [p.emoji]: [ME] } }) });
  worker.extra['messages.delete'] = () => ({ message: shape(131, { direction: 'out', sender: ME, deleted: true, text: '' }) });
  worker.extra['messages.edit'] = (p) => ({ message: shape(132, { direction: 'out', sender: ME, text: p.text, edited: true }) });
  worker.extra['messages.send'] = (p) => ({ message: shape(133, { direction: 'out', sender: ME, text: p.text, reply_to: p.reply_to }) });
  await push(shape(130));
  hook(130, 'menu').click();
  assert.deepEqual([...msg(130).querySelectorAll('[data-parley="react-choice"]')].map((b) => b.dataset.emoji), ['👍', '❤️', '😂', '😮', '😢', '🙏']);
  assert.equal(hook(130, 'menu-edit'), null, 'no edit on their message');
  assert.equal(hook(130, 'menu-delete'), null, 'no delete on their message');
  [...msg(130).querySelectorAll('[data-parley="react-choice"]')].find((b) => b.dataset.emoji === '😂').click();
  await settle();
  assert.deepEqual(rpcs('messages.react').at(-1), { peer: PEER_ADDRESS, id: hex(130), emoji: '😂' });
  assert.equal(hook(130, 'menu-panel'), null, 'the menu closed');
  assert.equal(hook(130, 'reaction').textContent, '😂 1');

  await push(shape(131, { direction: 'out', sender: ME }));
  hook(131, 'menu').click();
  hook(131, 'menu-delete').click();
  await settle();
  assert.deepEqual(rpcs('messages.delete').at(-1), { peer: PEER_ADDRESS, id: hex(131) });
  assert.ok(hook(131, 'tombstone'));
  hook(131, 'menu').click();
  assert.equal(hook(131, 'menu-edit'), null, 'no edit of a deleted message');

  await push(shape(132, { direction: 'out', sender: ME, text: 'typo' }));
  hook(132, 'menu').click();
  hook(132, 'menu-edit').click();
  const composer = document.querySelector('[data-parley="composer"]');
  assert.equal(composer.value, 'typo');
  composer.value = 'fixed';
  document.querySelector('[data-parley="compose-form"]').dispatchEvent(new window.Event('submit', { cancelable: true }));
  await settle();
  await settle();
  assert.deepEqual(rpcs('messages.edit').at(-1), { peer: PEER_ADDRESS, id: hex(132), text: 'fixed' });
  assert.equal(hook(132, 'text').textContent, 'fixed');
  assert.equal(rpcs('messages.send').length, 0, 'an edit is not a new message');

  hook(130, 'menu').click();
  hook(130, 'menu-reply').click();
  assert.equal(document.querySelector('[data-parley="reply-preview"]').hidden, false);
  composer.value = 'answer';
  document.querySelector('[data-parley="compose-form"]').dispatchEvent(new window.Event('submit', { cancelable: true }));
  await settle();
  await settle();
  assert.deepEqual(rpcs('messages.send').at(-1), { peer: PEER_ADDRESS, text: 'answer', reply_to: hex(130) });
  assert.equal(document.querySelector('[data-parley="reply-preview"]').hidden, true);
});

test('what is typed while a message is being sent stays in the composer (the sent text is cleared at once)', async () => {
  clock += 5000;
  let release;
  const answered = new Promise((resolve) => { release = resolve; });
  worker.extra['messages.send'] = async (p) => { await answered; return { message: shape(134, { direction: 'out', sender: ME, text: p.text }) }; };
  const composer = document.querySelector('[data-parley="composer"]');
  composer.value = 'first';
  document.querySelector('[data-parley="compose-form"]').dispatchEvent(new window.Event('submit', { cancelable: true }));
  await settle();
  assert.equal(composer.value, '', 'cleared as it is sent');
  composer.value = 'the next one';
  release();
  await settle();
  await settle();
  assert.equal(hook(134, 'text').textContent, 'first');
  assert.equal(composer.value, 'the next one', 'the bridge answering does not wipe it');
});

test('the request banner: held count, Accept calls consent.set; consent.changed and typing are live', async () => {
  worker.extra['consent.set'] = (p) => ({ peer: PEER_ADDRESS, consent: p.action === 'accept' ? 'allowed' : 'blocked', held: 0, dropped: 0 });
  worker.deliver({ type: 'event', method: 'consent.changed', params: { peer: `0x${'cd'.repeat(20)}`, consent: 'requested' } });
  assert.equal(document.querySelector('[data-parley="requests-banner"]').hidden, true, 'another conversation changes nothing');
  worker.deliver({ type: 'event', method: 'consent.changed', params: { peer: PEER_ADDRESS, consent: 'requested', held: 2 } });
  assert.equal(document.querySelector('[data-parley="requests-banner"]').hidden, false);
  assert.equal(document.querySelector('[data-parley="held-count"]').textContent, '2 more messages held until you accept');
  document.querySelector('[data-parley="accept"]').click();
  await settle();
  assert.deepEqual(rpcs('consent.set').at(-1), { peer: PEER_ADDRESS, action: 'accept' });
  assert.equal(document.querySelector('[data-parley="requests-banner"]').hidden, true);

  const typing = document.querySelector('[data-parley="typing"]');
  worker.deliver({ type: 'event', method: 'typing', params: { peer: PEER_ADDRESS, typing: true } });
  assert.equal(typing.hidden, false);
  mock.timers.tick(6001);
  assert.equal(typing.hidden, true, 'hidden after 6 s');
  worker.deliver({ type: 'event', method: 'typing', params: { peer: PEER_ADDRESS, typing: true } });
  await push(shape(140));
  assert.equal(typing.hidden, true, 'hidden when their message arrives');
});

test('typing.set while composing: at most every 3 s, false when the composer empties', async () => {
  const composer = document.querySelector('[data-parley="composer"]');
  const before = rpcs('typing.set').length;
  const type = (text) => { composer.value = text; composer.dispatchEvent(new window.Event('input')); };
  type('h');
  type('he');
  type('hel');
  assert.deepEqual(rpcs('typing.set').slice(before), [{ peer: PEER_ADDRESS, typing: true }]);
  type('');
  assert.deepEqual(rpcs('typing.set').slice(before).map((p) => p.typing), [true, false]);
});
