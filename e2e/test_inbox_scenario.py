"""Issue 12, "Done when": the inbox people expect, played with REAL processes (a relay, Alice's and
Bob's ``parley run``) and two Chromium browsers with the real extension.

Bob does not know Alice (his contacts do not name her), so her first message is a stranger's:
1. it lands in Bob's Requests, raises no desktop notification; his popup shows the request and opens
   his inbox page at Requests, where he accepts it;
2. replies and reactions appear live in both widgets;
3. a 5 MB image arrives, previews, and saves byte-identical (widget download and ``parley attachment save``);
4. Bob's read receipt turns Alice's message to "Read";
5. an edit and a delete show on both sides;
6. Bob blocks Alice: nothing she sends is stored or shown any more;
7. the relay's database holds none of the plaintexts (texts, edit, file), raw or in hex, base64 or UTF-16.

The tests run in file order and build on each other (one world per module).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FrameLocator, Locator, Page, Playwright, expect

from e2e.demo import ALICE_FID, TIMEOUT_MS, World, open_dm, pair_via_popup, send_in_widget, world
from e2e.harness import wait_until
from tests.plaintext import forms
from tests.procs import parley

pytestmark = pytest.mark.e2e

FIRST = "Hi Bob, we have not met: Alice here"
SECOND = "a second line before you answer"
REPLY = "Hello stranger, answering your first line"
READ_ME = "tell me when you read this"
EDIT_FROM = "the meeting is on Monday"
EDIT_TO = "the meeting is on Tuesday"
DELETE_ME = "a message I regret"
BLOCKED = "you will never see this"


@pytest.fixture(scope="module")
def wd(playwright_session: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(playwright=playwright_session) as w:
        # Bob's contacts name Alice in the world: a stranger is someone they do not name.
        for name in (f"farcaster:{ALICE_FID}", "lens:alice"):
            parley(w.bob.home, "contacts", "remove", name, check=True)
        w.notes["image"] = _image(tmp_path_factory.mktemp("image") / "noise.png")
        yield w


@pytest.fixture(scope="module")
def pages(wd: World) -> dict[str, object]:
    return {}


def _image(path: Path) -> Path:
    """A PNG of about 5 MB (noise does not compress), which the bridges must preview and keep byte for byte."""
    from PIL import Image

    side = 1300
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, format="PNG")
    assert 4_500_000 < path.stat().st_size < 6_000_000
    return path


def _cli_json(wd: World, who: str, *args: str) -> object:
    home = wd.alice.home if who == "alice" else wd.bob.home
    return json.loads(parley(home, *args, "--json", check=True).stdout)


def _notifications(page_or_session: object) -> list[str]:
    worker = page_or_session.service_worker()  # type: ignore[attr-defined]
    return sorted(worker.evaluate("() => new Promise((r) => chrome.notifications.getAll((all) => r(Object.keys(all))))"))


def _row(w: FrameLocator, text: str) -> Locator:
    """The row of the message whose text contains ``text`` (its quote, reactions, marks and menu are in it)."""
    return w.locator('[data-parley="message-row"]', has=w.locator('[data-parley="text"]', has_text=text))


def _menu(w: FrameLocator, text: str, item: str) -> None:
    """Open the menu of the message holding ``text`` and click ``item`` in it."""
    row = _row(w, text)
    row.hover()
    row.locator('[data-parley="menu"]').click()
    row.locator(f'[data-parley="menu-panel"] [data-parley="{item}"]').click()


def _react(w: FrameLocator, text: str, emoji: str) -> None:
    row = _row(w, text)
    row.hover()
    row.locator('[data-parley="menu"]').click()
    row.locator(f'[data-parley="menu-react"] [data-parley="react-choice"][data-emoji="{emoji}"]').click()


# --- 1 -----------------------------------------------------------------------------------------


def test_1_a_strangers_message_lands_in_requests_without_a_notification(wd: World, pages: dict[str, object]) -> None:
    pages["alice_popup"] = pair_via_popup(wd.alice_browser, wd.alice)
    pages["bob_popup"] = pair_via_popup(wd.bob_browser, wd.bob)
    a = wd.alice_browser.context.new_page()
    a.goto(wd.replicas.url("orb.club", "/@bob"))
    a_w = open_dm(a, "lens:bob")
    send_in_widget(a_w, FIRST)
    send_in_widget(a_w, SECOND)
    pages["alice"] = a

    requests_ = wait_until(lambda: _cli_json(wd, "bob", "requests") or None, timeout=30, what="Bob's requests")
    assert [r["peer"].lower() for r in requests_] == [wd.alice.address.lower()]
    assert requests_[0]["consent"] == "requested"
    convs = _cli_json(wd, "bob", "conversations")
    assert all(c["peer"].lower() != wd.alice.address.lower() for c in convs)  # not in the inbox
    wait_until(lambda: len(_cli_json(wd, "bob", "messages", wd.alice.address)) == 2, timeout=30, what="both messages at Bob's")
    # A request raises no desktop notification in Bob's browser.
    assert _notifications(wd.bob_browser) == []

    # Bob's popup says a request waits; its button opens his bridge's inbox page at Requests.
    popup = wd.bob_browser.open_popup()
    button = popup.locator('[data-parley="requests"]')
    expect(button).to_be_visible(timeout=TIMEOUT_MS)
    expect(popup.locator('[data-parley="requests-count"]')).to_have_text("1")
    with wd.bob_browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        button.click()
    inbox = opened.value
    expect(inbox.locator('[data-parley="folder-requests"]')).to_contain_text("1", timeout=TIMEOUT_MS)
    expect(inbox.locator('[data-parley="folder-requests"]')).to_have_attribute("aria-current", "page")
    popup.close()
    conv = inbox.locator('[data-parley="conversation"]')
    expect(conv).to_have_count(1, timeout=TIMEOUT_MS)
    assert (conv.get_attribute("data-peer") or "").lower() == wd.alice.address.lower()
    conv.click()
    expect(inbox.locator('[data-parley="message"]', has_text=FIRST)).to_have_count(1, timeout=TIMEOUT_MS)
    banner = inbox.locator('[data-parley="requests-banner"]')
    expect(banner).to_be_visible()
    banner.locator('[data-parley="accept"]').click()
    expect(banner).to_be_hidden(timeout=TIMEOUT_MS)
    wait_until(
        lambda: any(c["peer"].lower() == wd.alice.address.lower() and c["consent"] == "allowed" for c in _cli_json(wd, "bob", "conversations")),
        timeout=15, what="Alice in Bob's inbox",
    )
    assert _cli_json(wd, "bob", "requests") == []
    pages["bob_inbox"] = inbox

    # Accepted: the next message does raise a notification (so the check above could fail).
    send_in_widget(a_w, "now that you know me")
    wait_until(lambda: _notifications(wd.bob_browser), timeout=30, what="a notification once accepted")


# --- 2 -----------------------------------------------------------------------------------------


def test_2_replies_and_reactions_appear_live_on_both_sides(wd: World, pages: dict[str, object]) -> None:
    parley(wd.bob.home, "contacts", "add", "lens:alice", wd.alice.address, check=True)  # his DM button on her profile
    b = wd.bob_browser.context.new_page()
    b.goto(wd.replicas.url("hey.xyz", "/u/alice"))
    b_w = open_dm(b, "lens:alice")
    pages["bob"] = b
    a_w = pages["alice"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]

    _menu(b_w, FIRST, "menu-reply")
    expect(b_w.locator('[data-parley="reply-preview"]')).to_contain_text(FIRST)
    send_in_widget(b_w, REPLY)
    for w in (a_w, b_w):
        expect(_row(w, REPLY).locator('[data-parley="reply-quote"]')).to_contain_text(FIRST, timeout=TIMEOUT_MS)

    _react(a_w, REPLY, "👍")
    # Counts, and who reacted: "You" for Alice, her name (as Bob's widget names her) for Bob.
    alice_for_bob = b_w.locator('[data-parley="peer-name"]').text_content()
    for w, reactor in ((a_w, "You"), (b_w, alice_for_bob)):
        chip = _row(w, REPLY).locator('[data-parley="reaction"][data-emoji="👍"]')
        expect(chip).to_contain_text("1", timeout=TIMEOUT_MS)
        expect(chip).to_have_attribute("title", re.compile(re.escape(str(reactor))))
    # Removing it (a click on one's own chip) removes it on both sides.
    _row(a_w, REPLY).locator('[data-parley="reaction"][data-emoji="👍"]').click()
    for w in (a_w, b_w):
        expect(_row(w, REPLY).locator('[data-parley="reaction"]')).to_have_count(0, timeout=TIMEOUT_MS)
    msgs = {m["text"]: m for m in _cli_json(wd, "bob", "messages", wd.alice.address)}
    assert msgs[REPLY]["reply_to"] == msgs[FIRST]["id"] and msgs[REPLY]["reactions"] == {}


# --- 3 -----------------------------------------------------------------------------------------


def test_3_a_5mb_image_arrives_previews_and_saves_byte_identical(wd: World, pages: dict[str, object], tmp_path: Path) -> None:
    image: Path = wd.notes["image"]  # type: ignore[assignment]
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    a_w = pages["alice"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    b_w = pages["bob"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    a_w.locator('[data-parley="file-input"]').set_input_files(str(image))
    expect(a_w.locator('[data-parley="attach-list"]')).to_contain_text(image.name)  # staged until Send
    a_w.locator('[data-parley="send"]').click()
    card = b_w.locator('[data-parley="attachment"]')
    expect(card).to_have_count(1, timeout=3 * TIMEOUT_MS)
    thumb = card.locator('[data-parley="thumbnail"]')
    expect(thumb).to_be_visible(timeout=3 * TIMEOUT_MS)
    wait_until(lambda: thumb.evaluate("img => img.complete && img.naturalWidth > 0"), timeout=15, what="the preview decoded")
    b: Page = pages["bob"]  # type: ignore[assignment]
    with b.expect_download(timeout=3 * TIMEOUT_MS) as dl:
        card.locator('[data-parley="save"]').click()
    saved = tmp_path / "widget-save.png"
    dl.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    # The CLI contract: the message lists the file, and `parley attachment save` writes the same bytes.
    msg = next(m for m in _cli_json(wd, "bob", "messages", wd.alice.address) if m["attachments"])
    (att,) = msg["attachments"]
    assert (att["name"], att["size"], att["sha256"], att["mime"]) == (image.name, image.stat().st_size, digest, "image/png")
    out = parley(wd.bob.home, "attachment", "save", msg["id"], str(tmp_path), check=True).stdout.strip().splitlines()[-1]
    assert hashlib.sha256(Path(out).read_bytes()).hexdigest() == digest
    wd.notes["image_digest"] = digest


# --- 4 -----------------------------------------------------------------------------------------


def test_4_the_read_receipt_turns_the_senders_message_to_read(wd: World, pages: dict[str, object]) -> None:
    a_w = pages["alice"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    b_w = pages["bob"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    send_in_widget(a_w, READ_ME)
    expect(b_w.locator('[data-parley="text"]', has_text=READ_ME)).to_have_count(1, timeout=TIMEOUT_MS)  # Bob's open widget reads it
    message = a_w.locator('[data-parley="message"][data-direction="out"]', has_text=READ_ME)
    expect(message).to_have_attribute("data-state", "read", timeout=TIMEOUT_MS)
    expect(_row(a_w, READ_ME).locator('[data-parley="receipt"]')).to_have_text("Read")
    mine = {m["text"]: m for m in _cli_json(wd, "alice", "messages", wd.bob.address)}
    assert mine[READ_ME]["state"] == "read"


# --- 5 -----------------------------------------------------------------------------------------


def test_5_an_edit_and_a_delete_show_on_both_sides(wd: World, pages: dict[str, object]) -> None:
    a_w = pages["alice"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    b_w = pages["bob"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    send_in_widget(a_w, EDIT_FROM)
    send_in_widget(a_w, DELETE_ME)
    expect(b_w.locator('[data-parley="text"]', has_text=DELETE_ME)).to_have_count(1, timeout=TIMEOUT_MS)
    _menu(a_w, EDIT_FROM, "menu-edit")
    composer = a_w.locator('[data-parley="composer"]')
    expect(composer).to_have_value(EDIT_FROM)
    composer.fill(EDIT_TO)
    a_w.locator('[data-parley="send"]').click()
    for w in (a_w, b_w):
        expect(_row(w, EDIT_TO).locator('[data-parley="edited-mark"]')).to_be_visible(timeout=TIMEOUT_MS)
        expect(w.locator('[data-parley="text"]', has_text=EDIT_FROM)).to_have_count(0)
    _menu(a_w, DELETE_ME, "menu-delete")
    for w in (a_w, b_w):
        expect(w.locator('[data-parley="text"]', has_text=DELETE_ME)).to_have_count(0, timeout=TIMEOUT_MS)
        expect(w.locator('[data-parley="tombstone"]')).to_have_count(1)
    # Bob cannot edit or delete Alice's messages: his menu offers neither on them.
    row = _row(b_w, EDIT_TO)
    row.hover()
    row.locator('[data-parley="menu"]').click()
    expect(b_w.locator('[data-parley="menu-edit"]:visible')).to_have_count(0)
    expect(b_w.locator('[data-parley="menu-delete"]:visible')).to_have_count(0)
    b_w.locator("body").press("Escape")


# --- 6 -----------------------------------------------------------------------------------------


def test_6_block_stops_everything(wd: World, pages: dict[str, object]) -> None:
    a_w = pages["alice"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    b_w = pages["bob"].frame_locator('iframe[data-parley="widget"]')  # type: ignore[attr-defined]
    before = _cli_json(wd, "bob", "messages", wd.alice.address)
    parley(wd.bob.home, "block", wd.alice.address, check=True)
    consent = lambda: next(c for c in _cli_json(wd, "bob", "conversations", "--all") if c["peer"].lower() == wd.alice.address.lower())  # noqa: E731
    assert consent()["consent"] == "blocked"
    send_in_widget(a_w, BLOCKED)
    _react(a_w, REPLY, "😂")
    # Alice's side cannot tell: her message is sent as any other.
    expect(a_w.locator('[data-parley="message"][data-direction="out"]', has_text=BLOCKED)).to_have_attribute("data-state", "sent", timeout=TIMEOUT_MS)
    # Bob's bridge took both envelopes in (its cursor moved past them) and kept nothing of them.
    quarantined = _cli_json(wd, "bob", "status")["inbox"]["quarantined"]
    wait_until(lambda: consent()["dropped"] >= 2, timeout=30, what="Bob's bridge dropped both")
    assert _cli_json(wd, "bob", "messages", wd.alice.address) == before
    assert _cli_json(wd, "bob", "status")["inbox"]["quarantined"] == quarantined  # dropped, not refused
    expect(b_w.locator('[data-parley="text"]', has_text=BLOCKED)).to_have_count(0)
    expect(_row(b_w, REPLY).locator('[data-parley="reaction"]')).to_have_count(0)


# --- 7 -----------------------------------------------------------------------------------------


def test_7_the_relay_holds_no_plaintext(wd: World) -> None:
    image: Path = wd.notes["image"]  # type: ignore[assignment]
    data = image.read_bytes()
    secrets_ = [t.encode() for t in (FIRST, SECOND, REPLY, READ_ME, EDIT_FROM, EDIT_TO, DELETE_ME, BLOCKED)]
    # The file: samples from its start (the PNG header is not secret, so past it), middle and end.
    secrets_ += [data[n : n + 48] for n in (4096, len(data) // 2, len(data) - 4096)]
    relay_files = [p for p in wd.tmp.iterdir() if p.name.startswith("relay.db")]
    assert relay_files, list(wd.tmp.iterdir())
    dump = b"".join(p.read_bytes() for p in relay_files)
    assert len(dump) > len(data), "the relay should hold the encrypted file"
    for secret in secrets_:
        for name, form in forms(secret).items():
            assert form not in dump, f"the relay's database holds {secret[:24]!r}… as {name}"
    # The search finds what the relay does hold in the clear: Bob's installation id (his inbox topic).
    iid = str(_cli_json(wd, "bob", "whoami")["installation_id"]).encode()
    assert forms(iid)["raw"] in dump
