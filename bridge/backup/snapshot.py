"""A home's state as a stream of archive records, and back (issue 15; PROTOCOL.md §12.3).

:func:`export_records` reads one consistent snapshot of the store (one read transaction on its own
connection, SQL cursors in a fixed order: nothing is held in memory but the current row) plus
``identity.json``, ``contacts.json`` and ``config.json``, and yields the records of §12.3. Attachment keys
leave their storage-key seal (raw 32 bytes in the record); with ``include_files`` the plaintext files
follow in pieces of at most 1 MiB. Never ratchet state, prekeys or installation keys: a restore makes a
new installation.

:func:`import_records` checks every record (types, sizes, addresses, ids; an archive is hostile until
checked: it may come from a bug, an old version, or someone who has the recovery key) and stages it in a
private scratch database next to the store; nothing in the home changes while records are read. Only
when the stream has ended without error (the archive reader raises at the end on truncation) does ONE
write transaction apply the staged rows (bulk ``INSERT … SELECT``: the store is locked for a short time,
so a running daemon keeps working), after which the files are renamed into ``<home>/attachments`` and
contacts.json / config.json are updated. Any failure: the scratch database and temporary files are
removed, the store and the files are as they were.

Import is idempotent by key (message id, peer, attachment id, …): ``replace=False`` keeps what the home
has (importing twice adds nothing); ``replace=True`` (remote deltas, applied in order) lets a later record
of the same key replace the row, and ``forget`` deletes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets as _secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.crypto import primitives
from bridge.home import SETTINGS, Home, HomeError, write_private
from bridge.protocol import wire
from bridge.store import Store, now_ms

if TYPE_CHECKING:
    from bridge.backup.recovery import BackupKeys
    from bridge.keys import Secrets

__all__ = [
    "PORTABLE_SETTINGS",
    "RELAY_SETTINGS",
    "RECORD_VERSION",
    "FILE_PIECE",
    "TAGS",
    "SnapshotError",
    "ImportReport",
    "export_records",
    "import_records",
    "record_key",
]

RECORD_VERSION = 1
#: A ``file`` record carries at most this many bytes of the file.
FILE_PIECE = 1 << 20
#: Every tag of §12.3, in archive order (``forget`` only in remote deltas).
TAGS = ("meta", "wallet", "identity", "settings", "contacts", "consent", "conversation", "message", "reaction",
        "attachment", "file", "standby", "forget", "end")
#: Settings carried by an archive: everything in config.json that is about the user, not this machine
#: (not port, embedded_relay, extension_ids, previous_relays, relay_url). Only names in home.SETTINGS
#: are exported or applied (the backup settings exist once bridge/backup/remote.py adds them).
PORTABLE_SETTINGS: tuple[str, ...] = (
    "relays", "directory_relays", "relay_grace_days", "insecure_relays", "chain_id", "retention_days",
    "prekey_rotation_days", "prekey_grace_days", "prekey_check_seconds", "lens_api_url", "eth_rpc_url",
    "ens_registry", "ens_universal_resolver", "farcaster_hub_url", "op_rpc_url", "farcaster_id_registry",
    "lens_chain_rpc_url", "read_receipts", "name_cache_ttl", "backup_remote", "backup_interval_minutes",
    "backup_standby",
)
#: Where the home's inbox is, and whether plain-http relays are allowed: an import into an existing home
#: (replace=False) never changes these (`parley relays set` does, keeping the old relays readable for
#: their grace period); a restore (replace=True into a new home) takes them.
RELAY_SETTINGS = frozenset({"relays", "insecure_relays"})

# Bounds on what an archive may carry (a hostile archive cannot make us store more).
MAX_TEXT = 1 << 20            # characters of a message text (the engine sends at most 64 KiB)
MAX_EXTRA = 1 << 20           # bytes of a message's extras (CBOR)
MAX_THUMB = 1 << 20
MAX_STR = 4096                # URLs, errors, content types, …
MAX_CONTACTS = 100_000
MAX_IDENTITY_RECORDS = 10_000
MAX_IDENTITY_RECORD = 64 * 1024
MAX_FILE = 26_214_400         # bridge/engine/attachments.py MAX_FILE_BYTES
I64 = (-(2**63), 2**63 - 1)
_ID = re.compile(r"[0-9a-f]{32}")
_ATT_ID = re.compile(r"([0-9a-f]{32})-([0-9]{1,2})")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_IID = re.compile(r"[0-9a-f]{16,128}")
_KINDS = frozenset({"text", "reply", "attachment", "reaction", "edit", "delete", "read-receipt", "consent", "unknown", "typing"})
_CONTENT_TYPE = re.compile(r"[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*")
_MSG_STATES = frozenset({"queued", "sent", "received", "failed"})
_ATT_STATES = frozenset({"local", "pending", "downloading", "done", "failed", "refused"})
_CONSENT_STATES = frozenset({"allowed", "requested", "declined", "blocked"})
_PURPOSES = frozenset({"export", "transfer", "remote"})
_WALLETS = frozenset({"generated", "imported", "browser"})
_FORGETTABLE = frozenset({"consent", "conversation", "message", "reaction", "attachment"})
_BATCH = 2000


class SnapshotError(Exception):
    """An archive's records cannot be imported (one line naming the record and the check)."""


# --- record keys ----------------------------------------------------------------------------------


def record_key(record: Any) -> str | None:
    """The stable key of an upsertable record (what a remote delta compares and what ``forget`` names):
    ``settings``, ``contacts``, ``identity``, ``wallet``, ``standby``, ``consent:<peer>``,
    ``conversation:<peer>``, ``message:<id>``, ``reaction:<message id>:<reactor>:<emoji>``,
    ``attachment:<id>``; None for ``meta``, ``file``, ``forget``, ``end`` and anything malformed."""
    if not isinstance(record, (list, tuple)) or len(record) != 2 or not isinstance(record[1], (dict, list)):
        return None
    tag, body = record
    if tag in ("settings", "contacts", "identity", "wallet", "standby"):
        return str(tag)
    if not isinstance(body, dict):
        return None
    try:
        if tag in ("consent", "conversation"):
            return f"{tag}:{body['peer']}" if isinstance(body["peer"], str) else None
        if tag in ("message", "attachment"):
            return f"{tag}:{body['id']}" if isinstance(body["id"], str) else None
        if tag == "reaction":
            parts = (body["message_id"], body["reactor"], body["emoji"])
            return "reaction:" + ":".join(parts) if all(isinstance(p, str) for p in parts) else None
    except KeyError:
        return None
    return None


# --- export ---------------------------------------------------------------------------------------


def _wallet_kind(ident: dict[str, Any], secrets: "Secrets") -> str:
    kind = ident.get("wallet")
    if kind in _WALLETS:
        return str(kind)
    return "generated" if secrets.address == ident.get("address") else "browser"


def _portable_config(home: Home) -> dict[str, Any]:
    known = {s.name for s in SETTINGS}
    values = home.config_file_values()
    out: dict[str, Any] = {}
    for name in PORTABLE_SETTINGS:
        if name in known and name in values:
            out[name] = _to_cbor_setting(values[name])
    return out


def _to_cbor_setting(value: Any) -> Any:
    """CBOR carries no floats in Parley structures: an integral float is an int, another one its repr
    string (read back by the setting's schema on import)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    return value


def _read_conn(store: Store) -> sqlite3.Connection:
    conn = sqlite3.connect(store.path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def export_records(
    home: Home, store: Store, secrets: "Secrets", *, purpose: str, include_files: bool, meta_extra: dict[str, Any] | None = None
) -> Iterator[list[Any]]:
    """The records of §12.3 for this home, in archive order; deterministic for a given state (same state,
    same records in the same order; ``meta.created_at`` excepted). Streams: one read transaction on its
    own connection, rows read as they are yielded.

    Raises:
        SnapshotError: ``purpose`` unknown; HomeError: identity.json or config.json unreadable.
    """
    if purpose not in _PURPOSES:
        raise SnapshotError(f"unknown archive purpose {purpose!r}")
    ident = home.identity()
    address = ident["address"]
    wallet = _wallet_kind(ident, secrets)
    meta: dict[str, Any] = {"version": RECORD_VERSION, "address": address, "installation_id": ident.get("installation_id", ""),
                            "wallet": wallet, "created_at": now_ms(), "purpose": purpose}
    for k, v in (meta_extra or {}).items():
        if k not in ("segment", "base") or type(v) is not int:
            raise SnapshotError(f"meta_extra may only carry segment and base (integers), not {k!r}")
        meta[k] = v
    from bridge.backup import state
    from bridge.engine import contents
    from bridge.resolve.contacts import Contacts

    settings = _portable_config(home)
    contacts = [{"address": a, "name": n} for n, a in sorted(Contacts(home.contacts_file).all().items())]
    standby = state.load_standby(store, secrets)
    count = 0

    def emit(tag: str, body: Any) -> list[Any]:
        nonlocal count
        count += 1
        return [tag, body]

    yield emit("meta", meta)
    if wallet != "browser" and secrets.address == address:
        yield emit("wallet", {"key": secrets.wallet_key})
    yield emit("identity", {"records": [bytes.fromhex(ident["record"])] if ident.get("record") else []})
    yield emit("settings", settings)
    yield emit("contacts", contacts)
    conn = _read_conn(store)
    try:
        conn.execute("BEGIN")  # one snapshot (WAL): every SELECT below sees the same state
        for r in conn.execute("SELECT * FROM consent ORDER BY peer"):
            yield emit("consent", {"peer": r["peer"], "state": r["state"], "previous": r["previous"], "updated_at": r["updated_at"],
                                   "held": int(r["held"] or 0), "dropped": int(r["dropped"] or 0)})
        for r in conn.execute("SELECT peer, created_at, updated_at FROM conversations ORDER BY peer"):
            yield emit("conversation", {"peer": r["peer"], "created_at": r["created_at"], "updated_at": r["updated_at"]})
        for r in conn.execute("SELECT * FROM messages ORDER BY seq"):
            yield emit("message", {
                "id": r["id"], "peer": r["peer"], "sender": r["sender"], "recipient": r["recipient"], "text": r["text"],
                "sent_at": r["sent_at"], "received_at": r["received_at"], "direction": r["direction"], "state": r["state"],
                "read": bool(r["read"]), "claimed_sent_at": r["claimed_sent_at"], "kind": r["kind"], "content_type": r["content_type"],
                "extra": None if r["extra"] is None else bytes(r["extra"]), "reply_to": r["reply_to"], "edited_at": r["edited_at"],
                "deleted": bool(r["deleted"]), "read_at": r["read_at"],
            })
        for r in conn.execute(
            "SELECT r.message_id, r.reactor, r.emoji, r.at FROM reactions r JOIN messages m ON m.id = r.message_id ORDER BY r.rowid"
        ):
            yield emit("reaction", {"message_id": r["message_id"], "reactor": r["reactor"], "emoji": r["emoji"], "at": r["at"]})
        with_files: list[tuple[str, str]] = []
        for r in conn.execute("SELECT a.* FROM attachments a JOIN messages m ON m.id = a.message_id ORDER BY m.seq, a.idx, a.id"):
            aid = r["id"]
            path = r["path"]
            has_file = bool(path) and os.path.isfile(path)
            st = r["state"]
            if st == "downloading" or (st == "done" and not has_file):
                st = "pending"  # what an import makes of it: the downloader fetches it again
            try:
                key = contents.unseal_key(_SealOnly(secrets), aid, bytes(r["key"])) if r["key"] is not None else None
            except primitives.DecryptError:
                raise SnapshotError(f"the key of attachment {aid} does not open with this installation's storage key") from None
            yield emit("attachment", {
                "id": aid, "message_id": r["message_id"], "idx": r["idx"], "name": r["name"], "size": r["size"], "mime": r["mime"],
                "sha256": r["sha256"], "url": r["url"], "key": key, "nonce": None if r["nonce"] is None else bytes(r["nonce"]),
                "digest": None if r["digest"] is None else bytes(r["digest"]), "state": st,
                "thumb": None if r["thumb"] is None else bytes(r["thumb"]), "error": r["error"],
            })
            if include_files and has_file:
                with_files.append((aid, path))
        conn.execute("COMMIT")
    finally:
        conn.close()
    for aid, path in with_files:  # the files themselves, outside the read transaction
        try:
            f = open(path, "rb")
        except OSError:
            continue  # removed since: the attachment is fetched again from its relay after an import
        with f:
            offset = 0
            while True:  # an empty file is one record with no data (so an import knows it is there)
                data = f.read(min(FILE_PIECE, MAX_FILE - offset))
                if not data and offset:
                    break
                yield emit("file", {"attachment": aid, "offset": offset, "data": data})
                offset += len(data)
                if not data or offset >= MAX_FILE:
                    break
    if standby is not None:
        yield emit("standby", standby)
    yield ["end", {"records": count}]


class _SealOnly:
    """What bridge/engine/contents.py's seal_key/unseal_key need of an engine: the storage key."""

    def __init__(self, secrets: "Secrets") -> None:
        self._key = secrets.storage_key

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        return primitives.aes256_gcm_encrypt(self._key, data, aad)

    def _unseal(self, blob: bytes, aad: bytes) -> bytes:
        return primitives.aes256_gcm_decrypt(self._key, blob, aad)


# --- import: checks -------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _checksummed(value: str) -> str | None:
    from bridge.identity import IdentityError, checksum_address

    try:
        return checksum_address(value)
    except (IdentityError, ValueError, TypeError):
        return None


class _Checker:
    """Field checks of one record; every failure is a SnapshotError naming the record and the field."""

    def __init__(self, n: int, tag: str, body: Any) -> None:
        self.where = f"record {n} ({tag})"
        if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
            raise SnapshotError(f"{self.where}: not a map with string keys")
        self.body = body

    def fail(self, name: str, what: str) -> SnapshotError:
        return SnapshotError(f"{self.where}: {name} {what}")

    def get(self, name: str, optional: bool) -> Any:
        if name not in self.body:
            if optional:
                return None
            raise self.fail(name, "is missing")
        return self.body[name]

    def int(self, name: str, lo: int = I64[0], hi: int = I64[1], *, optional: bool = False) -> int | None:
        v = self.get(name, optional)
        if v is None and optional:
            return None
        if type(v) is not int or not lo <= v <= hi:
            raise self.fail(name, f"must be an integer in [{lo}, {hi}]")
        return v

    def flag(self, name: str) -> int:
        v = self.get(name, False)
        if type(v) is bool or (type(v) is int and v in (0, 1)):
            return int(v)
        raise self.fail(name, "must be a boolean")

    def str(self, name: str, max_len: int = MAX_STR, *, optional: bool = False, pattern: re.Pattern[str] | None = None,
            choices: frozenset[str] | None = None) -> str | None:
        v = self.get(name, optional)
        if v is None and optional:
            return None
        if not isinstance(v, str) or len(v) > max_len:
            raise self.fail(name, f"must be a string of at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(v):
            raise self.fail(name, "is malformed")
        if choices is not None and v not in choices:
            raise self.fail(name, f"must be one of {', '.join(sorted(choices))}")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(name, "is not valid Unicode") from None
        return v

    def bytes(self, name: str, max_len: int, *, length: int | None = None, optional: bool = False) -> bytes | None:
        v = self.get(name, optional)
        if v is None and optional:
            return None
        if not isinstance(v, bytes) or len(v) > max_len or (length is not None and len(v) != length):
            raise self.fail(name, f"must be {length if length is not None else f'at most {max_len}'} bytes")
        return v

    def address(self, name: str) -> str:
        v = self.str(name, 42)
        if v is None or _checksummed(v) != v:
            raise self.fail(name, "must be a checksummed address (0x followed by 40 hex digits)")
        return v


@dataclass
class ImportReport:
    """What an import did (``to_json`` for ``--json``)."""

    records: int = 0
    messages_added: int = 0
    messages_skipped: int = 0
    messages_replaced: int = 0
    requeued: int = 0
    conversations: int = 0
    consent: int = 0
    reactions: int = 0
    reactions_skipped: int = 0
    attachments: int = 0
    files: int = 0
    files_skipped: int = 0
    contacts: int = 0
    settings: list[str] = field(default_factory=list)
    forgotten: int = 0
    standby: bool = False
    address: str | None = None
    purpose: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_STAGE_SCHEMA = """
CREATE TABLE conversation (peer TEXT PRIMARY KEY, created_at INTEGER, updated_at INTEGER);
CREATE TABLE consent (peer TEXT PRIMARY KEY, state TEXT, previous TEXT, updated_at INTEGER, held INTEGER, dropped INTEGER);
CREATE TABLE message (ord INTEGER PRIMARY KEY, id TEXT UNIQUE, peer TEXT, sender TEXT, recipient TEXT, text TEXT, sent_at INTEGER,
    received_at INTEGER, direction TEXT, state TEXT, read INTEGER, claimed_sent_at INTEGER, kind TEXT, content_type TEXT,
    extra BLOB, reply_to TEXT, edited_at INTEGER, deleted INTEGER, read_at INTEGER);
CREATE TABLE reaction (ord INTEGER PRIMARY KEY, message_id TEXT, reactor TEXT, emoji TEXT, at INTEGER, UNIQUE (message_id, reactor, emoji));
CREATE TABLE attachment (ord INTEGER PRIMARY KEY, id TEXT UNIQUE, message_id TEXT, idx INTEGER, name TEXT, size INTEGER, mime TEXT,
    sha256 TEXT, url TEXT, key BLOB, nonce BLOB, digest BLOB, state TEXT, thumb BLOB, error TEXT, file INTEGER DEFAULT 0);
CREATE TABLE forget (tag TEXT, key TEXT, PRIMARY KEY (tag, key));
"""

_MSG_COLS = ("id", "peer", "sender", "recipient", "text", "sent_at", "received_at", "direction", "state", "read", "claimed_sent_at",
             "kind", "content_type", "extra", "reply_to", "edited_at", "deleted", "read_at")
_ATT_COLS = ("id", "message_id", "idx", "name", "size", "mime", "sha256", "url", "key", "nonce", "digest", "state", "thumb", "error")


class _PartFile:
    """A file being received: a temporary name under <home>/attachments, hashed as it is written."""

    def __init__(self, directory: Path, aid: str) -> None:
        self.tmp = directory / f".import-{_secrets.token_hex(8)}-{aid}.part"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)
        self.hash.update(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Importer:
    def __init__(self, home: Home, store: Store, secrets: "Secrets", *, replace: bool, expect_address: str | None,
                 backup_keys: "BackupKeys | None", backup_id: bytes | None) -> None:
        self.home, self.store, self.secrets = home, store, secrets
        self.replace = replace
        self.expect_address = expect_address
        self.backup_keys, self.backup_id = backup_keys, backup_id
        self.report = ImportReport()
        self.n = 0
        self.meta: dict[str, Any] | None = None
        self.ended = False
        self.settings: dict[str, Any] | None = None
        self.contacts: list[tuple[str, str]] | None = None
        self.standby: dict[str, Any] | None = None
        self.att_dir = home.path / "attachments"
        self.parts: dict[str, _PartFile] = {}
        self.att_sizes: dict[str, tuple[int, str]] = {}  # attachment id -> (size, sha256) of staged attachments
        self.pending: dict[str, list[tuple[Any, ...]]] = {}
        self.scratch = store.path.parent / f".import-{_secrets.token_hex(8)}.db"
        self.stage: sqlite3.Connection | None = None
        try:
            self.stage = sqlite3.connect(self.scratch, isolation_level=None)
            self.stage.execute("PRAGMA journal_mode = OFF")
            self.stage.execute("PRAGMA synchronous = OFF")
            self.stage.executescript(_STAGE_SCHEMA)
            self.stage.execute("BEGIN")
        except BaseException:
            self.cleanup()
            raise

    # -- staging helpers

    def _sql(self, table: str, cols: tuple[str, ...], key: str) -> str:
        names = ", ".join(cols)
        marks = ", ".join("?" * len(cols))
        if self.replace:  # a later record of the same key replaces it (its place in the order stays)
            sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
            return f"INSERT INTO {table}({names}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {sets}"
        return f"INSERT INTO {table}({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"

    def _queue(self, sql: str, row: tuple[Any, ...]) -> None:
        batch = self.pending.setdefault(sql, [])
        batch.append(row)
        if len(batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        for sql, rows in self.pending.items():
            if rows:
                self.stage.executemany(sql, rows)
                rows.clear()

    def _unforget(self, tag: str, key: str) -> None:
        if self.replace:
            self.stage.execute("DELETE FROM forget WHERE tag = ? AND key = ?", (tag, key))

    # -- records

    def add(self, record: Any) -> None:
        n = self.n
        self.n += 1
        if self.ended:
            raise SnapshotError(f"record {n} follows the end record")
        if not isinstance(record, list) or len(record) != 2 or not isinstance(record[0], str):
            raise SnapshotError(f"record {n} is not a [tag, body] pair")
        tag, body = record
        if tag not in TAGS:
            raise SnapshotError(f"record {n} has an unknown tag {tag[:40]!r}")
        if n == 0 and tag != "meta":
            raise SnapshotError("the archive does not start with its meta record")
        if n > 0 and tag == "meta":
            raise SnapshotError(f"record {n} is a second meta record")
        getattr(self, "_" + tag)(n, body)

    def _meta(self, n: int, body: Any) -> None:
        c = _Checker(n, "meta", body)
        version = c.int("version", 0, 1 << 30)
        if version != RECORD_VERSION:
            raise SnapshotError(f"the archive's records are version {version}; this Parley reads version {RECORD_VERSION}")
        address = c.address("address")
        c.str("installation_id", 256)
        c.str("wallet", 16, choices=_WALLETS)
        c.int("created_at", 0)
        purpose = c.str("purpose", 16, choices=_PURPOSES)
        c.int("segment", 0, optional=True)
        c.int("base", 0, optional=True)
        expected = self.expect_address
        if expected is not None and address != expected:
            raise SnapshotError(f"this archive belongs to {address}, this home is {expected}")
        if self.backup_keys is not None and self.backup_id is not None:
            if not _secrets.compare_digest(self.backup_keys.backup_id(address), bytes(self.backup_id)):
                raise SnapshotError("the archive's backup id is not the one this recovery key gives its address")
        self.meta = body
        self.report.address, self.report.purpose = address, purpose

    def _wallet(self, n: int, body: Any) -> None:
        c = _Checker(n, "wallet", body)
        key = c.bytes("key", 32, length=32)
        try:
            from eth_keys import keys

            owner = str(keys.PrivateKey(key).public_key.to_checksum_address())
        except Exception:
            raise SnapshotError(f"record {n} (wallet): not a secp256k1 private key") from None
        mine = self.meta["address"] if self.meta else None
        if owner != mine:
            raise SnapshotError(f"record {n} (wallet): the wallet key is not the key of {mine}")
        if self.expect_address is not None and owner != self.expect_address:
            raise SnapshotError(f"this archive's wallet is {owner}, this home is {self.expect_address}")

    def _identity(self, n: int, body: Any) -> None:
        c = _Checker(n, "identity", body)
        recs = c.get("records", False)
        if not isinstance(recs, list) or len(recs) > MAX_IDENTITY_RECORDS or not all(
            isinstance(r, bytes) and len(r) <= MAX_IDENTITY_RECORD for r in recs
        ):
            raise c.fail("records", f"must be a list of at most {MAX_IDENTITY_RECORDS} byte strings of at most 64 KiB")

    def _settings(self, n: int, body: Any) -> None:
        c = _Checker(n, "settings", body)
        from bridge.config import check_config, field_schemas

        known = {s.name for s in SETTINGS}
        out: dict[str, Any] = {}
        for name, value in c.body.items():
            if name not in PORTABLE_SETTINGS:
                raise c.fail(repr(name[:60]), "is not a portable setting")
            if name not in known:
                continue  # a setting this Parley does not have (yet): ignored
            if isinstance(value, str) and _float_setting(field_schemas()[name]):
                try:
                    value = float(value)
                except ValueError:
                    raise c.fail(name, "is not a number") from None
            out[name] = value
        try:
            check_config(out, "")
        except HomeError as exc:
            raise SnapshotError(f"record {n} (settings): {exc}") from None
        self.settings = out if self.settings is None or not self.replace else {**self.settings, **out}

    def _contacts(self, n: int, body: Any) -> None:
        from bridge.resolve.contacts import valid_name

        if not isinstance(body, list) or len(body) > MAX_CONTACTS:
            raise SnapshotError(f"record {n} (contacts): must be a list of at most {MAX_CONTACTS} contacts")
        out: list[tuple[str, str]] = []
        for item in body:
            c = _Checker(n, "contacts", item)
            name = c.str("name", 100)
            if not name or not valid_name(name):
                raise c.fail("name", "is not a usable contact name")
            out.append((name, c.address("address")))
        self.contacts = out

    def _consent(self, n: int, body: Any) -> None:
        c = _Checker(n, "consent", body)
        peer = c.address("peer")
        row = (peer, c.str("state", 16, optional=True, choices=_CONSENT_STATES),
               c.str("previous", 16, optional=True, choices=_CONSENT_STATES),
               c.int("updated_at", optional=True), c.int("held", 0, optional=True) or 0, c.int("dropped", 0, optional=True) or 0)
        self._unforget("consent", peer)
        self._queue(self._sql("consent", ("peer", "state", "previous", "updated_at", "held", "dropped"), "peer"), row)

    def _conversation(self, n: int, body: Any) -> None:
        c = _Checker(n, "conversation", body)
        peer = c.address("peer")
        self._unforget("conversation", peer)
        self._queue(self._sql("conversation", ("peer", "created_at", "updated_at"), "peer"),
                    (peer, c.int("created_at"), c.int("updated_at")))

    def _message(self, n: int, body: Any) -> None:
        c = _Checker(n, "message", body)
        mid = c.str("id", 32, pattern=_ID)
        peer, sender, recipient = c.address("peer"), c.address("sender"), c.address("recipient")
        direction = c.str("direction", 3, choices=frozenset({"in", "out"}))
        me = self.meta["address"] if self.meta else ""
        if peer not in (sender, recipient) or (direction == "out" and sender != me) or (direction == "in" and recipient != me):
            raise SnapshotError(f"record {n} (message): sender, recipient and peer do not fit a message of {me}")
        row = (
            mid, peer, sender, recipient, c.str("text", MAX_TEXT), c.int("sent_at"), c.int("received_at"), direction,
            c.str("state", 8, choices=_MSG_STATES), c.flag("read"), c.int("claimed_sent_at", optional=True),
            c.str("kind", 16, choices=_KINDS), c.str("content_type", 64, pattern=_CONTENT_TYPE),
            c.bytes("extra", MAX_EXTRA, optional=True), c.str("reply_to", 32, optional=True, pattern=_ID),
            c.int("edited_at", optional=True), c.flag("deleted"), c.int("read_at", optional=True),
        )
        extra = row[13]
        if extra is not None:  # the outbox rebuilds a queued content from it (bridge/engine/contents.py rebuild)
            try:
                wire.decode(extra, max_size=MAX_EXTRA)
            except wire.WireError:
                raise c.fail("extra", "is not canonical CBOR") from None
        self._unforget("message", mid)
        self._queue(self._sql("message", _MSG_COLS, "id"), row)

    def _reaction(self, n: int, body: Any) -> None:
        c = _Checker(n, "reaction", body)
        emoji = c.str("emoji", 64)
        if not emoji or len(emoji.encode("utf-8")) > 64:
            raise c.fail("emoji", "must be 1 to 64 bytes")
        row = (c.str("message_id", 32, pattern=_ID), c.address("reactor"), emoji, c.int("at"))
        self._unforget("reaction", f"{row[0]}:{row[1]}:{row[2]}")
        self._queue(self._sql("reaction", ("message_id", "reactor", "emoji", "at"), "message_id, reactor, emoji"), row)

    def _attachment(self, n: int, body: Any) -> None:
        from bridge.engine.attachments import check_mime, check_name
        from bridge.engine.engine import BadInput
        from bridge.engine import contents

        c = _Checker(n, "attachment", body)
        aid = c.str("id", 40, pattern=_ATT_ID)
        m = _ATT_ID.fullmatch(aid or "")
        mid = c.str("message_id", 32, pattern=_ID)
        idx = c.int("idx", 0, 99)
        if m is None or m.group(1) != mid or int(m.group(2)) != idx:
            raise c.fail("id", "is not <message_id>-<idx>")
        try:
            name = check_name(c.str("name", 255))
            mime = check_mime(c.str("mime", 127))
        except BadInput as exc:
            raise SnapshotError(f"record {n} (attachment): {exc}") from None
        size = c.int("size", 0, MAX_FILE)
        sha = c.str("sha256", 64, pattern=_HEX64)
        key = c.bytes("key", 32, length=32, optional=True)
        row = (
            aid, mid, idx, name, size, mime, sha, c.str("url", MAX_STR, optional=True),
            None if key is None else contents.seal_key(_SealOnly(self.secrets), aid, key),  # resealed for this home
            c.bytes("nonce", 12, length=12, optional=True), c.bytes("digest", 32, length=32, optional=True),
            c.str("state", 12, choices=_ATT_STATES), c.bytes("thumb", MAX_THUMB, optional=True), c.str("error", MAX_STR, optional=True),
        )
        if aid in self.parts:  # the same attachment again: its file (if any) comes again
            self._drop_part(aid)
        self.att_sizes[aid] = (size, sha or "")
        self._unforget("attachment", aid)
        self._queue(self._sql("attachment", _ATT_COLS, "id"), row)

    def _file(self, n: int, body: Any) -> None:
        c = _Checker(n, "file", body)
        aid = c.str("attachment", 40, pattern=_ATT_ID) or ""
        offset = c.int("offset", 0, MAX_FILE)
        data = c.bytes("data", FILE_PIECE)
        if aid not in self.att_sizes:
            raise SnapshotError(f"record {n} (file): no attachment {aid} before it")
        size = self.att_sizes[aid][0]
        part = self.parts.get(aid)
        if part is None:
            if offset != 0:
                raise c.fail("offset", "must start at 0")
            self.att_dir.mkdir(mode=0o700, exist_ok=True)
            part = self.parts[aid] = _PartFile(self.att_dir, aid)
        if offset != part.size:
            raise c.fail("offset", f"must be {part.size} (the pieces of a file come in order)")
        if part.size + len(data or b"") > size:
            raise SnapshotError(f"record {n} (file): more bytes than attachment {aid}'s size")
        part.write(data or b"")

    def _standby(self, n: int, body: Any) -> None:
        from bridge.backup.state import StateError, check_standby

        try:
            self.standby = check_standby(body)
        except StateError as exc:
            raise SnapshotError(f"record {n} (standby): {exc}") from None

    def _forget(self, n: int, body: Any) -> None:
        c = _Checker(n, "forget", body)
        tag = c.str("tag", 16, choices=_FORGETTABLE) or ""
        key = c.str("key", 256) or ""
        if key.startswith(tag + ":"):
            key = key[len(tag) + 1:]
        if not self.replace:
            raise SnapshotError(f"record {n} (forget): only remote deltas (imported with replace) may delete")
        self._flush()
        if tag in ("consent", "conversation"):
            c.body["peer"] = key
            c.address("peer")
            self.stage.execute(f"DELETE FROM {tag} WHERE peer = ?", (key,))
        elif tag == "message":
            if not _ID.fullmatch(key):
                raise c.fail("key", "is not a message id")
            self.stage.execute("DELETE FROM message WHERE id = ?", (key,))
        elif tag == "attachment":
            if not _ATT_ID.fullmatch(key):
                raise c.fail("key", "is not an attachment id")
            self.stage.execute("DELETE FROM attachment WHERE id = ?", (key,))
            self.att_sizes.pop(key, None)
            self._drop_part(key)
        else:
            parts = key.split(":", 2)
            if len(parts) != 3 or not _ID.fullmatch(parts[0]) or _checksummed(parts[1]) != parts[1] or not parts[2]:
                raise c.fail("key", "is not <message id>:<reactor>:<emoji>")
            self.stage.execute("DELETE FROM reaction WHERE message_id = ? AND reactor = ? AND emoji = ?", tuple(parts))
        self.stage.execute("INSERT OR IGNORE INTO forget(tag, key) VALUES (?, ?)", (tag, key))

    def _end(self, n: int, body: Any) -> None:
        c = _Checker(n, "end", body)
        if c.int("records", 0) != n:
            raise SnapshotError(f"the end record counts {body.get('records')} records, the archive has {n}")
        self.ended = True

    # -- files

    def _drop_part(self, aid: str) -> None:
        part = self.parts.pop(aid, None)
        if part is not None:
            part.close()
            part.tmp.unlink(missing_ok=True)

    def cleanup(self) -> None:
        for aid in list(self.parts):
            self._drop_part(aid)
        if self.stage is not None:
            with contextlib.suppress(Exception):
                self.stage.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(self.scratch) + suffix).unlink(missing_ok=True)

    # -- the one transaction

    def finish(self, progress: Callable[[int], None] | None) -> ImportReport:
        if self.meta is None:
            raise SnapshotError("the archive has no records")
        if not self.ended:
            raise SnapshotError("the archive ends without its end record")
        self._flush()
        rep = self.report
        rep.records = self.n
        # Files: complete and matching their attachment's sha256, else not kept (the attachment is
        # fetched again from its relay).
        complete: set[str] = set()
        for aid, part in list(self.parts.items()):
            part.close()
            size, sha = self.att_sizes.get(aid, (-1, ""))
            if part.size == size and part.hash.hexdigest() == sha:
                complete.add(aid)
            else:
                rep.files_skipped += 1
                self._drop_part(aid)
        if complete:
            self.stage.executemany("UPDATE attachment SET file = 1 WHERE id = ?", [(a,) for a in complete])
        self.stage.execute("COMMIT")
        new_contacts, new_config = self._files_plan()
        standby_blob = None
        conn = sqlite3.connect(self.store.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        installed: list[tuple[Path, Path]] = []
        removed: list[str] = []
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("ATTACH DATABASE ? AS s", (str(self.scratch),))
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = self._apply(conn, complete, installed)
                if self.standby is not None:
                    from bridge.backup import state

                    have = conn.execute("SELECT 1 FROM meta WHERE key = ?", (state.STANDBY_META,)).fetchone()
                    if have is None:
                        standby_blob = state.standby_blob(self.secrets, self.standby)
                        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (state.STANDBY_META, standby_blob))
                        rep.standby = True
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
        # Committed: the files take their places, then contacts.json and config.json.
        for tmp, final in installed:
            os.replace(tmp, final)
            self.parts.pop(final.name, None)
        for path in removed:
            with contextlib.suppress(OSError):
                Path(path).unlink()
        if new_contacts is not None:
            write_private(self.home.contacts_file, json.dumps(dict(sorted(new_contacts.items())), indent=2).encode() + b"\n")
        if new_config is not None:
            self.home.update_config(**new_config)
        if progress is not None:
            progress(self.n)
        return rep

    def _files_plan(self) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
        """contacts.json and config.json changes, computed (and checked) before the transaction."""
        from bridge.config import check_config
        from bridge.resolve.contacts import Contacts

        new_contacts = None
        if self.contacts:
            have = Contacts(self.home.contacts_file).all()
            lower = {k.lower(): k for k in have}
            merged = dict(have)
            for name, address in self.contacts:
                existing = lower.get(name.lower())
                if existing is None:
                    merged[name] = address
                    lower[name.lower()] = name
                    self.report.contacts += 1
                elif self.replace and merged[existing] != address:
                    merged[existing] = address
                    self.report.contacts += 1
            new_contacts = merged if merged != have else None
        new_config = None
        if self.settings:
            current = self.home.config_file_values()
            changes = {
                k: v for k, v in self.settings.items()
                if (self.replace or (k not in current and k not in RELAY_SETTINGS)) and current.get(k, _MISSING) != v
            }
            if changes:
                check_config({**current, **changes}, str(self.home.config_file))
                new_config = changes
                self.report.settings = sorted(changes)
        return new_contacts, new_config

    def _apply(self, conn: sqlite3.Connection, complete: set[str], installed: list[tuple[Path, Path]]) -> list[str]:
        """The staged rows into the store, in the caller's transaction. Returns plaintext files to remove
        after the commit (forgotten attachments)."""
        rep = self.report
        removed: list[str] = []
        # forget (remote deltas): what a later record did not bring back
        for r in conn.execute("SELECT tag, key FROM s.forget").fetchall():
            tag, key = r["tag"], r["key"]
            if tag == "message":
                removed += [p["path"] for p in conn.execute("SELECT path FROM attachments WHERE message_id = ? AND path IS NOT NULL", (key,))]
                for sql in ("DELETE FROM reactions WHERE message_id = ?", "DELETE FROM attachments WHERE message_id = ?",
                            "DELETE FROM outbox_envelopes WHERE message_id = ?", "DELETE FROM outbox_deliveries WHERE message_id = ?",
                            "DELETE FROM outbox WHERE message_id = ?", "DELETE FROM message_flags WHERE message_id = ?",
                            "DELETE FROM sender_rechecks WHERE message_id = ?"):
                    conn.execute(sql, (key,))
                rep.forgotten += conn.execute("DELETE FROM messages WHERE id = ?", (key,)).rowcount
            elif tag == "attachment":
                removed += [p["path"] for p in conn.execute("SELECT path FROM attachments WHERE id = ? AND path IS NOT NULL", (key,))]
                rep.forgotten += conn.execute("DELETE FROM attachments WHERE id = ?", (key,)).rowcount
            elif tag == "reaction":
                mid, reactor, emoji = key.split(":", 2)
                rep.forgotten += conn.execute(
                    "DELETE FROM reactions WHERE message_id = ? AND reactor = ? AND emoji = ?", (mid, reactor, emoji)).rowcount
            elif tag == "consent":
                rep.forgotten += conn.execute("DELETE FROM consent WHERE peer = ?", (key,)).rowcount
            elif tag == "conversation":
                rep.forgotten += conn.execute(
                    "DELETE FROM conversations WHERE peer = ? AND NOT EXISTS (SELECT 1 FROM messages WHERE peer = ?)", (key, key)).rowcount
        upsert = self.replace
        # conversations: the archive's, then any its messages need
        before = conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
        conn.execute(
            "INSERT INTO conversations(peer, created_at, updated_at) SELECT peer, created_at, updated_at FROM s.conversation WHERE 1 "
            + ("ON CONFLICT(peer) DO UPDATE SET created_at = excluded.created_at, updated_at = excluded.updated_at" if upsert
               else "ON CONFLICT(peer) DO NOTHING")
        )
        conn.execute(
            "INSERT INTO conversations(peer, created_at, updated_at) SELECT peer, MIN(received_at), MAX(received_at) FROM s.message "
            "GROUP BY peer ON CONFLICT(peer) DO NOTHING"
        )
        rep.conversations = conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] - before
        # consent
        before = conn.total_changes
        conn.execute(
            "INSERT INTO consent(peer, state, previous, updated_at, held, dropped) SELECT peer, state, previous, updated_at, held, dropped "
            "FROM s.consent WHERE 1 "
            + ("ON CONFLICT(peer) DO UPDATE SET state = excluded.state, previous = excluded.previous, updated_at = excluded.updated_at, "
               "held = excluded.held, dropped = excluded.dropped" if upsert else "ON CONFLICT(peer) DO NOTHING")
        )
        rep.consent = conn.total_changes - before
        # messages, in the archive's order (seq keeps it); a queued one new here is queued again
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_new(id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.import_new")
        conn.execute("INSERT INTO temp.import_new(id) SELECT id FROM s.message WHERE id NOT IN (SELECT id FROM main.messages)")
        added = conn.execute("SELECT COUNT(*) FROM temp.import_new").fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM s.message").fetchone()[0]
        cols = ", ".join(_MSG_COLS)
        if upsert:  # an existing row is updated in place (its seq, so its place in the conversation, stays)
            sets = ", ".join(f"{c} = t.{c}" for c in _MSG_COLS if c != "id")
            conn.execute(f"UPDATE messages SET {sets} FROM s.message AS t WHERE messages.id = t.id")
        # only new rows are inserted: a conflicting INSERT would still use up AUTOINCREMENT numbers
        conn.execute(f"INSERT INTO messages({cols}) SELECT {cols} FROM s.message WHERE id IN (SELECT id FROM temp.import_new) ORDER BY ord")
        rep.messages_added = added
        if upsert:
            rep.messages_replaced = total - added
        else:
            rep.messages_skipped = total - added
        rep.requeued = conn.execute(
            "INSERT INTO outbox(message_id, state) SELECT m.id, 'pending' FROM s.message m JOIN temp.import_new n ON n.id = m.id "
            "WHERE m.state = 'queued' ORDER BY m.ord ON CONFLICT DO NOTHING"
        ).rowcount
        # reactions on messages the store has
        known = conn.execute(
            "SELECT COUNT(*) FROM s.reaction WHERE message_id IN (SELECT id FROM main.messages)").fetchone()[0]
        rep.reactions_skipped = conn.execute("SELECT COUNT(*) FROM s.reaction").fetchone()[0] - known
        rep.reactions = conn.execute(
            "INSERT INTO reactions(message_id, reactor, emoji, at) SELECT message_id, reactor, emoji, at FROM s.reaction "
            "WHERE message_id IN (SELECT id FROM main.messages) ORDER BY ord "
            + ("ON CONFLICT DO UPDATE SET at = excluded.at" if upsert else "ON CONFLICT DO NOTHING")
        ).rowcount
        # attachments (keys already resealed); a file is installed where the store has none
        existing = {r["id"]: r for r in conn.execute(
            "SELECT a.id, a.path FROM attachments a JOIN s.attachment t ON t.id = a.id")}
        now = now_ms()
        acols = ", ".join(_ATT_COLS)
        for r in conn.execute(f"SELECT {acols}, file FROM s.attachment WHERE message_id IN (SELECT id FROM main.messages) ORDER BY ord").fetchall():
            aid = r["id"]
            old = existing.get(aid)
            old_file = old is not None and bool(old["path"]) and os.path.isfile(old["path"])
            path = None
            if r["file"] and aid in complete and not old_file:
                final = self.att_dir / aid
                installed.append((self.parts[aid].tmp, final))
                path = str(final)
            state = r["state"]
            if path is None and state in ("done", "downloading"):
                state = "pending"  # no file here: the downloader fetches it again
            values = [r[c] for c in _ATT_COLS]
            values[_ATT_COLS.index("state")] = state
            if old is None:
                conn.execute(
                    f"INSERT INTO attachments({acols}, path, updated_at) VALUES ({', '.join('?' * len(_ATT_COLS))}, ?, ?)",
                    (*values, path, now),
                )
                rep.attachments += 1
            elif upsert or path is not None:
                if not upsert:  # kept as it is, but it gets the file it lacked
                    conn.execute("UPDATE attachments SET path = ?, state = CASE WHEN state = 'local' THEN 'local' ELSE 'done' END, "
                                 "updated_at = ? WHERE id = ?", (path, now, aid))
                else:
                    if old_file:
                        values[_ATT_COLS.index("state")] = conn.execute(
                            "SELECT state FROM attachments WHERE id = ?", (aid,)).fetchone()[0]
                    conn.execute(
                        f"UPDATE attachments SET {', '.join(f'{c} = ?' for c in _ATT_COLS[1:])}, path = COALESCE(?, path), updated_at = ? "
                        "WHERE id = ?", (*values[1:], path, now, aid),
                    )
            if path is not None:
                rep.files += 1
        return removed


_MISSING = object()


def _float_setting(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "nullable":
        schema = schema.get("schema", {})
    return schema.get("type") == "float"


def import_records(
    home: Home,
    store: Store,
    secrets: "Secrets",
    records: Iterable[Any],
    *,
    replace: bool = False,
    expect_address: str | None = None,
    backup_keys: "BackupKeys | None" = None,
    backup_id: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``records`` (§12.3) into this home. Nothing changes unless the whole stream reads and checks
    out: ONE write transaction after the iterator is exhausted without error; files renamed into
    ``<home>/attachments`` after the commit (temporary files removed on any failure).

    ``expect_address`` (default: the home's own address when identity.json exists): the archive's
    ``meta.address`` must be it ("this archive belongs to 0x…, this home is 0x…"). With ``backup_keys``
    and ``backup_id`` (the archive header's), the id must be the one these keys give that address.
    ``progress(records read)`` is called every 1000 records.

    ``wallet``, ``identity`` and ``standby`` are not applied to an existing home, except that a ``standby``
    is kept when the home has none; a ``wallet`` record must hold this address's key.

    Raises:
        SnapshotError: a record fails a check (one line naming it); the archive reader's ArchiveError as
            raised; StoreError / HomeError / OSError: the home could not be written (nothing changed).
    """
    if expect_address is None and home.identity_file.exists():
        expect_address = home.identity().get("address")
    try:
        imp = _Importer(home, store, secrets, replace=replace, expect_address=expect_address, backup_keys=backup_keys, backup_id=backup_id)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot make the import's scratch database next to the store: {exc}") from None
    try:
        for record in records:
            imp.add(record)
            if progress is not None and imp.n % 1000 == 0:
                progress(imp.n)
        return imp.finish(progress)
    except sqlite3.Error as exc:
        raise SnapshotError(f"the import could not be staged or applied: {exc}") from None
    finally:
        imp.cleanup()
