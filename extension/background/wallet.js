// Sign in with the browser wallet, worker side (issue 4 part 3; DESIGN.md "Identity").
//
// The wallet lives in the web page of a site tab, so the worker reaches it through that tab's
// content script (top frame), which relays to the MAIN-world script (content/wallet-main.js):
//   discover → eth_requestAccounts → bridge `wallet.prepare {address}` → personal_sign on exactly the
//   prepared text → bridge `wallet.complete {text, signature}` (the bridge verifies and switches).
// Every failure ends the flow with a clear message; the bridge changes nothing unless `complete`
// succeeds. Results from the tab are re-validated here (the content script sits next to the page).

import {
  CONTENT_WALLET, USER_REJECTED, cleanAccounts, cleanProviders, cleanSignature, shortAddress,
} from '../common/wallet.js';
import { call } from './bridge.js';
import { setSession } from './state.js';

export class WalletFlowError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'WalletFlowError';
    this.reason = reason;
  }
}

async function askTab(tabId, op, args) {
  let reply;
  try {
    reply = await chrome.tabs.sendMessage(tabId, { type: CONTENT_WALLET, op, args }, { frameId: 0 });
  } catch {
    throw new WalletFlowError('no-page', 'Open Lens, Orb or Firefly in this tab and try again (the page did not answer).');
  }
  if (!reply || typeof reply !== 'object') throw new WalletFlowError('no-page', 'The page did not answer.');
  return reply;
}

/** The page's wallets: [{uuid, name, icon, rdns}] (icons are data:image URIs or ''). */
export async function listWallets(tabId) {
  const reply = await askTab(tabId, 'discover', {});
  return reply.ok ? cleanProviders(reply.providers) : [];
}

function walletError(error, name, step) {
  const code = error?.code;
  if (code === USER_REJECTED) {
    return new WalletFlowError('rejected', step === 'sign'
      ? `You rejected the signature request in ${name}. Nothing was changed.`
      : `You declined the connection request in ${name}. Nothing was changed.`);
  }
  if (code === 'accounts-changed') {
    const to = error.account ? ` to ${shortAddress(error.account)}` : '';
    return new WalletFlowError('accounts-changed', `${name} switched accounts${to} during sign-in, so it was stopped. Nothing was changed; connect again.`);
  }
  if (code === 'timeout') return new WalletFlowError('timeout', `${name} did not answer in time. Nothing was changed.`);
  return new WalletFlowError('wallet', `${name}: ${String(error?.message ?? 'error')}. Nothing was changed.`);
}

/**
 * Sign in with the wallet `uuid` of tab `tabId`. Resolves {address, did, installation_id, revoked};
 * rejects with WalletFlowError (reason: rejected | accounts-changed | timeout | wallet | bridge | no-page).
 */
export async function connectWallet(tabId, uuid, name) {
  const label = typeof name === 'string' && name ? name.slice(0, 80) : 'The wallet';
  const acc = await askTab(tabId, 'accounts', { uuid });
  if (!acc.ok) throw walletError(acc.error, label, 'accounts');
  const accounts = cleanAccounts(acc.accounts);
  if (!accounts || accounts.length === 0) throw new WalletFlowError('wallet', `${label} gave no account. Nothing was changed.`);
  const address = accounts[0];
  let prepared;
  try {
    prepared = await call('wallet.prepare', { address });
  } catch (error) {
    throw new WalletFlowError('bridge', `The bridge could not prepare the sign-in: ${error.message}. Nothing was changed.`);
  }
  if (!prepared || typeof prepared.text !== 'string') throw new WalletFlowError('bridge', 'The bridge sent no statement. Nothing was changed.');
  const signed = await askTab(tabId, 'sign', { uuid, text: prepared.text, address });
  if (!signed.ok) throw walletError(signed.error, label, 'sign');
  const signature = cleanSignature(signed.signature);
  if (!signature) throw new WalletFlowError('wallet', `${label} returned a malformed signature. Nothing was changed.`);
  let result;
  try {
    result = await call('wallet.complete', { text: prepared.text, signature });
  } catch (error) {
    throw new WalletFlowError('bridge', `Sign-in refused by the bridge: ${error.message}. Nothing was changed.`);
  }
  await setSession({
    identity: { address: String(result.address ?? ''), did: String(result.did ?? ''), installation_id: String(result.installation_id ?? '') },
  });
  return result;
}
