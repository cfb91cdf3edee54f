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
        assert {"meta", "conversations", "messages", "outbox", "outbox_envelopes", "sessions", "prekeys", "cursors", "inbox_failures"} <= tables
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
