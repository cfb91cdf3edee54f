"""Issue 8 item 8: the inbox page's session must not be replayable from another local port.

Real processes (a relay, Alice's ``parley run``, Bob's CLI) and real Chromium. The user opens the
inbox through ``parley open``'s one-time link and reads a message. Then the same browser visits a
page served by another process on 127.0.0.1 (any local dev server, or one a hostile page points the
browser at). Cookies ignore ports, so that process used to receive the inbox session cookie and
replay it to read the inbox. Here it receives whatever the browser sends and replays all of it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from e2e.harness import ARTIFACTS_DIR
from tests.procs import Proc, free_port, parley, start_bridge, start_relay, wait_for, whoami

pytestmark = pytest.mark.e2e

SECRET = "the inbox secret: meet at the old mill at nine"
TIMEOUT_MS = 20_000


@dataclass
class Inbox:
    home: Path
    url: str
    port: int
    bob: str
    proc: Proc


def bob_home(inbox: Inbox) -> Path:
    return inbox.home.parent / "bob"


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbox]:
    tmp = tmp_path_factory.mktemp("inbox")
    relay, relay_url = start_relay(tmp / "relay.db")
    try:
        alice, bob = tmp / "alice", tmp / "bob"
        parley(alice, "init", "--relay", relay_url, check=True)
        parley(bob, "init", "--relay", relay_url, check=True)
        me = whoami(alice)["address"]
        bob_address = whoami(bob)["address"]
        proc, url = start_bridge(alice, free_port(), relay_url)
        try:
            proc.expect("subscribed to")
            # Alice wrote to Bob first: his answer is a conversation of her inbox, not a message request
            # (issue 12: a stranger's first message lands in Requests).
            parley(alice, "send", bob_address, "Bob, are you there?", check=True)
            parley(bob, "send", me, SECRET, check=True)
            wait_for(lambda: SECRET in parley(alice, "messages", bob_address).stdout, what="Alice's bridge receives Bob's message")
            parley(alice, "accept", bob_address, check=True)  # a stranger's message is a request (issue 12): to the inbox
            yield Inbox(alice, url, int(url.rsplit(":", 1)[1]), bob_address, proc)
        finally:
            proc.stop()
    finally:
        relay.stop()


@contextlib.contextmanager
def collector() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Another local web server: records the headers of every request the browser sends it."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            seen.append({k: v for k, v in self.headers.items()})
            body = b"<!doctype html><title>local dev server</title><p>hello"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def open_inbox(inbox: Inbox, page: Page) -> None:
    """Follow `parley open`'s link and read Bob's message in the page."""
    link = parley(inbox.home, "open", check=True).stdout.strip().splitlines()[-1]
    page.goto(link)
    conv = page.locator('[data-parley="conversation"]')
    expect(conv).to_have_count(1, timeout=TIMEOUT_MS)
    conv.click()
    expect(page.locator('[data-parley="message"]', has_text=SECRET)).to_have_count(1, timeout=TIMEOUT_MS)


def test_another_local_port_cannot_replay_the_inbox_session(inbox: Inbox, chromium: Browser) -> None:
    context = chromium.new_context()
    page = context.new_page()
    open_inbox(inbox, page)
    # The page renders with its stylesheet (a past review found the inbox CSS was a 404).
    assert page.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "inbox-page.png"))
    with collector() as (other, seen):
        page.goto(f"{other}/")
        page.goto(f"{other}/favicon.ico")
        assert seen, "the browser sent nothing to the other port"
    context.close()

    # The other process replays everything it received, to every page and data route.
    paths = ["/", "/login", f"/c/{inbox.bob}", "/api/inbox", f"/api/inbox/c/{inbox.bob}"]
    for headers in seen:
        replay = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
        replay["Host"] = f"127.0.0.1:{inbox.port}"
        for path in paths:
            r = requests.get(f"{inbox.url}{path}", headers=replay, timeout=10)
            assert SECRET not in r.text, f"{path} with the headers sent to another port showed the message"
            assert inbox.bob.lower() not in r.text.lower(), f"{path} with the headers sent to another port showed the conversation"
        r = requests.post(f"{inbox.url}/api/inbox/c/{inbox.bob}/read", headers=replay, json={}, timeout=10)
        assert r.status_code in (401, 403, 404, 405)


def unread(inbox: Inbox, session: str) -> int:
    r = requests.get(f"{inbox.url}/api/inbox", headers={"X-Parley-Session": session}, timeout=10)
    r.raise_for_status()
    return sum(c["unread"] for c in r.json()["conversations"])


def test_reply_from_the_page_and_mark_read_needs_the_right_csrf_token(inbox: Inbox, chromium: Browser) -> None:
    link = parley(inbox.home, "open", check=True).stdout.strip()
    r = requests.post(f"{inbox.url}/api/session", json={"token": link.split("#t=", 1)[1]}, headers={"Origin": inbox.url}, timeout=10)
    s = r.json()
    assert unread(inbox, s["session"]) == 1
    url = f"{inbox.url}/api/inbox/c/{inbox.bob}/read"
    headers = {"X-Parley-Session": s["session"], "Origin": inbox.url}
    wrong = "A" * len(s["csrf"]) if s["csrf"] != "A" * len(s["csrf"]) else "B" * len(s["csrf"])
    assert requests.post(url, json={}, headers={**headers, "X-Parley-CSRF": wrong}, timeout=10).status_code == 403
    assert requests.post(url, json={}, headers=headers, timeout=10).status_code == 403
    assert unread(inbox, s["session"]) == 1, "a refused mark-read changed the unread count"

    # The page itself replies and marks read (its script sends the session and CSRF headers).
    context = chromium.new_context()
    page = context.new_page()
    open_inbox(inbox, page)
    page.locator('[data-parley="reply-text"]').fill("see you there")
    page.locator('[data-parley="reply-send"]').click()
    expect(page.locator('[data-parley="message"][data-direction="out"]', has_text="see you there")).to_have_count(1, timeout=TIMEOUT_MS)
    page.locator('[data-parley="mark-read"]').click()
    wait_for(lambda: unread(inbox, s["session"]) == 0, what="the page marks the conversation read")
    context.close()


def box(page: Page, selector: str) -> dict[str, float]:
    b = page.locator(selector).first.bounding_box()
    assert b is not None, f"{selector} is not rendered"
    return b


def test_the_page_is_styled_one_line_bubbles_and_one_column_at_390px(inbox: Inbox, chromium: Browser) -> None:
    """Issue 11: measured in real Chromium. A one-line message's bubble is one line tall (white-space:
    pre-wrap on the bubble made it three), the two columns stack on a 390 px wide screen, and nothing
    overflows sideways there."""
    context = chromium.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    open_inbox(inbox, page)
    bubble = '[data-parley="message"][data-direction="in"]'
    text_box = box(page, f"{bubble} p")
    line = page.evaluate(f"parseFloat(getComputedStyle(document.querySelector('{bubble} p')).lineHeight)")
    inner = page.evaluate(
        f"(() => {{ const li = document.querySelector('{bubble}'); const s = getComputedStyle(li);"
        " return li.clientHeight - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom); })()"
    )
    assert line > 10 and text_box["height"] <= line * 1.2, (text_box, line)
    assert inner <= line * 1.2, f"a one-line bubble is {inner}px tall inside, the line is {line}px"
    nav, main = box(page, ".layout > nav"), box(page, ".layout > main")
    assert nav["x"] + nav["width"] <= main["x"] + 1 and abs(nav["y"] - main["y"]) < 1, (nav, main)  # side by side

    page.set_viewport_size({"width": 390, "height": 844})
    nav, main = box(page, ".layout > nav"), box(page, ".layout > main")
    assert main["y"] >= nav["y"] + nav["height"] - 1, (nav, main)  # stacked: the thread under the list
    assert nav["width"] > 390 * 0.9 and main["width"] > 390 * 0.9, (nav, main)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways at 390 px"
    b = box(page, bubble)
    assert b["x"] >= 0 and b["x"] + b["width"] <= 390, b  # the bubble wraps inside the screen
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "inbox-page-390.png"), full_page=True)
    context.close()


def test_the_page_updates_live_names_contacts_and_labels_the_unread_badge(inbox: Inbox, chromium: Browser) -> None:
    parley(inbox.home, "contacts", "add", "bob", inbox.bob, check=True)
    try:
        context = chromium.new_context()
        page = context.new_page()
        open_inbox(inbox, page)
        conv = page.locator('[data-parley="conversation"]')
        expect(conv.locator('[data-parley="conversation-name"]')).to_have_text("bob")
        expect(page.locator('[data-parley="current"]')).to_have_text("bob")
        expect(page.locator('[data-parley="current-address"]')).to_have_text(inbox.bob)
        expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=TIMEOUT_MS)
        page.evaluate("window.__notReloaded = true")
        before = page.locator('[data-parley="message"]').count()

        live = "a live one: the mill is closed, try the bridge"
        parley(bob_home(inbox), "send", whoami(inbox.home)["address"], live, check=True)
        expect(page.locator('[data-parley="message"]', has_text=live)).to_have_count(1, timeout=TIMEOUT_MS)
        assert page.locator('[data-parley="message"]').count() == before + 1
        expect(conv.locator(".last")).to_have_text(live, timeout=TIMEOUT_MS)
        badge = conv.locator('[data-parley="unread"]')
        expect(badge).to_have_count(1, timeout=TIMEOUT_MS)
        n = int(badge.text_content() or "0")
        assert n >= 1
        expect(badge).to_have_attribute("aria-label", f"{n} unread")
        expect(page.get_by_role("status", name=f"{n} unread")).to_have_count(1)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        context.close()
    finally:
        parley(inbox.home, "contacts", "remove", "bob", check=True)
