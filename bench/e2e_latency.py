#!/usr/bin/env python3
"""Encrypted send→receive latency through two bridges and one relay (issue 5 part 4).

Real processes on 127.0.0.1: ``parley relay`` (default serving model), Alice's and Bob's ``parley
run``. Alice's messages go in through her daemon's control API (``bridge.daemon.DaemonClient.send``,
from 16 sender threads on a fixed schedule); they are timed out at Bob's daemon by the local API's
``message.new`` notification on a paired WebSocket (no polling). Offered rates: 10, 100, 1,000
messages per second, a few seconds each.

Baseline, same run, same relay: raw publish → subscriber delivery (no encryption, no bridges), an
installation seeded in the relay's database, publishes from the same kind of 16 threads.

Floors, same run: the daemon's control API answering with no work (round trip, and requests/s from
the same 16 threads) and one SQLite write transaction as the store commits it: the least one live
send costs before any encryption (issue 13's reasons for the goals not met).

Run: ``python bench/e2e_latency.py`` (about 1-2 min). A script, not a test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import websocket  # noqa: E402
import websockets  # noqa: E402

from bench.relay_load import _authenticate, _seed, _subscribe, Http, describe_machine  # noqa: E402
from bridge.api.access import EXTENSION_ID  # noqa: E402
from bridge.daemon import DaemonClient  # noqa: E402
from bridge.home import Home  # noqa: E402
from tests.procs import Proc, parley, start_bridge, start_relay, whoami  # noqa: E402

__all__ = ["main"]

RATES = [int(r) for r in os.environ.get("E2E_RATES", "10,100,1000").split(",")]
DURATION = 3.0
SENDERS = 16
SETTLE = 10.0
ORIGIN = f"chrome-extension://{EXTENSION_ID}"


def _pct(v: list[float], q: float) -> float:
    return sorted(v)[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def offered_load(rate: int, send: Callable[[str], None], got: dict[str, float], tag: str) -> dict[str, Any]:
    """Send ``rate * DURATION`` items on schedule from SENDERS threads; wait for their arrival."""
    total = int(rate * DURATION)
    keys = [f"{tag}-{rate}-{i:07d}" for i in range(total)]
    sent: dict[str, float] = {}
    errors = [0]
    q: queue.Queue[str | None] = queue.Queue()

    def worker() -> None:
        while (k := q.get()) is not None:
            sent[k] = time.monotonic()
            try:
                send(k)
            except Exception:  # noqa: BLE001 - counted
                errors[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    start = time.monotonic() + 0.05
    for i, k in enumerate(keys):
        d = start + i / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        q.put(k)
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join(120)
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and sum(k in got for k in keys) < total - errors[0]:
        time.sleep(0.02)
    lat = [(got[k] - sent[k]) * 1000 for k in keys if k in got and k in sent]
    last = max((got[k] for k in keys if k in got), default=start)
    return {"rate": rate, "offered": total, "errors": errors[0], "delivered": len(lat),
            "per_s": len(lat) / max(1e-9, last - start), "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99)}


def baseline(relay_url: str, db: Path) -> list[dict[str, Any]]:
    """Raw relay publish → subscribe delivery, no encryption."""
    keys = _seed(str(db), 1)
    host, port = relay_url.split("//")[1].split(":")
    got: dict[str, float] = {}
    ready = threading.Event()
    topic_box: list[str] = []

    async def sub() -> None:
        (topic, token), = await _authenticate(Http(host, int(port)), keys, False)
        topic_box.append(topic)
        ws = await _subscribe(f"ws://{host}:{port}/v1/subscribe", topic, token, 30)
        ready.set()
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "envelope":
                    got.setdefault(base64.b64decode(msg["payload"]).decode(), time.monotonic())
        except websockets.ConnectionClosed:
            return  # the relay stopped at the end of the run

    threading.Thread(target=lambda: asyncio.run(sub()), daemon=True).start()
    assert ready.wait(30)
    local = threading.local()

    def send(k: str) -> None:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        r = s.post(f"{relay_url}/v1/envelopes", json={"topic": topic_box[0], "payload": base64.b64encode(k.encode()).decode()}, timeout=30)
        if r.status_code != 202:
            raise RuntimeError(r.text)

    return [offered_load(rate, send, got, "raw") for rate in RATES]


def floors(daemon_url: str, token: str, home: Path) -> dict[str, float]:
    """What the encrypted path cannot go below here, measured in the same run (issue 13's reasons):

    * the daemon's control API answering with no work at all (``POST /v1/control/send`` with a bad
      body: the token check, then 400): its round trip from one client, and its request rate from
      SENDERS threads, as many as the e2e run sends from. Every live send is one such request;
    * one SQLite write transaction (``synchronous = FULL``, WAL, as the bridge's store) in the home's
      directory: a message is committed at least once by Alice (queued) and once by Bob (received).
    """
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{daemon_url}/v1/control/send"
    with requests.Session() as s:
        rtt = []
        for _ in range(300):
            t = time.perf_counter()
            if s.post(url, json={}, headers=headers, timeout=10).status_code != 400:
                raise SystemExit("the control API did not refuse a bad body with 400")
            rtt.append((time.perf_counter() - t) * 1000)
    n, count = 3000, [0]
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as s:
            while True:
                with lock:
                    if count[0] >= n:
                        return
                    count[0] += 1
                s.post(url, json={}, headers=headers, timeout=10)

    t = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(SENDERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rate = n / (time.perf_counter() - t)
    db = sqlite3.connect(home / "floor.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (x BLOB)")
        commits = []
        for _ in range(300):
            t = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(200),))
            db.execute("COMMIT")
            commits.append((time.perf_counter() - t) * 1000)
    finally:
        db.close()
    return {"api_p50": _pct(rtt, 0.5), "api_rate": rate, "commit_p50": _pct(commits, 0.5)}


def main() -> None:
    print(describe_machine())
    tmp = Path(tempfile.mkdtemp(prefix="parley-e2e-"))
    procs: list[Proc] = []
    try:
        relay, relay_url = start_relay(tmp / "relay.db", publish_rate=1e6)
        procs.append(relay)
        alice, bob = tmp / "alice", tmp / "bob"
        for h in (alice, bob):
            parley(h, "init", "--relay", relay_url, check=True)
        bob_addr = whoami(bob)["address"]
        a_proc, _ = start_bridge(alice)
        b_proc, b_url = start_bridge(bob)
        procs += [a_proc, b_proc]
        b_proc.expect("subscribed to")
        # Bob's paired local-API WebSocket: message.new notifications carry the received text
        b_port = int(b_url.rsplit(":", 1)[1])
        ws = websocket.create_connection(f"ws://127.0.0.1:{b_port}/v1/rpc", origin=ORIGIN, timeout=30)
        code = parley(bob, "pair", check=True).stdout.strip().splitlines()[-1]
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pair", "params": {"code": code, "name": "bench"}}))
        got: dict[str, float] = {}
        accepted, answers = threading.Event(), []

        def reader() -> None:
            while True:
                try:
                    msg = json.loads(ws.recv())
                except Exception:  # noqa: BLE001 - closed at the end
                    return
                if isinstance(msg, dict) and msg.get("id") == 2:
                    answers.append(msg)
                    if msg.get("result", {}).get("consent") == "allowed":
                        accepted.set()
                if isinstance(msg, dict) and msg.get("method") == "message.new":
                    m = msg["params"]["message"]
                    text = m.get("text") or m.get("body") or ""
                    got.setdefault(str(text), time.monotonic())

        threading.Thread(target=reader, daemon=True).start()
        client = DaemonClient.find(Home(alice))
        assert client is not None, "Alice's daemon is not reachable"
        client.send(bob_addr, "warm-up")  # session setup (prekey claim, X3DH/PQ) outside the timing
        deadline = time.monotonic() + 30
        while "warm-up" not in got and time.monotonic() < deadline:
            time.sleep(0.05)
        if "warm-up" not in got:
            raise SystemExit("the warm-up message did not reach Bob within 30 s")
        # Bob accepts Alice's request (consent, issue 12): a request stores at most REQUEST_LIMIT messages.
        alice_addr = whoami(alice)["address"]
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "consent.set", "params": {"peer": alice_addr, "action": "accept"}}))
        if not accepted.wait(30):
            raise SystemExit(f"Bob's consent.set did not answer: {answers}")
        clients = threading.local()  # one per sender thread, as the raw baseline's sessions are

        def send(k: str) -> None:
            mine = getattr(clients, "c", None) or DaemonClient.find(Home(alice))
            clients.c = mine
            mine.send(bob_addr, k)

        e2e = [offered_load(rate, send, got, "e2e") for rate in RATES]
        raw = baseline(relay_url, tmp / "relay.db")
        floor = floors(client.url, Home(alice).daemon_info()["token"], tmp)
    finally:
        for p in reversed(procs):
            p.stop()
    print(f"\n## encrypted send -> receive, Alice's daemon -> relay -> Bob's daemon ({DURATION:.0f} s per rate, {SENDERS} sender threads)")
    print(f"{'path':<10}{'offered/s':>10}{'sent':>7}{'errors':>7}{'delivered':>10}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, rows in (("e2e", e2e), ("raw relay", raw)):
        for x in rows:
            print(f"{name:<10}{x['rate']:>10}{x['offered']:>7}{x['errors']:>7}{x['delivered']:>10}{x['per_s']:>9.1f}{x['p50']:>9.2f}{x['p99']:>9.2f}")
    print("\n## ratios (e2e / raw relay publish->deliver, same relay, same run)")
    for x, b in zip(e2e, raw):
        print(f"@{x['rate']}/s: deliv/s x{x['per_s'] / max(1e-9, b['per_s']):.2f}  p50 x{x['p50'] / b['p50']:.1f}  p99 x{x['p99'] / b['p99']:.1f}")
    print("\n## floors (same run): what one live send costs before any encryption")
    print(f"control API, no work (400 on a bad body): round trip p50 {floor['api_p50']:.2f} ms; "
          f"{floor['api_rate']:.0f} requests/s from {SENDERS} threads (every live send is one request)")
    print(f"SQLite write transaction (synchronous=FULL, WAL): p50 {floor['commit_p50']:.2f} ms (at least one on each side)")
    slowest = next((b for b in raw if b["rate"] == 100), raw[0])
    total = floor["api_p50"] + 2 * floor["commit_p50"] + slowest["p50"]
    print(f"floor of one message's latency = API round trip + 2 commits + raw relay p50 @{slowest['rate']}/s "
          f"({slowest['p50']:.2f} ms) = {total:.2f} ms")


if __name__ == "__main__":
    main()
