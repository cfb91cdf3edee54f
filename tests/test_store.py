"""The bridge's local store (bridge/store/db.py; PROTOCOL.md §7 "Local store"): schema version, WAL,
private files, refusal of a newer schema, and write transactions that roll back on error."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from bridge.store import SCHEMA_VERSION, Store, StoreError


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_store_has_schema_version_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "parley.db")
    try:
        assert store.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert store.read("PRAGMA journal_mode")[0][0] == "wal"
        tables = {r["name"] for r in store.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"meta", "conversations", "messages", "outbox", "outbox_envelopes", "sessions", "prekeys", "cursors", "quarantine"} <= tables
        assert "inbox_failures" not in tables  # folded into the quarantine (schema 3)
    finally:
        store.close()
    # Another process (a plain sqlite3 connection) sees the same, persistent, settings.
    con = sqlite3.connect(tmp_path / "parley.db")
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_database_and_wal_files_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "parley.db")
        with store.write() as c:
            store.set_meta(c, "k", b"v")
        files = sorted(tmp_path.glob("parley.db*"))
        names = {p.name for p in files}
        assert {"parley.db", "parley.db-wal", "parley.db-shm"} <= names  # WAL files exist while open
        for p in files:
            assert _mode(p) == 0o600, f"{p.name} is {_mode(p):o}"
        store.close()
    finally:
        os.umask(old)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    assert path.read_bytes() == before  # not "upgraded" downwards
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    con.close()


def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "parley.db"
    s = Store(path)
    with s.write() as c:
        s.set_meta(c, "answer", b"42")
    s.close()
    s = Store(path)
    assert s.get_meta("answer") == b"42"
    assert s.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    s.close()


def test_write_rolls_back_on_error(tmp_path: Path) -> None:
    s = Store(tmp_path / "parley.db")
    with s.write() as c:
        s.set_meta(c, "kept", b"1")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with s.write() as c:
            s.set_meta(c, "kept", b"2")
            s.set_meta(c, "lost", b"x")
            raise Boom()
    assert s.get_meta("kept") == b"1"
    assert s.get_meta("lost") is None
    # The connection is usable again (no transaction left open).
    with s.write() as c:
        s.set_meta(c, "after", b"ok")
    assert s.get_meta("after") == b"ok"
    # An SQL error inside the block also rolls back everything before it.
    with pytest.raises(sqlite3.IntegrityError):
        with s.write() as c:
            s.set_meta(c, "partial", b"y")
            c.execute("INSERT INTO outbox(message_id, state) VALUES ('m', 'nonsense')")
    assert s.get_meta("partial") is None
    s.close()


def test_write_is_serialised_between_connections(tmp_path: Path) -> None:
    """A second store (another process's view) cannot start a write while one is open: BEGIN IMMEDIATE."""
    a = Store(tmp_path / "parley.db")
    b = Store(tmp_path / "parley.db", busy_timeout_ms=50)
    try:
        with a.write() as c:
            a.set_meta(c, "x", b"1")
            with pytest.raises(StoreError, match="busy"):
                with b.write():
                    pass
        with b.write() as c:
            b.set_meta(c, "x", b"2")
        assert a.get_meta("x") == b"2"
    finally:
        a.close()
        b.close()


_V2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE conversations (peer TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, peer TEXT NOT NULL REFERENCES conversations(peer),
    sender TEXT NOT NULL, recipient TEXT NOT NULL, text TEXT NOT NULL, sent_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'received', 'failed')), read INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_by_peer ON messages(peer, sent_at, seq);
CREATE TABLE peer_installations (
    address TEXT NOT NULL, installation_id TEXT NOT NULL, signing_pub BLOB NOT NULL, identity_pub BLOB NOT NULL,
    fetched_at INTEGER NOT NULL, PRIMARY KEY (address, installation_id)
);
CREATE TABLE inbox_failures (topic TEXT NOT NULL, cursor INTEGER NOT NULL, error TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (topic, cursor));
INSERT INTO conversations VALUES ('0xP', 1, 1);
INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state)
    VALUES ('a', '0xP', '0xP', '0xMe', 'pinned last', 9223372036854775807, 1000000, 'in', 'received'),
           ('b', '0xP', '0xP', '0xMe', 'fine', 999000, 1000500, 'in', 'received');
INSERT INTO inbox_failures VALUES ('t', 7, 'DecryptError: bad tag', 5);
PRAGMA user_version = 2;
"""


def _dump(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [*con.iterdump(), f"user_version={con.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        con.close()


def test_migration_from_v2_is_idempotent_and_does_not_trust_user_version(tmp_path: Path) -> None:
    db = tmp_path / "parley.db"
    con = sqlite3.connect(db)
    con.executescript(_V2_SCHEMA)
    con.close()
    Store(db).close()
    con = sqlite3.connect(db)
    try:
        # The v2 failure log is in the quarantine (without bytes: they were never kept) and gone.
        assert con.execute("SELECT topic, cursor, error, at, payload FROM quarantine").fetchall() == [("t", 7, "DecryptError: bad tag", 5, None)]
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'inbox_failures'").fetchall()
        # A peer's impossible sent_at is replaced by the arrival time, the claim kept apart; a sane one stays.
        rows = con.execute("SELECT id, sent_at, claimed_sent_at FROM messages ORDER BY id").fetchall()
        assert rows == [("a", 1000000, 2**63 - 1), ("b", 999000, None)]
        assert {"checked_block"} <= {r[1] for r in con.execute("PRAGMA table_info(peer_installations)")}
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()
    once = _dump(db)
    Store(db).close()
    assert _dump(db) == once  # opening again changes nothing
    # A file stamped with the current version by another build, but missing a column, is repaired.
    con = sqlite3.connect(db)
    con.executescript("ALTER TABLE messages DROP COLUMN claimed_sent_at;")
    con.close()
    Store(db).close()
    con = sqlite3.connect(db)
    try:
        assert "claimed_sent_at" in {r[1] for r in con.execute("PRAGMA table_info(messages)")}
    finally:
        con.close()


def test_quarantine_keeps_the_newest_envelopes_and_counts_them_all(tmp_path: Path) -> None:
    from bridge.engine import inbox

    store = Store(tmp_path / "parley.db")
    try:
        extra = 5
        for cursor in range(1, inbox.QUARANTINE_KEEP + extra + 1):
            with store.write() as c:
                inbox.quarantine(c, "t", cursor, bytes([cursor % 256]) * 3, "E" * 1000)
        rows = store.read("SELECT cursor, payload, length(error) AS n FROM quarantine ORDER BY cursor")
        assert [r["cursor"] for r in rows] == list(range(extra + 1, inbox.QUARANTINE_KEEP + extra + 1))
        assert all(bytes(r["payload"]) == bytes([r["cursor"] % 256]) * 3 and r["n"] == inbox.QUARANTINE_ERROR_CHARS for r in rows)
        assert inbox.quarantine_count(store) == inbox.QUARANTINE_KEEP + extra
        assert [e["cursor"] for e in inbox.quarantined(store, 3)] == [inbox.QUARANTINE_KEEP + extra - i for i in range(3)]
    finally:
        store.close()


def test_a_threads_connection_closes_when_the_thread_ends(tmp_path: Path) -> None:
    """A connection per thread, not per thread ever seen: servers start a thread per client."""
    import threading

    store = Store(tmp_path / "parley.db")
    try:
        assert store.open_connections() == 1  # this thread's, from opening the store
        for i in range(40):
            t = threading.Thread(target=lambda: store.read("SELECT count(*) FROM messages"))
            t.start()
            t.join()
        assert store.open_connections() == 1
        # A live thread keeps its connection, and close() closes every one.
        started, stop = threading.Event(), threading.Event()

        def hold() -> None:
            store.read("SELECT 1")
            started.set()
            stop.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        assert started.wait(10)
        assert store.open_connections() == 2
        store.close()
        assert store.open_connections() == 0
        stop.set()
        t.join()
    finally:
        store.close()


def test_a_store_nobody_closes_is_collected_with_its_connections(tmp_path: Path) -> None:
    """Throw-away stores (a standby's, a restore's temporary home) must not outlive their last
    reference, nor keep their database files open."""
    import gc
    import weakref

    store = Store(tmp_path / "parley.db")
    store.read("SELECT 1")
    gone = weakref.ref(store)
    fds = lambda: sum(1 for fd in Path("/proc/self/fd").iterdir() if "parley.db" in str(fd.resolve(strict=False)))  # noqa: E731
    assert fds() >= 1
    del store
    gc.collect()
    assert gone() is None
    assert fds() == 0
