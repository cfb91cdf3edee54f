"""A week offline (issue 13): a backlog of envelopes taken in by `parley run` and by `parley sync`,
with real processes. The daemon takes it in in batches and says so (its output and ``status``
notifications on the local API); `parley sync` shows a counter on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from bridge.api.access import EXTENSION_ID
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.procs import PARLEY, ROOT, env_for, parley, start_bridge, start_relay, whoami

ORIGIN = f"chrome-extension://{EXTENSION_ID}"
BACKLOG = 1500

pytestmark = pytest.mark.timeout(300)


def _call(ws: websocket.WebSocket, rid: int, method: str, params: Any) -> dict[str, Any]:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == rid:
            return dict(msg)


def _backlog(where: Path, relay_url: str, bob: Path, n: int, name: str = "alice") -> list[str]:
    """A new sender (in this process, store under ``where``), a contact of Bob's called ``name``,
    queues ``n`` messages to Bob and sends them in one flush."""
    where.mkdir(parents=True, exist_ok=True)
    alice = make_engine(where / "alice.db", relay_url)
    parley(bob, "contacts", "add", name, alice.address, check=True)
    bob_address = whoami(bob)["address"]
    words = [f"while you were away {i}" for i in range(n)]
    for w in words:
        alice.queue(bob_address, w)
    assert alice.flush_outbox() == {}
    return words


def test_the_daemon_takes_in_a_backlog_in_batches_and_tells_the_paired_extension(tmp_path: Path) -> None:
    relay, relay_url = start_relay(tmp_path / "relay.db")
    bob = tmp_path / "bob"
    try:
        parley(bob, "init", "--relay", relay_url, check=True)
        proc, url = start_bridge(bob)
        port = int(url.rsplit(":", 1)[1])
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v1/rpc", origin=ORIGIN, timeout=30)
        code = parley(bob, "pair", check=True).stdout.strip().splitlines()[-1]
        token = _call(ws, 1, "pair", {"code": code, "name": "pytest"})["result"]["token"]
        ws.close()
        proc.stop()
        words = _backlog(tmp_path / "a", relay_url, bob, BACKLOG)  # Bob is offline meanwhile

        proc, url = start_bridge(bob)
        try:
            port = int(url.rsplit(":", 1)[1])
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v1/rpc", origin=ORIGIN, timeout=60)
            assert _call(ws, 2, "auth", {"token": token})["result"] == {"ok": True}
            proc.expect(r"taking in the backlog on \S+: \d+ envelope\(s\) so far", timeout=60)
            done = proc.expect(r"backlog on \S+ taken in: (\d+) envelope\(s\) in ([\d.]+) s", timeout=120)
            assert int(done.group(1)) == BACKLOG
            statuses: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while not statuses or statuses[-1]["syncing"]:
                assert time.monotonic() < deadline, f"no final status notification: {statuses}"
                msg = json.loads(ws.recv())
                if msg.get("method") == "status":
                    statuses.append(msg["params"])
            assert statuses[-1] == {"syncing": False, "received": BACKLOG}
            assert all(s["received"] <= BACKLOG for s in statuses)
            ws.close()
        finally:
            proc.stop()
        shown = json.loads(parley(bob, "messages", "alice", "--json", check=True).stdout)
        assert [m["text"] for m in shown] == words  # all of them, once, in order
    finally:
        relay.stop()


def test_parley_sync_counts_a_backlog_on_a_terminal(tmp_path: Path) -> None:
    relay, relay_url = start_relay(tmp_path / "relay.db")
    bob = tmp_path / "bob"
    try:
        parley(bob, "init", "--relay", relay_url, check=True)
        words = _backlog(tmp_path / "a", relay_url, bob, 700)
        master, slave = pty.openpty()  # stderr is a terminal: the counter is drawn in place
        try:
            p = subprocess.run(
                [*PARLEY, "sync"], cwd=ROOT, env=env_for(bob), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=slave, text=True, timeout=120,
            )
            os.close(slave)
            slave = -1
            err = b""
            while select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                err += chunk
        finally:
            if slave != -1:
                os.close(slave)
            os.close(master)
        assert p.returncode == 0, err
        assert "received 700 new message(s); 0 waiting to be sent" in p.stdout
        text = err.decode()
        assert "\rreceiving: 700 envelope(s) taken in" in text and text.rstrip("\r\n").endswith("taken in")
        shown = json.loads(parley(bob, "messages", "alice", "--json", check=True).stdout)
        assert [m["text"] for m in shown] == words
        # not on a terminal: no counter for a backlog this small, and the summary as before
        words2 = _backlog(tmp_path / "c", relay_url, bob, 600, name="carol")
        r = parley(bob, "sync", check=True)
        assert "receiving" not in r.stderr and "received 600 new message(s)" in r.stdout
        assert [m["text"] for m in json.loads(parley(bob, "messages", "carol", "--json", check=True).stdout)] == words2
    finally:
        relay.stop()
