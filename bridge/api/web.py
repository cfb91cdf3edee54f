"""HTTP side of the local API: the extension's WebSocket (``/v1/rpc``), the local inbox page (``/``)
and the wallet sign-in page (``/signin``, :mod:`bridge.api.signin`).

Every route here first checks ``Host`` (loopback and our port: DNS rebinding cannot reach us).
``/v1/rpc`` also requires the extension's ``Origin`` before the WebSocket handshake is accepted
(an allowed Chrome id, or a Firefox origin pinned at pairing: :mod:`bridge.api.access`).
The pages are static shells; their data comes from ``/api/*`` JSON routes that need the page
session header (see :mod:`bridge.api.pages`: no cookie, so no other local port can replay it).
The inbox page updates live from ``/api/inbox/events``, a server-sent event stream that needs the
same header (the page reads it with ``fetch``: ``EventSource`` cannot send a header).

Issue 12: the inbox routes also cover folders and consent (Requests), replies, reactions, edits,
deletes, typing, and attachments: an upload is the one write whose body is not JSON (the raw file,
streamed to the engine in chunks), and an attachment is only ever served as a download
(``application/octet-stream``, ``Content-Disposition: attachment``, ``nosniff``): a peer's MIME type is
never rendered. The routes only check their input and call the engine (docs/PROTOCOL.md §8.3).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, Response, abort, request, send_file
from flask_sock import Sock
from werkzeug.exceptions import ClientDisconnected
from simple_websocket import ConnectionClosed

from bridge import identity
from bridge.api.access import PageSessions, firefox_origin, host_allowed, origin_allowed
from bridge.api.pages import SESSION_HEADER, PageGuard, json_error, page, secure
from bridge.api.rpc import INTERNAL_ERROR, INVALID_PARAMS, MAX_FRAME, RELAY_UNAVAILABLE, LocalApi, RpcConnection, RpcError
from bridge.engine import BadInput, EngineError, NotRegistered, messages_of
from bridge.resolve import ContactsError

__all__ = ["register_local_api", "PAGE_PATHS"]

log = logging.getLogger("parley.api")

#: Paths whose Host is checked here (the relay routes check their own).
PAGE_PATHS = ("/c/", "/login", "/assets/", "/signin", "/api/")

#: Hub notifications the inbox page is told about (only their kind and the conversation's peer: the
#: page then fetches what changed through the JSON routes).
PAGE_EVENTS = (
    "message.new", "message.updated", "conversation.updated", "typing", "consent.changed", "attachment.progress",
)
#: Fields copied from an event's params besides its peer: never text, only flags, states and numbers.
EVENT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "typing": {"typing": bool},
    "consent.changed": {"consent": str},
    "attachment.progress": {"id": str, "phase": str, "done": int, "total": int},
}
#: Open event streams at most (each holds a server thread); more get 429.
MAX_PAGE_STREAMS = 8
#: Seconds between keep-alive comments on an idle stream (a closed tab is noticed by the next one).
KEEPALIVE_SECONDS = 15.0

#: Conversation folders of ``GET /api/inbox?folder=`` (engine.conversations).
FOLDERS = ("inbox", "requests", "all")
CONSENT_ACTIONS = ("accept", "decline", "block", "unblock")
#: A message id (32 lowercase hex) and an attachment id (``<message id>-<index>``).
MESSAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
ATTACHMENT_ID_RE = re.compile(r"([0-9a-f]{32})-([0-9]{1,2})")
#: Upload ids are the engine's (any short token); checked only for shape here.
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")
#: The largest file (PROTOCOL §6.7: 25 MiB), files per message, and the chunks an upload is read in.
MAX_FILE_BYTES = 26_214_400
MAX_FILES = 10
UPLOAD_CHUNK = 196_608
MAX_TEXT = 65_536


def download_name(name: str) -> str:
    """``Content-Disposition`` for a peer-chosen file name: always ``attachment``; an ASCII
    ``filename`` with anything unusual replaced, and the UTF-8 name percent-encoded in ``filename*``."""
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").replace("/", "_").replace("\\", "_")
    name = name.strip().lstrip(".") or "attachment"
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()-]", "_", name)[:150] or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name[:200], safe='')}"


class PageStream:
    """One inbox page's event stream: a :class:`~bridge.api.rpc.Hub` subscriber, like a paired widget.
    ``alive()`` is re-checked for every event, so an expired session hears nothing more."""

    def __init__(self, alive: Any) -> None:
        self.alive = alive
        self.events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=256)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        if method not in PAGE_EVENTS or not self.alive():
            return
        message = params.get("message")
        peer = params.get("peer") or (message.get("peer") if isinstance(message, dict) else None)
        event: dict[str, Any] = {"type": method, "peer": peer if isinstance(peer, str) else None}
        for name, kind in EVENT_FIELDS.get(method, {}).items():
            value = params.get(name)
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                event[name] = value[:100] if isinstance(value, str) else value
        try:
            self.events.put_nowait(event)
        except queue.Full:
            pass  # the page refetches everything on the next event anyway


def register_local_api(app: Flask, sock: Sock, api: LocalApi, *, port: int, extension_ids: tuple[str, ...] = ()) -> None:
    """Mount /v1/rpc and the inbox page on the daemon's app."""
    pages: PageSessions = api.pages if api.pages is not None else PageSessions()
    guard = PageGuard(pages, port)
    streams = threading.BoundedSemaphore(MAX_PAGE_STREAMS)
    bp = Blueprint("local_api", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"max_message_size": MAX_FRAME, "ping_interval": None})

    def refuse(status: int, reason: str) -> None:
        log.warning("local API: refused %s %s from %s: %s", request.method, request.path, request.remote_addr, reason)
        abort(Response(f"refused: {reason}\n", status, mimetype="text/plain"))

    @app.before_request
    def _check_host_and_origin() -> None:
        path = request.path
        if not (path == "/" or path == "/v1/rpc" or path.startswith(PAGE_PATHS)):
            return
        if not host_allowed(request.host, port):
            refuse(403, f"Host {request.host!r} is not loopback:{port}")
        if path == "/v1/rpc" and not _extension_origin(request.headers.get("Origin")):
            refuse(403, f"Origin {request.headers.get('Origin')!r} is not the Parley extension")

    def _extension_origin(origin: str | None) -> bool:
        """An allowed Chrome id, or a Firefox origin that is pinned (an active token is bound to it) or
        arrives while a pairing code is live: it can then only pair, and the token binds it (access.py)."""
        if origin_allowed(origin, extension_ids):
            return True
        return firefox_origin(origin) and (api.access.pinned(origin or "") or api.access.pairing_open())

    @sock.route("/v1/rpc")
    def rpc(ws: Any) -> None:
        who = f"{request.headers.get('Origin')} ({request.remote_addr})"

        def close(code: int, reason: str) -> None:
            ws.close(reason=code, message=reason)

        conn = RpcConnection(api, ws.send, close, who, origin=request.headers.get("Origin"), host=request.host)
        try:
            while not conn.closed:
                data = ws.receive()
                if data is None:
                    continue
                conn.handle(data)
        except ConnectionClosed:
            pass
        finally:
            api.hub.remove(conn)

    # --- the inbox page: static shells; data from /api/inbox* with the page session header -------

    @bp.get("/")
    @bp.get("/login")
    def inbox() -> Any:
        return page("inbox.html")

    @bp.get("/c/<peer>")
    def conversation(peer: str) -> Any:
        return page("inbox.html")

    @bp.post("/api/session")
    def open_session() -> Any:
        return guard.open_session()

    def _peer(peer: str) -> str:
        try:
            return identity.checksum_address(peer)
        except identity.IdentityError:
            json_error(404, "not-an-address", "not an address")

    def _names() -> dict[str, str]:
        """Address → the user's contact name for it (the first, alphabetically); {} if unreadable."""
        try:
            contacts = api.contacts.all()
        except ContactsError as exc:
            log.warning("inbox page: contacts unreadable: %s", exc)
            return {}
        names: dict[str, str] = {}
        for name, address in contacts.items():
            names.setdefault(address.lower(), name)
        return names

    @bp.get("/api/inbox")
    def inbox_data() -> Any:
        """``?folder=inbox|requests|all`` → ``{me, folder, conversations, unread, requests}``."""
        guard.session("inbox")
        folder = request.args.get("folder", "inbox")
        if folder not in FOLDERS:
            json_error(400, "bad-request", "folder must be inbox, requests or all")
        names = _names()
        conversations = [{**c, "name": names.get(c["peer"].lower())} for c in api.engine.conversations(folder)]
        requests_count = len(conversations) if folder == "requests" else len(api.engine.conversations("requests"))
        return guard.ok({"me": api.m_identity(None), "folder": folder, "conversations": conversations,
                         "unread": api.unread(), "requests": requests_count})

    @bp.get("/api/inbox/c/<peer>")
    def conversation_data(peer: str) -> Any:
        """``{peer, name, consent, held, dropped, messages}`` (consent and held: the Requests banner)."""
        guard.session("inbox")
        address = _peer(peer)
        consent = api.engine.consent(address)
        return guard.ok({"peer": address, "name": _names().get(address.lower()), "consent": consent.get("consent"),
                         "held": consent.get("held", 0), "dropped": consent.get("dropped", 0),
                         "messages": messages_of(api.engine.store, address)})

    @bp.get("/api/inbox/events")
    def inbox_events() -> Any:
        """Server-sent events for the inbox page: ``event: message.new`` etc. with ``{type, peer}``."""
        guard.session("inbox")
        secret = request.headers.get(SESSION_HEADER)
        if not streams.acquire(blocking=False):
            json_error(429, "too-many-streams", "too many open inbox pages")
        stream = PageStream(lambda: pages.get(secret, "inbox") is not None)
        api.hub.add(stream)
        once = threading.Lock()

        def cleanup() -> None:  # the WSGI server closes every response, streamed or not
            if once.acquire(blocking=False):
                api.hub.remove(stream)
                streams.release()

        def events() -> Iterator[str]:
            try:
                yield ": parley inbox events\n\n"  # the headers and this go out now: the page knows it is live
                while stream.alive():
                    try:
                        event = stream.events.get(timeout=KEEPALIVE_SECONDS)
                    except queue.Empty:
                        yield ": keep-alive\n\n"
                        continue
                    if not stream.alive():
                        break  # the session expired while we waited
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            finally:
                cleanup()

        resp = Response(events(), mimetype="text/event-stream")
        resp.call_on_close(cleanup)
        resp.headers["X-Accel-Buffering"] = "no"
        return secure(resp)

    def _id(value: Any, name: str = "id") -> str:
        if not isinstance(value, str) or not MESSAGE_ID_RE.fullmatch(value):
            json_error(400, "bad-request", f"{name} must be a message id (32 lowercase hex)")
        return value

    def _text(value: Any, *, empty: bool) -> str:
        if not isinstance(value, str):
            json_error(400, "bad-request", "text must be a string")
        if len(value) > MAX_TEXT or (not empty and not value.strip()):
            json_error(400, "bad-request", "text must be 1 to 65536 characters")
        return value

    def _engine(call: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the engine; its refusals become 400 with the engine's clear message."""
        try:
            return call(*args, **kwargs)
        except (BadInput, NotRegistered) as exc:
            json_error(400, "bad-input", str(exc))
        except EngineError as exc:
            log.warning("inbox page: %s %s failed: %s", request.method, request.path, exc)
            json_error(502, "failed", str(exc))

    @bp.post("/api/inbox/c/<peer>/send")
    def send(peer: str) -> Any:
        """``{text, reply_to?, uploads?}`` → ``{message, delivered}`` (text may be "" with uploads)."""
        body = guard.write("inbox")
        address = _peer(peer)
        uploads = body.get("uploads", [])
        if not isinstance(uploads, list) or len(uploads) > MAX_FILES or not all(isinstance(u, str) and UPLOAD_ID_RE.fullmatch(u) for u in uploads):
            json_error(400, "bad-request", f"uploads must be a list of at most {MAX_FILES} upload ids")
        text = _text(body.get("text"), empty=bool(uploads))
        reply_to = body.get("reply_to")
        if reply_to is not None:
            reply_to = _id(reply_to, "reply_to")
        options: dict[str, Any] = {}
        if reply_to is not None:
            options["reply_to"] = reply_to
        if uploads:
            options["uploads"] = tuple(uploads)
        try:
            result = api.engine.send(address, text, **options)
        except (BadInput, NotRegistered) as exc:
            json_error(400, "not-sent", str(exc))
        except EngineError as exc:  # an attachment's upload failed: the upload stays, nothing is lost
            log.warning("inbox page: send to %s failed: %s", address, exc)
            json_error(502, "not-sent", str(exc))
        return guard.ok({"message": result.message, "delivered": result.delivered})

    @bp.post("/api/inbox/c/<peer>/consent")
    def consent(peer: str) -> Any:
        """``{action: accept|decline|block|unblock}`` → ``{peer, consent, held, dropped}``."""
        body = guard.write("inbox")
        address = _peer(peer)
        action = body.get("action")
        if action not in CONSENT_ACTIONS:
            json_error(400, "bad-request", "action must be accept, decline, block or unblock")
        return guard.ok(_engine(api.engine.set_consent, address, action))

    @bp.post("/api/inbox/c/<peer>/react")
    def react(peer: str) -> Any:
        """``{id, emoji, remove?}`` → ``{message}``."""
        body = guard.write("inbox")
        address = _peer(peer)
        message_id = _id(body.get("id"))
        emoji, remove = body.get("emoji"), body.get("remove", False)
        if not isinstance(emoji, str) or not 1 <= len(emoji.encode()) <= 32:
            json_error(400, "bad-request", "emoji must be 1 to 32 bytes of text")
        if not isinstance(remove, bool):
            json_error(400, "bad-request", "remove must be true or false")
        return guard.ok({"message": _engine(api.engine.react, address, message_id, emoji, remove=remove)})

    @bp.post("/api/inbox/c/<peer>/edit")
    def edit(peer: str) -> Any:
        """``{id, text}`` → ``{message}`` (only our own message)."""
        body = guard.write("inbox")
        address = _peer(peer)
        message_id = _id(body.get("id"))
        text = _text(body.get("text"), empty=False)
        return guard.ok({"message": _engine(api.engine.edit, address, message_id, text)})

    @bp.post("/api/inbox/c/<peer>/delete")
    def delete(peer: str) -> Any:
        """``{id}`` → ``{message}`` (the tombstone; only our own message)."""
        body = guard.write("inbox")
        address = _peer(peer)
        message_id = _id(body.get("id"))
        return guard.ok({"message": _engine(api.engine.delete, address, message_id)})

    @bp.post("/api/inbox/c/<peer>/typing")
    def typing(peer: str) -> Any:
        """``{typing: bool}`` → ``{sent}`` (sent now or not at all)."""
        body = guard.write("inbox")
        address = _peer(peer)
        value = body.get("typing")
        if not isinstance(value, bool):
            json_error(400, "bad-request", "typing must be true or false")
        return guard.ok({"sent": bool(_engine(api.engine.typing, address, value))})

    @bp.post("/api/inbox/uploads")
    def upload() -> Any:
        """``?name=&mime=`` with the raw file as the body (``application/octet-stream``, ``Content-Length``
        required, at most 25 MiB) → ``{upload_id}``. Read and handed to the engine chunk by chunk."""
        guard.write_gates("inbox")
        if request.mimetype != "application/octet-stream":
            json_error(415, "content-type", "send the file as application/octet-stream")
        size = request.content_length
        if size is None:
            json_error(411, "length-required", "Content-Length is required")
        if size > MAX_FILE_BYTES:
            json_error(413, "too-large", "a file may be at most 25 MiB")
        name, mime = request.args.get("name", ""), request.args.get("mime") or "application/octet-stream"
        if not 1 <= len(name.encode()) <= 255:
            json_error(400, "bad-request", "name must be 1 to 255 bytes")
        if len(mime) > 127:
            json_error(400, "bad-request", "mime must be at most 127 characters")
        request.max_content_length = MAX_FILE_BYTES  # this route only: the app's limit is 2 MiB
        upload_id = _engine(api.engine.upload_begin, name, size, mime)
        stream, offset = request.stream, 0
        while offset < size:
            try:
                data = stream.read(min(UPLOAD_CHUNK, size - offset))
            except ClientDisconnected:
                data = b""
            if not data:
                api.engine.upload_cancel(upload_id)  # a cut-off upload leaves no partial file behind
                json_error(400, "bad-request", f"the body ended after {offset} of {size} bytes")
            _engine(api.engine.upload_chunk, upload_id, offset, data)
            offset += len(data)
        return guard.ok({"upload_id": upload_id}, 201)

    def _attachment(attachment_id: str) -> dict[str, Any]:
        """The attachment's entry in its message dict (§4), or 400 (not an id) / 404 (none such)."""
        match = ATTACHMENT_ID_RE.fullmatch(attachment_id)
        if match is None:
            json_error(400, "bad-request", "not an attachment id")
        message = api.engine.message(match.group(1))
        found = [a for a in (message or {}).get("attachments") or () if a.get("id") == attachment_id]
        if not found:
            json_error(404, "not-found", "no such attachment")
        return dict(found[0])

    @bp.get("/api/inbox/attachments/<attachment_id>")
    def attachment(attachment_id: str) -> Any:
        """The decrypted file, as a download only (whatever MIME type the peer claimed)."""
        guard.session("inbox")
        entry = _attachment(attachment_id)
        path = Path(_engine(api.engine.attachment_path, attachment_id))
        resp = send_file(path, mimetype="application/octet-stream", conditional=False, etag=False, max_age=None)
        resp.headers["Content-Disposition"] = download_name(str(entry.get("name") or "attachment"))
        return secure(resp)

    @bp.get("/api/inbox/attachments/<attachment_id>/thumbnail")
    def thumbnail(attachment_id: str) -> Any:
        """The image's thumbnail (JPEG or PNG, made by the bridge with Pillow); 404 when it has none."""
        guard.session("inbox")
        _attachment(attachment_id)
        rows = api.engine.store.read("SELECT thumb FROM attachments WHERE id = ?", (attachment_id,))
        thumb = bytes(rows[0]["thumb"]) if rows and rows[0]["thumb"] else b""
        if thumb.startswith(b"\x89PNG\r\n\x1a\n"):
            mimetype = "image/png"
        elif thumb.startswith(b"\xff\xd8\xff"):
            mimetype = "image/jpeg"
        else:
            json_error(404, "no-thumbnail", "this attachment has no thumbnail")
        return secure(Response(thumb, mimetype=mimetype))

    @bp.post("/api/inbox/c/<peer>/read")
    def mark_read(peer: str) -> Any:
        guard.write("inbox")
        address = _peer(peer)
        return guard.ok(api.m_messages_markRead({"peer": address}))

    # --- the backup panel (issue 15 item 8): the same methods as the popup's RPC, inbox session only ---

    def _backup(method: str, params: dict[str, Any]) -> Any:
        """Call a ``backup.*`` method of the local API; its refusals become ``{error: {code, message}}``
        (code: the refusal's reason, e.g. ``mismatch``, ``exists``, ``malformed``; the params' own
        errors ``bad-request``; the relay's ``relay``, 502)."""
        try:
            return LocalApi.METHODS[method](api, params)
        except RpcError as exc:
            reason = exc.data.get("reason") if isinstance(exc.data, dict) else None
            if exc.code == INVALID_PARAMS:
                json_error(400, "bad-request", exc.message)
            if exc.code == RELAY_UNAVAILABLE:
                json_error(502, "relay", exc.message)
            if exc.code == INTERNAL_ERROR:
                json_error(500, "failed", exc.message)
            if reason == "unavailable":
                json_error(503, "unavailable", exc.message)
            json_error(400, str(reason or "bad-input"), exc.message)

    @bp.get("/api/backup")
    def backup_status() -> Any:
        """The status of ``backup.status`` (last backup, size, each relay, the standby)."""
        guard.session("inbox")
        return guard.ok(_backup("backup.status", {}))

    @bp.post("/api/backup/key")
    def backup_key() -> Any:
        """``{replace?: true}`` → ``{recovery_key}``, once (``backup.createKey``)."""
        return guard.ok(_backup("backup.createKey", guard.write("inbox")))

    @bp.post("/api/backup/confirm")
    def backup_confirm() -> Any:
        """``{recovery_key}`` (as typed) → ``{confirmed, enabled, error?}`` (``backup.confirmKey``)."""
        return guard.ok(_backup("backup.confirmKey", guard.write("inbox")))

    @bp.post("/api/backup/remote")
    def backup_remote() -> Any:
        """``{enabled}`` → the status (``backup.setRemote``)."""
        return guard.ok(_backup("backup.setRemote", guard.write("inbox")))

    from bridge.api.signin import register_signin  # the wallet sign-in page (issue 8 item 1)

    register_signin(bp, api, guard)
    app.register_blueprint(bp)
