"""The identity cache and its background refresh (DESIGN.md's pipeline: ``engine/peers.py``; PROTOCOL.md §6.5).

Issue 8 item 2: a relay that sees ``GET /v1/identity/<sender>`` a second after delivering an envelope
learns who sent it, which defeats sealed sender. So identity logs are never fetched *because of* a
message:

* The cached installation lists (``peer_installations``, one row per tracked address in
  ``peer_fetches``) are refreshed by :meth:`Peers.refresh`, which the daemon runs on a jittered schedule
  drawn from its own random source (:meth:`Peers.next_delay_ms`), never from message events. A pass
  refreshes every tracked address (our own included), oldest first, so what it asks for does not
  depend on who wrote recently either.
* Lookups name a k-anonymous bucket (``GET /v1/identity-bucket/<prefix>``: the first hex digits of
  SHA-256 of the checksummed address; the relay answers with every log in the bucket), not an address.
* Sending uses the cache. Only an address we have never looked up (a brand-new peer, or our own address
  before the first scheduled pass) is looked up at send time; the first message to a new peer must also
  claim its prekey bundle, which names the installation anyway (PROTOCOL.md §6.5).
* A relay's publish answer may say how long the recipient's log is (PROTOCOL.md §6.5, issue 9): when
  it is longer than the cached one, that address is refreshed at once (:meth:`Peers.refresh_if_longer`,
  at most once per ``min_lookup_ms``), so a newly authorized installation gets the message too. The
  publish named the recipient's inbox already: the relay learns nothing from that lookup.
* Receiving never looks anything up. A sender installation we know to be revoked is rejected at once;
  any other is accepted on its verified statement (as when the relay is down) and the message is
  re-checked by the next scheduled pass: if the sender's log then shows the installation revoked or
  never registered (unknown to the cache, or revoked since its last refresh), the message is flagged
  (``message_flags``, event ``message.flagged``). A sender we have never seen is tracked from its
  statement, so a reply needs no lookup either.

The revocation-check cost (issue 8, low item) is bounded the same way: every record's signature check is
remembered by record hash (:class:`CachingVerifier`), so re-reading an unchanged log verifies nothing
again, and lookups outside the schedule are rate-limited per address (``min_lookup_ms``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from bridge import identity
from bridge.crypto import session
from bridge.protocol.ids import BUCKET_PREFIX_MAX, BUCKET_PREFIX_MIN, address_bucket
from bridge.relay.client import NotFound, RelayClient, RelayError
from bridge.store import Store, now_ms

__all__ = [
    "Peers",
    "CachingVerifier",
    "REFRESH_INTERVAL_MS",
    "MIN_LOOKUP_INTERVAL_MS",
    "MAX_BUCKETS_PER_REFRESH",
]

log = logging.getLogger("parley.peers")

#: Mean time between scheduled refresh passes; each wait is drawn uniformly from [0.5, 1.5] × this.
REFRESH_INTERVAL_MS = 10 * 60_000
#: The first pass after start comes after [0.02, 0.2] × the interval (12 s .. 2 min by default).
FIRST_REFRESH = (0.02, 0.2)
#: An address is looked up outside the schedule (first contact) at most once per this interval.
MIN_LOOKUP_INTERVAL_MS = 60_000
#: A pass asks for at most this many buckets (the oldest entries first; the rest wait for the next pass).
MAX_BUCKETS_PER_REFRESH = 64
#: Smart-account answers change (owners, managers): a cached one is trusted this long (PROTOCOL.md §3).
VOLATILE_VERIFY_MS = 300_000
VERIFY_CACHE_SIZE = 8192
STATEMENT_CACHE_SIZE = 1024


class CachingVerifier:
    """An :class:`identity.Verifier` that remembers each record's answer, keyed by SHA-256 of (text, signature).

    An EOA signature check is a pure function of its input, so its answer (accepted or refused) is kept
    for good (bounded LRU). A verifier that reads a chain (it has ``checked_blocks``: smart accounts) gives
    answers that expire: accepted answers are kept :data:`VOLATILE_VERIFY_MS`, refusals are not kept.
    """

    def __init__(self, inner: identity.Verifier | None, *, clock: Callable[[], int], max_entries: int = VERIFY_CACHE_SIZE) -> None:
        self.inner: Any = inner if inner is not None else identity.EOAVerifier()
        self.volatile = hasattr(self.inner, "checked_blocks")
        self.clock = clock
        self.max_entries = max_entries
        self.checks = 0  # signature checks actually run (diagnostics)
        self._cache: OrderedDict[bytes, tuple[int, identity.BadSignature | None]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, statement: identity.Statement, text: str, signature: bytes) -> None:
        """Raises:
        BadSignature: as the wrapped verifier.
        """
        raw = text.encode("utf-8", "surrogatepass")
        key = hashlib.sha256(len(raw).to_bytes(4, "big") + raw + bytes(signature)).digest()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (not self.volatile or now - hit[0] < VOLATILE_VERIFY_MS):
                self._cache.move_to_end(key)
                if hit[1] is not None:
                    raise type(hit[1])(*hit[1].args)
                return
        self.checks += 1
        try:
            self.inner.check(statement, text, signature)
        except identity.BadSignature as exc:
            if not self.volatile:
                self._remember(key, now, exc)
            raise
        self._remember(key, now, None)

    def _remember(self, key: bytes, now: int, answer: identity.BadSignature | None) -> None:
        with self._lock:
            self._cache[key] = (now, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def checked_blocks(self, records: Iterable[bytes]) -> dict[str, int]:
        fn = getattr(self.inner, "checked_blocks", None)
        return fn(records) if fn is not None else {}


class Peers:
    """The cache of peers' (and our own) active installations, refreshed on a schedule, never on demand
    of a message. Thread-safe: state lives in the store; the in-memory caches are locked."""

    def __init__(
        self,
        store: Store,
        relay: Callable[[], RelayClient],
        *,
        own: Callable[[], tuple[str, str]],
        emit: Callable[[str, dict[str, Any]], None],
        verifier: identity.Verifier | None = None,
        clock: Callable[[], int] = now_ms,
        rng: random.Random | None = None,
        interval_ms: int = REFRESH_INTERVAL_MS,
        min_lookup_ms: int = MIN_LOOKUP_INTERVAL_MS,
        prefix_hex: int = BUCKET_PREFIX_MIN,
    ) -> None:
        self.store = store
        self._relay = relay
        self._own = own
        self._emit = emit
        self.clock = clock
        self.rng = rng if rng is not None else random.SystemRandom()
        self.interval_ms = interval_ms
        self.min_lookup_ms = min_lookup_ms
        self.prefix_hex = prefix_hex
        self.verifier = CachingVerifier(verifier, clock=clock)
        self._statements: OrderedDict[bytes, identity.Statement] = OrderedDict()
        self._looked_up: dict[str, int] = {}
        self._hinted: dict[str, int] = {}  # address -> when a publish answer last made us refresh it
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._first_contact_lock = threading.Lock()
        self._pending = threading.local()

    # --- statements ----------------------------------------------------------------------------

    def verified(self, record: bytes) -> identity.Statement:
        """Verify a sender statement record, remembering the answer.

        Raises:
            IdentityError: malformed or badly signed.
        """
        key = hashlib.sha256(record).digest()
        with self._lock:
            st = self._statements.get(key)
        if st is None:
            st = identity.verify(identity.SignedStatement.from_record(record), verifier=self.verifier)
            with self._lock:
                self._statements[key] = st
                while len(self._statements) > STATEMENT_CACHE_SIZE:
                    self._statements.popitem(last=False)
        return st

    # --- the cache -------------------------------------------------------------------------------

    def cached(self, address: str) -> dict[str, session.RemoteInstallation] | None:
        """The cached active installations of ``address``, or ``None`` if it is not tracked. No I/O."""
        if not self.store.read("SELECT 1 FROM peer_fetches WHERE address = ?", (address,)):
            return None
        rows = self.store.read("SELECT * FROM peer_installations WHERE address = ?", (address,))
        return {
            r["installation_id"]: session.RemoteInstallation(r["installation_id"], bytes(r["signing_pub"]), bytes(r["identity_pub"]))
            for r in rows
        }

    def installations(self, address: str, *, max_age_ms: int | None = None) -> dict[str, session.RemoteInstallation]:
        """The active installations of ``address``: from the cache when it is tracked (and, with
        ``max_age_ms``, refreshed no longer ago than that); otherwise looked up now (first contact),
        at most once per ``min_lookup_ms`` per address.

        Raises:
            RelayUnavailable, RelayError
        """
        def fresh() -> bool:
            rows = self.store.read("SELECT fetched_at FROM peer_fetches WHERE address = ?", (address,))
            return bool(rows) and (max_age_ms is None or self.clock() - rows[0]["fetched_at"] <= max_age_ms)

        if fresh():
            return self.cached(address) or {}
        # One first-contact lookup at a time: a second sender thread waits for the first one's answer
        # instead of finding the address "looked up just now" but not yet stored, and failing.
        with self._first_contact_lock:
            if not fresh():
                self.lookup([address])
        return self.cached(address) or {}

    def refresh_if_longer(self, address: str, length: int) -> bool:
        """A relay's publish answer says ``address``'s log holds ``length`` records: refresh the cached
        entry now if that is more than it held at our last lookup, at most once per ``min_lookup_ms`` per
        address, whatever the relay claims. Returns True if it was refreshed.

        Only addresses we looked up before are compared: one tracked from a sender's statement alone
        (no log length known) waits for the scheduled pass, so a reply to a new sender still asks
        the relay nothing (issue 8 item 2).

        Raises:
            RelayUnavailable, RelayError
        """
        rows = self.store.read("SELECT log_length FROM peer_fetches WHERE address = ?", (address,))
        if not rows or rows[0]["log_length"] is None or length <= rows[0]["log_length"]:
            return False
        now = self.clock()
        with self._lock:
            if now - self._hinted.get(address, -(2**62)) < self.min_lookup_ms:
                return False
            self._hinted[address] = now
        log.info("the relay reports %d record(s) in the log of %s: refreshing it", length, address)
        return bool(self.lookup([address], scheduled=True))

    def lookup(self, addresses: Iterable[str], *, scheduled: bool = False) -> list[str]:
        """Fetch the buckets of ``addresses`` and store what their logs say. Returns the addresses refreshed.

        Outside the schedule an address looked up less than ``min_lookup_ms`` ago is skipped.

        Raises:
            RelayUnavailable, RelayError
        """
        now = self.clock()
        groups: dict[str, list[str]] = {}
        with self._lock:
            for a in dict.fromkeys(addresses):
                if scheduled or now - self._looked_up.get(a, -(2**62)) >= self.min_lookup_ms:
                    groups.setdefault(address_bucket(a)[: self.prefix_hex], []).append(a)
        done: list[str] = []
        for prefix, group in groups.items():
            logs = self._fetch_bucket(prefix, group)
            for a in group:
                self._store(a, logs.get(a, []), now)
                with self._lock:  # only once stored: "looked up" must mean "in the cache"
                    self._looked_up[a] = now
                done.append(a)
        return done

    def _fetch_bucket(self, prefix: str, group: list[str]) -> dict[str, list[bytes]]:
        try:
            logs = self._relay().identity_bucket(prefix)
        except NotFound as exc:
            if exc.code != "not_found":
                raise
            # A relay without the bucket route (older than issue 8): ask by address, which names it.
            log.warning("relay has no identity-bucket route; looking up %d address(es) by name", len(group))
            return {a: self._relay().identity(a) for a in group}
        except RelayError as exc:
            if exc.code != "bucket_too_large" or len(prefix) >= BUCKET_PREFIX_MAX:
                raise
            longer = len(prefix) + 1
            with self._lock:
                self.prefix_hex = max(self.prefix_hex, longer)  # this relay's buckets are large: stay longer
            out: dict[str, list[bytes]] = {}
            sub: dict[str, list[str]] = {}
            for a in group:
                sub.setdefault(address_bucket(a)[:longer], []).append(a)
            for p, g in sub.items():
                out.update(self._fetch_bucket(p, g))
            return out
        # Only the logs we asked about are read; installations() skips records for any other address.
        return {a: logs.get(a, []) for a in group}

    def _store(self, address: str, records: list[bytes], now: int) -> None:
        active = identity.installations(address, records, verifier=self.verifier)
        revoked: set[str] = set()
        for r in records:
            try:
                st = identity.verify(identity.SignedStatement.from_record(r), verifier=self.verifier)
            except identity.IdentityError:
                continue
            if st.address == address and st.action == "revoke":
                revoked.add(st.installation_id)
        blocks = self.verifier.checked_blocks(records) if self.verifier.volatile else {}
        flagged: list[str] = []
        with self.store.write() as c:
            tracked = c.execute("SELECT 1 FROM peer_fetches WHERE address = ?", (address,)).fetchone() is not None
            if not active and not revoked and not tracked:
                return  # nobody there: not tracked (the lookup rate limit remembers the answer)
            c.execute("DELETE FROM peer_installations WHERE address = ?", (address,))
            for iid, st in active.items():
                c.execute(
                    "INSERT INTO peer_installations(address, installation_id, signing_pub, identity_pub, fetched_at, checked_block) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (address, iid, st.signing_key, st.identity_key, now, blocks.get(iid)),
                )
            c.execute("DELETE FROM peer_revoked WHERE address = ? AND source IN ('relay', 'unregistered')", (address,))
            for iid in revoked:
                c.execute("INSERT OR REPLACE INTO peer_revoked(address, installation_id, source, at) VALUES (?, ?, 'log', ?)", (address, iid, now))
            c.execute(
                "INSERT INTO peer_fetches(address, fetched_at, log_length) VALUES (?, ?, ?) "
                "ON CONFLICT(address) DO UPDATE SET fetched_at = excluded.fetched_at, log_length = excluded.log_length",
                (address, now, len(records)),
            )
            # Messages accepted on their statement alone are re-checked against the log now.
            for r in c.execute("SELECT message_id, installation_id FROM sender_rechecks WHERE address = ?", (address,)).fetchall():
                c.execute("DELETE FROM sender_rechecks WHERE message_id = ?", (r["message_id"],))
                if r["installation_id"] in active:
                    continue
                reason = "revoked" if r["installation_id"] in revoked else "not registered"
                if reason == "not registered":  # refused until the next pass, which may find it registered
                    c.execute(
                        "INSERT OR IGNORE INTO peer_revoked(address, installation_id, source, at) VALUES (?, ?, 'unregistered', ?)",
                        (address, r["installation_id"], now),
                    )
                c.execute(
                    "INSERT OR REPLACE INTO message_flags(message_id, reason, at) VALUES (?, ?, ?)",
                    (r["message_id"], f"sender installation {r['installation_id']} is {reason}", now),
                )
                flagged.append(r["message_id"])
        for mid in flagged:
            log.warning("message %s: its sender installation turned out revoked or unregistered; flagged", mid)
            self._emit("message.flagged", {"id": mid, "reason": self.flag(mid)})

    # --- the schedule ------------------------------------------------------------------------------

    def next_delay_ms(self, *, first: bool = False) -> int:
        """How long to wait before the next pass: drawn from our own random source only."""
        lo, hi = FIRST_REFRESH if first else (0.5, 1.5)
        return int(self.interval_ms * self.rng.uniform(lo, hi))

    def refresh(self) -> list[str]:
        """One scheduled pass: every tracked address and our own, oldest first, at most
        :data:`MAX_BUCKETS_PER_REFRESH` buckets. Returns the addresses refreshed.

        Raises:
            RelayUnavailable, RelayError
        """
        with self._refresh_lock:
            own = self._own()[0]
            order = [own] + [r["address"] for r in self.store.read("SELECT address FROM peer_fetches ORDER BY fetched_at, address") if r["address"] != own]
            chosen: list[str] = []
            buckets: set[str] = set()
            for a in order:
                b = address_bucket(a)[: self.prefix_hex]
                if b not in buckets and len(buckets) >= MAX_BUCKETS_PER_REFRESH:
                    continue
                buckets.add(b)
                chosen.append(a)
            return self.lookup(chosen, scheduled=True)

    def run(self, stop: threading.Event) -> None:
        """The daemon's refresh loop (until ``stop`` is set)."""
        delay = self.next_delay_ms(first=True)
        while not stop.wait(delay / 1000):
            try:
                self.refresh()
            except Exception as exc:  # the relay down, a bug: the next pass tries again
                log.warning("peer refresh failed: %s", exc)
            delay = self.next_delay_ms()

    # --- receiving -------------------------------------------------------------------------------

    def check_sender(self, st: identity.Statement) -> str | None:
        """Why a sealed sender's (verified) statement must not be believed, if we know a reason. No I/O.

        Otherwise the sender is accepted now, and the message (noted by :meth:`on_event`) is re-checked
        against the sender's log by the next scheduled pass: the installation may be unknown to the
        cache, or revoked since the cache was last refreshed.
        """
        self._pending.value = None
        if st.installation_id == self._own()[1]:
            return None
        address, iid = st.address, st.installation_id
        if self.store.read("SELECT 1 FROM peer_revoked WHERE address = ? AND installation_id = ?", (address, iid)):
            return f"RevokedInstallation: installation {iid} of {address} is revoked or not registered"
        cached = self.cached(address)
        if cached is None and st.action == "authorize":
            # A sender never seen: track it from its statement, so a reply needs no lookup.
            with self.store.write() as c:
                c.execute("INSERT OR IGNORE INTO peer_fetches(address, fetched_at) VALUES (?, 0)", (address,))
                c.execute(
                    "INSERT OR IGNORE INTO peer_installations(address, installation_id, signing_pub, identity_pub, fetched_at) "
                    "VALUES (?, ?, ?, ?, 0)",
                    (address, iid, st.signing_key, st.identity_key),
                )
        self._pending.value = (address, iid)
        return None

    def forget_pending(self) -> None:
        """Forget this thread's last accepted sender (an envelope that does not open stores nothing)."""
        self._pending.value = None

    def on_event(self, event: str, payload: dict[str, Any]) -> None:
        """Engine listener: a message stored right after :meth:`check_sender` accepted an unknown
        sender (same thread) is queued for re-checking."""
        pending = getattr(self._pending, "value", None)
        if event != "message.new" or pending is None or payload.get("state") == "queued" or payload.get("sender") != pending[0]:
            return
        self._pending.value = None
        with self.store.write() as c:
            c.execute(
                "INSERT OR IGNORE INTO sender_rechecks(message_id, address, installation_id, received_at) VALUES (?, ?, ?, ?)",
                (payload["id"], pending[0], pending[1], self.clock()),
            )

    def installation_gone(self, installation_id: str) -> None:
        """The relay refused to deliver to this installation (404): drop it from the cache until a
        scheduled pass says otherwise, and do not believe messages from it meanwhile."""
        now = self.clock()
        with self.store.write() as c:
            rows = c.execute("SELECT address FROM peer_installations WHERE installation_id = ?", (installation_id,)).fetchall()
            for r in rows:
                c.execute("DELETE FROM peer_installations WHERE address = ? AND installation_id = ?", (r["address"], installation_id))
                c.execute(
                    "INSERT OR IGNORE INTO peer_revoked(address, installation_id, source, at) VALUES (?, ?, 'relay', ?)",
                    (r["address"], installation_id, now),
                )

    # --- flags -----------------------------------------------------------------------------------

    def flag(self, message_id: str) -> str | None:
        """Why a received message is flagged (its sender turned out revoked or unregistered), if it is."""
        rows = self.store.read("SELECT reason FROM message_flags WHERE message_id = ?", (message_id,))
        return rows[0]["reason"] if rows else None

    def pending_rechecks(self) -> int:
        return int(self.store.read("SELECT COUNT(*) AS n FROM sender_rechecks")[0]["n"])
