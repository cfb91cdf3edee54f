"""Issue 8 item 2 (the relay learns who sends) and the revocation-check cache (issue 8, low item).

A relay is an observer: it logs every request with its time and path. These tests play a scripted
exchange between two real engines (real SQLite stores) through a real relay (create_app served by
werkzeug on 127.0.0.1 in a thread, every request recorded) and read that log the way a curious relay
operator would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import request
from werkzeug.serving import make_server

from bridge import identity
from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.protocol import wire
from bridge.protocol.content import PAD_FLOOR, TextContent, pad, padded_size, unpad
from bridge.protocol.ids import address_bucket
from bridge.protocol.wire import WireError
from bridge.relay.client import RelayClient, RelayError
from bridge.relay.server import RelaySettings, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.relay.storage import Storage
from tests.engines import OPEN, befriend, close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.exact import raises_exactly
from tests.relay_fixtures import STORAGE_BACKENDS, storage_backend, wait_until
from tests.vectors_loader import cases, error_class, h, load

FAST = 1e6  # every client shares 127.0.0.1: lift the per-address rate limits


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() when the relay saw it
    method: str
    path: str
    size: int  # request body bytes


class LoggingRelay:
    """A real relay whose every request is recorded (what a relay operator's access log shows)."""

    def __init__(self, db: Path) -> None:
        self.storage = SQLiteStorage(str(db))
        settings = RelaySettings(
            publish_rate=FAST, publish_burst=10**6, claim_rate=FAST, claim_burst=10**6,
            auth_rate=FAST, auth_burst=10**6, identity_rate=FAST, identity_burst=10**6,
        )
        app = create_app(self.storage, settings=settings)
        self.log: list[Request] = []
        self.payload_sizes: list[int] = []
        self._lock = threading.Lock()

        @app.before_request
        def _record() -> None:
            body = request.get_data(cache=True) if request.method in ("POST", "PUT") else b""
            with self._lock:
                self.log.append(Request(time.monotonic(), request.method, request.path, len(body)))
                if request.method == "POST" and request.path == "/v1/envelopes":
                    self.payload_sizes.append(len(wire.b64d(json.loads(body)["payload"])))

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def mark(self) -> int:
        with self._lock:
            return len(self.log)

    def since(self, mark: int) -> list[Request]:
        with self._lock:
            return list(self.log[mark:])

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()
        self.storage.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[LoggingRelay]:
    r = LoggingRelay(tmp_path / "relay.db")
    yield r
    r.close()


def bucket_of(address: str) -> str:
    return hashlib.sha256(address.encode("ascii")).hexdigest()


def names(req: Request, address: str, iids: set[str]) -> bool:
    """Does this request name ``address``: its identity log, its k-anonymous bucket (on this tiny relay
    every bucket holds one or two addresses, so a bucket names its address), or one of its installations?"""
    parts = req.path.split("/")
    if req.path.lower().startswith("/v1/identity/"):
        return parts[3].lower() == address.lower()
    if req.path.startswith("/v1/identity-bucket/"):
        return bucket_of(address).startswith(parts[3])
    if req.path.startswith("/v1/prekeys/"):
        return parts[3] in iids
    return False


def texts(eng: Engine, peer: str) -> list[str]:
    return [m["text"] for m in eng.messages(peer)]


# --- item 2: no identity lookup naming a party is tied in time to a message ------------------------


def test_relay_log_does_not_tie_identity_lookups_to_a_send_or_a_receipt(tmp_path: Path, relay: LoggingRelay) -> None:
    alice = make_engine(tmp_path / "alice.db", relay.url)
    bob = make_engine(tmp_path / "bob.db", relay.url)
    # Before any message: Alice looks Bob up (first contact: the DM button's canMessage), and each
    # daemon has run its first scheduled refresh pass (bridge/engine/peers.py), which caches its own log.
    assert alice.can_message(bob.address)
    assert alice.address in alice.peers.refresh() and bob.address in bob.peers.refresh()

    start = relay.mark()
    # The scripted exchange: Alice writes, Bob reads and answers, Alice reads and writes again.
    assert alice.send(bob.address, "hi Bob").delivered
    assert alice.send(bob.address, "are you there?").delivered
    assert bob.sync() == 2
    assert bob.send(alice.address, "yes, hello Alice").delivered
    assert alice.sync() == 1
    assert alice.send(bob.address, "good").delivered
    assert bob.sync() == 1
    exchange = relay.since(start)

    assert texts(bob, alice.address) == ["hi Bob", "are you there?", "yes, hello Alice", "good"]
    assert texts(alice, bob.address) == ["hi Bob", "are you there?", "yes, hello Alice", "good"]
    messages = [r for r in exchange if r.path == "/v1/envelopes" or r.path.startswith("/v1/envelopes/")]
    assert len([r for r in messages if r.method == "POST"]) == 4
    # No identity lookup naming either party (by address or by bucket) during the whole exchange.
    for who, address in (("Alice", alice.address), ("Bob", bob.address)):
        tied = [f"{r.method} {r.path}" for r in exchange if r.path.startswith("/v1/identity") and names(r, address, set())]
        assert tied == [], f"the relay saw identity lookups naming {who} during the exchange: {tied}"
    # Prekey requests: only the first-contact claim of Bob's bundle (Alice's first message to him: it
    # names the recipient, whose topic the relay sees anyway) and Bob topping up his own prekeys.
    prekeys = [f"{r.method} {r.path}" for r in exchange if r.path.startswith("/v1/prekeys/")]
    assert not [p for p in prekeys if alice.installation_id in p]
    assert [p for p in prekeys if p.endswith("/claim")] == [f"POST /v1/prekeys/{bob.installation_id}/claim"]

    # Bob now tracks Alice (from her statement) and checks her log at his next scheduled pass, by bucket.
    later = relay.mark()
    assert alice.address in bob.peers.refresh()
    asked = [r.path for r in relay.since(later)]
    assert asked and all(p.startswith("/v1/identity-bucket/") for p in asked)
    assert f"/v1/identity-bucket/{bucket_of(alice.address)[:2]}" in asked


def test_cli_lookups_name_a_bucket_never_the_address(tmp_path: Path, relay: LoggingRelay) -> None:
    """`parley can-message` and the candidate check of `parley send NAME` (several candidates) ask about
    addresses a user is about to write to: by bucket (PROTOCOL.md §6.5), never ``GET /v1/identity/<address>``,
    which would tell the relay who is about to write to whom. Real processes; the relay logs every path."""
    from eth_account import Account

    from tests.fakes.names import LensApi
    from tests.procs import parley, whoami

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        parley(home, "init", "--relay", relay.url, check=True)
    bob_address, account = whoami(bob)["address"], Account.create().address  # Bob's Lens account: not registered
    with LensApi() as lens:
        lens.accounts["bob"] = (account, bob_address)
        start = relay.mark()
        r = parley(alice, "can-message", bob_address, check=True)
        assert f"{bob_address} can receive messages (1 installation; found on {relay.url})" in r.stdout
        r = parley(alice, "can-message", "lens:bob", check=True, PARLEY_LENS_API_URL=lens.url)
        assert f"owner {bob_address} (registered)" in r.stdout and "1 installation" in r.stdout
        r = parley(alice, "send", "lens:bob", "hi", check=True, PARLEY_LENS_API_URL=lens.url)
        assert f"lens:bob → {bob_address} (lens, 2 candidates: account {account}, owner {bob_address} (registered)" in r.stdout
        assert "sent " in r.stdout
        r = parley(alice, "can-message", account, PARLEY_LENS_API_URL=lens.url)
        assert r.returncode == 3 and f"{account} is not registered on {relay.url}" in r.stderr
    asked = relay.since(start)
    for address in (bob_address, account):
        by_address = [f"{q.method} {q.path}" for q in asked if q.path.lower() == f"/v1/identity/{address.lower()}"]
        assert by_address == [], f"the relay was asked about {address} by address: {by_address}"
        assert any(q.path == f"/v1/identity-bucket/{bucket_of(address)[:2]}" for q in asked), address


# --- item 2: padding ------------------------------------------------------------------------------


def test_envelope_size_does_not_reveal_text_length(tmp_path: Path, relay: LoggingRelay) -> None:
    alice = make_engine(tmp_path / "alice.db", relay.url)
    bob = make_engine(tmp_path / "bob.db", relay.url)
    assert alice.send(bob.address, "x").delivered  # both PreKey messages: same framing, only the text differs
    assert alice.send(bob.address, "y" * 200).delivered
    short, long = relay.payload_sizes[-2:]
    assert short == long, f"envelopes of 1 and 200 characters are {short} and {long} bytes on the relay"
    assert bob.sync() == 2
    assert texts(bob, alice.address) == ["x", "y" * 200]


# --- low item: the revocation check re-verified whole logs, once per unknown installation ----------


class CountingVerifier:
    """The EOA verifier, counting every signature check (4.9 ms each in pure Python)."""

    def __init__(self) -> None:
        self.checks = 0
        self._inner = identity.EOAVerifier()

    def check(self, statement: identity.Statement, text: str, signature: bytes) -> None:
        self.checks += 1
        self._inner.check(statement, text, signature)


def identity_lookups(reqs: list[Request], address: str) -> list[str]:
    return [f"{r.method} {r.path}" for r in reqs if r.path.startswith("/v1/identity") and names(r, address, set())]


def test_rechecking_an_unchanged_log_verifies_nothing_again(tmp_path: Path, relay: LoggingRelay) -> None:
    wallet = generate_secrets().wallet_key
    for i in range(3):  # a log of three authorizations
        make_engine(tmp_path / f"alice{i}.db", relay.url, wallet)
    alice_address = OPEN[-1].address
    verifier = CountingVerifier()
    bob = make_engine(tmp_path / "bob.db", relay.url, verifier=verifier)
    start = relay.mark()
    assert len(bob.installations_of(alice_address)) == 3  # first contact: Alice's log is fetched and verified
    bob.peers.refresh()  # a scheduled pass (also reads Bob's own log)
    first = verifier.checks
    assert first >= 3
    bob.peers.refresh()  # the next pass: the logs are unchanged
    assert len(bob.installations_of(alice_address)) == 3
    assert len(identity_lookups(relay.since(start), alice_address)) == 3  # the log was fetched again...
    assert verifier.checks == first, "...and every unchanged record was verified again"


def test_verify_cache_keeps_an_eoa_refusal_but_asks_a_chain_again() -> None:
    """An EOA signature check is a pure function: a forged record repeated by a peer is refused from
    memory (one slow recovery, not one per copy). A smart account's refusal may turn into an acceptance
    (its owner just added this signer on chain): that verifier is asked again."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from bridge.engine.peers import CachingVerifier

    s = generate_secrets()
    st = identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub)
    forged = bytes(Account.sign_message(encode_defunct(text=st.text()), generate_secrets().wallet_key).signature)
    eoa = CachingVerifier(None, clock=lambda: 0)
    for _ in range(3):
        with pytest.raises(identity.BadSignature):
            eoa.check(st, st.text(), forged)
    assert eoa.checks == 1

    class OnChain:
        """Stands for a chain-reading verifier (it has checked_blocks): refuses until the signer is added."""

        signer_added = False

        def check(self, statement: identity.Statement, text: str, signature: bytes) -> None:
            if not self.signer_added:
                raise identity.BadSignature("not a signer of this account (yet)")

        def checked_blocks(self, records: Any) -> dict[str, int]:
            return {}

    chain = OnChain()
    smart = CachingVerifier(chain, clock=lambda: 0)  # type: ignore[arg-type]
    with pytest.raises(identity.BadSignature):
        smart.check(st, st.text(), forged)
    chain.signer_added = True
    smart.check(st, st.text(), forged)  # accepted now: the refusal was not kept
    assert smart.checks == 2


def test_messages_from_unknown_installations_cause_at_most_one_fetch(tmp_path: Path, relay: LoggingRelay) -> None:
    wallet = generate_secrets().wallet_key
    mallory = make_engine(tmp_path / "m0.db", relay.url, wallet)
    bob = make_engine(tmp_path / "bob.db", relay.url)
    befriend(mallory, bob)  # five messages: not a message request (issue 12)
    assert bob.can_message(mallory.address)  # Bob knows Mallory's one installation
    # Five more installations, each with a statement signed by Mallory's wallet but never published to
    # her log (so they stay unknown), write to Bob: each one used to make Bob re-fetch and re-verify
    # Mallory's whole log.
    others = [make_engine(tmp_path / f"m{i}.db", relay.url, wallet, register=False) for i in range(1, 6)]
    for i, m in enumerate(others):
        assert m.send(bob.address, f"hello {i}").delivered
    start = relay.mark()
    bob.sync()
    lookups = identity_lookups(relay.since(start), mallory.address)
    assert len(lookups) <= 1, f"{len(lookups)} fetches of one address for five messages: {lookups}"
    # They were accepted on their statements and are re-checked by the next scheduled pass: one
    # lookup for the five, which finds none of them in Mallory's log, so all five are flagged.
    received = bob.messages(mallory.address)
    assert len(received) == 5 and bob.peers.pending_rechecks() == 5
    start = relay.mark()
    bob.peers.refresh()
    assert len(identity_lookups(relay.since(start), mallory.address)) == 1
    assert all("not registered" in (bob.peers.flag(m["id"]) or "") for m in received)
    assert bob.peers.pending_rechecks() == 0
    # Until the next pass, those installations are refused at once, still without a lookup.
    assert others[0].send(bob.address, "once more").delivered
    start = relay.mark()
    assert bob.sync() == 0
    assert identity_lookups(relay.since(start), mallory.address) == []


def revoke(eng: Engine) -> None:
    signed = identity.sign_statement(identity.revoke_statement(eng.address, eng.installation_id), eng.secrets.wallet_key)
    eng.relay.publish_identity(eng.address, signed.to_record())


def test_revoked_installation_is_not_looked_up_at_receipt_and_is_flagged_by_the_next_scheduled_pass(
    tmp_path: Path, relay: LoggingRelay
) -> None:
    wallet = generate_secrets().wallet_key
    laptop = make_engine(tmp_path / "laptop.db", relay.url, wallet)
    stolen = make_engine(tmp_path / "stolen.db", relay.url, wallet)
    bob = make_engine(tmp_path / "bob.db", relay.url)
    assert bob.can_message(laptop.address)
    bob.peers.refresh()
    assert set(bob.peers.cached(laptop.address) or {}) == {laptop.installation_id, stolen.installation_id}
    # The owner revokes a stolen installation; its thief still holds a valid statement and writes to Bob.
    revoke(stolen)
    assert stolen.send(bob.address, "send the money to 0xdead").delivered
    start = relay.mark()
    assert bob.sync() == 1
    assert identity_lookups(relay.since(start), laptop.address) == []  # nothing asked at receipt
    (msg,) = bob.messages(laptop.address)
    assert bob.peers.flag(msg["id"]) is None and bob.peers.pending_rechecks() == 1
    flagged: list[dict[str, Any]] = []
    bob.listeners.append(lambda ev, payload: flagged.append(payload) if ev == "message.flagged" else None)
    bob.peers.refresh()  # the next scheduled pass reads the log: the installation is revoked
    reason = bob.peers.flag(msg["id"])
    assert reason == f"sender installation {stolen.installation_id} is revoked"  # the warning the user reads
    assert flagged == [{"id": msg["id"], "reason": reason}]
    # Every view shows the warning: the conversation as the CLI, the RPC and the inbox page read it.
    assert msg["flag"] is None and [m["flag"] for m in bob.messages(laptop.address)] == [reason]
    from bridge.engine import MESSAGES_WITH_FLAGS, message_dict

    listed = [message_dict(r) for r in bob.store.read(f"{MESSAGES_WITH_FLAGS} WHERE m.peer = ?", (laptop.address,))]
    assert [m["flag"] for m in listed] == [reason]
    assert set(bob.peers.cached(laptop.address) or {}) == {laptop.installation_id}
    # From now on the revoked installation is refused at once, still without asking the relay.
    assert stolen.send(bob.address, "again").delivered
    start = relay.mark()
    assert bob.sync() == 0
    assert identity_lookups(relay.since(start), laptop.address) == []
    (failure,) = bob.store.read("SELECT error FROM quarantine")
    assert "revoked" in failure["error"]
    assert [m["text"] for m in bob.messages(laptop.address)] == ["send the money to 0xdead"]


# --- the relay's k-anonymous identity lookup: GET /v1/identity-bucket/<prefix> ----------------------



@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with storage_backend(request.param, tmp_path) as st:
        yield st


def _address(i: int) -> str:
    return identity.checksum_address("0x" + hashlib.sha256(f"addr{i}".encode()).hexdigest()[:40])


def _append(storage: Storage, address: str, record_id: str, record: bytes) -> None:
    """Append a record whose index entry names an installation of its own (the bucket ignores the index)."""
    from bridge.relay.storage import IdentityEntry

    iid = hashlib.sha256(record_id.encode()).hexdigest()[:32]
    storage.append_identity(address, record_id, record, IdentityEntry("authorize", iid, b"s" * 32, b"x" * 32), max_records=256)


def test_storage_bucket_returns_every_log_of_the_bucket_and_nothing_else(storage: Storage) -> None:
    addresses = [_address(i) for i in range(600)]
    for i, a in enumerate(addresses):
        for n in range(1 + i % 3):
            _append(storage, a, f"{a}/{n}", f"record {n} of {a}".encode())
    target = addresses[7]
    prefix = address_bucket(target)[:2]
    expected = {a for a in addresses if address_bucket(a).startswith(prefix)}
    assert 1 < len(expected) < 10  # 600 addresses over 256 buckets
    logs = storage.identity_bucket(prefix, max_addresses=64, max_records=1024)
    assert logs is not None and set(logs) == expected
    for a, recs in logs.items():
        i = addresses.index(a)
        assert recs == [f"record {n} of {a}".encode() for n in range(1 + i % 3)]  # append order
    # Longer prefixes narrow the bucket; an unused one is empty.
    assert set(storage.identity_bucket(address_bucket(target)[:16], max_addresses=64, max_records=1024) or {}) == {target}
    unused = next(p for p in (f"{n:04x}" for n in range(65536)) if not any(address_bucket(a).startswith(p) for a in addresses))
    assert storage.identity_bucket(unused, max_addresses=64, max_records=1024) == {}
    # Over a cap the answer is refused (None), never silently cut.
    assert storage.identity_bucket(prefix, max_addresses=len(expected) - 1, max_records=1024) is None
    total = sum(len(v) for v in logs.values())
    assert storage.identity_bucket(prefix, max_addresses=64, max_records=total - 1) is None
    assert storage.identity_bucket(prefix, max_addresses=len(expected), max_records=total) == logs
    # A record appended after a lookup is in the next one.
    _append(storage, target, f"{target}/new", b"a new record")
    after = storage.identity_bucket(prefix, max_addresses=64, max_records=1024)
    assert after is not None and after[target][-1] == b"a new record"
    newcomer = next(a for a in (_address(i) for i in range(600, 100000)) if address_bucket(a).startswith(prefix))
    _append(storage, newcomer, "n/0", b"first record of a newcomer")
    assert set(storage.identity_bucket(prefix, max_addresses=64, max_records=1024) or {}) == expected | {newcomer}


def test_bucket_route_checks_the_prefix_and_caps_the_answer(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    try:
        app = create_app(storage, settings=RelaySettings(bucket_max_addresses=2))
        client = app.test_client()
        for bad in ("A1", "1", "0" * 17, "zz", "ab/cd", "%C3%A9a", "%EF%BC%91%EF%BC%92"):
            r = client.get(f"/v1/identity-bucket/{bad}")
            assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_prefix", bad
        r = client.get("/v1/identity-bucket/ab%0A")  # a trailing newline never reaches the route
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
        # Fixed wallets, so that the buckets are known: one holding three addresses (over the cap of two),
        # one holding exactly two, one holding one.
        by_bucket: dict[str, list[Any]] = {}
        i = 0
        while not ({3, 2, 1} <= {len(v) for v in by_bucket.values()}):
            s = generate_secrets(hashlib.sha256(f"bucket-wallet-{i}".encode()).digest())
            by_bucket.setdefault(address_bucket(s.address)[:2], []).append(s)
            i += 1
        crowded = next(v for v in by_bucket.values() if len(v) >= 3)
        pair = next(v for v in by_bucket.values() if len(v) == 2)
        lonely = next(v[0] for v in by_bucket.values() if len(v) == 1)
        for s in crowded + pair + [lonely]:
            st = identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub)
            rec = identity.sign_statement(st, s.wallet_key).to_record()
            assert client.post(f"/v1/identity/{s.address}", json={"record": base64.b64encode(rec).decode()}).status_code == 201
        r = client.get(f"/v1/identity-bucket/{address_bucket(crowded[0].address)[:2]}")
        assert r.status_code == 413 and r.get_json()["error"]["code"] == "bucket_too_large"
        prefix = address_bucket(pair[0].address)[:2]
        body = client.get(f"/v1/identity-bucket/{prefix}").get_json()
        assert body["prefix"] == prefix and [e["address"] for e in body["logs"]] == sorted(s.address for s in pair)
        assert all(len(e["records"]) == 1 for e in body["logs"])
        body = client.get(f"/v1/identity-bucket/{address_bucket(lonely.address)[:2]}").get_json()
        assert [e["address"] for e in body["logs"]] == [lonely.address]
        # A longer prefix splits the crowded bucket.
        body = client.get(f"/v1/identity-bucket/{address_bucket(crowded[0].address)[:16]}").get_json()
        assert [e["address"] for e in body["logs"]] == [crowded[0].address]
    finally:
        storage.close()


def test_client_asks_with_a_longer_prefix_when_a_bucket_is_too_large(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    app = create_app(storage, settings=RelaySettings(bucket_max_addresses=1, identity_rate=FAST, identity_burst=10**6))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        first = generate_secrets()
        other = next(s for s in iter(generate_secrets, None) if address_bucket(s.address)[:2] == address_bucket(first.address)[:2])
        for s in (first, other):
            st = identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub)
            RelayClient(url).publish_identity(s.address, identity.sign_statement(st, s.wallet_key).to_record())
        with pytest.raises(RelayError) as err:
            RelayClient(url).identity_bucket(address_bucket(first.address)[:2])
        assert err.value.code == "bucket_too_large"
        bob = make_engine(tmp_path / "bob.db", url)
        assert set(bob.installations_of(first.address)) == {first.installation_id}
        assert bob.peers.prefix_hex >= 3  # remembered for the next lookups on this relay
    finally:
        server.shutdown()
        t.join(5)
        server.server_close()
        storage.close()


# --- padding: vectors and rules (PROTOCOL.md §6.1) --------------------------------------------------



def test_padding_vector_file_is_well_formed() -> None:
    data = load("parley_content_padding.json")
    assert data["family"] == "parley-content-padding" and data["description"]
    for v in data["vectors"]:
        assert set(v) == {"name", "input", "expected"}
        assert v["name"].startswith("negative") == ("error" in v["expected"])


@pytest.mark.parametrize("vec", cases("parley_content_padding.json"))
def test_content_padding_vectors(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    if "error" in e:
        with pytest.raises(error_class(e["error"])) as ei:
            TextContent.decode(h(i["padded"]))
        assert ei.type is error_class(e["error"])
        return
    content = TextContent(i["message_id"], i["sender"], i["recipient"], i["sent_at"], i["text"])
    assert content.encode().hex() == e["padded"]
    assert unpad(h(e["padded"])).hex() == e["content"]
    assert TextContent.decode(h(e["padded"])) == content


@pytest.mark.parametrize("n", [0, 1, 2, 255, 510, 511, 512, 1023, 1024, 70_000])
def test_padding_sizes_are_powers_of_two_from_512_and_round_trip(n: int) -> None:
    data = bytes([0x41]) * n
    padded = pad(data)
    assert len(padded) == padded_size(n) >= max(PAD_FLOOR, n + 1)
    assert len(padded) & (len(padded) - 1) == 0 and (len(padded) == PAD_FLOOR or len(padded) // 2 < n + 1)
    assert unpad(padded) == data
    with pytest.raises(WireError):
        unpad(padded[:-1])


_CONTENT = [1, "text", "0123456789abcdef" * 2, "0x" + "11" * 20, "0x" + "22" * 20, 1_700_000_000_000, "hello"]


@pytest.mark.parametrize(
    ("index", "value"),
    [(2, "not a message id"), (2, "0123456789ABCDEF" * 2), (2, "0123456789abcdef" * 2 + "0"), (2, "0123456789abcdef" * 2 + "\n"),
     (2, 12345), (6, b"hello"), (6, 7), (6, None)],
    ids=["id-words", "id-uppercase", "id-33-digits", "id-newline", "id-int", "text-bytes", "text-int", "text-null"],
)
def test_content_with_a_malformed_message_id_or_text_is_refused(index: int, value: object) -> None:
    """A peer's content names its message id (32 lowercase hex digits, stored and used in URLs) and a
    text string; anything else is a WireError (the envelope is quarantined), whatever the padding."""
    fields = list(_CONTENT)
    fields[index] = value
    with raises_exactly(WireError):
        TextContent.decode(pad(wire.encode(fields)))
    assert TextContent.decode(pad(wire.encode(_CONTENT))) == TextContent(*_CONTENT[2:])  # type: ignore[arg-type]


def test_content_sent_at_is_any_non_negative_int64_including_zero() -> None:
    """sent_at is the sender's claim (PROTOCOL.md §6.4: kept when 0 <= sent_at <= arrival + 5 min, else
    shown as the arrival time): decoding accepts 0 and 2^63-1, and only refuses what is not such an integer."""
    for sent_at in (0, 2**63 - 1):
        fields = [*_CONTENT[:5], sent_at, _CONTENT[6]]
        assert TextContent.decode(pad(wire.encode(fields))).sent_at == sent_at
    for bad in (-1, 2**63, True, 1.5, "0"):
        with raises_exactly(WireError):
            TextContent.decode(pad(wire.encode([*_CONTENT[:5], bad, _CONTENT[6]])))


# --- the schedule ---------------------------------------------------------------------------------




def test_refresh_schedule_is_drawn_from_its_own_random_source_whatever_the_traffic(tmp_path: Path, relay: LoggingRelay) -> None:
    busy = make_engine(tmp_path / "busy.db", relay.url, rng=random.Random(7), peer_refresh_ms=600_000)
    idle = make_engine(tmp_path / "idle.db", relay.url, rng=random.Random(7), peer_refresh_ms=600_000)
    assert busy.peers.next_delay_ms(first=True) == idle.peers.next_delay_ms(first=True)
    assert busy.send(idle.address, "traffic").delivered and idle.sync() == 1
    assert idle.send(busy.address, "more traffic").delivered and busy.sync() == 1
    busy_delays = [busy.peers.next_delay_ms() for _ in range(50)]
    assert busy_delays == [idle.peers.next_delay_ms() for _ in range(50)]  # messages changed nothing
    assert all(300_000 <= d <= 900_000 for d in busy_delays) and len(set(busy_delays)) > 40


def test_refresh_loop_runs_passes_until_stopped(tmp_path: Path, relay: LoggingRelay) -> None:
    eng = make_engine(tmp_path / "eng.db", relay.url, rng=random.Random(1), peer_refresh_ms=50)
    passes: list[list[str]] = []
    real = eng.peers.refresh
    eng.peers.refresh = lambda: passes.append(real()) or passes[-1]  # type: ignore[method-assign]
    stop = threading.Event()
    t = threading.Thread(target=eng.peers.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_until(lambda: len(passes) >= 3, timeout=30)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert all(p == [eng.address] for p in passes)  # only our own log is tracked


def test_first_contact_lookups_are_rate_limited_per_address(tmp_path: Path, relay: LoggingRelay) -> None:
    """A hostile page can make the DM button ask canMessage again and again: one lookup a minute."""
    now = [1_000_000]
    bob = make_engine(tmp_path / "bob.db", relay.url, clock=lambda: now[0])
    nobody = generate_secrets().address  # not registered
    start = relay.mark()
    for _ in range(10):
        assert not bob.can_message(nobody)
    assert len(identity_lookups(relay.since(start), nobody)) == 1
    now[0] += 59_999
    assert not bob.can_message(nobody)
    assert len(identity_lookups(relay.since(start), nobody)) == 1
    now[0] += 1
    assert not bob.can_message(nobody)
    assert len(identity_lookups(relay.since(start), nobody)) == 2


def test_concurrent_first_sends_to_a_new_peer_both_go_out(tmp_path: Path, relay: LoggingRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sender threads (the daemon's control endpoint serves several `parley send`s at once) write to
    a peer nobody looked up yet. The second must wait for the first one's lookup, not find the
    address "looked up just now" with nothing stored and answer NotRegistered (found by
    test_faults' 5,000-message exchange: Bob's first replies failed)."""
    from bridge.engine import peers as peers_mod

    alice = make_engine(tmp_path / "alice.db", relay.url)
    bob = make_engine(tmp_path / "bob.db", relay.url)
    storing, second_done = threading.Event(), threading.Event()
    real_store = peers_mod.Peers._store
    first = [True]

    def slow_store(self: Any, address: str, records: list[bytes], now: int, **kw: Any) -> None:
        if address == bob.address and first[0]:
            first[0] = False
            storing.set()
            # Hold the first lookup between its fetch and its store while the second send runs. A
            # correct cache makes the second send wait for this one, so this wait then times out.
            second_done.wait(timeout=1.0)
        real_store(self, address, records, now, **kw)

    monkeypatch.setattr(peers_mod.Peers, "_store", slow_store)
    results: dict[str, Any] = {}

    def send(name: str) -> None:
        try:
            results[name] = alice.send(bob.address, name)
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            results[name] = exc
        finally:
            if name == "second":
                second_done.set()

    t1 = threading.Thread(target=send, args=("first",))
    t1.start()
    assert storing.wait(timeout=30)
    t2 = threading.Thread(target=send, args=("second",))
    t2.start()
    t1.join(timeout=60)
    t2.join(timeout=60)
    assert all(getattr(results.get(n), "delivered", False) for n in ("first", "second")), results
    assert bob.sync() == 2
