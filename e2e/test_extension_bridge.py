"""The extension against a stand-in bridge speaking the local API contract (DESIGN.md "Extension":
service worker, widget, popup; "Bridge": local API checks). Pairing, the Origin/Host the bridge
sees, the ready button, history, sending, live message.new, bridge-down recovery and bad tokens.
The real bridge's scenarios live in e2e/test_scenarios*.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FrameLocator, Page, Playwright, expect

from e2e.fake_bridge import FakeBridge
from e2e.harness import BrowserSession, ReplicaServer, launch_browser, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 15_000
ME = "0xca20100000000000000000000000000000000003"


@pytest.fixture(scope="module")
def paired_browser(
    replicas: ReplicaServer, tmp_path_factory: pytest.TempPathFactory, playwright_session: Playwright
) -> Iterator[BrowserSession]:
    """A browser of its own: pairing changes state the not-paired tests rely on."""
    profile: Path = tmp_path_factory.mktemp("chromium-paired")
    with launch_browser(profile, replicas.port, playwright=playwright_session) as session:
        yield session


@pytest.fixture(scope="module")
def bridge(replicas: ReplicaServer) -> Iterator[FakeBridge]:
    bob = str(replicas.fixtures["users"]["bob"]["address"])
    alice = str(replicas.fixtures["users"]["alice"]["address"])
    fake = FakeBridge(
        pair_code="ABCD-1234", own_address=ME,
        directory={"lens:bob": bob, "lens:alice": alice},
        parley_users={bob},
    ).start()
    fake.add_message(bob, "hi <b>not bold</b><img src=x onerror=alert(1)>", "in")
    yield fake
    fake.stop()


def widget(page: Page) -> FrameLocator:
    return page.frame_locator('iframe[data-parley="widget"]')


def test_pair_connect_message_recover(paired_browser: BrowserSession, bridge: FakeBridge, replicas: ReplicaServer) -> None:
    popup = paired_browser.open_popup()
    popup.locator('[data-parley="bridge-url"]').fill(bridge.bridge_url)
    popup.locator('[data-parley="pair-code"]').fill("abcd-1234")
    popup.locator('[data-parley="pair-submit"]').click()
    expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT)
    expect(popup.locator('[data-parley="address"]')).to_have_text(ME, timeout=TIMEOUT)
    expect(popup.locator('[data-parley="unread"]')).to_have_text("1")
    # What the bridge saw: our extension's Origin, a loopback Host, pair first.
    first = bridge.handshakes[0]
    assert first == {"origin": paired_browser.extension_origin, "host": f"127.0.0.1:{bridge.port}", "path": "/v1/rpc"}
    # The bridge proves itself first (issue 8 item 9); then pairing proves knowledge of the code
    # (an HMAC over hello's transcript), and the code itself never crosses the socket.
    assert bridge.methods()[:2] == ["hello", "pair"]
    assert set(bridge.calls[1][1]) == {"proof", "name"}
    assert "ABCD" not in json.dumps(bridge.calls) and "abcd" not in json.dumps(bridge.calls)

    bob = str(replicas.fixtures["users"]["bob"]["address"])
    page = paired_browser.context.new_page()
    page.goto(replicas.url("hey.xyz", "/u/bob"))
    button = page.locator('[data-parley="dm-button"]')
    expect(button).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT)
    expect(button).to_have_text("Message")
    # alice resolves but is not on Parley.
    page2 = paired_browser.context.new_page()
    page2.goto(replicas.url("orb.club", "/@alice"))
    expect(page2.locator('[data-parley="dm-button"]')).to_have_attribute("data-parley-state", "unavailable", timeout=TIMEOUT)
    expect(page2.locator('[data-parley="dm-button"]')).to_have_text("Not on Parley yet")
    page2.close()

    button.click()
    w = widget(page)
    first_msg = w.locator('[data-parley="message"]').first
    expect(first_msg).to_have_text("hi <b>not bold</b><img src=x onerror=alert(1)>", timeout=TIMEOUT)
    expect(first_msg).to_have_attribute("data-direction", "in")
    expect(w.locator('[data-parley="message"] b, [data-parley="message"] img')).to_have_count(0)
    wait_until(lambda: ("messages.markRead", {"peer": bob}) in bridge.calls, what="markRead")
    expect(popup.locator('[data-parley="unread"]')).to_have_text("0", timeout=TIMEOUT)

    expect(w.locator("body")).to_have_attribute("data-parley-actionable", "true", timeout=TIMEOUT)  # issue 8 item 6
    w.locator('[data-parley="composer"]').fill("hello Bob")
    w.locator('[data-parley="send"]').click()
    expect(w.locator('[data-parley="message"][data-direction="out"]')).to_have_text("hello Bob", timeout=TIMEOUT)
    assert ("messages.send", {"peer": bob, "text": "hello Bob"}) in bridge.calls

    bridge.push_incoming(bob, "live reply")
    expect(w.locator('[data-parley="message"][data-direction="in"]').last).to_have_text("live reply", timeout=TIMEOUT)
    paired_browser.screenshot(page, "widget-connected")

    # Bridge goes away: error state in the widget, "bridge unreachable" in the popup.
    port = bridge.port
    bridge.stop()
    expect(popup.locator('[data-parley="status"]')).to_have_text("bridge unreachable", timeout=TIMEOUT)
    expect(w.locator('[data-parley="error"]')).to_contain_text("not reachable", timeout=TIMEOUT)
    expect(w.locator('[data-parley="send"]')).to_be_disabled()
    # It comes back on the same port: the worker reconnects (auth with the stored token) by itself.
    bridge.port = port
    bridge.calls.clear()
    bridge.start()
    expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT)
    assert bridge.methods()[:2] == ["hello", "auth"]
    expect(w.locator('[data-parley="send"]')).to_be_enabled(timeout=TIMEOUT)
    expect(w.locator('[data-parley="error"]')).to_be_hidden()
    page.close()

    # No widget open for Bob: a system notification (sender only, no text) and the badge count.
    worker = paired_browser.service_worker()
    msg = bridge.push_incoming(bob, "while the widget is closed")
    notes = wait_until(
        lambda: json.loads(worker.evaluate("() => chrome.notifications.getAll().then(JSON.stringify)")),
        what="a notification",
    )
    assert f"parley:{msg['id']}" in notes
    bridge.push_conversation_updated(bob)
    wait_until(lambda: worker.evaluate("() => chrome.action.getBadgeText({})") == "1", what="badge 1")

    # The bridge forgets our token: close 4401 → token dropped, "not paired".
    bridge.tokens.clear()
    bridge.stop()
    bridge.port = port
    bridge.start()
    expect(popup.locator('[data-parley="status"]')).to_have_text("not paired", timeout=TIMEOUT)
    assert "token" not in json.loads(worker.evaluate("() => chrome.storage.local.get('token').then(JSON.stringify)"))
    # Not paired any more: the popup offers the code field and the Pair button again (issue 11).
    expect(popup.locator('[data-parley="pair-code"]')).to_be_visible()
    expect(popup.locator('[data-parley="pair-submit"]')).to_be_visible()
    expect(popup.locator('[data-parley="paired"]')).to_be_hidden()
    popup.close()


# The popup asks the worker for a snapshot of its state when it opens. Until that answer arrives the
# user may type a bridge URL and pair: the late snapshot must overwrite neither (found in CI, where a
# loaded machine let the default URL replace the one typed, and pairing went to a closed port).
HOLD_SNAPSHOT = """
(() => {
  const send = chrome.runtime.sendMessage.bind(chrome.runtime);
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  window.__releaseSnapshot = () => release();
  chrome.runtime.sendMessage = (msg, ...rest) => {
    const reply = send(msg, ...rest);
    return msg && msg.type === 'parley/popup/get-state' ? reply.then((state) => gate.then(() => state)) : reply;
  };
})();
"""


def test_a_late_popup_snapshot_overwrites_neither_typing_nor_newer_state(
    tmp_path: Path, replicas: ReplicaServer, playwright_session: Playwright
) -> None:
    fake = FakeBridge(pair_code="WXYZ-5678", own_address=ME, directory={}, parley_users=set()).start()
    try:
        with launch_browser(tmp_path / "profile", replicas.port, playwright=playwright_session) as session:
            popup = session.context.new_page()
            popup.add_init_script(HOLD_SNAPSHOT)
            popup.goto(f"{session.extension_origin}/popup/popup.html")
            assert popup.evaluate("typeof window.__releaseSnapshot") == "function"
            popup.locator('[data-parley="bridge-url"]').fill(fake.bridge_url)
            popup.locator('[data-parley="pair-code"]').fill("wxyz-5678")
            popup.locator('[data-parley="pair-submit"]').click()
            expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT)
            expect(popup.locator('[data-parley="address"]')).to_have_text(ME, timeout=TIMEOUT)
            # The snapshot taken when the popup opened ("not paired", the default URL) lands now.
            assert popup.locator("body").get_attribute("data-parley-ready") is None
            popup.evaluate("window.__releaseSnapshot()")
            expect(popup.locator("body")).to_have_attribute("data-parley-ready", "true", timeout=TIMEOUT)
            expect(popup.locator('[data-parley="status"]')).to_have_text("connected")
            expect(popup.locator('[data-parley="address"]')).to_have_text(ME)
            assert popup.locator('[data-parley="bridge-url"]').input_value() == fake.bridge_url
            # Paired: the pairing is shown, not the code field (issue 11); Unpair brings the field back.
            expect(popup.locator('[data-parley="pair-code"]')).to_be_hidden()
            expect(popup.locator('[data-parley="paired-url"]')).to_have_text(fake.bridge_url)
            popup.locator('[data-parley="unpair"]').click()
            expect(popup.locator('[data-parley="status"]')).to_have_text("not paired", timeout=TIMEOUT)
            expect(popup.locator('[data-parley="pair-code"]')).to_be_visible()
            expect(popup.locator('[data-parley="paired"]')).to_be_hidden()
    finally:
        fake.stop()
