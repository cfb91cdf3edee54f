"""A real bridge (`parley init`, `parley run`) and a real relay; the conformance client is a second
wallet that speaks to the bridge only through envelopes (§3-§6), and reads what the bridge did only
through its CLI (`parley messages --json`, `parley status --json`, `parley send`).

The tests of this module share one bridge and one session, and run in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.procs import Proc, parley, parley_json, start_bridge, start_relay, wait_until
from tests.conformance.wire_client import spec as S
from tests.conformance.wire_client.relay_api import Client, Relay, unb64

pytestmark = pytest.mark.slow  # real `parley init` and `parley run` processes: `make test`, not `make test-fast`


@dataclass
class Chat:
    """The client's side of a conversation with the bridge's installation."""

    relay: Relay
    home: Path
    me: Client
    bridge_address: str
    bridge: S.Peer
    session: S.Session | None = None
    token: str = ""
    after: int = 0
    sent_ids: list[str] = field(default_factory=list)

    def content(self, text: str, message_id: str | None = None) -> bytes:
        return S.content(message_id or S.new_message_id(), self.me.address, self.bridge_address, int(time.time() * 1000), text)

    def start_session(self) -> S.Session:
        a = self.relay.claim(self.bridge.iid)
        assert a.status == 200, a
        return S.initiate(self.me.me, self.bridge, S.parse_bundle(unb64(a.body["bundle"]), self.bridge.iid, self.bridge.signing_pub))

    def message(self, plaintext: bytes) -> bytes:
        if self.session is None:
            self.session = self.start_session()
        self.session, msg = self.session.encrypt(plaintext)
        return msg

    def seal(self, message: bytes, record: bytes | None = None, sender_iid: str | None = None) -> bytes:
        return S.seal(self.bridge.identity_pub, self.bridge.iid, sender_iid or self.me.iid, record or self.me.record, message)

    def envelope(self, text: str) -> bytes:
        return self.seal(self.message(S.pad(self.content(text))))

    def publish(self, payload: bytes) -> None:
        a = self.relay.publish(S.inbox_topic(self.bridge.iid), payload)
        assert a.status == 202, a

    def shown(self) -> list[dict[str, Any]]:
        return list(parley_json(self.home, "messages", self.me.address, "--json"))

    def texts(self) -> list[str]:
        return [m["text"] for m in self.shown() if m["direction"] == "in"]

    def wait_shown(self, text: str) -> list[str]:
        return wait_until(lambda: (t := self.texts()) and text in t and t, timeout=30, what=f"the bridge to show {text!r}")

    def quarantined(self) -> int:
        return int(parley_json(self.home, "status", "--json")["inbox"]["quarantined"])

    def read_inbox(self) -> list[tuple[str, bytes, bytes]]:
        """Our envelopes since last time, unsealed: (sender_iid, sender_record, message)."""
        if not self.token:
            self.token = self.relay.login(self.me.me)
        a = self.relay.envelopes(self.me.topic, self.token, after=self.after)
        assert a.status == 200, a
        self.after = a.body["next"]
        return [S.unseal(self.me.me.identity_priv, self.me.iid, unb64(e["payload"])) for e in a.body["envelopes"]]


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    tmp = tmp_path_factory.mktemp("bridge")
    procs: list[Proc] = []
    relay_proc, url = start_relay(tmp / "relay.db")
    procs.append(relay_proc)
    relay = Relay(url)
    try:
        home = tmp / "home"
        parley(home, "init", "--relay", url)
        who = parley_json(home, "whoami", "--json")
        bridge_proc, _ = start_bridge(home, url)
        procs.append(bridge_proc)
        # the bridge registers itself: its statement and its prekeys appear on the relay
        wait_until(lambda: relay.identity(who["address"]).body["records"], what="the bridge's identity record")
        wait_until(lambda: relay.count(who["installation_id"]).body.get("otpk", 0) > 0, what="the bridge's prekeys")
        records = [S.parse_record(unb64(r))[0] for r in relay.identity(who["address"]).body["records"]]
        fields = S.statement_fields(records[-1])
        assert fields["Installation ID"] == who["installation_id"] and fields["Address"] == who["address"]
        peer = S.Peer(who["installation_id"], bytes.fromhex(fields["Signing Key"].split(":")[1]),
                      bytes.fromhex(fields["Identity Key"].split(":")[1]))
        peer.check()
        me = Client.new()
        assert me.register(relay).status == 201
        assert relay.upload_prekeys(me.iid, me.prekey_upload()).status == 200
        yield Chat(relay, home, me, who["address"], peer)
    finally:
        relay.close()
        for p in reversed(procs):
            p.stop()


def test_prekey_message_is_shown_and_the_reply_opens_both_ways(chat: Chat) -> None:
    chat.publish(chat.envelope("hello from the conformance client"))
    chat.wait_shown("hello from the conformance client")
    [m] = chat.shown()
    assert (m["sender"], m["recipient"], m["direction"]) == (chat.me.address, chat.bridge_address, "in")
    sent = parley_json(chat.home, "send", chat.me.address, "hello back", "--json")
    assert sent["delivered"] is True and sent["text"] == "hello back"
    [(sender_iid, record, message)] = chat.read_inbox()
    assert sender_iid == chat.bridge.iid
    text, _sig = S.parse_record(record)
    assert S.statement_fields(text)["Installation ID"] == chat.bridge.iid
    assert S.parse_message(message)["type"] == "msg"  # a reply in our session, not a new one
    assert chat.session is not None
    chat.session, padded = chat.session.decrypt(message)
    c = S.parse_content(padded)
    assert (c["message_id"], c["sender"], c["recipient"], c["text"]) == (sent["id"], chat.bridge_address, chat.me.address, "hello back")
    # from now on the client sends normal messages (§5.4)
    msg = chat.message(S.pad(chat.content("after the reply")))
    assert S.parse_message(msg)["type"] == "msg"
    chat.publish(chat.seal(msg))
    chat.wait_shown("after the reply")


def test_bridge_writes_first_and_the_client_responds_in_its_session(chat: Chat) -> None:
    """The client as the PQXDH responder (§5.2 Bob): a fresh wallet registers and uploads prekeys; the bridge
    writes first (`parley send`), so it claims a bundle and sends a PreKey message; the client answers it
    from its own private prekeys, reads the text, and replies inside that session, which the bridge shows;
    the bridge's next message is a normal one in the same session."""
    other = Chat(chat.relay, chat.home, Client.new(), chat.bridge_address, chat.bridge)
    assert other.me.register(chat.relay).status == 201
    assert chat.relay.upload_prekeys(other.me.iid, other.me.prekey_upload()).status == 200
    assert chat.relay.count(other.me.iid).body == {"otpk": 3, "pq_otpk": 2}
    sent = parley_json(chat.home, "send", other.me.address, "the bridge writes first", "--json")
    assert sent["delivered"] is True and sent["text"] == "the bridge writes first"
    assert chat.relay.count(other.me.iid).body == {"otpk": 2, "pq_otpk": 1}  # the bridge claimed one bundle
    [(sender_iid, record, message)] = other.read_inbox()
    assert sender_iid == chat.bridge.iid
    assert S.statement_fields(S.parse_record(record)[0])["Installation ID"] == chat.bridge.iid
    m = S.parse_message(message)
    assert m["type"] == "prekey" and m["ik_a"] == chat.bridge.identity_pub
    assert m["otpk_id"] in other.me.keys.otpk and (m["pq_kind"], m["pq_id"]) in other.me.keys.pq
    session, padded, _sk = S.respond(other.me.me, chat.bridge, message, other.me.keys)
    c = S.parse_content(padded)
    assert (c["message_id"], c["sender"], c["recipient"], c["text"]) == (
        sent["id"], chat.bridge_address, other.me.address, "the bridge writes first")
    other.session = session
    reply = other.message(S.pad(other.content("the responder answers")))
    assert S.parse_message(reply)["type"] == "msg" and S.parse_message(reply)["sid"] == m["sid"]  # §5.4: no new session
    other.publish(other.seal(reply))
    other.wait_shown("the responder answers")
    [shown] = [x for x in other.shown() if x["direction"] == "in"]
    assert (shown["sender"], shown["recipient"]) == (other.me.address, chat.bridge_address)
    again = parley_json(chat.home, "send", other.me.address, "and once more", "--json")
    [(_, _, message)] = other.read_inbox()
    m2 = S.parse_message(message)
    assert (m2["type"], m2["sid"]) == ("msg", m["sid"])  # the bridge got the reply: no more PreKey messages
    other.session, padded = other.session.decrypt(message)
    assert (S.parse_content(padded)["message_id"], S.parse_content(padded)["text"]) == (again["id"], "and once more")


def test_out_of_order_and_replayed_envelopes_are_shown_once(chat: Chat) -> None:
    envelopes = [chat.envelope(f"ooo {i}") for i in range(3)]
    before = chat.quarantined()
    for e in reversed(envelopes):
        chat.publish(e)
    chat.publish(envelopes[1])  # a replay: same bytes again
    chat.publish(chat.envelope("ooo marker"))
    texts = chat.wait_shown("ooo marker")
    assert [t for t in texts if t.startswith("ooo")] == ["ooo 2", "ooo 1", "ooo 0", "ooo marker"]  # arrival order (§6.4)
    assert chat.quarantined() == before  # a redelivery is dropped silently (§6.3), not quarantined


def _content_with_bytes_id(chat: Chat) -> bytes:
    return S.enc([1, "text", bytes(16), chat.me.address, chat.bridge_address, int(time.time() * 1000), "bytes id"])


def _indefinite(data: bytes) -> bytes:
    return b"\x9f" + b"".join(S.enc(x) for x in S.dec(data)) + b"\xff"


def _bad_sealed_ciphertext(chat: Chat) -> bytes:
    outer = S.dec(chat.envelope("bad sealed ciphertext"))
    ct = bytearray(outer[1])
    ct[40] ^= 1
    return S.enc([1, bytes(ct)])


def _record_of_another_installation(chat: Chat) -> bytes:
    other = Client.new()
    _, rec = other.statement()
    assert chat.relay.publish_identity(other.address, rec).status == 201
    return chat.seal(chat.message(S.pad(chat.content("other installation's record"))), record=rec)


def _prekey_with_wrong_sid(chat: Chat) -> bytes:
    fresh = chat.start_session()
    _, msg = fresh.encrypt(S.pad(chat.content("wrong sid")))
    m = S.dec(msg)
    m[2] = bytes(16)
    return chat.seal(S.enc(m))


MALFORMED: dict[str, tuple[str, Any]] = {  # name -> (its text, which must never be shown; how to make it)
    "non-canonical CBOR sealed payload": ("non-canonical payload", lambda chat: _indefinite(chat.envelope("non-canonical payload"))),
    "non-canonical CBOR content": ("non-canonical content",
                                   lambda chat: chat.seal(chat.message(S.pad(_indefinite(chat.content("non-canonical content")))))),
    "bad sealed-sender ciphertext": ("bad sealed ciphertext", _bad_sealed_ciphertext),
    "sealed inner with a record for another installation": ("other installation's record", _record_of_another_installation),
    "PreKey message with a wrong sid": ("wrong sid", _prekey_with_wrong_sid),
    "bad padding (unpadded content)": ("unpadded", lambda chat: chat.seal(chat.message(chat.content("unpadded")))),
    "bad padding (larger bucket than needed)": ("big bucket", lambda chat: chat.seal(chat.message(
        chat.content("big bucket") + b"\x80" + bytes(1023 - len(chat.content("big bucket")))))),
    "message_id as 16 bytes": ("bytes id", lambda chat: chat.seal(chat.message(S.pad(_content_with_bytes_id(chat))))),
    "content from another sender address": ("forged sender", lambda chat: chat.seal(chat.message(S.pad(S.content(
        S.new_message_id(), Client.new().address, chat.bridge_address, int(time.time() * 1000), "forged sender"))))),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_envelope_is_quarantined_and_the_next_one_still_arrives(chat: Chat, name: str) -> None:
    text, make = MALFORMED[name]
    before = chat.quarantined()
    chat.publish(make(chat))
    marker = f"good after {name}"
    chat.publish(chat.envelope(marker))
    texts = chat.wait_shown(marker)
    assert text not in texts
    assert chat.quarantined() == before + 1


def test_revoked_installation_is_refused_by_relay_and_bridge(chat: Chat) -> None:
    """The client revokes its installation; the bridge learns it when the relay refuses its reply (§6.3:
    'the relay's 404 unknown_installation on a publish to it'), then quarantines the client's messages.
    (The bridge's scheduled identity refresh runs every 5-15 minutes: not waited for here.)"""
    me = chat.me
    _, revoke = me.statement("revoke")
    assert chat.relay.publish_identity(me.address, revoke).status == 201
    a = chat.relay.publish(me.topic, b"to a revoked installation")
    assert (a.status, a.code) == (404, "unknown_installation")
    assert chat.relay.challenge(me.iid).code == "unknown_installation"
    # §6.2 step 4: the relay's 404 drops the envelope and the bridge notes the installation revoked;
    # it was the recipient's only one, so nothing reached them: the send fails (exit 3), it is not "sent"
    r = parley(chat.home, "send", me.address, "to the revoked one", "--json", check=False)
    assert r.returncode == 3 and me.address in r.stderr, r
    before = chat.quarantined()
    chat.publish(chat.envelope("sent after my revocation"))
    # a second, valid client's message after it proves the bridge has processed the first
    other = Chat(chat.relay, chat.home, Client.new(), chat.bridge_address, chat.bridge)
    assert other.me.register(chat.relay).status == 201
    other.publish(other.envelope("from another wallet"))
    other.wait_shown("from another wallet")
    assert "sent after my revocation" not in chat.texts()
    assert chat.quarantined() == before + 1


def test_embedded_relay_refuses_foreign_host_and_origin(tmp_path: Path) -> None:
    """§7 General: the relay inside `parley run` (no relay configured) answers 403 bad_host and
    403 forbidden_origin, in the §7 error shape, and still serves loopback callers."""
    home = tmp_path / "home"
    parley(home, "init")
    proc, url = start_bridge(home, None)
    r = Relay(url)
    try:
        assert r.health().body == {"ok": True, "version": 1, "minor": 4}
        for headers, code in (({"Host": "evil.example"}, "bad_host"), ({"Origin": "https://evil.example"}, "forbidden_origin"),
                              ({"Origin": "null"}, "forbidden_origin")):
            a = r.call("GET", "/v1/health", headers=headers)
            assert (a.status, a.code) == (403, code), (headers, a)
            assert set(a.body["error"]) == {"code", "message"}
        port = url.rsplit(":", 1)[1]
        assert r.call("GET", "/v1/health", headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}).status == 200
    finally:
        r.close()
        proc.stop()
