"""The user's contacts file: names the user chose, mapped to addresses (``contacts.json`` in the home).

A name is what a DM button carries (``lens:alice``, ``farcaster:123``, ``farcaster:alice``) or any label
the user likes (``bob``, ``alice.eth``). Names compare case-insensitively.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bridge.home import write_private
from bridge.identity import IdentityError, checksum_address

__all__ = ["Contacts", "ContactsError", "valid_name"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}")


class ContactsError(ValueError):
    """A bad name or address, or an unreadable contacts file."""


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))


class Contacts:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ContactsError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ContactsError(f"{self.path} is not a JSON object of name → address")
        return data

    def all(self) -> dict[str, str]:
        return dict(sorted(self._load().items()))

    def add(self, name: str, address: str) -> str:
        """Add or replace NAME. Returns the checksummed address.

        Raises:
            ContactsError
        """
        if not valid_name(name):
            raise ContactsError(f"not a usable contact name: {name!r} (letters, digits and . _ : / @ -, at most 100)")
        try:
            addr = checksum_address(address)
        except IdentityError:
            raise ContactsError(f"not an address: {address!r} (expected 0x followed by 40 hex digits)") from None
        data = {k: v for k, v in self._load().items() if k.lower() != name.lower()}
        data[name] = addr
        write_private(self.path, json.dumps(dict(sorted(data.items())), indent=2).encode() + b"\n")
        return addr

    def remove(self, name: str) -> bool:
        data = self._load()
        kept = {k: v for k, v in data.items() if k.lower() != name.lower()}
        if len(kept) == len(data):
            return False
        write_private(self.path, json.dumps(kept, indent=2).encode() + b"\n")
        return True

    def lookup(self, name: str) -> str | None:
        for k, v in self._load().items():
            if k.lower() == name.lower():
                return v
        return None
