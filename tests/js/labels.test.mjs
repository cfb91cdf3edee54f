// The words for a peer's and a message's state (extension/common/labels.js, issue 11): one mapping,
// used by the DM button, the worker's lookup and the widget, so they agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { messageLabel, messageState, peerLabel, stateAdvances, unresolvedFrom } from '../../extension/common/labels.js';

test('each peer state has its own words: not on Parley, could not resolve, bridge down and not paired differ', () => {
  const texts = {
    ready: peerLabel('ready').text,
    notOnParley: peerLabel('unavailable', 'not-on-parley').text,
    notPaired: peerLabel('unavailable', 'not-paired').text,
    unreachable: peerLabel('unavailable', 'unreachable').text,
    notVerified: peerLabel('unavailable', 'not-verified').text,
    unresolved: peerLabel('unresolved', 'unknown', 'not in your contacts').text,
    relay: peerLabel('unresolved', 'relay', 'relay unreachable').text,
  };
  assert.deepEqual(texts, {
    ready: 'Message',
    notOnParley: 'Not on Parley yet',
    notPaired: 'Pair Parley',
    unreachable: 'Parley bridge not running',
    notVerified: 'Parley bridge not verified',
    unresolved: 'Couldn’t resolve',
    relay: 'Couldn’t check Parley',
  });
  assert.match(peerLabel('unresolved', 'unreachable', 'Lens API unreachable').title, /Lens API unreachable$/);
  assert.match(peerLabel('unavailable', 'unreachable').title, /parley run/);
});

test('a resolver failure is unresolved with its reason and a bounded detail, whatever the reason', () => {
  for (const reason of ['unknown', 'unreachable', 'contacts', 'malformed']) {
    assert.deepEqual(unresolvedFrom({ code: -32004, message: 'cannot resolve', data: { reason, detail: 'not in your contacts' } }),
      { state: 'unresolved', reason, detail: 'not in your contacts' });
  }
  assert.deepEqual(unresolvedFrom({ code: -32004, message: 'odd', data: null }), { state: 'unresolved', reason: 'error', detail: 'odd' });
  const long = unresolvedFrom({ code: -32004, message: 'x', data: { reason: 'r'.repeat(60), detail: 'd'.repeat(300) } });
  assert.equal(long.reason.length, 40);
  assert.equal(long.detail.length, 200);
});

test('message states: labels, and a finished message never goes back to pending', () => {
  assert.deepEqual(['sending', 'queued', 'sent', 'failed'].map((s) => messageLabel(s).text),
    ['Sending…', 'Queued — will retry', 'Sent', 'Failed — not sent']);
  assert.equal(messageState({ state: 'queued' }), 'queued');
  assert.equal(messageState({ state: 'failed' }), 'failed');
  assert.equal(messageState({ state: 'sent' }), 'sent');
  assert.equal(messageState({ state: '<b>' }), 'sent');
  assert.equal(stateAdvances(undefined, 'sending'), true);
  assert.equal(stateAdvances('sending', 'queued'), true);
  assert.equal(stateAdvances('sending', 'sent'), true);
  assert.equal(stateAdvances('queued', 'sent'), true);
  assert.equal(stateAdvances('queued', 'failed'), true);
  assert.equal(stateAdvances('sent', 'queued'), false);
  assert.equal(stateAdvances('failed', 'queued'), false);
  assert.equal(stateAdvances('sent', 'sending'), false);
  assert.equal(stateAdvances('queued', 'sending'), false);
  assert.equal(stateAdvances('queued', 'bogus'), false);
});
