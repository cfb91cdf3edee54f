// Peer identifiers (DESIGN.md "Stable test hooks": lens:alice, farcaster:123, 0x…).
// Shared by the site parsers, the worker (which re-checks every peer it is sent) and the widget.

export const LENS_NAME_RE = /^[a-z0-9][a-z0-9_]{0,31}$/;
export const FARCASTER_FID_RE = /^[1-9][0-9]{0,19}$/;
export const FARCASTER_FNAME_RE = /^[a-z0-9][a-z0-9-]{0,19}(\.eth)?$/;
export const ADDRESS_RE = /^0x[0-9a-f]{40}$/;

/** Lower-case a 0x address if it is one (mixed/upper case accepted), else null. */
export function normalizeAddress(text) {
  if (typeof text !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(text)) return null;
  return text.toLowerCase();
}

/**
 * A copy of a bridge message with its addresses (peer, sender, recipient) in lower case. The bridge
 * answers with EIP-55 checksummed addresses; the extension compares addresses in lower case only.
 */
export function normalizeMessageAddresses(message) {
  if (!message || typeof message !== 'object') return message;
  const out = { ...message };
  for (const key of ['peer', 'sender', 'recipient']) {
    const lower = normalizeAddress(out[key]);
    if (lower) out[key] = lower;
  }
  return out;
}

/** A Lens local name, lower-cased, or null. */
export function normalizeLensName(text) {
  if (typeof text !== 'string') return null;
  const name = text.toLowerCase();
  return LENS_NAME_RE.test(name) ? name : null;
}

/** A Farcaster fid or fname, lower-cased, or null. */
export function normalizeFarcasterId(text) {
  if (typeof text !== 'string') return null;
  const id = text.toLowerCase();
  return isFarcasterId(id) ? id : null;
}

/** All digits → must be a fid (no leading zero); otherwise an fname. */
function isFarcasterId(id) {
  return /^[0-9]+$/.test(id) ? FARCASTER_FID_RE.test(id) : FARCASTER_FNAME_RE.test(id);
}

/** True when `peer` is a well-formed peer string the bridge's `resolve` accepts. */
export function isPeer(peer) {
  if (typeof peer !== 'string' || peer.length > 80) return false;
  if (ADDRESS_RE.test(peer)) return true;
  if (peer.startsWith('lens:')) return LENS_NAME_RE.test(peer.slice(5));
  if (peer.startsWith('farcaster:')) {
    return isFarcasterId(peer.slice(10));
  }
  return false;
}

/** Parse `url` (string or URL) into a URL, or null when it is not an https URL. */
export function toHttpsUrl(url) {
  let parsed;
  try {
    parsed = url instanceof URL ? url : new URL(String(url));
  } catch {
    return null;
  }
  return parsed.protocol === 'https:' ? parsed : null;
}

/** Split a pathname into decoded segments; null if any segment is badly encoded or empty-but-inner. */
export function pathSegments(pathname) {
  const raw = pathname.split('/').slice(1);
  if (raw.length > 0 && raw[raw.length - 1] === '') raw.pop(); // one trailing slash is fine
  const out = [];
  for (const seg of raw) {
    if (seg === '') return null;
    try {
      out.push(decodeURIComponent(seg));
    } catch {
      return null;
    }
  }
  return out;
}
