"""End-to-end encryption for Parley (protocol version 1).

Submodules (one per spec concept, see docs/PROTOCOL.md §5):

* :mod:`bridge.crypto.primitives` – the only importer of pyca/cryptography;
* :mod:`bridge.crypto.kdf` – every key derivation (PQXDH §2.2/§3.3, Double Ratchet §5.2);
* :mod:`bridge.crypto.chain` – the symmetric-key ratchet step and the message ENCRYPT/DECRYPT;
* :mod:`bridge.crypto.ratchet` – the Double Ratchet state machine (Signal spec rev 1, §3);
* :mod:`bridge.crypto.pqxdh` – PQXDH key agreement (Signal spec rev 3);
* :mod:`bridge.crypto.session` – session messages on the wire (PreKey and normal messages);
* :mod:`bridge.crypto.sealed` – sealed sender (HPKE outer layer).

This package file only defines the shared exception types; it deliberately imports none of the
higher submodules so that ``bridge.protocol.prekeys`` can import ``bridge.crypto.primitives``
without an import cycle.
"""

from __future__ import annotations

from bridge.crypto.primitives import CryptoError, DecryptError, InvalidSignature

__all__ = [
    "CryptoError",
    "DecryptError",
    "InvalidSignature",
    "SessionError",
    "DuplicateMessage",
    "TooManySkipped",
    "NoReceivingChain",
]


class SessionError(CryptoError):
    """A session message or session state that is malformed or does not belong where it was used."""


class DuplicateMessage(CryptoError):
    """The message key for this message was already consumed (a replay or a redelivery)."""


class TooManySkipped(CryptoError):
    """Decrypting would skip more message keys than the limits allow (MAX_SKIP, MAX_STORED_SKIPPED)."""


class NoReceivingChain(DecryptError):
    """A message claims the current receiving ratchet key, but no receiving chain exists for it yet
    (for example a header carrying the initiator's DHr before any reply). Nothing can decrypt it."""
