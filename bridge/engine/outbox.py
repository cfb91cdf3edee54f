"""Outbox stage of the engine pipeline: fan-out limits, retry schedule and bookkeeping
(docs/PROTOCOL.md §6.2; issue 8 item 3).

* **Fan-out cap.** A message goes to at most :data:`MAX_FANOUT` installations of the recipient's
  wallet (and at most as many other installations of our own). Beyond that, installations we
  already hold a session with come first (they cost the relay nothing), then the rest in
  installation-id order, so the choice is stable from message to message. An identity log with
  hundreds of authorizations therefore costs one message at most 32 prekey claims.
* **Order per conversation, not globally.** A message that cannot go out yet holds back only the
  later messages to the same peer; other conversations go on.
* **Backoff.** A message-specific failure (the relay answers 429 or 5xx, or preparing it raised)
  schedules the next attempt ``next_attempt_at`` after an exponential, jittered delay
  (:func:`backoff_ms`); after :data:`MAX_ATTEMPTS` such failures the message is marked failed. A
  relay that cannot be reached at all is nobody's fault: it stops the flush and counts no attempt.
* **One deliverer.** A caller delivering a message holds a lease on its outbox row
  (``lease_owner``, ``lease_until``) for :data:`LEASE_MS`, renewed before each publish; other callers
  (threads of another Engine, other processes on the same store) leave the message alone meanwhile. A
  lease left behind by a process that died runs out after :data:`LEASE_MS`.
* **No prekeys.** An installation whose bundle claim found no prekeys is not asked again for
  :data:`NO_PREKEYS_TTL_MS`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, TypeVar

from bridge.store import Store, now_ms

__all__ = [
    "MAX_FANOUT",
    "MAX_ATTEMPTS",
    "BACKOFF_BASE_MS",
    "BACKOFF_MAX_MS",
    "NO_PREKEYS_TTL_MS",
    "BUNDLE_TTL_MS",
    "LEASE_MS",
    "fan_out",
    "backoff_ms",
    "counts",
]

#: Most installations of one wallet a message is encrypted to.
MAX_FANOUT = 32
#: Message-specific failures before a message is marked failed.
MAX_ATTEMPTS = 20
#: First retry delay; it doubles per attempt up to BACKOFF_MAX_MS, then a jitter of 50-100 % applies.
BACKOFF_BASE_MS = 1_000
BACKOFF_MAX_MS = 15 * 60 * 1000
#: How long an installation whose claim found no prekeys is skipped.
NO_PREKEYS_TTL_MS = 10 * 60 * 1000
#: How long a claimed bundle that could not be used yet (the message was retried) is kept for reuse.
BUNDLE_TTL_MS = 10 * 60 * 1000
#: How long a caller's lease on a message lasts from its last renewal. Renewed before each publish, it
#: must outlast one publish request (the relay client's timeout: 10 s) by a wide margin.
LEASE_MS = 60_000

V = TypeVar("V")


def fan_out(installations: Mapping[str, V], with_session: set[str], cap: int = MAX_FANOUT) -> dict[str, V]:
    """At most ``cap`` of one wallet's ``installations``: those with a session first, then by id."""
    if len(installations) <= cap:
        return dict(installations)
    chosen = sorted(installations, key=lambda iid: (iid not in with_session, iid))[:cap]
    return {iid: installations[iid] for iid in chosen}


def backoff_ms(attempts: int, rng: random.Random | None = None) -> int:
    """Delay before the next attempt after ``attempts`` failed ones (>= 1): exponential, capped, jittered."""
    base = min(BACKOFF_BASE_MS * 2 ** min(max(attempts - 1, 0), 30), BACKOFF_MAX_MS)
    return int(base * (rng or random).uniform(0.5, 1.0))


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
