// The extension's side of the bridge's proof (issue 8 item 9, docs/PROTOCOL.md §8.1), checked
// against the vectors the Python bridge produces (tests/vectors/parley_local_api_proof.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { b64uDecode, b64uEncode, pairProof, proofMessage, verifyProof } from '../../extension/common/bridge-proof.js';

const family = JSON.parse(readFileSync(new URL('../vectors/parley_local_api_proof.json', import.meta.url), 'utf8'));
const hex = (h) => Uint8Array.from(h.match(/../g).map((b) => parseInt(b, 16)));
const toHex = (bytes) => Buffer.from(bytes).toString('hex');

for (const v of family.vectors) {
  const challenge = hex(v.input.challenge);
  const hello = { v: 1, key: b64uEncode(hex(v.expected.public)), signature: b64uEncode(hex(v.expected.signature)) };
  const { origin, host } = v.input;

  test(`${v.name}: the signed bytes match the bridge's`, () => {
    assert.equal(toHex(proofMessage(challenge, origin, host)), v.expected.message);
  });

  test(`${v.name}: a genuine proof verifies, with the paired key or while pairing`, async () => {
    assert.equal(await verifyProof(hello, challenge, origin, host, hello.key), true);
    assert.equal(await verifyProof(hello, challenge, origin, host, null), true);
  });

  test(`${v.name}: pairing proofs match the bridge's, and depend on the code, the side and the challenge`, async () => {
    const key = hex(v.expected.public);
    assert.equal(toHex(await pairProof(v.input.code, 'client', challenge, key)), v.expected.pair_client);
    assert.equal(toHex(await pairProof(v.input.code, 'bridge', challenge, key)), v.expected.pair_bridge);
    assert.equal(toHex(await pairProof(v.input.code.toLowerCase().replace(/[ -]/g, ''), 'client', challenge, key)), v.expected.pair_client);
    assert.notEqual(toHex(await pairProof('ZZZZ-ZZZZ', 'client', challenge, key)), v.expected.pair_client);
    assert.notEqual(toHex(await pairProof(v.input.code, 'client', new Uint8Array(32), key)), v.expected.pair_client);
  });

  test(`${v.name}: a squatter's proofs are refused`, async () => {
    const otherChallenge = challenge.map((b, i) => (i === 0 ? b ^ 1 : b));
    const flipped = hex(v.expected.signature);
    flipped[10] ^= 0x40;
    const otherKey = b64uEncode(new Uint8Array(32).fill(7));
    const cases = [
      [hello, otherChallenge, origin, host, hello.key], // replay of an old proof
      [hello, challenge, 'chrome-extension://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', host, hello.key],
      [hello, challenge, origin, '127.0.0.1:1', hello.key], // a proof made for another port
      [{ ...hello, signature: b64uEncode(flipped) }, challenge, origin, host, hello.key],
      [hello, challenge, origin, host, otherKey], // a valid proof by a key we did not pair with
      [{ ...hello, v: 2 }, challenge, origin, host, hello.key],
      [{ ...hello, signature: `${hello.signature}=` }, challenge, origin, host, hello.key],
      [{ ...hello, key: 'A'.repeat(43) }, challenge, origin, host, null],
      [null, challenge, origin, host, null],
    ];
    for (const [h, c, o, ho, k] of cases) assert.equal(await verifyProof(h, c, o, ho, k), false, JSON.stringify([h, o, ho, k]));
  });
}

test('base64url decoding is strict', () => {
  assert.equal(b64uDecode('AAAA', 3).length, 3);
  for (const bad of ['AAAA=', 'AA+A', 'AAA', '', null, 5]) assert.equal(b64uDecode(bad, 3), null, String(bad));
  assert.equal(b64uDecode('AAF', 2), null); // non-canonical: trailing bits set
});
