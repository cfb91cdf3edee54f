"""Sessions (PQXDH + ratchet on the wire) and sealed sender: round trips, restarts, replays,
tampering (state unchanged), bad prekey signatures, hostile inputs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.crypto import DuplicateMessage, SessionError, sealed, session
from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import installation_id
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, SPK, Bundle, OneTimePrekey, sign_prekey
from bridge.protocol.wire import WireError


def ident() -> session.LocalIdentity:
    sp, spub = P.ed25519_keypair()
    ip, ipub = P.x25519_keypair()
    return session.LocalIdentity(installation_id(spub, ipub), sp, spub, ip, ipub)


def remote(li: session.LocalIdentity) -> session.RemoteInstallation:
    return session.RemoteInstallation(li.installation_id, li.signing_pub, li.identity_pub)


@dataclass
class BobKeys:
    spk_priv: bytes
    otpk_priv: bytes | None
    pq_seed: bytes
    bundle: Bundle


def bob_keys(bob: session.LocalIdentity, otpk: bool = True, kind: str = PQ_OTPK) -> BobKeys:
    spk_priv, spk_pub = P.x25519_keypair()
    ot_priv, ot_pub = P.x25519_keypair()
    seed, pq_pub = P.mlkem768_keypair()
    bundle = Bundle(bob.installation_id, sign_prekey(bob.signing_priv, SPK, 1, spk_pub),
                    OneTimePrekey(2, ot_pub) if otpk else None, sign_prekey(bob.signing_priv, kind, 3, pq_pub))
    return BobKeys(spk_priv, ot_priv if otpk else None, seed, bundle)


def setup(otpk: bool = True, kind: str = PQ_OTPK) -> tuple[session.LocalIdentity, session.LocalIdentity, BobKeys, session.Session]:
    alice, bob = ident(), ident()
    keys = bob_keys(bob, otpk, kind)
    return alice, bob, keys, session.initiate(alice, remote(bob), keys.bundle)


def do_accept(alice: session.LocalIdentity, bob: session.LocalIdentity, k: BobKeys, msg: bytes) -> tuple[session.Session, bytes]:
    return session.accept(bob, remote(alice), msg, spk_priv=k.spk_priv, otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)


@pytest.mark.parametrize("otpk,kind", [(True, PQ_OTPK), (False, PQ_LRPK), (True, PQ_LRPK), (False, PQ_OTPK)])
def test_session_round_trip_and_prekey_phase(otpk: bool, kind: str) -> None:
    alice, bob, k, sa = setup(otpk, kind)
    assert sa.initiator and not sa.reply_received and sa.pending is not None
    sa, m1 = session.encrypt(sa, b"one")
    sa, m2 = session.encrypt(sa, b"two")
    info = session.peek(m1)
    assert info.is_prekey and info.sid == sa.sid and info.identity_pub == alice.identity_pub
    assert (info.spk_id, info.otpk_id, info.pqpk_kind, info.pqpk_id) == (1, 2 if otpk else None, kind, 3)
    sb, pt = do_accept(alice, bob, k, m2)  # the second PreKey message arrives first
    assert pt == b"two" and sb.sid == sa.sid and sb.remote_iid == alice.installation_id
    sb, pt = session.decrypt(sb, m1)  # the first is a PreKey message for the existing session
    assert pt == b"one"
    sb, r = session.encrypt(sb, b"reply")
    assert not session.peek(r).is_prekey and session.peek(r).identity_pub is None
    sa, pt = session.decrypt(sa, r)
    assert pt == b"reply" and sa.reply_received and sa.pending is None
    sa, m3 = session.encrypt(sa, b"three")
    assert not session.peek(m3).is_prekey
    sb, pt = session.decrypt(sb, m3)
    assert pt == b"three"


def test_replay_rejected_also_after_restart() -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"one")
    sb, _ = do_accept(alice, bob, k, m1)
    sb, r = session.encrypt(sb, b"r")
    sa, _ = session.decrypt(sa, r)
    sa, m2 = session.encrypt(sa, b"two")
    sb, _ = session.decrypt(sb, m2)
    restarted_b = session.Session.from_bytes(sb.to_bytes())
    restarted_a = session.Session.from_bytes(sa.to_bytes())
    assert restarted_b == sb and restarted_a == sa
    for s, m in ((sb, m1), (sb, m2), (restarted_b, m1), (restarted_b, m2), (restarted_a, r)):
        before = s.to_bytes()
        with pytest.raises(DuplicateMessage):
            session.decrypt(s, m)
        assert s.to_bytes() == before


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_tampered_message_rejected_state_unchanged(data: st.DataObject) -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"hello")
    sb, _ = do_accept(alice, bob, k, m1)
    sb, r = session.encrypt(sb, b"reply")
    prekey_phase = data.draw(st.booleans())
    if prekey_phase:
        sa2, msg = session.encrypt(sa, b"second prekey message")
    else:
        sa, _ = session.decrypt(sa, r)
        sa2, msg = session.encrypt(sa, b"normal message")
    pos = data.draw(st.integers(0, len(msg) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = msg[:pos] + bytes([msg[pos] ^ (1 << bit)]) + msg[pos + 1:]
    before = sb.to_bytes()
    with pytest.raises(P.CryptoError):
        session.decrypt(sb, bad)
    assert sb.to_bytes() == before
    sb, pt = session.decrypt(sb, msg)  # the genuine message still decrypts
    assert pt.endswith(b"message")


def test_bad_prekey_signatures_rejected() -> None:
    alice, bob = ident(), ident()
    k = bob_keys(bob)
    b = k.bundle
    flip = lambda s: s[:5] + bytes([s[5] ^ 1]) + s[6:]  # noqa: E731
    for bad in (replace(b, spk=replace(b.spk, sig=flip(b.spk.sig))),
                replace(b, pqpk=replace(b.pqpk, sig=flip(b.pqpk.sig))),
                replace(b, spk=replace(b.spk, pub=P.x25519_keypair()[1])),  # substituted key, old signature
                replace(b, pqpk=sign_prekey(ident().signing_priv, PQ_OTPK, 3, b.pqpk.pub))):  # signed by someone else
        with pytest.raises(P.InvalidSignature):
            session.initiate(alice, remote(bob), bad)
    carol = ident()
    with pytest.raises(SessionError):  # bundle of another installation
        session.initiate(alice, remote(carol), b)
    with pytest.raises(SessionError):  # remote whose id does not match its keys
        session.initiate(alice, session.RemoteInstallation(carol.installation_id, bob.signing_pub, bob.identity_pub), b)


def test_accept_checks_sender_identity_and_keys() -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    mallory = ident()
    with pytest.raises(SessionError):  # message claims Alice's identity key, caller expects Mallory
        session.accept(bob, remote(mallory), m1, spk_priv=k.spk_priv, otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    with pytest.raises(P.DecryptError):  # wrong signed prekey -> different SK
        session.accept(bob, remote(alice), m1, spk_priv=P.x25519_keypair()[0], otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    with pytest.raises(SessionError):
        session.accept(bob, remote(alice), m1, spk_priv=k.spk_priv, otpk_priv=None, pqpk_seed=k.pq_seed)
    sb, _ = do_accept(alice, bob, k, m1)
    sb, r = session.encrypt(sb, b"r")
    with pytest.raises(SessionError):  # a normal message is not a PreKey message
        do_accept(alice, bob, k, r)
    with pytest.raises(SessionError):  # the initiator never receives PreKey messages (reflection)
        session.decrypt(sa, m1)
    other_alice, other_bob, k2, s2 = setup()
    s2, mx = session.encrypt(s2, b"x")
    with pytest.raises(SessionError):  # other session's message
        session.decrypt(sb, mx)


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 10, wire.encode([1, "msg"]), wire.encode([2, "msg", bytes(16), b"", b""]),
                                  wire.encode([1, "msg", bytes(15), b"", b""]), wire.encode([1, "nope", bytes(16), b"", b""]),
                                  wire.encode({"a": 1}), wire.encode([1, "prekey", bytes(16)] + [None] * 9)])
def test_peek_rejects_junk(junk: bytes) -> None:
    with pytest.raises(SessionError):
        session.peek(junk)


def test_session_from_bytes_rejects_junk() -> None:
    _, _, _, sa = setup()
    raw = sa.to_bytes()
    for bad in (b"", raw[:-1], wire.encode([2] + wire.decode(raw)[1:])):
        with pytest.raises(SessionError):
            session.Session.from_bytes(bad)


def test_sealed_round_trip_and_tampering() -> None:
    alice, bob = ident(), ident()
    payload = sealed.seal(bob.identity_pub, bob.installation_id, alice.installation_id, b"record", b"msg")
    u = sealed.unseal(bob.identity_priv, bob.installation_id, payload)
    assert u == sealed.Unsealed(alice.installation_id, b"record", b"msg")
    for i in range(len(payload)):
        bad = payload[:i] + bytes([payload[i] ^ 1]) + payload[i + 1:]
        with pytest.raises((P.DecryptError, WireError)):
            sealed.unseal(bob.identity_priv, bob.installation_id, bad)
    with pytest.raises(P.DecryptError):
        sealed.unseal(alice.identity_priv, alice.installation_id, payload)
    with pytest.raises(WireError):
        sealed.seal(bob.identity_pub, bob.installation_id, "not-an-iid", b"", b"")


def test_sealed_inner_layer_validated() -> None:
    bob = ident()
    info = sealed.info_for(bob.installation_id)
    for inner in (wire.encode([1, "sealed", "nope", b"", b""]), wire.encode([1, "other", bob.installation_id, b"", b""]), b"\xff"):
        payload = wire.encode([1, P.hpke_seal(bob.identity_pub, inner, info)])
        with pytest.raises(WireError):
            sealed.unseal(bob.identity_priv, bob.installation_id, payload)
