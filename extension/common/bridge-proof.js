// The bridge proves itself before the extension sends anything (issue 8 item 9, docs/PROTOCOL.md
// §8.1). On every connect the worker sends `hello {challenge}` (32 fresh random bytes); the bridge
// answers `{v: 1, key, signature}`: Ed25519 over
//   "parley local-api v1 bridge proof" ‖ 0x00 ‖ origin ‖ 0x00 ‖ host ‖ 0x00 ‖ challenge
// with origin = the extension's own (`chrome-extension://<id>`; Firefox: `moz-extension://<uuid>`, which
// the bridge pins at pairing) and host = the socket's `127.0.0.1:PORT`.
// The key must be the one learnt at pairing. Bytes travel as unpadded base64url.

export const PROOF_CONTEXT = 'parley local-api v1 bridge proof';
export const CHALLENGE_BYTES = 32;
const B64U_RE = /^[A-Za-z0-9_-]+$/;

export function b64uEncode(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** Decode unpadded base64url of exactly `length` bytes; null when it is anything else. */
export function b64uDecode(text, length) {
  if (typeof text !== 'string' || text.length > 200 || !B64U_RE.test(text)) return null;
  let binary;
  try {
    binary = atob(text.replaceAll('-', '+').replaceAll('_', '/') + '='.repeat((4 - (text.length % 4)) % 4));
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (bytes.length !== length || b64uEncode(bytes) !== text) return null;
  return bytes;
}

export function newChallenge() {
  return crypto.getRandomValues(new Uint8Array(CHALLENGE_BYTES));
}

/** The signed bytes (see the header). */
export function proofMessage(challenge, origin, host) {
  const enc = new TextEncoder();
  const parts = [enc.encode(PROOF_CONTEXT), enc.encode(origin), enc.encode(host), challenge];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0) + parts.length - 1);
  let at = 0;
  parts.forEach((part, i) => {
    if (i > 0) out[at++] = 0;
    out.set(part, at);
    at += part.length;
  });
  return out;
}

/**
 * True when `hello` (the bridge's answer) carries `expectedKey` (base64url; null while pairing: any
 * key, which is then learnt) and a valid signature over this connection's challenge, origin and host.
 */
export async function verifyProof(hello, challenge, origin, host, expectedKey) {
  if (!hello || typeof hello !== 'object' || hello.v !== 1) return false;
  const key = b64uDecode(hello.key, 32);
  const signature = b64uDecode(hello.signature, 64);
  if (!key || !signature) return false;
  if (expectedKey !== null && hello.key !== expectedKey) return false;
  try {
    const publicKey = await crypto.subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
    return await crypto.subtle.verify({ name: 'Ed25519' }, publicKey, signature, proofMessage(challenge, origin, host));
  } catch {
    return false;
  }
}

// Pairing without sending the code (docs/PROTOCOL.md §8.1): both sides show they know the code with
// HMAC-SHA256 keyed by SHA-256(normalised code) over
//   "parley local-api v1 pairing" ‖ 0x00 ‖ side ‖ 0x00 ‖ challenge ‖ bridge public key
// (side "client" from the extension, "bridge" in the answer). A stand-in on the port learns no code
// and cannot answer.
export const PAIR_CONTEXT = 'parley local-api v1 pairing';

/** 'k7qf-m2xp' → 'K7QFM2XP' (as the bridge normalises codes). */
export function normaliseCode(code) {
  return String(code).replace(/[\s-]/g, '').toUpperCase();
}

export async function pairProof(code, side, challenge, bridgeKey) {
  const enc = new TextEncoder();
  const codeHash = await crypto.subtle.digest('SHA-256', enc.encode(normaliseCode(code)));
  const hmacKey = await crypto.subtle.importKey('raw', codeHash, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const parts = [enc.encode(PAIR_CONTEXT), enc.encode(side), new Uint8Array([...challenge, ...bridgeKey])];
  const message = new Uint8Array(parts.reduce((n, p) => n + p.length, 0) + parts.length - 1);
  let at = 0;
  parts.forEach((part, i) => {
    if (i > 0) message[at++] = 0;
    message.set(part, at);
    at += part.length;
  });
  return new Uint8Array(await crypto.subtle.sign('HMAC', hmacKey, message));
}
