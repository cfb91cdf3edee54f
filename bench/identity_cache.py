#!/usr/bin/env python3
"""Re-reading an identity log: verification without and with the per-record cache (issue 8, low item).

Builds one wallet's log of N authorizations, then computes the active set three times in one run:
uncached (the baseline: every record's EIP-191 signature recovered), cached first read (fills the
cache), and cached re-read of the unchanged log (what a scheduled pass costs). No network.

Usage: python bench/identity_cache.py [-n 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import identity  # noqa: E402
from bridge.engine.peers import CachingVerifier  # noqa: E402
from bridge.keys import generate_secrets  # noqa: E402
from bridge.store import now_ms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="records in the log")
    n = ap.parse_args().n
    wallet = generate_secrets()
    records = []
    for _ in range(n):
        s = generate_secrets(wallet.wallet_key)
        st = identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub)
        records.append(identity.sign_statement(st, wallet.wallet_key).to_record())
    t = time.perf_counter()
    identity.installations(wallet.address, records)
    base = time.perf_counter() - t
    cache = CachingVerifier(None, clock=now_ms)
    t = time.perf_counter()
    identity.installations(wallet.address, records, verifier=cache)
    first = time.perf_counter() - t
    t = time.perf_counter()
    active = identity.installations(wallet.address, records, verifier=cache)
    again = time.perf_counter() - t
    assert len(active) == n
    print(f"{n}-record log: uncached {base * 1000:.0f} ms ({base / n * 1000:.2f} ms/record); "
          f"cached first read {first * 1000:.0f} ms; unchanged re-read {again * 1000:.1f} ms "
          f"({again / n * 1000:.3f} ms/record, {base / again:.0f}x faster); signature checks run: {cache.checks}")


if __name__ == "__main__":
    main()
