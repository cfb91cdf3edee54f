// Browser-wallet sign-in, extension side (issue 8 item 1). The extension never talks to a wallet:
// wallets live in web pages, and a site page can forge or proxy anything there. Sign-in happens on
// the bridge's own page (http://127.0.0.1:PORT/signin, bridge/api/signin.py); the popup and the
// widget only ask the worker to open it through a one-time link the bridge returns (`signin.link`).

/** Widget → worker over its port, popup → worker as a message: open the bridge's sign-in page. */
export const WALLET_SIGNIN = 'parley/wallet/signin';

const TOKEN_RE = /^[A-Za-z0-9_-]{20,100}$/;

/**
 * True when `url` is exactly `<bridgeUrl>/signin#t=<token>`: the bridge's own sign-in page on the
 * bridge we are paired with, nothing else (no other host, path, query or scheme).
 */
export function isSigninUrl(url, bridgeUrl) {
  if (typeof url !== 'string' || typeof bridgeUrl !== 'string' || !/^http:\/\/(127\.0\.0\.1|localhost):\d{1,5}$/.test(bridgeUrl)) return false;
  const prefix = `${bridgeUrl}/signin#t=`;
  return url.startsWith(prefix) && TOKEN_RE.test(url.slice(prefix.length));
}

/**
 * True when `url` is exactly `<bridgeUrl>/login#t=<token>`, or `<bridgeUrl>/login?folder=requests#t=<token>`
 * when `folder` is 'requests': the bridge's own inbox page on the bridge we are paired with (issue 12).
 */
export function isInboxUrl(url, bridgeUrl, folder = 'inbox') {
  if (typeof url !== 'string' || typeof bridgeUrl !== 'string' || !/^http:\/\/(127\.0\.0\.1|localhost):\d{1,5}$/.test(bridgeUrl)) return false;
  const prefix = `${bridgeUrl}/login${folder === 'requests' ? '?folder=requests' : ''}#t=`;
  return url.startsWith(prefix) && TOKEN_RE.test(url.slice(prefix.length));
}

/** 0x1234…abcd */
export function shortAddress(address) {
  return typeof address === 'string' && address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : String(address ?? '');
}
