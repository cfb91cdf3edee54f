"""The only module that talks to pyca/cryptography.

Small, typed wrappers over X25519, Ed25519, ML-KEM-768, HKDF-SHA256, HMAC-SHA256,
AES-256-CBC, AES-256-GCM, HPKE and scrypt. Everything above this layer deals in
raw ``bytes`` only. Random inputs are generated here unless the caller injects them,
so known-answer vectors can drive every deterministic step.
"""

from __future__ import annotations

import functools

import hmac as _hmac
import os

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag as _InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, padding
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "CryptoError",
    "InvalidSignature",
    "DecryptError",
    "random_bytes",
    "x25519_keypair",
    "x25519_public",
    "x25519_dh",
    "ed25519_keypair",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "MLKEM768_SEED_LEN",
    "MLKEM768_PUBLIC_LEN",
    "MLKEM768_CIPHERTEXT_LEN",
    "mlkem768_keypair",
    "mlkem768_public",
    "mlkem768_encapsulate",
    "mlkem768_decapsulate",
    "hkdf_sha256",
    "hmac_sha256",
    "hmac_sha256_verify",
    "HMAC_SHA256_LEN",
    "aes256_cbc_encrypt",
    "aes256_cbc_decrypt",
    "aes256_gcm_encrypt",
    "aes256_gcm_decrypt",
    "AesGcm",
    "hpke_seal",
    "hpke_open",
    "scrypt",
]


class CryptoError(Exception):
    """Base class for every cryptographic failure raised by Parley."""


class InvalidSignature(CryptoError):
    """A signature did not verify."""


class DecryptError(CryptoError):
    """Authentication failed or the ciphertext was malformed."""


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# --- X25519 -----------------------------------------------------------------

def x25519_keypair(private: bytes | None = None) -> tuple[bytes, bytes]:
    """Return (private, public), 32 bytes each. ``private`` may be injected."""
    key = x25519.X25519PrivateKey.from_private_bytes(private) if private is not None else x25519.X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def x25519_public(private: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def x25519_dh(private: bytes, public: bytes) -> bytes:
    """X25519(private, public).

    Raises:
        CryptoError: malformed key, or an all-zero shared secret (low-order point).
    """
    try:
        out = x25519.X25519PrivateKey.from_private_bytes(private).exchange(
            x25519.X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # cryptography rejects all-zero output with ValueError
        raise CryptoError(f"X25519 failed: {exc}") from None
    if out == bytes(32):
        raise CryptoError("X25519 produced the all-zero shared secret")
    return out


# --- Ed25519 ----------------------------------------------------------------

def ed25519_keypair(private: bytes | None = None) -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(private) if private is not None else ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def ed25519_public(private: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def ed25519_sign(private: bytes, message: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(private).sign(message)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Raises:
    InvalidSignature: bad signature, or a malformed key or signature.
    """
    try:
        if len(signature) != 64:
            raise ValueError("signature length")
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (_CryptoInvalidSignature, ValueError, TypeError):
        raise InvalidSignature("Ed25519 signature does not verify") from None


# --- ML-KEM-768 (FIPS 203) -------------------------------------------------

MLKEM768_SEED_LEN = 64
MLKEM768_PUBLIC_LEN = 1184
MLKEM768_CIPHERTEXT_LEN = 1088


def mlkem768_keypair(seed: bytes | None = None) -> tuple[bytes, bytes]:
    """Return (seed, public). The 64-byte seed *is* the private key (FIPS 203 d‖z)."""
    seed = seed if seed is not None else os.urandom(MLKEM768_SEED_LEN)
    key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    return seed, key.public_key().public_bytes_raw()


def mlkem768_public(seed: bytes) -> bytes:
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def mlkem768_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """Return (shared_secret, ciphertext). Randomness cannot be injected (cryptography 50).

    Raises:
        CryptoError: malformed public key.
    """
    try:
        ss, ct = mlkem.MLKEM768PublicKey.from_public_bytes(public).encapsulate()
    except ValueError as exc:
        raise CryptoError(f"ML-KEM-768 public key rejected: {exc}") from None
    return ss, ct


def mlkem768_decapsulate(seed: bytes, ciphertext: bytes) -> bytes:
    """Raises:
    CryptoError: wrong ciphertext length (ML-KEM itself never fails: implicit rejection).
    """
    if len(ciphertext) != MLKEM768_CIPHERTEXT_LEN:
        raise CryptoError("ML-KEM-768 ciphertext must be 1088 bytes")
    try:
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(ciphertext)
    except ValueError as exc:
        raise CryptoError(f"ML-KEM-768 decapsulation failed: {exc}") from None


# --- KDFs and MACs ----------------------------------------------------------

def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256. ``salt=None`` means HashLen zero bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    h = _chmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


#: Length of an HMAC-SHA256 tag. Parley never truncates tags (PROTOCOL.md §5.2).
HMAC_SHA256_LEN = 32


def hmac_sha256_verify(key: bytes, data: bytes, tag: bytes) -> None:
    """Constant-time check of a full 32-byte HMAC-SHA256 tag. A truncated or padded tag is refused:
    accepting a prefix would let a forger match 16 bytes instead of 32.

    Raises:
        DecryptError: wrong length or mismatch.
    """
    if len(tag) != HMAC_SHA256_LEN or not _hmac.compare_digest(hmac_sha256(key, data), tag):
        raise DecryptError("MAC mismatch")


# --- Symmetric ciphers ------------------------------------------------------

def aes256_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def aes256_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Raises:
    DecryptError: bad length or bad padding.
    """
    if not ciphertext or len(ciphertext) % 16:
        raise DecryptError("CBC ciphertext length is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    data = dec.update(ciphertext) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(data) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad PKCS#7 padding") from None


def aes256_gcm_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"", nonce: bytes | None = None) -> bytes:
    """Return nonce(12) ‖ ciphertext ‖ tag(16)."""
    nonce = nonce if nonce is not None else os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256_gcm_decrypt(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Raises:
    DecryptError: tampered or wrong key.
    """
    if len(blob) < 28:
        raise DecryptError("AES-GCM blob too short")
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except _InvalidTag:
        raise DecryptError("AES-GCM authentication failed") from None


class AesGcm:
    """AES-256-GCM under one key with explicit 12-byte nonces (the backup archive's STREAM chunks,
    PROTOCOL.md §12.2): ``seal`` returns ciphertext ‖ tag(16), no nonce in front. The key schedule is
    done once, so sealing many chunks costs only the cipher."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise CryptoError("AES-256-GCM key must be 32 bytes")
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "AesGcm(<key>)"

    def seal(self, nonce: bytes, plaintext: bytes | bytearray | memoryview, aad: bytes = b"") -> bytes:
        if len(nonce) != 12:
            raise CryptoError("AES-GCM nonce must be 12 bytes")
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes | bytearray | memoryview, aad: bytes = b"") -> bytes:
        """Raises:
        DecryptError: shorter than a tag, tampered, wrong key, nonce or AAD.
        """
        if len(nonce) != 12:
            raise CryptoError("AES-GCM nonce must be 12 bytes")
        if len(ciphertext) < 16:
            raise DecryptError("AES-GCM ciphertext shorter than its tag")
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except _InvalidTag:
            raise DecryptError("AES-GCM authentication failed") from None


# --- HPKE (RFC 9180, base mode) -----------------------------------------------

_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def hpke_seal(recipient_public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; returns enc(32) ‖ ct."""
    return _HPKE.encrypt(plaintext, x25519.X25519PublicKey.from_public_bytes(recipient_public), info=info)


@functools.lru_cache(maxsize=4)
def _hpke_recipient(private: bytes) -> x25519.X25519PrivateKey:
    """The key object of an installation's identity key, which opens every envelope it receives:
    loading it costs about 50 µs (it derives the public key), a tenth of taking an envelope in."""
    return x25519.X25519PrivateKey.from_private_bytes(private)


def hpke_open(recipient_private: bytes, sealed: bytes, info: bytes) -> bytes:
    """Raises:
    DecryptError: wrong recipient, wrong info, or tampered.
    """
    if len(sealed) < 32 + 16:
        raise DecryptError("HPKE message too short")
    try:
        return _HPKE.decrypt(sealed, _hpke_recipient(bytes(recipient_private)), info=info)
    except Exception:  # InvalidTag, ValueError for a bad encapsulated key, …
        raise DecryptError("HPKE open failed") from None


# --- Password hashing -------------------------------------------------------

def scrypt(password: bytes, salt: bytes, *, n: int, r: int = 8, p: int = 1, length: int = 32) -> bytes:
    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(password)
