"""The messaging engine: registration, outbox, fan-out, inbox processing, de-duplication.

Guarantees (PROTOCOL.md §7):

* An outgoing message is written to ``messages`` + ``outbox`` before anything is encrypted or sent.
* Preparing a message encrypts it once per target installation (the recipient's installations and
  our own *other* installations) and stores the sealed envelopes **in the same transaction** as the
  advanced ratchet states. Publishing then only re-sends stored bytes, so a crash at any point is
  repaired by publishing again: the receiver drops the redelivery (message id, or a consumed ratchet
  key), and nothing is shown twice.
* A message is delivered (prepared, published) by one caller at a time: a thread holds its
  conversation's lock (flush_outbox), and the caller holds a lease on its outbox row in the store
  (``outbox.lease_owner``), renewed before every publish, so another process sharing the store (the
  CLI while the daemon runs) leaves it alone too (issue 9: one ``parley send`` published the same
  envelope twice when the control endpoint's send and the daemon's outbox flush raced).
* A received envelope is processed in one ``BEGIN IMMEDIATE`` transaction that checks the inbox
  cursor, decrypts, stores the message, saves the ratchet state and advances the cursor, so two
  processes (daemon and CLI) never process the same envelope twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge import identity
from bridge.crypto import primitives as P
from bridge.crypto import sealed, session
from bridge.engine import consent, contents, inbox, outbox
from bridge.engine.prekeys import OTPK_LOW, OTPK_TARGET, PQ_OTPK_LOW, PQ_OTPK_TARGET, Prekeys  # noqa: F401 (re-exported)
from bridge.keys import Secrets
from bridge.protocol import prekeys as PK
from bridge.protocol import relaylist
from bridge.protocol import content as C
from bridge.protocol.content import MAX_TEXT_BYTES, Content, FileRef, TextContent
from bridge.protocol.ids import inbox_topic, is_message_id, new_message_id
from bridge.protocol.wire import WireError
from bridge.engine.peers import REFRESH_INTERVAL_MS, Peers
from bridge.relay.client import MAX_PUBLISH_BATCH, Envelope, LogAnswer, NotFound, RelayClient, RelayError, RelayUnavailable
from bridge.relay.urls import is_local_url
from bridge.store import Store, StoreError, now_ms

__all__ = [
    "Engine",
    "message_dict",
    "EngineError",
    "BadInput",
    "NotRegistered",
    "Busy",
    "SendResult",
]

log = logging.getLogger("parley.engine")

#: Mean interval of the identity cache's scheduled refresh (ms; bridge/engine/peers.py).
PEER_REFRESH_MS = REFRESH_INTERVAL_MS


class EngineError(Exception):
    """Base class of engine failures."""


class BadInput(EngineError):
    """The caller gave something unusable (bad address, empty or oversized text)."""


class NotRegistered(EngineError):
    """The peer has no active installation on the relay."""


class Busy(EngineError):
    """Another caller (thread or process) is delivering the message now; it is left to that caller."""


@dataclass(frozen=True)
class SendResult:
    message: dict[str, Any]
    delivered: bool
    error: str | None = None


def message_dict(row: sqlite3.Row, db: Any = None) -> dict[str, Any]:
    """The message dict of contract §4. ``db`` (a Store or a connection): also its reactions, reply
    preview and attachments, which live in other tables."""
    keys = row.keys()
    kind = row["kind"] if "kind" in keys else "text"
    deleted = bool(row["deleted"]) if "deleted" in keys else False
    read_at = row["read_at"] if "read_at" in keys else None
    d = {
        "id": row["id"],
        "peer": row["peer"],
        "sender": row["sender"],
        "recipient": row["recipient"],
        "text": row["text"],
        "sent_at": row["sent_at"],
        "direction": row["direction"],
        "state": "read" if read_at is not None and row["direction"] == "out" and row["state"] == "sent" else row["state"],
        "read": bool(row["read"]),
        # Set when the sender's installation turned out revoked or never registered after the
        # message was accepted on its signed statement (bridge/engine/peers.py): shown as a warning.
        "flag": row["flag"] if "flag" in keys else None,
        "kind": kind,
        "content_type": row["content_type"] if "content_type" in keys else "text",
        "unsupported": kind == "unknown",
        "reply_to": row["reply_to"] if "reply_to" in keys else None,
        "reply_preview": None,
        "reactions": {},
        "edited": ("edited_at" in keys and row["edited_at"] is not None) and not deleted,
        "deleted": deleted,
        "attachments": [],
    }
    if deleted:
        d["text"] = ""
    if db is not None:
        contents.enrich(d, row, db)
    return d


#: Digests of envelopes taken in are kept this long (twice the relays' default retention), pruned
#: every SEEN_PRUNE_EVERY envelopes (PROTOCOL.md §6.3 "Several relays").
SEEN_KEEP_MS = 60 * 86_400_000
SEEN_PRUNE_EVERY = 500

#: An envelope not taken by one of its installation's other inbox relays within this long is given up.
DELIVERY_MAX_AGE_MS = 7 * 86_400_000
#: Most envelopes :meth:`Engine.process_many` takes in one transaction when syncing (issue 13).
PROCESS_BATCH = 100
#: Most messages of one conversation :meth:`Engine._publish_ahead` takes at once (issue 13).
AHEAD_MAX = 512

#: Messages with their flag (PROTOCOL.md §6.3): ``... FROM messages m LEFT JOIN message_flags f``.
MESSAGES_WITH_FLAGS = "SELECT m.*, f.reason AS flag FROM messages m LEFT JOIN message_flags f ON f.message_id = m.id"


class Engine:
    """One installation's messaging engine over its store and a relay.

    Thread-safe: each thread gets its own relay client and database connection; state changes are
    serialised by SQLite write transactions.
    """

    def __init__(
        self,
        store: Store,
        secrets: Secrets,
        ident: dict[str, Any],
        relay_url: str,
        *,
        verifier: identity.Verifier | None = None,
        clock: Callable[[], int] = now_ms,
        rng: random.Random | None = None,
        peer_refresh_ms: int = REFRESH_INTERVAL_MS,
        home_relays: Sequence[str] = (),
        directory_relays: Sequence[str] = (),
        reading_relays: Sequence[str] = (),
        pointers: Callable[[str], Sequence[str]] | None = None,
        passive: bool = False,
    ) -> None:
        #: A passive engine only reads and decrypts (the standby installation drained at a restore,
        #: bridge/backup/standby.py): it never uploads prekeys (no top-up after a first message) and
        #: never flushes its outbox, so nothing it decrypts makes it publish anything.
        self.passive = passive
        #: How statement signatures are checked (default: EOA only); see bridge.identity.smart for smart accounts.
        self.verifier: identity.Verifier | None = verifier
        self.store = store
        self.secrets = secrets
        self._identity: tuple[str, bytes] = (ident["address"], bytes.fromhex(ident["record"]))
        self._identity_lock = threading.Lock()
        self.installation_id: str = ident["installation_id"]
        #: Our relays (issue 10; bridge/homerelays.py): ``relay_url`` is the primary home relay.
        self.home_relays: tuple[str, ...] = ()
        self.directory_relays: tuple[str, ...] = ()
        self.reading_relays: tuple[str, ...] = ()
        self.set_relays([relay_url, *home_relays], directory_relays, reading_relays)
        self.local = session.LocalIdentity(
            installation_id=self.installation_id,
            signing_priv=secrets.signing_key,
            signing_pub=P.ed25519_public(secrets.signing_key),
            identity_priv=secrets.identity_key,
            identity_pub=P.x25519_public(secrets.identity_key),
        )
        self.topic = inbox_topic(self.installation_id)
        self._tls = threading.local()
        #: ((address, home relays), record, version) of our current relay list (_relay_list_or_none).
        self._relay_list_cache: tuple[tuple[str, tuple[str, ...]], bytes, int] | None = None
        self._seen_since_prune = SEEN_PRUNE_EVERY - 1  # the first envelope after a start prunes
        #: Outbox stage (bridge/engine/outbox.py): installations found without prekeys (iid -> until,
        #: ms) and bundles claimed for a message that was then retried (iid -> (claimed at, bundle)).
        self._no_prekeys: dict[str, int] = {}
        self._bundles: dict[str, tuple[int, PK.Bundle]] = {}
        self._fanout_lock = threading.Lock()
        #: peer → (ms, value) of the last typing content sent (typing(): at most one per TYPING_INTERVAL_MS)
        self._typing_sent: dict[str, tuple[int, bool]] = {}
        #: One lock per conversation (peer): held by the thread delivering one of its messages, so no
        #: two threads deliver the same message, and a conversation's messages go out in order.
        self._conversations: dict[str, threading.Lock] = {}
        self._conversations_lock = threading.Lock()
        #: message id → log lengths the relay reported when :meth:`_publish_ahead` published its
        #: envelopes (consumed by the per-message delivery that follows, which follows them)
        self._ahead_logs: dict[str, dict[str, int]] = {}
        self._rng = random.Random()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        #: The identity cache, refreshed on a jittered schedule (the daemon runs ``peers.run``), never on
        #: demand of a message (issue 8 item 2). ``clock`` (ms) and ``rng`` are injectable for tests.
        self.peers = Peers(
            store,
            lambda: [*self.home_relays, *self.directory_relays],
            self.client,
            pointers=pointers,
            may_use=self.may_use,
            own=lambda: (self.address, self.installation_id),
            emit=self._emit,
            verifier=verifier,
            clock=clock,
            rng=rng,
            interval_ms=peer_refresh_ms,
        )
        #: Our prekeys: top-up, rotation, deletion (bridge/engine/prekeys.py); its clock and policy are settable.
        self.prekeys = Prekeys(
            store, secrets, self.installation_id, lambda: self.relay, secondaries=lambda: {u: self.client(u) for u in self.home_relays[1:]}
        )
        self._legacy_cursor()

    # --- identity (the wallet this installation acts for) ----------------------------

    @property
    def address(self) -> str:
        """The checksummed wallet address this installation acts for."""
        return self._identity[0]

    @property
    def record(self) -> bytes:
        """Our signed authorization statement (record bytes) for :attr:`address`."""
        return self._identity[1]

    def identity_pair(self) -> tuple[str, bytes]:
        """``(address, record)`` read together: never one from before a switch and one from after."""
        return self._identity

    def switch_identity(self, address: str, record: bytes) -> str:
        """Act for ``address`` from now on, authorized by ``record`` (PROTOCOL.md §3; issue 4 part 3).

        The installation (keys, inbox topic, sessions) stays the same; only the wallet it speaks for
        changes. The pair is swapped in one assignment, so other threads see the old pair or the new
        one. Returns the previous address.

        Raises:
            InvalidStatement: ``record`` is not a verified authorization of THIS installation for ``address``.
        """
        statement = identity.verify(identity.SignedStatement.from_record(record), verifier=self.verifier)
        if statement.action != "authorize" or statement.address != address or statement.installation_id != self.installation_id:
            raise identity.InvalidStatement("the record does not authorize this installation for that address")
        if statement.signing_key != self.local.signing_pub or statement.identity_key != self.local.identity_pub:
            raise identity.InvalidStatement("the record names other installation keys")
        with self._identity_lock:
            previous = self._identity[0]
            self._identity = (statement.address, bytes(record))
        return previous

    # --- plumbing -------------------------------------------------------------

    def set_relays(self, home: Sequence[str], directory: Sequence[str] = (), reading: Sequence[str] = ()) -> None:
        """Use these relays from now on: ``home`` (the first is primary) hold our inbox, ``directory`` are
        asked for logs not found there, and we read ``reading`` too (replaced home relays in their grace
        period). Callers pass URLs checked by bridge/homerelays.py."""
        homes = tuple(dict.fromkeys(u.rstrip("/") for u in home if u))
        if not homes:
            raise ValueError("at least one home relay is needed")
        self.home_relays = homes
        self.relay_url = homes[0]
        self.directory_relays = tuple(u.rstrip("/") for u in directory if u.rstrip("/") not in homes)
        self.reading_relays = tuple(dict.fromkeys([*homes, *(u.rstrip("/") for u in reading)]))
        #: Relays on this machine or a private network are used when a peer names them only if ours are
        #: local too (a test or private deployment): otherwise a hostile relay list or pointer could
        #: make us send requests into our own network (bridge.relay.urls.is_local_url).
        self._local_ok = any(is_local_url(u) for u in (*self.home_relays, *self.directory_relays))

    def may_use(self, url: str) -> bool:
        """Whether we follow a relay URL that a peer chose (its relay list, an on-chain pointer)."""
        return self._local_ok or not is_local_url(url)

    def _asked(self) -> str:
        return ", ".join(dict.fromkeys([*self.home_relays, *self.directory_relays]))

    def client(self, url: str) -> RelayClient:
        """This thread's client of the relay at ``url``."""
        clients = getattr(self._tls, "clients", None)
        if clients is None:
            clients = self._tls.clients = {}
        client = clients.get(url)
        if client is None:
            client = clients[url] = RelayClient(url)
        return client

    def close_clients(self) -> None:
        """Close this thread's relay clients."""
        for client in list(getattr(self._tls, "clients", {}).values()):
            client.close()
        self._tls.clients = {}

    @property
    def relay(self) -> RelayClient:
        """This thread's client of the primary home relay."""
        return self.client(self.relay_url)

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        return P.aes256_gcm_encrypt(self.secrets.storage_key, data, aad)

    def _unseal(self, blob: bytes, aad: bytes) -> bytes:
        return P.aes256_gcm_decrypt(self.secrets.storage_key, blob, aad)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, payload)
            except Exception:  # a broken listener must never break message processing
                log.exception("listener failed for %s", event)

    def token(self, relay: str | None = None) -> str:
        """A token to read our inbox on ``relay`` (default: the primary home relay)."""
        return self.client(relay or self.relay_url).authenticate(self.installation_id, self.secrets.signing_key)

    def forget_token(self, relay: str | None = None) -> None:
        """Drop a cached relay token (the relay restarted, or the token expired early)."""
        self.client(relay or self.relay_url).forget_token(self.installation_id)

    # --- registration -----------------------------------------------------------

    def register(self) -> bool:
        """Publish our statement on every home and directory relay, our prekeys on the home relays, and
        our relay list wherever senders may look (PROTOCOL.md §6.6). Returns True if anything was uploaded.

        A relay that cannot be reached is logged and tried again by the next registration, as long as
        one home relay took our statement (a bridge whose primary is down still receives on the others).

        Raises:
            RelayUnavailable, RelayError: no home relay took our statement, or the primary refused our prekeys.
        """
        address, record = self.identity_pair()
        changed = False
        failed: dict[str, Exception] = {}
        logs: dict[str, LogAnswer] = {}  # our wallet's log as each of our relays holds it
        for url in dict.fromkeys([*self.home_relays, *self.directory_relays]):
            try:
                logs[url] = self.client(url).identity_log(address)
                if record not in logs[url].records:
                    self.client(url).publish_identity(address, record)
                    logs[url].records.append(record)
                    changed = True
            except (RelayUnavailable, RelayError) as exc:
                failed[url] = exc
        if all(url in failed for url in self.home_relays):
            raise failed[self.relay_url]  # one error, the caller's to report (a CLI prints one line)
        for url, exc in failed.items():
            log.warning("could not publish our statement on %s: %s", url, exc)
        try:
            changed = self.ensure_prekeys() or changed
        except (RelayUnavailable, RelayError) as exc:
            if self.relay_url not in failed:
                raise
            # The primary is down; the others got our signed prekeys (Prekeys.ensure), so senders can
            # still start sessions. The daemon's prekey check tops the primary up when it is back.
            log.warning("prekeys not uploaded to the primary %s: %s", self.relay_url, exc)
        changed = self.publish_relay_list() or changed
        self._spread_wallet_log(address, logs)
        return changed

    def _spread_wallet_log(self, address: str, logs: dict[str, LogAnswer]) -> None:
        """Make our wallet's log whole wherever one of its installations reads (PROTOCOL.md §6.6 "One
        wallet, several installations"): a sender stops at the first relay that has a log for the
        address, so a relay holding only some of the wallet's installations would hide the others.

        ``logs``: the log (and relay lists) each of our home and directory relays answered. Every record
        of it that verifies for ``address`` (statements, revocations), and the newest verified relay list
        of each of the wallet's active installations, is published on each of those relays that lacks
        it, and on the inbox relays of the wallet's other installations, together with our own relay
        list. The cache learns the whole log too (self fan-out reaches the others at once). Failures
        are logged: the next registration tries again."""
        verifier = self.peers.verifier
        records: list[bytes] = []
        for r in dict.fromkeys(r for answer in logs.values() for r in answer.records):
            try:
                if identity.verify(identity.SignedStatement.from_record(r), verifier=verifier).address == address:
                    records.append(r)
            except identity.IdentityError:
                continue  # a relay's junk is not copied anywhere
        active = identity.installations(address, records, verifier=verifier)
        lists = {
            iid: record
            for iid, (_, record) in self.peers.verified_lists(
                address, active, list(dict.fromkeys(r for answer in logs.values() for r in answer.relay_lists))
            ).items()
            if iid != self.installation_id
        }
        if not lists and all(set(records) <= set(answer.records) for answer in logs.values()):
            return  # nothing missing on our relays, and no other installation reads elsewhere
        self.peers.remember(address, LogAnswer(records, list(lists.values())), source=self.relay_url)
        targets: dict[str, LogAnswer | None] = dict(logs)
        for record in lists.values():
            for url in relaylist.RelayList.decode(record).relays:
                if url not in targets and self.may_use(url):
                    targets[url] = None  # another installation's inbox relay: asked below
        own_list = {self.installation_id: self.relay_list()}  # ours is on our relays already
        for url, answer in targets.items():
            client = self.client(url)
            try:
                if answer is None:
                    answer = client.identity_log(address)
                for r in records:
                    if r not in answer.records:
                        client.publish_identity(address, r)
                for iid, record in {**lists, **(own_list if url not in logs else {})}.items():
                    if record not in answer.relay_lists:
                        try:
                            client.publish_relay_list(iid, record)
                        except RelayError as exc:
                            if exc.code != "stale_relay_list":
                                raise
            except NotFound as exc:
                log.info("relay %s keeps no relay lists (%s)", url, exc.code)
            except (RelayUnavailable, RelayError) as exc:
                log.warning("could not complete our wallet's log on %s: %s", url, exc)

    def publish_record(self, address: str, record: bytes) -> None:
        """Append an identity record (a statement or a revocation) to ``address``'s log on the primary
        home relay, then on our other home and directory relays, where senders look, and on the inbox
        relays of ``address``'s other installations we know of (PROTOCOL.md §6.6). A revocation only on
        the primary would leave the directory, or the relay a stolen installation reads, serving it.

        Raises:
            RelayUnavailable, RelayError: the primary could not be reached or refused (nothing else was tried).
        """
        self.relay.publish_identity(address, record)
        others = [u for u in self.peers.relays_of(address) if self.may_use(u)]
        for url in dict.fromkeys([*self.home_relays[1:], *self.directory_relays, *others]):
            if url == self.relay_url:
                continue
            try:
                self.client(url).publish_identity(address, record)
            except (RelayUnavailable, RelayError) as exc:
                log.warning("identity record not published on %s: %s", url, exc)

    def relay_list(self) -> bytes:
        """Our signed relay list naming the current home relays (a new version whenever they change)."""
        with self.store.write() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'relay_list'").fetchone()
            if row is not None:
                current = relaylist.RelayList.decode(bytes(row["value"]))
                if current.relays == self.home_relays and current.address == self.address:
                    return bytes(row["value"])
                version = current.version + 1
            else:
                version = 1
            rl = relaylist.RelayList(self.address, self.installation_id, version, now_ms() // 1000, self.home_relays)
            record = rl.sign(self.secrets.signing_key)
            c.execute(
                "INSERT INTO meta(key, value) VALUES ('relay_list', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (record,)
            )
        return record

    def _current_relay_list(self) -> tuple[bytes, int] | None:
        """The cached (record, version) of our relay list if it still names our address and home relays."""
        cached = self._relay_list_cache
        return (cached[1], cached[2]) if cached is not None and cached[0] == (self.address, self.home_relays) else None

    def _relay_list_or_none(self) -> bytes | None:
        """Our relay list for a message's content, or None if it cannot be made now (never blocks a send)."""
        current = self._current_relay_list()
        if current is not None:
            return current[0]
        try:
            record = self.relay_list()
        except (StoreError, sqlite3.Error):
            raise
        except Exception:
            log.exception("could not make our relay list")
            return None
        self._relay_list_cache = ((self.address, self.home_relays), record, relaylist.RelayList.decode(record).version)
        return record

    def publish_relay_list(self) -> bool:
        """Publish our relay list on our home relays, the relays we still read, and the directory relays.
        Returns True if any relay took a new version. Unreachable ones are logged (the next registration
        tries again); a relay too old for relay lists (404 not_found) is skipped."""
        record = self.relay_list()
        new = False
        for url in dict.fromkeys([*self.home_relays, *self.reading_relays, *self.directory_relays]):
            try:
                self.client(url).publish_relay_list(self.installation_id, record)
                new = True
            except NotFound as exc:
                log.info("relay %s keeps no relay lists (%s)", url, exc.code)
            except (RelayUnavailable, RelayError) as exc:
                log.warning("could not publish our relay list on %s: %s", url, exc)
        return new

    def _new_prekeys(self, c: sqlite3.Connection, kind: str, count: int) -> list[tuple[int, bytes, bytes]]:
        return self.prekeys.new(c, kind, count)

    def ensure_prekeys(self) -> bool:
        """Rotate the signed and last-resort prekeys when due, delete retired ones after their grace
        period, top up one-time prekeys below the low-water mark, upload (bridge/engine/prekeys.py).
        Returns True if anything was uploaded.

        Raises:
            RelayUnavailable, RelayError
        """
        if self.passive:
            return False
        return self.prekeys.ensure()

    # --- peers ------------------------------------------------------------------

    def installations_of(self, address: str, *, max_age_ms: int | None = None) -> dict[str, session.RemoteInstallation]:
        """The peer's active installations, verified here (the relay is not trusted), from the identity
        cache (bridge/engine/peers.py). Only an address never looked up is asked for now (first contact);
        our own address never is at send time (the scheduled refresh keeps it), unless it was never looked up.

        Raises:
            RelayUnavailable, RelayError
        """
        return self.peers.installations(address, max_age_ms=max_age_ms)

    def can_message(self, address: str) -> bool:
        return bool(self.installations_of(identity.checksum_address(address)))

    # --- sending ------------------------------------------------------------------

    def _checked_peer(self, peer: str) -> str:
        try:
            peer = identity.checksum_address(peer)
        except (identity.IdentityError, TypeError, ValueError) as exc:
            raise BadInput(str(exc)) from None
        if peer == self.address:
            raise BadInput("you cannot message your own address")
        return peer

    @staticmethod
    def _checked_text(text: Any, *, empty_ok: bool = False, what: str = "message text") -> str:
        if not isinstance(text, str) or (not empty_ok and not text.strip()):
            raise BadInput(f"{what} is empty")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise BadInput(f"{what} exceeds {MAX_TEXT_BYTES} bytes")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{what} is not valid Unicode") from None
        return text

    def _target_row(self, peer: str, message_id: Any, *, own: bool = False) -> sqlite3.Row:
        """A displayable message of the conversation with ``peer`` (``own``: one we sent, not deleted).

        Raises:
            BadInput: bad id, unknown in this conversation, someone else's, deleted.
        """
        if not isinstance(message_id, str) or not is_message_id(message_id):
            raise BadInput("bad message id")
        rows = self.store.read(
            f"SELECT * FROM messages WHERE id = ? AND peer = ? AND kind IN {contents.DISPLAYABLE_SQL}", (message_id, peer)
        )
        if not rows:
            raise BadInput("unknown message")
        if own and rows[0]["sender"] != self.address:
            raise BadInput("not your message")
        if own and rows[0]["deleted"]:
            raise BadInput("message deleted")
        return rows[0]

    def queue(
        self, peer: str, text: str, *, reply_to: str | None = None, files: Sequence[FileRef] = (), upload_ids: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Write an outgoing message (a text, a ``reply`` when ``reply_to``, an ``attachment`` when
        ``files``: then ``text`` is the caption) to the store and the outbox. Nothing leaves the machine yet.
        ``upload_ids``: the uploads ``files`` were made from (their files move to ``<home>/attachments``).

        Raises:
            BadInput
        """
        peer = self._checked_peer(peer)
        files = tuple(files)
        text = self._checked_text(text, empty_ok=bool(files))
        if reply_to is not None:
            self._target_row(peer, reply_to)
        ctype = C.ATTACHMENT if files else C.REPLY if reply_to is not None else C.TEXT
        extra: list[Any] = (
            [[f.to_list() for f in files], reply_to, text] if files else [reply_to] if reply_to is not None else []
        )
        return self._queue_content(
            peer, ctype, extra, None if files else text, row_text=text, reply_to=reply_to, files=files, upload_ids=tuple(upload_ids)
        )

    def _queue_content(
        self,
        peer: str,
        ctype: str,
        extra: list[Any],
        text: str | None,
        *,
        row_text: str | None = None,
        reply_to: str | None = None,
        files: tuple[FileRef, ...] = (),
        upload_ids: tuple[str, ...] = (),
        apply: Callable[[sqlite3.Connection, int], None] | None = None,
    ) -> dict[str, Any]:
        """Queue a content of any type (its row in ``messages`` keeps kind, type and extras, so the outbox
        rebuilds the exact content); ``apply`` runs in the same transaction (our own reaction, edit, …)."""
        mid, ts = new_message_id(), now_ms()
        try:
            content = Content.build(ctype, mid, self.address, peer, ts, extra, text=text)
        except WireError as exc:
            raise BadInput(str(exc)) from None
        kind = content.kind
        with self.store.write() as c:
            if kind in contents.DISPLAYABLE:
                c.execute(
                    "INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(peer) DO UPDATE SET updated_at = excluded.updated_at",
                    (peer, ts, ts),
                )
            else:
                c.execute("INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT(peer) DO NOTHING", (peer, ts, ts))
            c.execute(
                "INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read, "
                "kind, content_type, extra, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, 'out', 'queued', 1, ?, ?, ?, ?)",
                (mid, peer, self.address, peer, content.text if row_text is None else row_text, ts, ts,
                 kind, ctype, contents.extra_blob(content), reply_to),
            )
            c.execute("INSERT INTO outbox(message_id, state) VALUES (?, 'pending')", (mid,))
            consent.on_outgoing(c, self, peer)
            if files and upload_ids:
                from bridge.engine import attachments

                attachments.record_outgoing(c, self, mid, list(files), upload_ids)  # the uploads' files move to attachments/
            elif files:
                contents.store_attachments(c, self, mid, files, "local", ts)
            if apply is not None:
                apply(c, ts)
            row = c.execute("SELECT * FROM messages WHERE id = ?", (mid,)).fetchone()
        msg = message_dict(row, self.store)
        if kind in contents.DISPLAYABLE:
            self._emit("message.new", msg)
        return msg

    def send(self, peer: str, text: str, *, reply_to: str | None = None, uploads: Sequence[str] = ()) -> SendResult:
        """Check the peer is registered, queue, then deliver everything pending (oldest first, so order is kept).
        ``reply_to``: a message of the conversation this answers; ``uploads``: upload ids (contract §6),
        sent as one ``attachment`` content with ``text`` as its caption.

        When the relay cannot be reached the message stays queued (``delivered=False``) and goes out
        with the next :meth:`flush_outbox`.

        Raises:
            BadInput: bad address or text (nothing queued).
            NotRegistered: the peer has no installation (nothing queued).
        """
        peer = self._checked_peer(peer)
        uploads = list(uploads)
        if len(uploads) > C.MAX_FILES or not all(isinstance(u, str) for u in uploads):
            raise BadInput(f"at most {C.MAX_FILES} uploads, given by id")
        self._checked_text(text, empty_ok=bool(uploads))
        if reply_to is not None:
            self._target_row(peer, reply_to)
        try:
            registered = bool(self.installations_of(peer))
        except RelayUnavailable as exc:
            if uploads:
                raise
            return SendResult(self.queue(peer, text, reply_to=reply_to), delivered=False, error=str(exc))
        if not registered:
            raise NotRegistered(f"{peer} is not registered on any relay asked ({self._asked()})")
        files: list[FileRef] = []
        if uploads:
            from bridge.engine import attachments

            files = attachments.prepare_uploads(self, peer, uploads)
        msg = self.queue(peer, text, reply_to=reply_to, files=files, upload_ids=uploads)
        # Waits for another thread delivering to this peer (the daemon's outbox loop), then finds
        # what it did: the message is sent once, and this answer says so.
        errors = self.flush_outbox(wait_for=peer)
        row = self.store.read("SELECT * FROM messages WHERE id = ?", (msg["id"],))[0]
        error = errors.get(msg["id"])
        if row["state"] == "failed" and error is None:  # e.g. every recipient envelope dropped (§6.2 step 4)
            error = self.store.read("SELECT last_error FROM outbox WHERE message_id = ?", (msg["id"],))[0]["last_error"]
        return SendResult(message_dict(row, self.store), delivered=row["state"] == "sent", error=error)

    # --- reactions, edits, deletes, receipts, typing (issue 12; PROTOCOL.md §6.7) ---------------

    def message(self, message_id: str) -> dict[str, Any] | None:
        """One message (contract §4), or None."""
        rows = self.store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.id = ?", (message_id,))
        return message_dict(rows[0], self.store) if rows else None

    def _updated(self, message_id: str) -> dict[str, Any]:
        msg = self.message(message_id)
        if msg is None:
            raise EngineError(f"message {message_id} vanished")
        self._emit("message.updated", msg)
        return msg

    def _control(self, peer: str, ctype: str, extra: list[Any], apply: Callable[[sqlite3.Connection, int], None]) -> None:
        """Queue a control content, apply it locally in the same transaction, try to deliver it now."""
        self._queue_content(peer, ctype, extra, None, apply=apply)
        self.flush_outbox(wait_for=peer)  # an unreachable relay leaves it queued

    def react(self, peer: str, message_id: str, emoji: str, *, remove: bool = False) -> dict[str, Any]:
        """Add (or remove) our reaction ``emoji`` on a message; returns the message. Raises BadInput."""
        peer = self._checked_peer(peer)
        try:
            C.check_emoji(emoji)
        except WireError as exc:
            raise BadInput(str(exc)) from None
        target = self._target_row(peer, message_id)
        if target["deleted"]:
            raise BadInput("message deleted")
        action = "remove" if remove else "add"
        self._control(peer, C.REACTION, [message_id, action, emoji],
                      lambda c, ts: contents.apply_reaction(c, message_id, self.address, action, emoji, ts))
        return self._updated(message_id)

    def edit(self, peer: str, message_id: str, text: str) -> dict[str, Any]:
        """Edit one of our messages for everyone; returns the message. Raises BadInput."""
        peer = self._checked_peer(peer)
        text = self._checked_text(text)
        self._target_row(peer, message_id, own=True)
        self._control(peer, C.EDIT, [message_id, text], lambda c, ts: contents.apply_edit(c, message_id, text, ts))
        return self._updated(message_id)

    def delete(self, peer: str, message_id: str) -> dict[str, Any]:
        """Delete one of our messages for everyone (a tombstone stays); returns the message. Raises BadInput."""
        peer = self._checked_peer(peer)
        self._target_row(peer, message_id, own=True)
        self._control(peer, C.DELETE, [message_id], lambda c, ts: contents.apply_delete(c, message_id, ts))
        return self._updated(message_id)

    #: Whether read receipts are sent (setting ``read_receipts``; the daemon and CLI read config.json).
    read_receipts: Callable[[], bool] = staticmethod(lambda: True)  # type: ignore[assignment]

    def unread(self, peer: str | None = None) -> int:
        """Unread incoming messages (displayable kinds only), of one conversation or, for the badge, of
        every conversation in the inbox (requests, declined and blocked peers are not counted: a badge
        is a notification, which a request never raises, PROTOCOL.md §6.8)."""
        sql = f"SELECT COUNT(*) AS n FROM messages WHERE direction = 'in' AND read = 0 AND kind IN {contents.DISPLAYABLE_SQL}"
        if peer is None:
            return self.store.read(sql + " AND peer NOT IN (SELECT peer FROM consent WHERE state != 'allowed')")[0]["n"]
        return self.store.read(sql + " AND peer = ?", (peer,))[0]["n"]

    def mark_read(self, peer: str) -> dict[str, Any]:
        """Mark the conversation read; send the peer read receipts for what was unread (when the
        setting is on and the peer is allowed). Returns ``{unread, receipts_sent}``."""
        peer = self._checked_peer(peer)
        with self.store.write() as c:
            ids = [r["id"] for r in c.execute(
                f"SELECT id FROM messages WHERE peer = ? AND direction = 'in' AND read = 0 AND kind IN {contents.DISPLAYABLE_SQL} ORDER BY seq",
                (peer,),
            )]
            c.execute("UPDATE messages SET read = 1 WHERE peer = ? AND direction = 'in' AND read = 0", (peer,))
            allowed = consent.state(c, peer) == "allowed"
        sent = 0
        if ids and allowed and self.read_receipts():
            for i in range(0, len(ids), C.MAX_RECEIPT_IDS):
                self._queue_content(peer, C.READ_RECEIPT, [ids[i : i + C.MAX_RECEIPT_IDS]], None)
                sent += 1
            self.flush_outbox(wait_for=peer)
        for mid in ids:
            self._updated(mid)
        return {"unread": self.unread(), "receipts_sent": sent}

    #: A typing content goes to a peer at most this often, unless its value changes (ms).
    TYPING_INTERVAL_MS = 3000

    def typing(self, peer: str, typing: bool) -> bool:
        """Tell the peer we are (not) typing: sealed and published now to each of its installations we
        have a session with, or not at all (never stored, never queued, never retried)."""
        peer = self._checked_peer(peer)
        if not isinstance(typing, bool):
            raise BadInput("typing must be true or false")
        now = now_ms()
        prev = self._typing_sent.get(peer)
        if prev is not None and prev[1] == typing and now - prev[0] < self.TYPING_INTERVAL_MS:
            return False
        if consent.state(self.store, peer) != "allowed":
            return False  # a request (or a blocked peer) learns nothing about us, as with read receipts
        active = {k: v for k, v in (self.peers.cached(peer) or {}).items() if k != self.installation_id}
        if not active:
            return False
        content = Content.build(C.TYPING, new_message_id(), self.address, peer, now, [typing])
        envelopes: list[tuple[str, bytes]] = []
        with self.store.write() as c:
            for iid in sorted(active):
                s = self._active_session(c, iid)
                if s is None:
                    continue
                s, wire_msg = session.encrypt(s, content.encode())
                self._save_session(c, s)
                envelopes.append((iid, sealed.seal(active[iid].identity_pub, iid, self.installation_id, self.record, wire_msg)))
        sent = False
        for iid, payload in envelopes:
            for url in self.inbox_relays(iid):
                try:
                    self.client(url).publish(inbox_topic(iid), payload)
                    sent = True
                    break
                except (RelayUnavailable, RelayError) as exc:
                    log.info("typing to %s via %s not sent: %s", iid, url, exc)
        if sent:
            self._typing_sent[peer] = (now, typing)
        return sent

    def pending_count(self, *, queued_by: int | None = None) -> int:
        """Messages not yet sent (including those backing off); failed ones are not counted.
        ``queued_by``: only messages queued at or before that local ``seq`` (see ``sync_report``)."""
        if queued_by is None:
            return self.store.read("SELECT COUNT(*) AS n FROM outbox WHERE state IN ('pending', 'prepared')")[0]["n"]
        return self.store.read(
            "SELECT COUNT(*) AS n FROM outbox o JOIN messages m ON m.id = o.message_id "
            "WHERE o.state IN ('pending', 'prepared') AND m.seq <= ?",
            (queued_by,),
        )[0]["n"]

    def sync_report(self, *, limit: int = 500, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """``sync``, then what it could not send: ``{"received", "pending"}``. Pending counts only the
        messages queued before the flush began; one another caller (a concurrent ``send``, the daemon's
        API) queues meanwhile is that caller's to deliver and report, not a failure of this sync.

        Raises:
            RelayUnavailable, RelayError
        """
        received = self._receive_all(limit, progress)
        mark = self.store.read("SELECT COALESCE(MAX(seq), 0) AS n FROM messages")[0]["n"]
        self._flush_all()
        return {"received": received, "pending": self.pending_count(queued_by=mark)}

    def flush_outbox(self, *, retry_now: bool = False, wait_for: str | None = None) -> dict[str, str]:
        """Deliver what is due, keeping the order within each conversation (bridge/engine/outbox.py).

        A message that cannot go out yet (backing off, or rate-limited now) holds back only later
        messages to the same peer. An unreachable relay stops the flush. Returns the errors by
        message id (empty when everything went out). ``retry_now``: the user asked (``parley sync``),
        so messages still backing off are tried as well; the daemon's own retries wait for them.

        A conversation another thread is delivering to is skipped (its messages are that thread's),
        except ``wait_for``'s, and every conversation when ``retry_now`` (the user asked to send
        everything now): those are waited for, then what is still due in them is delivered. A message
        another process holds the lease of is skipped, with the later ones to that peer, except in the
        conversations waited for, where the lease is waited out (at most LEASE_MS).

        Raises:
            StoreError, sqlite3.Error: the local database failed.
        """
        errors: dict[str, str] = {}
        if self.passive:
            return errors
        now = now_ms()
        rows = self.store.read(
            "SELECT o.message_id, o.next_attempt_at, m.peer FROM outbox o JOIN messages m ON m.id = o.message_id "
            "WHERE o.state IN ('pending', 'prepared') ORDER BY m.seq"
        )
        held: set[str] = set()  # peers whose conversation waits behind an earlier message
        ahead_done: set[str] = set()  # messages a publish-ahead run took (or looked at) in this flush
        for r in rows:
            mid, peer = r["message_id"], r["peer"]
            if peer in held:
                errors[mid] = "waiting behind an earlier message to the same peer"
                continue
            if r["next_attempt_at"] > now and not retry_now:
                errors[mid] = f"retrying in {(r['next_attempt_at'] - now + 999) // 1000} s"
                held.add(peer)
                continue
            gone = self.store.read("SELECT state FROM outbox WHERE message_id = ?", (mid,))
            if not gone or gone[0]["state"] not in ("pending", "prepared"):
                continue  # a batch (ours, or another thread's) sent it: no need to wait for the lock
            wait = retry_now or peer == wait_for
            lock = self._conversation_lock(peer)
            if not lock.acquire(blocking=wait):
                errors[mid] = "being delivered by another caller"
                held.add(peer)
                continue
            try:
                # Another caller may have delivered, failed or rescheduled it while we waited.
                fresh = self.store.read("SELECT state, next_attempt_at FROM outbox WHERE message_id = ?", (mid,))
                if not fresh or fresh[0]["state"] not in ("pending", "prepared"):
                    continue
                if fresh[0]["next_attempt_at"] > now and not retry_now:
                    errors[mid] = f"retrying in {(fresh[0]['next_attempt_at'] - now + 999) // 1000} s"
                    held.add(peer)
                    continue
                if mid not in ahead_done:
                    # This message and the ones queued after it to the same peer, read now that the lock
                    # is ours (other threads may have queued more while we waited): the due prefix.
                    run = []
                    for x in self.store.read(
                        "SELECT o.message_id, o.next_attempt_at FROM outbox o JOIN messages m ON m.id = o.message_id "
                        "WHERE m.peer = ? AND o.state IN ('pending', 'prepared') AND m.seq >= (SELECT seq FROM messages WHERE id = ?) "
                        "ORDER BY m.seq LIMIT ?",
                        (peer, mid, AHEAD_MAX),
                    ):
                        if x["next_attempt_at"] > now and not retry_now and run:
                            break  # backing off: it holds back the later ones
                        run.append(x["message_id"])
                    ahead_done.update(run)
                    if len(run) > 1 and run[0] == mid:  # a backlog; one message goes the per-message way
                        self._publish_ahead(run)
                        if self.store.read("SELECT state FROM outbox WHERE message_id = ?", (mid,))[0]["state"] not in ("pending", "prepared"):
                            continue  # sent (or failed) by the batch: nothing left for the per-message path
                while True:
                    try:
                        self._deliver(mid)
                        break
                    except Busy:
                        # Another process holds it. The conversation we were asked to wait for
                        # waits for that process too (polling the store: there is no other signal).
                        if not wait or not self._await_lease(mid):
                            raise
            except Busy as exc:  # another process is delivering it: not an attempt of ours
                errors[mid] = str(exc)
                held.add(peer)
            except RelayUnavailable as exc:  # nobody's fault: no attempt counted; other peers' relays may be up
                errors[mid] = str(exc)
                held.add(peer)
                self._note_attempt(mid, str(exc), counted=False)
            except RelayError as exc:
                errors[mid] = str(exc)
                if exc.status in (401, 408, 429) or exc.status >= 500:  # worth another try, later
                    held.add(peer)
                    self._note_attempt(mid, str(exc))
                else:
                    self._note_attempt(mid, str(exc), failed=True)  # the relay refuses it for good
            except NotRegistered as exc:
                errors[mid] = str(exc)
                self._note_attempt(mid, str(exc), failed=True)
            except (StoreError, sqlite3.Error):
                raise
            except Exception as exc:  # a bug reached by this message: it backs off, the others go on
                log.exception("message %s could not be delivered", mid)
                errors[mid] = inbox.describe(exc)
                held.add(peer)
                self._note_attempt(mid, errors[mid])
            finally:
                lock.release()
        return errors

    def _publish_ahead(self, mids: list[str]) -> int:
        """The fast path of a conversation's backlog (issue 13): lease, prepare and publish the due
        messages ``mids`` (oldest first, one conversation, its lock held) with one batch request per
        relay (``POST /v1/envelopes/batch``, 1.4; one by one to an older relay) instead of one request
        per envelope. It does only what :meth:`_deliver` would do for them, with the same state
        transitions, and stops at the first message it cannot lease or prepare, and, per relay, at
        the first envelope refused: so each inbox still gets the conversation's envelopes in order.
        Everything it leaves (a refusal, another relay, a log grown longer, marking a message sent) is
        done by the per-message :meth:`_deliver` that the caller runs next for every message.
        Returns how many envelopes it published. Never raises for a relay or a message; a store
        failure is logged and left to the per-message path."""
        owner = f"{os.getpid()}:{os.urandom(8).hex()}"
        leased: list[str] = []
        released = False
        try:
            since = now_ms()
            leased = self._lease_run(mids, owner)
            ready: list[str] = []
            k = 0
            while k < len(leased):
                mid = leased[k]
                if self.store.read("SELECT state FROM outbox WHERE message_id = ?", (mid,))[0]["state"] == "pending":
                    try:
                        grouped = self._prepare_group(leased[k:], owner)
                    except (StoreError, sqlite3.Error):
                        raise
                    except Exception as exc:  # noqa: BLE001 - a lookup that failed: _prepare below meets it again
                        log.debug("publish ahead: preparing from %s: %s", mid, exc)
                        grouped = 0
                    if grouped:
                        ready += leased[k : k + grouped]
                        k += grouped
                        continue
                    try:
                        self._prepare(mid, lease=owner)
                    except Exception as exc:  # noqa: BLE001 - the per-message path meets it again and handles it
                        log.debug("publish ahead stops at %s: %s", mid, exc)
                        break
                    if self.store.read("SELECT state FROM outbox WHERE message_id = ?", (mid,))[0]["state"] != "prepared":
                        k += 1
                        continue  # done at once (a consent content with no other installation to go to)
                ready.append(mid)
                k += 1
            for mid in ready:  # prepared ahead: its delivery checks the cache for installations found since
                self._ahead_logs.setdefault(mid, {})
            if not ready:
                return 0
            if now_ms() - since > outbox.LEASE_MS // 2 and len(self._lease_run(ready, owner, renew=True)) < len(ready):
                return 0  # preparing took long and another caller took a message over: the per-message path
            order = {m: k for k, m in enumerate(ready)}
            envs = self.store.read(
                "SELECT message_id, installation_id, topic, payload FROM outbox_envelopes "
                f"WHERE message_id IN ({','.join('?' * len(ready))}) AND cursor IS NULL ORDER BY rowid",
                tuple(ready),
            )
            by_relay: dict[str, list[tuple[sqlite3.Row, list[str]]]] = {}
            for env in sorted(envs, key=lambda e: order[e["message_id"]]):  # stable: rowid order within a message
                relays = self.inbox_relays(env["installation_id"])
                if relays:
                    by_relay.setdefault(relays[0], []).append((env, relays))
            published = 0
            for url, batch in by_relay.items():
                for start in range(0, len(batch), MAX_PUBLISH_BATCH):
                    chunk = batch[start : start + MAX_PUBLISH_BATCH]
                    try:
                        done, refused = self.client(url).publish_envelopes([(e["topic"], bytes(e["payload"])) for e, _ in chunk])
                    except (RelayUnavailable, RelayError) as exc:
                        log.debug("publish ahead to %s: %s", url, exc)
                        break
                    now = now_ms()
                    with self.store.write() as c:
                        for (env, relays), pub in zip(chunk, done):
                            mid, iid = env["message_id"], env["installation_id"]
                            c.execute(
                                "UPDATE outbox_envelopes SET cursor = ? WHERE message_id = ? AND installation_id = ? AND cursor IS NULL",
                                (pub.cursor, mid, iid),
                            )
                            c.executemany(
                                "INSERT OR IGNORE INTO outbox_deliveries(message_id, installation_id, relay, state, created_at) "
                                "VALUES (?, ?, ?, ?, ?)",
                                [(mid, iid, u, "done" if u == url else "pending", now) for u in relays],
                            )
                            hint = self._ahead_logs.setdefault(mid, {})
                            for address, n in pub.logs.items():
                                hint[address] = max(n, hint.get(address, 0))
                    published += len(done)
                    if refused is not None or len(done) < len(chunk):
                        break  # this relay's later envelopes wait for the per-message path, in order
            released = self._finish_ahead(ready, owner, leased)
            return published
        except (StoreError, sqlite3.Error) as exc:
            log.warning("publish ahead: the local database failed: %s", exc)
            return 0
        finally:
            if leased and not released:
                with self.store.write() as c:
                    c.executemany(
                        "UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE message_id = ? AND lease_owner = ?",
                        [(m, owner) for m in leased],
                    )

    def _prepare_group(self, mids: list[str], owner: str) -> int:
        """:meth:`_prepare` for a prefix of ``mids`` in one transaction (one commit, not one per
        message): the messages whose every target installation already has a session (no bundle to
        claim, so no session can be started twice) and that are not consent contents. Each message is
        sealed under its own savepoint: one that reaches none of the recipient's installations is
        rolled back and ends the prefix, for :meth:`_prepare` to meet and report. Returns the length
        of the prefix prepared."""
        with_session = {r["remote_iid"] for r in self.store.read("SELECT DISTINCT remote_iid FROM sessions")}
        plans: list[tuple[str, dict[str, session.RemoteInstallation], TextContent, set[str], set[str]]] = []
        for mid in mids:
            msg = self.store.read("SELECT * FROM messages WHERE id = ?", (mid,))[0]
            if msg["kind"] == "consent":
                break
            theirs = outbox.fan_out(self.installations_of(msg["peer"]), with_session)
            mine = outbox.fan_out({k: v for k, v in self.installations_of(self.address).items() if k != self.installation_id}, with_session)
            targets = {**theirs, **mine}
            if not theirs or any(iid not in with_session for iid in targets):
                break
            plans.append((mid, targets, contents.rebuild(msg), set(mine), set(theirs)))
        if not plans:
            return 0
        self._relay_list_or_none()  # made (a write) now, not inside the sealing transaction
        done = 0
        with self.store.write() as c:
            for mid, targets, content, own, theirs_ids in plans:
                row = c.execute("SELECT state, lease_owner FROM outbox WHERE message_id = ?", (mid,)).fetchone()
                if row is None or row["lease_owner"] != owner or row["state"] != "pending":
                    break
                c.execute("SAVEPOINT seal")
                if not any(iid in theirs_ids for iid in self._seal_for(c, mid, targets, {}, content, own)):
                    c.execute("ROLLBACK TO seal")
                    c.execute("RELEASE seal")
                    break
                c.execute("RELEASE seal")
                c.execute("UPDATE outbox SET state = 'prepared' WHERE message_id = ?", (mid,))
                done += 1
        return done

    def _finish_ahead(self, ready: list[str], owner: str, leased: list[str]) -> bool:
        """Mark sent the messages :meth:`_publish_ahead` published completely, as
        :meth:`_deliver_leased` would: every envelope accepted, at least one reaching the recipient,
        and no identity log reported longer (then the per-message path refreshes it and seals for
        the new installations). Stops at the first message not finished, so they finish in order.
        Releases the leases of ``leased`` in the same transaction; returns True (released)."""
        merged: dict[str, int] = {}
        for mid in ready:
            for address, n in self._ahead_logs.get(mid, {}).items():
                merged[address] = max(n, merged.get(address, 0))
        refreshed = bool(merged) and self._follow_logs(ready[0], merged)
        finished: list[sqlite3.Row] = []
        with self.store.write() as c:
            for mid in ready if not refreshed else ():
                counts = c.execute(
                    "SELECT SUM(cursor IS NULL) AS open, SUM(own = 0 AND cursor >= 0) AS reached FROM outbox_envelopes WHERE message_id = ?",
                    (mid,),
                ).fetchone()
                row = c.execute("SELECT state, lease_owner FROM outbox WHERE message_id = ?", (mid,)).fetchone()
                if counts["open"] or not counts["reached"] or row["state"] != "prepared" or row["lease_owner"] != owner:
                    break
                c.execute("UPDATE outbox SET state = 'done', last_error = NULL WHERE message_id = ?", (mid,))
                c.execute("UPDATE messages SET state = 'sent' WHERE id = ?", (mid,))
                finished.append(c.execute("SELECT * FROM messages WHERE id = ?", (mid,)).fetchone())
            c.executemany(
                "UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE message_id = ? AND lease_owner = ?",
                [(m, owner) for m in leased],
            )
        for row in finished:
            self._ahead_logs.pop(row["id"], None)
            self._emit("message.sent", message_dict(row, self.store))
        return True

    def _lease_run(self, mids: list[str], owner: str, *, renew: bool = False) -> list[str]:
        """:meth:`_lease` for several messages in one transaction: the prefix of ``mids`` leased (or,
        with ``renew``, still ours), stopping at the first another caller holds or that is done."""
        now = now_ms()
        got: list[str] = []
        with self.store.write() as c:
            for mid in mids:
                row = c.execute("SELECT state, lease_owner, lease_until FROM outbox WHERE message_id = ?", (mid,)).fetchone()
                if row is None or row["state"] not in ("pending", "prepared"):
                    break
                ours = row["lease_owner"] == owner
                if not ours and (renew or (row["lease_owner"] is not None and row["lease_until"] > now)):
                    break
                c.execute("UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE message_id = ?", (owner, now + outbox.LEASE_MS, mid))
                got.append(mid)
        return got

    def _await_lease(self, mid: str, *, poll_s: float = 0.05) -> bool:
        """Wait until no other process holds a lease on the message (released, run out, or the message
        is no longer deliverable), at most LEASE_MS. Returns False if it was still held then."""
        deadline = now_ms() + outbox.LEASE_MS
        while now_ms() < deadline:
            rows = self.store.read("SELECT state, lease_owner, lease_until FROM outbox WHERE message_id = ?", (mid,))
            if not rows or rows[0]["state"] not in ("pending", "prepared") or rows[0]["lease_owner"] is None:
                return True
            if rows[0]["lease_until"] <= now_ms():
                return True
            time.sleep(poll_s)
        return False

    def _conversation_lock(self, peer: str) -> threading.Lock:
        with self._conversations_lock:
            lock = self._conversations.get(peer)
            if lock is None:
                lock = self._conversations[peer] = threading.Lock()
            return lock

    def fail_outbox_from(self, sender: str, reason: str) -> int:
        """Mark every unsent message written as ``sender`` failed (after the bridge changed wallets:
        receivers would reject them once the old installation statement is revoked)."""
        rows = self.store.read(
            "SELECT o.message_id FROM outbox o JOIN messages m ON m.id = o.message_id "
            "WHERE o.state IN ('pending', 'prepared') AND m.sender = ?",
            (sender,),
        )
        for r in rows:
            self._note_attempt(r["message_id"], reason, failed=True)
        return len(rows)

    def _note_attempt(self, mid: str, error: str, *, failed: bool = False, counted: bool = True) -> None:
        """Record a failed attempt. A counted one schedules the next after a jittered backoff, and
        the MAX_ATTEMPTS-th marks the message failed, as ``failed`` does at once."""
        with self.store.write() as c:
            row = c.execute("SELECT attempts, state FROM outbox WHERE message_id = ?", (mid,)).fetchone()
            if row is None or row["state"] not in ("pending", "prepared"):
                return
            attempts = row["attempts"] + int(counted)
            if counted and attempts >= outbox.MAX_ATTEMPTS:
                failed, error = True, f"gave up after {attempts} attempts: {error}"
            next_at = now_ms() + outbox.backoff_ms(attempts, self._rng) if counted and not failed else 0
            c.execute(
                "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, "
                "state = CASE WHEN ? THEN 'failed' ELSE state END WHERE message_id = ?",
                (attempts, error, next_at, failed, mid),
            )
            if failed:
                c.execute("UPDATE messages SET state = 'failed' WHERE id = ?", (mid,))
                msg = c.execute("SELECT * FROM messages WHERE id = ?", (mid,)).fetchone()
        if failed:
            self._emit("message.failed", message_dict(msg, self.store))

    def _lease(self, mid: str, owner: str, *, renew: bool = False) -> bool:
        """Take (or, with ``renew``, extend) this caller's lease on a message for LEASE_MS, in one write
        transaction. False: nothing left to deliver (sent or failed meanwhile).

        Raises:
            Busy: another caller holds the lease (or, renewing, took it over after ours ran out).
        """
        now = now_ms()
        with self.store.write() as c:
            row = c.execute("SELECT state, lease_owner, lease_until FROM outbox WHERE message_id = ?", (mid,)).fetchone()
            if row is None or row["state"] not in ("pending", "prepared"):
                return False
            ours = row["lease_owner"] == owner
            if not ours and (renew or (row["lease_owner"] is not None and row["lease_until"] > now)):
                raise Busy("being delivered by another process")
            c.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE message_id = ?", (owner, now + outbox.LEASE_MS, mid)
            )
        return True

    def _deliver(self, mid: str) -> None:
        """Prepare (once) and publish one message under a lease on its outbox row (see :meth:`_lease`).

        Raises:
            Busy: another process is delivering it.
        """
        owner = f"{os.getpid()}:{os.urandom(8).hex()}"
        if not self._lease(mid, owner):
            return
        try:
            self._deliver_leased(mid, owner)
        finally:
            with self.store.write() as c:
                c.execute("UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE message_id = ? AND lease_owner = ?", (mid, owner))

    def _deliver_leased(self, mid: str, owner: str) -> None:
        state = self.store.read("SELECT state FROM outbox WHERE message_id = ?", (mid,))[0]["state"]
        if state == "pending":
            self._prepare(mid, lease=owner)
        logs = self._publish_stored(mid, owner)
        if logs is None:
            self._ahead_logs.pop(mid, None)
            return
        ahead = self._ahead_logs.pop(mid, None)  # published by _publish_ahead: what the batch answers reported
        for address, n in (ahead or {}).items():
            logs[address] = max(n, logs.get(address, 0))
        # A relay answer showing a log longer than the cached one (PROTOCOL.md §6.5): a recipient's
        # (or our own) installation may have been authorized since the cache was refreshed. One
        # round: what the envelopes published for the new installations answer is not followed.
        # A message prepared ahead (issue 13) may predate a refresh an earlier message's delivery made:
        # it is extended to what the cache names now, as if it had been prepared after that.
        refreshed = bool(logs) and self._follow_logs(mid, logs)
        if (refreshed or ahead is not None) and self._extend(mid, owner):
            if self._publish_stored(mid, owner) is None:
                return
        reached = self._reached(mid)
        peer = self.store.read("SELECT peer FROM messages WHERE id = ?", (mid,))[0]["peer"]
        if reached == 0 and self._gone(mid) and self._refresh_gone(peer) and self._extend(mid, owner):
            # Every installation we knew is gone, but the refreshed log names others (the wallet was
            # restored on a new device, issue 15): one more round to those.
            if self._publish_stored(mid, owner) is None:
                return
            reached = self._reached(mid)
        if reached == 0:
            # Every envelope to the recipient was dropped (404: each installation revoked since we
            # looked): nothing reached them, so the message is not "sent" (PROTOCOL.md §6.2 step 4).
            self._note_attempt(mid, f"none of {peer}'s installations is active any more", failed=True)
            return
        with self.store.write() as c:
            left = c.execute("SELECT COUNT(*) FROM outbox_envelopes WHERE message_id = ? AND cursor IS NULL", (mid,)).fetchone()[0]
            if left == 0 and c.execute("SELECT state FROM outbox WHERE message_id = ?", (mid,)).fetchone()[0] == "prepared":
                c.execute("UPDATE outbox SET state = 'done', last_error = NULL WHERE message_id = ?", (mid,))
                c.execute("UPDATE messages SET state = 'sent' WHERE id = ?", (mid,))
                row = c.execute("SELECT * FROM messages WHERE id = ?", (mid,)).fetchone()
            else:
                row = None
        if row is not None:  # control contents too (the daemon wakes its delivery loop); LocalApi shows displayable ones
            self._emit("message.sent", message_dict(row, self.store))

    def _publish_stored(self, mid: str, owner: str) -> dict[str, int] | None:
        """Publish the message's stored envelopes not published yet, each to its installation's inbox
        relays in order until one accepts (PROTOCOL.md §6.2 step 4); the installation's other inbox
        relays are queued for :meth:`retry_deliveries`. Returns the log lengths the relays' answers
        reported (address → most records reported), or None when the message needs nothing more
        (sent or failed meanwhile).

        Raises:
            Busy: another process took the message over (our lease ran out).
            RelayUnavailable: none of an installation's relays could be reached.
            RelayError: its relays refused (the first refusal that is not "not here"; see
                :meth:`_defer_full` for an installation whose inbox is full).
        """
        logs: dict[str, int] = {}
        full: list[tuple[str, list[str], bool, RelayError]] = []
        for env in self.store.read(
            "SELECT installation_id, topic, payload, own FROM outbox_envelopes WHERE message_id = ? AND cursor IS NULL", (mid,)
        ):
            # Still ours, for one more publish: an envelope is published by the lease holder only.
            if not self._lease(mid, owner, renew=True):
                return None
            iid = env["installation_id"]
            relays = self.inbox_relays(iid)
            cursor, accepted_by, errors = None, None, []
            unavailable: RelayUnavailable | None = None
            refused: RelayError | None = None
            for url in relays:
                try:
                    published = self.client(url).publish_envelope(env["topic"], bytes(env["payload"]))
                except NotFound as exc:
                    errors.append(str(exc))  # names the relay
                    continue
                except RelayUnavailable as exc:
                    unavailable = unavailable or exc
                    continue
                except RelayError as exc:
                    refused = refused or exc
                    continue
                cursor, accepted_by = published.cursor, url
                for address, n in published.logs.items():
                    logs[address] = max(n, logs.get(address, 0))
                break
            if cursor is None:
                if refused is not None and refused.status == 429 and refused.code == "inbox_full":
                    full.append((iid, relays, bool(env["own"]), refused))
                    continue
                if refused is not None:
                    raise refused
                if unavailable is not None:
                    raise unavailable
                # Every relay it reads says it is not there: revoked since we looked. It must not get
                # the message; the others still do. The identity cache drops it until a scheduled pass
                # says otherwise.
                log.info("installation %s is gone (%s); envelope dropped", iid, "; ".join(errors))
                cursor = -1
                self.peers.installation_gone(iid)
            now = now_ms()
            with self.store.write() as c:
                c.execute("UPDATE outbox_envelopes SET cursor = ? WHERE message_id = ? AND installation_id = ?", (cursor, mid, iid))
                if accepted_by is not None:
                    c.executemany(
                        "INSERT OR IGNORE INTO outbox_deliveries(message_id, installation_id, relay, state, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(mid, iid, url, "done" if url == accepted_by else "pending", now) for url in relays],
                    )
        if full:
            self._defer_full(mid, full)
        return logs

    def _defer_full(self, mid: str, full: list[tuple[str, list[str], bool, RelayError]]) -> None:
        """Installations whose inbox is full (every relay it reads that answered said ``429 inbox_full``)
        do not hold the message back (PROTOCOL.md §12.5): a standby installation nobody drains, or an inbox
        flooded with junk, must not delay or fail what the wallet's other installations receive. Their
        envelopes are handed to :meth:`retry_deliveries` (backoff, given up after MAX_ATTEMPTS or
        DELIVERY_MAX_AGE_MS) and marked ``cursor = -2``. Only when no installation of the recipient has
        taken the message does a full inbox of the recipient's raise, as any 429 does (the message backs off).

        Raises:
            RelayError: the ``inbox_full`` refusal, when the recipient got the message nowhere else.
        """
        reached = self.store.read(
            "SELECT COUNT(*) AS n FROM outbox_envelopes WHERE message_id = ? AND own = 0 AND cursor >= 0", (mid,)
        )[0]["n"]
        for _iid, _relays, own, exc in full:
            if not own and not reached:
                raise exc
        now = now_ms()
        with self.store.write() as c:
            for iid, relays, _own, exc in full:
                log.info("message %s: the inbox of installation %s is full (%s); retried in the background", mid, iid, exc)
                c.execute("UPDATE outbox_envelopes SET cursor = -2 WHERE message_id = ? AND installation_id = ?", (mid, iid))
                c.executemany(
                    "INSERT OR IGNORE INTO outbox_deliveries(message_id, installation_id, relay, state, attempts, next_attempt_at, "
                    "created_at, last_error) VALUES (?, ?, ?, 'pending', 1, ?, ?, ?)",
                    [(mid, iid, url, now + outbox.backoff_ms(1, self._rng), now, str(exc)) for url in relays],
                )

    def inbox_relays(self, installation_id: str) -> list[str]:
        """The relays an installation reads, in its order (its relay list; else where its wallet's log
        was found), then, for an installation we know nothing about, our own relays (a 1.0 peer
        shares ours). Our own other installations read our home relays unless their list says otherwise."""
        relays = [u for u in self.peers.inbox_relays(installation_id) if self.may_use(u)]
        return relays or list(dict.fromkeys([*self.home_relays, *self.directory_relays]))

    def retry_deliveries(self, *, limit: int = 200) -> int:
        """Publish envelopes to the inbox relays that did not take them yet (an envelope is delivered
        once one relay accepts it; the recipient's other relays get it here, in the background).
        Returns how many were published now. A relay that answers "not here" (404) is not asked again;
        others back off, and give up after outbox.MAX_ATTEMPTS attempts or DELIVERY_MAX_AGE_MS."""
        now = now_ms()
        rows = self.store.read(
            "SELECT d.message_id, d.installation_id, d.relay, d.attempts, d.created_at, e.topic, e.payload "
            "FROM outbox_deliveries d JOIN outbox_envelopes e ON e.message_id = d.message_id AND e.installation_id = d.installation_id "
            "WHERE d.state = 'pending' AND d.next_attempt_at <= ? ORDER BY d.created_at LIMIT ?",
            (now, limit),
        )
        done = 0
        down: set[str] = set()
        for r in rows:
            if r["relay"] in down:
                continue
            state, error = "done", None
            try:
                self.client(r["relay"]).publish_envelope(r["topic"], bytes(r["payload"]))
                done += 1
            except NotFound as exc:
                state, error = "gone", str(exc)
            except (RelayUnavailable, RelayError) as exc:
                if isinstance(exc, RelayUnavailable):
                    down.add(r["relay"])
                attempts = r["attempts"] + 1
                give_up = attempts >= outbox.MAX_ATTEMPTS or now - r["created_at"] > DELIVERY_MAX_AGE_MS
                state, error = ("failed" if give_up else "pending"), str(exc)
                with self.store.write() as c:
                    c.execute(
                        "UPDATE outbox_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? "
                        "WHERE message_id = ? AND installation_id = ? AND relay = ?",
                        (state, attempts, now + outbox.backoff_ms(attempts, self._rng), error, r["message_id"], r["installation_id"], r["relay"]),
                    )
                continue
            with self.store.write() as c:
                c.execute(
                    "UPDATE outbox_deliveries SET state = ?, last_error = ? WHERE message_id = ? AND installation_id = ? AND relay = ?",
                    (state, error, r["message_id"], r["installation_id"], r["relay"]),
                )
        return done

    def pending_deliveries(self) -> int:
        """Envelopes still to be published to some other inbox relay of their installation."""
        return int(self.store.read("SELECT COUNT(*) AS n FROM outbox_deliveries WHERE state = 'pending'")[0]["n"])

    def _reached(self, mid: str) -> int:
        """Envelopes of the message to the recipient that were not dropped as gone."""
        return int(self.store.read(
            "SELECT COUNT(*) AS n FROM outbox_envelopes WHERE message_id = ? AND own = 0 AND (cursor IS NULL OR cursor >= 0)", (mid,)
        )[0]["n"])

    def _gone(self, mid: str) -> int:
        """Envelopes of the message to the recipient dropped because the installation is gone (404). A
        content with no envelope to anyone but ourselves (consent, sealed only to our own installations)
        has none, and must not make us look our own address up right after a send."""
        return int(self.store.read(
            "SELECT COUNT(*) AS n FROM outbox_envelopes WHERE message_id = ? AND own = 0 AND cursor = -1", (mid,)
        )[0]["n"])

    def _refresh_gone(self, peer: str) -> bool:
        try:
            return self.peers.refresh_gone(peer)
        except (RelayUnavailable, RelayError) as exc:
            log.warning("could not refresh %s after its installations were gone: %s", peer, exc)
            return False

    def _follow_logs(self, mid: str, logs: dict[str, int]) -> bool:
        """Refresh the recipient's and our own cached log if the relay reports it longer (at most once a
        minute per address: bridge/engine/peers.py). Other addresses in the answer are ignored. Returns
        True if anything was refreshed. A failed refresh is logged: the message went out to what we knew."""
        peer = self.store.read("SELECT peer FROM messages WHERE id = ?", (mid,))[0]["peer"]
        reported: dict[str, int] = {}
        for address, n in logs.items():
            try:
                address = identity.checksum_address(address)
            except (identity.IdentityError, ValueError, TypeError):
                continue
            reported[address] = max(n, reported.get(address, 0))
        refreshed = False
        for address in dict.fromkeys((peer, self.address)):
            if address not in reported:
                continue
            try:
                refreshed = self.peers.refresh_if_longer(address, reported[address]) or refreshed
            except (RelayUnavailable, RelayError) as exc:
                log.warning("could not refresh %s after the relay reported a longer log: %s", address, exc)
        return refreshed

    def _extend(self, mid: str, lease: str) -> list[str]:
        """Seal an already prepared message for the active installations (the recipient's, our own other
        ones) that have no envelope of it yet, keeping MAX_FANOUT per wallet. Returns those added.

        Raises:
            Busy: another process took the message over.
        """
        msg = self.store.read("SELECT * FROM messages WHERE id = ?", (mid,))[0]
        have = {r["installation_id"] for r in self.store.read("SELECT installation_id FROM outbox_envelopes WHERE message_id = ?", (mid,))}
        with_session = {r["remote_iid"] for r in self.store.read("SELECT DISTINCT remote_iid FROM sessions")}
        targets: dict[str, session.RemoteInstallation] = {}
        own: set[str] = set()
        for address in dict.fromkeys((msg["peer"], self.address)):
            active = {k: v for k, v in (self.peers.cached(address) or {}).items() if k != self.installation_id}
            room = outbox.MAX_FANOUT - len(have & active.keys())
            new = [iid for iid in outbox.fan_out(active, with_session) if iid not in have][: max(room, 0)]
            targets.update((iid, active[iid]) for iid in new)
            if address == self.address:
                own.update(new)
        if not targets:
            return []
        try:
            bundles = self._claim_bundles([iid for iid in targets if iid not in with_session])
        except (RelayUnavailable, RelayError) as exc:
            log.warning("message %s: no bundles for %d new installation(s): %s", mid, len(targets), exc)
            return []
        content = contents.rebuild(msg)
        self._relay_list_or_none()  # made (a write) now, not inside the sealing transaction
        with self.store.write() as c:
            row = c.execute("SELECT state, lease_owner FROM outbox WHERE message_id = ?", (mid,)).fetchone()
            if row["lease_owner"] != lease:
                raise Busy("being delivered by another process")
            if row["state"] != "prepared":
                return []
            added = self._seal_for(c, mid, targets, bundles, content, own)
        if added:
            log.info("message %s: sealed for %d installation(s) authorized since the last refresh", mid, len(added))
        return added

    def _seal_for(
        self,
        c: sqlite3.Connection,
        mid: str,
        targets: dict[str, session.RemoteInstallation],
        bundles: dict[str, PK.Bundle],
        content: TextContent,
        own: set[str],
    ) -> list[str]:
        """Encrypt ``content`` to each target (its session, or a new one from its bundle) and store the
        envelopes, in the caller's transaction; ``own`` names the targets that are our own other
        installations. Returns the installations sealed for."""
        sealed_for: list[str] = []
        for iid, remote in targets.items():
            s = self._active_session(c, iid)
            if s is None:
                if iid not in bundles:
                    continue
                with self._fanout_lock:
                    self._bundles.pop(iid, None)  # used (or bad): never initiate twice from one bundle
                try:
                    s = session.initiate(self.local, remote, bundles[iid])
                except P.CryptoError as exc:
                    log.warning("installation %s: bad prekey bundle (%s); skipped", iid, exc)
                    continue
            s, wire_msg = session.encrypt(s, self._content_for(c, iid, content))
            payload = sealed.seal(remote.identity_pub, iid, self.installation_id, self.record, wire_msg)
            self._save_session(c, s)
            c.execute(
                "INSERT INTO outbox_envelopes(message_id, installation_id, topic, payload, own) VALUES (?, ?, ?, ?, ?)",
                (mid, iid, inbox_topic(iid), payload, int(iid in own)),
            )
            sealed_for.append(iid)
        return sealed_for

    def _content_for(self, c: sqlite3.Connection, iid: str, content: TextContent) -> bytes:
        """``content`` encoded for installation ``iid``: carrying our relay list (PROTOCOL.md §6.1) until
        that installation has been sent the current version once. Only then: the list makes a content
        ~200 bytes longer, which would move short texts into the next padding bucket every time."""
        current = self._current_relay_list()  # made before the caller's transaction (_relay_list_or_none)
        if current is None or content.content_type != C.TEXT:  # the relay list rides on "text" contents only
            return content.encode()
        record, version = current[0], str(current[1]).encode()
        key = f"relays_sent:{iid}"
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None and bytes(row["value"]) == version:
            return content.encode()
        c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, version))
        return dataclasses.replace(content, sender_relays=record).encode()

    def _active_session(self, c: sqlite3.Connection, remote_iid: str) -> session.Session | None:
        row = c.execute(
            "SELECT sid, state FROM sessions WHERE remote_iid = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", (remote_iid,)
        ).fetchone()
        if row is None:
            return None
        return session.Session.from_bytes(self._unseal(bytes(row["state"]), b"session/" + remote_iid.encode() + bytes(row["sid"])))

    def _save_session(self, c: sqlite3.Connection, s: session.Session) -> None:
        blob = self._seal(s.to_bytes(), b"session/" + s.remote_iid.encode() + s.sid)
        ts = now_ms()
        c.execute(
            "INSERT INTO sessions(remote_iid, sid, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(remote_iid, sid) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (s.remote_iid, s.sid, blob, ts, ts),
        )

    def _prepare(self, mid: str, *, lease: str | None = None) -> None:
        """Encrypt the message to every target installation and store the envelopes, once.

        Raises:
            Busy: ``lease`` was given and another caller took the message over meanwhile.
            NotRegistered, RelayUnavailable, RelayError
        """
        msg = self.store.read("SELECT * FROM messages WHERE id = ?", (mid,))[0]
        if msg["kind"] == "consent":  # consent (issue 12): to our own other installations only; none: done at once
            return consent.prepare(self, mid, msg, lease)
        peer = msg["peer"]
        theirs = self.installations_of(peer)
        if not theirs:
            raise NotRegistered(f"{peer} is not registered on any relay asked ({self._asked()})")
        mine = {k: v for k, v in self.installations_of(self.address).items() if k != self.installation_id}
        with_session = {r["remote_iid"] for r in self.store.read("SELECT DISTINCT remote_iid FROM sessions")}
        # At most MAX_FANOUT installations per wallet (bridge/engine/outbox.py): a crafted identity
        # log with hundreds of authorizations costs one message a bounded number of claims.
        theirs = outbox.fan_out(theirs, with_session)
        mine = outbox.fan_out(mine, with_session)
        targets = {**theirs, **mine}
        bundles = self._claim_bundles([iid for iid in targets if iid not in with_session])
        content = contents.rebuild(msg)
        self._relay_list_or_none()  # made (a write) now, not inside the sealing transaction
        with self.store.write() as c:
            row = c.execute("SELECT state, lease_owner FROM outbox WHERE message_id = ?", (mid,)).fetchone()
            if lease is not None and row["lease_owner"] != lease:
                raise Busy("being delivered by another process")  # ours ran out while claiming bundles
            if row["state"] != "pending":
                return  # another process prepared it meanwhile
            prepared = sum(iid in theirs for iid in self._seal_for(c, mid, targets, bundles, content, set(mine)))
            if prepared == 0:
                raise NotRegistered(f"none of {peer}'s installations could be reached (no prekeys)")
            c.execute("UPDATE outbox SET state = 'prepared' WHERE message_id = ?", (mid,))

    def _claim_bundles(self, iids: list[str]) -> dict[str, PK.Bundle]:
        """Prekey bundles for installations we have no session with yet.

        A bundle claimed for a message that was then retried is reused (a retry does not burn the
        peer's one-time prekeys again); an installation found without prekeys is skipped for
        NO_PREKEYS_TTL_MS.

        Raises:
            RelayUnavailable, RelayError: the claim failed as a whole (e.g. 429): retry the message later.
        """
        now = now_ms()
        out: dict[str, PK.Bundle] = {}
        with self._fanout_lock:
            for iid, until in list(self._no_prekeys.items()):
                if until <= now:
                    del self._no_prekeys[iid]
            for iid, (at, _) in list(self._bundles.items()):
                if now - at > outbox.BUNDLE_TTL_MS:
                    del self._bundles[iid]
            cached = {iid: self._bundles[iid][1] for iid in iids if iid in self._bundles}
            skip = {iid for iid in iids if iid in self._no_prekeys}
        for iid in iids:
            if iid in cached:
                out[iid] = cached[iid]
                continue
            if iid in skip:
                continue
            try:
                bundle = PK.Bundle.decode(self._claim(iid))
            except NotFound:
                log.warning("installation %s has no prekeys on its relays; skipped", iid)
                with self._fanout_lock:
                    self._no_prekeys[iid] = now_ms() + outbox.NO_PREKEYS_TTL_MS
                continue
            except WireError as exc:
                log.warning("installation %s: malformed bundle (%s); skipped", iid, exc)
                with self._fanout_lock:
                    self._no_prekeys[iid] = now_ms() + outbox.NO_PREKEYS_TTL_MS
                continue
            out[iid] = bundle
            with self._fanout_lock:
                self._bundles[iid] = (now_ms(), bundle)
        return out

    def _claim(self, iid: str) -> bytes:
        """Claim ``iid``'s bundle from its inbox relays in order: the primary holds its one-time prekeys,
        the others its signed and last-resort keys only (PROTOCOL.md §4).

        Raises:
            NotFound: no relay it reads has prekeys for it.
            RelayUnavailable, RelayError: none answered, or one refused in another way.
        """
        first: Exception | None = None
        not_found: NotFound | None = None
        for url in self.inbox_relays(iid):
            try:
                return self.client(url).claim(iid)
            except NotFound as exc:
                not_found = not_found or exc
            except (RelayUnavailable, RelayError) as exc:
                first = first or exc
        if first is not None:
            raise first
        raise not_found or NotFound(404, "not_found", f"no relay known for installation {iid}")

    # --- receiving ------------------------------------------------------------------

    def stream(self, relay: str | None = None) -> str:
        """The key of our inbox on ``relay`` (default: the primary) in ``cursors`` and ``quarantine``:
        each relay numbers its envelopes itself."""
        return f"{self.topic}@{relay or self.relay_url}"

    def _legacy_cursor(self) -> None:
        """A store from before issue 10 kept one cursor, keyed by the bare topic, for its one relay
        (now the primary): carry it over."""
        with self.store.write() as c:
            row = c.execute("SELECT cursor FROM cursors WHERE topic = ?", (self.topic,)).fetchone()
            if row is not None:
                c.execute("INSERT OR IGNORE INTO cursors(topic, cursor) VALUES (?, ?)", (self.stream(), row["cursor"]))
                c.execute("DELETE FROM cursors WHERE topic = ?", (self.topic,))

    def cursor(self, relay: str | None = None) -> int:
        rows = self.store.read("SELECT cursor FROM cursors WHERE topic = ?", (self.stream(relay),))
        return rows[0]["cursor"] if rows else 0

    def process(self, env: Envelope, relay: str | None = None) -> dict[str, Any] | None:
        """Process one envelope from our inbox on ``relay`` (default: the primary) exactly once.
        Returns the new message, if any. See :meth:`process_many`."""
        return self.process_many([env], relay)[0]

    def process_many(self, envs: Sequence[Envelope], relay: str | None = None) -> list[dict[str, Any] | None]:
        """Process envelopes from our inbox on ``relay`` (default: the primary), in cursor order, each
        exactly once, in one write transaction (issue 13: a backlog is one commit per page fetched,
        not one per envelope). Returns the new message of each, or None.

        Whatever an envelope raises is quarantined (bridge/engine/inbox.py) and the cursor moves
        past it; a savepoint per envelope undoes anything the failed envelope wrote. Only a failure
        of the local database (``sqlite3.Error``, ``StoreError``) propagates: then nothing at all is
        committed and the envelopes are tried again. The same envelope arriving through another of
        our relays (senders publish to each relay we read) is skipped by its digest (PROTOCOL.md §6.3).
        Notifications are emitted after the commit, in order.
        """
        stream = self.stream(relay)
        checked: list[tuple[Envelope, bytes, str | None, sealed.Unsealed | None, Any]] = []
        for env in envs:
            self._tls.unsealed = None
            try:
                rejected = self._sender_not_active(env.payload)
            except (StoreError, sqlite3.Error):
                raise  # our database, not the envelope: retried later
            except Exception as exc:  # hostile bytes must never escape as an exception that stops the inbox
                log.warning("envelope %s: sender check failed: %s", env.cursor, exc)
                rejected = inbox.describe(exc)
            opened = getattr(self._tls, "unsealed", None)
            self._tls.unsealed = None
            un = opened[1] if opened and opened[0] is env.payload else None
            checked.append((env, hashlib.sha256(env.payload).digest(), rejected, un, self.peers.take_pending()))
        outcomes: list[tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]], bool]] = []
        try:
            with self.store.write() as c:
                row = c.execute("SELECT cursor FROM cursors WHERE topic = ?", (stream,)).fetchone()
                last = row["cursor"] if row is not None else None
                for env, digest, rejected, un, _ in checked:
                    outcomes.append(self._process_in(c, env, digest, rejected, un, relay, last))
                    if last is None or env.cursor > last:
                        last = env.cursor
                if last is not None and (row is None or last > row["cursor"]):
                    c.execute(
                        "INSERT INTO cursors(topic, cursor) VALUES (?, ?) ON CONFLICT(topic) DO UPDATE SET cursor = excluded.cursor",
                        (stream, last),
                    )
        finally:
            self._tls.events = None
        # A batch announces each message, then each conversation it touched once (conversations.changed):
        # listeners that recount a conversation (unread counts) do it once per batch, not per message.
        batch = len(envs) > 1
        # messages from senders accepted on their statement alone: re-checked by the next scheduled pass
        self.peers.recheck_many([(check[4], message) for (message, _, _), check in zip(outcomes, checked) if message is not None])
        self._tls.in_batch = batch
        touched: dict[str, None] = {}
        try:
            for message, events, _ in outcomes:
                if message is not None:
                    self._emit("message.new", message)
                    touched[message["peer"]] = None
                for event, payload in events:
                    if event == "message.updated":
                        payload = self.message(payload["id"]) or payload  # as committed
                    self._emit(event, payload)
        finally:
            self._tls.in_batch = False
        if batch and touched:
            self._emit("conversations.changed", {"peers": list(touched)})
        if any(used for _, _, used in outcomes):
            try:
                self.ensure_prekeys()
            except (RelayUnavailable, RelayError) as exc:
                log.warning("could not replenish prekeys: %s", exc)
        return [message for message, _, _ in outcomes]

    def _process_in(
        self, c: sqlite3.Connection, env: Envelope, digest: bytes, rejected: str | None, un: sealed.Unsealed | None,
        relay: str | None, last: int | None,
    ) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]], bool]:
        """One envelope of :meth:`process_many`, inside its transaction; ``last``: the cursor already
        taken in on this stream. Returns (new message, events to emit after the commit, used prekeys)."""
        events: list[tuple[str, dict[str, Any]]] = []
        self._tls.events = events  # what _open has to announce besides a new message (emitted after the commit)
        message: dict[str, Any] | None = None
        used_prekeys = False
        if last is not None and env.cursor <= last:
            return None, [], False
        if c.execute("SELECT 1 FROM seen_envelopes WHERE digest = ?", (digest,)).fetchone() is not None:
            log.info("envelope %s on %s: already taken in through another relay; skipped", env.cursor, relay or self.relay_url)
            return None, [], False
        c.execute("INSERT INTO seen_envelopes(digest, at) VALUES (?, ?)", (digest, now_ms()))
        self._seen_since_prune += 1
        if self._seen_since_prune >= SEEN_PRUNE_EVERY:
            # kept twice the relays' default retention: a copy older than that is gone from every relay
            c.execute("DELETE FROM seen_envelopes WHERE at < ?", (now_ms() - SEEN_KEEP_MS,))
            self._seen_since_prune = 0
        if rejected is None:
            # A rejected envelope must change nothing but the quarantine and the cursor: _open may
            # already have written (e.g. deleted the one-time prekeys an impostor's message used)
            # when a later check fails, so its writes are undone with a savepoint.
            c.execute("SAVEPOINT open_envelope")
            try:
                message, used_prekeys = self._open(c, env.payload, un)
            except session.DuplicateMessage:
                c.execute("ROLLBACK TO open_envelope")
                events.clear()
                log.info("envelope %s: redelivery of a message already read; dropped", env.cursor)
            except (StoreError, sqlite3.Error):
                raise  # the local database failed, not the envelope: roll everything back, retry later
            except Exception as exc:
                c.execute("ROLLBACK TO open_envelope")
                events.clear()
                message, used_prekeys = None, False
                rejected = inbox.describe(exc)
            c.execute("RELEASE open_envelope")
        if rejected is not None:
            log.warning("envelope %s quarantined: %s", env.cursor, rejected)
            inbox.quarantine(c, self.stream(relay), env.cursor, env.payload, rejected)
        return message, events, used_prekeys

    def in_batch(self) -> bool:
        """True while :meth:`process_many` announces the messages of a batch (on this thread): a
        ``conversations.changed`` event follows them, once per batch."""
        return bool(getattr(self._tls, "in_batch", False))

    def quarantine_count(self) -> int:
        """How many inbox envelopes were quarantined so far (bridge/engine/inbox.py)."""
        return inbox.quarantine_count(self.store)

    def _verified(self, record: bytes) -> identity.Statement:
        """Verify a sender statement, remembering the answer (EIP-191 recovery is slow in pure Python)."""
        return self.peers.verified(record)

    def _sender_not_active(self, payload: bytes) -> str | None:
        """Why the sealed sender's installation must not be believed (known revoked), if so. No relay request.

        Checked against the identity cache only (bridge/engine/peers.py): fetching the sender's log now
        would tell the relay who sent what it just delivered (issue 8 item 2). An installation the cache
        does not know is accepted on its signed statement and re-checked by the next scheduled refresh,
        which flags the message if the log then shows it revoked or unregistered. Envelopes that do not
        open are left to ``_open``, which records why.
        """
        self.peers.forget_pending()
        try:
            un = sealed.unseal(self.secrets.identity_key, self.installation_id, payload)
            self._tls.unsealed = (payload, un)  # _open of the same payload uses it instead of opening it again
            st = self._verified(un.sender_record)
        except (P.CryptoError, WireError, identity.IdentityError, ValueError):
            return None
        return self.peers.check_sender(st)

    def _open(self, c: sqlite3.Connection, payload: bytes, un: sealed.Unsealed | None = None) -> tuple[dict[str, Any] | None, bool]:
        if un is None:
            un = sealed.unseal(self.secrets.identity_key, self.installation_id, payload)
        st = self._verified(un.sender_record)
        if st.action != "authorize" or st.installation_id != un.sender_iid:
            raise identity.InvalidStatement("sealed-sender statement does not authorize the sending installation")
        remote = session.RemoteInstallation(st.installation_id, st.signing_key, st.identity_key)
        info = session.peek(un.message)
        row = c.execute("SELECT state FROM sessions WHERE remote_iid = ? AND sid = ?", (remote.installation_id, info.sid)).fetchone()
        used_prekeys = False
        if row is not None:
            current = session.Session.from_bytes(self._unseal(bytes(row["state"]), b"session/" + remote.installation_id.encode() + info.sid))
            new_session, plaintext = session.decrypt(current, un.message)
        elif info.is_prekey:
            spk = self._prekey(c, PK.SPK, info.spk_id)
            otpk = self._prekey(c, PK.OTPK, info.otpk_id) if info.otpk_id is not None else None
            pq = self._prekey(c, info.pqpk_kind or "", info.pqpk_id)
            new_session, plaintext = session.accept(self.local, remote, un.message, spk_priv=spk, otpk_priv=otpk, pqpk_seed=pq)
            # One-time prekeys are single use: forget their private halves (forward secrecy).
            if info.otpk_id is not None:
                c.execute("DELETE FROM prekeys WHERE kind = ? AND id = ?", (PK.OTPK, info.otpk_id))
            if info.pqpk_kind == PK.PQ_OTPK:
                c.execute("DELETE FROM prekeys WHERE kind = ? AND id = ?", (PK.PQ_OTPK, info.pqpk_id))
            used_prekeys = True
        else:
            raise session.SessionError("message for an unknown session")
        content = Content.decode(plaintext)
        if content.sender != st.address:
            raise identity.InvalidStatement("content sender does not match the sealed-sender statement")
        if content.sender == self.address:
            direction, peer = "out", content.recipient  # a copy of what our other installation sent
        elif content.recipient == self.address:
            direction, peer = "in", content.sender
        else:
            raise identity.InvalidStatement("message addressed to someone else")
        if content.content_type == C.CONSENT and not (direction == "out" and content.recipient == self.address):
            raise contents.Refused("consent: only from our own installations")
        self._save_session(c, new_session)
        if content.sender_relays is not None and st.installation_id != self.installation_id:
            # Where the sender reads its inbox: a reply needs to ask no relay (PROTOCOL.md §6.6).
            self.peers.accept_relay_list(c, st.address, st.installation_id, st.signing_key, content.sender_relays)
        if content.content_type == C.CONSENT:
            consent.apply_sync(c, self, content)
            return None, used_prekeys
        if direction == "in" and consent.admit(c, self, peer, content.kind if content.content_type != C.TYPING else "typing") == "drop":
            return None, used_prekeys  # the ratchet state is saved; nothing else (contract §2)
        ts = now_ms()
        what, changed, others = contents.apply_incoming(c, self, content, direction, peer, ts)
        events = getattr(self._tls, "events", None)
        if what == "done":
            if events is not None:
                events.extend(("message.updated", {"id": mid}) for mid in changed)
                events.extend(others)
            return None, used_prekeys
        if not content.known and not content.text:
            # A later 1.x content type with no fallback text: nothing to show.
            log.info("content of unknown type %r without fallback text; nothing shown", content.content_type)
            return None, used_prekeys
        sent_at, claimed = inbox.bounded_sent_at(content.sent_at, ts)  # the peer's clock is only a claim
        c.execute(
            "INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(peer) DO UPDATE SET updated_at = excluded.updated_at",
            (peer, ts, ts),
        )
        kind = content.kind
        text = content.caption or "" if kind == C.ATTACHMENT else content.text
        cur = c.execute(
            "INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read, claimed_sent_at, "
            "kind, content_type, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (content.message_id, peer, content.sender, content.recipient, text, sent_at, ts, direction,
             "sent" if direction == "out" else "received", int(direction == "out"), claimed,
             kind, content.content_type, content.reply_to),
        )
        if cur.rowcount == 0:
            return None, used_prekeys  # already have it: shown once
        if kind == C.ATTACHMENT:
            contents.store_attachments(c, self, content.message_id, content.files, "pending", ts)
        row = c.execute("SELECT * FROM messages WHERE id = ?", (content.message_id,)).fetchone()
        return message_dict(row, c), used_prekeys

    def _prekey(self, c: sqlite3.Connection, kind: str, pid: int | None) -> bytes:
        return self.prekeys.private(c, kind, pid)

    def sync(self, *, limit: int = 500) -> int:
        """Fetch and process everything pending on the relay, then flush the whole outbox (messages
        backing off included: ``parley sync`` is the user asking now). Returns messages received.

        Raises:
            RelayUnavailable, RelayError
        """
        received = self._receive_all(limit)
        self._flush_all()
        return received

    def _receive_all(self, limit: int, progress: Callable[[int], None] | None = None) -> int:
        """Take in what every relay we read holds for us. ``progress(n)``: n envelopes taken in so far
        (called after each transaction of up to PROCESS_BATCH; the relays do not say how many wait)."""
        received = 0
        failures: dict[str, Exception] = {}
        taken = [0]

        def tick(n: int) -> None:
            taken[0] += n
            if progress is not None:
                progress(taken[0])

        for relay in self.reading_relays:
            try:
                received += self._sync_from(relay, limit, tick)
            except (RelayUnavailable, RelayError) as exc:
                failures[relay] = exc
        if len(failures) == len(self.reading_relays):
            raise next(iter(failures.values()))  # one error, the caller's to report
        for relay, exc in failures.items():
            log.warning("could not read our inbox on %s: %s", relay, exc)
        return received

    def _flush_all(self) -> None:
        self.flush_outbox(retry_now=True)  # an explicit sync: what is backing off is tried now too
        self.retry_deliveries()

    def _sync_from(self, relay: str, limit: int, tick: Callable[[int], None] | None = None) -> int:
        """Fetch and process everything pending for us on one relay. Returns messages received."""
        received = 0
        client = self.client(relay)
        token = self.token(relay)
        while True:
            try:
                batch = client.fetch(self.topic, self.cursor(relay), limit, token=token)
            except RelayError as exc:
                if exc.status != 401:
                    raise
                self.forget_token(relay)  # a restarted relay may have forgotten ours
                token = self.token(relay)
                batch = client.fetch(self.topic, self.cursor(relay), limit, token=token)
            for start in range(0, len(batch), PROCESS_BATCH):
                chunk = batch[start : start + PROCESS_BATCH]
                received += sum(m is not None for m in self.process_many(chunk, relay))
                if tick is not None:
                    tick(len(chunk))
            if len(batch) < limit:
                return received

    # --- reading --------------------------------------------------------------------

    def messages(self, peer: str) -> list[dict[str, Any]]:
        """A conversation in the store's own order (arrival; never a peer's clock)."""
        return messages_of(self.store, identity.checksum_address(peer))

    # --- consent (issue 12) ---

    def consent(self, peer: str) -> dict[str, Any]:
        return consent.get(self, peer)

    def set_consent(self, peer: str, action: str) -> dict[str, Any]:
        return consent.set_consent(self, peer, action)

    def conversations(self, folder: str = "inbox") -> list[dict[str, Any]]:
        return consent.conversations(self, folder)

    # --- attachments (issue 12) --- thin methods over bridge/engine/attachments.py

    def upload_begin(self, name: str, size: int, mime: str) -> str:
        from bridge.engine import attachments

        return attachments.upload_begin(self, name, size, mime)

    def upload_chunk(self, upload_id: str, offset: int, data: bytes) -> int:
        from bridge.engine import attachments

        return attachments.upload_chunk(self, upload_id, offset, data)

    def upload_cancel(self, upload_id: str) -> None:
        from bridge.engine import attachments

        attachments.upload_cancel(self, upload_id)

    def upload_file(self, path: Any, progress: Callable[[int, int], None] | None = None) -> str:
        from bridge.engine import attachments

        return attachments.upload_file(self, path, progress)

    def attachment_fetch(self, attachment_id: str) -> dict[str, Any]:
        from bridge.engine import attachments

        return attachments.fetch(self, attachment_id)

    def attachment_path(self, attachment_id: str) -> str:
        from bridge.engine import attachments

        return attachments.attachment_path(self, attachment_id)

    def attachment_read(self, attachment_id: str, offset: int, length: int) -> tuple[bytes, bool, int]:
        from bridge.engine import attachments

        return attachments.attachment_read(self, attachment_id, offset, length)


def messages_of(store: Store, peer: str) -> list[dict[str, Any]]:
    """Read a conversation without unlocking any key (message text is not sealed in the store).

    Ordered by arrival (``seq``: what we wrote, as we queued it; what we received, as it arrived),
    never by ``sent_at``, which a peer chooses.
    """
    rows = store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.peer = ? AND m.kind IN {contents.DISPLAYABLE_SQL} ORDER BY m.seq", (peer,))
    return [message_dict(r, store) for r in rows]

