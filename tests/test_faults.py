"""Fault tests (issue 5, part 2): kill -9 of bridges and the relay mid-exchange, relay outages, a full
disk and a read-only database on the relay. Real processes on 127.0.0.1 only; every wait is a poll
with a deadline; the only pauses are the seeded, bounded kill points.

Guarantee under test (PROTOCOL.md §7, docs/ARCHITECTURE.md "Prepared envelopes are stored"): every
message whose ``send`` was answered (delivered or queued) arrives exactly once, in the order the
sender accepted it, whatever crashes in between; a relay that cannot write answers 503
``storage_error`` and loses nothing it had accepted.

Knobs (environment): ``PARLEY_FAULT_SEED`` (default 5), ``PARLEY_FAULT_MESSAGES`` (sends per direction,
default 2500: 5,000 in all).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.daemon import DaemonClient
from bridge.home import Home
from bridge.relay.client import RelayUnavailable
from tests.procs import Proc, befriend, free_port, parley, start_bridge, start_relay, wait_for, whoami

__all__: list[str] = []

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("PARLEY_FAULT_SEED", "5"))
#: Sends per direction (Alice→Bob and Bob→Alice): 5,000 messages in all. 5,000 *each way* takes ~4 min
#: here (2 cores), over the file's 3-minute budget; set PARLEY_FAULT_MESSAGES=5000 to run it.
PER_DIRECTION = int(os.environ.get("PARLEY_FAULT_MESSAGES", "2500"))


# ---- helpers -----------------------------------------------------------------------------------


def read_messages(home: Path, peer: str) -> list[dict[str, Any]]:
    """A conversation as the user sees it (arrival order: ORDER BY seq), read straight from the bridge's SQLite."""
    con = sqlite3.connect(f"file:{home / 'parley.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT * FROM messages WHERE peer = ? ORDER BY seq", (peer,)).fetchall()
    finally:
        con.close()
    return [dict(r) for r in rows]


class Restartable:
    """A relay or bridge process that can be killed with SIGKILL and restarted on the same port and files."""

    def __init__(self, kind: str, procs: list[Proc], *, port: int, db: Path | None = None, home: Path | None = None) -> None:
        self.kind, self.procs, self.port, self.db, self.home = kind, procs, port, db, home
        self.proc: Proc | None = None
        self.url = ""
        self.kills = 0

    def start(self) -> None:
        if self.kind == "relay":
            assert self.db is not None
            self.proc, self.url = start_relay(self.db, port=self.port, publish_rate=1e5)
        else:
            assert self.home is not None
            self.proc, self.url = start_bridge(self.home, port=self.port)
        self.procs.append(self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.kills += 1


@dataclass
class Direction:
    """One direction of the exchange: who sends, to whom, what was accepted, per sender thread."""

    name: str
    home: Path
    peer: str
    tag: str
    accepted: dict[int, list[str]] = field(default_factory=dict)  # thread -> texts, in acceptance order
    unacked: list[str] = field(default_factory=list)  # the daemon died before answering
    errors: list[str] = field(default_factory=list)


class Clients:
    """One DaemonClient per home, refreshed (by polling with a deadline) when the daemon restarts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[Path, DaemonClient] = {}

    def get(self, home: Path, timeout: float = 90.0) -> DaemonClient:
        with self._lock:
            c = self._clients.get(home)
        if c is not None:
            return c
        c = wait_for(lambda: DaemonClient.find(Home(home)), timeout=timeout, interval=0.05, what=f"the daemon of {home.name}")
        with self._lock:
            self._clients[home] = c
        return c

    def drop(self, home: Path, c: DaemonClient) -> None:
        with self._lock:
            if self._clients.get(home) is c:
                del self._clients[home]


def sender(d: Direction, thread: int, count: int, clients: Clients, progress: list[int], lock: threading.Lock) -> None:
    texts = d.accepted.setdefault(thread, [])
    for i in range(count):
        text = f"{d.name}-{thread}-{i:05d}-{d.tag}"
        client = clients.get(d.home)
        try:
            client.send(d.peer, text)  # a returned message (delivered or queued) is "accepted"
        except RelayUnavailable:  # the daemon died (connection refused/reset): not accepted
            d.unacked.append(text)
            clients.drop(d.home, client)
            continue
        except Exception as exc:  # anything else is a bug the test must report
            d.errors.append(f"{text}: {type(exc).__name__}: {exc}")
            clients.drop(d.home, client)
            continue
        texts.append(text)
        with lock:
            progress[0] += 1


def check_direction(d: Direction, receiver_view: list[dict[str, Any]], sender_view: list[dict[str, Any]]) -> None:
    mine = [m for m in receiver_view if m["text"].endswith(d.tag) and m["text"].startswith(d.name + "-")]
    texts = [m["text"] for m in mine]
    accepted = {t for ts in d.accepted.values() for t in ts}
    assert len(texts) == len(set(texts)), f"{d.name}: a message arrived twice"
    assert accepted <= set(texts), f"{d.name}: {len(accepted - set(texts))} accepted messages never arrived"
    assert set(texts) <= accepted | set(d.unacked), f"{d.name}: the receiver shows messages nobody sent"
    position = {t: n for n, t in enumerate(texts)}
    for thread, ts in d.accepted.items():
        seen = [position[t] for t in ts]
        assert seen == sorted(seen), f"{d.name}: thread {thread}'s messages arrived out of acceptance order"
    own = [m["text"] for m in sender_view if m["text"].endswith(d.tag) and m["text"].startswith(d.name + "-")]
    assert len(own) == len(set(own)), f"{d.name}: the sender shows a message twice"
    assert accepted <= set(own)
    own_pos = {t: n for n, t in enumerate(own)}
    for ts in d.accepted.values():
        seen = [own_pos[t] for t in ts]
        assert seen == sorted(seen), f"{d.name}: the sender's own view is out of order"


# ---- 1. kill -9 everything during a 5,000-message exchange ----------------------------------------


@pytest.mark.timeout(900)
def test_kill9_bridges_and_relay_during_a_5000_message_exchange(tmp_path: Path, procs: list[Proc]) -> None:
    rng = random.Random(SEED)
    relay = Restartable("relay", procs, port=free_port(), db=tmp_path / "relay.db")
    relay.start()
    homes = {"alice": tmp_path / "alice", "bob": tmp_path / "bob"}
    who = {}
    for name, home in homes.items():
        parley(home, "init", "--relay", relay.url, check=True)
        who[name] = whoami(home)
    befriend(*homes.values())  # not message requests (issue 12)
    bridges = {name: Restartable("bridge", procs, port=free_port(), home=home) for name, home in homes.items()}
    for b in bridges.values():
        b.start()
        assert b.proc is not None
        b.proc.expect("subscribed to", timeout=60)

    tag = secrets.token_hex(4)
    a2b = Direction("a2b", homes["alice"], who["bob"]["address"], tag)
    b2a = Direction("b2a", homes["bob"], who["alice"]["address"], tag)
    threads_per_direction = 2
    per_thread = PER_DIRECTION // threads_per_direction
    clients, progress, lock = Clients(), [0], threading.Lock()
    threads = [
        threading.Thread(target=sender, args=(d, k, per_thread, clients, progress, lock), daemon=True, name=f"{d.name}-{k}")
        for d in (a2b, b2a)
        for k in range(threads_per_direction)
    ]

    # The kill schedule: each of the three processes three times, at seeded points of progress.
    targets = [relay, bridges["alice"], bridges["bob"]] * 3
    rng.shuffle(targets)
    goal = per_thread * 2 * threads_per_direction
    points = sorted(rng.uniform(0.05, 0.75) * goal for _ in targets)
    started = time.monotonic()
    for t in threads:
        t.start()
    kill_log = []
    for point, target in zip(points, targets):
        wait_for(lambda: progress[0] >= point or not any(t.is_alive() for t in threads), timeout=300, interval=0.02, what=f"{point:.0f} accepted")
        if not any(t.is_alive() for t in threads):
            break
        time.sleep(rng.uniform(0.0, 0.2))  # the seeded, bounded kill point
        target.kill9()
        down = rng.uniform(0.0, 1.5)  # how long it stays down (seeded, bounded): sends queue meanwhile
        time.sleep(down)
        target.start()
        kill_log.append((target.kind if target.kind == "relay" else target.home.name, progress[0], round(down, 2)))  # type: ignore[union-attr]
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a sender thread did not finish"
    sent_at = time.monotonic()

    def complete() -> bool:
        for d, receiver in ((a2b, homes["bob"]), (b2a, homes["alice"])):
            have = {m["text"] for m in read_messages(receiver, who["alice" if receiver == homes["bob"] else "bob"]["address"])}
            if not {t for ts in d.accepted.values() for t in ts} <= have:
                return False
        return True

    try:
        wait_for(complete, timeout=180, interval=0.5, what="every accepted message to arrive")
    except AssertionError:
        for p in procs[-6:]:
            print(p.args, "".join(p.output)[-2000:])
        raise
    done = time.monotonic()
    alice_view = read_messages(homes["alice"], who["bob"]["address"])
    bob_view = read_messages(homes["bob"], who["alice"]["address"])
    assert not a2b.errors and not b2a.errors, (a2b.errors + b2a.errors)[:5]
    check_direction(a2b, bob_view, alice_view)
    check_direction(b2a, alice_view, bob_view)
    assert relay.kills == 3 and bridges["alice"].kills == 3 and bridges["bob"].kills == 3, kill_log
    accepted = sum(len(ts) for d in (a2b, b2a) for ts in d.accepted.values())
    print(
        f"\nfault exchange: seed {SEED}, {accepted} accepted + {len(a2b.unacked) + len(b2a.unacked)} unanswered sends, "
        f"kills {kill_log}, sending {sent_at - started:.1f}s, complete after {done - started:.1f}s"
    )
    assert accepted >= goal * 0.95  # only sends cut by a kill may go unanswered



def alice_and_bob(tmp_path: Path, procs: list[Proc], relay: "Restartable") -> tuple[Path, Path, dict[str, str], dict[str, str], DaemonClient]:
    """Two homes registered on ``relay``, both daemons running and subscribed; Alice's control client."""
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    parley(alice_home, "init", "--relay", relay.url, check=True)
    parley(bob_home, "init", "--relay", relay.url, check=True)
    befriend(alice_home, bob_home)  # not message requests (issue 12)
    for home in (alice_home, bob_home):
        b = Restartable("bridge", procs, port=free_port(), home=home)
        b.start()
        assert b.proc is not None
        b.proc.expect("subscribed to", timeout=60)
    ctl = DaemonClient.find(Home(alice_home))
    assert ctl is not None
    return alice_home, bob_home, whoami(alice_home), whoami(bob_home), ctl


# ---- 2. a queue of 50 built while the relay is down goes out by itself, in order -------------------


def test_queue_of_50_while_relay_down_is_delivered_by_the_daemon_in_order(tmp_path: Path, procs: list[Proc]) -> None:
    relay = Restartable("relay", procs, port=free_port(), db=tmp_path / "relay.db")
    relay.start()
    alice_home, bob_home, alice, bob, ctl = alice_and_bob(tmp_path, procs, relay)
    assert ctl.send(bob["address"], "before the outage")["delivered"] is True  # a session exists

    assert relay.proc is not None and relay.proc.stop() == 0
    tag = secrets.token_hex(4)
    texts = [f"queued-{i:02d}-{tag}" for i in range(50)]
    for t in texts[:2]:  # the CLI path: exit 3, "queued"
        r = parley(alice_home, "send", bob["address"], t)
        assert r.returncode == 3 and "queued" in r.stderr, (r.returncode, r.stderr)
    for t in texts[2:]:
        r2 = ctl.send(bob["address"], t)
        assert r2["delivered"] is False and r2["message"]["state"] == "queued"
    assert [m["text"] for m in read_messages(bob_home, alice["address"])] == ["before the outage"]
    assert sum(m["state"] == "queued" for m in read_messages(alice_home, bob["address"])) == 50

    relay.start()  # same port, same database; no CLI action from here on
    view = wait_for(
        lambda: (v := read_messages(bob_home, alice["address"])) and len(v) >= 51 and v,
        timeout=60, interval=0.2, what="Bob to receive the 50 queued messages",
    )
    assert [m["text"] for m in view] == ["before the outage", *texts]  # once each, in order
    wait_for(
        lambda: all(m["state"] == "sent" for m in read_messages(alice_home, bob["address"])),
        timeout=30, interval=0.2, what="Alice's copies to turn sent",
    )
    assert len(read_messages(bob_home, alice["address"])) == 51


# ---- 3. a full disk / a read-only database on the relay ------------------------------------------


@contextlib.contextmanager
def mounted(argv: list[str], target: Path) -> Iterator[None]:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(reason=f"cannot mount here ({' '.join(argv)}: {r.stderr.strip()}); needs root with mount rights")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` completely with one file; returns it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


def integrity(db: Path) -> tuple[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0], con.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0]
    finally:
        con.close()


def publish_raw(url: str, topic: str, payload: bytes) -> requests.Response:
    import base64

    return requests.post(f"{url}/v1/envelopes", json={"topic": topic, "payload": base64.b64encode(payload).decode()}, timeout=30)


def test_full_disk_on_the_relay_gives_503_storage_error_and_no_corruption(tmp_path: Path, procs: list[Proc]) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], disk):
        relay = Restartable("relay", procs, port=free_port(), db=disk / "relay.db")
        relay.start()
        alice_home, bob_home, alice, bob, ctl = alice_and_bob(tmp_path, procs, relay)
        before = [f"before-{i}" for i in range(5)]
        for t in before:
            assert ctl.send(bob["address"], t)["delivered"] is True
        wait_for(lambda: len(read_messages(bob_home, alice["address"])) == 5, timeout=30, what="the first five")

        filler = fill(disk)
        # A raw client: publishing big envelopes must end in 503 storage_error, never a 500 or a hang.
        topic = f"parley.v1.inbox.{bob['installation_id']}"
        answers = []
        for _ in range(40):
            r = publish_raw(relay.url, topic, os.urandom(200_000))
            answers.append(r.status_code)
            if r.status_code != 202:
                break
        assert answers[-1] == 503, answers
        assert r.json()["error"]["code"] == "storage_error"
        assert all(s in (202, 503) for s in answers)
        # The bridge: RelayUnavailable inside, so the message is queued, not lost, not failed.
        during = [f"during-{i}" for i in range(3)]
        for n, t in enumerate(during):
            res = ctl.send(bob["address"], t + "x" * 3000)
            assert res["delivered"] is False and res["message"]["state"] == "queued"
            if n == 0:  # later ones wait behind it (the outbox stops at the first outage, to keep order)
                assert "503" in res["error"] and "storage" in res["error"], res["error"]

        filler.unlink()  # space is back: the daemon's outbox delivers by itself
        want = before + [t + "x" * 3000 for t in during]
        wait_for(
            lambda: [m["text"] for m in read_messages(bob_home, alice["address"])] == want,
            timeout=60, interval=0.2, what="the queued messages after space came back",
        )
        status, count = integrity(disk / "relay.db")
        assert status == "ok"
        assert relay.proc is not None and relay.proc.stop() == 0
        status, count_after = integrity(disk / "relay.db")
        assert status == "ok" and count_after == count
        assert count == len(want) + answers.count(202)  # every accepted envelope is still there


def test_read_only_relay_database_gives_503_storage_error_and_loses_nothing(tmp_path: Path, procs: list[Proc]) -> None:
    """The relay's directory turns read-only (a read-only bind mount, remounted while the relay is down:
    root ignores chmod, and a mount with open writers cannot be remounted read-only)."""
    real, view = tmp_path / "real", tmp_path / "view"
    real.mkdir()
    view.mkdir()
    with mounted(["mount", "--bind", str(real), str(view)], view):
        relay = Restartable("relay", procs, port=free_port(), db=view / "relay.db")
        relay.start()
        alice_home, bob_home, alice, bob, ctl = alice_and_bob(tmp_path, procs, relay)
        for i in range(3):
            assert ctl.send(bob["address"], f"rw-{i}")["delivered"] is True
        wait_for(lambda: len(read_messages(bob_home, alice["address"])) == 3, timeout=30, what="the first three")

        relay.kill9()  # leaves -wal/-shm behind, as a crash would
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        relay.start()
        topic = f"parley.v1.inbox.{bob['installation_id']}"
        r2 = publish_raw(relay.url, topic, b"sealed bytes")
        assert r2.status_code == 503 and r2.json()["error"]["code"] == "storage_error"
        assert requests.get(f"{relay.url}/v1/identity/{alice['address']}", timeout=10).status_code == 200  # reads still work
        res = ctl.send(bob["address"], "ro-0")
        assert res["delivered"] is False and res["message"]["state"] == "queued"

        relay.kill9()
        r = subprocess.run(["mount", "-o", "remount,rw,bind", str(view)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        relay.start()
        wait_for(
            lambda: [m["text"] for m in read_messages(bob_home, alice["address"])] == ["rw-0", "rw-1", "rw-2", "ro-0"],
            timeout=60, interval=0.2, what="the queued message after the database became writable",
        )
        status, count = integrity(view / "relay.db")
        assert status == "ok" and count == 4


# ---- 4. hostile peers (issue 8 items 3 and 4) under kill -9 ---------------------------------------


def _crafted_identity(relay_db: Path, authorizations: int) -> str:
    """tests.relay_fixtures.crafted_identity, written into the running relay's database file."""
    from bridge.relay.sqlite_store import SQLiteStorage
    from tests.relay_fixtures import crafted_identity

    storage = SQLiteStorage(str(relay_db))
    try:
        return crafted_identity(storage, authorizations)
    finally:
        storage.close()


def test_kill9_amid_a_crafted_identity_and_inbox_junk_keeps_every_conversation_whole(tmp_path: Path, procs: list[Proc]) -> None:
    """Seeded: Alice's daemon sends to Bob, to Carol and to a crafted identity (60 authorizations, no
    prekeys), junk lands in her inbox, and her daemon is killed with SIGKILL at a seeded point. Bob
    and Carol each get every accepted message exactly once, in order; every message to the crafted
    identity fails; every junk envelope is quarantined and nothing behind it is lost."""
    from bridge.protocol.ids import inbox_topic
    from bridge.relay.client import RelayClient

    rng = random.Random(SEED)
    relay = Restartable("relay", procs, port=free_port(), db=tmp_path / "relay.db")
    relay.start()
    alice_home, bob_home, alice, bob, _ = alice_and_bob(tmp_path, procs, relay)
    carol_home = tmp_path / "carol"
    parley(carol_home, "init", "--relay", relay.url, check=True)
    befriend(alice_home, bob_home, carol_home)  # not message requests (issue 12)
    carol = whoami(carol_home)
    assert relay.db is not None
    crafted = _crafted_identity(relay.db, 60)
    alice_daemon = next(p for p in procs if p.home == alice_home)
    clients = Clients()
    tag = secrets.token_hex(4)
    ops = ["bob"] * 12 + ["carol"] * 8 + ["crafted"] * 4 + ["junk"] * 6
    rng.shuffle(ops)
    kill_at = rng.randrange(5, len(ops) - 5)
    sent: dict[str, list[str]] = {"bob": [], "carol": [], "crafted": []}
    junk = 0
    for n, op in enumerate(ops):
        if n == kill_at:
            alice_daemon.kill()
            restarted = Restartable("bridge", procs, port=free_port(), home=alice_home)
            restarted.start()
            assert restarted.proc is not None
            restarted.proc.expect("subscribed to", timeout=60)
            clients = Clients()
        if op == "junk":
            RelayClient(relay.url).publish(inbox_topic(alice["installation_id"]), rng.randbytes(rng.randrange(1, 300)))
            junk += 1
            continue
        to = {"bob": bob["address"], "carol": carol["address"], "crafted": crafted}[op]
        text = f"{op}-{n:02d}-{tag}"
        answer = clients.get(alice_home).send(to, text)  # answered: delivered, or queued for a retry
        assert answer["message"]["state"] in ("sent", "queued", "failed")
        sent[op].append(text)

    def arrived(home: Path) -> list[str]:
        return [m["text"] for m in read_messages(home, alice["address"]) if m["text"].endswith(tag)]

    wait_for(lambda: len(arrived(bob_home)) >= len(sent["bob"]), timeout=120, interval=0.2, what="Bob to get every message")
    assert arrived(bob_home) == sent["bob"]  # exactly once, in the order Alice accepted them

    def carol_synced() -> bool:
        parley(carol_home, "sync")
        return len(arrived(carol_home)) >= len(sent["carol"])

    wait_for(carol_synced, timeout=120, interval=0.5, what="Carol to get every message")
    assert arrived(carol_home) == sent["carol"]
    to_crafted = read_messages(alice_home, crafted)
    assert [m["text"] for m in to_crafted] == sent["crafted"] and all(m["state"] == "failed" for m in to_crafted)
    status = wait_for(
        lambda: (s := json.loads(parley(alice_home, "status", "--json", check=True).stdout))["inbox"]["quarantined"] >= junk and s,
        timeout=60, interval=0.2, what="Alice to quarantine the junk",
    )
    assert status["inbox"]["quarantined"] == junk
    assert status["outbox"]["pending"] == 0 and status["outbox"]["failed"] == len(sent["crafted"])
