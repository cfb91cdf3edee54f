// Sign in with the browser wallet, worker side (issue 8 item 1; DESIGN.md "Identity").
//
// The worker never asks a wallet anything: a site page can re-announce a proxy of the wallet or
// answer for it. It asks the bridge for a one-time link to the bridge's own sign-in page
// (`signin.link`), checks that the link is that page on the paired bridge, and opens it in a new tab.
// The page (served by the bridge, no site script there) lists the wallets, shows the address and the
// installation id, and asks the user to confirm before anything is signed.

import { isSigninUrl } from '../common/wallet.js';
import { call } from './bridge.js';
import { getBridgeUrl } from './state.js';

export class WalletFlowError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'WalletFlowError';
    this.reason = reason;
  }
}

/** Open the bridge's sign-in page in a new tab. Resolves {opened: true}; rejects with WalletFlowError. */
export async function openSignin() {
  let reply;
  try {
    reply = await call('signin.link');
  } catch (error) {
    throw new WalletFlowError('bridge', `The bridge could not open its sign-in page: ${String(error.message ?? error)}`);
  }
  const bridgeUrl = await getBridgeUrl();
  if (!reply || !isSigninUrl(reply.url, bridgeUrl)) {
    throw new WalletFlowError('bridge', 'The bridge answered with an unexpected sign-in link; nothing was opened.');
  }
  await chrome.tabs.create({ url: reply.url, active: true });
  return { opened: true };
}
