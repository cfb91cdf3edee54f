"""Several relays (issue 10; PROTOCOL.md §6.6): discovery through a directory relay, delivery to the
recipient's inbox relays only, multi-home failover and exactly-once, moving house, and what a hostile
relay can (not) do with relay lists. Real relays (SQLite, werkzeug) on loopback, real engines."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.protocol import relaylist, wire
from bridge.relay.client import NotFound, RelayClient, RelayUnavailable
from tests.engines import close_engines, make_engine  # noqa: F401  (autouse fixture)
from tests.relay_fixtures import serve_relay

SECRET = "the plaintext nobody but Bob may read"


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[tuple[list[str], contextlib.ExitStack, list[contextlib.ExitStack]]]:
    """Three relays R1, R2, R3, each stoppable on its own (``stops[i].close()``)."""
    stops = [contextlib.ExitStack() for _ in range(3)]
    urls = [stops[i].enter_context(serve_relay(tmp_path / f"r{i + 1}.db")) for i in range(3)]
    with contextlib.ExitStack() as all_stops:
        for s in stops:
            all_stops.callback(s.close)
        yield urls, all_stops, stops


def engine(tmp_path: Path, name: str, home: list[str], directory: list[str], **kw: object) -> Engine:
    return make_engine(tmp_path / f"{name}.db", home[0], home_relays=home, directory_relays=directory, **kw)  # type: ignore[arg-type]


def texts(e: Engine, peer: str) -> list[str]:
    return [m["text"] for m in e.messages(peer)]


def identity_on(url: str, address: str) -> list[str]:
    r = requests.get(f"{url}/v1/identity/{address}", timeout=10)
    r.raise_for_status()
    return list(r.json()["records"])


def test_strangers_on_different_relays_find_each_other_through_the_directory(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, _ = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    # Each is on its home relay and the directory only.
    assert identity_on(r1, alice.address) and identity_on(r3, alice.address) and not identity_on(r2, alice.address)
    assert identity_on(r2, bob.address) and identity_on(r3, bob.address) and not identity_on(r1, bob.address)

    result = alice.send(bob.address, SECRET)
    assert result.delivered and result.message["state"] == "sent"
    # Delivered where Bob reads (R2), not on Alice's own relay.
    assert bob.sync() == 1
    assert texts(bob, alice.address) == [SECRET]
    # Bob learnt Alice's relays from the message itself: his reply asks no relay about her.
    assert alice.address not in bob.peers._looked_up
    assert bob.send(alice.address, "got it").delivered
    assert alice.sync() == 1
    assert texts(alice, bob.address) == [SECRET, "got it"]
    assert alice.address not in bob.peers._looked_up
    # No relay holds the plaintext (sealed envelopes only).
    for i in (1, 2, 3):
        with sqlite3.connect(tmp_path / f"r{i}.db") as db:
            dump = "\n".join(db.iterdump()).encode()
        assert SECRET.encode() not in dump and SECRET.encode().hex().encode() not in dump


def test_not_sent_while_no_relay_the_recipient_reads_takes_it(tmp_path: Path, relays) -> None:
    """The issue's bug: "sent" was printed when a relay Bob never reads took the message."""
    (r1, r2, r3), _, stops = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    alice.peers.lookup([bob.address])
    stops[1].close()  # R2, Bob's only relay, goes down; Alice's home relay is fine
    result = alice.send(bob.address, "are you there?")
    assert not result.delivered and result.message["state"] == "queued"
    assert r2 in (result.error or "")
    assert alice.pending_count() == 1


def test_multi_home_failover_and_exactly_once(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, stops = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2, r1], [r3])
    # Both up: the first message (a PreKey message) reaches R2 at once and R1 in the background.
    assert alice.send(bob.address, "one").delivered
    assert alice.pending_deliveries() == 1
    assert alice.retry_deliveries() == 1 and alice.pending_deliveries() == 0
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["one"]
    assert bob.quarantine_count() == 0  # the second copy of a PreKey message is not an attack
    # R2 dies: Alice's messages still arrive, through R1, exactly once.
    stops[1].close()
    for text in ("two", "three"):
        assert alice.send(bob.address, text).delivered
    assert bob.sync() == 2
    assert texts(bob, alice.address) == ["one", "two", "three"]
    assert bob.quarantine_count() == 0


def test_a_session_starts_while_the_primary_is_down(tmp_path: Path, relays) -> None:
    """The secondary home relay holds the signed and last-resort prekeys (no one-time keys)."""
    (r1, r2, r3), _, stops = relays
    bob = engine(tmp_path, "bob", [r2, r1], [r3])
    counts = RelayClient(r1).prekey_count(bob.installation_id)
    assert counts["otpk"] == 0 and counts["pq_otpk"] == 0  # one-time keys live on the primary only
    assert RelayClient(r2).prekey_count(bob.installation_id)["otpk"] > 0
    alice = engine(tmp_path, "alice", [r3], [r3])
    alice.peers.lookup([bob.address])
    stops[1].close()
    assert alice.send(bob.address, "first contact, primary down").delivered
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["first contact, primary down"]


def test_moving_house(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, _ = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    assert alice.send(bob.address, "before the move").delivered  # to R2
    # Bob moves to R3 and keeps reading R2 for the grace period.
    bob.set_relays([r3], [r3], reading=[r2])
    bob.register()
    assert relaylist.RelayList.decode(bob.relay_list()).version == 2
    assert alice.send(bob.address, "sent with the old list").delivered  # Alice still has v1: R2
    assert bob.sync() == 2
    # Alice's next scheduled pass finds the new list (on the directory, and on R2 where Bob was found).
    alice.peers.refresh()
    assert alice.inbox_relays(bob.installation_id) == [r3]
    assert alice.send(bob.address, "after the move").delivered
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["before the move", "sent with the old list", "after the move"]


def test_a_relay_cannot_roll_back_or_forge_a_relay_list(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, _ = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    old = bob.relay_list()
    bob.set_relays([r2, r1], [r3])
    bob.register()  # version 2, everywhere
    alice.peers.lookup([bob.address])
    assert alice.inbox_relays(bob.installation_id) == [r2, r1]
    # A relay serving the old version (stale or hostile) changes nothing; neither does a list signed
    # by another key, or one naming another installation, carried in a message.
    alice.peers._store(bob.address, [bob.record], alice.peers.clock(), relay_lists=[old], source=r3)
    assert alice.inbox_relays(bob.installation_id) == [r2, r1]
    forged = relaylist.RelayList(bob.address, bob.installation_id, 99, 0, ("https://evil.example",)).sign(alice.secrets.signing_key)
    alice.peers._store(bob.address, [bob.record], alice.peers.clock(), relay_lists=[forged], source=r3)
    assert alice.inbox_relays(bob.installation_id) == [r2, r1]
    with alice.store.write() as c:
        assert not alice.peers.accept_relay_list(c, bob.address, bob.installation_id, bob.local.signing_pub, forged)
        other = relaylist.RelayList(alice.address, alice.installation_id, 99, 0, ("https://evil.example",)).sign(alice.secrets.signing_key)
        assert not alice.peers.accept_relay_list(c, bob.address, bob.installation_id, alice.local.signing_pub, other)
    assert alice.inbox_relays(bob.installation_id) == [r2, r1]


def test_discovery_failure_names_each_relay(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, stops = relays
    bob = engine(tmp_path, "bob", [r2], [r3])
    alice = engine(tmp_path, "alice", [r1], [r3])
    stops[0].close()
    stops[2].close()
    with pytest.raises(Exception) as exc:
        alice.peers.lookup([bob.address])
    text = str(exc.value)
    assert r1 in text and r3 in text and "\n" not in text
    assert bob.address not in alice.peers._looked_up


def test_content_carries_the_senders_relay_list(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, _ = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    assert alice.send(bob.address, "hi").delivered
    bob.sync()
    rows = bob.store.read("SELECT record FROM peer_relay_lists WHERE installation_id = ?", (alice.installation_id,))
    assert [bytes(r["record"]) for r in rows] == [alice.relay_list()]
    assert wire.decode(alice.relay_list())[0] == 1


# --- discovery without a directory: the on-chain pointers (PROTOCOL.md §6.6) ----------------------


def _stranger_setup(tmp_path: Path, relays, pointers) -> tuple[Engine, Engine, str]:
    """Bob reads R2 only and publishes nowhere else; Alice's relays (R1, directory R3) know nothing of
    him; only ``pointers`` can lead her to R2."""
    (r1, r2, r3), _, _ = relays
    bob = engine(tmp_path, "bob", [r2], [])
    alice = engine(tmp_path, "alice", [r1], [r3], pointers=pointers)
    assert not identity_on(r1, bob.address) and not identity_on(r3, bob.address)
    return alice, bob, r2


def test_discovery_by_the_ens_text_record(tmp_path: Path, relays) -> None:
    from bridge.homerelays import pointer_lookup
    from tests.fakes.chain import ChainServer, EnsNames

    with ChainServer(chain_id=1) as chain:
        names = EnsNames(chain)
        cfg = {"eth_rpc_url": chain.url, "ens_registry": names.registry, "ens_universal_resolver": names.universal}
        alice, bob, r2 = _stranger_setup(tmp_path, relays, pointer_lookup(cfg, env={}))
        # No name yet: Bob cannot be found.
        assert not alice.installations_of(bob.address)
        names.set_addr("bob.eth", bob.address)
        names.set_reverse(bob.address, "bob.eth")
        names.set_text("bob.eth", "parley.relays", f"{r2}/ , javascript:alert(1)")
        alice.peers._looked_up.clear()  # the first-contact rate limit (a minute) has passed
        assert set(alice.installations_of(bob.address)) == {bob.installation_id}
        assert alice.send(bob.address, "found you on chain").delivered
        assert bob.sync() == 1 and texts(bob, alice.address) == ["found you on chain"]


def test_discovery_by_the_lens_account_attribute(tmp_path: Path, relays) -> None:
    from bridge.homerelays import pointer_lookup
    from tests.fakes.names import LensApi

    with LensApi() as lens:
        alice, bob, r2 = _stranger_setup(tmp_path, relays, pointer_lookup({"lens_api_url": lens.url}, env={}))
        lens.accounts["bob"] = (bob.address, bob.address)
        lens.set_attributes(bob.address, {"website": "https://bob.example", "parley.relays": r2})
        assert set(alice.installations_of(bob.address)) == {bob.installation_id}
        assert alice.send(bob.address, "found you on Lens").delivered
        assert bob.sync() == 1 and texts(bob, alice.address) == ["found you on Lens"]


def test_a_pointer_to_plain_http_on_another_machine_is_not_followed(tmp_path: Path, relays) -> None:
    from bridge.homerelays import pointer_lookup
    from tests.fakes.names import LensApi

    with LensApi() as lens:
        alice, bob, r2 = _stranger_setup(tmp_path, relays, pointer_lookup({"lens_api_url": lens.url}, env={}))
        lens.accounts["bob"] = (bob.address, bob.address)
        lens.set_attributes(bob.address, {"parley.relays": "http://relay.example.org"})
        lookup = pointer_lookup({"lens_api_url": lens.url}, env={})
        assert lookup is not None and lookup(bob.address) == []
        assert not alice.installations_of(bob.address)


def test_relay_pointers_are_on_by_default_and_off_asks_no_name_service(tmp_path: Path, relays) -> None:
    """A pointer lookup tells the ENS RPC / Lens API (public endpoints by default, issue 11) which wallet
    this IP is about to write to; `relay_pointers false` turns it off without turning off names."""
    from bridge.home import Home
    from bridge.homerelays import pointer_lookup
    from tests.fakes.names import LensApi

    assert Home(tmp_path / "fresh").config()["relay_pointers"] is True
    with LensApi() as lens:
        on = {"lens_api_url": lens.url}
        assert pointer_lookup(on, env={}) is not None and pointer_lookup({**on, "relay_pointers": True}, env={}) is not None
        off = {**on, "relay_pointers": False}
        assert pointer_lookup(off, env={}) is None
        alice, bob, r2 = _stranger_setup(tmp_path, relays, pointer_lookup(off, env={}))
        lens.accounts["bob"] = (bob.address, bob.address)
        lens.set_attributes(bob.address, {"parley.relays": r2})
        assert not alice.installations_of(bob.address)
        assert lens.requests == []  # the Lens API was never asked about Bob


def test_a_source_being_down_does_not_erase_what_the_cache_knows(tmp_path: Path, relays) -> None:
    """Bob was found on the directory; a pass while it is down (Alice's home relay answering "not
    here") must not take Bob's installations out of the cache, nor a first contact answer "not
    registered": the relay that would know could not be asked."""
    (r1, r2, r3), _, stops = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    carol = engine(tmp_path, "carol", [r2], [r3])
    assert set(alice.installations_of(bob.address)) == {bob.installation_id}
    stops[2].close()  # the directory goes down
    alice.peers.refresh()
    assert set(alice.peers.cached(bob.address) or {}) == {bob.installation_id}
    with pytest.raises(RelayUnavailable) as exc:
        alice.installations_of(carol.address)  # first contact: only the directory knows Carol
    assert carol.address in str(exc.value) and r3 in str(exc.value) and "\n" not in str(exc.value)
    result = alice.send(carol.address, "queued, not refused")
    assert not result.delivered and result.message["state"] == "queued"


def test_a_peer_cannot_point_a_public_bridge_into_its_own_network(tmp_path: Path) -> None:
    """A relay list (or pointer) naming 127.0.0.1 or a private address is not followed by a bridge
    whose own relays are public: it would make the bridge send requests into its own network."""
    from bridge.keys import generate_secrets

    alice = make_engine(tmp_path / "alice.db", "https://relay.example.org", register=False)
    bob = generate_secrets()
    for url in ("http://127.0.0.1:6379", "http://10.0.0.5:8080", "http://[::1]:8738", "http://localhost:8738", "https://192.168.1.2"):
        record = relaylist.RelayList(bob.address, bob.installation_id, 1, 0, (url, "https://relay.bob.example")).sign(bob.signing_key)
        with alice.store.write() as c:
            c.execute("DELETE FROM peer_relay_lists")
            assert alice.peers.accept_relay_list(c, bob.address, bob.installation_id, bob.signing_pub, record)
        assert alice.inbox_relays(bob.installation_id) == ["https://relay.bob.example"], url
        assert not alice.may_use(url)
    assert alice.may_use("https://relay.bob.example")
    # A bridge whose own relays are local (a test network, a private deployment) follows local ones.
    local = make_engine(tmp_path / "local.db", "http://127.0.0.1:9", register=False)
    assert local.may_use("http://10.0.0.5:8080")


def as_a_1_0_relay(app):  # type: ignore[no-untyped-def]
    """A WSGI wrapper that makes a relay answer as protocol 1.0 did: no relay-list route (404
    not_found), no ``relay_lists`` or ``minor`` in its answers."""
    import json as _json

    def wrapped(environ, start_response):  # type: ignore[no-untyped-def]
        if environ["PATH_INFO"].startswith("/v1/relay-list/"):
            body = b'{"error": {"code": "not_found", "message": "no such endpoint"}}'
            start_response("404 NOT FOUND", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        captured: dict[str, object] = {}

        def capture(status, headers, exc_info=None):  # type: ignore[no-untyped-def]
            captured.update(status=status, headers=headers)
            return lambda data: None

        raw = b"".join(app(environ, capture))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]  # type: ignore[union-attr]
        if raw.startswith(b"{"):
            data = _json.loads(raw)
            data.pop("minor", None)
            data.pop("relay_lists", None)
            for entry in data.get("logs", []) if isinstance(data.get("logs"), list) else []:
                entry.pop("relay_lists", None)
            raw = _json.dumps(data).encode()
        start_response(captured["status"], [*headers, ("Content-Length", str(len(raw)))])
        return [raw]

    return wrapped


def test_a_1_1_bridge_works_through_a_1_0_relay(tmp_path: Path) -> None:
    """§10.2: a 1.0 relay has no relay lists; 1.1 bridges sharing it still talk, both ways."""
    with serve_relay(tmp_path / "old.db", wrap=as_a_1_0_relay) as old:
        assert "minor" not in requests.get(f"{old}/v1/health", timeout=10).json()
        alice = engine(tmp_path, "alice", [old], [])
        bob = engine(tmp_path, "bob", [old], [])
        assert alice.send(bob.address, "over a 1.0 relay").delivered
        assert bob.sync() == 1
        assert bob.send(alice.address, "and back").delivered
        assert alice.sync() == 1
        assert texts(alice, bob.address) == ["over a 1.0 relay", "and back"]
        assert alice.inbox_relays(bob.installation_id) == [old]


def test_registering_while_the_primary_is_down_still_opens_the_other_home_relays(tmp_path: Path, relays) -> None:
    (r1, r2, r3), _, stops = relays
    stops[1].close()  # R2, Bob's primary, is down when Bob starts
    bob = engine(tmp_path, "bob", [r2, r1], [r3])  # registers: must not give up because of R2
    assert identity_on(r1, bob.address) and identity_on(r3, bob.address)
    alice = engine(tmp_path, "alice", [r3], [r3])
    assert alice.send(bob.address, "R2 was never up").delivered  # session from R1's signed prekeys
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["R2 was never up"]


def test_envelope_digests_are_pruned_after_twice_the_retention(tmp_path: Path, relays) -> None:
    from bridge.engine import engine as engine_mod
    from bridge.store import now_ms

    (r1, r2, r3), _, _ = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    with bob.store.write() as c:
        c.execute("INSERT INTO seen_envelopes(digest, at) VALUES (?, ?)", (b"old" * 8, now_ms() - engine_mod.SEEN_KEEP_MS - 1))
        c.execute("INSERT INTO seen_envelopes(digest, at) VALUES (?, ?)", (b"new" * 8, now_ms() - engine_mod.SEEN_KEEP_MS + 60_000))
    assert alice.send(bob.address, "the first envelope after a start prunes").delivered
    assert bob.sync() == 1
    kept = {bytes(r["digest"]) for r in bob.store.read("SELECT digest FROM seen_envelopes")}
    assert b"old" * 8 not in kept and b"new" * 8 in kept and len(kept) == 2


def test_a_revocation_reaches_the_directory_too(tmp_path: Path, relays) -> None:
    """Senders look a wallet up on the directory: a revocation only on the primary would leave the
    directory serving the revoked installation (and a sender who finds it there would encrypt to it)."""
    from bridge import identity

    (r1, r2, r3), _, _ = relays
    laptop = engine(tmp_path, "laptop", [r2, r1], [r3])
    phone = make_engine(tmp_path / "phone.db", r2, laptop.secrets.wallet_key, home_relays=[r2, r1], directory_relays=[r3])
    revocation = identity.sign_statement(identity.revoke_statement(laptop.address, phone.installation_id), laptop.secrets.wallet_key)
    laptop.publish_record(laptop.address, revocation.to_record())
    for url in (r2, r1, r3):
        records = [wire.b64d(r) for r in requests.get(f"{url}/v1/identity/{laptop.address}", timeout=10).json()["records"]]
        active = identity.installations(laptop.address, records)
        assert set(active) == {laptop.installation_id}, url


def test_sync_reports_what_it_could_not_send_not_what_another_caller_queued_meanwhile(tmp_path: Path, relays, monkeypatch) -> None:
    """CI: `parley sync` beside concurrent `send`s exited 3 ("1 waiting to be sent") for a message a
    send had queued after the sync's flush began: that message was the send's to deliver."""
    (r1, r2, r3), _, stops = relays
    alice = engine(tmp_path, "alice", [r1], [r3])
    bob = engine(tmp_path, "bob", [r2], [r3])
    alice.peers.lookup([bob.address])
    flush = alice.flush_outbox

    def flush_then_another_caller_queues(**kw: object) -> dict[str, str]:
        errors = flush(**kw)  # type: ignore[arg-type]
        alice.queue(bob.address, "queued by a concurrent send")
        return errors

    monkeypatch.setattr(alice, "flush_outbox", flush_then_another_caller_queues)
    assert alice.sync_report() == {"received": 0, "pending": 0}
    assert alice.pending_count() == 1  # it is there, for its own caller (or the next flush)
    # That message was queued before the next sync: when it cannot go out, the sync reports it.
    stops[1].close()  # R2, Bob's only relay
    report = alice.sync_report()
    assert report["pending"] == 1 and alice.pending_count() == 2


def topics_on(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT topic FROM envelopes ORDER BY cursor")]


@pytest.mark.parametrize("alice_home", [0, 1, 2], ids=["alice-on-the-laptops-relay", "alice-on-the-phones-relay", "alice-on-the-directory"])
def test_one_wallet_with_installations_on_different_relays(tmp_path: Path, relays, alice_home: int) -> None:
    """A wallet's installations may list different relays (issue 10, item 2): a laptop reads R1, a phone
    of the same wallet reads R2. Alice sends once; each installation's envelope goes to its own inbox
    relay only, and both read the message, whichever of the three relays Alice asks: a sender stops at
    the first relay that has a log for the address, so each installation's registration completes the
    wallet's log on its relays and on the other's (PROTOCOL.md §6.6)."""
    urls, _, _ = relays
    r1, r2, r3 = urls
    wallet = generate_secrets().wallet_key
    laptop = make_engine(tmp_path / "laptop.db", r1, wallet, home_relays=[r1], directory_relays=[r3])
    phone = make_engine(tmp_path / "phone.db", r2, wallet, home_relays=[r2], directory_relays=[r3])
    assert laptop.address == phone.address
    alice = engine(tmp_path, "alice", [urls[alice_home]], [r3])
    result = alice.send(laptop.address, SECRET)
    assert result.delivered and alice.pending_deliveries() == 0 and alice.pending_count() == 0
    assert alice.inbox_relays(laptop.installation_id) == [r1] and alice.inbox_relays(phone.installation_id) == [r2]
    # R1 holds the laptop's envelope and R2 the phone's, nothing else (R3 none: it is nobody's inbox relay).
    assert topics_on(tmp_path / "r1.db") == [laptop.topic]
    assert topics_on(tmp_path / "r2.db") == [phone.topic]
    assert topics_on(tmp_path / "r3.db") == []
    assert laptop.sync() == 1 and phone.sync() == 1
    assert texts(laptop, alice.address) == texts(phone, alice.address) == [SECRET]
    assert laptop.sync() == phone.sync() == 0


def test_a_revocation_reaches_the_relays_of_the_wallets_other_installations(tmp_path: Path, relays) -> None:
    """The laptop (on R1) is stolen; the phone (on R2) revokes it. R1 holds the wallet's log too (the
    phone's registration completed it there): it must not go on serving the laptop to senders."""
    from bridge import identity

    (r1, r2, r3), _, _ = relays
    wallet = generate_secrets().wallet_key
    laptop = make_engine(tmp_path / "laptop.db", r1, wallet, home_relays=[r1], directory_relays=[r3])
    phone = make_engine(tmp_path / "phone.db", r2, wallet, home_relays=[r2], directory_relays=[r3])
    revocation = identity.sign_statement(identity.revoke_statement(phone.address, laptop.installation_id), wallet)
    phone.publish_record(phone.address, revocation.to_record())
    for url in (r1, r2, r3):
        records = [wire.b64d(r) for r in requests.get(f"{url}/v1/identity/{phone.address}", timeout=10).json()["records"]]
        assert set(identity.installations(phone.address, records)) == {phone.installation_id}, url


def test_a_refusal_names_the_relay_and_the_reason(tmp_path: Path) -> None:
    """A relay's 4xx refusal is one line naming the relay, as its being unreachable is (issue 10, "Failures")."""
    from tests.relay_fixtures import unlimited_settings

    with serve_relay(tmp_path / "full.db", unlimited_settings(topic_max_envelopes=1)) as url:
        alice, bob = engine(tmp_path, "alice", [url], []), engine(tmp_path, "bob", [url], [])
        assert alice.send(bob.address, "fills Bob's inbox").delivered
        over = alice.send(bob.address, "one too many")
        assert not over.delivered and over.message["state"] == "queued"
        assert (over.error or "").startswith(f"relay {url} refused: inbox_full: "), over.error
        assert (over.error or "").endswith("(HTTP 429)") and "\n" not in (over.error or "")
        with pytest.raises(NotFound) as exc:
            RelayClient(url).claim("0" * 32)
        assert str(exc.value).startswith(f"relay {url} refused: no_prekeys: ") and str(exc.value).endswith("(HTTP 404)")
        assert (exc.value.status, exc.value.code) == (404, "no_prekeys")
    with pytest.raises(RelayUnavailable) as down:
        RelayClient(url).health()
    assert str(down.value).startswith(f"relay {url} unavailable: ")  # the same shape
