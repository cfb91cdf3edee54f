"""HTTP side of the local API: the extension's WebSocket (``/v1/rpc``) and the local inbox page (``/``).

Every route here first checks ``Host`` (loopback and our port: DNS rebinding cannot reach us).
``/v1/rpc`` also requires the extension's ``Origin`` before the WebSocket handshake is accepted.
The inbox page needs the HttpOnly session cookie that a one-time ``parley open`` link sets; its
forms carry a CSRF token, and every page is sent with a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Flask, Response, abort, make_response, redirect, render_template, request, url_for
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from bridge import identity
from bridge.api.access import Access, AccessError, host_allowed, origin_allowed
from bridge.api.rpc import MAX_FRAME, LocalApi, RpcConnection
from bridge.engine import BadInput, NotRegistered, messages_of

__all__ = ["register_local_api", "CSP", "SESSION_COOKIE"]

log = logging.getLogger("parley.api")

CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
SESSION_COOKIE = "parley_session"


def register_local_api(app: Flask, sock: Sock, api: LocalApi, *, port: int, extension_ids: tuple[str, ...] = ()) -> None:
    """Mount /v1/rpc and the inbox page on the daemon's app."""
    access: Access = api.access
    bp = Blueprint("local_api", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"max_message_size": MAX_FRAME, "ping_interval": None})
    app.jinja_env.filters["when"] = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def refuse(status: int, reason: str) -> None:
        log.warning("local API: refused %s %s from %s: %s", request.method, request.path, request.remote_addr, reason)
        abort(Response(f"refused: {reason}\n", status, mimetype="text/plain"))

    @app.before_request
    def _check_host_and_origin() -> None:
        path = request.path
        if not (path == "/" or path == "/v1/rpc" or path.startswith(("/c/", "/login", "/static/"))):
            return
        if not host_allowed(request.host, port):
            refuse(403, f"Host {request.host!r} is not loopback:{port}")
        if path == "/v1/rpc" and not origin_allowed(request.headers.get("Origin"), extension_ids):
            refuse(403, f"Origin {request.headers.get('Origin')!r} is not the Parley extension")

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

    # --- the inbox page ------------------------------------------------------------

    def _session() -> str:
        csrf = access.session_csrf(request.cookies.get(SESSION_COOKIE))
        if csrf is None:
            abort(_page(render_template("login_needed.html"), 401))
        return csrf

    def _page(html: str, status: int = 200) -> Response:
        resp = make_response(html, status)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    @bp.get("/login")
    def login() -> Any:
        try:
            session, _ = access.use_login(request.args.get("t"))
        except AccessError as exc:
            log.warning("inbox page: refused login: %s", exc.reason)
            return _page(render_template("login_needed.html", error=str(exc)), 401)
        resp = redirect(url_for("local_api.inbox"), 303)
        resp.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/", max_age=12 * 3600)
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @bp.get("/")
    def inbox() -> Any:
        _session()
        convs = api.m_conversations_list(None)["conversations"]
        return _page(render_template("inbox.html", me=api.m_identity(None), conversations=convs, current=None, thread=[], csrf=None))

    @bp.get("/c/<peer>")
    def conversation(peer: str) -> Any:
        csrf = _session()
        try:
            address = identity.checksum_address(peer)
        except identity.IdentityError:
            abort(_page("not an address", 404))
        convs = api.m_conversations_list(None)["conversations"]
        thread = messages_of(api.engine.store, address)
        return _page(render_template("inbox.html", me=api.m_identity(None), conversations=convs, current=address, thread=thread, csrf=csrf, error=request.args.get("error")))

    @bp.post("/c/<peer>/send")
    def send(peer: str) -> Any:
        csrf = _session()
        if not access.csrf_ok(csrf, request.form.get("csrf")):
            log.warning("inbox page: refused a form without a valid CSRF token")
            abort(_page("refused: bad CSRF token", 403))
        try:
            address = identity.checksum_address(peer)
            api.engine.send(address, request.form.get("text", ""))
        except identity.IdentityError:
            abort(_page("not an address", 404))
        except (BadInput, NotRegistered) as exc:
            return redirect(url_for("local_api.conversation", peer=peer, error=str(exc)), 303)
        return redirect(url_for("local_api.conversation", peer=address), 303)

    @bp.post("/c/<peer>/read")
    def mark_read(peer: str) -> Any:
        csrf = _session()
        if not access.csrf_ok(csrf, request.form.get("csrf")):
            abort(_page("refused: bad CSRF token", 403))
        try:
            api.m_messages_markRead({"peer": peer})
        except Exception:
            abort(_page("not an address", 404))
        return redirect(url_for("local_api.conversation", peer=peer), 303)

    app.register_blueprint(bp)
