#!/usr/bin/env python3
"""A backlog through the encrypted path (issue 13): sending one, and taking one in.

Run: ``python bench/backlog.py [-n 3000] [--daemon-n 10000]`` (about 1-2 min on 2 cores). Prints one
table per part. A script, not a test. Real processes on 127.0.0.1: one ``parley relay`` (SQLite,
gevent); Alice and Bob are engines in this process (parts 1, 2) or Bob is a ``parley run`` (part 3).

1. **Send a backlog**: Alice queues N messages to Bob (offline), then one ``flush_outbox``. The
   batch path (``Engine._publish_ahead``: one lease, one prepare transaction, ``POST
   /v1/envelopes/batch``, one finishing transaction) against the per-message path of before
   (``AHEAD_MAX = 1``: lease, prepare, publish, mark sent per message), same relay, same run.
2. **Take a backlog in** with ``Engine.sync``: ``process_many`` (one transaction per 100 envelopes)
   against one transaction per envelope (``PROCESS_BATCH = 1``), same envelopes, same run.
3. **A daemon back after a week offline**: ``--daemon-n`` envelopes wait for Bob on the relay; the
   time from starting ``parley run`` to its line "backlog … taken in", and the baseline: fetching the
   same envelopes from the relay over HTTP (``GET /v1/envelopes``, pages of 500) without processing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relay_load import describe_machine  # noqa: E402
from bridge.engine import engine as engine_mod  # noqa: E402
from bridge.relay.client import RelayClient  # noqa: E402
from tests.engines import befriend, make_engine  # noqa: E402
from tests.procs import parley, start_bridge, start_relay, whoami  # noqa: E402


def send_backlog(tmp: Path, url: str, n: int, ahead: bool) -> tuple[float, float]:
    """(seconds to flush n queued messages, seconds for Bob to sync them) on fresh engines."""
    tag = "batch" if ahead else "single"
    alice = make_engine(tmp / f"alice-{tag}.db", url)
    bob = make_engine(tmp / f"bob-{tag}.db", url)
    befriend(alice, bob)
    assert alice.send(bob.address, "first").delivered and bob.sync() == 1
    for i in range(n):
        alice.queue(bob.address, f"backlog {i}")
    saved = engine_mod.AHEAD_MAX
    engine_mod.AHEAD_MAX = saved if ahead else 1
    try:
        t0 = time.perf_counter()
        errors = alice.flush_outbox()
        flush_s = time.perf_counter() - t0
    finally:
        engine_mod.AHEAD_MAX = saved
    assert errors == {}, errors
    return flush_s, take_in(bob, n, batched=True)


def take_in(bob: object, n: int, batched: bool) -> float:
    saved = engine_mod.PROCESS_BATCH
    engine_mod.PROCESS_BATCH = saved if batched else 1
    try:
        t0 = time.perf_counter()
        got = bob.sync()  # type: ignore[attr-defined]
        dt = time.perf_counter() - t0
    finally:
        engine_mod.PROCESS_BATCH = saved
    assert got == n, f"took in {got} of {n}"
    return dt


def receive_compare(tmp: Path, url: str, n: int) -> tuple[float, float]:
    """Bob syncs n envelopes with process_many, Carol (same sender, same messages) one transaction each."""
    alice = make_engine(tmp / "alice-rx.db", url)
    bob = make_engine(tmp / "bob-rx.db", url)
    carol = make_engine(tmp / "carol-rx.db", url)
    befriend(alice, bob, carol)
    for peer in (bob, carol):
        for i in range(n):
            alice.queue(peer.address, f"to take in {i}")
    assert alice.flush_outbox() == {}
    return take_in(bob, n, batched=True), take_in(carol, n, batched=False)


def daemon_backlog(tmp: Path, url: str, n: int) -> tuple[float, float, float]:
    """(seconds from `parley run` to 'backlog … taken in', the seconds it reported, seconds to fetch)."""
    bob = tmp / "bob-home"
    parley(bob, "init", "--relay", url, check=True)
    alice = make_engine(tmp / "alice-d.db", url)
    parley(bob, "contacts", "add", "alice", alice.address, check=True)
    bob_address = whoami(bob)["address"]
    for i in range(n):
        alice.queue(bob_address, f"a week of messages {i}")
    assert alice.flush_outbox() == {}
    t0 = time.perf_counter()
    proc, _ = start_bridge(bob)
    try:
        m = proc.expect(r"backlog on \S+ taken in: (\d+) envelope\(s\) in ([\d.]+) s", timeout=600)
        total = time.perf_counter() - t0 - 1.0  # the daemon calls a backlog done after one quiet second
        assert int(m.group(1)) == n, m.group(0)
        reported = float(m.group(2))
    finally:
        proc.stop()
    # baseline: as many envelopes of the same sender, only fetched over HTTP by their reader (Dave)
    dave = make_engine(tmp / "dave-d.db", url)
    befriend(alice, dave)
    for i in range(n):
        alice.queue(dave.address, f"a week of messages {i}")
    assert alice.flush_outbox() == {}
    client, token = RelayClient(url), dave.token(url)
    t0 = time.perf_counter()
    after, fetched = 0, 0
    while True:
        page = client.fetch(dave.topic, after, 500, token=token)
        fetched += len(page)
        if len(page) < 500:
            break
        after = page[-1].cursor
    fetch_s = time.perf_counter() - t0
    assert fetched == n, fetched
    return total, reported, fetch_s


def parts_1_and_2(tmp: Path, url: str, n: int) -> None:
    base_flush, _ = send_backlog(tmp, url, n, ahead=False)
    fast_flush, _ = send_backlog(tmp, url, n, ahead=True)
    print(f"\n## 1. send a backlog of {n} queued messages (one flush_outbox), same relay, same run")
    print(f"{'path':<50}{'seconds':>9}{'msg/s':>9}")
    print(f"{'per message (before: AHEAD_MAX = 1)':<50}{base_flush:>9.2f}{n / base_flush:>9.0f}")
    print(f"{'batch (publish ahead, /v1/envelopes/batch)':<50}{fast_flush:>9.2f}{n / fast_flush:>9.0f}")
    print(f"speed-up x{base_flush / fast_flush:.1f}")
    fast_rx, base_rx = receive_compare(tmp, url, n)
    print(f"\n## 2. take in {n} envelopes with Engine.sync, same envelopes, same run")
    print(f"{'path':<50}{'seconds':>9}{'env/s':>9}")
    print(f"{'one transaction per envelope (PROCESS_BATCH = 1)':<50}{base_rx:>9.2f}{n / base_rx:>9.0f}")
    print(f"{'process_many (100 per transaction)':<50}{fast_rx:>9.2f}{n / fast_rx:>9.0f}")
    print(f"speed-up x{base_rx / fast_rx:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="messages in the backlog of parts 1 and 2 (default 3000; 0: skip them)")
    ap.add_argument("--daemon-n", type=int, default=10_000, help="envelopes waiting for the daemon in part 3 (default 10000; 0: skip)")
    args = ap.parse_args()
    if args.n < 0 or args.daemon_n < 0:
        ap.error("-n and --daemon-n must be at least 0")
    print(describe_machine())
    tmp = Path(tempfile.mkdtemp(prefix="parley-backlog-"))
    relay, url = start_relay(tmp / "relay.db", 0, 1e6)
    try:
        if args.n:
            parts_1_and_2(tmp, url, args.n)
        if args.daemon_n:
            total, reported, fetch_s = daemon_backlog(tmp, url, args.daemon_n)
            print(f"\n## 3. `parley run` back after a week: {args.daemon_n} envelopes waiting (goal: <= 10 s)")
            print(f"start to 'taken in' (less the quiet second) {total:>8.2f} s")
            print(f"backlog time the daemon reported             {reported:>8.2f} s")
            print(f"baseline: only fetching them over HTTP       {fetch_s:>8.2f} s  (ratio x{reported / fetch_s:.1f})")
    finally:
        relay.stop()


if __name__ == "__main__":
    main()
