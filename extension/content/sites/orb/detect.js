// Orb (orb.club, formerly orb.ac) page detection: pure URL predicates (DESIGN.md "The three sites": Orb).
// Profiles: /@<handle> (Orb accounts are Lens accounts → lens:<handle>). Posts /p/<id> are not profiles.
// Orb's code is not public, so detection is strict: exactly one path segment starting with "@".

import { normalizeLensName, pathSegments, toHttpsUrl } from '../../../common/peer.js';

export const SITE = 'orb';
export const HOSTS = Object.freeze(['orb.club', 'orb.ac']);

/** True when `url` is on Orb. */
export function matchesHost(url) {
  const u = toHttpsUrl(url);
  return u !== null && HOSTS.includes(u.hostname);
}

/** `{peer, handle}` for an Orb profile URL, else null. */
export function parseProfile(url) {
  if (!matchesHost(url)) return null;
  const segs = pathSegments(toHttpsUrl(url).pathname);
  if (segs === null || segs.length !== 1 || !segs[0].startsWith('@')) return null;
  const name = normalizeLensName(segs[0].slice(1));
  return name === null ? null : { peer: `lens:${name}`, handle: name };
}

/** True when `url` is an Orb profile page. */
export function isProfile(url) {
  return parseProfile(url) !== null;
}
