"""Issue 8 item 2 (the relay learns who sends) and the revocation-check cache (issue 8, low item).

A relay is an observer: it logs every request with its time and path. These tests play a scripted
exchange between two real engines (real SQLite stores) through a real relay (create_app served by
werkzeug on 127.0.0.1 in a thread, every request recorded) and read that log the way a curious relay
operator would.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from bridge import identity
from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.relay.server import RelaySettings, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.store import Store

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
            from flask import request

            body = request.get_data(cache=True) if request.method in ("POST", "PUT") else b""
            with self._lock:
                self.log.append(Request(time.monotonic(), request.method, request.path, len(body)))
                if request.method == "POST" and request.path == "/v1/envelopes":
                    import json

                    from bridge.protocol import wire

                    self.payload_sizes.append(len(wire.b64d(json.loads(body)["payload"])))

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
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


_engines: list[Engine] = []


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    while _engines:
        e = _engines.pop()
        e.relay.close()
        e.store.close()


def make_engine(path: Path, relay_url: str, wallet: bytes | None = None, *, register: bool = True, **kwargs: Any) -> Engine:
    secrets = generate_secrets(wallet)
    st = identity.authorize_statement(secrets.address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    record = identity.sign_statement(st, secrets.wallet_key).to_record()
    ident = {"address": secrets.address, "installation_id": secrets.installation_id, "record": record.hex()}
    eng = Engine(Store(path), secrets, ident, relay_url, **kwargs)
    _engines.append(eng)
    if register:
        eng.register()
    return eng


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
    alice_address = _engines[-1].address
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


def test_messages_from_unknown_installations_cause_at_most_one_fetch(tmp_path: Path, relay: LoggingRelay) -> None:
    wallet = generate_secrets().wallet_key
    mallory = make_engine(tmp_path / "m0.db", relay.url, wallet)
    bob = make_engine(tmp_path / "bob.db", relay.url)
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
    assert reason is not None and "revoked" in reason
    assert flagged == [{"id": msg["id"], "reason": reason}]
    assert set(bob.peers.cached(laptop.address) or {}) == {laptop.installation_id}
    # From now on the revoked installation is refused at once, still without asking the relay.
    assert stolen.send(bob.address, "again").delivered
    start = relay.mark()
    assert bob.sync() == 0
    assert identity_lookups(relay.since(start), laptop.address) == []
    (failure,) = bob.store.read("SELECT error FROM inbox_failures")
    assert "revoked" in failure["error"]
    assert [m["text"] for m in bob.messages(laptop.address)] == ["send the money to 0xdead"]
