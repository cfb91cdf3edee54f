"""Relay storage interface (DESIGN.md "Relay": ``Storage`` is one interface with two backends).

The relay keeps three kinds of data, all of it opaque or public:

* identity records — the append-only log of signed installation statements per address, plus an
  index of the *active* installations derived from it (installation id → address and keys);
* prekeys — per installation, a signed X25519 prekey, a last-resort ML-KEM prekey, and pools of
  one-time X25519 and ML-KEM prekeys, each one-time key handed out exactly once;
* envelopes — opaque sealed payloads per inbox topic, each with a relay-wide, strictly increasing
  cursor;
* relay lists (protocol 1.1) — per installation, the newest signed list of the relays it reads its
  inbox on, stored only while the installation is actively bound to the list's address.

It also keeps the inbox-auth state (docs/PROTOCOL.md §7 "Authentication"): single-use challenges and
the SHA-256 hashes of issued tokens, each with an expiry, so that every relay node on one database
accepts a token issued by any of them and a challenge can be used once across all of them.

Backends: :mod:`bridge.relay.sqlite_store` (embedded default, one node) and
:mod:`bridge.relay.postgres_store` (several nodes on one database; :meth:`Storage.wait` is driven by
LISTEN/NOTIFY there, which is why waiting is part of the interface).
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = [
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StaleUpload",
    "LogFull",
    "InstallationBound",
    "InboxFull",
    "StaleRelayList",
    "InstallationNotActive",
    "BlobExists",
    "BlobQuota",
    "BLOB_CHUNK",
    "BackupQuota",
    "BACKUP_CHUNK",
    "Wakeup",
    "IdentityEntry",
    "Envelope",
    "InstallationKeys",
    "StoredPrekeys",
    "ClaimedPrekeys",
    "open_storage",
]


class StorageError(Exception):
    """A storage operation failed, or the storage URL is not supported."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or is busy/locked beyond the timeout (HTTP 503)."""


class StaleUpload(StorageError):
    """A prekey upload whose ``issued_at`` is older than the stored one (a replay of an old upload)."""


class LogFull(StorageError):
    """The identity log already holds ``max_records`` records (nothing was appended)."""


class InstallationBound(StorageError):
    """The record names an installation id bound to another address, without the installation's consent."""

    def __init__(self, installation_id: str, address: str) -> None:
        super().__init__(f"installation {installation_id} belongs to another address's identity log")
        self.installation_id = installation_id
        self.address = address


class InboxFull(StorageError):
    """The topic holds its quota of envelopes (count or bytes); nothing was stored."""


class StaleRelayList(StorageError):
    """A relay list older than the stored one, or of the same version with other bytes; nothing was stored."""


def relay_list_replaces(stored: tuple[int, bytes] | None, version: int, record: bytes) -> bool:
    """Whether a relay list (``version``, ``record``) replaces the stored one (version, bytes), for both
    storages: True to store it, False for these very bytes again (nothing to do).

    Raises:
        StaleRelayList: its version is lower than the stored one's, or equal with other bytes.
    """
    if stored is None:
        return True
    stored_version, stored_record = stored
    if stored_version == version and stored_record == bytes(record):
        return False
    if stored_version >= version:
        raise StaleRelayList(
            f"relay list version {version} is not newer than the stored one ({stored_version})"
            + (" and its bytes differ" if stored_version == version else "")
        )
    return True


class BlobExists(StorageError):
    """A blob with this id is already stored (or being uploaded) for this inbox."""


class BlobQuota(StorageError):
    """Storing the blob would exceed the inbox's blob quota."""


class BackupQuota(StorageError):
    """Storing the backup object would exceed the vault's quota (bytes or objects)."""


class InstallationNotActive(StorageError):
    """The installation is not actively bound to the address (never authorized there, or revoked)."""


class Wakeup:
    """Ends a :meth:`Storage.wait` early, from another thread or greenlet.

    A WebSocket subscription passes one to ``wait`` and sets it when a client frame arrives, so a
    ``ping`` is answered at once instead of when the wait times out. Once set it stays set until
    :meth:`clear`: a ``wait`` given a set wake-up returns at once. Backends call :meth:`attach` with
    the condition variable they wait on (``None`` when done); :meth:`set` notifies it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flag = False
        self._cond: threading.Condition | None = None

    def set(self) -> None:
        with self._lock:
            self._flag = True
            cond = self._cond
        if cond is not None:  # the waiter checks the flag holding this condition's lock: no lost wake-up
            with cond:
                cond.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def attach(self, cond: threading.Condition | None) -> None:
        with self._lock:
            self._cond = cond


@dataclass(frozen=True)
class IdentityEntry:
    """What the relay's index needs from one verified identity record.

    ``signing_pub``/``identity_pub`` are set for ``action == "authorize"`` and ``None`` for a revocation.
    The installation id is the hash of both keys, so every authorization of one id carries the same keys.
    """

    action: str
    installation_id: str
    signing_pub: bytes | None = None
    identity_pub: bytes | None = None


def entry_from_record(record: bytes) -> IdentityEntry:
    """Parse a stored record (already verified when it was appended) into its index entry.

    Raises:
        bridge.identity.IdentityError: the record does not parse.
    """
    from bridge.identity.statement import SignedStatement, Statement

    st = Statement.parse(SignedStatement.from_record(record).text)
    return IdentityEntry(st.action, st.installation_id, st.signing_key, st.identity_key)


def bindings_from_logs(rows: Iterable[tuple[str, bytes]]) -> dict[tuple[str, str], tuple[bool, bytes | None, bytes | None]]:
    """Rebuild the installation bindings from existing logs (schema upgrade of an older relay).

    ``rows`` are ``(address, record)`` in append order. Every (installation id, address) pair named
    by that address's log becomes a binding, revoked if that log revokes the id, with the keys of
    its authorization. Returns (iid, address) → (revoked, signing_pub, identity_pub). Records that no
    longer parse are skipped. (An older relay asked no consent for a second address, so a pair it
    accepted then is kept: the logs cannot tell a wallet switch from an attack.)
    """
    from bridge.identity.statement import IdentityError

    out: dict[tuple[str, str], tuple[bool, bytes | None, bytes | None]] = {}
    for address, record in rows:
        try:
            e = entry_from_record(record)
        except (IdentityError, ValueError):
            continue
        key = (e.installation_id, address)
        revoked, spub, xpub = out.get(key, (False, None, None))
        if e.action == "revoke":
            revoked = True
        elif spub is None:
            spub, xpub = e.signing_pub, e.identity_pub
        out[key] = (revoked, spub, xpub)
    return out


@dataclass(frozen=True)
class Envelope:
    """One stored envelope: ``cursor`` is relay-wide and strictly increasing."""

    cursor: int
    topic: str
    payload: bytes
    received_at: int


@dataclass(frozen=True)
class InstallationKeys:
    """An active installation, as authorized in ``address``'s identity log."""

    installation_id: str
    address: str
    signing_pub: bytes
    identity_pub: bytes


@dataclass(frozen=True)
class StoredPrekeys:
    """A prekey upload as the storage sees it: wire-encoded keys keyed by their ids.

    ``spk`` and ``pq_lrpk`` are the CBOR-encoded signed prekeys; ``pq_lrpk`` may be ``None`` to keep
    the last-resort key already stored. ``otpks``/``pq_otpks`` map prekey id → encoded key.
    ``issued_at`` must not be older than the stored upload's (no roll-back of the signed prekey).
    One-time keys already handed out are remembered by id and never stored again, so a replayed
    upload cannot resurrect them.
    """

    issued_at: int
    spk: bytes
    pq_lrpk: bytes | None
    otpks: Mapping[int, bytes]
    pq_otpks: Mapping[int, bytes]


@dataclass(frozen=True)
class ClaimedPrekeys:
    """What one claim took: the signed prekey, at most one one-time key of each kind, the PQ key.

    ``pqpk`` is the claimed one-time ML-KEM key if one was left, else the last-resort key.
    """

    spk: bytes
    otpk: bytes | None
    pqpk: bytes


class Storage(abc.ABC):
    """The relay's persistence. Every method is safe to call from many threads.

    Every multi-step change happens in one transaction: a failed call leaves nothing behind.
    All methods may raise :class:`StorageUnavailable` (database busy/unreachable) or
    :class:`StorageError`.
    """

    # ---- identity -------------------------------------------------------------------------

    @abc.abstractmethod
    def append_identity(
        self, address: str, record_id: str, record: bytes, entry: IdentityEntry, *, max_records: int, consent: bool = False
    ) -> tuple[int, bool]:
        """Append a *verified* ``record`` to ``address``'s log unless a record with ``record_id`` is
        there, and update the installation index from this one record (no other record is read
        or re-verified), all in one transaction.

        Appends to one address are serialized (across nodes on one database); appends to different
        addresses do not wait for each other beyond the database's own write serialization.

        The index: a log that names an installation id (authorization or revocation) binds the id
        to its address. The first binding of an id is free; a binding to a further address needs
        ``consent`` (the caller proved the installation's own key, e.g. the wallet switch of one
        bridge); the check and the binding are atomic across nodes. A binding is *active* once
        authorized in its log, until a revocation there, which is final for that binding. An id is
        active while any of its bindings is; its prekeys are deleted when none is. A revocation deletes
        the installation's relay list if the list names that address (the binding it ends), so its
        relay list is gone too once the installation stops being active.

        Returns ``(seq, created)``: the record's 1-based position in the log and whether it was new.

        Raises:
            InstallationBound: ``entry.installation_id`` is bound to another address and ``consent`` is false.
            LogFull: the log already holds ``max_records`` records.
        """

    @abc.abstractmethod
    def identity_records(self, address: str) -> list[bytes]:
        """All records of ``address`` in append order (empty list if none)."""

    @abc.abstractmethod
    def identity_bucket(self, prefix: str, *, max_addresses: int, max_records: int) -> dict[str, list[bytes]] | None:
        """Every identity log whose address's bucket starts with ``prefix`` (k-anonymous lookup).

        The bucket of an address is ``hex(SHA-256(ASCII(address)))`` (:func:`bridge.protocol.ids.address_bucket`);
        ``prefix`` is lowercase hex. Returns address → records in append order, or ``None`` when the
        bucket holds more than ``max_addresses`` addresses or ``max_records`` records in all (the
        caller then asks with a longer prefix).
        """

    @abc.abstractmethod
    def installation(self, installation_id: str) -> InstallationKeys | None:
        """An active installation with this id (under any address), or ``None``."""

    @abc.abstractmethod
    def installation_for(self, installation_id: str, address: str) -> InstallationKeys | None:
        """The installation if it is actively bound to ``address`` (authorized in that log and not
        revoked there), else ``None``."""

    @abc.abstractmethod
    def identity_log_lengths(self, installation_id: str) -> dict[str, int]:
        """For every address the installation is actively bound to: how many records its identity log
        holds (logs only grow). Empty if the installation is not active. Read by a publish, whose
        answer tells the sender (PROTOCOL.md §7 ``POST /v1/envelopes``)."""

    # ---- relay lists (protocol 1.1) ----------------------------------------------------------

    @abc.abstractmethod
    def put_relay_list(self, installation_id: str, address: str, version: int, record: bytes) -> bool:
        """Store a *verified* relay list of ``installation_id`` (one per installation), in one
        transaction with the check that the installation is actively bound to ``address`` (a
        revocation committed meanwhile on any node wins: the list is then refused, never left behind).

        Returns ``True`` when it was stored (new, or a higher version than the stored one, which it
        replaces), ``False`` when the stored list is these very bytes (nothing changes).

        Raises:
            InstallationNotActive: the installation is not actively bound to ``address``.
            StaleRelayList: the stored list has a higher version, or the same version with other bytes.
        """

    @abc.abstractmethod
    def relay_lists(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        """For each address, the stored relay lists of the installations actively bound to it, sorted
        by installation id (an address without any maps to ``[]``).

        A list is deleted in the transaction that ends its installation's binding to its address
        (:meth:`append_identity` with a revocation), so only lists of active bindings exist.
        """

    # ---- prekeys --------------------------------------------------------------------------

    @abc.abstractmethod
    def put_prekeys(self, installation_id: str, prekeys: StoredPrekeys, *, max_one_time: int) -> tuple[int, int]:
        """Replace the signed prekey (and last-resort key if given) and add the one-time keys.

        One-time keys whose id is already stored, or was ever handed out, are ignored; keys beyond
        ``max_one_time`` per kind are dropped. Returns the counts ``(otpk, pq_otpk)`` after the change.

        Raises:
            StaleUpload: ``prekeys.issued_at`` is older than the stored upload's.
        """

    @abc.abstractmethod
    def claim_prekeys(self, installation_id: str) -> ClaimedPrekeys | None:
        """Take one one-time key of each kind (deleted in the same transaction that reads it).

        Returns ``None`` when no signed prekey, or neither a one-time nor a last-resort ML-KEM key,
        is stored. Concurrent claims never receive the same one-time key.
        """

    @abc.abstractmethod
    def prekey_counts(self, installation_id: str) -> tuple[int, int]:
        """``(otpk, pq_otpk)``: how many one-time keys of each kind are left."""

    # ---- envelopes ------------------------------------------------------------------------

    @abc.abstractmethod
    def publish(self, topic: str, payload: bytes, now: int, *, max_count: int | None = None, max_bytes: int | None = None) -> int:
        """Store an envelope and wake waiters on ``topic``. Returns its cursor.

        With ``max_count``/``max_bytes``, the envelope is stored only if the topic then holds at most
        that many envelopes / payload bytes (checked atomically with the insert, on every node).

        Raises:
            InboxFull: the topic's quota would be exceeded.
        """

    def publish_many(
        self, items: Sequence[tuple[str, bytes]], now: int, *, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[int]:
        """Store ``(topic, payload)`` items in order, as :meth:`publish` each, and wake their waiters.
        Stops at the first item its topic's quota refuses: that item and the later ones are not stored.
        Returns the cursors of the stored prefix (shorter than ``items`` when a quota stopped it).

        This default publishes one by one; a backend may store the prefix in one transaction (group
        commit), as long as cursors still become visible in increasing order.
        """
        cursors: list[int] = []
        for topic, payload in items:
            try:
                cursors.append(self.publish(topic, payload, now, max_count=max_count, max_bytes=max_bytes))
            except InboxFull:
                break
        return cursors

    @abc.abstractmethod
    def fetch(self, topic: str, after: int, limit: int) -> list[Envelope]:
        """Envelopes of ``topic`` with ``cursor > after``, oldest first, at most ``limit``.

        Cursors become visible in increasing order (on every node sharing the database): once a
        reader has seen cursor ``n``, no envelope with a smaller cursor can appear later, so
        reading with ``after=<last cursor seen>`` never skips an envelope.
        """

    @abc.abstractmethod
    def wait(self, topic: str, after: int, timeout: float, wake: Wakeup | None = None) -> bool:
        """Block until ``topic`` has an envelope with ``cursor > after``, ``timeout`` passes, or
        ``wake`` is set (already set: return at once).

        Returns ``True`` if such an envelope is known to exist (``False`` may still mean "not
        checked" after a wake-up). In-process backends use a condition variable; a PostgreSQL
        backend implements it with LISTEN/NOTIFY so publishes on other nodes wake it.
        """

    @abc.abstractmethod
    def expire(self, before: int) -> int:
        """Delete envelopes received before ``before`` (unix seconds), freeing their topics' quota.
        Returns how many.

        Deletes in small batches, each its own short transaction, so publishes are not blocked.
        """

    # ---- blobs (protocol 1.2, docs/PROTOCOL.md §7 "Blobs") -----------------------------------
    # A blob is a row of ``blobs`` (size, expiry, complete flag) and its bytes in ``blob_chunks``
    # rows of at most BLOB_CHUNK bytes, so neither the relay nor the database ever holds a whole
    # blob in one value. An upload reserves its declared size against the inbox's quota first
    # (``blob_begin``), appends chunks (each its own short transaction), then ``blob_commit``; an
    # incomplete blob is never served, and ``blob_abort`` (or the expiry pass) removes it.

    @abc.abstractmethod
    def blob_begin(self, installation_id: str, blob_id: str, size: int, *, now: int, expires_at: int, quota: int) -> None:
        """Reserve ``size`` bytes for a new, incomplete blob.

        Raises:
            BlobExists: the id is already stored or being uploaded for this inbox.
            BlobQuota: the inbox's blobs (complete or not) plus ``size`` would exceed ``quota``.
        """

    @abc.abstractmethod
    def blob_put_chunk(self, installation_id: str, blob_id: str, seq: int, data: bytes) -> None:
        """Store chunk ``seq`` (0, 1, …) of an incomplete blob."""

    @abc.abstractmethod
    def blob_commit(self, installation_id: str, blob_id: str) -> int:
        """Mark the blob complete; returns its size. Raises StorageError when the stored chunks do
        not add up to the reserved size (nothing is then kept)."""

    @abc.abstractmethod
    def blob_abort(self, installation_id: str, blob_id: str) -> None:
        """Delete an incomplete blob and its chunks (no-op for unknown or complete blobs)."""

    @abc.abstractmethod
    def blob_info(self, installation_id: str, blob_id: str, now: int) -> tuple[int, int] | None:
        """``(size, expires_at)`` of a complete, unexpired blob; ``None`` otherwise."""

    @abc.abstractmethod
    def blob_chunk(self, installation_id: str, blob_id: str, seq: int) -> bytes | None:
        """Chunk ``seq`` of a blob, ``None`` past its end (or when it was deleted meanwhile)."""

    @abc.abstractmethod
    def blob_usage(self, installation_id: str) -> int:
        """Bytes reserved by this inbox's blobs (complete or being uploaded)."""

    @abc.abstractmethod
    def expire_blobs(self, now: int, *, stale_before: int) -> int:
        """Delete blobs expired at ``now`` and incomplete ones begun before ``stale_before`` (an
        upload cut off by a crash); returns how many. Small transactions, one blob at a time."""

    # ---- backups (protocol 1.3, docs/PROTOCOL.md §7 "Backups") -------------------------------
    # A vault (an Ed25519 public key, 64 lowercase hex) holds named objects. An object's bytes live
    # in ``backup_chunks`` rows of at most BACKUP_CHUNK bytes under an *upload* id: a PUT streams
    # into a new upload (``backup_begin``, ``backup_put_chunk``) and ``backup_commit`` makes it the
    # object of its name in one transaction, deleting the object it replaces; until then readers
    # see the old object, and a failed upload (``backup_abort``) leaves it untouched. The vault's
    # quota counts committed objects and uploads in progress; a replacement counts as its size
    # minus the size of the object it replaces. ``touched_at`` (every authenticated request, through
    # ``backup_take_nonce``) drives the expiry of vaults nobody uses.

    @abc.abstractmethod
    def backup_take_nonce(self, vault: str, nonce: bytes, *, now: int, expires_at: int) -> bool:
        """Spend a request nonce of ``vault`` (single use until ``expires_at``, on every node sharing
        the database) and mark the vault touched at ``now`` if it exists. ``False``: already spent."""

    @abc.abstractmethod
    def backup_begin(self, vault: str, name: str, size: int, *, now: int, quota: int, max_objects: int) -> str:
        """Reserve ``size`` bytes for a new upload of ``name`` (creating the vault); returns its upload id.

        Raises:
            BackupQuota: committed objects and uploads in progress, minus the object this one would
                replace, plus ``size`` exceed ``quota``; or a new name beyond ``max_objects``.
        """

    @abc.abstractmethod
    def backup_put_chunk(self, upload: str, seq: int, data: bytes) -> None:
        """Store chunk ``seq`` (0, 1, …) of an upload in progress."""

    @abc.abstractmethod
    def backup_commit(self, upload: str, *, now: int) -> int:
        """Make the upload the object of its name (replacing the previous one and deleting its rows), in
        one transaction; returns its size. Raises StorageError when the stored chunks do not add up to
        the reserved size (the upload is then deleted; the previous object stays)."""

    @abc.abstractmethod
    def backup_abort(self, upload: str) -> None:
        """Delete an upload in progress and its chunks (no-op when unknown or committed)."""

    @abc.abstractmethod
    def backup_list(self, vault: str) -> list[tuple[str, int, int]]:
        """The vault's committed objects as ``(name, size, updated_at)``, sorted by name."""

    @abc.abstractmethod
    def backup_info(self, vault: str, name: str) -> tuple[str, int] | None:
        """``(upload id, size)`` of the committed object ``name`` of ``vault``, or ``None``."""

    @abc.abstractmethod
    def backup_chunk(self, upload: str, seq: int) -> bytes | None:
        """Chunk ``seq`` of a committed object, ``None`` past its end (or when it was replaced meanwhile)."""

    @abc.abstractmethod
    def backup_delete(self, vault: str, name: str) -> bool:
        """Delete the committed object ``name`` and its rows; ``False`` when there is none. A vault left
        with no object and no upload is deleted."""

    @abc.abstractmethod
    def backup_usage(self, vault: str) -> int:
        """Bytes held by the vault: committed objects plus uploads in progress."""

    @abc.abstractmethod
    def expire_backups(self, *, touched_before: int, stale_before: int, now: int) -> int:
        """Delete vaults last touched before ``touched_before`` (every object and upload), uploads begun
        before ``stale_before`` (cut off by a crash), and nonces expired at ``now``. Returns how many
        vaults were deleted. Small transactions: one object or upload at a time."""

    # ---- auth (docs/PROTOCOL.md §7 "Authentication") -----------------------------------------

    @abc.abstractmethod
    def put_challenge(self, challenge: bytes, installation_id: str, expires_at: int, *, now: int, max_pending: int) -> bool:
        """Store a challenge issued to ``installation_id``, valid until ``expires_at`` (unix seconds).

        When ``max_pending`` challenges are stored, expired ones (``expires_at <= now``) are purged
        first; returns ``False`` (nothing stored) if the table is still full. The cap is
        approximate under concurrent calls.
        """

    @abc.abstractmethod
    def take_challenge(self, challenge: bytes) -> tuple[str, int] | None:
        """Delete a challenge and return ``(installation_id, expires_at)``; ``None`` if unknown.

        Atomic: of concurrent calls for one challenge (on any node) exactly one gets it.
        """

    @abc.abstractmethod
    def put_token(self, token_hash: bytes, installation_id: str, expires_at: int, *, now: int, max_tokens: int) -> bool:
        """Store the hash of an issued token; same purge/cap rule as :meth:`put_challenge`."""

    @abc.abstractmethod
    def token_owner(self, token_hash: bytes, now: int) -> str | None:
        """The installation a token (by hash) was issued to, or ``None`` if unknown or expired at ``now``."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Row counts per table (diagnostics and tests)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; waiters return promptly."""


#: bytes per stored blob chunk row
BLOB_CHUNK = 256 * 1024
#: bytes per stored backup chunk row
BACKUP_CHUNK = 256 * 1024


def open_storage(db: str) -> Storage:
    """Open the storage named by ``db``: a file path or ``sqlite:///path`` → SQLite;
    ``postgresql://…`` or ``postgres://…`` (libpq URL) → PostgreSQL.

    Raises:
        StorageError: an unknown URL scheme, or a database schema newer than this relay.
        StorageUnavailable: the database file cannot be opened, or the server cannot be reached.
    """
    if not isinstance(db, str) or not db:
        raise StorageError("a database path or URL is required")
    if db.startswith(("postgresql://", "postgres://")):
        from bridge.relay.postgres_store import PostgresStorage

        return PostgresStorage(db)
    path = db
    if db.startswith("sqlite:///"):
        path = db[len("sqlite:///") :]
        if not path:
            raise StorageError("sqlite:/// URL without a path")
    elif "://" in db:
        raise StorageError(f"unsupported storage URL scheme in {db.split('://', 1)[0]!r}")
    from bridge.relay.sqlite_store import SQLiteStorage

    return SQLiteStorage(path)
