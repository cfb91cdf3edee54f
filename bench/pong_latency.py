#!/usr/bin/env python3
"""WebSocket ping → pong latency of `parley relay` (issue 9 item 2).

Real processes on 127.0.0.1: ``parley relay --server gevent`` and ``--server threaded`` (both with the
CLI's ws_poll_interval of 5.0 s), one authenticated subscription each. The client sends
``{"type": "ping"}`` at random moments (0 to 0.5 s apart, so pings land at every phase of the
subscription's storage wait) and times the ``{"type": "pong"}``; then the same for publish →
envelope delivery. Prints min / p50 / p99 / max per model.

Run: ``python bench/pong_latency.py [-n PINGS]`` (about 1 min with the default 40). A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simple_websocket  # noqa: E402

from bridge.relay.client import RelayClient  # noqa: E402
from tests.procs import Proc  # noqa: E402
from tests.relay_fixtures import WALLET_ADDRESS, authorize_record, make_installation  # noqa: E402

__all__ = ["main"]


def _pct(v: list[float], q: float) -> float:
    return sorted(v)[min(len(v) - 1, int(q * len(v)))]


def _row(name: str, v: list[float]) -> str:
    ms = [x * 1000 for x in v]
    return f"| {name} | {len(ms)} | {min(ms):.1f} | {_pct(ms, 0.5):.1f} | {_pct(ms, 0.99):.1f} | {max(ms):.1f} |"


def measure(model: str, pings: int, tmp: Path) -> tuple[list[float], list[float]]:
    proc = Proc(["relay", "--port", "0", "--db", str(tmp / f"{model}.db"), "--server", model])
    try:
        url = proc.expect(r"relay listening on (http://\S+) ").group(1)
        client = RelayClient(url, timeout=10.0)
        inst = make_installation()
        client.publish_identity(WALLET_ADDRESS, authorize_record(inst))
        token = client.authenticate(inst.iid, inst.signing_priv)
        ws = simple_websocket.Client.connect(url.replace("http://", "ws://") + "/v1/subscribe")
        ws.send(json.dumps({"token": token, "topic": inst.topic, "after": 0}))
        assert json.loads(ws.receive(timeout=10)) == {"type": "ready"}
        pong: list[float] = []
        deliver: list[float] = []
        for _ in range(pings):
            time.sleep(random.uniform(0, 0.5))
            t0 = time.perf_counter()
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.receive(timeout=30)) == {"type": "pong"}
            pong.append(time.perf_counter() - t0)
        for i in range(max(5, pings // 4)):
            time.sleep(random.uniform(0, 0.5))
            t0 = time.perf_counter()
            client.publish(inst.topic, b"probe %d" % i)
            assert json.loads(ws.receive(timeout=30))["type"] == "envelope"
            deliver.append(time.perf_counter() - t0)
        ws.close()
        client.close()
        return pong, deliver
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--pings", type=int, default=40)
    args = ap.parse_args()
    print("| what | n | min ms | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="parley-pong-") as d:
        for model in ("gevent", "threaded"):
            pong, deliver = measure(model, args.pings, Path(d))
            print(_row(f"{model}: ping → pong", pong), flush=True)
            print(_row(f"{model}: publish → envelope", deliver), flush=True)


if __name__ == "__main__":
    main()
