"""HTTP side of the local API: the extension's WebSocket (``/v1/rpc``), the local inbox page (``/``)
and the wallet sign-in page (``/signin``, :mod:`bridge.api.signin`).

Every route here first checks ``Host`` (loopback and our port: DNS rebinding cannot reach us).
``/v1/rpc`` also requires the extension's ``Origin`` before the WebSocket handshake is accepted
(an allowed Chrome id, or a Firefox origin pinned at pairing: :mod:`bridge.api.access`).
The pages are static shells; their data comes from ``/api/*`` JSON routes that need the page
session header (see :mod:`bridge.api.pages`: no cookie, so no other local port can replay it).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, abort, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from bridge import identity
from bridge.api.access import PageSessions, firefox_origin, host_allowed, origin_allowed
from bridge.api.pages import PageGuard, json_error, page
from bridge.api.rpc import MAX_FRAME, LocalApi, RpcConnection
from bridge.engine import BadInput, NotRegistered, messages_of

__all__ = ["register_local_api", "PAGE_PATHS"]

log = logging.getLogger("parley.api")

#: Paths whose Host is checked here (the relay routes check their own).
PAGE_PATHS = ("/c/", "/login", "/assets/", "/signin", "/api/")


def register_local_api(app: Flask, sock: Sock, api: LocalApi, *, port: int, extension_ids: tuple[str, ...] = ()) -> None:
    """Mount /v1/rpc and the inbox page on the daemon's app."""
    pages: PageSessions = api.pages if api.pages is not None else PageSessions()
    guard = PageGuard(pages, port)
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

    @bp.get("/api/inbox")
    def inbox_data() -> Any:
        guard.session("inbox")
        return guard.ok({"me": api.m_identity(None), "conversations": api.m_conversations_list(None)["conversations"]})

    @bp.get("/api/inbox/c/<peer>")
    def conversation_data(peer: str) -> Any:
        guard.session("inbox")
        address = _peer(peer)
        return guard.ok({"peer": address, "messages": messages_of(api.engine.store, address)})

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
