"""Importing an existing wallet key: hex, environment variable, Web3 Secret Storage v3 keystore.

Part of bridge/keys (DESIGN.md "The pieces"). Every failure is a :class:`KeyImportError` whose message
says, in one line, which source failed and why, without ever echoing the secret.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Final

from bridge.keys.keyfile import SECP256K1_N, KeyImportError

__all__ = ["wallet_key_from_hex", "wallet_key_from_env", "wallet_key_from_keystore"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_MAX_KEYSTORE_BYTES: Final = 64 * 1024
#: Refuse keystores asking for more scrypt work than eth-account's own default (n = 2^18) times 4.
_MAX_KEYSTORE_SCRYPT_N: Final = 2**20


def _parse_hex(text: Any) -> bytes:
    """Return the key or raise KeyImportError with a reason that does not contain the input."""
    if not isinstance(text, str):
        raise KeyImportError("wallet key must be a hex string")
    value = text.strip()
    if value[:2] in ("0x", "0X"):
        value = value[2:]
    if not _HEX64.fullmatch(value):
        raise KeyImportError(
            f"wallet key must be 64 hex digits, optionally prefixed with 0x (got {len(value)} characters"
            f"{'' if value.isascii() else ', not all ASCII'})"
        )
    key = bytes.fromhex(value)
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise KeyImportError("wallet key is outside the secp256k1 private key range")
    return key


def wallet_key_from_hex(text: str) -> bytes:
    """Parse a 32-byte secp256k1 private key from hex (``0x`` optional, surrounding whitespace ignored).

    Raises:
        KeyImportError: not 64 hex digits, or zero / not below the curve order.
    """
    return _parse_hex(text)


def wallet_key_from_env(var: str) -> bytes:
    """Read a hex wallet key from the environment variable ``var``.

    Raises:
        KeyImportError: the variable is unset, empty, or not a valid key (the message names ``var``).
    """
    value = os.environ.get(var)
    if value is None:
        raise KeyImportError(f"environment variable {var} is not set")
    if not value.strip():
        raise KeyImportError(f"environment variable {var} is empty")
    try:
        return _parse_hex(value)
    except KeyImportError as exc:
        raise KeyImportError(f"environment variable {var}: {exc}") from None


def wallet_key_from_keystore(path: str | os.PathLike[str], password: str) -> bytes:
    """Decrypt a Web3 Secret Storage v3 keystore (what geth, Foundry ``cast wallet`` and
    ``eth_account.Account.encrypt`` write) with ``eth_account.Account.decrypt``.

    Raises:
        KeyImportError: unreadable file, not JSON, not a version-3 keystore, excessive scrypt cost,
            wrong password, or a decrypted key that is not a valid secp256k1 key.
    """
    target = Path(path)
    where = f"keystore {target}"
    try:
        with open(target, "rb") as fh:
            data = fh.read(_MAX_KEYSTORE_BYTES + 1)
    except OSError as exc:
        raise KeyImportError(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(data) > _MAX_KEYSTORE_BYTES:
        raise KeyImportError(f"{where}: file too large for a keystore")
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        raise KeyImportError(f"{where}: not a JSON file") from None
    if not isinstance(doc, dict) or doc.get("version") != 3:
        raise KeyImportError(f"{where}: not a version 3 (Web3 Secret Storage) keystore")
    crypto = doc.get("crypto", doc.get("Crypto"))
    if not isinstance(crypto, dict) or not isinstance(crypto.get("kdfparams"), dict):
        raise KeyImportError(f"{where}: missing crypto/kdfparams section")
    if crypto.get("kdf") == "scrypt":
        n = crypto["kdfparams"].get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 < n <= _MAX_KEYSTORE_SCRYPT_N:
            raise KeyImportError(f"{where}: scrypt parameter n is missing or larger than {_MAX_KEYSTORE_SCRYPT_N}")
    if not isinstance(password, str):
        raise KeyImportError(f"{where}: password must be a string")

    from eth_account import Account  # lazy: ~0.7 s

    try:
        key = bytes(Account.decrypt(doc, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyImportError(f"{where}: wrong password") from None
        raise KeyImportError(f"{where}: invalid keystore ({type(exc).__name__})") from None
    except Exception as exc:  # malformed fields surface as KeyError/TypeError/… inside eth-keyfile
        raise KeyImportError(f"{where}: invalid keystore ({type(exc).__name__})") from None
    if len(key) != 32 or not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise KeyImportError(f"{where}: decrypted key is not a valid secp256k1 private key")
    return key
