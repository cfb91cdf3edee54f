"""The local API: JSON-RPC 2.0 over one WebSocket per extension (DESIGN.md "Local API").

The WebSocket handler in :mod:`bridge.api.web` stays thin: it feeds each text frame to
:meth:`RpcConnection.handle` and writes what comes back, so tests can drive a connection directly.

Before authentication only ``auth`` and ``pair`` are accepted. Error codes: the standard JSON-RPC
ones, plus

======  ==========================================
-32001  not authenticated (the socket is then closed with 4401)
-32002  pairing refused (wrong/expired code, rate limit)
-32003  peer not registered on the relay
-32004  cannot resolve the peer (data.reason: malformed | unknown | unreachable | contacts; data.source names the name service)
-32005  relay unavailable
-32010  bad input (address, empty or oversized text, bad or unknown message id, someone else's message, emoji rules)
-32011  wallet sign-in unavailable (data.reason: unavailable)
-32012  attachment failed (data.reason: quota | too_large | relay | digest | unavailable)
======  ==========================================
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge import __version__, identity
from bridge.api.access import TOUCH_EVERY_MS, Access, AccessError, BridgeKey
from bridge.engine import MESSAGES_WITH_FLAGS, BadInput, Engine, NotRegistered, consent, message_dict
from bridge.engine.contents import DISPLAYABLE as DISPLAYABLE_KINDS
from bridge.engine.contents import DISPLAYABLE_SQL
from bridge.protocol.content import MAX_FILES
from bridge.protocol.ids import is_message_id
from bridge.relay.client import RelayError, RelayUnavailable
from bridge.resolve import Contacts, ResolveError

__all__ = ["LocalApi", "RpcConnection", "RpcError", "Hub", "CLOSE_UNAUTHENTICATED", "MAX_FRAME", "call_local_api"]

log = logging.getLogger("parley.api")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
NOT_AUTHENTICATED, PAIRING_REFUSED, NOT_REGISTERED, CANNOT_RESOLVE, RELAY_UNAVAILABLE, BAD_INPUT = (
    -32001, -32002, -32003, -32004, -32005, -32010,
)
WALLET_FAILED = -32011
ATTACHMENT_FAILED = -32012
CLOSE_UNAUTHENTICATED = 4401
#: largest client frame: an attachments.chunk of 196,608 bytes is 262,144 base64 characters plus JSON
MAX_FRAME = 320 * 1024
MAX_BATCH = 20


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_obj(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def _params(p: Any, *names: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if p is None:
        p = {}
    if not isinstance(p, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object")
    unknown = set(p) - set(names) - set(optional)
    if unknown:
        raise RpcError(INVALID_PARAMS, f"unknown parameter(s): {', '.join(sorted(unknown))}")
    missing = [n for n in names if n not in p]
    if missing:
        raise RpcError(INVALID_PARAMS, f"missing parameter(s): {', '.join(missing)}")
    return p


def _str(p: dict[str, Any], name: str, max_len: int = 200) -> str:
    v = p.get(name)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-empty string of at most {max_len} characters")
    return v


def _address(p: dict[str, Any], name: str) -> str:
    try:
        return identity.checksum_address(_str(p, name, 42))
    except identity.IdentityError:
        raise RpcError(INVALID_PARAMS, f"{name} must be a 0x address") from None


def _id(p: dict[str, Any], name: str) -> str:
    v = p.get(name)
    if not is_message_id(v):
        raise RpcError(BAD_INPUT, f"{name} must be a message id (32 lowercase hex)")
    return v  # type: ignore[return-value]


def _opt_id(p: dict[str, Any], name: str) -> str | None:
    return None if p.get(name) is None else _id(p, name)


_QUERY = re.compile(r"\?[^\s)'\"]*")
_USERINFO = re.compile(r"//[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` without URL query strings or user:password parts (API keys live there), for logs."""
    return _USERINFO.sub("//…@", _QUERY.sub("?…", text))


def _resolve_failed(exc: ResolveError, peer: str) -> RpcError:
    """The public face of a resolver failure (issue 8 item 7). Whatever reaches the extension may reach
    the site's page (the DM button's reason), so ``detail`` is a fixed phrase naming the service,
    never an endpoint, a key or the upstream error; the details go to the bridge's own log (redacted)."""
    log.warning("resolving %s failed (%s): %s", peer[:100], exc.reason, redact(str(exc)))
    source = exc.source if exc.source in _PUBLIC_SOURCES else None
    if exc.reason == "unreachable":
        detail = f"{source or 'name service'} unreachable"
    elif exc.reason == "malformed":
        detail = "not a name Parley understands"
    elif exc.reason == "contacts":
        detail = "the contacts file cannot be read"
    elif source in (None, "contacts"):
        detail = "not in your contacts"
    else:
        detail = f"not found in your contacts or {source}"
    data = {"reason": exc.reason if exc.reason in _PUBLIC_REASONS else "error", "detail": detail}
    if source:
        data["source"] = source
    return RpcError(CANNOT_RESOLVE, "cannot resolve", data)


#: Source labels and reasons that may be shown to a page (bridge/resolve: ResolveError).
_PUBLIC_SOURCES = frozenset({"contacts", "Lens API", "ENS", "Farcaster hub"})
_PUBLIC_REASONS = frozenset({"malformed", "unknown", "unreachable", "contacts"})


class Hub:
    """Fan-out of notifications to every authenticated connection (and every open inbox page's event
    stream, bridge/api/web.py): anything with ``notify(method, params)``."""

    def __init__(self) -> None:
        self._conns: set[Any] = set()
        self._lock = threading.Lock()

    def add(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)

    def remove(self, conn: Any) -> None:
        with self._lock:
            self._conns.discard(conn)

    def publish(self, method: str, params: dict[str, Any]) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.notify(method, params)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)


@dataclass
class LocalApi:
    """The methods, over one engine. ``status_extra`` adds daemon facts (relay connectivity)."""

    engine: Engine
    access: Access
    contacts: Contacts
    relay_connected: Callable[[], bool]
    hub: Hub
    #: Browser-wallet sign-in (bridge/api/wallet.py, used by the sign-in page), when the daemon offers it.
    wallet: Any = None
    #: One-time links and sessions of the bridge's own pages (inbox, sign-in).
    pages: Any = None
    #: ``http://127.0.0.1:PORT``: where the pages are served.
    base_url: str = ""
    #: The bridge's local-API key (``hello``: the bridge proves itself before the extension sends a token).
    bridge_key: BridgeKey | None = None
    #: Where normal events are told (the daemon's output: a pairing is news, not a warning).
    echo: Callable[[str], Any] | None = None
    #: The remote backup (bridge/backup/remote.py ``RemoteBackup``) the daemon runs, for ``backup.*``.
    backup: Any = None
    #: One backup key change at a time (create, confirm, on/off): two popups cannot both create one.
    _backup_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.engine.listeners.append(self._on_engine_event)
        self.engine.listeners.append(self._on_attachment_event)

    # --- notifications ----------------------------------------------------------

    def unread(self, peer: str | None = None) -> int:
        return int(self.engine.unread(peer))  # displayable kinds only (issue 12)

    def _conversation_updated(self, peer: str) -> None:
        self.hub.publish(
            "conversation.updated",
            {"peer": peer, "unread": self.unread(peer), "total_unread": self.unread(), "consent": consent.state(self.engine.store, peer)},
        )

    def _on_engine_event(self, event: str, message: dict[str, Any]) -> None:
        if not len(self.hub):
            return  # nobody listens: no count to make
        if event == "message.new":
            # consent (issue 12): the extension raises a desktop notification only for "allowed"
            self.hub.publish("message.new", {"message": message, "consent": consent.state(self.engine.store, message["peer"])})
            if not self.engine.in_batch():  # a batch says conversations.changed once, at its end
                self._conversation_updated(message["peer"])
        elif event == "conversations.changed":  # {peers}: after a batch of incoming messages
            for peer in message["peers"]:
                self._conversation_updated(peer)
        elif event == "consent.changed":
            self.hub.publish("consent.changed", {"peer": message["peer"], "consent": message["consent"]})
            self._conversation_updated(message["peer"])
        elif event in ("message.sent", "message.failed", "message.updated"):
            if message.get("kind", "text") in DISPLAYABLE_KINDS:  # not our reactions, receipts, … themselves
                self.hub.publish("message.updated", {"message": message})
        elif event == "conversation.read":  # {peer}: our other installation read it (its receipt copy)
            self._conversation_updated(message["peer"])
        elif event == "typing":  # {peer, typing}
            self.hub.publish("typing", {"peer": message["peer"], "typing": bool(message["typing"])})
        elif event == "message.flagged":  # {id, reason}: the widget shows the warning on the message
            rows = self.engine.store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.id = ?", (message.get("id"),))
            if rows:
                self.hub.publish("message.updated", {"message": message_dict(rows[0], self.engine.store)})

    # --- methods --------------------------------------------------------------------

    def m_ping(self, p: Any) -> str:
        _params(p)
        return "pong"

    def m_identity(self, p: Any) -> dict[str, Any]:
        _params(p)
        return {"address": self.engine.address, "did": identity.did(self.engine.address), "installation_id": self.engine.installation_id}

    def m_status(self, p: Any) -> dict[str, Any]:
        _params(p)
        return {
            "version": __version__,
            **self.m_identity(None),
            "relay": {"url": self.engine.relay_url, "connected": bool(self.relay_connected())},
            "unread": self.unread(),
        }

    def _resolver(self) -> Any:
        """The home's name resolver (docs/PROTOCOL.md "Names"); a registered installation wins among candidates."""
        from bridge.resolve import resolver_for_contacts

        return resolver_for_contacts(self.contacts, registered=lambda a: bool(self.engine.installations_of(a)))

    def m_resolve(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer")
        peer = _str(p, "peer")
        try:
            r = self._resolver().resolve(peer)
        except ResolveError as exc:
            raise _resolve_failed(exc, peer) from None
        return r.to_dict()

    def m_canMessage(self, p: Any) -> dict[str, Any]:
        """``{address}`` (a 0x address or any name form) or ``{peer}`` (any name form)."""
        p = _params(p, optional=("address", "peer"))
        if ("address" in p) == ("peer" in p):
            raise RpcError(INVALID_PARAMS, "give exactly one of address and peer")
        name = "address" if "address" in p else "peer"
        value = _str(p, name)
        resolution = None
        if value.lower().startswith("0x"):
            address = _address(p, name)
        else:
            try:
                resolution = self._resolver().resolve(value)
            except ResolveError as exc:
                raise _resolve_failed(exc, value) from None
            address = resolution.address
        try:
            ok = self.engine.can_message(address)
        except RelayUnavailable as exc:
            log.warning("canMessage %s: relay unavailable: %s", address, redact(str(exc)))
            raise RpcError(RELAY_UNAVAILABLE, "relay unavailable", {"detail": "relay unreachable"}) from None
        except RelayError as exc:
            log.warning("canMessage %s: relay error: %s", address, redact(str(exc)))
            raise RpcError(RELAY_UNAVAILABLE, "relay error", {"detail": "the relay answered with an error"}) from None
        out: dict[str, Any] = {"address": address, "canMessage": ok}
        if resolution is not None:
            out["peer"] = value
            out["resolution"] = resolution.to_dict()
        return out

# --- consent (issue 12): conversations.list, requests.list, consent.get, consent.set ---------------

    def m_conversations_list(self, p: Any) -> dict[str, Any]:
        """``{folder?: inbox | requests | all}`` (default inbox: allowed only)."""
        p = _params(p, optional=("folder",))
        folder = p.get("folder", "inbox")
        if folder not in consent.FOLDERS:
            raise RpcError(INVALID_PARAMS, "folder must be inbox, requests or all")
        return {"conversations": self.engine.conversations(folder)}

    def m_requests_list(self, p: Any) -> dict[str, Any]:
        _params(p)
        return {"requests": self.engine.conversations("requests")}

    def m_consent_get(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer")
        peer = _address(p, "peer")
        try:
            return self.engine.consent(peer)
        except BadInput as exc:
            raise RpcError(BAD_INPUT, str(exc)) from None

    def m_consent_set(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "action")
        peer = _address(p, "peer")
        action = p["action"]
        if action not in consent.ACTIONS:
            raise RpcError(INVALID_PARAMS, "action must be accept, decline, block or unblock")
        try:
            return self.engine.set_consent(peer, action)
        except BadInput as exc:
            raise RpcError(BAD_INPUT, str(exc)) from None

    # --- end of consent ------------------------------------------------------------------------------


    def m_messages_list(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", optional=("before", "limit"))
        peer = _address(p, "peer")
        limit = p.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 200:
            raise RpcError(INVALID_PARAMS, "limit must be an integer from 1 to 200")
        before = p.get("before")
        store = self.engine.store
        if before is None:
            rows = store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.peer = ? AND m.kind IN {DISPLAYABLE_SQL} ORDER BY m.seq DESC LIMIT ?", (peer, limit + 1))
        else:
            if not isinstance(before, str) or len(before) != 32:
                raise RpcError(INVALID_PARAMS, "before must be a message id")
            anchor = store.read("SELECT seq FROM messages WHERE id = ? AND peer = ?", (before, peer))
            if not anchor:
                raise RpcError(INVALID_PARAMS, "before is not a message of this conversation")
            rows = store.read(
                f"{MESSAGES_WITH_FLAGS} WHERE m.peer = ? AND m.seq < ? AND m.kind IN {DISPLAYABLE_SQL} ORDER BY m.seq DESC LIMIT ?",
                (peer, anchor[0]["seq"], limit + 1),
            )
        has_more = len(rows) > limit
        return {"messages": [message_dict(r, store) for r in reversed(rows[:limit])], "has_more": has_more}

    def m_messages_send(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "text", optional=("reply_to", "uploads"))
        peer = _address(p, "peer")
        text = p["text"]
        if not isinstance(text, str):
            raise RpcError(INVALID_PARAMS, "text must be a string")
        reply_to = _opt_id(p, "reply_to")
        uploads = p.get("uploads") or []
        if (not isinstance(uploads, list) or len(uploads) > MAX_FILES
                or not all(isinstance(u, str) and 0 < len(u) <= 64 for u in uploads)):
            raise RpcError(BAD_INPUT, f"uploads must be a list of at most {MAX_FILES} upload ids")
        try:
            result = self.engine.send(peer, text, reply_to=reply_to, uploads=uploads)
        except BadInput as exc:
            raise RpcError(BAD_INPUT, str(exc)) from None
        except NotRegistered as exc:
            log.info("messages.send %s: %s", peer, redact(str(exc)))
            raise RpcError(NOT_REGISTERED, "peer not registered", {"detail": "this address has no Parley installation"}) from None
        return {"message": result.message, "delivered": result.delivered}

    def _bad_input(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BadInput as exc:
            raise RpcError(BAD_INPUT, str(exc)) from None

    def m_messages_react(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "id", "emoji", optional=("remove",))
        peer = _address(p, "peer")
        emoji = p["emoji"]
        if not isinstance(emoji, str) or len(emoji) > 32:
            raise RpcError(BAD_INPUT, "emoji must be a string of 1 to 32 bytes")
        remove = p.get("remove", False)
        if not isinstance(remove, bool):
            raise RpcError(BAD_INPUT, "remove must be true or false")
        return {"message": self._bad_input(self.engine.react, peer, _id(p, "id"), emoji, remove=remove)}

    def m_messages_edit(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "id", "text")
        peer = _address(p, "peer")
        if not isinstance(p["text"], str):
            raise RpcError(BAD_INPUT, "text must be a string")
        return {"message": self._bad_input(self.engine.edit, peer, _id(p, "id"), p["text"])}

    def m_messages_delete(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "id")
        peer = _address(p, "peer")
        return {"message": self._bad_input(self.engine.delete, peer, _id(p, "id"))}

    def m_messages_markRead(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer")
        peer = _address(p, "peer")
        before = self.unread(peer)
        result = self._bad_input(self.engine.mark_read, peer)  # sends receipts when enabled and allowed
        if before:
            self._conversation_updated(peer)
        return {"unread": result["unread"]}

    def m_typing_set(self, p: Any) -> dict[str, Any]:
        p = _params(p, "peer", "typing")
        peer = _address(p, "peer")
        if not isinstance(p["typing"], bool):
            raise RpcError(BAD_INPUT, "typing must be true or false")
        return {"sent": bool(self._bad_input(self.engine.typing, peer, p["typing"]))}

    # --- sign in with the browser wallet (issue 8 item 1) ------------------------------------
    # The wallet is never asked from a site page: the extension only asks for a one-time link to the
    # bridge's own sign-in page (bridge/api/signin.py) and opens it in a tab of its own.

    def m_signin_link(self, p: Any) -> dict[str, Any]:
        _params(p)
        if self.wallet is None or self.pages is None or not self.base_url:
            raise RpcError(WALLET_FAILED, "this bridge cannot switch wallets", {"reason": "unavailable"})
        return {"url": f"{self.base_url}/signin#t={self.pages.new_link('signin')}"}

    def m_inbox_link(self, p: Any) -> dict[str, Any]:
        """``{folder?: inbox | requests}`` → a one-time link to the bridge's inbox page (issue 12: the
        popup's "Open inbox" and "Requests"), as ``parley open`` prints."""
        p = _params(p, optional=("folder",))
        folder = p.get("folder", "inbox")
        if folder not in ("inbox", "requests"):
            raise RpcError(INVALID_PARAMS, "folder must be inbox or requests")
        if self.pages is None or not self.base_url:
            raise RpcError(BAD_INPUT, "this bridge serves no inbox page")
        query = "?folder=requests" if folder == "requests" else ""
        return {"url": f"{self.base_url}/login{query}#t={self.pages.new_link('inbox')}"}

    # --- attachments (issue 12; PROTOCOL.md §8.2) ------------------------------------------------
    # Every method takes the conversation's peer; an attachment id must belong to a message of that
    # conversation (else -32010, as for an unknown id). Failures of the file itself: -32012 with data.reason.

    def _on_attachment_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "attachment.progress":
            self.hub.publish("attachment.progress", dict(payload))

    def _attachment_of(self, p: dict[str, Any]) -> str:
        peer = _address(p, "peer")
        aid = p.get("id")
        if not isinstance(aid, str) or not re.fullmatch(r"[0-9a-f]{32}-[0-9]{1,2}", aid):
            raise RpcError(BAD_INPUT, "unknown attachment id")
        rows = self.engine.store.read(
            "SELECT m.peer FROM attachments a JOIN messages m ON m.id = a.message_id WHERE a.id = ?", (aid,)
        )
        if not rows or rows[0]["peer"] != peer:
            raise RpcError(BAD_INPUT, "unknown attachment id")
        return aid

    @staticmethod
    def _attachment_call(fn: Callable[[], Any]) -> Any:
        from bridge.engine.attachments import AttachmentError

        try:
            return fn()
        except AttachmentError as exc:
            raise RpcError(ATTACHMENT_FAILED, str(exc), {"reason": exc.reason}) from None
        except BadInput as exc:
            raise RpcError(BAD_INPUT, str(exc)) from None

    def m_attachments_begin(self, p: Any) -> dict[str, Any]:
        from bridge.engine import attachments

        p = _params(p, "peer", "name", "size", "mime")
        _address(p, "peer")
        uid = self._attachment_call(lambda: attachments.upload_begin(self.engine, p["name"], p["size"], p["mime"]))
        return {"upload_id": uid, "chunk_size": attachments.CHUNK_SIZE}

    def m_attachments_chunk(self, p: Any) -> dict[str, Any]:
        from bridge.engine import attachments

        p = _params(p, "peer", "upload_id", "offset", "data")
        _address(p, "peer")
        raw = p["data"]
        if not isinstance(raw, str) or len(raw) > (attachments.CHUNK_SIZE + 2) // 3 * 4:
            raise RpcError(BAD_INPUT, f"data must be base64 of at most {attachments.CHUNK_SIZE} bytes")
        try:
            data = base64.b64decode(raw, validate=True)
        except ValueError:
            raise RpcError(BAD_INPUT, "data must be standard base64") from None
        received = self._attachment_call(lambda: attachments.upload_chunk(self.engine, p["upload_id"], p["offset"], data))
        return {"received": received}

    def m_attachments_cancel(self, p: Any) -> dict[str, Any]:
        from bridge.engine import attachments

        p = _params(p, "peer", "upload_id")
        _address(p, "peer")
        self._attachment_call(lambda: attachments.upload_cancel(self.engine, p["upload_id"]))
        return {"ok": True}

    def m_attachments_thumbnail(self, p: Any) -> dict[str, Any]:
        from bridge.engine import attachments

        p = _params(p, "peer", "id")
        aid = self._attachment_of(p)
        return {"data_url": self._attachment_call(lambda: attachments.thumbnail_data_url(self.engine, aid))}

    def m_attachments_read(self, p: Any) -> dict[str, Any]:
        from bridge.engine import attachments

        p = _params(p, "peer", "id", "offset", "length")
        aid = self._attachment_of(p)
        data, eof, size = self._attachment_call(lambda: attachments.attachment_read(self.engine, aid, p["offset"], p["length"]))
        return {"data": base64.b64encode(data).decode("ascii"), "eof": eof, "size": size}

    # --- the backup (issue 15 item 8; PROTOCOL.md §8.2) ---------------------------------------------
    # For the popup and the inbox page only: the extension's worker never lets a widget name them
    # (extension/background/widgets.js), and the page routes (bridge/api/web.py /api/backup*) need an
    # inbox session. The recovery key is in ONE answer, createKey's: the bridge keeps only the keys
    # derived from it (bridge/backup/state.py), so it cannot show it again. It is never logged.

    def _remote(self) -> Any:
        if self.backup is None:
            raise RpcError(BAD_INPUT, "this bridge keeps no backups (run `parley run`)", {"reason": "unavailable"})
        return self.backup

    def _backup_status(self, remote: Any) -> dict[str, Any]:
        from bridge.backup import state

        out = dict(remote.status())
        out["key_created_at"] = state.key_state(self.engine.store).get("created_at")
        return out

    def m_backup_status(self, p: Any) -> dict[str, Any]:
        """The status of ``parley backup remote status --json`` (§12.4), plus ``key_created_at``."""
        _params(p)
        return self._backup_status(self._remote())

    def m_backup_createKey(self, p: Any) -> dict[str, Any]:
        """``{replace?: true}`` → ``{recovery_key}`` in its display form, once. Refused when a key exists,
        unless ``replace`` and that key was never confirmed (the popup closed on it: nobody has it)."""
        p = _params(p, optional=("replace",))
        replace = p.get("replace", False)
        if not isinstance(replace, bool):
            raise RpcError(INVALID_PARAMS, "replace must be true or false")
        remote = self._remote()
        from bridge.backup import recovery, state

        store, secrets = self.engine.store, self.engine.secrets
        with self._backup_lock:
            known = state.key_state(store)
            if known["has_key"] and not replace:
                raise RpcError(BAD_INPUT, "a recovery key exists", {"reason": "exists"})
            if known["has_key"] and known["confirmed"]:
                raise RpcError(BAD_INPUT, "a recovery key exists and was confirmed: it is not replaced from here", {"reason": "confirmed"})
            if known["has_key"] and remote.status().get("enabled"):
                remote.disable()  # the unconfirmed key it used is going away: on again only once the new one is typed back
            try:
                key = state.create_recovery_key(store, secrets, replace=bool(known["has_key"]))
            except state.StateError:  # made meanwhile by another process (`parley backup export`)
                raise RpcError(BAD_INPUT, "a recovery key exists", {"reason": "exists"}) from None
        log.info("backup: a recovery key was %s (shown once)", "replaced" if known["has_key"] else "created")
        return {"recovery_key": recovery.display(key)}

    def m_backup_confirmKey(self, p: Any) -> dict[str, Any]:
        """``{recovery_key: typed}`` → ``{confirmed: true, enabled, error?}``: the typed key must be the
        one made; then remote backup is turned on (``error`` says why it could not be)."""
        p = _params(p, "recovery_key")
        typed = p["recovery_key"]
        if not isinstance(typed, str) or not typed.strip() or len(typed) > 200:
            raise RpcError(INVALID_PARAMS, "recovery_key must be the key as typed (at most 200 characters)")
        remote = self._remote()
        from bridge.backup import recovery, state

        store, secrets = self.engine.store, self.engine.secrets
        with self._backup_lock:
            if not state.key_state(store)["has_key"]:
                raise RpcError(BAD_INPUT, "there is no recovery key to confirm: set up backup first", {"reason": "no_key"})
            try:
                recovery.parse(typed)
            except recovery.RecoveryKeyError as exc:
                raise RpcError(BAD_INPUT, str(exc), {"reason": "malformed"}) from None
            if not state.confirm_key(store, secrets, typed):
                raise RpcError(BAD_INPUT, "this is not the recovery key that was shown", {"reason": "mismatch"})
            error = self._enable(remote)
        out: dict[str, Any] = {"confirmed": True, "enabled": bool(remote.status().get("enabled"))}
        if error:
            out["error"] = error
        return out

    def _enable(self, remote: Any) -> str | None:
        """Turn remote backup on (the key exists and is confirmed); None, or why it could not be."""
        try:
            made = remote.enable()
        except (RelayUnavailable, RelayError) as exc:
            log.warning("backup: could not turn remote backup on: %s", redact(str(exc)))
            return f"backup could not be turned on: the relay: {redact(str(exc))[:160]}"
        if made is not None:  # it made a key of its own: never shown, so never usable: refuse loudly
            log.error("backup: turning remote backup on made a new recovery key while one existed")
            raise RpcError(INTERNAL_ERROR, "Internal error")
        return None

    def m_backup_setRemote(self, p: Any) -> dict[str, Any]:
        """``{enabled: bool}`` → the status. On needs a confirmed key (the popup's setup makes one)."""
        p = _params(p, "enabled")
        enabled = p["enabled"]
        if not isinstance(enabled, bool):
            raise RpcError(INVALID_PARAMS, "enabled must be true or false")
        remote = self._remote()
        from bridge.backup import state

        with self._backup_lock:
            if enabled:
                known = state.key_state(self.engine.store)
                if not known["has_key"]:
                    raise RpcError(BAD_INPUT, "set up backup first: there is no recovery key", {"reason": "no_key"})
                if not known["confirmed"]:
                    raise RpcError(BAD_INPUT, "confirm your recovery key first", {"reason": "unconfirmed"})
                error = self._enable(remote)
                if error:
                    raise RpcError(RELAY_UNAVAILABLE, error, {"reason": "relay"})
            else:
                remote.disable()
        return self._backup_status(remote)

    METHODS = {
        "ping": m_ping,
        "status": m_status,
        "identity": m_identity,
        "resolve": m_resolve,
        "canMessage": m_canMessage,
        "conversations.list": m_conversations_list,
        "requests.list": m_requests_list,  # consent (issue 12)
        "consent.get": m_consent_get,  # consent (issue 12)
        "consent.set": m_consent_set,  # consent (issue 12)
        "messages.list": m_messages_list,
        "messages.send": m_messages_send,
        "messages.markRead": m_messages_markRead,
        "messages.react": m_messages_react,
        "messages.edit": m_messages_edit,
        "messages.delete": m_messages_delete,
        "typing.set": m_typing_set,
        "signin.link": m_signin_link,
        "inbox.link": m_inbox_link,
        # attachments (issue 12)
        "attachments.begin": m_attachments_begin,
        "attachments.chunk": m_attachments_chunk,
        "attachments.cancel": m_attachments_cancel,
        "attachments.thumbnail": m_attachments_thumbnail,
        "attachments.read": m_attachments_read,
        # the backup (issue 15): the popup and the inbox page only
        "backup.status": m_backup_status,
        "backup.createKey": m_backup_createKey,
        "backup.confirmKey": m_backup_confirmKey,
        "backup.setRemote": m_backup_setRemote,
    }


def call_local_api(api: LocalApi, method: str, params: Any) -> tuple[int, dict[str, Any]]:
    """Call one local API method as the daemon's ``/v1/control/call`` route and the CLI without a daemon
    do (issue 12): ``(HTTP status, {result} | {error: {code, message, data?}})``. The same methods and
    results as JSON-RPC."""
    fn = LocalApi.METHODS.get(method)
    if fn is None:
        return 404, {"error": {"code": METHOD_NOT_FOUND, "message": "Method not found"}}
    try:
        return 200, {"result": fn(api, params)}
    except RpcError as exc:
        return (500 if exc.code == INTERNAL_ERROR else 400), {"error": exc.to_obj()}
    except Exception:
        log.exception("control call %s failed", method[:40])
        return 500, {"error": {"code": INTERNAL_ERROR, "message": "Internal error"}}


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: Any, n: int, name: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", text):
        raise RpcError(INVALID_PARAMS, f"{name} must be unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name} must be unpadded base64url") from None
    if len(raw) != n or _b64u(raw) != text:
        raise RpcError(INVALID_PARAMS, f"{name} must be {n} bytes")
    return raw


class RpcConnection:
    """One client. ``send`` writes a text frame; ``close`` closes the socket with a code."""

    def __init__(
        self, api: LocalApi, send: Callable[[str], None], close: Callable[[int, str], None], who: str,
        *, origin: str | None = None, host: str | None = None,
    ) -> None:
        self.api = api
        #: The WebSocket handshake's Origin and Host (already checked by the gates): bound into ``hello``.
        self.origin, self.host = origin, host
        self._send = send
        self._close = close
        self.who = who
        self.token_id: str | None = None
        self._lock = threading.Lock()
        self.closed = False
        self._refuse = False
        #: The last ``hello`` challenge: pairing proofs are bound to it.
        self._challenge: bytes | None = None
        #: When this connection last recorded its token as used (``Access.touch``, at most once a minute).
        self._touched = 0

    def write(self, obj: Any) -> None:
        text = json.dumps(obj, separators=(",", ":"))
        with self._lock:
            if self.closed:
                return
            try:
                self._send(text)
            except Exception:  # the socket died; the read loop will notice
                self.closed = True

    def notify(self, method: str, params: dict[str, Any]) -> None:
        if self.token_id is not None and self.api.access.token_valid(self.token_id):
            self.write({"jsonrpc": "2.0", "method": method, "params": params})

    def close(self, code: int, reason: str) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self.api.hub.remove(self)
        try:
            self._close(code, reason)
        except Exception:
            pass

    def handle(self, text: Any) -> None:
        """Process one frame: write the response(s); close the socket when authentication fails."""
        if not isinstance(text, str):
            self.write({"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "frames must be text"}, "id": None})
            return
        if len(text) > MAX_FRAME:
            self.write({"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "frame too large"}, "id": None})
            return
        try:
            req = json.loads(text)
        except ValueError:
            self.write({"jsonrpc": "2.0", "error": {"code": PARSE_ERROR, "message": "Parse error"}, "id": None})
            return
        if isinstance(req, list):
            if not req or len(req) > MAX_BATCH:
                self.write({"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "Invalid Request"}, "id": None})
                return
            out = [r for r in (self._one(item) for item in req) if r is not None]
            if out:
                self.write(out)
        else:
            r = self._one(req)
            if r is not None:
                self.write(r)
        if self.token_id is None and self._refuse:
            self.close(CLOSE_UNAUTHENTICATED, "not authenticated")

    def _one(self, req: Any) -> dict[str, Any] | None:
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            rid = None
        valid = (
            isinstance(req, dict)
            and req.get("jsonrpc") == "2.0"
            and isinstance(req.get("method"), str)
            and set(req) <= {"jsonrpc", "method", "params", "id"}
            and ("params" not in req or isinstance(req["params"], (dict, list)))
            and ("id" not in req or req["id"] is None or isinstance(req["id"], (str, int)) and not isinstance(req["id"], bool))
        )
        if not valid:
            return {"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "Invalid Request"}, "id": rid}
        is_notification = "id" not in req
        try:
            result = self._dispatch(req["method"], req.get("params"))
        except RpcError as exc:
            if is_notification:
                return None
            return {"jsonrpc": "2.0", "error": exc.to_obj(), "id": rid}
        except Exception:
            log.exception("local API method %s failed", req["method"])
            if is_notification:
                return None
            return {"jsonrpc": "2.0", "error": {"code": INTERNAL_ERROR, "message": "Internal error"}, "id": rid}
        return None if is_notification else {"jsonrpc": "2.0", "result": result, "id": rid}

    def _hello(self, params: Any) -> dict[str, Any]:
        """``hello {challenge}`` → ``{v: 1, key, signature}``: the bridge proves itself (PROTOCOL.md §8.1)."""
        p = _params(params, "challenge", optional=("v",))
        challenge = _b64u_decode(p["challenge"], 32, "challenge")
        key = self.api.bridge_key
        if key is None or self.origin is None or self.host is None:
            raise RpcError(METHOD_NOT_FOUND, "this bridge has no local-API key")
        self._challenge = challenge
        return {"v": 1, "key": _b64u(key.public), "signature": _b64u(key.prove(challenge, self.origin, self.host))}

    def _dispatch(self, method: str, params: Any) -> Any:
        if self.token_id is not None and not self.api.access.token_valid(self.token_id):
            self.token_id = None
            self._refuse = True
            log.warning("local API: refused %s: token revoked", self.who)
            raise RpcError(NOT_AUTHENTICATED, "not authenticated")
        if method == "hello":
            return self._hello(params)
        if method == "auth":
            p = _params(params, "token")
            try:
                self.token_id = self.api.access.check_token(p["token"], self.origin)
                self._touched = self.api.access.clock()
            except AccessError as exc:
                self._refuse = True
                log.warning("local API: refused %s: %s", self.who, exc.reason)
                raise RpcError(NOT_AUTHENTICATED, "not authenticated") from None
            self.api.hub.add(self)
            return {"ok": True}
        if method == "pair":
            p = _params(params, optional=("code", "proof", "name"))
            if ("code" in p) == ("proof" in p):
                raise RpcError(INVALID_PARAMS, "give exactly one of code and proof")
            out: dict[str, Any] = {}
            try:
                if "proof" in p:
                    # The code never crosses the socket: HMAC proofs both ways over hello's transcript.
                    key = self.api.bridge_key
                    if key is None or self._challenge is None:
                        raise RpcError(INVALID_PARAMS, "pairing with a proof needs hello first")
                    proof = _b64u_decode(p["proof"], 32, "proof")
                    token, token_id, answer = self.api.access.pair_with_proof(proof, self._challenge + key.public, p.get("name"), self.origin)
                    out["proof"] = _b64u(answer)
                else:
                    token, token_id = self.api.access.pair(p["code"], p.get("name"), self.origin)
            except AccessError as exc:
                log.warning("local API: pairing refused for %s: %s", self.who, exc.reason)
                raise RpcError(PAIRING_REFUSED, str(exc)) from None
            # A normal event: the daemon's output, not a warning (refusals above stay warnings).
            (self.api.echo or log.info)(f"extension paired: {self.who} as token {token_id} (`parley pair --list`)")
            self.token_id = token_id
            self._touched = self.api.access.clock()
            self.api.hub.add(self)
            out.update({"token": token, "token_id": token_id})
            if self.api.bridge_key is not None:
                out["bridge_key"] = _b64u(self.api.bridge_key.public)
            return out
        if self.token_id is None:
            self._refuse = True
            log.warning("local API: refused %s: %s before auth", self.who, method[:40])
            raise RpcError(NOT_AUTHENTICATED, "not authenticated")
        fn = LocalApi.METHODS.get(method)
        if fn is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        now = self.api.access.clock()
        if now - self._touched >= TOUCH_EVERY_MS:  # `parley pair --list`: "last used" of a long-lived socket
            self._touched = now
            self.api.access.touch(self.token_id)
        return fn(self.api, params)
