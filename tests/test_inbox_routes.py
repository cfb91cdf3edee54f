"""The inbox page's issue-12 routes (bridge/api/web.py, PROTOCOL §8.3): their gates and input checks.

The routes run on a real Flask app with the daemon's gates (register_local_api) over a real engine and
store; the engine methods of the issue-12 contract (notes ISSUE12 §5/§6: react, edit, delete, typing,
consent, upload_begin/upload_chunk, attachment_path, …) are recorded by stand-ins set on the engine
instance, so what reaches the engine (and what never does) is asserted exactly. Each refused request
must leave the engine uncalled.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sock import Sock

from bridge.api import web
from bridge.api.access import Access, PageSessions
from bridge.api.rpc import Hub, LocalApi
from bridge.api.web import PageStream, download_name, register_local_api
from bridge.engine import BadInput, Engine, SendResult
from bridge.resolve import Contacts
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)

PORT = 8737
OURS = f"http://127.0.0.1:{PORT}"
PEER = "0x" + "ab" * 20
MID = "0123456789abcdef0123456789abcdef"
ATT = f"{MID}-0"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


class Recorder:
    """Stand-ins for the contract's engine methods, recording every call."""

    def __init__(self, eng: Engine, tmp: Path) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.chunks: list[tuple[str, int, int]] = []
        self.file = tmp / "att.bin"
        self.file.write_bytes(b"<html><script>alert(1)</script></html>" + bytes(range(256)))
        self.attachment_name = 'evil".html\r\nX-Injected: 1'
        self.fail: Exception | None = None
        for name in ("conversations", "consent", "set_consent", "react", "edit", "delete", "typing", "send",
                     "upload_begin", "upload_chunk", "upload_cancel", "message", "attachment_path"):
            setattr(eng, name, self._recorded(name))

    def _recorded(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if self.fail is not None and name not in ("message", "conversations", "consent"):
                raise self.fail
            return getattr(self, f"r_{name}")(*args, **kwargs)

        return call

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def r_conversations(self, folder: str = "inbox") -> list[dict[str, Any]]:
        peer = {"inbox": "0x" + "11" * 20, "requests": "0x" + "22" * 20, "all": "0x" + "33" * 20}[folder]
        return [{"peer": peer, "consent": "allowed", "unread": 0, "last_message_at": 1, "updated_at": 1, "held": 0, "last": None}]

    def r_consent(self, peer: str) -> dict[str, Any]:
        return {"peer": peer, "consent": "requested", "held": 2, "dropped": 0}

    def r_set_consent(self, peer: str, action: str) -> dict[str, Any]:
        return {"peer": peer, "consent": {"accept": "allowed", "decline": "declined", "block": "blocked", "unblock": "allowed"}[action], "held": 0, "dropped": 0}

    def r_react(self, peer: str, mid: str, emoji: str, *, remove: bool = False) -> dict[str, Any]:
        return {"id": mid, "reactions": {} if remove else {emoji: ["me"]}}

    def r_edit(self, peer: str, mid: str, text: str) -> dict[str, Any]:
        return {"id": mid, "text": text, "edited": True}

    def r_delete(self, peer: str, mid: str) -> dict[str, Any]:
        return {"id": mid, "text": "", "deleted": True}

    def r_typing(self, peer: str, typing: bool) -> bool:
        return True

    def r_send(self, peer: str, text: str, *, reply_to: str | None = None, uploads: tuple[str, ...] = ()) -> SendResult:
        return SendResult({"id": MID, "text": text, "reply_to": reply_to}, True)

    def r_upload_begin(self, name: str, size: int, mime: str) -> str:
        return "up1"

    def r_upload_cancel(self, upload_id: str) -> None:
        return None

    def r_upload_chunk(self, upload_id: str, offset: int, data: bytes) -> int:
        self.chunks.append((upload_id, offset, len(data)))
        return offset + len(data)

    def r_message(self, mid: str) -> dict[str, Any] | None:
        if mid != MID:
            return None
        return {"id": MID, "attachments": [{"id": ATT, "name": self.attachment_name, "size": 1, "mime": "text/html", "thumbnail": False}]}

    def r_attachment_path(self, attachment_id: str) -> Path:
        return self.file


class Page:
    def __init__(self, tmp: Path) -> None:
        eng = make_engine(tmp / "bridge.db", "http://127.0.0.1:9", register=False)
        self.engine = eng
        self.rec = Recorder(eng, tmp)
        self.api = LocalApi(eng, Access(eng.store), Contacts(tmp / "contacts.json"), lambda: True, Hub())
        self.api.pages = PageSessions()
        app = Flask(__name__)
        app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024  # as the daemon's
        register_local_api(app, Sock(app), self.api, port=PORT)
        self.client = app.test_client()
        r = self.client.post("/api/session", json={"token": self.api.pages.new_link("inbox")}, headers={"Origin": OURS}, base_url=OURS)
        s = r.get_json()
        self.good = {"X-Parley-Session": s["session"], "X-Parley-CSRF": s["csrf"], "Origin": OURS}

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        if body is not None:
            kw["json"] = body
        return self.client.post(path, headers=self.good if headers is None else headers, base_url=OURS, **kw)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=self.good if headers is None else headers, base_url=OURS)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    yield Page(tmp_path)


WRITES: list[tuple[str, dict[str, Any]]] = [
    (f"/api/inbox/c/{PEER}/consent", {"action": "accept"}),
    (f"/api/inbox/c/{PEER}/send", {"text": "hi", "reply_to": MID}),
    (f"/api/inbox/c/{PEER}/react", {"id": MID, "emoji": "👍"}),
    (f"/api/inbox/c/{PEER}/edit", {"id": MID, "text": "fixed"}),
    (f"/api/inbox/c/{PEER}/delete", {"id": MID}),
    (f"/api/inbox/c/{PEER}/typing", {"typing": True}),
]


@pytest.mark.parametrize(("path", "body"), WRITES, ids=[w[0].rsplit("/", 1)[1] for w in WRITES])
def test_every_write_needs_session_origin_csrf_and_json(page: Page, path: str, body: dict[str, Any]) -> None:
    good = page.good
    for headers, status, code in (
        ({k: v for k, v in good.items() if k != "X-Parley-Session"}, 401, "no-session"),
        ({**good, "X-Parley-Session": good["X-Parley-Session"][::-1]}, 401, "no-session"),
        ({**good, "Origin": "https://hey.xyz"}, 403, "origin"),
        ({k: v for k, v in good.items() if k != "Origin"}, 403, "origin"),
        ({**good, "Origin": "http://127.0.0.1:1"}, 403, "origin"),
        ({k: v for k, v in good.items() if k != "X-Parley-CSRF"}, 403, "csrf"),
        ({**good, "X-Parley-CSRF": good["X-Parley-CSRF"][::-1]}, 403, "csrf"),
    ):
        r = page.post(path, body, headers)
        assert (r.status_code, r.get_json()["error"]["code"]) == (status, code), headers
    form = page.post(path, None, good, data=json.dumps(body), content_type="text/plain")  # a form can send text/plain
    assert form.status_code == 415
    assert page.client.post(path, json=body, headers={**good, "Host": "evil.example"}).status_code == 403
    assert page.rec.calls == [], "a refused request reached the engine"
    ok = page.post(path, body)
    assert ok.status_code == 200, ok.get_json()
    assert ok.headers["X-Content-Type-Options"] == "nosniff" and "default-src 'none'" in ok.headers["Content-Security-Policy"]


def test_writes_pass_exactly_the_checked_input_to_the_engine(page: Page) -> None:
    from bridge import identity

    peer = identity.checksum_address(PEER)
    assert page.post(f"/api/inbox/c/{PEER}/react", {"id": MID, "emoji": "❤️", "remove": True}).get_json() == {"message": {"id": MID, "reactions": {}}}
    assert page.post(f"/api/inbox/c/{PEER}/edit", {"id": MID, "text": "new"}).get_json()["message"]["edited"] is True
    assert page.post(f"/api/inbox/c/{PEER}/delete", {"id": MID}).get_json()["message"]["deleted"] is True
    assert page.post(f"/api/inbox/c/{PEER}/typing", {"typing": False}).get_json() == {"sent": True}
    assert page.post(f"/api/inbox/c/{PEER}/consent", {"action": "block"}).get_json()["consent"] == "blocked"
    assert page.post(f"/api/inbox/c/{PEER}/send", {"text": "", "uploads": ["up1", "up2"], "reply_to": MID}).get_json()["delivered"] is True
    assert page.post(f"/api/inbox/c/{PEER}/send", {"text": "plain"}).status_code == 200
    assert page.rec.calls == [
        ("react", (peer, MID, "❤️"), {"remove": True}),
        ("edit", (peer, MID, "new"), {}),
        ("delete", (peer, MID), {}),
        ("typing", (peer, False), {}),
        ("set_consent", (peer, "block"), {}),
        ("send", (peer, ""), {"reply_to": MID, "uploads": ("up1", "up2")}),
        ("send", (peer, "plain"), {}),
    ]


BAD_INPUT: list[tuple[str, Any]] = [
    ("consent", {"action": "accept-all"}), ("consent", {}), ("consent", {"action": ["accept"]}),
    ("react", {"id": MID.upper(), "emoji": "👍"}), ("react", {"id": MID[:-1], "emoji": "👍"}), ("react", {"id": 7, "emoji": "👍"}),
    ("react", {"id": MID}), ("react", {"id": MID, "emoji": ""}), ("react", {"id": MID, "emoji": "👍" * 9}),
    ("react", {"id": MID, "emoji": "👍", "remove": "yes"}), ("react", {"id": f"{MID}' OR 1=1", "emoji": "👍"}),
    ("edit", {"id": MID, "text": ""}), ("edit", {"id": MID, "text": "   "}), ("edit", {"id": MID, "text": "x" * 65537}),
    ("edit", {"id": MID}), ("edit", {"id": "../../etc", "text": "x"}), ("delete", {}), ("delete", {"id": None}),
    ("typing", {"typing": "true"}), ("typing", {}), ("typing", {"typing": 1}),
    ("send", {"text": 5}), ("send", {"text": ""}), ("send", {"text": "x", "reply_to": "nope"}),
    ("send", {"text": "", "uploads": "up1"}), ("send", {"text": "", "uploads": [f"u{i}" for i in range(11)]}),
    ("send", {"text": "", "uploads": ["../x"]}), ("send", {"text": "", "uploads": [3]}),
]


@pytest.mark.parametrize(("route", "body"), BAD_INPUT)
def test_bad_input_is_refused_with_400_before_the_engine(page: Page, route: str, body: Any) -> None:
    r = page.post(f"/api/inbox/c/{PEER}/{route}", body)
    assert r.status_code == 400 and r.get_json()["error"]["message"], r.get_json()
    assert page.rec.calls == []


def test_a_bad_peer_is_404_and_a_json_array_400(page: Page) -> None:
    assert page.post("/api/inbox/c/0x1234/react", {"id": MID, "emoji": "👍"}).status_code == 404
    assert page.post(f"/api/inbox/c/{PEER}/react", None, data="[1]", content_type="application/json").status_code == 400
    assert page.rec.calls == []


def test_the_engines_refusal_is_a_400_with_its_message(page: Page) -> None:
    page.rec.fail = BadInput("not the sender's message")
    r = page.post(f"/api/inbox/c/{PEER}/edit", {"id": MID, "text": "forged"})
    assert r.status_code == 400 and r.get_json()["error"]["message"] == "not the sender's message"
    r = page.post(f"/api/inbox/c/{PEER}/send", {"text": "x"})
    assert r.status_code == 400 and "not the sender" in r.get_json()["error"]["message"]


def test_folders_and_the_requests_count(page: Page) -> None:
    r = page.get("/api/inbox?folder=requests")
    body = r.get_json()
    assert r.status_code == 200 and body["folder"] == "requests" and body["requests"] == 1
    assert [c["peer"] for c in body["conversations"]] == ["0x" + "22" * 20]
    body = page.get("/api/inbox").get_json()
    assert body["folder"] == "inbox" and [c["peer"] for c in body["conversations"]] == ["0x" + "11" * 20] and body["requests"] == 1
    assert [c[1] for c in page.rec.calls] == [("requests",), ("inbox",), ("requests",)]
    assert page.get("/api/inbox?folder=spam").status_code == 400
    assert page.get("/api/inbox?folder=requests", headers={}).status_code == 401
    thread = page.get(f"/api/inbox/c/{PEER}").get_json()
    assert (thread["consent"], thread["held"], thread["dropped"], thread["messages"]) == ("requested", 2, 0, [])


def upload(page: Page, body: bytes | None = None, *, length: int | None = None, query: str = "name=cat.png&mime=image/png",
           headers: dict[str, str] | None = None, content_type: str = "application/octet-stream") -> Any:
    data = b"" if body is None else body
    overrides = {} if length is None else {"CONTENT_LENGTH": str(length)}  # the header, whatever the body is
    return page.client.post(f"/api/inbox/uploads?{query}", input_stream=io.BytesIO(data), environ_overrides=overrides,
                            content_type=content_type, headers=page.good if headers is None else headers, base_url=OURS)


def test_an_upload_is_streamed_to_the_engine_in_chunks(page: Page) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: over the app's 2 MiB JSON limit
    r = upload(page, body, length=len(body))
    assert r.status_code == 201 and r.get_json() == {"upload_id": "up1"}
    assert page.rec.calls[0] == ("upload_begin", ("cat.png", len(body), "image/png"), {})
    offsets = [c[1] for c in page.rec.chunks]
    sizes = [c[2] for c in page.rec.chunks]
    assert len(sizes) > 10 and max(sizes) <= web.UPLOAD_CHUNK, "the file was not handed over in chunks"
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))] and sum(sizes) == len(body)


def test_upload_gates_length_and_size(page: Page) -> None:
    good = page.good
    assert upload(page, b"x", length=1, headers={k: v for k, v in good.items() if k != "X-Parley-CSRF"}).status_code == 403
    assert upload(page, b"x", length=1, headers={**good, "Origin": "https://hey.xyz"}).status_code == 403
    assert upload(page, b"x", length=1, headers={k: v for k, v in good.items() if k != "X-Parley-Session"}).status_code == 401
    assert upload(page, b"x", length=1, content_type="text/plain").status_code == 415  # a form cannot send octet-stream cross-origin unpreflighted
    assert upload(page, b"x", length=1, content_type="multipart/form-data; boundary=x").status_code == 415
    missing = upload(page, b"x" * 10, headers={**good, "Transfer-Encoding": "chunked"})  # no Content-Length
    assert (missing.status_code, missing.get_json()["error"]["code"]) == (411, "length-required")
    big = upload(page, b"x" * 10, length=web.MAX_FILE_BYTES + 1)
    assert (big.status_code, big.get_json()["error"]["code"]) == (413, "too-large")
    assert upload(page, b"", length=0, query="mime=image/png").status_code == 400  # no name
    assert upload(page, b"x", length=1, query="name=" + "n" * 256).status_code == 400
    assert upload(page, b"x", length=1, query="name=a&mime=" + "m" * 128).status_code == 400
    assert page.rec.calls == []
    short = upload(page, b"x" * 10, length=500)
    assert short.status_code == 400 and "ended after 10 of 500" in short.get_json()["error"]["message"]
    assert page.rec.names()[-1] == "upload_cancel"  # nothing partial is kept
    page.rec.fail = BadInput("name must not contain '/'")
    refused = upload(page, b"x", length=1, query="name=a/b")
    assert refused.status_code == 400 and "'/'" in refused.get_json()["error"]["message"]


def test_an_attachment_is_only_ever_a_download_with_a_safe_name(page: Page) -> None:
    r = page.get(f"/api/inbox/attachments/{ATT}")
    assert r.status_code == 200 and r.data == page.rec.file.read_bytes()
    assert r.headers["Content-Type"] == "application/octet-stream"  # never the peer's text/html
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=\"") and "\r" not in disposition and "\n" not in disposition
    assert disposition.count('"') == 2, disposition  # the peer's quote cannot end the filename early
    assert "default-src 'none'" in r.headers["Content-Security-Policy"] and r.headers["Cache-Control"] == "no-store"
    r.close()
    assert page.rec.names() == ["message", "attachment_path"]
    assert page.get(f"/api/inbox/attachments/{ATT}", headers={}).status_code == 401
    for bad in (MID, f"{MID.upper()}-0", f"{MID}-x", "..%2f..%2fetc", f"{MID}-0-0", f"{MID}-123"):
        assert page.get(f"/api/inbox/attachments/{bad}").status_code in (400, 404), bad
    assert page.get(f"/api/inbox/attachments/{MID}-1").status_code == 404  # no such file in that message
    assert page.get(f"/api/inbox/attachments/{'f' * 32}-0").status_code == 404
    assert page.rec.names().count("attachment_path") == 1


def test_download_names() -> None:
    assert download_name("cat.png") == "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png"
    assert download_name("..\\..\\boot.ini") == "attachment; filename=\"_.._boot.ini\"; filename*=UTF-8''_.._boot.ini"
    assert download_name("\x00\r\n") == "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"
    assert download_name("naïve café.txt").startswith("attachment; filename=\"na_ve caf_.txt\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt")


def test_thumbnails_are_images_of_the_bridge_or_404(page: Page) -> None:
    with page.engine.store.write() as c:  # the attachments table of schema 3 (made here if this store predates it)
        c.execute("CREATE TABLE IF NOT EXISTS attachments (id TEXT PRIMARY KEY, message_id TEXT, idx INTEGER, name TEXT, size INTEGER, mime TEXT, state TEXT, thumb BLOB)")
        c.execute("INSERT INTO attachments (id, message_id, idx, name, size, mime, state, thumb) VALUES (?, ?, 0, 'a.png', 1, 'image/png', 'done', ?)", (ATT, MID, PNG))
    r = page.get(f"/api/inbox/attachments/{ATT}/thumbnail")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png" and r.data == PNG
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert page.get(f"/api/inbox/attachments/{ATT}/thumbnail", headers={}).status_code == 401
    with page.engine.store.write() as c:
        c.execute("UPDATE attachments SET thumb = ? WHERE id = ?", (b"<svg onload=alert(1)>", ATT))
    assert page.get(f"/api/inbox/attachments/{ATT}/thumbnail").status_code == 404  # not an image the bridge made
    with page.engine.store.write() as c:
        c.execute("UPDATE attachments SET thumb = NULL WHERE id = ?", (ATT,))
    assert page.get(f"/api/inbox/attachments/{ATT}/thumbnail").status_code == 404


def test_the_event_stream_forwards_the_new_events_without_text() -> None:
    stream = PageStream(lambda: True)
    peer = "0x" + "ab" * 20
    stream.notify("typing", {"peer": peer, "typing": True})
    stream.notify("consent.changed", {"peer": peer, "consent": "allowed"})
    stream.notify("attachment.progress", {"id": ATT, "peer": peer, "phase": "download", "done": 10, "total": 20})
    stream.notify("message.updated", {"message": {"id": MID, "peer": peer, "text": "secret edit"}})
    stream.notify("typing", {"peer": peer, "typing": "yes", "text": "secret"})
    stream.notify("messages.secret", {"peer": peer})
    got = [stream.events.get_nowait() for _ in range(stream.events.qsize())]
    assert got == [
        {"type": "typing", "peer": peer, "typing": True},
        {"type": "consent.changed", "peer": peer, "consent": "allowed"},
        {"type": "attachment.progress", "peer": peer, "id": ATT, "phase": "download", "done": 10, "total": 20},
        {"type": "message.updated", "peer": peer},
        {"type": "typing", "peer": peer},
    ]


# --- over the real engines of issue 12 (no stand-ins): needs the engine, consent and attachments code ---


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.relay_fixtures import serve_relay

    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


def test_the_routes_over_real_engines_request_accept_react_reply_edit_delete_and_a_file(tmp_path: Path, relay_url: str) -> None:
    """The same routes over two real engines and an in-process relay: what the page sees and does."""
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    api = LocalApi(bob, Access(bob.store), Contacts(tmp_path / "contacts.json"), lambda: True, Hub())
    api.pages = PageSessions()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    register_local_api(app, Sock(app), api, port=PORT)
    client = app.test_client()
    s = client.post("/api/session", json={"token": api.pages.new_link("inbox")}, headers={"Origin": OURS}, base_url=OURS).get_json()
    good = {"X-Parley-Session": s["session"], "X-Parley-CSRF": s["csrf"], "Origin": OURS}

    def get(path: str) -> Any:
        r = client.get(path, headers=good, base_url=OURS)
        assert r.status_code == 200, (path, r.get_json())
        return r.get_json()

    def post(path: str, body: Any, status: int = 200) -> Any:
        r = client.post(path, json=body, headers=good, base_url=OURS)
        assert r.status_code == status, (path, r.get_json())
        return r.get_json()

    assert alice.send(bob.address, "hello, we have not met").delivered
    assert bob.sync() == 1
    inbox = get("/api/inbox")
    assert inbox["conversations"] == [] and inbox["requests"] == 1
    (request,) = get("/api/inbox?folder=requests")["conversations"]
    assert request["peer"] == alice.address and request["consent"] == "requested"
    c = f"/api/inbox/c/{alice.address}"
    thread = get(c)
    assert thread["consent"] == "requested"
    (first,) = thread["messages"]
    assert first["text"] == "hello, we have not met" and first["direction"] == "in"

    assert post(f"{c}/consent", {"action": "accept"})["consent"] == "allowed"
    assert [x["peer"] for x in get("/api/inbox")["conversations"]] == [alice.address]
    reacted = post(f"{c}/react", {"id": first["id"], "emoji": "👍"})["message"]
    assert [a.lower() for a in reacted["reactions"]["👍"]] == [bob.address.lower()]
    forged = post(f"{c}/edit", {"id": first["id"], "text": "I said something else"}, 400)
    assert forged["error"]["message"]
    assert post(f"{c}/delete", {"id": first["id"]}, 400)["error"]["message"]
    assert post(f"{c}/react", {"id": "f" * 32, "emoji": "👍"}, 400)["error"]["message"]  # unknown id

    reply = post(f"{c}/send", {"text": "welcome", "reply_to": first["id"]})["message"]
    assert reply["reply_to"] == first["id"] and reply["reply_preview"]["text"] == "hello, we have not met"
    assert post(f"{c}/edit", {"id": reply["id"], "text": "welcome aboard"})["message"]["edited"] is True
    assert alice.sync() >= 1
    mine = alice.message(reply["id"])
    assert mine is not None and mine["text"] == "welcome aboard" and mine["edited"] is True
    assert mine["reactions"] == {} and [a.lower() for a in alice.message(first["id"])["reactions"]["👍"]] == [bob.address.lower()]
    gone = post(f"{c}/delete", {"id": reply["id"]})["message"]
    assert gone["deleted"] is True and gone["text"] == ""

    # A file: uploaded raw, sent, then served back as a download with a thumbnail.
    picture = png(640, 480)
    r = client.post("/api/inbox/uploads?name=view.png&mime=image/png", data=picture, content_type="application/octet-stream",
                    headers=good, base_url=OURS)
    assert r.status_code == 201, r.get_json()
    sent = post(f"{c}/send", {"text": "", "uploads": [r.get_json()["upload_id"]]})["message"]
    (att,) = sent["attachments"]
    assert (att["name"], att["size"], att["mime"]) == ("view.png", len(picture), "image/png")
    got = client.get(f"/api/inbox/attachments/{att['id']}", headers=good, base_url=OURS)
    assert got.status_code == 200 and got.data == picture and got.headers["Content-Type"] == "application/octet-stream"
    got.close()
    thumb = client.get(f"/api/inbox/attachments/{att['id']}/thumbnail", headers=good, base_url=OURS)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] in ("image/jpeg", "image/png")
    assert post(f"{c}/read", {})["unread"] == 0


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()
