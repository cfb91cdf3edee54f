"""Sessions (PQXDH + ratchet on the wire) and sealed sender: round trips, restarts, replays,
tampering (state unchanged), bad prekey signatures, hostile inputs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.exact import raises_exactly

from bridge.crypto import DuplicateMessage, SessionError, TooManySkipped, sealed, session
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


def refused_without_effect(
    s: session.Session, msg: bytes, exc: type[BaseException] | tuple[type[BaseException], ...],
    *, genuine: tuple[bytes, bytes] | None = None,
) -> None:
    """``session.decrypt(s, msg)`` must raise exactly ``exc`` and leave no trace: the held session
    serialises to the stored bytes, and ``genuine = (message, plaintext)`` then decrypts to the same
    plaintext and the same new session bytes from the held session and from the stored bytes."""
    stored = s.to_bytes()
    with raises_exactly(exc):
        session.decrypt(s, msg)
    assert s.to_bytes() == stored
    if genuine is not None:
        rp = P.x25519_keypair()[0]
        held, pt1 = session.decrypt(s, genuine[0], ratchet_priv=rp)
        reloaded, pt2 = session.decrypt(session.Session.from_bytes(stored), genuine[0], ratchet_priv=rp)
        assert pt1 == pt2 == genuine[1]
        assert held.to_bytes() == reloaded.to_bytes()


def with_field(msg: bytes, index: int, value: object) -> bytes:
    """The session message with one array item replaced (canonical CBOR again)."""
    o = wire.decode(msg)
    o[index] = value
    return wire.encode(o)


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
    sa, m3 = session.encrypt(sa, b"three")
    for s, m in ((sb, m1), (sb, m2), (restarted_b, m1), (restarted_b, m2)):
        refused_without_effect(s, m, DuplicateMessage, genuine=(m3, b"three"))
    refused_without_effect(restarted_a, r, DuplicateMessage)


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
    # a flipped bit breaks the framing (SessionError), the tag (DecryptError) or claims a huge skip
    # (TooManySkipped); never a bare CryptoError, never a replay verdict
    refused_without_effect(sb, bad, (SessionError, P.DecryptError, TooManySkipped),
                           genuine=(msg, b"second prekey message" if prekey_phase else b"normal message"))


def test_bad_prekey_signatures_rejected() -> None:
    alice, bob = ident(), ident()
    k = bob_keys(bob)
    b = k.bundle
    flip = lambda s: s[:5] + bytes([s[5] ^ 1]) + s[6:]  # noqa: E731
    for bad in (replace(b, spk=replace(b.spk, sig=flip(b.spk.sig))),
                replace(b, pqpk=replace(b.pqpk, sig=flip(b.pqpk.sig))),
                replace(b, spk=replace(b.spk, pub=P.x25519_keypair()[1])),  # substituted key, old signature
                replace(b, pqpk=sign_prekey(ident().signing_priv, PQ_OTPK, 3, b.pqpk.pub))):  # signed by someone else
        with raises_exactly(P.InvalidSignature):
            session.initiate(alice, remote(bob), bad)
    carol = ident()
    with raises_exactly(SessionError):  # bundle of another installation
        session.initiate(alice, remote(carol), b)
    with raises_exactly(SessionError):  # remote whose id does not match its keys
        session.initiate(alice, session.RemoteInstallation(carol.installation_id, bob.signing_pub, bob.identity_pub), b)


def test_accept_checks_sender_identity_and_keys() -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    mallory = ident()
    with raises_exactly(SessionError, match="identity key is not the sender's"):  # claims Alice's key, caller expects Mallory
        session.accept(bob, remote(mallory), m1, spk_priv=k.spk_priv, otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    with raises_exactly(P.DecryptError):  # wrong signed prekey -> different SK
        session.accept(bob, remote(alice), m1, spk_priv=P.x25519_keypair()[0], otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    with raises_exactly(SessionError, match="one-time prekey"):
        session.accept(bob, remote(alice), m1, spk_priv=k.spk_priv, otpk_priv=None, pqpk_seed=k.pq_seed)
    sb, _ = do_accept(alice, bob, k, m1)
    sb, r = session.encrypt(sb, b"r")
    with raises_exactly(SessionError, match="not a PreKey message"):  # a normal message is not a PreKey message
        do_accept(alice, bob, k, r)
    refused_without_effect(sa, m1, SessionError, genuine=(r, b"r"))  # the initiator never receives PreKey messages (reflection)
    other_alice, other_bob, k2, s2 = setup()
    s2, mx = session.encrypt(s2, b"x")
    refused_without_effect(sb, mx, SessionError)  # other session's message


def test_accept_refuses_an_installation_id_not_made_from_its_keys() -> None:
    """Mallory claims Alice's installation id but holds her own keys, and builds the PreKey message
    honestly for that claim (AD names Alice's id): the session must not be created in Alice's name."""
    alice, bob, mallory = ident(), ident(), ident()
    k = bob_keys(bob)
    posing = session.LocalIdentity(alice.installation_id, mallory.signing_priv, mallory.signing_pub,
                                   mallory.identity_priv, mallory.identity_pub)
    sm = session.initiate(posing, remote(bob), k.bundle)
    sm, m = session.encrypt(sm, b"hi bob, it is alice")
    claimed = session.RemoteInstallation(alice.installation_id, mallory.signing_pub, mallory.identity_pub)
    with raises_exactly(SessionError, match="installation"):
        session.accept(bob, claimed, m, spk_priv=k.spk_priv, otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    # the same keys under their own honest id are fine
    honest = session.LocalIdentity(mallory.installation_id, mallory.signing_priv, mallory.signing_pub,
                                   mallory.identity_priv, mallory.identity_pub)
    sh, mh = session.encrypt(session.initiate(honest, remote(bob), k.bundle), b"hi bob, it is mallory")
    sb, pt = session.accept(bob, remote(mallory), mh, spk_priv=k.spk_priv, otpk_priv=k.otpk_priv, pqpk_seed=k.pq_seed)
    assert pt == b"hi bob, it is mallory" and sb.remote_iid == mallory.installation_id


def test_first_prekey_message_with_a_substituted_identity_key_refused() -> None:
    """The relay (or anyone on the path) swaps ik_A in Alice's first PreKey message for another key:
    nothing else binds that field before the session exists, so accept must compare it itself."""
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"hello")
    for ik in (ident().identity_pub, bytes(32), P.x25519_keypair()[1]):
        with raises_exactly(SessionError, match="identity key"):
            do_accept(alice, bob, k, with_field(m1, 3, ik))
    sb, pt = do_accept(alice, bob, k, m1)
    assert pt == b"hello"


def test_repeated_prekey_message_with_a_substituted_identity_key_refused() -> None:
    """Once Bob has the session, a later PreKey message of it whose ik_A was swapped (sid, header and
    body untouched, so the ratchet MAC alone would pass) is refused, and the genuine one still decrypts."""
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"one")
    sa, m2 = session.encrypt(sa, b"two")
    sb, _ = do_accept(alice, bob, k, m1)
    forged = with_field(m2, 3, ident().identity_pub)
    assert session.peek(forged).sid == sb.sid
    refused_without_effect(sb, forged, SessionError, genuine=(m2, b"two"))
    # every other PreKey field is bound through the sid
    for index, value in ((4, P.x25519_keypair()[1]), (5, 7), (6, None), (7, PQ_LRPK), (8, 4)):
        refused_without_effect(sb, with_field(m2, index, value), SessionError, genuine=(m2, b"two"))


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 10, wire.encode([1, "msg"]), wire.encode([2, "msg", bytes(16), b"", b""]),
                                  wire.encode([1, "msg", bytes(15), b"", b""]), wire.encode([1, "nope", bytes(16), b"", b""]),
                                  wire.encode({"a": 1}), wire.encode([1, "prekey", bytes(16)] + [None] * 9)])
def test_peek_rejects_junk(junk: bytes) -> None:
    with raises_exactly(SessionError):
        session.peek(junk)


def test_session_from_bytes_rejects_junk() -> None:
    _, _, _, sa = setup()
    raw = sa.to_bytes()
    for bad in (b"", raw[:-1], wire.encode([2] + wire.decode(raw)[1:])):
        with raises_exactly(SessionError):
            session.Session.from_bytes(bad)


def test_sealed_round_trip_and_tampering() -> None:
    alice, bob = ident(), ident()
    payload = sealed.seal(bob.identity_pub, bob.installation_id, alice.installation_id, b"record", b"msg")
    u = sealed.unseal(bob.identity_priv, bob.installation_id, payload)
    assert u == sealed.Unsealed(alice.installation_id, b"record", b"msg")
    for i in range(len(payload)):
        bad = payload[:i] + bytes([payload[i] ^ 1]) + payload[i + 1:]
        with raises_exactly((P.DecryptError, WireError)):
            sealed.unseal(bob.identity_priv, bob.installation_id, bad)
    with raises_exactly(P.DecryptError):
        sealed.unseal(alice.identity_priv, alice.installation_id, payload)
    with raises_exactly(WireError):
        sealed.seal(bob.identity_pub, bob.installation_id, "not-an-iid", b"", b"")


def test_sealed_inner_layer_validated() -> None:
    bob = ident()
    info = sealed.info_for(bob.installation_id)
    for inner in (wire.encode([1, "sealed", "nope", b"", b""]), wire.encode([1, "other", bob.installation_id, b"", b""]), b"\xff"):
        payload = wire.encode([1, P.hpke_seal(bob.identity_pub, inner, info)])
        with raises_exactly(WireError):
            sealed.unseal(bob.identity_priv, bob.installation_id, payload)


def test_initiator_restarted_before_any_reply_still_sends_prekey_messages() -> None:
    """A bridge restarted between its first message and Bob's reply must keep the PreKey fields: a
    restored session that forgot them would send normal messages Bob can never open."""
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"one")
    restored = session.Session.from_bytes(sa.to_bytes())
    assert restored == sa and restored.pending is not None and restored.pending == sa.pending
    restored, m2 = session.encrypt(restored, b"two, after a restart")
    assert session.peek(m2).is_prekey
    sb, pt = do_accept(alice, bob, k, m2)  # Bob may see the second one first
    assert pt == b"two, after a restart"


def test_initiate_uses_the_injected_keys() -> None:
    """Known-answer vectors depend on ``ephemeral_priv`` and ``ratchet_priv`` really being used."""
    alice, bob = ident(), ident()
    k = bob_keys(bob)
    ek, rk = P.x25519_keypair()[0], P.x25519_keypair()[0]
    s = session.initiate(alice, remote(bob), k.bundle, ephemeral_priv=ek, ratchet_priv=rk)
    assert s.pending is not None and s.pending.ephemeral_pub == P.x25519_public(ek)
    assert s.ratchet.dhs_priv == rk and s.ratchet.dhs_pub == P.x25519_public(rk)


def _session_fields(s: session.Session) -> list:  # type: ignore[type-arg]
    return wire.decode(s.to_bytes())


@pytest.mark.parametrize("index,value", [
    (1, "ratchet"),                # wrong type tag
    (2, "not-an-installation-id"),  # remote installation id
    (3, bytes(15)),                # sid length
    (3, bytes(17)),
    (4, bytes(136)),               # AD length
    (5, 1),                        # initiator flag not a bool
    (6, 0),                        # reply_received flag not a bool
])
def test_session_from_bytes_rejects_each_bad_field(index: int, value: object) -> None:
    """A stored session is checked field by field: a corrupted or crafted row is a SessionError, not a
    session with a short sid or an AD that no longer frames the identity keys."""
    _, _, _, sa = setup()
    fields = _session_fields(sa)
    fields[index] = value
    with raises_exactly(SessionError):
        session.Session.from_bytes(wire.encode(fields))
    session.Session.from_bytes(sa.to_bytes())  # the untouched one loads


@pytest.mark.parametrize("initiator,reply_received", [(False, False), (False, True), (True, True)])
def test_session_from_bytes_rejects_pending_prekey_fields_with_inconsistent_flags(initiator: bool, reply_received: bool) -> None:
    """Only an initiator that has not yet heard back may hold PreKey fields."""
    _, _, _, sa = setup()
    fields = _session_fields(sa)
    assert fields[7] is not None
    fields[5], fields[6] = initiator, reply_received
    with raises_exactly(SessionError):
        session.Session.from_bytes(wire.encode(fields))


@pytest.mark.parametrize("index,value", [
    (0, bytes(31)),         # identity key length
    (1, bytes(33)),         # ephemeral key length
    (6, bytes(1087)),       # KEM ciphertext length
    (4, "mlkem1024-otpk"),  # unknown ML-KEM prekey kind
])
def test_session_from_bytes_rejects_bad_pending_prekey_fields(index: int, value: object) -> None:
    _, _, _, sa = setup()
    fields = _session_fields(sa)
    fields[7][index] = value
    with raises_exactly(SessionError):
        session.Session.from_bytes(wire.encode(fields))


@pytest.mark.parametrize("pending", [[], ["x"] * 6, ["x"] * 8, b"1234567", "1234567", 7])
def test_session_from_bytes_rejects_pending_of_the_wrong_shape(pending: object) -> None:
    _, _, _, sa = setup()
    fields = _session_fields(sa)
    fields[7] = pending
    with raises_exactly(SessionError):
        session.Session.from_bytes(wire.encode(fields))


def test_peek_refuses_a_prekey_message_with_a_short_identity_key() -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    for bad in (bytes(31), bytes(33), b""):
        with raises_exactly(SessionError):
            session.peek(with_field(m1, 3, bad))


def test_responder_session_flags() -> None:
    """The responder has provably got the session (it decrypted a message): reply_received, never pending."""
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    sb, _ = do_accept(alice, bob, k, m1)
    assert (sb.initiator, sb.reply_received, sb.pending) == (False, True, None)
    assert session.Session.from_bytes(sb.to_bytes()) == sb


def test_installation_and_associated_data_inputs_checked_one_by_one() -> None:
    """Each malformed input alone is a SessionError (not a ValueError from deeper down, not accepted)."""
    from bridge.crypto import pqxdh

    a, b = ident(), ident()
    pqxdh.check_installation(a.installation_id, a.signing_pub, a.identity_pub)
    for iid, sp, ip in ((a.installation_id, a.signing_pub[:31], a.identity_pub),
                        (a.installation_id, a.signing_pub, a.identity_pub[:31]),
                        (a.installation_id, a.signing_pub + b"\x00", a.identity_pub),
                        ("not-an-iid", a.signing_pub, a.identity_pub),
                        (a.installation_id.upper(), a.signing_pub, a.identity_pub),
                        (b.installation_id, a.signing_pub, a.identity_pub)):
        with raises_exactly(SessionError):
            pqxdh.check_installation(iid, sp, ip)
    ad = pqxdh.associated_data(a.identity_pub, b.identity_pub, a.installation_id, b.installation_id)
    assert ad == b"parley/v1" + a.identity_pub + b.identity_pub + a.installation_id.encode() + b.installation_id.encode()
    assert len(ad) == pqxdh.AD_LEN
    good = [a.identity_pub, b.identity_pub, a.installation_id, b.installation_id]
    for index, bad in ((0, a.identity_pub[:31]), (1, b.identity_pub + b"\x00"), (2, "nope"), (3, "nope")):
        args = list(good)
        args[index] = bad
        with raises_exactly(SessionError):
            pqxdh.associated_data(*args)


@pytest.mark.parametrize("index,name", [(5, "spk_id"), (6, "otpk_id"), (8, "pqpk_id")])
def test_prekey_ids_span_the_full_uint32_range(index: int, name: str) -> None:
    """Prekey ids 0 and 2^32-1 are valid on the wire; -1 and 2^32 are not."""
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    for ok in (0, 2**32 - 1):
        assert getattr(session.peek(with_field(m1, index, ok)), name) == ok
    for bad in (-1, 2**32, True, "1"):
        with raises_exactly(SessionError):
            session.peek(with_field(m1, index, bad))


def test_peek_checks_framing_and_reports_normal_messages_exactly() -> None:
    alice, bob, k, sa = setup()
    sa, m1 = session.encrypt(sa, b"x")
    sb, _ = do_accept(alice, bob, k, m1)
    sb, r = session.encrypt(sb, b"r")
    info = session.peek(r)
    assert info.is_prekey is False and info.sid == sb.sid
    assert (info.identity_pub, info.spk_id, info.otpk_id, info.pqpk_kind, info.pqpk_id) == (None,) * 5
    assert session.peek(m1).is_prekey is True
    for bad in (wire.encode([1]), wire.encode([]), wire.encode([2]), wire.encode("msg"),
                with_field(m1, 2, bytes(15)), with_field(m1, 2, bytes(17)), with_field(r, 2, bytes(15))):
        with raises_exactly(SessionError):
            session.peek(bad)
