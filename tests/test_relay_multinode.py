"""Two real relay processes on one PostgreSQL database (docs/PROTOCOL.md §7 "Storage and several
relay nodes"): identity, prekeys, auth and live delivery work across nodes, and two bridges talking
through different nodes exchange messages.

Each test uses a fresh schema that is dropped afterwards. Without a PostgreSQL server the tests skip
(under ``CI=true`` they fail).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.daemon import DaemonClient
from bridge.home import Home
from bridge.protocol.prekeys import Bundle
from bridge.relay.client import Envelope, RelayClient, RelayError
from tests.procs import Proc, parley, start_bridge, start_relay, wait_for, whoami
from tests.relay_fixtures import (
    WALLET_ADDRESS,
    authorize_record,
    make_installation,
    make_upload,
    postgres_schema,
)

pytestmark = pytest.mark.slow

WALLET_A = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # Hardhat account #1
WALLET_B = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # Hardhat account #2


@pytest.fixture
def pg_db() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def two_nodes(pg_db: str, procs: list[Proc]) -> Iterator[tuple[RelayClient, RelayClient]]:
    """Relay nodes A and B (separate processes) on one database; a client for each."""
    proc_a, url_a = start_relay(pg_db)  # type: ignore[arg-type]  # start_relay passes --db through
    procs.append(proc_a)
    proc_b, url_b = start_relay(pg_db)  # type: ignore[arg-type]
    procs.append(proc_b)
    assert url_a != url_b
    a, b = RelayClient(url_a, timeout=15.0), RelayClient(url_b, timeout=15.0)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        for p in reversed(procs):  # stop the relays before the schema is dropped
            p.stop()


def test_identity_and_prekeys_across_nodes_each_key_claimed_once(two_nodes: tuple[RelayClient, RelayClient]) -> None:
    a, b = two_nodes
    inst = make_installation()
    record = authorize_record(inst)
    assert a.publish_identity(WALLET_ADDRESS, record) == 1
    assert b.identity(WALLET_ADDRESS) == [record]
    assert b.publish_identity(WALLET_ADDRESS, record) == 1  # already there: de-duplicated across nodes
    n = 24
    assert a.upload_prekeys(inst.iid, make_upload(inst, otpk_ids=range(n), pq_ids=range(n), issued_at=1)) == {"otpk": n, "pq_otpk": n}
    assert b.prekey_count(inst.iid) == {"otpk": n, "pq_otpk": n}
    got: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claimer(base_url: str) -> None:
        c = RelayClient(base_url, timeout=15.0)
        try:
            barrier.wait()
            for _ in range(5):
                bundle = Bundle.decode(c.claim(inst.iid))
                bundle.verify(inst.signing_pub)
                if bundle.otpk is not None:
                    with lock:
                        got.append(bundle.otpk.pub)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=claimer, args=(c.base_url,)) for c in (a, b) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(got) == n and len(set(got)) == n  # 30 claims over two nodes: 24 keys, each handed out once
    assert a.prekey_count(inst.iid) == {"otpk": 0, "pq_otpk": 0}


def test_token_from_one_node_works_on_the_other_and_challenges_are_single_use(two_nodes: tuple[RelayClient, RelayClient]) -> None:
    a, b = two_nodes
    inst = make_installation()
    a.publish_identity(WALLET_ADDRESS, authorize_record(inst))
    token = a.authenticate(inst.iid, inst.signing_priv)
    c1 = a.publish(inst.topic, b"published on A")
    assert [e.payload for e in b.fetch(inst.topic, 0, token=token)] == [b"published on A"]
    with pytest.raises(RelayError) as exc:
        b.fetch(inst.topic, 0, token=token + "x")
    assert exc.value.code == "unauthorized"
    # a challenge issued by A, answered on B, cannot be answered again on A
    from bridge.crypto import primitives as P
    from bridge.protocol import wire
    from bridge.relay.auth import auth_message

    ch = a._call("POST", "/v1/auth/challenge", body={"installation_id": inst.iid})["challenge"]
    body = {
        "installation_id": inst.iid,
        "challenge": ch,
        "signature": wire.b64e(P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, wire.b64d(ch)))),
    }
    token_b = b._call("POST", "/v1/auth/token", body=body)["token"]
    with pytest.raises(RelayError) as exc:
        a._call("POST", "/v1/auth/token", body=body)
    assert exc.value.code == "unauthorized"
    assert [e.cursor for e in a.fetch(inst.topic, 0, token=token_b)] == [c1]


def test_subscriber_on_one_node_receives_live_what_is_published_through_the_other(two_nodes: tuple[RelayClient, RelayClient]) -> None:
    a, b = two_nodes
    inst = make_installation()
    b.publish_identity(WALLET_ADDRESS, authorize_record(inst))
    c0 = b.publish(inst.topic, b"backlog")
    token = b.authenticate(inst.iid, inst.signing_priv)  # issued by B, used on A
    received: queue.Queue[Envelope] = queue.Queue()
    with a.subscribe(inst.topic, 0, token=token) as sub:
        first = sub.receive(10.0)
        assert first is not None and (first.cursor, first.payload) == (c0, b"backlog")

        def reader() -> None:
            for env in sub:
                received.put(env)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        published = []
        for i in range(30):  # through B, received live on A
            published.append((b.publish(inst.topic, b"live-%d" % i), b"live-%d" % i))
        got = [received.get(timeout=10.0) for _ in published]  # deadline per envelope, no sleeps
        assert [(e.cursor, e.payload) for e in got] == published
        assert sub.cursor == published[-1][0]
    t.join(10)


def test_two_bridges_on_different_nodes_exchange_messages(tmp_path: Path, two_nodes: tuple[RelayClient, RelayClient], procs: list[Proc]) -> None:
    a, b = two_nodes
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    parley(alice_home, "init", "--private-key-env", "TEST_WALLET_KEY", "--relay", a.base_url, check=True, TEST_WALLET_KEY=WALLET_A)
    parley(bob_home, "init", "--private-key-env", "TEST_WALLET_KEY", "--relay", b.base_url, check=True, TEST_WALLET_KEY=WALLET_B)
    alice, bob = whoami(alice_home), whoami(bob_home)
    assert parley(alice_home, "can-message", bob["address"]).returncode == 0  # Bob registered on B, seen on A
    a_proc, _ = start_bridge(alice_home, relay=a.base_url)
    procs.append(a_proc)
    a_proc.expect("subscribed to")
    b_proc, _ = start_bridge(bob_home, relay=b.base_url)
    procs.append(b_proc)
    b_proc.expect("subscribed to")
    a_ctl, b_ctl = DaemonClient.find(Home(alice_home)), DaemonClient.find(Home(bob_home))
    assert a_ctl is not None and b_ctl is not None
    sent: dict[str, list[str]] = {"a2b": [], "b2a": []}
    for i in range(25):
        for direction, ctl, peer in (("a2b", a_ctl, bob), ("b2a", b_ctl, alice)):
            text = f"{direction}-{i:03d}"
            assert ctl.send(peer["address"], text)["delivered"]
            sent[direction].append(text)

    def conversation(home: Path, peer: str) -> list[dict[str, object]]:
        return json.loads(parley(home, "messages", peer, "--json", check=True).stdout)

    for home, peer in ((alice_home, bob), (bob_home, alice)):
        view = wait_for(lambda: (v := conversation(home, peer["address"])) and len(v) >= 50 and v, timeout=60, interval=0.3,
                        what=f"{home.name} to have all 50 messages")
        ids = [m["id"] for m in view]
        assert len(ids) == len(set(ids)) == 50, "a message was lost or shown twice"
        assert [m["text"] for m in view if m["sender"] == alice["address"]] == sent["a2b"]
        assert [m["text"] for m in view if m["sender"] == bob["address"]] == sent["b2a"]
