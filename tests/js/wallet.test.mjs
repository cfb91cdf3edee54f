// Browser-wallet sign-in shapes (extension/common/wallet.js, issue 4 part 3): everything that
// comes from the page is hostile; only the exact shapes pass, icons only as data:image URIs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cleanAccounts, cleanError, cleanProvider, cleanProviders, cleanSignature, safeIcon, shortAddress, utf8Hex,
} from '../../extension/common/wallet.js';

test('icons: only data:image/(png|svg+xml|webp|jpeg), bounded, no control characters', () => {
  const svg = 'data:image/svg+xml;base64,PHN2Zy8+';
  assert.equal(safeIcon(svg), svg);
  assert.equal(safeIcon('data:image/png;base64,iVBORw0KGgo='), 'data:image/png;base64,iVBORw0KGgo=');
  assert.equal(safeIcon('data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"/>'), 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"/>');
  for (const bad of [
    'javascript:alert(1)', 'https://evil.example/x.png', 'data:text/html,<script>alert(1)</script>',
    'data:image/gif;base64,R0lG', 'data:image/svg+xml\n,<svg/>', ' data:image/png;base64,AA', 'data:image/png;base64,' + 'A'.repeat(70000),
    null, 42, { toString: () => 'data:image/png,' },
  ]) assert.equal(safeIcon(bad), '', String(bad).slice(0, 40));
});

test('providers: uuid and name required, strings only, at most 20, unique', () => {
  assert.deepEqual(cleanProvider({ uuid: 'u1', name: 'Test Wallet', icon: 'javascript:x', rdns: 'org.test' }),
    { uuid: 'u1', name: 'Test Wallet', icon: '', rdns: 'org.test' });
  assert.equal(cleanProvider({ uuid: 'u1' }), null);
  assert.equal(cleanProvider({ uuid: 'u1', name: { x: 1 } }), null);
  assert.equal(cleanProvider({ uuid: 'x'.repeat(101), name: 'n' }), null);
  const many = Array.from({ length: 30 }, (_, i) => ({ uuid: `u${i % 25}`, name: `W${i}` }));
  const out = cleanProviders(many);
  assert.equal(out.length, 20);
  assert.equal(new Set(out.map((p) => p.uuid)).size, 20);
  assert.deepEqual(cleanProviders('nope'), []);
});

test('accounts, signatures and errors', () => {
  const a = '0x' + 'Ab'.repeat(20);
  assert.deepEqual(cleanAccounts([a]), [a.toLowerCase()]);
  assert.equal(cleanAccounts([a, '0x12']), null);
  assert.equal(cleanAccounts('0x' + 'a'.repeat(40)), null);
  assert.equal(cleanSignature('0x' + 'a'.repeat(130)), '0x' + 'a'.repeat(130));
  assert.equal(cleanSignature('0x' + 'a'.repeat(128)), null);
  assert.equal(cleanSignature('0x' + 'g'.repeat(130)), null);
  assert.deepEqual(cleanError({ code: 4001, message: 'User rejected' }), { code: 4001, message: 'User rejected' });
  assert.equal(cleanError({ code: { evil: 1 }, message: 'x'.repeat(400) }).code, 'error');
  assert.equal(cleanError(null).message, 'the wallet reported an error');
});

test('personal_sign takes the UTF-8 bytes in hex; short addresses', () => {
  assert.equal(utf8Hex('parley\nA'), '0x' + Buffer.from('parley\nA', 'utf8').toString('hex'));
  assert.equal(utf8Hex('é'), '0xc3a9');
  assert.equal(shortAddress('0x1234567890abcdef1234567890abcdef1234abcd'), '0x1234…abcd');
});
