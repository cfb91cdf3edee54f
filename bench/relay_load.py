#!/usr/bin/env python3
"""Relay under load: held idle WebSocket subscribers, memory, publish→deliver rate and latency.

Issue 5 part 4; docs/PROTOCOL.md §7 (the subscribe protocol). A script, not a test; loopback only,
bounded in time (about 1 min per target). Run: ``python bench/relay_load.py`` (``--quick`` for 1,000
subscribers). Prints one table, then the ratios.

Each *target* is a server process started by this script:

* ``bare/<model>`` — the baseline: a bare flask-sock fan-out server (subscribe = register the socket
  under its topic; publish = send to every socket of the topic from the POST handler). No storage,
  no auth.
* ``relay-sqlite/<model>``, ``relay-pg/<model>`` — the Parley relay (``bridge.relay.server.serve``,
  the function behind ``parley relay``) over SQLite or PostgreSQL, rate limits raised (every client
  is 127.0.0.1).

``<model>`` is the serving model (``bridge.relay.serving``): ``gevent`` or ``threaded`` (werkzeug).

A separate client process (asyncio + ``websockets``) then, against each target:

1. authenticates 100 idle and 20 probe installations (seeded directly in the database);
2. opens N idle subscribers (authenticated, on the 100 idle inbox topics), 200 handshakes in flight,
   within a deadline; reports how many were held, the server's RSS growth per subscriber (KB) and
   the server's CPU use while they are idle;
3. publishes to the 20 probe topics (one subscriber each) at several offered rates for a few seconds
   each, and reports delivered/s and publish→deliver latency p50/p99 (timed in the client process,
   from just before the POST to the envelope's arrival);
4. closes every idle subscriber at once (sockets dropped), then times a fresh subscribe + publish +
   deliver, and how long the server stays busy afterwards (the mass-close drain).
"""

from __future__ import annotations

import sys

# ---- the server roles patch gevent before anything else is imported --------------------------
if __name__ == "__main__" and "--role" in sys.argv and "gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

__all__ = ["main"]

IDLE_TOPICS = 100
PROBE_TOPICS = 20
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _nofile(target: int = 65536) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), max(hard, target)))
    except (ValueError, OSError):  # not root: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _topic(iid: str) -> str:
    return f"parley.v1.inbox.{iid}"


# ---- server roles ------------------------------------------------------------------------------


def role_bare(model: str) -> None:
    """The baseline: a bare flask-sock fan-out server speaking the relay's subscribe shape."""
    import threading

    from flask import Flask, request
    from flask_sock import Sock

    app = Flask("bare")
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}
    sock = Sock(app)
    subs: dict[str, set[Any]] = {}
    lock = threading.Lock()
    counter = [0]

    def fan_out(topic: str, payload: str) -> int:
        """Send one envelope to every socket subscribed to ``topic``; its cursor."""
        with lock:
            counter[0] += 1
            n = counter[0]
            targets = list(subs.get(topic, ()))
        frame = json.dumps({"type": "envelope", "cursor": n, "payload": payload, "received_at": int(time.time())})
        for ws in targets:
            try:
                ws.send(frame)
            except Exception:
                pass
        return n

    @app.post("/v1/envelopes")
    def publish() -> Any:
        body = request.get_json()
        return {"cursor": fan_out(body["topic"], body["payload"])}, 202

    @app.post("/v1/envelopes/batch")
    def publish_batch() -> Any:  # the same request shape as the relay's 1.4 batch route
        body = request.get_json()
        return {"cursors": [fan_out(t, p) for t, p in zip(body["topics"], body["payloads"])]}, 200

    @sock.route("/v1/subscribe")
    def subscribe(ws: Any) -> None:
        first = ws.receive(timeout=10)
        if first is None:
            return
        topic = json.loads(first)["topic"]
        with lock:
            subs.setdefault(topic, set()).add(ws)
        try:
            ws.send(json.dumps({"type": "ready"}))
            while True:
                msg = ws.receive()
                if msg is not None and '"ping"' in msg:
                    ws.send(json.dumps({"type": "pong"}))
        finally:
            with lock:
                subs.get(topic, set()).discard(ws)

    _serve_app(app, model)


def _serve_app(app: Any, model: str) -> None:
    def ready(host: str, port: int) -> None:
        print(f"READY {port} {os.getpid()}", flush=True)

    if model == "gevent":
        from bridge.relay.serving import serve_gevent

        serve_gevent(app, "127.0.0.1", 0, ready_callback=ready)
    else:
        import socket

        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ready("127.0.0.1", server.server_port)
        server.serve_forever()


def role_relay(model: str, db: str, poll: float | None) -> None:
    """The Parley relay through ``serve()`` (as ``parley relay --server MODEL``), limits raised."""
    from bridge.relay.server import RelaySettings, serve

    extra = {} if poll is None else {"ws_poll_interval": poll}
    settings = RelaySettings(
        **extra,  # type: ignore[arg-type]
        publish_rate=1e6, publish_burst=10**6, inbox_rate=1e6, inbox_burst=10**6, auth_rate=1e6, auth_burst=10**6, max_tokens=10**6,
        max_pending_challenges=10**6,
    )
    serve("127.0.0.1", 0, db, model=model, settings=settings, ready_callback=lambda h, p: print(f"READY {p} {os.getpid()}", flush=True))


# ---- the load client (asyncio) -----------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Http:
    """A minimal keep-alive HTTP/1.1 JSON client over asyncio streams (no dependency)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = json.dumps(obj).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.writer = None
        return status, json.loads(data) if data else {}


async def _authenticate(http: Http, keys: list[tuple[str, str]], bare: bool) -> list[tuple[str, str]]:
    """(iid, ed25519 private hex) → (topic, token)."""
    from bridge.crypto import primitives as P
    from bridge.protocol import wire
    from bridge.relay.auth import auth_message

    out = []
    for iid, priv in keys:
        if bare:
            out.append((_topic(iid), "bare"))
            continue
        st, ch = await http.post("/v1/auth/challenge", {"installation_id": iid})
        assert st == 200, (st, ch)
        challenge = wire.b64d(ch["challenge"])
        sig = P.ed25519_sign(bytes.fromhex(priv), auth_message(iid, challenge))
        st, tok = await http.post(
            "/v1/auth/token", {"installation_id": iid, "challenge": ch["challenge"], "signature": wire.b64e(sig)}
        )
        assert st == 200, (st, tok)
        out.append((_topic(iid), tok["token"]))
    return out


async def _subscribe(url: str, topic: str, token: str, timeout: float) -> Any:
    import websockets

    ws = await asyncio.wait_for(
        websockets.connect(url, ping_interval=None, max_queue=None, compression=None, open_timeout=timeout, close_timeout=1),
        timeout,
    )
    await ws.send(json.dumps({"token": token, "topic": topic, "after": 0}))
    first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if first.get("type") != "ready":
        await ws.close()
        raise RuntimeError(f"subscribe refused: {first}")
    return ws


async def _cpu_share(pid: int, seconds: float) -> float:
    c0, t0 = _cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (_cpu_s(pid) - c0) / (time.monotonic() - t0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def client(cfg: dict[str, Any]) -> dict[str, Any]:
    _nofile()
    host, port, pid = "127.0.0.1", int(cfg["port"]), int(cfg["pid"])
    base_ws = f"ws://{host}:{port}/v1/subscribe"
    bare = bool(cfg["bare"])
    res: dict[str, Any] = {}
    http = Http(host, port)
    idle_subs = await _authenticate(http, cfg["idle_keys"], bare)
    probe_subs = await _authenticate(http, cfg["probe_keys"], bare)
    spare = await _authenticate(http, cfg["spare_keys"], bare)
    await asyncio.sleep(0.5)
    rss0, thr0 = _rss_kb(pid), _threads(pid)

    # -- hold N idle subscribers --
    n = int(cfg["n"])
    held: list[Any] = []
    errors: dict[str, int] = {}
    sem = asyncio.Semaphore(200)
    deadline = time.monotonic() + float(cfg["open_deadline"])

    async def open_one(i: int) -> None:
        topic, token = idle_subs[i % len(idle_subs)]
        async with sem:
            left = deadline - time.monotonic()
            if left <= 0:
                errors["deadline"] = errors.get("deadline", 0) + 1
                return
            try:
                held.append(await _subscribe(base_ws, topic, token, min(left, 30.0)))
            except Exception as exc:  # noqa: BLE001 - a bench counts failures by kind
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    res["open_s"] = time.monotonic() - t0
    res["held"] = len(held)
    res["open_errors"] = errors
    await asyncio.sleep(1.0)
    res["idle_cpu"] = await _cpu_share(pid, 3.0)
    rss1 = _rss_kb(pid)
    res["rss_mb"] = rss1 / 1024
    res["kb_per_sub"] = (rss1 - rss0) / max(1, len(held))
    res["threads"] = _threads(pid) - thr0

    # -- publish → deliver at several rates --
    try:
        probes = [await _subscribe(base_ws, t, tok, 60.0) for t, tok in probe_subs]
    except Exception as exc:  # noqa: BLE001 - the server cannot take one more subscriber: report it
        res.update(rates=[], fresh_after_close_s=float("nan"), drain_s=float("nan"), drain_cpu_s=float("nan"),
                   probe_error=f"probe subscribe failed with {len(held)} held: {type(exc).__name__}")
        for ws in held:
            ws.transport.abort()
        return res
    sent_at: dict[str, float] = {}
    got: dict[str, float] = {}

    async def reader(ws: Any) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "envelope":
                    key = msg["payload"]
                    if key in sent_at and key not in got:
                        got[key] = time.monotonic()
        except Exception:  # noqa: BLE001 - connection closed at the end
            return

    readers = [asyncio.create_task(reader(ws)) for ws in probes]
    import base64

    def b64key(text: str) -> str:  # payloads must be standard base64 (PROTOCOL.md §7)
        return base64.b64encode(text.encode() + b"\x00" * 150).decode()

    rates = []
    conns = [Http(host, port) for _ in range(16)]
    batch = int(cfg.get("batch", 1))
    for rate in cfg["rates"]:
        duration = float(cfg["duration"])
        total = int(rate * duration)
        keys = [b64key(f"{rate:06d}{i:08d}") for i in range(total)]
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        accepted = [0]
        start = time.monotonic() + 0.05

        async def worker(h: Http) -> None:
            while True:
                items = [await queue.get()]
                while len(items) < batch and not queue.empty():  # whatever has queued up meanwhile
                    items.append(queue.get_nowait())
                topics = [probe_subs[i % len(probe_subs)][0] for i, _ in items]
                now = time.monotonic()
                for _, key in items:
                    sent_at[key] = now
                try:
                    if batch > 1:
                        st, answer = await h.post("/v1/envelopes/batch", {"topics": topics, "payloads": [k for _, k in items]})
                        accepted[0] += len(answer.get("cursors", ())) if st == 200 and isinstance(answer, dict) else 0
                    else:
                        st, _ = await h.post("/v1/envelopes", {"topic": topics[0], "payload": items[0][1]})
                        accepted[0] += st == 202
                except Exception:  # noqa: BLE001
                    h.writer = None
                for _ in items:
                    queue.task_done()

        workers = [asyncio.create_task(worker(h)) for h in conns]
        for i, key in enumerate(keys):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, key))
        offered_s = time.monotonic() - start
        await queue.join()
        for w in workers:
            w.cancel()
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle and sum(k in got for k in keys) < accepted[0]:
            await asyncio.sleep(0.02)
        lat = [(got[k] - sent_at[k]) * 1000 for k in keys if k in got]
        last = max((got[k] for k in keys if k in got), default=start)
        rates.append(
            {
                "rate": rate,
                "offered": total,
                "accepted": accepted[0],
                "delivered": len(lat),
                "per_s": len(lat) / max(1e-9, max(offered_s, last - start)),
                "p50": _pct(lat, 0.50),
                "p99": _pct(lat, 0.99),
            }
        )
    res["rates"] = rates

    # -- close every idle subscriber at once --
    cpu_before = _cpu_s(pid)
    t0 = time.monotonic()
    for ws in held:
        ws.transport.abort()
    held.clear()
    fresh_topic, fresh_token = spare[0]
    probe_ok = float("nan")
    try:
        ws = await _subscribe(base_ws, fresh_topic, fresh_token, 60.0)
        key = b64key("fresh")
        sent_at[key] = time.monotonic()
        st, _ = await Http(host, port).post("/v1/envelopes", {"topic": fresh_topic, "payload": key})
        if st != 202:
            raise RuntimeError(f"publish answered {st}")
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60.0))
            if msg.get("type") == "envelope" and msg["payload"] == key:
                break
        probe_ok = time.monotonic() - t0
        await ws.close()
    except Exception as exc:  # noqa: BLE001
        res["fresh_error"] = repr(exc)
    res["fresh_after_close_s"] = probe_ok
    # drained: the server's CPU share over 0.5 s falls under 10 % (capped)
    drain = float("nan")
    cap = time.monotonic() + float(cfg["drain_cap"])
    while time.monotonic() < cap:
        if await _cpu_share(pid, 0.5) < 0.10:
            drain = time.monotonic() - t0
            break
    res["drain_s"] = drain
    res["drain_cpu_s"] = _cpu_s(pid) - cpu_before
    for ws in probes:
        ws.transport.abort()
    for r in readers:
        r.cancel()
    return res


# ---- orchestration -----------------------------------------------------------------------------


def _seed(db: str, count: int) -> list[tuple[str, str]]:
    """Create ``count`` active installations directly in the relay's storage; (iid, priv hex)."""
    from bridge.crypto import primitives as P
    from bridge.protocol.ids import installation_id
    from bridge.relay.storage import IdentityEntry, open_storage

    storage = open_storage(db)
    keys = []
    try:
        for i in range(count):
            spriv, spub = P.ed25519_keypair()
            _, xpub = P.x25519_keypair()
            iid = installation_id(spub, xpub)
            # a seeded index entry (the record bytes are a placeholder: the storage does not re-read them)
            storage.append_identity(
                "0x" + f"{i + 1:040x}", iid, b"seed", IdentityEntry("authorize", iid, spub, xpub), max_records=1
            )
            keys.append((iid, spriv.hex()))
    finally:
        storage.close()
    return keys


def _fake_keys(count: int) -> list[tuple[str, str]]:
    return [(os.urandom(16).hex(), "") for _ in range(count)]


def _start(args: list[str]) -> tuple[subprocess.Popen[str], int, int]:
    p = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        start_new_session=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    _, port, pid = line.split()
    return p, int(port), int(pid)


def _stop(p: subprocess.Popen[str]) -> float:
    t0 = time.monotonic()
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return float("inf")
    return time.monotonic() - t0


def _pg_scratch() -> str | None:
    """Create a scratch PostgreSQL database; its URL, or None (with the reason printed)."""
    try:
        import psycopg
    except ImportError:
        print("# PostgreSQL: psycopg not installed, skipped")
        return None
    name = f"parley_bench_{os.getpid()}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
    except Exception as exc:  # noqa: BLE001
        print(f"# PostgreSQL: no server at 127.0.0.1:5432 ({exc}), skipped")
        return None
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    from bridge.relay.storage import StorageError, open_storage

    try:
        open_storage(url).close()
    except StorageError as exc:
        print(f"# PostgreSQL: open_storage({url!r}) failed: {exc}; skipped")
        _pg_drop(url)
        return None
    return url


def _pg_drop(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_target(name: str, server_args: list[str], db: str | None, cfg: dict[str, Any]) -> dict[str, Any]:
    count = IDLE_TOPICS + PROBE_TOPICS + 1
    keys = _seed(db, count) if db else _fake_keys(count)
    p, port, pid = _start(server_args)
    try:
        ccfg = dict(cfg, port=port, pid=pid, bare=db is None, idle_keys=keys[:IDLE_TOPICS],
                    probe_keys=keys[IDLE_TOPICS : IDLE_TOPICS + PROBE_TOPICS], spare_keys=keys[-1:])
        out = subprocess.run(
            [sys.executable, __file__, "--client"], input=json.dumps(ccfg), capture_output=True, text=True, cwd=ROOT,
            timeout=float(cfg["open_deadline"]) + float(cfg["drain_cap"]) + 60 + len(cfg["rates"]) * (float(cfg["duration"]) + 10),
        )
        if out.returncode != 0:
            raise RuntimeError(f"client failed: {out.stderr[-2000:]}")
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        res_stop = _stop(p)
    res["stop_s"] = res_stop
    res["name"] = name
    return res


def _fmt(v: float, nd: int = 1) -> str:
    if v != v:
        return "-"
    if v == float("inf"):
        return "inf"
    return f"{v:.{nd}f}"


def print_table(results: list[dict[str, Any]], n: int) -> None:
    print(f"\n## Held idle subscribers (target {n}), then mass close of all of them")
    print(f"{'target':<24}{'held':>7}{'open s':>8}{'errors':>18}{'RSS MB':>8}{'KB/sub':>8}{'thr+':>7}{'idle CPU':>9}"
          f"{'fresh s':>9}{'drain s':>9}{'drain CPU s':>12}{'stop s':>8}")
    for r in results:
        err = ",".join(f"{k}:{v}" for k, v in r["open_errors"].items()) or "0"
        print(f"{r['name']:<24}{r['held']:>7}{_fmt(r['open_s']):>8}{err[:17]:>18}{_fmt(r['rss_mb']):>8}{_fmt(r['kb_per_sub']):>8}"
              f"{r['threads']:>7}{_fmt(r['idle_cpu'] * 100, 0) + '%':>9}{_fmt(r['fresh_after_close_s'], 2):>9}"
              f"{_fmt(r['drain_s'], 1):>9}{_fmt(r['drain_cpu_s'], 1):>12}{_fmt(r['stop_s'], 2):>8}")
    print("\n## publish -> deliver (20 probe topics, one subscriber each, the idle subscribers still held)")
    print(f"{'target':<24}{'offered/s':>10}{'sent':>7}{'accepted':>9}{'delivered':>10}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        for x in r["rates"]:
            print(f"{r['name']:<24}{x['rate']:>10}{x['offered']:>7}{x['accepted']:>9}{x['delivered']:>10}{_fmt(x['per_s']):>9}"
                  f"{_fmt(x['p50'], 2):>9}{_fmt(x['p99'], 2):>9}")
    for r in results:
        if r.get("probe_error") or r.get("fresh_error"):
            print(f"# {r['name']}: {r.get('probe_error') or r.get('fresh_error')}")
    by = {r["name"]: r for r in results}
    print("\n## ratios (relay / bare flask-sock baseline, same serving model, same run)")
    for r in results:
        if not r["name"].startswith("relay"):
            continue
        base = by.get("bare/" + r["name"].split("/")[1])
        if base is None:
            continue
        line = [f"{r['name']:<24}KB/sub x{_fmt(r['kb_per_sub'] / max(1e-9, base['kb_per_sub']), 2)}"]
        line.append(f"idle CPU {_fmt(r['idle_cpu'] * 100, 0)}% vs {_fmt(base['idle_cpu'] * 100, 0)}%")
        for x, b in zip(r["rates"], base["rates"]):
            line.append(f"@{x['rate']}/s: deliv/s x{_fmt(x['per_s'] / max(1e-9, b['per_s']), 2)} "
                        f"p50 x{_fmt(x['p50'] / max(1e-9, b['p50']), 1)} p99 x{_fmt(x['p99'] / max(1e-9, b['p99']), 1)}")
        print("  ".join(line))


def describe_machine() -> str:
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "?")
    return (f"# machine: {os.cpu_count()} CPUs, {int(mem) // 1024} MiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--subscribers", type=int, default=10_000)
    ap.add_argument("--rates", default="100,500,1000", help="offered publishes per second, comma-separated")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per rate")
    ap.add_argument("--targets", default="bare/gevent,relay-sqlite/gevent,relay-pg/gevent,bare/threaded,relay-sqlite/threaded")
    ap.add_argument("--threaded-n", type=int, default=None, help="subscribers for the threaded targets (default: -n)")
    ap.add_argument("--open-deadline", type=float, default=90.0)
    ap.add_argument("--drain-cap", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="1,000 subscribers, rates 100,500, 2 s each")
    ap.add_argument("--role", choices=["bare", "relay"])
    ap.add_argument("--model", choices=["gevent", "threaded"])
    ap.add_argument("--db")
    ap.add_argument("--poll", type=float, default=None, help="the relay's ws_poll_interval (default: RelaySettings')")
    ap.add_argument(
        "--batch", type=int, default=1,
        help="publish whatever has queued up on a connection, up to this many envelopes, in one POST /v1/envelopes/batch "
        "(protocol 1.4; the bare baseline has the same route); 1: one POST /v1/envelopes per envelope",
    )
    ap.add_argument("--client", action="store_true")
    a = ap.parse_args(argv)
    if a.role:
        _nofile()
        role_bare(a.model) if a.role == "bare" else role_relay(a.model, a.db, a.poll)
        return
    if a.client:
        cfg = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(client(cfg))))
        return
    if a.quick:
        a.subscribers, a.rates, a.duration = 1000, "100,500", 2.0
    _nofile()
    print(describe_machine())
    rates = [int(x) for x in a.rates.split(",")]
    print(f"# {a.subscribers} idle subscribers on {IDLE_TOPICS} topics; rates {rates}/s for {a.duration} s each; "
          + ("one envelope per publish request" if a.batch <= 1 else f"publish batches of up to {a.batch}"))
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="parley-relay-load-"))
    pg_url: str | None = None
    try:
        for target in a.targets.split(","):
            kind, model = target.split("/")
            n = a.threaded_n if (model == "threaded" and a.threaded_n) else a.subscribers
            cfg = {"n": n, "rates": rates, "duration": a.duration, "open_deadline": a.open_deadline, "drain_cap": a.drain_cap,
                   "batch": max(1, a.batch)}
            if kind == "bare":
                args, db = ["--role", "bare", "--model", model], None
            elif kind == "relay-sqlite":
                db = str(tmp / f"{model}.db")
                args = ["--role", "relay", "--model", model, "--db", db]
                args += [] if a.poll is None else ["--poll", str(a.poll)]
            elif kind == "relay-pg":
                pg_url = pg_url or _pg_scratch()
                if pg_url is None:
                    continue
                from bridge.relay.storage import open_storage

                st = open_storage(pg_url)  # a fresh schema per target: drop what the last one seeded
                st.close()
                db = pg_url
                args = ["--role", "relay", "--model", model, "--db", db]
                args += [] if a.poll is None else ["--poll", str(a.poll)]
            else:
                raise SystemExit(f"unknown target {target}")
            print(f"# running {target} (n={n}) ...", flush=True)
            try:
                results.append(run_target(target, args, db, cfg))
            except Exception as exc:  # noqa: BLE001 - report and go on with the other targets
                print(f"# {target} failed: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_url:
            _pg_drop(pg_url)
    print_table(results, a.subscribers)


if __name__ == "__main__":
    main()
