"""Issue 3 scenarios with REAL processes: a relay, Alice's and Bob's bridges (``parley run``), two
Chromium browsers with the real extension (DESIGN.md "Extension", "Bridge → Local API", "The three
sites", "Running and testing").

One world per module (relay + bridges + replicas + browsers, see ``e2e/demo.py``). The tests run in
file order and build on each other: pairing (1) comes before the conversation (2, 3), which the
inbox page (8) lists. Screenshots of each step go into ``e2e/artifacts/scenario-*.png``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import FrameLocator, Locator, Page, Playwright, expect

from e2e.demo import (
    ALICE_FID,
    RawWs,
    BUTTON,
    TIMEOUT_MS,
    World,
    expect_message,
    open_dm,
    open_profile,
    pair_via_popup,
    ready_button,
    send_in_widget,
    widget,
    world,
)
from e2e.harness import wait_until
from tests.procs import start_relay

pytestmark = pytest.mark.e2e

HELLO = "Hi Bob, it's Alice <b>from Orb</b>"
REPLY = "Hello Alice, Bob here on Firefly"


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright) -> Iterator[World]:
    with world(playwright=playwright_session) as w:
        try:
            yield w
        finally:
            w.relay.stop()  # test 9 restarts the relay: the world stops only the first one


@pytest.fixture(scope="module")
def pages(wd: World) -> dict[str, Page]:
    """Pages kept open across scenarios (popups, Alice's Orb tab, Bob's Firefly tab)."""
    return {}


def shot(wd: World, page: Page, name: str) -> None:
    wd.alice_browser.screenshot(page, f"scenario-{name}")


def bob_addr(wd: World) -> str:
    return wd.bob.address


# --- 1 -----------------------------------------------------------------------------------------


def test_1_pairing_through_the_popup(wd: World, pages: dict[str, Page]) -> None:
    # Before pairing: not paired, no identity.
    popup = wd.alice_browser.open_popup()
    expect(popup.locator('[data-parley="status"]')).to_have_text("not paired", timeout=TIMEOUT_MS)
    expect(popup.locator('[data-parley="bridge-url"]')).to_have_value("http://127.0.0.1:8737")
    popup.close()
    pages["alice_popup"] = pair_via_popup(wd.alice_browser, wd.alice)
    shot(wd, pages["alice_popup"], "1-alice-paired")
    # Issue 11: paired, the popup shows the pairing instead of the code field and the Pair button, in
    # the popup that paired and in one opened afterwards.
    later = wd.alice_browser.open_popup()
    for p in (pages["alice_popup"], later):
        expect(p.locator('[data-parley="paired"]')).to_be_visible(timeout=TIMEOUT_MS)
        expect(p.locator('[data-parley="paired-url"]')).to_have_text(wd.alice.url)
        expect(p.locator('[data-parley="pair-code"]')).to_be_hidden()
        expect(p.locator('[data-parley="pair-submit"]')).to_be_hidden()
        expect(p.locator('[data-parley="pair-again"]')).to_be_visible()
    # "Pair again…" brings the fields back without forgetting the pairing.
    later.locator('[data-parley="pair-again"]').click()
    expect(later.locator('[data-parley="pair-code"]')).to_be_visible()
    expect(later.locator('[data-parley="status"]')).to_have_text("connected")
    later.close()
    pages["bob_popup"] = pair_via_popup(wd.bob_browser, wd.bob)
    shot(wd, pages["bob_popup"], "1-bob-paired")
    # The bridge knows one token per browser, and logged the pairing.
    listing = wd.alice.proc.output if wd.alice.proc else []
    assert any("paired" in line and "token" in line for line in listing), "".join(listing)
    assert "active" in _parley(wd, "alice", "pair", "--list")


def _parley(wd: World, who: str, *args: str) -> str:
    from tests.procs import parley

    home = wd.alice.home if who == "alice" else wd.bob.home
    return parley(home, *args, check=True).stdout


# --- 2 + 3 -------------------------------------------------------------------------------------


def test_2_orb_to_firefly_live_both_ways(wd: World, pages: dict[str, Page]) -> None:
    a = wd.alice_browser.context.new_page()
    a.goto(wd.replicas.url("orb.club", "/@bob"))
    ready_button(a, "lens:bob")
    shot(wd, a, "2-alice-on-bobs-orb-profile")
    a_w = open_dm(a, "lens:bob")
    expect(a_w.locator('[data-parley="message"]')).to_have_count(0)
    # Issue 4 part 4: the header shows the short address; the full one is in data-address.
    expect(a_w.locator('[data-parley="peer-address"]')).to_have_attribute("data-address", bob_addr(wd).lower())
    send_in_widget(a_w, HELLO)
    shot(wd, a, "2-alice-sent")
    pages["alice_orb"] = a

    b = wd.bob_browser.context.new_page()
    b.goto(wd.replicas.url("firefly.social", f"/profile/farcaster/{ALICE_FID}"))
    b_w = open_dm(b, f"farcaster:{ALICE_FID}")
    expect_message(b_w, HELLO, "in")
    # Text, not HTML.
    expect(b_w.locator('[data-parley="message"] b')).to_have_count(0)
    pages["bob_ff"] = b
    # Live, no reload: a second message from Alice appears in Bob's open widget.
    live = "are you there?"
    send_in_widget(a_w, live)
    expect_message(b_w, live, "in")
    send_in_widget(b_w, REPLY)
    shot(wd, b, "2-bob-replied")
    expect_message(a_w, REPLY, "in")
    shot(wd, a, "2-alice-sees-reply-live")
    # Bob read it in his open widget: his unread count goes back to 0.
    expect(pages["bob_popup"].locator('[data-parley="unread"]')).to_have_text("0", timeout=TIMEOUT_MS)


#: Issue 11: the open-DM path on every replica shape (test 2 did Orb's and Firefly's "direct" shapes
#: already). One tab, one document per shape (?shape=); on "unknown" the DM button is the floating one.
OPEN_DM_SHAPES = [
    ("hey.xyz", "/u/bob", "direct"), ("hey.xyz", "/u/bob", "wrapped"), ("hey.xyz", "/u/bob", "unknown"),
    ("orb.club", "/@bob", "wrapped"), ("orb.club", "/@bob", "unknown"),
    ("firefly.social", "/profile/lens/bob", "wrapped"), ("firefly.social", "/profile/lens/bob", "unknown"),
]


def test_3_lens_shows_the_whole_thread(wd: World) -> None:
    # The demo's way in (docs/demo.png is this page): the replica's test-only "Re-render header" is not shown.
    page = open_profile(wd.alice_browser, wd.replicas, "hey.xyz", "/u/bob")
    expect(page.locator('[data-replica="profile-header"]')).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator('[data-replica="rerender"]')).to_have_count(1)
    expect(page.locator('[data-replica="rerender"]')).to_be_hidden()
    expect(page.get_by_role("button", name="Re-render header")).to_have_count(0)
    w = open_dm(page, "lens:bob")
    msgs = w.locator('[data-parley="message"]')
    expect(msgs).to_have_count(3, timeout=TIMEOUT_MS)
    assert [m.get_attribute("data-direction") for m in msgs.all()] == ["out", "out", "in"]
    assert [m.locator('[data-parley="text"]').text_content() for m in msgs.all()] == [HELLO, "are you there?", REPLY]
    shot(wd, page, "3-lens-one-inbox")
    page.close()
    page = wd.alice_browser.context.new_page()
    for host, path, shape in OPEN_DM_SHAPES:
        if (host, shape) == ("hey.xyz", "direct"):
            continue  # above, through the demo's way in
        page.goto(wd.replicas.url(host, path, shape=shape))
        ready_button(page, "lens:bob").click()  # the thread loads; sending was test 2's part
        w = widget(page)
        floating = page.locator(BUTTON).evaluate("b => b.closest('[data-parley=\"dm-fallback\"]') !== null")
        assert floating == (shape == "unknown"), (host, shape)
        msgs = w.locator('[data-parley="message"]')
        expect(msgs).to_have_count(3, timeout=TIMEOUT_MS)
        assert [m.get_attribute("data-direction") for m in msgs.all()] == ["out", "out", "in"], (host, shape)
        assert [m.locator('[data-parley="text"]').text_content() for m in msgs.all()] == [HELLO, "are you there?", REPLY], (host, shape)
        if (host, shape) == ("hey.xyz", "unknown"):
            shot(wd, page, "3-lens-unknown-layout-floating-button")
    page.close()


# --- 4 -----------------------------------------------------------------------------------------


def test_4_spa_navigation_with_the_bridge(wd: World) -> None:
    page = wd.alice_browser.context.new_page()
    page.add_init_script(
        """(() => { const log = { max: 0 }; Object.defineProperty(window, '__parleyMax', { value: log });
        new MutationObserver(() => { log.max = Math.max(log.max, document.querySelectorAll('[data-parley="dm-button"]').length); })
          .observe(document, { childList: true, subtree: true }); })();"""
    )
    page.goto(wd.replicas.url("hey.xyz", "/"))
    expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT_MS)

    def go(text: str) -> None:
        before = page.url
        page.locator("#nav a, nav a", has_text=re.compile(f"^{re.escape(text)}$")).first.click()
        page.wait_for_function("before => location.href !== before", arg=before)

    def settle() -> None:
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    settle()
    expect(page.locator(BUTTON)).to_have_count(0)
    go("A post")
    expect(page.locator("h1, [data-replica='profile-header']").first).to_be_visible(timeout=TIMEOUT_MS)
    settle()
    expect(page.locator(BUTTON)).to_have_count(0)
    go("@bob")
    ready_button(page, "lens:bob")
    go("@carol")  # a contact whose wallet is not registered on the relay
    button = page.locator(BUTTON)
    expect(button).to_have_attribute("data-parley-peer", "lens:carol", timeout=TIMEOUT_MS)
    expect(button).to_have_attribute("data-parley-state", "unavailable", timeout=TIMEOUT_MS)
    expect(button).to_have_text("Not on Parley yet")
    shot(wd, page, "4-carol-not-on-parley")
    # Issue 11: the button and the widget say the same thing. Carol's name resolves to a wallet with no
    # Parley installation: "Not on Parley yet" on both.
    button.click()
    carol = widget(page)
    expect(carol.locator('[data-parley="invite"]')).to_contain_text("is not on Parley yet", timeout=TIMEOUT_MS)
    expect(carol.locator("body")).to_have_attribute("data-parley-peer-state", "unavailable")
    expect(carol.locator('[data-parley="error"]')).to_be_hidden()
    page.locator('[data-parley="widget-close"]').click()
    go("@alice")  # no contact at all for lens:alice in Alice's home: the name cannot be resolved
    expect(button).to_have_attribute("data-parley-peer", "lens:alice", timeout=TIMEOUT_MS)
    expect(button).to_have_attribute("data-parley-state", "unresolved", timeout=TIMEOUT_MS)
    expect(button).to_have_attribute("data-parley-reason", "unknown")
    expect(button).to_have_text("Couldn’t resolve")  # it said "Not on Parley yet" while the widget said this
    detail = (button.get_attribute("title") or "").split(": ", 1)[1]  # the bridge's reason, e.g. "not in your contacts"
    button.click()
    nobody = widget(page)
    expect(nobody.locator('[data-parley="error"]')).to_have_text(f"Couldn’t resolve lens:alice: {detail}", timeout=TIMEOUT_MS)
    expect(nobody.locator("body")).to_have_attribute("data-parley-peer-state", "unresolved")
    expect(nobody.locator('[data-parley="invite"]')).to_be_hidden()
    shot(wd, page, "4-alice-unresolved-both")
    page.locator('[data-parley="widget-close"]').click()
    go("@bob")
    ready_button(page, "lens:bob")
    go("Home")
    settle()
    expect(page.locator(BUTTON)).to_have_count(0, timeout=TIMEOUT_MS)
    assert page.evaluate("() => window.__parleyMax.max") == 1
    page.close()


# --- 5 -----------------------------------------------------------------------------------------


def test_5_host_page_cannot_read_widget_or_reach_bridge(wd: World, pages: dict[str, Page]) -> None:
    page = pages["alice_orb"]
    w = widget(page)
    expect_message(w, REPLY, "in")
    probe = page.evaluate(
        """() => {
          const f = document.querySelector('iframe[data-parley="widget"]');
          let doc = 'readable';
          try { void f.contentWindow.document; } catch (e) { doc = e.name; }
          return { contentDocument: f.contentDocument === null, windowDocument: doc };
        }"""
    )
    assert probe == {"contentDocument": True, "windowDocument": "SecurityError"}

    ws_url = f"ws://127.0.0.1:{wd.alice.port}/v1/rpc"
    outcome = page.evaluate(
        """(url) => new Promise((resolve) => {
          const ws = new WebSocket(url);
          ws.onopen = () => { resolve('open'); ws.close(); };
          ws.onclose = (e) => resolve('closed ' + e.code);
        })""",
        ws_url,
    )
    assert outcome == "closed 1006"
    # The bridge saw the attempt and refused it for its Origin.
    wait_until(lambda: "Origin 'https://orb.club' is not the Parley extension" in wd.alice.output(), what="refusal logged")

    # The plaintext is nowhere in the host page: not in its HTML, not in any non-extension frame.
    html = page.content()
    for text in (HELLO, REPLY, "are you there?"):
        assert text not in html
    ext = wd.alice_browser.extension_origin
    for frame in page.frames:
        if frame.url.startswith(ext):
            continue
        body = frame.locator("body").inner_text()
        assert HELLO not in body and REPLY not in body
    assert any(f.url.startswith(ext) for f in page.frames), "the widget frame is there"


# --- 6 -----------------------------------------------------------------------------------------


def _handshake(port: int, host: str, origin: str | None) -> str:
    """A raw WebSocket upgrade request; returns the response's status line."""
    ws = RawWs(port, host, origin)
    ws.close()
    return ws.status_line


def test_6_foreign_origin_host_or_no_token_refused(wd: World) -> None:
    port = wd.alice.port
    ext = wd.alice_browser.extension_origin
    good_host = f"127.0.0.1:{port}"
    assert _handshake(port, good_host, ext).startswith("HTTP/1.1 101")  # the control
    assert _handshake(port, good_host, "https://hey.xyz").startswith("HTTP/1.1 403")
    assert _handshake(port, good_host, None).startswith("HTTP/1.1 403")
    assert _handshake(port, f"evil.example:{port}", ext).startswith("HTTP/1.1 403")
    assert _handshake(port, "127.0.0.1:1", ext).startswith("HTTP/1.1 403")

    client = RawWs(port, good_host, ext)
    try:
        assert client.status_line.startswith("HTTP/1.1 101")
        client.send_text('{"jsonrpc":"2.0","id":1,"method":"status"}')
        opcode, payload = client.frame()
        assert opcode == 0x1
        reply = json.loads(payload)
        assert reply["id"] == 1 and reply["error"]["code"] == -32001
        opcode, payload = client.frame()
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 4401
    finally:
        client.close()

    # The daemon logs the last refusal as it closes the socket, which can come after our close: wait for it.
    def logged() -> str | None:
        out = wd.alice.output()
        return out if re.search(r"refused .*status before auth", out) else None

    out = wait_until(logged, timeout=TIMEOUT_MS / 1000, what="the refusal of status before auth to be logged")
    assert "Origin 'https://hey.xyz' is not the Parley extension" in out
    assert "Host 'evil.example:" in out


# --- 7 -----------------------------------------------------------------------------------------


class PortWatch:
    """A listener on a stopped bridge's port that closes every connection at once and notes when it
    came: the extension's reconnect attempts, counted (a refused port would show none)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR: the bridge just left
        self._cond = threading.Condition()
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.close()
            with self._cond:
                self.times.append(time.monotonic())
                self._cond.notify_all()

    def wait_for(self, n: int, timeout: float, what: str) -> float:
        """When the ``n``-th attempt came; fails when it does not come within ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.times) >= n, max(0.0, timeout)):
                raise AssertionError(f"{what}: {len(self.times)} reconnect attempts within {timeout:.1f}s, expected {n}")
            return self.times[n - 1]

    def __enter__(self) -> PortWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._sock.close()
        self._thread.join(10)


def _backoff() -> tuple[float, float, float, float]:
    """The worker's reconnect schedule from extension/background/bridge.js: (first delay, cap) in
    seconds and the jitter's bounds. Attempt k (k = 1, 2, …) after a drop comes min(first·2^(k-1),
    cap)·jitter after the one before; the 30 s alarm (background/index.js) can add one more."""
    src = (Path(__file__).resolve().parent.parent / "extension" / "background" / "bridge.js").read_text()
    first = re.search(r"const BACKOFF_START_MS = (\d+);", src)
    cap = re.search(r"const BACKOFF_CAP_MS = (\d+);", src)
    assert first and cap and "* (0.8 + Math.random() * 0.4);" in src, "bridge.js's backoff changed: update this test"
    return int(first[1]) / 1000, int(cap[1]) / 1000, 0.8, 1.2


FIRST, CAP, LOW, HIGH = _backoff()
SLACK = 5.0  # seconds for the browser and the processes on a loaded machine (two cores)


def _delay(k: int) -> float:
    """The k-th delay of the schedule (k = 1: after the drop), before jitter."""
    return min(FIRST * 2 ** (k - 1), CAP)


def test_7_bridge_restart_while_widget_open(wd: World, pages: dict[str, Page]) -> None:
    """The worker's own backoff finds the bridge again: no click anywhere."""
    a = pages["alice_orb"]
    popup = pages["alice_popup"]
    w = widget(a)
    expect(w.locator('[data-parley="send"]')).to_be_enabled()
    wd.alice.stop()
    with PortWatch(wd.alice.port) as watch:
        expect(popup.locator('[data-parley="status"]')).to_have_text("bridge unreachable", timeout=TIMEOUT_MS)
        expect(w.locator('[data-parley="send"]')).to_be_disabled(timeout=TIMEOUT_MS)
        shot(wd, a, "7-bridge-down")
        # Three retries by the backoff (1 s, 2 s, 4 s, ±20 %) within 8.4 s and some slack: the alarm
        # alone (every 30 s) could make at most one.
        watch.wait_for(3, HIGH * sum(_delay(k) for k in (1, 2, 3)) + SLACK, "the worker's backoff")
    wd.alice.start()  # same port
    started = time.monotonic()
    # The next retry is at most one delay away: at most the cap, with jitter.
    expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=(HIGH * CAP + SLACK) * 1000)
    print(f"reconnected by the worker's backoff {time.monotonic() - started:.1f}s after the restart")
    expect(w.locator('[data-parley="send"]')).to_be_enabled(timeout=TIMEOUT_MS)
    after = "sent after the bridge restarted"
    send_in_widget(w, after)
    expect_message(widget(pages["bob_ff"]), after, "in")
    shot(wd, pages["bob_ff"], "7-bob-got-it-after-restart")


def test_7b_popup_retry_reconnects_at_once(wd: World, pages: dict[str, Page]) -> None:
    """Retry in the popup connects now, whatever the backoff says, and starts the backoff over."""
    popup = pages["alice_popup"]
    status = popup.locator('[data-parley="status"]')
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    wd.alice.stop()
    with PortWatch(wd.alice.port) as watch:
        expect(status).to_have_text("bridge unreachable", timeout=TIMEOUT_MS)
        fourth = watch.wait_for(4, HIGH * sum(_delay(k) for k in (1, 2, 3, 4)) + SLACK, "the worker's backoff")
        timer_due = fourth + LOW * _delay(5)  # the backoff's own next retry: not before this
        popup.locator('[data-parley="reconnect"]').click()
        # Retry tries at once and resets the backoff, so two more follow (1 s, 2 s): three attempts
        # before the timer's next one could come. The alarm could make one, never three.
        watch.wait_for(7, timer_due - time.monotonic(), "Retry, then the reset backoff")
    wd.alice.start()  # same port
    popup.locator('[data-parley="reconnect"]').click()
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(widget(pages["alice_orb"]).locator('[data-parley="send"]')).to_be_enabled(timeout=TIMEOUT_MS)


def test_7c_a_paired_browser_with_its_bridge_stopped_says_so(wd: World, pages: dict[str, Page]) -> None:
    """Issue 11: with the bridge stopped, a paired browser's button said "Pair Parley". It says the
    bridge is not running (the popup too, keeping the pairing shown), and recovers when it is back."""
    popup = pages["alice_popup"]
    wd.alice.stop()
    try:
        expect(popup.locator('[data-parley="status"]')).to_have_text("bridge unreachable", timeout=TIMEOUT_MS)
        page = wd.alice_browser.context.new_page()
        page.goto(wd.replicas.url("orb.club", "/@bob"))
        button = page.locator(BUTTON)
        expect(button).to_have_attribute("data-parley-state", "unavailable", timeout=TIMEOUT_MS)
        expect(button).to_have_attribute("data-parley-reason", "unreachable")
        expect(button).to_have_text("Parley bridge not running")
        assert "parley run" in (button.get_attribute("title") or "")
        expect(popup.locator('[data-parley="bridge-hint"]')).to_contain_text("Parley bridge not running")
        expect(popup.locator('[data-parley="paired"]')).to_be_visible()
        expect(popup.locator('[data-parley="pair-code"]')).to_be_hidden()
        shot(wd, page, "7c-bridge-not-running")
    finally:
        wd.alice.start()  # same port
    popup.locator('[data-parley="reconnect"]').click()
    expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(popup.locator('[data-parley="bridge-hint"]')).to_be_hidden()
    page.reload()
    ready_button(page, "lens:bob")
    expect(page.locator(BUTTON)).to_have_text("Message")
    page.close()


# --- 8 -----------------------------------------------------------------------------------------


def test_8_local_inbox_page(wd: World, pages: dict[str, Page]) -> None:
    base = wd.alice.url
    anon = requests.get(f"{base}/", timeout=10)
    assert anon.status_code == 200 and bob_addr(wd).lower() not in anon.text.lower()  # a static shell, no data
    assert "default-src 'none'" in anon.headers.get("Content-Security-Policy", "")
    assert requests.get(f"{base}/api/inbox", timeout=10).status_code == 401

    login = _parley(wd, "alice", "open").strip().splitlines()[-1]
    assert login.startswith(f"{base}/login#t=")  # the token is in the fragment: never sent to a server
    page = wd.alice_browser.context.new_page()
    resp = page.goto(login)
    assert resp is not None and resp.status == 200
    assert "default-src 'none'" in (resp.header_value("content-security-policy") or "")
    conv = page.locator('[data-parley="conversation"]')
    expect(conv).to_have_count(1)
    assert (conv.get_attribute("data-peer") or "").lower() == bob_addr(wd).lower()
    conv.click()
    thread = page.locator('[data-parley="message"]')
    expect(thread.filter(has_text=HELLO)).to_have_attribute("data-direction", "out")
    expect(thread.filter(has_text=REPLY)).to_have_attribute("data-direction", "in")
    shot(wd, page, "8-inbox-thread")
    # The link is one-time: a second use is refused.
    token = login.split("#t=", 1)[1]
    assert requests.post(f"{base}/api/session", json={"token": token}, headers={"Origin": base}, timeout=10).status_code == 401

    # No cookie at all; the session lives in this tab's sessionStorage and travels as a header.
    assert not [c for c in wd.alice_browser.context.cookies(base) if c["name"].startswith("parley")]
    stored = json.loads(page.evaluate("sessionStorage.getItem('parley.inbox')"))
    forged = requests.post(
        f"{base}/api/inbox/c/{wd.bob.address}/send", json={"text": "forged"},
        headers={"X-Parley-Session": stored["session"], "Origin": base}, timeout=10,
    )
    assert forged.status_code == 403  # no CSRF token

    text = "replying from the local inbox page"
    page.locator('[data-parley="reply-text"]').fill(text)
    page.locator('[data-parley="reply-send"]').click()
    expect(page.locator('[data-parley="message"][data-direction="out"]', has_text=text)).to_have_count(1, timeout=TIMEOUT_MS)
    expect_message(widget(pages["bob_ff"]), text, "in")
    assert "forged" not in pages["bob_ff"].frame_locator('iframe[data-parley="widget"]').locator("body").inner_text()
    page.close()


# --- 9 -----------------------------------------------------------------------------------------


def _state_label(w: FrameLocator, text: str) -> Locator:
    """The visible state label of Alice's message ``text`` (issue 11: a label, not only opacity)."""
    row = w.locator('[data-parley="message-row"]', has=w.locator('[data-parley="message"][data-direction="out"]', has_text=text))
    return row.locator('[data-parley="message-state"]')


def test_9_message_state_is_labelled_and_updated_live(wd: World) -> None:
    """Issue 11: a sent message's state label follows the bridge's updates in the open widget, no
    reopening: "Sent" at once when the relay takes it; "Queued — will retry" while the relay is down,
    then "Sent" when the bridge delivers it after the relay comes back."""
    # Bob's widget is open on this conversation: his read receipts would turn "Sent" into "Read"
    # (issue 12; e2e/test_inbox_scenario.py plays them). With receipts off, the label stays "Sent".
    _parley(wd, "bob", "config", "set", "read_receipts", "false")
    page = wd.alice_browser.context.new_page()
    page.goto(wd.replicas.url("orb.club", "/@bob"))
    w = open_dm(page, "lens:bob")
    up = "state label: the relay is up"
    send_in_widget(w, up)
    message = w.locator('[data-parley="message"][data-direction="out"]', has_text=up)
    expect(message).to_have_attribute("data-state", "sent", timeout=TIMEOUT_MS)
    expect(_state_label(w, up)).to_have_text("Sent")

    relay_port = int(wd.relay_url.rsplit(":", 1)[1].split("/", 1)[0])
    wd.relay.stop()
    down = "state label: the relay is down"
    send_in_widget(w, down)
    queued = w.locator('[data-parley="message"][data-direction="out"]', has_text=down)
    expect(queued).to_have_attribute("data-state", "queued", timeout=TIMEOUT_MS)
    expect(_state_label(w, down)).to_have_text("Queued — will retry", timeout=TIMEOUT_MS)
    shot(wd, page, "9-queued")
    # The same relay (database, port) again: Alice's bridge reconnects and delivers by itself.
    wd.relay, _ = start_relay(wd.tmp / "relay.db", relay_port)
    expect(queued).to_have_attribute("data-state", "sent", timeout=3 * TIMEOUT_MS)
    expect(_state_label(w, down)).to_have_text("Sent")
    expect(_state_label(w, up)).to_have_text("Sent")
    shot(wd, page, "9-sent-after-relay-back")
    page.close()
