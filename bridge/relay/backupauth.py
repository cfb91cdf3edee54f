"""Signed requests of the relay's backup space (docs/PROTOCOL.md §7 "Backups (1.3)").

A vault is an Ed25519 public key (64 lowercase hex digits); every request to it is signed by its
private key over ``encode([1, "parley-backup", method, vault, name, time, nonce, sha256(body)])``.
Shared by the relay (checks) and :class:`bridge.relay.client.RelayClient` (signs).
"""

from __future__ import annotations

import hashlib
import re
import time as _time

from bridge.crypto import primitives as P
from bridge.protocol import wire

__all__ = [
    "BACKUP_CONTEXT",
    "NONCE_BYTES",
    "MAX_OBJECT",
    "BackupAuthError",
    "check_vault",
    "check_name",
    "request_message",
    "signed_headers",
    "vault_of",
]

BACKUP_CONTEXT = "parley-backup"
NONCE_BYTES = 16
#: the largest object a relay stores (protocol limit; a client refuses a larger answer)
MAX_OBJECT = 64 * 1024 * 1024
_VAULT = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class BackupAuthError(ValueError):
    """A vault or object name that is not well formed (the message says which)."""


def check_vault(value: str) -> str:
    if not isinstance(value, str) or not _VAULT.fullmatch(value):
        raise BackupAuthError("a vault is 64 lowercase hex digits (an Ed25519 public key)")
    return value


def check_name(value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BackupAuthError("an object name is 1-64 characters of [a-z0-9._-], starting with a letter or digit")
    return value


def request_message(method: str, vault: str, name: str, t: int, nonce: bytes, body_sha256: bytes) -> bytes:
    """The bytes signed for one request (``name`` is ``""`` for the vault's listing)."""
    return wire.encode([1, BACKUP_CONTEXT, method, vault, name, int(t), bytes(nonce), bytes(body_sha256)])


def vault_of(auth_private: bytes) -> str:
    """The vault (hex public key) of an Ed25519 seed."""
    return P.ed25519_public(auth_private).hex()


def signed_headers(auth_private: bytes, method: str, name: str, body_sha256: bytes | None = None, *, now: float | None = None) -> dict[str, str]:
    """The four headers of a signed request (``body_sha256`` default: that of an empty body)."""
    vault = vault_of(auth_private)
    t = int(_time.time() if now is None else now)
    nonce = P.random_bytes(NONCE_BYTES)
    digest = hashlib.sha256(b"").digest() if body_sha256 is None else body_sha256
    sig = P.ed25519_sign(auth_private, request_message(method, vault, name, t, nonce, digest))
    return {
        "X-Parley-Time": str(t),
        "X-Parley-Nonce": wire.b64e(nonce),
        "X-Parley-Content-SHA256": wire.b64e(digest),
        "X-Parley-Signature": wire.b64e(sig),
    }
