"""Issue 8 item 1: a hostile site page must have no way into the wallet sign-in.

Played the way the attacker played it, in real Chromium with the real extension, against real
processes (a relay, Alice's bridge, and Bob's bridge standing in for the attacker's installation).
The hostile page is the hey.xyz replica with the attacker's script injected before the site's own.

(a) The page re-announces a proxy of the user's real EIP-6963 provider. When asked to sign, the
    proxy first has the real wallet sign the *attacker's* installation statement, then forwards the
    genuine request. The attacker must end up with no signature and no installation for the address.
(b) The page answers for the wallet itself (the content relay accepted any reply from ``window``):
    the attacker's own account "signs" and the bridge would switch to it and revoke the user's
    identity. identity.json, the bridge database and the relay log must stay byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Page, Playwright, expect

from bridge import identity
from bridge.relay.client import RelayClient, RelayError
from e2e.demo import TIMEOUT_MS, World, open_dm, pair_via_popup, world
from e2e.test_wallet import PROVIDER_SCRIPT, TestWallet, db_dump, relay_dump, sign_in_on_page, user_presses_connect

pytestmark = pytest.mark.e2e

# (a) Keep the user's real provider, re-announce a proxy under the same info after it (the last
# announcement per uuid used to win). The proxy gets the attacker's statement signed first.
PROXY_SCRIPT = """
(() => {
  const log = { announced: 0, proxied: 0, stolen: 0 };
  Object.defineProperty(window, '__proxyLog', { value: log });
  const proxies = new WeakSet();
  window.addEventListener('eip6963:announceProvider', (event) => {
    const detail = event.detail;
    if (!detail || proxies.has(detail.provider)) return;
    const real = detail.provider;
    const proxy = {
      async request(args) {
        log.proxied += 1;
        if (args && args.method === 'personal_sign') {
          const text = await window.__attackerText(args.params[1]);
          const hex = '0x' + [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('');
          const sig = await real.request({ method: 'personal_sign', params: [hex, args.params[1]] });
          log.stolen += 1;
          await window.__attackerGot(text, sig);
        }
        return real.request(args);
      },
      on(...a) { return real.on(...a); },
      removeListener(...a) { return real.removeListener(...a); },
    };
    proxies.add(proxy);
    setTimeout(() => {
      log.announced += 1;
      window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info: detail.info, provider: proxy }) }));
    }, 0);
  });
})();
"""

# (b) Answer every wallet question on the window channel before the extension's own script can.
ANSWER_SCRIPT = """
(() => {
  const log = { requests: 0, knockAnswered: false };
  Object.defineProperty(window, '__answerLog', { value: log });
  window.addEventListener('message', async (event) => {
    const d = event.data;
    if (event.source !== window || !d || typeof d !== 'object') return;
    if (d['parley-wallet'] === 'reply' && d.id === 'page-1') log.knockAnswered = true;
    if (d['parley-wallet'] !== 'request' || d.id === 'page-1') return;
    event.stopImmediatePropagation();
    log.requests += 1;
    let result;
    if (d.op === 'discover') result = { providers: [{ uuid: 'evil-wallet', name: 'Test Wallet', icon: '', rdns: '' }] };
    else if (d.op === 'accounts') result = { accounts: [await window.__attackerAddress()] };
    else if (d.op === 'sign') result = { signature: await window.__attackerSign(d.args.text) };
    window.postMessage({ 'parley-wallet': 'reply', id: d.id, result }, location.origin);
  }, { capture: true });
  // And knock on the channel unasked, as any page can: does anything in the page answer?
  setTimeout(() => {
    window.postMessage({ 'parley-wallet': 'request', id: 'page-1', op: 'discover', args: {} }, location.origin);
  }, 500);
})();
"""


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright) -> Iterator[World]:
    with world(playwright=playwright_session) as w:
        yield w


@pytest.fixture(scope="module")
def victim_wallet(wd: World) -> TestWallet:
    """The user's real browser wallet: injected into every page of Alice's browser, as wallets are."""
    wallet = TestWallet()
    wd.alice_browser.context.expose_function("__testWallet", wallet.handle)
    wd.alice_browser.context.add_init_script(PROVIDER_SCRIPT)
    return wallet


@pytest.fixture(scope="module")
def popup(wd: World, victim_wallet: TestWallet) -> Page:
    return pair_via_popup(wd.alice_browser, wd.alice)


def files(wd: World, home: Path) -> dict[str, Any]:
    return {"identity.json": (home / "identity.json").read_bytes(), "db": db_dump(home), "relay": relay_dump(wd)}


def active(wd: World, address: str) -> set[str]:
    with RelayClient(wd.relay_url) as relay:
        return set(identity.installations(address, relay.identity(address)))


def attacker_installation(wd: World) -> identity.Statement:
    """Bob's installation keys (the attacker's bridge), read from his public identity log."""
    iid = json.loads((wd.bob.home / "identity.json").read_text())["installation_id"]
    with RelayClient(wd.relay_url) as relay:
        records = relay.identity(wd.bob.address)
    for raw in records:
        st = identity.Statement.parse(identity.SignedStatement.from_record(raw).text)
        if st.installation_id == iid and st.action == "authorize":
            return st
    raise AssertionError("Bob's authorization is not on the relay")


def test_hostile_page_proxy_provider_cannot_get_the_attackers_statement_signed(wd: World, victim_wallet: TestWallet, popup: Page) -> None:
    bob = attacker_installation(wd)
    got: list[tuple[str, str]] = []

    def attacker_text(address: str) -> str:
        return identity.authorize_statement(address, bob.installation_id, bob.signing_key, bob.identity_key).text()

    page = wd.alice_browser.context.new_page()
    page.expose_function("__attackerText", attacker_text)
    page.expose_function("__attackerGot", lambda text, sig: got.append((text, sig)))
    page.add_init_script(PROXY_SCRIPT)
    page.goto(wd.replicas.url("hey.xyz", "/u/bob"))
    w = open_dm(page, "lens:bob")
    before_bob = files(wd, wd.bob.home)

    sign_in_on_page(wd, page, w, victim_wallet)

    # Whatever the attacker obtained, it tries to use it, as its bridge's wallet.complete would.
    for text, sig in got:
        with RelayClient(wd.relay_url) as relay:
            try:
                relay.publish_identity(victim_wallet.address, identity.SignedStatement(text, bytes.fromhex(sig[2:])).to_record())
            except RelayError:
                pass
    assert got == [], "the hostile page got the user's wallet to sign the attacker's installation statement"
    assert bob.installation_id not in active(wd, victim_wallet.address)
    assert page.evaluate("window.__proxyLog.proxied") == 0, "the extension asked the page's (proxied) provider"
    assert victim_wallet.origins() <= {wd.alice.url}, f"the wallet was asked from {victim_wallet.origins()}"
    assert files(wd, wd.bob.home)["identity.json"] == before_bob["identity.json"]
    page.close()


def test_hostile_page_answering_for_the_wallet_changes_nothing(wd: World, victim_wallet: TestWallet, popup: Page) -> None:
    attacker = Account.create()
    page = wd.alice_browser.context.new_page()
    page.expose_function("__attackerAddress", lambda: attacker.address)
    page.expose_function("__attackerSign", lambda text: "0x" + bytes(attacker.sign_message(encode_defunct(text=text)).signature).hex())
    page.add_init_script(ANSWER_SCRIPT)
    page.goto(wd.replicas.url("hey.xyz", "/u/bob"))
    w = open_dm(page, "lens:bob")
    me = json.loads((wd.alice.home / "identity.json").read_text())["address"]
    before = files(wd, wd.alice.home)
    calls_before = len(victim_wallet.calls)

    # The user presses "Connect wallet": the extension opens the bridge's own page, where the
    # hostile page cannot reach; the user signs nothing there this time.
    tab = user_presses_connect(wd, page, w)
    expect(tab.locator('[data-parley="signin-current"]')).to_have_text(me, timeout=TIMEOUT_MS)
    wd.alice_browser.screenshot(page, "attack-b-answering-page")
    tab.close()

    assert json.loads((wd.alice.home / "identity.json").read_text())["address"] == me
    assert files(wd, wd.alice.home) == before, "identity.json, the database or the relay log changed"
    assert page.evaluate("window.__answerLog.requests") == 0, "the extension asked the page's window for a wallet"
    assert page.evaluate("window.__answerLog.knockAnswered") is False, "something in the page answers wallet requests"
    assert len(victim_wallet.calls) == calls_before
    page.close()
