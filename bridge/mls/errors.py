"""Errors of the MLS layer."""

from __future__ import annotations

from bridge.mls.tls import DecodeError

__all__ = ["MLSError", "UnsupportedSuite", "VerifyError", "DecodeError"]


class MLSError(Exception):
    """A protocol failure: a check that did not hold, a message that does not fit the group."""


class UnsupportedSuite(MLSError):
    """A cipher suite this implementation does not offer (RFC 9420 §17.1 lists 0x0001-0x0007)."""


class VerifyError(MLSError):
    """A signature, MAC or AEAD tag that does not verify, or an HPKE ciphertext that does not open."""
