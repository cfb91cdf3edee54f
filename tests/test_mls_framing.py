"""MLS framing against a hostile member or relay (issue 14): a PublicMessage with a wrong
membership tag or signature, a PrivateMessage tampered with, replayed, or claiming a sender that is
not a member, and application data sent in the clear: each is refused with an MLS error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.mls import messages as M
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.framing import protect_private, protect_public, sign, unprotect_private, unprotect_public
from bridge.mls.key_schedule import SecretTree
from bridge.mls.messages import ContentType, FramedContent, Sender, WireFormat
from bridge.mls.suite import suite
from bridge.mls.tls import DecodeError

CASE = next(c for c in json.loads((Path(__file__).parent / "vectors" / "mls" / "message-protection.json").read_text()) if c["cipher_suite"] == 1)
H = bytes.fromhex
CS = suite(1)
GC = M.GroupContext(1, 1, H(CASE["group_id"]), CASE["epoch"], H(CASE["tree_hash"]), H(CASE["confirmed_transcript_hash"]), ()).encode()
SIG_PRIV, SIG_PUB = H(CASE["signature_priv"]), H(CASE["signature_pub"])


def _content(ctype: ContentType, **arm: Any) -> FramedContent:
    return FramedContent(H(CASE["group_id"]), CASE["epoch"], Sender.member(1), b"", ctype, **arm)


def _proposal() -> FramedContent:
    return _content(ContentType.PROPOSAL, proposal=M.Proposal.decode(H(CASE["proposal"])))


def test_public_messages_with_a_wrong_tag_or_signature_are_refused() -> None:
    mk = H(CASE["membership_key"])
    pm = protect_public(CS, sign(CS, WireFormat.PUBLIC_MESSAGE, _proposal(), SIG_PRIV, GC), mk, GC)
    assert unprotect_public(CS, pm, mk, GC, SIG_PUB).content == _proposal()
    with pytest.raises(VerifyError, match="membership"):
        unprotect_public(CS, pm, b"\x00" * 32, GC, SIG_PUB)  # not a member of this epoch
    with pytest.raises(VerifyError, match="membership"):
        unprotect_public(CS, pm, mk, GC[:-1] + b"\x01", SIG_PUB)  # another epoch's context
    other_priv, other_pub = CS.signature_keypair()
    with pytest.raises(VerifyError, match="signature"):
        unprotect_public(CS, pm, mk, GC, other_pub)  # signed by someone else
    forged = protect_public(CS, sign(CS, WireFormat.PUBLIC_MESSAGE, _proposal(), other_priv, GC), mk, GC)
    with pytest.raises(VerifyError, match="signature"):
        unprotect_public(CS, forged, mk, GC, SIG_PUB)
    app = sign(CS, WireFormat.PUBLIC_MESSAGE, _content(ContentType.APPLICATION, application_data=b"hi"), SIG_PRIV, GC)
    with pytest.raises(MLSError):
        protect_public(CS, app, mk, GC)
    sneaked = M.PublicMessage(app.content, app.auth, CS.mac(mk, app.tbm(GC)))
    with pytest.raises(MLSError):
        unprotect_public(CS, sneaked, mk, GC, SIG_PUB)


def _private(tree: SecretTree, **kw: Any) -> M.PrivateMessage:
    ac = sign(CS, WireFormat.PRIVATE_MESSAGE, _content(ContentType.APPLICATION, application_data=b"secret"), SIG_PRIV, GC)
    return protect_private(CS, ac, tree, H(CASE["sender_data_secret"]), **kw)


def _open(pm: M.PrivateMessage, tree: SecretTree, keys: Any = None) -> M.AuthenticatedContent:
    return unprotect_private(CS, pm, tree, H(CASE["sender_data_secret"]), GC, keys or (lambda leaf: SIG_PUB if leaf == 1 else None))


def test_private_messages_tampered_replayed_or_from_a_non_member_are_refused() -> None:
    secret = H(CASE["encryption_secret"])
    sender, receiver = SecretTree(CS, secret, 2), SecretTree(CS, secret, 2)
    first = _private(sender)
    assert b"secret" not in first.encode()
    assert _open(first, receiver).content.application_data == b"secret"
    with pytest.raises(MLSError):
        _open(first, receiver)  # replayed: its generation's key is gone
    second = _private(sender)
    for tampered in (dataclasses.replace(second, ciphertext=second.ciphertext[:-1] + bytes([second.ciphertext[-1] ^ 1])),
                     dataclasses.replace(second, encrypted_sender_data=bytes(len(second.encrypted_sender_data))),
                     dataclasses.replace(second, authenticated_data=b"x"),
                     dataclasses.replace(second, epoch=second.epoch + 1)):
        with pytest.raises(VerifyError):
            _open(tampered, SecretTree(CS, secret, 2))
    with pytest.raises(MLSError, match="no member"):
        _open(second, SecretTree(CS, secret, 2), lambda leaf: None)
    with pytest.raises(VerifyError, match="signature"):
        _open(second, SecretTree(CS, secret, 2), lambda leaf: CS.signature_keypair()[1])


def test_the_reuse_guard_changes_the_nonce_and_padding_must_be_zero() -> None:
    secret = H(CASE["encryption_secret"])
    a = _private(SecretTree(CS, secret, 2), reuse_guard=b"\x00\x00\x00\x00")
    b = _private(SecretTree(CS, secret, 2), reuse_guard=b"\x01\x02\x03\x04")
    assert a.ciphertext != b.ciphertext  # same key and generation: only the guard differs
    assert _open(b, SecretTree(CS, secret, 2)).content.application_data == b"secret"
    with pytest.raises(DecodeError, match="padding"):
        M.PrivateMessageContent.decode(M.PrivateMessageContent(ContentType.APPLICATION, M.FramedContentAuthData(b"s"), b"x").encode() + b"\x00\x01",
                                       ContentType.APPLICATION)


def test_a_forged_message_in_another_senders_name_does_not_burn_that_senders_key() -> None:
    """Every member can derive every sender's keys: a member forging leaf 1's generation 0 (its
    sender data right, its signature not leaf 1's) must not cost leaf 1's real message its key."""
    secret = H(CASE["encryption_secret"])
    genuine = _private(SecretTree(CS, secret, 2))
    forger_priv, _ = CS.signature_keypair()
    forged_ac = sign(CS, WireFormat.PRIVATE_MESSAGE, _content(ContentType.APPLICATION, application_data=b"forged"), forger_priv, GC)
    forged = protect_private(CS, forged_ac, SecretTree(CS, secret, 2), H(CASE["sender_data_secret"]))
    receiver = SecretTree(CS, secret, 2)
    for bad in (forged, dataclasses.replace(genuine, ciphertext=genuine.ciphertext[:-1] + bytes([genuine.ciphertext[-1] ^ 1]))):
        with pytest.raises(VerifyError):
            _open(bad, receiver)
    assert _open(genuine, receiver).content.application_data == b"secret"
    with pytest.raises(MLSError):
        _open(genuine, receiver)  # and once opened, its key is gone
