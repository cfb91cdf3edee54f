"""Joining a group from a Welcome (RFC 9420 §12.4.3.1): find our entry by KeyPackageRef, open the
GroupSecrets with our init key, open the GroupInfo with the welcome secret, check the signer's
signature over it and its confirmation tag against the key schedule of the new epoch.

:func:`open_welcome` does the cryptography every joiner does; building the group's state from it
(the ratchet tree, our leaf, the secret tree) is the group state machine's part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.mls import key_schedule as ks
from bridge.mls.checks import expect
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.messages import GroupInfo, GroupSecrets, KeyPackage, MLSMessage, PreSharedKeyID, Welcome
from bridge.mls.suite import CipherSuite, suite

__all__ = ["OpenedWelcome", "open_welcome", "check_welcome"]


@dataclass(frozen=True)
class OpenedWelcome:
    """What a Welcome gives its joiner: the verified GroupInfo, the GroupSecrets (with the path secret
    of the committer's path, when the joiner sits under it) and the epoch's secrets."""

    group_info: GroupInfo
    group_secrets: GroupSecrets = field(repr=False)
    epoch_secrets: ks.EpochSecrets = field(repr=False)


def open_welcome(cs: CipherSuite, welcome: Welcome, key_package: KeyPackage, init_priv: bytes,
                 signer_key: Callable[[GroupInfo], bytes | None],
                 psk_lookup: Callable[[PreSharedKeyID], bytes | None] = lambda _id: None) -> OpenedWelcome:
    """Open ``welcome`` as the client of ``key_package``. ``signer_key(group_info)`` gives the
    signature key of the GroupInfo's signer (from the ratchet tree the caller has), or None;
    ``psk_lookup`` the PSKs the GroupSecrets name.

    Raises:
        MLSError: another suite, no entry for us, an unknown signer or PSK, a bad confirmation tag;
        VerifyError: a ciphertext or signature that does not verify; DecodeError: malformed."""
    if welcome.cipher_suite != cs.id or key_package.cipher_suite != cs.id:
        raise MLSError("the Welcome, the key package and the group use different cipher suites")
    ref = key_package.ref(cs)
    mine = [s for s in welcome.secrets if s.new_member == ref]
    if len(mine) != 1:
        raise MLSError("the Welcome has no entry for this key package" if not mine else "the Welcome names this key package twice")
    ct = mine[0].encrypted_group_secrets
    secrets = GroupSecrets.decode(cs.decrypt_with_label(init_priv, "Welcome", welcome.encrypted_group_info, ct.kem_output, ct.ciphertext))
    psks: list[tuple[PreSharedKeyID, bytes]] = []
    for pid in secrets.psks:
        psk = psk_lookup(pid)
        if psk is None:
            raise MLSError("the Welcome needs a pre-shared key this client does not have")
        psks.append((pid, psk))
    psk_secret = ks.psk_secret(cs, psks)
    key, nonce = ks.welcome_key_nonce(cs, ks.welcome_secret(cs, secrets.joiner_secret, psk_secret))
    info = GroupInfo.decode(cs.open(key, nonce, b"", welcome.encrypted_group_info))
    if info.group_context.cipher_suite != cs.id:
        raise MLSError("the GroupInfo names another cipher suite")
    signer = signer_key(info)
    if signer is None:
        raise MLSError(f"the GroupInfo's signer (leaf {info.signer}) is not a member")
    if not cs.verify_with_label(signer, "GroupInfoTBS", info.tbs(), info.signature):
        raise VerifyError("the GroupInfo's signature does not verify")
    epoch = ks.from_joiner(cs, secrets.joiner_secret, psk_secret, info.group_context)
    if not cs.verify_mac(epoch.confirmation_key, info.group_context.confirmed_transcript_hash, info.confirmation_tag):
        raise VerifyError("the GroupInfo's confirmation tag does not verify")
    return OpenedWelcome(info, secrets, epoch)


def check_welcome(case: dict[str, Any]) -> None:
    """welcome.json: open the Welcome with ``init_priv``, the GroupInfo signed by ``signer_pub``."""
    cs = suite(case["cipher_suite"])
    kp = MLSMessage.decode(bytes.fromhex(case["key_package"])).body
    welcome = MLSMessage.decode(bytes.fromhex(case["welcome"])).body
    if not isinstance(kp, KeyPackage) or not isinstance(welcome, Welcome):
        raise AssertionError("key_package / welcome of the wrong wire format")
    expect("init key pair", cs.hpke_public(bytes.fromhex(case["init_priv"])), kp.init_key)
    open_welcome(cs, welcome, kp, bytes.fromhex(case["init_priv"]), lambda _info: bytes.fromhex(case["signer_pub"]))
    # the same Welcome does not open with another init key
    try:
        open_welcome(cs, welcome, kp, cs.hpke_keypair()[0], lambda _info: bytes.fromhex(case["signer_pub"]))
    except MLSError:
        return
    raise AssertionError("the Welcome opened with another init key")
