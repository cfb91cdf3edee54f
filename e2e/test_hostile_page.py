"""Issue 8 items 6, 7 and 9, played the way an attacker would, in real Chromium with the real
extension against a REAL bridge (``parley run`` with its embedded relay) and real SQLite.

The hostile site is the hey.xyz replica with the attacker's own script run in the page (the main
world, as the site's scripts run). Bob is a second installation on the same relay; he writes to Alice
with ``parley send`` so Alice has something unread.

* item 6, clickjacking: the page frames ``widget.html?peer=<Bob>`` itself, invisibly, over a decoy;
  the user clicks the decoy and types. Also the legitimate widget, covered or made transparent by the
  page, must neither send nor mark read.
* item 7: a Lens API URL with ``api_key=`` that fails: nothing of it reaches the page; the extension's
  scripts other than the widget cannot be fetched by the page (fingerprinting).
* item 9, port squatting: while ``parley run`` is down, a stand-in listens on its port. It must never
  receive the token or any text, and the popup says "bridge not verified".

The tests run in file order; the port-squatting one comes last (it stops and restarts the bridge).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FrameLocator, Page, Playwright, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from bridge.api.access import bridge_proof_message, normalise_code
from bridge.crypto import primitives
from e2e.demo import BUTTON, TIMEOUT_MS, Bridge, open_pair_form, pair_via_popup, widget
from e2e.harness import BrowserSession, ReplicaServer, launch_browser, replica_server, wait_until
from tests.procs import Proc, free_port, parley, whoami

pytestmark = pytest.mark.e2e

API_KEY = "sk_live_PAGE_MUST_NOT_SEE_THIS"


#: The identity cache (bridge/engine/peers.py) changes by itself, on its jittered schedule and right
#: after a message arrives (its sender is tracked for the next re-check): not something a page can
#: cause, so it is left out of "what an attack may not change". A refresh also rewrites the peer's
#: relay lists and the relay its log was found on (peer_relay_lists, peer_sources; issue 10).
IDENTITY_CACHE_TABLES = frozenset(
    {"peer_fetches", "peer_installations", "peer_revoked", "sender_rechecks", "peer_relay_lists", "peer_sources"}
)


@dataclass
class Env:
    tmp: Path
    alice: Bridge
    bob_home: Path
    bob: str
    lens_url: str
    replicas: ReplicaServer
    browser: BrowserSession
    popup: Page
    pages: dict[str, Page] = field(default_factory=dict)

    def start_alice(self) -> None:
        proc = Proc(["run", "--port", str(self.alice.port)], home=self.alice.home, PARLEY_LENS_API_URL=self.lens_url)
        self.alice.proc = proc
        proc.expect(r"listening on")
        proc.expect("subscribed to")

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.alice.home / 'parley.db'}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def unread(self) -> int:
        with self.db() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND read = 0").fetchone()[0])

    def sent_texts(self) -> list[str]:
        with self.db() as conn:
            return [r[0] for r in conn.execute("SELECT text FROM messages WHERE direction = 'out'")]

    def snapshot(self) -> dict[str, object]:
        """identity.json's bytes and every table of Alice's database (rows hashed): what an attack may
        not change. (The database file itself is in WAL mode under a running daemon, so its rows are
        compared, not its bytes.)"""
        out: dict[str, object] = {"identity.json": (self.alice.home / "identity.json").read_bytes()}
        with self.db() as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
                if table in IDENTITY_CACHE_TABLES:
                    continue
                rows = sorted(repr(tuple(r)) for r in conn.execute(f'SELECT * FROM "{table}"'))
                out[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return out

    def received(self, text: str) -> bool:
        with self.db() as conn:
            return conn.execute("SELECT 1 FROM messages WHERE direction = 'in' AND text = ?", (text,)).fetchone() is not None

    def bob_writes(self, text: str) -> None:
        parley(self.bob_home, "send", self.alice.address, text, check=True)
        wait_until(lambda: self.received(text), timeout=30, what=f"Alice's bridge to store {text!r}")


@pytest.fixture(scope="module")
def env(playwright_session: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hostile")
    alice_home, bob_home = tmp / "alice", tmp / "bob"
    parley(alice_home, "init", check=True)
    me = whoami(alice_home)
    port = free_port()
    lens_url = f"http://127.0.0.1:{free_port()}/graphql?api_key={API_KEY}"  # nothing listens there
    alice = Bridge("alice", alice_home, me["address"], me["did"], port, f"http://127.0.0.1:{port}")
    with replica_server() as replicas:
        e = Env(tmp, alice, bob_home, "", lens_url, replicas, None, None)  # type: ignore[arg-type]
        e.start_alice()
        try:
            parley(bob_home, "init", "--relay", alice.url, check=True)
            e.bob = whoami(bob_home)["address"]
            replicas.set_address("bob", e.bob)
            parley(alice_home, "contacts", "add", "lens:bob", e.bob, check=True)
            with launch_browser(tmp / "chromium", replicas.port, playwright=playwright_session) as browser:
                e.browser = browser
                e.popup = pair_via_popup(browser, alice)
                yield e
        finally:
            if alice.proc is not None:
                alice.proc.stop()


# --- item 7 ------------------------------------------------------------------------------------


def test_page_reads_no_endpoint_or_api_key_from_the_dm_button(env: Env) -> None:
    page = env.browser.context.new_page()
    page.goto(env.replicas.url("hey.xyz", "/u/alice"))  # lens:alice: not a contact, the Lens API is down
    button = page.locator(BUTTON)
    expect(button).to_have_attribute("data-parley-state", "unresolved", timeout=TIMEOUT_MS)
    # Everything the page can read: the serialised DOM (attributes included) and the button's properties.
    seen = page.evaluate(
        """() => {
          const b = document.querySelector('[data-parley="dm-button"]');
          return [document.documentElement.outerHTML, b.title, JSON.stringify({...b.dataset}), b.getAttribute('aria-label')].join('\\n');
        }"""
    )
    for leak in (API_KEY, "api_key", env.lens_url.split("?")[0], "/graphql"):
        assert leak not in seen, f"the page read {leak!r}: {seen[-400:]}"
    assert "Lens API unreachable" in (button.get_attribute("title") or "")
    page.close()


def test_page_cannot_fetch_extension_scripts_but_the_widget_loads(env: Env) -> None:
    """Only the widget is web-accessible: the page cannot load content scripts or common modules
    (fingerprinting), and the DM button's widget still opens."""
    page = env.browser.context.new_page()
    page.goto(env.replicas.url("hey.xyz", "/u/bob"))
    expect(page.locator(BUTTON)).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT_MS)
    origin = env.browser.extension_origin
    probes = [
        f"{origin}/content/main.js", f"{origin}/content/loader.js", f"{origin}/content/core/button.js",
        f"{origin}/content/sites/lens/detect.js", f"{origin}/content/dist/content.js",
        f"{origin}/common/messages.js", f"{origin}/common/peer.js", f"{origin}/manifest.json",
    ]
    results = page.evaluate(
        """async (urls) => {
          const out = {};
          for (const url of urls) {
            try { const r = await fetch(url); out[url] = r.ok ? 'ok ' + (await r.text()).length : 'status ' + r.status; }
            catch (e) { out[url] = 'failed'; }
          }
          return out;
        }""",
        probes,
    )
    readable = {u: r for u, r in results.items() if r.startswith("ok")}
    assert not readable, f"the page fetched extension files: {readable}"
    page.locator(BUTTON).click()
    expect(widget(page).locator('[data-parley="peer-address"]')).to_have_attribute("data-address", env.bob.lower(), timeout=TIMEOUT_MS)
    page.close()


# --- item 6 ------------------------------------------------------------------------------------

FRAME_THE_WIDGET = """(src) => {
  const decoy = document.createElement('button');
  decoy.id = 'decoy';
  decoy.textContent = 'Click here and type "yes I agree" to claim your prize';
  Object.assign(decoy.style, {position: 'fixed', left: '0', top: '0', width: '360px', height: '520px', zIndex: '10'});
  const frame = document.createElement('iframe');
  frame.id = 'evil';
  frame.src = src;
  Object.assign(frame.style, {position: 'fixed', left: '0', top: '0', width: '360px', height: '520px',
    opacity: '0', zIndex: '2147483647', border: '0'});
  document.body.append(decoy, frame);
}"""


def _composer_ready_or_refused(w: FrameLocator) -> str:
    """Wait until the widget either enabled its composer (it came alive) or said it refused to."""

    def state() -> str | None:
        if w.locator('[data-parley="composer"]').is_enabled():
            return "alive"
        if w.locator("body[data-parley-gate='refused']").count() == 1:
            return "refused"
        return None

    return str(wait_until(state, timeout=TIMEOUT_MS / 1000, what="the framed widget to come alive or refuse"))


def test_directly_framed_invisible_widget_neither_marks_read_nor_sends(env: Env) -> None:
    env.bob_writes("Bob: are you coming on Friday?")
    unread = env.unread()
    assert unread >= 1
    page = env.browser.context.new_page()
    page.goto(env.replicas.url("hey.xyz", "/u/carol"))
    before = env.snapshot()
    page.evaluate(FRAME_THE_WIDGET, f"{env.browser.extension_origin}/widget/widget.html?peer={env.bob.lower()}")
    w = page.frame_locator("#evil")
    outcome = _composer_ready_or_refused(w)
    # The user clicks the decoy (the invisible composer lies over it) and types what it asks for.
    box = page.locator("#evil").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 150, box["y"] + box["height"] - 30)
    page.keyboard.type("yes I agree")
    page.keyboard.press("Enter")
    after = env.snapshot()
    # Ordering anchor: the legitimate widget, opened visibly from the DM button, does mark read.
    legit = env.browser.context.new_page()
    legit.goto(env.replicas.url("hey.xyz", "/u/bob"))
    # Kept for the next test at once: were this test to fail below, a visible widget left open in
    # another tab would mark Bob's next messages read and fail the next test for the wrong reason.
    env.pages["legit"] = legit
    legit.locator(BUTTON).click()
    lw = widget(legit)
    expect(lw.locator('[data-parley="message"][data-direction="in"]').last).to_have_text(
        "Bob: are you coming on Friday?", timeout=TIMEOUT_MS
    )
    assert "yes I agree" not in env.sent_texts(), "the framed widget sent the attacker's text"
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed, f"the attack changed {changed}"
    assert outcome == "refused", "the widget framed by the page came alive"
    wait_until(lambda: env.unread() == 0, timeout=TIMEOUT_MS / 1000, what="the legitimate widget to mark read")
    page.close()


def _refused(w: FrameLocator) -> int:
    return int(w.locator("body").get_attribute("data-parley-refused") or "0")


def test_covered_or_transparent_widget_refuses_to_send_and_to_mark_read(env: Env) -> None:
    page = env.pages.pop("legit", None)
    if page is None:  # run alone: open the widget from the DM button
        page = env.browser.context.new_page()
        page.goto(env.replicas.url("hey.xyz", "/u/bob"))
        page.locator(BUTTON).click()
    w = widget(page)
    composer = w.locator('[data-parley="composer"]')
    expect(composer).to_be_enabled(timeout=TIMEOUT_MS)
    for attack, script, undo in (
        (
            "covered",
            """() => { const d = document.createElement('div'); d.id = 'cover'; d.textContent = 'Win a prize!';
               Object.assign(d.style, {position: 'fixed', inset: '0', background: '#fff', zIndex: '2147483647',
               pointerEvents: 'none'}); document.body.append(d); }""",
            "() => document.getElementById('cover').remove()",
        ),
        (
            "transparent",
            """() => document.querySelector('[data-parley="widget-container"]').style.setProperty('opacity', '0.05', 'important')""",
            """() => document.querySelector('[data-parley="widget-container"]').style.setProperty('opacity', '1', 'important')""",
        ),
    ):
        page.evaluate(script)
        # IntersectionObserver v2 reports a change after its delay (100 ms, later on a loaded machine):
        # the attack starts once the widget knows it is covered.
        expect(w.locator("body")).to_have_attribute("data-parley-actionable", "false", timeout=TIMEOUT_MS)
        refused = _refused(w)
        # Bob writes while the widget is covered: it shows up, but is not marked read.
        env.bob_writes(f"Bob, while {attack}")
        expect(w.locator('[data-parley="message"][data-direction="in"]').last).to_have_text(f"Bob, while {attack}", timeout=TIMEOUT_MS)
        wait_until(lambda: _refused(w) > refused, timeout=TIMEOUT_MS / 1000, what="the widget to refuse marking read")
        assert env.unread() >= 1, f"the {attack} widget marked the conversation read"
        # The user clicks where the decoy is (the composer lies under it) and types.
        refused = _refused(w)
        box = page.locator('iframe[data-parley="widget"]').bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 150, box["y"] + box["height"] - 30)
        page.keyboard.type(f"yes I agree ({attack})")
        page.keyboard.press("Enter")
        wait_until(lambda: _refused(w) > refused, timeout=TIMEOUT_MS / 1000, what="the widget to refuse sending")
        assert f"yes I agree ({attack})" not in env.sent_texts(), f"the {attack} widget sent"
        page.evaluate(undo)
        # Visible again: the widget marks read by itself.
        wait_until(lambda: env.unread() == 0, timeout=TIMEOUT_MS / 1000, what=f"markRead once no longer {attack}")
    # And a visible widget still sends.
    composer.fill("hello Bob, for real")
    w.locator('[data-parley="send"]').click()
    expect(w.locator('[data-parley="message"][data-direction="out"]').last).to_have_text("hello Bob, for real", timeout=TIMEOUT_MS)
    assert "hello Bob, for real" in env.sent_texts()
    page.close()


# --- item 9 ------------------------------------------------------------------------------------


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Squatter:
    """A stand-in on the bridge's port: records every frame, answers like a bridge (any key it likes,
    ``auth`` always OK, a fake history)."""

    port: int
    frames: list[str] = field(default_factory=list)
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: Its own Ed25519 key: its proofs are valid signatures, by a key the extension did not pair with.
    key: bytes = field(default_factory=lambda: primitives.ed25519_keypair()[0])

    def methods(self) -> list[str]:
        with self._lock:
            return [str(json.loads(f).get("method")) for f in self.frames]

    def handle(self, ws: ServerConnection) -> None:
        with self._lock:
            self.connections += 1
        try:
            for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode(errors="replace")
                with self._lock:
                    self.frames.append(text)
                req = json.loads(text)
                method, rid = req.get("method"), req.get("id")
                result: Any
                if method == "hello":
                    assert ws.request is not None
                    challenge = base64.urlsafe_b64decode(req["params"]["challenge"] + "==")
                    signed = bridge_proof_message(challenge, ws.request.headers["Origin"], ws.request.headers["Host"])
                    result = {"v": 1, "key": _b64u(primitives.ed25519_public(self.key)),
                              "signature": _b64u(primitives.ed25519_sign(self.key, signed))}
                elif method == "pair":
                    result = {"token": "squatter-token-" + "x" * 20, "token_id": "s1",
                              "bridge_key": _b64u(primitives.ed25519_public(self.key)), "proof": _b64u(bytes(32))}
                elif method == "messages.list":
                    result = {"messages": [{"id": "f" * 32, "peer": req["params"]["peer"], "sender": req["params"]["peer"],
                                            "recipient": req["params"]["peer"], "text": "FAKE HISTORY: send me your seed",
                                            "sent_at": 1, "direction": "in", "read": False, "state": "sent"}], "has_more": False}
                elif method == "status":
                    result = {"address": "0x" + "ee" * 20, "did": "", "installation_id": "", "unread": 0, "version": "x", "relay": None}
                elif method == "resolve":
                    result = {"address": req["params"]["peer"] if str(req["params"]["peer"]).startswith("0x") else "0x" + "ee" * 20}
                elif method == "canMessage":
                    result = {"address": req["params"].get("address"), "canMessage": True}
                else:
                    result = {"ok": True}
                ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}))
        except (ConnectionClosed, ValueError):
            pass


def test_port_squatter_never_receives_the_token_or_any_text(env: Env) -> None:
    worker = env.browser.service_worker()
    token = worker.evaluate("async () => (await chrome.storage.local.get('token')).token")
    assert isinstance(token, str) and len(token) >= 20
    assert env.alice.proc is not None
    env.alice.proc.stop()
    expect(env.popup.locator('[data-parley="status"]')).not_to_have_text("connected", timeout=TIMEOUT_MS)
    squatter = Squatter(env.alice.port)
    server = serve(squatter.handle, "127.0.0.1", env.alice.port, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = env.browser.context.new_page()
        page.goto(env.replicas.url("hey.xyz", "/u/bob"))
        page.locator(BUTTON).click()  # the widget asks the worker to reconnect at once
        w = widget(page)
        wait_until(lambda: squatter.connections > 0 and squatter.frames, timeout=TIMEOUT_MS / 1000, what="the extension to reach the squatter")
        assert token not in "\n".join(squatter.frames), "the squatter received the extension's token"
        composer = w.locator('[data-parley="composer"]')
        if composer.is_enabled():
            composer.fill("my secret plans")
            w.locator('[data-parley="send"]').click()
        expect(env.popup.locator('[data-parley="status"]')).to_have_text("bridge not verified", timeout=TIMEOUT_MS)
        received = "\n".join(squatter.frames)
        assert token not in received, "the squatter received the extension's token"
        assert "my secret plans" not in received
        assert all(json.loads(f).get("method") == "hello" for f in squatter.frames), squatter.frames
        expect(w.locator('[data-parley="message"]')).to_have_count(0)
        page.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    # The real bridge comes back on its port: the extension verifies it and reconnects with its token.
    env.start_alice()
    env.popup.locator('[data-parley="reconnect"]').click()
    expect(env.popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=45_000)


def test_squatter_at_pairing_time_never_learns_the_code(env: Env) -> None:
    """The user pairs while a stand-in answers on the port they typed: it signs with its own key, but
    the code never crosses the socket (only an HMAC proof), the stand-in cannot prove it knows the code,
    and the extension refuses it. The same code then pairs with the real bridge."""
    code = parley(env.alice.home, "pair", check=True).stdout.strip().splitlines()[-1]
    squatter = Squatter(free_port())
    server = serve(squatter.handle, "127.0.0.1", squatter.port, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    popup = env.browser.open_popup()
    try:
        open_pair_form(popup)  # the browser is paired: "Pair again…" shows the fields
        popup.locator('[data-parley="bridge-url"]').fill(f"http://127.0.0.1:{squatter.port}")
        popup.locator('[data-parley="pair-code"]').fill(code)
        popup.locator('[data-parley="pair-submit"]').click()
        # The popup may still show an earlier "not verified": first wait for this attempt to reach the squatter.
        wait_until(lambda: squatter.methods()[:2] == ["hello", "pair"], timeout=TIMEOUT_MS / 1000, what="hello and pair at the squatter")
        expect(popup.locator('[data-parley="error"]')).to_contain_text("not verified", timeout=TIMEOUT_MS)
        received = "\n".join(squatter.frames)
        for secret in (code, normalise_code(code), code.lower()):
            assert secret not in received, "the squatter received the pairing code"
        expect(popup.locator('[data-parley="status"]')).not_to_have_text("connected")
    finally:
        server.shutdown()
        thread.join(timeout=5)
    # The code is still good: it pairs with the real bridge.
    popup.locator('[data-parley="bridge-url"]').fill(env.alice.url)
    popup.locator('[data-parley="pair-code"]').fill(code)
    popup.locator('[data-parley="pair-submit"]').click()
    expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT_MS)
    popup.close()
