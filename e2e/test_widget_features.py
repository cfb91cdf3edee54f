"""Issue 12 in the widget, in real Chromium with the real extension against the stand-in bridge
(e2e/fake_bridge.py speaks the contract's JSON-RPC): the request banner, the message menu (reply,
react, edit, delete) and what notifications change, typing dots both ways, attachments uploaded in
chunks (a 5 MB file attached, a file dropped), thumbnails, Save byte-identical, a file over 25 MB
refused before any upload, and the host page seeing none of it."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FrameLocator, Locator, Page, Playwright, expect

from e2e.fake_bridge import FakeBridge
from e2e.harness import BrowserSession, ReplicaServer, launch_browser, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 15_000
ME = "0xca20100000000000000000000000000000000003"
SECRET = "the secret plan is hidden in the tulips"
FIVE_MB = os.urandom(5 * 1000 * 1000 + 12345)
INCOMING = b"\x89PNG\r\n\x1a\n" + os.urandom(700_000)  # over three read chunks


WATCH_PROGRESS = """(selector) => { const seen = []; window.__progress = seen;
  const watch = (bar) => new MutationObserver(() => { if (!bar.hidden) seen.push([bar.value, bar.max]); })
    .observe(bar, { attributes: true, attributeFilter: ['hidden', 'value', 'max'] });
  for (const bar of document.querySelectorAll(selector)) watch(bar);
  // attributes set as properties (value, max) reflect as attributes on <progress>
}"""


def widget_frame(page: Page) -> Any:
    handle = page.locator('iframe[data-parley="widget"]').element_handle()
    frame = handle.content_frame() if handle else None
    assert frame is not None
    return frame


class World:
    def __init__(self, session: BrowserSession, bridge: FakeBridge, bob: str, page: Page) -> None:
        self.session, self.bridge, self.bob, self.page = session, bridge, bob, page

    @property
    def w(self) -> FrameLocator:
        return self.page.frame_locator('iframe[data-parley="widget"]')

    def msg(self, mid: str) -> Locator:
        return self.w.locator(f'[data-parley="message"][data-id="{mid}"]')

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.bridge.calls if m == method]


@pytest.fixture(scope="module")
def world(replicas: ReplicaServer, tmp_path_factory: pytest.TempPathFactory, playwright_session: Playwright) -> Iterator[World]:
    bob = str(replicas.fixtures["users"]["bob"]["address"]).lower()
    fake = FakeBridge(pair_code="WIDG-1212", own_address=ME, directory={"lens:bob": bob}, parley_users={bob}).start()
    # Bob is a stranger: his first messages are a request (two kept, two more held).
    fake.set_consent(bob, "requested", held=2)
    fake.add_message(bob, f"hi, {SECRET}", "in")
    fake.add_message(bob, "please answer", "in")
    fake.add_file_message(bob, "holiday.png", INCOMING, "image/png", text="a picture")
    profile: Path = tmp_path_factory.mktemp("chromium-widget12")
    try:
        with launch_browser(profile, replicas.port, playwright=playwright_session) as session:
            popup = session.open_popup()
            popup.locator('[data-parley="bridge-url"]').fill(fake.bridge_url)
            popup.locator('[data-parley="pair-code"]').fill("widg-1212")
            popup.locator('[data-parley="pair-submit"]').click()
            expect(popup.locator('[data-parley="status"]')).to_have_text("connected", timeout=TIMEOUT)
            popup.close()
            page = session.context.new_page()
            page.goto(replicas.url("hey.xyz", "/u/bob"))
            button = page.locator('[data-parley="dm-button"]')
            expect(button).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT)
            button.click()
            world = World(session, fake, bob, page)
            expect(world.w.locator("body")).to_have_attribute("data-parley-actionable", "true", timeout=TIMEOUT)
            yield world
            page.close()
    finally:
        fake.stop()


def test_1_request_banner_accept_and_block(world: World) -> None:
    w, bob = world.w, world.bob
    banner = w.locator('[data-parley="requests-banner"]')
    expect(banner).to_be_visible(timeout=TIMEOUT)
    assert world.calls("consent.get") == [{"peer": bob}]
    expect(w.locator('[data-parley="held-count"]')).to_have_text("2 more messages held until you accept")
    expect(w.locator('[data-parley="message"]')).to_have_count(3)
    w.locator('[data-parley="accept"]').click()
    expect(banner).to_be_hidden(timeout=TIMEOUT)
    assert world.calls("consent.set") == [{"peer": bob, "action": "accept"}]
    # Consent changes on another installation arrive as consent.changed.
    world.bridge.set_consent(bob, "requested", held=0)
    world.bridge.notify("consent.changed", {"peer": bob, "consent": "requested"})
    expect(banner).to_be_visible(timeout=TIMEOUT)
    w.locator('[data-parley="block"]').click()
    expect(w.locator('[data-parley="blocked-banner"]')).to_be_visible(timeout=TIMEOUT)
    assert world.calls("consent.set")[-1] == {"peer": bob, "action": "block"}
    w.locator('[data-parley="unblock"]').click()
    expect(w.locator('[data-parley="blocked-banner"]')).to_be_hidden(timeout=TIMEOUT)
    assert world.calls("consent.set")[-1] == {"peer": bob, "action": "unblock"}
    # A request again: typing is never sent to it (it would say we read it); replying accepts it.
    world.bridge.set_consent(bob, "requested", held=0)
    world.bridge.notify("consent.changed", {"peer": bob, "consent": "requested"})
    expect(banner).to_be_visible(timeout=TIMEOUT)
    w.locator('[data-parley="composer"]').press_sequentially("ok, hello", delay=10)
    w.locator('[data-parley="send"]').click()
    expect(banner).to_be_hidden(timeout=TIMEOUT)
    assert world.calls("messages.send") == [{"peer": bob, "text": "ok, hello"}]
    assert world.calls("typing.set") == []
    assert world.bridge.consent_of(bob)["consent"] == "allowed"


def test_2_menu_reply_react_edit_delete(world: World) -> None:
    w, bob, fake = world.w, world.bob, world.bridge
    first = fake.messages[bob][0]
    m = world.msg(first["id"])
    m.locator('[data-parley="menu"]').click()
    m.locator('[data-parley="react-choice"][data-emoji="👍"]').click()
    expect(m.locator('[data-parley="reaction"][data-emoji="👍"]')).to_have_text("👍 1", timeout=TIMEOUT)
    assert world.calls("messages.react")[-1] == {"peer": bob, "id": first["id"], "emoji": "👍"}
    # Bob reacts too: message.updated from the bridge.
    first["reactions"]["👍"] = sorted([ME, bob])
    fake.push_updated(first)
    chip = m.locator('[data-parley="reaction"][data-emoji="👍"]')
    expect(chip).to_have_text("👍 2", timeout=TIMEOUT)
    assert "You" in (chip.get_attribute("title") or "") and "bob" in (chip.get_attribute("title") or "")
    # Clicking our own chip removes our reaction.
    chip.click()
    wait_until(lambda: world.calls("messages.react")[-1] == {"peer": bob, "id": first["id"], "emoji": "👍", "remove": True}, what="remove")
    expect(chip).to_have_text("👍 1", timeout=TIMEOUT)

    # Reply.
    m.locator('[data-parley="menu"]').click()
    m.locator('[data-parley="menu-reply"]').click()
    expect(w.locator('[data-parley="reply-preview"]')).to_contain_text("the secret plan")
    w.locator('[data-parley="composer"]').fill("my answer")
    w.locator('[data-parley="send"]').click()
    wait_until(lambda: len(world.calls("messages.send")) == 2, what="send")
    assert world.calls("messages.send")[-1] == {"peer": bob, "text": "my answer", "reply_to": first["id"]}
    mine = fake.messages[bob][-1]
    reply = world.msg(mine["id"])
    expect(reply.locator('[data-parley="reply-quote"]')).to_contain_text(SECRET, timeout=TIMEOUT)
    expect(reply.locator('[data-parley="text"]')).to_have_text("my answer")
    expect(w.locator('[data-parley="reply-preview"]')).to_be_hidden()
    # Their message has no edit/delete; ours does.
    m.locator('[data-parley="menu"]').click()
    expect(m.locator('[data-parley="menu-edit"]')).to_have_count(0)
    expect(m.locator('[data-parley="menu-delete"]')).to_have_count(0)
    w.locator("body").click(position={"x": 5, "y": 5})
    expect(m.locator('[data-parley="menu-panel"]')).to_have_count(0)

    # Edit through the composer.
    reply.locator('[data-parley="menu"]').click()
    reply.locator('[data-parley="menu-edit"]').click()
    expect(w.locator('[data-parley="composer"]')).to_have_value("my answer")
    w.locator('[data-parley="composer"]').fill("my better answer")
    w.locator('[data-parley="send"]').click()
    wait_until(lambda: world.calls("messages.edit"), what="edit")
    assert world.calls("messages.edit") == [{"peer": bob, "id": mine["id"], "text": "my better answer"}]
    expect(reply.locator('[data-parley="text"]')).to_have_text("my better answer", timeout=TIMEOUT)
    expect(reply.locator('[data-parley="edited-mark"]')).to_have_text("edited")
    assert len(world.calls("messages.send")) == 2

    # The receipt: Bob read it.
    mine["state"] = "read"
    fake.push_updated(mine)
    expect(reply.locator('[data-parley="receipt"]')).to_have_text("Read", timeout=TIMEOUT)

    # Delete.
    reply.locator('[data-parley="menu"]').click()
    reply.locator('[data-parley="menu-delete"]').click()
    expect(reply.locator('[data-parley="tombstone"]')).to_have_text("This message was deleted", timeout=TIMEOUT)
    expect(reply.locator('[data-parley="text"]')).to_have_count(0)
    assert world.calls("messages.delete") == [{"peer": bob, "id": mine["id"]}]

    # Bob edits and deletes his own: only notifications.
    second = fake.messages[bob][1]
    second.update(text="please answer soon", edited=True)
    fake.push_updated(second)
    expect(world.msg(second["id"]).locator('[data-parley="edited-mark"]')).to_be_visible(timeout=TIMEOUT)
    expect(world.msg(second["id"]).locator('[data-parley="text"]')).to_have_text("please answer soon")


def test_3_typing_dots_both_ways(world: World) -> None:
    w, bob, fake = world.w, world.bob, world.bridge
    dots = w.locator('[data-parley="typing"]')
    expect(dots).to_be_hidden()
    fake.push_typing(bob, True)
    expect(dots).to_be_visible(timeout=TIMEOUT)
    expect(dots).to_be_hidden(timeout=9_000)  # after 6 s
    fake.push_typing(bob, True)
    expect(dots).to_be_visible(timeout=TIMEOUT)
    fake.push_incoming(bob, "done typing")
    expect(dots).to_be_hidden(timeout=TIMEOUT)  # a message arrived
    # Ours: typing.set true once while typing, false when the composer empties.
    before = len(world.calls("typing.set"))
    composer = w.locator('[data-parley="composer"]')
    composer.press_sequentially("hello", delay=20)
    wait_until(lambda: world.calls("typing.set")[before:] == [{"peer": bob, "typing": True}], what="typing true once")
    composer.fill("")
    wait_until(lambda: world.calls("typing.set")[before:] == [{"peer": bob, "typing": True}, {"peer": bob, "typing": False}], what="typing false")


def test_4_a_5mb_file_is_uploaded_in_chunks_and_sent(world: World, tmp_path: Path) -> None:
    w, bob, fake = world.w, world.bob, world.bridge
    path = tmp_path / "big photo.png"
    path.write_bytes(FIVE_MB)
    w.locator('[data-parley="file-input"]').set_input_files(str(path))
    expect(w.locator('[data-parley="attach-list"]')).to_contain_text("big photo.png")
    w.locator('[data-parley="composer"]').fill("the file")
    widget_frame(world.page).evaluate(WATCH_PROGRESS, '[data-parley="upload-progress"]')
    w.locator('[data-parley="send"]').click()
    wait_until(lambda: any(p.get("uploads") for p in world.calls("messages.send")), timeout=60, what="send with uploads")
    begin = world.calls("attachments.begin")[-1]
    assert begin == {"peer": bob, "name": "big photo.png", "size": len(FIVE_MB), "mime": "image/png"}
    chunks = [p for p in world.calls("attachments.chunk")]
    assert len(chunks) == -(-len(FIVE_MB) // 196608)
    assert all(len(c["data"]) <= 256 * 1024 for c in chunks)
    upload_id = chunks[0]["upload_id"]
    assert fake.uploaded(upload_id) == FIVE_MB
    assert b"".join(base64.b64decode(c["data"]) for c in chunks) == FIVE_MB
    sent = world.calls("messages.send")[-1]
    assert sent == {"peer": bob, "text": "the file", "uploads": [upload_id]}
    mine = fake.messages[bob][-1]
    card = world.msg(mine["id"]).locator('[data-parley="attachment"]')
    expect(card).to_have_attribute("data-attachment-id", f"{mine['id']}-0", timeout=TIMEOUT)
    expect(card.locator('[data-parley="attachment-name"]')).to_have_text("big photo.png")
    expect(card.locator('[data-parley="thumbnail"]')).to_be_visible(timeout=TIMEOUT)
    expect(w.locator('[data-parley="upload-progress"]')).to_be_hidden()
    shown = widget_frame(world.page).evaluate("() => window.__progress")
    assert shown and all(m == len(FIVE_MB) for _, m in shown), shown[:3]
    assert 196608 in [v for v, _ in shown], "the bar moved chunk by chunk"


def test_5_a_dropped_file_is_uploaded_too(world: World) -> None:
    w, bob, fake = world.w, world.bob, world.bridge
    data = os.urandom(300_000)
    frame = widget_frame(world.page)
    transfer = frame.evaluate_handle(
        """(b64) => { const bin = atob(b64); const bytes = new Uint8Array(bin.length);
           for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
           const dt = new DataTransfer(); dt.items.add(new File([bytes], 'notes.bin', { type: 'application/octet-stream' })); return dt; }""",
        base64.b64encode(data).decode(),
    )
    w.locator("body").dispatch_event("dragover", {"dataTransfer": transfer})
    expect(w.locator('[data-parley="drop-hint"]')).to_be_visible()
    w.locator("body").dispatch_event("drop", {"dataTransfer": transfer})
    expect(w.locator('[data-parley="drop-hint"]')).to_be_hidden()
    expect(w.locator('[data-parley="attach-list"]')).to_contain_text("notes.bin")
    n = len(world.calls("messages.send"))
    w.locator('[data-parley="send"]').click()
    wait_until(lambda: len(world.calls("messages.send")) > n, what="send")
    upload_id = world.calls("messages.send")[-1]["uploads"][0]
    assert fake.uploaded(upload_id) == data
    assert world.calls("messages.send")[-1]["text"] == ""


def test_6_over_25mb_is_refused_before_any_upload(world: World, tmp_path: Path) -> None:
    w = world.w
    big = tmp_path / "huge.bin"
    with big.open("wb") as f:
        f.truncate(25 * 1024 * 1024 + 1)
    n = len(world.calls("attachments.begin"))
    w.locator('[data-parley="file-input"]').set_input_files(str(big))
    expect(w.locator('[data-parley="error"]')).to_contain_text("huge.bin", timeout=TIMEOUT)
    expect(w.locator('[data-parley="error"]')).to_contain_text("25 MB")
    expect(w.locator('[data-parley="attach-list"]')).to_be_hidden()
    assert len(world.calls("attachments.begin")) == n


def test_7_thumbnail_and_save_byte_identical(world: World) -> None:
    bob, fake = world.bob, world.bridge
    incoming = next(m for m in fake.messages[bob] if m["kind"] == "attachment" and m["direction"] == "in")
    card = world.msg(incoming["id"]).locator('[data-parley="attachment"]')
    thumb = card.locator('[data-parley="thumbnail"]')
    expect(thumb).to_be_visible(timeout=TIMEOUT)
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 32
    widget_frame(world.page).evaluate(WATCH_PROGRESS, f'[data-parley="message"][data-id="{incoming["id"]}"] [data-parley="progress"]')
    with world.page.expect_download(timeout=TIMEOUT) as info:
        card.locator('[data-parley="save"]').click()
    download = info.value
    assert download.suggested_filename == "holiday.png"
    saved = Path(download.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == hashlib.sha256(INCOMING).hexdigest()
    shown = widget_frame(world.page).evaluate("() => window.__progress")
    assert [v for v, _ in shown][:1] == [196608] and all(m == len(INCOMING) for _, m in shown), shown
    reads = world.calls("attachments.read")
    assert [r["offset"] for r in reads] == [0, 196608, 393216, 589824]
    assert all(r == {"peer": bob, "id": f"{incoming['id']}-0", "offset": r["offset"], "length": 196608} for r in reads)


def test_8_the_host_page_sees_none_of_it(world: World) -> None:
    page = world.page
    html = page.content()
    for word in (SECRET, "holiday.png", "big photo.png", "my better answer", "This message was deleted", "typing"):
        assert word not in html, word
    seen = page.evaluate(
        """() => { const f = document.querySelector('iframe[data-parley="widget"]');
           let doc = null; try { doc = f.contentWindow.document; } catch (e) { doc = null; }
           return { contentDocument: f.contentDocument, doc: doc === null, text: document.body.innerText,
                    reactions: document.querySelectorAll('[data-parley="reaction"], [data-parley="attachment"], [data-parley="requests-banner"]').length }; }"""
    )
    assert seen["contentDocument"] is None and seen["doc"] is True
    assert SECRET not in seen["text"] and seen["reactions"] == 0


def test_9_the_host_page_cannot_drive_it(world: World) -> None:
    """The page posts what the worker would (typing, a request, a new message) to the widget's window:
    the widget listens to its runtime port only, so nothing shows and nothing is called."""
    page, w, bob = world.page, world.w, world.bob
    before = [c for c in world.bridge.calls if c[0] != "ping"]
    page.evaluate(
        """(bob) => { const f = document.querySelector('iframe[data-parley="widget"]').contentWindow;
           for (const msg of [
             { type: 'event', method: 'typing', params: { peer: bob, typing: true } },
             { type: 'event', method: 'consent.changed', params: { peer: bob, consent: 'requested', held: 9 } },
             { type: 'event', method: 'message.new', params: { message: { id: 'f'.repeat(32), peer: bob, direction: 'in', text: 'forged by the page' } } },
             { type: 'status', status: 'not paired' },
           ]) f.postMessage(msg, '*'); }""",
        bob,
    )
    page.evaluate("() => new Promise((r) => setTimeout(r, 300))")  # the posts are delivered in order, before this timer
    expect(w.locator('[data-parley="typing"]')).to_be_hidden()
    expect(w.locator('[data-parley="requests-banner"]')).to_be_hidden()
    expect(w.locator('[data-parley="message"]', has_text="forged by the page")).to_have_count(0)
    expect(w.locator('[data-parley="send"]')).to_be_enabled()
    assert [c for c in world.bridge.calls if c[0] != "ping"] == before
