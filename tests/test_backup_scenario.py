"""Issue 15 "Done when": the lost device, with real processes only.

Two real `parley relay` processes (Alice's two home relays; Bob's home is the first), two real
`parley run` daemons, and `parley` commands, all over 127.0.0.1. The steps run in order and share one
world (module fixture):

1. Alice and Bob exchange messages; then Alice turns remote backup on (a recovery key, shown once; a
   base backup on both her relays; a standby installation published beside her real one).
2. They exchange more, which no backup holds yet (the standby's inbox does).
3. Alice's laptop is lost: her daemon is killed (-9) and her home deleted. Bob sends three more.
4. A wrong recovery key and a mistyped one are refused with one clear line, and the new home stays empty.
5. `parley restore` on a new home, with only the key and one relay URL, brings back every message in
   order, both directions, Bob's three included; the lost installation and the drained standby are
   revoked in the identity log, a new standby replaces it.
6. New messages flow both ways between the restored Alice and Bob.
7. Neither relay's database holds any of the texts, raw or encoded.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge import identity
from tests.plaintext import forms
from tests.procs import Proc, befriend, parley, start_bridge, start_relay, wait_for, whoami

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BEFORE = ["a: before the backup 1", "b: before the backup 2", "a: before the backup 3"]
AFTER = ["b: after the backup 4", "a: after the backup 5"]
WHILE_LOST = ["b: while you were away 6", "b: while you were away 7", "b: while you were away 8"]
NEW = ["a: from the restored laptop 9", "b: to the restored laptop 10"]


@dataclass
class World:
    d: Path
    r1: str
    r2: str
    procs: dict[str, Proc] = field(default_factory=dict)
    alice: Path = Path()
    bob: Path = Path()
    new_alice: Path = Path()
    notes: dict[str, Any] = field(default_factory=dict)

    def cli(self, home: Path, *args: str, check: bool = True) -> Any:
        r = parley(home, *args, "--json", check=check)
        return json.loads(r.stdout) if check else r


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("lost")
    procs: dict[str, Proc] = {}
    try:
        procs["r1"], r1 = start_relay(d / "r1.db")
        procs["r2"], r2 = start_relay(d / "r2.db")
        world = World(d, r1, r2, procs, d / "alice", d / "bob", d / "alice-new")
        parley(world.alice, "init", "--relay", r1, "--relay", r2, check=True)
        parley(world.bob, "init", "--relay", r1, check=True)
        befriend(world.alice, world.bob)
        # Bob's scheduled identity-cache passes every few seconds, not every 10 minutes: he learns of
        # Alice's standby as he would in the days between turning backup on and losing the laptop.
        parley(world.bob, "config", "set", "peer_refresh_minutes", "0.05", check=True)
        procs["alice"], _ = start_bridge(world.alice)
        procs["bob"], _ = start_bridge(world.bob)
        world.notes["alice"] = whoami(world.alice)
        world.notes["bob"] = whoami(world.bob)
        yield world
    finally:
        for p in procs.values():
            p.stop()


def _send(w: World, home: Path, peer: str, text: str) -> None:
    out = w.cli(home, "send", peer, text)
    assert out["state"] in ("sent", "queued"), out


def _texts(w: World, home: Path, peer: str) -> list[str]:
    return [m["text"] for m in w.cli(home, "messages", peer) if m.get("kind", "text") == "text"]


def _exchange(w: World, alice: Path, texts: list[str]) -> None:
    """Each text from its author ("a:" Alice, "b:" Bob), waiting until the other side has it (order is kept)."""
    a, b = w.notes["alice"]["address"], w.notes["bob"]["address"]
    for text in texts:
        sender, receiver, peer, other = (alice, w.bob, b, a) if text.startswith("a:") else (w.bob, alice, a, b)
        _send(w, sender, peer, text)
        wait_for(lambda: text in _texts(w, receiver, other), timeout=60, what=f"{text!r} to arrive")


def _active(w: World, address: str) -> set[str]:
    r = requests.get(f"{w.r1}/v1/identity/{address}", timeout=10)
    r.raise_for_status()
    records = [base64.b64decode(x) for x in r.json()["records"]]
    return set(identity.installations(address, records))


def test_1_backup_on_makes_a_key_a_base_and_a_standby(w: World) -> None:
    _exchange(w, w.alice, BEFORE)
    on = w.cli(w.alice, "backup", "remote", "on")
    key = on["recovery_key"]
    assert isinstance(key, str) and len(key.replace(" ", "")) == 64, on
    w.notes["key"] = key
    # The key is shown once: a second `on` does not print it again.
    again = w.cli(w.alice, "backup", "remote", "on")
    assert not again.get("recovery_key"), again

    def backed_up() -> dict[str, Any] | None:
        st = w.cli(w.alice, "backup", "remote", "status")
        ok = [r for r in st["relays"] if r["state"] == "ok" and r["last_at"]]
        return st if len(ok) == 2 and st["standby"]["installation_id"] else None

    st = wait_for(backed_up, timeout=90, interval=0.5, what="a backup on both home relays and a standby")
    assert {r["url"] for r in st["relays"]} == {w.r1, w.r2}
    standby = st["standby"]["installation_id"]
    assert st["size"] > 0 and st["last_backup_at"]
    w.notes["standby"] = standby
    # The standby is one more active installation of Alice's wallet, beside her real one.
    assert _active(w, w.notes["alice"]["address"]) == {w.notes["alice"]["installation_id"], standby}
    # Bob's next scheduled pass puts it in his identity cache: from then on he encrypts to it too.
    wait_for(lambda: standby in _cached(w.bob, w.notes["alice"]["address"]), timeout=60, what="Bob to learn of the standby")


def _cached(home: Path, address: str) -> set[str]:
    """The installations of ``address`` in a home's identity cache (its database, read only)."""
    with sqlite3.connect(f"file:{home / 'parley.db'}?mode=ro", uri=True) as db:
        return {r[0] for r in db.execute("SELECT installation_id FROM peer_installations WHERE address = ?", (address,))}


def test_2_more_messages_that_no_backup_holds_yet(w: World) -> None:
    _exchange(w, w.alice, AFTER)


def test_3_the_laptop_is_lost_and_bob_writes_meanwhile(w: World) -> None:
    w.procs.pop("alice").kill()
    shutil.rmtree(w.alice)
    a = w.notes["alice"]["address"]
    for text in WHILE_LOST:
        _send(w, w.bob, a, text)

    def all_sent() -> bool:
        return all(m["state"] == "sent" for m in w.cli(w.bob, "messages", a) if m["direction"] == "out")

    wait_for(all_sent, timeout=60, what="Bob's three messages to be sent")


def test_4_a_wrong_or_mistyped_key_is_refused_and_nothing_is_written(w: World) -> None:
    from bridge.backup import recovery

    wrong = recovery.generate()  # a valid key, but not Alice's: no backup on the relay for it
    r = parley(w.new_alice, "restore", "--recovery-key", wrong, "--relay", w.r1, "--keep-lost")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "no backup" in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not w.new_alice.exists() or not any(w.new_alice.iterdir())

    key = recovery.parse(w.notes["key"])
    typo = key[:10] + ("a" if key[10] != "a" else "b") + key[11:]
    r = parley(w.new_alice, "restore", "--recovery-key", typo, "--relay", w.r1, "--keep-lost")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "checksum" in r.stderr.lower(), r.stderr
    assert not w.new_alice.exists() or not any(w.new_alice.iterdir())


def test_5_restore_brings_everything_back_and_revokes_the_lost_installation(w: World) -> None:
    a, b = w.notes["alice"]["address"], w.notes["bob"]["address"]
    old_iid, old_standby = w.notes["alice"]["installation_id"], w.notes["standby"]
    # The key as a user types it back: upper case, in groups.
    typed = w.notes["key"].upper()
    out = w.cli(w.new_alice, "restore", "--recovery-key", typed, "--relay", w.r1, "--revoke-lost")
    me = whoami(w.new_alice)
    assert me["address"] == a
    assert me["installation_id"] not in (old_iid, old_standby)
    assert old_iid in out["revoked"], out
    # Every message, in order, both directions, Bob's three included.
    assert _texts(w, w.new_alice, b) == BEFORE + AFTER + WHILE_LOST
    directions = [m["direction"] for m in w.cli(w.new_alice, "messages", b)]
    assert directions == ["out" if t.startswith("a:") else "in" for t in BEFORE + AFTER + WHILE_LOST]
    # The identity log: the lost installation and the drained standby are revoked; a new standby replaces it.
    active = _active(w, a)
    assert old_iid not in active and old_standby not in active
    assert me["installation_id"] in active
    assert len(active) == 2, active  # the new installation and its new standby
    w.notes["new_standby"] = (active - {me["installation_id"]}).pop()


def test_6_new_messages_flow_both_ways(w: World) -> None:
    w.procs["alice"], _ = start_bridge(w.new_alice)
    _exchange(w, w.new_alice, NEW)
    b = w.notes["bob"]["address"]
    assert _texts(w, w.new_alice, b) == BEFORE + AFTER + WHILE_LOST + NEW


def test_7_no_relay_holds_plaintext(w: World) -> None:
    files = [p for p in w.d.iterdir() if p.name.startswith(("r1.db", "r2.db"))]
    dump = b"".join(p.read_bytes() for p in files)
    assert len(dump) > 100_000, "the relays should hold the backup segments and the envelopes"
    for text in BEFORE + AFTER + WHILE_LOST + NEW:
        for name, form in forms(text.encode()).items():
            assert form not in dump, f"a relay's database holds {text!r} as {name}"
    # The search does find what a relay holds in the clear: Alice's address (her identity log).
    assert w.notes["alice"]["address"].encode() in dump
