// The popup's Backup part (issue 15 item 8; extension/popup/backup.js) in jsdom, over a fake worker
// that keeps the bridge's backup state (backup-popup-dom.mjs): "Set up backup" asks before anything
// is created; the key is shown once, in groups, with Copy and "I wrote it down"; typing it back
// wrong says so and lets the user retry; only the right key confirms, which turns the backup on.
// The key is never written to chrome.storage and is gone from the page once confirmed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { $, calls, click, fake, openPopup, shownKey, submit, until, visible } from './backup-popup-dom.mjs';

const { clipboard } = await openPopup();
const { backupConnection } = await import('../../extension/popup/backup.js');

after(() => backupConnection('not paired')); // stops the status polling

const CREATE = 'parley/popup/backup-create-key';
const CONFIRM = 'parley/popup/backup-confirm-key';
let key = '';

test('not set up: the line says so and offers "Set up backup" (and nothing else)', () => {
  assert.equal($('backup-line').textContent, 'Not set up');
  assert.ok(visible('backup-setup'));
  for (const hook of ['backup-unconfirmed', 'backup-turn-on', 'backup-turn-off', 'backup-ask', 'backup-key-step', 'backup-type-step']) {
    assert.ok(!visible(hook), hook);
  }
});

test('"Set up backup" asks first: nothing is created until the user says yes; "Not now" creates nothing', async () => {
  click('backup-setup');
  assert.ok(visible('backup-ask'));
  assert.equal($('backup-ask-text').textContent,
    'A recovery key restores everything if you lose this device. Anyone with it can read your history. Create it?');
  assert.ok(!visible('backup-ask-replace'));
  assert.equal(calls(CREATE).length, 0);
  click('backup-cancel');
  assert.ok(!visible('backup-ask') && visible('backup-setup'));
  assert.equal(calls(CREATE).length, 0);
  assert.equal(fake.state.has_key, false);
});

test('yes: the key is shown in 16 groups of 4, with Copy; it was asked for once', async () => {
  click('backup-setup');
  click('backup-create');
  await until(() => visible('backup-key-step'), 'the key shown');
  key = shownKey();
  assert.match(key, /^[a-z0-9]{4}( [a-z0-9]{4}){15}$/);
  assert.equal(document.querySelectorAll('[data-parley="backup-key-group"]').length, 16);
  assert.equal(fake.state.derived, key.replaceAll(' ', ''));
  assert.deepEqual(calls(CREATE), [{ type: CREATE }]);
  click('backup-copy');
  await until(() => visible('backup-copied'), 'copied');
  assert.equal(clipboard.text, key);
  assert.equal(fake.state.enabled, false, 'not on before the key is typed back');
});

test('"I wrote it down" hides the key and asks for it; a wrong key says so and can be retried', async () => {
  click('backup-written');
  assert.ok(visible('backup-type-step') && !visible('backup-key-step'));
  assert.equal(shownKey() === '' || !visible('backup-key'), true, 'the key is not on screen while it is typed');
  $('backup-typed').value = `${key.slice(0, -1)}${key.endsWith('a') ? 'b' : 'a'}`;
  submit('backup-type-step');
  await until(() => /not the recovery key that was shown/.test($('backup-message').textContent), 'the mismatch said');
  assert.ok(visible('backup-message') && visible('backup-type-step'));
  assert.equal(fake.state.confirmed, false);
  assert.equal(fake.state.enabled, false);
  // Empty: asked to type it, nothing sent.
  const before = calls(CONFIRM).length;
  $('backup-typed').value = '   ';
  submit('backup-type-step');
  assert.match($('backup-message').textContent, /Type the recovery key/);
  assert.equal(calls(CONFIRM).length, before);
  // "Show the key again" (this popup still holds it): the same key, not a new one.
  click('backup-show-again');
  assert.ok(visible('backup-key-step'));
  assert.equal(shownKey(), key);
  assert.equal(calls(CREATE).length, 1);
  click('backup-written');
});

test('the right key, typed the way people type (capitals, dashes, line breaks), confirms and turns the backup on', async () => {
  $('backup-typed').value = key.toUpperCase().split(' ').map((g, i) => (i % 4 === 3 ? `${g}\n` : `${g}-`)).join('');
  submit('backup-type-step');
  await until(() => fake.state.confirmed, 'confirmed');
  assert.equal(fake.state.enabled, true);
  await until(() => /confirmed and backup is on/.test($('backup-message').textContent), 'the success said');
  await until(() => $('backup-line').textContent.startsWith('Waiting for the first backup'), 'the line updated');
  assert.ok(!visible('backup-type-step') && !visible('backup-key-step') && !visible('backup-setup'));
  assert.equal($('backup-typed').value, '');
  assert.equal(shownKey(), '', 'the key is gone from the page');
  assert.ok(!document.body.innerHTML.includes(key.slice(0, 9)));
  // The first backup lands: the popup notices by itself (it asks often while one is awaited).
  fake.state.last_backup_at = Date.now() - 5 * 60_000;
  await until(() => $('backup-line').textContent === 'Backed up 5 min ago · 1.2 MB · 1 relay', 'the backup shown');
  assert.equal($('backup-line').dataset.state, 'ok');
  assert.ok(visible('backup-turn-off'));
});

test('off and on again; the key was never stored by the popup', async () => {
  click('backup-turn-off');
  await until(() => $('backup-line').textContent === 'Backup off', 'off');
  assert.ok(visible('backup-turn-on'));
  click('backup-turn-on');
  await until(() => $('backup-line').textContent.startsWith('Backed up'), 'on again');
  const squeezed = key.replaceAll(' ', '');
  assert.ok(!fake.stored.some(([, json]) => json.includes(key.slice(0, 9)) || json.includes(squeezed.slice(0, 8))), 'never in chrome.storage');
  assert.equal(calls(CREATE).length, 1);
});
