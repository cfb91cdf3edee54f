// Sign in with the browser wallet, worker side (issue 8 item 1; DESIGN.md "Identity").
//
// The worker never asks a wallet anything: a site page can re-announce a proxy of the wallet or
// answer for it. It asks the bridge for a one-time link to the bridge's own sign-in page
// (`signin.link`), checks that the link is that page on the paired bridge, and opens it in a new tab.
// The page (served by the bridge, no site script there) lists the wallets, shows the address and the
// installation id, and asks the user to confirm before anything is signed.

import { isInboxUrl, isSigninUrl } from '../common/wallet.js';
import { call } from './bridge.js';
import { getBridgeUrl } from './state.js';

export class WalletFlowError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'WalletFlowError';
    this.reason = reason;
  }
}

/**
 * Ask the bridge for a one-time link to one of its own pages (`method`), check it with `isExpected`
 * (exactly that page on the paired bridge) and open it in a new tab. Resolves {opened: true}; rejects
 * with WalletFlowError naming `page`.
 */
async function openBridgePage(method, params, isExpected, page) {
  let reply;
  try {
    reply = await call(method, params);
  } catch (error) {
    throw new WalletFlowError('bridge', `The bridge could not open its ${page}: ${String(error.message ?? error)}`);
  }
  const bridgeUrl = await getBridgeUrl();
  if (!reply || !isExpected(reply.url, bridgeUrl)) {
    throw new WalletFlowError('bridge', `The bridge answered with an unexpected link to its ${page}; nothing was opened.`);
  }
  await chrome.tabs.create({ url: reply.url, active: true });
  return { opened: true };
}

/** Open the bridge's sign-in page in a new tab. Resolves {opened: true}; rejects with WalletFlowError. */
export function openSignin() {
  return openBridgePage('signin.link', undefined, isSigninUrl, 'sign-in page');
}

/** Open the bridge's inbox page (issue 12), at its Requests folder when `folder` is 'requests'. */
export function openInbox(folder) {
  const which = folder === 'requests' ? 'requests' : 'inbox';
  return openBridgePage('inbox.link', { folder: which }, (url, bridge) => isInboxUrl(url, bridge, which), 'inbox page');
}
