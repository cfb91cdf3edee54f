"""Signing and verifying installation statements; the active installation set of an address.

Implements DESIGN.md "Identity" and PROTOCOL.md "Identity statements" (docs/PROTOCOL.md §3):
EIP-191 ``personal_sign`` over the statement text, signer recovery, and the rule that turns an
append-only log of records into the set of active installations.

Signature checking is a small strategy (:class:`Verifier`). :class:`EOAVerifier` (ECDSA recovery,
recovered signer == Address) is the default; smart-account verifiers (Lens account owner/managers,
EIP-1271, EIP-6492) plug in through the same interface later.

eth-account is imported lazily (about 0.7 s), only when a signature is made or checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from bridge.identity.statement import (
    SIGNATURE_LEN,
    BadSignature,
    IdentityError,
    InvalidStatement,
    SignedStatement,
    Statement,
    checksum_address,
)

__all__ = [
    "Verifier",
    "EOAVerifier",
    "EOA",
    "sign_statement",
    "verify",
    "verify_record_for",
    "installations",
]

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@runtime_checkable
class Verifier(Protocol):
    """Decides whether ``signature`` over ``statement``'s text was made by ``statement.address``.

    Implementations raise :class:`BadSignature` (never return False) and must treat the signature as
    hostile bytes.
    """

    def check(self, statement: Statement, text: str, signature: bytes) -> None:
        """Raises:
        BadSignature: the signature is malformed or not by ``statement.address``.
        """
        ...


class EOAVerifier:
    """Externally owned account: EIP-191 recovery must give ``statement.address``.

    ``v`` may be 27/28 (what ``personal_sign`` returns) or 0/1 (some hardware wallets); high-s
    signatures are accepted, as eth-account does, which is why records are de-duplicated by text.
    """

    def check(self, statement: Statement, text: str, signature: bytes) -> None:
        """Raises:
        BadSignature: wrong length, ``v`` not in {0, 1, 27, 28}, r or s out of range, unrecoverable,
            or recovered signer ≠ ``statement.address``.
        """
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
            raise BadSignature(f"signature must be {SIGNATURE_LEN} bytes")
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        v = signature[64]
        if v not in (0, 1, 27, 28):
            raise BadSignature("signature v must be 27 or 28 (or 0 or 1)")
        if not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N):
            raise BadSignature("signature r or s out of range")
        if v < 27:
            signature = signature[:64] + bytes([v + 27])
        from eth_account import Account  # lazy: slow import
        from eth_account.messages import encode_defunct

        try:
            signer = Account.recover_message(encode_defunct(text=text), signature=signature)
        except Exception:  # eth-keys/eth-account raise several types for hostile bytes
            raise BadSignature("signature does not recover to any key") from None
        if signer != statement.address:
            raise BadSignature("statement was not signed by its Address")


#: The default verifier.
EOA: EOAVerifier = EOAVerifier()


def sign_statement(statement: Statement, wallet_private_key: bytes) -> SignedStatement:
    """Sign ``statement.text()`` with EIP-191 ``personal_sign`` (deterministic, RFC 6979).

    Raises:
        IdentityError: the key is not a valid secp256k1 private key, or its address is not
            ``statement.address``.
    """
    if not isinstance(wallet_private_key, bytes) or len(wallet_private_key) != 32:
        raise IdentityError("a wallet private key is 32 bytes")
    if not 0 < int.from_bytes(wallet_private_key, "big") < _SECP256K1_N:
        raise IdentityError("wallet private key out of the secp256k1 range")
    from eth_account import Account  # lazy: slow import
    from eth_account.messages import encode_defunct

    account = Account.from_key(wallet_private_key)
    if account.address != statement.address:
        raise IdentityError("the wallet key does not belong to the statement's Address")
    text = statement.text()
    signed = account.sign_message(encode_defunct(text=text))
    return SignedStatement(text=text, signature=bytes(signed.signature))


def verify(signed: SignedStatement, *, verifier: Verifier | None = None) -> Statement:
    """Parse the text and check the signature; return the statement.

    Raises:
        InvalidStatement: the text does not parse (see :meth:`Statement.parse`).
        BadSignature: the signature is malformed or not by the statement's Address.
    """
    if not isinstance(signed, SignedStatement):
        raise InvalidStatement("expected a SignedStatement")
    statement = Statement.parse(signed.text)
    (verifier or EOA).check(statement, signed.text, signed.signature)
    return statement


def verify_record_for(address: str, record: bytes, *, verifier: Verifier | None = None) -> Statement:
    """What the relay runs before appending ``record`` to ``address``'s identity log.

    Raises:
        IdentityError: ``address`` is not an address.
        InvalidStatement: the record or its text is malformed, or the statement is for another address.
        BadSignature: the signature does not verify.
    """
    address = checksum_address(address)
    statement = verify(SignedStatement.from_record(record), verifier=verifier)
    if statement.address != address:
        raise InvalidStatement("the statement is for another address")
    return statement


def installations(
    address: str, records: Iterable[bytes], *, verifier: Verifier | None = None
) -> dict[str, Statement]:
    """The active installations of ``address`` from its append-only identity log.

    Every record is verified; invalid records and records for another address are skipped, never
    trusted. An installation with any valid revocation is excluded, whatever the order of records and
    whatever the revocation's issue time. Among several authorizations of one installation the latest
    ``issued_at`` wins (ties: the smaller record id, so the result does not depend on order).

    Returns:
        installation id → the authorize :class:`Statement`.

    Raises:
        IdentityError: ``address`` is not an address (records never raise).
    """
    address = checksum_address(address)
    authorized: dict[str, tuple[int, str, Statement]] = {}
    revoked: set[str] = set()
    for record in records:
        try:
            signed = SignedStatement.from_record(record)
            statement = verify(signed, verifier=verifier)
        except IdentityError:
            continue
        if statement.address != address:
            continue
        if statement.action == "revoke":
            revoked.add(statement.installation_id)
            continue
        rid = signed.record_id()
        current = authorized.get(statement.installation_id)
        if (
            current is None
            or statement.issued_at > current[0]
            or (statement.issued_at == current[0] and rid < current[1])
        ):
            authorized[statement.installation_id] = (statement.issued_at, rid, statement)
    return {iid: entry[2] for iid, entry in sorted(authorized.items()) if iid not in revoked}
