"""Hostile input against the local API (issue 5, part 3; docs/PROTOCOL.md §8.1–8.2), and junk sent to
real ``parley relay`` / ``parley run`` processes.

Hypothesis drives :class:`bridge.api.rpc.RpcConnection` directly (a fake ``send``/``close``) over a
real Engine + Store in a temporary directory. The engine's relay URL is a closed port on 127.0.0.1,
so methods that need the relay answer ``-32005`` (or queue, for ``messages.send``). Every frame gets
JSON-RPC 2.0 error objects with the documented codes, the connection survives (except the
documented close 4401 before authentication), and a rejected call changes nothing in the store.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bridge import identity
from bridge.api.access import EXTENSION_ID, Access, BridgeKey, bridge_proof_message
from bridge.crypto import primitives
from bridge.api.rpc import CLOSE_UNAUTHENTICATED, MAX_BATCH, MAX_FRAME, Hub, LocalApi, RpcConnection
from bridge.daemon import DaemonClient
from bridge.engine import Engine
from bridge.home import Home
from bridge.keys import generate_secrets
from bridge.resolve import Contacts
from bridge.store import Store
from tests.procs import Proc, free_port, parley, start_bridge, start_relay

__all__: list[str] = []

ORIGIN = f"chrome-extension://{EXTENSION_ID}"
FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
STANDARD = {-32700, -32600, -32601, -32602, -32603}
APP = {-32001, -32002, -32003, -32004, -32005, -32010}
METHODS = sorted(LocalApi.METHODS)


@dataclass
class Conn:
    """An RpcConnection with its written frames and close calls captured."""

    rpc: RpcConnection
    sent: list[Any] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)

    def frame(self, text: Any) -> list[Any]:
        n = len(self.sent)
        self.rpc.handle(text)
        return self.sent[n:]


class World:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "parley.db"
        self.store = Store(self.path)
        secrets = generate_secrets()
        st_ = identity.authorize_statement(secrets.address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
        record = identity.sign_statement(st_, secrets.wallet_key).to_record()
        ident = {"address": secrets.address, "installation_id": secrets.installation_id, "record": record.hex()}
        self.engine = Engine(self.store, secrets, ident, f"http://127.0.0.1:{free_port()}")  # nothing listens there
        self.access = Access(self.store)
        self.bridge_key = BridgeKey(bytes(range(32)))
        self.api = LocalApi(self.engine, self.access, Contacts(tmp / "contacts.json"), lambda: False, Hub(), bridge_key=self.bridge_key)
        self.authed = self.connect()
        code = self.access.new_pair_code()
        assert "token" in self.authed.frame(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "pair", "params": {"code": code}}))[0]["result"]

    def connect(self) -> Conn:
        c = Conn(rpc=None)  # type: ignore[arg-type]
        c.rpc = RpcConnection(
            self.api, lambda text: c.sent.append(json.loads(text)), lambda code, reason: c.closes.append((code, reason)), "fuzz",
            origin=ORIGIN, host="127.0.0.1:8737",
        )
        return c

    def snapshot(self) -> dict[str, tuple[int, str]]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            out = {}
            for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
                rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"'))
                out[t] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
            return out
        finally:
            con.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("fuzzapi"))
    yield w
    w.engine.relay.close()
    w.store.close()


def is_error(obj: Any, codes: set[int] = STANDARD | APP) -> bool:
    return (
        isinstance(obj, dict)
        and set(obj) == {"jsonrpc", "error", "id"}
        and obj["jsonrpc"] == "2.0"
        and isinstance(obj["error"], dict)
        and obj["error"].get("code") in codes
        and isinstance(obj["error"].get("message"), str)
        and bool(obj["error"]["message"])
    )


# ---- strategies ------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=10)
wrong = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3), st.text(min_size=201, max_size=5000))
ids = st.one_of(st.integers(), st.text(max_size=10))
#: Batches of every length from 1 to a few past MAX_BATCH, equally likely: ``values`` alone makes
#: lists of at most 4, so the over-the-limit branch below would never run (issue 17, V7).
batches = st.integers(1, MAX_BATCH + 5).flatmap(lambda n: st.lists(values, min_size=n, max_size=n))
#: A batch of valid read-only calls, one too many: refused whole, none of them answered.
STATUS_CALLS = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(MAX_BATCH + 1)]


def params_for(method: str) -> st.SearchStrategy[Any]:
    """Params that must be refused: wrong container, wrong or missing field types, unknown fields, huge strings."""
    names = {"resolve": ["peer"], "canMessage": ["address"], "messages.list": ["peer", "before", "limit"], "messages.send": ["peer", "text"], "messages.markRead": ["peer"]}.get(method, [])
    bad_container = st.one_of(st.lists(scalars, min_size=1, max_size=3), st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in names), scalars, min_size=1, max_size=3))
    if not names:
        return bad_container
    return st.one_of(bad_container, st.fixed_dictionaries({n: wrong for n in names}))


# ---- tests ----------------------------------------------------------------------------------------


@FUZZ
@given(value=st.one_of(values, batches))
@example(value=[1] * MAX_BATCH)  # the largest batch allowed: one error per item
@example(value=[1] * (MAX_BATCH + 1))  # the smallest refused
@example(value=STATUS_CALLS)
def test_random_json_values_as_requests(world: World, value: Any) -> None:
    conn = world.authed
    before = world.snapshot()
    out = conn.frame(json.dumps(value))
    valid_call = isinstance(value, dict) and value.get("jsonrpc") == "2.0" and isinstance(value.get("method"), str)
    if isinstance(value, list) and value:
        assert len(out) <= 1
        replies = out[0] if out else []
        event("batch over MAX_BATCH" if len(value) > MAX_BATCH else "batch within MAX_BATCH")
        if len(value) > MAX_BATCH:
            assert is_error(replies, {-32600}) and replies["id"] is None, replies  # one error, no call run
        else:
            assert isinstance(replies, list) and all(is_error(r) for r in replies), replies
    elif not valid_call:
        assert len(out) == 1 and is_error(out[0], {-32600}), out
    assert not conn.rpc.closed and not conn.closes
    assert world.snapshot() == before


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)).filter(lambda t: not _parses(t)))
def test_frames_that_are_not_json(world: World, text: Any) -> None:
    conn = world.authed
    before = world.snapshot()
    out = conn.frame(text)
    assert len(out) == 1 and is_error(out[0], {-32700, -32600}) and out[0]["id"] is None
    assert not conn.rpc.closed and world.snapshot() == before


def _parses(t: Any) -> bool:
    try:
        json.loads(t)
    except (ValueError, TypeError):
        return False
    return isinstance(t, str)


@FUZZ
@given(data=st.data())
def test_every_method_with_wrong_params(world: World, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(METHODS))
    params = data.draw(params_for(method))
    rid = data.draw(ids)
    conn = world.authed
    before = world.snapshot()
    out = conn.frame(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    assert len(out) == 1 and out[0]["id"] == rid
    assert is_error(out[0], {-32602, -32004, -32005, -32010, -32003}), (method, params, out)
    assert not conn.rpc.closed and world.snapshot() == before


@FUZZ
@given(params=st.one_of(values, st.fixed_dictionaries({"challenge": st.one_of(st.text(max_size=60), st.binary(min_size=30, max_size=34).map(
    lambda b: __import__("base64").urlsafe_b64encode(b).rstrip(b"=").decode()))}, optional={"v": scalars})))
def test_hello_before_auth_proves_or_refuses_and_never_authenticates(world: World, params: Any) -> None:
    """A page-side client (any Origin passed the gate) sends hostile ``hello`` params before auth: the
    answer is a proof that verifies for exactly this challenge, or -32602; the connection stays open and
    unauthenticated; the database is unchanged."""
    import base64

    conn = world.connect()
    before = world.snapshot()
    out = conn.frame(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "hello", "params": params}))
    assert len(out) == 1 and out[0]["id"] == 3
    if "result" in out[0]:
        challenge = base64.urlsafe_b64decode(params["challenge"] + "=" * (-len(params["challenge"]) % 4))
        sig = base64.urlsafe_b64decode(out[0]["result"]["signature"] + "==")
        primitives.ed25519_verify(world.bridge_key.public, sig, bridge_proof_message(challenge, ORIGIN, "127.0.0.1:8737"))
    else:
        assert is_error(out[0], {-32600, -32602}), out  # params that are not an object: Invalid Request
    assert not conn.rpc.closed and conn.rpc.token_id is None
    ping = conn.frame(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
    assert is_error(ping[0], {-32001}) and conn.closes == [(CLOSE_UNAUTHENTICATED, "not authenticated")]
    assert world.snapshot() == before


@FUZZ
@given(method=st.text(max_size=60).filter(lambda m: m not in LocalApi.METHODS and m not in ("auth", "pair", "hello")), notify=st.booleans(), params=st.one_of(st.none(), st.dictionaries(st.text(max_size=4), scalars, max_size=2)))
def test_unknown_methods_and_notifications(world: World, method: str, notify: bool, params: Any) -> None:
    conn = world.authed
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        req["params"] = params
    if not notify:
        req["id"] = 7
    before = world.snapshot()
    out = conn.frame(json.dumps(req))
    if notify:
        assert out == []  # a notification never gets an answer, not even an error
    else:
        assert len(out) == 1 and is_error(out[0], {-32601}) and out[0]["id"] == 7
    assert not conn.rpc.closed and world.snapshot() == before


@FUZZ
@given(batch=st.lists(st.one_of(values, st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": st.sampled_from(METHODS + ["nope"]), "params": st.lists(scalars, max_size=2)})), min_size=1, max_size=MAX_BATCH + 5))
def test_batches(world: World, batch: list[Any]) -> None:
    conn = world.authed
    before = world.snapshot()
    out = conn.frame(json.dumps(batch))
    if len(batch) > MAX_BATCH:
        assert len(out) == 1 and is_error(out[0], {-32600})
    else:
        replies = out[0] if out else []
        assert isinstance(replies, list) and len(replies) <= len(batch) and all(is_error(r) for r in replies), replies
    assert not conn.rpc.closed and world.snapshot() == before


def test_huge_frames_and_strings(world: World) -> None:
    conn = world.authed
    before = world.snapshot()
    out = conn.frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "x" * MAX_FRAME}))
    assert len(out) == 1 and is_error(out[0], {-32600})
    peer = "0x" + "12" * 20
    for method, params, code in (
        ("messages.send", {"peer": peer, "text": "x" * (MAX_FRAME // 2)}, -32010),  # over the text limit: refused, nothing queued
        ("messages.send", {"peer": peer, "text": " \n\t "}, -32010),
        ("messages.send", {"peer": peer, "text": "\ud800"}, -32010),
        ("messages.send", {"peer": world.engine.address, "text": "me"}, -32010),
        ("resolve", {"peer": "x" * 100_000}, -32602),
        ("messages.list", {"peer": "0x" + "z" * 40}, -32602),
        ("messages.list", {"peer": peer, "before": "0" * 32}, -32602),
        ("messages.list", {"peer": peer, "limit": True}, -32602),
        ("canMessage", {"address": peer.upper()}, -32602),
        ("canMessage", {"address": peer, "peer": "alice.eth"}, -32602),  # exactly one of the two
        ("canMessage", {}, -32602),
    ):
        out = conn.frame(json.dumps({"jsonrpc": "2.0", "id": 2, "method": method, "params": params}))
        assert len(out) == 1 and is_error(out[0], {code}), (method, out)
    assert world.snapshot() == before
    # a well-formed call that needs the relay: -32005, nothing written
    out = conn.frame(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "canMessage", "params": {"address": peer}}))
    assert is_error(out[0], {-32005})
    assert world.snapshot() == before and not conn.rpc.closed
    assert conn.frame(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"})) == [{"jsonrpc": "2.0", "result": "pong", "id": 4}]


@FUZZ
@given(frame=st.one_of(values.map(json.dumps), st.builds(lambda m, p: json.dumps({"jsonrpc": "2.0", "id": 1, "method": m, "params": p}), st.sampled_from(METHODS + ["auth", "nope"]), st.one_of(st.none(), st.dictionaries(st.sampled_from(["token", "x"]), scalars, max_size=2)))))
def test_before_authentication_only_the_documented_close(world: World, frame: str) -> None:
    conn = world.connect()
    before = world.snapshot()
    out = conn.frame(frame)
    assert all(is_error(o) or (isinstance(o, list) and all(is_error(x) for x in o)) for o in out), out
    flat = [x for o in out for x in (o if isinstance(o, list) else [o])]
    refused = any(x["error"]["code"] == -32001 for x in flat)
    if refused:  # the documented end: -32001, then close 4401
        assert conn.closes == [(CLOSE_UNAUTHENTICATED, "not authenticated")] and conn.rpc.closed
        assert conn.frame(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"})) == []  # nothing after the close
    else:
        assert not conn.closes and not conn.rpc.closed
    assert world.snapshot() == before


# ---- real processes: junk on the wire -----------------------------------------------------------


def _raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


@pytest.mark.slow
def test_junk_frames_and_bodies_do_not_kill_a_relay_or_a_bridge(tmp_path: Path, procs: list[Proc]) -> None:
    rng = random.Random(1234)
    relay, relay_url = start_relay(tmp_path / "relay.db")
    procs.append(relay)
    home = tmp_path / "alice"
    parley(home, "init", "--relay", relay_url, check=True)
    bridge, bridge_url = start_bridge(home, port=free_port())
    procs.append(bridge)
    bridge.expect("subscribed to", timeout=60)
    rport, bport = int(relay_url.rsplit(":", 1)[1]), int(bridge_url.rsplit(":", 1)[1])

    control = DaemonClient.find(Home(home))
    assert control is not None
    junk = [rng.randbytes(rng.randint(1, 3000)) for _ in range(15)]
    for port in (rport, bport):
        for blob in junk[:5]:
            _raw(port, blob)  # not HTTP at all
        _raw(port, b"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")  # truncated body
        _raw(port, b"GET /v1/subscribe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")  # half a handshake
        base = f"http://127.0.0.1:{port}"
        for blob in junk[5:]:
            paths = (("POST", "/v1/envelopes"), ("PUT", "/v1/prekeys/" + "0" * 32), ("POST", "/v1/auth/token")) if port == rport else (("POST", "/v1/control/send"),)
            for method, path in paths:
                headers = {"Content-Type": "application/json", **(control._headers if port == bport else {})}  # past the token check
                r = requests.request(method, base + path, data=blob, headers=headers, timeout=10)
                assert 400 <= r.status_code < 500 and r.headers["Content-Type"].startswith("application/json"), (port, path, r.status_code, r.text[:200])

    # WebSocket junk: the relay's subscription and the bridge's local API.
    for url, origin in ((f"ws://127.0.0.1:{rport}/v1/subscribe", None), (f"ws://127.0.0.1:{bport}/v1/rpc", f"chrome-extension://{EXTENSION_ID}")):
        for payload, opcode in ((rng.randbytes(500), websocket.ABNF.OPCODE_BINARY), ("{" * 3000, websocket.ABNF.OPCODE_TEXT), ("x" * 300_000, websocket.ABNF.OPCODE_TEXT), (rng.randbytes(100), websocket.ABNF.OPCODE_TEXT)):
            ws = websocket.create_connection(url, origin=origin, timeout=10) if origin else websocket.create_connection(url, timeout=10)
            try:
                ws.send(payload, opcode=opcode)
                try:
                    ws.recv()
                except (websocket.WebSocketException, OSError):
                    pass
            finally:
                ws.shutdown()

    assert relay.p.poll() is None and bridge.p.poll() is None
    assert requests.get(f"{relay_url}/v1/health", timeout=10).json() == {"ok": True, "version": 1, "minor": 4}
    ctl = DaemonClient.find(Home(home))
    assert ctl is not None and ctl._call("GET", "status")["relay"]["connected"] is True
    ws = websocket.create_connection(f"ws://127.0.0.1:{bport}/v1/rpc", origin=f"chrome-extension://{EXTENSION_ID}", timeout=10)
    try:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth", "params": {"token": "x" * 43}}))
        assert json.loads(ws.recv())["error"]["code"] == -32001  # still answering, by the rules
    finally:
        ws.shutdown()
