// Bridge URL validation (DESIGN.md "Extension": the popup takes what `parley run` prints; only
// loopback http is accepted; the ws URL is derived).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BridgeUrlError, DEFAULT_BRIDGE_URL, normalizeBridgeUrl, wsUrlFor } from '../../extension/common/bridge-url.js';
import { isPeer } from '../../extension/common/peer.js';

test('accepts loopback http forms and canonicalises them', () => {
  const cases = [
    ['http://127.0.0.1:8737', 'http://127.0.0.1:8737'],
    ['http://127.0.0.1:9000/', 'http://127.0.0.1:9000'],
    ['  http://127.0.0.1:9000/?token=abc  ', 'http://127.0.0.1:9000'],
    ['http://localhost:8737', 'http://localhost:8737'],
    ['127.0.0.1:8800', 'http://127.0.0.1:8800'],
    ['8801', 'http://127.0.0.1:8801'],
    ['', DEFAULT_BRIDGE_URL],
  ];
  for (const [input, expected] of cases) assert.equal(normalizeBridgeUrl(input), expected, input);
});

test('rejects non-loopback, non-http and credentialed URLs', () => {
  for (const bad of ['https://127.0.0.1:8737', 'http://example.com:8737', 'http://10.0.0.1:8737',
    'ws://127.0.0.1:8737', 'http://user:pw@127.0.0.1:8737', 'http://127.0.0.1.evil.com:80', 'file:///etc/passwd',
    'http://127.0.0.1:99999', 'javascript:alert(1)', 'http://[::1]:8737']) {
    assert.throws(() => normalizeBridgeUrl(bad), BridgeUrlError, bad);
  }
  assert.throws(() => normalizeBridgeUrl(null), BridgeUrlError);
});

test('derives the JSON-RPC WebSocket URL', () => {
  assert.equal(wsUrlFor('http://127.0.0.1:8737'), 'ws://127.0.0.1:8737/v1/rpc');
  assert.equal(wsUrlFor('http://localhost:9001/'), 'ws://localhost:9001/v1/rpc');
  assert.throws(() => wsUrlFor('http://example.com'), BridgeUrlError);
});

test('isPeer accepts exactly the peer forms the bridge resolves', () => {
  for (const ok of ['lens:alice', 'farcaster:123', 'farcaster:dwr.eth', `0x${'a'.repeat(40)}`]) assert.ok(isPeer(ok), ok);
  for (const bad of ['lens:', 'lens:Alice', 'ens:alice.eth', `0x${'A'.repeat(40)}`, '0x12', 'farcaster:0',
    'lens:<script>', 'lens:alice bob', null, 7, `lens:${'a'.repeat(40)}`]) assert.equal(isPeer(bad), false, String(bad));
});
