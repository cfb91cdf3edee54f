"""Slow and hostile connections against real server processes (issue 8, low items).

* half-open requests (a request line and part of the headers, then nothing) must not hold the
  server: a normal request still succeeds meanwhile, and the server closes them within its header
  timeout (set low through the environment for the test) — `parley relay` (gevent), the threaded
  relay, and `parley run` (werkzeug);
* a request body that stalls after its headers is closed within the relay's body idle timeout
  (also set low), and the standalone relay still serves from its database and stops cleanly;
* the relay embedded in `parley run` refuses web pages (an ``Origin`` header) and a foreign ``Host``,
  and leaves its database unchanged.
"""

from __future__ import annotations

import json
import selectors
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import Proc, parley
from tests.relay_fixtures import read_http_head, ws_client_frame, ws_upgrade_request

pytestmark = pytest.mark.timeout(180)

HALF_OPEN = 50
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
_BOUND = 30.0  # a connection the server never closes makes the test fail after this long


def _half_open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /v1/envelopes HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: appl" % port)
        socks.append(s)
    return socks


def _await_server_close(socks: list[socket.socket], bound: float) -> list[socket.socket]:
    """Await the server's end of every connection (EOF or reset; what it sends first is read away).
    Returns the sockets still open when ``bound`` seconds have passed."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    deadline = time.monotonic() + bound
    try:
        while open_ and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=left):
                s = key.fileobj
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except ConnectionError:
                    data = b""
                if data == b"":
                    sel.unregister(s)
                    open_.discard(s)  # type: ignore[arg-type]
    finally:
        sel.close()
    return list(open_)


def _play_half_open_attack(port: int, normal: str) -> None:
    socks = _half_open(port, HALF_OPEN)
    try:
        r = requests.get(f"http://127.0.0.1:{port}{normal}", timeout=10)
        assert r.status_code == 200, r.text
        still_open = _await_server_close(socks, _BOUND)
        assert still_open == [], f"{len(still_open)} of {HALF_OPEN} half-open connections were not closed by the server"
        r = requests.get(f"http://127.0.0.1:{port}{normal}", timeout=10)
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()


def _play_stalled_body(port: int) -> None:
    """Complete headers, part of the announced body, then nothing: the server's body read times out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        head = b"POST /v1/envelopes HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n" % port
        s.sendall(head + b"Content-Length: 1000\r\n\r\n" + b'{"topic": "')
        assert _await_server_close([s], _BOUND) == [], "a stalled request body was not closed by the server"
    finally:
        s.close()


def _relay_serves_from_its_db_and_stops_cleanly(proc: Proc, url: str) -> None:
    """A record published to the relay process is read back from its database; SIGTERM exits 0."""
    from bridge.relay.client import RelayClient
    from tests.relay_fixtures import WALLET_ADDRESS, authorize_record, make_installation

    record = authorize_record(make_installation())
    client = RelayClient(url)
    try:
        assert client.identity(WALLET_ADDRESS) == []
        assert client.publish_identity(WALLET_ADDRESS, record) == 1
        assert client.identity(WALLET_ADDRESS) == [record]
    finally:
        client.close()
    assert proc.stop() == 0, "".join(proc.output)


def _start_relay(tmp_path: Path, *model: str) -> tuple[Proc, str]:
    proc = Proc(
        ["relay", "--port", "0", "--db", str(tmp_path / "relay.db"), *model],
        PARLEY_RELAY_HEADER_TIMEOUT=str(HEADER_TIMEOUT), PARLEY_RELAY_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
    )
    try:
        return proc, proc.expect(r"relay listening on (http://\S+) ").group(1)
    except BaseException:
        proc.stop()
        raise


def test_half_open_requests_do_not_hold_parley_relay(tmp_path: Path) -> None:
    proc, url = _start_relay(tmp_path)
    try:
        _play_half_open_attack(int(url.rsplit(":", 1)[1]), "/v1/health")
        _play_stalled_body(int(url.rsplit(":", 1)[1]))
        _relay_serves_from_its_db_and_stops_cleanly(proc, url)
    finally:
        proc.stop()


def test_half_open_requests_do_not_hold_the_threaded_relay(tmp_path: Path) -> None:
    proc, url = _start_relay(tmp_path, "--server", "threaded")
    try:
        _play_half_open_attack(int(url.rsplit(":", 1)[1]), "/v1/health")
        _play_stalled_body(int(url.rsplit(":", 1)[1]))
        _relay_serves_from_its_db_and_stops_cleanly(proc, url)
    finally:
        proc.stop()


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[Proc, str, Path]]:
    home = tmp_path / "home"
    parley(home, "init", check=True)
    proc = Proc(["run", "--port", "0"], home=home, PARLEY_BRIDGE_HEADER_TIMEOUT=str(HEADER_TIMEOUT))
    try:
        url = proc.expect(r"listening on (http://\S+)").group(1)
        proc.expect(r"subscribed to ")
        yield proc, url, home
    finally:
        proc.stop()


def test_half_open_requests_do_not_hold_parley_run(bridge: tuple[Proc, str, Path]) -> None:
    _, url, _ = bridge
    _play_half_open_attack(int(url.rsplit(":", 1)[1]), "/v1/health")


def _relay_db_dump(home: Path) -> str:
    con = sqlite3.connect(home / "relay.db")
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def test_web_page_and_foreign_host_are_refused_by_the_embedded_relay(bridge: tuple[Proc, str, Path]) -> None:
    """A page posts a cross-origin "simple" form (text/plain, no preflight) into the bridge's relay,
    and a DNS-rebound host name reaches it: both are refused and the relay database is unchanged."""
    _, url, home = bridge
    port = int(url.rsplit(":", 1)[1])
    me = json.loads(parley(home, "whoami", "--json", check=True).stdout)
    topic = f"parley.v1.inbox.{me['installation_id']}"
    body = json.dumps({"topic": topic, "payload": "AAAA"})
    before = _relay_db_dump(home)
    r = requests.post(f"{url}/v1/envelopes", data=body, headers={"Content-Type": "text/plain", "Origin": "https://evil.example"}, timeout=10)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden_origin")
    r = requests.post(f"{url}/v1/envelopes", data=body, headers={"Content-Type": "application/json", "Origin": "null"}, timeout=10)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden_origin")
    for host in (f"evil.example:{port}", "evil.example", "127.0.0.1:1", "[::1]"):
        r = requests.post(f"{url}/v1/envelopes", data=body, headers={"Content-Type": "application/json", "Host": host}, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "bad_host"), host
        r = requests.post(f"{url}/v1/prekeys/{me['installation_id']}/claim", headers={"Host": host}, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "bad_host"), host
    r = requests.post(f"{url}/v1/envelopes", data=body, headers={"Content-Type": "text/plain"}, timeout=10)
    assert (r.status_code, r.json()["error"]["code"]) == (415, "bad_content_type")
    assert _relay_db_dump(home) == before
    # the bridge's own use of its relay (loopback Host, JSON, no Origin) still works
    r = requests.post(f"{url}/v1/envelopes", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 202, r.text


def _read_to_eof(s: socket.socket, bound: float) -> bytes:
    s.settimeout(bound)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_gevent_relay_hands_websockets_their_own_socket_and_answers_refused_upgrades(tmp_path: Path) -> None:
    """The gevent model gives simple-websocket the connection's socket itself (no ``dup``; the
    descriptor count is checked in tests/test_relay_mass_disconnect.py). Attacks on that hand-over:
    an upgrade request to a route that is not a WebSocket must still get its HTTP answer, and once
    a WebSocket has ended, no HTTP answer may follow its frames on the wire (nor an error in the log)."""
    proc, url = _start_relay(tmp_path)
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(ws_upgrade_request(port, "/v1/health"))
            answer = _read_to_eof(s, _BOUND)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert b"101 Switching" not in answer

        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(ws_upgrade_request(port))
            head = read_http_head(s)
            # one text frame that is not JSON: the relay answers an error frame and closes
            s.sendall(ws_client_frame(0x1, b"not json"))
            wire_bytes = head + _read_to_eof(s, _BOUND)
        head, _, frames = wire_bytes.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), wire_bytes[:200]
        assert b"bad_json" in frames
        assert b"HTTP/1." not in frames, frames
        _relay_serves_from_its_db_and_stops_cleanly(proc, url)
        assert not [line for line in proc.output if "Traceback" in line or "Error" in line], "".join(proc.output)
    finally:
        proc.stop()


def test_gevent_relay_stopping_writes_no_http_answer_into_open_websockets(tmp_path: Path) -> None:
    """SIGTERM while a WebSocket is open: its handler is killed, and gevent answers a killed request
    with "HTTP/1.1 500" unless it knows the connection is no longer HTTP. On a WebSocket that text
    would arrive as a corrupt frame (a client reported "reserved bits must be 0")."""
    proc, url = _start_relay(tmp_path)
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(ws_upgrade_request(port))
            head = read_http_head(s)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert proc.stop() == 0, "".join(proc.output)  # the handler waits for the first frame meanwhile
            rest = _read_to_eof(s, _BOUND)
        assert b"HTTP/1." not in rest, rest
    finally:
        proc.stop()
