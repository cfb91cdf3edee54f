"""Parley sessions: PQXDH + Double Ratchet, and the session messages on the wire
(docs/PROTOCOL.md §5.4).

Messages are canonical CBOR arrays whose first element is the protocol version::

    PreKey message  [1, "prekey", sid(16), ik_A(32), ek_A(32), spk_id, otpk_id | null,
                     pqpk_kind, pqpk_id, kem_ct(1088), header(bytes), ciphertext(bytes)]
    normal message  [1, "msg", sid(16), header(bytes), ciphertext(bytes)]

``header`` is the encoded Double Ratchet header ``[dh_pub, pn, n]`` and ``ciphertext`` is
``AES-256-CBC ‖ HMAC-SHA256 tag(32)`` with ``tag = HMAC(auth_key, AD ‖ header ‖ cbc)``.
The initiator sends PreKey messages until it has decrypted any reply.

All functions are pure: a :class:`Session` is immutable, and a failing call raises and leaves
the caller holding its old session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.crypto import DuplicateMessage, SessionError, TooManySkipped
from bridge.crypto import pqxdh, ratchet
from bridge.crypto import primitives as P
from bridge.crypto.ratchet import RatchetState, evolve
from bridge.protocol import wire
from bridge.protocol.ids import is_installation_id
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, Bundle
from bridge.protocol.wire import WireError

__all__ = [
    "VERSION",
    "SessionError",
    "DuplicateMessage",
    "TooManySkipped",
    "LocalIdentity",
    "RemoteInstallation",
    "PendingPreKey",
    "Session",
    "MessageInfo",
    "initiate",
    "encrypt",
    "peek",
    "accept",
    "decrypt",
]

VERSION = 1
_MAX_ID = 2**32 - 1
#: Upper bound on a session message we agree to parse (the envelope limit).
MAX_MESSAGE = 1024 * 1024 + 4096


@dataclass(frozen=True)
class LocalIdentity:
    """This installation's keys."""

    installation_id: str
    signing_priv: bytes
    signing_pub: bytes
    identity_priv: bytes
    identity_pub: bytes


@dataclass(frozen=True)
class RemoteInstallation:
    """A peer installation, taken from its verified identity statement."""

    installation_id: str
    signing_pub: bytes
    identity_pub: bytes


@dataclass(frozen=True)
class PendingPreKey:
    """The PQXDH fields an initiator repeats in every message until it receives a reply."""

    identity_pub: bytes
    ephemeral_pub: bytes
    spk_id: int
    otpk_id: int | None
    pqpk_kind: str
    pqpk_id: int
    kem_ct: bytes

    def to_wire(self) -> list[Any]:
        return [self.identity_pub, self.ephemeral_pub, self.spk_id, self.otpk_id, self.pqpk_kind, self.pqpk_id, self.kem_ct]

    @classmethod
    def from_wire(cls, o: Any) -> "PendingPreKey":
        """Raises:
        WireError: malformed.
        """
        if not isinstance(o, list) or len(o) != 7:
            raise WireError("pending prekey fields")
        if o[4] not in (PQ_OTPK, PQ_LRPK):
            raise WireError("unknown ML-KEM prekey kind")
        return cls(
            wire.expect_bytes(o[0], 32, "identity key"),
            wire.expect_bytes(o[1], 32, "ephemeral key"),
            wire.expect_int(o[2], "spk id", 0, _MAX_ID),
            None if o[3] is None else wire.expect_int(o[3], "otpk id", 0, _MAX_ID),
            o[4],
            wire.expect_int(o[5], "pqpk id", 0, _MAX_ID),
            wire.expect_bytes(o[6], P.MLKEM768_CIPHERTEXT_LEN, "KEM ciphertext"),
        )


@dataclass(frozen=True)
class Session:
    """One Double Ratchet session with one remote installation, found by ``(remote_iid, sid)``.

    ``pending`` is set on the initiator until a reply has been decrypted (then its messages are
    PreKey messages); ``reply_received`` is True once the peer has provably got the session
    (always True on the responder).
    """

    remote_iid: str
    sid: bytes
    ad: bytes
    initiator: bool
    reply_received: bool
    pending: PendingPreKey | None
    ratchet: RatchetState

    def to_bytes(self) -> bytes:
        """Versioned canonical CBOR ``[1, "session", remote_iid, sid, ad, initiator, reply_received,
        pending | null, ratchet_state]``."""
        return wire.encode(
            [
                VERSION,
                "session",
                self.remote_iid,
                self.sid,
                self.ad,
                self.initiator,
                self.reply_received,
                None if self.pending is None else self.pending.to_wire(),
                self.ratchet.to_wire(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Session":
        """Raises:
        SessionError: not a well-formed version-1 session.
        """
        try:
            o = wire.expect_array(wire.decode(data), VERSION, 9)
            if o[1] != "session" or not is_installation_id(o[2]):
                raise WireError("not a session")
            if not isinstance(o[5], bool) or not isinstance(o[6], bool):
                raise WireError("flags")
            pending = None if o[7] is None else PendingPreKey.from_wire(o[7])
            s = cls(
                remote_iid=o[2],
                sid=wire.expect_bytes(o[3], pqxdh.SID_LEN, "sid"),
                ad=wire.expect_bytes(o[4], pqxdh.AD_LEN, "ad"),
                initiator=o[5],
                reply_received=o[6],
                pending=pending,
                ratchet=RatchetState.from_wire(o[8]),
            )
        except WireError as exc:
            raise SessionError(f"bad session: {exc}") from None
        if s.pending is not None and (not s.initiator or s.reply_received):
            raise SessionError("bad session: inconsistent flags")
        return s


@dataclass(frozen=True)
class MessageInfo:
    """What :func:`peek` reads from a session message without any key."""

    sid: bytes
    is_prekey: bool
    identity_pub: bytes | None
    spk_id: int | None
    otpk_id: int | None
    pqpk_kind: str | None
    pqpk_id: int | None


@dataclass(frozen=True)
class _Parsed:
    info: MessageInfo
    ephemeral_pub: bytes | None
    kem_ct: bytes | None
    header: bytes
    ciphertext: bytes


def _parse(message: bytes) -> _Parsed:
    try:
        o = wire.decode(message, max_size=MAX_MESSAGE)
        if not isinstance(o, list) or len(o) < 2 or type(o[0]) is not int or o[0] != VERSION:
            raise WireError("not a version-1 session message")
        if o[1] == "msg":
            wire.expect_array(o, VERSION, 5)
            sid = wire.expect_bytes(o[2], pqxdh.SID_LEN, "sid")
            return _Parsed(
                MessageInfo(sid, False, None, None, None, None, None),
                None,
                None,
                wire.expect_bytes(o[3], None, "header"),
                wire.expect_bytes(o[4], None, "ciphertext"),
            )
        if o[1] == "prekey":
            wire.expect_array(o, VERSION, 12)
            sid = wire.expect_bytes(o[2], pqxdh.SID_LEN, "sid")
            pend = PendingPreKey.from_wire(o[3:10])
            return _Parsed(
                MessageInfo(sid, True, pend.identity_pub, pend.spk_id, pend.otpk_id, pend.pqpk_kind, pend.pqpk_id),
                pend.ephemeral_pub,
                pend.kem_ct,
                wire.expect_bytes(o[10], None, "header"),
                wire.expect_bytes(o[11], None, "ciphertext"),
            )
        raise WireError("unknown session message type")
    except WireError as exc:
        raise SessionError(f"bad session message: {exc}") from None


def peek(message: bytes) -> MessageInfo:
    """Parse a session message's routing fields without keys.

    Raises:
        SessionError: malformed message.
    """
    return _parse(message).info


def initiate(
    local: LocalIdentity,
    remote: RemoteInstallation,
    bundle: Bundle,
    *,
    ephemeral_priv: bytes | None = None,
    ratchet_priv: bytes | None = None,
) -> Session:
    """Start a session from a claimed bundle (PQXDH §3.3, then RatchetInitAlice with SPK_B).

    Raises:
        InvalidSignature: a bundle signature does not verify with ``remote.signing_pub``.
        SessionError: the bundle is for another installation, or ``remote`` is inconsistent.
        CryptoError: malformed keys or an all-zero DH output.
    """
    keys = pqxdh.initiate(
        local.identity_priv,
        local.identity_pub,
        local.installation_id,
        remote.installation_id,
        remote.signing_pub,
        remote.identity_pub,
        bundle,
        ephemeral_priv=ephemeral_priv,
    )
    state = ratchet.init_alice(keys.sk, keys.spk_pub, ratchet_priv=ratchet_priv)
    pending = PendingPreKey(
        local.identity_pub, keys.ephemeral_pub, keys.spk_id, keys.otpk_id, keys.pqpk_kind, keys.pqpk_id, keys.kem_ct
    )
    return Session(remote.installation_id, keys.sid, keys.ad, True, False, pending, state)


def encrypt(session: Session, plaintext: bytes) -> tuple[Session, bytes]:
    """RatchetEncrypt and wrap as a PreKey message (while ``pending``) or a normal message.

    Raises:
        SessionError: no sending chain or counter exhausted.
    """
    state, header, ct = ratchet.encrypt(session.ratchet, plaintext, session.ad)
    p = session.pending
    if p is not None:
        msg = wire.encode(
            [VERSION, "prekey", session.sid, *p.to_wire(), header, ct]
        )
    else:
        msg = wire.encode([VERSION, "msg", session.sid, header, ct])
    return evolve(session, ratchet=state), msg


def accept(
    local: LocalIdentity,
    remote: RemoteInstallation,
    message: bytes,
    *,
    spk_priv: bytes,
    otpk_priv: bytes | None,
    pqpk_seed: bytes,
    ratchet_priv: bytes | None = None,
) -> tuple[Session, bytes]:
    """Create the responder's session from a PreKey message (PQXDH §3.4, RatchetInitBob with the
    signed prekey pair) and decrypt its payload. ``ratchet_priv`` injects the new ratchet key pair.

    The caller looks up the private keys named by :func:`peek` and deletes a used one-time
    prekey only after this returns.

    Raises:
        SessionError: not a PreKey message, identity key is not ``remote.identity_pub``, the remote
            is inconsistent, the one-time prekey presence does not match, or the sid is wrong.
        DecryptError: authentication failed (wrong keys or tampering).
        TooManySkipped: the first message claims too many skipped keys.
        CryptoError: malformed keys or all-zero DH.
    """
    p = _parse(message)
    info = p.info
    if (
        not info.is_prekey
        or p.ephemeral_pub is None
        or p.kem_ct is None
        or info.spk_id is None
        or info.pqpk_kind is None
        or info.pqpk_id is None
    ):
        raise SessionError("not a PreKey message")
    pqxdh.check_installation(remote.installation_id, remote.signing_pub, remote.identity_pub)
    if info.identity_pub != remote.identity_pub:
        raise SessionError("PreKey message identity key is not the sender's")
    if (info.otpk_id is None) != (otpk_priv is None):
        raise SessionError("one-time prekey presence does not match the message")
    sk, ad, sid = pqxdh.respond(
        local.identity_priv,
        local.identity_pub,
        local.installation_id,
        remote.installation_id,
        remote.identity_pub,
        p.ephemeral_pub,
        p.kem_ct,
        info.spk_id,
        info.otpk_id,
        info.pqpk_kind,
        info.pqpk_id,
        spk_priv=spk_priv,
        otpk_priv=otpk_priv,
        pqpk_seed=pqpk_seed,
    )
    if sid != info.sid:
        raise SessionError("session id does not match the PreKey transcript")
    state = ratchet.init_bob(sk, spk_priv)
    state, pt = ratchet.decrypt(state, p.header, p.ciphertext, ad, ratchet_priv=ratchet_priv)
    return Session(remote.installation_id, sid, ad, False, True, None, state), pt


def _check_prekey_fields(session: Session, p: _Parsed) -> None:
    """A repeated PreKey message must carry exactly the PQXDH fields that made this session."""
    i = p.info
    if p.ephemeral_pub is None or p.kem_ct is None or i.pqpk_kind is None or i.spk_id is None or i.pqpk_id is None:
        raise SessionError("PreKey message without its PQXDH fields")
    ik_a = session.ad[len(pqxdh.AD_PREFIX) : len(pqxdh.AD_PREFIX) + 32]
    sid = pqxdh.session_id(session.ad, p.ephemeral_pub, p.kem_ct, i.spk_id, i.otpk_id, i.pqpk_kind, i.pqpk_id)
    if i.identity_pub != ik_a or sid != session.sid:
        raise SessionError("PreKey fields do not match this session")


def decrypt(session: Session, message: bytes, *, ratchet_priv: bytes | None = None) -> tuple[Session, bytes]:
    """Decrypt a PreKey or normal message of an existing session (RatchetDecrypt).

    Raises:
        SessionError: malformed, or the message belongs to another session.
        DuplicateMessage: replay or redelivery.
        TooManySkipped: too many skipped keys.
        DecryptError: tampered or not for this session.
    """
    p = _parse(message)
    if p.info.sid != session.sid:
        raise SessionError("message belongs to another session")
    if p.info.is_prekey:
        if session.initiator:
            raise SessionError("the initiator never receives PreKey messages")
        _check_prekey_fields(session, p)
    state, pt = ratchet.decrypt(session.ratchet, p.header, p.ciphertext, session.ad, ratchet_priv=ratchet_priv)
    return evolve(session, ratchet=state, pending=None, reply_received=True), pt
