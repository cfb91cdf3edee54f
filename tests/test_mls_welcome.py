"""Joining from a Welcome that a hostile committer or relay altered (issue 14): another init key,
an unknown or wrong signer, a GroupInfo whose confirmation tag does not match its key schedule
(re-signed so that only the tag is wrong), a Welcome without our entry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bridge.mls import key_schedule as ks
from bridge.mls.errors import MLSError, VerifyError
from bridge.mls.messages import KeyPackage, MLSMessage, Welcome
from bridge.mls.suite import suite
from bridge.mls.welcome import open_welcome

CASE = next(c for c in json.loads((Path(__file__).parent / "vectors" / "mls" / "welcome.json").read_text()) if c["cipher_suite"] == 1)
CS = suite(1)
KP = MLSMessage.decode(bytes.fromhex(CASE["key_package"])).body
WELCOME = MLSMessage.decode(bytes.fromhex(CASE["welcome"])).body
INIT_PRIV, SIGNER = bytes.fromhex(CASE["init_priv"]), bytes.fromhex(CASE["signer_pub"])
assert isinstance(KP, KeyPackage) and isinstance(WELCOME, Welcome)


def test_the_welcome_opens_only_for_its_key_package_and_signer() -> None:
    opened = open_welcome(CS, WELCOME, KP, INIT_PRIV, lambda _i: SIGNER)
    assert opened.epoch_secrets.joiner_secret == opened.group_secrets.joiner_secret
    with pytest.raises(VerifyError):
        open_welcome(CS, WELCOME, KP, CS.hpke_keypair()[0], lambda _i: SIGNER)
    with pytest.raises(MLSError, match="not a member"):
        open_welcome(CS, WELCOME, KP, INIT_PRIV, lambda _i: None)
    with pytest.raises(VerifyError, match="signature"):
        open_welcome(CS, WELCOME, KP, INIT_PRIV, lambda _i: CS.signature_keypair()[1])
    with pytest.raises(MLSError, match="no entry"):
        open_welcome(CS, dataclasses.replace(WELCOME, secrets=()), KP, INIT_PRIV, lambda _i: SIGNER)
    with pytest.raises(MLSError, match="suites"):
        open_welcome(suite(3), WELCOME, KP, INIT_PRIV, lambda _i: SIGNER)


def test_a_groupinfo_with_a_wrong_confirmation_tag_is_refused_even_when_signed() -> None:
    opened = open_welcome(CS, WELCOME, KP, INIT_PRIV, lambda _i: SIGNER)
    signer_priv, signer_pub = CS.signature_keypair()
    key, nonce = ks.welcome_key_nonce(CS, ks.welcome_secret(CS, opened.group_secrets.joiner_secret))

    def rewrapped(tag: bytes) -> Welcome:
        info = dataclasses.replace(opened.group_info, confirmation_tag=tag, signature=b"")
        info = dataclasses.replace(info, signature=CS.sign_with_label(signer_priv, "GroupInfoTBS", info.tbs()))
        return dataclasses.replace(WELCOME, encrypted_group_info=CS.seal(key, nonce, b"", info.encode()))

    # The group secrets' HPKE context is the encrypted GroupInfo: re-encrypt them for the new one too.
    def with_secrets(w: Welcome) -> Welcome:
        kem_output, ct = CS.encrypt_with_label(KP.init_key, "Welcome", w.encrypted_group_info, opened.group_secrets.encode())
        entry = dataclasses.replace(w.secrets[0], encrypted_group_secrets=dataclasses.replace(w.secrets[0].encrypted_group_secrets, kem_output=kem_output, ciphertext=ct))
        return dataclasses.replace(w, secrets=(entry,) + w.secrets[1:])

    good = with_secrets(rewrapped(opened.group_info.confirmation_tag))
    assert open_welcome(CS, good, KP, INIT_PRIV, lambda _i: signer_pub).group_info.signature != opened.group_info.signature
    bad = with_secrets(rewrapped(bytes(len(opened.group_info.confirmation_tag))))
    with pytest.raises(VerifyError, match="confirmation tag"):
        open_welcome(CS, bad, KP, INIT_PRIV, lambda _i: signer_pub)
