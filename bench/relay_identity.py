"""Identity appends on a long log (issue 8, item 5): cost per append, and a publish during an append.

Not a test. A real relay process served like `parley relay` (gevent, one process) on 127.0.0.1 over a
SQLite file (and PostgreSQL with --pg URL), per-client rate limits lifted; real wallet-signed records over HTTP. Prints:

* the mean time of an append while the log is short (records 1..10) and while it is long
  (records N-9..N), and their ratio (1.0 = appends do not grow with the log);
* the same-run baseline: what one append cost before the fix, i.e. re-verifying the whole log of N
  records (``bridge.identity.installations``) in this process;
* the latency of an envelope publish to another address's inbox issued while an append to the log
  of N records is in flight, and the latency of a publish alone (its baseline).

    PYTHONPATH=$PWD python bench/relay_identity.py [-n 250] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.relay_fixtures import OTHER_WALLET_KEY, WALLET_ADDRESS, authorize_record, make_installation  # noqa: E402


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_SERVE = (
    "import sys\n"
    "from bridge.relay.serving import patch_gevent\n"
    "patch_gevent()\n"
    "from bridge.relay.server import RelaySettings, serve\n"
    "big = 10**6\n"
    "s = RelaySettings(identity_rate=big, identity_burst=big, publish_rate=big, publish_burst=big)\n"
    "serve('127.0.0.1', 0, sys.argv[1], settings=s, model='gevent', ready_callback=lambda h, p: print(p, flush=True))\n"
)


def run(db: str, n: int, label: str) -> None:
    # `parley relay`'s serving model (gevent, one process) with the per-client rate limits lifted
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, db], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), "the relay did not start"
        url = f"http://127.0.0.1:{int(line)}"
        s = requests.Session()
        bob = make_installation()
        from tests.relay_fixtures import OTHER_WALLET_ADDRESS

        r = s.post(f"{url}/v1/identity/{OTHER_WALLET_ADDRESS}", json={"record": b64(authorize_record(bob, OTHER_WALLET_KEY))}, timeout=60)
        assert r.status_code == 201, r.text
        records = [authorize_record(make_installation()) for _ in range(n + 3)]
        times = []
        for rec in records[:n]:
            t0 = time.perf_counter()
            r = s.post(f"{url}/v1/identity/{WALLET_ADDRESS}", json={"record": b64(rec)}, timeout=120)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 201, r.text
        short, long_ = statistics.mean(times[:10]), statistics.mean(times[-10:])

        def publish() -> float:
            t0 = time.perf_counter()
            r = requests.post(f"{url}/v1/envelopes", json={"topic": bob.topic, "payload": b64(b"x" * 256)}, timeout=60)
            assert r.status_code == 202, r.text
            return time.perf_counter() - t0

        alone = statistics.median(publish() for _ in range(20))
        during = []
        for rec in records[n:]:  # appends to the long log itself (it has room for these)
            t = threading.Thread(target=lambda rec=rec: s.post(f"{url}/v1/identity/{WALLET_ADDRESS}", json={"record": b64(rec)}, timeout=600))
            t.start()
            time.sleep(0.005)  # let the append reach the relay first (a benchmark, not a test)
            during.append(publish())
            t.join(600)
        from bridge.identity import installations

        t0 = time.perf_counter()
        installations(WALLET_ADDRESS, records[:n])
        baseline = time.perf_counter() - t0
        print(f"{label:8} n={n:4}  append@1-10 {short * 1000:7.1f} ms  append@{n - 9}-{n} {long_ * 1000:7.1f} ms  ratio {long_ / short:5.2f}"
              f"  | before (re-verify {n} records) {baseline * 1000:7.1f} ms = {baseline / long_:6.1f}x an append now"
              f"  | publish alone p50 {alone * 1000:6.1f} ms, during an append {statistics.median(during) * 1000:6.1f} ms")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=250, help="records in the log (at most 253: three more are appended)")
    ap.add_argument("--pg", help="also run against this PostgreSQL URL (a fresh schema is created and dropped)")
    args = ap.parse_args()
    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        run(str(Path(d) / "relay.db"), args.n, "sqlite")
    if args.pg:
        import psycopg

        schema = f"bench_{os.urandom(4).hex()}"
        with psycopg.connect(args.pg, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        try:
            from urllib.parse import quote

            sep = "&" if "?" in args.pg else "?"
            run(f"{args.pg}{sep}options={quote(f'-csearch_path={schema}', safe='')}", args.n, "postgres")
        finally:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
