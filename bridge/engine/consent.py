"""Consent (issue 12, contract §2 and §10): PLACEHOLDER written by the core helper.

The consent helper's module (same signatures) replaces this file at merge. Until then every peer is
``allowed`` and everything is stored.
"""

from __future__ import annotations

from typing import Any

REQUEST_LIMIT = 3


def admit(c: Any, engine: Any, peer: str, kind: str) -> str:  # "store" | "drop"
    return "store"


def on_outgoing(c: Any, engine: Any, peer: str) -> None:
    return None


def apply_sync(c: Any, engine: Any, content: Any) -> None:
    return None


def state(c_or_store: Any, peer: str) -> str:  # "allowed" | "requested" | "declined" | "blocked"
    return "allowed"
