"""Sign in with the browser wallet (issue 4 part 3; issue 8 item 1), against REAL processes (a relay,
Alice's and Bob's ``parley run``) and real Chromium with the extension (DESIGN.md "Identity").

Sign-in happens on the bridge's own page (``http://127.0.0.1:PORT/signin``), which "Connect wallet"
in the widget (or the popup, or ``parley signin``) opens in a new tab through a one-time link. A test
EIP-6963 provider ("Test Wallet") is injected into every page of Alice's browser, as a wallet
extension does (``add_init_script`` on the context); its key is held by THIS test (eth-account) and
signing happens in Python through ``expose_function``, so the key never enters a page. The wallet
records the origin of every page that asks it something.

The tests run in file order: the failures first (each must change nothing: identity.json, the bridge
database, the relay log), then the successful sign-in, the separate confirmed revocation of the
previous identity, and revoking another installation of the wallet with a wallet-signed statement.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import FrameLocator, Page, Playwright, expect

from bridge import identity
from bridge.api.wallet import (
    ExpiredStatement,
    MalformedSignature,
    PendingStatements,
    UnknownStatement,
    WrongSigner,
    check_signature,
    parse_signature,
)
from e2e.demo import TIMEOUT_MS, RawWs, World, open_dm, pair_via_popup, world
from e2e.harness import wait_until
from tests.procs import parley, whoami

pytestmark = pytest.mark.e2e

ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><circle cx="16" cy="16" r="14" fill="#f6851b"/></svg>'
ICON = "data:image/svg+xml;base64," + base64.b64encode(ICON_SVG.encode()).decode()

PROVIDER_SCRIPT = """
(() => {
  const listeners = new Map();
  const provider = {
    isTestWallet: true,
    async request(args) {
      const method = String(args && args.method || '');
      const params = Array.isArray(args && args.params) ? args.params : [];
      const out = await window.__testWallet(location.origin, method, params);
      if (out.emit) setTimeout(() => { for (const fn of listeners.get(out.emit[0]) || []) fn(out.emit[1]); }, 0);
      if (out.error) { const e = new Error(out.error.message); e.code = out.error.code; throw e; }
      return out.result;
    },
    on(event, fn) { if (!listeners.has(event)) listeners.set(event, new Set()); listeners.get(event).add(fn); return provider; },
    removeListener(event, fn) { const s = listeners.get(event); if (s) s.delete(fn); return provider; },
  };
  const info = Object.freeze({ uuid: '6b1c3c52-52d3-4e7f-9a52-0c3b1b2f7e11', name: 'Test Wallet', icon: %s, rdns: 'org.parley.testwallet' });
  const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
})();
""" % json.dumps(ICON)


class TestWallet:
    """The wallet behind the injected provider. ``mode``: ok | reject | wrong-account | switch."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.account = Account.create()
        self.other = Account.create()
        self.mode = "ok"
        self.calls: list[tuple[str, list[Any]]] = []
        self.asked_from: list[str] = []

    @property
    def address(self) -> str:
        return str(self.account.address)

    def origins(self) -> set[str]:
        """The page origins the wallet was asked from (a real wallet shows this in its prompt)."""
        return set(self.asked_from)

    def handle(self, origin: str, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append((method, params))
        self.asked_from.append(origin)
        if method == "eth_requestAccounts":
            return {"result": [self.address]}
        if method == "eth_accounts":
            if self.mode == "switch":  # the user picked another account in the wallet meanwhile
                return {"result": [self.other.address], "emit": ["accountsChanged", [self.other.address]]}
            return {"result": [self.address]}
        if method == "personal_sign":
            if self.mode == "reject":
                return {"error": {"code": 4001, "message": "User rejected the request."}}
            data, addr = params
            assert isinstance(data, str) and data.startswith("0x") and addr.lower() == self.address.lower()
            signer = self.other if self.mode == "wrong-account" else self.account
            signed = signer.sign_message(encode_defunct(primitive=bytes.fromhex(data[2:])))
            return {"result": "0x" + bytes(signed.signature).hex()}
        return {"error": {"code": 4200, "message": f"unsupported method {method}"}}

    def signs(self) -> list[list[Any]]:
        return [p for m, p in self.calls if m == "personal_sign"]


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright) -> Iterator[World]:
    with world(playwright=playwright_session) as w:
        yield w


@pytest.fixture(scope="module")
def test_wallet() -> TestWallet:
    return TestWallet()


@pytest.fixture(scope="module")
def ui(wd: World, test_wallet: TestWallet) -> dict[str, Any]:
    """Alice paired; the Test Wallet in every page of her browser; her Lens tab on Bob's profile; the widget open."""
    popup = pair_via_popup(wd.alice_browser, wd.alice)
    wd.alice_browser.context.expose_function("__testWallet", test_wallet.handle)
    wd.alice_browser.context.add_init_script(PROVIDER_SCRIPT)
    page = wd.alice_browser.context.new_page()
    page.goto(wd.replicas.url("hey.xyz", "/u/bob"))
    w = open_dm(page, "lens:bob")
    expect(w.locator('[data-parley="me"]')).to_have_attribute("data-address", wd.alice.address.lower(), timeout=TIMEOUT_MS)
    return {"page": page, "widget": w, "popup": popup}


def relay_records(wd: World, address: str) -> list[str]:
    r = requests.get(f"{wd.relay_url}/v1/identity/{address}", timeout=10)
    r.raise_for_status()
    return list(r.json()["records"])


def relay_dump(wd: World) -> list[str]:
    """The relay's identity log and installation index (its database, read-only)."""
    conn = sqlite3.connect(f"file:{wd.tmp / 'relay.db'}?mode=ro", uri=True)
    try:
        return [line for line in conn.iterdump() if '"identity"' in line or '"installations"' in line]
    finally:
        conn.close()


def db_dump(home: Path) -> list[str]:
    """The bridge database, less the paired extension's ``api_tokens.last_used``: a live socket
    refreshes it once a minute (bookkeeping of the pairing, not something a sign-in changed)."""
    conn = sqlite3.connect(f"file:{home / 'parley.db'}?mode=ro", uri=True)
    copy = sqlite3.connect(":memory:")
    try:
        conn.backup(copy)
        copy.execute("UPDATE api_tokens SET last_used = NULL")
        return list(copy.iterdump())
    finally:
        copy.close()
        conn.close()


def snapshot(wd: World, wallet: TestWallet) -> dict[str, Any]:
    return {
        "identity.json": (wd.alice.home / "identity.json").read_bytes(),
        "db": db_dump(wd.alice.home),
        "relay": relay_dump(wd),
        "relay-old": relay_records(wd, wd.alice.address),
        "relay-new": relay_records(wd, wallet.address),
        "relay-other": relay_records(wd, str(wallet.other.address)),
        "whoami": whoami(wd.alice.home)["address"],
    }


def user_presses_connect(wd: World, page: Page, w: FrameLocator) -> Page:
    """The user presses "Connect wallet" in the widget; returns the sign-in tab the extension opened."""
    context = wd.alice_browser.context
    with context.expect_page(timeout=TIMEOUT_MS) as opened:
        w.locator('[data-parley="connect-wallet"]').click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == f"{wd.alice.url}/signin", tab.url  # the bridge's own page; the spent token is gone from the URL
    expect(w.locator('[data-parley="wallet-status"]')).to_have_attribute("data-state", "ok", timeout=TIMEOUT_MS)
    return tab


def choose_wallet(tab: Page, wallet: TestWallet, installation_id: str) -> None:
    """On the sign-in page: pick the Test Wallet; the page shows what would be authorized."""
    provider = tab.locator('[data-parley="wallet-provider"]', has_text="Test Wallet")
    expect(provider).to_have_count(1, timeout=TIMEOUT_MS)
    # The icon is the provider's data: URI, rendered as an <img>, never as markup.
    expect(provider.locator("img")).to_have_attribute("src", ICON)
    provider.click()
    expect(tab.locator('[data-parley="confirm-box"]')).to_be_visible(timeout=TIMEOUT_MS)
    expect(tab.locator('[data-parley="confirm-address"]')).to_have_text(wallet.address)
    expect(tab.locator('[data-parley="confirm-installation"]')).to_have_text(installation_id)


def complete_signin(tab: Page, wallet: TestWallet, installation_id: str, state: str = "ok") -> None:
    signs = len(wallet.signs())
    choose_wallet(tab, wallet, installation_id)
    assert len(wallet.signs()) == signs, "nothing is signed before the user confirms"
    tab.locator('[data-parley="confirm"]').click()
    expect(tab.locator('[data-parley="signin-status"]')).to_have_attribute("data-state", state, timeout=TIMEOUT_MS)


def sign_in_on_page(wd: World, page: Page, w: FrameLocator, wallet: TestWallet) -> None:
    """The user signs in with ``wallet`` the way the extension asks, starting from the site page."""
    tab = user_presses_connect(wd, page, w)
    complete_signin(tab, wallet, whoami(wd.alice.home)["installation_id"])
    tab.close()


def expect_failure(wd: World, ui: dict[str, Any], wallet: TestWallet, mode: str, message: str, shot: str) -> None:
    before = snapshot(wd, wallet)
    wallet.mode = mode
    tab = user_presses_connect(wd, ui["page"], ui["widget"])
    complete_signin(tab, wallet, whoami(wd.alice.home)["installation_id"], state="error")
    status = tab.locator('[data-parley="signin-status"]')
    expect(status).to_contain_text(message)
    expect(status).to_contain_text("Nothing was changed")
    wd.alice_browser.screenshot(tab, f"wallet-{shot}")
    tab.close()
    assert snapshot(wd, wallet) == before
    expect(ui["widget"].locator('[data-parley="me"]')).to_have_attribute("data-address", wd.alice.address.lower())
    expect(ui["popup"].locator('[data-parley="address"]')).to_have_text(wd.alice.address)


# --- pure pieces (bridge/api/wallet.py) --------------------------------------------------------------


def _statement(address: str) -> identity.Statement:
    return identity.authorize_statement(address, _iid(), b"\x01" * 32, b"\x02" * 32)


def _iid() -> str:
    from bridge.protocol.ids import installation_id

    return installation_id(b"\x01" * 32, b"\x02" * 32)


def test_pending_statements_single_use_and_expiry() -> None:
    now = [1_000_000.0]
    pending = PendingStatements(ttl=60, clock=lambda: now[0])
    acct = Account.create()
    prepared = pending.add(_statement(acct.address))
    assert prepared.expires_at == 1_000_060
    assert pending.take(prepared.text) is prepared
    with pytest.raises(UnknownStatement):
        pending.take(prepared.text)  # single use
    with pytest.raises(UnknownStatement):
        pending.take(prepared.text.replace("Chain ID: 1", "Chain ID: 2"))  # not exactly what was prepared
    late = pending.add(_statement(acct.address))
    now[0] += 61
    with pytest.raises(ExpiredStatement):
        pending.take(late.text)


def test_signature_checks_name_the_signer() -> None:
    pending = PendingStatements()
    me, other = Account.create(), Account.create()
    prepared = pending.add(_statement(me.address))
    good = bytes(me.sign_message(encode_defunct(text=prepared.text)).signature)
    assert check_signature(prepared, good).signature == good
    bad = bytes(other.sign_message(encode_defunct(text=prepared.text)).signature)
    with pytest.raises(WrongSigner, match=f"signed by {other.address}, expected {me.address}"):
        check_signature(prepared, bad)
    with pytest.raises(MalformedSignature):
        check_signature(prepared, b"\x00" * 64 + b"\x1b")
    for text in ("0x1234", "zz" * 65, 42, "0x" + "g" * 130):
        with pytest.raises(MalformedSignature):
            parse_signature(text)


# --- the browser flow against the real bridge -----------------------------------------------------------


def test_1_user_rejects_the_signature(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    expect_failure(wd, ui, test_wallet, "reject", "You rejected the signature request in Test Wallet", "1-rejected")
    sign = test_wallet.signs()[-1]
    # personal_sign got exactly the statement the bridge prepared, hex-encoded UTF-8, and the address,
    # from the bridge's own page (the origin a real wallet shows in its prompt).
    text = bytes.fromhex(sign[0][2:]).decode()
    statement = identity.Statement.parse(text)
    assert statement.address == test_wallet.address and statement.installation_id == whoami(wd.alice.home)["installation_id"]
    assert sign[1].lower() == test_wallet.address.lower()
    assert test_wallet.origins() == {wd.alice.url}


def test_2_wallet_signs_with_another_account(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    expect_failure(
        wd, ui, test_wallet, "wrong-account", f"signed by {test_wallet.other.address}, expected {test_wallet.address}", "2-wrong-account"
    )


def test_3_account_switched_mid_way(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    signs_before = len(test_wallet.signs())
    expect_failure(wd, ui, test_wallet, "switch", "Test Wallet switched accounts", "3-switched")
    assert len(test_wallet.signs()) == signs_before, "no signature was even asked for"


def test_3b_user_cancels_at_the_confirmation(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    test_wallet.mode = "ok"
    before, signs_before = snapshot(wd, test_wallet), len(test_wallet.signs())
    tab = user_presses_connect(wd, ui["page"], ui["widget"])
    choose_wallet(tab, test_wallet, whoami(wd.alice.home)["installation_id"])
    tab.locator('[data-parley="cancel"]').click()
    expect(tab.locator('[data-parley="signin-status"]')).to_contain_text("Nothing was changed")
    tab.close()
    assert len(test_wallet.signs()) == signs_before
    assert snapshot(wd, test_wallet) == before


def test_3c_the_popup_opens_the_sign_in_page_too(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    before = snapshot(wd, test_wallet)
    with wd.alice_browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        ui["popup"].locator('[data-parley="signin"]').click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == f"{wd.alice.url}/signin"
    expect(tab.locator('[data-parley="signin-current"]')).to_have_text(wd.alice.address, timeout=TIMEOUT_MS)
    expect(tab.locator('[data-parley="wallet-provider"]', has_text="Test Wallet")).to_have_count(1, timeout=TIMEOUT_MS)
    tab.close()
    assert snapshot(wd, test_wallet) == before


def _rpc_client(wd: World) -> RawWs:
    code = parley(wd.alice.home, "pair", check=True).stdout.strip().splitlines()[-1]
    ws = RawWs(wd.alice.port, f"127.0.0.1:{wd.alice.port}", wd.alice_browser.extension_origin)
    assert "result" in ws.rpc("pair", {"code": code, "name": "test"})
    return ws


def _signin_session(wd: World, url: str) -> dict[str, str]:
    r = requests.post(f"{wd.alice.url}/api/session", json={"token": url.split("#t=", 1)[1]}, headers={"Origin": wd.alice.url}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"X-Parley-Session": body["session"], "X-Parley-CSRF": body["csrf"], "Origin": wd.alice.url}


def test_4_the_local_api_has_no_wallet_methods_and_the_page_api_checks_everything(
    wd: World, ui: dict[str, Any], test_wallet: TestWallet
) -> None:
    ws = _rpc_client(wd)  # pairing writes its token: snapshot after it
    before = snapshot(wd, test_wallet)
    try:
        # The paired extension can no longer drive a sign-in: it only gets a link to the page.
        for method, params in (("wallet.prepare", {"address": test_wallet.address}), ("wallet.complete", {"text": "x", "signature": "0x"})):
            assert ws.rpc(method, params, rid=2)["error"]["code"] == -32601
        link = ws.rpc("signin.link", rid=3)["result"]["url"]
        assert re.fullmatch(rf"{re.escape(wd.alice.url)}/signin#t=[A-Za-z0-9_-]{{43}}", link), link
    finally:
        ws.close()
    h = _signin_session(wd, link)
    api = f"{wd.alice.url}/api/signin"
    r = requests.post(f"{api}/complete", json={"text": "parley wants you to sign this", "signature": "0x" + "11" * 65}, headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown", r.text
    prepared = requests.post(f"{api}/prepare", json={"address": test_wallet.address}, headers=h, timeout=10).json()
    assert prepared["address"] == test_wallet.address and prepared["expires_at"] > time.time()
    assert prepared["installation_id"] == whoami(wd.alice.home)["installation_id"]
    r = requests.post(f"{api}/complete", json={"text": prepared["text"], "signature": "0x1234"}, headers=h, timeout=10)
    assert r.json()["error"]["code"] == "malformed", r.text
    prepared = requests.post(f"{api}/prepare", json={"address": test_wallet.address}, headers=h, timeout=10).json()
    r = requests.post(f"{api}/complete", json={"text": prepared["text"], "signature": "0x" + "00" * 64 + "1b"}, headers=h, timeout=10)
    assert r.json()["error"]["code"] == "malformed", r.text
    assert requests.post(f"{api}/prepare", json={"address": "0x1234"}, headers=h, timeout=10).status_code == 400
    # A good signature without the right CSRF token, or from another origin, or without the session.
    prepared = requests.post(f"{api}/prepare", json={"address": test_wallet.address}, headers=h, timeout=10).json()
    good = "0x" + bytes(test_wallet.account.sign_message(encode_defunct(text=prepared["text"])).signature).hex()
    for headers in (
        {**h, "X-Parley-CSRF": "A" * 32},
        {k: v for k, v in h.items() if k != "X-Parley-CSRF"},
        {**h, "Origin": "https://hey.xyz"},
        {k: v for k, v in h.items() if k != "X-Parley-Session"},
        {**h, "Host": "evil.example"},
    ):
        r = requests.post(f"{api}/complete", json={"text": prepared["text"], "signature": good}, headers=headers, timeout=10)
        assert r.status_code in (401, 403), (headers, r.text)
    # Revoking "the previous identity" when there is none, or a revoke statement signed by another account.
    r = requests.post(f"{api}/revoke-previous", json={"address": wd.alice.address}, headers=h, timeout=10)
    assert r.json()["error"]["code"] == "nothing-to-revoke"
    assert snapshot(wd, test_wallet) == before


def test_5_sign_in_succeeds_and_the_bridge_acts_for_the_wallet(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    old = wd.alice.address
    test_wallet.mode = "ok"
    w = ui["widget"]
    tab = user_presses_connect(wd, ui["page"], w)
    expect(tab.locator('[data-parley="signin-current"]')).to_have_text(old, timeout=TIMEOUT_MS)
    iid = whoami(wd.alice.home)["installation_id"]
    expect(tab.locator('[data-parley="signin-installation"]')).to_have_text(iid)
    complete_signin(tab, test_wallet, iid)
    status = tab.locator('[data-parley="signin-status"]')
    expect(status).to_contain_text(test_wallet.address)
    wd.alice_browser.screenshot(tab, "wallet-5-signed-in-page")
    expect(w.locator('[data-parley="me"]')).to_have_attribute("data-address", test_wallet.address.lower(), timeout=TIMEOUT_MS)
    expect(ui["popup"].locator('[data-parley="address"]')).to_have_text(test_wallet.address, timeout=TIMEOUT_MS)
    expect(ui["popup"].locator('[data-parley="did"]')).to_have_text(f"did:pkh:eip155:1:{test_wallet.address}")
    wd.alice_browser.screenshot(ui["page"], "wallet-5-signed-in")

    me = whoami(wd.alice.home)
    assert me["address"] == test_wallet.address and me["did"] == f"did:pkh:eip155:1:{test_wallet.address}"
    ident = json.loads((wd.alice.home / "identity.json").read_text())
    assert ident["previous_address"] == old and ident["wallet"] == "browser"
    ws = _rpc_client(wd)
    try:
        st = ws.rpc("status", rid=2)["result"]
        assert st["address"] == test_wallet.address and st["installation_id"] == me["installation_id"]
    finally:
        ws.close()

    # Others see the wallet address on the relay. The old identity is NOT revoked automatically…
    assert parley(wd.bob.home, "can-message", test_wallet.address).returncode == 0
    assert parley(wd.bob.home, "can-message", old).returncode == 0
    # …not for another address than the one shown, nor without the page's CSRF token…
    stored = json.loads(tab.evaluate("sessionStorage.getItem('parley.signin')"))
    h = {"X-Parley-Session": stored["session"], "X-Parley-CSRF": stored["csrf"], "Origin": wd.alice.url}
    r = requests.post(f"{wd.alice.url}/api/signin/revoke-previous", json={"address": str(test_wallet.other.address)}, headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "nothing-to-revoke", r.text
    r = requests.post(f"{wd.alice.url}/api/signin/revoke-previous", json={"address": old}, headers={**h, "X-Parley-CSRF": "A" * 32}, timeout=10)
    assert r.status_code == 403
    assert parley(wd.bob.home, "can-message", old).returncode == 0
    # …the page offers it as a separate step, and only a confirmation does it.
    expect(tab.locator('[data-parley="previous-address"]')).to_have_text(old, timeout=TIMEOUT_MS)
    tab.locator('[data-parley="revoke-previous"]').click()
    expect(tab.locator('[data-parley="revoke-previous-address"]')).to_have_text(old)
    tab.locator('[data-parley="revoke-previous-cancel"]').click()
    assert parley(wd.bob.home, "can-message", old).returncode == 0
    tab.locator('[data-parley="revoke-previous"]').click()
    tab.locator('[data-parley="revoke-previous-confirm"]').click()
    expect(status).to_contain_text(f"Revoked this installation for {old}", timeout=TIMEOUT_MS)
    expect(tab.locator('[data-parley="previous-box"]')).to_be_hidden()
    assert parley(wd.bob.home, "can-message", old).returncode == 3
    ui["signin_tab"] = tab

    # A message sent to the wallet address arrives, live, in Alice's open widget.
    text = "hello to your real wallet"
    parley(wd.bob.home, "send", test_wallet.address, text, check=True)
    expect(w.locator('[data-parley="message"][data-direction="in"]', has_text=text)).to_have_count(1, timeout=TIMEOUT_MS)
    # And Alice (now the wallet address) answers; Bob's bridge receives it from the wallet address.
    w.locator('[data-parley="composer"]').fill("got it")
    w.locator('[data-parley="send"]').click()
    expect(w.locator('[data-parley="message"][data-direction="out"]', has_text="got it")).to_have_count(1, timeout=TIMEOUT_MS)

    def bob_got_it() -> bool:
        parley(wd.bob.home, "sync")
        out = parley(wd.bob.home, "messages", test_wallet.address).stdout
        return "got it" in out

    wait_until(bob_got_it, timeout=30, what="Bob receives the reply from the wallet address")
    wd.alice_browser.screenshot(ui["page"], "wallet-6-message-to-wallet-address")


def test_6_the_wallet_revokes_another_of_its_installations_on_the_page(wd: World, ui: dict[str, Any], test_wallet: TestWallet) -> None:
    from bridge.crypto import primitives as P
    from bridge.protocol.ids import installation_id
    from bridge.relay.client import RelayClient

    # The user's other laptop: an installation the wallet authorized earlier.
    (_, ed_pub), (_, x_pub) = P.ed25519_keypair(), P.x25519_keypair()
    laptop = installation_id(ed_pub, x_pub)
    statement = identity.authorize_statement(test_wallet.address, laptop, ed_pub, x_pub)
    signed = identity.SignedStatement(statement.text(), bytes(test_wallet.account.sign_message(encode_defunct(text=statement.text())).signature))
    with RelayClient(wd.relay_url) as relay:
        relay.publish_identity(test_wallet.address, signed.to_record())
    assert "2 installations" in parley(wd.bob.home, "can-message", test_wallet.address).stdout

    # `parley revoke` says where a browser-wallet installation is revoked.
    r = parley(wd.alice.home, "revoke", laptop)
    assert r.returncode == 2 and "parley signin" in r.stderr, r.stderr

    link = parley(wd.alice.home, "signin", check=True).stdout.strip()
    assert link.startswith(f"{wd.alice.url}/signin#t=")
    ui.pop("signin_tab").close()
    tab = wd.alice_browser.context.new_page()
    tab.goto(link)
    item = tab.locator(f'[data-parley="installation"][data-iid="{laptop}"]')
    expect(item).to_have_count(1, timeout=TIMEOUT_MS)
    expect(tab.locator('[data-parley="installation"]')).to_have_count(2)
    choose_wallet(tab, test_wallet, whoami(wd.alice.home)["installation_id"])
    tab.locator('[data-parley="cancel"]').click()  # the wallet is chosen; no new sign-in
    item.locator('[data-parley="revoke-installation"]').click()
    expect(tab.locator('[data-parley="revoke-installation-id"]')).to_have_text(laptop)
    signs = len(test_wallet.signs())
    tab.locator('[data-parley="revoke-confirm"]').click()
    status = tab.locator('[data-parley="signin-status"]')
    expect(status).to_have_attribute("data-state", "ok", timeout=TIMEOUT_MS)
    expect(status).to_contain_text(f"Revoked installation {laptop}")
    revocation = identity.Statement.parse(bytes.fromhex(test_wallet.signs()[signs][0][2:]).decode())
    assert revocation.action == "revoke" and revocation.installation_id == laptop and len(test_wallet.signs()) == signs + 1
    expect(tab.locator('[data-parley="installation"]')).to_have_count(1, timeout=TIMEOUT_MS)
    wd.alice_browser.screenshot(tab, "wallet-7-revoked-laptop")
    assert "1 installation" in parley(wd.bob.home, "can-message", test_wallet.address).stdout
    tab.close()
