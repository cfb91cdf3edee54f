"""Message framing and protection (RFC 9420 §6) and the transcript hashes (§8.2).

* :func:`sign` / :func:`verify` - the signature over FramedContentTBS (§6.1);
* :func:`protect_public` / :func:`unprotect_public` - PublicMessage with its membership tag (§6.2);
  application data is never sent as a PublicMessage;
* :func:`protect_private` / :func:`unprotect_private` - PrivateMessage (§6.3): the content encrypted
  with a key of the sender's ratchet in the secret tree, the nonce XORed with a fresh reuse guard,
  the sender (leaf, generation, guard) encrypted under the sender-data key;
* :func:`confirmed_transcript_hash`, :func:`interim_transcript_hash`, :func:`confirmation_tag` (§8.2).

A received message is hostile until these return: every check raises :class:`MLSError` (or
:class:`VerifyError`, or ``DecodeError`` for malformed bytes), never anything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bridge.mls import messages as M
from bridge.mls.checks import expect
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.key_schedule import APPLICATION, HANDSHAKE, SecretTree, sender_data_key_nonce
from bridge.mls.messages import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderType,
    WireFormat,
)
from bridge.mls.suite import CipherSuite, suite
from bridge.mls.tls import DecodeError

__all__ = [
    "sign", "verify", "protect_public", "unprotect_public", "protect_private", "unprotect_private",
    "confirmed_transcript_hash", "interim_transcript_hash", "confirmation_tag",
    "check_transcript_hashes", "check_message_protection",
]


# --- signatures (§6.1) ----------------------------------------------------------------------


def sign(cs: CipherSuite, wire_format: WireFormat, content: FramedContent, signature_priv: bytes,
         group_context: bytes | None, confirmation_tag: bytes | None = None) -> AuthenticatedContent:
    """Sign ``content`` as sent in ``wire_format``; a commit carries its ``confirmation_tag``."""
    signature = cs.sign_with_label(signature_priv, "FramedContentTBS", M.framed_content_tbs(wire_format, content, group_context))
    return AuthenticatedContent(wire_format, content, FramedContentAuthData(signature, confirmation_tag))


def verify(cs: CipherSuite, ac: AuthenticatedContent, signature_pub: bytes, group_context: bytes | None) -> None:
    """Raises:
    VerifyError: the signature does not verify."""
    if not cs.verify_with_label(signature_pub, "FramedContentTBS", ac.tbs(group_context), ac.auth.signature):
        raise VerifyError("the message's signature does not verify")


# --- PublicMessage (§6.2) -----------------------------------------------------------------------


def protect_public(cs: CipherSuite, ac: AuthenticatedContent, membership_key: bytes, group_context: bytes) -> PublicMessage:
    """Raises:
    MLSError: application data (it is only ever sent encrypted), or content signed for another wire format."""
    if ac.content.content_type == ContentType.APPLICATION:
        raise MLSError("application data is never sent as a PublicMessage")
    if ac.wire_format != WireFormat.PUBLIC_MESSAGE:
        raise MLSError("the content was signed for another wire format")
    tag = cs.mac(membership_key, ac.tbm(group_context)) if ac.content.sender.sender_type == SenderType.MEMBER else None
    return PublicMessage(ac.content, ac.auth, tag)


def unprotect_public(cs: CipherSuite, pm: PublicMessage, membership_key: bytes, group_context: bytes, signature_pub: bytes) -> AuthenticatedContent:
    """Check a member's membership tag, then the signature.

    Raises:
        MLSError: application data in a PublicMessage; VerifyError: a tag or signature that does not verify."""
    ac = pm.authenticated_content()
    if ac.content.content_type == ContentType.APPLICATION:
        raise MLSError("application data in a PublicMessage")
    if pm.membership_tag is not None and not cs.verify_mac(membership_key, ac.tbm(group_context), pm.membership_tag):
        raise VerifyError("the membership tag does not verify")
    needs_context = ac.content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT)
    verify(cs, ac, signature_pub, group_context if needs_context else None)
    return ac


# --- PrivateMessage (§6.3) ----------------------------------------------------------------------


def _kind(content_type: ContentType) -> str:
    return APPLICATION if content_type == ContentType.APPLICATION else HANDSHAKE


def _guarded(nonce: bytes, reuse_guard: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(reuse_guard, nonce[:4])) + nonce[4:]


def protect_private(cs: CipherSuite, ac: AuthenticatedContent, tree: SecretTree, sender_data_secret: bytes, *,
                    padding: int = 0, reuse_guard: bytes | None = None) -> PrivateMessage:
    """Encrypt member content signed for the private_message wire format with the next key of the
    sender's ratchet.

    Raises:
        MLSError: not a member sender, or signed for another wire format."""
    content = ac.content
    if content.sender.sender_type != SenderType.MEMBER or content.sender.leaf_index is None:
        raise MLSError("only members send PrivateMessages")
    if ac.wire_format != WireFormat.PRIVATE_MESSAGE:
        raise MLSError("the content was signed for another wire format")
    leaf = content.sender.leaf_index
    generation, key, nonce = tree.next_key_nonce(leaf, _kind(content.content_type))
    guard = os.urandom(4) if reuse_guard is None else reuse_guard
    plaintext = PrivateMessageContent(content.content_type, ac.auth, content.application_data, content.proposal, content.commit, padding).encode()
    aad = M.PrivateContentAAD(content.group_id, content.epoch, content.content_type, content.authenticated_data).encode()
    ciphertext = cs.seal(key, _guarded(nonce, guard), aad, plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, ciphertext)
    sd_aad = M.SenderDataAAD(content.group_id, content.epoch, content.content_type).encode()
    encrypted_sender = cs.seal(sd_key, sd_nonce, sd_aad, M.SenderData(leaf, generation, guard).encode())
    return PrivateMessage(content.group_id, content.epoch, content.content_type, content.authenticated_data, encrypted_sender, ciphertext)


def unprotect_private(cs: CipherSuite, pm: PrivateMessage, tree: SecretTree, sender_data_secret: bytes, group_context: bytes,
                      signature_key_of: Callable[[int], bytes | None]) -> AuthenticatedContent:
    """Decrypt the sender data, then the content with the sender's key of that generation, then
    verify the signature with ``signature_key_of(leaf)`` (None: no member at that leaf).

    Raises:
        VerifyError: a ciphertext or signature that does not verify; MLSError: a sender that is not a
        member, a generation already used or too far ahead; DecodeError: malformed plaintext."""
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, pm.ciphertext)
    sender = M.SenderData.decode(cs.open(sd_key, sd_nonce, pm.sender_data_aad(), pm.encrypted_sender_data))
    signature_pub = signature_key_of(sender.leaf_index)
    if signature_pub is None:
        raise MLSError(f"no member at leaf {sender.leaf_index}")
    kind = _kind(pm.content_type)
    key, nonce = tree.peek_key_nonce(sender.leaf_index, kind, sender.generation)
    plaintext = cs.open(key, _guarded(nonce, sender.reuse_guard), pm.content_aad(), pm.ciphertext)
    pmc = PrivateMessageContent.decode(plaintext, pm.content_type)
    try:
        content = FramedContent(pm.group_id, pm.epoch, Sender.member(sender.leaf_index), pm.authenticated_data, pm.content_type,
                                pmc.application_data, pmc.proposal, pmc.commit)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    ac = AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, pmc.auth)
    verify(cs, ac, signature_pub, group_context)
    # Only now is the key used up (§9.2): every member can derive every sender's keys, so a message
    # that opens but is not signed by the sender must not cost the sender's real message its key.
    tree.key_nonce(sender.leaf_index, kind, sender.generation)
    return ac


# --- transcript hashes (§8.2) -----------------------------------------------------------------------


def confirmed_transcript_hash(cs: CipherSuite, interim_before: bytes, ac: AuthenticatedContent) -> bytes:
    return cs.hash(interim_before + ac.confirmed_transcript_hash_input())


def interim_transcript_hash(cs: CipherSuite, confirmed: bytes, confirmation_tag: bytes) -> bytes:
    return cs.hash(confirmed + M.interim_transcript_hash_input(confirmation_tag))


def confirmation_tag(cs: CipherSuite, confirmation_key: bytes, confirmed: bytes) -> bytes:
    return cs.mac(confirmation_key, confirmed)


# --- the working group's vectors ----------------------------------------------------------------------


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def check_transcript_hashes(case: dict[str, Any]) -> None:
    cs = suite(case["cipher_suite"])
    ac = AuthenticatedContent.decode(_h(case["authenticated_content"]))
    expect("content type", ac.content.content_type, ContentType.COMMIT)
    confirmed = confirmed_transcript_hash(cs, _h(case["interim_transcript_hash_before"]), ac)
    expect("confirmed_transcript_hash_after", confirmed, _h(case["confirmed_transcript_hash_after"]))
    expect("confirmation_tag", confirmation_tag(cs, _h(case["confirmation_key"]), confirmed), ac.auth.confirmation_tag)
    expect("interim_transcript_hash_after", interim_transcript_hash(cs, confirmed, ac.auth.confirmation_tag or b""),
           _h(case["interim_transcript_hash_after"]))


def check_message_protection(case: dict[str, Any]) -> None:
    """Each of proposal, commit and application: the given public and private messages unprotect to
    the raw value, and what we protect unprotects again (sender: leaf 1 of 2)."""
    cs = suite(case["cipher_suite"])
    group_id, epoch = _h(case["group_id"]), case["epoch"]
    gc = M.GroupContext(1, cs.id, group_id, epoch, _h(case["tree_hash"]), _h(case["confirmed_transcript_hash"]), ()).encode()
    sig_priv, sig_pub = _h(case["signature_priv"]), _h(case["signature_pub"])
    membership_key, sd_secret, enc_secret = _h(case["membership_key"]), _h(case["sender_data_secret"]), _h(case["encryption_secret"])
    expect("signature key pair", cs.signature_public(sig_priv), sig_pub)
    raw_values: dict[str, tuple[ContentType, dict[str, Any]]] = {
        "proposal": (ContentType.PROPOSAL, {"proposal": M.Proposal.decode(_h(case["proposal"]))}),
        "commit": (ContentType.COMMIT, {"commit": M.Commit.decode(_h(case["commit"]))}),
        "application": (ContentType.APPLICATION, {"application_data": _h(case["application"])}),
    }
    for name, (ctype, arm) in raw_values.items():
        tag = cs.mac(b"confirmation", b"") if ctype == ContentType.COMMIT else None
        content = FramedContent(group_id, epoch, Sender.member(1), b"", ctype, **arm)

        def same_value(ac: AuthenticatedContent, how: str) -> None:
            for field_name, value in arm.items():
                expect(f"{name}: {how}", getattr(ac.content, field_name), value)

        if name != "application":
            given = M.MLSMessage.decode(_h(case[f"{name}_pub"])).body
            if not isinstance(given, PublicMessage):
                raise AssertionError(f"{name}_pub is not a PublicMessage")
            same_value(unprotect_public(cs, given, membership_key, gc, sig_pub), "the given PublicMessage")
            ours = protect_public(cs, sign(cs, WireFormat.PUBLIC_MESSAGE, content, sig_priv, gc, tag), membership_key, gc)
            same_value(unprotect_public(cs, PublicMessage.decode(ours.encode()), membership_key, gc, sig_pub), "our PublicMessage")
        else:
            try:
                protect_public(cs, sign(cs, WireFormat.PUBLIC_MESSAGE, content, sig_priv, gc), membership_key, gc)
            except MLSError:
                pass
            else:
                raise AssertionError("application data was protected as a PublicMessage")
        given_priv = M.MLSMessage.decode(_h(case[f"{name}_priv"])).body
        if not isinstance(given_priv, PrivateMessage):
            raise AssertionError(f"{name}_priv is not a PrivateMessage")
        receiver = SecretTree(cs, enc_secret, 2)
        same_value(unprotect_private(cs, given_priv, receiver, sd_secret, gc, lambda leaf: sig_pub if leaf == 1 else None), "the given PrivateMessage")
        sender_tree, receiver = SecretTree(cs, enc_secret, 2), SecretTree(cs, enc_secret, 2)
        ours_priv = protect_private(cs, sign(cs, WireFormat.PRIVATE_MESSAGE, content, sig_priv, gc, tag), sender_tree, sd_secret, padding=7)
        back = unprotect_private(cs, PrivateMessage.decode(ours_priv.encode()), receiver, sd_secret, gc, lambda leaf: sig_pub if leaf == 1 else None)
        same_value(back, "our PrivateMessage")
