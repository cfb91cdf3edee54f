#!/usr/bin/env python3
"""What several relays cost (issue 10): send → received through the recipient's own relays, against a
baseline of both users on one shared relay, in the same run.

In-process engines (bridge.engine.Engine) and relays (SQLite, werkzeug) on 127.0.0.1:

* **shared**: Alice and Bob both read relay A (the 1.0 set-up; the baseline).
* **cross**: Alice reads A, Bob reads B, and they find each other through directory C; Bob's relay list
  tells Alice where to deliver.
* **multi-home**: Bob reads B and A; each envelope goes to B at once and to A in the background
  (``retry_deliveries``, timed separately).
* **failover**: as multi-home with B down (connection refused): publishing falls over to A.

Per case: the first contact (lookup, claim, PreKey message) and then N messages, each timed from
``send`` to Bob's ``sync`` returning it. Prints p50 / p99 and the ratio of each p50 to the baseline's.

Run: ``python bench/multi_relay.py [-n MESSAGES]`` (about 30 s with the default 100). A script, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import identity  # noqa: E402
from bridge.engine import Engine  # noqa: E402
from bridge.keys import generate_secrets  # noqa: E402
from bridge.store import Store  # noqa: E402
from tests.relay_fixtures import serve_relay  # noqa: E402

__all__ = ["main"]


def _engine(path: Path, home: list[str], directory: list[str]) -> Engine:
    s = generate_secrets()
    st = identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub)
    ident = {"address": s.address, "installation_id": s.installation_id, "record": identity.sign_statement(st, s.wallet_key).to_record().hex()}
    e = Engine(Store(path), s, ident, home[0], home_relays=home, directory_relays=directory)
    e.register()
    return e


def _pct(v: list[float], q: float) -> float:
    return sorted(v)[min(len(v) - 1, int(q * len(v)))]


def _case(d: Path, n: int, alice_home: list[str], bob_home: list[str], directory: list[str],
          before_messages: "Callable[[], object] | None" = None) -> tuple[float, list[float], float]:
    alice = _engine(d / "alice.db", alice_home, directory)
    bob = _engine(d / "bob.db", bob_home, directory)
    t = time.perf_counter()
    assert alice.send(bob.address, "first").delivered
    assert bob.sync() == 1
    first = time.perf_counter() - t
    alice.retry_deliveries()
    times: list[float] = []
    if before_messages is not None:
        before_messages()
    for i in range(n):
        t = time.perf_counter()
        r = alice.send(bob.address, f"m{i}")
        assert r.delivered, r.error
        assert bob.sync() == 1
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    alice.retry_deliveries()
    background = (time.perf_counter() - t) / n
    for e in (alice, bob):
        e.close_clients()
        e.store.close()
    return first, times, background


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100, help="messages per case after the first contact (default 100)")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # werkzeug's request lines, and the expected "relay down" warnings
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        d = Path(tmp)
        a, b, c = (stack.enter_context(serve_relay(d / f"{x}.db")) for x in "abc")
        b_stop = contextlib.ExitStack()
        dead = b_stop.enter_context(serve_relay(d / "dead.db"))
        for name, alice_home, bob_home, directory, during in (
            ("shared (baseline)", [a], [a], [], None),
            ("cross, via directory", [a], [b], [c], None),
            ("multi-home", [a], [b, a], [c], None),
            ("failover (primary down)", [a], [dead, a], [c], b_stop.close),
        ):
            case_dir = d / name.split()[0]
            case_dir.mkdir()
            first, times, background = _case(case_dir, args.n, alice_home, bob_home, directory, during)
            rows.append((name, first, times, background))
    base = _pct(rows[0][2], 0.5)
    print(f"{'case':26} {'first contact':>14} {'p50':>9} {'p99':>9} {'p50 / baseline':>15} {'background/msg':>15}")
    for name, first, times, background in rows:
        p50, p99 = _pct(times, 0.5), _pct(times, 0.99)
        print(f"{name:26} {first * 1000:11.1f} ms {p50 * 1000:6.1f} ms {p99 * 1000:6.1f} ms {p50 / base:14.2f}x {background * 1000:12.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
