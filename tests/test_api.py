"""The local API: JSON-RPC 2.0 over WebSocket, pairing, the three gates, the inbox page.

Real daemon processes on 127.0.0.1; WebSocket clients from websocket-client. The methods and
notifications over real engines are also driven in-process (:class:`RpcConnection` with a fake
``send``/``close``, engines over an in-process relay): see "In-process" below.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import websocket

from bridge import identity
from bridge.api.access import EXTENSION_ID, Access, AccessError, normalise_code
from bridge.api.rpc import Hub, LocalApi, RpcConnection
from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.relay.client import RelayClient
from bridge.resolve import Contacts
from bridge.store import Store
from e2e.extension_id import extension_id
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.procs import Proc, free_port, parley, start_bridge, wait_for, whoami
from tests.relay_fixtures import serve_relay
from tests.vectors_loader import cases

ORIGIN = f"chrome-extension://{EXTENSION_ID}"


def test_extension_id_matches_the_manifest_key() -> None:
    assert EXTENSION_ID == extension_id()


class Bridge:
    def __init__(self, home: Path, proc: Proc, url: str) -> None:
        self.home, self.proc, self.url = home, proc, url
        self.port = int(url.rsplit(":", 1)[1])
        self.sockets: list[websocket.WebSocket] = []

    def ws(self) -> websocket.WebSocket:
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/v1/rpc", origin=ORIGIN, timeout=10)
        self.sockets.append(ws)
        return ws

    def code(self) -> str:
        r = parley(self.home, "pair", check=True)
        return r.stdout.strip().splitlines()[-1]

    def paired(self) -> tuple[websocket.WebSocket, str]:
        ws = self.ws()
        token = call(ws, "pair", {"code": self.code(), "name": "pytest"})["result"]["token"]
        return ws, token


_ids = iter(range(1, 10**9))


def call(ws: websocket.WebSocket, method: str, params: Any = None) -> dict[str, Any]:
    rid = next(_ids)
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        req["params"] = params
    ws.send(json.dumps(req))
    while True:
        msg = json.loads(ws.recv())
        if isinstance(msg, dict) and msg.get("id") == rid:
            return msg


def close_code(ws: websocket.WebSocket) -> int:
    """Read frames until the server's close frame; return its status code."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    home = tmp_path_factory.mktemp("api") / "alice"
    parley(home, "init", check=True)
    proc, url = start_bridge(home, port=free_port())
    proc.expect("subscribed to")
    try:
        yield Bridge(home, proc, url)
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def _close_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "bridge" in request.fixturenames:
        b: Bridge = request.getfixturevalue("bridge")
        for ws in b.sockets:
            ws.shutdown()  # closes the TCP socket even when the server already closed the WebSocket
        b.sockets.clear()


def handshake(bridge: Bridge, *, origin: str | None = ORIGIN, host: str | None = None) -> int:
    """A raw WebSocket opening handshake; returns the HTTP status (101 = accepted)."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Host": host or f"127.0.0.1:{bridge.port}",
    }
    if origin is not None:
        headers["Origin"] = origin
    with requests.get(f"{bridge.url}/v1/rpc", headers=headers, timeout=10, stream=True) as r:
        return r.status_code


def test_the_daemon_does_not_keep_a_database_connection_per_client_it_ever_had(bridge: Bridge) -> None:
    """The local API serves each client connection on its own thread, and the store opens a SQLite
    connection per thread (two descriptors with WAL). A connection whose thread ended used to stay
    open for the daemon's life: a few hundred clients (CLI calls, extension reconnects, a page
    knocking) and the daemon ran out of descriptors."""
    from bridge.home import Home

    token = Home(bridge.home).daemon_info()["token"]
    fd_dir = Path(f"/proc/{bridge.proc.p.pid}/fd")
    before = len(list(fd_dir.iterdir()))
    for _ in range(150):  # each on a new TCP connection, so each on a new server thread
        r = requests.get(f"{bridge.url}/v1/control/status", headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=10)
        assert r.status_code == 200, r.text
    # The last threads may still be closing; a leak leaves about 300 more for good.
    wait_for(lambda: len(list(fd_dir.iterdir())) <= before + 10, timeout=15, what="the daemon's descriptors back near where they were")


def test_foreign_origin_missing_origin_and_foreign_host_are_refused_before_the_handshake(bridge: Bridge) -> None:
    assert handshake(bridge) == 101
    for kwargs, reason in (
        ({"origin": "https://hey.xyz"}, "Origin 'https://hey.xyz' is not the Parley extension"),
        ({"origin": None}, "Origin None is not the Parley extension"),
        ({"origin": "chrome-extension://" + "a" * 32}, "is not the Parley extension"),
        ({"host": f"evil.example:{bridge.port}"}, "Host 'evil.example:"),
        ({"host": f"127.0.0.1:{bridge.port + 1}"}, "is not loopback"),
    ):
        assert handshake(bridge, **kwargs) == 403
        bridge.proc.expect(re.escape(reason), timeout=5)


def test_calls_before_auth_are_refused_and_the_socket_closed_with_4401(bridge: Bridge) -> None:
    ws = bridge.ws()
    r = call(ws, "status")
    assert r["error"]["code"] == -32001 and "result" not in r
    assert close_code(ws) == 4401
    bridge.proc.expect("status before auth")


def test_a_bad_token_is_refused(bridge: Bridge) -> None:
    ws = bridge.ws()
    assert call(ws, "auth", {"token": "x" * 43})["error"]["code"] == -32001
    assert close_code(ws) == 4401


def test_pairing_gives_a_token_that_works_once_and_can_be_revoked(bridge: Bridge) -> None:
    code = bridge.code()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    ws = bridge.ws()
    res = call(ws, "pair", {"code": code.lower().replace("-", " "), "name": "Chrome on test"})["result"]
    token, token_id = res["token"], res["token_id"]
    me = whoami(bridge.home)
    status = call(ws, "status")["result"]
    assert status["address"] == me["address"] and status["did"] == me["did"] and status["relay"]["connected"] is True
    # the code is single use
    ws2 = bridge.ws()
    assert call(ws2, "pair", {"code": code})["error"]["code"] == -32002
    # the token opens a fresh connection
    ws3 = bridge.ws()
    assert call(ws3, "auth", {"token": token})["result"] == {"ok": True}
    assert call(ws3, "ping")["result"] == "pong"
    listed = json.loads(parley(bridge.home, "pair", "--list", "--json", check=True).stdout)
    assert any(t["id"] == token_id and t["name"] == "Chrome on test" and not t["revoked"] for t in listed)
    parley(bridge.home, "pair", "--revoke", token_id, check=True)
    assert call(ws3, "ping")["error"]["code"] == -32001  # a live connection loses access at once
    ws4 = bridge.ws()
    assert call(ws4, "auth", {"token": token})["error"]["code"] == -32001
    assert parley(bridge.home, "pair", "--revoke", token_id).returncode == 2


def test_pair_json_shows_the_code_and_the_daemon_log_does_not(bridge: Bridge) -> None:
    code = json.loads(parley(bridge.home, "pair", "--json", check=True).stdout)["code"]
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    bridge.proc.expect(re.escape("pairing code issued"))
    assert code not in "".join(bridge.proc.output)


def test_json_rpc_error_objects(bridge: Bridge) -> None:
    ws, _ = bridge.paired()

    def raw(text: str) -> Any:
        ws.send(text)
        return json.loads(ws.recv())

    assert raw("{not json") == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert raw("[]")["error"]["code"] == -32600
    assert raw(json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}))["error"]["code"] == -32600
    assert raw(json.dumps({"jsonrpc": "2.0", "id": 2, "method": 5}))["error"]["code"] == -32600
    assert raw(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "nope"}))["error"]["code"] == -32601
    assert raw(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "messages.list", "params": {"peer": "bob"}}))["error"]["code"] == -32602
    assert raw(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "messages.list", "params": {"peer": "0x" + "1" * 40, "limit": 0}}))["error"]["code"] == -32602
    batch = raw(json.dumps([{"jsonrpc": "2.0", "id": 6, "method": "ping"}, {"jsonrpc": "2.0", "method": "ping"}, 7]))
    assert batch == [
        {"jsonrpc": "2.0", "result": "pong", "id": 6},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
    ]


def test_resolve_answers_from_addresses_and_contacts(bridge: Bridge) -> None:
    ws, _ = bridge.paired()
    addr = "0x" + "ab" * 20
    r = call(ws, "resolve", {"peer": addr})["result"]
    assert r["source"] == "address" and r["address"].lower() == addr and r["address"] != addr  # checksummed
    err = call(ws, "resolve", {"peer": "lens:nobody"})["error"]
    assert err["code"] == -32004 and err["data"]["reason"] == "unknown"
    parley(bridge.home, "contacts", "add", "lens:nobody", addr, check=True)
    r = call(ws, "resolve", {"peer": "lens:nobody"})["result"]
    assert r["address"].lower() == addr and r["source"] == "contacts" and r["name"] == "lens:nobody"
    assert json.loads(parley(bridge.home, "contacts", "list", "--json", check=True).stdout)["lens:nobody"].lower() == addr
    assert call(ws, "resolve", {"peer": "<script>"})["error"]["data"]["reason"] == "malformed"
    assert parley(bridge.home, "contacts", "add", "x y", addr).returncode == 2
    assert parley(bridge.home, "contacts", "add", "bob", "0x123").returncode == 2


def _page_session(bridge: Bridge, command: str = "open") -> dict[str, str]:
    """Follow a one-time page link the way the page's script does: POST its fragment token."""
    url = parley(bridge.home, command, check=True).stdout.strip().splitlines()[-1]
    path = "/login" if command == "open" else "/signin"
    assert url.startswith(f"{bridge.url}{path}#t="), url  # the token is in the fragment: never sent to a server
    token = url.split("#t=", 1)[1]
    r = requests.post(f"{bridge.url}/api/session", json={"token": token}, headers={"Origin": bridge.url}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == ("inbox" if command == "open" else "signin")
    assert "Set-Cookie" not in r.headers
    again = requests.post(f"{bridge.url}/api/session", json={"token": token}, headers={"Origin": bridge.url}, timeout=10)
    assert again.status_code == 401  # the link works once
    return {"session": body["session"], "csrf": body["csrf"]}


def test_inbox_page_is_a_static_shell_with_a_strict_csp_and_its_files_are_served(bridge: Bridge) -> None:
    me = whoami(bridge.home)["address"]
    for path in ("/", "/login", f"/c/{'0x' + 'cd' * 20}", "/signin"):
        r = requests.get(f"{bridge.url}{path}", timeout=10)
        assert r.status_code == 200 and me not in r.text, path  # no data in the shell
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "<script>" not in r.text and "Set-Cookie" not in r.headers
        for ref in re.findall(r'(?:href|src)="(/assets/[^"]+)"', r.text):
            asset = requests.get(f"{bridge.url}{ref}", timeout=10)
            assert asset.status_code == 200, ref
            assert asset.headers["Content-Type"].split(";")[0] in ("text/css", "text/javascript", "application/javascript"), ref
    for name in ("page.js", "inbox.js", "signin.js", "inbox.css"):
        assert requests.get(f"{bridge.url}/assets/{name}", timeout=10).status_code == 200
    assert requests.get(f"{bridge.url}/", headers={"Host": "evil.example"}, timeout=10).status_code == 403


#: Every page the bridge serves (its HTML shells).
PAGES = ("/", "/login", f"/c/{'0x' + 'cd' * 20}", "/signin")
#: The Content-Type each kind of linked file must be served with (a stylesheet served as anything
#: else is ignored by the browser, with nosniff a script too).
LINKED_TYPES = {".css": ("text/css",), ".js": ("text/javascript", "application/javascript"), ".png": ("image/png",),
                ".svg": ("image/svg+xml",), ".ico": ("image/x-icon", "image/vnd.microsoft.icon")}


class _Links(HTMLParser):
    """Every resource an HTML page makes the browser load: stylesheets/icons, scripts, images."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ref = {"link": a.get("href"), "script": a.get("src"), "img": a.get("src")}.get(tag)
        if ref and not ref.startswith("data:"):
            self.found.append(ref)


def linked_resources(base: str, path: str, html: str) -> list[str]:
    """The absolute URLs of everything ``html`` (served at ``path``) loads, ES module imports included."""
    parser = _Links()
    parser.feed(html)
    todo = [urljoin(base + path, ref) for ref in parser.found]
    seen: list[str] = []
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.append(url)
        if url.endswith(".js"):
            text = requests.get(url, timeout=10).text
            todo += [urljoin(url, ref) for ref in re.findall(r"""(?:^|[;\s])import\s[^'"]*?['"]([^'"]+)['"]""", text)]
    return seen


def test_every_resource_a_page_links_loads_with_200_and_its_content_type(bridge: Bridge) -> None:
    """Issue 11: the inbox stylesheet was a 404 (the app's own /static route shadowed the pages' one).
    Crawl every page the bridge serves and fetch every file it makes the browser load."""
    checked: set[str] = set()
    for path in PAGES:
        page = requests.get(f"{bridge.url}{path}", timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), path
        links = linked_resources(bridge.url, path, page.text)
        assert any(u.endswith(".css") for u in links) and any(u.endswith(".js") for u in links), (path, links)
        for url in links:
            assert url.startswith(bridge.url + "/"), f"{path} loads {url} from elsewhere"
            r = requests.get(url, timeout=10)
            assert r.status_code == 200, f"{path} links {url}: HTTP {r.status_code}"
            kind = LINKED_TYPES[PurePosixPath(urlsplit(url).path).suffix]
            assert r.headers["Content-Type"].split(";")[0].strip() in kind, (url, r.headers["Content-Type"])
            assert r.content, url
            checked.add(url)
    assert {u.rsplit("/", 1)[1] for u in checked} >= {"inbox.css", "inbox.js", "page.js", "signin.js"}
    # The daemon has no static route of its own (Flask's default served the working directory's static/).
    assert requests.get(f"{bridge.url}/static/inbox.css", timeout=10).status_code == 404


PEER = "0x" + "cd" * 20
#: Every route of the inbox and sign-in pages, with the method it answers (issue 17 V5).
PAGE_ROUTES = [
    ("GET", "/"), ("GET", "/login"), ("GET", f"/c/{PEER}"), ("GET", "/signin"), ("GET", "/assets/page.js"),
    ("GET", "/assets/inbox.css"), ("GET", "/api/inbox"), ("GET", f"/api/inbox/c/{PEER}"), ("GET", "/api/signin"),
    ("POST", f"/api/inbox/c/{PEER}/send"), ("POST", f"/api/inbox/c/{PEER}/read"),
    # issue 12
    ("GET", "/api/inbox?folder=requests"), ("POST", f"/api/inbox/c/{PEER}/consent"),  # (events: the in-process test)
    ("POST", f"/api/inbox/c/{PEER}/react"), ("POST", f"/api/inbox/c/{PEER}/edit"), ("POST", f"/api/inbox/c/{PEER}/delete"),
    ("POST", f"/api/inbox/c/{PEER}/typing"), ("POST", "/api/inbox/uploads?name=a.txt"),
    ("GET", f"/api/inbox/attachments/{'ab' * 16}-0"), ("GET", f"/api/inbox/attachments/{'ab' * 16}-0/thumbnail"),
]


def test_every_page_route_refuses_a_foreign_host_first(bridge: Bridge) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 reaches the daemon with its own Host.
    Every page route (shells, assets and data) refuses it before anything else, session or not."""
    s = _page_session(bridge)
    headers = {"X-Parley-Session": s["session"], "X-Parley-CSRF": s["csrf"], "Origin": bridge.url}
    for method, path in PAGE_ROUTES:
        body = {} if method == "POST" else None
        for host in ("evil.example", f"evil.example:{bridge.port}", f"127.0.0.1:{bridge.port + 1}", f"localhost.evil.example:{bridge.port}"):
            r = requests.request(method, f"{bridge.url}{path}", json=body, headers={**headers, "Host": host}, timeout=10)
            assert (r.status_code, r.text.split(":")[0]) == (403, "refused"), (method, path, host, r.status_code, r.text[:200])
        ok = requests.request(method, f"{bridge.url}{path}", json=body, headers=headers, timeout=10)
        assert not ok.text.startswith("refused: Host"), (method, path, ok.text[:200])  # our own Host passes the gate


def test_inbox_data_needs_the_session_header_not_a_cookie(bridge: Bridge) -> None:
    me = whoami(bridge.home)["address"]
    s = _page_session(bridge)
    assert requests.get(f"{bridge.url}/api/inbox", timeout=10).status_code == 401
    cookie = requests.get(f"{bridge.url}/api/inbox", cookies={"parley_session": s["session"]}, timeout=10)
    assert cookie.status_code == 401 and me not in cookie.text  # a cookie alone gets nothing
    wrong = requests.get(f"{bridge.url}/api/inbox", headers={"X-Parley-Session": s["session"][:-2] + "xx"}, timeout=10)
    assert wrong.status_code == 401
    ok = requests.get(f"{bridge.url}/api/inbox", headers={"X-Parley-Session": s["session"]}, timeout=10)
    assert ok.status_code == 200 and ok.json()["me"]["address"] == me
    bad_host = requests.get(f"{bridge.url}/api/inbox", headers={"X-Parley-Session": s["session"], "Host": "evil.example"}, timeout=10)
    assert bad_host.status_code == 403
    # A sign-in page session cannot read the inbox, and an inbox session cannot sign in.
    signin = _page_session(bridge, "signin")
    assert requests.get(f"{bridge.url}/api/inbox", headers={"X-Parley-Session": signin["session"]}, timeout=10).status_code == 401
    assert requests.get(f"{bridge.url}/api/signin", headers={"X-Parley-Session": s["session"]}, timeout=10).status_code == 401
    st = requests.get(f"{bridge.url}/api/signin", headers={"X-Parley-Session": signin["session"]}, timeout=10)
    assert st.status_code == 200 and st.json()["address"] == me and st.json()["previous_address"] is None


def test_page_links_refuse_foreign_origins_and_garbage(bridge: Bridge) -> None:
    url = parley(bridge.home, "open", check=True).stdout.strip()
    token = url.split("#t=", 1)[1]
    for headers in ({}, {"Origin": "http://127.0.0.1:1"}, {"Origin": "https://hey.xyz"}, {"Origin": "null"}):
        r = requests.post(f"{bridge.url}/api/session", json={"token": token}, headers=headers, timeout=10)
        assert r.status_code == 403, headers
    for body in ({"token": "x" * 40}, {"token": 5}, {}, []):
        r = requests.post(f"{bridge.url}/api/session", json=body, headers={"Origin": bridge.url}, timeout=10)
        assert r.status_code in (400, 401), body
    form = requests.post(f"{bridge.url}/api/session", data={"token": token}, headers={"Origin": bridge.url}, timeout=10)
    assert form.status_code == 415
    assert requests.post(f"{bridge.url}/api/session", json={"token": token}, headers={"Origin": bridge.url}, timeout=10).status_code == 200


def test_inbox_writes_need_the_csrf_header_and_our_origin(bridge: Bridge) -> None:
    s = _page_session(bridge)
    peer = "0x" + "cd" * 20
    base = {"X-Parley-Session": s["session"], "Origin": bridge.url}
    for path, body in ((f"/c/{peer}/send", {"text": "hi"}), (f"/c/{peer}/read", {})):
        url = f"{bridge.url}/api/inbox{path}"
        assert requests.post(url, json=body, headers=base, timeout=10).status_code == 403  # no CSRF token
        wrong = {**base, "X-Parley-CSRF": s["csrf"][:-1] + ("A" if s["csrf"][-1] != "A" else "B")}
        assert requests.post(url, json=body, headers=wrong, timeout=10).status_code == 403  # a WRONG token
        other = _page_session(bridge)
        assert requests.post(url, json=body, headers={**base, "X-Parley-CSRF": other["csrf"]}, timeout=10).status_code == 403
        good = {**base, "X-Parley-CSRF": s["csrf"]}
        assert requests.post(url, json=body, headers={**good, "Origin": "https://hey.xyz"}, timeout=10).status_code == 403
        assert requests.post(url, json=body, headers={k: v for k, v in good.items() if k != "Origin"}, timeout=10).status_code == 403
        assert requests.post(url, data=body, headers=good, timeout=10).status_code == 415
    good = {**base, "X-Parley-CSRF": s["csrf"]}
    r = requests.post(f"{bridge.url}/api/inbox/c/{peer}/read", json={}, headers=good, timeout=10)
    assert r.status_code == 200 and r.json() == {"unread": 0}
    r = requests.post(f"{bridge.url}/api/inbox/c/{peer}/send", json={"text": "hi"}, headers=good, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not-sent"  # not registered: refused, but past the gates


@pytest.fixture
def request_cleanup() -> Iterator[list[Any]]:
    fns: list[Any] = []
    yield fns
    for fn in fns:
        fn()


def test_access_pairing_rate_limit_and_code_burn(tmp_path: Path) -> None:
    from bridge.store import now_ms

    clock = [now_ms()]
    access = Access(Store(tmp_path / "db"), clock=lambda: clock[0])
    code = access.new_pair_code()
    for _ in range(5):
        with pytest.raises(AccessError):
            access.pair("ZZZZ-ZZZZ", None)
    with pytest.raises(AccessError, match="too many"):
        access.pair(code, None)  # rate-limited even with the right code
    clock[0] += 61_000  # a minute later the limiter lets guesses through again
    with pytest.raises(AccessError):
        access.pair(code, None)  # and the code died after five wrong guesses
    assert normalise_code(" ab-cd ef-gh ") == "ABCDEFGH"


def test_access_pairing_takes_a_typed_code_of_up_to_32_characters(tmp_path: Path) -> None:
    """A code as a user types or pastes it (lower case, spaces) pairs while the input is at most 32
    characters; a longer input is refused as malformed before any lookup."""
    access = Access(Store(tmp_path / "db"))
    code = access.new_pair_code()
    typed = f" {code.lower().replace('-', ' ')} ".ljust(32)
    assert len(typed) == 32
    with pytest.raises(AccessError) as refused:
        access.pair(typed + " ", None)
    assert refused.value.reason == "malformed pairing code"
    token, token_id = access.pair(typed, None)
    assert access.check_token(token) == token_id and access.token_valid(token_id)


def test_page_links_are_single_use_scoped_and_expire() -> None:
    from bridge.api.access import LOGIN_TTL_MS, MAX_PAGE_SESSIONS, SESSION_TTL_MS, PageSessions

    now = [1000.0]
    pages = PageSessions(clock=lambda: now[0])
    link = pages.new_link("inbox")
    session, csrf, scope = pages.open(link)
    assert scope == "inbox" and pages.get(session, "inbox") is not None and pages.get(session, "inbox").csrf == csrf
    assert pages.get(session, "signin") is None  # another scope
    with pytest.raises(AccessError):
        pages.open(link)  # single use
    late = pages.new_link("signin")
    now[0] += LOGIN_TTL_MS / 1000 + 1
    with pytest.raises(AccessError):
        pages.open(late)  # expired link
    assert pages.get(session, "inbox") is not None
    now[0] += SESSION_TTL_MS / 1000
    assert pages.get(session, "inbox") is None  # expired session
    for bad in (None, 5, "", "x" * 101, "short"):
        with pytest.raises(AccessError):
            pages.open(bad)
        assert pages.get(bad, "inbox") is None
    with pytest.raises(ValueError):
        pages.new_link("admin")
    # Bounded: a flood of links drops the oldest, never grows without limit.
    first = pages.new_link("inbox")
    for _ in range(MAX_PAGE_SESSIONS + 5):
        pages.new_link("inbox")
    with pytest.raises(AccessError):
        pages.open(first)


# --- issue 8, low items: the pairing limiter is atomic; secrets stay out of logs -----------------


def test_concurrent_wrong_pairing_guesses_cannot_exceed_the_limit(tmp_path: Path) -> None:
    """An attacker guesses pairing codes from many threads through several processes' Access objects
    (the daemon and CLI commands share one database): the guesses the bridge actually checks stay
    within PAIR_ATTEMPTS_PER_MINUTE; every other guess is refused by the limiter unchecked."""
    import threading

    from bridge.api.access import PAIR_ATTEMPTS_PER_MINUTE

    db = tmp_path / "db"
    accesses = [Access(Store(db)) for _ in range(4)]
    code = accesses[0].new_pair_code()
    start = threading.Barrier(16)
    checked: list[str] = []
    limited: list[str] = []
    lock = threading.Lock()

    def guesser(access: Access, n: int) -> None:
        start.wait()
        for i in range(5):
            try:
                access.pair(f"ZZZZ-{n:02d}{i:02d}", None)
            except AccessError as exc:
                with lock:
                    (limited if exc.reason == "pairing rate limit" else checked).append(exc.reason)

    threads = [threading.Thread(target=guesser, args=(accesses[n % 4], n)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(checked) + len(limited) == 80
    assert len(checked) <= PAIR_ATTEMPTS_PER_MINUTE, f"{len(checked)} wrong guesses were checked"
    with pytest.raises(AccessError, match="too many"):
        accesses[1].pair(code, None)  # the limit holds for every process, the right code included


def test_pairing_codes_tokens_and_login_links_stay_out_of_the_daemon_log(tmp_path: Path) -> None:
    """A verbose daemon (werkzeug request lines included) through a pairing and an `open` login:
    its output never contains the pairing code, the API token or the login token."""
    home = tmp_path / "logs"
    parley(home, "init", check=True)
    proc = Proc(["--verbose", "run", "--port", str(free_port())], home=home)
    try:
        url = proc.expect(r"listening on (http://\S+)").group(1)
        code = parley(home, "pair", check=True).stdout.strip().splitlines()[-1]
        ws = websocket.create_connection(f"ws://{url.removeprefix('http://')}/v1/rpc", origin=ORIGIN, timeout=10)
        try:
            token = call(ws, "pair", {"code": code, "name": "log test"})["result"]["token"]
        finally:
            ws.close()
        proc.expect("paired")
        login = parley(home, "open", check=True).stdout.strip()
        login_token = login.split("t=", 1)[1]
        with requests.Session() as s:
            assert s.get(login, timeout=10).status_code == 200
            # what the page's script does with the fragment token: trade it for a page session
            opened = s.post(f"{url}/api/session", json={"token": login_token}, headers={"Origin": url}, timeout=10)
            assert opened.status_code == 200, opened.text
            page_session = opened.json()["session"]
            assert s.get(f"{url}/api/inbox", headers={"X-Parley-Session": page_session}, timeout=10).status_code == 200
        proc.expect(r"GET /api/inbox ")  # the request log is on: the earlier requests were logged before this one
    finally:
        proc.stop()
    out = "".join(proc.output)
    assert "GET /login" in out
    for secret in (code, normalise_code(code), token, login_token, page_session):
        assert secret not in out, f"{secret!r} reached the daemon's log"


# --- issue 8 item 7: endpoint URLs and API keys never leave the bridge ---------------------------


def test_a_failing_lens_endpoint_does_not_leak_its_url_or_api_key_to_the_extension(bridge: Bridge) -> None:
    """The Lens API URL carries ``api_key=…``; the endpoint is down. What the local API answers (and
    the extension hands to the page as the DM button's reason) names the service, never the URL."""
    from bridge.home import Home

    secret = "sk_live_LEAKME12345"
    endpoint = f"http://127.0.0.1:{free_port()}/graphql?api_key={secret}"
    home = Home(bridge.home)
    before = home.config().get("lens_api_url")
    home.update_config(lens_api_url=endpoint)
    try:
        ws, _ = bridge.paired()
        for method, params in (("resolve", {"peer": "lens:leaky"}), ("canMessage", {"peer": "lens:leaky2"})):
            reply = call(ws, method, params)
            text = json.dumps(reply)
            assert reply["error"]["code"] == -32004, text
            assert reply["error"]["data"]["reason"] == "unreachable", text
            assert reply["error"]["data"]["detail"] == "Lens API unreachable", text
            for leak in (secret, "api_key", "127.0.0.1", "graphql"):
                assert leak not in text, f"{leak!r} reached the extension: {text}"
        bridge.proc.expect(r"resolving lens:leaky failed \(unreachable\): .*Lens API: cannot reach http://127.0.0.1:\d+/graphql\?…")  # details stay in the bridge log, redacted
    finally:
        home.update_config(lens_api_url=before)


# --- issue 8 item 9: the bridge proves itself before the extension sends its token ---------------


def _b64u(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64u_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_hello_proves_the_bridge_key_bound_to_challenge_origin_and_host(bridge: Bridge) -> None:
    import os
    import stat

    from bridge.api.access import bridge_proof_message
    from bridge.crypto import primitives

    key_file = bridge.home / "local_api_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    public = primitives.ed25519_public(key_file.read_bytes())
    challenge = os.urandom(32)
    ws = bridge.ws()
    hello = call(ws, "hello", {"challenge": _b64u(challenge)})["result"]  # before any token
    assert hello["v"] == 1 and _b64u_decode(hello["key"]) == public
    sig = _b64u_decode(hello["signature"])
    primitives.ed25519_verify(public, sig, bridge_proof_message(challenge, ORIGIN, f"127.0.0.1:{bridge.port}"))
    # The proof is bound: another challenge, another origin or another port does not verify.
    for other in (
        bridge_proof_message(os.urandom(32), ORIGIN, f"127.0.0.1:{bridge.port}"),
        bridge_proof_message(challenge, "chrome-extension://" + "a" * 32, f"127.0.0.1:{bridge.port}"),
        bridge_proof_message(challenge, ORIGIN, f"127.0.0.1:{bridge.port + 1}"),
    ):
        with pytest.raises(primitives.InvalidSignature):
            primitives.ed25519_verify(public, sig, other)
    # Malformed challenges are refused, and hello leaves the connection unauthenticated.
    for bad in ("", "AAAA", _b64u(os.urandom(31)), _b64u(os.urandom(32)) + "=", 5):
        assert call(ws, "hello", {"challenge": bad})["error"]["code"] == -32602
    assert call(ws, "ping")["error"]["code"] == -32001
    # Pairing teaches the extension the same key.
    ws2 = bridge.ws()
    assert call(ws2, "hello", {"challenge": _b64u(challenge)})["result"]["key"] == hello["key"]
    paired = call(ws2, "pair", {"code": bridge.code(), "name": "pytest"})["result"]
    assert paired["bridge_key"] == hello["key"]


@pytest.mark.parametrize("vec", cases("parley_local_api_proof.json"))
def test_bridge_proof_vectors(vec: dict[str, Any]) -> None:
    """tests/vectors/parley_local_api_proof.json: the bridge's side (tests/js/bridge-proof.test.mjs checks the extension's)."""
    from bridge.api.access import BridgeKey, bridge_proof_message

    i, e = vec["input"], vec["expected"]
    challenge = bytes.fromhex(i["challenge"])
    key = BridgeKey(bytes.fromhex(i["private"]))
    assert key.public.hex() == e["public"]
    assert bridge_proof_message(challenge, i["origin"], i["host"]).hex() == e["message"]
    assert key.prove(challenge, i["origin"], i["host"]).hex() == e["signature"]
    from bridge.api.access import normalise_code as norm, pair_proof

    code_hash = hashlib.sha256(norm(i["code"]).encode()).digest()
    assert pair_proof(code_hash, "client", challenge + key.public).hex() == e["pair_client"]
    assert pair_proof(code_hash, "bridge", challenge + key.public).hex() == e["pair_bridge"]


def test_pairing_with_a_proof_never_sends_the_code(bridge: Bridge) -> None:
    """``pair {proof}``: HMAC proofs both ways over hello's transcript; a wrong proof is a wrong guess;
    no proof without hello."""
    import hashlib
    import os

    from bridge.api.access import pair_proof

    code = bridge.code()
    code_hash = hashlib.sha256(normalise_code(code).encode()).digest()
    ws = bridge.ws()
    assert call(ws, "pair", {"proof": _b64u(bytes(32))})["error"]["code"] == -32602  # hello first
    ws = bridge.ws()
    challenge = os.urandom(32)
    key = _b64u_decode(call(ws, "hello", {"challenge": _b64u(challenge)})["result"]["key"])
    assert call(ws, "pair", {"code": code, "proof": _b64u(bytes(32))})["error"]["code"] == -32602  # one of them
    wrong = pair_proof(hashlib.sha256(b"ZZZZZZZZ").digest(), "client", challenge + key)
    assert call(ws, "pair", {"proof": _b64u(wrong)})["error"]["code"] == -32002
    ws = bridge.ws()
    challenge = os.urandom(32)
    call(ws, "hello", {"challenge": _b64u(challenge)})
    replayed = pair_proof(code_hash, "client", os.urandom(32) + key)  # made for another challenge
    assert call(ws, "pair", {"proof": _b64u(replayed)})["error"]["code"] == -32002
    ws = bridge.ws()
    challenge = os.urandom(32)
    call(ws, "hello", {"challenge": _b64u(challenge)})
    good = pair_proof(code_hash, "client", challenge + key)
    result = call(ws, "pair", {"proof": _b64u(good), "name": "proof test"})["result"]
    assert result["proof"] == _b64u(pair_proof(code_hash, "bridge", challenge + key))
    assert result["bridge_key"] == _b64u(key)
    ws2 = bridge.ws()
    assert call(ws2, "auth", {"token": result["token"]})["result"] == {"ok": True}


# --- In-process: LocalApi and RpcConnection over real engines and an in-process relay -------------


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


class Client:
    """An RpcConnection to ``api`` with every frame it was sent captured (paired unless ``paired`` is false)."""

    def __init__(self, api: LocalApi, *, paired: bool = True) -> None:
        self.sent: list[Any] = []
        self.rpc = RpcConnection(api, lambda text: self.sent.append(json.loads(text)), lambda code, reason: None, "pytest")
        self._ids = iter(range(1, 10**9))
        if paired:
            self.token_id = self.call("pair", {"code": api.access.new_pair_code()})["result"]["token_id"]

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        rid = next(self._ids)
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        n = len(self.sent)
        self.rpc.handle(json.dumps(req))
        (answer,) = [m for m in self.sent[n:] if isinstance(m, dict) and m.get("id") == rid]
        return answer

    def notes(self, method: str) -> list[dict[str, Any]]:
        """The params of every ``method`` notification received so far."""
        return [m["params"] for m in self.sent if isinstance(m, dict) and "id" not in m and m.get("method") == method]


def local_api(eng: Engine, tmp_path: Path) -> LocalApi:
    return LocalApi(eng, Access(eng.store), Contacts(tmp_path / "contacts.json"), lambda: True, Hub())


def test_incoming_messages_and_mark_read_notify_paired_connections_with_the_conversation(tmp_path: Path, relay_url: str) -> None:
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    api = local_api(bob, tmp_path)
    widget, stranger, revoked = Client(api), Client(api, paired=False), Client(api)
    assert api.access.revoke(revoked.token_id)
    alice.send(bob.address, "one")
    alice.send(bob.address, "two")
    assert bob.sync() == 2
    assert [n["message"]["text"] for n in widget.notes("message.new")] == ["one", "two"]
    # Alice is a stranger to Bob: a message request (issue 12), which the extension does not notify
    assert [n["consent"] for n in widget.notes("message.new")] == ["requested", "requested"]
    # and the badge (total_unread) does not count it either; the conversation's own count does. The
    # two came in one batch (issue 13): the conversation is announced once, after both.
    assert widget.notes("conversation.updated") == [
        {"peer": alice.address, "unread": 2, "total_unread": 0, "consent": "requested"},
    ]
    # one at a time (live, on the daemon's subscription), each is announced with its count
    alice.send(bob.address, "three")
    (env,) = RelayClient(bob.relay_url).fetch(bob.topic, bob.cursor(), 10, token=bob.token())
    bob.process(env)
    assert widget.notes("conversation.updated")[1:] == [{"peer": alice.address, "unread": 3, "total_unread": 0, "consent": "requested"}]
    # Nothing reaches a connection that never authenticated or whose token was revoked.
    assert stranger.sent == [] and revoked.notes("message.new") == revoked.notes("conversation.updated") == []
    # Reading the conversation tells every widget its badge is clear; reading it again changes nothing.
    assert widget.call("messages.markRead", {"peer": alice.address})["result"] == {"unread": 0}
    assert widget.notes("conversation.updated")[2:] == [{"peer": alice.address, "unread": 0, "total_unread": 0, "consent": "requested"}]
    assert widget.call("messages.markRead", {"peer": alice.address.lower()})["result"] == {"unread": 0}
    assert len(widget.notes("conversation.updated")) == 3


def test_messages_list_pages_back_from_the_newest_with_has_more(tmp_path: Path, relay_url: str) -> None:
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    for text in ("m1", "m2", "m3"):
        assert alice.send(bob.address, text).delivered
    c = Client(local_api(alice, tmp_path))

    def page(**params: Any) -> tuple[list[str], bool]:
        r = c.call("messages.list", {"peer": bob.address, **params})["result"]
        return [m["text"] for m in r["messages"]], r["has_more"]

    assert page() == (["m1", "m2", "m3"], False)
    assert page(limit=3) == (["m1", "m2", "m3"], False)  # exactly all of them: nothing more
    assert page(limit=2) == (["m2", "m3"], True)
    m2 = c.call("messages.list", {"peer": bob.address, "limit": 2})["result"]["messages"][0]["id"]
    assert page(limit=1, before=m2) == (["m1"], False)
    assert page(limit=2, before=m2) == (["m1"], False)


def test_a_message_flagged_after_receipt_is_sent_again_with_its_flag(tmp_path: Path, relay_url: str) -> None:
    """A revoked installation's message accepted on its statement alone is flagged by the next pass
    (bridge/engine/peers.py): the widget gets ``message.updated`` with the warning on that message."""
    wallet = generate_secrets().wallet_key
    laptop = make_engine(tmp_path / "laptop.db", relay_url, wallet)
    stolen = make_engine(tmp_path / "stolen.db", relay_url, wallet)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    assert bob.can_message(laptop.address)
    bob.peers.refresh()
    signed = identity.sign_statement(identity.revoke_statement(stolen.address, stolen.installation_id), wallet)
    stolen.relay.publish_identity(stolen.address, signed.to_record())
    assert stolen.send(bob.address, "send the money to 0xdead").delivered
    widget = Client(local_api(bob, tmp_path))
    assert bob.sync() == 1
    (new,) = widget.notes("message.new")
    assert new["message"]["flag"] is None and widget.notes("message.updated") == []
    bob.peers.refresh()
    (updated,) = widget.notes("message.updated")
    reason = bob.peers.flag(new["message"]["id"])
    assert reason is not None and "revoked" in reason
    assert updated == {"message": {**new["message"], "flag": reason}}


def test_page_links_and_writes_refuse_foreign_origins_in_process(tmp_path: Path, relay_url: str) -> None:
    """The page routes of register_local_api on a Flask test client (the same gates as the daemon's):
    a link is opened, and a write accepted, only from our own Origin with the session's CSRF token."""
    from flask import Flask
    from flask_sock import Sock

    from bridge.api.access import PageSessions
    from bridge.api.web import register_local_api

    port = 8737
    ours = f"http://127.0.0.1:{port}"
    api = local_api(make_engine(tmp_path / "bridge.db", relay_url, register=False), tmp_path)
    api.pages = PageSessions()
    app = Flask(__name__)
    register_local_api(app, Sock(app), api, port=port)
    client = app.test_client()

    def post(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        r = client.post(path, json=body, headers=headers, base_url=ours)
        return r.status_code, r.get_json(silent=True)

    token = api.pages.new_link("inbox")
    for headers in ({}, {"Origin": "http://127.0.0.1:1"}, {"Origin": "https://hey.xyz"}, {"Origin": "null"}):
        assert post("/api/session", {"token": token}, headers)[0] == 403, headers
    status, s = post("/api/session", {"token": token}, {"Origin": ours})  # the refusals did not use the link up
    assert status == 200 and s["scope"] == "inbox"
    read = f"/api/inbox/c/{'0x' + 'cd' * 20}/read"
    good = {"X-Parley-Session": s["session"], "X-Parley-CSRF": s["csrf"], "Origin": ours}
    for headers, refusal in (
        ({**good, "Origin": "https://hey.xyz"}, "origin"),
        ({k: v for k, v in good.items() if k != "Origin"}, "origin"),
        ({k: v for k, v in good.items() if k != "X-Parley-CSRF"}, "csrf"),
        ({**good, "X-Parley-CSRF": s["csrf"][::-1]}, "csrf"),
    ):
        status, body = post(read, {}, headers)
        assert (status, body["error"]["code"]) == (403, refusal), headers
    assert post(read, {}, good) == (200, {"unread": 0})


def test_inbox_events_stream_only_to_a_live_inbox_session_in_process(tmp_path: Path, relay_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbox page's live updates (issue 11) use the page's own authentication: no session header
    (a cookie, another page's session, a guess) gets no stream; an open stream says only which
    conversation changed, never the text; when the session expires the stream hears nothing more and
    ends; at most MAX_PAGE_STREAMS are open at once."""
    from flask import Flask
    from flask_sock import Sock

    from bridge.api import web
    from bridge.api.access import SESSION_TTL_MS, PageSessions
    from bridge.api.web import register_local_api

    monkeypatch.setattr(web, "KEEPALIVE_SECONDS", 0.05)
    now = [1000.0]
    port = 8737
    ours = f"http://127.0.0.1:{port}"
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    api = local_api(bob, tmp_path)
    api.pages = PageSessions(clock=lambda: now[0])
    app = Flask(__name__)
    register_local_api(app, Sock(app), api, port=port)
    client = app.test_client()

    def session(scope: str) -> str:
        r = client.post("/api/session", json={"token": api.pages.new_link(scope)}, headers={"Origin": ours}, base_url=ours)
        return str(r.get_json()["session"])

    def events(headers: dict[str, str]) -> Any:
        return client.get("/api/inbox/events", headers=headers, base_url=ours, buffered=False)

    inbox, signin = session("inbox"), session("signin")
    for headers in ({}, {"Cookie": f"X-Parley-Session={inbox}; parley_session={inbox}"}, {"X-Parley-Session": signin},
                    {"X-Parley-Session": inbox[:-2] + ("AA" if inbox[-2:] != "AA" else "BB")}, {"X-Parley-Session": ""}):
        r = events(headers)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "no-session", headers
        assert len(api.hub) == 0
    assert events({"X-Parley-Session": inbox, "Host": "evil.example"}).status_code == 403

    r = events({"X-Parley-Session": inbox})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"] and r.headers["Cache-Control"] == "no-store"
    chunks = (c.decode() if isinstance(c, bytes) else c for c in r.response)
    assert next(chunks).startswith(": parley inbox events")
    assert len(api.hub) == 1
    assert alice.send(bob.address, "the text stays out of the stream").delivered
    assert bob.sync() == 1
    seen: list[dict[str, Any]] = []
    for chunk in chunks:
        assert "the text stays out" not in chunk
        if chunk.startswith("event: "):
            kind, data = chunk.split("\n")[:2]
            seen.append(json.loads(data.removeprefix("data: ")))
            assert kind == f"event: {seen[-1]['type']}"
        if len(seen) == 2:
            break
    assert seen == [{"type": "message.new", "peer": alice.address}, {"type": "conversation.updated", "peer": alice.address}]

    # At most MAX_PAGE_STREAMS at once (each holds a server thread); closing one frees its place.
    more = [events({"X-Parley-Session": inbox}) for _ in range(web.MAX_PAGE_STREAMS - 1)]
    assert all(m.status_code == 200 for m in more) and len(api.hub) == web.MAX_PAGE_STREAMS
    full = events({"X-Parley-Session": inbox})
    assert full.status_code == 429 and len(api.hub) == web.MAX_PAGE_STREAMS
    for m in more:
        m.close()
    assert len(api.hub) == 1

    # The session expires: the stream hears nothing more and ends.
    now[0] += SESSION_TTL_MS / 1000 + 1
    assert alice.send(bob.address, "after the session").delivered
    assert bob.sync() == 1
    assert not [c for c in chunks if c.startswith("event: ")]
    r.close()
    assert len(api.hub) == 0
    assert events({"X-Parley-Session": inbox}).status_code == 401


def test_consent_methods_and_notifications(tmp_path: Path, relay_url: str) -> None:
    """Issue 12: conversations.list {folder}, requests.list, consent.get/set, consent.changed."""
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    api = local_api(bob, tmp_path)
    widget = Client(api)
    assert alice.send(bob.address, "hi").delivered and bob.sync() == 1
    assert widget.call("conversations.list")["result"] == {"conversations": []}  # the inbox: allowed only
    (req,) = widget.call("requests.list")["result"]["requests"]
    assert (req["peer"], req["consent"], req["unread"], req["held"], req["last"]["text"]) == (alice.address, "requested", 1, 0, "hi")
    assert req["last_message_at"] == req["last"]["sent_at"]
    assert widget.call("conversations.list", {"folder": "all"})["result"]["conversations"] == [req]
    assert widget.call("consent.get", {"peer": alice.address})["result"] == {"peer": alice.address, "consent": "requested", "held": 0, "dropped": 0}
    assert widget.call("consent.set", {"peer": alice.address, "action": "accept"})["result"]["consent"] == "allowed"
    assert widget.notes("consent.changed") == [{"peer": alice.address, "consent": "allowed"}]
    assert widget.notes("conversation.updated")[-1]["consent"] == "allowed"
    assert [c["peer"] for c in widget.call("conversations.list", {"folder": "inbox"})["result"]["conversations"]] == [alice.address]
    assert widget.call("requests.list")["result"] == {"requests": []}
    assert widget.call("consent.set", {"peer": alice.address, "action": "ignore"})["error"]["code"] == -32602
    assert widget.call("consent.set", {"peer": bob.address, "action": "block"})["error"]["code"] == -32010
    assert widget.call("consent.get", {"peer": "0x123"})["error"]["code"] == -32602
    assert widget.call("conversations.list", {"folder": "spam"})["error"]["code"] == -32602
