"""Symmetric-key ratchet and message encryption (Double Ratchet rev 1, §2.2 and §5.2 ENCRYPT/DECRYPT).

``ENCRYPT(mk, plaintext, ad)``: expand ``mk`` (see :func:`bridge.crypto.kdf.message_keys`), then
``ct = AES-256-CBC(enc_key, iv, PKCS#7(plaintext))`` and
``tag = HMAC-SHA256(auth_key, ad ‖ ct)`` (all 32 bytes). The result is ``ct ‖ tag``.
The ratchet passes ``ad = AD ‖ header_bytes`` so the tag covers AD, the encoded header and the
ciphertext, in that order.
"""

from __future__ import annotations

from bridge.crypto import primitives as P
from bridge.crypto.kdf import kdf_ck, message_keys

__all__ = ["TAG_LEN", "step", "encrypt", "decrypt"]

#: Length of the authentication tag appended to every ciphertext (untruncated HMAC-SHA256).
TAG_LEN = 32


def step(ck: bytes) -> tuple[bytes, bytes]:
    """One symmetric-key ratchet step (§2.2): ``(next chain key, message key)``.

    Raises:
        CryptoError: malformed chain key.
    """
    return kdf_ck(ck)


def encrypt(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """§5.2 ENCRYPT: returns ``AES-256-CBC ciphertext ‖ HMAC-SHA256 tag (32)``.

    Raises:
        CryptoError: malformed message key.
    """
    keys = message_keys(mk)
    ct = P.aes256_cbc_encrypt(keys.enc_key, keys.iv, bytes(plaintext))
    return ct + P.hmac_sha256(keys.auth_key, bytes(ad) + ct)


def decrypt(mk: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """§5.2 DECRYPT: check the tag first (constant time), then decrypt and unpad.

    Raises:
        DecryptError: too short, bad tag, bad length or bad padding.
    """
    if len(ciphertext) < 16 + TAG_LEN or (len(ciphertext) - TAG_LEN) % 16:
        raise P.DecryptError("ciphertext has an impossible length")
    keys = message_keys(mk)
    ct, tag = ciphertext[:-TAG_LEN], ciphertext[-TAG_LEN:]
    P.hmac_sha256_verify(keys.auth_key, bytes(ad) + ct, tag)
    return P.aes256_cbc_decrypt(keys.enc_key, keys.iv, ct)
