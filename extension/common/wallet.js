// Browser-wallet sign-in: shapes shared by the content relay, the worker and the widget (DESIGN.md
// "Identity": the signature can come from the user's browser wallet, EIP-1193 / EIP-6963; issue 4
// part 3). Everything that comes from the page (provider list, accounts, signatures, errors) is
// hostile: these functions accept only the exact shapes below and return clean copies or null.

/** Message type: worker → content script (top frame of a site tab): {type, op, args}. */
export const CONTENT_WALLET = 'parley/content/wallet';
/** Widget → worker over the port: list the page's wallets / sign in with one ({id, uuid}). */
export const WALLET_LIST = 'wallet-list';
export const WALLET_CONNECT = 'wallet-connect';
/** Key tagging window.postMessage traffic between the isolated relay and the MAIN-world script. */
export const PAGE_TAG = 'parley-wallet';
/** The provider id used for the legacy window.ethereum fallback. */
export const LEGACY_UUID = 'window.ethereum';
/** EIP-1193 "user rejected the request". */
export const USER_REJECTED = 4001;

// Only the MIME type matters for safety: the icon is only ever assigned to <img>.src, where an SVG
// cannot run script. No control characters (no header/line tricks), bounded length.
const ICON_RE = /^data:image\/(png|svg\+xml|webp|jpeg)(;[a-z0-9=._-]+)*,[^\u0000-\u001f\u007f]*$/i;
const SIGNATURE_RE = /^0x[0-9a-fA-F]{130}$/;
const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;
const MAX_ICON = 65536;

function cleanString(value, max) {
  if (typeof value !== 'string') return null;
  const text = value.replace(/[\u0000-\u001f\u007f]/g, '').trim();
  return text && text.length <= max ? text : null;
}

/** A data: image URI we may put in <img src> (png, svg+xml, webp, jpeg), else ''. */
export function safeIcon(value) {
  return typeof value === 'string' && value.length <= MAX_ICON && ICON_RE.test(value) ? value : '';
}

/** One announced provider's public info {uuid, name, icon, rdns}, or null. */
export function cleanProvider(info) {
  if (!info || typeof info !== 'object') return null;
  const uuid = cleanString(info.uuid, 100);
  const name = cleanString(info.name, 80);
  if (!uuid || !name) return null;
  const rdns = typeof info.rdns === 'string' ? cleanString(info.rdns, 200) ?? '' : '';
  return { uuid, name, icon: safeIcon(info.icon), rdns };
}

/** At most 20 providers, unique uuids. */
export function cleanProviders(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  const seen = new Set();
  for (const item of list.slice(0, 20)) {
    const p = cleanProvider(item);
    if (p && !seen.has(p.uuid)) {
      seen.add(p.uuid);
      out.push(p);
    }
  }
  return out;
}

/** Accounts as lower-case 0x addresses (at most 20), or null when the shape is wrong. */
export function cleanAccounts(list) {
  if (!Array.isArray(list) || list.length > 20) return null;
  const out = [];
  for (const a of list) {
    if (typeof a !== 'string' || !ADDRESS_RE.test(a)) return null;
    out.push(a.toLowerCase());
  }
  return out;
}

/** A 65-byte hex signature (0x + 130 hex), or null. */
export function cleanSignature(value) {
  return typeof value === 'string' && SIGNATURE_RE.test(value) ? value : null;
}

/** An error from the page: {code: number | short string, message: ≤ 300 chars}. */
export function cleanError(error) {
  const code = error && (Number.isInteger(error.code) ? error.code : cleanString(error.code, 40));
  const message = (error && cleanString(String(error.message ?? ''), 300)) || 'the wallet reported an error';
  return { code: code ?? 'error', message };
}

/** personal_sign's first parameter: the UTF-8 bytes of `text`, hex with 0x. */
export function utf8Hex(text) {
  return `0x${[...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** 0x1234…abcd */
export function shortAddress(address) {
  return typeof address === 'string' && address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : String(address ?? '');
}
