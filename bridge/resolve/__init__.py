"""Names → addresses. In this release: 0x addresses and the user's contacts file.

``resolve(peer)`` takes what a DM button carries: ``0x…``, ``lens:<name>``, ``farcaster:<fid|fname>``, or any
contact name. Name services (Lens API, ENS, Farcaster hubs) come in a later release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.identity import IdentityError, checksum_address
from bridge.resolve.contacts import Contacts, ContactsError

__all__ = ["Resolution", "ResolveError", "resolve", "Contacts", "ContactsError", "PEER_RE"]

#: The shapes a DM button may carry.
PEER_RE = re.compile(r"0x[0-9a-fA-F]{40}|lens:[a-z0-9_]{1,64}|farcaster:[a-z0-9][a-z0-9._-]{0,63}|[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}")


class ResolveError(Exception):
    """The peer is malformed or unknown. ``reason`` says which."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Resolution:
    peer: str
    address: str
    source: str  # "address" | "contacts"
    name: str | None


def resolve(peer: object, contacts: Contacts) -> Resolution:
    """Raises:
    ResolveError: malformed (reason "malformed") or not found (reason "unknown").
    """
    if not isinstance(peer, str) or not PEER_RE.fullmatch(peer):
        raise ResolveError("not a peer this bridge understands", "malformed")
    if peer.lower().startswith("0x"):
        try:
            return Resolution(peer, checksum_address(peer), "address", None)
        except IdentityError:
            raise ResolveError("not a valid address", "malformed") from None
    try:
        found = contacts.lookup(peer)
    except ContactsError as exc:
        raise ResolveError(str(exc), "contacts") from None
    if found is None:
        raise ResolveError(f"{peer} is not in your contacts (name services come in a later release)", "unknown")
    return Resolution(peer, found, "contacts", peer)
