"""Identifiers: installation ids, inbox topics, message ids (PROTOCOL.md §2)."""

from __future__ import annotations

import hashlib
import os
import re

__all__ = [
    "installation_id",
    "inbox_topic",
    "parse_inbox_topic",
    "is_installation_id",
    "new_message_id",
    "is_message_id",
    "TopicError",
    "address_bucket",
    "is_bucket_prefix",
    "BUCKET_PREFIX_MIN",
    "BUCKET_PREFIX_MAX",
]

#: Shortest and longest k-anonymous identity-bucket prefix, in hex digits (PROTOCOL.md §7 "Identity buckets").
BUCKET_PREFIX_MIN = 2
BUCKET_PREFIX_MAX = 16
_BUCKET_RE = re.compile(r"[0-9a-f]{%d,%d}" % (BUCKET_PREFIX_MIN, BUCKET_PREFIX_MAX))


def address_bucket(address: str) -> str:
    """``hex(SHA-256(ASCII(checksummed address)))``: an identity lookup names only a prefix of this."""
    return hashlib.sha256(address.encode("ascii")).hexdigest()


def is_bucket_prefix(value: object) -> bool:
    """True for 2..16 lowercase hex digits (exactly; no trailing newline)."""
    return isinstance(value, str) and _BUCKET_RE.fullmatch(value) is not None

_IID_RE = re.compile(r"^[0-9a-f]{32}")
_TOPIC_RE = re.compile(r"^parley\.v1\.inbox\.([0-9a-f]{32})")
_MID_RE = re.compile(r"^[0-9a-f]{32}")


class TopicError(ValueError):
    """A topic name that is not exactly ``parley.v1.inbox.<32 lowercase hex>``."""


def installation_id(signing_pub: bytes, identity_pub: bytes) -> str:
    """First 16 bytes of SHA-256("parley/v1/installation" ‖ Ed25519 pub ‖ X25519 pub), hex."""
    if len(signing_pub) != 32 or len(identity_pub) != 32:
        raise ValueError("installation keys must be 32 bytes each")
    return hashlib.sha256(b"parley/v1/installation" + signing_pub + identity_pub).digest()[:16].hex()


def is_installation_id(value: object) -> bool:
    return isinstance(value, str) and bool(_IID_RE.fullmatch(value))


def inbox_topic(iid: str) -> str:
    if not is_installation_id(iid):
        raise TopicError("not an installation id")
    return f"parley.v1.inbox.{iid}"


def parse_inbox_topic(topic: object) -> str:
    """Return the installation id of an inbox topic.

    Raises:
        TopicError: anything but the exact topic format.
    """
    if not isinstance(topic, str):
        raise TopicError("topic must be a string")
    m = _TOPIC_RE.fullmatch(topic)
    if not m:
        raise TopicError("topic must be parley.v1.inbox.<32 lowercase hex digits>")
    return m.group(1)


def new_message_id() -> str:
    """128 random bits, hex. Chosen once, when the message enters the outbox."""
    return os.urandom(16).hex()


def is_message_id(value: object) -> bool:
    return isinstance(value, str) and bool(_MID_RE.fullmatch(value))
