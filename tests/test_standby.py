"""The standby installation (issue 15 item 6; PROTOCOL.md §12.5; docs/SECURITY.md "Backups and the
standby installation"): registered as one more installation of the wallet, fanned out to by senders and
by our own installations, drained after a restore without publishing anything, rotated with a
wallet-signed revocation; a full standby inbox never holds back the real installations.

Real relay (SQLite, werkzeug) over loopback, real engines, real crypto.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge import identity
from bridge.backup import standby
from bridge.backup.standby import StandbyError
from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.protocol import wire
from bridge.protocol.ids import inbox_topic
from bridge.relay.client import RelayClient, RelayError
from bridge.relay.sqlite_store import SQLiteStorage
from tests.engines import befriend, close_engines, make_engine  # noqa: F401  (autouse fixture)
from tests.relay_fixtures import serve_storage, unlimited_settings


# --- the relay, with a log of what it was asked -----------------------------------------------


class Relay:
    """A real relay over SQLite; every request it serves is noted as (method, path, topic of a publish)."""

    def __init__(self) -> None:
        self.url = ""
        self.storage: SQLiteStorage | None = None
        self.requests: list[tuple[str, str]] = []
        #: Replaces the body of a GET /v1/envelopes/<topic> answer (a hostile relay), when set.
        self.doctor: Callable[[dict[str, Any], dict[str, Any]], bytes] | None = None

    def wrap(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
            self.requests.append((method, path))
            if self.doctor is None or method != "GET" or not path.startswith("/v1/envelopes/"):
                return app(environ, start_response)
            status: list[Any] = []
            body = b"".join(app(environ, lambda s, h, exc=None: status.append((s, h)) or (lambda _b: None)))
            if not status[0][0].startswith("200"):
                start_response(*status[0])
                return [body]
            new = self.doctor(environ, json.loads(body))
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(new)))])
            return [new]

        return wsgi

    def inbox(self, iid: str) -> list[bytes]:
        """The envelopes the relay holds for an installation (straight from its storage)."""
        assert self.storage is not None
        return [e.payload for e in self.storage.fetch(inbox_topic(iid), 0, 100_000)]

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str]]:
        return self.requests[mark:]


@contextmanager
def running_relay(db: Path, **settings: Any) -> Iterator[Relay]:
    relay = Relay()
    storage = SQLiteStorage(str(db))
    try:
        with serve_storage(storage, unlimited_settings(**settings), wrap=relay.wrap) as url:
            relay.url, relay.storage = url, storage
            yield relay
    finally:
        storage.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    with running_relay(tmp_path / "relay.db") as r:
        yield r


def backup_keys() -> Any:
    import types  # stand-in until bridge.backup.recovery is on main

    return types.SimpleNamespace(vault=os.urandom(32).hex())


def engine_in(home: Path, url: str, wallet: bytes | None = None, **kw: Any) -> Engine:
    """A registered engine whose store is in ``home`` (a home directory, 0700)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return make_engine(home / "parley.db", url, wallet, **kw)


def pair(tmp_path: Path, url: str) -> tuple[Engine, Engine]:
    alice = engine_in(tmp_path / "alice", url)
    bob = engine_in(tmp_path / "bob", url)
    befriend(alice, bob)
    return alice, bob


def publishes(requests: list[tuple[str, str]]) -> int:
    return sum(1 for m, p in requests if (m, p) == ("POST", "/v1/envelopes"))


def texts(e: Engine, peer: str) -> list[str]:
    return [m["text"] for m in e.messages(peer)]


# --- making it ---------------------------------------------------------------------------------


def test_a_standby_is_one_more_installation_of_the_wallet_and_gets_every_message_both_ways(tmp_path: Path, relay: Relay) -> None:
    alice, bob = pair(tmp_path, relay.url)
    keys = backup_keys()
    # Without a standby: one envelope per message (the other side's one installation).
    mark = relay.mark()
    assert alice.send(bob.address, "before 1").delivered and bob.sync() == 1
    assert bob.send(alice.address, "before 2").delivered and alice.sync() == 1
    assert publishes(relay.since(mark)) == 2

    rec = standby.create_standby(alice, keys)
    iid = rec["installation_id"]
    assert standby.check_record(rec)["installation_id"] == iid != alice.installation_id
    assert rec["address"] == alice.address and rec["relays"] == [relay.url] and rec["vault"] == keys.vault
    # The wallet authorized it on the relay, and it is registered: a bundle can be claimed.
    records = RelayClient(relay.url).identity(alice.address)
    assert set(identity.installations(alice.address, records)) == {alice.installation_id, iid}
    kinds = {k for k, _, _, _ in rec["prekeys"]}
    assert kinds == {"x25519-spk", "x25519-otpk", "mlkem768-lrpk", "mlkem768-otpk"}
    assert relay.storage is not None and relay.storage.prekey_counts(iid)[0] == sum(k == "x25519-otpk" for k, *_ in rec["prekeys"]) > 0

    # With it: one more envelope per message, from Bob (a sender) and from Alice (our own sent copy).
    bob.peers.lookup([alice.address], scheduled=True)  # Bob's scheduled pass (the daemon's, on its own clock)
    mark = relay.mark()
    assert alice.send(bob.address, "after 1").delivered and bob.sync() == 1
    assert bob.send(alice.address, "after 2").delivered and alice.sync() == 1
    assert publishes(relay.since(mark)) == 4
    assert len(relay.inbox(iid)) == 2
    assert texts(bob, alice.address) == texts(alice, bob.address) == ["before 1", "before 2", "after 1", "after 2"]


def test_a_browser_wallet_cannot_have_a_standby(tmp_path: Path, relay: Relay) -> None:
    eng = engine_in(tmp_path / "b", relay.url)
    browser_key = generate_secrets().wallet_key  # the key the browser wallet holds, not this bridge
    browser = identity.authorize_statement(generate_secrets(browser_key).address, eng.installation_id, eng.secrets.signing_pub, eng.secrets.identity_pub)
    eng.switch_identity(browser.address, identity.sign_statement(browser, browser_key).to_record())
    before = list(RelayClient(relay.url).identity(browser.address))
    with pytest.raises(StandbyError, match="browser wallet"):
        standby.create_standby(eng, backup_keys())
    assert RelayClient(relay.url).identity(browser.address) == before  # nothing published


def test_a_full_standby_inbox_neither_fails_nor_delays_the_real_installations(tmp_path: Path) -> None:
    """Nobody drains a standby: its inbox fills up to the relay's quota (429 inbox_full). Sends to the
    wallet's real installations go on at once; the standby's envelope waits in the background."""
    with running_relay(tmp_path / "relay.db", topic_max_envelopes=4) as relay:
        alice, bob = pair(tmp_path, relay.url)
        rec = standby.create_standby(alice, backup_keys())
        sb = rec["installation_id"]
        bob.peers.lookup([alice.address], scheduled=True)  # Bob's scheduled pass: he knows the standby
        for i in range(2):  # four envelopes fill the standby's inbox: two of Alice's copies, two of Bob's
            assert alice.send(bob.address, f"a{i}").delivered and bob.sync() == 1
            assert bob.send(alice.address, f"b{i}").delivered and alice.sync() == 1
        assert len(relay.inbox(sb)) == 4
        mark = relay.mark()
        late = bob.send(alice.address, "b-late")  # Alice's real inbox takes it; the standby's is full
        assert late.delivered and late.message["state"] == "sent" and late.error is None
        assert alice.sync() == 1 and texts(alice, bob.address)[-1] == "b-late"
        own = alice.send(bob.address, "a-late")  # Alice's copy to her own standby is refused the same way
        assert own.delivered and own.message["state"] == "sent"
        assert bob.sync() == 1 and texts(bob, alice.address)[-1] == "a-late"
        # Each refused once, and no other attempt yet (a background delivery with backoff, not a loop).
        refused = [r for r in relay.since(mark) if r == ("POST", "/v1/envelopes")]
        assert len(refused) == 4 and len(relay.inbox(sb)) == 4
        assert bob.pending_deliveries() == 1 and alice.pending_deliveries() == 1
        # Nothing waits behind those messages in either conversation.
        assert bob.pending_count() == 0 and alice.pending_count() == 0
        assert bob.send(alice.address, "b-next").delivered and alice.sync() == 1


def test_rotate_revokes_the_old_standby_and_the_next_messages_go_to_the_new_one(tmp_path: Path, relay: Relay) -> None:
    alice, bob = pair(tmp_path, relay.url)
    keys = backup_keys()
    old = standby.create_standby(alice, keys)
    bob.peers.lookup([alice.address], scheduled=True)  # Bob's scheduled pass: he knows the standby
    assert alice.send(bob.address, "hi").delivered and bob.sync() == 1
    assert bob.send(alice.address, "hello").delivered and alice.sync() == 1
    assert len(relay.inbox(old["installation_id"])) == 2  # Bob's cache knows the old standby, with a session

    new = standby.rotate_standby(alice, keys, old)
    assert new["installation_id"] != old["installation_id"]
    records = RelayClient(relay.url).identity(alice.address)
    assert set(identity.installations(alice.address, records)) == {alice.installation_id, new["installation_id"]}
    revocations = [
        st for st in (identity.verify(identity.SignedStatement.from_record(r)) for r in records) if st.action == "revoke"
    ]
    assert [st.installation_id for st in revocations] == [old["installation_id"]]  # signed by the wallet (verify)
    assert relay.storage is not None and relay.storage.installation(old["installation_id"]) is None

    # Bob's cache still names the old standby: the relay refuses it, his cache follows the longer log.
    assert bob.send(alice.address, "after rotation").delivered and alice.sync() == 1
    assert alice.send(bob.address, "mine too").delivered and bob.sync() == 1
    assert len(relay.inbox(old["installation_id"])) == 2
    assert len(relay.inbox(new["installation_id"])) == 2


def test_rotate_refuses_a_record_naming_this_installation_or_another_wallet(tmp_path: Path, relay: Relay) -> None:
    alice, bob = pair(tmp_path, relay.url)
    keys = backup_keys()
    real = standby.create_standby(alice, keys)
    # A record that is internally consistent but names Alice's real installation (its keys, its statement).
    mine = {**real, "installation_id": alice.installation_id, "signing_key": alice.secrets.signing_key,
            "identity_key": alice.secrets.identity_key, "statement": alice.record}
    bobs = standby.create_standby(bob, keys)
    before = RelayClient(relay.url).identity(alice.address)
    with pytest.raises(StandbyError, match="names this installation"):
        standby.rotate_standby(alice, keys, mine)
    with pytest.raises(StandbyError, match=f"belongs to {bob.address}"):
        standby.rotate_standby(alice, keys, bobs)
    assert RelayClient(relay.url).identity(alice.address) == before  # nothing made, nothing revoked
    assert set(identity.installations(alice.address, before)) == {alice.installation_id, real["installation_id"]}


def _mutations(rec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    other = generate_secrets()
    pk = copy.deepcopy(rec["prekeys"])
    pk[0][3] = bytes(32)
    dup = copy.deepcopy(rec["prekeys"]) + [copy.deepcopy(rec["prekeys"][0])]
    no_spk = [p for p in rec["prekeys"] if p[0] != "x25519-spk"]
    return [
        ("not a map of the expected fields", {**rec, "extra": 1}),
        ("unknown version", {**rec, "version": 2}),
        ("not an address", {**rec, "address": "0x1234"}),
        ("not made from its keys", {**rec, "signing_key": other.signing_key}),
        ("must be 32 bytes", {**rec, "identity_key": b"short"}),
        ("does not parse", {**rec, "statement": b"\x00" * 40}),
        ("public half is not made from its private half", {**rec, "prekeys": pk}),
        ("bad or repeated", {**rec, "prekeys": dup}),
        ("missing", {**rec, "prekeys": no_spk}),
        ("prekeys must be a list", {**rec, "prekeys": []}),
        ("created_at", {**rec, "created_at": -1}),
        ("relays must be", {**rec, "relays": "http://127.0.0.1:1"}),
        ("vault", {**rec, "vault": "zz"}),
    ]


def test_a_hostile_standby_record_is_refused_with_one_line(tmp_path: Path, relay: Relay) -> None:
    alice, _ = pair(tmp_path, relay.url)
    rec = standby.create_standby(alice, backup_keys())
    assert standby.check_record(wire.decode(wire.encode(rec))) == standby.check_record(rec)  # survives CBOR
    for what, bad in _mutations(rec):
        with pytest.raises(StandbyError, match=what) as info:
            standby.check_record(bad)
        assert "\n" not in str(info.value)
    # A statement of another installation of the same wallet (genuine, wallet-signed) does not fit these keys.
    with pytest.raises(StandbyError, match="does not authorize this installation"):
        standby.check_record({**rec, "statement": alice.record})
