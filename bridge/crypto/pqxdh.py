"""PQXDH key agreement (Signal's "The PQXDH Key Agreement Protocol", revision 3), Parley profile.

Parameters (PQXDH §2.1): curve X25519, hash SHA-256, KEM ML-KEM-768,
info ``"Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768"``. Parley installations hold *separate* keys:
an Ed25519 signing key (signs prekeys) and an X25519 identity key ``IK`` used in DH, so no XEdDSA.

Initiator (Alice, §3.3), after verifying the bundle's signatures::

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
    (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(salt=0*32, ikm=0xFF*32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, info, 32)

Associated data (§3.3, extended with the installation ids, which also bind the signing keys)::

    AD  = "parley/v1" ‖ IK_A ‖ IK_B ‖ ascii(iid_A) ‖ ascii(iid_B)          (9+32+32+32+32 = 137 bytes)
    sid = SHA-256(AD ‖ EK_A ‖ CT ‖ CBOR[spk_id, otpk_id | null, pqpk_kind, pqpk_id])[:16]

The sid binds every field of the PreKey message that is not otherwise authenticated (the identity
key is bound through AD, which the ratchet MAC covers).

Responder (Bob, §3.4) recomputes the same from his private keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bridge.crypto import SessionError
from bridge.crypto import primitives as P
from bridge.crypto.kdf import pqxdh_sk
from bridge.protocol import wire
from bridge.protocol.ids import installation_id, is_installation_id
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, Bundle

__all__ = [
    "AD_PREFIX",
    "AD_LEN",
    "SID_LEN",
    "InitiatorKeys",
    "associated_data",
    "session_id",
    "check_installation",
    "initiate",
    "respond",
]

AD_PREFIX = b"parley/v1"
AD_LEN = len(AD_PREFIX) + 4 * 32
SID_LEN = 16


def check_installation(iid: str, signing_pub: bytes, identity_pub: bytes) -> None:
    """An installation id must be the hash of its two public keys (PROTOCOL.md §2).

    Raises:
        SessionError: the id does not match the keys, or a key has the wrong length.
    """
    if not is_installation_id(iid) or len(signing_pub) != 32 or len(identity_pub) != 32:
        raise SessionError("malformed installation")
    if installation_id(signing_pub, identity_pub) != iid:
        raise SessionError("installation id does not match its keys")


def associated_data(ik_a: bytes, ik_b: bytes, iid_a: str, iid_b: str) -> bytes:
    """``AD = "parley/v1" ‖ IK_A ‖ IK_B ‖ ascii(iid_A) ‖ ascii(iid_B)`` (initiator first).

    Raises:
        SessionError: wrong key length or malformed installation id.
    """
    if len(ik_a) != 32 or len(ik_b) != 32 or not is_installation_id(iid_a) or not is_installation_id(iid_b):
        raise SessionError("malformed associated-data input")
    return AD_PREFIX + bytes(ik_a) + bytes(ik_b) + iid_a.encode("ascii") + iid_b.encode("ascii")


def session_id(ad: bytes, ek_a: bytes, kem_ct: bytes, spk_id: int, otpk_id: int | None, pqpk_kind: str, pqpk_id: int) -> bytes:
    """``sid = SHA-256(AD ‖ EK_A ‖ CT ‖ CBOR[spk_id, otpk_id|null, pqpk_kind, pqpk_id])[:16]``.

    Lets the receiver find the session without trial decryption, and binds the PreKey fields.
    """
    ids = wire.encode([spk_id, otpk_id, pqpk_kind, pqpk_id])
    return hashlib.sha256(bytes(ad) + bytes(ek_a) + bytes(kem_ct) + ids).digest()[:SID_LEN]


@dataclass(frozen=True)
class InitiatorKeys:
    """Everything the initiator learns from PQXDH and must send in its PreKey messages."""

    sk: bytes
    ad: bytes
    sid: bytes
    ephemeral_pub: bytes
    kem_ct: bytes
    spk_id: int
    spk_pub: bytes
    otpk_id: int | None
    pqpk_kind: str
    pqpk_id: int


def initiate(
    identity_priv: bytes,
    identity_pub: bytes,
    local_iid: str,
    remote_iid: str,
    remote_signing_pub: bytes,
    remote_identity_pub: bytes,
    bundle: Bundle,
    *,
    ephemeral_priv: bytes | None = None,
) -> InitiatorKeys:
    """PQXDH §3.3 (sending the initial message), given a claimed bundle.

    Raises:
        InvalidSignature: the signed prekey or the ML-KEM prekey is not signed by ``remote_signing_pub``.
        SessionError: the bundle belongs to another installation, or the installation id does not
            match the remote keys.
        CryptoError: malformed keys or an all-zero DH output.
    """
    check_installation(remote_iid, remote_signing_pub, remote_identity_pub)
    if bundle.installation_id != remote_iid:
        raise SessionError("bundle is for another installation")
    bundle.verify(remote_signing_pub)
    if bundle.pqpk.kind not in (PQ_OTPK, PQ_LRPK):
        raise SessionError("bundle carries no ML-KEM prekey")
    ek_priv, ek_pub = P.x25519_keypair(ephemeral_priv)
    spk = bundle.spk.pub
    dhs = [
        P.x25519_dh(identity_priv, spk),
        P.x25519_dh(ek_priv, remote_identity_pub),
        P.x25519_dh(ek_priv, spk),
    ]
    if bundle.otpk is not None:
        dhs.append(P.x25519_dh(ek_priv, bundle.otpk.pub))
    ss, ct = P.mlkem768_encapsulate(bundle.pqpk.pub)
    sk = pqxdh_sk(dhs, ss)
    ad = associated_data(identity_pub, remote_identity_pub, local_iid, remote_iid)
    return InitiatorKeys(
        sk=sk,
        ad=ad,
        sid=session_id(ad, ek_pub, ct, bundle.spk.id, None if bundle.otpk is None else bundle.otpk.id, bundle.pqpk.kind, bundle.pqpk.id),
        ephemeral_pub=ek_pub,
        kem_ct=ct,
        spk_id=bundle.spk.id,
        spk_pub=spk,
        otpk_id=None if bundle.otpk is None else bundle.otpk.id,
        pqpk_kind=bundle.pqpk.kind,
        pqpk_id=bundle.pqpk.id,
    )


def respond(
    identity_priv: bytes,
    identity_pub: bytes,
    local_iid: str,
    remote_iid: str,
    remote_identity_pub: bytes,
    ephemeral_pub: bytes,
    kem_ct: bytes,
    spk_id: int,
    otpk_id: int | None,
    pqpk_kind: str,
    pqpk_id: int,
    *,
    spk_priv: bytes,
    otpk_priv: bytes | None,
    pqpk_seed: bytes,
) -> tuple[bytes, bytes, bytes]:
    """PQXDH §3.4 (receiving the initial message): returns ``(SK, AD, sid)``.

    Raises:
        CryptoError: malformed keys, all-zero DH output, or a KEM ciphertext of the wrong length.
        SessionError: malformed installation ids.
    """
    if len(pqpk_seed) != P.MLKEM768_SEED_LEN:
        raise P.CryptoError("ML-KEM seed must be 64 bytes")
    dhs = [
        P.x25519_dh(spk_priv, remote_identity_pub),
        P.x25519_dh(identity_priv, ephemeral_pub),
        P.x25519_dh(spk_priv, ephemeral_pub),
    ]
    if otpk_priv is not None:
        dhs.append(P.x25519_dh(otpk_priv, ephemeral_pub))
    ss = P.mlkem768_decapsulate(pqpk_seed, kem_ct)
    sk = pqxdh_sk(dhs, ss)
    ad = associated_data(remote_identity_pub, identity_pub, remote_iid, local_iid)
    return sk, ad, session_id(ad, ephemeral_pub, kem_ct, spk_id, otpk_id, pqpk_kind, pqpk_id)
