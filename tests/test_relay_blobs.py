"""The relay's blob store (PROTOCOL.md §7 "Blobs", protocol 1.2) on SQLite and PostgreSQL: streamed
in 256 KiB chunk rows, quota checked before the body is read and held while it streams, TTL,
nothing left by an aborted upload."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from bridge import identity
from bridge.relay.server import RelaySettings, RetentionThread
from bridge.relay.storage import BLOB_CHUNK, IdentityEntry, Storage
from tests.relay_fixtures import STORAGE_BACKENDS, authorize_record, make_installation, serve_storage, storage_backend, unlimited_settings, wait_until

MiB = 1024 * 1024
MAX = 25 * MiB + 16


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with storage_backend(request.param, tmp_path) as st:
        yield st


class PeakAtAnswerEnd:
    """WSGI middleware noting tracemalloc's peak when an answer's last byte was produced: werkzeug's
    development server then drains the socket with ``rfile.read(10_000_000)``, a 10 MB buffer of its
    own whatever the request was, which is not the relay's doing (production serves with gevent)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peaks: list[int] = []

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()  # (the previous answer's drain is over: the client sent this request)
        for piece in self.app(environ, start_response):
            yield piece
        if tracemalloc.is_tracing():
            self.peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.reset_peak()


@contextmanager
def relay(storage: Storage, settings: RelaySettings, wrap: Any = None) -> Iterator[str]:
    with serve_storage(storage, settings, wrap=wrap) as url:
        yield url


def register(storage: Storage) -> str:
    inst = make_installation()
    signed = identity.SignedStatement.from_record(authorize_record(inst))
    address = identity.verify(signed).address
    storage.append_identity(
        address, signed.record_id(), signed.to_record(),
        IdentityEntry("authorize", inst.iid, inst.signing_pub, inst.identity_pub), max_records=256,
    )
    return inst.iid


def bid() -> str:
    return os.urandom(16).hex()


def blob_rows(storage: Storage) -> tuple[int, int]:
    c = storage.counts()
    return c["blobs"], c["blob_chunks"]


def raw_put(url: str, path: str, headers: dict[str, str], body: bytes = b"", *, close_after: bool = False,
            read_first: bool = False) -> tuple[int, bytes]:
    """A hand-made PUT: headers, then (unless the answer came first) ``body``. Returns (status, raw answer)."""
    host, port = url[len("http://"):].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        head = f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode())
        if read_first:  # the whole answer arrives (and the relay closes) before any body byte is sent
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return int(data.split(b" ", 2)[1]), data
        try:
            s.sendall(body)
        except OSError:
            pass
        if close_after:
            s.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        return (int(data.split(b" ", 2)[1]) if data else 0), data
    finally:
        s.close()


def test_round_trip_25_mib_streamed_in_chunk_rows_with_bounded_memory(storage: Storage, tmp_path: Path) -> None:
    iid = register(storage)
    blob = bid()
    src = tmp_path / "src.bin"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(MAX // MiB):
            piece = os.urandom(MiB)
            h.update(piece)
            f.write(piece)
        tail = os.urandom(MAX % MiB)
        h.update(tail)
        f.write(tail)
    dst = tmp_path / "dst.bin"
    probe: list[PeakAtAnswerEnd] = []

    def wrap(app: Any) -> Any:
        probe.append(PeakAtAnswerEnd(app))
        return probe[0]

    with relay(storage, unlimited_settings(), wrap) as url:
        threads = threading.active_count()
        tracemalloc.start()
        try:
            with src.open("rb") as f:
                r = requests.put(f"{url}/v1/blobs/{iid}/{blob}", data=f, headers={"Content-Length": str(MAX)}, timeout=60)
            assert r.status_code == 201, r.text
            assert r.json()["id"] == blob and r.json()["size"] == MAX
            assert wait_until(lambda: threading.active_count() == threads)  # the PUT's thread (and its drain) ended
            with requests.get(f"{url}/v1/blobs/{iid}/{blob}", stream=True, timeout=60) as g, dst.open("wb") as out:
                assert g.status_code == 200
                assert g.headers["Content-Type"] == "application/octet-stream"
                assert int(g.headers["Content-Length"]) == MAX
                for piece in g.iter_content(64 * 1024):
                    out.write(piece)
            # the relay notes the GET's peak when its answer's iteration ends, just after the client has the last byte
            assert wait_until(lambda: len(probe[0].peaks) == 2)
        finally:
            tracemalloc.stop()
    assert hashlib.sha256(dst.read_bytes()).digest() == h.digest()
    # client and relay together never held more than a few chunks, far below the 25 MiB blob
    assert len(probe[0].peaks) == 2 and max(probe[0].peaks) < 3 * MiB, f"peak traced memory {probe[0].peaks} bytes"
    n_blobs, n_chunks = blob_rows(storage)
    assert n_blobs == 1 and n_chunks == -(-MAX // BLOB_CHUNK)
    assert storage.blob_chunk(iid, blob, 0) is not None and len(storage.blob_chunk(iid, blob, 0) or b"") == BLOB_CHUNK


def test_duplicate_unknown_installation_bad_ids_and_too_large(storage: Storage) -> None:
    iid = register(storage)
    blob = bid()
    with relay(storage, unlimited_settings()) as url:
        assert requests.put(f"{url}/v1/blobs/{iid}/{blob}", data=b"x" * 1000, timeout=10).status_code == 201
        r = requests.put(f"{url}/v1/blobs/{iid}/{blob}", data=b"y" * 1000, timeout=10)
        assert r.status_code == 409 and r.json()["error"]["code"] == "exists"
        assert requests.get(f"{url}/v1/blobs/{iid}/{blob}", timeout=10).content == b"x" * 1000
        r = requests.put(f"{url}/v1/blobs/{'0' * 32}/{bid()}", data=b"x", timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_installation"
        for path in (f"{iid}/{blob.upper()}", f"{iid}/..%2f{blob[:28]}", f"{iid[:31]}/{blob}"):
            r = requests.put(f"{url}/v1/blobs/{path}", data=b"x", timeout=10)
            assert r.status_code in (400, 404), path
        r = requests.get(f"{url}/v1/blobs/{iid}/{bid()}", timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # too large: refused on the header, before a body byte is read
        status, data = raw_put(url, f"/v1/blobs/{iid}/{bid()}", {"Content-Length": str(MAX + 1)}, read_first=True)
        assert status == 413 and b'"too_large"' in data
        # no Content-Length: a chunked body is refused
        status, data = raw_put(
            url, f"/v1/blobs/{iid}/{bid()}", {"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n", close_after=True
        )
        assert status == 411 and b'"length_required"' in data
    assert blob_rows(storage) == (1, 1)


def test_quota_on_content_length_and_while_streaming(storage: Storage) -> None:
    iid = register(storage)
    settings = unlimited_settings(blob_quota_bytes=MiB)
    with relay(storage, settings) as url:
        assert requests.put(f"{url}/v1/blobs/{iid}/{bid()}", data=b"a" * (600 * 1024), timeout=10).status_code == 201
        # over the quota on Content-Length: answered before the body is sent
        status, data = raw_put(url, f"/v1/blobs/{iid}/{bid()}", {"Content-Length": str(600 * 1024)}, read_first=True)
        assert status == 429 and b'"blob_quota"' in data
        # an ordinary client sending the whole body also gets the JSON answer
        r = requests.put(f"{url}/v1/blobs/{iid}/{bid()}", data=b"b" * (600 * 1024), timeout=10)
        assert r.status_code == 429 and r.json()["error"]["code"] == "blob_quota"
        # while streaming: an upload in progress holds its reservation, so a second one that
        # would overflow the quota together with it is refused before the first finishes
        iid2 = register(storage)
        host, port = url[len("http://"):].split(":")
        first = socket.create_connection((host, int(port)), timeout=10)
        try:
            first.sendall(f"PUT /v1/blobs/{iid2}/{bid()} HTTP/1.1\r\nHost: x\r\nContent-Length: {700 * 1024}\r\n\r\n".encode())
            first.sendall(b"c" * (300 * 1024))
            # the first upload is streaming (its reservation is visible) ...
            assert wait_until(lambda: storage.blob_usage(iid2) == 700 * 1024)
            status, _ = raw_put(url, f"/v1/blobs/{iid2}/{bid()}", {"Content-Length": str(400 * 1024)}, read_first=True)
            assert status == 429
            # ... and a body longer than its Content-Length stores only Content-Length bytes
            first.sendall(b"c" * (400 * 1024) + b"EXTRA" * 100_000)
            first.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := first.recv(65536):
                answer += chunk
        except OSError:
            pass
        finally:
            first.close()
        assert answer.startswith(b"HTTP/1.1 201")
        assert storage.blob_usage(iid2) == 700 * 1024 <= settings.blob_quota_bytes
        assert storage.blob_usage(iid) == 600 * 1024


def test_aborted_upload_leaves_nothing(storage: Storage) -> None:
    iid = register(storage)
    with relay(storage, unlimited_settings()) as url:
        before = blob_rows(storage)
        # the client promises 2 MiB, sends 700 KiB (more than two chunk rows) and goes away
        status, _ = raw_put(
            url, f"/v1/blobs/{iid}/{bid()}", {"Content-Length": str(2 * MiB)}, os.urandom(700 * 1024), close_after=True
        )
        assert wait_until(lambda: blob_rows(storage) == before and storage.blob_usage(iid) == 0)
    assert blob_rows(storage) == (0, 0)
    # an upload cut off by a crash (rows left behind) is removed by the expiry pass
    storage.blob_begin(iid, "ab" * 16, 10, now=1000, expires_at=10**10, quota=MiB)
    storage.blob_put_chunk(iid, "ab" * 16, 0, b"12345")
    assert storage.blob_info(iid, "ab" * 16, 1000) is None  # never served while incomplete
    assert storage.expire_blobs(2000, stale_before=1500) == 1
    assert blob_rows(storage) == (0, 0)


def test_ttl_expiry_pass_deletes_blobs(storage: Storage) -> None:
    iid = register(storage)
    now = [1_800_000_000.0]
    settings = unlimited_settings(blob_ttl_days=2, clock=lambda: now[0])
    blob = bid()
    with relay(storage, settings) as url:
        r = requests.put(f"{url}/v1/blobs/{iid}/{blob}", data=os.urandom(300 * 1024), timeout=10)
        assert r.status_code == 201 and r.json()["expires_at"] == int(now[0]) + 2 * 86400
        keep = bid()
        now[0] += 86400
        assert requests.put(f"{url}/v1/blobs/{iid}/{keep}", data=b"k" * 10, timeout=10).status_code == 201
        ret = RetentionThread(storage, settings)
        ret.run_once()
        assert blob_rows(storage) == (2, 3)
        now[0] += 86400 + 1
        assert requests.get(f"{url}/v1/blobs/{iid}/{blob}", timeout=10).status_code == 404  # expired: not served
        ret.run_once()
        assert ret.blobs_deleted == 1
        assert blob_rows(storage) == (1, 1)
        assert requests.get(f"{url}/v1/blobs/{iid}/{keep}", timeout=10).content == b"k" * 10
        assert storage.blob_usage(iid) == 10


def test_uploads_are_rate_limited_like_publishes(storage: Storage) -> None:
    iid = register(storage)
    settings = unlimited_settings(publish_rate=0.001, publish_burst=2)
    with relay(storage, settings) as url:
        codes = [requests.put(f"{url}/v1/blobs/{iid}/{bid()}", data=b"x", timeout=10).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert blob_rows(storage) == (2, 2)


