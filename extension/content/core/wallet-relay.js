// Isolated-world half of the browser-wallet bridge (issue 4 part 3). The worker asks (only the worker:
// sender.id is ours and there is no sender.tab); this relays the question to content/wallet-main.js
// in the page's world over window.postMessage and hands back a validated answer. Replies come from
// the page's world, so every field is checked (common/wallet.js) and nothing secret is ever sent:
// only provider ids, the statement text the bridge prepared and the address it was prepared for.

import {
  CONTENT_WALLET, PAGE_TAG, cleanAccounts, cleanError, cleanProviders, cleanSignature,
} from '../../common/wallet.js';

const TIMEOUTS = { discover: 3000, accounts: 120000, sign: 180000 };
const pending = new Map(); // id -> {resolve, timer}
let started = false;

function onWindowMessage(event) {
  if (event.source !== window) return;
  const data = event.data;
  if (!data || typeof data !== 'object' || data[PAGE_TAG] !== 'reply' || typeof data.id !== 'string') return;
  const entry = pending.get(data.id);
  if (!entry) return;
  pending.delete(data.id);
  clearTimeout(entry.timer);
  entry.resolve(data);
}

function askPage(op, args) {
  const id = crypto.randomUUID();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      resolve({ error: { code: 'timeout', message: op === 'discover' ? 'no answer from the page' : 'the wallet did not answer in time' } });
    }, TIMEOUTS[op]);
    pending.set(id, { resolve, timer });
    window.postMessage({ [PAGE_TAG]: 'request', id, op, args }, location.origin);
  });
}

/** Ask the page's wallet; returns {ok: true, ...clean result} or {ok: false, error: {code, message, account}}. */
export async function walletOp(op, args) {
  if (!(op in TIMEOUTS)) return { ok: false, error: { code: 'bad-op', message: 'unknown operation' } };
  const reply = await askPage(op, args);
  if (reply.error) {
    const error = cleanError(reply.error);
    const account = cleanAccounts([reply.error.account])?.[0] ?? null;
    return { ok: false, error: { ...error, account } };
  }
  const result = reply.result;
  if (op === 'discover') return { ok: true, providers: cleanProviders(result?.providers) };
  if (op === 'accounts') {
    const accounts = cleanAccounts(result?.accounts);
    return accounts && accounts.length > 0
      ? { ok: true, accounts }
      : { ok: false, error: { code: 'no-accounts', message: 'the wallet gave no account', account: null } };
  }
  const signature = cleanSignature(result?.signature);
  return signature
    ? { ok: true, signature }
    : { ok: false, error: { code: 'malformed', message: 'the wallet returned a malformed signature', account: null } };
}

function validArgs(op, args) {
  if (op === 'discover') return true;
  if (!args || typeof args !== 'object' || typeof args.uuid !== 'string' || args.uuid.length > 100) return false;
  if (op === 'accounts') return true;
  return typeof args.text === 'string' && args.text.length <= 1024 && typeof args.address === 'string' && /^0x[0-9a-fA-F]{40}$/.test(args.address);
}

/** Listen for the worker's wallet questions (top frame only; loaded by content/main.js). */
export function startWalletRelay() {
  if (started || window.top !== window) return;
  started = true;
  window.addEventListener('message', onWindowMessage);
  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    if (!msg || msg.type !== CONTENT_WALLET || sender.id !== chrome.runtime.id || sender.tab) return false;
    if (!validArgs(msg.op, msg.args)) {
      sendResponse({ ok: false, error: { code: 'bad-request', message: 'bad wallet request', account: null } });
      return false;
    }
    const args = msg.op === 'discover' ? {} : { uuid: msg.args.uuid, ...(msg.op === 'sign' ? { text: msg.args.text, address: msg.args.address } : {}) };
    walletOp(msg.op, args).then(sendResponse);
    return true;
  });
}
