"""Hostile ratchet headers (issue 8 item 4): input is never validated by ``assert``.

The initiator, before any reply, has a DHr (the responder's signed prekey) but no receiving chain.
A normal message whose header names that key used to trip ``assert new.ckr is not None``; it must
raise a named DecryptError and leave the state as it was.
"""

from __future__ import annotations

import pytest

from bridge.crypto import NoReceivingChain
from bridge.crypto import primitives as P
from bridge.crypto import ratchet


def test_header_naming_the_initiators_dhr_before_any_reply_raises_no_receiving_chain() -> None:
    sk = P.random_bytes(32)
    bob_priv, bob_pub = P.x25519_keypair()
    alice = ratchet.init_alice(sk, bob_pub)
    alice, header, ct = ratchet.encrypt(alice, b"hello", b"ad")
    assert alice.dhr == bob_pub and alice.ckr is None
    for n in (0, 1, 5):
        with pytest.raises(NoReceivingChain):
            ratchet.decrypt(alice, ratchet.Header(bob_pub, 0, n).encode(), bytes(48), b"ad")
    # It is a DecryptError, as every failed authentication is, and not a bare AssertionError.
    assert issubclass(NoReceivingChain, P.DecryptError) and not issubclass(NoReceivingChain, AssertionError)
    # Alice's state still works: Bob's genuine reply opens with it.
    bob = ratchet.init_bob(sk, bob_priv)
    bob, pt = ratchet.decrypt(bob, header, ct, b"ad")
    assert pt == b"hello"
    bob, rh, rct = ratchet.encrypt(bob, b"reply", b"ad")
    assert ratchet.decrypt(alice, rh, rct, b"ad")[1] == b"reply"
