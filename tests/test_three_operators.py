"""Three relay operators, as the issue's "Done when" has them (issue 10; PROTOCOL.md §6.6): real
`parley relay` processes (R2 over TLS with a throw-away CA), real `parley` commands and daemons.

Alice's home is R1, Bob's is R2; the only relay they share is the directory R3. They talk both ways
through the CLI; a relay dying, a move to another relay, and the failures a new user meets
(directory down, a certificate nobody vouches for, plain http to another machine) each behave as the
README says. The browser half is e2e/test_three_operators.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import trustme

from tests.procs import Proc, free_port, parley, start_bridge, start_relay, wait_for, whoami
from tests.relay_fixtures import tls_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Operators:
    d: Path
    r1: str
    r2: str
    r3: str
    ca_bundle: str
    procs: dict[str, Proc]
    alice: Path
    bob: Path

    def run(self, home: Path, *args: str, check: bool = True) -> "object":
        return parley(home, *args, check=check, PARLEY_CA_BUNDLE=self.ca_bundle)


def ok(r: "object") -> str:
    return str(r.stdout)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operators]:
    d = tmp_path_factory.mktemp("operators")
    chain, key, bundle = tls_files(d, trustme.CA(), "127.0.0.1")
    procs: dict[str, Proc] = {}
    try:
        procs["r1"], r1 = start_relay(d / "r1.db")
        procs["r2"], r2 = start_relay(d / "r2.db", 0, 1000.0, "--tls-cert", chain, "--tls-key", key)
        procs["r3"], r3 = start_relay(d / "r3.db")
        assert r2.startswith("https://")
        o = Operators(d, r1, r2, r3, bundle, procs, d / "alice", d / "bob")
        o.run(o.alice, "init", "--relay", r1)
        o.run(o.alice, "relays", "directory", r3)
        o.run(o.bob, "init", "--relay", r2)
        o.run(o.bob, "relays", "directory", r3)
        yield o
    finally:
        for p in procs.values():
            p.stop()


def logged(url: str, address: str, bundle: str | bool = True) -> bool:
    r = requests.get(f"{url}/v1/identity/{address}", timeout=10, verify=bundle)
    r.raise_for_status()
    return bool(r.json()["records"])


def relay_dbs(ops: Operators) -> list[bytes]:
    out = []
    for name in ("r1", "r2", "r3"):
        with sqlite3.connect(ops.d / f"{name}.db") as db:
            out.append("\n".join(db.iterdump()).encode())
    return out


def conversation(ops: Operators, home: Path, peer: str) -> list[str]:
    return [m["text"] for m in json.loads(ok(ops.run(home, "messages", peer, "--json")))]


def test_cli_both_ways_through_the_directory(ops: Operators) -> None:
    alice, bob = whoami(ops.alice)["address"], whoami(ops.bob)["address"]
    # Each is on its home relay and the directory; the only relay they share is R3.
    assert logged(ops.r1, alice) and logged(ops.r3, alice) and not logged(ops.r2, alice, ops.ca_bundle)
    assert logged(ops.r2, bob, ops.ca_bundle) and logged(ops.r3, bob) and not logged(ops.r1, bob)
    assert json.loads(ok(ops.run(ops.alice, "relays", "--json"))) == {"home": [ops.r1], "directory": [ops.r3], "reading": [ops.r1]}
    assert whoami(ops.bob)["relays"] == {"home": [ops.r2], "directory": [ops.r3], "reading": [ops.r2]}

    first, second = "Alice on R1 to Bob on R2", "Bob on R2 back to Alice on R1"
    assert "sent " in ok(ops.run(ops.alice, "send", bob, first))
    assert "received 1" in ok(ops.run(ops.bob, "sync"))
    assert "sent " in ok(ops.run(ops.bob, "send", alice, second))
    assert "received 1" in ok(ops.run(ops.alice, "sync"))
    assert conversation(ops, ops.bob, alice) == [first, second]
    assert conversation(ops, ops.alice, bob) == [first, second]
    for dump in relay_dbs(ops):  # no relay holds any plaintext
        assert first.encode() not in dump and second.encode() not in dump


def test_multi_home_with_one_home_relay_killed(ops: Operators) -> None:
    """Dave lists R4 and R1; with R4 killed, Alice's messages (sent by her daemon) arrive once."""
    proc4, r4 = start_relay(ops.d / "r4.db")
    dave = ops.d / "dave"
    try:
        ops.run(dave, "init", "--relay", r4, "--relay", ops.r1)
        assert json.loads(ok(ops.run(dave, "relays", "--json")))["home"] == [r4, ops.r1]
        dave_address = whoami(dave)["address"]
        alice_daemon, _ = start_bridge(ops.alice, free_port(), None, PARLEY_CA_BUNDLE=ops.ca_bundle)
        try:
            alice_daemon.expect("subscribed to")
            assert "sent " in ok(ops.run(ops.alice, "send", dave_address, "while both are up"))
            # Sent once R4 (Dave's primary) took it; Alice's daemon then gives R1 its copy in the background.
            wait_for(lambda: json.loads(ok(ops.run(ops.alice, "status", "--json")))["outbox"]["deliveries_pending"] == 0,
                     what="the copy for Dave's second relay")
            proc4.stop()
            for text in ("R4 is gone", "still here"):
                assert "sent " in ok(ops.run(ops.alice, "send", dave_address, text))
        finally:
            alice_daemon.stop()
        r = ops.run(dave, "sync", check=False)
        assert r.returncode == 0, r.stderr  # type: ignore[attr-defined]
        assert conversation(ops, dave, whoami(ops.alice)["address"]) == ["while both are up", "R4 is gone", "still here"]
    finally:
        proc4.stop()


def test_moving_house_loses_nothing(ops: Operators) -> None:
    """Carol moves from R2 to R3 between two messages of Alice's; both arrive, and once Carol has
    written back, Alice delivers to R3."""
    carol = ops.d / "carol"
    ops.run(carol, "init", "--relay", ops.r2)
    ops.run(carol, "relays", "directory", ops.r3)
    alice, carol_address = whoami(ops.alice)["address"], whoami(carol)["address"]
    assert "sent " in ok(ops.run(ops.alice, "send", carol_address, "just before the move"))
    out = ok(ops.run(carol, "relays", "set", ops.r3))
    assert f"home relays: {ops.r3}" in out and f"still reading (grace period): {ops.r2}" in out
    assert json.loads(ok(ops.run(carol, "relays", "--json")))["reading"] == [ops.r3, ops.r2]
    assert "sent " in ok(ops.run(ops.alice, "send", carol_address, "with the old list"))  # Alice's cache: R2
    assert "received 2" in ok(ops.run(carol, "sync"))
    assert "sent " in ok(ops.run(carol, "send", alice, "I moved"))  # carries Carol's new relay list
    assert "received 1" in ok(ops.run(ops.alice, "sync"))
    before = envelope_count(ops.d / "r3.db")
    assert "sent " in ok(ops.run(ops.alice, "send", carol_address, "after the move"))
    assert envelope_count(ops.d / "r3.db") == before + 1  # delivered to Carol's new home
    assert "received 1" in ok(ops.run(carol, "sync"))
    assert conversation(ops, carol, alice) == ["just before the move", "with the old list", "I moved", "after the move"]


def envelope_count(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])


def one_line(r: "object", code: int, *needles: str) -> str:
    err = str(r.stderr).strip()  # type: ignore[attr-defined]
    assert r.returncode == code, (r.returncode, err)  # type: ignore[attr-defined]
    assert "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_failures_name_the_relay_and_the_reason(ops: Operators) -> None:
    bob = whoami(ops.bob)["address"]
    # Directory down: Erin's home relay does not know Bob, and the directory cannot be asked.
    erin = ops.d / "erin"
    dead = f"http://127.0.0.1:{free_port()}"
    ops.run(erin, "init", "--relay", ops.r1)
    ops.run(erin, "relays", "directory", dead, check=False)  # publishing there fails; the setting stays
    assert json.loads(ok(ops.run(erin, "relays", "--json")))["directory"] == [dead]
    one_line(ops.run(erin, "send", bob, "hello?", check=False), 3, dead, "not found")
    # A certificate nobody vouches for: no PARLEY_CA_BUNDLE for R2's throw-away CA.
    frank = ops.d / "frank"
    r = parley(frank, "init", "--relay", ops.r2)
    assert r.returncode == 0 and "not registered yet" in r.stderr and ops.r2 in r.stderr and "certificate verify failed" in r.stderr
    one_line(parley(frank, "sync"), 3, ops.r2, "certificate verify failed")
    # Plain http to another machine.
    one_line(parley(ops.d / "gina", "init", "--relay", "http://relay.example.org"), 2, "http://relay.example.org", "--insecure")
    assert not (ops.d / "gina" / "keys.json").exists()
    one_line(parley(ops.alice, "relays", "set", "http://10.1.2.3:8738"), 2, "http://10.1.2.3:8738", "plain http")
    assert json.loads(ok(ops.run(ops.alice, "relays", "--json")))["home"] == [ops.r1]  # nothing changed


def test_can_message_asks_home_then_directory_and_the_directory_env_overrides(ops: Operators) -> None:
    bob = whoami(ops.bob)["address"]
    out = ok(ops.run(ops.alice, "can-message", bob))
    assert "1 installation" in out and f"found on {ops.r3}" in out  # not on Alice's home relay R1
    # PARLEY_DIRECTORY_RELAYS replaces the configured directory: without R3, Bob is nowhere Alice asks.
    r = parley(ops.alice, "can-message", bob, PARLEY_DIRECTORY_RELAYS=ops.r1, PARLEY_CA_BUNDLE=ops.ca_bundle)
    one_line(r, 3, "not registered", ops.r1)
    env_relays = parley(ops.alice, "relays", "--json", PARLEY_DIRECTORY_RELAYS=f"{ops.r1}, {ops.r3}/")
    assert json.loads(env_relays.stdout)["directory"] == [ops.r3]  # R1 is a home relay already; the / is canonicalised


def test_moving_house_while_the_daemon_runs(ops: Operators) -> None:
    """`parley relays set` reaches the running daemon: it publishes the new list and reads the new
    relay at once, and keeps reading the old one."""
    heidi = ops.d / "heidi"
    ops.run(heidi, "init", "--relay", ops.r2)
    ops.run(heidi, "relays", "directory", ops.r3)
    daemon, _ = start_bridge(heidi, free_port(), None, PARLEY_CA_BUNDLE=ops.ca_bundle)
    try:
        daemon.expect(f"on {ops.r2}")
        ops.run(heidi, "relays", "set", ops.r3)
        daemon.expect(f"subscribed to .* on {ops.r3}")
        status = json.loads(ok(ops.run(heidi, "status", "--json")))
        assert set(status["inbox"]["cursors"]) == {ops.r3, ops.r2}
        heidi_address = whoami(heidi)["address"]
        assert "sent " in ok(ops.run(ops.alice, "send", heidi_address, "to wherever you are now"))
        wait_for(lambda: conversation(ops, heidi, whoami(ops.alice)["address"]) == ["to wherever you are now"],
                 what="Heidi's daemon to receive live")
    finally:
        daemon.stop()
