"""Sign in with the browser wallet (DESIGN.md "Identity"; issue 4 part 3, issue 8 item 1; PROTOCOL.md §3 and §8).

The bridge prepares an installation statement for an address the user's browser wallet (MetaMask,
Rabby, Rainbow, Coinbase…) holds; the bridge's own sign-in page (``/signin``, :mod:`bridge.api.signin`,
no site script runs there) asks that wallet for EIP-191 ``personal_sign`` on exactly that text after
the user confirmed the address and installation id; the bridge checks the signature, publishes the
record on the relay, rewrites identity.json and switches the running engine to the new address. The
wallet key never leaves the wallet.

Every failure before publishing changes nothing (identity.json, database, relay log): an unknown or
expired statement, a malformed signature, a signature by another account than the prepared one, a
relay that refuses or cannot be reached. A prepared statement is single use.

The previous identity is never revoked automatically: :meth:`WalletSignIn.revoke_previous` does it
when the user confirms it on the page (the bridge holds the previous, generated wallet's key). An
installation of a browser-wallet address is revoked with a revoke statement the wallet signs
(:meth:`WalletSignIn.prepare_revoke`, :meth:`WalletSignIn.complete_revoke`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import identity
from bridge.engine import Engine
from bridge.home import Home
from bridge.keys import Secrets
from bridge.relay.client import RelayError, RelayUnavailable

__all__ = [
    "WalletSignInError",
    "UnknownStatement",
    "ExpiredStatement",
    "MalformedSignature",
    "WrongSigner",
    "PublishFailed",
    "Prepared",
    "PendingStatements",
    "parse_signature",
    "check_signature",
    "WalletSignIn",
    "NothingToRevoke",
    "DEFAULT_TTL",
]

#: How long a prepared statement may be signed (seconds).
DEFAULT_TTL = 300
#: At most this many prepared statements wait at once (the oldest is dropped).
MAX_PENDING = 16

_SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}", re.ASCII)


class WalletSignInError(Exception):
    """A sign-in step failed; nothing was changed. ``reason`` is a stable word for the API."""

    reason = "error"


class UnknownStatement(WalletSignInError):
    """The text is not a statement this bridge prepared (or it was already used)."""

    reason = "unknown"


class ExpiredStatement(WalletSignInError):
    """The prepared statement's time to sign has passed."""

    reason = "expired"


class MalformedSignature(WalletSignInError):
    """The signature is not 65 bytes of hex, or does not recover to any key."""

    reason = "malformed"


class WrongSigner(WalletSignInError):
    """The signature was made by another account than the one the statement was prepared for."""

    reason = "wrong-signer"

    def __init__(self, signer: str, expected: str) -> None:
        super().__init__(f"signed by {signer}, expected {expected}")
        self.signer, self.expected = signer, expected


class PublishFailed(WalletSignInError):
    """The relay refused the record or could not be reached."""

    reason = "relay"


class NothingToRevoke(WalletSignInError):
    """No previous identity whose key this bridge holds, or not the one the user confirmed."""

    reason = "nothing-to-revoke"


@dataclass(frozen=True)
class Prepared:
    """A statement waiting for the wallet's signature."""

    statement: identity.Statement
    text: str
    expires_at: int


class PendingStatements:
    """Prepared statements by exact text, with a time limit; each can be taken once. Thread-safe."""

    def __init__(self, ttl: int = DEFAULT_TTL, clock: Callable[[], float] = time.time, max_pending: int = MAX_PENDING) -> None:
        self.ttl, self.clock, self.max_pending = ttl, clock, max_pending
        self._items: dict[str, Prepared] = {}
        self._lock = threading.Lock()

    def add(self, statement: identity.Statement) -> Prepared:
        text = statement.text()
        prepared = Prepared(statement, text, int(self.clock()) + self.ttl)
        with self._lock:
            now = self.clock()
            for key in [k for k, v in self._items.items() if v.expires_at < now]:
                del self._items[key]
            while len(self._items) >= self.max_pending:
                del self._items[next(iter(self._items))]
            self._items[text] = prepared
        return prepared

    def take(self, text: object) -> Prepared:
        """Remove and return the prepared statement with exactly this text.

        Raises:
            UnknownStatement: never prepared here, already used, or not a string.
            ExpiredStatement: prepared, but its time is over.
        """
        if not isinstance(text, str) or len(text) > identity.MAX_STATEMENT_CHARS:
            raise UnknownStatement("this statement was not prepared by this bridge")
        with self._lock:
            prepared = self._items.pop(text, None)
        if prepared is None:
            raise UnknownStatement("this statement was not prepared by this bridge (or it was already used); start again")
        if self.clock() > prepared.expires_at:
            raise ExpiredStatement("the statement expired before it was signed; start again")
        return prepared

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def parse_signature(value: object) -> bytes:
    """``0x`` + 130 hex digits → 65 bytes.

    Raises:
        MalformedSignature: anything else.
    """
    if not isinstance(value, str) or not _SIGNATURE_RE.fullmatch(value):
        raise MalformedSignature("the signature is not 0x followed by 130 hex digits")
    return bytes.fromhex(value[2:])


def check_signature(prepared: Prepared, signature: bytes, verifier: identity.Verifier | None = None) -> identity.SignedStatement:
    """The signed record, if ``signature`` is the prepared address's EIP-191 signature of its text.

    Raises:
        MalformedSignature: unrecoverable bytes (bad v, r or s out of range…).
        WrongSigner: a valid signature by another account.
    """
    from eth_account import Account  # lazy: slow import
    from eth_account.messages import encode_defunct

    signed = identity.SignedStatement(text=prepared.text, signature=signature)
    try:
        identity.verify(signed, verifier=verifier)  # a smart account (Lens account, EIP-1271/6492) when configured
        return signed
    except identity.BadSignature:
        pass
    v = signature[64]
    fixed = signature[:64] + bytes([v + 27]) if v in (0, 1) else signature
    try:
        signer = Account.recover_message(encode_defunct(text=prepared.text), signature=fixed)
    except Exception:  # eth-keys raises several types for hostile bytes
        raise MalformedSignature("the signature does not recover to any account") from None
    raise WrongSigner(str(signer), prepared.statement.address)


class WalletSignIn:
    """Sign-in and revocation steps over one running engine (PROTOCOL.md §8), for the sign-in page."""

    def __init__(self, engine: Engine, home: Home, secrets: Secrets, *, pending: PendingStatements | None = None) -> None:
        self.engine, self.home, self.secrets = engine, home, secrets
        self.pending = pending or PendingStatements()
        self.pending_revokes = PendingStatements()
        self._lock = threading.Lock()

    def _chain_id(self) -> int:
        return int(self.home.config().get("chain_id") or 1)

    def prepare(self, address: str) -> dict[str, Any]:
        """The installation statement for ``address`` to sign: ``{address, installation_id, text, expires_at}``.

        Raises:
            IdentityError: ``address`` is not an address.
        """
        checked = identity.checksum_address(address)
        local = self.engine.local
        statement = identity.authorize_statement(
            checked, self.engine.installation_id, local.signing_pub, local.identity_pub, chain_id=self._chain_id()
        )
        prepared = self.pending.add(statement)
        return {"address": checked, "installation_id": self.engine.installation_id, "text": prepared.text, "expires_at": prepared.expires_at}

    def _publish(self, address: str, record: bytes) -> None:
        try:
            self.engine.publish_record(address, record)
        except RelayUnavailable as exc:
            raise PublishFailed(f"the relay is unreachable, nothing was changed: {exc}") from None
        except RelayError as exc:
            raise PublishFailed(f"the relay refused the statement, nothing was changed: {exc}") from None

    def complete(self, text: object, signature: object) -> dict[str, Any]:
        """Verify, publish, rewrite identity.json, switch the engine. Never revokes anything.

        Returns ``{address, did, installation_id, previous_address}``.

        Raises:
            UnknownStatement, ExpiredStatement, MalformedSignature, WrongSigner, PublishFailed: nothing changed.
        """
        with self._lock:
            prepared = self.pending.take(text)
            sig = parse_signature(signature)
            signed = check_signature(prepared, sig, self.engine.verifier)
            address = prepared.statement.address
            record = signed.to_record()
            self._publish(address, record)
            # What is queued was written as the previous address: send it under that identity first.
            self.engine.flush_outbox()
            self.home.rewrite_identity(address=address, did=identity.did(address), record=record, wallet="browser")
            previous = self.engine.switch_identity(address, record)
            if previous != address:
                self.engine.fail_outbox_from(previous, f"not sent: this bridge now speaks for {address}")
        return {"address": address, "did": identity.did(address), "installation_id": self.engine.installation_id, "previous_address": previous}

    # --- revocations (each a separate step the user confirms on the sign-in page) ------------------

    def active(self, address: str) -> dict[str, identity.Statement]:
        """The active installations of ``address`` on the relay (RelayUnavailable, RelayError pass through)."""
        return identity.installations(address, self.engine.relay.identity(address), verifier=self.engine.verifier)

    def previous_identity(self) -> str | None:
        """The generated wallet's address, when this installation still speaks for it and the bridge
        now acts for another address (so only the user's confirmation is missing to revoke it)."""
        held = self.secrets.address
        if held is None or held == self.engine.address:
            return None
        try:
            return held if self.engine.installation_id in self.active(held) else None
        except (RelayUnavailable, RelayError):
            return None

    def revoke_previous(self, confirmed: object) -> dict[str, Any]:
        """Revoke this installation under the previous (generated) address, signed with its key.

        ``confirmed`` must be that address, as the page showed it to the user.

        Raises:
            NothingToRevoke: no such previous identity, or another address was confirmed.
            PublishFailed: the relay refused or is unreachable.
        """
        with self._lock:
            previous = self.previous_identity()
            if previous is None or not isinstance(confirmed, str) or confirmed.lower() != previous.lower():
                raise NothingToRevoke("there is no previous identity to revoke here (or another one was confirmed)")
            signed = identity.sign_statement(
                identity.revoke_statement(previous, self.engine.installation_id, chain_id=self._chain_id()), self.secrets.wallet_key
            )
            self._publish(previous, signed.to_record())
        return {"revoked": self.engine.installation_id, "address": previous}

    def prepare_revoke(self, installation_id: object) -> dict[str, Any]:
        """A revoke statement for an installation of the current address, for its wallet to sign.

        Raises:
            NothingToRevoke: not an installation id.
        """
        from bridge.protocol.ids import is_installation_id

        if not isinstance(installation_id, str) or not is_installation_id(installation_id):
            raise NothingToRevoke("not an installation id")
        statement = identity.revoke_statement(self.engine.address, installation_id, chain_id=self._chain_id())
        prepared = self.pending_revokes.add(statement)
        return {"address": statement.address, "installation_id": installation_id, "text": prepared.text, "expires_at": prepared.expires_at}

    def complete_revoke(self, text: object, signature: object) -> dict[str, Any]:
        """Verify the wallet's signature of a prepared revoke statement and publish it.

        Raises:
            UnknownStatement, ExpiredStatement, MalformedSignature, WrongSigner, PublishFailed: nothing changed.
        """
        with self._lock:
            prepared = self.pending_revokes.take(text)
            sig = parse_signature(signature)
            signed = check_signature(prepared, sig, self.engine.verifier)
            self._publish(prepared.statement.address, signed.to_record())
        return {"revoked": prepared.statement.installation_id, "address": prepared.statement.address}
