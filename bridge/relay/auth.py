"""The inbox-auth challenge message (docs/PROTOCOL.md §7 "Authentication")."""

from __future__ import annotations

from bridge.protocol import wire

__all__ = ["auth_message", "AUTH_CONTEXT"]

AUTH_CONTEXT = "parley-auth"


def auth_message(installation_id: str, challenge: bytes) -> bytes:
    """The bytes an installation signs with its Ed25519 key: ``encode([1, "parley-auth", iid, challenge])``."""
    return wire.encode([1, AUTH_CONTEXT, installation_id, challenge])
