"""The bridge's local database: one SQLite file in the home directory, WAL mode.

Several processes share it (the daemon, and CLI commands run while it is up): every change that
reads then writes state (a ratchet step, an inbox cursor, the outbox) runs inside ``BEGIN IMMEDIATE``
so that writers are serialised by SQLite itself, and a received message is committed in the same
transaction as the ratchet state that decrypted it and the cursor that points past it.

Secrets in the database (private prekeys, ratchet states) are sealed with the installation's storage
key (AES-256-GCM, AAD naming the row); message text is plaintext, which is why the home directory is
0700 and every file in it 0600.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Store", "StoreError", "SCHEMA_VERSION", "now_ms"]

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB
);
CREATE TABLE IF NOT EXISTS conversations (
    peer        TEXT PRIMARY KEY,          -- checksummed address of the other party
    created_at  INTEGER NOT NULL,          -- ms
    updated_at  INTEGER NOT NULL           -- ms
);
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- local arrival order
    id           TEXT NOT NULL UNIQUE,               -- 128-bit message id chosen by the sender
    peer         TEXT NOT NULL REFERENCES conversations(peer),
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    text         TEXT NOT NULL,
    sent_at      INTEGER NOT NULL,                   -- ms, sender's clock if sane, else received_at (display only)
    received_at  INTEGER NOT NULL,                   -- ms, our clock
    direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'received', 'failed')),
    read         INTEGER NOT NULL DEFAULT 0,
    claimed_sent_at INTEGER,                         -- the peer's sent_at when it was not sane (diagnosis)
    -- Issue 12 (PROTOCOL.md §6.7): the content type. Control contents (reaction, edit, delete,
    -- read-receipt, consent) we send are rows too (the outbox reuses them) but are never listed.
    kind         TEXT NOT NULL DEFAULT 'text',       -- text|reply|attachment|reaction|edit|delete|read-receipt|consent|unknown
    content_type TEXT NOT NULL DEFAULT 'text',
    extra        BLOB,                               -- canonical CBOR of the extras list (the outbox rebuilds the content)
    reply_to     TEXT,
    edited_at    INTEGER,
    deleted      INTEGER NOT NULL DEFAULT 0,
    read_at      INTEGER                             -- the peer's read receipt (ms, our clock)
);
CREATE INDEX IF NOT EXISTS messages_by_peer_seq ON messages(peer, seq);
CREATE TABLE IF NOT EXISTS outbox (
    message_id      TEXT PRIMARY KEY REFERENCES messages(id),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'prepared', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    lease_owner     TEXT,                    -- the caller delivering it now (bridge/engine/engine.py _deliver)
    lease_until     INTEGER NOT NULL DEFAULT 0  -- ms; after this another caller may take the message over
);
CREATE TABLE IF NOT EXISTS outbox_envelopes (
    message_id      TEXT NOT NULL REFERENCES outbox(message_id),
    installation_id TEXT NOT NULL,
    topic           TEXT NOT NULL,
    payload         BLOB NOT NULL,
    cursor          INTEGER,                 -- relay cursor once published; -1: installation gone, dropped
    own             INTEGER NOT NULL DEFAULT 0,  -- 1: a copy for our own other installation
    PRIMARY KEY (message_id, installation_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    remote_iid  TEXT NOT NULL,
    sid         BLOB NOT NULL,
    state       BLOB NOT NULL,               -- sealed Session.to_bytes()
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (remote_iid, sid)
);
CREATE TABLE IF NOT EXISTS prekeys (
    kind        TEXT NOT NULL,               -- x25519-spk | x25519-otpk | mlkem768-otpk | mlkem768-lrpk
    id          INTEGER NOT NULL,
    private     BLOB NOT NULL,               -- sealed
    public      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    uploaded    INTEGER NOT NULL DEFAULT 0,  -- 1 once an upload carrying it succeeded
    retired_at  INTEGER,                     -- ms; signed/last-resort key replaced, or one-time key handed out (deleted after the grace period)
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS cursors (
    topic   TEXT PRIMARY KEY,
    cursor  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_installations (
    address          TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    signing_pub      BLOB NOT NULL,
    identity_pub     BLOB NOT NULL,
    fetched_at       INTEGER NOT NULL,
    checked_block    INTEGER,                 -- smart account: the chain block its signer was checked at
    PRIMARY KEY (address, installation_id)
);
CREATE TABLE IF NOT EXISTS peer_fetches (
    address     TEXT PRIMARY KEY,
    fetched_at  INTEGER NOT NULL,             -- ms of the last lookup; 0: tracked from a sender's statement only
    log_length  INTEGER                       -- records in the address's log at the last lookup (NULL: never looked up)
);
-- bridge/engine/peers.py (issue 8 item 2): what the identity cache knows besides the active sets.
CREATE TABLE IF NOT EXISTS peer_revoked (
    address          TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('log', 'relay', 'unregistered')),  -- revocation in the log / relay's 404 / absent at the last pass
    at               INTEGER NOT NULL,
    PRIMARY KEY (address, installation_id)
);
CREATE TABLE IF NOT EXISTS sender_rechecks (  -- messages accepted on their sender's statement alone
    message_id       TEXT PRIMARY KEY,
    address          TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    received_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS message_flags (    -- their sender turned out revoked or never registered
    message_id  TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
-- Issue 10: relays. A relay list per peer installation (the newest verified one), where an address's
-- log was found, the relays each envelope goes to, and the envelopes already taken in (one envelope
-- reaches us through several home relays: it is processed once).
CREATE TABLE IF NOT EXISTS peer_relay_lists (
    address          TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    version          INTEGER NOT NULL,
    relays           TEXT NOT NULL,          -- JSON array of relay URLs, in the list's order
    record           BLOB NOT NULL,          -- the signed relay-list record
    PRIMARY KEY (address, installation_id)
);
CREATE TABLE IF NOT EXISTS peer_sources (      -- the relay an address's log was last found on
    address  TEXT PRIMARY KEY,
    relay    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (  -- the other inbox relays of an envelope, retried in the background
    message_id       TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    relay            TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'done', 'gone', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    last_error       TEXT,
    PRIMARY KEY (message_id, installation_id, relay)
);
CREATE INDEX IF NOT EXISTS outbox_deliveries_due ON outbox_deliveries(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS seen_envelopes (
    digest  BLOB PRIMARY KEY,                -- SHA-256 of the sealed payload
    at      INTEGER NOT NULL                 -- ms; pruned after SEEN_KEEP_MS (bridge/engine/engine.py)
);
CREATE INDEX IF NOT EXISTS seen_envelopes_by_age ON seen_envelopes(at);
-- Issue 12: reactions, consent, attachments, uploads (docs/PROTOCOL.md §6.7).
CREATE TABLE IF NOT EXISTS reactions (
    message_id  TEXT NOT NULL,
    reactor     TEXT NOT NULL,
    emoji       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, reactor, emoji)
);
CREATE TABLE IF NOT EXISTS consent (
    peer        TEXT PRIMARY KEY,
    state       TEXT,                        -- allowed | requested | declined | blocked
    previous    TEXT,
    updated_at  INTEGER,
    held        INTEGER DEFAULT 0,
    dropped     INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attachments (
    id          TEXT PRIMARY KEY,            -- "<message_id>-<index>"
    message_id  TEXT,
    idx         INTEGER,
    name        TEXT,
    size        INTEGER,
    mime        TEXT,
    sha256      TEXT,               -- hex, of the plaintext
    url         TEXT,
    key         BLOB,               -- sealed with the storage key (AAD names the row)
    nonce       BLOB,
    digest      BLOB,
    state       TEXT CHECK (state IN ('local', 'pending', 'downloading', 'done', 'failed', 'refused')),
    path        TEXT,                        -- the plaintext file under <home>/attachments/, once there
    thumb       BLOB,                        -- JPEG/PNG thumbnail bytes, images only
    error       TEXT,
    updated_at  INTEGER
);
CREATE INDEX IF NOT EXISTS attachments_by_message ON attachments(message_id, idx);
CREATE TABLE IF NOT EXISTS uploads (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    size        INTEGER,
    mime        TEXT,
    received    INTEGER DEFAULT 0,
    path        TEXT,
    created_at  INTEGER
);
CREATE TABLE IF NOT EXISTS quarantine (      -- envelopes that could not be taken in (bridge/engine/inbox.py)
    topic   TEXT NOT NULL,
    cursor  INTEGER NOT NULL,
    error   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    payload BLOB,                            -- the envelope as received (NULL: recorded before schema 3)
    PRIMARY KEY (topic, cursor)
);
"""

#: Peer timestamps later than this after arrival are replaced by the arrival time (bridge/engine/inbox.py).
_MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older (or differently merged) schema up to date.

    Every step checks what is there instead of trusting ``user_version``, so it is idempotent and
    also repairs a database that another build already stamped with this version.
    """
    # v1 -> v2: the block a smart account's signer was checked at.
    if "checked_block" not in _columns(conn, "peer_installations"):
        conn.execute("ALTER TABLE peer_installations ADD COLUMN checked_block INTEGER")
    # v2 -> v3: peer timestamps are bounded; an insane claim is kept apart (issue 8 item 10).
    if "claimed_sent_at" not in _columns(conn, "messages"):
        conn.execute("ALTER TABLE messages ADD COLUMN claimed_sent_at INTEGER")
    conn.execute(
        "UPDATE messages SET claimed_sent_at = sent_at, sent_at = received_at "
        "WHERE sent_at < 0 OR sent_at > received_at + ?",
        (_MAX_CLOCK_SKEW_MS,),
    )
    conn.execute("DROP INDEX IF EXISTS messages_by_peer")  # conversations are ordered by arrival (seq) now
    conn.execute("CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, next_attempt_at)")
    # v2 -> v3: inbox_failures is folded into the quarantine, which also keeps the envelope (item 4).
    if "inbox_failures" in _tables(conn):
        conn.execute(
            "INSERT OR IGNORE INTO quarantine(topic, cursor, error, at, payload) "
            "SELECT topic, cursor, error, at, NULL FROM inbox_failures"
        )
        conn.execute("DROP TABLE inbox_failures")
    # Prekey rotation (issue 8): when a signed or last-resort prekey was replaced, or a one-time
    # prekey handed out. Before, nothing set `uploaded`; one-time keys were uploaded right after
    # being made. Same transaction: the column never exists without the update.
    # Issue 9: the log length a publish answer is compared with (PROTOCOL.md §6.5).
    # Issue 9: a message whose every envelope to the recipient was dropped is not "sent" (§6.2 step 4).
    if "own" not in _columns(conn, "outbox_envelopes"):
        conn.execute("ALTER TABLE outbox_envelopes ADD COLUMN own INTEGER NOT NULL DEFAULT 0")
    if "log_length" not in _columns(conn, "peer_fetches"):
        conn.execute("ALTER TABLE peer_fetches ADD COLUMN log_length INTEGER")
    # Issue 9: one caller delivers a message at a time, across processes too (a lease on the outbox row).
    if "lease_owner" not in _columns(conn, "outbox"):
        conn.execute("ALTER TABLE outbox ADD COLUMN lease_owner TEXT")
        conn.execute("ALTER TABLE outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0")
    # Issue 12 (schema 3): content types (PROTOCOL.md §6.7). The new tables come from _SCHEMA.
    have = _columns(conn, "messages")
    for column, decl in (
        ("kind", "TEXT NOT NULL DEFAULT 'text'"),
        ("content_type", "TEXT NOT NULL DEFAULT 'text'"),
        ("extra", "BLOB"),
        ("reply_to", "TEXT"),
        ("edited_at", "INTEGER"),
        ("deleted", "INTEGER NOT NULL DEFAULT 0"),
        ("read_at", "INTEGER"),
    ):
        if column not in have:
            conn.execute(f"ALTER TABLE messages ADD COLUMN {column} {decl}")
    conn.execute("CREATE INDEX IF NOT EXISTS messages_by_kind ON messages(peer, kind, seq)")
    if "retired_at" not in _columns(conn, "prekeys"):
        conn.execute("ALTER TABLE prekeys ADD COLUMN retired_at INTEGER")
        conn.execute("UPDATE prekeys SET uploaded = 1 WHERE kind IN ('x25519-otpk', 'mlkem768-otpk')")


class StoreError(Exception):
    """The local database is unusable (corrupt, locked for too long, newer schema)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: One writer lock per database file in this process (resolved path → lock): see :meth:`Store.write`.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _WRITERS_LOCK:
        lock = _WRITERS.get(key)
        if lock is None:
            lock = _WRITERS[key] = threading.RLock()
        return lock


class _Held:
    """A thread's connection, kept in that thread's ``threading.local``: when the thread ends its
    locals go, this goes with them, and the finalizer closes the connection. A server that starts a
    thread per client connection (``parley run``'s local API) would otherwise keep two descriptors
    and a page cache open for every client it ever had."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


def _close_held(conn: sqlite3.Connection, closers: set[weakref.finalize], lock: threading.RLock) -> None:
    """The finalizer of a thread's connection: its thread ended, its store was dropped, or
    :meth:`Store.close` was called."""
    with contextlib.suppress(Exception):
        conn.close()
    with lock:
        for dead in [f for f in closers if not f.alive]:
            closers.discard(dead)


class Store:
    """One SQLite database; a connection per thread (closed when the thread ends); explicit write
    transactions."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self._busy = busy_timeout_ms
        self._local = threading.local()
        self._all: set[weakref.finalize] = set()  # one per open connection; calling it closes the connection
        self._lock = threading.RLock()  # re-entrant: a finalizer may run inside _conn's hold of it
        self._writer = _writer_lock(self.path)
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer Parley (schema {version})")
        try:
            conn.executescript(_SCHEMA)  # idempotent; executescript commits on its own
            conn.execute("BEGIN IMMEDIATE")  # two processes opening an old file migrate it once
            try:
                _migrate(conn)
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot initialise {self.path}: {exc}") from None

    def _conn(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is not None:
            return held.conn
        old = os.umask(0o077)
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy / 1000, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        finally:
            os.umask(old)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        held = _Held(conn)
        with self._lock:
            # The finalizer holds the set and the lock, not the store: a store nobody closes is still
            # collected, and its connections close with it.
            self._all.add(weakref.finalize(held, _close_held, conn, self._all, self._lock))
        self._local.held = held
        return conn

    def open_connections(self) -> int:
        """How many connections this store holds open (one per live thread that used it)."""
        with self._lock:
            return sum(1 for f in self._all if f.alive)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on success, rolled back on any exception.

        Threads of this process take turns on a lock per database file before BEGIN IMMEDIATE: a
        waiting thread is woken the moment the writer commits. Without it, SQLite's busy handler
        makes every loser sleep 1, 2, 5 … 100 ms between tries, and under many concurrent senders
        most of a send was spent asleep there (bench/e2e_latency.py, issue 13). Other processes
        (the CLI next to the daemon) still meet the busy timeout, as before.
        """
        if not self._writer.acquire(timeout=self._busy / 1000):
            raise StoreError(f"database busy: no write turn within {self._busy} ms")
        try:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"database busy: {exc}") from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
        finally:
            self._writer.release()

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            closers = list(self._all)
        for closer in closers:
            closer()
        self._local = threading.local()

    # --- meta ------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, c: sqlite3.Connection, key: str, value: bytes) -> None:
        c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
