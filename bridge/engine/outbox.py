"""Outbox stage of the engine pipeline: what is waiting to go out, and its bookkeeping
(docs/PROTOCOL.md §6.2).
"""

from __future__ import annotations

from typing import Any

from bridge.store import Store, now_ms

__all__ = ["counts"]


def counts(store: Store) -> dict[str, Any]:
    """Outbox figures for ``parley status``: messages by state, how many wait for a retry, and when the next one is due."""
    by_state = {r["state"]: r["n"] for r in store.read("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")}
    now = now_ms()
    waiting = store.read(
        "SELECT COUNT(*) AS n, MIN(next_attempt_at) AS next FROM outbox WHERE state IN ('pending', 'prepared') AND next_attempt_at > ?",
        (now,),
    )[0]
    return {
        "pending": by_state.get("pending", 0) + by_state.get("prepared", 0),
        "prepared": by_state.get("prepared", 0),
        "backing_off": waiting["n"],
        "next_attempt_at": waiting["next"],
        "failed": by_state.get("failed", 0),
        "sent": by_state.get("done", 0),
    }
