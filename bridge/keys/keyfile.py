"""The installation's secrets and their sealed form at rest (DESIGN.md "The pieces": bridge/keys).

``Secrets`` holds four 32-byte keys: the wallet key (secp256k1), the installation's Ed25519 signing key
and X25519 identity key, and a random storage key that encrypts prekeys and sessions in the database.
They are sealed with scrypt + AES-256-GCM into a small JSON object (key file format version 1, see
docs/PROTOCOL.md §9), written atomically with mode 0600.

Secret bytes never appear in ``repr`` or in exception messages.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from bridge.crypto import primitives
from bridge.protocol import wire
from bridge.protocol.ids import installation_id as _installation_id

__all__ = [
    "KeysError",
    "WrongPassphrase",
    "KeyFileError",
    "KeyFileMissing",
    "KeyImportError",
    "Secrets",
    "SECP256K1_N",
    "KEYFILE_VERSION",
    "DEFAULT_SCRYPT_N",
    "generate_secrets",
    "seal_secrets",
    "open_secrets",
    "save_keyfile",
    "load_keyfile",
]

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KEYFILE_VERSION: Final = 1
DEFAULT_SCRYPT_N: Final = 2**17
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
#: scrypt memory is 128·r·n bytes; refuse files asking for more than this (1 GiB).
_MAX_SCRYPT_MEMORY: Final = 1 << 30
_MAX_KEYFILE_BYTES: Final = 64 * 1024
_HEX = re.compile(r"(?:[0-9a-f]{2})*", re.ASCII)
_HEADER_KEYS: Final = frozenset({"version", "kdf", "n", "r", "p", "salt", "cipher", "ciphertext"})


class KeysError(Exception):
    """Base class of every key-handling failure. Messages never contain secret material."""


class WrongPassphrase(KeysError):
    """The key file did not decrypt: wrong passphrase (or the ciphertext was altered)."""


class KeyFileError(KeysError):
    """The key file is missing, unreadable, corrupt, of an unknown version, or would be overwritten."""


class KeyFileMissing(KeyFileError):
    """There is no key file at the given path (``parley init`` has not been run)."""


class KeyImportError(KeysError):
    """A wallet key could not be imported (env var, hex, keystore); the message says which and why."""


def _valid_wallet_key(key: bytes) -> bool:
    return isinstance(key, bytes) and len(key) == 32 and 0 < int.from_bytes(key, "big") < SECP256K1_N


@dataclass(frozen=True, repr=False)
class Secrets:
    """The four secret keys of one installation.

    Raises:
        KeysError: (on construction) a key that is not 32 bytes, or a wallet key outside [1, n-1].
    """

    wallet_key: bytes
    signing_key: bytes
    identity_key: bytes
    storage_key: bytes

    def __post_init__(self) -> None:
        for name in ("wallet_key", "signing_key", "identity_key", "storage_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise KeysError(f"{name} must be 32 bytes")
        if not _valid_wallet_key(self.wallet_key):
            raise KeysError("wallet_key is not a valid secp256k1 private key")

    def __repr__(self) -> str:
        return f"Secrets(installation_id={self.installation_id!r}, <secret keys hidden>)"

    __str__ = __repr__

    # cached_property writes to the instance __dict__ directly, which a frozen dataclass permits.
    @cached_property
    def address(self) -> str:
        """The wallet's EIP-55 checksummed address."""
        from eth_keys import keys  # lazy: ~0.2 s

        return str(keys.PrivateKey(self.wallet_key).public_key.to_checksum_address())

    @cached_property
    def signing_pub(self) -> bytes:
        """The installation's Ed25519 public key."""
        return primitives.ed25519_public(self.signing_key)

    @cached_property
    def identity_pub(self) -> bytes:
        """The installation's X25519 public key."""
        return primitives.x25519_public(self.identity_key)

    @cached_property
    def installation_id(self) -> str:
        """``bridge.protocol.ids.installation_id(signing_pub, identity_pub)``."""
        return _installation_id(self.signing_pub, self.identity_pub)


def generate_secrets(wallet_key: bytes | None = None) -> Secrets:
    """Fresh installation keys and storage key; a fresh wallet key unless one is imported.

    Raises:
        KeysError: ``wallet_key`` is not a valid secp256k1 private key.
    """
    if wallet_key is None:
        wallet_key = primitives.random_bytes(32)
        while not _valid_wallet_key(wallet_key):  # probability ~2^-128
            wallet_key = primitives.random_bytes(32)
    signing_key, _ = primitives.ed25519_keypair()
    identity_key, _ = primitives.x25519_keypair()
    return Secrets(
        wallet_key=wallet_key,
        signing_key=signing_key,
        identity_key=identity_key,
        storage_key=primitives.random_bytes(32),
    )


# --- sealing -------------------------------------------------------------------

def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        raise KeysError("passphrase must be a string")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _aad(version: int, kdf: str, n: int, r: int, p: int, salt: bytes, cipher: str) -> bytes:
    return wire.encode(["parley-keyfile", version, kdf, n, r, p, salt, cipher])


def _check_scrypt(n: Any, r: Any, p: Any) -> None:
    for name, value in (("n", n), ("r", r), ("p", p)):
        if type(value) is not int or value < 1:
            raise KeyFileError(f"key file scrypt parameter {name} must be a positive integer")
    if n < 2 or n & (n - 1):
        raise KeyFileError("key file scrypt parameter n must be a power of two")
    if p > 16 or r > 64 or 128 * r * n > _MAX_SCRYPT_MEMORY:
        raise KeyFileError("key file scrypt parameters exceed the memory limit")


def seal_secrets(secrets: Secrets, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> dict[str, Any]:
    """Encrypt ``secrets`` under ``passphrase`` (NFC-normalized, UTF-8).

    Returns a JSON-able dict ``{"version": 1, "kdf": "scrypt", "n", "r", "p", "salt": hex,
    "cipher": "aes-256-gcm", "ciphertext": hex(nonce ‖ ct ‖ tag)}``; the AAD binds every header field.

    Raises:
        KeysError: bad passphrase type or scrypt parameters.
    """
    if not isinstance(secrets, Secrets):
        raise KeysError("expected Secrets")
    try:
        _check_scrypt(scrypt_n, _SCRYPT_R, _SCRYPT_P)
    except KeyFileError as exc:
        raise KeysError(str(exc)) from None
    salt = primitives.random_bytes(16)
    key = primitives.scrypt(_passphrase_bytes(passphrase), salt, n=scrypt_n, r=_SCRYPT_R, p=_SCRYPT_P, length=32)
    plaintext = wire.encode(
        [KEYFILE_VERSION, secrets.wallet_key, secrets.signing_key, secrets.identity_key, secrets.storage_key]
    )
    aad = _aad(KEYFILE_VERSION, "scrypt", scrypt_n, _SCRYPT_R, _SCRYPT_P, salt, "aes-256-gcm")
    return {
        "version": KEYFILE_VERSION,
        "kdf": "scrypt",
        "n": scrypt_n,
        "r": _SCRYPT_R,
        "p": _SCRYPT_P,
        "salt": salt.hex(),
        "cipher": "aes-256-gcm",
        "ciphertext": primitives.aes256_gcm_encrypt(key, plaintext, aad).hex(),
    }


def _hex_field(blob: dict[str, Any], name: str, lo: int, hi: int) -> bytes:
    value = blob.get(name)
    if not isinstance(value, str) or not _HEX.fullmatch(value) or not lo <= len(value) // 2 <= hi:
        raise KeyFileError(f"key file field {name!r} must be lowercase hex of {lo}..{hi} bytes")
    return bytes.fromhex(value)


def open_secrets(blob: dict[str, Any], passphrase: str) -> Secrets:
    """Decrypt a blob made by :func:`seal_secrets`.

    Raises:
        KeyFileError: not a version-1 key file, unknown kdf/cipher, bad parameters or fields, or a
            decrypted payload that is not valid secrets.
        WrongPassphrase: authentication failed (wrong passphrase, or altered ciphertext/header).
    """
    if not isinstance(blob, dict):
        raise KeyFileError("key file must be a JSON object")
    if type(blob.get("version")) is not int or blob["version"] != KEYFILE_VERSION:
        raise KeyFileError(f"unknown key file version (this program reads version {KEYFILE_VERSION})")
    if set(blob) != _HEADER_KEYS:
        raise KeyFileError("key file has missing or unexpected fields")
    if blob["kdf"] != "scrypt" or blob["cipher"] != "aes-256-gcm":
        raise KeyFileError("key file uses an unknown kdf or cipher")
    n, r, p = blob["n"], blob["r"], blob["p"]
    _check_scrypt(n, r, p)
    salt = _hex_field(blob, "salt", 16, 64)
    ciphertext = _hex_field(blob, "ciphertext", 28, 4096)
    key = primitives.scrypt(_passphrase_bytes(passphrase), salt, n=n, r=r, p=p, length=32)
    aad = _aad(KEYFILE_VERSION, "scrypt", n, r, p, salt, "aes-256-gcm")
    try:
        plaintext = primitives.aes256_gcm_decrypt(key, ciphertext, aad)
    except primitives.DecryptError:
        raise WrongPassphrase("wrong passphrase (or the key file was altered)") from None
    try:
        obj = wire.decode(plaintext)
    except wire.WireError:
        raise KeyFileError("key file payload is malformed") from None
    if (
        not isinstance(obj, list)
        or len(obj) != 5
        or type(obj[0]) is not int
        or type(obj[0]) is not int or obj[0] != KEYFILE_VERSION
        or not all(isinstance(x, bytes) for x in obj[1:])
    ):
        raise KeyFileError("key file payload is malformed")
    try:
        return Secrets(wallet_key=obj[1], signing_key=obj[2], identity_key=obj[3], storage_key=obj[4])
    except KeysError as exc:
        raise KeyFileError(f"key file payload is invalid: {exc}") from None


# --- files -----------------------------------------------------------------------

def save_keyfile(
    path: str | os.PathLike[str],
    secrets: Secrets,
    passphrase: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> None:
    """Seal ``secrets`` and write them to ``path`` atomically with mode 0600; never overwrite.

    The sealed JSON goes to a temporary file (O_EXCL, 0600, fsynced) in the same directory, which is
    then hard-linked to ``path`` (fails if ``path`` exists, atomically); where hard links are not
    supported, ``os.replace`` after an existence check. A missing parent directory is created 0700.

    Raises:
        KeyFileError: ``path`` already exists, or the file could not be written.
        KeysError: bad scrypt parameters.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise KeyFileError(f"refusing to overwrite existing key file {target}")
    data = (json.dumps(seal_secrets(secrets, passphrase, scrypt_n=scrypt_n), indent=2) + "\n").encode("ascii")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{primitives.random_bytes(4).hex()}.tmp")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise KeyFileError(f"refusing to overwrite existing key file {target}") from None
        except OSError:  # no hard links on this file system
            if target.exists():
                raise KeyFileError(f"refusing to overwrite existing key file {target}") from None
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except KeyFileError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_keyfile(path: str | os.PathLike[str], passphrase: str) -> Secrets:
    """Read and open the key file at ``path``.

    Raises:
        KeyFileMissing: no file at ``path``.
        KeyFileError: unreadable, too large, not JSON, or not a valid key file.
        WrongPassphrase: the passphrase does not open it.
    """
    target = Path(path)
    try:
        with open(target, "rb") as fh:
            data = fh.read(_MAX_KEYFILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileMissing(f"no key file at {target}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {target}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEYFILE_BYTES:
        raise KeyFileError(f"key file {target} is too large")
    try:
        blob = json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError, JSONDecodeError, over-long integer literals
        raise KeyFileError(f"key file {target} is not JSON") from None
    return open_secrets(blob, passphrase)
