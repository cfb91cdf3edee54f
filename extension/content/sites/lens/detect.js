// Hey (hey.xyz) page detection: pure URL predicates (DESIGN.md "The three sites": Lens).
// Profiles: /u/<localName> (lens/ namespace) and /account/<0x…>. Everything else is not a profile.

import { normalizeAddress, normalizeLensName, pathSegments, toHttpsUrl } from '../../../common/peer.js';

export const SITE = 'lens';
export const HOSTS = Object.freeze(['hey.xyz']);

/** True when `url` is on Hey. */
export function matchesHost(url) {
  const u = toHttpsUrl(url);
  return u !== null && HOSTS.includes(u.hostname);
}

/** `{peer, handle}` for a Hey profile URL, else null. Addresses are lower-cased. */
export function parseProfile(url) {
  if (!matchesHost(url)) return null;
  const segs = pathSegments(toHttpsUrl(url).pathname);
  if (segs === null || segs.length !== 2) return null;
  const [kind, id] = segs;
  if (kind === 'u') {
    const name = normalizeLensName(id);
    return name === null ? null : { peer: `lens:${name}`, handle: name };
  }
  if (kind === 'account') {
    const address = normalizeAddress(id);
    return address === null ? null : { peer: address, handle: address };
  }
  return null;
}

/** True when `url` is a Hey profile page. */
export function isProfile(url) {
  return parseProfile(url) !== null;
}
