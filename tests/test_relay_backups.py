"""The relay's backup space (PROTOCOL.md §7 "Backups (1.3)") on SQLite and PostgreSQL: every request
signed by the vault's Ed25519 key (time, nonce, method, vault, name and body hash bound), bodies
streamed in 256 KiB chunk rows with bounded memory, atomic replacement, per-vault quota, vaults
invisible to other keys, shared by relay nodes on one PostgreSQL database, and their expiry.

Every refusal is provoked by a hostile client that holds a valid request or another key, and each
checks that the relay's storage (rows and the vault's objects) did not change."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.relay.backupauth import request_message, signed_headers, vault_of
from bridge.relay.client import NotFound, RelayClient, RelayError
from bridge.relay.server import RelaySettings, RetentionThread
from bridge.relay.storage import BACKUP_CHUNK, Storage
from tests.relay_fixtures import (
    STORAGE_BACKENDS,
    open_backend,
    postgres_schema,
    serve_storage,
    storage_backend,
    unlimited_settings,
    wait_until,
)
from tests.test_relay_blobs import PeakAtAnswerEnd, raw_put

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024
MAX = 64 * MiB
NOW = 1_800_000_000


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with storage_backend(request.param, tmp_path) as st:
        yield st


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def settings(clock: Clock | None = None, **kw: Any) -> RelaySettings:
    return unlimited_settings(backup_rate=1e6, backup_burst=10**6, clock=clock or Clock(), **kw)


@contextmanager
def relay(storage: Storage, s: RelaySettings | None = None, wrap: Any = None) -> Iterator[str]:
    with serve_storage(storage, s or settings(), wrap=wrap) as url:
        yield url


def key() -> bytes:
    return P.random_bytes(32)


def signed(k: bytes, method: str, name: str, body: bytes | None = None, *, now: float = NOW) -> dict[str, str]:
    return signed_headers(k, method, name, None if body is None else hashlib.sha256(body).digest(), now=now)


def put(url: str, k: bytes, name: str, body: bytes, *, now: float = NOW, headers: dict[str, str] | None = None,
        vault: str | None = None) -> requests.Response:
    h = signed(k, "PUT", name, body, now=now) if headers is None else headers
    return requests.put(f"{url}/v1/backups/{vault or vault_of(k)}/{name}", data=body, headers=h, timeout=30)


def get(url: str, k: bytes, name: str, *, now: float = NOW) -> requests.Response:
    return requests.get(f"{url}/v1/backups/{vault_of(k)}/{name}", headers=signed(k, "GET", name, now=now), timeout=30)


def listing(url: str, k: bytes, *, now: float = NOW) -> list[dict[str, Any]]:
    r = requests.get(f"{url}/v1/backups/{vault_of(k)}", headers=signed(k, "GET", "", now=now), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["objects"]  # type: ignore[no-any-return]


def rows(storage: Storage) -> dict[str, int]:
    return {t: n for t, n in storage.counts().items() if t.startswith("backup_") and t != "backup_nonces"}


def err(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def state(storage: Storage, url: str, k: bytes) -> Any:
    """Everything a refused request could have changed: the rows and the vault's objects and bytes."""
    objs = listing(url, k)
    return rows(storage), objs, {o["name"]: get(url, k, o["name"]).content for o in objs}


# ---- round trip, memory, chunk rows ----------------------------------------------------------


def test_round_trip_64_mib_streamed_in_chunk_rows_with_bounded_memory(storage: Storage, tmp_path: Path) -> None:
    """The largest object goes up from a file and comes back into a file through RelayClient, in
    256 KiB rows; relay and client together never hold more than a few chunks."""
    k = key()
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(MAX // MiB):
            piece = os.urandom(MiB)
            h.update(piece)
            f.write(piece)
    probe: list[PeakAtAnswerEnd] = []

    def wrap(app: Any) -> Any:
        probe.append(PeakAtAnswerEnd(app))
        return probe[0]

    clock = Clock(__import__("time").time())
    with relay(storage, settings(clock), wrap) as url, RelayClient(url, timeout=60) as client:
        threads = threading.active_count()
        tracemalloc.start()
        try:
            with src.open("rb") as f:
                answer = client.backup_put(k, "seg-00000001", f)
            assert answer["name"] == "seg-00000001" and answer["size"] == MAX
            assert wait_until(lambda: threading.active_count() == threads)
            with dst.open("wb") as out:
                assert client.backup_get(k, "seg-00000001", out) is None
            assert wait_until(lambda: len(probe[0].peaks) == 2)
        finally:
            tracemalloc.stop()
        assert client.backup_list(k) == [{"name": "seg-00000001", "size": MAX, "updated_at": int(clock.t)}]
    assert hashlib.sha256(dst.read_bytes()).digest() == h.digest()
    assert max(probe[0].peaks) < 3 * MiB, f"peak traced memory {probe[0].peaks} bytes"
    assert rows(storage) == {"backup_vaults": 1, "backup_objects": 1, "backup_uploads": 0, "backup_chunks": MAX // BACKUP_CHUNK}
    assert storage.backup_usage(vault_of(k)) == MAX


def test_client_put_list_get_delete_and_errors(storage: Storage) -> None:
    k = key()
    clock = Clock(__import__("time").time())
    with relay(storage, settings(clock)) as url, RelayClient(url) as client:
        assert client.backup_list(k) == []
        client.backup_put(k, "b", b"two")
        client.backup_put(k, "a.1_x-y", b"one")
        assert [o["name"] for o in client.backup_list(k)] == ["a.1_x-y", "b"]
        assert client.backup_get(k, "b") == b"two"
        client.backup_delete(k, "b")
        with pytest.raises(NotFound) as nf:
            client.backup_get(k, "b")
        assert nf.value.code == "not_found"
        with pytest.raises(NotFound):
            client.backup_delete(k, "b")
        client.backup_delete(k, "a.1_x-y")
        assert client.backup_list(k) == []
    # an emptied vault leaves no rows behind
    assert rows(storage) == {"backup_vaults": 0, "backup_objects": 0, "backup_uploads": 0, "backup_chunks": 0}


# ---- isolation -----------------------------------------------------------------------------------


def test_a_vault_is_invisible_to_other_keys(storage: Storage) -> None:
    alice, mallory = key(), key()
    with relay(storage) as url:
        assert put(url, alice, "seg-00000001", b"alice's archive").status_code == 201
        assert put(url, mallory, "other", b"mallory's").status_code == 201
        # the same name in another vault is another object
        assert listing(url, mallory) == [{"name": "other", "size": 9, "updated_at": NOW}]
        err(get(url, mallory, "seg-00000001"), 404, "not_found")
        r = requests.delete(f"{url}/v1/backups/{vault_of(mallory)}/seg-00000001", headers=signed(mallory, "DELETE", "seg-00000001"), timeout=10)
        err(r, 404, "not_found")
        assert put(url, mallory, "seg-00000001", b"mallory's copy").status_code == 201
        assert get(url, alice, "seg-00000001").content == b"alice's archive"
        assert get(url, mallory, "seg-00000001").content == b"mallory's copy"
        assert [o["name"] for o in listing(url, alice)] == ["seg-00000001"]
        # mallory signs with her key for alice's vault: the vault's key does not verify it
        before = state(storage, url, alice)
        for method, body in (("GET", None), ("DELETE", None), ("PUT", b"overwrite")):
            h = signed(mallory, method, "seg-00000001", body)
            r = requests.request(method, f"{url}/v1/backups/{vault_of(alice)}/seg-00000001", data=body, headers=h, timeout=10)
            err(r, 401, "bad_signature")
        h = signed(mallory, "GET", "")
        err(requests.get(f"{url}/v1/backups/{vault_of(alice)}", headers=h, timeout=10), 401, "bad_signature")
        assert state(storage, url, alice) == before


# ---- hostile requests ------------------------------------------------------------------------------

VICTIM = "seg-00000001"


def _flip(b64: str) -> str:
    raw = bytearray(wire.b64d(b64))
    raw[5] ^= 1
    return wire.b64e(bytes(raw))


def _without(h: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in h.items() if k != name}


#: (case, method, name in the path, body, headers maker(key), status, code)
REFUSALS: list[tuple[str, str, str, bytes | None, Callable[[bytes], dict[str, str]], int, str]] = [
    ("unsigned PUT", "PUT", VICTIM, b"evil", lambda k: {}, 401, "unauthorized"),
    ("unsigned GET", "GET", VICTIM, None, lambda k: {}, 401, "unauthorized"),
    ("unsigned list", "GET", "", None, lambda k: {}, 401, "unauthorized"),
    ("unsigned DELETE", "DELETE", VICTIM, None, lambda k: {}, 401, "unauthorized"),
    *[(f"no {h}", "PUT", VICTIM, b"evil", (lambda h: lambda k: _without(signed(k, "PUT", VICTIM, b"evil"), h))(h), 401, "unauthorized")
      for h in ("X-Parley-Time", "X-Parley-Nonce", "X-Parley-Content-SHA256", "X-Parley-Signature")],
    ("signature bit flipped", "PUT", VICTIM, b"evil",
     lambda k: {**(h := signed(k, "PUT", VICTIM, b"evil")), "X-Parley-Signature": _flip(h["X-Parley-Signature"])}, 401, "bad_signature"),
    ("signed by another key", "DELETE", VICTIM, None, lambda k: signed(key(), "DELETE", VICTIM), 401, "bad_signature"),
    ("signature for another name", "DELETE", VICTIM, None, lambda k: signed(k, "DELETE", "seg-00000002"), 401, "bad_signature"),
    ("signature for another method (GET used to DELETE)", "DELETE", VICTIM, None, lambda k: signed(k, "GET", VICTIM), 401, "bad_signature"),
    ("signature for the listing used on an object", "DELETE", VICTIM, None, lambda k: signed(k, "DELETE", ""), 401, "bad_signature"),
    ("time changed after signing", "DELETE", VICTIM, None,
     lambda k: {**signed(k, "DELETE", VICTIM), "X-Parley-Time": str(NOW + 1)}, 401, "bad_signature"),
    ("nonce changed after signing", "DELETE", VICTIM, None,
     lambda k: {**(h := signed(k, "DELETE", VICTIM)), "X-Parley-Nonce": _flip(h["X-Parley-Nonce"])}, 401, "bad_signature"),
    ("body hash changed after signing", "PUT", VICTIM, b"evil",
     lambda k: {**signed(k, "PUT", VICTIM, b"good"), "X-Parley-Content-SHA256": wire.b64e(hashlib.sha256(b"evil").digest())}, 401, "bad_signature"),
    ("a signed PUT with another body of the same length", "PUT", VICTIM, b"evil", lambda k: signed(k, "PUT", VICTIM, b"good"), 400, "body_mismatch"),
    ("a signed PUT with a longer body", "PUT", VICTIM, b"good!" * 100_000, lambda k: signed(k, "PUT", VICTIM, b"good"), 400, "body_mismatch"),
    ("a GET signed over a body hash", "GET", VICTIM, None, lambda k: signed(k, "GET", VICTIM, b"x"), 400, "body_mismatch"),
    ("a DELETE with a body", "DELETE", VICTIM, b"x", lambda k: signed(k, "DELETE", VICTIM, b"x"), 400, "bad_request"),
    ("time 301 s behind", "DELETE", VICTIM, None, lambda k: signed(k, "DELETE", VICTIM, now=NOW - 301), 401, "clock_skew"),
    ("time 301 s ahead", "PUT", VICTIM, b"evil", lambda k: signed(k, "PUT", VICTIM, b"evil", now=NOW + 301), 401, "clock_skew"),
    ("time not digits", "DELETE", VICTIM, None, lambda k: {**signed(k, "DELETE", VICTIM), "X-Parley-Time": "-1"}, 400, "bad_request"),
    ("nonce not base64", "DELETE", VICTIM, None, lambda k: {**signed(k, "DELETE", VICTIM), "X-Parley-Nonce": "!!"}, 400, "bad_base64"),
    ("short signature", "DELETE", VICTIM, None,
     lambda k: {**signed(k, "DELETE", VICTIM), "X-Parley-Signature": wire.b64e(b"\0" * 63)}, 400, "bad_base64"),
]


@pytest.mark.parametrize("case,method,name,body,make,status,code", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_requests_change_nothing(storage: Storage, case: str, method: str, name: str, body: bytes | None,
                                         make: Callable[[bytes], dict[str, str]], status: int, code: str) -> None:
    k = key()
    with relay(storage) as url:
        assert put(url, k, VICTIM, b"good").status_code == 201
        before = state(storage, url, k)
        path = f"/v1/backups/{vault_of(k)}" + (f"/{name}" if name else "")
        r = requests.request(method, url + path, data=body, headers=make(k), timeout=30)
        err(r, status, code)
        assert state(storage, url, k) == before
        assert storage.backup_usage(vault_of(k)) == 4


def test_time_at_the_edge_of_the_window_is_accepted(storage: Storage) -> None:
    k = key()
    with relay(storage) as url:
        assert put(url, k, "a", b"1", now=NOW - 300).status_code == 201
        assert put(url, k, "b", b"2", now=NOW + 300).status_code == 201


def test_a_replayed_request_is_refused(storage: Storage) -> None:
    """Whoever saw a signed request (a TLS-terminating proxy, the relay's logs) cannot send it again:
    not a PUT to roll the object back to an older archive, not a DELETE."""
    k = key()
    with relay(storage) as url:
        old = signed(k, "PUT", VICTIM, b"old archive")
        assert put(url, k, VICTIM, b"old archive", headers=old).status_code == 201
        assert put(url, k, VICTIM, b"new archive").status_code == 201
        before = state(storage, url, k)
        err(put(url, k, VICTIM, b"old archive", headers=old), 401, "replayed")
        assert state(storage, url, k) == before and get(url, k, VICTIM).content == b"new archive"
        d = signed(k, "DELETE", "x")
        assert put(url, k, "x", b"1").status_code == 201
        assert requests.delete(f"{url}/v1/backups/{vault_of(k)}/x", headers=d, timeout=10).status_code == 200
        assert put(url, k, "x", b"2").status_code == 201
        err(requests.delete(f"{url}/v1/backups/{vault_of(k)}/x", headers=d, timeout=10), 401, "replayed")
        assert get(url, k, "x").content == b"2"


def test_bad_vaults_and_names(storage: Storage) -> None:
    k = key()
    vault = vault_of(k)
    with relay(storage) as url:
        assert put(url, k, VICTIM, b"good").status_code == 201
        before = state(storage, url, k)
        for name in ("Seg", ".hidden", "-x", "a" * 65, "a b", "é", "a%2fb", "..", "a:b"):
            h = signed(k, "PUT", name, b"x")
            r = requests.put(f"{url}/v1/backups/{vault}/{name}", data=b"x", headers=h, timeout=10)
            assert r.status_code in (400, 404), name
            assert r.json()["error"]["code"] in ("bad_request", "not_found"), name
        for bad in (vault.upper(), vault[:63], vault + "0", "g" * 64):
            h = signed(k, "PUT", VICTIM, b"x")
            err(requests.put(f"{url}/v1/backups/{bad}/{VICTIM}", data=b"x", headers=h, timeout=10), 400, "bad_request")
        # the longest name is fine
        assert put(url, k, "z" * 64, b"x").status_code == 201
        assert requests.delete(f"{url}/v1/backups/{vault}/{'z' * 64}", headers=signed(k, "DELETE", "z" * 64), timeout=10).status_code == 200
        assert state(storage, url, k) == before


def test_oversize_and_chunked_uploads_are_refused_before_the_body(storage: Storage) -> None:
    k = key()
    with relay(storage) as url:
        h = signed(k, "PUT", VICTIM, b"x")
        status, data = raw_put(url, f"/v1/backups/{vault_of(k)}/{VICTIM}", {**h, "Content-Length": str(MAX + 1)}, read_first=True)
        assert status == 413 and b'"too_large"' in data
        status, data = raw_put(url, f"/v1/backups/{vault_of(k)}/{VICTIM}", {**h, "Transfer-Encoding": "chunked"},
                               b"1\r\nx\r\n0\r\n\r\n", close_after=True)
        assert status == 411 and b'"length_required"' in data
    assert rows(storage) == {"backup_vaults": 0, "backup_objects": 0, "backup_uploads": 0, "backup_chunks": 0}


def test_quota_exact_boundary_replacement_and_object_count(storage: Storage) -> None:
    k = key()
    quota = 2 * BACKUP_CHUNK + 10
    with relay(storage, settings(backup_quota_bytes=quota, backup_max_objects=3)) as url:
        assert put(url, k, "a", b"a" * BACKUP_CHUNK).status_code == 201
        # one byte over: refused on Content-Length, before the body is read
        h = signed(k, "PUT", "b", b"b" * (BACKUP_CHUNK + 11))
        status, data = raw_put(url, f"/v1/backups/{vault_of(k)}/b", {**h, "Content-Length": str(BACKUP_CHUNK + 11)}, read_first=True)
        assert status == 429 and b'"backup_quota"' in data
        err(put(url, k, "b", b"b" * (BACKUP_CHUNK + 11)), 429, "backup_quota")
        assert storage.backup_usage(vault_of(k)) == BACKUP_CHUNK
        # exactly the quota: accepted
        assert put(url, k, "b", b"b" * (BACKUP_CHUNK + 10)).status_code == 201
        assert storage.backup_usage(vault_of(k)) == quota
        err(put(url, k, "c", b"c"), 429, "backup_quota")
        # a replacement counts as its size minus the object it replaces
        assert put(url, k, "a", b"A" * BACKUP_CHUNK).status_code == 201
        err(put(url, k, "a", b"A" * (BACKUP_CHUNK + 1)), 429, "backup_quota")
        assert put(url, k, "a", b"1").status_code == 201
        assert storage.backup_usage(vault_of(k)) == BACKUP_CHUNK + 11
        # at most backup_max_objects names
        assert put(url, k, "c", b"c").status_code == 201
        err(put(url, k, "d", b"d"), 429, "backup_quota")
        assert put(url, k, "c", b"C").status_code == 201  # replacing one of them is fine
        assert [o["name"] for o in listing(url, k)] == ["a", "b", "c"]
        # another vault has its own quota
        other = key()
        assert put(url, other, "a", b"o" * quota).status_code == 201


def test_an_upload_in_progress_holds_its_reservation_and_the_old_object_is_served(storage: Storage) -> None:
    """While a replacement streams, readers get the old object and its reservation counts against the
    quota; a body longer than Content-Length stores only Content-Length bytes."""
    k = key()
    quota = 3 * BACKUP_CHUNK
    new = os.urandom(2 * BACKUP_CHUNK)
    with relay(storage, settings(backup_quota_bytes=quota)) as url:
        assert put(url, k, VICTIM, b"old").status_code == 201
        host, port = url[len("http://"):].split(":")
        s = socket.create_connection((host, int(port)), timeout=10)
        try:
            h = signed(k, "PUT", VICTIM, new)
            head = "".join(f"{a}: {b}\r\n" for a, b in h.items())
            s.sendall(f"PUT /v1/backups/{vault_of(k)}/{VICTIM} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(new)}\r\n{head}\r\n".encode())
            s.sendall(new[: BACKUP_CHUNK + 100])
            assert wait_until(lambda: storage.backup_usage(vault_of(k)) == 3 + len(new))
            assert get(url, k, VICTIM).content == b"old"
            assert listing(url, k)[0]["size"] == 3
            err(put(url, k, "other", b"x" * (quota - len(new) - 3 + 1)), 429, "backup_quota")
            s.sendall(new[BACKUP_CHUNK + 100:] + b"EXTRA" * 1000)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
        assert get(url, k, VICTIM).content == new
        assert storage.backup_usage(vault_of(k)) == len(new)
        assert rows(storage)["backup_chunks"] == 2 and rows(storage)["backup_uploads"] == 0


def test_a_cut_off_upload_leaves_the_old_object_intact(storage: Storage) -> None:
    k = key()
    with relay(storage) as url:
        assert put(url, k, VICTIM, b"the old archive").status_code == 201
        before = state(storage, url, k)
        body = os.urandom(2 * MiB)
        h = signed(k, "PUT", VICTIM, body)
        # promises 2 MiB, sends 700 KiB (more than two chunk rows) and goes away
        raw_put(url, f"/v1/backups/{vault_of(k)}/{VICTIM}", {**h, "Content-Length": str(len(body))}, body[: 700 * 1024], close_after=True)
        assert wait_until(lambda: rows(storage) == before[0] and storage.backup_usage(vault_of(k)) == 15)
        assert state(storage, url, k) == before
    # an upload cut off by a crash (rows left behind) is removed by the expiry pass an hour later
    upload = storage.backup_begin(vault_of(k), VICTIM, 10, now=NOW, quota=MiB, max_objects=10)
    storage.backup_put_chunk(upload, 0, b"12345")
    assert storage.backup_info(vault_of(k), VICTIM) is not None and storage.backup_usage(vault_of(k)) == 25
    assert storage.expire_backups(touched_before=0, stale_before=NOW + 1, now=NOW) == 0
    assert storage.backup_usage(vault_of(k)) == 15 and rows(storage) == before[0]


# ---- retention ------------------------------------------------------------------------------------


def test_untouched_vaults_expire_used_ones_stay_and_envelope_retention_leaves_them(storage: Storage) -> None:
    clock = Clock()
    s = settings(clock, retention_days=1, backup_ttl_days=10)
    idle, used = key(), key()
    with relay(storage, s) as url:
        assert put(url, idle, "a", b"i" * (BACKUP_CHUNK + 1)).status_code == 201
        assert put(url, idle, "b", b"i").status_code == 201
        assert put(url, used, "a", b"u").status_code == 201
        ret = RetentionThread(storage, s)
        clock.t += 5 * 86400  # far past the envelope retention: no vault is touched
        ret.run_once()
        assert ret.vaults_deleted == 0 and rows(storage)["backup_vaults"] == 2
        assert get(url, used, "a", now=clock.t).content == b"u"  # a read keeps the vault
        clock.t += 5 * 86400 + 1
        ret.run_once()
        assert ret.vaults_deleted == 1
        assert rows(storage) == {"backup_vaults": 1, "backup_objects": 1, "backup_uploads": 0, "backup_chunks": 1}
        assert listing(url, idle, now=clock.t) == []
        assert listing(url, used, now=clock.t) == [{"name": "a", "size": 1, "updated_at": NOW}]
        # spent nonces are kept only while their request could still be accepted
        assert storage.counts()["backup_nonces"] > 0
        clock.t += 301
        ret.run_once()
        assert storage.counts()["backup_nonces"] == 0


# ---- several relay nodes on one PostgreSQL database -----------------------------------------------------


def test_relay_nodes_sharing_postgres_see_one_vault(tmp_path: Path) -> None:
    k = key()
    with postgres_schema() as pg:
        one, two = open_backend("postgres", tmp_path, pg), open_backend("postgres", tmp_path, pg)
        try:
            with relay(one, settings(backup_quota_bytes=100)) as a, relay(two, settings(backup_quota_bytes=100)) as b:
                h = signed(k, "PUT", VICTIM, b"x" * 60)
                assert put(a, k, VICTIM, b"x" * 60, headers=h).status_code == 201
                assert get(b, k, VICTIM).content == b"x" * 60
                assert listing(b, k) == listing(a, k)
                err(put(b, k, VICTIM, b"x" * 60, headers=h), 401, "replayed")  # the nonce is spent on every node
                err(put(b, k, "more", b"y" * 41), 429, "backup_quota")  # the quota holds across nodes
                assert put(b, k, VICTIM, b"z" * 100).status_code == 201
                assert get(a, k, VICTIM).content == b"z" * 100
                assert requests.delete(f"{b}/v1/backups/{vault_of(k)}/{VICTIM}", headers=signed(k, "DELETE", VICTIM), timeout=10).status_code == 200
                err(get(a, k, VICTIM), 404, "not_found")
        finally:
            one.close()
            two.close()


# ---- metrics, the relay command's options ------------------------------------------------------------


def test_metrics_count_backup_bytes_and_refusals(tmp_path: Path) -> None:
    from tests.test_relay_operator import _metric

    with storage_backend("sqlite", tmp_path) as st, relay(st) as url:
        k = key()
        assert put(url, k, "a", b"12345").status_code == 201
        err(put(url, k, "a", b"1", headers=signed(key(), "PUT", "a", b"1")), 401, "bad_signature")
        text = requests.get(url + "/metrics", timeout=10).text
        assert _metric(text, "parley_relay_backup_bytes_stored_total") == 5
        assert _metric(text, "parley_relay_refusals_total", code="bad_signature") == 1
        assert vault_of(k) not in text  # no label names a vault


@pytest.mark.slow
def test_parley_relay_backup_options(tmp_path: Path) -> None:
    """--backup-quota-mib reaches the relay process (across the gevent re-exec)."""
    from tests.procs import start_relay

    proc, url = start_relay(tmp_path / "relay.db", 0, 1000.0, "--backup-quota-mib", "1", "--backup-ttl-days", "7")
    try:
        k = key()
        with RelayClient(url, timeout=30) as client:
            assert client.health()["minor"] == 4
            client.backup_put(k, "a", b"a" * MiB)
            with pytest.raises(RelayError) as exc:
                client.backup_put(k, "b", b"b")
            assert (exc.value.status, exc.value.code) == (429, "backup_quota")
            assert client.backup_get(k, "a") == b"a" * MiB
    finally:
        proc.stop()


def test_signed_message_is_the_documented_cbor() -> None:
    """PROTOCOL.md §7 "Backups (1.3)": the bytes signed, for fixed inputs."""
    msg = request_message("PUT", "ab" * 32, "seg-00000001", 1_800_000_000, b"\x01" * 16, hashlib.sha256(b"").digest())
    assert msg == wire.encode([1, "parley-backup", "PUT", "ab" * 32, "seg-00000001", 1_800_000_000, b"\x01" * 16, hashlib.sha256(b"").digest()])
    assert msg.hex().startswith("88016d7061726c65792d6261636b7570635055547840")
