"""Attachments end to end (bridge/engine/attachments.py; PROTOCOL.md §6.9): two real engines, a real
relay on loopback, real AES-256-GCM, real Pillow thumbnails.

Files go out as ``engine.send(..., uploads=[...])`` (an ``attachment`` content) and are taken in by
the receiver's ``sync``: the whole path a user's send takes."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bridge.engine import Engine
from bridge.engine import attachments as A
from bridge.engine import contents
from tests.engines import befriend, close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.relay_fixtures import serve_relay, unlimited_settings

MiB = 1024 * 1024


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = tmp_path / "relay" / "relay.db"
    db.parent.mkdir()
    with serve_relay(db, unlimited_settings(blob_quota_bytes=12 * MiB)) as url:
        alice = make_engine(_home(tmp_path, "alice") / "parley.db", url)
        bob = make_engine(_home(tmp_path, "bob") / "parley.db", url)
        befriend(alice, bob)  # contacts: not a message request (issue 12: a request's files wait for accept)
        events: list[tuple[str, dict[str, Any]]] = []
        bob.listeners.append(lambda e, p: events.append((e, p)))
        alice.listeners.append(lambda e, p: events.append((e, p)))
        yield {"url": url, "db": db, "alice": alice, "bob": bob, "events": events, "tmp": tmp_path}


def _home(tmp: Path, name: str) -> Path:
    d = tmp / name
    d.mkdir(mode=0o700)
    return d


def image_file(path: Path, side: int = 1300) -> Path:
    """A ~5 MB PNG of noise (PNG cannot compress it)."""
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, "PNG", compress_level=0)
    return path


def sent_refs(engine: Engine, mid: str) -> list[A.FileRef]:
    """The FileRefs of message ``mid`` as ``engine`` stored them (its key unsealed)."""
    rows = engine.store.read("SELECT * FROM attachments WHERE message_id = ? ORDER BY idx", (mid,))
    return [
        A.FileRef(r["url"], contents.unseal_key(engine, r["id"], r["key"]), bytes(r["nonce"]), bytes(r["digest"]),
                  bytes.fromhex(r["sha256"]), r["size"], r["name"], r["mime"])
        for r in rows
    ]


def send_with_files(alice: Engine, bob: Engine, paths: list[Path]) -> tuple[str, list[A.FileRef], list[str]]:
    """Alice uploads the files and sends them to Bob (an attachment content); Bob takes it in."""
    uploads = [alice.upload_file(p) for p in paths]
    sent = alice.send(bob.address, "files", uploads=uploads)
    assert sent.delivered
    assert bob.sync() == 1
    mid = sent.message["id"]
    refs = sent_refs(alice, mid)
    assert refs == sent_refs(bob, mid)  # what Bob decoded is what Alice sealed
    return mid, refs, uploads


def test_image_round_trip_is_byte_identical_with_thumbnail(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    src = image_file(tmp / "holiday photo.png")
    assert 4.5 * MiB < src.stat().st_size < 6 * MiB
    mid, refs, _ = send_with_files(alice, bob, [src])
    ref = refs[0]
    assert ref.size == src.stat().st_size and ref.name == "holiday photo.png" and ref.mime == "image/png"
    assert ref.sha256 == hashlib.sha256(src.read_bytes()).digest()
    assert ref.url.startswith(world["url"] + "/v1/blobs/" + bob.installation_id + "/")
    # the sender keeps its own copy, the upload is gone
    assert not list((tmp / "alice" / "uploads").iterdir())
    assert alice.store.read("SELECT state FROM attachments")[0]["state"] == "local"

    aid = f"{mid}-0"
    assert bob.store.read("SELECT state FROM attachments WHERE id = ?", (aid,))[0]["state"] == "pending"
    res = bob.attachment_fetch(aid)
    assert res["state"] == "done", res
    out = Path(res["path"])
    assert out == tmp / "bob" / "attachments" / aid
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    thumb = Image.open(io.BytesIO(bob.store.read("SELECT thumb FROM attachments WHERE id = ?", (aid,))[0]["thumb"]))
    assert max(thumb.size) == 320 and thumb.format == "JPEG"
    assert A.thumbnail_data_url(bob, aid).startswith("data:image/jpeg;base64,")
    data, eof, size = bob.attachment_read(aid, 1000, A.CHUNK_SIZE)
    assert data == src.read_bytes()[1000 : 1000 + A.CHUNK_SIZE] and not eof and size == ref.size
    # progress was reported both ways
    phases = {(p["phase"], p["done"] == p["total"]) for e, p in world["events"] if e == "attachment.progress"}
    assert {("upload", True), ("download", True)} <= phases
    # the key is sealed in the store, never there in clear
    raw = (tmp / "bob" / "parley.db").read_bytes() + b"".join(p.read_bytes() for p in (tmp / "bob").glob("parley.db-wal"))
    assert ref.key not in raw


def test_delete_for_everyone_removes_the_file_on_both_sides(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    src = tmp / "notes.txt"
    src.write_bytes(b"private notes " * 1000)
    mid, _, _ = send_with_files(alice, bob, [src])
    aid = f"{mid}-0"
    kept = [Path(bob.attachment_fetch(aid)["path"]), tmp / "alice" / "attachments" / aid]
    assert all(p.exists() for p in kept)
    alice.delete(bob.address, mid)
    bob.sync()
    assert not [p for p in kept if p.exists()]
    for engine in (alice, bob):
        (msg,) = [m for m in engine.messages(alice.address if engine is bob else bob.address) if m["id"] == mid]
        assert msg["deleted"] and msg["attachments"] == []
        assert engine.store.read("SELECT COUNT(*) AS n FROM attachments WHERE message_id = ?", (mid,))[0]["n"] == 0


def _flip_relay_byte(db: Path, offset: int = 12345) -> None:
    con = sqlite3.connect(db)
    try:
        iid, bid, data = con.execute("SELECT iid, blob_id, data FROM blob_chunks WHERE seq = 0").fetchone()
        data = bytearray(data)
        data[offset] ^= 0x01
        con.execute("UPDATE blob_chunks SET data = ? WHERE iid = ? AND blob_id = ? AND seq = 0", (bytes(data), iid, bid))
        con.commit()
    finally:
        con.close()


def test_digest_mismatch_fails_clearly_and_keeps_nothing(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    src = tmp / "report.pdf"
    src.write_bytes(os.urandom(700_000))
    mid, _, _ = send_with_files(alice, bob, [src])
    _flip_relay_byte(world["db"])
    aid = f"{mid}-0"
    res = bob.attachment_fetch(aid)
    assert res["state"] == "failed" and res["error"] == "digest mismatch"
    row = bob.store.read("SELECT state, error, path FROM attachments WHERE id = ?", (aid,))[0]
    assert (row["state"], row["error"], row["path"]) == ("failed", "digest mismatch", None)
    assert not [p for p in (tmp / "bob" / "attachments").iterdir()]  # no file, no partial file
    with pytest.raises(A.AttachmentError) as err:
        bob.attachment_path(aid)
    assert err.value.reason == "digest" and "digest mismatch" in str(err.value)


def test_over_quota_upload_is_a_clear_error_and_the_upload_stays(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    big = tmp / "big.bin"
    big.write_bytes(os.urandom(7 * MiB))
    first = alice.upload_file(big)
    A.prepare_uploads(alice, bob.address, [first])  # 7 of the 12 MiB
    second = alice.upload_file(big)
    with pytest.raises(A.AttachmentError) as err:
        A.prepare_uploads(alice, bob.address, [second])
    assert err.value.reason == "quota" and "quota" in str(err.value)
    row = alice.store.read("SELECT received, size, path FROM uploads WHERE id = ?", (second,))[0]
    assert row["received"] == row["size"] == 7 * MiB and Path(row["path"]).read_bytes() == big.read_bytes()
    assert not [p for p in (tmp / "alice" / "uploads").iterdir() if p.name.startswith(".")]  # no ciphertext left behind


class _Listener:
    """A TCP listener that counts connections (a host on our network a hostile locator names)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.t.join(5)
        self.sock.close()


def test_locator_on_an_unknown_host_is_refused_without_a_request(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    src = tmp / "a.txt"
    src.write_bytes(b"hello")
    mid, refs, _ = send_with_files(alice, bob, [src])
    listener = _Listener()
    try:
        hostile = [
            A.FileRef(f"http://127.0.0.1:{listener.port}/v1/blobs/{'a' * 32}/{'b' * 32}", refs[0].key, refs[0].nonce,
                      refs[0].digest, refs[0].sha256, refs[0].size, "x.txt", "text/plain"),
            A.FileRef(f"http://169.254.169.254/v1/blobs/{'a' * 32}/{'b' * 32}", refs[0].key, refs[0].nonce,
                      refs[0].digest, refs[0].sha256, refs[0].size, "y.txt", "text/plain"),
            A.FileRef(f"{world['url']}/../v1/blobs/{'a' * 32}/{'b' * 32}", refs[0].key, refs[0].nonce,
                      refs[0].digest, refs[0].sha256, refs[0].size, "z.txt", "text/plain"),
        ]
        other = "f" * 32
        with bob.store.write() as c:
            c.execute(
                "INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read) "
                "VALUES (?, ?, ?, ?, 'x', 1, 1, 'in', 'received', 0)",
                (other, alice.address, alice.address, bob.address),
            )
            A.record_incoming(c, bob, other, hostile)
        for i in range(3):
            res = bob.attachment_fetch(f"{other}-{i}")
            assert res["state"] == "refused", res
        assert "does not know" in bob.store.read("SELECT error FROM attachments WHERE id = ?", (f"{other}-0",))[0]["error"]
        assert listener.connections == 0
        # the downloader does not retry a refused file, and the genuine one still downloads
        assert A.pending_ids(bob) == [f"{mid}-0"]
        assert bob.attachment_fetch(f"{mid}-0")["state"] == "done"
        assert listener.connections == 0
    finally:
        listener.close()


def test_relay_database_holds_no_plaintext(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    marker = "PARLEY-ATTACHMENT-PLAINTEXT-MARKER-0123456789"
    src = tmp / "secret-plans.txt"
    src.write_text((marker + "\n") * 5000)
    mid, _, _ = send_with_files(alice, bob, [src])
    db: Path = world["db"]
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    con = sqlite3.connect(db)
    try:
        raw += "\n".join(con.iterdump()).encode()
        assert con.execute("SELECT COUNT(*) FROM blob_chunks").fetchone()[0] >= 1  # the ciphertext is there
    finally:
        con.close()
    for needle in (marker, "secret-plans.txt"):
        b = needle.encode()
        for form in (b, b.hex().encode(), b.hex().upper().encode(), base64.b64encode(b)[:40], needle.encode("utf-16-le")):
            assert form not in raw, (needle, form[:20])
    assert bob.attachment_fetch(f"{mid}-0")["state"] == "done"  # (and the file is there to be had)


def _api(eng: Engine, tmp: Path) -> Any:
    from bridge.api.access import Access
    from bridge.api.rpc import Hub, LocalApi
    from bridge.resolve import Contacts

    return LocalApi(eng, Access(eng.store), Contacts(tmp / f"contacts-{eng.installation_id}.json"), lambda: True, Hub())


def _rpc_error(fn: Any, params: dict[str, Any]) -> tuple[int, Any]:
    from bridge.api.rpc import RpcError

    with pytest.raises(RpcError) as err:
        fn(params)
    return err.value.code, err.value.data


def test_rpc_upload_in_chunks_then_read_and_thumbnail_with_peer_checks(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    a_api, b_api = _api(alice, tmp), _api(bob, tmp)
    src = image_file(tmp / "small.png", side=700)
    content = src.read_bytes()
    peer = bob.address
    # hostile parameters are refused before anything is written
    for bad in (
        {"peer": peer, "name": "../../etc/passwd", "size": 10, "mime": "text/plain"},
        {"peer": peer, "name": "a\x00b", "size": 10, "mime": "text/plain"},
        {"peer": peer, "name": "ok.txt", "size": 25 * MiB + 1, "mime": "text/plain"},
        {"peer": peer, "name": "ok.txt", "size": -1, "mime": "text/plain"},
        {"peer": peer, "name": "ok.txt", "size": 10, "mime": "text"},
        {"peer": peer, "name": "ok.txt", "size": True, "mime": "text/plain"},
    ):
        assert _rpc_error(a_api.m_attachments_begin, bad)[0] == -32010, bad
    assert _rpc_error(a_api.m_attachments_begin, {"peer": "0x12", "name": "a", "size": 1, "mime": "a/b"})[0] == -32602
    assert alice.store.read("SELECT COUNT(*) AS n FROM uploads")[0]["n"] == 0
    begun = a_api.m_attachments_begin({"peer": peer, "name": "small.png", "size": len(content), "mime": "image/png"})
    uid, chunk = begun["upload_id"], begun["chunk_size"]
    assert chunk == 196_608
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    assert _rpc_error(a_api.m_attachments_chunk, {"peer": peer, "upload_id": uid, "offset": 5, "data": b64(content[:10])})[0] == -32010
    assert _rpc_error(a_api.m_attachments_chunk, {"peer": peer, "upload_id": uid, "offset": 0, "data": b64(content[: chunk + 1])})[0] == -32010
    assert _rpc_error(a_api.m_attachments_chunk, {"peer": peer, "upload_id": uid, "offset": 0, "data": "!!!"})[0] == -32010
    assert _rpc_error(a_api.m_attachments_chunk, {"peer": peer, "upload_id": "../" + uid, "offset": 0, "data": "AA=="})[0] == -32010
    off = 0
    while off < len(content):
        off = a_api.m_attachments_chunk({"peer": peer, "upload_id": uid, "offset": off, "data": b64(content[off : off + chunk])})["received"]
    assert off == len(content)
    sent = alice.send(peer, "pic", uploads=[uid])
    assert bob.sync() == 1
    aid = f"{sent.message['id']}-0"
    # another conversation's peer, or a made-up id: the same "unknown" answer
    stranger = "0x" + "12" * 20
    for params in ({"peer": stranger, "id": aid}, {"peer": alice.address, "id": "f" * 32 + "-0"}, {"peer": alice.address, "id": aid + "/.."}):
        assert _rpc_error(b_api.m_attachments_thumbnail, params)[0] == -32010
        assert _rpc_error(b_api.m_attachments_read, {**params, "offset": 0, "length": 10})[0] == -32010
    assert _rpc_error(b_api.m_attachments_read, {"peer": alice.address, "id": aid, "offset": 0, "length": chunk + 1})[0] == -32010
    got = b""
    while True:  # read downloads first
        r = b_api.m_attachments_read({"peer": alice.address, "id": aid, "offset": len(got), "length": chunk})
        got += base64.b64decode(r["data"])
        assert r["size"] == len(content)
        if r["eof"]:
            break
    assert got == content
    assert b_api.m_attachments_thumbnail({"peer": alice.address, "id": aid})["data_url"].startswith("data:image/jpeg;base64,")
    # cancel removes the upload and its file
    other = a_api.m_attachments_begin({"peer": peer, "name": "x.bin", "size": 3, "mime": "application/octet-stream"})["upload_id"]
    path = Path(alice.store.read("SELECT path FROM uploads WHERE id = ?", (other,))[0]["path"])
    assert path.exists()
    assert a_api.m_attachments_cancel({"peer": peer, "upload_id": other}) == {"ok": True}
    assert not path.exists() and not alice.store.read("SELECT 1 FROM uploads WHERE id = ?", (other,))


def test_rpc_digest_failure_is_32012_with_reason(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    src = tmp / "doc.bin"
    src.write_bytes(os.urandom(300_000))
    mid, _, _ = send_with_files(alice, bob, [src])
    _flip_relay_byte(world["db"], 100)
    code, data = _rpc_error(_api(bob, tmp).m_attachments_read, {"peer": alice.address, "id": f"{mid}-0", "offset": 0, "length": 10})
    assert code == -32012 and data == {"reason": "digest"}


def test_hostile_images_make_no_thumbnail_but_the_file_is_kept(tmp_path: Path) -> None:
    # a decompression bomb: a tiny PNG declaring 30,000 x 30,000 pixels
    bomb = tmp_path / "bomb.png"
    Image.new("1", (30_000, 30_000)).save(bomb, "PNG", optimize=True)
    assert bomb.stat().st_size < 2 * MiB
    assert A.make_thumbnail(bomb, "image/png") is None
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff" + os.urandom(5000))
    assert A.make_thumbnail(junk, "image/jpeg") is None
    # a PNG sent as image/gif is not parsed as anything else
    png = image_file(tmp_path / "p.png", side=50)
    assert A.make_thumbnail(png, "image/gif") is None
    assert A.make_thumbnail(png, "image/png") is not None
    assert A.make_thumbnail(png, "application/pdf") is None


def test_cli_attachment_save_downloads_prints_paths_and_never_overwrites(tmp_path: Path) -> None:
    from bridge.home import Home
    from bridge.keys import load_keyfile
    from bridge.store import Store
    from tests.engines import track
    from tests.procs import PASSPHRASE, parley, start_relay

    relay, url = start_relay(tmp_path / "relay.db")
    try:
        bob_home = tmp_path / "bob"
        r = parley(bob_home, "init", "--relay", url)
        assert r.returncode == 0, r.stderr
        home = Home(bob_home)
        bob = track(Engine(Store(home.db_file), load_keyfile(home.keys_file, PASSPHRASE), home.identity(), url))
        alice = make_engine(_home(tmp_path, "alice") / "parley.db", url)
        doc = tmp_path / "minutes.txt"
        doc.write_bytes(os.urandom(3 * MiB))
        small = tmp_path / "note"
        small.write_bytes(b"tiny")
        mid, _, _ = send_with_files(alice, bob, [doc, small])
        bob.store.close()
        out = tmp_path / "out"
        out.mkdir()
        r = parley(bob_home, "attachment", "save", mid, str(out))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [str(out / "minutes.txt"), str(out / "note")]
        assert (out / "minutes.txt").read_bytes() == doc.read_bytes() and (out / "note").read_bytes() == b"tiny"
        assert "100%" in r.stderr  # the 3 MiB download showed progress (a line on stderr: not a terminal)
        # again: new names, the first files untouched
        r = parley(bob_home, "attachment", "save", f"{mid}-0", str(out))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [str(out / "minutes (1).txt")]
        assert (out / "minutes (1).txt").read_bytes() == doc.read_bytes() == (out / "minutes.txt").read_bytes()
        r = parley(bob_home, "attachment", "save", "f" * 32, str(out))
        assert r.returncode == 2 and "no attachment" in r.stderr
        r = parley(bob_home, "attachment", "save", "../etc", str(out))
        assert r.returncode == 2
    finally:
        relay.stop()


def test_a_relay_sending_more_than_size_plus_16_is_cut_off(tmp_path: Path) -> None:
    """A hostile relay answers a blob with an endless body: the download stops at size + 16 bytes."""
    served = [0]

    def endless(app: Any) -> Any:
        def wrapped(environ: Any, start_response: Any) -> Any:
            if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"].startswith("/v1/blobs/"):
                start_response("200 OK", [("Content-Type", "application/octet-stream")])

                def body() -> Iterator[bytes]:
                    while served[0] < 200 * MiB:
                        served[0] += 64 * 1024
                        yield b"\0" * (64 * 1024)
                return body()
            return app(environ, start_response)
        return wrapped

    db = tmp_path / "relay.db"
    with serve_relay(db, unlimited_settings(), wrap=endless) as url:
        alice = make_engine(_home(tmp_path, "alice") / "parley.db", url)
        bob = make_engine(_home(tmp_path, "bob") / "parley.db", url)
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(100_000))
        mid, _, _ = send_with_files(alice, bob, [src])
        res = bob.attachment_fetch(f"{mid}-0")
    assert res["state"] == "failed" and res["error"] == "digest mismatch"
    assert served[0] < 20 * MiB  # stopped reading long before the relay's 200 MiB
    assert not list((tmp_path / "bob" / "attachments").iterdir())


def test_downloader_fetches_allowed_conversations_only_and_announces_it(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    consent_of: dict[str, str] = {}
    fake = types.ModuleType("bridge.engine.consent")
    fake.state = lambda store, peer: consent_of.get(peer, "allowed")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bridge.engine.consent", fake)
    import bridge.engine

    monkeypatch.setattr(bridge.engine, "consent", fake, raising=False)
    src = tmp / "pic.gif"
    Image.new("RGB", (640, 480), "red").save(src, "GIF")
    consent_of[alice.address] = "requested"
    mid, _, _ = send_with_files(alice, bob, [src])
    aid = f"{mid}-0"
    stop = threading.Event()
    dl = A.Downloader(bob, stop, interval=60)
    bob.listeners.append(dl.on_event)
    assert dl.run_once() == 0  # a request: not downloaded
    assert bob.store.read("SELECT state FROM attachments WHERE id = ?", (aid,))[0]["state"] == "pending"
    consent_of[alice.address] = "allowed"  # accepted
    t = threading.Thread(target=dl.run, daemon=True)
    t.start()
    try:
        dl.on_event("consent.changed", {"peer": alice.address, "consent": "allowed"})
        from tests.relay_fixtures import wait_until

        assert wait_until(lambda: bob.store.read("SELECT state FROM attachments WHERE id = ?", (aid,))[0]["state"] == "done")
    finally:
        stop.set()
        dl.wake()
        t.join(5)
    assert Path(bob.store.read("SELECT path FROM attachments WHERE id = ?", (aid,))[0]["path"]).read_bytes() == src.read_bytes()
    assert any(e == "message.updated" and p.get("id") == mid for e, p in world["events"])
    thumb = bob.store.read("SELECT thumb FROM attachments WHERE id = ?", (aid,))[0]["thumb"]
    assert Image.open(io.BytesIO(thumb)).size == (320, 240)


def test_a_25_mib_file_is_encrypted_uploaded_and_downloaded_in_bounded_memory(tmp_path: Path) -> None:
    """The relay runs in its own process, so tracemalloc sees only the two bridges: neither holds
    the file (or its ciphertext) whole."""
    import tracemalloc

    from tests.procs import start_relay

    relay, url = start_relay(tmp_path / "relay.db")
    try:
        alice = make_engine(_home(tmp_path, "alice") / "parley.db", url)
        bob = make_engine(_home(tmp_path, "bob") / "parley.db", url)
        src = tmp_path / "big.bin"
        with src.open("wb") as f:
            for _ in range(25):
                f.write(os.urandom(MiB))
        tracemalloc.start()
        try:
            mid, refs, _ = send_with_files(alice, bob, [src])
            res = bob.attachment_fetch(f"{mid}-0")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert refs[0].size == 25 * MiB == A.MAX_FILE_BYTES
        assert res["state"] == "done"
        assert hashlib.sha256(Path(res["path"]).read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
        assert peak < 5 * MiB, f"peak traced memory {peak} bytes for a 25 MiB file"
    finally:
        relay.stop()
