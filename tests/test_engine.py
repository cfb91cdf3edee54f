"""The engine's guarantees (bridge/engine/engine.py; PROTOCOL.md §7, DESIGN.md "Bridge engine"):
crash safety of the outbox, atomic receive, replay and tamper rejection, fan-out, one-time prekeys.

In-process Engine objects over real SQLite stores, against a real relay (create_app served by
werkzeug on 127.0.0.1:0 in a thread).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from bridge import identity
from bridge.crypto import primitives as P
from bridge.crypto import sealed, session
from bridge.engine import Engine
from bridge.engine import engine as engine_mod
from bridge.protocol import prekeys as PK
from bridge.protocol import wire
from bridge.protocol.content import TextContent, pad
from bridge.protocol.ids import address_bucket, new_message_id
from bridge.protocol.wire import WireError
from bridge.relay.client import Envelope, Published, RelayClient
from bridge.relay.server import RelaySettings, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.store import Store, now_ms
from tests.engines import befriend, close_engines, make_engine, track  # noqa: F401 (close_engines: autouse fixture)
from tests.relay_fixtures import crafted_identity, serve_relay, unlimited_settings, wait_until

FAST = 1e6  # every client shares 127.0.0.1: lift the per-address rate limits


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


def reopen(eng: Engine) -> Engine:
    """The same installation after a crash/restart: a new Engine over a new connection to the same file."""
    eng.store.close()
    ident = {"address": eng.address, "installation_id": eng.installation_id, "record": eng.record.hex()}
    new = Engine(Store(eng.store.path), eng.secrets, ident, eng.relay_url)
    track(new)
    return new


def texts(eng: Engine, peer: str) -> list[str]:
    return [m["text"] for m in eng.messages(peer)]


def inbox(eng: Engine) -> list[Envelope]:
    """Everything on the relay for ``eng``'s inbox."""
    return eng.relay.fetch(eng.topic, 0, 500, token=eng.token())


def table(eng: Engine, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in eng.store.read(sql)]


def sessions(eng: Engine) -> list[tuple[Any, ...]]:
    return table(eng, "SELECT remote_iid, sid, state, updated_at FROM sessions ORDER BY remote_iid, sid")


@pytest.fixture
def pair(tmp_path: Path, relay_url: str) -> tuple[Engine, Engine]:
    return make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)


# --- crash safety of the outbox ------------------------------------------------------------


def test_crash_after_queue_is_delivered_by_a_new_engine(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    msg = alice.queue(bob.address, "written before the crash")
    assert table(alice, "SELECT state FROM outbox") == [("pending",)]
    assert inbox(bob) == []  # nothing left the machine
    alice = reopen(alice)
    assert alice.pending_count() == 1
    assert alice.flush_outbox() == {}
    assert alice.pending_count() == 0
    assert alice.messages(bob.address)[0]["state"] == "sent"
    assert bob.sync() == 1
    assert bob.sync() == 0
    assert [(m["id"], m["text"]) for m in bob.messages(alice.address)] == [(msg["id"], "written before the crash")]


def test_crash_after_prepare_publishes_the_stored_bytes(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    mid = alice.queue(bob.address, "prepared, then crashed")["id"]
    alice._prepare(mid)
    stored = table(alice, "SELECT installation_id, payload, cursor FROM outbox_envelopes")
    assert len(stored) == 1 and stored[0][0] == bob.installation_id and stored[0][2] is None
    assert table(alice, "SELECT state FROM outbox") == [("prepared",)]
    assert inbox(bob) == []
    alice = reopen(alice)
    assert alice.flush_outbox() == {}
    published = inbox(bob)
    assert [e.payload for e in published] == [bytes(stored[0][1])]  # the very bytes prepared before the crash
    assert table(alice, "SELECT cursor FROM outbox_envelopes") == [(published[0].cursor,)]
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["prepared, then crashed"]


def test_crash_after_publish_before_marking_done_shows_the_message_once_and_in_order(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    assert alice.send(bob.address, "one").delivered
    # "two": prepared and published, but the process died before recording the publication.
    mid = alice.queue(bob.address, "two")["id"]
    alice._prepare(mid)
    (topic, payload), = table(alice, "SELECT topic, payload FROM outbox_envelopes WHERE message_id = '%s'" % mid)
    alice.relay.publish(topic, bytes(payload))
    alice = reopen(alice)
    assert alice.flush_outbox() == {}  # publishes "two" again
    assert alice.send(bob.address, "three").delivered
    assert len(inbox(bob)) == 4  # one, two, two (again), three
    assert bob.sync() == 3
    assert texts(bob, alice.address) == ["one", "two", "three"]
    assert table(bob, "SELECT COUNT(*) FROM quarantine") == [(0,)]  # a redelivery is not a failure
    # The sender's view agrees and nothing is left to send.
    assert [(m["text"], m["state"]) for m in alice.messages(bob.address)] == [("one", "sent"), ("two", "sent"), ("three", "sent")]
    assert alice.pending_count() == 0


def test_a_queue_is_delivered_in_the_order_it_was_written(pair: tuple[Engine, Engine]) -> None:
    """Messages written while offline go out oldest first: the receiver's arrival order (its store's
    own sequence, not the sender's claimed sent_at) is the order they were written in."""
    alice, bob = pair
    befriend(alice, bob)  # not a message request (issue 12: a stranger's 4th message is held)
    written = [alice.queue(bob.address, f"queued {i}")["id"] for i in range(4)]
    assert alice.flush_outbox() == {}
    assert bob.sync() == 4
    assert [r[0] for r in table(bob, "SELECT id FROM messages ORDER BY seq")] == written
    assert [m["id"] for m in bob.messages(alice.address)] == written


# --- one delivery of a message at a time (issue 9) ----------------------------------------------


class PublishGate:
    """Holds every ``RelayClient.publish`` at the door until a second caller is inside too (the race
    made certain) or :meth:`open` is called; counts the publishes that then went to the relay, by topic."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cond = threading.Condition()
        self.inside = 0
        self.opened = False
        self.published: list[str] = []
        original = RelayClient.publish_envelope

        def publish(client: RelayClient, topic: str, payload: bytes) -> Published:
            with self.cond:
                self.inside += 1
                self.cond.notify_all()
                if not self.cond.wait_for(lambda: self.opened or self.inside >= 2, timeout=30):
                    raise AssertionError("the publish gate was never opened")
            answer = original(client, topic, payload)
            with self.cond:
                self.published.append(topic)
            return answer

        monkeypatch.setattr(RelayClient, "publish_envelope", publish)

    def wait_inside(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.inside >= n, timeout=30)

    def open(self) -> None:
        with self.cond:
            self.opened = True
            self.cond.notify_all()


@pytest.mark.parametrize("flusher", ["same-engine", "other-process"])
def test_a_send_racing_the_outbox_flush_publishes_each_envelope_once(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, flusher: str
) -> None:
    """Issue 9: `parley send` through the daemon (control endpoint: Engine.send) while the daemon's
    outbox loop flushes (Engine.flush_outbox) published the same envelope twice. The send is held
    inside its publish; the flush then runs on the same engine (another thread) or on another Engine
    over the same store (another process: the CLI without the daemon). It must leave the message to
    the caller delivering it; the gate lets the send go once the flush is inside a publish as well
    (the bug) or has returned."""
    alice, bob = pair
    other = alice
    if flusher == "other-process":
        ident = {"address": alice.address, "installation_id": alice.installation_id, "record": alice.record.hex()}
        other = track(Engine(Store(alice.store.path), alice.secrets, ident, alice.relay_url))
    gate = PublishGate(monkeypatch)
    sent: dict[str, Any] = {}
    flushed: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: sent.update(result=alice.send(bob.address, "exactly once")))
    sender.start()
    assert gate.wait_inside(1)  # the send is publishing its envelope
    flush = threading.Thread(target=lambda: flushed.update(errors=other.flush_outbox()))
    flush.start()
    assert wait_until(lambda: gate.inside >= 2 or not flush.is_alive(), timeout=30)
    gate.open()
    sender.join(30)
    flush.join(30)
    assert not sender.is_alive() and not flush.is_alive()
    result = sent["result"]
    assert result.delivered and result.error is None
    mid = result.message["id"]
    assert gate.published == [bob.topic]  # one publish per (message, installation)
    envelopes = inbox(bob)
    assert len(envelopes) == 1
    assert table(alice, f"SELECT installation_id, cursor FROM outbox_envelopes WHERE message_id = '{mid}'") == [
        (bob.installation_id, envelopes[0].cursor)
    ]
    assert "being delivered" in flushed["errors"][mid]  # the flush left it alone, and said why
    assert alice.messages(bob.address)[0]["state"] == "sent" and alice.pending_count() == 0
    assert bob.sync() == 1 and texts(bob, alice.address) == ["exactly once"]


class WatchedLock:
    """A conversation lock that counts the threads blocked on it (Engine uses acquire and release only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = 0

    def acquire(self, blocking: bool = True) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.waiting += 1
        return self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


def test_a_send_arriving_while_the_flush_publishes_its_message_waits_and_reports_it_sent(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the daemon's flush picks the message up between the send queueing it and
    flushing. The send must not publish it again, and must not answer "queued" either: it waits for
    the flush and reports the message sent."""
    alice, bob = pair
    watched = WatchedLock()
    alice._conversations[bob.address] = watched  # type: ignore[assignment]
    gate = PublishGate(monkeypatch)
    sent: dict[str, Any] = {}
    flushed: dict[str, Any] = {}
    flush = threading.Thread(target=lambda: flushed.update(errors=alice.flush_outbox()))

    def on_queued(event: str, payload: dict[str, Any]) -> None:
        if event == "message.new" and payload["state"] == "queued" and threading.current_thread() is sender:
            flush.start()
            assert gate.wait_inside(1)  # the flush is publishing it; now the send goes on to flush

    alice.listeners.append(on_queued)
    sender = threading.Thread(target=lambda: sent.update(result=alice.send(bob.address, "sent by the flush")))
    sender.start()
    assert wait_until(lambda: gate.inside >= 2 or watched.waiting >= 1 or not sender.is_alive(), timeout=30)
    gate.open()
    sender.join(30)
    flush.join(30)
    assert not sender.is_alive() and not flush.is_alive()
    result = sent["result"]
    assert gate.published == [bob.topic]
    assert result.delivered and result.error is None and result.message["state"] == "sent"
    assert flushed["errors"] == {}
    assert len(inbox(bob)) == 1 and bob.sync() == 1


@pytest.mark.parametrize("flusher", ["same-engine", "other-process"])
def test_an_explicit_sync_waits_for_a_message_another_caller_is_delivering(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, flusher: str
) -> None:
    """`parley sync` (flush_outbox(retry_now=True)) is the user asking to send everything now: a
    message another caller is publishing at that moment (the daemon's send, a parallel CLI) is waited
    for, not reported as "could not be sent yet", and still published once."""
    alice, bob = pair
    other = alice
    if flusher == "other-process":
        ident = {"address": alice.address, "installation_id": alice.installation_id, "record": alice.record.hex()}
        other = track(Engine(Store(alice.store.path), alice.secrets, ident, alice.relay_url))
    watched = WatchedLock()
    alice._conversations[bob.address] = watched  # type: ignore[assignment]
    gate = PublishGate(monkeypatch)
    sent: dict[str, Any] = {}
    synced: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: sent.update(result=alice.send(bob.address, "in flight")))
    sender.start()
    assert gate.wait_inside(1)  # the send is publishing
    syncer = threading.Thread(target=lambda: synced.update(errors=other.flush_outbox(retry_now=True)))
    syncer.start()
    # the sync is now waiting for the send's conversation lock, or polling the send's lease
    assert wait_until(lambda: watched.waiting >= 1 or flusher == "other-process" or not syncer.is_alive(), timeout=30)
    assert syncer.is_alive()
    gate.open()
    sender.join(30)
    syncer.join(30)
    assert not sender.is_alive() and not syncer.is_alive()
    assert sent["result"].delivered and synced["errors"] == {}
    assert gate.published == [bob.topic] and len(inbox(bob)) == 1


def test_a_send_from_another_process_waits_out_the_lease_on_an_earlier_message(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes on one store (`parley send` twice at once without the daemon): the second send's
    message is behind the first's, which the other process is publishing. It waits for that process
    instead of publishing the first message again or answering "queued", then sends its own."""
    alice, bob = pair
    ident = {"address": alice.address, "installation_id": alice.installation_id, "record": alice.record.hex()}
    other = track(Engine(Store(alice.store.path), alice.secrets, ident, alice.relay_url))
    alice.queue(bob.address, "first")
    gate = PublishGate(monkeypatch)
    flush = threading.Thread(target=alice.flush_outbox)
    flush.start()
    assert gate.wait_inside(1)  # the first process is publishing "first"
    waiting = threading.Event()
    await_lease = getattr(other, "_await_lease", None)  # (absent before the fix: the plant's run)

    def watched(mid: str, **kw: Any) -> bool:
        waiting.set()
        return bool(await_lease(mid, **kw))  # type: ignore[misc]

    monkeypatch.setattr(other, "_await_lease", watched, raising=False)
    sent: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: sent.update(result=other.send(bob.address, "second")))
    sender.start()
    assert wait_until(lambda: gate.inside >= 2 or waiting.is_set() or not sender.is_alive(), timeout=30)
    gate.open()
    sender.join(30)
    flush.join(30)
    assert not sender.is_alive() and not flush.is_alive()
    assert sent["result"].delivered and sent["result"].error is None
    assert gate.published == [bob.topic, bob.topic]  # "first" once, "second" once
    assert bob.sync() == 2 and texts(bob, alice.address) == ["first", "second"]


def test_a_lease_left_by_a_dead_process_holds_the_message_until_it_runs_out(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    mid = alice.queue(bob.address, "after the lease")["id"]
    with alice.store.write() as c:  # a process died while delivering it
        c.execute("UPDATE outbox SET lease_owner = 'dead', lease_until = ? WHERE message_id = ?", (now_ms() + 60_000, mid))
    assert alice.flush_outbox() == {mid: "being delivered by another process"}
    assert inbox(bob) == [] and table(alice, "SELECT state, attempts FROM outbox") == [("pending", 0)]
    with alice.store.write() as c:  # its lease ran out
        c.execute("UPDATE outbox SET lease_until = ? WHERE message_id = ?", (now_ms() - 1, mid))
    assert alice.flush_outbox() == {}
    assert table(alice, "SELECT state, lease_owner FROM outbox") == [("done", None)]
    assert bob.sync() == 1 and texts(bob, alice.address) == ["after the lease"]


# --- receiving: atomicity, replay, tampering --------------------------------------------------


@pytest.mark.parametrize("first", [True, False], ids=["prekey-message", "ratchet-message"])
def test_received_message_and_ratchet_state_are_committed_together(pair: tuple[Engine, Engine], first: bool) -> None:
    alice, bob = pair
    if not first:
        alice.send(bob.address, "warm-up")
        assert bob.sync() == 1
    assert alice.send(bob.address, "must not be half-processed").delivered
    before = (sessions(bob), bob.cursor(), table(bob, "SELECT kind, id FROM prekeys ORDER BY kind, id"))
    con = sqlite3.connect(bob.store.path)
    con.execute("CREATE TRIGGER fail_insert BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    con.commit()
    try:
        with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
            bob.sync()
        after = (sessions(bob), bob.cursor(), table(bob, "SELECT kind, id FROM prekeys ORDER BY kind, id"))
        assert after == before  # neither the session, the cursor, nor the used one-time prekey moved
        assert texts(bob, alice.address) == ([] if first else ["warm-up"])
    finally:
        con.execute("DROP TRIGGER fail_insert")
        con.commit()
        con.close()
    assert bob.sync() == 1
    assert texts(bob, alice.address)[-1] == "must not be half-processed"
    assert sessions(bob) != before[0]
    assert bob.cursor() > before[1]


def test_replayed_envelope_is_not_shown_twice_even_after_restart(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    alice.send(bob.address, "hello")
    alice.send(bob.address, "again")
    assert bob.sync() == 2
    first, second = inbox(bob)
    for env in (first, second):
        alice.relay.publish(bob.topic, env.payload)  # the relay (or an attacker) replays it with a new cursor
    assert bob.sync() == 0
    assert texts(bob, alice.address) == ["hello", "again"]
    bob = reopen(bob)
    alice.relay.publish(bob.topic, first.payload)
    alice.relay.publish(bob.topic, second.payload)
    assert bob.sync() == 0
    assert texts(bob, alice.address) == ["hello", "again"]
    assert bob.cursor() == inbox(bob)[-1].cursor
    # And the conversation still works afterwards.
    alice.send(bob.address, "still fine")
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["hello", "again", "still fine"]


def test_a_cursor_already_processed_changes_nothing(pair: tuple[Engine, Engine]) -> None:
    """Exactly once per cursor, whatever the bytes: a relay that hands out a cursor again (the same
    envelope, or other bytes under it) gets nothing decrypted, stored or quarantined."""
    alice, bob = pair
    alice.send(bob.address, "once")
    assert bob.sync() == 1
    (env,) = inbox(bob)
    before = list(sqlite3.connect(bob.store.path).iterdump())
    for payload in (env.payload, b"\x00junk", _flip(env.payload, 5)):
        for cursor in (env.cursor, env.cursor - 1):
            assert bob.process(Envelope(cursor, env.topic, payload, env.received_at)) is None
    assert list(sqlite3.connect(bob.store.path).iterdump()) == before
    assert bob.quarantine_count() == 0


def test_a_message_reencrypted_by_its_sender_is_shown_and_announced_once(pair: tuple[Engine, Engine]) -> None:
    """A sender whose store forgot that a message went out (restored from an older backup) encrypts it
    again: a new ratchet message with the same message id. The receiver shows and announces it once."""
    alice, bob = pair
    announced: list[str] = []
    bob.listeners.append(lambda ev, payload: announced.append(payload["id"]) if ev == "message.new" else None)
    mid = alice.send(bob.address, "only once").message["id"]
    assert bob.sync() == 1
    with alice.store.write() as c:
        c.execute("DELETE FROM outbox_envelopes WHERE message_id = ?", (mid,))
        c.execute("UPDATE outbox SET state = 'pending' WHERE message_id = ?", (mid,))
    assert alice.flush_outbox() == {}
    first, second = inbox(bob)
    assert first.payload != second.payload  # encrypted again, not replayed
    assert bob.sync() == 0
    assert [(m["id"], m["text"]) for m in bob.messages(alice.address)] == [(mid, "only once")]
    assert announced == [mid]
    assert bob.quarantine_count() == 0


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_tampered_truncated_and_garbage_envelopes_are_recorded_and_skipped(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    alice.send(bob.address, "establish")
    assert bob.sync() == 1
    mid = alice.queue(bob.address, "the real one")["id"]
    alice._prepare(mid)
    (good,), = table(alice, "SELECT payload FROM outbox_envelopes WHERE message_id = '%s'" % mid)
    good = bytes(good)
    bad = [_flip(good, len(good) // 2), _flip(good, len(good) - 1), _flip(good, 5), good[: len(good) // 2], good[:-1], b"\x00garbage\xff"]
    state_before = sessions(bob)
    cursors = [alice.relay.publish(bob.topic, b) for b in bad]
    assert bob.sync() == 0
    failures = table(bob, "SELECT cursor FROM quarantine ORDER BY cursor")
    assert failures == [(c,) for c in cursors]
    assert bob.cursor() == cursors[-1]
    assert sessions(bob) == state_before  # the session state bytes are unchanged
    assert texts(bob, alice.address) == ["establish"]
    assert alice.flush_outbox() == {}
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["establish", "the real one"]


def test_sender_claiming_another_wallet_is_rejected(tmp_path: Path, relay_url: str) -> None:
    alice = make_engine(tmp_path / "alice.db", relay_url)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    mallory = make_engine(tmp_path / "mallory.db", relay_url)
    # Mallory's own, valid statement seals the envelope, but the content says it is from Alice.
    forged = TextContent(new_message_id(), alice.address, bob.address, now_ms(), "send me your seed phrase").encode()
    remote = session.RemoteInstallation(bob.installation_id, bob.secrets.signing_pub, bob.secrets.identity_pub)
    s = session.initiate(mallory.local, remote, PK.Bundle.decode(mallory.relay.claim(bob.installation_id)))
    _, msg = session.encrypt(s, forged)
    cursor = mallory.relay.publish(bob.topic, sealed.seal(bob.secrets.identity_pub, bob.installation_id, mallory.installation_id, mallory.record, msg))
    prekeys_before = table(bob, "SELECT kind, id FROM prekeys ORDER BY kind, id")
    assert bob.sync() == 0
    assert bob.messages(alice.address) == [] and bob.messages(mallory.address) == []
    (err,), = table(bob, f"SELECT error FROM quarantine WHERE cursor = {cursor}")
    assert "sender" in err
    assert sessions(bob) == []  # no session with the impostor
    # A rejected envelope changes nothing but the failure log and the cursor.
    assert table(bob, "SELECT kind, id FROM prekeys ORDER BY kind, id") == prekeys_before
    assert bob.cursor() == cursor


def test_a_later_content_type_shows_its_fallback_text_or_nothing(tmp_path: Path, relay_url: str) -> None:
    """§10: a 1.0 bridge shows an unknown 1.x content type by its fallback text; with no fallback it
    shows nothing, quarantines nothing, and the session goes on."""
    alice = make_engine(tmp_path / "alice.db", relay_url)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    remote = session.RemoteInstallation(bob.installation_id, bob.secrets.signing_pub, bob.secrets.identity_pub)
    s = session.initiate(alice.local, remote, PK.Bundle.decode(alice.relay.claim(bob.installation_id)))
    contents = [
        TextContent(new_message_id(), alice.address, bob.address, now_ms(), "voted 👍", "poll").encode(),
        pad(wire.encode([1, "typing", new_message_id(), alice.address, bob.address, now_ms(), "", True])),
        TextContent(new_message_id(), alice.address, bob.address, now_ms(), "plain text").encode(),
    ]
    for content in contents:
        s, msg = session.encrypt(s, content)
        alice.relay.publish(bob.topic, sealed.seal(bob.secrets.identity_pub, bob.installation_id, alice.installation_id, alice.record, msg))
    assert bob.sync() == 2
    assert texts(bob, alice.address) == ["voted 👍", "plain text"]
    assert bob.quarantine_count() == 0


# --- fan-out ----------------------------------------------------------------------------------


def test_a_message_whose_every_recipient_envelope_is_dropped_is_failed_not_sent(tmp_path: Path, relay_url: str) -> None:
    """§6.2 step 4: the relay's 404 unknown_installation drops an envelope; when it drops every envelope
    to the recipient (its installations were revoked after the sender looked), nothing reached them, so
    the message is failed, even though the copy to the sender's own other installation went out."""
    wallet_a = P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet_a)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet_a)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    assert a1.send(bob.address, "before").delivered and bob.sync() == 1 and a2.sync() == 1
    statement = identity.revoke_statement(bob.address, bob.installation_id)
    bob.relay.publish_identity(bob.address, identity.sign_statement(statement, bob.secrets.wallet_key).to_record())
    r = a1.send(bob.address, "after the revocation")  # a1's cache still lists Bob's installation
    assert not r.delivered and r.error == f"none of {bob.address}'s installations is active any more"
    assert [(m["text"], m["state"]) for m in a1.messages(bob.address)] == [("before", "sent"), ("after the revocation", "failed")]
    assert a2.sync() == 1  # our own copy was published all the same


def test_when_every_installation_known_is_gone_the_sender_refreshes_once_and_reaches_the_new_one(tmp_path: Path, relay_url: str) -> None:
    """§6.2 step 4 (issue 15): Bob lost his laptop and restored on a new device, which revoked the lost
    installation. Alice knows Bob only from his statement (he wrote first), so no stale-log hint
    applies; her next message finds every installation she knew gone (404), refreshes Bob's log once
    and reaches the new one instead of failing."""
    wallet_b = P.random_bytes(32)
    alice = make_engine(tmp_path / "alice.db", relay_url)
    b1 = make_engine(tmp_path / "b1.db", relay_url, wallet_b)
    assert b1.send(alice.address, "hello from the old laptop").delivered and alice.sync() == 1
    assert alice.send(b1.address, "reply").delivered and b1.sync() == 1
    b2 = make_engine(tmp_path / "b2.db", relay_url, wallet_b)  # the restored device
    statement = identity.revoke_statement(b2.address, b1.installation_id)
    b2.publish_record(b2.address, identity.sign_statement(statement, b2.secrets.wallet_key).to_record())
    assert set(alice.peers.cached(b1.address) or {}) == {b1.installation_id}  # no pass since
    r = alice.send(b1.address, "after the restore")
    assert r.delivered and r.error is None, r.error
    assert _envelope_targets(alice, r.message["id"]) == {b1.installation_id, b2.installation_id}
    assert set(alice.peers.cached(b1.address) or {}) == {b2.installation_id}
    assert b2.sync() == 1 and texts(b2, alice.address) == ["after the restore"]
    # One refresh a minute: a second message right away does not ask the relay again, and needs not.
    assert alice.send(b1.address, "and again").delivered and b2.sync() == 1


def test_fan_out_to_every_installation_and_to_the_senders_other_installations(tmp_path: Path, relay_url: str) -> None:
    wallet_a, wallet_b = P.random_bytes(32), P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet_a)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet_a)
    b1 = make_engine(tmp_path / "b1.db", relay_url, wallet_b)
    b2 = make_engine(tmp_path / "b2.db", relay_url, wallet_b)
    assert a1.address == a2.address and b1.address == b2.address
    r = a1.send(b1.address, "to both of Bob's installations")
    assert r.delivered
    rows = table(a1, "SELECT installation_id, topic FROM outbox_envelopes")
    assert sorted(iid for iid, _ in rows) == sorted([b1.installation_id, b2.installation_id, a2.installation_id])
    assert a1.installation_id not in {iid for iid, _ in rows}
    envs = {e.installation_id: inbox(e)[0].payload for e in (a2, b1, b2)}
    for e in (a2, b1, b2):
        assert len(inbox(e)) == 1
        # Each envelope opens only with its own installation's key.
        for other in (a2, b1, b2):
            if other is e:
                sealed.unseal(e.secrets.identity_key, e.installation_id, envs[e.installation_id])
            else:
                with pytest.raises((P.CryptoError, WireError)):
                    sealed.unseal(e.secrets.identity_key, e.installation_id, envs[other.installation_id])
    assert b1.sync() == 1 and b2.sync() == 1 and a2.sync() == 1
    for b in (b1, b2):
        assert [(m["text"], m["direction"]) for m in b.messages(a1.address)] == [("to both of Bob's installations", "in")]
    assert [(m["text"], m["direction"], m["id"]) for m in a2.messages(b1.address)] == [("to both of Bob's installations", "out", r.message["id"])]


# --- a new installation gets messages at once (issue 9; PROTOCOL.md §6.5) ----------------------


class DoctoredRelay:
    """A real relay (relay_fixtures.serve_relay) whose ``POST /v1/envelopes`` answers pass through
    ``doctor`` (a lying relay, or one older than the ``logs`` field); records the identity lookups it serves."""

    def __init__(self, doctor: Any) -> None:
        self.doctor = doctor
        self.lookups: list[str] = []
        self.url = ""

    def wrap(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
            if method == "GET" and path.startswith("/v1/identity"):
                self.lookups.append(path)
            if not (method == "POST" and path == "/v1/envelopes"):
                return app(environ, start_response)
            seen: dict[str, Any] = {}

            def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                seen.update(status=status, headers=headers)

            body = b"".join(app(environ, keep))
            headers = seen["headers"]
            if seen["status"].startswith("202"):
                body = json.dumps(self.doctor(json.loads(body))).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
            start_response(seen["status"], headers)
            return [body]

        return wsgi


@pytest.fixture
def doctored(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        made: list[DoctoredRelay] = []

        def make(doctor: Any) -> DoctoredRelay:
            relay = DoctoredRelay(doctor)
            relay.url = stack.enter_context(serve_relay(tmp_path / f"doctored-{len(made)}.db", wrap=relay.wrap))
            made.append(relay)
            return relay

        yield make


def _envelope_targets(eng: Engine, mid: str) -> set[str]:
    return {r[0] for r in table(eng, f"SELECT installation_id FROM outbox_envelopes WHERE message_id = '{mid}'")}


def test_a_recipients_installation_authorized_after_the_cache_was_filled_gets_the_next_message(tmp_path: Path, relay_url: str) -> None:
    wallet_b = P.random_bytes(32)
    alice = make_engine(tmp_path / "alice.db", relay_url)
    b1 = make_engine(tmp_path / "b1.db", relay_url, wallet_b)
    assert alice.send(b1.address, "before").delivered  # Alice's identity cache holds Bob's log now
    b2 = make_engine(tmp_path / "b2.db", relay_url, wallet_b)  # Bob authorizes a second installation
    assert set(alice.peers.cached(b1.address) or {}) == {b1.installation_id}  # no scheduled pass since
    r = alice.send(b1.address, "right after")
    assert r.delivered and r.error is None
    assert _envelope_targets(alice, r.message["id"]) == {b1.installation_id, b2.installation_id}
    assert set(alice.peers.cached(b1.address) or {}) == {b1.installation_id, b2.installation_id}
    assert b2.sync() == 1 and [(m["id"], m["text"]) for m in b2.messages(alice.address)] == [(r.message["id"], "right after")]
    assert b1.sync() == 2 and texts(b1, alice.address) == ["before", "right after"]
    assert len(inbox(b1)) == 2 and len(inbox(b2)) == 1  # nothing published twice


def test_our_own_installation_authorized_since_the_last_refresh_gets_the_copy(tmp_path: Path, relay_url: str) -> None:
    """Self fan-out: the answer to the envelope for our other installation reports our own log."""
    wallet_a = P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet_a)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet_a)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    assert a1.send(bob.address, "before").delivered
    a3 = make_engine(tmp_path / "a3.db", relay_url, wallet_a)
    r = a1.send(bob.address, "right after")
    assert r.delivered
    assert _envelope_targets(a1, r.message["id"]) == {bob.installation_id, a2.installation_id, a3.installation_id}
    assert a3.sync() == 1
    assert [(m["text"], m["direction"]) for m in a3.messages(bob.address)] == [("right after", "out")]
    assert a2.sync() == 2 and bob.sync() == 2


def test_a_relay_claiming_a_longer_log_costs_one_refresh_a_minute_and_no_envelope(tmp_path: Path, doctored: Any) -> None:
    def inflate(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "logs": {a: n + 5 for a, n in answer["logs"].items()}}

    relay = doctored(inflate)
    clock = [now_ms()]
    alice = make_engine(tmp_path / "alice.db", relay.url, clock=lambda: clock[0])
    bob = make_engine(tmp_path / "bob.db", relay.url)
    befriend(alice, bob)
    bucket = address_bucket(bob.address)

    def lookups_of_bob() -> int:
        return sum(bucket.startswith(p.rsplit("/", 1)[1]) for p in relay.lookups if p.startswith("/v1/identity-bucket/"))

    relay.lookups.clear()
    first = alice.send(bob.address, "one")
    assert first.delivered
    assert lookups_of_bob() == 2  # first contact, then the one refresh the (false) answer asked for
    for text in ("two", "three"):
        r = alice.send(bob.address, text)
        assert r.delivered and _envelope_targets(alice, r.message["id"]) == {bob.installation_id}
    assert lookups_of_bob() == 2  # within the minute: no more, whatever the relay says
    clock[0] += 60_000
    assert alice.send(bob.address, "four").delivered
    assert lookups_of_bob() == 3
    assert _envelope_targets(alice, first.message["id"]) == {bob.installation_id}
    assert len(inbox(bob)) == 4 and bob.sync() == 4 and texts(bob, alice.address) == ["one", "two", "three", "four"]


@pytest.mark.parametrize("answer", ["omitted", "malformed"])
def test_a_relay_without_the_logs_field_changes_nothing(tmp_path: Path, doctored: Any, answer: str) -> None:
    """An older relay (no ``logs``), or one sending something unusable there plus fields we do not
    know: the message goes to the cached installations, as before issue 9, and nothing is looked up."""
    def older(reply: dict[str, Any]) -> dict[str, Any]:
        if answer == "omitted":
            return {"cursor": reply["cursor"]}
        return {"cursor": reply["cursor"], "logs": ["not", "an", "object"], "later_field": {"x": 1}}

    relay = doctored(older)
    wallet_b = P.random_bytes(32)
    alice = make_engine(tmp_path / "alice.db", relay.url)
    b1 = make_engine(tmp_path / "b1.db", relay.url, wallet_b)
    assert alice.send(b1.address, "before").delivered
    b2 = make_engine(tmp_path / "b2.db", relay.url, wallet_b)
    relay.lookups.clear()
    r = alice.send(b1.address, "to the cached installations")
    assert r.delivered and r.error is None
    assert relay.lookups == []
    assert _envelope_targets(alice, r.message["id"]) == {b1.installation_id}
    assert b2.sync() == 0
    alice.peers.refresh()  # the scheduled pass finds B2
    assert alice.send(b1.address, "after the pass").delivered
    assert b2.sync() == 1 and texts(b2, alice.address) == ["after the pass"]


# --- one-time prekeys --------------------------------------------------------------------------


def _ids(eng: Engine, kind: str) -> set[int]:
    return {r[0] for r in table(eng, f"SELECT id FROM prekeys WHERE kind = '{kind}'")}


def test_one_time_prekeys_are_deleted_after_use_replenished_and_never_reused(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    counts = bob.relay.prekey_count(bob.installation_id)
    assert counts["otpk"] == engine_mod.OTPK_TARGET
    otpks_before, pq_before = _ids(bob, PK.OTPK), _ids(bob, PK.PQ_OTPK)
    assert len(otpks_before) == engine_mod.OTPK_TARGET
    # Drain the relay below the low-water mark (other senders claiming bundles).
    drain = engine_mod.OTPK_TARGET - engine_mod.OTPK_LOW + 2
    for _ in range(drain):
        bob.relay.claim(bob.installation_id)
    left = bob.relay.prekey_count(bob.installation_id)
    assert left["otpk"] < engine_mod.OTPK_LOW
    assert alice.send(bob.address, "uses a one-time prekey").delivered
    (env,) = inbox(bob)
    info = session.peek(sealed.unseal(bob.secrets.identity_key, bob.installation_id, env.payload).message)
    assert info.is_prekey and info.otpk_id in otpks_before
    assert bob.sync() == 1
    otpks_after = _ids(bob, PK.OTPK)
    assert info.otpk_id not in otpks_after  # deleted locally: forward secrecy
    # The drain took every ML-KEM one-time prekey too, so this message used the last-resort key, which
    # is kept (the ML-KEM one-time path, and its deletion, is tests/test_prekeys.py
    # ::test_first_message_uses_a_pq_one_time_prekey_and_its_private_half_is_deleted).
    assert (info.pqpk_kind, info.pqpk_id in _ids(bob, PK.PQ_LRPK)) == (PK.PQ_LRPK, True)
    counts = bob.relay.prekey_count(bob.installation_id)
    assert counts["otpk"] == engine_mod.OTPK_TARGET  # replenished on the relay
    assert counts["pq_otpk"] >= engine_mod.PQ_OTPK_LOW
    new = otpks_after - otpks_before
    assert len(new) == engine_mod.OTPK_TARGET - (left["otpk"] - 1)
    assert min(new) > max(otpks_before)  # ids only go up: a used id is never handed out again
    new_pq = _ids(bob, PK.PQ_OTPK) - pq_before
    assert left["pq_otpk"] < engine_mod.PQ_OTPK_LOW and new_pq  # drained, so ML-KEM one-time prekeys were made too
    assert min(new_pq) > max(pq_before)  # and their ids, too, only go up
    # After a restart the counter continues; it never restarts from the smallest free id.
    bob = reopen(bob)
    for _ in range(drain + 10):
        bob.relay.claim(bob.installation_id)
    assert bob.ensure_prekeys()
    newest = _ids(bob, PK.OTPK) - otpks_after
    assert newest and min(newest) > max(otpks_after | {info.otpk_id})


# --- hostile peers: the inbox must never wedge (issue 8 item 4) ----------------------------------


def _spk_public(eng: Engine) -> bytes:
    (pub,), = table(eng, f"SELECT public FROM prekeys WHERE kind = '{PK.SPK}' ORDER BY id DESC LIMIT 1")
    return bytes(pub)


def _session_with(eng: Engine, remote: Engine) -> tuple[Any, ...]:
    return tuple(table(eng, f"SELECT sid, state, updated_at FROM sessions WHERE remote_iid = '{remote.installation_id}'"))


def _hostile_message(sender: Engine, recipient: Engine, header: bytes, body: bytes, sid: bytes | None = None) -> bytes:
    """A normal session message in ``sender``'s real session with ``recipient``, sealed for ``recipient``
    with ``sender``'s real statement: it reaches the recipient's ratchet."""
    from bridge.protocol import wire

    if sid is None:
        (sid,), = table(sender, f"SELECT sid FROM sessions WHERE remote_iid = '{recipient.installation_id}'")
    msg = wire.encode([1, "msg", bytes(sid), header, body])
    return sealed.seal(recipient.secrets.identity_pub, recipient.installation_id, sender.installation_id, sender.record, msg)


def test_hostile_header_does_not_wedge_inbox(tmp_path: Path, relay_url: str) -> None:
    """Bob answers Alice's first message with a normal message whose header key is Alice's current
    DHr (Bob's signed prekey) before any reply: it used to trip an assert in the ratchet, roll the
    whole transaction back and leave the cursor behind it for ever."""
    from bridge.crypto.ratchet import Header

    alice = make_engine(tmp_path / "alice.db", relay_url)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    carol = make_engine(tmp_path / "carol.db", relay_url)
    assert alice.send(bob.address, "hi Bob").delivered
    assert bob.sync() == 1
    before = _session_with(alice, bob)
    hostile = _hostile_message(bob, alice, Header(_spk_public(bob), 0, 0).encode(), bytes(48))
    cursor = bob.relay.publish(alice.topic, hostile)
    assert carol.send(alice.address, "after the attack").delivered
    assert alice.sync() == 1
    assert texts(alice, carol.address) == ["after the attack"]
    assert alice.cursor() > cursor
    assert _session_with(alice, bob) == before  # the bad envelope changed nothing
    (qcursor, payload, err), = table(alice, "SELECT cursor, payload, error FROM quarantine")
    assert (qcursor, bytes(payload)) == (cursor, hostile)
    assert err.startswith("NoReceivingChain")
    assert alice.quarantine_count() == 1
    # And Bob's genuine reply still opens.
    assert bob.send(alice.address, "a real reply").delivered
    assert alice.sync() == 1
    assert texts(alice, bob.address) == ["hi Bob", "a real reply"]


def _ratchet(eng: Engine, remote: Engine) -> Any:
    with eng.store.write() as c:  # a read inside a transaction, so the session row is current
        s = eng._active_session(c, remote.installation_id)
    assert s is not None
    return s.ratchet


@pytest.mark.parametrize("role", ["initiator-before-reply", "responder"])
def test_hostile_headers_and_bodies_never_block_a_genuine_message(tmp_path: Path, relay_url: str, role: str) -> None:
    """Engine-level fuzzing of the inbox: from a real session, a hostile peer sends arbitrary headers
    and bodies, sealed for the victim with the peer's real statement so they reach the ratchet; a
    genuine message sent after them must arrive, every hostile one is quarantined, and the victim's
    session with the hostile peer is byte-identical afterwards."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from bridge.crypto.ratchet import MAX_COUNTER, MAX_SKIP
    from bridge.protocol import wire

    victim = make_engine(tmp_path / "victim.db", relay_url)
    peer = make_engine(tmp_path / "peer.db", relay_url)
    friend = make_engine(tmp_path / "friend.db", relay_url)
    befriend(victim, peer, friend)
    if role == "initiator-before-reply":
        assert victim.send(peer.address, "hello").delivered and peer.sync() == 1
    else:
        assert peer.send(victim.address, "hello").delivered and victim.sync() == 1
    mine, theirs = _ratchet(victim, peer), _ratchet(peer, victim)
    (sid,), = table(peer, f"SELECT sid FROM sessions WHERE remote_iid = '{victim.installation_id}'")
    keys = [k for k in (mine.dhr, mine.dhs_pub, theirs.dhs_pub, theirs.dhr, _spk_public(peer), bytes(32), b"\x01" + bytes(31)) if k]
    counters = st.one_of(st.integers(0, 3), st.integers(MAX_SKIP - 1, MAX_SKIP + 1), st.integers(0, MAX_COUNTER))
    headers = st.one_of(
        st.builds(lambda dh, pn, n: wire.encode([dh, pn, n]), st.one_of(st.sampled_from(keys), st.binary(min_size=32, max_size=32)), counters, counters),
        st.binary(max_size=64),
    )
    bodies = st.one_of(st.integers(0, 6).map(lambda k: P.random_bytes(16 * k + 32)), st.binary(max_size=128))
    sids = st.one_of(st.just(bytes(sid)), st.binary(min_size=16, max_size=16))
    hostile = st.lists(st.tuples(headers, bodies, sids), min_size=1, max_size=3)
    session_before = _session_with(victim, peer)
    counter = iter(range(10**6))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hostile)
    def attack(messages: list[tuple[bytes, bytes, bytes]]) -> None:
        quarantined = victim.quarantine_count()
        published = {}
        for header, body, s in messages:
            payload = _hostile_message(peer, victim, header, body, sid=s)
            published[peer.relay.publish(victim.topic, payload)] = payload
        genuine = f"genuine {next(counter)}"
        assert friend.send(victim.address, genuine).delivered
        assert victim.sync() == 1
        assert texts(victim, friend.address)[-1] == genuine
        assert _session_with(victim, peer) == session_before
        kept = {c: bytes(p) for c, p in table(victim, f"SELECT cursor, payload FROM quarantine WHERE cursor >= {min(published)}")}
        assert victim.quarantine_count() == quarantined + len(kept)
        for cursor, payload in published.items():
            if cursor in kept:
                assert kept[cursor] == payload
            else:  # not quarantined: only a message naming a consumed key is dropped silently, as a redelivery
                inner = sealed.unseal(victim.secrets.identity_key, victim.installation_id, payload).message
                with victim.store.write() as c:
                    current = victim._active_session(c, peer.installation_id)
                with pytest.raises(session.DuplicateMessage):
                    session.decrypt(current, inner)

    attack()
    # The hostile peer's own genuine messages still open afterwards.
    assert peer.send(victim.address, "I am harmless now").delivered
    assert victim.sync() == 1
    assert texts(victim, peer.address)[-1] == "I am harmless now"


# --- hostile peers: the outbox must never wedge (issue 8 item 3) ---------------------------------


@pytest.fixture
def strict_relay(tmp_path: Path) -> Iterator[tuple[str, SQLiteStorage]]:
    """A relay with the default prekey-claim limit (2/s, burst 50 per client address); only the
    publish, auth and identity limits are lifted, since every test client shares 127.0.0.1."""
    storage = SQLiteStorage(str(tmp_path / "strict-relay.db"))
    settings = RelaySettings(
        publish_rate=FAST, publish_burst=10**6, auth_rate=FAST, auth_burst=10**6, identity_rate=FAST, identity_burst=10**6,
        claim_target_rate=FAST, claim_target_burst=10**6,  # the per-client claim limit is what these tests meet
    )
    assert (settings.claim_rate, settings.claim_burst) == (2.0, 50)
    server = make_server("127.0.0.1", 0, create_app(storage, settings=settings), threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}", storage
    server.shutdown()
    t.join(5)
    server.server_close()
    storage.close()


def _count_claims(eng: Engine) -> list[str]:
    claimed: list[str] = []
    claim = eng.relay.claim

    def counting(iid: str) -> Any:
        claimed.append(iid)
        return claim(iid)

    eng.relay.claim = counting  # type: ignore[method-assign]
    return claimed


def test_message_to_crafted_identity_does_not_wedge_outbox(tmp_path: Path, strict_relay: tuple[str, SQLiteStorage]) -> None:
    """An identity with more authorizations than the relay's claim burst and no prekeys: the message
    to it used to claim every bundle, hit 429 at the 51st and stay at the head of the outbox, so every
    later message, to anyone, queued behind it for ever."""
    from bridge.engine.outbox import MAX_FANOUT

    url, storage = strict_relay
    alice = make_engine(tmp_path / "alice.db", url)
    bob = make_engine(tmp_path / "bob.db", url)
    crafted = crafted_identity(storage, 60)
    assert len(alice.installations_of(crafted, max_age_ms=0)) == 60
    claims = _count_claims(alice)
    to_crafted = alice.send(crafted, "to the crafted identity")
    assert not to_crafted.delivered
    to_bob = alice.send(bob.address, "to a normal peer")
    assert to_bob.delivered, to_bob.error
    assert bob.sync() == 1
    assert texts(bob, alice.address) == ["to a normal peer"]
    assert len(claims) <= MAX_FANOUT + 1  # the crafted identity's capped fan-out, and Bob's one bundle
    # The crafted message failed for good (no installation has prekeys); nothing is left waiting.
    assert [(m["text"], m["state"]) for m in alice.messages(crafted)] == [("to the crafted identity", "failed")]
    assert alice.pending_count() == 0
    # A second message to it does not claim again what had no prekeys a moment ago.
    before = len(claims)
    assert not alice.send(crafted, "again").delivered
    assert len(claims) == before


def test_rate_limited_peer_backs_off_without_holding_back_other_conversations(tmp_path: Path, strict_relay: tuple[str, SQLiteStorage]) -> None:
    """Order is kept per conversation, not globally: while Carol's first message waits for the
    relay's claim limit (429), her second one waits behind it, and Bob's conversation goes on."""
    url, _ = strict_relay
    alice = make_engine(tmp_path / "alice.db", url)
    bob = make_engine(tmp_path / "bob.db", url)
    carol = make_engine(tmp_path / "carol.db", url)
    assert alice.send(bob.address, "b0").delivered  # Alice and Bob have a session: no claim needed any more
    while True:  # someone on the same address drains the claim limit
        try:
            carol.relay.claim(bob.installation_id)
        except engine_mod.RelayError as exc:
            assert exc.status == 429
            break
    c1 = alice.send(carol.address, "c1")
    assert not c1.delivered and "rate" in (c1.error or "")
    (attempts, next_at, state), = table(alice, f"SELECT attempts, next_attempt_at, state FROM outbox WHERE message_id = '{c1.message['id']}'")
    assert (attempts, state) == (1, "pending")
    assert now_ms() < next_at <= now_ms() + engine_mod.outbox.BACKOFF_BASE_MS
    c2 = alice.send(carol.address, "c2")
    assert not c2.delivered and c2.error == "waiting behind an earlier message to the same peer"
    assert alice.send(bob.address, "b1").delivered  # another conversation is not held back
    assert bob.sync() == 2 and texts(bob, alice.address) == ["b0", "b1"]
    assert [m["state"] for m in alice.messages(carol.address)] == ["queued", "queued"]
    # Once the backoff has passed and the limit refilled, Carol gets both, in order.
    wait_until(lambda: alice.flush_outbox() == {}, timeout=30, interval=0.2)
    assert [m["state"] for m in alice.messages(carol.address)] == ["sent", "sent"]
    assert carol.sync() == 2 and texts(carol, alice.address) == ["c1", "c2"]


def test_message_failing_again_and_again_is_marked_failed(pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """A message-specific failure backs off with jitter and, after MAX_ATTEMPTS, fails for good;
    a relay that cannot be reached counts no attempt."""
    alice, bob = pair
    mid = alice.queue(bob.address, "doomed")["id"]
    monkeypatch.setattr(engine_mod.outbox, "MAX_ATTEMPTS", 3)

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug reached by this message")

    monkeypatch.setattr(alice, "_prepare", broken)
    base = engine_mod.outbox.BACKOFF_BASE_MS
    for attempt in (1, 2):
        before = now_ms()
        assert "RuntimeError" in alice.flush_outbox()[mid]
        after = now_ms()
        (attempts, next_at, state), = table(alice, f"SELECT attempts, next_attempt_at, state FROM outbox WHERE message_id = '{mid}'")
        assert (attempts, state) == (attempt, "pending")
        # The delay is base * 2^(attempt-1), jittered down by at most half.
        assert next_at - before >= base * 2 ** (attempt - 1) // 2 and next_at - after <= base * 2 ** (attempt - 1)
        assert alice.flush_outbox()[mid].startswith("retrying in")  # not due: not attempted
        assert table(alice, f"SELECT attempts FROM outbox WHERE message_id = '{mid}'") == [(attempt,)]
        with alice.store.write() as c:  # time passes
            c.execute("UPDATE outbox SET next_attempt_at = 0 WHERE message_id = ?", (mid,))
    assert "RuntimeError" in alice.flush_outbox()[mid]
    assert table(alice, f"SELECT attempts, state, last_error LIKE 'gave up after 3 attempts%' FROM outbox WHERE message_id = '{mid}'") == [(3, "failed", 1)]
    assert alice.messages(bob.address)[0]["state"] == "failed"
    assert alice.pending_count() == 0


def test_unreachable_relay_counts_no_attempt(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    mid = alice.queue(bob.address, "the relay is down")["id"]
    ident = {"address": alice.address, "installation_id": alice.installation_id, "record": alice.record.hex()}
    from tests.procs import free_port

    offline = Engine(Store(alice.store.path), alice.secrets, ident, f"http://127.0.0.1:{free_port()}")
    track(offline)
    for _ in range(3):
        assert mid in offline.flush_outbox()
    assert table(alice, f"SELECT attempts, next_attempt_at, state FROM outbox WHERE message_id = '{mid}'") == [(0, 0, "pending")]
    assert alice.flush_outbox() == {}
    assert bob.sync() == 1


def test_sync_retries_now_what_is_backing_off(pair: tuple[Engine, Engine]) -> None:
    """The daemon's automatic retries wait out a message's backoff; `parley sync` is the user asking
    now, so it tries that message too (a concurrent CLI send that met a busy relay must not leave
    `sync` answering "will be retried" until the backoff ends)."""
    alice, bob = pair
    mid = alice.queue(bob.address, "after a hiccup")["id"]
    with alice.store.write() as c:  # one counted failure: backing off for an hour
        c.execute("UPDATE outbox SET attempts = 1, next_attempt_at = ? WHERE message_id = ?", (now_ms() + 3_600_000, mid))
    waiting = alice.flush_outbox()
    assert list(waiting) == [mid] and waiting[mid].startswith("retrying in ")
    assert alice.pending_count() == 1
    alice.sync()
    assert alice.pending_count() == 0
    assert bob.sync() == 1 and bob.messages(alice.address)[-1]["text"] == "after a hiccup"


# --- what the relay refuses -------------------------------------------------------------------


@pytest.fixture
def quota_relay(tmp_path: Path) -> Iterator[str]:
    """A relay that takes envelopes of up to 16 KiB and keeps at most 8 KiB per inbox: a text of 9000
    bytes (padded to 16 KiB) is too large for good (413), one of 5000 bytes (padded to 8 KiB) waits
    until the inbox has room (429 inbox_full), a short one goes through."""
    with serve_relay(tmp_path / "quota-relay.db", unlimited_settings(max_envelope=16 * 1024, topic_max_bytes=8 * 1024)) as url:
        yield url


def test_a_message_the_relay_refuses_for_good_fails_and_the_next_one_goes(tmp_path: Path, quota_relay: str) -> None:
    alice = make_engine(tmp_path / "alice.db", quota_relay)
    bob = make_engine(tmp_path / "bob.db", quota_relay)
    big = alice.queue(bob.address, "x" * 9000)["id"]
    after = alice.queue(bob.address, "after the big one")["id"]
    errors = alice.flush_outbox()
    assert list(errors) == [big] and errors[big].startswith(f"relay {quota_relay} refused: too_large: ")
    assert table(alice, f"SELECT attempts, state, last_error FROM outbox WHERE message_id = '{big}'") == [(1, "failed", errors[big])]
    assert [(m["id"], m["state"]) for m in alice.messages(bob.address)] == [(big, "failed"), (after, "sent")]
    # what `parley status` shows
    assert engine_mod.outbox.counts(alice.store) == {
        "pending": 0, "prepared": 0, "backing_off": 0, "next_attempt_at": None, "failed": 1, "sent": 1,
    }
    assert bob.sync() == 1 and texts(bob, alice.address) == ["after the big one"]


def test_a_message_the_relay_asks_to_retry_holds_back_the_later_ones_to_that_peer(tmp_path: Path, quota_relay: str) -> None:
    """Bob's inbox is full for the first message (429): the second, which would fit, must not overtake it."""
    alice = make_engine(tmp_path / "alice.db", quota_relay)
    bob = make_engine(tmp_path / "bob.db", quota_relay)
    first = alice.queue(bob.address, "y" * 5000)["id"]
    second = alice.queue(bob.address, "short, but second")["id"]
    errors = alice.flush_outbox()
    assert errors[first].startswith(f"relay {quota_relay} refused: inbox_full: ")
    assert errors.get(second) == "waiting behind an earlier message to the same peer"  # not sent ahead of the first
    # the batch path (issue 13) may have encrypted the second already; it must not have published it
    assert table(alice, "SELECT message_id, attempts, state FROM outbox ORDER BY attempts DESC") in (
        [(first, 1, "prepared"), (second, 0, "pending")], [(first, 1, "prepared"), (second, 0, "prepared")])
    assert table(alice, "SELECT COUNT(*) FROM outbox_envelopes WHERE cursor IS NOT NULL") == [(0,)]
    assert bob.sync() == 0 and inbox(bob) == []


# --- switching wallets (sign-in with a browser wallet) ------------------------------------------


def test_switch_identity_speaks_for_the_new_wallet_and_refuses_a_record_for_another_installation(pair: tuple[Engine, Engine]) -> None:
    from eth_account import Account

    from bridge import identity

    alice, bob = pair
    old, wallet = alice.address, P.random_bytes(32)
    new = str(Account.from_key(wallet).address)

    def record_for(iid: str) -> bytes:
        st = identity.authorize_statement(new, iid, alice.secrets.signing_pub, alice.secrets.identity_pub)
        return identity.sign_statement(st, wallet).to_record()

    with pytest.raises(identity.InvalidStatement):
        alice.switch_identity(new, record_for(bob.installation_id))
    assert alice.identity_pair() == (old, alice.record)
    record = record_for(alice.installation_id)
    alice.token()  # the relay binds the installation to a second wallet only with its own token
    alice.relay.publish_identity(new, record)
    assert alice.switch_identity(new, record) == old
    assert alice.identity_pair() == (new, record)
    assert alice.send(bob.address, "from my browser wallet now").delivered
    assert bob.sync() == 1
    assert texts(bob, new) == ["from my browser wallet now"] and texts(bob, old) == []


def test_describe_gives_one_line_naming_the_exception() -> None:
    """The quarantine log and outbox errors (shown by `parley status`) hold one line per failure."""
    assert engine_mod.inbox.describe(ValueError("bad header\nat byte 3")) == "ValueError: bad header at byte 3"
    long = engine_mod.inbox.describe(RuntimeError("z" * 1000))
    assert long == ("RuntimeError: " + "z" * 1000)[: engine_mod.inbox.QUARANTINE_ERROR_CHARS]


# --- a backlog in batches (issue 13) ------------------------------------------------------------


class CountingRelay:
    """A real relay that counts the envelope publishes it is asked for, by route, and keeps their bodies;
    ``before_1_4``: it answers the batch route 404 not_found, as a relay before protocol 1.4 does."""

    def __init__(self, before_1_4: bool = False) -> None:
        self.before_1_4 = before_1_4
        self.posts: list[tuple[str, bytes]] = []
        self.url = ""

    def wrap(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ["PATH_INFO"]
            if environ["REQUEST_METHOD"] == "POST" and path in ("/v1/envelopes", "/v1/envelopes/batch"):
                size = int(environ.get("CONTENT_LENGTH") or 0)
                body = environ["wsgi.input"].read(size)
                self.posts.append((path, body))
                if self.before_1_4 and path == "/v1/envelopes/batch":
                    start_response("404 NOT FOUND", [("Content-Type", "application/json")])
                    return [b'{"error": {"code": "not_found", "message": "no such endpoint"}}']
                import io

                environ["wsgi.input"] = io.BytesIO(body)
            return app(environ, start_response)

        return wsgi

    def routes(self) -> list[str]:
        return [p for p, _ in self.posts]


@pytest.mark.parametrize("before_1_4", [False, True], ids=["1.4 relay", "1.3 relay"])
def test_a_backlog_goes_out_in_batches_in_order_once_and_sealed(tmp_path: Path, before_1_4: bool) -> None:
    """Thirty messages queued while offline: one flush publishes them with one batch request (a 1.4
    relay) or one request each (an older relay); Bob reads all thirty once, in order; every message
    is sent; no request to the relay holds a text."""
    relay = CountingRelay(before_1_4)
    with serve_relay(tmp_path / "relay.db", unlimited_settings(), wrap=relay.wrap) as url:
        alice = make_engine(tmp_path / "alice.db", url)
        bob = make_engine(tmp_path / "bob.db", url)
        befriend(alice, bob)
        assert alice.send(bob.address, "first contact").delivered and bob.sync() == 1  # a session now
        mark = len(relay.posts)
        words = [f"backlog message {i:02d} plaintext" for i in range(30)]
        ids = [alice.queue(bob.address, w)["id"] for w in words]
        assert alice.flush_outbox() == {}
        routes = relay.routes()[mark:]
        if before_1_4:
            assert routes == ["/v1/envelopes/batch"] + ["/v1/envelopes"] * 30  # asked once, then one by one
        else:
            assert routes == ["/v1/envelopes/batch"]
        assert not [w for w in words for _, body in relay.posts if w.encode() in body or b"plaintext" in body]
        assert [m["state"] for m in alice.messages(bob.address)] == ["sent"] * 31 and alice.pending_count() == 0
        assert bob.sync() == 30
        assert texts(bob, alice.address) == ["first contact", *words]
        assert [m["id"] for m in bob.messages(alice.address)][1:] == ids
        assert len(inbox(bob)) == 31  # nothing published twice


def test_a_backlog_reaches_a_recipients_installation_authorized_meanwhile(tmp_path: Path, relay_url: str) -> None:
    """The batch answer reports Bob's longer log: the backlog is not marked sent on what the cache held,
    each message is sealed for Bob's new installation too, in order, and nothing goes out twice."""
    wallet_b = P.random_bytes(32)
    alice = make_engine(tmp_path / "alice.db", relay_url)
    b1 = make_engine(tmp_path / "b1.db", relay_url, wallet_b)
    befriend(alice, b1)
    assert alice.send(b1.address, "before").delivered
    b2 = make_engine(tmp_path / "b2.db", relay_url, wallet_b)  # Bob authorizes a second installation
    befriend(alice, b2)
    ids = [alice.queue(b1.address, f"late {i}")["id"] for i in range(5)]
    assert alice.flush_outbox() == {}
    assert all(_envelope_targets(alice, mid) == {b1.installation_id, b2.installation_id} for mid in ids)
    assert b2.sync() == 5 and [m["id"] for m in b2.messages(alice.address)] == ids
    assert b1.sync() == 6 and texts(b1, alice.address) == ["before"] + [f"late {i}" for i in range(5)]
    assert len(inbox(b1)) == 6 and len(inbox(b2)) == 5


def test_a_backlog_is_taken_in_one_transaction_per_batch_and_a_bad_envelope_in_it_changes_nothing_else(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receiving: a page of envelopes is processed in one write transaction (not one each); a tampered
    envelope among them is quarantined alone, and the messages around it are stored and announced in order."""
    alice, bob = pair
    befriend(alice, bob)
    texts_sent = [f"m{i}" for i in range(12)]
    for t in texts_sent[:6]:
        alice.queue(bob.address, t)
    assert alice.flush_outbox() == {}
    garbage = RelayClient(alice.relay_url).publish_envelope(bob.topic, b"\x01" * 300)  # between the two halves
    for t in texts_sent[6:]:
        alice.queue(bob.address, t)
    assert alice.flush_outbox() == {}
    writes = [0]
    original, process_in = Store.write, Engine._process_in
    txn_of_envelope: list[int] = []

    def counting(self: Store, *a: Any, **kw: Any) -> Any:
        writes[0] += 1
        return original(self, *a, **kw)

    def noting(self: Engine, *a: Any, **kw: Any) -> Any:
        txn_of_envelope.append(writes[0])  # the write transaction this envelope is processed in
        return process_in(self, *a, **kw)

    monkeypatch.setattr(Store, "write", counting)
    monkeypatch.setattr(Engine, "_process_in", noting)
    announced: list[str] = []
    bob.listeners.append(lambda event, payload: announced.append(payload["text"]) if event == "message.new" else None)
    progress: list[int] = []
    assert bob.sync_report(progress=progress.append)["received"] == 12
    assert texts(bob, alice.address)[-12:] == texts_sent and announced == texts_sent
    assert bob.quarantine_count() == 1
    assert progress == [13]  # one page, one batch: 13 envelopes taken in
    assert len(txn_of_envelope) == 13 and len(set(txn_of_envelope)) == 1  # one transaction for the page
    assert table(bob, "SELECT cursor FROM cursors")[0][0] >= garbage.cursor
