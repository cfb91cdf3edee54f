"""The bridge's own pages (the inbox and the wallet sign-in page): shells, sessions, JSON guards.

A page is a static HTML shell (no data, no inline script) plus a script and a stylesheet from ``/assets/``. The
one-time link (``parley open``, ``parley signin``, the extension's ``signin.link``) carries its token
in the URL fragment; the page's script trades it (``POST /api/session``) for a session secret and a
CSRF token kept in ``sessionStorage``, and sends the secret as ``X-Parley-Session`` with every data
request. Data comes only from ``/api/*`` JSON routes that require that header: a cookie alone gets
401, and no cookie is ever set, so another process on another 127.0.0.1 port receives nothing it
could replay (issue 8 item 8). A state-changing request must also be JSON (``Content-Type:
application/json``), come from our own origin (``Origin: http://127.0.0.1:PORT``) and carry the
session's CSRF token as ``X-Parley-CSRF``. The one exception to JSON is the inbox's file upload
(``application/octet-stream``, :meth:`PageGuard.write_gates`), which needs the other gates all the same.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Response, abort, jsonify, make_response, render_template, request

from bridge.api.access import Access, AccessError, PageSession, PageSessions

__all__ = ["PAGE_CSP", "SESSION_HEADER", "CSRF_HEADER", "PageGuard", "page", "json_error", "secure"]

log = logging.getLogger("parley.api")

#: Scripts and styles only from our origin; wallet icons are data: images, attachment thumbnails blob:
#: images (fetched with the session header, shown from an object URL); fetch only to ourselves.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SESSION_HEADER = "X-Parley-Session"
CSRF_HEADER = "X-Parley-CSRF"


def _secure(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return resp


#: The headers every page answer carries (CSP, nosniff, no-store, no framing).
secure = _secure


def page(template: str, status: int = 200) -> Response:
    """A static page shell (it holds no data: the script fetches it with the session header)."""
    return _secure(make_response(render_template(template), status))


def json_error(status: int, code: str, message: str) -> NoReturn:
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    abort(_secure(resp))


class PageGuard:
    """Checks every ``/api/*`` request of the bridge's pages."""

    def __init__(self, pages: PageSessions, port: int) -> None:
        self.pages, self.port = pages, port

    def origin_ok(self, origin: str | None) -> bool:
        return origin in (f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}")

    def session(self, scope: str) -> PageSession:
        """The session named by the ``X-Parley-Session`` header, for ``scope``; else 401."""
        found = self.pages.get(request.headers.get(SESSION_HEADER), scope)
        if found is None:
            json_error(401, "no-session", "open this page from a fresh one-time link")
        return found

    def write(self, scope: str) -> dict[str, Any]:
        """For a state-changing request: session, JSON body, our Origin, the CSRF token. Returns the body."""
        self.write_gates(scope)
        return self.body()

    def write_gates(self, scope: str) -> PageSession:
        """The gates of every state-changing request but the body's type: session, our Origin, the CSRF
        token. Only the inbox's upload route calls it alone (its body is the raw file)."""
        found = self.session(scope)
        if not self.origin_ok(request.headers.get("Origin")):
            log.warning("page API: refused %s %s: Origin %r", request.method, request.path, request.headers.get("Origin"))
            json_error(403, "origin", "refused: not from this page")
        if not Access.csrf_ok(found.csrf, request.headers.get(CSRF_HEADER)):
            log.warning("page API: refused %s %s: bad CSRF token", request.method, request.path)
            json_error(403, "csrf", "refused: bad CSRF token")
        return found

    def body(self) -> dict[str, Any]:
        if request.mimetype != "application/json":
            json_error(415, "content-type", "send JSON")
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            json_error(400, "bad-request", "expected a JSON object")
        return data

    def open_session(self) -> Response:
        """``POST /api/session {token}`` → ``{session, csrf, scope}`` (the link token is used up)."""
        if not self.origin_ok(request.headers.get("Origin")):
            json_error(403, "origin", "refused: not from this page")
        data = self.body()
        try:
            session, csrf, scope = self.pages.open(data.get("token"))
        except AccessError as exc:
            log.warning("page API: refused a page link: %s", exc.reason)
            json_error(401, "bad-link", str(exc))
        return _secure(jsonify({"session": session, "csrf": csrf, "scope": scope}))

    def ok(self, data: Any, status: int = 200) -> Response:
        resp = jsonify(data)
        resp.status_code = status
        return _secure(resp)
