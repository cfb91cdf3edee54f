"""PostgreSQL backend of the relay :class:`~bridge.relay.storage.Storage` (DESIGN.md "Relay";
docs/PROTOCOL.md §7 "Storage and several relay nodes").

Several relay nodes may share one database:

* **Schema migrations** — a ``parley_schema`` table records applied versions; numbered migrations
  are applied at open in one transaction under a transaction-scoped advisory lock, so nodes that
  start at the same time apply each migration exactly once.
* **Cursors in commit order** — a cursor is taken from the single-row ``parley_cursor`` counter
  in the same statement (and so the same transaction) that inserts the envelope. The counter's
  row lock is held until commit, so a publish cannot obtain cursor ``n + 1`` before the
  transaction holding ``n`` is visible: a reader that has seen cursor ``n`` can never later find a
  committed envelope with a smaller cursor, so ``after=<cursor>`` never skips anything.
* **Wake-ups across nodes** — each publish issues ``NOTIFY`` (delivered at commit) on a channel
  named after the database and schema; every node runs one ``LISTEN`` connection and wakes its
  local waiters. :meth:`PostgresStorage.wait` also re-checks the database when its timeout
  passes and after the listener reconnects, so a lost notification only delays delivery.
* **One-time prekeys** are taken with ``DELETE … WHERE key_id = (SELECT … FOR UPDATE SKIP LOCKED)
  RETURNING``: concurrent claims on any node never receive the same key.
* **Retention** deletes in small batches, each its own short transaction, so publishes (which
  touch only new rows and the counter) are never blocked behind a long delete.
* **Auth state** (single-use challenges, token hashes) lives in tables, so a token issued by one
  node is accepted by every node and a challenge can be used once across all of them.
* **Identity appends** take a per-address advisory transaction lock (appends to one address
  serialize across nodes; other addresses never wait for it) and update the installation index
  from the new record only. ``iid_bindings`` holds each (installation id, address) binding; a
  per-installation advisory lock, taken after the address's, makes "is this id bound elsewhere?"
  and the new binding atomic across nodes (two unconsented bindings at once: one winner).
* **Relay lists** (protocol 1.1, migration 4): ``relay_lists`` holds each installation's newest
  list. A store takes the installation's advisory lock (the one a revocation holds while it ends
  a binding), so "is it still bound?" and the store are atomic against revocations on any node.
* **Per-inbox quota**: ``topic_usage`` holds each topic's envelope count and bytes; a publish
  increments it with a conditional upsert in the same statement that takes the cursor, so the
  quota holds across nodes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

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

__all__ = ["PostgresStorage", "SCHEMA_VERSION", "MIGRATIONS"]

_KIND_X25519 = 0
_KIND_MLKEM = 1
_MIGRATION_LOCK = 0x70617273_6C657901  # "parsley\x01": advisory lock key for migrations
_EXPIRE_BATCH = 500
_MAX_LATEST = 100_000
_CONNECT_TIMEOUT = 5

#: Numbered migrations, applied in order, each at most once per database schema.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE identity (
    address   TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    record_id TEXT   NOT NULL,
    record    BYTEA  NOT NULL,
    PRIMARY KEY (address, seq),
    UNIQUE (address, record_id)
);
CREATE TABLE installations (
    iid          TEXT  NOT NULL,
    address      TEXT  NOT NULL,
    signing_pub  BYTEA NOT NULL,
    identity_pub BYTEA NOT NULL,
    PRIMARY KEY (iid, address)
);
CREATE INDEX installations_address ON installations (address);
CREATE TABLE prekeys (
    iid       TEXT PRIMARY KEY,
    issued_at BIGINT NOT NULL,
    spk       BYTEA  NOT NULL,
    pq_lrpk   BYTEA
);
CREATE TABLE one_time_prekeys (
    iid    TEXT     NOT NULL,
    kind   SMALLINT NOT NULL,
    key_id BIGINT   NOT NULL,
    key    BYTEA    NOT NULL,
    PRIMARY KEY (iid, kind, key_id)
);
CREATE TABLE claimed_prekeys (
    iid    TEXT     NOT NULL,
    kind   SMALLINT NOT NULL,
    key_id BIGINT   NOT NULL,
    PRIMARY KEY (iid, kind, key_id)
);
CREATE TABLE parley_cursor (
    id    SMALLINT PRIMARY KEY CHECK (id = 1),
    value BIGINT   NOT NULL
);
INSERT INTO parley_cursor (id, value) VALUES (1, 0);
CREATE TABLE envelopes (
    cursor      BIGINT PRIMARY KEY,
    topic       TEXT   NOT NULL,
    payload     BYTEA  NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX envelopes_topic_cursor ON envelopes (topic, cursor);
CREATE INDEX envelopes_received_at ON envelopes (received_at);
CREATE TABLE auth_challenges (
    challenge  BYTEA PRIMARY KEY,
    iid        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_challenges_expires ON auth_challenges (expires_at);
CREATE TABLE auth_tokens (
    token_hash BYTEA PRIMARY KEY,
    iid        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_tokens_expires ON auth_tokens (expires_at);
""",
    ),
    (
        2,
        """
CREATE TABLE iid_bindings (
    iid     TEXT    NOT NULL,
    address TEXT    NOT NULL,
    revoked BOOLEAN NOT NULL,
    PRIMARY KEY (iid, address)
);
CREATE TABLE topic_usage (
    topic TEXT   PRIMARY KEY,
    n     BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
""",
    ),
    (
        3,
        # k-anonymous identity lookups (PROTOCOL.md §7 "Identity buckets"): the bucket of every address,
        # kept by a trigger so the append path is untouched, and filled for the logs already stored.
        """
CREATE TABLE IF NOT EXISTS identity_buckets (
    bucket  TEXT COLLATE "C" NOT NULL,
    address TEXT PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS identity_buckets_bucket ON identity_buckets (bucket);
CREATE OR REPLACE FUNCTION parley_identity_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO identity_buckets (bucket, address)
    VALUES (encode(sha256(convert_to(NEW.address, 'UTF8')), 'hex'), NEW.address)
    ON CONFLICT (address) DO NOTHING;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS identity_bucket ON identity;
CREATE TRIGGER identity_bucket AFTER INSERT ON identity FOR EACH ROW EXECUTE FUNCTION parley_identity_bucket();
INSERT INTO identity_buckets (bucket, address)
SELECT DISTINCT encode(sha256(convert_to(address, 'UTF8')), 'hex'), address FROM identity
ON CONFLICT (address) DO NOTHING;
""",
    ),
    (
        4,
        # relay lists (protocol 1.1): the newest signed list of each installation, served in identity answers
        """
CREATE TABLE IF NOT EXISTS relay_lists (
    iid     TEXT   PRIMARY KEY,
    address TEXT   NOT NULL,
    version BIGINT NOT NULL,
    record  BYTEA  NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_lists_address ON relay_lists (address);
""",
    ),
    (
        5,
        # blobs (protocol 1.2): attachment ciphertexts in 256 KiB chunk rows, with a TTL
        """
CREATE TABLE IF NOT EXISTS blobs (
    iid        TEXT     NOT NULL,
    blob_id    TEXT     NOT NULL,
    size       BIGINT   NOT NULL,
    complete   BOOLEAN  NOT NULL DEFAULT FALSE,
    created_at BIGINT   NOT NULL,
    expires_at BIGINT   NOT NULL,
    PRIMARY KEY (iid, blob_id)
);
CREATE INDEX IF NOT EXISTS blobs_expires ON blobs (expires_at);
CREATE INDEX IF NOT EXISTS blobs_created ON blobs (complete, created_at);
CREATE TABLE IF NOT EXISTS blob_chunks (
    iid     TEXT    NOT NULL,
    blob_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    data    BYTEA   NOT NULL,
    PRIMARY KEY (iid, blob_id, seq)
);
""",
    ),
    (
        6,
        # backups (protocol 1.3): vaults of named objects in 256 KiB chunk rows, request nonces
        """
CREATE TABLE IF NOT EXISTS backup_vaults (
    vault      TEXT   PRIMARY KEY,
    created_at BIGINT NOT NULL,
    touched_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS backup_vaults_touched ON backup_vaults (touched_at);
CREATE TABLE IF NOT EXISTS backup_objects (
    vault      TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    upload     TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vault, name)
);
CREATE TABLE IF NOT EXISTS backup_uploads (
    upload     TEXT   PRIMARY KEY,
    vault      TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS backup_uploads_vault ON backup_uploads (vault);
CREATE INDEX IF NOT EXISTS backup_uploads_created ON backup_uploads (created_at);
CREATE TABLE IF NOT EXISTS backup_nonces (
    vault      TEXT   NOT NULL,
    nonce      BYTEA  NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (vault, nonce)
);
CREATE INDEX IF NOT EXISTS backup_nonces_expires ON backup_nonces (expires_at);
CREATE TABLE IF NOT EXISTS backup_chunks (
    upload TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    data   BYTEA   NOT NULL,
    PRIMARY KEY (upload, seq)
);
""",
    ),
)

#: The newest schema version this code knows.
SCHEMA_VERSION = MIGRATIONS[-1][0]

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


class _Deadlock(Exception):
    """PostgreSQL rolled a transaction back to break a deadlock (see ``_tx(retry_deadlock=True)``)."""


def _translate(exc: psycopg.Error) -> StorageError:
    """Map a psycopg error to the Storage errors (503 for anything transient)."""
    transient = (
        psycopg.OperationalError,
        pg_errors.QueryCanceled,
        pg_errors.LockNotAvailable,
        pg_errors.AdminShutdown,
        pg_errors.CannotConnectNow,
        pg_errors.TooManyConnections,
        pg_errors.SerializationFailure,
        pg_errors.DeadlockDetected,
        pg_errors.DiskFull,
        pg_errors.ReadOnlySqlTransaction,
    )
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, transient):
        return StorageUnavailable(f"PostgreSQL is unavailable: {text}")
    return StorageError(f"PostgreSQL error: {text}")


class _Pool:
    """A small thread-safe connection pool: at most ``max_size`` connections, autocommit mode.

    A connection is used by one thread at a time; broken connections (or ones left inside a
    transaction) are closed instead of being returned.
    """

    def __init__(self, conninfo: str, max_size: int, timeout: float) -> None:
        self.conninfo = conninfo
        self.timeout = timeout
        self._sem = threading.BoundedSemaphore(max_size)
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self.closed = False

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection with a statement timeout.

        Raises:
            StorageUnavailable: the server cannot be reached.
        """
        try:
            conn = psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT, application_name="parley-relay"
            )
            conn.execute("SET statement_timeout = '30s'")
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a connection.

        Raises:
            StorageUnavailable: no connection freed up within the timeout, or the server is down.
            StorageError: the pool is closed.
        """
        if not self._sem.acquire(timeout=self.timeout):
            raise StorageUnavailable("all database connections are busy")
        try:
            with self._lock:
                if self.closed:
                    raise StorageError("storage is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self.connect()
            try:
                yield conn
            finally:
                reusable = not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
                with self._lock:
                    if reusable and not self.closed:
                        self._idle.append(conn)
                        conn = None  # type: ignore[assignment]
                if conn is not None:
                    conn.close()
        finally:
            self._sem.release()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            conns, self._idle = self._idle, []
        for conn in conns:
            try:
                conn.close()
            except psycopg.Error:
                pass


class PostgresStorage(Storage):
    """Relay storage in PostgreSQL (a ``postgresql://`` or ``postgres://`` URL, libpq syntax).

    ``max_connections`` bounds the pool (plus one ``LISTEN`` connection per node). A
    ``search_path`` given in the URL (``?options=-csearch_path%3Dmyschema``) selects the schema.

    Raises:
        StorageUnavailable: the server cannot be reached.
        StorageError: the schema is from a newer version, or a migration failed.
    """

    def __init__(self, url: str, *, max_connections: int = 10, pool_timeout: float = 10.0) -> None:
        self._url = url
        self._pool = _Pool(url, max(1, max_connections), pool_timeout)
        self._cond_lock = threading.Lock()
        self._cond = threading.Condition(self._cond_lock)
        # Per-topic wake-ups, as in the SQLite backend: a NOTIFY wakes that topic's waiters only.
        # (One relay-wide notify_all woke every idle subscriber per publish: 38 deliveries/s at 1,000.)
        self._waiting: dict[str, list[Any]] = {}  # topic -> [Condition on _cond_lock, waiter count]
        self._latest: dict[str, int] = {}
        self._generation = 0  # bumped whenever the LISTEN connection comes up or goes down
        self._local = threading.local()  # per thread: the last read of a topic (see wait)
        self._closed = False
        self._channel = ""
        self.listening = threading.Event()  # set while the LISTEN connection is up (tests)
        try:
            with self._pool.connection() as conn:
                self._migrate(conn)
                db, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()  # type: ignore[misc]
        except psycopg.Error as exc:
            self._pool.close()
            raise _translate(exc) from None
        except BaseException:
            self._pool.close()
            raise
        digest = hashlib.sha256(f"{db}\x00{schema}".encode()).hexdigest()[:24]
        self._channel = f"parley_env_{digest}"
        self._listener = threading.Thread(target=self._listen_loop, name="parley-relay-pg-listen", daemon=True)
        self._listener.start()

    # ---- schema ---------------------------------------------------------------------------

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS parley_schema (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM parley_schema").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StorageError(f"database schema {current} is newer than this relay ({SCHEMA_VERSION})")
            for version, sql in MIGRATIONS:
                if version > current:
                    conn.execute(sql)  # type: ignore[arg-type]
                    if version == 2 and current >= 1:
                        PostgresStorage._backfill_2(conn)
                    conn.execute(
                        "INSERT INTO parley_schema (version, applied_at) VALUES (%s, %s)", (version, int(time.time()))
                    )

    @staticmethod
    def _backfill_2(conn: psycopg.Connection[Any]) -> None:
        """Bindings and quota usage from the data of a schema-1 database (inside the migration)."""
        rows = conn.execute("SELECT address, record FROM identity ORDER BY address, seq").fetchall()
        bindings = bindings_from_logs((str(a), bytes(r)) for a, r in rows)
        conn.execute("DELETE FROM installations")
        for (iid, address), (revoked, spub, xpub) in bindings.items():
            conn.execute("INSERT INTO iid_bindings (iid, address, revoked) VALUES (%s, %s, %s)", (iid, address, revoked))
            if not revoked and spub is not None and xpub is not None:
                conn.execute(
                    "INSERT INTO installations (iid, address, signing_pub, identity_pub) VALUES (%s, %s, %s, %s)",
                    (iid, address, spub, xpub),
                )
        for table in ("prekeys", "one_time_prekeys", "claimed_prekeys"):
            conn.execute(f"DELETE FROM {table} WHERE iid NOT IN (SELECT iid FROM installations)")  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO topic_usage (topic, n, bytes) SELECT topic, COUNT(*), SUM(octet_length(payload)) FROM envelopes GROUP BY topic"
        )

    # ---- helpers --------------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, retry_deadlock: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on a pooled connection. ``retry_deadlock``: a deadlock raises
        :class:`_Deadlock` (the transaction is rolled back; the caller tries again)."""
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield conn
            except pg_errors.DeadlockDetected as exc:
                if retry_deadlock:
                    raise _Deadlock() from None
                raise _translate(exc) from None
            except psycopg.Error as exc:
                raise _translate(exc) from None

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            try:
                return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
            except psycopg.Error as exc:
                raise _translate(exc) from None

    def _exec(self, sql: str, params: tuple[object, ...] = ()) -> int:
        with self._pool.connection() as conn:
            try:
                return int(conn.execute(sql, params).rowcount)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                raise _translate(exc) from None

    # ---- identity -------------------------------------------------------------------------

    def append_identity(
        self, address: str, record_id: str, record: bytes, entry: IdentityEntry, *, max_records: int, consent: bool = False
    ) -> tuple[int, bool]:
        iid = entry.installation_id
        with self._tx() as conn:
            # serialize appends to one address across nodes (seq = max + 1); other addresses proceed
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("identity:" + address,))
            row = conn.execute(
                "SELECT seq FROM identity WHERE address = %s AND record_id = %s", (address, record_id)
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            # then the installation's bindings (always in this order: no deadlock between the two)
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("installation:" + iid,))
            bound = {str(a): bool(r) for a, r in conn.execute("SELECT address, revoked FROM iid_bindings WHERE iid = %s", (iid,))}
            if address not in bound and bound and not consent:
                raise InstallationBound(iid, sorted(bound)[0])
            seq_row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM identity WHERE address = %s", (address,)
            ).fetchone()
            seq = int(seq_row[0]) if seq_row else 1
            if seq > max_records:
                raise LogFull(f"the identity log of {address} holds {max_records} records, the most a log may hold")
            conn.execute(
                "INSERT INTO identity (address, seq, record_id, record) VALUES (%s, %s, %s, %s)",
                (address, seq, record_id, bytes(record)),
            )
            if entry.action == "revoke":
                conn.execute(
                    "INSERT INTO iid_bindings (iid, address, revoked) VALUES (%s, %s, TRUE) "
                    "ON CONFLICT (iid, address) DO UPDATE SET revoked = TRUE",
                    (iid, address),
                )
                conn.execute("DELETE FROM installations WHERE iid = %s AND address = %s", (iid, address))
                conn.execute("DELETE FROM relay_lists WHERE iid = %s AND address = %s", (iid, address))
                if conn.execute("SELECT 1 FROM installations WHERE iid = %s LIMIT 1", (iid,)).fetchone() is None:
                    for table in ("prekeys", "one_time_prekeys", "claimed_prekeys", "relay_lists"):
                        conn.execute(f"DELETE FROM {table} WHERE iid = %s", (iid,))  # type: ignore[arg-type]
            else:
                if address not in bound:
                    conn.execute("INSERT INTO iid_bindings (iid, address, revoked) VALUES (%s, %s, FALSE)", (iid, address))
                if not bound.get(address, False) and entry.signing_pub is not None and entry.identity_pub is not None:
                    conn.execute(
                        "INSERT INTO installations (iid, address, signing_pub, identity_pub) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (iid, address, bytes(entry.signing_pub), bytes(entry.identity_pub)),
                    )
            return seq, True

    def identity_records(self, address: str) -> list[bytes]:
        return [bytes(r[0]) for r in self._rows("SELECT record FROM identity WHERE address = %s ORDER BY seq", (address,))]

    def identity_bucket(self, prefix: str, *, max_addresses: int, max_records: int) -> dict[str, list[bytes]] | None:
        # hex digits sort below 'g' in the "C" collation: [prefix, prefix || 'g') is exactly the bucket
        addresses = [
            str(r[0])
            for r in self._rows(
                "SELECT address FROM identity_buckets WHERE bucket >= %s AND bucket < %s ORDER BY address LIMIT %s",
                (prefix, prefix + "g", max_addresses + 1),
            )
        ]
        if len(addresses) > max_addresses:
            return None
        out: dict[str, list[bytes]] = {a: [] for a in addresses}
        if not addresses:
            return out
        total = int(self._rows("SELECT COUNT(*) FROM identity WHERE address = ANY(%s)", (addresses,))[0][0])
        if total > max_records:
            return None
        for address, record in self._rows(
            "SELECT address, record FROM identity WHERE address = ANY(%s) ORDER BY address, seq", (addresses,)
        ):
            out[str(address)].append(bytes(record))
        return out

    def installation(self, installation_id: str) -> InstallationKeys | None:
        rows = self._rows(
            "SELECT address, signing_pub, identity_pub FROM installations WHERE iid = %s ORDER BY address LIMIT 1",
            (installation_id,),
        )
        if not rows:
            return None
        address, signing_pub, identity_pub = rows[0]
        return InstallationKeys(installation_id, str(address), bytes(signing_pub), bytes(identity_pub))

    def installation_for(self, installation_id: str, address: str) -> InstallationKeys | None:
        rows = self._rows(
            "SELECT signing_pub, identity_pub FROM installations WHERE iid = %s AND address = %s", (installation_id, address)
        )
        if not rows:
            return None
        return InstallationKeys(installation_id, address, bytes(rows[0][0]), bytes(rows[0][1]))

    def identity_log_lengths(self, installation_id: str) -> dict[str, int]:
        rows = self._rows(
            "SELECT i.address, (SELECT COALESCE(MAX(d.seq), 0) FROM identity d WHERE d.address = i.address) "
            "FROM installations i WHERE i.iid = %s",
            (installation_id,),
        )
        return {str(address): int(n) for address, n in rows}

    # ---- relay lists ----------------------------------------------------------------------

    def put_relay_list(self, installation_id: str, address: str, version: int, record: bytes) -> bool:
        with self._tx() as conn:
            # the lock a revocation of this installation holds while it ends a binding (append_identity):
            # after it, the binding check below sees every committed revocation, and none can commit
            # before this transaction does
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("installation:" + installation_id,))
            if conn.execute(
                "SELECT 1 FROM installations WHERE iid = %s AND address = %s", (installation_id, address)
            ).fetchone() is None:
                raise InstallationNotActive(f"installation {installation_id} is not active in the identity log of {address}")
            row = conn.execute("SELECT version, record FROM relay_lists WHERE iid = %s", (installation_id,)).fetchone()
            if not relay_list_replaces(None if row is None else (int(row[0]), bytes(row[1])), version, record):
                return False
            conn.execute(
                "INSERT INTO relay_lists (iid, address, version, record) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (iid) DO UPDATE SET address = excluded.address, version = excluded.version, record = excluded.record",
                (installation_id, address, int(version), bytes(record)),
            )
            return True

    def relay_lists(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {str(a): [] for a in addresses}
        if not out:
            return out
        for address, record in self._rows(
            "SELECT r.address, r.record FROM relay_lists r JOIN installations i ON i.iid = r.iid AND i.address = r.address "
            "WHERE r.address = ANY(%s) ORDER BY r.address, r.iid COLLATE \"C\"",
            (list(out),),
        ):
            out[str(address)].append(bytes(record))
        return out

    # ---- prekeys --------------------------------------------------------------------------

    def put_prekeys(self, installation_id: str, prekeys: StoredPrekeys, *, max_one_time: int) -> tuple[int, int]:
        with self._tx() as conn:
            # the upsert locks the installation's prekeys row: uploads for one installation serialize
            row = conn.execute(
                "INSERT INTO prekeys AS p (iid, issued_at, spk, pq_lrpk) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (iid) DO UPDATE SET issued_at = excluded.issued_at, spk = excluded.spk, "
                "pq_lrpk = COALESCE(excluded.pq_lrpk, p.pq_lrpk) WHERE p.issued_at <= excluded.issued_at "
                "RETURNING issued_at",
                (
                    installation_id,
                    int(prekeys.issued_at),
                    bytes(prekeys.spk),
                    None if prekeys.pq_lrpk is None else bytes(prekeys.pq_lrpk),
                ),
            ).fetchone()
            if row is None:
                stored = conn.execute("SELECT issued_at FROM prekeys WHERE iid = %s", (installation_id,)).fetchone()
                raise StaleUpload(
                    f"upload issued at {prekeys.issued_at} is older than the stored one ({stored[0] if stored else '?'})"
                )
            counts = []
            for kind, keys in ((_KIND_X25519, prekeys.otpks), (_KIND_MLKEM, prekeys.pq_otpks)):
                n_row = conn.execute(
                    "SELECT COUNT(*) FROM one_time_prekeys WHERE iid = %s AND kind = %s", (installation_id, kind)
                ).fetchone()
                n = int(n_row[0]) if n_row else 0
                room = max_one_time - n
                if room > 0 and keys:
                    ids = sorted(keys)
                    cur = conn.execute(
                        "INSERT INTO one_time_prekeys (iid, kind, key_id, key) "
                        "SELECT %(iid)s, %(kind)s, k.id, k.key FROM unnest(%(ids)s::bigint[], %(keys)s::bytea[]) AS k(id, key) "
                        "WHERE NOT EXISTS (SELECT 1 FROM claimed_prekeys c WHERE c.iid = %(iid)s AND c.kind = %(kind)s AND c.key_id = k.id) "
                        "AND NOT EXISTS (SELECT 1 FROM one_time_prekeys o WHERE o.iid = %(iid)s AND o.kind = %(kind)s AND o.key_id = k.id) "
                        "ORDER BY k.id LIMIT %(room)s ON CONFLICT DO NOTHING",
                        {"iid": installation_id, "kind": kind, "ids": ids, "keys": [bytes(keys[i]) for i in ids], "room": room},
                    )
                    n += int(cur.rowcount)
                counts.append(n)
            return counts[0], counts[1]

    def claim_prekeys(self, installation_id: str) -> ClaimedPrekeys | None:
        result: ClaimedPrekeys | None = None
        with self._tx() as conn:
            row = conn.execute("SELECT spk, pq_lrpk FROM prekeys WHERE iid = %s", (installation_id,)).fetchone()
            if row is None:
                return None
            spk, lrpk = bytes(row[0]), None if row[1] is None else bytes(row[1])
            taken: list[bytes | None] = []
            for kind in (_KIND_X25519, _KIND_MLKEM):
                one = conn.execute(
                    "DELETE FROM one_time_prekeys WHERE iid = %(iid)s AND kind = %(kind)s AND key_id = ("
                    "SELECT key_id FROM one_time_prekeys WHERE iid = %(iid)s AND kind = %(kind)s "
                    "ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_id, key",
                    {"iid": installation_id, "kind": kind},
                ).fetchone()
                if one is None:
                    taken.append(None)
                    continue
                conn.execute(  # tombstone: a replayed upload cannot bring this key back
                    "INSERT INTO claimed_prekeys (iid, kind, key_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (installation_id, kind, int(one[0])),
                )
                taken.append(bytes(one[1]))
            pq = taken[1] if taken[1] is not None else lrpk
            if pq is None:
                raise psycopg.Rollback()  # nothing to encapsulate to: take nothing
            result = ClaimedPrekeys(spk=spk, otpk=taken[0], pqpk=pq)
        return result

    def prekey_counts(self, installation_id: str) -> tuple[int, int]:
        rows = self._rows(
            "SELECT kind, COUNT(*) FROM one_time_prekeys WHERE iid = %s GROUP BY kind", (installation_id,)
        )
        by_kind = {int(k): int(n) for k, n in rows}
        return by_kind.get(_KIND_X25519, 0), by_kind.get(_KIND_MLKEM, 0)

    # ---- envelopes ------------------------------------------------------------------------

    # One statement per envelope. Every publish, single or batch, on every node, locks its topics'
    # usage rows first (a batch: in topic order) and the cursor counter last, so no two wait on each
    # other in a cycle. The usage row is incremented only while it stays within the quota (so
    # concurrent publishes to one topic count one by one). The counter row stays locked until
    # commit, so cursors become visible in cursor order on every node; NOTIFY is delivered at commit.
    _PUBLISH = (
        "WITH u AS (INSERT INTO topic_usage AS t (topic, n, bytes) VALUES (%(topic)s, 1, %(size)s) "
        "ON CONFLICT (topic) DO UPDATE SET n = t.n + 1, bytes = t.bytes + excluded.bytes "
        "WHERE t.n + 1 <= %(max_n)s AND t.bytes + excluded.bytes <= %(max_b)s RETURNING 1), "
        "c AS (UPDATE parley_cursor SET value = value + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM u) RETURNING value), "
        "ins AS (INSERT INTO envelopes (cursor, topic, payload, received_at) "
        "SELECT c.value, %(topic)s, %(payload)s, %(now)s FROM c RETURNING cursor, topic) "
        "SELECT cursor, pg_notify(%(channel)s, topic || ' ' || cursor::text) FROM ins"
    )

    def publish(self, topic: str, payload: bytes, now: int, *, max_count: int | None = None, max_bytes: int | None = None) -> int:
        cursors = self.publish_many([(topic, payload)], now, max_count=max_count, max_bytes=max_bytes)
        if not cursors:
            raise InboxFull(f"the inbox quota is full (at most {max_count} envelopes, {max_bytes} bytes)")
        return cursors[0]

    def publish_many(
        self, items: Sequence[tuple[str, bytes]], now: int, *, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[int]:
        max_n = 2**62 if max_count is None else int(max_count)
        max_b = 2**62 if max_bytes is None else int(max_bytes)
        if len(items) == 1:
            return self._publish_one(items[0][0], items[0][1], now, max_n, max_b)
        if not items:
            return []
        # The prefix in one transaction and two round trips, whatever the batch size (group commit:
        # one WAL flush for the batch). The usage rows of the batch's topics are locked first, in
        # topic order (an upsert that creates missing ones at 0, so a topic new to the relay is
        # locked too), then the counter, as a single publish does; they stay exact until commit.
        # An error rolls back the whole batch.
        for attempt in range(3):
            try:
                return self._publish_batch(items, now, max_n, max_b)
            except _Deadlock:
                # Retention on another node updates several usage rows in its own order: PostgreSQL
                # broke the cycle by rolling this batch back, whole; it can be tried again.
                if attempt == 2:
                    raise StorageUnavailable("PostgreSQL is unavailable: deadlock detected, three times") from None
        raise AssertionError("unreachable")

    def _publish_batch(self, items: Sequence[tuple[str, bytes]], now: int, max_n: int, max_b: int) -> list[int]:
        names = sorted({topic for topic, _ in items})
        with self._tx(retry_deadlock=True) as conn:
            with conn.pipeline():
                c2 = conn.execute(
                    "INSERT INTO topic_usage AS u (topic, n, bytes) SELECT t, 0, 0 FROM unnest(%s::text[]) WITH ORDINALITY AS x(t, i) "
                    "ORDER BY x.i ON CONFLICT (topic) DO UPDATE SET n = u.n RETURNING topic, n, bytes",
                    (names,),
                )
                c1 = conn.execute("SELECT value FROM parley_cursor WHERE id = 1 FOR UPDATE")
            counter = c1.fetchone()
            if counter is None:
                raise StorageError("the cursor counter is missing")
            base = int(counter[0])
            usage = {str(t): (int(n), int(b)) for t, n, b in c2.fetchall()}
            taken: list[tuple[str, bytes]] = []
            for topic, payload in items:
                n, b = usage.get(topic, (0, 0))
                if n + 1 > max_n or b + len(payload) > max_b:
                    break
                usage[topic] = (n + 1, b + len(payload))
                taken.append((topic, bytes(payload)))
            if not taken:
                return []
            added: dict[str, list[int]] = {}
            latest: dict[str, int] = {}
            for i, (topic, payload) in enumerate(taken, 1):
                a = added.setdefault(topic, [0, 0])
                a[0] += 1
                a[1] += len(payload)
                latest[topic] = base + i
            with conn.pipeline():
                conn.execute(
                    "INSERT INTO envelopes (cursor, topic, payload, received_at) "
                    "SELECT %s + x.i, x.t, x.p, %s FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS x(t, p, i)",
                    (base, int(now), [t for t, _ in taken], [p for _, p in taken]),
                )
                conn.execute("UPDATE parley_cursor SET value = %s WHERE id = 1", (base + len(taken),))
                conn.execute(
                    "INSERT INTO topic_usage AS u (topic, n, bytes) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
                    "ON CONFLICT (topic) DO UPDATE SET n = u.n + excluded.n, bytes = u.bytes + excluded.bytes",
                    (list(added), [a[0] for a in added.values()], [a[1] for a in added.values()]),
                )
                conn.execute(
                    "SELECT pg_notify(%s, x.t || ' ' || x.c::text) FROM unnest(%s::text[], %s::bigint[]) AS x(t, c)",
                    (self._channel, list(latest), list(latest.values())),
                )
        for topic, cursor in latest.items():
            self._saw(topic, cursor)
        return list(range(base + 1, base + len(taken) + 1))

    def _publish_one(self, topic: str, payload: bytes, now: int, max_n: int, max_b: int) -> list[int]:
        """One envelope, one statement in autocommit: one round trip."""
        size = len(payload)
        if size > max_b or max_n < 1:
            return []
        rows = self._rows(
            self._PUBLISH,
            {"topic": topic, "size": size, "max_n": max_n, "max_b": max_b, "payload": bytes(payload), "now": int(now), "channel": self._channel},  # type: ignore[arg-type]
        )
        if not rows:
            if not self._rows("SELECT 1 FROM parley_cursor WHERE id = 1"):
                raise StorageError("the cursor counter is missing")
            return []
        cursor = int(rows[0][0])
        self._saw(topic, cursor)
        return [cursor]

    def _listen_generation(self) -> int | None:
        """The current listener generation if the LISTEN connection is up, else ``None``."""
        with self._cond:
            return self._generation if self.listening.is_set() else None

    def fetch(self, topic: str, after: int, limit: int) -> list[Envelope]:
        generation = self._listen_generation()
        rows = self._rows(
            "SELECT cursor, payload, received_at FROM envelopes WHERE topic = %s AND cursor > %s ORDER BY cursor LIMIT %s",
            (topic, int(after), int(limit)),
        )
        envs = [Envelope(int(c), topic, bytes(p), int(t)) for c, p, t in rows]
        complete = len(envs) < int(limit)
        self._local.read = (topic, envs[-1].cursor if envs else int(after), complete, generation)
        return envs

    def _has_after(self, topic: str, after: int) -> bool:
        generation = self._listen_generation()
        found = bool(self._rows("SELECT 1 FROM envelopes WHERE topic = %s AND cursor > %s LIMIT 1", (topic, int(after))))
        self._local.read = (topic, int(after), not found, generation)
        return found

    def _covered(self, topic: str, after: int, generation: int) -> bool:
        """Whether this thread's last read shows nothing above ``after`` was committed before a point
        since which the listener has been up without interruption: then every later commit on
        ``topic`` reaches :attr:`_latest` through NOTIFY and the database need not be asked."""
        read = getattr(self._local, "read", None)
        return (
            read is not None
            and read[0] == topic
            and read[1] <= after
            and read[2]
            and read[3] is not None
            and read[3] == generation
            and self.listening.is_set()
        )

    def _saw(self, topic: str, cursor: int) -> None:
        with self._cond:
            if cursor > self._latest.get(topic, 0):
                if len(self._latest) >= _MAX_LATEST and topic not in self._latest:
                    self._latest.clear()  # bounded memory: waiters re-check the database
                    self._generation += 1
                    self._wake_all()
                self._latest[topic] = cursor
            entry = self._waiting.get(topic)
            if entry is not None:
                entry[0].notify_all()

    def _wake_all(self) -> None:
        """Wake every waiter (generation change, close). Call with ``_cond`` held."""
        self._cond.notify_all()
        for entry in self._waiting.values():
            entry[0].notify_all()

    def wait(self, topic: str, after: int, timeout: float, wake: Wakeup | None = None) -> bool:
        """Wake on a NOTIFY from any node.

        The database is asked at entry and when the timeout passes, unless this thread's last
        :meth:`fetch` (or check) of ``topic`` already covers ``after`` and the LISTEN connection has
        been up since: an idle subscriber then costs no queries. Whenever the listener reconnects
        (notifications may have been lost) waiters re-check the database.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._cond:
                generation = self._generation
                if self._closed:
                    return False
                if self._latest.get(topic, 0) > after:
                    return True
            if not self._covered(topic, after, generation) and self._has_after(topic, after):
                return True
            with self._cond:
                entry = self._waiting.setdefault(topic, [threading.Condition(self._cond_lock), 0])
                entry[1] += 1
                if wake is not None:
                    wake.attach(entry[0])
                try:
                    while not self._closed and self._latest.get(topic, 0) <= after and self._generation == generation:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        if wake is not None and wake.is_set():
                            return False  # a client frame: the caller reads it and waits again
                        entry[0].wait(remaining)
                finally:
                    if wake is not None:
                        wake.attach(None)
                    entry[1] -= 1
                    if entry[1] == 0 and self._waiting.get(topic) is entry:
                        del self._waiting[topic]
                if self._closed:
                    return False
                if self._latest.get(topic, 0) > after:
                    return True
                timed_out = self._generation == generation
            if timed_out:
                return False if self._covered(topic, after, generation) else self._has_after(topic, after)

    def _listen_loop(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                conn = self._pool.connect()
            except StorageError:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            try:
                conn.execute(f"LISTEN {self._channel}")
                backoff = 0.1
                with self._cond:
                    self._generation += 1  # anything published while not listening: re-check
                    self.listening.set()
                    self._wake_all()
                while not self._closed:
                    for note in conn.notifies(timeout=0.25):
                        topic, _, cursor = note.payload.rpartition(" ")
                        if topic and cursor.isdigit():
                            self._saw(topic, int(cursor))
            except psycopg.Error:
                time.sleep(backoff)
            finally:
                with self._cond:
                    if self.listening.is_set():
                        self.listening.clear()
                        self._generation += 1
                        self._wake_all()
                try:
                    conn.close()
                except psycopg.Error:
                    pass

    def expire(self, before: int) -> int:
        """Delete in batches of a few hundred rows, each its own short transaction."""
        total = 0
        while True:
            rows = self._rows(
                "WITH d AS (DELETE FROM envelopes WHERE cursor IN (SELECT cursor FROM envelopes WHERE received_at < %s "
                "ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING topic, octet_length(payload) AS len), "
                "agg AS (SELECT topic, COUNT(*) AS n, SUM(len) AS b FROM d GROUP BY topic), "
                "upd AS (UPDATE topic_usage u SET n = u.n - agg.n, bytes = u.bytes - agg.b FROM agg WHERE u.topic = agg.topic) "
                "SELECT COUNT(*) FROM d",
                (int(before), _EXPIRE_BATCH),
            )
            n = int(rows[0][0])
            if n:
                self._exec("DELETE FROM topic_usage WHERE n <= 0")
            total += n
            if n < _EXPIRE_BATCH or self._closed:
                break
        if total:
            # a remembered "latest cursor" may now name a deleted envelope: forget them all, and
            # let waiters re-check the database (else wait() would keep answering True)
            with self._cond:
                self._latest.clear()
                self._generation += 1
                self._wake_all()
        return total

    # ---- blobs ----------------------------------------------------------------------------

    def blob_begin(self, installation_id: str, blob_id: str, size: int, *, now: int, expires_at: int, quota: int) -> None:
        with self._tx() as conn:
            # one reservation at a time per inbox, across nodes: the quota check and the insert are atomic
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("blobs:" + installation_id,))
            if conn.execute("SELECT 1 FROM blobs WHERE iid = %s AND blob_id = %s", (installation_id, blob_id)).fetchone():
                raise BlobExists(f"blob {blob_id} exists")
            row = conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE iid = %s", (installation_id,)).fetchone()
            used = int(row[0]) if row else 0
            if used + int(size) > quota:
                raise BlobQuota(f"the inbox's blobs use {used} bytes; {size} more exceed the quota of {quota}")
            conn.execute(
                "INSERT INTO blobs (iid, blob_id, size, complete, created_at, expires_at) VALUES (%s, %s, %s, FALSE, %s, %s)",
                (installation_id, blob_id, int(size), int(now), int(expires_at)),
            )

    def blob_put_chunk(self, installation_id: str, blob_id: str, seq: int, data: bytes) -> None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT complete FROM blobs WHERE iid = %s AND blob_id = %s FOR SHARE", (installation_id, blob_id)
            ).fetchone()
            if row is None or row[0]:
                raise StorageError("no upload in progress for this blob")
            conn.execute(
                "INSERT INTO blob_chunks (iid, blob_id, seq, data) VALUES (%s, %s, %s, %s)",
                (installation_id, blob_id, int(seq), bytes(data)),
            )

    def blob_commit(self, installation_id: str, blob_id: str) -> int:
        ok = False
        with self._tx() as conn:
            row = conn.execute(
                "SELECT size, complete FROM blobs WHERE iid = %s AND blob_id = %s FOR UPDATE", (installation_id, blob_id)
            ).fetchone()
            if row is None or row[1]:
                raise StorageError("no upload in progress for this blob")
            got = conn.execute(
                "SELECT COALESCE(SUM(octet_length(data)), 0) FROM blob_chunks WHERE iid = %s AND blob_id = %s",
                (installation_id, blob_id),
            ).fetchone()
            stored = int(got[0]) if got else 0
            if stored != int(row[0]):
                conn.execute("DELETE FROM blob_chunks WHERE iid = %s AND blob_id = %s", (installation_id, blob_id))
                conn.execute("DELETE FROM blobs WHERE iid = %s AND blob_id = %s", (installation_id, blob_id))
            else:
                conn.execute("UPDATE blobs SET complete = TRUE WHERE iid = %s AND blob_id = %s", (installation_id, blob_id))
                ok = True
        if not ok:
            raise StorageError(f"blob {blob_id}: {stored} bytes stored, {int(row[0])} declared")
        return int(row[0])

    def blob_abort(self, installation_id: str, blob_id: str) -> None:
        with self._tx() as conn:
            if conn.execute(
                "DELETE FROM blobs WHERE iid = %s AND blob_id = %s AND NOT complete RETURNING 1", (installation_id, blob_id)
            ).fetchone():
                conn.execute("DELETE FROM blob_chunks WHERE iid = %s AND blob_id = %s", (installation_id, blob_id))

    def blob_info(self, installation_id: str, blob_id: str, now: int) -> tuple[int, int] | None:
        rows = self._rows(
            "SELECT size, expires_at FROM blobs WHERE iid = %s AND blob_id = %s AND complete AND expires_at > %s",
            (installation_id, blob_id, int(now)),
        )
        return None if not rows else (int(rows[0][0]), int(rows[0][1]))

    def blob_chunk(self, installation_id: str, blob_id: str, seq: int) -> bytes | None:
        rows = self._rows(
            "SELECT data FROM blob_chunks WHERE iid = %s AND blob_id = %s AND seq = %s", (installation_id, blob_id, int(seq))
        )
        return None if not rows else bytes(rows[0][0])

    def blob_usage(self, installation_id: str) -> int:
        return int(self._rows("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE iid = %s", (installation_id,))[0][0])

    def expire_blobs(self, now: int, *, stale_before: int) -> int:
        total = 0
        while not self._closed:
            rows = self._rows(
                "SELECT iid, blob_id FROM blobs WHERE expires_at <= %s OR (NOT complete AND created_at < %s) LIMIT 50",
                (int(now), int(stale_before)),
            )
            if not rows:
                break
            for iid, blob_id in rows:
                with self._tx() as conn:
                    conn.execute("DELETE FROM blob_chunks WHERE iid = %s AND blob_id = %s", (iid, blob_id))
                    conn.execute("DELETE FROM blobs WHERE iid = %s AND blob_id = %s", (iid, blob_id))
                total += 1
        return total

    # ---- backups (protocol 1.3) -------------------------------------------------------------

    @staticmethod
    def _lock_vault(conn: psycopg.Connection[Any], vault: str) -> None:
        """One reservation, commit or delete at a time per vault, across nodes."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("backups:" + vault,))

    def backup_take_nonce(self, vault: str, nonce: bytes, *, now: int, expires_at: int) -> bool:
        with self._tx() as conn:
            conn.execute("DELETE FROM backup_nonces WHERE vault = %s AND expires_at <= %s", (vault, int(now)))
            cur = conn.execute(
                "INSERT INTO backup_nonces (vault, nonce, expires_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (vault, bytes(nonce), int(expires_at)),
            )
            if cur.rowcount != 1:
                return False
            conn.execute("UPDATE backup_vaults SET touched_at = %s WHERE vault = %s AND touched_at < %s", (int(now), vault, int(now)))
            return True

    def backup_begin(self, vault: str, name: str, size: int, *, now: int, quota: int, max_objects: int) -> str:
        import secrets as _secrets

        with self._tx() as conn:
            self._lock_vault(conn, vault)
            row = conn.execute(
                "SELECT (SELECT COALESCE(SUM(size), 0) FROM backup_objects WHERE vault = %s), "
                "(SELECT COALESCE(SUM(size), 0) FROM backup_uploads WHERE vault = %s)",
                (vault, vault),
            ).fetchone()
            committed, pending = (int(row[0]), int(row[1])) if row else (0, 0)
            old = conn.execute("SELECT size FROM backup_objects WHERE vault = %s AND name = %s", (vault, name)).fetchone()
            replaced = int(old[0]) if old is not None else 0
            if committed + pending - replaced + int(size) > quota:
                raise BackupQuota(f"the vault holds {committed + pending} bytes; {size} more exceed the quota of {quota}")
            if old is None:
                names = {
                    str(r[0])
                    for r in conn.execute(
                        "SELECT name FROM backup_objects WHERE vault = %s UNION SELECT name FROM backup_uploads WHERE vault = %s",
                        (vault, vault),
                    )
                }
                if name not in names and len(names) >= max_objects:
                    raise BackupQuota(f"the vault holds {len(names)} objects, the most allowed")
            conn.execute(
                "INSERT INTO backup_vaults (vault, created_at, touched_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (vault) DO UPDATE SET touched_at = GREATEST(backup_vaults.touched_at, excluded.touched_at)",
                (vault, int(now), int(now)),
            )
            upload = _secrets.token_hex(16)
            conn.execute(
                "INSERT INTO backup_uploads (upload, vault, name, size, created_at) VALUES (%s, %s, %s, %s, %s)",
                (upload, vault, name, int(size), int(now)),
            )
            return upload

    def backup_put_chunk(self, upload: str, seq: int, data: bytes) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM backup_uploads WHERE upload = %s FOR SHARE", (upload,)).fetchone() is None:
                raise StorageError("no backup upload in progress with this id")
            conn.execute("INSERT INTO backup_chunks (upload, seq, data) VALUES (%s, %s, %s)", (upload, int(seq), bytes(data)))

    def backup_commit(self, upload: str, *, now: int) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT vault FROM backup_uploads WHERE upload = %s", (upload,)).fetchone()
            if row is None:
                raise StorageError("no backup upload in progress with this id")
            self._lock_vault(conn, str(row[0]))
            row = conn.execute("SELECT vault, name, size FROM backup_uploads WHERE upload = %s FOR UPDATE", (upload,)).fetchone()
            if row is None:
                raise StorageError("no backup upload in progress with this id")
            vault, name, size = str(row[0]), str(row[1]), int(row[2])
            got = conn.execute("SELECT COALESCE(SUM(octet_length(data)), 0) FROM backup_chunks WHERE upload = %s", (upload,)).fetchone()
            stored = int(got[0]) if got else 0
            conn.execute("DELETE FROM backup_uploads WHERE upload = %s", (upload,))
            if stored != size:
                conn.execute("DELETE FROM backup_chunks WHERE upload = %s", (upload,))
            else:
                old = conn.execute("SELECT upload FROM backup_objects WHERE vault = %s AND name = %s", (vault, name)).fetchone()
                if old is not None:
                    conn.execute("DELETE FROM backup_chunks WHERE upload = %s", (str(old[0]),))
                conn.execute(
                    "INSERT INTO backup_objects (vault, name, upload, size, updated_at) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (vault, name) DO UPDATE SET upload = excluded.upload, size = excluded.size, updated_at = excluded.updated_at",
                    (vault, name, upload, size, int(now)),
                )
        if stored != size:
            raise StorageError(f"backup upload: {stored} bytes stored, {size} declared")
        return size

    def backup_abort(self, upload: str) -> None:
        with self._tx() as conn:
            if conn.execute("DELETE FROM backup_uploads WHERE upload = %s RETURNING 1", (upload,)).fetchone():
                conn.execute("DELETE FROM backup_chunks WHERE upload = %s", (upload,))

    def backup_list(self, vault: str) -> list[tuple[str, int, int]]:
        rows = self._rows("SELECT name, size, updated_at FROM backup_objects WHERE vault = %s ORDER BY name COLLATE \"C\"", (vault,))
        return [(str(n), int(sz), int(t)) for n, sz, t in rows]

    def backup_info(self, vault: str, name: str) -> tuple[str, int] | None:
        rows = self._rows("SELECT upload, size FROM backup_objects WHERE vault = %s AND name = %s", (vault, name))
        return None if not rows else (str(rows[0][0]), int(rows[0][1]))

    def backup_chunk(self, upload: str, seq: int) -> bytes | None:
        rows = self._rows("SELECT data FROM backup_chunks WHERE upload = %s AND seq = %s", (upload, int(seq)))
        return None if not rows else bytes(rows[0][0])

    def backup_delete(self, vault: str, name: str) -> bool:
        with self._tx() as conn:
            self._lock_vault(conn, vault)
            row = conn.execute("DELETE FROM backup_objects WHERE vault = %s AND name = %s RETURNING upload", (vault, name)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM backup_chunks WHERE upload = %s", (str(row[0]),))
            conn.execute(
                "DELETE FROM backup_vaults WHERE vault = %s AND NOT EXISTS (SELECT 1 FROM backup_objects WHERE vault = %s) "
                "AND NOT EXISTS (SELECT 1 FROM backup_uploads WHERE vault = %s)",
                (vault, vault, vault),
            )
            return True

    def backup_usage(self, vault: str) -> int:
        rows = self._rows(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM backup_objects WHERE vault = %s) + "
            "(SELECT COALESCE(SUM(size), 0) FROM backup_uploads WHERE vault = %s)",
            (vault, vault),
        )
        return int(rows[0][0])

    def expire_backups(self, *, touched_before: int, stale_before: int, now: int) -> int:
        for (upload,) in self._rows("SELECT upload FROM backup_uploads WHERE created_at < %s", (int(stale_before),)):
            self.backup_abort(str(upload))
        vaults = 0
        while not self._closed:
            rows = self._rows("SELECT vault FROM backup_vaults WHERE touched_at < %s LIMIT 50", (int(touched_before),))
            if not rows:
                break
            for (vault,) in rows:
                vault = str(vault)
                while not self._closed:
                    with self._tx() as conn:
                        # one object or upload per transaction, and only while the vault is still untouched
                        self._lock_vault(conn, vault)
                        stale = conn.execute(
                            "SELECT 1 FROM backup_vaults WHERE vault = %s AND touched_at < %s", (vault, int(touched_before))
                        ).fetchone()
                        if stale is None:
                            break
                        obj = conn.execute("SELECT upload FROM backup_objects WHERE vault = %s LIMIT 1", (vault,)).fetchone()
                        if obj is None:
                            obj = conn.execute("SELECT upload FROM backup_uploads WHERE vault = %s LIMIT 1", (vault,)).fetchone()
                        if obj is None:
                            conn.execute("DELETE FROM backup_vaults WHERE vault = %s", (vault,))
                            vaults += 1
                            break
                        conn.execute("DELETE FROM backup_chunks WHERE upload = %s", (str(obj[0]),))
                        conn.execute("DELETE FROM backup_objects WHERE upload = %s", (str(obj[0]),))
                        conn.execute("DELETE FROM backup_uploads WHERE upload = %s", (str(obj[0]),))
        self._exec("DELETE FROM backup_nonces WHERE expires_at <= %s", (int(now),))
        return vaults

    # ---- auth -----------------------------------------------------------------------------

    def _put_expiring(self, table: str, column: str, key: bytes, installation_id: str, expires_at: int, now: int, cap: int) -> bool:
        n_rows = self._rows(f"SELECT COUNT(*) FROM {table}")
        if int(n_rows[0][0]) >= cap:
            self._exec(f"DELETE FROM {table} WHERE expires_at <= %s", (int(now),))
            if int(self._rows(f"SELECT COUNT(*) FROM {table}")[0][0]) >= cap:
                return False
        self._exec(
            f"INSERT INTO {table} ({column}, iid, expires_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (bytes(key), installation_id, int(expires_at)),
        )
        return True

    def put_challenge(self, challenge: bytes, installation_id: str, expires_at: int, *, now: int, max_pending: int) -> bool:
        return self._put_expiring("auth_challenges", "challenge", challenge, installation_id, expires_at, now, max_pending)

    def take_challenge(self, challenge: bytes) -> tuple[str, int] | None:
        rows = self._rows("DELETE FROM auth_challenges WHERE challenge = %s RETURNING iid, expires_at", (bytes(challenge),))
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def put_token(self, token_hash: bytes, installation_id: str, expires_at: int, *, now: int, max_tokens: int) -> bool:
        return self._put_expiring("auth_tokens", "token_hash", token_hash, installation_id, expires_at, now, max_tokens)

    def token_owner(self, token_hash: bytes, now: int) -> str | None:
        rows = self._rows("SELECT iid, expires_at FROM auth_tokens WHERE token_hash = %s", (bytes(token_hash),))
        if not rows:
            return None
        if int(rows[0][1]) <= now:
            self._exec("DELETE FROM auth_tokens WHERE token_hash = %s", (bytes(token_hash),))
            return None
        return str(rows[0][0])

    # ---- misc -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {t: int(self._rows(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in _TABLES}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._wake_all()
        listener = getattr(self, "_listener", None)
        if listener is not None and listener is not threading.current_thread():
            listener.join(5)
        self._pool.close()
