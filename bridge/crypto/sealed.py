"""Sealed sender (docs/PROTOCOL.md §5.5): hide the sender from the relay.

Outer layer: HPKE base mode (RFC 9180) with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM, to the recipient installation's X25519 identity key, with
``info = "parley/v1/sealed-sender/" ‖ ascii(recipient installation id)``.

* inner plaintext: canonical CBOR ``[1, "sealed", sender_iid, sender_record(bytes), message(bytes)]``
* payload (what the relay stores): canonical CBOR ``[1, hpke_enc(32) ‖ hpke_ct]``

``sender_record`` is opaque here; the engine verifies it (identity statement) and that it names
``sender_iid`` and that the inner session message's identity key belongs to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import is_installation_id
from bridge.protocol.wire import WireError

__all__ = ["VERSION", "INFO_PREFIX", "Unsealed", "seal", "unseal", "info_for"]

VERSION = 1
INFO_PREFIX = b"parley/v1/sealed-sender/"


def info_for(recipient_iid: str) -> bytes:
    """HPKE ``info`` for a recipient installation.

    Raises:
        WireError: not an installation id.
    """
    if not is_installation_id(recipient_iid):
        raise WireError("not an installation id")
    return INFO_PREFIX + recipient_iid.encode("ascii")


@dataclass(frozen=True)
class Unsealed:
    """The inner layer of a sealed-sender payload (sender not yet verified)."""

    sender_iid: str
    sender_record: bytes
    message: bytes


def seal(recipient_identity_pub: bytes, recipient_iid: str, sender_iid: str, sender_record: bytes, message: bytes) -> bytes:
    """Seal ``message`` for one recipient installation.

    Raises:
        WireError: malformed installation ids.
        CryptoError: malformed recipient key.
    """
    if not is_installation_id(sender_iid):
        raise WireError("sender is not an installation id")
    if len(recipient_identity_pub) != 32:
        raise P.CryptoError("recipient identity key must be 32 bytes")
    inner = wire.encode([VERSION, "sealed", sender_iid, bytes(sender_record), bytes(message)])
    try:
        sealed = P.hpke_seal(recipient_identity_pub, inner, info_for(recipient_iid))
    except ValueError as exc:  # cryptography rejects a malformed public key with ValueError
        raise P.CryptoError(f"HPKE seal failed: {exc}") from None
    return wire.encode([VERSION, sealed])


def unseal(identity_priv: bytes, own_iid: str, payload: bytes) -> Unsealed:
    """Open a sealed-sender payload addressed to this installation.

    Raises:
        WireError: the payload or the inner plaintext is not well formed.
        DecryptError: not for us, or tampered.
    """
    outer = wire.expect_array(wire.decode(payload), VERSION, 2)
    hpke_bytes = wire.expect_bytes(outer[1], None, "sealed bytes")
    inner = P.hpke_open(identity_priv, hpke_bytes, info_for(own_iid))
    o = wire.expect_array(wire.decode(inner), VERSION, 5)
    if o[1] != "sealed" or not is_installation_id(o[2]):
        raise WireError("not a sealed-sender inner layer")
    return Unsealed(o[2], wire.expect_bytes(o[3], None, "sender record"), wire.expect_bytes(o[4], None, "message"))
