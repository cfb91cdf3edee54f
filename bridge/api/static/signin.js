// The wallet sign-in page (bridge/api/signin.py; issue 8 item 1). Served by the bridge on its own
// origin: wallets inject their EIP-6963 providers (or window.ethereum) here and no site script runs
// here. Nothing is signed before the user has seen and confirmed the address and the installation
// id. Wallet data (names, icons, accounts) is untrusted: textContent and <img src> of data:image only.

import { $, api, pageSession, show } from './page.js';

const LEGACY = 'window.ethereum';
const USER_REJECTED = 4001;
const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;
const SIGNATURE_RE = /^0x[0-9a-fA-F]{130}$/;
const ICON_RE = /^data:image\/(png|svg\+xml|webp|jpeg)(;[a-z0-9=._-]+)*,[^\u0000-\u001f\u007f]*$/i;

const announced = new Map(); // uuid -> {info, provider}; the first announcement of a uuid is kept
window.addEventListener('eip6963:announceProvider', (event) => {
  const detail = event.detail;
  const info = detail?.info;
  const provider = detail?.provider;
  if (!info || typeof info.uuid !== 'string' || !provider || typeof provider.request !== 'function') return;
  if (announced.has(info.uuid) || announced.size >= 20) return;
  const name = String(info.name ?? '').replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 80) || 'Wallet';
  const icon = typeof info.icon === 'string' && info.icon.length <= 65536 && ICON_RE.test(info.icon) ? info.icon : '';
  announced.set(info.uuid, { uuid: info.uuid, name, icon, provider });
});

let session = null;
let me = null; // GET /api/signin
let chosen = null; // {wallet, address}
let accountNow = null; // the wallet's current account, from accountsChanged
let prepared = null; // the statement waiting for confirmation
let revoking = null; // installation id waiting for confirmation

function status(text, state) {
  const box = $('signin-status');
  box.textContent = text ?? '';
  box.dataset.state = state ?? '';
  box.hidden = !text;
}

function lowerAccounts(list) {
  return Array.isArray(list) ? list.filter((a) => typeof a === 'string' && ADDRESS_RE.test(a)).map((a) => a.toLowerCase()) : [];
}

function utf8Hex(text) {
  return `0x${[...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function walletError(error, name, step) {
  if (error?.code === USER_REJECTED) {
    return step === 'connect'
      ? `You declined the connection request in ${name}. Nothing was changed.`
      : `You rejected the signature request in ${name}. Nothing was changed.`;
  }
  if (error?.switched) return `${name} switched accounts during sign-in, so it was stopped. Nothing was changed; choose the wallet again.`;
  if (error?.bridge) return `Refused by the bridge: ${error.message}`;
  return `${name}: ${String(error?.message ?? error ?? 'error').slice(0, 300)}. Nothing was changed.`;
}

async function discover() {
  window.dispatchEvent(new Event('eip6963:requestProvider'));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const wallets = [...announced.values()];
  const eth = window.ethereum;
  if (wallets.length === 0 && eth && typeof eth.request === 'function') {
    wallets.push({ uuid: LEGACY, name: eth.isRabby ? 'Rabby' : eth.isMetaMask ? 'MetaMask' : 'Browser wallet', icon: '', provider: eth });
  }
  return wallets;
}

function walletButton(wallet) {
  const li = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.parley = 'wallet-provider';
  button.dataset.uuid = wallet.uuid;
  if (wallet.icon) {
    const img = document.createElement('img');
    img.alt = '';
    img.src = wallet.icon;
    button.append(img);
  }
  const label = document.createElement('span');
  label.textContent = wallet.name;
  button.append(label);
  button.addEventListener('click', () => choose(wallet));
  li.append(button);
  return li;
}

async function currentAccount(wallet) {
  const now = lowerAccounts(await wallet.provider.request({ method: 'eth_accounts' }));
  return accountNow ?? now[0] ?? null;
}

async function choose(wallet) {
  show('confirm-box', false);
  prepared = null;
  status(`Waiting for ${wallet.name}: approve the connection…`, 'busy');
  let accounts;
  try {
    accounts = lowerAccounts(await wallet.provider.request({ method: 'eth_requestAccounts' }));
  } catch (error) {
    status(walletError(error, wallet.name, 'connect'), 'error');
    return;
  }
  if (accounts.length === 0) {
    status(`${wallet.name} gave no account. Nothing was changed.`, 'error');
    return;
  }
  chosen = { wallet, address: accounts[0] };
  accountNow = null;
  if (typeof wallet.provider.on === 'function' && !wallet.watched) {
    wallet.watched = true;
    wallet.provider.on('accountsChanged', (next) => { accountNow = lowerAccounts(next)[0] ?? ''; });
  }
  try {
    prepared = await api(session, 'POST', '/api/signin/prepare', { address: chosen.address });
  } catch (error) {
    status(`The bridge could not prepare the sign-in: ${error.message}. Nothing was changed.`, 'error');
    return;
  }
  $('confirm-address').textContent = prepared.address;
  $('confirm-installation').textContent = prepared.installation_id;
  status('', '');
  show('confirm-box');
}

/** Ask the chosen wallet to sign `text` as `address`; throws on rejection or an account switch. */
async function walletSign(text, address) {
  const { wallet } = chosen;
  if ((await currentAccount(wallet)) !== address.toLowerCase()) throw { switched: true };
  const signature = await wallet.provider.request({ method: 'personal_sign', params: [utf8Hex(text), address] });
  if (accountNow !== null && accountNow !== address.toLowerCase()) throw { switched: true };
  if (typeof signature !== 'string' || !SIGNATURE_RE.test(signature)) throw { message: 'returned a malformed signature' };
  return signature;
}

async function confirmSignin() {
  if (!prepared || !chosen) return;
  const { text, address } = prepared;
  const name = chosen.wallet.name;
  prepared = null;
  show('confirm-box', false);
  status(`Waiting for ${name}: sign the Parley statement…`, 'busy');
  try {
    const signature = await walletSign(text, address);
    let result;
    try {
      result = await api(session, 'POST', '/api/signin/complete', { text, signature });
    } catch (error) {
      throw { bridge: true, message: error.message };
    }
    status(`Signed in with ${name}: Parley now acts for ${result.address}.`, 'ok');
    await refresh();
  } catch (error) {
    status(walletError(error, name, 'sign'), 'error');
  }
}

function installationItem(inst) {
  const li = document.createElement('li');
  li.dataset.parley = 'installation';
  li.dataset.iid = inst.installation_id;
  const code = document.createElement('code');
  code.textContent = inst.installation_id;
  li.append(code, document.createTextNode(inst.this ? ' (this bridge) ' : ' '));
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.parley = 'revoke-installation';
  button.textContent = 'Revoke…';
  button.addEventListener('click', () => {
    revoking = inst.installation_id;
    $('revoke-installation-id').textContent = inst.installation_id;
    $('revoke-address').textContent = me.address;
    show('revoke-box');
  });
  li.append(button);
  return li;
}

async function confirmRevoke() {
  const iid = revoking;
  revoking = null;
  show('revoke-box', false);
  if (!iid) return;
  if (!chosen || chosen.address !== me.address.toLowerCase()) {
    status(`Choose the wallet that holds ${me.address} above first. Nothing was changed.`, 'error');
    return;
  }
  const name = chosen.wallet.name;
  status(`Waiting for ${name}: sign the revocation…`, 'busy');
  try {
    const statement = await api(session, 'POST', '/api/signin/revoke/prepare', { installation_id: iid });
    const signature = await walletSign(statement.text, statement.address);
    try {
      await api(session, 'POST', '/api/signin/revoke/complete', { text: statement.text, signature });
    } catch (error) {
      throw { bridge: true, message: error.message };
    }
    status(`Revoked installation ${iid} of ${statement.address}.`, 'ok');
    await refresh();
  } catch (error) {
    status(walletError(error, name, 'sign'), 'error');
  }
}

async function confirmRevokePrevious() {
  show('revoke-previous-confirm-box', false);
  const previous = me?.previous_address;
  if (!previous) return;
  try {
    await api(session, 'POST', '/api/signin/revoke-previous', { address: previous });
    status(`Revoked this installation for ${previous}.`, 'ok');
    await refresh();
  } catch (error) {
    status(`Not revoked: ${error.message}`, 'error');
  }
}

async function refresh() {
  me = await api(session, 'GET', '/api/signin');
  $('signin-current').textContent = me.address;
  $('signin-installation').textContent = me.installation_id;
  $('previous-address').textContent = me.previous_address ?? '';
  $('revoke-previous-address').textContent = me.previous_address ?? '';
  show('previous-box', Boolean(me.previous_address));
  const list = Array.isArray(me.installations) ? me.installations : [];
  $('installations-address').textContent = me.address;
  $('installations').replaceChildren(...list.map(installationItem));
  show('installations-box', me.wallet === 'browser' && list.length > 0);
}

async function main() {
  try {
    session = await pageSession('signin');
  } catch (error) {
    $('login-error').textContent = error.message;
  }
  if (!session) {
    show('login-needed');
    return;
  }
  try {
    await refresh();
  } catch (error) {
    sessionStorage.removeItem('parley.signin');
    $('login-error').textContent = error.message;
    show('login-needed');
    return;
  }
  show('signin');
  $('confirm').addEventListener('click', confirmSignin);
  $('cancel').addEventListener('click', () => {
    prepared = null;
    show('confirm-box', false);
    status('Cancelled. Nothing was changed.', 'error');
  });
  $('revoke-previous').addEventListener('click', () => show('revoke-previous-confirm-box'));
  $('revoke-previous-cancel').addEventListener('click', () => show('revoke-previous-confirm-box', false));
  $('revoke-previous-confirm').addEventListener('click', confirmRevokePrevious);
  $('revoke-confirm').addEventListener('click', confirmRevoke);
  $('revoke-cancel').addEventListener('click', () => { revoking = null; show('revoke-box', false); });
  const wallets = await discover();
  $('wallet-list').replaceChildren(...wallets.map(walletButton));
  show('no-wallet', wallets.length === 0);
}

main();
