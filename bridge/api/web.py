"""HTTP side of the local API: the extension's WebSocket (``/v1/rpc``), the local inbox page (``/``)
and the wallet sign-in page (``/signin``, :mod:`bridge.api.signin`).

Every route here first checks ``Host`` (loopback and our port: DNS rebinding cannot reach us).
``/v1/rpc`` also requires the extension's ``Origin`` before the WebSocket handshake is accepted
(an allowed Chrome id, or a Firefox origin pinned at pairing: :mod:`bridge.api.access`).
The pages are static shells; their data comes from ``/api/*`` JSON routes that need the page
session header (see :mod:`bridge.api.pages`: no cookie, so no other local port can replay it).
The inbox page updates live from ``/api/inbox/events``, a server-sent event stream that needs the
same header (the page reads it with ``fetch``: ``EventSource`` cannot send a header).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from bridge import identity
from bridge.api.access import PageSessions, firefox_origin, host_allowed, origin_allowed
from bridge.api.pages import SESSION_HEADER, PageGuard, json_error, page, secure
from bridge.api.rpc import MAX_FRAME, LocalApi, RpcConnection
from bridge.engine import BadInput, NotRegistered, messages_of
from bridge.resolve import ContactsError

__all__ = ["register_local_api", "PAGE_PATHS"]

log = logging.getLogger("parley.api")

#: Paths whose Host is checked here (the relay routes check their own).
PAGE_PATHS = ("/c/", "/login", "/assets/", "/signin", "/api/")

#: Hub notifications the inbox page is told about (only their kind and the conversation's peer: the
#: page then fetches what changed through the JSON routes).
PAGE_EVENTS = ("message.new", "message.updated", "conversation.updated")
#: Open event streams at most (each holds a server thread); more get 429.
MAX_PAGE_STREAMS = 8
#: Seconds between keep-alive comments on an idle stream (a closed tab is noticed by the next one).
KEEPALIVE_SECONDS = 15.0


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
        try:
            self.events.put_nowait({"type": method, "peer": peer if isinstance(peer, str) else None})
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
        guard.session("inbox")
        names = _names()
        conversations = [{**c, "name": names.get(c["peer"].lower())} for c in api.m_conversations_list(None)["conversations"]]
        return guard.ok({"me": api.m_identity(None), "conversations": conversations, "unread": api.unread()})

    @bp.get("/api/inbox/c/<peer>")
    def conversation_data(peer: str) -> Any:
        guard.session("inbox")
        address = _peer(peer)
        return guard.ok({"peer": address, "name": _names().get(address.lower()), "messages": messages_of(api.engine.store, address)})

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

    @bp.post("/api/inbox/c/<peer>/send")
    def send(peer: str) -> Any:
        body = guard.write("inbox")
        address = _peer(peer)
        text = body.get("text")
        if not isinstance(text, str):
            json_error(400, "bad-request", "text must be a string")
        try:
            result = api.engine.send(address, text)
        except (BadInput, NotRegistered) as exc:
            json_error(400, "not-sent", str(exc))
        return guard.ok({"message": result.message, "delivered": result.delivered})

    @bp.post("/api/inbox/c/<peer>/read")
    def mark_read(peer: str) -> Any:
        guard.write("inbox")
        address = _peer(peer)
        return guard.ok(api.m_messages_markRead({"peer": address}))

    from bridge.api.signin import register_signin  # the wallet sign-in page (issue 8 item 1)

    register_signin(bp, api, guard)
    app.register_blueprint(bp)
