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
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bridge import identity
from bridge.crypto import session
from bridge.crypto.primitives import InvalidSignature
from bridge.protocol import relaylist
from bridge.protocol.ids import BUCKET_PREFIX_MIN, address_bucket
from bridge.protocol.wire import WireError
from bridge.relay.client import LogAnswer, RelayClient, RelayError, RelayUnavailable
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
        relays: Callable[[], Sequence[str]],
        client: Callable[[str], RelayClient],
        *,
        own: Callable[[], tuple[str, str]],
        emit: Callable[[str, dict[str, Any]], None],
        verifier: identity.Verifier | None = None,
        clock: Callable[[], int] = now_ms,
        rng: random.Random | None = None,
        interval_ms: int = REFRESH_INTERVAL_MS,
        min_lookup_ms: int = MIN_LOOKUP_INTERVAL_MS,
        prefix_hex: int = BUCKET_PREFIX_MIN,
        pointers: Callable[[str], Sequence[str]] | None = None,
        may_use: Callable[[str], bool] = lambda url: True,
    ) -> None:
        self.store = store
        #: Where to look, in order (PROTOCOL.md §6.6): our home relays, then the directory relays.
        self._relays = relays
        self._client = client
        #: On-chain pointers (ENS text / Lens attribute ``parley.relays``), asked last, first contact only.
        self._pointers = pointers
        #: Whether a relay URL a peer chose may be asked (bridge.engine.Engine.may_use).
        self._may_use = may_use
        self._own = own
        self._emit = emit
        self.clock = clock
        self.rng = rng if rng is not None else random.SystemRandom()
        self.interval_ms = interval_ms
        self.min_lookup_ms = min_lookup_ms
        self.prefix_hex = prefix_hex
        self._prefix_by_relay: dict[str, int] = {}
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

    def refresh_gone(self, address: str) -> bool:
        """Every installation of ``address`` we encrypted a message to answered 404 (revoked or gone): the
        wallet may have a new installation (a restore, PROTOCOL.md §6.2 step 4). Refresh the address now,
        at most once per ``min_lookup_ms`` (shared with :meth:`refresh_if_longer`). Like the stale-log
        hint, the lookup follows a publish that has just named this address's inbox to the relay, and
        asks by bucket. Returns True if it was refreshed.

        Raises:
            RelayUnavailable, RelayError
        """
        now = self.clock()
        with self._lock:
            if now - self._hinted.get(address, -(2**62)) < self.min_lookup_ms:
                return False
            self._hinted[address] = now
        log.info("every installation of %s we wrote to is gone: refreshing it", address)
        return bool(self.lookup([address], scheduled=True))

    def lookup(self, addresses: Iterable[str], *, scheduled: bool = False) -> list[str]:
        """Find the logs and relay lists of ``addresses`` and store what they say. Returns the addresses
        looked up.

        Each address is asked for by bucket (§6.5) from its sources in order (§6.6): the relay it was
        last found on, our home relays, the directory relays, and, for an address never found
        (first contact), the relays its on-chain pointer names. The first source whose answer holds
        a log for the address ends its search. Outside the schedule an address looked up less than
        ``min_lookup_ms`` ago is skipped.

        Raises:
            RelayUnavailable: no source could be asked at all (the message names each and why).
            RelayError: a source refused in a way that is not "ask the next one".
        """
        now = self.clock()
        wanted: list[str] = []
        with self._lock:
            for a in dict.fromkeys(addresses):
                if scheduled or now - self._looked_up.get(a, -(2**62)) >= self.min_lookup_ms:
                    wanted.append(a)
        if not wanted:
            return []
        found: dict[str, tuple[LogAnswer, str]] = {}
        failures: list[str] = []
        answered = False
        for relay in self._sources(wanted):
            left = [a for a in wanted if a not in found]
            if not left:
                break
            try:
                logs = self._fetch(relay, left)
            except RelayUnavailable as exc:
                failures.append(str(exc))
                continue
            answered = True
            for a, answer in logs.items():
                if answer.records:
                    found[a] = (answer, relay)
        left = [a for a in wanted if a not in found]
        if left and self._pointers is not None:
            for a in left:
                if self.store.read("SELECT 1 FROM peer_fetches WHERE address = ? AND log_length > 0", (a,)):
                    continue  # known before: a pointer is for first contact only
                for relay in self._pointer_relays(a):
                    try:
                        answer = self._fetch(relay, [a]).get(a)
                    except RelayUnavailable as exc:
                        failures.append(str(exc))
                        continue
                    except RelayError as exc:
                        failures.append(str(exc))  # names the relay
                        continue
                    answered = True
                    if answer is not None and answer.records:
                        found[a] = (answer, relay)
                        break
        failed = "; ".join(dict.fromkeys(failures))
        if not answered and failures:
            raise RelayUnavailable(failed)
        done: list[str] = []
        missing: list[str] = []
        for a in wanted:
            if a not in found and failures:
                # Not found, but a source could not be asked: it may be there. The cache keeps what
                # it had (a relay being down must not erase an address's installations).
                missing.append(a)
                continue
            answer, relay = found.get(a, (LogAnswer([], []), None))
            self._store(a, answer.records, now, relay_lists=answer.relay_lists, source=relay)
            with self._lock:  # only once stored: "looked up" must mean "in the cache"
                self._looked_up[a] = now
            done.append(a)
        if missing and not scheduled:
            raise RelayUnavailable(f"{', '.join(missing)} not found on the relays that answered; {failed}")
        return done

    def _sources(self, addresses: list[str]) -> list[str]:
        """The relays to ask, in order: where these addresses were last found, then ours, then the directory."""
        known: list[str] = []
        for a in addresses:
            rows = self.store.read("SELECT relay FROM peer_sources WHERE address = ?", (a,))
            if rows:
                known.append(rows[0]["relay"])
        return list(dict.fromkeys([*known, *self._relays()]))

    def _pointer_relays(self, address: str) -> list[str]:
        if self._pointers is None:
            return []
        try:
            return [u for u in self._pointers(address) if self._may_use(u)][:5]
        except Exception as exc:  # a name service down or hostile: the address simply stays unknown
            log.warning("on-chain relay pointer of %s: %s", address, exc)
            return []

    def _fetch(self, relay: str, group: list[str]) -> dict[str, LogAnswer]:
        """Ask ``relay`` for the buckets of ``group``: address → its answer (records, relay lists)."""

        def longer(width: int) -> None:
            with self._lock:  # this relay's buckets are large: stay longer
                self._prefix_by_relay[relay] = max(self._prefix_by_relay.get(relay, self.prefix_hex), width)
                self.prefix_hex = max(self.prefix_hex, width)

        return self._client(relay).logs_by_bucket(group, self._prefix_by_relay.get(relay, self.prefix_hex), on_longer=longer)

    def _store(
        self, address: str, records: list[bytes], now: int, *, relay_lists: Sequence[bytes] = (), source: str | None = None
    ) -> None:
        active = identity.installations(address, records, verifier=self.verifier)
        lists = self.verified_lists(address, active, relay_lists)
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
                "DELETE FROM peer_relay_lists WHERE address = ? AND installation_id NOT IN (%s)" % ",".join("?" * len(active)),
                (address, *active),
            )
            for iid, (rl, record) in lists.items():
                # Newest wins: a source serving an older list (stale, or hostile) never rolls one back.
                c.execute(
                    "INSERT INTO peer_relay_lists(address, installation_id, version, relays, record) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(address, installation_id) DO UPDATE SET version = excluded.version, relays = excluded.relays, "
                    "record = excluded.record WHERE excluded.version > peer_relay_lists.version",
                    (address, iid, rl.version, json.dumps(list(rl.relays)), record),
                )
            if source is not None:
                c.execute(
                    "INSERT INTO peer_sources(address, relay) VALUES (?, ?) ON CONFLICT(address) DO UPDATE SET relay = excluded.relay",
                    (address, source),
                )
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

    def verified_lists(
        self, address: str, active: dict[str, identity.Statement], records: Sequence[bytes]
    ) -> dict[str, tuple[relaylist.RelayList, bytes]]:
        """The newest relay list of each active installation among ``records``, each verified with that
        installation's signing key from the verified log. Anything else is skipped (a relay may serve
        junk; it cannot forge a list)."""
        out: dict[str, tuple[relaylist.RelayList, bytes]] = {}
        for record in records[: 4 * len(active) + 4]:
            try:
                rl = relaylist.RelayList.decode(record)
                st = active.get(rl.installation_id)
                if st is None or rl.address != address:
                    continue
                relaylist.verify(record, st.signing_key)
            except (WireError, InvalidSignature, ValueError, TypeError) as exc:
                log.info("relay list for %s skipped: %s", address, exc)
                continue
            if rl.installation_id not in out or rl.version > out[rl.installation_id][0].version:
                out[rl.installation_id] = (rl, bytes(record))
        return out

    def remember(self, address: str, answer: LogAnswer, *, source: str | None) -> None:
        """Store ``address``'s log and relay lists, gathered by the caller (our own wallet's, at
        registration), as a lookup would; the records are verified here."""
        now = self.clock()
        self._store(address, answer.records, now, relay_lists=answer.relay_lists, source=source)
        with self._lock:
            self._looked_up[address] = now

    def accept_relay_list(self, c: Any, address: str, installation_id: str, signing_pub: bytes, record: bytes) -> bool:
        """A relay list carried inside a message (PROTOCOL.md §6.1): keep it, in the caller's write
        transaction ``c``, if it verifies for that very sender installation and is newer than ours. No
        relay is asked. Returns True if it was stored."""
        try:
            rl = relaylist.verify(record, signing_pub)
        except (WireError, InvalidSignature, ValueError, TypeError) as exc:
            log.info("relay list from %s skipped: %s", address, exc)
            return False
        if rl.address != address or rl.installation_id != installation_id:
            return False
        cur = c.execute(
            "INSERT INTO peer_relay_lists(address, installation_id, version, relays, record) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(address, installation_id) DO UPDATE SET version = excluded.version, relays = excluded.relays, "
            "record = excluded.record WHERE excluded.version > peer_relay_lists.version",
            (address, installation_id, rl.version, json.dumps(list(rl.relays)), bytes(record)),
        )
        return cur.rowcount > 0

    def inbox_relays(self, installation_id: str) -> list[str]:
        """Where to deliver to ``installation_id``: its newest relay list; else the relay its wallet's log
        was found on; else nothing known (the caller falls back to its own relays). No I/O."""
        rows = self.store.read("SELECT relays FROM peer_relay_lists WHERE installation_id = ? ORDER BY version DESC LIMIT 1", (installation_id,))
        if rows:
            return [u for u in json.loads(rows[0]["relays"]) if isinstance(u, str)]
        rows = self.store.read(
            "SELECT s.relay FROM peer_sources s JOIN peer_installations i ON i.address = s.address WHERE i.installation_id = ?",
            (installation_id,),
        )
        return [rows[0]["relay"]] if rows else []

    def relays_of(self, address: str) -> list[str]:
        """Every inbox relay the cached relay lists of ``address``'s installations name. No I/O."""
        rows = self.store.read("SELECT relays FROM peer_relay_lists WHERE address = ? ORDER BY installation_id", (address,))
        return list(dict.fromkeys(u for r in rows for u in json.loads(r["relays"]) if isinstance(u, str)))

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

        Otherwise the sender is accepted now (:meth:`take_pending` hands it over, and
        :meth:`recheck_many` notes the message once stored), and the message is re-checked
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

    def take_pending(self) -> Any:
        """This thread's last accepted sender, forgotten here: ``Engine.process_many`` checks a whole
        batch of senders before it stores their messages, then hands each back with its message to
        :meth:`recheck_many`."""
        pending = getattr(self._pending, "value", None)
        self._pending.value = None
        return pending

    def recheck_many(self, received: list[tuple[Any, dict[str, Any]]]) -> None:
        """Queue stored messages for re-checking, in one write transaction: each ``(pending, message)`` pairs a
        stored message with what :meth:`take_pending` gave for its envelope; a message from a sender
        accepted on its statement alone is queued for re-checking by the next scheduled pass."""
        rows = [
            (m["id"], p[0], p[1], self.clock())
            for p, m in received
            if p is not None and m.get("state") != "queued" and m.get("sender") == p[0]
        ]
        if rows:
            with self.store.write() as c:
                c.executemany(
                    "INSERT OR IGNORE INTO sender_rechecks(message_id, address, installation_id, received_at) VALUES (?, ?, ?, ?)", rows
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
