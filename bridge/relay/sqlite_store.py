"""SQLite backend of the relay :class:`~bridge.relay.storage.Storage` (DESIGN.md "Relay").

* WAL journal, ``busy_timeout``, a small pool of connections, each used by one thread at a time;
* schema versioned with ``PRAGMA user_version``;
* every multi-step change in one transaction; claims use ``BEGIN IMMEDIATE`` so two claims can
  never read the same one-time key;
* handed-out one-time prekey ids are remembered per installation (``claimed_prekeys``), so a
  replayed upload cannot hand the same key out twice;
* cursors come from an ``AUTOINCREMENT`` key, so they are never reused even after expiry;
* cursors are assigned inside ``BEGIN IMMEDIATE`` (one writer at a time), so they become visible
  in cursor order;
* :meth:`SQLiteStorage.wait` is a process-local condition variable, woken by :meth:`publish`
  (one node per database file);
* auth challenges and token hashes are stored with their expiry (schema version 2);
* an identity append updates the installation index from the new record only, in the append's
  transaction; ``iid_bindings`` holds each (installation id, address) binding and its final
  revocation (schema version 3, which rebuilds them from the stored logs when it upgrades a file);
* ``topic_usage`` keeps each topic's envelope count and bytes, updated by publish and expiry, so
  the per-inbox quota costs one row read (schema version 3);
* :meth:`SQLiteStorage.expire` deletes in small batches so publishes wait at most one batch;
* ``relay_lists`` (protocol 1.1) holds each installation's newest relay list; like the bucket
  tables it is created when missing at open (a check, not a schema version), and a revocation
  deletes the list of the binding it ends in the append's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from bridge.relay.storage import (
    BackupQuota,
    BlobExists,
    BlobQuota,
    ClaimedPrekeys,
    Envelope,
    IdentityEntry,
    InboxFull,
    InstallationBound,
    InstallationKeys,
    InstallationNotActive,
    LogFull,
    Storage,
    bindings_from_logs,
    relay_list_replaces,
    StaleUpload,
    StorageError,
    StorageUnavailable,
    StoredPrekeys,
    Wakeup,
)

__all__ = ["SQLiteStorage", "SCHEMA_VERSION"]

SCHEMA_VERSION = 3
_EXPIRE_BATCH = 500
_BUSY_TIMEOUT_MS = 5000
_KIND_X25519 = 0
_MAX_IDLE = 8
_KIND_MLKEM = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    address   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    record_id TEXT    NOT NULL,
    record    BLOB    NOT NULL,
    PRIMARY KEY (address, seq),
    UNIQUE (address, record_id)
);
CREATE TABLE IF NOT EXISTS installations (
    iid          TEXT NOT NULL,
    address      TEXT NOT NULL,
    signing_pub  BLOB NOT NULL,
    identity_pub BLOB NOT NULL,
    PRIMARY KEY (iid, address)
);
CREATE TABLE IF NOT EXISTS prekeys (
    iid       TEXT PRIMARY KEY,
    issued_at INTEGER NOT NULL,
    spk       BLOB NOT NULL,
    pq_lrpk BLOB
);
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    iid    TEXT    NOT NULL,
    kind   INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    key    BLOB    NOT NULL,
    PRIMARY KEY (iid, kind, key_id)
);
CREATE TABLE IF NOT EXISTS claimed_prekeys (
    iid    TEXT    NOT NULL,
    kind   INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    PRIMARY KEY (iid, kind, key_id)
);
CREATE TABLE IF NOT EXISTS envelopes (
    cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS envelopes_topic_cursor ON envelopes (topic, cursor);
CREATE INDEX IF NOT EXISTS envelopes_received_at ON envelopes (received_at);
CREATE TABLE IF NOT EXISTS auth_challenges (
    challenge  BLOB PRIMARY KEY,
    iid        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_challenges_expires ON auth_challenges (expires_at);
CREATE TABLE IF NOT EXISTS auth_tokens (
    token_hash BLOB PRIMARY KEY,
    iid        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_tokens_expires ON auth_tokens (expires_at);
CREATE TABLE IF NOT EXISTS iid_bindings (
    iid     TEXT    NOT NULL,
    address TEXT    NOT NULL,
    revoked INTEGER NOT NULL,
    PRIMARY KEY (iid, address)
);
CREATE TABLE IF NOT EXISTS topic_usage (
    topic TEXT PRIMARY KEY,
    n     INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
"""

# k-anonymous identity lookups (PROTOCOL.md §7 "Identity buckets"). Outside the versioned schema so
# that it is purely additive: created if missing at every open, and filled lazily from the identity
# table's rowids (the log is append-only), so the append path is untouched.
_BUCKET_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity_buckets (
    bucket  TEXT NOT NULL,
    address TEXT PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS identity_buckets_bucket ON identity_buckets (bucket);
CREATE TABLE IF NOT EXISTS identity_bucket_mark (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_rowid INTEGER NOT NULL
);
INSERT OR IGNORE INTO identity_bucket_mark (id, last_rowid) VALUES (1, 0);
"""

# Relay lists (protocol 1.1): additive like the bucket tables, created if missing at every open.
_RELAY_LIST_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_lists (
    iid     TEXT PRIMARY KEY,
    address TEXT    NOT NULL,
    version INTEGER NOT NULL,
    record  BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_lists_address ON relay_lists (address);
"""

# Blobs (protocol 1.2): additive like the relay lists, created if missing at every open.
_BLOB_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    iid        TEXT    NOT NULL,
    blob_id    TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (iid, blob_id)
);
CREATE INDEX IF NOT EXISTS blobs_expires ON blobs (expires_at);
CREATE INDEX IF NOT EXISTS blobs_created ON blobs (complete, created_at);
CREATE TABLE IF NOT EXISTS blob_chunks (
    iid     TEXT    NOT NULL,
    blob_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    PRIMARY KEY (iid, blob_id, seq)
);
"""

# Backups (protocol 1.3): additive like the blob tables, created if missing at every open.
_BACKUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS backup_vaults (
    vault      TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    touched_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS backup_vaults_touched ON backup_vaults (touched_at);
CREATE TABLE IF NOT EXISTS backup_objects (
    vault      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    upload     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (vault, name)
);
CREATE TABLE IF NOT EXISTS backup_uploads (
    upload     TEXT    PRIMARY KEY,
    vault      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS backup_uploads_vault ON backup_uploads (vault);
CREATE INDEX IF NOT EXISTS backup_uploads_created ON backup_uploads (created_at);
CREATE TABLE IF NOT EXISTS backup_nonces (
    vault      TEXT    NOT NULL,
    nonce      BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (vault, nonce)
);
CREATE INDEX IF NOT EXISTS backup_nonces_expires ON backup_nonces (expires_at);
CREATE TABLE IF NOT EXISTS backup_chunks (
    upload TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (upload, seq)
);
"""

_TABLES = (
    "identity",
    "installations",
    "prekeys",
    "one_time_prekeys",
    "claimed_prekeys",
    "envelopes",
    "auth_challenges",
    "auth_tokens",
    "iid_bindings",
    "topic_usage",
    "relay_lists",
    "blobs",
    "blob_chunks",
    "backup_vaults",
    "backup_objects",
    "backup_uploads",
    "backup_nonces",
    "backup_chunks",
)


def _translate(exc: sqlite3.Error) -> StorageError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text or "unable to open" in text):
        return StorageUnavailable(f"SQLite is unavailable: {text}")
    return StorageError(f"SQLite error: {text}")


class SQLiteStorage(Storage):
    """Relay storage in one SQLite file (or ``":memory:"`` is refused: threads need one file).

    Raises:
        StorageUnavailable: the file cannot be opened.
        StorageError: the schema is from a newer version.
    """

    def __init__(self, path: str) -> None:
        if path == ":memory:" or not path:
            raise StorageError("the relay needs a database file (connections are per thread)")
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._cond_lock = threading.Lock()
        self._cond = threading.Condition(self._cond_lock)
        # per-topic wake-ups: a publish wakes only its topic's waiters, not every subscriber (issue 5
        # part 4: with 10,000 idle subscribers a relay-wide notify_all cost ~30 ms per publish)
        self._waiting: dict[str, list[Any]] = {}  # topic -> [Condition on _cond_lock, waiter count]
        self._latest: dict[str, int] = {}
        self._closed = False
        # Writers of this process waiting for SQLite's write lock (in its busy handler, which sleeps
        # up to 100 ms between tries): the background expiry lets them in between its batches.
        self._writers_waiting = 0
        try:
            conn = self._open()
        except StorageUnavailable:
            raise
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(f"database schema {version} is newer than this relay ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                if 0 < version < 3:
                    self._upgrade_to_3(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'identity_bucket_mark'").fetchone() is None:
                try:
                    conn.executescript(_BUCKET_SCHEMA)
                except sqlite3.OperationalError:
                    pass  # a read-only database: everything else still works; bucket lookups answer 503
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'relay_lists'").fetchone() is None:
                try:
                    conn.executescript(_RELAY_LIST_SCHEMA)
                except sqlite3.OperationalError:
                    pass  # a read-only database: relay-list requests answer 503, everything else works
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blob_chunks'").fetchone() is None:
                try:
                    conn.executescript(_BLOB_SCHEMA)
                except sqlite3.OperationalError:
                    pass  # a read-only database: blob requests answer 503, everything else works
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'backup_chunks'").fetchone() is None:
                try:
                    conn.executescript(_BACKUP_SCHEMA)
                except sqlite3.OperationalError:
                    pass  # a read-only database: backup requests answer 503, everything else works
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc) from None
        except StorageError:
            conn.close()
            raise
        self._idle.append(conn)

    @staticmethod
    def _upgrade_to_3(conn: sqlite3.Connection) -> None:
        """Bindings and quota usage from the data of an older relay (inside the schema transaction)."""
        rows = conn.execute("SELECT address, record FROM identity ORDER BY rowid").fetchall()
        bindings = bindings_from_logs((str(a), bytes(r)) for a, r in rows)
        conn.execute("DELETE FROM installations")
        for (iid, address), (revoked, spub, xpub) in bindings.items():
            conn.execute("INSERT INTO iid_bindings (iid, address, revoked) VALUES (?, ?, ?)", (iid, address, int(revoked)))
            if not revoked and spub is not None and xpub is not None:
                conn.execute(
                    "INSERT INTO installations (iid, address, signing_pub, identity_pub) VALUES (?, ?, ?, ?)",
                    (iid, address, spub, xpub),
                )
        for table in ("prekeys", "one_time_prekeys", "claimed_prekeys"):
            conn.execute(f"DELETE FROM {table} WHERE iid NOT IN (SELECT iid FROM installations)")
        conn.execute(
            "INSERT INTO topic_usage (topic, n, bytes) SELECT topic, COUNT(*), SUM(LENGTH(payload)) FROM envelopes GROUP BY topic"
        )

    # ---- connections ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open relay database {self._path}: {exc}") from None
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection, used by one thread at a time (threads come and go in the server)."""
        with self._conns_lock:
            if self._closed:
                raise StorageError("storage is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            keep = False
            with self._conns_lock:
                if not self._closed and len(self._idle) < _MAX_IDLE and not conn.in_transaction:
                    self._idle.append(conn)
                    keep = True
            if not keep:
                conn.close()

    @contextmanager
    def _tx(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._borrow() as conn:
            try:
                with self._conns_lock:
                    self._writers_waiting += 1
                try:
                    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                finally:
                    with self._conns_lock:
                        self._writers_waiting -= 1
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise _translate(exc) from None

    def _let_writers_in(self, most: float = 0.25) -> None:
        """Between two batches of background work, wait (at most ``most`` seconds) until the writers
        of this process that are waiting for the write lock got it: SQLite's busy handler sleeps
        between its tries, so a loop that takes the lock again at once would starve them."""
        deadline = time.monotonic() + most
        while time.monotonic() < deadline:
            with self._conns_lock:
                if self._writers_waiting == 0:
                    return
            time.sleep(0.002)

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._borrow() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _translate(exc) from None

    # ---- identity -------------------------------------------------------------------------

    def append_identity(
        self, address: str, record_id: str, record: bytes, entry: IdentityEntry, *, max_records: int, consent: bool = False
    ) -> tuple[int, bool]:
        # BEGIN IMMEDIATE: one writer at a time for the whole file, for as long as a few indexed
        # statements take (no signature is checked in here)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT seq FROM identity WHERE address = ? AND record_id = ?", (address, record_id)
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            iid = entry.installation_id
            bound = {str(a): bool(r) for a, r in conn.execute("SELECT address, revoked FROM iid_bindings WHERE iid = ?", (iid,))}
            if address not in bound and bound and not consent:
                raise InstallationBound(iid, sorted(bound)[0])
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM identity WHERE address = ?", (address,)).fetchone()[0])
            if seq > max_records:
                raise LogFull(f"the identity log of {address} holds {max_records} records, the most a log may hold")
            conn.execute(
                "INSERT INTO identity (address, seq, record_id, record) VALUES (?, ?, ?, ?)",
                (address, seq, record_id, bytes(record)),
            )
            if entry.action == "revoke":
                conn.execute(
                    "INSERT INTO iid_bindings (iid, address, revoked) VALUES (?, ?, 1) "
                    "ON CONFLICT (iid, address) DO UPDATE SET revoked = 1",
                    (iid, address),
                )
                conn.execute("DELETE FROM installations WHERE iid = ? AND address = ?", (iid, address))
                conn.execute("DELETE FROM relay_lists WHERE iid = ? AND address = ?", (iid, address))
                if conn.execute("SELECT 1 FROM installations WHERE iid = ? LIMIT 1", (iid,)).fetchone() is None:
                    for table in ("prekeys", "one_time_prekeys", "claimed_prekeys", "relay_lists"):
                        conn.execute(f"DELETE FROM {table} WHERE iid = ?", (iid,))
            else:
                if address not in bound:
                    conn.execute("INSERT INTO iid_bindings (iid, address, revoked) VALUES (?, ?, 0)", (iid, address))
                if not bound.get(address, False) and entry.signing_pub is not None and entry.identity_pub is not None:
                    conn.execute(
                        "INSERT OR IGNORE INTO installations (iid, address, signing_pub, identity_pub) VALUES (?, ?, ?, ?)",
                        (iid, address, bytes(entry.signing_pub), bytes(entry.identity_pub)),
                    )
            return seq, True

    def identity_records(self, address: str) -> list[bytes]:
        rows = self._read("SELECT record FROM identity WHERE address = ? ORDER BY seq", (address,))
        return [bytes(r[0]) for r in rows]  # type: ignore[arg-type]

    def identity_bucket(self, prefix: str, *, max_addresses: int, max_records: int) -> dict[str, list[bytes]] | None:
        from bridge.protocol.ids import address_bucket

        mark = self._read("SELECT last_rowid FROM identity_bucket_mark WHERE id = 1")
        newest = self._read("SELECT COALESCE(MAX(rowid), 0) FROM identity")
        if int(newest[0][0]) > int(mark[0][0]):  # type: ignore[call-overload]
            with self._tx() as conn:  # catch up with appends since the last lookup (one writer at a time)
                last = int(conn.execute("SELECT last_rowid FROM identity_bucket_mark WHERE id = 1").fetchone()[0])
                rows = conn.execute("SELECT rowid, address FROM identity WHERE rowid > ? ORDER BY rowid", (last,)).fetchall()
                for rowid, address in rows:
                    conn.execute(
                        "INSERT OR IGNORE INTO identity_buckets (bucket, address) VALUES (?, ?)", (address_bucket(address), address)
                    )
                    last = max(last, int(rowid))
                conn.execute("UPDATE identity_bucket_mark SET last_rowid = ? WHERE id = 1", (last,))
        # hex digits sort below 'g' (BINARY collation): [prefix, prefix + 'g') is exactly the bucket
        addresses = [
            str(r[0])
            for r in self._read(
                "SELECT address FROM identity_buckets WHERE bucket >= ? AND bucket < ? ORDER BY address LIMIT ?",
                (prefix, prefix + "g", max_addresses + 1),
            )
        ]
        if len(addresses) > max_addresses:
            return None
        out: dict[str, list[bytes]] = {a: [] for a in addresses}
        if not addresses:
            return out
        marks = ",".join("?" * len(addresses))
        total = int(self._read(f"SELECT COUNT(*) FROM identity WHERE address IN ({marks})", tuple(addresses))[0][0])  # type: ignore[call-overload]
        if total > max_records:
            return None
        for address, record in self._read(f"SELECT address, record FROM identity WHERE address IN ({marks}) ORDER BY address, seq", tuple(addresses)):
            out[str(address)].append(bytes(record))  # type: ignore[arg-type]
        return out

    def installation(self, installation_id: str) -> InstallationKeys | None:
        rows = self._read(
            "SELECT address, signing_pub, identity_pub FROM installations WHERE iid = ? ORDER BY address LIMIT 1",
            (installation_id,),
        )
        if not rows:
            return None
        address, signing_pub, identity_pub = rows[0]
        return InstallationKeys(installation_id, str(address), bytes(signing_pub), bytes(identity_pub))  # type: ignore[arg-type]

    def installation_for(self, installation_id: str, address: str) -> InstallationKeys | None:
        rows = self._read(
            "SELECT signing_pub, identity_pub FROM installations WHERE iid = ? AND address = ?", (installation_id, address)
        )
        if not rows:
            return None
        signing_pub, identity_pub = rows[0]
        return InstallationKeys(installation_id, address, bytes(signing_pub), bytes(identity_pub))  # type: ignore[arg-type]

    def identity_log_lengths(self, installation_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT i.address, (SELECT COALESCE(MAX(d.seq), 0) FROM identity d WHERE d.address = i.address) "
            "FROM installations i WHERE i.iid = ?",
            (installation_id,),
        )
        return {str(address): int(n) for address, n in rows}

    # ---- relay lists ----------------------------------------------------------------------

    def put_relay_list(self, installation_id: str, address: str, version: int, record: bytes) -> bool:
        with self._tx() as conn:  # BEGIN IMMEDIATE: no revocation can commit between the check and the store
            if conn.execute(
                "SELECT 1 FROM installations WHERE iid = ? AND address = ?", (installation_id, address)
            ).fetchone() is None:
                raise InstallationNotActive(f"installation {installation_id} is not active in the identity log of {address}")
            row = conn.execute("SELECT version, record FROM relay_lists WHERE iid = ?", (installation_id,)).fetchone()
            if not relay_list_replaces(None if row is None else (int(row[0]), bytes(row[1])), version, record):
                return False
            conn.execute(
                "INSERT INTO relay_lists (iid, address, version, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (iid) DO UPDATE SET address = excluded.address, version = excluded.version, record = excluded.record",
                (installation_id, address, int(version), bytes(record)),
            )
            return True

    def relay_lists(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {str(a): [] for a in addresses}
        if not out:
            return out
        marks = ",".join("?" * len(out))
        rows = self._read(
            "SELECT r.address, r.record FROM relay_lists r JOIN installations i ON i.iid = r.iid AND i.address = r.address "
            f"WHERE r.address IN ({marks}) ORDER BY r.address, r.iid",
            tuple(out),
        )
        for address, record in rows:
            out[str(address)].append(bytes(record))  # type: ignore[arg-type]
        return out

    # ---- prekeys --------------------------------------------------------------------------

    def put_prekeys(self, installation_id: str, prekeys: StoredPrekeys, *, max_one_time: int) -> tuple[int, int]:
        with self._tx() as conn:
            row = conn.execute("SELECT issued_at FROM prekeys WHERE iid = ?", (installation_id,)).fetchone()
            if row is not None and int(row[0]) > prekeys.issued_at:
                raise StaleUpload(f"upload issued at {prekeys.issued_at} is older than the stored one ({int(row[0])})")
            conn.execute(
                "INSERT INTO prekeys (iid, issued_at, spk, pq_lrpk) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (iid) DO UPDATE SET issued_at = excluded.issued_at, spk = excluded.spk, "
                "pq_lrpk = COALESCE(excluded.pq_lrpk, prekeys.pq_lrpk)",
                (
                    installation_id,
                    int(prekeys.issued_at),
                    bytes(prekeys.spk),
                    None if prekeys.pq_lrpk is None else bytes(prekeys.pq_lrpk),
                ),
            )
            counts = []
            for kind, keys in ((_KIND_X25519, prekeys.otpks), (_KIND_MLKEM, prekeys.pq_otpks)):
                n = int(
                    conn.execute(
                        "SELECT COUNT(*) FROM one_time_prekeys WHERE iid = ? AND kind = ?", (installation_id, kind)
                    ).fetchone()[0]
                )
                for key_id in sorted(keys):
                    if n >= max_one_time:
                        break
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO one_time_prekeys (iid, kind, key_id, key) "
                        "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM claimed_prekeys "
                        "WHERE iid = ? AND kind = ? AND key_id = ?)",
                        (installation_id, kind, key_id, bytes(keys[key_id]), installation_id, kind, key_id),
                    )
                    n += cur.rowcount
                counts.append(n)
            return counts[0], counts[1]

    def claim_prekeys(self, installation_id: str) -> ClaimedPrekeys | None:
        with self._tx(immediate=True) as conn:
            row = conn.execute("SELECT spk, pq_lrpk FROM prekeys WHERE iid = ?", (installation_id,)).fetchone()
            if row is None:
                return None
            spk, lrpk = bytes(row[0]), None if row[1] is None else bytes(row[1])
            taken: list[tuple[int, bytes] | None] = []
            for kind in (_KIND_X25519, _KIND_MLKEM):
                one = conn.execute(
                    "SELECT key_id, key FROM one_time_prekeys WHERE iid = ? AND kind = ? ORDER BY key_id LIMIT 1",
                    (installation_id, kind),
                ).fetchone()
                taken.append(None if one is None else (int(one[0]), bytes(one[1])))
            if taken[1] is None and lrpk is None:
                return None  # nothing to encapsulate to: take nothing
            for kind, entry in ((_KIND_X25519, taken[0]), (_KIND_MLKEM, taken[1])):
                if entry is not None:
                    conn.execute(
                        "DELETE FROM one_time_prekeys WHERE iid = ? AND kind = ? AND key_id = ?",
                        (installation_id, kind, entry[0]),
                    )
                    conn.execute(  # tombstone: a replayed upload cannot bring this key back
                        "INSERT OR IGNORE INTO claimed_prekeys (iid, kind, key_id) VALUES (?, ?, ?)",
                        (installation_id, kind, entry[0]),
                    )
            otpk = None if taken[0] is None else taken[0][1]
            pq = None if taken[1] is None else taken[1][1]
            return ClaimedPrekeys(spk=spk, otpk=otpk, pqpk=pq if pq is not None else lrpk)  # type: ignore[arg-type]

    def prekey_counts(self, installation_id: str) -> tuple[int, int]:
        rows = self._read(
            "SELECT kind, COUNT(*) FROM one_time_prekeys WHERE iid = ? GROUP BY kind", (installation_id,)
        )
        by_kind = {int(k): int(n) for k, n in rows}  # type: ignore[call-overload]
        return by_kind.get(_KIND_X25519, 0), by_kind.get(_KIND_MLKEM, 0)

    # ---- envelopes ------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, now: int, *, max_count: int | None = None, max_bytes: int | None = None) -> int:
        cursors = self.publish_many([(topic, payload)], now, max_count=max_count, max_bytes=max_bytes)
        if not cursors:
            raise InboxFull(f"the inbox quota is full (at most {max_count} envelopes, {max_bytes} bytes)")
        return cursors[0]

    def publish_many(
        self, items: Sequence[tuple[str, bytes]], now: int, *, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[int]:
        # One transaction for the whole prefix (group commit: one fsync, not one per envelope). The
        # usage of each topic is read once and counted in memory within the transaction.
        cursors: list[int] = []
        latest: dict[str, int] = {}
        usage: dict[str, tuple[int, int]] = {}
        with self._tx() as conn:
            for topic, payload in items:
                size = len(payload)
                if topic not in usage:
                    used = conn.execute("SELECT n, bytes FROM topic_usage WHERE topic = ?", (topic,)).fetchone()
                    usage[topic] = (int(used[0]), int(used[1])) if used is not None else (0, 0)
                n, b = usage[topic]
                if (max_count is not None and n + 1 > max_count) or (max_bytes is not None and b + size > max_bytes):
                    break
                cur = conn.execute(
                    "INSERT INTO envelopes (topic, payload, received_at) VALUES (?, ?, ?)", (topic, bytes(payload), int(now))
                )
                cursor = int(cur.lastrowid or 0)
                conn.execute(
                    "INSERT INTO topic_usage (topic, n, bytes) VALUES (?, 1, ?) "
                    "ON CONFLICT (topic) DO UPDATE SET n = n + 1, bytes = bytes + excluded.bytes",
                    (topic, size),
                )
                usage[topic] = (n + 1, b + size)
                cursors.append(cursor)
                latest[topic] = cursor
        with self._cond:
            for topic, cursor in latest.items():
                if cursor > self._latest.get(topic, 0):
                    self._latest[topic] = cursor
                entry = self._waiting.get(topic)
                if entry is not None:
                    entry[0].notify_all()
        return cursors

    def fetch(self, topic: str, after: int, limit: int) -> list[Envelope]:
        rows = self._read(
            "SELECT cursor, payload, received_at FROM envelopes WHERE topic = ? AND cursor > ? ORDER BY cursor LIMIT ?",
            (topic, int(after), int(limit)),
        )
        return [Envelope(int(c), topic, bytes(p), int(t)) for c, p, t in rows]  # type: ignore[call-overload, arg-type]

    def _has_after(self, topic: str, after: int) -> bool:
        return bool(self._read("SELECT 1 FROM envelopes WHERE topic = ? AND cursor > ? LIMIT 1", (topic, int(after))))

    def wait(self, topic: str, after: int, timeout: float, wake: Wakeup | None = None) -> bool:
        if self._has_after(topic, after):
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            entry = self._waiting.setdefault(topic, [threading.Condition(self._cond_lock), 0])
            entry[1] += 1
            if wake is not None:
                wake.attach(entry[0])
            try:
                while not self._closed and self._latest.get(topic, 0) <= after:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (wake is not None and wake.is_set()):
                        return False
                    entry[0].wait(remaining)
                if self._closed:
                    return False
            finally:
                if wake is not None:
                    wake.attach(None)
                entry[1] -= 1
                if entry[1] == 0 and self._waiting.get(topic) is entry:
                    del self._waiting[topic]
        return True

    def expire(self, before: int) -> int:
        total = 0
        while True:
            with self._tx() as conn:
                gone = conn.execute(
                    "DELETE FROM envelopes WHERE cursor IN (SELECT cursor FROM envelopes WHERE received_at < ? "
                    "ORDER BY received_at LIMIT ?) RETURNING topic, LENGTH(payload)",
                    (int(before), _EXPIRE_BATCH),
                ).fetchall()
                n = len(gone)
                freed: dict[str, list[int]] = {}
                for topic, size in gone:
                    f = freed.setdefault(str(topic), [0, 0])
                    f[0] += 1
                    f[1] += int(size)
                for topic, (count, size) in freed.items():
                    conn.execute("UPDATE topic_usage SET n = n - ?, bytes = bytes - ? WHERE topic = ?", (count, size, topic))
                conn.execute("DELETE FROM topic_usage WHERE n <= 0")
            total += n
            if n < _EXPIRE_BATCH or self._closed:
                break
            self._let_writers_in()
        if total:
            with self._cond:  # a remembered latest cursor may name a deleted envelope
                self._latest.clear()
        return total

    # ---- blobs ----------------------------------------------------------------------------

    def blob_begin(self, installation_id: str, blob_id: str, size: int, *, now: int, expires_at: int, quota: int) -> None:
        with self._tx() as conn:  # BEGIN IMMEDIATE: quota check and reservation are atomic
            if conn.execute("SELECT 1 FROM blobs WHERE iid = ? AND blob_id = ?", (installation_id, blob_id)).fetchone():
                raise BlobExists(f"blob {blob_id} exists")
            used = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE iid = ?", (installation_id,)).fetchone()[0])
            if used + int(size) > quota:
                raise BlobQuota(f"the inbox's blobs use {used} bytes; {size} more exceed the quota of {quota}")
            conn.execute(
                "INSERT INTO blobs (iid, blob_id, size, complete, created_at, expires_at) VALUES (?, ?, ?, 0, ?, ?)",
                (installation_id, blob_id, int(size), int(now), int(expires_at)),
            )

    def blob_put_chunk(self, installation_id: str, blob_id: str, seq: int, data: bytes) -> None:
        with self._tx() as conn:
            row = conn.execute("SELECT complete FROM blobs WHERE iid = ? AND blob_id = ?", (installation_id, blob_id)).fetchone()
            if row is None or int(row[0]):
                raise StorageError("no upload in progress for this blob")
            conn.execute(
                "INSERT INTO blob_chunks (iid, blob_id, seq, data) VALUES (?, ?, ?, ?)", (installation_id, blob_id, int(seq), bytes(data))
            )

    def blob_commit(self, installation_id: str, blob_id: str) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT size, complete FROM blobs WHERE iid = ? AND blob_id = ?", (installation_id, blob_id)).fetchone()
            if row is None or int(row[1]):
                raise StorageError("no upload in progress for this blob")
            stored = int(
                conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM blob_chunks WHERE iid = ? AND blob_id = ?", (installation_id, blob_id)
                ).fetchone()[0]
            )
            if stored != int(row[0]):
                conn.execute("DELETE FROM blob_chunks WHERE iid = ? AND blob_id = ?", (installation_id, blob_id))
                conn.execute("DELETE FROM blobs WHERE iid = ? AND blob_id = ?", (installation_id, blob_id))
                ok = False
            else:
                conn.execute("UPDATE blobs SET complete = 1 WHERE iid = ? AND blob_id = ?", (installation_id, blob_id))
                ok = True
        if not ok:
            raise StorageError(f"blob {blob_id}: {stored} bytes stored, {int(row[0])} declared")
        return int(row[0])

    def blob_abort(self, installation_id: str, blob_id: str) -> None:
        with self._tx() as conn:
            if conn.execute(
                "DELETE FROM blobs WHERE iid = ? AND blob_id = ? AND complete = 0 RETURNING 1", (installation_id, blob_id)
            ).fetchone():
                conn.execute("DELETE FROM blob_chunks WHERE iid = ? AND blob_id = ?", (installation_id, blob_id))

    def blob_info(self, installation_id: str, blob_id: str, now: int) -> tuple[int, int] | None:
        rows = self._read(
            "SELECT size, expires_at FROM blobs WHERE iid = ? AND blob_id = ? AND complete = 1 AND expires_at > ?",
            (installation_id, blob_id, int(now)),
        )
        return None if not rows else (int(rows[0][0]), int(rows[0][1]))  # type: ignore[call-overload]

    def blob_chunk(self, installation_id: str, blob_id: str, seq: int) -> bytes | None:
        rows = self._read(
            "SELECT data FROM blob_chunks WHERE iid = ? AND blob_id = ? AND seq = ?", (installation_id, blob_id, int(seq))
        )
        return None if not rows else bytes(rows[0][0])  # type: ignore[arg-type]

    def blob_usage(self, installation_id: str) -> int:
        return int(self._read("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE iid = ?", (installation_id,))[0][0])  # type: ignore[call-overload]

    def expire_blobs(self, now: int, *, stale_before: int) -> int:
        total = 0
        while not self._closed:
            rows = self._read(
                "SELECT iid, blob_id FROM blobs WHERE expires_at <= ? OR (complete = 0 AND created_at < ?) LIMIT 50",
                (int(now), int(stale_before)),
            )
            if not rows:
                break
            for iid, blob_id in rows:
                with self._tx() as conn:
                    conn.execute("DELETE FROM blob_chunks WHERE iid = ? AND blob_id = ?", (iid, blob_id))
                    conn.execute("DELETE FROM blobs WHERE iid = ? AND blob_id = ?", (iid, blob_id))
                total += 1
                self._let_writers_in()
        return total

    # ---- backups (protocol 1.3) -------------------------------------------------------------

    def backup_take_nonce(self, vault: str, nonce: bytes, *, now: int, expires_at: int) -> bool:
        with self._tx() as conn:
            conn.execute("DELETE FROM backup_nonces WHERE vault = ? AND expires_at <= ?", (vault, int(now)))
            cur = conn.execute(
                "INSERT OR IGNORE INTO backup_nonces (vault, nonce, expires_at) VALUES (?, ?, ?)", (vault, bytes(nonce), int(expires_at))
            )
            if cur.rowcount != 1:
                return False
            conn.execute("UPDATE backup_vaults SET touched_at = ? WHERE vault = ? AND touched_at < ?", (int(now), vault, int(now)))
            return True

    def backup_begin(self, vault: str, name: str, size: int, *, now: int, quota: int, max_objects: int) -> str:
        import secrets as _secrets

        with self._tx() as conn:  # BEGIN IMMEDIATE: the quota check and the reservation are atomic
            committed = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM backup_objects WHERE vault = ?", (vault,)).fetchone()[0])
            pending = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM backup_uploads WHERE vault = ?", (vault,)).fetchone()[0])
            old = conn.execute("SELECT size FROM backup_objects WHERE vault = ? AND name = ?", (vault, name)).fetchone()
            replaced = int(old[0]) if old is not None else 0
            if committed + pending - replaced + int(size) > quota:
                raise BackupQuota(f"the vault holds {committed + pending} bytes; {size} more exceed the quota of {quota}")
            if old is None:
                names = {
                    str(r[0])
                    for r in conn.execute(
                        "SELECT name FROM backup_objects WHERE vault = ? UNION SELECT name FROM backup_uploads WHERE vault = ?", (vault, vault)
                    )
                }
                if name not in names and len(names) >= max_objects:
                    raise BackupQuota(f"the vault holds {len(names)} objects, the most allowed")
            conn.execute(
                "INSERT INTO backup_vaults (vault, created_at, touched_at) VALUES (?, ?, ?) "
                "ON CONFLICT (vault) DO UPDATE SET touched_at = MAX(touched_at, excluded.touched_at)",
                (vault, int(now), int(now)),
            )
            upload = _secrets.token_hex(16)
            conn.execute(
                "INSERT INTO backup_uploads (upload, vault, name, size, created_at) VALUES (?, ?, ?, ?, ?)",
                (upload, vault, name, int(size), int(now)),
            )
            return upload

    def backup_put_chunk(self, upload: str, seq: int, data: bytes) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM backup_uploads WHERE upload = ?", (upload,)).fetchone() is None:
                raise StorageError("no backup upload in progress with this id")
            conn.execute("INSERT INTO backup_chunks (upload, seq, data) VALUES (?, ?, ?)", (upload, int(seq), bytes(data)))

    def backup_commit(self, upload: str, *, now: int) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT vault, name, size FROM backup_uploads WHERE upload = ?", (upload,)).fetchone()
            if row is None:
                raise StorageError("no backup upload in progress with this id")
            vault, name, size = str(row[0]), str(row[1]), int(row[2])
            stored = int(conn.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM backup_chunks WHERE upload = ?", (upload,)).fetchone()[0])
            conn.execute("DELETE FROM backup_uploads WHERE upload = ?", (upload,))
            if stored != size:
                conn.execute("DELETE FROM backup_chunks WHERE upload = ?", (upload,))
            else:
                old = conn.execute("SELECT upload FROM backup_objects WHERE vault = ? AND name = ?", (vault, name)).fetchone()
                if old is not None:
                    conn.execute("DELETE FROM backup_chunks WHERE upload = ?", (str(old[0]),))
                conn.execute(
                    "INSERT INTO backup_objects (vault, name, upload, size, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (vault, name) DO UPDATE SET upload = excluded.upload, size = excluded.size, updated_at = excluded.updated_at",
                    (vault, name, upload, size, int(now)),
                )
        if stored != size:
            raise StorageError(f"backup upload: {stored} bytes stored, {size} declared")
        return size

    def backup_abort(self, upload: str) -> None:
        with self._tx() as conn:
            if conn.execute("DELETE FROM backup_uploads WHERE upload = ? RETURNING 1", (upload,)).fetchone():
                conn.execute("DELETE FROM backup_chunks WHERE upload = ?", (upload,))

    def backup_list(self, vault: str) -> list[tuple[str, int, int]]:
        rows = self._read("SELECT name, size, updated_at FROM backup_objects WHERE vault = ? ORDER BY name", (vault,))
        return [(str(n), int(s), int(t)) for n, s, t in rows]  # type: ignore[call-overload]

    def backup_info(self, vault: str, name: str) -> tuple[str, int] | None:
        rows = self._read("SELECT upload, size FROM backup_objects WHERE vault = ? AND name = ?", (vault, name))
        return None if not rows else (str(rows[0][0]), int(rows[0][1]))  # type: ignore[call-overload]

    def backup_chunk(self, upload: str, seq: int) -> bytes | None:
        rows = self._read("SELECT data FROM backup_chunks WHERE upload = ? AND seq = ?", (upload, int(seq)))
        return None if not rows else bytes(rows[0][0])  # type: ignore[arg-type]

    def backup_delete(self, vault: str, name: str) -> bool:
        with self._tx() as conn:
            row = conn.execute("DELETE FROM backup_objects WHERE vault = ? AND name = ? RETURNING upload", (vault, name)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM backup_chunks WHERE upload = ?", (str(row[0]),))
            self._drop_empty_vault(conn, vault)
            return True

    @staticmethod
    def _drop_empty_vault(conn: sqlite3.Connection, vault: str) -> None:
        conn.execute(
            "DELETE FROM backup_vaults WHERE vault = ? AND NOT EXISTS (SELECT 1 FROM backup_objects WHERE vault = ?) "
            "AND NOT EXISTS (SELECT 1 FROM backup_uploads WHERE vault = ?)",
            (vault, vault, vault),
        )

    def backup_usage(self, vault: str) -> int:
        rows = self._read(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM backup_objects WHERE vault = ?) + "
            "(SELECT COALESCE(SUM(size), 0) FROM backup_uploads WHERE vault = ?)",
            (vault, vault),
        )
        return int(rows[0][0])  # type: ignore[call-overload]

    def expire_backups(self, *, touched_before: int, stale_before: int, now: int) -> int:
        for (upload,) in self._read("SELECT upload FROM backup_uploads WHERE created_at < ?", (int(stale_before),)):
            self.backup_abort(str(upload))
            self._let_writers_in()
        vaults = 0
        while not self._closed:
            rows = self._read("SELECT vault FROM backup_vaults WHERE touched_at < ? LIMIT 50", (int(touched_before),))
            if not rows:
                break
            for (vault,) in rows:
                vault = str(vault)
                while not self._closed:
                    with self._tx() as conn:
                        # one object or upload per transaction, and only while the vault is still untouched
                        stale = conn.execute("SELECT 1 FROM backup_vaults WHERE vault = ? AND touched_at < ?", (vault, int(touched_before))).fetchone()
                        if stale is None:
                            break
                        obj = conn.execute("SELECT upload FROM backup_objects WHERE vault = ? LIMIT 1", (vault,)).fetchone()
                        if obj is None:
                            obj = conn.execute("SELECT upload FROM backup_uploads WHERE vault = ? LIMIT 1", (vault,)).fetchone()
                        if obj is None:
                            conn.execute("DELETE FROM backup_vaults WHERE vault = ?", (vault,))
                            vaults += 1
                            break
                        conn.execute("DELETE FROM backup_chunks WHERE upload = ?", (str(obj[0]),))
                        conn.execute("DELETE FROM backup_objects WHERE upload = ?", (str(obj[0]),))
                        conn.execute("DELETE FROM backup_uploads WHERE upload = ?", (str(obj[0]),))
                    self._let_writers_in()
        with self._tx() as conn:
            conn.execute("DELETE FROM backup_nonces WHERE expires_at <= ?", (int(now),))
        return vaults

    # ---- auth -----------------------------------------------------------------------------

    def _put_expiring(self, table: str, column: str, key: bytes, iid: str, expires_at: int, now: int, cap: int) -> bool:
        with self._tx() as conn:
            if int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) >= cap:
                conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (int(now),))
                if int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) >= cap:
                    return False
            conn.execute(
                f"INSERT OR IGNORE INTO {table} ({column}, iid, expires_at) VALUES (?, ?, ?)",
                (bytes(key), iid, int(expires_at)),
            )
            return True

    def put_challenge(self, challenge: bytes, installation_id: str, expires_at: int, *, now: int, max_pending: int) -> bool:
        return self._put_expiring("auth_challenges", "challenge", challenge, installation_id, expires_at, now, max_pending)

    def take_challenge(self, challenge: bytes) -> tuple[str, int] | None:
        with self._tx() as conn:
            row = conn.execute(
                "DELETE FROM auth_challenges WHERE challenge = ? RETURNING iid, expires_at", (bytes(challenge),)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def put_token(self, token_hash: bytes, installation_id: str, expires_at: int, *, now: int, max_tokens: int) -> bool:
        return self._put_expiring("auth_tokens", "token_hash", token_hash, installation_id, expires_at, now, max_tokens)

    def token_owner(self, token_hash: bytes, now: int) -> str | None:
        rows = self._read("SELECT iid, expires_at FROM auth_tokens WHERE token_hash = ?", (bytes(token_hash),))
        if not rows:
            return None
        if int(rows[0][1]) <= now:  # type: ignore[call-overload]
            with self._tx() as conn:
                conn.execute("DELETE FROM auth_tokens WHERE token_hash = ?", (bytes(token_hash),))
            return None
        return str(rows[0][0])

    def counts(self) -> dict[str, int]:
        return {t: int(self._read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in _TABLES}  # type: ignore[call-overload]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for entry in self._waiting.values():
                entry[0].notify_all()
        with self._conns_lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
