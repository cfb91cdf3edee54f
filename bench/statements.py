#!/usr/bin/env python3
"""Wallet statements (EIP-191) signed and verified with each secp256k1 backend of eth-keys.

Run: ``python bench/statements.py [-n 100]`` (about 30 s on 2 cores). Prints one table. Not a test.

eth-keys (under eth-account) uses coincurve (libsecp256k1) when it is installed and falls back to
its pure-Python backend otherwise; Parley depends on coincurve (issue 13). Both backends run here,
each in a fresh interpreter: the pure-Python one is forced with ``ECC_BACKEND_CLASS`` (eth-keys
reads it at import), so the baseline is measured in the same run on the same machine.

Per backend:

* sign one ``authorize`` statement (``bridge.identity.sign_statement``);
* verify one signed statement (``bridge.identity.verify``: recover the signer, compare);
* the active set of an N-record identity log (``bridge.identity.installations``): what every
  relay and every bridge does on a log it has not cached;
* ``import eth_account``, which every signing or verifying process pays once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATIVE = "eth_keys.backends.NativeECCBackend"


def child(n: int) -> dict[str, float | str]:
    """Measure in this process (the parent chose the backend through the environment)."""
    t0 = time.perf_counter()
    import eth_account  # noqa: F401

    import_s = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT))
    from eth_keys.backends import get_backend

    from bridge.crypto import primitives as P
    from bridge.identity import installations, sign_statement, verify
    from bridge.identity.statement import authorize_statement
    from bridge.protocol.ids import installation_id

    wallet = bytes(range(1, 33))
    from eth_account import Account

    address = Account.from_key(wallet).address
    statements = []
    for _ in range(n):
        _, spub = P.ed25519_keypair()
        _, ipub = P.x25519_keypair()
        statements.append(authorize_statement(address, installation_id(spub, ipub), spub, ipub))
    t0 = time.perf_counter()
    signed = [sign_statement(s, wallet) for s in statements]
    sign_ms = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    for s in signed:
        verify(s)
    verify_ms = (time.perf_counter() - t0) * 1000 / n
    records = [s.to_record() for s in signed]
    t0 = time.perf_counter()
    active = installations(address, records)
    log_s = time.perf_counter() - t0
    if len(active) != n:
        raise SystemExit(f"expected {n} active installations, got {len(active)}")
    return {
        "backend": type(get_backend()).__name__,
        "import_s": import_s,
        "sign_ms": sign_ms,
        "verify_ms": verify_ms,
        "log_s": log_s,
    }


def run(n: int, native: bool) -> dict[str, float | str]:
    env = dict(os.environ)
    env.pop("ECC_BACKEND_CLASS", None)
    if native:
        env["ECC_BACKEND_CLASS"] = NATIVE
    out = subprocess.run(
        [sys.executable, __file__, "--child", "-n", str(n)],
        env=env, check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="statements signed and verified, and log length (default 100)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 1:
        ap.error("-n must be at least 1")
    if args.child:
        print(json.dumps(child(args.n)))
        return
    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    print(f"# {args.n} statements; each backend in a fresh interpreter")
    base = run(args.n, native=True)
    fast = run(args.n, native=False)
    if base["backend"] == fast["backend"]:
        print(f"# coincurve is not installed: both runs used {fast['backend']}")
    rows = [
        ("sign one statement", "sign_ms", "ms"),
        ("verify one statement", "verify_ms", "ms"),
        (f"active set of a {args.n}-record log", "log_s", "s"),
        ("import eth_account", "import_s", "s"),
    ]
    print(f"{'per operation':36} {base['backend']:>20} {fast['backend']:>20} {'speed-up':>9}")
    for label, key, unit in rows:
        b, f = float(base[key]), float(fast[key])
        print(f"{label:36} {b:17.3f} {unit:2} {f:17.3f} {unit:2} {b / f:8.1f}x")


if __name__ == "__main__":
    main()
