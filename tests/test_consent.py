"""Consent (issue 12; bridge/engine/consent.py; PROTOCOL.md §6.8): message requests, the request limit,
decline, block (dropped after decryption, only a counter), unblock, replying accepts, and the self
fan-out sync of decisions to our own other installations. Real engines over real SQLite stores
against a real relay; a stranger is a third engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.crypto import primitives as P
from bridge.crypto import sealed, session
from bridge.engine import Engine, consent
from bridge.engine.engine import BadInput
from bridge.protocol.ids import new_message_id
from bridge.store import now_ms
from tests.engines import close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.relay_fixtures import serve_relay


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


def texts(eng: Engine, peer: str) -> list[str]:
    return [m["text"] for m in eng.messages(peer)]


def events(eng: Engine) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    eng.listeners.append(lambda e, p: seen.append((e, p)))
    return seen


def count(eng: Engine, sql: str, *args: Any) -> int:
    return int(eng.store.read(sql, args)[0][0])


def test_a_strangers_messages_land_in_requests_and_only_three_are_kept(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    for i in range(5):
        assert stranger.send(me.address, f"hi {i}").delivered
    seen = events(me)
    assert me.sync() == 3
    assert [p["text"] for e, p in seen if e == "message.new"] == ["hi 0", "hi 1", "hi 2"]  # held ones: no event
    assert texts(me, stranger.address) == ["hi 0", "hi 1", "hi 2"]
    assert me.consent(stranger.address) == {"peer": stranger.address, "consent": "requested", "held": 2, "dropped": 0}
    assert [c["peer"] for c in me.conversations("requests")] == [stranger.address]
    assert me.conversations("inbox") == []
    assert [(c["peer"], c["consent"], c["held"], c["unread"]) for c in me.conversations("all")] == [(stranger.address, "requested", 2, 3)]
    # the badge (total unread) counts no request: it is a notification too
    assert (me.unread(), me.unread(stranger.address)) == (0, 3)
    # accepting moves it to the inbox; what they send next is kept
    assert me.set_consent(stranger.address, "accept")["consent"] == "allowed"
    assert me.unread() == 3
    assert [c["peer"] for c in me.conversations("inbox")] == [stranger.address] and me.conversations("requests") == []
    assert stranger.send(me.address, "after accept").delivered
    assert me.sync() == 1 and texts(me, stranger.address)[-1] == "after accept"


def test_a_contact_or_someone_we_wrote_to_is_allowed(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    friend = make_engine(tmp_path / "friend.db", relay_url)
    known = make_engine(tmp_path / "known.db", relay_url)
    (tmp_path / "contacts.json").write_text(json.dumps({"friend": friend.address.lower()}))
    assert me.send(known.address, "hello you").delivered  # writing first accepts
    assert me.consent(known.address)["consent"] == "allowed"
    assert friend.send(me.address, "from a contact").delivered
    assert known.send(me.address, "a reply").delivered
    assert me.sync() == 2
    assert me.consent(friend.address)["consent"] == "allowed"
    assert sorted(c["peer"] for c in me.conversations("inbox")) == sorted([friend.address, known.address])


def test_replying_to_a_request_accepts_it(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    assert stranger.send(me.address, "hi").delivered and me.sync() == 1
    assert me.consent(stranger.address)["consent"] == "requested"
    assert me.send(stranger.address, "hi back").delivered
    assert me.consent(stranger.address)["consent"] == "allowed"


def test_decline_hides_the_conversation_and_keeps_the_limit(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    assert stranger.send(me.address, "one").delivered and me.sync() == 1
    assert me.set_consent(stranger.address, "decline")["consent"] == "declined"
    assert me.conversations("inbox") == [] and me.conversations("requests") == []
    assert [c["consent"] for c in me.conversations("all")] == ["declined"]
    for t in ("two", "three", "four"):
        assert stranger.send(me.address, t).delivered
    assert me.sync() == 2 and texts(me, stranger.address) == ["one", "two", "three"]
    assert me.consent(stranger.address)["held"] == 1


def test_block_drops_everything_and_only_the_counter_changes(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    pest = make_engine(tmp_path / "pest.db", relay_url)
    assert me.send(pest.address, "hi").delivered  # a conversation that exists
    assert pest.send(me.address, "before block").delivered and me.sync() == 1
    assert me.set_consent(pest.address, "block") == {"peer": pest.address, "consent": "blocked", "held": 0, "dropped": 0}
    seen = events(me)
    snapshot = [tuple(r) for r in me.store.read("SELECT id, text, state, read FROM messages ORDER BY seq")]
    conversations = [tuple(r) for r in me.store.read("SELECT * FROM conversations ORDER BY peer")]
    sessions_before = [tuple(r) for r in me.store.read("SELECT remote_iid, state FROM sessions ORDER BY remote_iid")]
    for i in range(4):
        assert pest.send(me.address, f"blocked {i}").delivered
    assert me.sync() == 0
    assert [tuple(r) for r in me.store.read("SELECT id, text, state, read FROM messages ORDER BY seq")] == snapshot
    assert [tuple(r) for r in me.store.read("SELECT * FROM conversations ORDER BY peer")] == conversations
    assert seen == []  # no event at all
    assert me.consent(pest.address)["dropped"] == 4
    assert me.quarantine_count() == 0  # dropped, not refused: the sender is not told and nothing is kept
    # the ratchet state IS saved: after unblocking, the next message decrypts
    assert [tuple(r) for r in me.store.read("SELECT remote_iid, state FROM sessions ORDER BY remote_iid")] != sessions_before
    assert me.set_consent(pest.address, "unblock")["consent"] == "allowed"  # the state before the block
    assert pest.send(me.address, "after unblock").delivered
    assert me.sync() == 1 and texts(me, pest.address) == ["hi", "before block", "after unblock"]


def test_unblock_returns_to_the_state_before_the_block(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    assert stranger.send(me.address, "hi").delivered and me.sync() == 1
    assert me.set_consent(stranger.address, "block")["consent"] == "blocked"
    assert me.set_consent(stranger.address, "block")["consent"] == "blocked"  # twice: still remembers "requested"
    assert me.set_consent(stranger.address, "unblock")["consent"] == "requested"
    never = make_engine(tmp_path / "never.db", relay_url, register=False)
    assert me.set_consent(never.address, "block")["consent"] == "blocked"
    assert me.set_consent(never.address, "unblock")["consent"] == "allowed"  # no earlier state: allowed
    with pytest.raises(BadInput):
        me.set_consent(stranger.address, "ignore")
    with pytest.raises(BadInput):
        me.set_consent(me.address, "block")


def test_decisions_reach_our_own_other_installation(tmp_path: Path, relay_url: str) -> None:
    wallet = P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    assert stranger.send(a1.address, "hi").delivered
    assert a1.sync() == 1 and a2.sync() == 1
    assert a2.consent(stranger.address)["consent"] == "requested"
    seen = events(a2)
    a1.set_consent(stranger.address, "block")
    a2.sync()
    assert a2.consent(stranger.address)["consent"] == "blocked"
    assert ("consent.changed", {"peer": stranger.address, "consent": "blocked"}) in seen
    assert a2.conversations("all")[0]["consent"] == "blocked"
    assert all(c["peer"] != a1.address for c in a1.conversations("all"))  # the sync rows are never listed
    assert a1.messages(a1.address) == []
    # an older decision arriving later loses: newest `at` wins
    a2.set_consent(stranger.address, "unblock")
    a1.sync()
    assert a1.consent(stranger.address)["consent"] == "requested"
    row = a1.store.read("SELECT updated_at FROM consent WHERE peer = ?", (stranger.address,))[0]
    with a1.store.write() as c:
        consent.apply_sync(c, a1, consent.ConsentContent(new_message_id(), a1.address, a1.address, 0, stranger.address, "blocked", row["updated_at"] - 1))
    assert a1.consent(stranger.address)["consent"] == "requested"
    # replying on one installation accepts on the other
    assert a1.send(stranger.address, "hi there").delivered
    a2.sync()
    assert a2.consent(stranger.address)["consent"] == "allowed"


def test_without_another_installation_a_decision_is_done_at_once(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    me.set_consent(stranger.address, "block")
    assert count(me, "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'prepared')") == 0
    assert count(me, "SELECT COUNT(*) FROM outbox_envelopes") == 0
    assert me.pending_count() == 0


def test_a_sync_row_goes_to_our_own_installations_only(tmp_path: Path, relay_url: str) -> None:
    wallet = P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet)
    stranger = make_engine(tmp_path / "stranger.db", relay_url)
    assert stranger.send(a1.address, "hi").delivered and a1.sync() == 1
    a1.set_consent(stranger.address, "accept")
    rows = a1.store.read("SELECT e.installation_id FROM outbox_envelopes e JOIN messages m ON m.id = e.message_id WHERE m.kind = 'consent'")
    assert [r[0] for r in rows] == [a2.installation_id]
    assert stranger.sync() == 0  # the stranger is told nothing


def _forge_consent(sender: Engine, to: Engine, target: str, state: str, *, claim: str | None = None) -> None:
    """``sender`` seals a `consent` content to ``to`` through a real session (``claim``: the content's
    sender and recipient, by default its own address and ``to``'s)."""
    assert sender.send(to.address, "hello").delivered  # a session exists now
    with sender.store.write() as c:
        s = sender._active_session(c, to.installation_id)
        content = consent.ConsentContent(new_message_id(), claim or sender.address, claim or to.address, now_ms(), target, state, now_ms() + 10_000)
        s, wire_msg = session.encrypt(s, content.encode())
        sender._save_session(c, s)
    payload = sealed.seal(P.x25519_public(to.secrets.identity_key), to.installation_id, sender.installation_id, sender.record, wire_msg)
    sender.relay.publish_envelope(to.topic, payload)


def test_attack_a_peer_sending_a_consent_content_is_refused(tmp_path: Path, relay_url: str) -> None:
    me = make_engine(tmp_path / "me.db", relay_url)
    friend = make_engine(tmp_path / "friend.db", relay_url)
    hostile = make_engine(tmp_path / "hostile.db", relay_url)
    assert me.send(friend.address, "hi").delivered and me.send(hostile.address, "hi").delivered
    me.set_consent(hostile.address, "block")
    seen = events(me)
    # the hostile peer tries to unblock itself, and to block our friend
    _forge_consent(hostile, me, hostile.address, "allowed")
    _forge_consent(hostile, me, friend.address, "blocked")
    before = me.quarantine_count()
    me.sync()
    assert me.consent(hostile.address)["consent"] == "blocked"
    assert me.consent(friend.address)["consent"] == "allowed"
    assert me.quarantine_count() == before + 2
    errors = [r["error"] for r in me.store.read("SELECT error FROM quarantine")]
    assert sum("own installation" in e for e in errors) == 2  # (the core refuses it first once merged)
    assert not any(e == "consent.changed" for e, _ in seen)


def test_attack_a_peer_claiming_to_be_our_own_installation_is_refused(tmp_path: Path, relay_url: str) -> None:
    """The content says sender = recipient = our address, but the sealed-sender statement is the peer's."""
    me = make_engine(tmp_path / "me.db", relay_url)
    hostile = make_engine(tmp_path / "hostile.db", relay_url)
    assert me.send(hostile.address, "hi").delivered
    me.set_consent(hostile.address, "block")
    _forge_consent(hostile, me, hostile.address, "allowed", claim=me.address)
    before = me.quarantine_count()
    me.sync()
    assert me.consent(hostile.address)["consent"] == "blocked"
    assert me.quarantine_count() == before + 1
    assert any("does not match the sealed-sender statement" in r["error"] for r in me.store.read("SELECT error FROM quarantine"))
