// The popup closed while its recovery key was shown and not yet typed back (issue 15 item 8): the
// key is gone with it (it was never stored), so the next popup must not pretend all is well. It says
// a key exists but is unconfirmed and offers both ways on: type it (the user did write it down) or
// make a new one, which replaces it after the same warning plus one more line. Only an unconfirmed
// key can be replaced this way (the fake bridge, like the real one, refuses it for a confirmed key).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { $, calls, click, fake, newKey, openPopup, shownKey, submit, until, visible } from './backup-popup-dom.mjs';

// The popup before this one made a key and was closed on it.
const lost = newKey();
Object.assign(fake.state, { has_key: true, confirmed: false, enabled: false, derived: lost.replaceAll(' ', ''), created_at: Date.UTC(2026, 0, 2) });
await openPopup();
const { backupConnection } = await import('../../extension/popup/backup.js');
after(() => backupConnection('not paired'));

const CREATE = 'parley/popup/backup-create-key';

test('the next popup says a key exists but was never typed back, and offers both ways; backup stays off', () => {
  assert.equal($('backup-line').textContent, 'Recovery key not confirmed');
  assert.ok(visible('backup-unconfirmed'));
  assert.match($('backup-unconfirmed-text').textContent, /A recovery key was made on .+ but never typed back\. If you wrote it down, type it/);
  assert.ok(visible('backup-have-key') && visible('backup-replace'));
  assert.ok(!visible('backup-setup') && !visible('backup-turn-on') && !visible('backup-turn-off'));
  assert.equal(shownKey(), '', 'the old key is not shown: nobody has it any more');
});

test('"I have it": typed wrong is refused; there is no key to show again in this popup', async () => {
  click('backup-have-key');
  assert.ok(visible('backup-type-step'));
  assert.ok(!visible('backup-show-again'));
  $('backup-typed').value = newKey();
  submit('backup-type-step');
  await until(() => /not the recovery key that was shown/.test($('backup-message').textContent), 'mismatch said');
  assert.equal(fake.state.confirmed, false);
  click('backup-type-cancel');
  await until(() => visible('backup-unconfirmed'), 'back to the choice');
});

test('"Make a new key": the same question plus what happens to the old key; then the new key, shown once', async () => {
  click('backup-replace');
  assert.ok(visible('backup-ask') && visible('backup-ask-replace'));
  assert.match($('backup-ask-replace').textContent, /key made before stops working/);
  assert.equal(calls(CREATE).length, 0);
  click('backup-create');
  await until(() => visible('backup-key-step'), 'the new key shown');
  assert.deepEqual(calls(CREATE), [{ type: CREATE, replace: true }]);
  const fresh = shownKey();
  assert.notEqual(fresh, lost);
  click('backup-written');
  $('backup-typed').value = fresh;
  submit('backup-type-step');
  await until(() => fake.state.confirmed && fake.state.enabled, 'confirmed and on');
  await until(() => $('backup-line').textContent.startsWith('Waiting for the first backup'), 'the line');
  assert.ok(!visible('backup-unconfirmed') && !visible('backup-replace'));
});
