"""The recovery key (docs/PROTOCOL.md §12.1): what the user writes down, and the keys derived from it.

A recovery key is 64 characters of ``[a-z0-9]``: 60 uniformly random characters (about 310 bits) and a
4-character checksum. It is generated here from ``secrets`` and **never** derived from a wallet signature
(any site that got the user to sign the same text would get the key). HKDF-SHA256 with dated labels
derives from it:

* ``backup_key``: wraps the random data key of every archive (``bridge/backup/archive.py``);
* ``auth_private``/``auth_public``: an Ed25519 key; ``vault`` (the public key in hex) names the backup
  space on a relay, which requires a signature by this key to store and fetch objects;
* ``id_key``: from which ``backup_id(address)`` is made, bound to the wallet's checksummed address.

Checksum: ``SHA-256(CHECKSUM_LABEL ‖ ASCII of the 60 characters)``, first 4 bytes as a big-endian
integer, modulo 36⁴, written as 4 base-36 digits (most significant first, alphabet ``0-9a-z``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from bridge.crypto import primitives as P
from bridge.protocol import wire

__all__ = [
    "RecoveryKeyError",
    "ALPHABET",
    "KEY_CHARS",
    "RANDOM_CHARS",
    "CHECKSUM_CHARS",
    "CHECKSUM_LABEL",
    "BACKUP_KEY_LABEL",
    "AUTH_KEY_LABEL",
    "ID_KEY_LABEL",
    "BACKUP_ID_LABEL",
    "generate",
    "checksum",
    "parse",
    "display",
    "BackupKeys",
    "derive",
]

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
KEY_CHARS = 64
RANDOM_CHARS = 60
CHECKSUM_CHARS = 4
#: What parse() ignores between characters (case is folded too).
SEPARATORS = frozenset(" \t\r\n-")

CHECKSUM_LABEL = b"parley/2026-11-30/recovery-key-checksum"
BACKUP_KEY_LABEL = b"parley/2026-11-30/backup-key"
AUTH_KEY_LABEL = b"parley/2026-11-30/backup-auth-key"
ID_KEY_LABEL = b"parley/2026-11-30/backup-id-key"
BACKUP_ID_LABEL = b"parley/2026-11-30/backup-id"

_ACCEPTED = frozenset(ALPHABET) | frozenset(ALPHABET.upper())
#: parse() refuses text longer than this outright (a pasted file is not a key).
MAX_INPUT = 1024


class RecoveryKeyError(ValueError):
    """Text that is not a recovery key; the message is one line naming what is wrong."""


def _random_chars(n: int) -> str:
    """``n`` characters uniform over the 36-character alphabet: one random byte each, bytes ≥ 252
    (= 7·36) rejected and redrawn, the rest taken modulo 36."""
    out: list[str] = []
    while len(out) < n:
        for b in secrets.token_bytes(n - len(out) + 8):
            if b < 252 and len(out) < n:
                out.append(ALPHABET[b % 36])
    return "".join(out)


def checksum(body: str) -> str:
    """The 4 checksum characters of the 60 random characters ``body`` (canonical, lowercase)."""
    value = int.from_bytes(hashlib.sha256(CHECKSUM_LABEL + body.encode("ascii")).digest()[:4], "big") % 36**CHECKSUM_CHARS
    digits = []
    for _ in range(CHECKSUM_CHARS):
        value, d = divmod(value, 36)
        digits.append(ALPHABET[d])
    return "".join(reversed(digits))


def generate() -> str:
    """A new recovery key in canonical form: 64 lowercase characters, no separators."""
    body = _random_chars(RANDOM_CHARS)
    return body + checksum(body)


def parse(text: str) -> str:
    """The canonical form of a typed recovery key.

    Upper case, spaces, tabs, dashes and line breaks are accepted anywhere; nothing else is.
    Checks, in this order: text, length of the input (≤ 1024), each character (position counted
    from 1 among the key's characters, separators not counted), number of characters (64), checksum.

    Raises:
        RecoveryKeyError: one line saying what is wrong.
    """
    if not isinstance(text, str):
        raise RecoveryKeyError("a recovery key must be text")
    if len(text) > MAX_INPUT:
        raise RecoveryKeyError(f"a recovery key has {KEY_CHARS} characters; this text has over {MAX_INPUT}")
    chars: list[str] = []
    for c in text:
        if c in SEPARATORS:
            continue
        if c not in _ACCEPTED:
            shown = repr(c) if c.isprintable() else f"U+{ord(c):04X}"
            raise RecoveryKeyError(f"bad character {shown} at position {len(chars) + 1} of the recovery key "
                                   f"(only letters a-z and digits 0-9)")
        chars.append(c.lower())
    if len(chars) != KEY_CHARS:
        raise RecoveryKeyError(f"a recovery key has {KEY_CHARS} characters, this one has {len(chars)}")
    key = "".join(chars)
    if checksum(key[:RANDOM_CHARS]) != key[RANDOM_CHARS:]:
        raise RecoveryKeyError("recovery key checksum mismatch: probably a typo")
    return key


def display(key: str) -> str:
    """How the key is shown to the user: 16 groups of 4, separated by spaces.

    Raises:
        RecoveryKeyError: not a valid key.
    """
    key = parse(key)
    return " ".join(key[i:i + 4] for i in range(0, KEY_CHARS, 4))


def _hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return P.hkdf_sha256(ikm, salt=None, info=info, length=length)


@dataclass(frozen=True, repr=False)
class BackupKeys:
    """The keys a recovery key derives (§12.1). ``repr`` shows only the vault (a public key)."""

    backup_key: bytes
    auth_private: bytes
    auth_public: bytes
    id_key: bytes

    def __post_init__(self) -> None:
        for name in ("backup_key", "auth_private", "auth_public", "id_key"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 32:
                raise ValueError(f"BackupKeys.{name} must be 32 bytes")

    def __repr__(self) -> str:
        return f"BackupKeys(vault={self.vault})"

    @property
    def vault(self) -> str:
        """The relay's name for this backup space: the Ed25519 public key, 64 lowercase hex digits."""
        return self.auth_public.hex()

    def backup_id(self, address: str) -> bytes:
        """16 bytes: ``HKDF-SHA256(ikm = id_key, salt = none, info = BACKUP_ID_LABEL ‖ ASCII of the
        EIP-55 checksummed address, L = 16)``. Any spelling of the same address gives the same id.

        Raises:
            ValueError: ``address`` is not an EVM address (0x + 40 hex digits, valid EIP-55 if mixed case).
        """
        from bridge.identity import checksum_address  # lazy: keccak is only needed here

        try:
            checked = checksum_address(address)
        except ValueError:
            raise ValueError("a backup id is made for a wallet address (0x followed by 40 hex digits)") from None
        return _hkdf(self.id_key, BACKUP_ID_LABEL + checked.encode("ascii"), 16)

    def to_bytes(self) -> bytes:
        """Canonical CBOR ``[1, backup_key, auth_private, id_key]`` (the public key is recomputed)."""
        return wire.encode([1, self.backup_key, self.auth_private, self.id_key])

    @classmethod
    def from_bytes(cls, data: bytes) -> "BackupKeys":
        """Raises:
        ValueError: not what :meth:`to_bytes` writes.
        """
        try:
            obj = wire.expect_array(wire.decode(data, max_size=256), 1, 4)
            backup_key, auth_private, id_key = (wire.expect_bytes(obj[i], 32, n) for i, n in
                                                ((1, "backup_key"), (2, "auth_private"), (3, "id_key")))
        except wire.WireError as exc:
            raise ValueError(f"stored backup keys are malformed: {exc}") from None
        return cls(backup_key, auth_private, P.ed25519_public(auth_private), id_key)


def derive(key: str) -> BackupKeys:
    """The keys of a recovery key (canonical or typed form): HKDF-SHA256 with ``ikm`` = the 64 ASCII
    characters of the canonical key, no salt (32 zero bytes), L = 32, and ``info`` = one dated label each.

    Raises:
        RecoveryKeyError: not a valid recovery key.
    """
    ikm = parse(key).encode("ascii")
    auth_private = _hkdf(ikm, AUTH_KEY_LABEL)
    return BackupKeys(
        backup_key=_hkdf(ikm, BACKUP_KEY_LABEL),
        auth_private=auth_private,
        auth_public=P.ed25519_public(auth_private),
        id_key=_hkdf(ikm, ID_KEY_LABEL),
    )
