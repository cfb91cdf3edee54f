"""A relay and bridges as real processes over 127.0.0.1: nothing lost, nothing doubled, no plaintext on the relay."""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
from pathlib import Path

import pytest

from bridge.daemon import DaemonClient
from bridge.home import Home
from tests.procs import Proc, befriend, free_port, parley, start_bridge, start_relay, wait_for, whoami

pytestmark = pytest.mark.slow

WALLET_A = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # Hardhat account #1
WALLET_B = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # Hardhat account #2


def init(home: Path, relay: str, key: str | None = None) -> dict[str, str]:
    if key:
        parley(home, "init", "--private-key-env", "TEST_WALLET_KEY", "--relay", relay, check=True, TEST_WALLET_KEY=key)
    else:
        parley(home, "init", "--relay", relay, check=True)
    return whoami(home)


def conversation(home: Path, peer: str) -> list[dict[str, object]]:
    return json.loads(parley(home, "messages", peer, "--json", check=True).stdout)


def relay_bytes(db: Path) -> bytes:
    """Everything the relay has on disk: the database, its WAL and a full logical dump."""
    blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    con = sqlite3.connect(db)
    try:
        dump = "\n".join(con.iterdump()).encode()
    finally:
        con.close()
    return blob + dump


def test_two_bridges_exchange_messages_through_a_relay(tmp_path: Path, procs: list[Proc]) -> None:
    relay_port = free_port()
    relay_db = tmp_path / "relay.db"
    relay, relay_url = start_relay(relay_db, port=relay_port)
    procs.append(relay)
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice = init(alice_home, relay_url, WALLET_A)
    bob = init(bob_home, relay_url, WALLET_B)
    befriend(alice_home, bob_home)  # many messages: not message requests (issue 12)
    assert parley(alice_home, "can-message", bob["address"]).returncode == 0

    a_proc, _ = start_bridge(alice_home)
    procs.append(a_proc)
    a_proc.expect("subscribed to")
    b_proc, _ = start_bridge(bob_home)
    procs.append(b_proc)
    b_proc.expect("subscribed to")
    a_ctl, b_ctl = DaemonClient.find(Home(alice_home)), DaemonClient.find(Home(bob_home))
    assert a_ctl is not None and b_ctl is not None

    tag = secrets.token_hex(4)
    sent: dict[str, list[str]] = {"a2b": [], "b2a": []}

    def text(direction: str) -> str:
        t = f"{direction}-{len(sent[direction]):03d}-{tag}-{secrets.token_hex(6)}"
        sent[direction].append(t)
        return t

    # 1. Both online: the CLI (through each daemon) and the daemons' control API, interleaved.
    for i in range(10):
        r = parley(alice_home, "send", bob["address"], text("a2b"), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["delivered"] is True
        r = parley(bob_home, "send", alice["address"], text("b2a"))
        assert r.returncode == 0, r.stderr
    for i in range(75):
        assert a_ctl.send(bob["address"], text("a2b"))["delivered"]
        assert b_ctl.send(alice["address"], text("b2a"))["delivered"]

    # 2. Bob goes offline. Alice keeps sending; Bob writes from the CLI without his daemon.
    assert b_proc.stop() == 0
    assert not (bob_home / "daemon.json").exists()
    for i in range(20):
        assert a_ctl.send(bob["address"], text("a2b"))["delivered"]
    for i in range(3):
        r = parley(bob_home, "send", alice["address"], text("b2a"))
        assert r.returncode == 0, r.stderr
    # Bob catches up with `sync` (no daemon), then comes back online.
    r = parley(bob_home, "sync")
    assert r.returncode == 0, r.stderr
    assert "received" in r.stdout
    b_proc, _ = start_bridge(bob_home)
    procs.append(b_proc)
    b_proc.expect("subscribed to")
    b_ctl = DaemonClient.find(Home(bob_home))
    assert b_ctl is not None

    # 3. The relay goes down: sends queue (exit 3), and go out once it is back on the same port.
    assert relay.stop() == 0
    r = parley(alice_home, "send", bob["address"], text("a2b"))
    assert r.returncode == 3 and "queued" in r.stderr
    for i in range(4):
        assert a_ctl.send(bob["address"], text("a2b"))["delivered"] is False
    relay, _ = start_relay(relay_db, port=relay_port)
    procs.append(relay)
    for i in range(7):
        b_ctl.send(alice["address"], text("b2a"))  # may be queued until Bob's daemon sees the relay again

    expected = len(sent["a2b"]) + len(sent["b2a"])
    assert expected >= 200

    def complete(home: Path, peer: str) -> list[dict[str, object]] | None:
        msgs = conversation(home, peer)
        return msgs if len(msgs) >= expected and all(m["text"] for m in msgs) else None

    try:
        bob_view = wait_for(lambda: complete(bob_home, alice["address"]), timeout=60, interval=0.5, what="Bob to have every message")
        alice_view = wait_for(lambda: complete(alice_home, bob["address"]), timeout=60, interval=0.5, what="Alice to have every message")
    except AssertionError:
        for name, home, peer in (("alice", alice_home, bob), ("bob", bob_home, alice)):
            msgs = conversation(home, peer["address"])
            print(name, len(msgs), "of", expected, [m["text"][:7] for m in msgs if m.get("direction")][-15:])
        for p in procs:
            print(p.args, "".join(p.output)[-3000:])
        raise

    for view, me in ((alice_view, alice), (bob_view, bob)):
        ids = [m["id"] for m in view]
        assert len(ids) == len(set(ids)) == expected, "a message was lost or shown twice"
        a2b = [m["text"] for m in view if m["sender"] == alice["address"]]
        b2a = [m["text"] for m in view if m["sender"] == bob["address"]]
        assert a2b == sent["a2b"], "Alice's messages arrived out of order or changed"
        assert b2a == sent["b2a"], "Bob's messages arrived out of order or changed"
        for m in view:
            assert m["direction"] == ("out" if m["sender"] == me["address"] else "in")
    assert {m["id"] for m in alice_view} == {m["id"] for m in bob_view}

    # Nothing readable on the relay: not one plaintext, not one sender address in an envelope.
    disk = relay_bytes(relay_db)
    for t in sent["a2b"] + sent["b2a"]:
        assert t.encode() not in disk
    assert tag.encode() not in disk


def test_two_installations_of_one_wallet_both_receive_and_see_what_the_other_sent(tmp_path: Path, procs: list[Proc]) -> None:
    relay, relay_url = start_relay(tmp_path / "relay.db")
    procs.append(relay)
    laptop, desktop, bob_home = tmp_path / "laptop", tmp_path / "desktop", tmp_path / "bob"
    a1 = init(laptop, relay_url, WALLET_A)
    a2 = init(desktop, relay_url, WALLET_A)
    bob = init(bob_home, relay_url, WALLET_B)
    assert a1["address"] == a2["address"] and a1["installation_id"] != a2["installation_id"]
    assert "2 installations" in parley(bob_home, "can-message", a1["address"], check=True).stdout

    parley(bob_home, "send", a1["address"], "hello both of you", check=True)
    parley(laptop, "send", bob["address"], "sent from the laptop", check=True)
    for home in (laptop, desktop):
        parley(home, "sync", check=True)
    parley(bob_home, "sync", check=True)

    # Conversations are in arrival order (PROTOCOL.md §6.4, issue 8 item 10): the laptop wrote its
    # message before it had fetched Bob's; the desktop received both, in the order they were published.
    msgs = conversation(laptop, bob["address"])
    assert [(m["text"], m["direction"]) for m in msgs] == [("sent from the laptop", "out"), ("hello both of you", "in")]
    msgs = conversation(desktop, bob["address"])
    assert [(m["text"], m["direction"]) for m in msgs] == [("hello both of you", "in"), ("sent from the laptop", "out")]
    assert [m["text"] for m in conversation(bob_home, a1["address"])] == ["hello both of you", "sent from the laptop"]

    # Revoke the desktop: Bob's next message reaches the laptop only.
    r = parley(desktop, "revoke")
    assert r.returncode == 0, r.stderr
    assert "1 installation" in parley(bob_home, "can-message", a1["address"], check=True).stdout
    parley(bob_home, "send", a1["address"], "after the revocation", check=True)
    parley(laptop, "sync", check=True)
    assert conversation(laptop, bob["address"])[-1]["text"] == "after the revocation"
    r = parley(desktop, "sync")
    assert r.returncode != 0  # the relay no longer lets a revoked installation read its inbox
    assert [m["text"] for m in conversation(desktop, bob["address"])] == ["hello both of you", "sent from the laptop"]

    # A revoked installation can still publish (publishing is anonymous), but Bob no longer believes it.
    r = parley(desktop, "send", bob["address"], "from the revoked desktop")
    assert r.returncode == 0, r.stderr
    parley(bob_home, "sync", check=True)
    assert "from the revoked desktop" not in [m["text"] for m in conversation(bob_home, a1["address"])]
    with contextlib.closing(sqlite3.connect(bob_home / "parley.db")) as db:
        failures = db.execute("SELECT error FROM quarantine").fetchall()
    assert any("revoked" in f[0] for f in failures)
