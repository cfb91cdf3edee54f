"""Double Ratchet properties (Signal spec rev 1): delivery order, forward secrecy, post-compromise
recovery, replay, tampering and the skipped-key bounds.

State is immutable, so "a failure leaves the state unchanged" is checked as behaviour, not as object
equality: the refused call must raise exactly the expected class (a mutant that returns an advanced state
instead of raising fails there), the held state must serialise to the stored bytes, and the genuine
message must then give byte-identical results from the held state and from the stored bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.exact import raises_exactly

from bridge.crypto import DuplicateMessage, SessionError, TooManySkipped, chain, ratchet
from bridge.crypto import primitives as P
from bridge.crypto.kdf import kdf_ck
from bridge.crypto.ratchet import Header, RatchetState
from bridge.protocol import wire
from bridge.protocol.wire import WireError

AD = b"parley/v1" + bytes(128)


def pair() -> tuple[RatchetState, RatchetState]:
    sk = P.random_bytes(32)
    spk_priv, spk_pub = P.x25519_keypair()
    return ratchet.init_alice(sk, spk_pub), ratchet.init_bob(sk, spk_priv)


def refused_without_effect(
    state: RatchetState, header: bytes, ct: bytes, exc: type[BaseException] | tuple[type[BaseException], ...],
    *, genuine: tuple[bytes, bytes, bytes] | None = None, ad: bytes = AD,
) -> None:
    """Decrypting ``(header, ct)`` must raise exactly ``exc`` and leave no trace.

    ``genuine = (header, ct, plaintext)``: a message that must still decrypt afterwards, to the same
    plaintext and the same new state bytes from the held state and from the stored bytes (the copy a
    caller would reload after rolling back).
    """
    stored = state.to_bytes()
    with raises_exactly(exc):
        ratchet.decrypt(state, header, ct, ad)
    assert state.to_bytes() == stored
    if genuine is not None:
        gh, gct, gpt = genuine
        rp = P.x25519_keypair()[0]  # injected, so a DH ratchet step gives the same bytes both times
        held, pt1 = ratchet.decrypt(state, gh, gct, AD, ratchet_priv=rp)
        reloaded, pt2 = ratchet.decrypt(RatchetState.from_bytes(stored), gh, gct, AD, ratchet_priv=rp)
        assert pt1 == pt2 == gpt
        assert held.to_bytes() == reloaded.to_bytes()


Msg = tuple[bytes, bytes, bytes]  # header, ciphertext, plaintext

OPS = st.lists(
    st.tuples(st.sampled_from(["send", "deliver", "replay", "restart"]), st.sampled_from(["a", "b"]), st.integers(0, 10**6)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, final_order=st.randoms(use_true_random=False))
def test_any_delivery_order_round_trips(ops: list[tuple[str, str, int]], final_order: object) -> None:
    """Both directions, interleaved DH ratchet steps, arbitrary reordering, replays and restarts."""
    a, b = pair()
    states = {"a": a, "b": b}
    inflight: dict[str, list[Msg]] = {"a": [], "b": []}  # messages addressed to a / b
    delivered: dict[str, list[Msg]] = {"a": [], "b": []}
    other = {"a": "b", "b": "a"}
    counter = 0

    def deliver(to: str, idx: int) -> None:
        header, ct, pt = inflight[to].pop(idx)
        states[to], got = ratchet.decrypt(states[to], header, ct, AD)
        assert got == pt
        delivered[to].append((header, ct, pt))

    for op, who, k in ops:
        if op == "send":
            if states[who].cks is None:
                continue  # Bob cannot speak first
            pt = f"{who}{counter}".encode() * (k % 5)
            counter += 1
            states[who], header, ct = ratchet.encrypt(states[who], pt, AD)
            inflight[other[who]].append((header, ct, pt))
        elif op == "deliver" and inflight[who]:
            deliver(who, k % len(inflight[who]))
        elif op == "replay" and delivered[who]:
            header, ct, _ = delivered[who][k % len(delivered[who])]
            nxt = inflight[who][0] if inflight[who] else None
            refused_without_effect(states[who], header, ct, DuplicateMessage, genuine=nxt)
        elif op == "restart":
            states[who] = RatchetState.from_bytes(states[who].to_bytes())
    for to in ("a", "b"):
        final_order.shuffle(inflight[to])  # type: ignore[attr-defined]
        while inflight[to]:
            deliver(to, 0)
    # after a restart, replays are still rejected
    for to in ("a", "b"):
        restored = RatchetState.from_bytes(states[to].to_bytes())
        assert restored == states[to]
        for header, ct, _ in delivered[to]:
            refused_without_effect(restored, header, ct, DuplicateMessage)


def _candidate_keys(state: RatchetState, depth: int = 8) -> list[bytes]:
    """Every message key a thief could get from a state: stored skipped keys and the next ``depth`` keys
    of the receiving chain *and* of the sending chain (each chain walked separately)."""
    keys = [mk for _, _, mk in state.skipped]
    for ck in (state.ckr, state.cks):
        for _ in range(depth if ck is not None else 0):
            ck, mk = kdf_ck(ck)
            keys.append(mk)
    return keys


@given(k=st.integers(0, 5), extra=st.integers(1, 4))
@settings(max_examples=25, deadline=None)
def test_forward_secrecy_consumed_key_is_gone(k: int, extra: int) -> None:
    a, b = pair()
    msgs = []
    for i in range(k + extra):
        a, header, ct = ratchet.encrypt(a, b"m%d" % i, AD)
        msgs.append((header, ct))
    b, _ = ratchet.decrypt(b, *msgs[k], AD)  # consume message k (skipping 0..k-1)
    stolen = RatchetState.from_bytes(b.to_bytes())
    header, ct = msgs[k]
    refused_without_effect(stolen, header, ct, DuplicateMessage)
    # and no key in the stolen state authenticates message k (not merely refused by bookkeeping):
    # skipped keys, and the next 8 keys of both the receiving and the sending chain
    assert stolen.ckr is not None and stolen.cks is not None
    candidates = _candidate_keys(stolen)
    assert len(candidates) == len(stolen.skipped) + 16
    assert kdf_ck(stolen.cks)[1] in candidates  # the sending chain is really examined
    for mk in candidates:
        with raises_exactly(P.DecryptError):
            chain.decrypt(mk, ct, AD + header)
    # the skipped ones are still there and still work
    for i in range(k):
        stolen, pt = ratchet.decrypt(stolen, *msgs[i], AD)
        assert pt == b"m%d" % i


def test_post_compromise_recovery() -> None:
    """A thief with a copy of Bob's state follows passively; after two DH round trips it is locked out."""
    a, b = pair()
    a, h0, c0 = ratchet.encrypt(a, b"a0", AD)
    b, _ = ratchet.decrypt(b, h0, c0, AD)
    thief = RatchetState.from_bytes(b.to_bytes())
    thief_results = []
    for rnd in range(3):
        b, hb, cb = ratchet.encrypt(b, b"b%d" % rnd, AD)
        a, _ = ratchet.decrypt(a, hb, cb, AD)
        a, ha, ca = ratchet.encrypt(a, b"a%d" % (rnd + 1), AD)
        b, pt = ratchet.decrypt(b, ha, ca, AD)
        assert pt == b"a%d" % (rnd + 1)
        try:
            thief, got = ratchet.decrypt(thief, ha, ca, AD)  # thief's own fresh ratchet key, not Bob's
            thief_results.append(got == pt)
        except P.DecryptError:  # only an authentication failure counts as "locked out"
            thief_results.append(False)
    # round 0: Alice's new chain still uses Bob's compromised ratchet key -> readable;
    # later rounds mix in Bob's fresh ratchet keys -> unreadable.
    assert thief_results == [True, False, False]


def test_tampering_rejected_state_unchanged() -> None:
    a, b = pair()
    a, header, ct = ratchet.encrypt(a, b"secret", AD)
    genuine = (header, ct, b"secret")
    flip = lambda x, i: x[:i] + bytes([x[i] ^ 0x40]) + x[i + 1:]  # noqa: E731
    for i in range(len(ct)):  # every ciphertext and tag byte
        refused_without_effect(b, header, flip(ct, i), P.DecryptError, genuine=genuine)
    hd = Header.decode(header)
    for bad in (Header(hd.dh, hd.pn + 1, hd.n), Header(hd.dh, hd.pn, hd.n + 1), Header(P.x25519_keypair()[1], hd.pn, hd.n)):
        refused_without_effect(b, bad.encode(), ct, P.DecryptError, genuine=genuine)
    refused_without_effect(b, header, ct, P.DecryptError, genuine=genuine, ad=AD[:-1] + b"\x01")  # other associated data
    for cut in (1, 16, 17):  # truncated: impossible lengths
        refused_without_effect(b, header, ct[:-cut], P.DecryptError, genuine=genuine)
    refused_without_effect(b, header[:-1], ct, SessionError, genuine=genuine)  # malformed header
    b, pt = ratchet.decrypt(b, header, ct, AD)
    assert pt == b"secret"


def test_skip_bound_per_chain() -> None:
    a, b = pair()
    msgs = []
    for i in range(ratchet.MAX_SKIP + 2):
        a, header, ct = ratchet.encrypt(a, b"%d" % i, AD)
        msgs.append((header, ct))
    refused_without_effect(b, *msgs[ratchet.MAX_SKIP + 1], TooManySkipped, genuine=(*msgs[0], b"0"))  # would skip 1001
    b, pt = ratchet.decrypt(b, *msgs[ratchet.MAX_SKIP], AD)  # skips exactly 1000
    assert pt == b"%d" % ratchet.MAX_SKIP
    assert len(b.skipped) == ratchet.MAX_SKIP
    b, pt = ratchet.decrypt(b, *msgs[0], AD)
    assert pt == b"0" and len(b.skipped) == ratchet.MAX_SKIP - 1


def test_skip_bound_on_previous_chain_via_pn() -> None:
    """A forged header whose pn claims a huge previous chain is refused before any state change."""
    a, b = pair()
    a, header, ct = ratchet.encrypt(a, b"x", AD)
    b, _ = ratchet.decrypt(b, header, ct, AD)
    a, header2, ct2 = ratchet.encrypt(a, b"y", AD)
    bogus = Header(P.x25519_keypair()[1], 5000, 0).encode()
    refused_without_effect(b, bogus, ct, TooManySkipped, genuine=(header2, ct2, b"y"))


def test_total_stored_skipped_keys_bounded_oldest_evicted() -> None:
    a, b = pair()
    chains = []
    for rnd in range(3):  # three Alice chains, 1000 skipped keys each
        msgs = []
        for i in range(ratchet.MAX_SKIP + 1):
            a, header, ct = ratchet.encrypt(a, b"%d/%d" % (rnd, i), AD)
            msgs.append((header, ct))
        b, _ = ratchet.decrypt(b, *msgs[-1], AD)
        b, hb, cb = ratchet.encrypt(b, b"ack", AD)
        a, _ = ratchet.decrypt(a, hb, cb, AD)
        chains.append(msgs)
    assert len(b.skipped) == ratchet.MAX_STORED_SKIPPED
    refused_without_effect(b, *chains[0][0], DuplicateMessage)  # evicted: the oldest chain's keys are gone
    b, pt = ratchet.decrypt(b, *chains[1][0], AD)
    assert pt == b"1/0"
    b, pt = ratchet.decrypt(b, *chains[2][999], AD)
    assert pt == b"2/999"


@pytest.mark.parametrize("length", [0, 1, 16, 31, 32, 33, 47, 49, 63, 65, 79, 95])
def test_impossible_ciphertext_length_refused_before_any_key_work(length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that cannot be ``CBC blocks ‖ 32-byte tag`` (at least one block) is refused by its length
    alone: no message-key expansion and no MAC is computed over attacker-chosen garbage."""
    derived: list[bytes] = []
    real = chain.message_keys
    monkeypatch.setattr(chain, "message_keys", lambda mk: derived.append(mk) or real(mk))
    with raises_exactly(P.DecryptError):
        chain.decrypt(P.random_bytes(32), P.random_bytes(length), AD)
    assert derived == []


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_possible_ciphertext_length_reaches_the_mac(blocks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortest genuine body (one block: an empty plaintext) and longer ones pass the length check:
    a forged one is refused by the MAC, a genuine one decrypts."""
    derived: list[bytes] = []
    real = chain.message_keys
    monkeypatch.setattr(chain, "message_keys", lambda mk: derived.append(mk) or real(mk))
    mk = P.random_bytes(32)
    with raises_exactly(P.DecryptError, match="MAC"):
        chain.decrypt(mk, P.random_bytes(16 * blocks + chain.TAG_LEN), AD)
    assert derived == [mk]
    plaintext = b"x" * (16 * (blocks - 1))  # PKCS#7 pads to exactly `blocks` blocks
    ct = chain.encrypt(mk, plaintext, AD)
    assert len(ct) == 16 * blocks + chain.TAG_LEN
    assert chain.decrypt(mk, ct, AD) == plaintext


def _state_fields() -> list:  # type: ignore[type-arg]
    """A ratchet state (Bob after one message: both chains, a skipped key, an old remote key) as CBOR items."""
    a, b = pair()
    a, h0, c0 = ratchet.encrypt(a, b"0", AD)
    a, h1, c1 = ratchet.encrypt(a, b"1", AD)
    b, _ = ratchet.decrypt(b, h1, c1, AD)  # skips message 0
    b, hb, cb = ratchet.encrypt(b, b"r", AD)
    a, _ = ratchet.decrypt(a, hb, cb, AD)
    a, h2, c2 = ratchet.encrypt(a, b"2", AD)
    b, _ = ratchet.decrypt(b, h2, c2, AD)  # a DH step: Alice's first key becomes an old remote key
    o = wire.decode(b.to_bytes())
    assert o[4] and o[6] and o[7] and len(o[11]) == 1 and len(o[12]) == 1
    return o


_KEY = bytes(range(32))


@pytest.mark.parametrize("index,value", [
    (2, bytes(31)), (3, bytes(33)), (4, bytes(31)), (5, bytes(31)), (6, bytes(33)), (7, bytes(31)),  # key lengths
    (8, -1), (8, 2**32), (9, 2**32), (10, 2**32), (10, True),                                        # counters
    (11, b"not a list"), (11, [[_KEY, 0]]), (11, [(_KEY, 0, _KEY, 0)]), (11, ["entry"]),             # skipped keys
    (11, [[_KEY[:31], 0, _KEY]]), (11, [[_KEY, 2**32, _KEY]]), (11, [[_KEY, 0, _KEY + b"\x00"]]),
    (11, [[_KEY, 0, _KEY]] * (ratchet.MAX_STORED_SKIPPED + 1)),
    (12, b"not a list"), (12, [_KEY[:31]]), (12, [_KEY] * (ratchet.MAX_OLD_REMOTE_KEYS + 1)),         # old remote keys
    (1, "session"), (0, 2),                                                                          # tag, version
])
def test_ratchet_state_from_bytes_rejects_each_bad_field(index: int, value: object) -> None:
    """A stored ratchet state is checked field by field: a corrupted or crafted row is a SessionError."""
    o = _state_fields()
    o[index] = value
    with raises_exactly(SessionError):
        RatchetState.from_bytes(wire.encode(o))


def test_ratchet_state_limits_are_inclusive_and_the_key_pair_must_match() -> None:
    o = _state_fields()
    o[11] = [[_KEY, n, _KEY] for n in range(ratchet.MAX_STORED_SKIPPED)]
    o[12] = [_KEY] * ratchet.MAX_OLD_REMOTE_KEYS
    s = RatchetState.from_bytes(wire.encode(o))
    assert len(s.skipped) == ratchet.MAX_STORED_SKIPPED and len(s.old_dhr) == ratchet.MAX_OLD_REMOTE_KEYS
    o[3] = P.x25519_keypair()[1]  # a public key that is not the private key's
    with raises_exactly(SessionError, match="key pair"):
        RatchetState.from_bytes(wire.encode(o))
    for junk in (b"", b"\xff", wire.encode([1, "ratchet"])):
        with raises_exactly(SessionError):
            RatchetState.from_bytes(junk)


def test_initial_states_follow_the_spec() -> None:
    """§3.3: Bob starts with RK = SK, his signed prekey as ratchet pair, no chains, all counters 0;
    Alice with DHr = Bob's key, a sending chain and all counters 0."""
    sk = P.random_bytes(32)
    spk_priv, spk_pub = P.x25519_keypair()
    bob = ratchet.init_bob(sk, spk_priv)
    assert (bob.dhs_priv, bob.dhs_pub, bob.dhr, bob.rk, bob.cks, bob.ckr) == (spk_priv, spk_pub, None, sk, None, None)
    assert (bob.ns, bob.nr, bob.pn, bob.skipped, bob.old_dhr) == (0, 0, 0, (), ())
    alice = ratchet.init_alice(sk, spk_pub)
    assert alice.dhr == spk_pub and alice.cks is not None and alice.ckr is None
    assert (alice.ns, alice.nr, alice.pn) == (0, 0, 0)
    with raises_exactly(P.CryptoError):
        ratchet.init_bob(sk[:31], spk_priv)


def test_fresh_responder_refuses_a_first_header_claiming_too_many_previous_keys() -> None:
    a, b = pair()
    a, header, ct = ratchet.encrypt(a, b"x", AD)
    hd = Header.decode(header)
    refused_without_effect(b, Header(hd.dh, ratchet.MAX_SKIP + 1, 0).encode(), ct, TooManySkipped, genuine=(header, ct, b"x"))
    refused_without_effect(b, Header(hd.dh, ratchet.MAX_SKIP, 0).encode(), ct, P.DecryptError, genuine=(header, ct, b"x"))


def test_initiator_refuses_a_forged_reply_claiming_a_previous_chain() -> None:
    """Before any reply Alice has no receiving chain: a forged 'reply' whose pn claims earlier
    messages has nothing to skip and fails authentication, nothing else."""
    a, b = pair()
    a, header, ct = ratchet.encrypt(a, b"x", AD)
    b, _ = ratchet.decrypt(b, header, ct, AD)
    b, hb, cb = ratchet.encrypt(b, b"reply", AD)
    for pn in (1, 5, ratchet.MAX_SKIP):
        forged = Header(P.x25519_keypair()[1], pn, 0).encode()
        refused_without_effect(a, forged, P.random_bytes(48), P.DecryptError, genuine=(hb, cb, b"reply"))


def test_sending_chain_exhausts_at_the_counter_limit() -> None:
    from dataclasses import replace as dc_replace

    a, b = pair()
    last = dc_replace(a, ns=ratchet.MAX_COUNTER - 1)
    done, header, _ = ratchet.encrypt(last, b"last", AD)
    assert Header.decode(header).n == ratchet.MAX_COUNTER - 1 and done.ns == ratchet.MAX_COUNTER
    with raises_exactly(SessionError):
        ratchet.encrypt(done, b"one too many", AD)
    with raises_exactly(SessionError):
        ratchet.encrypt(b, b"Bob cannot speak first", AD)


def test_message_lost_across_a_dh_step_is_kept_from_the_previous_chain() -> None:
    """Alice's a2 is delayed past a DH ratchet step (a3 carries pn=2): Bob stores a2's key from the
    previous chain while stepping, and a2 still opens afterwards, once."""
    a, b = pair()
    a, h1, c1 = ratchet.encrypt(a, b"a1", AD)
    a, h2, c2 = ratchet.encrypt(a, b"a2", AD)
    b, _ = ratchet.decrypt(b, h1, c1, AD)
    b, hb, cb = ratchet.encrypt(b, b"b1", AD)
    a, _ = ratchet.decrypt(a, hb, cb, AD)
    a, h3, c3 = ratchet.encrypt(a, b"a3", AD)
    assert Header.decode(h3).pn == 2
    b, pt = ratchet.decrypt(b, h3, c3, AD)
    assert pt == b"a3" and [(n, dh) for dh, n, _ in b.skipped] == [(1, Header.decode(h2).dh)]
    b, pt = ratchet.decrypt(b, h2, c2, AD)
    assert pt == b"a2" and b.skipped == ()
    refused_without_effect(b, h2, c2, DuplicateMessage)


@pytest.mark.parametrize("pn,n", [(2**32, 0), (0, 2**32), (2**63 - 1, 0), (-1, 0)])
def test_header_counters_are_uint32(pn: int, n: int) -> None:
    dh = P.x25519_keypair()[1]
    with raises_exactly(WireError):
        Header.decode(wire.encode([dh, pn, n]))
    assert Header.decode(wire.encode([dh, 2**32 - 1, 2**32 - 1])) == Header(dh, 2**32 - 1, 2**32 - 1)


def test_evolve_is_replace_and_refuses_a_field_the_state_does_not_have() -> None:
    """ratchet.evolve (the fast copy the ratchet and sessions use instead of dataclasses.replace)."""
    import dataclasses

    from bridge.crypto.ratchet import RatchetState, evolve

    state = RatchetState(b"a" * 32, b"b" * 32, None, b"c" * 32, b"d" * 32, None, 1, 2, 3, ((b"e" * 32, 4, b"f" * 32),), (b"g" * 32,))
    for f in dataclasses.fields(RatchetState):
        value = 99 if isinstance(getattr(state, f.name), int) else b"z" * 32
        new = evolve(state, **{f.name: value})
        assert new == dataclasses.replace(state, **{f.name: value})
        assert getattr(new, f.name) == value and new is not state
    assert state == RatchetState(b"a" * 32, b"b" * 32, None, b"c" * 32, b"d" * 32, None, 1, 2, 3, ((b"e" * 32, 4, b"f" * 32),), (b"g" * 32,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        evolve(state, ns=5).ns = 6  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        evolve(state, nss=5)
