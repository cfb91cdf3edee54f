"""Keys at rest (DESIGN.md "The pieces": bridge/keys): the installation's secrets sealed with
scrypt + AES-256-GCM in a 0600 file, and wallet-key import (hex, environment, keystore v3).

See docs/PROTOCOL.md §9 for the file format.
"""

from __future__ import annotations

from bridge.keys.keyfile import (
    DEFAULT_SCRYPT_N,
    KEYFILE_VERSION,
    KeyFileError,
    KeyFileMissing,
    KeyImportError,
    KeysError,
    Secrets,
    WrongPassphrase,
    generate_secrets,
    load_keyfile,
    open_secrets,
    save_keyfile,
    seal_secrets,
)
from bridge.keys.wallet import wallet_key_from_env, wallet_key_from_hex, wallet_key_from_keystore

__all__ = [
    "KeysError",
    "WrongPassphrase",
    "KeyFileError",
    "KeyFileMissing",
    "KeyImportError",
    "Secrets",
    "KEYFILE_VERSION",
    "DEFAULT_SCRYPT_N",
    "generate_secrets",
    "wallet_key_from_hex",
    "wallet_key_from_env",
    "wallet_key_from_keystore",
    "seal_secrets",
    "open_secrets",
    "save_keyfile",
    "load_keyfile",
]
