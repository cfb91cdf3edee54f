"""Protocol 1.2 content types end to end (issue 12; PROTOCOL.md §6.7; bridge/engine/contents.py).

Real engines over real SQLite stores, talking through a real relay (werkzeug on 127.0.0.1:0). Hostile
contents are sealed with the attacker's real session, so only the receiver rule under test refuses them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.api.access import Access
from bridge.api.rpc import Hub, LocalApi, RpcConnection
from bridge.crypto import primitives as P
from bridge.crypto import sealed, session
from bridge.engine import BadInput, Engine
from bridge.protocol import prekeys as PK
from bridge.protocol import wire
from bridge.protocol.content import Content, pad
from bridge.protocol.ids import new_message_id
from bridge.resolve import Contacts
from bridge.store import Store, now_ms
from tests.engines import befriend, close_engines, make_engine  # noqa: F401 (close_engines: autouse fixture)
from tests.relay_fixtures import serve_relay


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


@pytest.fixture
def pair(tmp_path: Path, relay_url: str) -> tuple[Engine, Engine]:
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    befriend(alice, bob)  # contacts: not message requests (issue 12 consent), so receipts and typing flow
    return alice, bob


def events(eng: Engine) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    eng.listeners.append(lambda e, p: got.append((e, p)))
    return got


def msg(eng: Engine, mid: str) -> dict[str, Any]:
    m = eng.message(mid)
    assert m is not None
    return m


def quarantined(eng: Engine) -> list[str]:
    return [r["error"] for r in eng.store.read("SELECT error FROM quarantine ORDER BY at, cursor")]


def rows(eng: Engine, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in eng.store.read(sql, args)]


def inject(sender: Engine, recipient: Engine, plaintext: bytes) -> None:
    """Seal ``plaintext`` (a padded content, possibly hostile) with the sender's real session to the
    recipient's installation (a new one from a claimed bundle when there is none) and publish it."""
    iid = recipient.installation_id
    with sender.store.write() as c:
        s = sender._active_session(c, iid)
        if s is None:
            remote = session.RemoteInstallation(iid, recipient.secrets.signing_pub, recipient.secrets.identity_pub)
            s = session.initiate(sender.local, remote, PK.Bundle.decode(sender.relay.claim(iid)))
        s, wire_msg = session.encrypt(s, plaintext)
        sender._save_session(c, s)
    sender.relay.publish(recipient.topic, sealed.seal(recipient.secrets.identity_pub, iid, sender.installation_id, sender.record, wire_msg))


def raw(ctype: str, sender: Engine, recipient: Engine, *extra: Any, text: str = "", sent_at: int | None = None) -> bytes:
    """A content written by hand (no encoder checks): what a hostile or newer peer may send."""
    return pad(wire.encode([1, ctype, new_message_id(), sender.address, recipient.address, now_ms() if sent_at is None else sent_at, text, *extra]))


# --- each type end to end ----------------------------------------------------------------------


def test_a_reply_is_shown_with_a_quote_of_the_message_it_answers(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    first = alice.send(bob.address, "lunch at noon?").message
    assert bob.sync() == 1
    r = bob.send(alice.address, "yes!", reply_to=first["id"])
    assert r.delivered
    assert r.message["kind"] == "reply" and r.message["reply_to"] == first["id"]
    assert alice.sync() == 1
    (a_first, reply) = alice.messages(bob.address)
    assert (reply["text"], reply["kind"], reply["content_type"], reply["reply_to"]) == ("yes!", "reply", "reply", first["id"])
    assert reply["reply_preview"] == {"id": first["id"], "sender": alice.address, "text": "lunch at noon?", "deleted": False}
    assert not reply["unsupported"] and a_first["reply_preview"] is None
    # a reply to an id that is not in the conversation is refused before anything is queued
    with pytest.raises(BadInput):
        bob.send(alice.address, "?", reply_to=new_message_id())
    with pytest.raises(BadInput):
        bob.send(alice.address, "?", reply_to="not an id")


def test_reactions_are_counted_per_emoji_with_who_reacted_and_can_be_removed(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    m = alice.send(bob.address, "I got the job").message
    assert bob.sync() == 1
    got = events(alice)
    assert bob.react(alice.address, m["id"], "🎉")["reactions"] == {"🎉": [bob.address]}
    bob.react(alice.address, m["id"], "👍")
    assert alice.react(bob.address, m["id"], "🎉")["reactions"] == {"🎉": [alice.address]}
    assert alice.sync() == 0  # two envelopes taken in, no new message (sync counts messages)
    expected = {"🎉": sorted([alice.address, bob.address]), "👍": [bob.address]}
    assert msg(alice, m["id"])["reactions"] == expected
    assert [e for e, p in got if e == "message.updated" and p["id"] == m["id"]].count("message.updated") >= 3
    assert bob.sync() == 0
    assert msg(bob, m["id"])["reactions"] == expected
    assert list(msg(bob, m["id"])["reactions"]) == ["🎉", "👍"]  # in first-reaction order
    # a reaction is no message: nothing more is listed, nothing counted unread
    assert [x["text"] for x in alice.messages(bob.address)] == ["I got the job"] and alice.unread() == 0
    bob.react(alice.address, m["id"], "🎉", remove=True)
    assert alice.sync() == 0
    assert msg(alice, m["id"])["reactions"] == {"🎉": [alice.address], "👍": [bob.address]}
    bob.react(alice.address, m["id"], "👍", remove=True)
    assert alice.sync() == 0
    assert msg(alice, m["id"])["reactions"] == {"🎉": [alice.address]}
    for bad in ("", "a b", "x" * 33, "\n", 5):
        with pytest.raises(BadInput):
            bob.react(alice.address, m["id"], bad)  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        bob.react(alice.address, new_message_id(), "👍")


def test_edit_and_delete_show_on_both_sides_and_on_the_senders_other_installation(tmp_path: Path, relay_url: str) -> None:
    wallet = P.random_bytes(32)
    a1 = make_engine(tmp_path / "a1.db", relay_url, wallet)
    a2 = make_engine(tmp_path / "a2.db", relay_url, wallet)
    bob = make_engine(tmp_path / "bob.db", relay_url)
    m = a1.send(bob.address, "see you at 5").message
    assert bob.sync() == 1 and a2.sync() == 1
    edited = a1.edit(bob.address, m["id"], "see you at 6")
    assert (edited["text"], edited["edited"]) == ("see you at 6", True)
    bob.sync()
    a2.sync()
    for eng in (bob, a2):
        got = msg(eng, m["id"])
        assert (got["text"], got["edited"], got["deleted"]) == ("see you at 6", True, False), eng
    with pytest.raises(BadInput):
        bob.edit(a1.address, m["id"], "hijacked")  # not bob's message
    with pytest.raises(BadInput):
        bob.delete(a1.address, m["id"])
    with pytest.raises(BadInput):
        a1.edit(bob.address, m["id"], "   ")
    bob.react(a1.address, m["id"], "👍")
    a1.sync()
    a2.sync()
    gone = a1.delete(bob.address, m["id"])
    assert (gone["text"], gone["deleted"], gone["edited"], gone["reactions"]) == ("", True, False, {})
    bob.sync()
    a2.sync()
    for eng in (bob, a2):
        got = msg(eng, m["id"])
        assert (got["text"], got["deleted"], got["reactions"], got["attachments"]) == ("", True, {}, []), eng
    assert [x["deleted"] for x in bob.messages(a1.address)] == [True]  # the tombstone stays listed
    with pytest.raises(BadInput):
        a1.edit(bob.address, m["id"], "back from the dead")
    assert quarantined(bob) == quarantined(a2) == []


def test_a_read_receipt_turns_the_senders_message_read_and_syncs_our_other_installation(tmp_path: Path, relay_url: str) -> None:
    wallet_b = P.random_bytes(32)
    alice = make_engine(tmp_path / "alice.db", relay_url)
    b1 = make_engine(tmp_path / "b1.db", relay_url, wallet_b)
    b2 = make_engine(tmp_path / "b2.db", relay_url, wallet_b)
    befriend(alice, b1)  # contacts: receipts go to allowed peers only (issue 12 consent)
    ids = [alice.send(b1.address, t).message["id"] for t in ("one", "two")]
    assert b1.sync() == 2 and b2.sync() == 2
    assert b1.unread(alice.address) == b2.unread(alice.address) == 2
    assert b1.mark_read(alice.address) == {"unread": 0, "receipts_sent": 1}
    assert b1.mark_read(alice.address) == {"unread": 0, "receipts_sent": 0}  # nothing new read
    got = events(alice)
    alice.sync()
    assert [msg(alice, i)["state"] for i in ids] == ["read", "read"]
    assert {p["id"] for e, p in got if e == "message.updated"} == set(ids)
    b2.sync()
    assert b2.unread(alice.address) == 0  # read on b1: read here too
    assert [m["state"] for m in b1.messages(alice.address)] == ["received", "received"]


def test_with_receipts_off_none_is_sent(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    m = alice.send(bob.address, "hi").message
    assert bob.sync() == 1
    bob.read_receipts = lambda: False  # type: ignore[method-assign]
    assert bob.mark_read(alice.address) == {"unread": 0, "receipts_sent": 0}
    assert rows(bob, "SELECT kind FROM messages WHERE direction = 'out'") == []
    assert alice.sync() == 0
    assert msg(alice, m["id"])["state"] == "sent"


def test_typing_is_emitted_never_stored_and_never_queued(tmp_path: Path) -> None:
    with serve_relay(tmp_path / "relay.db") as url:
        alice, bob = make_engine(tmp_path / "alice.db", url), make_engine(tmp_path / "bob.db", url)
        befriend(alice, bob)  # typing reaches allowed peers only (issue 12 consent)
        assert not bob.typing(alice.address, True)  # no session yet: skipped
        alice.send(bob.address, "hello")
        assert bob.sync() == 1
        got = events(alice)
        before = rows(bob, "SELECT COUNT(*) FROM messages"), rows(bob, "SELECT COUNT(*) FROM outbox")
        assert bob.typing(alice.address, True)
        assert not bob.typing(alice.address, True)  # at most once per 3 s unless it changes
        assert bob.typing(alice.address, False)
        alice.sync()
        assert [p for e, p in got if e == "typing"] == [{"peer": bob.address, "typing": True}, {"peer": bob.address, "typing": False}]
        assert [m["text"] for m in alice.messages(alice.address and bob.address)] == ["hello"]
        assert rows(alice, "SELECT COUNT(*) FROM messages") == [(1,)]
        assert (rows(bob, "SELECT COUNT(*) FROM messages"), rows(bob, "SELECT COUNT(*) FROM outbox")) == before
    # the relay is gone: nothing sent, nothing queued for later
    assert not bob.typing(alice.address, True)
    assert (rows(bob, "SELECT COUNT(*) FROM messages"), rows(bob, "SELECT COUNT(*) FROM outbox")) == before


def test_an_unknown_type_from_a_newer_peer_shows_its_fallback_marked_unsupported(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    inject(alice, bob, raw("poll", alice, bob, ["lunch?", ["yes", "no"]], text="Poll: lunch? (yes/no)"))
    inject(alice, bob, raw("sticker", alice, bob, b"\x01\x02"))  # no fallback: nothing shown
    assert bob.sync() == 1
    (m,) = bob.messages(alice.address)
    assert (m["text"], m["kind"], m["content_type"], m["unsupported"]) == ("Poll: lunch? (yes/no)", "unknown", "poll", True)
    assert quarantined(bob) == []


def test_an_attachment_content_is_stored_with_its_files_pending(pair: tuple[Engine, Engine]) -> None:
    """The wire side of attachments (the upload and download are bridge/engine/attachments.py's)."""
    alice, bob = pair
    alice.send(bob.address, "hi")
    bob.sync()
    url = f"http://127.0.0.1:1/v1/blobs/{bob.installation_id}/{'ab' * 16}"
    f = [url, b"k" * 32, b"n" * 12, b"d" * 32, b"s" * 32, 1234, "cat.png", "image/png"]
    c = Content.build("attachment", new_message_id(), alice.address, bob.address, now_ms(), [[f], None, "my cat"])
    assert c.text == "my cat\n[file: cat.png, 1234 bytes]"
    inject(alice, bob, c.encode())
    assert bob.sync() == 1
    m = bob.messages(alice.address)[-1]
    assert (m["text"], m["kind"]) == ("my cat", "attachment")
    assert m["attachments"] == [{"id": f"{c.message_id}-0", "name": "cat.png", "size": 1234, "sha256": ("73" * 32), "mime": "image/png",
                                 "state": "pending", "thumbnail": False, "progress": None}]
    (sealed_key,) = [r[0] for r in rows(bob, "SELECT key FROM attachments")]
    assert sealed_key != b"k" * 32  # the file key is sealed with the storage key
    # an oversize file refuses the whole content
    big = [*f[:5], 26_214_401, *f[6:]]
    inject(alice, bob, raw("attachment", alice, bob, [big], None, ""))
    assert bob.sync() == 0
    assert quarantined(bob) == ["WireError: file larger than 26214400 bytes"]


# --- hostile contents --------------------------------------------------------------------------


def test_a_forged_edit_or_delete_by_the_other_party_is_quarantined_and_changes_nothing(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    m = alice.send(bob.address, "the original").message
    assert bob.sync() == 1
    for content in (raw("edit", bob, alice, m["id"], "I never said that", text="Edited a message: I never said that"),
                    raw("delete", bob, alice, m["id"], text="Deleted a message")):
        inject(bob, alice, content)
    assert alice.sync() == 0
    assert quarantined(alice) == ["Refused: edit: not the sender's message", "Refused: delete: not the sender's message"]
    got = msg(alice, m["id"])
    assert (got["text"], got["edited"], got["deleted"]) == ("the original", False, False)
    # the session goes on: a genuine message still arrives
    bob.send(alice.address, "sorry")
    assert alice.sync() == 1


def test_reactions_edits_deletes_of_unknown_or_foreign_messages_are_quarantined(tmp_path: Path, relay_url: str) -> None:
    alice, bob, carol = (make_engine(tmp_path / f"{n}.db", relay_url) for n in ("alice", "bob", "carol"))
    to_carol = alice.send(carol.address, "for carol only").message
    mine = bob.send(alice.address, "bob's").message
    assert alice.sync() == 1
    inject(bob, alice, raw("reaction", bob, alice, new_message_id(), "add", "👍", text="Reacted 👍 to a message"))
    inject(bob, alice, raw("reaction", bob, alice, to_carol["id"], "add", "👍"))  # a message of another conversation
    inject(bob, alice, raw("edit", bob, alice, to_carol["id"], "x"))
    inject(bob, alice, raw("delete", bob, alice, new_message_id()))
    inject(bob, alice, raw("reaction", bob, alice, mine["id"], "add", "a b"))  # emoji with a space
    inject(bob, alice, raw("consent", bob, alice, alice.address, "allowed", 1))  # consent is self-sync only
    assert alice.sync() == 0
    assert quarantined(alice) == [
        "Refused: reaction: unknown message",
        "Refused: reaction: unknown message",
        "Refused: edit: unknown message",
        "Refused: delete: unknown message",
        "WireError: bad emoji",
        "Refused: consent: only from our own installations",
    ]
    assert msg(alice, to_carol["id"])["reactions"] == {} and msg(alice, to_carol["id"])["text"] == "for carol only"
    assert rows(alice, "SELECT COUNT(*) FROM reactions") == [(0,)]


def test_an_edit_of_a_deleted_message_is_refused(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    m = bob.send(alice.address, "oops").message
    bob.delete(alice.address, m["id"])
    assert alice.sync() == 1
    assert msg(alice, m["id"])["deleted"]
    inject(bob, alice, raw("edit", bob, alice, m["id"], "undead"))
    alice.sync()
    assert quarantined(alice) == ["Refused: edit: message deleted"]
    assert msg(alice, m["id"])["text"] == ""


def test_an_old_typing_content_is_dropped(pair: tuple[Engine, Engine]) -> None:
    alice, bob = pair
    bob.send(alice.address, "hi")
    alice.sync()
    got = events(alice)
    inject(bob, alice, raw("typing", bob, alice, True, sent_at=now_ms() - 60_000))
    inject(bob, alice, raw("typing", bob, alice, True, sent_at=now_ms() + 60_000))
    inject(bob, alice, raw("typing", bob, alice, True))
    alice.sync()
    assert [p for e, p in got if e == "typing"] == [{"peer": bob.address, "typing": True}]
    assert quarantined(alice) == []


def test_a_receipt_for_ids_that_are_not_ours_changes_nothing(tmp_path: Path, relay_url: str) -> None:
    alice, bob, carol = (make_engine(tmp_path / f"{n}.db", relay_url) for n in ("alice", "bob", "carol"))
    to_carol = alice.send(carol.address, "to carol").message
    incoming = bob.send(alice.address, "from bob").message
    assert alice.sync() == 1
    inject(bob, alice, raw("read-receipt", bob, alice, [to_carol["id"], incoming["id"], new_message_id()]))
    alice.sync()
    assert msg(alice, to_carol["id"])["state"] == "sent" and msg(alice, incoming["id"])["read"] is False
    inject(bob, alice, raw("read-receipt", bob, alice, []))
    inject(bob, alice, raw("read-receipt", bob, alice, [new_message_id() for _ in range(101)]))
    alice.sync()
    assert quarantined(alice) == ["WireError: a read receipt carries 1..100 ids"] * 2


# --- JSON-RPC ----------------------------------------------------------------------------------


class Client:
    def __init__(self, api: LocalApi) -> None:
        self.sent: list[Any] = []
        self.rpc = RpcConnection(api, lambda text: self.sent.append(json.loads(text)), lambda code, reason: None, "pytest")
        self._n = 0
        self.call("pair", {"code": api.access.new_pair_code()})

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        self._n += 1
        self.rpc.handle(json.dumps({"jsonrpc": "2.0", "id": self._n, "method": method, "params": params}))
        (answer,) = [m for m in self.sent if isinstance(m, dict) and m.get("id") == self._n]
        return answer

    def notes(self, method: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.sent if isinstance(m, dict) and "id" not in m and m.get("method") == method]


def test_rpc_methods_and_notifications(pair: tuple[Engine, Engine], tmp_path: Path) -> None:
    alice, bob = pair
    api = LocalApi(bob, Access(bob.store), Contacts(tmp_path / "contacts.json"), lambda: True, Hub())
    w = Client(api)
    m = alice.send(bob.address, "hello").message
    bob.sync()
    r = w.call("messages.send", {"peer": alice.address, "text": "hi back", "reply_to": m["id"]})["result"]
    assert r["delivered"] and r["message"]["reply_preview"]["text"] == "hello"
    assert w.call("messages.react", {"peer": alice.address, "id": m["id"], "emoji": "👍"})["result"]["message"]["reactions"] == {"👍": [bob.address]}
    mine = r["message"]["id"]
    assert w.call("messages.edit", {"peer": alice.address, "id": mine, "text": "hi!"})["result"]["message"]["edited"]
    assert w.call("messages.delete", {"peer": alice.address, "id": mine})["result"]["message"]["deleted"]
    assert w.call("messages.markRead", {"peer": alice.address})["result"] == {"unread": 0}
    assert w.call("typing.set", {"peer": alice.address, "typing": True})["result"] == {"sent": True}
    updated = [n["message"]["id"] for n in w.notes("message.updated")]
    assert m["id"] in updated and mine in updated
    # our own reaction/edit/delete/receipt rows are never listed nor announced as messages
    assert [x["text"] for x in w.call("messages.list", {"peer": alice.address})["result"]["messages"]] == ["hello", ""]
    assert all(n["message"]["kind"] in ("text", "reply") for n in w.notes("message.new") + w.notes("message.updated"))
    # hostile params: -32010 (bad input) or -32602 (shape), never a crash
    bad = [
        ("messages.react", {"peer": alice.address, "id": m["id"], "emoji": ""}),
        ("messages.react", {"peer": alice.address, "id": m["id"], "emoji": ["👍"]}),
        ("messages.react", {"peer": alice.address, "id": "../../x", "emoji": "👍"}),
        ("messages.react", {"peer": alice.address, "id": m["id"], "emoji": "👍", "remove": "yes"}),
        ("messages.react", {"peer": alice.address, "id": new_message_id(), "emoji": "👍"}),
        ("messages.edit", {"peer": alice.address, "id": m["id"], "text": "not mine"}),
        ("messages.edit", {"peer": alice.address, "id": mine, "text": 5}),
        ("messages.delete", {"peer": alice.address, "id": m["id"]}),
        ("messages.send", {"peer": alice.address, "text": "x", "reply_to": "zz"}),
        ("messages.send", {"peer": alice.address, "text": "x", "uploads": "abc"}),
        ("messages.send", {"peer": alice.address, "text": "x", "uploads": ["u"] * 11}),
        ("typing.set", {"peer": alice.address, "typing": "yes"}),
    ]
    for method, params in bad:
        err = w.call(method, params)["error"]
        assert err["code"] == -32010, (method, params, err)
    assert w.call("messages.react", {"peer": alice.address, "id": m["id"]})["error"]["code"] == -32602
    assert w.call("typing.set", {"peer": alice.address, "typing": True, "x": 1})["error"]["code"] == -32602


# --- store ------------------------------------------------------------------------------------


def test_a_schema_2_database_migrates_and_keeps_its_messages(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(  # the messages table as schema 2 made it
        """CREATE TABLE conversations (peer TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, peer TEXT NOT NULL REFERENCES conversations(peer),
            sender TEXT NOT NULL, recipient TEXT NOT NULL, text TEXT NOT NULL, sent_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'received', 'failed')),
            read INTEGER NOT NULL DEFAULT 0, claimed_sent_at INTEGER);
        PRAGMA user_version = 2;
        INSERT INTO conversations VALUES ('0xA', 1, 1);
        INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read)
        VALUES ('""" + "a" * 32 + """', '0xA', '0xA', '0xB', 'old', 1, 1, 'in', 'received', 0);"""
    )
    con.commit()
    con.close()
    for _ in range(2):  # idempotent
        st = Store(db)
        assert st.read("PRAGMA user_version")[0][0] == 3
        row = st.read("SELECT text, kind, content_type, deleted, read_at, extra FROM messages")[0]
        assert tuple(row) == ("old", "text", "text", 0, None, None)
        tables = {r[0] for r in st.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"reactions", "consent", "attachments", "uploads"} <= tables
        st.close()


def test_the_relay_list_rides_on_a_text_never_on_another_type(pair: tuple[Engine, Engine]) -> None:
    """PROTOCOL.md §6.1 (1.1): the list is the eighth item of a "text" only; a reaction sent first must not
    count as having carried it, or the next text would leave it out."""
    alice, bob = pair
    m = bob.send(alice.address, "hi").message
    assert alice.sync() == 1
    alice.send(bob.address, "hello")
    assert bob.sync() == 1
    assert rows(bob, "SELECT COUNT(*) FROM peer_relay_lists WHERE address = ?", (alice.address,)) == [(1,)]
    with bob.store.write() as c:  # as if bob never got it (alice's list changed, say)
        c.execute("DELETE FROM peer_relay_lists WHERE address = ?", (alice.address,))
    with alice.store.write() as c:
        c.execute("DELETE FROM meta WHERE key = ?", (f"relays_sent:{bob.installation_id}",))
    alice.react(bob.address, m["id"], "👍")
    alice.send(bob.address, "a text again")
    assert bob.sync() == 1
    assert rows(bob, "SELECT COUNT(*) FROM peer_relay_lists WHERE address = ?", (alice.address,)) == [(1,)]


# --- the consent hooks (contract §10): the core asks, never decides ------------------------------


def test_the_core_calls_the_consent_hooks(pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.engine import consent

    alice, bob = pair
    first = alice.send(bob.address, "hello").message
    assert bob.sync() == 1
    asked: list[tuple[str, str]] = []
    outgoing: list[str] = []
    monkeypatch.setattr(consent, "admit", lambda c, eng, peer, kind: asked.append((peer, kind)) or "drop")
    monkeypatch.setattr(consent, "on_outgoing", lambda c, eng, peer: outgoing.append(peer))
    monkeypatch.setattr(consent, "state", lambda c, peer: "requested" if peer == alice.address else "allowed")  # bob sees a request
    got = events(bob)
    alice.send(bob.address, "dropped")
    alice.react(bob.address, first["id"], "👍")
    alice.typing(bob.address, True)
    assert bob.sync() == 0
    assert asked == [(alice.address, "text"), (alice.address, "reaction"), (alice.address, "typing")]
    assert [m["text"] for m in bob.messages(alice.address)] == ["hello"] and msg(bob, first["id"])["reactions"] == {}
    assert [e for e, _ in got] == []  # dropped: nothing stored, nothing announced
    # a request gets no read receipt
    assert bob.mark_read(alice.address) == {"unread": 0, "receipts_sent": 0}
    assert not bob.typing(alice.address, True)  # nor a typing indicator
    bob.send(alice.address, "replying accepts")
    assert outgoing[-1] == alice.address
    # the session survived the drops: the ratchet state was saved each time
    monkeypatch.setattr(consent, "admit", lambda c, eng, peer, kind: "store")
    alice.send(bob.address, "after")
    assert bob.sync() == 1 and bob.messages(alice.address)[-1]["text"] == "after"
    assert quarantined(bob) == []


def test_send_with_uploads_queues_one_attachment_content(pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """engine.send(uploads=…) asks bridge/engine/attachments.py for the files (its upload is the
    attachments helper's; faked here) and sends one ``attachment`` content: the caption is the text."""
    from bridge.engine import attachments
    from bridge.protocol.content import FileRef

    alice, bob = pair
    first = bob.send(alice.address, "send me the photos").message
    assert alice.sync() == 1
    asked: list[tuple[str, list[str]]] = []

    def fake(eng: Engine, peer: str, uploads: list[str]) -> list[FileRef]:
        asked.append((peer, list(uploads)))
        return [FileRef(f"http://127.0.0.1:9/v1/blobs/{bob.installation_id}/{i:032x}", bytes([i]) * 32, bytes(12), bytes(32),
                        bytes([i]) * 32, 10 * i, f"p{i}.jpg", "image/jpeg") for i in (1, 2)]

    monkeypatch.setattr(attachments, "prepare_uploads", fake)
    r = alice.send(bob.address, "", reply_to=first["id"], uploads=["u1", "u2"])
    assert r.delivered and asked == [(bob.address, ["u1", "u2"])]
    out = r.message
    assert (out["kind"], out["text"], out["reply_to"]) == ("attachment", "", first["id"])
    assert [(a["name"], a["size"], a["state"]) for a in out["attachments"]] == [("p1.jpg", 10, "local"), ("p2.jpg", 20, "local")]
    assert bob.sync() == 1
    got = bob.messages(alice.address)[-1]
    assert (got["kind"], got["text"], got["reply_preview"]["text"]) == ("attachment", "", "send me the photos")
    assert [(a["id"], a["name"], a["sha256"], a["state"]) for a in got["attachments"]] == [
        (f"{out['id']}-0", "p1.jpg", "01" * 32, "pending"), (f"{out['id']}-1", "p2.jpg", "02" * 32, "pending")]
    # the file keys are sealed with each side's storage key, bound to the row
    from bridge.engine import contents

    for eng in (alice, bob):
        (blob,) = [r[0] for r in rows(eng, "SELECT key FROM attachments WHERE id = ?", (f"{out['id']}-1",))]
        assert contents.unseal_key(eng, f"{out['id']}-1", blob) == bytes([2]) * 32
        with pytest.raises(P.CryptoError):
            contents.unseal_key(eng, f"{out['id']}-0", blob)
    with pytest.raises(BadInput):
        alice.send(bob.address, "", uploads=[])  # no text, no file
    with pytest.raises(BadInput):
        alice.send(bob.address, "x", uploads=["u"] * 11)
