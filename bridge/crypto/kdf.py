"""Key derivation functions of Parley protocol v1 (docs/PROTOCOL.md §5.2).

* PQXDH KDF (Signal PQXDH rev 3, §2.2 "Cryptographic notation" KDF, §3.3):
  ``SK = HKDF-SHA256(salt = 32 zero bytes, ikm = 0xFF*32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
  info = "Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768", L = 32)``.
* KDF_RK (Double Ratchet rev 1, §5.2): ``HKDF-SHA256(salt = rk, ikm = dh_out,
  info = "Parley_Ratchet_v1", L = 64)`` → ``(rk', ck)``.
* KDF_CK (§5.2): ``mk = HMAC-SHA256(ck, 0x01)``, ``ck' = HMAC-SHA256(ck, 0x02)``.
* Message-key expansion (§5.2 ENCRYPT): ``HKDF-SHA256(salt = 32 zero bytes, ikm = mk,
  info = "Parley_MessageKeys_v1", L = 80)`` → ``enc_key(32) ‖ auth_key(32) ‖ iv(16)``.
"""

from __future__ import annotations

from typing import NamedTuple

from bridge.crypto import primitives as P

__all__ = [
    "PQXDH_INFO",
    "RATCHET_INFO",
    "MESSAGE_KEYS_INFO",
    "KEY_LEN",
    "MessageKeys",
    "pqxdh_sk",
    "kdf_rk",
    "kdf_ck",
    "message_keys",
]

PQXDH_INFO = b"Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768"
RATCHET_INFO = b"Parley_Ratchet_v1"
MESSAGE_KEYS_INFO = b"Parley_MessageKeys_v1"
KEY_LEN = 32
_ZERO_SALT = bytes(32)
_F = b"\xff" * 32


def _need(value: bytes, length: int, name: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise P.CryptoError(f"{name} must be {length} bytes")


class MessageKeys(NamedTuple):
    """The 80 bytes a message key expands to (Double Ratchet §5.2, ENCRYPT)."""

    enc_key: bytes
    auth_key: bytes
    iv: bytes


def pqxdh_sk(dh_outputs: list[bytes] | tuple[bytes, ...], kem_ss: bytes) -> bytes:
    """PQXDH §3.3: ``SK = KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS)`` with the 0xFF*32 prefix.

    Raises:
        CryptoError: not 3 or 4 DH outputs of 32 bytes, or a KEM secret that is not 32 bytes.
    """
    if len(dh_outputs) not in (3, 4):
        raise P.CryptoError("PQXDH takes 3 or 4 DH outputs")
    for i, dh in enumerate(dh_outputs, 1):
        _need(dh, 32, f"DH{i}")
    _need(kem_ss, 32, "KEM shared secret")
    ikm = _F + b"".join(bytes(d) for d in dh_outputs) + bytes(kem_ss)
    return P.hkdf_sha256(ikm, salt=_ZERO_SALT, info=PQXDH_INFO, length=KEY_LEN)


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """Double Ratchet §5.2 KDF_RK: returns ``(new root key, new chain key)``.

    Raises:
        CryptoError: a key that is not 32 bytes.
    """
    _need(rk, 32, "root key")
    _need(dh_out, 32, "DH output")
    out = P.hkdf_sha256(bytes(dh_out), salt=bytes(rk), info=RATCHET_INFO, length=64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """Double Ratchet §5.2 KDF_CK: returns ``(next chain key, message key)``.

    Raises:
        CryptoError: a chain key that is not 32 bytes.
    """
    _need(ck, 32, "chain key")
    return P.hmac_sha256(bytes(ck), b"\x02"), P.hmac_sha256(bytes(ck), b"\x01")


def message_keys(mk: bytes, info: bytes = MESSAGE_KEYS_INFO) -> MessageKeys:
    """Double Ratchet §5.2 ENCRYPT key schedule: expand a message key to (enc_key, auth_key, iv).

    ``info`` is a parameter only so libsignal's published vector ("WhisperMessageKeys") can be
    checked with the same code; protocol v1 always uses :data:`MESSAGE_KEYS_INFO`.

    Raises:
        CryptoError: a message key that is not 32 bytes.
    """
    _need(mk, 32, "message key")
    out = P.hkdf_sha256(bytes(mk), salt=_ZERO_SALT, info=info, length=80)
    return MessageKeys(out[:32], out[32:64], out[64:80])
