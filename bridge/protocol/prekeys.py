"""Prekey wire structures (PROTOCOL.md §4): what an installation uploads and what a claim returns.

Encodings (canonical CBOR arrays, first element a tag):

* signed prekey   ``[kind, id, pub, sig]`` with ``sig = Ed25519(signing_key, encode([1, "prekey", kind, id, pub]))``
  where ``kind`` is ``"x25519-spk"``, ``"mlkem768-otpk"`` or ``"mlkem768-lrpk"``;
* one-time X25519 prekey ``["x25519-otpk", id, pub]`` (unsigned, as in X3DH);
* upload  ``[1, "prekeys", installation_id, issued_at, spk, [otpk…], [pq otpk…], pq lrpk]``
  carried as ``[1, upload_bytes, Ed25519 signature over upload_bytes]``;
* bundle (claim answer) ``[1, "bundle", installation_id, spk, otpk | null, pqpk]`` where ``pqpk`` is a
  one-time ML-KEM prekey when one is left, else the last-resort one.

The relay checks the upload signature; the claimer re-checks every prekey signature against the
signing key from the verified identity statement, so a relay cannot substitute keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import is_installation_id
from bridge.protocol.wire import WireError

__all__ = [
    "SPK",
    "PQ_OTPK",
    "PQ_LRPK",
    "OTPK",
    "MAX_PREKEYS_PER_UPLOAD",
    "SignedPrekey",
    "OneTimePrekey",
    "PrekeyUpload",
    "Bundle",
    "sign_prekey",
]

SPK = "x25519-spk"
PQ_OTPK = "mlkem768-otpk"
PQ_LRPK = "mlkem768-lrpk"
OTPK = "x25519-otpk"
MAX_PREKEYS_PER_UPLOAD = 200
_PUB_LEN = {SPK: 32, PQ_OTPK: P.MLKEM768_PUBLIC_LEN, PQ_LRPK: P.MLKEM768_PUBLIC_LEN, OTPK: 32}
_MAX_ID = 2**32 - 1


def _prekey_tbs(kind: str, pid: int, pub: bytes) -> bytes:
    return wire.encode([1, "prekey", kind, pid, pub])


@dataclass(frozen=True)
class SignedPrekey:
    kind: str
    id: int
    pub: bytes
    sig: bytes

    def to_wire(self) -> list[Any]:
        return [self.kind, self.id, self.pub, self.sig]

    @classmethod
    def from_wire(cls, obj: Any, kinds: tuple[str, ...]) -> "SignedPrekey":
        if not isinstance(obj, list) or len(obj) != 4 or obj[0] not in kinds:
            raise WireError(f"expected a signed prekey of kind {'/'.join(kinds)}")
        kind = obj[0]
        return cls(
            kind,
            wire.expect_int(obj[1], "prekey id", 0, _MAX_ID),
            wire.expect_bytes(obj[2], _PUB_LEN[kind], "prekey public key"),
            wire.expect_bytes(obj[3], 64, "prekey signature"),
        )

    def verify(self, signing_pub: bytes) -> None:
        """Raises:
        InvalidSignature: the prekey is not signed by ``signing_pub``.
        """
        P.ed25519_verify(signing_pub, self.sig, _prekey_tbs(self.kind, self.id, self.pub))


def sign_prekey(signing_priv: bytes, kind: str, pid: int, pub: bytes) -> SignedPrekey:
    return SignedPrekey(kind, pid, pub, P.ed25519_sign(signing_priv, _prekey_tbs(kind, pid, pub)))


@dataclass(frozen=True)
class OneTimePrekey:
    id: int
    pub: bytes

    def to_wire(self) -> list[Any]:
        return [OTPK, self.id, self.pub]

    @classmethod
    def from_wire(cls, obj: Any) -> "OneTimePrekey":
        if not isinstance(obj, list) or len(obj) != 3 or obj[0] != OTPK:
            raise WireError("expected a one-time X25519 prekey")
        return cls(wire.expect_int(obj[1], "prekey id", 0, _MAX_ID), wire.expect_bytes(obj[2], 32, "prekey public key"))


@dataclass(frozen=True)
class PrekeyUpload:
    installation_id: str
    issued_at: int
    spk: SignedPrekey
    otpks: tuple[OneTimePrekey, ...] = field(default_factory=tuple)
    pq_otpks: tuple[SignedPrekey, ...] = field(default_factory=tuple)
    pq_lrpk: SignedPrekey | None = None

    def body(self) -> bytes:
        return wire.encode(
            [
                1,
                "prekeys",
                self.installation_id,
                self.issued_at,
                self.spk.to_wire(),
                [k.to_wire() for k in self.otpks],
                [k.to_wire() for k in self.pq_otpks],
                self.pq_lrpk.to_wire() if self.pq_lrpk else None,
            ]
        )

    def sign(self, signing_priv: bytes) -> bytes:
        body = self.body()
        return wire.encode([1, body, P.ed25519_sign(signing_priv, body)])

    @classmethod
    def parse_signed(cls, data: bytes) -> tuple["PrekeyUpload", bytes, bytes]:
        """Parse ``[1, body, sig]``; returns (upload, body, sig). The caller verifies ``sig``.

        Raises:
            WireError: malformed.
        """
        outer = wire.expect_array(wire.decode(data), 1, 3)
        body = wire.expect_bytes(outer[1], None, "upload body")
        sig = wire.expect_bytes(outer[2], 64, "upload signature")
        b = wire.decode(body)
        if not isinstance(b, list) or len(b) != 8 or type(b[0]) is not int or b[0] != 1 or b[1] != "prekeys":
            raise WireError("expected a prekey upload")
        if not is_installation_id(b[2]):
            raise WireError("bad installation id")
        for name, lst in (("one-time prekeys", b[5]), ("ML-KEM one-time prekeys", b[6])):
            if not isinstance(lst, list) or len(lst) > MAX_PREKEYS_PER_UPLOAD:
                raise WireError(f"{name}: at most {MAX_PREKEYS_PER_UPLOAD} per upload")
        upload = cls(
            installation_id=b[2],
            issued_at=wire.expect_int(b[3], "issued_at"),
            spk=SignedPrekey.from_wire(b[4], (SPK,)),
            otpks=tuple(OneTimePrekey.from_wire(k) for k in b[5]),
            pq_otpks=tuple(SignedPrekey.from_wire(k, (PQ_OTPK,)) for k in b[6]),
            pq_lrpk=None if b[7] is None else SignedPrekey.from_wire(b[7], (PQ_LRPK,)),
        )
        return upload, body, sig

    def verify_all(self, signing_pub: bytes, sig: bytes) -> None:
        """Check the upload signature and every prekey signature.

        Raises:
            InvalidSignature
        """
        P.ed25519_verify(signing_pub, sig, self.body())
        self.spk.verify(signing_pub)
        for k in self.pq_otpks:
            k.verify(signing_pub)
        if self.pq_lrpk:
            self.pq_lrpk.verify(signing_pub)


@dataclass(frozen=True)
class Bundle:
    """What a claim returns: everything needed to start a PQXDH session with one installation."""

    installation_id: str
    spk: SignedPrekey
    otpk: OneTimePrekey | None
    pqpk: SignedPrekey

    def encode(self) -> bytes:
        return wire.encode(
            [1, "bundle", self.installation_id, self.spk.to_wire(), self.otpk.to_wire() if self.otpk else None, self.pqpk.to_wire()]
        )

    @classmethod
    def decode(cls, data: bytes) -> "Bundle":
        b = wire.decode(data)
        if not isinstance(b, list) or len(b) != 6 or type(b[0]) is not int or b[0] != 1 or b[1] != "bundle" or not is_installation_id(b[2]):
            raise WireError("expected a prekey bundle")
        return cls(
            b[2],
            SignedPrekey.from_wire(b[3], (SPK,)),
            None if b[4] is None else OneTimePrekey.from_wire(b[4]),
            SignedPrekey.from_wire(b[5], (PQ_OTPK, PQ_LRPK)),
        )

    def verify(self, signing_pub: bytes) -> None:
        """Raises:
        InvalidSignature: the signed prekey or the ML-KEM prekey is not signed by the installation.
        """
        self.spk.verify(signing_pub)
        self.pqpk.verify(signing_pub)
