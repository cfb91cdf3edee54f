// Firefly (firefly.social) page detection: pure URL predicates (DESIGN.md "The three sites": Firefly).
// Profiles: /profile/<lens|farcaster|wallet|x>/<id>[/<tab>]. Lens ids may be the local name or the
// percent-encoded "lens/<name>"; Farcaster ids are a fid or an fname; wallet ids are 0x addresses.
// X profiles get no button (null).

import {
  normalizeAddress, normalizeFarcasterId, normalizeLensName, pathSegments, toHttpsUrl,
} from '../../../common/peer.js';

export const SITE = 'firefly';
export const HOSTS = Object.freeze(['firefly.social']);
const TAB_RE = /^[a-z][a-z-]{0,31}$/;

/** True when `url` is on Firefly. */
export function matchesHost(url) {
  const u = toHttpsUrl(url);
  return u !== null && HOSTS.includes(u.hostname);
}

/** `{peer, handle}` for a Firefly Lens/Farcaster/wallet profile URL, else null. */
export function parseProfile(url) {
  if (!matchesHost(url)) return null;
  const segs = pathSegments(toHttpsUrl(url).pathname);
  if (segs === null || segs.length < 3 || segs.length > 4 || segs[0] !== 'profile') return null;
  if (segs.length === 4 && !TAB_RE.test(segs[3])) return null;
  const [, platform, rawId] = segs;
  if (platform === 'lens') {
    const name = normalizeLensName(rawId.startsWith('lens/') ? rawId.slice(5) : rawId);
    return name === null ? null : { peer: `lens:${name}`, handle: name };
  }
  if (platform === 'farcaster') {
    const id = normalizeFarcasterId(rawId);
    return id === null ? null : { peer: `farcaster:${id}`, handle: id };
  }
  if (platform === 'wallet') {
    const address = normalizeAddress(rawId);
    return address === null ? null : { peer: address, handle: address };
  }
  return null; // x and anything unknown
}

/** True when `url` is a Firefly profile page that gets a DM button. */
export function isProfile(url) {
  return parseProfile(url) !== null;
}
