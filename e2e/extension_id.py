"""Derive the extension id from ``extension/manifest.json``'s ``key`` (DESIGN.md "Practical notes").

Chrome's id for an extension with a fixed ``key`` is the first 32 hex digits of SHA-256 over the DER
public key, each digit mapped 0-f -> a-p. Tests use this instead of hard-coding the id.

Run as a script to print the id: ``python e2e/extension_id.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

__all__ = ["EXTENSION_DIR", "ExtensionKeyError", "extension_id", "extension_id_from_key"]

EXTENSION_DIR = Path(__file__).resolve().parent.parent / "extension"


class ExtensionKeyError(ValueError):
    """The manifest has no usable ``key``."""


def extension_id_from_key(key_b64: str) -> str:
    """Map a base64 DER public key to Chrome's 32-letter extension id.

    Raises:
        ExtensionKeyError: ``key_b64`` is not valid base64.
    """
    try:
        der = base64.b64decode(key_b64, validate=True)
    except ValueError as exc:
        raise ExtensionKeyError("manifest key is not base64") from exc
    digest = hashlib.sha256(der).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def extension_id(extension_dir: Path = EXTENSION_DIR) -> str:
    """Read ``manifest.json`` in ``extension_dir`` and return the extension id.

    Raises:
        ExtensionKeyError: the manifest has no string ``key``.
    """
    manifest = json.loads((extension_dir / "manifest.json").read_text(encoding="utf-8"))
    key = manifest.get("key")
    if not isinstance(key, str) or not key:
        raise ExtensionKeyError("manifest.json has no key")
    return extension_id_from_key(key)


if __name__ == "__main__":
    print(extension_id())
