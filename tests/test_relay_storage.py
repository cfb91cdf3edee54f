"""Relay Storage contract tests (DESIGN.md "Relay": one interface, several backends).

Parametrized over ``STORAGE_BACKENDS``; add "postgresql" there when that backend lands.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from bridge.relay.sqlite_store import SCHEMA_VERSION, SQLiteStorage
from bridge.relay.storage import (
    StaleUpload,
    Storage,
    StorageError,
    StoredPrekeys,
    open_storage,
)
from tests.relay_fixtures import STORAGE_BACKENDS, open_backend

IID = "0" * 31 + "1"
IID2 = "0" * 31 + "2"
TOPIC = f"parley.v1.inbox.{IID}"
TOPIC2 = f"parley.v1.inbox.{IID2}"


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    st = open_backend(request.param, tmp_path)
    yield st
    st.close()


def _prekeys(issued_at: int, otpks: range = range(0), pq: range = range(0), lrpk: bytes | None = b"lr") -> StoredPrekeys:
    return StoredPrekeys(
        issued_at=issued_at,
        spk=b"spk%d" % issued_at,
        pq_lrpk=lrpk,
        otpks={i: b"x%d" % i for i in otpks},
        pq_otpks={i: b"q%d" % i for i in pq},
    )


def test_identity_log_appends_in_order_and_dedups(storage: Storage) -> None:
    assert storage.identity_records("0xA") == []
    assert storage.append_identity("0xA", "id1", b"r1") == (1, True)
    assert storage.append_identity("0xA", "id2", b"r2") == (2, True)
    assert storage.append_identity("0xA", "id1", b"r1-other-signature") == (1, False)
    assert storage.append_identity("0xB", "id1", b"rb") == (1, True)
    assert storage.identity_records("0xA") == [b"r1", b"r2"]
    assert storage.identity_records("0xB") == [b"rb"]


def test_installation_index_and_prekeys_dropped_on_deactivation(storage: Storage) -> None:
    assert storage.installation(IID) is None
    storage.set_installations("0xA", {IID: (b"s" * 32, b"x" * 32)})
    inst = storage.installation(IID)
    assert inst is not None and inst.address == "0xA" and inst.signing_pub == b"s" * 32
    # another address also lists it: stays active when 0xA drops it
    storage.set_installations("0xB", {IID: (b"s" * 32, b"x" * 32)})
    storage.put_prekeys(IID, _prekeys(1, range(3)), max_one_time=10)
    storage.set_installations("0xA", {})
    assert storage.installation(IID) is not None
    assert storage.prekey_counts(IID) == (3, 0)
    storage.set_installations("0xB", {})
    assert storage.installation(IID) is None
    assert storage.prekey_counts(IID) == (0, 0)
    assert storage.claim_prekeys(IID) is None


def test_prekeys_add_cap_and_ignore_duplicates(storage: Storage) -> None:
    assert storage.put_prekeys(IID, _prekeys(1, range(0, 4), range(0, 2)), max_one_time=6) == (4, 2)
    assert storage.put_prekeys(IID, _prekeys(2, range(2, 10), range(0, 3)), max_one_time=6) == (6, 3)
    assert storage.prekey_counts(IID) == (6, 3)
    assert storage.prekey_counts(IID2) == (0, 0)


def test_prekey_upload_cannot_roll_back_or_resurrect_claimed_keys(storage: Storage) -> None:
    storage.put_prekeys(IID, _prekeys(5, range(2)), max_one_time=10)
    with pytest.raises(StaleUpload):
        storage.put_prekeys(IID, _prekeys(4, range(2, 4)), max_one_time=10)
    assert storage.prekey_counts(IID) == (2, 0)
    claimed = storage.claim_prekeys(IID)
    assert claimed is not None and claimed.otpk == b"x0"
    # the same upload replayed (same issued_at): allowed, but key 0 was handed out and stays gone
    assert storage.put_prekeys(IID, _prekeys(5, range(2)), max_one_time=10) == (1, 0)
    assert storage.put_prekeys(IID, _prekeys(6, range(0, 3)), max_one_time=10) == (2, 0)
    ids = set()
    while (c := storage.claim_prekeys(IID)) is not None and c.otpk is not None:
        ids.add(c.otpk)
    assert ids == {b"x1", b"x2"}


def test_claim_takes_each_one_time_key_once_then_falls_back(storage: Storage) -> None:
    assert storage.claim_prekeys(IID) is None
    storage.put_prekeys(IID, _prekeys(1, range(2), range(1)), max_one_time=10)
    first = storage.claim_prekeys(IID)
    assert first is not None and first.spk == b"spk1" and first.otpk == b"x0" and first.pqpk == b"q0"
    second = storage.claim_prekeys(IID)
    assert second is not None and second.otpk == b"x1" and second.pqpk == b"lr"
    third = storage.claim_prekeys(IID)
    assert third is not None and third.otpk is None and third.pqpk == b"lr"
    # a newer upload without a last-resort key keeps the stored one and replaces the spk
    storage.put_prekeys(IID, _prekeys(2, lrpk=None), max_one_time=10)
    fourth = storage.claim_prekeys(IID)
    assert fourth is not None and fourth.spk == b"spk2" and fourth.pqpk == b"lr"


def test_claim_without_any_pq_key_takes_nothing(storage: Storage) -> None:
    storage.put_prekeys(IID, _prekeys(1, range(1), lrpk=None), max_one_time=10)
    assert storage.claim_prekeys(IID) is None
    assert storage.prekey_counts(IID) == (1, 0)


def test_concurrent_claims_never_share_a_key(storage: Storage) -> None:
    n = 40
    storage.put_prekeys(IID, _prekeys(1, range(n), range(n)), max_one_time=500)
    results: list[bytes | None] = []
    pq: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(6):
            c = storage.claim_prekeys(IID)
            assert c is not None
            with lock:
                results.append(c.otpk)
                pq.append(c.pqpk)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    taken = [r for r in results if r is not None]
    assert len(results) == 48
    assert sorted(taken) == sorted(b"x%d" % i for i in range(n))  # each exactly once
    assert results.count(None) == 8
    assert sorted(p for p in pq if p != b"lr") == sorted(b"q%d" % i for i in range(n))
    assert storage.prekey_counts(IID) == (0, 0)


def test_envelopes_cursor_fetch_and_expire(storage: Storage) -> None:
    c1 = storage.publish(TOPIC, b"a", 100)
    c2 = storage.publish(TOPIC2, b"b", 200)
    c3 = storage.publish(TOPIC, b"c", 300)
    assert c1 < c2 < c3
    got = storage.fetch(TOPIC, 0, 10)
    assert [(e.cursor, e.payload, e.received_at, e.topic) for e in got] == [(c1, b"a", 100, TOPIC), (c3, b"c", 300, TOPIC)]
    assert [e.cursor for e in storage.fetch(TOPIC, c1, 10)] == [c3]
    assert [e.cursor for e in storage.fetch(TOPIC, 0, 1)] == [c1]
    assert storage.expire(250) == 2
    assert [e.payload for e in storage.fetch(TOPIC, 0, 10)] == [b"c"]
    c4 = storage.publish(TOPIC, b"d", 400)
    assert c4 > c3  # cursors are never reused after deletion


def test_wait_wakes_on_publish_and_times_out(storage: Storage) -> None:
    c1 = storage.publish(TOPIC, b"a", 1)
    assert storage.wait(TOPIC, 0, 0.0) is True  # already there
    t0 = time.monotonic()
    assert storage.wait(TOPIC, c1, 0.2) is False
    assert time.monotonic() - t0 >= 0.15
    woke = threading.Event()
    started = threading.Event()

    def waiter() -> None:
        started.set()
        if storage.wait(TOPIC, c1, 20.0):
            woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(5)
    storage.publish(TOPIC2, b"other topic", 2)
    storage.publish(TOPIC, b"b", 3)
    assert woke.wait(10)
    t.join(5)


def test_close_releases_waiters(storage: Storage) -> None:
    done = threading.Event()

    def waiter() -> None:
        storage.wait(TOPIC, 10**9, 60.0)
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    storage.close()
    assert done.wait(10)
    t.join(5)


def test_counts(storage: Storage) -> None:
    storage.publish(TOPIC, b"a", 1)
    storage.append_identity("0xA", "i", b"r")
    c = storage.counts()
    assert c["envelopes"] == 1 and c["identity"] == 1 and c["prekeys"] == 0 and c["claimed_prekeys"] == 0


def test_sqlite_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    SQLiteStorage(str(path)).close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        con.commit()
    finally:
        con.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStorage(str(path))


def test_open_storage_urls(tmp_path: Path) -> None:
    st = open_storage(f"sqlite:///{tmp_path}/a.db")
    try:
        assert isinstance(st, SQLiteStorage)
    finally:
        st.close()
    assert (tmp_path / "a.db").exists()
    st = open_storage(str(tmp_path / "b.db"))
    st.close()
    with pytest.raises(StorageError, match="PostgreSQL storage is not available yet"):
        open_storage("postgresql://u@localhost/db")
    with pytest.raises(StorageError):
        open_storage("mysql://x")
    with pytest.raises(StorageError):
        open_storage(":memory:")
