"""Issue 12 on the inbox page, in real Chromium: Requests, the message menu, reactions, edits, deletes,
read receipts, typing dots, attachments with progress, thumbnails and Save.

Two parts:

* ``test_page_*_stand_in``: the page and its routes (the real Flask app with the daemon's gates, a
  real Hub, real page sessions) over a real engine whose issue-12 methods (notes ISSUE12 §5) are an
  in-memory stand-in that keeps one conversation as §4 message dicts. They check the page's own
  behaviour (what it renders, which routes it calls with what, that peer text stays text).
* ``test_two_bridges_*``: the full flow between two real bridges (``parley run`` ×2, a relay), one
  Chromium page each; it needs the engine of issue 12 (consent, content types, attachments).
"""

from __future__ import annotations

import hashlib
import io
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sock import Sock
from playwright.sync_api import Browser, Page, expect
from werkzeug.serving import make_server

from bridge import identity
from bridge.api import web
from bridge.api.access import Access, PageSessions
from bridge.api.rpc import Hub, LocalApi
from bridge.api.web import register_local_api
from bridge.engine import BadInput, Engine, SendResult
from bridge.resolve import Contacts
from e2e.harness import ARTIFACTS_DIR
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.procs import Proc, free_port, parley, start_bridge, start_relay, wait_for, whoami

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 20_000
HOSTILE = '<img src=x onerror="window.__pwned=1">**bold** & <b>not bold</b>'


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (61, 47, 143)).save(out, "PNG")
    return out.getvalue()


# --- part 1: the page over a stand-in of the contract's engine methods ---------------------------------


class StandIn:
    """The issue-12 engine methods (contract §5/§6) over one in-memory conversation with ``peer``."""

    def __init__(self, eng: Engine, hub: Hub, peer: str, tmp: Path) -> None:
        self.me, self.peer, self.hub, self.tmp, self.store = eng.address, peer, hub, tmp, eng.store
        self.messages: list[dict[str, Any]] = []
        self.state = "requested"
        self.held = 2
        self.calls: list[tuple[str, Any]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self.files: dict[str, Path] = {}
        self.lock = threading.Lock()
        for name in ("conversations", "consent", "set_consent", "send", "react", "edit", "delete", "typing", "message",
                     "upload_begin", "upload_chunk", "attachment_path"):
            setattr(eng, name, getattr(self, name))
        with eng.store.write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS attachments (id TEXT PRIMARY KEY, message_id TEXT, idx INTEGER, name TEXT,"
                      " size INTEGER, mime TEXT, state TEXT, thumb BLOB)")

    def add(self, direction: str, text: str, **extra: Any) -> dict[str, Any]:
        m = {
            "id": secrets.token_hex(16), "peer": self.peer, "sender": self.me if direction == "out" else self.peer,
            "recipient": self.peer if direction == "out" else self.me, "text": text, "sent_at": int(time.time() * 1000),
            "direction": direction, "state": "sent" if direction == "out" else "received", "read": False, "flag": None,
            "kind": "text", "content_type": "text", "unsupported": False, "reply_to": None, "reply_preview": None,
            "reactions": {}, "edited": False, "deleted": False, "attachments": [], **extra,
        }
        with self.lock:
            self.messages.append(m)
        return m

    def updated(self, m: dict[str, Any]) -> dict[str, Any]:
        self.hub.publish("message.updated", {"message": m})
        return m

    def find(self, peer: str, mid: str) -> dict[str, Any]:
        if peer != self.peer:
            raise BadInput("unknown message")
        for m in self.messages:
            if m["id"] == mid:
                return m
        raise BadInput("unknown message")

    def list(self, store: Any, peer: str) -> list[dict[str, Any]]:
        return [dict(m) for m in self.messages] if peer == self.peer else []

    def conversations(self, folder: str = "inbox") -> list[dict[str, Any]]:
        self.calls.append(("conversations", folder))
        shown = {"inbox": ("allowed",), "requests": ("requested",), "all": ("allowed", "requested", "declined", "blocked")}[folder]
        if self.state not in shown:
            return []
        last = self.messages[-1] if self.messages else None
        return [{"peer": self.peer, "consent": self.state, "unread": 0, "last_message_at": last and last["sent_at"],
                 "updated_at": 0, "held": self.held, "last": last}]

    def consent(self, peer: str) -> dict[str, Any]:
        return {"peer": peer, "consent": self.state if peer == self.peer else "allowed", "held": self.held, "dropped": 0}

    def set_consent(self, peer: str, action: str) -> dict[str, Any]:
        self.calls.append(("set_consent", action))
        self.state = {"accept": "allowed", "decline": "declined", "block": "blocked", "unblock": "allowed"}[action]
        self.held = 0 if action == "accept" else self.held
        self.hub.publish("consent.changed", {"peer": peer, "consent": self.state})
        return self.consent(peer)

    def send(self, peer: str, text: str, *, reply_to: str | None = None, uploads: tuple[str, ...] = ()) -> SendResult:
        self.calls.append(("send", {"text": text, "reply_to": reply_to, "uploads": list(uploads)}))
        self.state = "allowed"
        preview = None
        if reply_to:
            target = self.find(peer, reply_to)
            preview = {"id": reply_to, "sender": target["sender"], "text": target["text"], "deleted": target["deleted"]}
        mid = secrets.token_hex(16)
        files = []
        for i, upload_id in enumerate(uploads):
            u = self.uploads.pop(upload_id)
            attachment_id = f"{mid}-{i}"
            path = self.tmp / attachment_id
            path.write_bytes(bytes(u["data"]))
            self.files[attachment_id] = path
            for done in (len(u["data"]) // 2, len(u["data"])):
                self.hub.publish("attachment.progress", {"id": attachment_id, "peer": peer, "phase": "upload", "done": done, "total": len(u["data"])})
            thumb = png(64, 48) if u["mime"] == "image/png" else None
            with self.store.write() as c:
                c.execute("INSERT INTO attachments (id, message_id, idx, name, size, mime, state, thumb) VALUES (?, ?, ?, ?, ?, ?, 'local', ?)",
                          (attachment_id, mid, i, u["name"], len(u["data"]), u["mime"], thumb))
            files.append({"id": attachment_id, "name": u["name"], "size": len(u["data"]), "sha256": hashlib.sha256(u["data"]).hexdigest(),
                          "mime": u["mime"], "state": "local", "thumbnail": thumb is not None, "progress": None})
        kind = "attachment" if files else ("reply" if reply_to else "text")
        m = self.add("out", text, id=mid, reply_to=reply_to, reply_preview=preview, attachments=files, kind=kind, content_type=kind)
        return SendResult(dict(m), True)

    def react(self, peer: str, mid: str, emoji: str, *, remove: bool = False) -> dict[str, Any]:
        self.calls.append(("react", (mid, emoji, remove)))
        m = self.find(peer, mid)
        who = set(m["reactions"].get(emoji, []))
        who.discard(self.me) if remove else who.add(self.me)
        m["reactions"] = {**m["reactions"], emoji: sorted(who)} if who else {k: v for k, v in m["reactions"].items() if k != emoji}
        return self.updated(dict(m))

    def edit(self, peer: str, mid: str, text: str) -> dict[str, Any]:
        self.calls.append(("edit", (mid, text)))
        m = self.find(peer, mid)
        if m["direction"] != "out":
            raise BadInput("not the sender's message")
        m.update(text=text, edited=True)
        return self.updated(dict(m))

    def delete(self, peer: str, mid: str) -> dict[str, Any]:
        self.calls.append(("delete", mid))
        m = self.find(peer, mid)
        if m["direction"] != "out":
            raise BadInput("not the sender's message")
        m.update(text="", deleted=True, attachments=[], reactions={})
        return self.updated(dict(m))

    def typing(self, peer: str, typing: bool) -> bool:
        self.calls.append(("typing", typing))
        return True

    def message(self, mid: str) -> dict[str, Any] | None:
        return next((dict(m) for m in self.messages if m["id"] == mid), None)

    def upload_begin(self, name: str, size: int, mime: str) -> str:
        upload_id = secrets.token_hex(8)
        self.uploads[upload_id] = {"name": name, "size": size, "mime": mime, "data": bytearray()}
        return upload_id

    def upload_chunk(self, upload_id: str, offset: int, data: bytes) -> int:
        u = self.uploads[upload_id]
        assert offset == len(u["data"]) and len(data) <= web.UPLOAD_CHUNK
        u["data"] += data
        return len(u["data"])

    def attachment_path(self, attachment_id: str) -> Path:
        return self.files[attachment_id]


@dataclass
class Served:
    url: str
    api: LocalApi
    engine: StandIn

    def link(self) -> str:
        return f"{self.url}/login#t={self.api.pages.new_link('inbox')}"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    port = free_port()
    eng = make_engine(tmp_path / "me.db", "http://127.0.0.1:9", register=False)
    hub = Hub()
    api = LocalApi(eng, Access(eng.store), Contacts(tmp_path / "contacts.json"), lambda: True, hub)
    api.pages = PageSessions()
    stand_in = StandIn(eng, hub, identity.checksum_address("0x" + "5a" * 20), tmp_path)
    monkeypatch.setattr(web, "messages_of", stand_in.list)
    app = Flask("parley.bridge", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    register_local_api(app, Sock(app), api, port=port)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{port}", api, stand_in)
    finally:
        server.shutdown()
        thread.join(timeout=5)


def msg(page: Page, text: str) -> Any:
    return page.locator('[data-parley="message"]', has_text=text)


def test_page_requests_menu_reactions_edit_delete_receipt_typing_stand_in(served: Served, chromium: Browser) -> None:
    e = served.engine
    first = e.add("in", "hello from a stranger")
    hostile = e.add("in", HOSTILE)
    context = chromium.new_context()
    page = context.new_page()
    page.goto(served.link())
    # The Requests folder with its count; the conversation is not in the inbox.
    expect(page.locator('[data-parley="folder-requests"]')).to_contain_text("1", timeout=TIMEOUT_MS)
    expect(page.locator('[data-parley="conversation"]')).to_have_count(0)
    page.locator('[data-parley="folder-requests"]').click()
    conv = page.locator('[data-parley="conversation"]')
    expect(conv).to_have_count(1, timeout=TIMEOUT_MS)
    conv.click()
    banner = page.locator('[data-parley="requests-banner"]')
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(banner.locator('[data-parley="held-count"]')).to_contain_text("2")
    for hook in ("accept", "block", "decline"):
        expect(banner.locator(f'[data-parley="{hook}"]')).to_be_visible()
    # Peer text is text.
    expect(msg(page, "onerror").locator('[data-parley="text"]')).to_have_text(HOSTILE)
    assert page.locator('[data-parley="thread"] img, [data-parley="thread"] b').count() == 0
    assert page.evaluate("window.__pwned") is None
    # No typing is sent while it is a request (that would accept it).
    page.locator('[data-parley="reply-text"]').fill("x")
    page.locator('[data-parley="reply-text"]').fill("")
    banner.locator('[data-parley="accept"]').click()
    expect(banner).to_be_hidden(timeout=TIMEOUT_MS)
    expect(page.locator('[data-parley="folder-requests"] [data-parley="requests-count"]')).to_have_text("")
    assert ("set_consent", "accept") in e.calls and not [c for c in e.calls if c[0] == "typing"]
    assert msg(page, "onerror").get_attribute("data-id") == hostile["id"]
    expect(page.locator('[data-parley="conversation-block"]')).to_be_visible()

    # Reply from the menu: the composer shows what it answers; the sent message quotes it.
    row = page.locator('[data-parley="message"][data-id="' + first['id'] + '"]')
    row.locator('[data-parley="menu"]').click()
    expect(row.locator('[data-parley="menu-edit"]')).to_have_count(0)  # not ours
    expect(row.locator('[data-parley="menu-delete"]')).to_have_count(0)
    row.locator('[data-parley="menu-reply"]').click()
    expect(page.locator('[data-parley="reply-preview"]')).to_contain_text("hello from a stranger")
    page.locator('[data-parley="reply-text"]').fill("hi, who is this?")
    page.locator('[data-parley="reply-send"]').click()
    mine = msg(page, "hi, who is this?")
    expect(mine).to_have_count(1, timeout=TIMEOUT_MS)
    mine = page.locator(f'[data-parley="message"][data-id="{mine.get_attribute("data-id")}"]')
    expect(mine.locator('[data-parley="reply-quote"]')).to_contain_text("hello from a stranger")
    expect(page.locator('[data-parley="reply-preview"]')).to_be_hidden()
    assert ("send", {"text": "hi, who is this?", "reply_to": first["id"], "uploads": []}) in e.calls
    assert ("typing", True) in e.calls

    # React: a chip with the count and who; clicking our own chip removes it.
    row.locator('[data-parley="menu"]').click()
    row.locator('[data-parley="menu-react"]').click()
    row.locator('[data-parley="react-choice"][data-emoji="❤️"]').click()
    chip = row.locator('[data-parley="reaction"][data-emoji="❤️"]')
    expect(chip).to_have_text("❤️ 1", timeout=TIMEOUT_MS)
    expect(chip).to_have_attribute("title", "you")
    e.react(e.peer, first["id"], "👍")
    with e.lock:
        first["reactions"]["👍"] = sorted([e.peer, e.me])
    e.updated(first)
    thumbs = row.locator('[data-parley="reaction"][data-emoji="👍"]')
    expect(thumbs).to_have_text("👍 2", timeout=TIMEOUT_MS)
    assert sorted(thumbs.get_attribute("title").split(", ")) == sorted([e.peer, "you"])  # type: ignore[union-attr]
    chip.click()
    expect(chip).to_have_count(0, timeout=TIMEOUT_MS)
    assert ("react", (first["id"], "❤️", True)) in e.calls

    # Edit our message: the text moves into the composer; it then shows "edited".
    mine_id = mine.get_attribute("data-id")
    mine.locator('[data-parley="menu"]').click()
    mine.locator('[data-parley="menu-edit"]').click()
    expect(page.locator('[data-parley="reply-text"]')).to_have_value("hi, who is this?")
    page.locator('[data-parley="reply-text"]').fill("hi, who are you?")
    page.locator('[data-parley="reply-send"]').click()
    edited = page.locator(f'[data-parley="message"][data-id="{mine_id}"]')
    expect(edited.locator('[data-parley="text"]')).to_have_text("hi, who are you?", timeout=TIMEOUT_MS)
    expect(edited.locator('[data-parley="edited-mark"]')).to_have_text("edited")
    assert ("edit", (mine_id, "hi, who are you?")) in e.calls

    # The peer's read receipt: "Read"; the peer typing: dots, gone on their message.
    with e.lock:
        e.messages[-1]["state"] = "read"
    e.updated(e.messages[-1])
    expect(edited.locator('[data-parley="receipt"]')).to_have_text("Read", timeout=TIMEOUT_MS)
    expect(edited).to_have_attribute("data-state", "read")
    served.api.hub.publish("typing", {"peer": e.peer, "typing": True})
    expect(page.locator('[data-parley="typing"]')).to_be_visible(timeout=TIMEOUT_MS)
    later = e.add("in", "I am the one from the market")
    served.api.hub.publish("message.new", {"message": later})
    expect(msg(page, "from the market")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator('[data-parley="typing"]')).to_be_hidden()

    # Delete for everyone: a tombstone, no menu any more.
    edited.locator('[data-parley="menu"]').click()
    edited.locator('[data-parley="menu-delete"]').click()
    expect(edited.locator('[data-parley="tombstone"]')).to_have_text("This message was deleted", timeout=TIMEOUT_MS)
    expect(edited.locator('[data-parley="text"], [data-parley="menu"], [data-parley="edited-mark"]')).to_have_count(0)
    assert ("delete", mine_id) in e.calls
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "inbox-page-issue12.png"), full_page=True)
    context.close()


def test_page_attach_upload_progress_thumbnail_save_and_drop_stand_in(served: Served, chromium: Browser, tmp_path: Path) -> None:
    e = served.engine
    e.state = "allowed"
    e.add("in", "send me the picture")
    picture = png(1600, 1200) + secrets.token_bytes(3 * 1024 * 1024)  # 3 MB: over the app's 2 MiB JSON limit
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    # Record every text the upload progress line shows (it may be brief on loopback).
    page.add_init_script("""
      window.__progress = [];
      new MutationObserver(() => {
        const t = document.querySelector('[data-parley="upload-progress-text"]');
        if (t && t.textContent && window.__progress.at(-1) !== t.textContent) window.__progress.push(t.textContent);
      }).observe(document, { subtree: true, childList: true, characterData: true });
    """)
    page.goto(served.link())
    page.locator('[data-parley="conversation"]').click()
    expect(msg(page, "send me the picture")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator('[data-parley="attach"]')).to_be_visible()
    page.locator('[data-parley="file-input"]').set_input_files({"name": "mill <at> night.png", "mimeType": "image/png", "buffer": picture})
    expect(page.locator('[data-parley="pending-upload"]')).to_contain_text("mill <at> night.png", timeout=TIMEOUT_MS)
    page.locator('[data-parley="reply-send"]').click()
    card = page.locator('[data-parley="attachment"]')
    expect(card).to_have_count(1, timeout=TIMEOUT_MS)
    progress = page.evaluate("window.__progress")
    assert any(p.startswith("Uploading mill <at> night.png") for p in progress), progress
    assert any(p.startswith("Sending") for p in progress), progress
    ((_, sent),) = [c for c in e.calls if c[0] == "send"]
    assert sent["text"] == "" and len(sent["uploads"]) == 1
    thumb = card.locator('[data-parley="thumbnail"]')
    expect(thumb).to_have_attribute("src", lambda_src := __import__("re").compile(r"^blob:"), timeout=TIMEOUT_MS)
    del lambda_src
    wait_for(lambda: page.evaluate("document.querySelector('[data-parley=\"thumbnail\"]').naturalWidth") == 64, what="the thumbnail renders")
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "inbox-page-attachment.png"), full_page=True)
    with page.expect_download() as info:
        card.locator('[data-parley="save"]').click()
    download = info.value
    assert download.suggested_filename in ("mill <at> night.png", "mill _at_ night.png")  # Chromium replaces <> in names
    assert Path(download.path()).read_bytes() == picture, "the saved file is not byte-identical"
    assert e.uploads == {}

    # Drag and drop: the hint shows while dragging files over the page; a drop uploads them.
    page.evaluate("""() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['dropped bytes'], 'notes.txt', { type: 'text/plain' }));
      document.querySelector('[data-parley="thread"]').dispatchEvent(new DragEvent('dragover', { bubbles: true, cancelable: true, dataTransfer: dt }));
      window.__dt = dt;
    }""")
    expect(page.locator('[data-parley="drop-hint"]')).to_be_visible()
    page.evaluate("""() => document.querySelector('[data-parley="thread"]').dispatchEvent(
      new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: window.__dt }))""")
    expect(page.locator('[data-parley="drop-hint"]')).to_be_hidden()
    expect(page.locator('[data-parley="pending-upload"]')).to_contain_text("notes.txt", timeout=TIMEOUT_MS)
    (upload,) = e.uploads.values()
    assert bytes(upload["data"]) == b"dropped bytes" and upload["mime"] == "text/plain"

    # A file over 25 MB is refused in the page, before any upload.
    page.evaluate("""() => {
      const big = new File([new Uint8Array(26214401)], 'big.bin');
      const dt = new DataTransfer(); dt.items.add(big);
      document.body.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: dt }));
    }""")
    expect(page.locator('[data-parley="error"]')).to_contain_text("larger than 25 MB", timeout=TIMEOUT_MS)
    assert len(e.uploads) == 1
    context.close()


# --- part 2: two real bridges (needs the issue-12 engine: consent, content types, attachments) -------


@dataclass
class Side:
    home: Path
    address: str
    proc: Proc
    url: str


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    tmp = tmp_path_factory.mktemp("two-bridges")
    relay, relay_url = start_relay(tmp / "relay.db")
    sides: list[Side] = []
    try:
        for name in ("alice", "bob"):
            home = tmp / name
            parley(home, "init", "--relay", relay_url, check=True)
            proc, url = start_bridge(home, free_port(), relay_url)
            proc.expect("subscribed to")
            sides.append(Side(home, whoami(home)["address"], proc, url))
        yield sides[0], sides[1]
    finally:
        for s in sides:
            s.proc.stop()
        relay.stop()


def open_page(side: Side, browser: Browser) -> Page:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(parley(side.home, "open", check=True).stdout.strip().splitlines()[-1])
    expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=TIMEOUT_MS)
    return page


def test_two_bridges_request_accept_reply_react_edit_delete_read_typing_and_a_picture(two: tuple[Side, Side], chromium: Browser) -> None:
    alice, bob = two
    # Bob (a stranger to Alice) writes first: Alice's page shows it in Requests only.
    parley(bob.home, "send", alice.address, "hi Alice, I found your wallet on hey.xyz", check=True)
    a = open_page(alice, chromium)
    expect(a.locator('[data-parley="folder-requests"]')).to_contain_text("1", timeout=TIMEOUT_MS)
    expect(a.locator('[data-parley="conversation"]')).to_have_count(0)
    a.locator('[data-parley="folder-requests"]').click()
    a.locator('[data-parley="conversation"]').click()
    expect(a.locator('[data-parley="requests-banner"]')).to_be_visible(timeout=TIMEOUT_MS)
    a.locator('[data-parley="accept"]').click()
    expect(a.locator('[data-parley="requests-banner"]')).to_be_hidden(timeout=TIMEOUT_MS)

    b = open_page(bob, chromium)
    b.locator('[data-parley="conversation"]').click()
    first = msg(b, "I found your wallet")
    expect(first).to_have_count(1, timeout=TIMEOUT_MS)

    # Alice replies from the menu; both pages show the quote, live.
    row = msg(a, "I found your wallet")
    row.locator('[data-parley="menu"]').click()
    row.locator('[data-parley="menu-reply"]').click()
    a.locator('[data-parley="reply-text"]').fill("Hi Bob, welcome")
    expect(b.locator('[data-parley="typing"]')).to_be_visible(timeout=TIMEOUT_MS)  # Bob sees Alice typing
    a.locator('[data-parley="reply-send"]').click()
    for page in (a, b):
        expect(msg(page, "Hi Bob, welcome").locator('[data-parley="reply-quote"]')).to_contain_text("I found your wallet", timeout=TIMEOUT_MS)
    expect(b.locator('[data-parley="typing"]')).to_be_hidden(timeout=TIMEOUT_MS)

    # Bob reacts to Alice's reply; both see the chip.
    reply_b = msg(b, "Hi Bob, welcome")
    reply_b.locator('[data-parley="menu"]').click()
    reply_b.locator('[data-parley="menu-react"]').click()
    reply_b.locator('[data-parley="react-choice"][data-emoji="👍"]').click()
    for page in (a, b):
        expect(msg(page, "Hi Bob, welcome").locator('[data-parley="reaction"][data-emoji="👍"]')).to_have_text("👍 1", timeout=TIMEOUT_MS)

    # Bob reads: Alice's reply turns "Read".
    b.locator('[data-parley="mark-read"]').click()
    expect(msg(a, "Hi Bob, welcome").locator('[data-parley="receipt"]')).to_have_text("Read", timeout=TIMEOUT_MS)

    # Alice edits, then deletes, her reply: both sides show it.
    mine = msg(a, "Hi Bob, welcome")
    mid = mine.get_attribute("data-id")
    mine.locator('[data-parley="menu"]').click()
    mine.locator('[data-parley="menu-edit"]').click()
    a.locator('[data-parley="reply-text"]').fill("Hi Bob, welcome aboard")
    a.locator('[data-parley="reply-send"]').click()
    for page in (a, b):
        row = page.locator(f'[data-parley="message"][data-id="{mid}"]')
        expect(row.locator('[data-parley="text"]')).to_have_text("Hi Bob, welcome aboard", timeout=TIMEOUT_MS)
        expect(row.locator('[data-parley="edited-mark"]')).to_be_visible()
    a.locator(f'[data-parley="message"][data-id="{mid}"] [data-parley="menu"]').click()
    a.locator(f'[data-parley="message"][data-id="{mid}"] [data-parley="menu-delete"]').click()
    for page in (a, b):
        expect(page.locator(f'[data-parley="message"][data-id="{mid}"] [data-parley="tombstone"]')).to_be_visible(timeout=TIMEOUT_MS)

    # Bob sends a 5 MB picture: Alice sees the thumbnail and saves it byte-identical.
    picture = png(2000, 1500) + secrets.token_bytes(5 * 1024 * 1024 - 20_000)
    b.locator('[data-parley="file-input"]').set_input_files({"name": "mill.png", "mimeType": "image/png", "buffer": picture})
    expect(b.locator('[data-parley="pending-upload"]')).to_have_count(1, timeout=TIMEOUT_MS)
    b.locator('[data-parley="reply-send"]').click()
    card = a.locator('[data-parley="attachment"]')
    expect(card).to_have_count(1, timeout=60_000)
    expect(card.locator('[data-parley="thumbnail"]')).to_have_attribute("src", __import__("re").compile(r"^blob:"), timeout=60_000)
    with a.expect_download() as info:
        card.locator('[data-parley="save"]').click()
    assert Path(info.value.path()).read_bytes() == picture

    # Alice blocks Bob: what he sends then is never shown, not even after she unblocks him.
    a.locator('[data-parley="conversation-block"]').click()
    expect(a.locator('[data-parley="blocked-banner"]')).to_be_visible(timeout=TIMEOUT_MS)
    expect(a.locator('[data-parley="reply-form"]')).to_be_hidden()
    parley(bob.home, "send", alice.address, "sent while blocked", check=True)
    dropped = f"""async () => (await (await fetch('/api/inbox/c/{bob.address}', {{ headers: {{ 'X-Parley-Session':
        JSON.parse(sessionStorage.getItem('parley.inbox')).session }} }})).json()).dropped"""
    wait_for(lambda: a.evaluate(dropped) >= 1, what="Alice's bridge drops what Bob sends while blocked")
    a.locator('[data-parley="unblock"]').click()
    expect(a.locator('[data-parley="blocked-banner"]')).to_be_hidden(timeout=TIMEOUT_MS)
    parley(bob.home, "send", alice.address, "sent after unblock", check=True)
    expect(msg(a, "sent after unblock")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(msg(a, "sent while blocked")).to_have_count(0)
    a.context.close()
    b.context.close()
