// Browser-wallet sign-in, extension side (extension/common/wallet.js, issue 8 item 1): the worker
// opens only the bridge's own sign-in page, from the one-time link the paired bridge returned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isInboxUrl, isSigninUrl, shortAddress } from '../../extension/common/wallet.js';

const BRIDGE = 'http://127.0.0.1:8737';
const TOKEN = 'aB3_-'.repeat(8);

test('sign-in links: exactly <bridge>/signin#t=<token> on the paired bridge', () => {
  assert.equal(isSigninUrl(`${BRIDGE}/signin#t=${TOKEN}`, BRIDGE), true);
  assert.equal(isSigninUrl(`http://localhost:9000/signin#t=${TOKEN}`, 'http://localhost:9000'), true);
  for (const bad of [
    `http://127.0.0.1:8738/signin#t=${TOKEN}`, // another port
    `https://hey.xyz/signin#t=${TOKEN}`,
    `${BRIDGE}/signin?t=${TOKEN}`, // a query reaches server logs and Referer
    `${BRIDGE}/signin#t=short`,
    `${BRIDGE}/signin#t=${TOKEN}&x=1`,
    `${BRIDGE}/signin#t=${TOKEN}<script>`,
    `${BRIDGE}/login#t=${TOKEN}`,
    `${BRIDGE}.evil.example/signin#t=${TOKEN}`,
    `${BRIDGE}@evil.example/signin#t=${TOKEN}`,
    `javascript:alert(1)//${BRIDGE}/signin#t=${TOKEN}`,
    null, 42,
  ]) assert.equal(isSigninUrl(bad, BRIDGE), false, String(bad));
  // A bridge URL that is not a canonical loopback http origin never matches anything.
  for (const bridge of ['https://127.0.0.1:8737', 'http://evil.example:80', `${BRIDGE}/`, '', null]) {
    assert.equal(isSigninUrl(`${bridge}/signin#t=${TOKEN}`, bridge), false, String(bridge));
  }
});

test('inbox links (issue 12): exactly <bridge>/login#t=<token>, or ?folder=requests when Requests was asked for', () => {
  assert.equal(isInboxUrl(`${BRIDGE}/login#t=${TOKEN}`, BRIDGE), true);
  assert.equal(isInboxUrl(`${BRIDGE}/login?folder=requests#t=${TOKEN}`, BRIDGE, 'requests'), true);
  for (const [bad, folder] of [
    [`${BRIDGE}/login?folder=requests#t=${TOKEN}`, 'inbox'], // not what was asked for
    [`${BRIDGE}/login#t=${TOKEN}`, 'requests'],
    [`${BRIDGE}/login?folder=all#t=${TOKEN}`, 'requests'],
    [`${BRIDGE}/signin#t=${TOKEN}`, 'inbox'], // the wallet page is not the inbox
    [`${BRIDGE}/login?t=${TOKEN}`, 'inbox'],
    [`http://127.0.0.1:8738/login#t=${TOKEN}`, 'inbox'],
    [`${BRIDGE}@evil.example/login#t=${TOKEN}`, 'inbox'],
    [`${BRIDGE}/login#t=${TOKEN}&next=https://evil.example`, 'inbox'],
    [null, 'inbox'],
  ]) assert.equal(isInboxUrl(bad, BRIDGE, folder), false, `${bad} (${folder})`);
  assert.equal(isInboxUrl(`https://127.0.0.1:8737/login#t=${TOKEN}`, 'https://127.0.0.1:8737'), false);
});

test('short addresses', () => {
  assert.equal(shortAddress('0x1234567890abcdef1234567890abcdef12345678'), '0x1234…5678');
  assert.equal(shortAddress('0x12'), '0x12');
  assert.equal(shortAddress(null), '');
});
