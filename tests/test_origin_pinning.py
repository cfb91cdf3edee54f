"""Issue 11: who may use the local API once Firefox is supported (bridge/api/access.py "Origin pinning").

Firefox gives each install a random ``moz-extension://<uuid>`` origin, so it cannot be listed in advance:
the bridge pins the origin that pairs with the user's code, binds the token to it, and admits an
unpinned Firefox origin only while a pairing code is live (and then it can only pair). Chrome ids come
from the ``extension_ids`` setting or ``PARLEY_EXTENSION_IDS``. Real daemons over loopback, plus
in-process checks of the token store (legacy tokens, "last used").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from bridge.api.access import EXTENSION_ID, Access, AccessError, chrome_ids, normalise_code, pair_proof
from bridge.api.rpc import Hub, LocalApi, RpcConnection
from bridge.home import SETTINGS
from bridge.resolve import Contacts
from bridge.store import Store
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.procs import Proc, free_port, parley, start_bridge
from tests.test_api import _b64u, _b64u_decode, call, close_code

ROOT = Path(__file__).resolve().parents[1]
STORE_ID = "b" * 32  # a store-signed build's id, as listed by the user


def moz() -> str:
    return f"moz-extension://{uuid.uuid4()}"


class Daemon:
    def __init__(self, home: Path, proc: Proc, url: str) -> None:
        self.home, self.proc, self.url = home, proc, url
        self.port = int(url.rsplit(":", 1)[1])
        self.sockets: list[websocket.WebSocket] = []

    def handshake(self, origin: str | None) -> int:
        """A raw WebSocket opening handshake; the HTTP status (101 accepted, 403 refused by the gate)."""
        headers = {
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13", "Host": f"127.0.0.1:{self.port}",
        }
        if origin is not None:
            headers["Origin"] = origin
        with requests.get(f"{self.url}/v1/rpc", headers=headers, timeout=10, stream=True) as r:
            return r.status_code

    def ws(self, origin: str) -> websocket.WebSocket:
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/v1/rpc", origin=origin, timeout=10)
        self.sockets.append(ws)
        return ws

    def code(self) -> str:
        return parley(self.home, "pair", check=True).stdout.strip().splitlines()[-1]

    def pair(self, origin: str, name: str, code: str | None = None) -> tuple[websocket.WebSocket, dict[str, Any]]:
        """What the extension does (extension/background/bridge.js): hello, then pair {proof} — the code never crosses."""
        code = code or self.code()
        ws = self.ws(origin)
        challenge = os.urandom(32)
        key = _b64u_decode(call(ws, "hello", {"challenge": _b64u(challenge)})["result"]["key"])
        code_hash = hashlib.sha256(normalise_code(code).encode()).digest()
        proof = pair_proof(code_hash, "client", challenge + key)
        return ws, call(ws, "pair", {"proof": _b64u(proof), "name": name})["result"]

    def tokens(self) -> list[dict[str, Any]]:
        return json.loads(parley(self.home, "pair", "--list", "--json", check=True).stdout)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A bridge that allows the Chrome id STORE_ID only (PARLEY_EXTENSION_IDS replaces ours)."""
    home = tmp_path_factory.mktemp("pinning") / "alice"
    parley(home, "init", check=True)
    proc, url = start_bridge(home, port=free_port(), PARLEY_EXTENSION_IDS=STORE_ID)
    d = Daemon(home, proc, url)
    try:
        yield d
    finally:
        for ws in d.sockets:
            ws.shutdown()
        proc.stop()


def test_firefox_origins_are_pinned_by_pairing_and_tokens_bound_to_their_origin(daemon: Daemon) -> None:
    firefox_a, firefox_b = moz(), moz()
    # Refused at the handshake: a web page, a malformed moz origin, Parley's own Chrome id (replaced by
    # PARLEY_EXTENSION_IDS), an id not in the list, and a Firefox origin while no pairing code is live.
    for origin in ("https://hey.xyz", "moz-extension://not-a-uuid", f"{firefox_a}/", firefox_a.upper(),
                   f"chrome-extension://{EXTENSION_ID}", "chrome-extension://" + "a" * 32, firefox_a, None):
        assert daemon.handshake(origin) == 403, origin
        daemon.proc.expect(re.escape(f"Origin {origin!r} is not the Parley extension"), timeout=5)
    assert daemon.handshake(f"chrome-extension://{STORE_ID}") == 101  # the listed store id

    # The user runs `parley pair` and types the code into Firefox A's popup: A pairs and is pinned.
    ws_a, paired_a = daemon.pair(firefox_a, "Firefox A")
    token_a = paired_a["token"]
    assert call(ws_a, "ping")["result"] == "pong"
    assert daemon.proc.expect(r"extension paired: .*as token (\w+)").group(1) == paired_a["token_id"]
    (line,) = [x for x in daemon.proc.output if "extension paired" in x]
    assert firefox_a in line and "WARNING" not in line  # a normal pairing is not a warning
    # The code is used up: A (pinned) still gets in, B (unpinned) does not.
    assert daemon.handshake(firefox_a) == 101
    assert daemon.handshake(firefox_b) == 403
    assert call(daemon.ws(firefox_a), "auth", {"token": token_a})["result"] == {"ok": True}

    # While a code is live B may connect, but A's token does not work from B: it is pinned to A.
    code = daemon.code()
    ws = daemon.ws(firefox_b)
    assert call(ws, "auth", {"token": token_a})["error"]["code"] == -32001
    assert close_code(ws) == 4401
    daemon.proc.expect(re.escape("is pinned to another origin"), timeout=5)
    # ... nor from the listed Chrome id.
    ws = daemon.ws(f"chrome-extension://{STORE_ID}")
    assert call(ws, "auth", {"token": token_a})["error"]["code"] == -32001

    # A second Firefox install pairs with a code of its own: its own token, bound to its own origin.
    ws_b, paired_b = daemon.pair(firefox_b, "Firefox B", code)
    assert paired_b["token_id"] != paired_a["token_id"]
    # A pinned origin with the wrong token (B's) is refused.
    ws = daemon.ws(firefox_a)
    assert call(ws, "auth", {"token": paired_b["token"]})["error"]["code"] == -32001
    assert close_code(ws) == 4401
    listed = {t["id"]: t for t in daemon.tokens()}
    assert listed[paired_a["token_id"]]["origin"] == firefox_a and listed[paired_b["token_id"]]["origin"] == firefox_b
    # Both count as used (B has never sent `auth`: it paired on this socket and stays on it).
    assert all(t["last_used"] is not None for t in listed.values())
    text = parley(daemon.home, "pair", "--list", check=True).stdout
    assert "last used never" not in text and firefox_b in text

    # Revoking A unpins it: with no code live, A is refused at the handshake again.
    parley(daemon.home, "pair", "--revoke", paired_a["token_id"], check=True)
    assert call(ws_a, "ping")["error"]["code"] == -32001
    assert daemon.handshake(firefox_a) == 403
    assert daemon.handshake(firefox_b) == 101
    assert call(ws_b, "ping")["result"] == "pong"


# --- in process ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        from bridge.store import now_ms

        self.now = now_ms()  # pairing codes expire by the wall clock

    def __call__(self) -> int:
        return self.now


def test_a_token_from_before_pinning_works_for_chrome_only_and_the_old_table_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "parley.db"
    with sqlite3.connect(db) as c:  # the api_tokens table as it was before issue 11
        c.execute("CREATE TABLE api_tokens (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, name TEXT NOT NULL,"
                  " created_at INTEGER NOT NULL, last_used INTEGER, revoked INTEGER NOT NULL DEFAULT 0)")
        c.execute("INSERT INTO api_tokens(id, token_hash, name, created_at) VALUES ('old', ?, 'Chrome', 1)",
                  (hashlib.sha256(b"t" * 43).digest(),))
    access = Access(Store(db))
    assert access.tokens()[0].origin is None
    assert access.check_token("t" * 43, f"chrome-extension://{EXTENSION_ID}") == "old"
    with pytest.raises(AccessError, match="invalid token"):
        access.check_token("t" * 43, moz())
    # A new token is bound to the origin that paired, and counts as used at once.
    origin = moz()
    token, token_id = access.pair(access.new_pair_code(), "Firefox", origin)
    assert access.check_token(token, origin) == token_id
    for other in (moz(), f"chrome-extension://{EXTENSION_ID}", None):
        with pytest.raises(AccessError):
            access.check_token(token, other)
    assert access.pinned(origin) and not access.pinned(moz())


def test_last_used_follows_a_long_lived_connection(tmp_path: Path, relay_url: str) -> None:
    """`pair --list` said "last used never" for the token of a socket opened by pairing and kept open."""
    eng = make_engine(tmp_path / "alice.db", relay_url, register=False)
    clock = Clock()
    access = Access(eng.store, clock=clock)
    api = LocalApi(eng, access, Contacts(tmp_path / "contacts.json"), lambda: True, Hub())
    sent: list[Any] = []
    conn = RpcConnection(api, lambda text: sent.append(json.loads(text)), lambda code, reason: None, "pytest", origin=moz())
    conn.handle(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pair", "params": {"code": access.new_pair_code()}}))
    (token,) = access.tokens()
    assert token.last_used == clock.now
    paired_at = clock.now
    clock.now += 30_000
    conn.handle(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
    assert access.tokens()[0].last_used == paired_at  # at most one write a minute
    clock.now += 31_000
    conn.handle(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
    assert access.tokens()[0].last_used == clock.now
    assert [m.get("result") for m in sent[1:]] == ["pong", "pong"]


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.relay_fixtures import serve_relay

    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


def test_allowed_chrome_ids_come_from_the_setting_or_the_environment() -> None:
    default = next(s.default for s in SETTINGS if s.name == "extension_ids")
    assert default == [EXTENSION_ID] == [(ROOT / "extension" / "EXTENSION_ID").read_text().strip()]
    assert chrome_ids({"extension_ids": default}, env={}) == (EXTENSION_ID,)
    assert chrome_ids({}, env={}) == (EXTENSION_ID,)
    assert chrome_ids({"extension_ids": [STORE_ID, "not-an-id", 5, "A" * 32]}, env={}) == (STORE_ID,)
    assert chrome_ids({"extension_ids": [STORE_ID]}, env={"PARLEY_EXTENSION_IDS": f" {EXTENSION_ID} , {STORE_ID}"}) == (EXTENSION_ID, STORE_ID)
    assert chrome_ids({"extension_ids": "x"}, env={}) == ()
    assert chrome_ids({}, env={"PARLEY_EXTENSION_IDS": ""}) == ()
