"""The local backup state (issue 15; PROTOCOL.md §12.3): the keys derived from the recovery key, and the
standby installation's record, sealed with the installation's storage key in the store's ``meta`` table.

* ``backup_keys``: :meth:`BackupKeys.to_bytes` sealed with AES-256-GCM under ``secrets.storage_key``,
  AAD ``b"parley-meta/backup_keys"`` (the meta key it is stored under). The recovery key string itself is
  never stored: it is shown once, when it is created (``parley backup export``, ``parley backup remote on``,
  the popup's "Set up backup").
* ``backup_key_state``: plain JSON ``{"confirmed": bool, "created_at": ms}`` (nothing secret).
* ``backup_standby``: canonical CBOR of the standby record (bridge/backup/standby.py) sealed the same way,
  AAD ``b"parley-meta/backup_standby"``.

A meta row that does not open (altered, or another storage key) is an error, never silently ignored.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from bridge.crypto import primitives
from bridge.protocol import wire
from bridge.store import Store, now_ms

if TYPE_CHECKING:
    from bridge.backup.recovery import BackupKeys
    from bridge.keys import Secrets

__all__ = [
    "StateError",
    "KEYS_META",
    "KEY_STATE_META",
    "STANDBY_META",
    "backup_keys",
    "create_recovery_key",
    "adopt_recovery_key",
    "key_state",
    "confirm_key",
    "load_standby",
    "save_standby",
    "seal_meta",
]

KEYS_META = "backup_keys"
KEY_STATE_META = "backup_key_state"
STANDBY_META = "backup_standby"
#: Largest standby record accepted (encoded CBOR).
MAX_STANDBY_BYTES = 1 << 20


class StateError(Exception):
    """The backup state cannot be read or changed (one line)."""


def _aad(meta_key: str) -> bytes:
    return b"parley-meta/" + meta_key.encode()


def seal_meta(secrets: "Secrets", meta_key: str, plaintext: bytes) -> bytes:
    """``plaintext`` sealed with the storage key for the meta row ``meta_key`` (nonce ‖ ciphertext ‖ tag)."""
    return primitives.aes256_gcm_encrypt(secrets.storage_key, plaintext, _aad(meta_key))


def _open_meta(store: Store, secrets: "Secrets", meta_key: str) -> bytes | None:
    blob = store.get_meta(meta_key)
    if blob is None:
        return None
    try:
        return primitives.aes256_gcm_decrypt(secrets.storage_key, bytes(blob), _aad(meta_key))
    except (primitives.DecryptError, ValueError):
        raise StateError(f"the stored {meta_key.replace('_', ' ')} do not open with this installation's storage key") from None


def _set(c: sqlite3.Connection, key: str, value: bytes) -> None:
    c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


# --- the recovery key -----------------------------------------------------------------------------


def backup_keys(store: Store, secrets: "Secrets") -> "BackupKeys | None":
    """The keys derived from this home's recovery key, or None when it has none yet."""
    raw = _open_meta(store, secrets, KEYS_META)
    if raw is None:
        return None
    from bridge.backup.recovery import BackupKeys

    try:
        return BackupKeys.from_bytes(raw)
    except Exception:
        raise StateError("the stored backup keys are malformed") from None


def _store_keys(store: Store, secrets: "Secrets", keys: "BackupKeys", *, confirmed: bool, replace: bool) -> None:
    with store.write() as c:
        if not replace and c.execute("SELECT 1 FROM meta WHERE key = ?", (KEYS_META,)).fetchone() is not None:
            raise StateError("a recovery key exists")
        _set(c, KEYS_META, seal_meta(secrets, KEYS_META, keys.to_bytes()))
        _set(c, KEY_STATE_META, json.dumps({"confirmed": confirmed, "created_at": now_ms()}).encode())


def create_recovery_key(store: Store, secrets: "Secrets", *, replace: bool = False, key: str | None = None) -> str:
    """Make a recovery key (or take ``key``, a fresh one from :func:`recovery.generate` that was already
    used, e.g. to wrap the archive being exported), store ONLY the keys derived from it (sealed), and
    return it: the caller shows it once. Not confirmed yet (:func:`confirm_key`).

    Raises:
        StateError: a key exists and ``replace`` is false ("a recovery key exists").
    """
    from bridge.backup import recovery

    key = recovery.generate() if key is None else recovery.parse(key)
    _store_keys(store, secrets, recovery.derive(key), confirmed=False, replace=replace)
    return key


def adopt_recovery_key(store: Store, secrets: "Secrets", key: str) -> "BackupKeys":
    """Keep using the recovery key the user typed (restore, import): its derived keys replace any stored
    ones, confirmed (the user has it in hand).

    Raises:
        RecoveryKeyError: ``key`` is not a well-formed recovery key.
    """
    from bridge.backup import recovery

    keys = recovery.derive(recovery.parse(key))
    _store_keys(store, secrets, keys, confirmed=True, replace=True)
    return keys


def key_state(store: Store) -> dict[str, Any]:
    """``{"has_key": bool, "confirmed": bool, "created_at": ms | None}`` (no passphrase needed)."""
    has = store.get_meta(KEYS_META) is not None
    info: dict[str, Any] = {}
    raw = store.get_meta(KEY_STATE_META)
    if raw is not None:
        try:
            info = json.loads(bytes(raw))
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
    created = info.get("created_at")
    return {
        "has_key": has,
        "confirmed": bool(has and info.get("confirmed") is True),
        "created_at": created if has and type(created) is int else None,
    }


def confirm_key(store: Store, secrets: "Secrets", typed: str) -> bool:
    """The confirmation step: True iff ``typed`` is the stored recovery key (any accepted spelling);
    then the key is marked confirmed. A malformed or different key: False, nothing changed."""
    from bridge.backup import recovery

    stored = backup_keys(store, secrets)
    if stored is None:
        return False
    try:
        candidate = recovery.derive(recovery.parse(typed))
    except recovery.RecoveryKeyError:
        return False
    if not hmac.compare_digest(candidate.to_bytes(), stored.to_bytes()):
        return False
    with store.write() as c:
        raw = c.execute("SELECT value FROM meta WHERE key = ?", (KEY_STATE_META,)).fetchone()
        try:
            info = json.loads(bytes(raw[0])) if raw is not None else {}
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        info["confirmed"] = True
        if type(info.get("created_at")) is not int:
            info["created_at"] = now_ms()
        _set(c, KEY_STATE_META, json.dumps(info).encode())
    return True


# --- the standby installation's record ----------------------------------------------------------


def check_standby(record: Any) -> dict[str, Any]:
    """A standby record as carried in archives: a map with string keys, canonical CBOR of at most 1 MiB.

    Raises:
        StateError
    """
    if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        raise StateError("the standby record must be a map with string keys")
    try:
        blob = wire.encode(record)
        if len(blob) > MAX_STANDBY_BYTES:
            raise StateError("the standby record exceeds 1 MiB")
        wire.decode(blob, max_size=MAX_STANDBY_BYTES)
    except wire.WireError as exc:
        raise StateError(f"the standby record is not plain CBOR: {exc}") from None
    return record


def standby_blob(secrets: "Secrets", record: dict[str, Any]) -> bytes:
    """The sealed meta value of ``record`` (used by :func:`save_standby` and by an import's transaction)."""
    return seal_meta(secrets, STANDBY_META, wire.encode(check_standby(record)))


def load_standby(store: Store, secrets: "Secrets") -> dict[str, Any] | None:
    """The standby installation's record (bridge/backup/standby.py), or None."""
    raw = _open_meta(store, secrets, STANDBY_META)
    if raw is None:
        return None
    try:
        obj = wire.decode(raw, max_size=MAX_STANDBY_BYTES)
    except wire.WireError:
        raise StateError("the stored standby record is malformed") from None
    return check_standby(obj)


def save_standby(store: Store, secrets: "Secrets", record: dict[str, Any] | None) -> None:
    """Keep ``record`` (sealed) as the standby installation's; None forgets it."""
    with store.write() as c:
        if record is None:
            c.execute("DELETE FROM meta WHERE key = ?", (STANDBY_META,))
        else:
            _set(c, STANDBY_META, standby_blob(secrets, record))
