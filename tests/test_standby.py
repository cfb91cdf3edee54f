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
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge import identity
from bridge.backup import recovery, standby, state
from bridge.backup.standby import StandbyError
from bridge.engine import Engine
from bridge.engine.engine import messages_of
from bridge.keys import generate_secrets
from bridge.protocol import wire
from bridge.protocol.ids import inbox_topic
from bridge.relay.client import RelayClient, RelayError
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.store import Store
from tests.engines import befriend, close_engines, make_engine  # noqa: F401  (autouse fixture)
from tests.relay_fixtures import serve_storage, unlimited_settings


# --- the relay, with a log of what it was asked -----------------------------------------------


class Relay:
    """A real relay over SQLite; every request it serves is noted as (method, path, topic of a publish)."""

    def __init__(self) -> None:
        self.url = ""
        self.db: Path | None = None
        self.storage: SQLiteStorage | None = None
        self.requests: list[tuple[str, str]] = []
        #: A hostile relay: answers GET /v1/envelopes/<topic> itself when set, given the request and a
        #: function that asks the real relay (with the request as the doctor left it) for its JSON answer.
        self.doctor: Callable[[dict[str, Any], Callable[[], dict[str, Any]]], bytes] | None = None

    def wrap(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
            self.requests.append((method, path))
            if self.doctor is None or method != "GET" or not path.startswith("/v1/envelopes/"):
                return app(environ, start_response)
            def real() -> dict[str, Any]:
                status: list[str] = []
                body = b"".join(app(environ, lambda s, h, exc=None: status.append(s) or (lambda _b: None)))
                assert status[0].startswith("200"), (status, body)
                return dict(json.loads(body))

            new = self.doctor(environ, real)
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
            relay.url, relay.storage, relay.db = url, storage, db
            yield relay
    finally:
        storage.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    with running_relay(tmp_path / "relay.db") as r:
        yield r


def backup_keys() -> recovery.BackupKeys:
    return recovery.derive(recovery.generate())


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
    state.save_standby(alice.store, alice.secrets, rec)  # how the caller keeps it (sealed), and backups carry it
    assert standby.check_record(state.load_standby(alice.store, alice.secrets)) == standby.check_record(rec)
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


def test_no_standby_without_a_recovery_key(tmp_path: Path, relay: Relay) -> None:
    eng = engine_in(tmp_path / "a", relay.url)
    before = RelayClient(relay.url).identity(eng.address)
    with pytest.raises(StandbyError, match="needs a recovery key"):
        standby.create_standby(eng, None)
    assert RelayClient(relay.url).identity(eng.address) == before


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
        # Alice's real inbox is full now too (4 envelopes): no installation of hers takes the next one,
        # so it is not "sent" and backs off, as any 429 does.
        over = bob.send(alice.address, "b-over")
        assert not over.delivered and over.message["state"] == "queued" and "inbox_full" in (over.error or "")


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


# --- draining it -------------------------------------------------------------------------------


def fresh_home(tmp_path: Path, name: str, wallet_key: bytes) -> tuple[Any, Store, Any]:
    """An empty home of the same wallet (a new installation, as a restore makes): (Home, Store, Secrets)."""
    from bridge.home import Home

    path = tmp_path / name
    path.mkdir(mode=0o700)
    secrets = generate_secrets(wallet_key)
    st = identity.authorize_statement(secrets.address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    ident = {
        "version": 1, "address": secrets.address, "did": identity.did(secrets.address), "installation_id": secrets.installation_id,
        "signing_pub": secrets.signing_pub.hex(), "identity_pub": secrets.identity_pub.hex(),
        "record": identity.sign_statement(st, wallet_key).to_record().hex(),
    }
    (path / "identity.json").write_text(json.dumps(ident))
    store = Store(path / "parley.db")
    OPEN_STORES.append(store)
    return Home(path), store, secrets


OPEN_STORES: list[Store] = []


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    yield
    while OPEN_STORES:
        OPEN_STORES.pop().close()


def conversation(store: Store, peer: str) -> list[tuple[str, str]]:
    return [(m["direction"], m["text"]) for m in messages_of(store, peer)]


def relay_rows(relay: Relay) -> dict[str, int]:
    """What the relay holds: envelopes, identity records, one-time prekeys, relay lists."""
    with sqlite3.connect(f"file:{relay.db}?mode=ro", uri=True) as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("envelopes", "identity", "prekeys", "one_time_prekeys", "claimed_prekeys", "relay_lists")}


#: What draining may ask a relay: a token for the standby's inbox, and its envelopes.
READS = {("POST", "/v1/auth/challenge"), ("POST", "/v1/auth/token"), ("GET", "/v1/envelopes/")}


def only_reads(requests: list[tuple[str, str]]) -> bool:
    return all((m, p if not p.startswith("/v1/envelopes/") else "/v1/envelopes/") in READS for m, p in requests)


def test_drain_gives_every_message_in_order_both_ways_exactly_once_and_publishes_nothing(tmp_path: Path, relay: Relay) -> None:
    alice, bob = pair(tmp_path, relay.url)
    rec = standby.create_standby(alice, backup_keys())
    bob.peers.lookup([alice.address], scheduled=True)
    expected = []
    for i in range(3):
        assert alice.send(bob.address, f"from alice {i}").delivered and bob.sync() == 1
        assert bob.send(alice.address, f"from bob {i}").delivered and alice.sync() == 1
        expected += [("out", f"from alice {i}"), ("in", f"from bob {i}")]
        if i == 1:
            alice.mark_read(bob.address)  # a read receipt to Bob, and its copy to the standby: nothing to show
    held = relay_rows(relay)

    home, store, secrets = fresh_home(tmp_path, "restored", alice.secrets.wallet_key)
    mark = relay.mark()
    seen: list[int] = []
    out = standby.drain_standby(home, store, secrets, rec, [relay.url], progress=seen.append)
    assert out["messages"] == 6 and out["quarantined"] == 0
    assert out["envelopes"] == 7 and seen == list(range(1, 8))  # six messages and the read receipt's copy
    assert conversation(store, bob.address) == expected
    # What Alice had read on her lost device is read here too (the receipt's copy); the last one she never saw.
    assert [m["read"] for m in messages_of(store, bob.address)] == [True] * 5 + [False]
    # Draining only read: no publish, no prekey top-up after the first messages, no receipt, no registration.
    assert only_reads(relay.since(mark)) and relay.since(mark)
    assert relay_rows(relay) == held

    again = standby.drain_standby(home, store, secrets, rec, [relay.url])
    assert again["messages"] == 0 and again["skipped"] == 6
    assert conversation(store, bob.address) == expected
    assert only_reads(relay.since(mark)) and relay_rows(relay) == held
    assert [p.name for p in home.path.iterdir() if p.name.startswith(".standby-")] == []  # the temporary store is gone


def test_sessions_started_before_and_after_the_backup_point_all_decrypt(tmp_path: Path, relay: Relay) -> None:
    """The record never changes after it is made: a session a sender began before the backup was written,
    one begun after it, and one begun after anonymous claims took every one-time prekey (the standby never
    tops up: the signed and last-resort ML-KEM prekeys serve), all open at the drain."""
    alice, bob = pair(tmp_path, relay.url)
    carol = engine_in(tmp_path / "carol", relay.url)
    befriend(alice, bob, carol)
    rec = standby.create_standby(alice, backup_keys())
    bob.peers.lookup([alice.address], scheduled=True)
    assert bob.send(alice.address, "bob 1").delivered and bob.send(alice.address, "bob 2").delivered
    backed_up = wire.decode(wire.encode(rec))  # the archive written now carries this
    assert bob.send(alice.address, "bob 3").delivered  # the same session, after the backup point
    assert bob.send(alice.address, "bob 4").delivered  # more than a stranger's request may hold (3): Bob is a contact
    claimer = RelayClient(relay.url)
    while relay.storage is not None and relay.storage.prekey_counts(rec["installation_id"]) != (0, 0):
        claimer.claim(rec["installation_id"])
    assert carol.send(alice.address, "carol 1").delivered and carol.send(alice.address, "carol 2").delivered
    assert alice.sync() == 6

    home, store, secrets = fresh_home(tmp_path, "restored", alice.secrets.wallet_key)
    home.contacts_file.write_text((alice.store.path.parent / "contacts.json").read_text())  # as the restore imported them
    out = standby.drain_standby(home, store, secrets, backed_up, [relay.url])
    assert out["messages"] == 6 and out["quarantined"] == 0
    assert conversation(store, bob.address) == [("in", f"bob {i}") for i in range(1, 5)]
    assert conversation(store, carol.address) == [("in", "carol 1"), ("in", "carol 2")]


def test_a_hostile_relay_serving_garbage_in_the_standby_inbox_changes_nothing_but_the_quarantine(tmp_path: Path) -> None:
    with running_relay(tmp_path / "r1.db") as r1, running_relay(tmp_path / "r2.db") as r2:
        alice = engine_in(tmp_path / "alice", r1.url, home_relays=[r1.url, r2.url])
        bob = engine_in(tmp_path / "bob", r1.url)
        befriend(alice, bob)
        rec = standby.create_standby(alice, backup_keys())
        assert rec["relays"] == [r1.url, r2.url]
        bob.peers.lookup([alice.address], scheduled=True)
        for i in range(3):
            assert bob.send(alice.address, f"bob {i}").delivered
        bob.retry_deliveries()  # the standby's other relay gets the same envelopes (in the background)
        topic = inbox_topic(rec["installation_id"])

        def junk(environ: dict[str, Any], real: Callable[[], dict[str, Any]]) -> bytes:
            """R1 serves, for each envelope, garbage, a truncated and a bit-flipped copy, the envelope, and
            the envelope again (its cursors are the real ones × 10 + 0..4)."""
            if not environ["PATH_INFO"].endswith(topic):
                return json.dumps(real()).encode()
            query = dict(urllib.parse.parse_qsl(environ["QUERY_STRING"]))
            query["after"] = str(int(query.get("after", "0")) // 10)
            environ["QUERY_STRING"] = urllib.parse.urlencode(query)
            out = []
            for e in real()["envelopes"]:
                raw = wire.b64d(e["payload"])
                flipped = bytearray(raw)
                flipped[len(raw) // 2] ^= 1
                c = e["cursor"] * 10
                out += [
                    {"cursor": c, "payload": wire.b64e(os.urandom(200)), "received_at": 0},
                    {"cursor": c + 1, "payload": wire.b64e(raw[: len(raw) // 2]), "received_at": 0},
                    {"cursor": c + 2, "payload": wire.b64e(bytes(flipped)), "received_at": 0},
                    {**e, "cursor": c + 3},
                    {**e, "cursor": c + 4},
                ]
            served.append(len(out))
            return json.dumps({"envelopes": out, "next": out[-1]["cursor"] if out else 0}).encode()

        served: list[int] = []
        r1.doctor = junk
        r2.doctor = lambda environ, real: b"<html>not json</html>"  # R2 answers nonsense
        home, store, secrets = fresh_home(tmp_path, "restored", alice.secrets.wallet_key)
        out = standby.drain_standby(home, store, secrets, rec, rec["relays"])
        assert conversation(store, bob.address) == [("in", f"bob {i}") for i in range(3)]
        assert out["messages"] == 3 and out["quarantined"] == 9
        assert [r["error"] is None for r in out["relays"]] == [True, False]
        assert sum(served) == 15  # the doctored answers were served


def test_a_relay_serving_the_same_full_page_for_ever_does_not_keep_the_drain_busy(tmp_path: Path, relay: Relay) -> None:
    alice, _ = pair(tmp_path, relay.url)
    rec = standby.create_standby(alice, backup_keys())
    page = json.dumps({"envelopes": [{"cursor": i, "payload": wire.b64e(os.urandom(64)), "received_at": 0}
                                     for i in range(1, standby.FETCH_LIMIT + 1)], "next": standby.FETCH_LIMIT}).encode()
    relay.doctor = lambda environ, real: page  # whatever `after` is
    home, store, secrets = fresh_home(tmp_path, "restored", alice.secrets.wallet_key)
    mark = relay.mark()
    out = standby.drain_standby(home, store, secrets, rec, [relay.url])
    assert out["messages"] == 0 and out["quarantined"] == standby.FETCH_LIMIT and out["relays"][0]["error"] is None
    assert sum(1 for m, p in relay.since(mark) if m == "GET") == 2  # the second page did not move the cursor: done
