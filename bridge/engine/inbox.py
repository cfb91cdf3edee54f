"""Inbox stage of the engine pipeline: what happens to an envelope that cannot be taken in, and how
a peer's claims about time are bounded (docs/PROTOCOL.md §6.3, §6.4; issue 8 items 4 and 10).

* **Quarantine.** Whatever an envelope raises while it is opened (a malformed header, a failed tag,
  a statement that does not verify, a bug in our own code reached by hostile bytes), it is kept in
  the ``quarantine`` table with the error, counted, and the inbox cursor moves past it, so one
  envelope can never block the envelopes behind it. Only a failure of the local database itself
  (``sqlite3.Error``) is not the envelope's fault: that rolls the whole transaction back and the
  envelope is tried again.
* **Peer timestamps.** ``sent_at`` is the sender's claim. It is shown only when it is sane (not
  before 1970, not more than :data:`MAX_CLOCK_SKEW_MS` after the message arrived); otherwise the
  arrival time is shown and the claim is kept in ``claimed_sent_at`` for diagnosis. Conversations
  are ordered by arrival (the store's own ``seq``), never by a peer's clock.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bridge.store import Store, now_ms

__all__ = [
    "MAX_CLOCK_SKEW_MS",
    "QUARANTINE_KEEP",
    "QUARANTINE_ERROR_CHARS",
    "bounded_sent_at",
    "describe",
    "quarantine",
    "quarantine_count",
    "quarantined",
]

#: How far in the future (relative to its arrival) a peer's ``sent_at`` may lie and still be shown.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
#: Quarantined envelopes kept (newest first) with their bytes; older rows are deleted, the count stays.
QUARANTINE_KEEP = 200
#: Length of the error text stored per quarantined envelope.
QUARANTINE_ERROR_CHARS = 500

_COUNT_KEY = "quarantined_total"


def bounded_sent_at(claimed: int, arrival_ms: int) -> tuple[int, int | None]:
    """``(sent_at to show, the original claim if it was replaced)`` for a peer's ``claimed`` time."""
    if 0 <= claimed <= arrival_ms + MAX_CLOCK_SKEW_MS:
        return claimed, None
    return arrival_ms, claimed


def describe(exc: BaseException) -> str:
    """One line naming the exception, for the quarantine log."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:QUARANTINE_ERROR_CHARS]


def quarantine(c: sqlite3.Connection, topic: str, cursor: int, payload: bytes, error: str) -> None:
    """Record a rejected envelope inside the caller's write transaction (which also advances the cursor)."""
    c.execute(
        "INSERT OR REPLACE INTO quarantine(topic, cursor, error, at, payload) VALUES (?, ?, ?, ?, ?)",
        (topic, cursor, error[:QUARANTINE_ERROR_CHARS], now_ms(), bytes(payload)),
    )
    c.execute(
        "INSERT INTO meta(key, value) VALUES (?, '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        (_COUNT_KEY,),
    )
    c.execute(
        "DELETE FROM quarantine WHERE topic = ? AND cursor < "
        "(SELECT cursor FROM quarantine WHERE topic = ? ORDER BY cursor DESC LIMIT 1 OFFSET ?)",
        (topic, topic, QUARANTINE_KEEP - 1),
    )


def quarantine_count(store: Store) -> int:
    """How many envelopes were ever quarantined (kept or since pruned)."""
    value = store.get_meta(_COUNT_KEY)
    if value is None:
        return int(store.read("SELECT COUNT(*) AS n FROM quarantine")[0]["n"])
    return int(value)


def quarantined(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The newest quarantined envelopes (without their bytes), newest first."""
    rows = store.read(
        "SELECT topic, cursor, error, at, length(payload) AS size FROM quarantine ORDER BY at DESC, cursor DESC LIMIT ?",
        (limit,),
    )
    return [{"topic": r["topic"], "cursor": r["cursor"], "error": r["error"], "at": r["at"], "size": r["size"]} for r in rows]
