"""Cipher suites (RFC 9420 §5.1, §17.1) and the labelled operations built on them.

Parley offers 0x0001 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) and 0x0003
(MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519, XMTP's). Both are SHA-256, HKDF-SHA256,
DHKEM(X25519, HKDF-SHA256) and Ed25519; they differ in the AEAD. Everything comes from
``cryptography``: hashes, HMAC, HKDF-Expand, AES-GCM and ChaCha20-Poly1305, Ed25519, X25519 and HPKE
base mode (``cryptography.hazmat.primitives.hpke``). What is written here: the MLS labels (§5.1.3,
§5.1.2, §5.2), HKDF-Extract (one HMAC) and HPKE's ``DeriveKeyPair`` for X25519 (RFC 9180 §7.1.3,
which ``cryptography`` does not expose). docs/MLS.md records this.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from bridge.mls.errors import UnsupportedSuite, VerifyError
from bridge.mls.tls import Writer, opaque

__all__ = ["CipherSuite", "suite", "SUPPORTED", "LABEL_PREFIX"]

#: Every MLS label is prefixed with this (RFC 9420 §5.1.2, §5.1.3, §5.2, §8).
LABEL_PREFIX = b"MLS 1.0 "

_KEM_X25519 = 0x0020
_HPKE_SUITE_ID_KEM = b"KEM" + _KEM_X25519.to_bytes(2, "big")


@dataclass(frozen=True)
class CipherSuite:
    """One MLS cipher suite. ``nh``: hash and KDF output size; ``nk``/``nn``: AEAD key and nonce size;
    ``npk``: HPKE public key size (the KEM output, ``enc``, has the same size for X25519)."""

    id: int
    name: str
    aead_name: str
    nh: int = 32
    nk: int = 16
    nn: int = 12
    npk: int = 32

    # --- hash, MAC, KDF ---------------------------------------------------------

    def hash(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def mac(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, "sha256")

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> bool:
        return hmac.compare_digest(self.mac(key, data), tag)

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        """HKDF-Extract (RFC 5869 §2.2): an empty salt is Nh zero bytes."""
        return hmac.digest(salt or bytes(self.nh), ikm, "sha256")

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return HKDFExpand(hashes.SHA256(), length, info).derive(prk)

    def expand_with_label(self, secret: bytes, label: str | bytes, context: bytes, length: int) -> bytes:
        """§5.1.3: ``KDFLabel {uint16 length; opaque label<V> = "MLS 1.0 " + Label; opaque context<V>}``."""
        lab = label.encode() if isinstance(label, str) else label
        info = Writer().u16(length).opaque(LABEL_PREFIX + lab).opaque(context).bytes()
        return self.expand(secret, info, length)

    def derive_secret(self, secret: bytes, label: str | bytes) -> bytes:
        return self.expand_with_label(secret, label, b"", self.nh)

    def derive_tree_secret(self, secret: bytes, label: str | bytes, generation: int, length: int) -> bytes:
        """§9.1: the context is the generation as a uint32."""
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    def ref_hash(self, label: str | bytes, value: bytes) -> bytes:
        """§5.2: ``Hash(RefHashInput {opaque label<V>; opaque value<V>})``; the label is used as given."""
        lab = label.encode() if isinstance(label, str) else label
        return self.hash(opaque(lab) + opaque(value))

    # --- AEAD ---------------------------------------------------------------------

    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if len(key) != self.nk:
            raise ValueError(f"AEAD key must be {self.nk} bytes")
        return AESGCM(key) if self.aead_name == "AES-128-GCM" else ChaCha20Poly1305(key)

    def seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """Raises:
        VerifyError: the tag does not verify."""
        try:
            return self._aead(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise VerifyError("AEAD decryption failed") from None

    # --- signatures (§5.1.2) -------------------------------------------------------

    @staticmethod
    def _sign_content(label: str | bytes, content: bytes) -> bytes:
        lab = label.encode() if isinstance(label, str) else label
        return opaque(LABEL_PREFIX + lab) + opaque(content)

    def sign_with_label(self, private: bytes, label: str | bytes, content: bytes) -> bytes:
        return ed25519.Ed25519PrivateKey.from_private_bytes(private).sign(self._sign_content(label, content))

    def verify_with_label(self, public: bytes, label: str | bytes, content: bytes, signature: bytes) -> bool:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, self._sign_content(label, content))
            return True
        except (InvalidSignature, ValueError):
            return False

    def signature_public(self, private: bytes) -> bytes:
        return ed25519.Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()

    def signature_keypair(self) -> tuple[bytes, bytes]:
        priv = ed25519.Ed25519PrivateKey.generate()
        return priv.private_bytes_raw(), priv.public_key().public_bytes_raw()

    # --- HPKE (§5.1.3 EncryptWithLabel) ----------------------------------------------

    def _hpke(self) -> hpke.Suite:
        aead = hpke.AEAD.AES_128_GCM if self.aead_name == "AES-128-GCM" else hpke.AEAD.CHACHA20_POLY1305
        return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, aead)

    def encrypt_with_label(self, public: bytes, label: str | bytes, context: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """``SealBase(public, EncryptContext, "", plaintext)``; returns (kem_output, ciphertext)."""
        info = self._sign_content(label, context)  # EncryptContext has the same shape as SignContent
        out = self._hpke().encrypt(plaintext, x25519.X25519PublicKey.from_public_bytes(public), info=info)
        return out[: self.npk], out[self.npk :]

    def decrypt_with_label(self, private: bytes, label: str | bytes, context: bytes, kem_output: bytes, ciphertext: bytes) -> bytes:
        """Raises:
        VerifyError: wrong key, label, context, or tampered."""
        info = self._sign_content(label, context)
        try:
            return self._hpke().decrypt(bytes(kem_output) + bytes(ciphertext), x25519.X25519PrivateKey.from_private_bytes(private), info=info)
        except Exception:  # InvalidTag, ValueError for a bad kem_output, …
            raise VerifyError("HPKE open failed") from None

    def hpke_public(self, private: bytes) -> bytes:
        return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HPKE ``DeriveKeyPair`` of DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1.3): (private, public)."""
        prk = self.extract(b"", b"HPKE-v1" + _HPKE_SUITE_ID_KEM + b"dkp_prk" + ikm)
        sk = self.expand(prk, (32).to_bytes(2, "big") + b"HPKE-v1" + _HPKE_SUITE_ID_KEM + b"sk", 32)
        return sk, self.hpke_public(sk)

    def hpke_keypair(self) -> tuple[bytes, bytes]:
        priv = x25519.X25519PrivateKey.generate()
        return priv.private_bytes_raw(), priv.public_key().public_bytes_raw()


_SUITES = {
    0x0001: CipherSuite(0x0001, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519", "AES-128-GCM", nk=16),
    0x0003: CipherSuite(0x0003, "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519", "ChaCha20-Poly1305", nk=32),
}

#: The suite ids Parley implements.
SUPPORTED = frozenset(_SUITES)


@lru_cache(maxsize=None)
def suite(suite_id: int) -> CipherSuite:
    """Raises:
    UnsupportedSuite: any other id."""
    try:
        return _SUITES[suite_id]
    except KeyError:
        raise UnsupportedSuite(f"cipher suite 0x{suite_id:04x} is not implemented (Parley offers 0x0001 and 0x0003)") from None
