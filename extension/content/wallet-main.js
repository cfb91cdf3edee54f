// MAIN-world half of the browser-wallet bridge (issue 4 part 3; DESIGN.md "Identity").
//
// Wallets (MetaMask, Rabby, Rainbow, Coinbase…) inject EIP-1193 providers into web pages, announced
// through EIP-6963 (`eip6963:announceProvider` in reply to `eip6963:requestProvider`) or as
// `window.ethereum`. Extension pages never see them, and neither does our isolated-world content
// script, so this small classic script runs in the page's own world (manifest content script,
// "world": "MAIN", only on the four site origins) and talks to the isolated relay
// (content/core/wallet-relay.js) with window.postMessage.
//
// The page can read and forge everything on this channel, so only PUBLIC data crosses it: provider
// info, account addresses, the statement text the bridge prepared and the wallet's signature. Never
// the pairing token, never message text. The isolated side re-validates every reply and the bridge
// verifies the signature itself.
(() => {
  'use strict';
  const TAG = 'parley-wallet';
  const LEGACY = 'window.ethereum';
  const DISCOVER_MS = 250;
  const announced = new Map(); // uuid -> {info, provider}
  const watched = new Map(); // uuid -> {accounts: lower-case string[] | null}

  window.addEventListener('eip6963:announceProvider', (event) => {
    const detail = event.detail;
    if (!detail || typeof detail !== 'object') return;
    const { info, provider } = detail;
    if (!info || typeof info.uuid !== 'string' || !provider || typeof provider.request !== 'function') return;
    announced.set(info.uuid, {
      info: { uuid: String(info.uuid), name: String(info.name ?? ''), icon: String(info.icon ?? ''), rdns: String(info.rdns ?? '') },
      provider,
    });
  });

  function legacyProvider() {
    const eth = window.ethereum;
    return eth && typeof eth.request === 'function' ? eth : null;
  }

  function legacyName(eth) {
    if (eth.isRabby) return 'Rabby';
    if (eth.isRainbow) return 'Rainbow';
    if (eth.isCoinbaseWallet) return 'Coinbase Wallet';
    if (eth.isMetaMask) return 'MetaMask';
    return 'Browser wallet';
  }

  function providerFor(uuid) {
    if (uuid === LEGACY) return legacyProvider();
    return announced.get(uuid)?.provider ?? null;
  }

  async function discover() {
    window.dispatchEvent(new Event('eip6963:requestProvider'));
    await new Promise((resolve) => setTimeout(resolve, DISCOVER_MS));
    const list = [...announced.values()].map((p) => p.info);
    const eth = legacyProvider();
    if (list.length === 0 && eth) list.push({ uuid: LEGACY, name: legacyName(eth), icon: '', rdns: '' });
    return { providers: list };
  }

  function lower(accounts) {
    return Array.isArray(accounts) ? accounts.map((a) => String(a).toLowerCase()) : null;
  }

  function watch(uuid, provider, accounts) {
    const entry = watched.get(uuid);
    if (entry) {
      entry.accounts = accounts;
      return;
    }
    const fresh = { accounts };
    watched.set(uuid, fresh);
    if (typeof provider.on === 'function') {
      provider.on('accountsChanged', (next) => { fresh.accounts = lower(next); });
    }
  }

  function switched(uuid, address) {
    const current = watched.get(uuid)?.accounts;
    return Array.isArray(current) && current[0] !== address ? current[0] ?? null : false;
  }

  async function handle(op, args) {
    if (op === 'discover') return discover();
    const uuid = typeof args?.uuid === 'string' ? args.uuid : '';
    const provider = providerFor(uuid);
    if (!provider) throw { code: 'no-provider', message: 'that wallet is no longer in this page' };
    if (op === 'accounts') {
      const accounts = lower(await provider.request({ method: 'eth_requestAccounts' }));
      watch(uuid, provider, accounts);
      return { accounts };
    }
    if (op === 'sign') {
      const address = String(args.address ?? '').toLowerCase();
      const text = String(args.text ?? '');
      // Switched since eth_requestAccounts? (accountsChanged, or the wallet now answers another account)
      let other = switched(uuid, address);
      if (other === false) {
        const now = lower(await provider.request({ method: 'eth_accounts' }));
        if (Array.isArray(now) && now[0] !== address) other = now[0] ?? null;
      }
      if (other !== false) throw { code: 'accounts-changed', message: 'the wallet switched accounts', account: other };
      const hex = `0x${[...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
      const signature = await provider.request({ method: 'personal_sign', params: [hex, args.address] });
      other = switched(uuid, address);
      if (other !== false) throw { code: 'accounts-changed', message: 'the wallet switched accounts', account: other };
      return { signature };
    }
    throw { code: 'bad-op', message: 'unknown operation' };
  }

  window.addEventListener('message', (event) => {
    if (event.source !== window) return;
    const data = event.data;
    if (!data || typeof data !== 'object' || data[TAG] !== 'request' || typeof data.id !== 'string') return;
    handle(data.op, data.args).then(
      (result) => window.postMessage({ [TAG]: 'reply', id: data.id, result }, location.origin),
      (error) => window.postMessage({
        [TAG]: 'reply',
        id: data.id,
        error: {
          code: Number.isInteger(error?.code) ? error.code : String(error?.code ?? 'error'),
          message: String(error?.message ?? error ?? 'wallet error').slice(0, 300),
          account: typeof error?.account === 'string' ? error.account : null,
        },
      }, location.origin),
    );
  });
})();
