// Table tests for the site detectors (DESIGN.md "Extension": detect.js, refined-github style):
// every parser accepts its own profile URLs with the expected peer, and rejects every other site's
// URLs plus its own non-profile pages. Run: node --test tests/js/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as lens from '../../extension/content/sites/lens/detect.js';
import * as orb from '../../extension/content/sites/orb/detect.js';
import * as firefly from '../../extension/content/sites/firefly/detect.js';

const ADDR = '0x5c7a4c3b2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a';
const ADDR_MIXED = '0x5C7A4c3b2d1e0f9a8b7c6d5e4f3a2b1c0d9e8F7A';

// [url, expected peer] — real URL shapes of each site.
const PROFILES = {
  lens: [
    ['https://hey.xyz/u/stani', 'lens:stani'],
    ['https://hey.xyz/u/alice/', 'lens:alice'],
    ['https://hey.xyz/u/yoginth?tab=posts', 'lens:yoginth'],
    ['https://hey.xyz/u/lens_dev#top', 'lens:lens_dev'],
    ['https://hey.xyz/u/Alice', 'lens:alice'],
    [`https://hey.xyz/account/${ADDR}`, ADDR],
    [`https://hey.xyz/account/${ADDR_MIXED}`, ADDR],
  ],
  orb: [
    ['https://orb.club/@stani', 'lens:stani'],
    ['https://orb.club/@alice/', 'lens:alice'],
    ['https://orb.club/@bob?ref=feed', 'lens:bob'],
    ['https://orb.ac/@carol', 'lens:carol'],
    ['https://orb.club/%40alice', 'lens:alice'],
  ],
  firefly: [
    ['https://firefly.social/profile/lens/stani', 'lens:stani'],
    ['https://firefly.social/profile/lens/lens%2Fstani', 'lens:stani'],
    ['https://firefly.social/profile/lens/alice/replies', 'lens:alice'],
    ['https://firefly.social/profile/farcaster/3', 'farcaster:3'],
    ['https://firefly.social/profile/farcaster/dwr.eth', 'farcaster:dwr.eth'],
    ['https://firefly.social/profile/farcaster/v/feed', 'farcaster:v'],
    ['https://firefly.social/profile/farcaster/alice?x=1#y', 'farcaster:alice'],
    [`https://firefly.social/profile/wallet/${ADDR}`, ADDR],
    [`https://firefly.social/profile/wallet/${ADDR_MIXED}/nfts`, ADDR],
  ],
};

// The same sites' pages that are not profiles (no button there).
const NON_PROFILES = {
  lens: [
    'https://hey.xyz/', 'https://hey.xyz/explore', 'https://hey.xyz/notifications', 'https://hey.xyz/settings',
    'https://hey.xyz/settings/account', 'https://hey.xyz/posts/0x01-0x02', 'https://hey.xyz/u/',
    'https://hey.xyz/u/alice/followers', 'https://hey.xyz/account/0x1234', 'https://hey.xyz/bookmarks',
    'https://hey.xyz/u/../settings', 'https://hey.xyz/u/%3Cscript%3E', 'https://hey.xyz/u/<script>',
    `https://hey.xyz/u/${'a'.repeat(33)}`, 'https://hey.xyz/u/al%ice', 'https://hey.xyz/u/al.ice',
    'http://hey.xyz/u/alice', 'https://hey.xyz.evil.com/u/alice', 'https://evilhey.xyz/u/alice',
    `https://hey.xyz/account/${ADDR}00`, 'https://hey.xyz/u//alice',
  ],
  orb: [
    'https://orb.club/', 'https://orb.club/p/abc123', 'https://orb.club/explore', 'https://orb.club/notifications',
    'https://orb.club/settings', 'https://orb.club/@', 'https://orb.club/@alice/posts', 'https://orb.club/alice',
    'https://orb.club/@%3Cscript%3E', `https://orb.club/@${'b'.repeat(40)}`, 'https://orb.club/@../settings',
    'https://orb.club.evil.com/@alice', 'http://orb.club/@alice',
  ],
  firefly: [
    'https://firefly.social/', 'https://firefly.social/discover', 'https://firefly.social/notification',
    'https://firefly.social/settings', 'https://firefly.social/post/lens/0x01', 'https://firefly.social/profile',
    'https://firefly.social/profile/lens', 'https://firefly.social/profile/x/elonmusk',
    'https://firefly.social/profile/x/elonmusk/replies', 'https://firefly.social/profile/lens/a/b/c',
    'https://firefly.social/profile/wallet/vitalik.eth', 'https://firefly.social/profile/farcaster/0',
    'https://firefly.social/profile/lens/%3Cimg%20src%3Dx%3E', 'https://firefly.social/profile/lens/alice/%3Cx%3E',
    `https://firefly.social/profile/farcaster/${'9'.repeat(25)}`, 'https://firefly.social/profile/tiktok/alice',
    'https://firefly.social/profile/lens/lens%2F', 'https://firefly.social/profile/lens/..%2Fsettings',
  ],
};

const SITES = { lens, orb, firefly };

for (const [name, detect] of Object.entries(SITES)) {
  test(`${name}: accepts its own profile URLs with the expected peer`, () => {
    for (const [url, peer] of PROFILES[name]) {
      const parsed = detect.parseProfile(url);
      assert.ok(parsed, `${name} should accept ${url}`);
      assert.equal(parsed.peer, peer, url);
      assert.equal(detect.isProfile(url), true, url);
      assert.equal(detect.parseProfile(new URL(url))?.peer, peer, `URL object ${url}`);
    }
  });

  test(`${name}: rejects its own non-profile pages and hostile paths`, () => {
    for (const url of NON_PROFILES[name]) {
      assert.equal(detect.parseProfile(url), null, `${name} should reject ${url}`);
    }
  });

  test(`${name}: rejects every other site's URLs (cross matrix)`, () => {
    for (const [other, table] of Object.entries(PROFILES)) {
      if (other === name) continue;
      for (const [url] of table) {
        assert.equal(detect.parseProfile(url), null, `${name} must reject ${other}'s ${url}`);
        assert.equal(detect.matchesHost(url), false, `${name} host check vs ${url}`);
      }
      for (const url of NON_PROFILES[other]) assert.equal(detect.parseProfile(url), null, url);
    }
  });

  test(`${name}: garbage input is rejected, never thrown`, () => {
    for (const junk of ['', 'not a url', 'javascript:alert(1)', null, undefined, 42, {}, 'chrome-extension://x/u/alice']) {
      assert.equal(detect.parseProfile(junk), null, String(junk));
    }
  });
}

test('peers are always well formed (lower-case addresses, lower-case names)', () => {
  for (const [name, detect] of Object.entries(SITES)) {
    for (const [url] of PROFILES[name]) {
      const { peer } = detect.parseProfile(url);
      assert.match(peer, /^(lens:[a-z0-9_]+|farcaster:[a-z0-9.-]+|0x[0-9a-f]{40})$/, url);
    }
  }
});
