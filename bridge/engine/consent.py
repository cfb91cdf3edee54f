"""Consent: message requests and blocking (issue 12; PROTOCOL.md §6.8; contract §2 and §10).

Every peer has a state in the ``consent`` table: ``allowed``, ``requested``, ``declined`` or
``blocked``. A peer with no row is decided on first contact: an incoming displayable message from an
address that is not in contacts.json and that we never wrote to makes it ``requested``; anything
else ``allowed``. Sending anything to a peer makes it ``allowed``.

* requested / declined: at most :data:`REQUEST_LIMIT` displayable messages are stored; later ones
  are dropped and counted (``held``). No desktop notification, no read receipt.
* blocked: everything the peer sends is dropped after decryption (the ratchet state is saved by the
  caller); only ``dropped`` changes. Nothing shown, no event, the sender is not told.
* Every decision is queued as a ``consent`` content ``[peer, state, at]`` to our OWN other
  installations (sender == recipient == our address; a row of ``messages`` of kind ``consent`` in
  the conversation with our own address, never listed), and the newest ``at`` wins where it lands.

The engine calls :func:`admit`, :func:`on_outgoing`, :func:`apply_sync` and :func:`state`; it never
decides consent itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from typing import Any

from bridge import identity
from bridge.protocol import wire
from bridge.protocol.content import COMMON_FIELDS, pad, unpad
from bridge.protocol.ids import new_message_id
from bridge.protocol.wire import WireError
from bridge.store import Store, now_ms

__all__ = [
    "REQUEST_LIMIT",
    "STATES",
    "ACTIONS",
    "DISPLAYABLE",
    "admit",
    "on_outgoing",
    "apply_sync",
    "state",
    "get",
    "set_consent",
    "conversations",
    "ConsentContent",
]

log = logging.getLogger("parley.consent")

#: Displayable messages stored from a peer whose conversation is a request (or declined).
REQUEST_LIMIT = 3
STATES = ("allowed", "requested", "declined", "blocked")
#: What each decision sets (unblock: the state before the block, ``allowed`` if none).
ACTIONS = {"accept": "allowed", "decline": "declined", "block": "blocked", "unblock": None}
#: Message kinds that are shown (and counted against the request limit).
DISPLAYABLE = ("text", "reply", "attachment", "unknown")
#: ``kind IN (...)`` for SQL listings.
DISPLAYABLE_SQL = "('text', 'reply', 'attachment', 'unknown')"
FOLDERS = ("inbox", "requests", "all")


class ConsentError(ValueError):
    """A ``consent`` content that must not be applied (not from our own installation, malformed)."""


# --- the `consent` content (contract §1). The core's codec (bridge/protocol/content.py) takes this over
# once it knows the type; until then the consent helper encodes and decodes just this type here. ----


@dataclasses.dataclass(frozen=True)
class ConsentContent:
    """``[1, "consent", message_id, sender, recipient, sent_at, "", peer, state, at]``."""

    message_id: str
    sender: str
    recipient: str
    sent_at: int
    consent_peer: str
    consent_state: str
    consent_at: int
    text: str = ""
    content_type: str = "consent"
    sender_relays: bytes | None = None  # never carried by a consent content (own installations read our relays)

    def encode(self) -> bytes:
        return pad(wire.encode([1, "consent", self.message_id, self.sender, self.recipient, self.sent_at, "",
                                self.consent_peer, self.consent_state, self.consent_at]))

    @classmethod
    def decode(cls, data: bytes) -> "ConsentContent":
        """Raises WireError: not a well-formed consent content."""
        obj = wire.decode(unpad(data))
        if not isinstance(obj, list) or len(obj) != COMMON_FIELDS + 3 or obj[0] != 1 or obj[1] != "consent":
            raise WireError("consent content must be [1, 'consent', id, sender, recipient, sent_at, text, peer, state, at]")
        return cls.from_fields(obj[2], obj[3], obj[4], obj[5], obj[7:])

    @classmethod
    def from_fields(cls, mid: Any, sender: Any, recipient: Any, sent_at: Any, extra: Any) -> "ConsentContent":
        if not isinstance(extra, (list, tuple)) or len(extra) != 3:
            raise WireError("consent extra must be [peer, state, at]")
        peer, st, at = extra
        if not isinstance(peer, str) or len(peer) != 42 or not peer.startswith("0x"):
            raise WireError("consent peer must be a 0x address")
        if st not in STATES:
            raise WireError("consent state must be allowed, requested, declined or blocked")
        return cls(str(mid), str(sender), str(recipient), wire.expect_int(sent_at, "sent_at"), peer, st, wire.expect_int(at, "at"))


def is_consent_plaintext(plaintext: bytes) -> bool:
    """Whether a padded plaintext is a ``consent`` content (cheap check before the full decode)."""
    try:
        obj = wire.decode(unpad(plaintext))
    except WireError:
        return False
    return isinstance(obj, list) and len(obj) > 1 and obj[1] == "consent"


# --- state ---------------------------------------------------------------------------------


def _row(c: sqlite3.Connection | Store, peer: str) -> sqlite3.Row | None:
    if isinstance(c, Store):
        rows = c.read("SELECT * FROM consent WHERE peer = ?", (peer,))
        return rows[0] if rows else None
    return c.execute("SELECT * FROM consent WHERE peer = ?", (peer,)).fetchone()


def state(c_or_store: sqlite3.Connection | Store, peer: str) -> str:
    """``allowed`` | ``requested`` | ``declined`` | ``blocked``; a peer never decided on is ``allowed``
    (the first incoming message decides: :func:`admit`)."""
    row = _row(c_or_store, peer)
    return row["state"] if row is not None and row["state"] in STATES else "allowed"


def _contacts(engine: Any) -> set[str]:
    """Addresses in the home's contacts.json (next to the store), checksummed; unreadable: none."""
    path = getattr(engine, "contacts_file", None) or engine.store.path.parent / "contacts.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    out: set[str] = set()
    if isinstance(data, dict):
        for v in data.values():
            try:
                out.add(identity.checksum_address(v))
            except (identity.IdentityError, ValueError, TypeError):
                continue
    return out


def _first_contact(c: sqlite3.Connection, engine: Any, peer: str) -> str:
    wrote = c.execute("SELECT 1 FROM messages WHERE peer = ? AND direction = 'out' LIMIT 1", (peer,)).fetchone()
    return "allowed" if wrote is not None or peer in _contacts(engine) else "requested"


def _write(c: sqlite3.Connection, peer: str, new: str, previous: str | None, at: int) -> None:
    c.execute(
        "INSERT INTO consent(peer, state, previous, updated_at, held, dropped) VALUES (?, ?, ?, ?, 0, 0) "
        "ON CONFLICT(peer) DO UPDATE SET state = excluded.state, previous = excluded.previous, updated_at = excluded.updated_at",
        (peer, new, previous, at),
    )


def admit(c: sqlite3.Connection, engine: Any, peer: str, kind: str) -> str:
    """``"store"`` or ``"drop"`` for an INCOMING content of ``kind`` from ``peer``, inside the envelope's
    transaction (called after the ratchet state is saved, before anything of the content is stored)."""
    row = _row(c, peer)
    current = row["state"] if row is not None else None
    if current is None:
        decided = _first_contact(c, engine, peer)
        if kind not in DISPLAYABLE:
            # Only a displayable message decides; a control content from a stranger changes nothing.
            return "drop" if kind == "typing" and decided != "allowed" else "store"
        _write(c, peer, decided, None, now_ms())
        current = decided
    if current == "blocked":
        c.execute("UPDATE consent SET dropped = dropped + 1 WHERE peer = ?", (peer,))
        return "drop"
    if current == "allowed":
        return "store"
    # requested / declined
    if kind == "typing":
        return "drop"
    if kind in DISPLAYABLE:
        stored = c.execute("SELECT COUNT(*) FROM messages WHERE peer = ? AND direction = 'in'", (peer,)).fetchone()[0]
        if stored >= REQUEST_LIMIT:
            c.execute("UPDATE consent SET held = held + 1 WHERE peer = ?", (peer,))
            return "drop"
    return "store"


def on_outgoing(c: sqlite3.Connection, engine: Any, peer: str) -> None:
    """In the queue transaction of anything we send to ``peer``: writing to someone accepts them."""
    row = _row(c, peer)
    if row is not None and row["state"] == "allowed":
        return
    if row is None:
        # Undecided: our own other installations learn it from the copy of what we send (an outgoing
        # message decides first contact there too), so no sync content is needed.
        _write(c, peer, "allowed", None, now_ms())
        return
    at = _next_at(row)
    _write(c, peer, "allowed", row["state"], at)
    _queue_sync(c, engine, peer, "allowed", at)


def _next_at(row: sqlite3.Row | None) -> int:
    """A decision's time: now, but after the previous one (newest wins on every installation)."""
    return max(now_ms(), (row["updated_at"] or 0) + 1 if row is not None else 0)


def _queue_sync(c: sqlite3.Connection, engine: Any, peer: str, new: str, at: int) -> str:
    """Queue the decision for our own other installations: a ``consent`` row in the conversation with
    our own address (the outbox sends kind ``consent`` to our own installations only)."""
    me = engine.address
    mid = new_message_id()
    c.execute("INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT(peer) DO NOTHING", (me, at, at))
    c.execute(
        "INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read, kind, content_type, extra) "
        "VALUES (?, ?, ?, ?, '', ?, ?, 'out', 'queued', 1, 'consent', 'consent', ?)",
        (mid, me, me, me, at, at, wire.encode([peer, new, at])),
    )
    c.execute("INSERT INTO outbox(message_id, state) VALUES (?, 'pending')", (mid,))
    return mid


def apply_sync(c: sqlite3.Connection, engine: Any, content: Any) -> None:
    """A ``consent`` content: applied only when it comes from our own other installation (sender and
    recipient are our address); the newest ``at`` wins.

    Raises:
        ConsentError: from anyone else (the envelope is quarantined and nothing changes).
    """
    me = engine.address
    if content.sender != me or content.recipient != me:
        raise ConsentError("consent content not from our own installation")
    try:
        peer = identity.checksum_address(content.consent_peer)
    except (identity.IdentityError, ValueError, TypeError):
        raise ConsentError("consent content names no address") from None
    if content.consent_state not in STATES or peer == me:
        raise ConsentError("bad consent content")
    row = _row(c, peer)
    at = int(content.consent_at)
    if row is not None and (row["updated_at"] or 0) >= at:
        return  # an older decision than ours
    previous = row["state"] if row is not None else None
    if content.consent_state == "blocked" and previous == "blocked":
        previous = row["previous"]
    _write(c, peer, content.consent_state, previous, at)
    engine._emit("consent.changed", {"peer": peer, "consent": content.consent_state})


# --- engine API (contract §5; bound to Engine by thin methods) ----------------------------


def _peer(engine: Any, peer: Any) -> str:
    from bridge.engine.engine import BadInput

    try:
        address = identity.checksum_address(peer)
    except (identity.IdentityError, ValueError, TypeError):
        raise BadInput(f"not an address: {str(peer)[:100]!r}") from None
    if address == engine.address:
        raise BadInput("that is your own address")
    return address


def _dict(engine: Any, c: sqlite3.Connection | Store, peer: str) -> dict[str, Any]:
    row = _row(c, peer)
    return {
        "peer": peer,
        "consent": state(c, peer),
        "held": int(row["held"] or 0) if row is not None else 0,
        "dropped": int(row["dropped"] or 0) if row is not None else 0,
    }


def get(engine: Any, peer: str) -> dict[str, Any]:
    """``{peer, consent, held, dropped}``."""
    return _dict(engine, engine.store, _peer(engine, peer))


def set_consent(engine: Any, peer: str, action: str) -> dict[str, Any]:
    """accept / decline / block / unblock ``peer``; queued for our own other installations.

    Raises:
        BadInput: bad address or action.
    """
    from bridge.engine.engine import BadInput

    if action not in ACTIONS:
        raise BadInput("action must be accept, decline, block or unblock")
    peer = _peer(engine, peer)
    changed = False
    with engine.store.write() as c:
        row = _row(c, peer)
        current = state(c, peer) if row is not None else None
        if action == "unblock":
            new = (row["previous"] or "allowed") if current == "blocked" else current
            previous = None
        else:
            new = ACTIONS[action]
            previous = row["previous"] if current == "blocked" and new == "blocked" else current
        if new is not None and new != current:
            at = _next_at(row)
            _write(c, peer, new, previous, at)
            _queue_sync(c, engine, peer, new, at)
            changed = True
        out = _dict(engine, c, peer)
    if changed:
        engine._emit("consent.changed", {"peer": peer, "consent": out["consent"]})
        try:
            engine.flush_outbox(wait_for=engine.address)
        except Exception as exc:  # delivered later by the outbox; the decision itself is taken
            log.warning("consent sync not sent yet: %s", exc)
    return out


def prepare(engine: Any, mid: str, msg: sqlite3.Row, lease: str | None) -> None:
    """The outbox's prepare step for a ``consent`` row: sealed to our own other installations only;
    with none, it is done at once."""
    from bridge.engine import outbox
    from bridge.engine.engine import Busy

    mine = {k: v for k, v in engine.installations_of(engine.address).items() if k != engine.installation_id}
    with_session = {r["remote_iid"] for r in engine.store.read("SELECT DISTINCT remote_iid FROM sessions")}
    mine = outbox.fan_out(mine, with_session)
    bundles = engine._claim_bundles([iid for iid in mine if iid not in with_session]) if mine else {}
    try:  # the core's codec (issue 12 §1) once merged: the content rebuilt from the row's extras
        from bridge.engine.contents import rebuild  # type: ignore[import-not-found]

        content: Any = rebuild(msg)
    except ImportError:
        content = ConsentContent.from_fields(mid, msg["sender"], msg["recipient"], msg["sent_at"], wire.decode(bytes(msg["extra"])))
    with engine.store.write() as c:
        row = c.execute("SELECT state, lease_owner FROM outbox WHERE message_id = ?", (mid,)).fetchone()
        if lease is not None and row["lease_owner"] != lease:
            raise Busy("being delivered by another process")
        if row["state"] != "pending":
            return
        # own = empty: the recipient IS our address, so these envelopes count as reaching it.
        sealed = engine._seal_for(c, mid, mine, bundles, content, set()) if mine else []
        if not sealed:
            c.execute("UPDATE outbox SET state = 'done', last_error = NULL WHERE message_id = ?", (mid,))
            c.execute("UPDATE messages SET state = 'sent' WHERE id = ?", (mid,))
            return
        c.execute("UPDATE outbox SET state = 'prepared' WHERE message_id = ?", (mid,))


def conversations(engine: Any, folder: str = "inbox") -> list[dict[str, Any]]:
    """Conversations of a folder: ``inbox`` (allowed), ``requests`` (requested) or ``all``; newest first.

    Raises:
        BadInput: unknown folder.
    """
    from bridge.engine.engine import MESSAGES_WITH_FLAGS, BadInput, message_dict

    if folder not in FOLDERS:
        raise BadInput("folder must be inbox, requests or all")
    store = engine.store
    out = []
    for row in store.read("SELECT peer, updated_at FROM conversations WHERE peer != ?", (engine.address,)):
        peer = row["peer"]
        st = _dict(engine, store, peer)
        if (folder == "inbox" and st["consent"] != "allowed") or (folder == "requests" and st["consent"] != "requested"):
            continue
        last = store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.peer = ? AND m.kind IN {DISPLAYABLE_SQL} ORDER BY m.seq DESC LIMIT 1", (peer,))
        if not last:
            continue
        unread = store.read(
            f"SELECT COUNT(*) AS n FROM messages WHERE peer = ? AND direction = 'in' AND read = 0 AND kind IN {DISPLAYABLE_SQL}", (peer,)
        )[0]["n"]
        msg = message_dict(last[0], store)
        out.append({
            "peer": peer,
            "consent": st["consent"],
            "unread": int(unread),
            "last_message_at": msg["sent_at"],
            "updated_at": row["updated_at"],
            "held": st["held"],
            "dropped": st["dropped"],
            "last": msg,
            "_seq": last[0]["seq"],
        })
    # Newest first by local arrival (the store's seq), never by a peer's clock (PROTOCOL.md §6.4).
    out.sort(key=lambda x: x["_seq"], reverse=True)
    for item in out:
        del item["_seq"]
    return out
