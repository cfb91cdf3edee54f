"""Relay Storage contract tests (DESIGN.md "Relay": one interface, several backends).

Parametrized over ``STORAGE_BACKENDS`` (SQLite and PostgreSQL). Each PostgreSQL test runs in a fresh
schema that is dropped afterwards; without a server those tests skip (fail under ``CI=true``).
PostgreSQL-only behaviour (several nodes on one database, migrations) is at the end.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.relay.sqlite_store import SCHEMA_VERSION, SQLiteStorage
from bridge.relay.storage import (
    IdentityEntry,
    InboxFull,
    InstallationBound,
    LogFull,
    StaleUpload,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredPrekeys,
    open_storage,
)
from tests.relay_fixtures import STORAGE_BACKENDS, open_backend, postgres_schema, storage_backend, wait_until

IID = "0" * 31 + "1"
IID2 = "0" * 31 + "2"
TOPIC = f"parley.v1.inbox.{IID}"
#: A waiter's own timeout, longer than any test runs: a wait that returns was woken, never timed out,
#: so no test needs to measure how long it took (issue 17, V7). Its threads are daemons.
NEVER = 3600.0
TOPIC2 = f"parley.v1.inbox.{IID2}"


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with storage_backend(request.param, tmp_path) as st:
        yield st


def _prekeys(issued_at: int, otpks: range = range(0), pq: range = range(0), lrpk: bytes | None = b"lr") -> StoredPrekeys:
    return StoredPrekeys(
        issued_at=issued_at,
        spk=b"spk%d" % issued_at,
        pq_lrpk=lrpk,
        otpks={i: b"x%d" % i for i in otpks},
        pq_otpks={i: b"q%d" % i for i in pq},
    )


def _auth(iid: str = IID) -> IdentityEntry:
    return IdentityEntry("authorize", iid, b"s" * 32, b"x" * 32)


def _revoke(iid: str = IID) -> IdentityEntry:
    return IdentityEntry("revoke", iid)


def test_identity_log_appends_in_order_and_dedups(storage: Storage) -> None:
    assert storage.identity_records("0xA") == []
    assert storage.append_identity("0xA", "id1", b"r1", _auth(IID), max_records=10) == (1, True)
    assert storage.append_identity("0xA", "id2", b"r2", _auth(IID2), max_records=10) == (2, True)
    assert storage.append_identity("0xA", "id1", b"r1-other-signature", _auth(IID), max_records=10) == (1, False)
    assert storage.append_identity("0xB", "id1", b"rb", _auth("0" * 31 + "3"), max_records=10) == (1, True)
    assert storage.identity_records("0xA") == [b"r1", b"r2"]
    assert storage.identity_records("0xB") == [b"rb"]


def test_identity_log_cap(storage: Storage) -> None:
    for i in range(3):
        storage.append_identity("0xA", f"id{i}", b"r", _auth(), max_records=3)
    with pytest.raises(LogFull):
        storage.append_identity("0xA", "id9", b"r", _auth(), max_records=3)
    assert storage.append_identity("0xA", "id1", b"r", _auth(), max_records=3) == (2, False)
    assert len(storage.identity_records("0xA")) == 3


def test_installation_index_bindings_consent_and_final_revocation(storage: Storage) -> None:
    assert storage.installation(IID) is None
    storage.append_identity("0xA", "a1", b"r", _auth(), max_records=10)
    inst = storage.installation(IID)
    assert inst is not None and inst.address == "0xA" and inst.signing_pub == b"s" * 32
    # another address may not name it without the installation's consent, to authorize or to revoke
    for entry in (_auth(), _revoke()):
        with pytest.raises(InstallationBound):
            storage.append_identity("0xB", "b1", b"r", entry, max_records=10)
    assert storage.identity_records("0xB") == []
    # with consent (the installation moves to another wallet) it is bound to both
    storage.append_identity("0xB", "b1", b"r", _auth(), max_records=10, consent=True)
    storage.put_prekeys(IID, _prekeys(1, range(3)), max_one_time=10)
    storage.append_identity("0xA", "a2", b"r", _revoke(), max_records=10)  # the old wallet lets go
    inst = storage.installation(IID)
    assert inst is not None and inst.address == "0xB"
    assert storage.prekey_counts(IID) == (3, 0)
    storage.append_identity("0xA", "a3", b"r", _auth(), max_records=10)  # that revocation is final
    assert storage.installation(IID).address == "0xB"  # type: ignore[union-attr]
    storage.append_identity("0xB", "b2", b"r", _revoke(), max_records=10)
    assert storage.installation(IID) is None
    assert storage.prekey_counts(IID) == (0, 0)
    assert storage.claim_prekeys(IID) is None
    # a revocation before any authorization (a log replayed in another order) binds and revokes too
    storage.append_identity("0xC", "c1", b"r", _revoke(IID2), max_records=10)
    storage.append_identity("0xC", "c2", b"r", _auth(IID2), max_records=10)
    assert storage.installation(IID2) is None
    with pytest.raises(InstallationBound):
        storage.append_identity("0xA", "a4", b"r", _auth(IID2), max_records=10)


def test_identity_log_lengths_of_an_installations_active_bindings(storage: Storage) -> None:
    assert storage.identity_log_lengths(IID) == {}
    storage.append_identity("0xA", "a1", b"r", _auth(), max_records=10)
    storage.append_identity("0xA", "a2", b"r", _auth(IID2), max_records=10)
    assert storage.identity_log_lengths(IID) == {"0xA": 2} and storage.identity_log_lengths(IID2) == {"0xA": 2}
    storage.append_identity("0xB", "b1", b"r", _auth(), max_records=10, consent=True)  # a wallet switch
    assert storage.identity_log_lengths(IID) == {"0xA": 2, "0xB": 1}
    storage.append_identity("0xA", "a3", b"r", _revoke(), max_records=10)  # the old wallet lets go
    assert storage.identity_log_lengths(IID) == {"0xB": 1}
    assert storage.identity_log_lengths(IID2) == {"0xA": 3}


def test_inbox_quota_counts_envelopes_and_bytes_and_expiry_frees_it(storage: Storage) -> None:
    for i in range(3):
        storage.publish(TOPIC, b"x" * 10, 100 + i, max_count=3, max_bytes=100)
    with pytest.raises(InboxFull):
        storage.publish(TOPIC, b"x", 200, max_count=3, max_bytes=100)
    storage.publish(TOPIC2, b"y" * 100, 200, max_count=3, max_bytes=100)
    with pytest.raises(InboxFull):
        storage.publish(TOPIC2, b"y", 200, max_count=3, max_bytes=100)
    assert [len(e.payload) for e in storage.fetch(TOPIC, 0, 10)] == [10, 10, 10]
    assert storage.expire(102) == 2  # the two oldest envelopes of TOPIC
    storage.publish(TOPIC, b"x" * 80, 300, max_count=3, max_bytes=100)
    with pytest.raises(InboxFull):
        storage.publish(TOPIC, b"x" * 11, 300, max_count=3, max_bytes=100)
    assert storage.publish(TOPIC, b"x" * 5, 300) > 0  # no quota given: none applies


def test_concurrent_publishes_never_exceed_the_quota(storage: Storage) -> None:
    ok: list[int] = []
    full: list[int] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            try:
                ok.append(storage.publish(TOPIC, b"z", 1, max_count=17, max_bytes=10**6))
            except InboxFull:
                full.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ok) == 17 and len(full) == 23
    assert len(storage.fetch(TOPIC, 0, 100)) == 17


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
        if storage.wait(TOPIC, c1, NEVER):
            woke.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert started.wait(10)
    storage.publish(TOPIC2, b"other topic", 2)
    storage.publish(TOPIC, b"b", 3)
    assert woke.wait(10)
    t.join(5)


def test_a_wakeup_ends_a_wait_without_an_envelope(storage: Storage) -> None:
    """A subscription's Wakeup (set when a client frame arrives) ends its wait early, returning False
    (no envelope); one already set makes the wait return at once; a publish still returns True.
    Every wait here has a one-hour timeout and runs on a thread given 10 s to finish."""
    from bridge.relay.storage import Wakeup

    def wait_in_thread(after: int, wake: Wakeup, entered: Any = None) -> tuple[threading.Thread, list[bool]]:
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(storage.wait(TOPIC, after, NEVER, wake)), daemon=True)
        t.start()
        if entered is not None:
            assert wait_until(entered, 10), "the waiter never reached its condition wait"
        return t, result

    def finished(t: threading.Thread, result: list[bool]) -> list[bool]:
        t.join(10)
        assert not t.is_alive(), "the wait did not end"
        return result

    c1 = storage.publish(TOPIC, b"a", 1)
    wake = Wakeup()
    wake.set()
    assert finished(*wait_in_thread(c1, wake)) == [False]  # already set: returns at once
    wake.clear()
    t, result = wait_in_thread(c1, wake, entered=lambda: wake._cond is not None)
    wake.set()
    assert finished(t, result) == [False]
    wake.clear()
    storage.publish(TOPIC, b"b", 2)
    assert finished(*wait_in_thread(c1, wake)) == [True]


def test_close_releases_waiters(storage: Storage) -> None:
    done = threading.Event()

    def waiter() -> None:
        storage.wait(TOPIC, 10**9, NEVER)
        done.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    storage.close()
    assert done.wait(10)
    t.join(5)


def test_counts(storage: Storage) -> None:
    storage.publish(TOPIC, b"a", 1)
    storage.append_identity("0xA", "i", b"r", _auth(), max_records=10)
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
    with pytest.raises(StorageUnavailable):  # a PostgreSQL URL, but nothing listens on port 1
        open_storage("postgresql://u@127.0.0.1:1/db?connect_timeout=2")
    with pytest.raises(StorageError):
        open_storage("mysql://x")
    with pytest.raises(StorageError):
        open_storage(":memory:")


# ---- auth state (docs/PROTOCOL.md §7 "Authentication"): shared by every node on one database ----


def test_auth_challenges_single_use_capped_and_purged(storage: Storage) -> None:
    assert storage.put_challenge(b"c" * 32, IID, 160, now=100, max_pending=2) is True
    assert storage.take_challenge(b"c" * 32) == (IID, 160)
    assert storage.take_challenge(b"c" * 32) is None  # single use
    assert storage.take_challenge(b"z" * 32) is None
    assert storage.put_challenge(b"a" * 32, IID, 110, now=100, max_pending=2) is True
    assert storage.put_challenge(b"b" * 32, IID2, 200, now=100, max_pending=2) is True
    assert storage.put_challenge(b"d" * 32, IID, 200, now=105, max_pending=2) is False  # full, nothing expired
    assert storage.take_challenge(b"d" * 32) is None
    assert storage.put_challenge(b"d" * 32, IID, 200, now=110, max_pending=2) is True  # "a" expired: purged
    assert storage.take_challenge(b"a" * 32) is None
    assert storage.take_challenge(b"b" * 32) == (IID2, 200)


def test_auth_tokens_owner_expiry_and_cap(storage: Storage) -> None:
    h1, h2, h3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert storage.put_token(h1, IID, 150, now=100, max_tokens=2) is True
    assert storage.put_token(h2, IID2, 500, now=100, max_tokens=2) is True
    assert storage.token_owner(h1, 149) == IID
    assert storage.token_owner(h2, 149) == IID2
    assert storage.token_owner(h3, 149) is None
    assert storage.put_token(h3, IID, 900, now=120, max_tokens=2) is False
    assert storage.token_owner(h1, 150) is None  # expired at expires_at
    assert storage.put_token(h3, IID, 900, now=150, max_tokens=2) is True
    assert storage.token_owner(h3, 151) == IID
    assert storage.counts()["auth_tokens"] == 2


def test_concurrent_challenge_takes_have_one_winner(storage: Storage) -> None:
    challenges = [bytes([i]) * 32 for i in range(10)]
    for ch in challenges:
        assert storage.put_challenge(ch, IID, 10**10, now=0, max_pending=100)
    wins: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        for ch in challenges:
            if storage.take_challenge(ch) is not None:
                with lock:
                    wins.append(ch)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == sorted(challenges)  # each taken exactly once


# ---- retention does not block publishes ------------------------------------------------------


def _seed_old_envelopes(storage: Storage, n: int) -> None:
    """Insert ``n`` envelopes received at t=1 in one statement (through each backend's own schema)."""
    if isinstance(storage, SQLiteStorage):
        with storage._tx() as conn:
            conn.execute(
                "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?) "
                "INSERT INTO envelopes (topic, payload, received_at) SELECT ?, randomblob(64), 1 FROM g",
                (n, TOPIC2),
            )
    else:
        from bridge.relay.postgres_store import PostgresStorage

        assert isinstance(storage, PostgresStorage)
        with storage._tx() as conn:
            conn.execute(
                "WITH c AS (UPDATE parley_cursor SET value = value + %(n)s WHERE id = 1 RETURNING value) "
                "INSERT INTO envelopes (cursor, topic, payload, received_at) "
                "SELECT c.value - %(n)s + g, %(t)s, '\\x00'::bytea, 1 FROM c, generate_series(1, %(n)s) AS g",
                {"n": n, "t": TOPIC2},
            )


def test_expire_many_rows_while_publishing(storage: Storage) -> None:
    n = 30_000
    _seed_old_envelopes(storage, n)
    assert storage.counts()["envelopes"] == n
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(storage.expire(before=10)))
    published: list[int] = []

    def old_left() -> int:
        return storage.counts()["envelopes"] - len(published)

    during = 0  # publishes that completed between two partial states of the expiry
    t.start()
    while t.is_alive() or len(published) < 20:
        before = old_left()
        published.append(storage.publish(TOPIC, b"fresh", 1000))
        if before < n and old_left() > 0:
            during += 1
    t.join(60)
    assert result == [n]
    # Publishes complete while the expiry runs: it deletes in batches, each its own transaction, so
    # its partial state is visible and a publish fits between. One long transaction would show all
    # n old envelopes or none. No clock involved: how long each waited depends on the machine's
    # load, so it is not asserted (issue 17, V7).
    assert during, "no publish completed while the expiry was part way through"
    stored: list[int] = []
    while batch := storage.fetch(TOPIC, stored[-1] if stored else 0, 10_000):
        stored += [e.cursor for e in batch]
    assert stored == published
    assert storage.counts()["envelopes"] == len(published)


# ---- PostgreSQL: migrations and several nodes on one database --------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def nodes(pg_url: str) -> Iterator[tuple[Storage, Storage]]:
    """Two storages on one database schema, as two relay nodes would have."""
    from bridge.relay.postgres_store import PostgresStorage

    a, b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    try:
        assert a.listening.wait(10) and b.listening.wait(10)
        yield a, b
    finally:
        a.close()
        b.close()


def _raw(url: str) -> Any:
    """A plain autocommit connection (a psycopg Connection) to the test schema."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_pg_migrations_once_under_concurrent_open_and_newer_schema_refused(pg_url: str) -> None:
    from bridge.relay.postgres_store import SCHEMA_VERSION as PG_VERSION, PostgresStorage

    opened: list[Storage] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStorage(pg_url, max_connections=2))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for st in opened:
        st.close()
    assert errors == [] and len(opened) == 5
    with _raw(pg_url) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM parley_schema ORDER BY version")] == list(range(1, PG_VERSION + 1))
        assert conn.execute("SELECT COUNT(*) FROM parley_cursor").fetchone() == (1,)
        conn.execute("INSERT INTO parley_schema (version, applied_at) VALUES (%s, 0)", (PG_VERSION + 1,))
    with pytest.raises(StorageError, match="newer"):
        PostgresStorage(pg_url)


def test_pg_open_storage_urls(pg_url: str) -> None:
    from bridge.relay.postgres_store import PostgresStorage

    for url in (pg_url, "postgres://" + pg_url[len("postgresql://") :]):
        st = open_storage(url)
        try:
            assert isinstance(st, PostgresStorage)
        finally:
            st.close()


def test_pg_wait_on_one_node_wakes_on_publish_through_another(nodes: tuple[Storage, Storage]) -> None:
    a, b = nodes
    c1 = b.publish(TOPIC, b"first", 1)
    woke: list[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        woke.append(a.wait(TOPIC, c1, NEVER))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert started.wait(10)
    b.publish(TOPIC2, b"other topic", 2)
    c2 = b.publish(TOPIC, b"second", 3)
    t.join(30)
    # the waiter's timeout never passes: only B's NOTIFY can have woken A's waiter
    assert woke == [True]
    assert [e.cursor for e in a.fetch(TOPIC, c1, 10)] == [c2]


_SILENT_INSERT = (  # an envelope stored without a NOTIFY: as if its notification were lost
    "WITH c AS (UPDATE parley_cursor SET value = value + 1 WHERE id = 1 RETURNING value) "
    "INSERT INTO envelopes (cursor, topic, payload, received_at) SELECT c.value, %s, %s, 1 FROM c RETURNING cursor"
)


def test_pg_lost_notifications_are_caught_up_from_the_database(nodes: tuple[Storage, Storage], pg_url: str) -> None:
    from bridge.relay.postgres_store import PostgresStorage

    a, _ = nodes
    assert isinstance(a, PostgresStorage)
    with _raw(pg_url) as conn:
        c1 = conn.execute(_SILENT_INSERT, (TOPIC, b"x")).fetchone()[0]
    assert a.wait(TOPIC, 0, 0.0) is True  # no read covers cursor 0 on this thread: the database is asked
    got: list[bool] = []
    ready = threading.Event()

    def waiter() -> None:
        assert [e.cursor for e in a.fetch(TOPIC, 0, 10)] == [c1]  # this read covers c1 ...
        ready.set()
        got.append(a.wait(TOPIC, c1, NEVER))  # ... so the wait relies on NOTIFY alone

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert ready.wait(10)
    with _raw(pg_url) as conn:
        # an envelope whose notification is lost, then A's listener connection drops: A must re-check
        c2 = conn.execute(_SILENT_INSERT, (TOPIC, b"y")).fetchone()[0]
        assert not got  # nothing told the waiter yet
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()",
            (f"LISTEN {a._channel}",),
        ).fetchall()
        assert len(killed) == 2  # both nodes' listeners (same channel)
    t.join(30)
    assert got == [True]  # woken by the listener's reconnect (its own timeout never passes)
    assert [e.cursor for e in a.fetch(TOPIC, c1, 10)] == [c2]


def test_pg_listener_reconnects_after_its_connection_is_killed(nodes: tuple[Storage, Storage], pg_url: str) -> None:
    from bridge.relay.postgres_store import PostgresStorage

    a, b = nodes
    assert isinstance(a, PostgresStorage)
    with _raw(pg_url) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE %s AND datname = current_database()",
            (f"LISTEN {a._channel}%",),
        ).fetchall()
    assert len(killed) == 2  # both nodes' listeners
    c1 = b.publish(TOPIC, b"while reconnecting", 1)
    assert a.wait(TOPIC, 0, 30.0) is True
    assert wait_until(a.listening.is_set, 10)
    # live wake-ups work again after the reconnect
    res: list[bool] = []
    t = threading.Thread(target=lambda: res.append(a.wait(TOPIC, c1, NEVER)), daemon=True)
    t.start()
    b.publish(TOPIC, b"after reconnect", 2)
    t.join(30)
    assert res == [True]


def test_pg_cursor_is_visible_only_in_commit_order(nodes: tuple[Storage, Storage], pg_url: str) -> None:
    """A publish whose transaction is slow to commit holds back every later cursor."""
    a, b = nodes
    c0 = a.publish(TOPIC, b"before", 1)
    slow = _raw(pg_url)
    try:
        slow.execute("BEGIN")
        held = slow.execute(
            "WITH c AS (UPDATE parley_cursor SET value = value + 1 WHERE id = 1 RETURNING value) "
            "INSERT INTO envelopes (cursor, topic, payload, received_at) SELECT c.value, %s, 'slow', 1 FROM c "
            "RETURNING cursor",
            (TOPIC,),
        ).fetchone()[0]
        done = threading.Event()
        later: list[int] = []

        def publish_on_b() -> None:
            later.append(b.publish(TOPIC, b"later", 2))
            done.set()

        t = threading.Thread(target=publish_on_b, daemon=True)
        t.start()
        # B cannot take a cursor while an earlier one is uncommitted: its publish ends up waiting for
        # the slow transaction's lock (seen in pg_stat_activity), not done before it commits.
        slow_pid = slow.info.backend_pid
        with _raw(pg_url) as watch:

            def b_blocked() -> bool:
                rows = watch.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (slow_pid,)).fetchall()
                return bool(rows)

            assert wait_until(lambda: done.is_set() or b_blocked(), 10)
            assert not done.is_set() and b_blocked(), "B took a cursor while an earlier one was uncommitted"
        assert a.fetch(TOPIC, c0, 10) == []
        slow.execute("COMMIT")
        assert done.wait(10)
        t.join(5)
    finally:
        slow.close()
    assert later[0] == held + 1
    assert [e.payload for e in a.fetch(TOPIC, c0, 10)] == [b"slow", b"later"]


def test_pg_concurrent_publishers_on_two_nodes_readers_skip_nothing(nodes: tuple[Storage, Storage]) -> None:
    a, b = nodes
    per_thread, threads_per_node = 100, 3
    published: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    seen: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[str] = []

    def publisher(st: Storage, k: int) -> None:
        for i in range(per_thread):
            c = st.publish(TOPIC, b"%d-%d" % (k, i), 1)
            if i % 10 == 0:
                st.publish(TOPIC2, b"noise", 1)
            with lock:
                published.append(c)

    def reader(name: str, st: Storage) -> None:
        cursor = 0
        total = per_thread * threads_per_node * 2
        while len(seen[name]) < total and not stop.is_set():
            batch = st.fetch(TOPIC, cursor, 37)
            for e in batch:
                if e.cursor <= cursor:
                    errors.append(f"{name}: cursor {e.cursor} after {cursor}")
                cursor = e.cursor
                seen[name].append(e.cursor)
            if not batch:
                st.wait(TOPIC, cursor, 0.2)

    readers = [threading.Thread(target=reader, args=(n, st)) for n, st in (("a", a), ("b", b))]
    pubs = [threading.Thread(target=publisher, args=(st, k)) for k, st in enumerate([a, b] * threads_per_node)]
    for t in readers + pubs:
        t.start()
    for t in pubs:
        t.join(120)
    for t in readers:
        t.join(30)
    stop.set()
    assert errors == []
    assert len(published) == per_thread * threads_per_node * 2
    assert seen["a"] == sorted(published) and seen["b"] == sorted(published)  # none skipped, none twice


def test_pg_one_time_prekeys_claimed_once_across_nodes(nodes: tuple[Storage, Storage]) -> None:
    a, b = nodes
    n = 60
    a.put_prekeys(IID, _prekeys(1, range(n), range(n // 2)), max_one_time=500)
    got: list[bytes] = []
    pq: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def worker(st: Storage) -> None:
        barrier.wait()
        while True:
            c = st.claim_prekeys(IID)
            assert c is not None
            if c.otpk is None:
                return
            with lock:
                got.append(c.otpk)
                pq.append(c.pqpk)

    threads = [threading.Thread(target=worker, args=(st,)) for st in [a, b] * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted(b"x%d" % i for i in range(n))  # each exactly once
    assert sorted(p for p in pq if p != b"lr") == sorted(b"q%d" % i for i in range(n // 2))
    assert a.prekey_counts(IID) == b.prekey_counts(IID) == (0, 0)


def test_pg_auth_state_shared_between_nodes(nodes: tuple[Storage, Storage]) -> None:
    a, b = nodes
    assert a.put_token(b"t" * 32, IID, 10**10, now=0, max_tokens=10)
    assert b.token_owner(b"t" * 32, 1) == IID
    assert a.put_challenge(b"c" * 32, IID, 10**10, now=0, max_pending=10)
    assert b.take_challenge(b"c" * 32) == (IID, 10**10)
    assert a.take_challenge(b"c" * 32) is None


def test_publish_many_stores_a_prefix_in_order_wakes_waiters_and_stops_at_a_full_quota(storage: Storage) -> None:
    """1.4 batch publish: the prefix before the first envelope its quota refuses is stored, in order."""
    woke = threading.Event()
    started = threading.Event()

    def waiter() -> None:
        started.set()
        if storage.wait(TOPIC2, 0, NEVER):
            woke.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert started.wait(10)
    items = [(TOPIC, b"a"), (TOPIC2, b"b"), (TOPIC, b"c"), (TOPIC, b"d"), (TOPIC, b"e"), (TOPIC2, b"f")]
    cursors = storage.publish_many(items, 100, max_count=3, max_bytes=1000)
    assert len(cursors) == 4 and cursors == sorted(cursors) and len(set(cursors)) == 4  # "e" is TOPIC's 4th
    assert [e.payload for e in storage.fetch(TOPIC, 0, 10)] == [b"a", b"c", b"d"]
    assert [(e.cursor, e.payload) for e in storage.fetch(TOPIC2, 0, 10)] == [(cursors[1], b"b")]  # "f" not stored
    assert woke.wait(10)
    t.join(5)
    # the quota counted the batch: TOPIC is full, TOPIC2 has room for two more
    assert storage.publish_many([(TOPIC, b"g")], 101, max_count=3) == []
    assert len(storage.publish_many([(TOPIC2, b"h"), (TOPIC2, b"i"), (TOPIC2, b"j")], 101, max_count=3)) == 2
    # bytes count too, and an empty batch stores nothing
    assert len(storage.publish_many([(f"parley.v1.inbox.{'c' * 32}", b"x" * 60)] * 2, 102, max_bytes=100)) == 1
    assert storage.publish_many([], 103) == []


def test_concurrent_batches_over_the_same_topics_in_different_orders_all_land(storage: Storage) -> None:
    """Batches from several threads (as from several relay nodes) name the same topics in opposite
    orders, while single publishes go on: none may deadlock or fail, every envelope is stored once, and each topic reads in
    cursor order. (PostgreSQL locks a topic's usage row, then the cursor counter, per envelope.)"""
    topics = [f"parley.v1.inbox.{i:032x}" for i in range(6)]
    errors: list[BaseException] = []
    stored: list[list[int]] = []
    go = threading.Barrier(4)

    def sender(k: int) -> None:
        order = topics if k % 2 == 0 else topics[::-1]
        mine = []
        try:
            go.wait(10)
            for round_ in range(15):
                if k == 3:  # single publishes meanwhile (one statement each)
                    mine += [storage.publish(t, f"{k}.{round_}.{t[-2:]}".encode(), 100) for t in order]
                else:
                    mine += storage.publish_many([(t, f"{k}.{round_}.{t[-2:]}".encode()) for t in order], 100)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        stored.append(mine)

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(len(m) for m in stored) == [90] * 4
    for t in topics:
        got = storage.fetch(t, 0, 1000)
        assert len(got) == 60 and [e.cursor for e in got] == sorted(e.cursor for e in got)
        assert len({e.payload for e in got}) == 60


def test_postgres_batch_chosen_as_deadlock_victim_is_tried_again_whole(tmp_path: Path) -> None:
    """Another transaction (retention on another node updates several usage rows, in no set order)
    holds one inbox's usage row and then wants another's, which a batch publish already holds while
    it waits for the first. PostgreSQL breaks the cycle by rolling the batch back (its deadlock
    timeout is the shorter here); the batch must be tried again and land whole, not fail and not
    land in part."""
    import psycopg

    lo, hi = sorted([TOPIC, TOPIC2])  # a batch locks its topics' usage rows in this order
    with postgres_schema() as url:
        st = open_backend("postgres", tmp_path, url)
        try:
            st.publish(lo, b"first lo", 1)
            st.publish(hi, b"first hi", 1)
            with psycopg.connect(url) as other:
                other.execute("SET deadlock_timeout = '30s'")
                other.execute("SELECT n FROM topic_usage WHERE topic = %s FOR UPDATE", (hi,))
                result: list[Any] = []
                batch = threading.Thread(target=lambda: result.append(st.publish_many([(hi, b"b"), (lo, b"a")], 2)), daemon=True)
                batch.start()
                with psycopg.connect(url, autocommit=True) as watch:
                    assert wait_until(lambda: bool(watch.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchall()))
                other.execute("SELECT n FROM topic_usage WHERE topic = %s FOR UPDATE", (lo,))  # the cycle; the batch is rolled back
                other.commit()
            batch.join(30)
            assert not batch.is_alive()
            assert len(result) == 1 and len(result[0]) == 2, result
            assert [e.payload for e in st.fetch(lo, 0, 10)] == [b"first lo", b"a"]
            assert [e.payload for e in st.fetch(hi, 0, 10)] == [b"first hi", b"b"]
        finally:
            st.close()
