// How the backup's state reads (issue 15 item 8): extension/common/backup-format.js, and its copy
// served with the bridge's inbox page (bridge/api/static/backup-format.js), which must say the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const F = await import('../../extension/common/backup-format.js');

const NOW = 1_800_000_000_000;
const MIN = 60_000;
const relay = (n, state, extra = {}) => ({ url: `https://relay${n}.example:8443`, state, last_at: NOW - 5 * MIN, error: null, ...extra });
const base = { enabled: true, has_key: true, confirmed: true, last_backup_at: NOW - 5 * MIN, size: 1_258_291, segments: 2, relays: [relay(1, 'ok'), relay(2, 'ok')] };

test('the page serves the very same files as the popup uses (the words and the flow)', () => {
  for (const name of ['backup-format.js', 'backup-flow.js']) {
    const ours = readFileSync(new URL(`../../extension/common/${name}`, import.meta.url), 'utf8');
    const page = readFileSync(new URL(`../../bridge/api/static/${name}`, import.meta.url), 'utf8');
    assert.equal(page, ours, `copy extension/common/${name} to bridge/api/static/${name}`);
  }
});

test('the one line: not set up, unconfirmed, off, waiting, backed up, failing', () => {
  const line = (patch) => F.backupLine({ ...base, ...patch }, NOW);
  assert.deepEqual(line({}), { state: 'ok', text: 'Backed up 5 min ago · 1.2 MB · 2 relays' });
  assert.deepEqual(line({ has_key: false, confirmed: false, enabled: false }), { state: 'none', text: 'Not set up' });
  assert.deepEqual(line({ confirmed: false }), { state: 'unconfirmed', text: 'Recovery key not confirmed' });
  assert.deepEqual(line({ enabled: false }), { state: 'off', text: 'Backup off' });
  assert.deepEqual(line({ last_backup_at: null, relays: [relay(1, 'pending'), relay(2, 'pending')] }),
    { state: 'pending', text: 'Waiting for the first backup · 0 of 2 relays' });
  assert.deepEqual(line({ relays: [relay(1, 'ok'), relay(2, 'error', { error: 'quota' })] }), { state: 'error', text: 'Backed up 5 min ago · 1.2 MB · 1 of 2 relays' });
  assert.deepEqual(line({ relays: [relay(1, 'error'), relay(2, 'error')] }), { state: 'error', text: 'Backup failing on every relay' });
  assert.deepEqual(line({ relays: [relay(1, 'ok')], size: 900, last_backup_at: NOW - 2 * 86_400_000 }), { state: 'ok', text: 'Backed up 2 days ago · 900 B · 1 relay' });
  assert.deepEqual(F.backupLine(null, NOW), { state: 'unknown', text: 'Backup state unknown' });
});

test('times and sizes', () => {
  assert.deepEqual([0, 59_999, MIN, 59 * MIN, 60 * MIN, 86_400_000 - 1, 86_400_000, -MIN].map((d) => F.ago(NOW - d, NOW)),
    ['just now', 'just now', '1 min ago', '59 min ago', '1 h ago', '23 h ago', '1 day ago', 'just now']);
  assert.deepEqual([0, 1023, 1024, 1_258_291, 5 * 1024 ** 3, -5, NaN].map(F.size), ['0 B', '1023 B', '1.0 KB', '1.2 MB', '5.0 GB', '0 B', '0 B']);
});

test('each relay: its host, its state, the bridge\'s words for an error (text)', () => {
  const lines = F.relayLines({ ...base, relays: [relay(1, 'ok'), relay(2, 'error', { error: '<b>quota</b>' }), relay(3, 'pending'), { url: 'not a url', state: 'error', error: null }] }, NOW);
  assert.deepEqual(lines.map((l) => l.text), [
    'relay1.example:8443: backed up 5 min ago', 'relay2.example:8443: error: <b>quota</b>', 'relay3.example:8443: waiting', 'not a url: error: no answer',
  ]);
  assert.deepEqual(lines.map((l) => l.state), ['ok', 'error', 'pending', 'error']);
});

test('poll soon only while a backup is awaited; the key in groups', () => {
  assert.equal(F.awaitingBackup({ ...base }), false);
  assert.equal(F.awaitingBackup({ ...base, last_backup_at: null }), true);
  assert.equal(F.awaitingBackup({ ...base, relays: [relay(1, 'pending')] }), true);
  assert.equal(F.awaitingBackup({ ...base, enabled: false, last_backup_at: null }), false);
  assert.equal(F.awaitingBackup(null), false);
  assert.deepEqual(F.keyGroups('abcd efgh 1234'), ['abcd', 'efgh', '1234']);
  assert.deepEqual(F.keyGroups(undefined), []);
});
