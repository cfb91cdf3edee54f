"""Content types in the engine (issue 12; PROTOCOL.md §6.7): what a received content of each type does
to the store, what the engine's react/edit/delete/mark_read write, and the message dict of §4.

Kept out of bridge/engine/engine.py so that file stays about delivery. Every function here works in the
caller's write transaction (``c``); receiver refusals raise :class:`Refused` (a WireError), so
``Engine.process`` quarantines the envelope with the reason and rolls back everything it wrote.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.protocol import content as C
from bridge.protocol import wire
from bridge.protocol.content import Content, FileRef
from bridge.protocol.wire import WireError

if TYPE_CHECKING:
    from bridge.engine.engine import Engine

__all__ = [
    "Refused",
    "DISPLAYABLE",
    "TYPING_WINDOW_MS",
    "extra_blob",
    "rebuild",
    "enrich",
    "apply_incoming",
    "store_attachments",
    "seal_key",
    "unseal_key",
]

#: Kinds that are listed, counted as unread and shown (contract §3).
DISPLAYABLE = C.DISPLAYABLE_KINDS
DISPLAYABLE_SQL = "('text', 'reply', 'attachment', 'unknown')"
#: A typing content is shown only when its sent_at is within this of our clock (§6.7).
TYPING_WINDOW_MS = 30_000
#: Longest text of a reply preview (characters).
PREVIEW_CHARS = 200


class Refused(WireError):
    """A content that decodes but that the receiver rules of §6.7 refuse (quarantined with the reason)."""


# --- the outbox: a row back to its content -------------------------------------------------


def extra_blob(content: Content) -> bytes | None:
    """Canonical CBOR of the content's extras, as stored in ``messages.extra`` (None for a text: its only
    extra, the relay list, is added per installation when sealing)."""
    if content.content_type == C.TEXT:
        return None
    return wire.encode(content.extra())


def rebuild(row: sqlite3.Row) -> Content:
    """The exact content of an outgoing row (``_prepare``/``_extend``)."""
    keys = row.keys()
    ctype = row["content_type"] if "content_type" in keys else C.TEXT
    if ctype == C.TEXT or row["extra"] is None:
        return Content(row["id"], row["sender"], row["recipient"], row["sent_at"], row["text"], ctype)
    extra = wire.decode(bytes(row["extra"]))
    # An attachment row keeps its caption as text; the content carries the fallback (recomputed).
    text = None if ctype == C.ATTACHMENT else row["text"]
    return Content.build(ctype, row["id"], row["sender"], row["recipient"], row["sent_at"], extra, text=text)


# --- attachments rows ---------------------------------------------------------------------


def _key_aad(att_id: str) -> bytes:
    return b"attachment-key/" + att_id.encode()


def seal_key(engine: "Engine", att_id: str, key: bytes) -> bytes:
    """A file key sealed with the storage key, AAD naming the attachments row."""
    return engine._seal(key, _key_aad(att_id))


def unseal_key(engine: "Engine", att_id: str, blob: bytes) -> bytes:
    return engine._unseal(bytes(blob), _key_aad(att_id))


def store_attachments(c: sqlite3.Connection, engine: "Engine", message_id: str, files: tuple[FileRef, ...], state: str, ts: int) -> None:
    """One ``attachments`` row per file (``local``: we sent it; ``pending``: to download)."""
    for idx, f in enumerate(files):
        att_id = f"{message_id}-{idx}"
        c.execute(
            "INSERT INTO attachments(id, message_id, idx, name, size, mime, sha256, url, key, nonce, digest, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (att_id, message_id, idx, f.name, f.size, f.mime, f.sha256.hex(), f.url, seal_key(engine, att_id, f.key),
             f.nonce, f.digest, state, ts),
        )


# --- the message dict (contract §4) -------------------------------------------------------


def _q(db: Any, sql: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
    if isinstance(db, sqlite3.Connection):
        return db.execute(sql, args).fetchall()
    return db.read(sql, args)


def enrich(d: dict[str, Any], row: sqlite3.Row, db: Any) -> dict[str, Any]:
    """Add reactions, the reply preview and the attachments (``db``: a Store or a connection)."""
    mid = row["id"]
    if d["deleted"]:
        return d
    reactions: dict[str, list[str]] = {}
    for r in _q(db, "SELECT emoji, reactor FROM reactions WHERE message_id = ? ORDER BY at, rowid", (mid,)):
        reactions.setdefault(r["emoji"], []).append(r["reactor"])
    d["reactions"] = {e: sorted(who) for e, who in reactions.items()}
    if d["reply_to"]:
        target = _q(db, "SELECT id, sender, text, deleted, kind FROM messages WHERE id = ? AND peer = ?", (d["reply_to"], row["peer"]))
        if target and target[0]["kind"] in DISPLAYABLE:
            t = target[0]
            d["reply_preview"] = {"id": t["id"], "sender": t["sender"], "text": "" if t["deleted"] else t["text"][:PREVIEW_CHARS],
                                  "deleted": bool(t["deleted"])}
    if d["kind"] == "attachment":
        d["attachments"] = [
            {"id": a["id"], "name": a["name"], "size": a["size"], "sha256": a["sha256"], "mime": a["mime"], "state": a["state"],
             "thumbnail": a["thumb"] is not None, "progress": None}
            for a in _q(db, "SELECT id, name, size, sha256, mime, state, thumb FROM attachments WHERE message_id = ? ORDER BY idx", (mid,))
        ]
    return d


# --- receiving (§6.7 receiver rules) ---------------------------------------------------------


def _target(c: sqlite3.Connection, content: Content, peer: str) -> sqlite3.Row:
    row = c.execute(
        f"SELECT * FROM messages WHERE id = ? AND peer = ? AND kind IN {DISPLAYABLE_SQL}", (content.target, peer)
    ).fetchone()
    if row is None:
        raise Refused(f"{content.content_type}: unknown message")
    return row


def _own_target(c: sqlite3.Connection, content: Content, peer: str) -> sqlite3.Row:
    row = _target(c, content, peer)
    if row["sender"] != content.sender:
        raise Refused(f"{content.content_type}: not the sender's message")
    if row["deleted"]:
        raise Refused(f"{content.content_type}: message deleted")
    return row


def apply_reaction(c: sqlite3.Connection, message_id: str, reactor: str, action: str, emoji: str, ts: int) -> bool:
    if action == "add":
        return c.execute(
            "INSERT INTO reactions(message_id, reactor, emoji, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (message_id, reactor, emoji, ts),
        ).rowcount > 0
    return c.execute("DELETE FROM reactions WHERE message_id = ? AND reactor = ? AND emoji = ?", (message_id, reactor, emoji)).rowcount > 0


def apply_edit(c: sqlite3.Connection, message_id: str, new_text: str, ts: int) -> None:
    c.execute("UPDATE messages SET text = ?, edited_at = ? WHERE id = ?", (new_text, ts, message_id))


def apply_delete(c: sqlite3.Connection, message_id: str, ts: int) -> None:
    """Tombstone: no text, no reactions, and its files gone from this machine (rows and plaintext files)."""
    c.execute("UPDATE messages SET text = '', deleted = 1, edited_at = COALESCE(edited_at, ?) WHERE id = ?", (ts, message_id))
    c.execute("DELETE FROM reactions WHERE message_id = ?", (message_id,))
    for row in c.execute("SELECT path FROM attachments WHERE message_id = ?", (message_id,)).fetchall():
        if row["path"]:
            Path(row["path"]).unlink(missing_ok=True)
    c.execute("DELETE FROM attachments WHERE message_id = ?", (message_id,))


def apply_incoming(
    c: sqlite3.Connection, engine: "Engine", content: Content, direction: str, peer: str, ts: int
) -> tuple[str, list[str], list[tuple[str, dict[str, Any]]]]:
    """Apply a received content of a control type. Returns ``(what, changed ids, other events)`` where
    ``what`` is ``"store"`` (the caller stores it as a message row), or ``"done"``; each changed message
    is announced as ``message.updated``, the other events (``typing``, ``conversation.read``) as given.

    Raises:
        Refused: the receiver rules refuse it (nothing written).
    """
    t = content.content_type
    if t == C.TYPING:
        if direction != "in" or abs(content.sent_at - ts) > TYPING_WINDOW_MS:
            return "done", [], []  # old (or our own echo): dropped
        return "done", [], [("typing", {"peer": peer, "typing": bool(content.typing)})]
    if t == C.REACTION:
        target = _target(c, content, peer)
        changed = apply_reaction(c, target["id"], content.sender, content.action or "", content.emoji or "", ts)
        return "done", [target["id"]] if changed else [], []
    if t == C.EDIT:
        target = _own_target(c, content, peer)
        apply_edit(c, target["id"], content.new_text or "", ts)
        return "done", [target["id"]], []
    if t == C.DELETE:
        target = _own_target(c, content, peer)
        apply_delete(c, target["id"], ts)
        return "done", [target["id"]], []
    if t == C.READ_RECEIPT:
        changed: list[str] = []
        for mid in dict.fromkeys(content.ids):
            if direction == "in":  # the peer read our messages
                n = c.execute(
                    f"UPDATE messages SET read_at = ? WHERE id = ? AND peer = ? AND direction = 'out' AND read_at IS NULL AND kind IN {DISPLAYABLE_SQL}",
                    (ts, mid, peer),
                ).rowcount
            else:  # our other installation read theirs
                n = c.execute(
                    f"UPDATE messages SET read = 1 WHERE id = ? AND peer = ? AND direction = 'in' AND read = 0 AND kind IN {DISPLAYABLE_SQL}", (mid, peer)
                ).rowcount
            if n:
                changed.append(mid)
        read_here = direction == "out" and changed
        return "done", changed, [("conversation.read", {"peer": peer})] if read_here else []
    return "store", [], []
