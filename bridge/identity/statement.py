"""Installation statements: the exact text a wallet signs, and its record encoding.

Implements DESIGN.md "Identity" and PROTOCOL.md "Identity statements" (docs/PROTOCOL.md §3):
a wallet authorizes (or revokes) an installation by signing, with EIP-191 ``personal_sign``, a fixed,
line-oriented, human-readable statement. This module builds, formats and *strictly* parses that text;
a text is accepted only if it is byte for byte the canonical rendering of its own fields.

Nothing here imports eth-account (slow to import); the EIP-55 checksum uses ``eth_hash`` lazily.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from bridge.protocol import wire
from bridge.protocol.ids import installation_id as _installation_id

__all__ = [
    "DOMAIN",
    "ACTIONS",
    "MAX_STATEMENT_CHARS",
    "MAX_RECORD_BYTES",
    "SIGNATURE_LEN",
    "MAX_SIGNATURE_LEN",
    "RECORD_TAG",
    "IdentityError",
    "InvalidStatement",
    "BadSignature",
    "Statement",
    "SignedStatement",
    "checksum_address",
    "did",
    "address_from_did",
    "authorize_statement",
    "revoke_statement",
    "format_time",
    "parse_time",
]

DOMAIN: Final = "parley"
#: Statement actions, as the ``Statement.action`` field names them.
ACTIONS: Final = ("authorize", "revoke")
#: Longest statement text accepted anywhere (a real one is about 470 characters).
MAX_STATEMENT_CHARS: Final = 1024
#: Largest encoded record accepted by :meth:`SignedStatement.from_record`.
MAX_RECORD_BYTES: Final = 8192
#: An EIP-191 signature is r(32) ‖ s(32) ‖ v(1).
SIGNATURE_LEN: Final = 65
#: Smart-account signatures (EIP-1271 with several owners, EIP-6492 wrapped with deploy calldata) are longer.
MAX_SIGNATURE_LEN: Final = 4096
#: Second element of the record array.
RECORD_TAG: Final = "stmt"

_MAX_CHAIN_ID: Final = 2**63 - 1
_MAX_ISSUED_AT: Final = 253402300799  # 9999-12-31T23:59:59Z

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
_HEX32_LOWER = re.compile(r"[0-9a-f]{32}", re.ASCII)
_HEX64_LOWER = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CHAIN_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)

_ACTION_WORDS: Final = {"authorize": "authorize-installation", "revoke": "revoke-installation"}
_HEADLINES: Final = {
    "authorize": f"{DOMAIN} wants you to authorize an installation for your account:",
    "revoke": f"{DOMAIN} wants you to revoke an installation for your account:",
}


class IdentityError(ValueError):
    """Base class of every identity failure."""


class InvalidStatement(IdentityError):
    """Statement text or record that does not parse, has an invalid field, or whose installation id
    is not the hash of its keys."""


class BadSignature(IdentityError):
    """A malformed signature, or one whose recovered signer is not the statement's address."""


# --- addresses ---------------------------------------------------------------

def _keccak256(data: bytes) -> bytes:
    from eth_hash.auto import keccak  # lazy: keep `import bridge.identity` cheap

    return bytes(keccak(data))


def checksum_address(value: str) -> str:
    """Return the EIP-55 checksummed form of an EVM address.

    Accepts ``0x`` + 40 hex digits in all-lowercase, all-uppercase or correctly checksummed mixed case.

    Raises:
        IdentityError: not a string, not exactly ``0x`` + 40 ASCII hex digits, or mixed case with a
            wrong EIP-55 checksum.
    """
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        raise IdentityError("an address must be 0x followed by 40 hex digits")
    digits = value[2:]
    lower = digits.lower()
    digest = _keccak256(lower.encode("ascii")).hex()
    checked = "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))
    if digits != lower and digits != digits.upper() and value != checked:
        raise IdentityError("address has an invalid EIP-55 checksum")
    return checked


def did(address: str) -> str:
    """``did:pkh:eip155:1:<checksummed address>`` (DESIGN.md "Identity").

    Raises:
        IdentityError: not an address.
    """
    return f"did:pkh:eip155:1:{checksum_address(address)}"


def address_from_did(value: str) -> str:
    """Inverse of :func:`did`: the checksummed address of ``did:pkh:eip155:1:<address>``.

    Raises:
        IdentityError: any other form (other chain, other method, bad address).
    """
    prefix = "did:pkh:eip155:1:"
    if not isinstance(value, str) or not value.startswith(prefix):
        raise IdentityError("expected did:pkh:eip155:1:<address>")
    address = value[len(prefix):]
    checked = checksum_address(address)
    if checked != address:
        raise IdentityError("the address in a did:pkh must be checksummed")
    return checked


# --- time --------------------------------------------------------------------

def format_time(ts: int) -> str:
    """RFC 3339 UTC with whole seconds: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_time(text: str) -> int:
    """Inverse of :func:`format_time`; only that exact canonical form is accepted.

    Raises:
        InvalidStatement: any other form, or an impossible date/time (incl. leap second 60).
    """
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise InvalidStatement("Issued At must be YYYY-MM-DDTHH:MM:SSZ")
    try:
        parsed = time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise InvalidStatement("Issued At is not a valid date and time") from None
    ts = calendar.timegm(parsed)
    if not 0 <= ts <= _MAX_ISSUED_AT or format_time(ts) != text:
        raise InvalidStatement("Issued At is not a canonical UTC time")
    return ts


# --- statements --------------------------------------------------------------

def _check_hex(value: Any, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidStatement(f"{name} must be lowercase hex of the right length")
    return value


@dataclass(frozen=True)
class Statement:
    """One authorization or revocation of an installation by a wallet (PROTOCOL.md "Identity statements").

    Construction validates every field, so an invalid ``Statement`` cannot exist.

    Raises:
        InvalidStatement: (on construction) any invalid field; for ``authorize`` also an installation id
            that is not ``installation_id(signing_key, identity_key)``.
    """

    action: str
    address: str
    chain_id: int
    installation_id: str
    signing_key: bytes | None
    identity_key: bytes | None
    issued_at: int
    nonce: str

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InvalidStatement("action must be 'authorize' or 'revoke'")
        try:
            checked = checksum_address(self.address)
        except IdentityError as exc:
            raise InvalidStatement(str(exc)) from None
        if checked != self.address:
            raise InvalidStatement("address must be written in EIP-55 checksummed form")
        if not isinstance(self.chain_id, int) or isinstance(self.chain_id, bool) or not 1 <= self.chain_id <= _MAX_CHAIN_ID:
            raise InvalidStatement(f"chain id must be an integer in [1, {_MAX_CHAIN_ID}]")
        _check_hex(self.installation_id, _HEX32_LOWER, "installation id")
        _check_hex(self.nonce, _HEX32_LOWER, "nonce")
        if not isinstance(self.issued_at, int) or isinstance(self.issued_at, bool) or not 0 <= self.issued_at <= _MAX_ISSUED_AT:
            raise InvalidStatement("issued_at must be a unix time between 1970 and 9999")
        if self.action == "authorize":
            for name, key in (("signing key", self.signing_key), ("identity key", self.identity_key)):
                if not isinstance(key, bytes) or len(key) != 32:
                    raise InvalidStatement(f"an authorization needs a 32-byte {name}")
            if self.signing_key is None or self.identity_key is None:  # narrowed by the loop above
                raise InvalidStatement("an authorization needs both installation keys")
            if _installation_id(self.signing_key, self.identity_key) != self.installation_id:
                raise InvalidStatement("installation id is not the hash of the installation keys")
        elif self.signing_key is not None or self.identity_key is not None:
            raise InvalidStatement("a revocation carries no installation keys")

    def text(self) -> str:
        """The exact text the wallet signs: lines joined by LF, no trailing newline."""
        lines = [
            _HEADLINES[self.action],
            self.address,
            "",
            f"Domain: {DOMAIN}",
            f"Action: {_ACTION_WORDS[self.action]}",
            f"Address: {self.address}",
            f"Chain ID: {self.chain_id}",
            f"Installation ID: {self.installation_id}",
        ]
        if self.action == "authorize":
            if self.signing_key is None or self.identity_key is None:
                raise InvalidStatement("an authorization needs both installation keys")
            lines.append(f"Signing Key: ed25519:{self.signing_key.hex()}")
            lines.append(f"Identity Key: x25519:{self.identity_key.hex()}")
        lines.append(f"Issued At: {format_time(self.issued_at)}")
        lines.append(f"Nonce: {self.nonce}")
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> Statement:
        """Parse a statement text; accept it only if it is exactly the canonical rendering of its fields.

        Raises:
            InvalidStatement: too long, not ASCII, CR or any other control character, wrong line count
                or order, wrong domain, unknown action, non-checksummed address, bad field, installation id
                not matching the keys, or any deviation from :meth:`text`.
        """
        if not isinstance(text, str):
            raise InvalidStatement("statement text must be a string")
        if len(text) > MAX_STATEMENT_CHARS:
            raise InvalidStatement(f"statement text longer than {MAX_STATEMENT_CHARS} characters")
        if not text.isascii():
            raise InvalidStatement("statement text must be ASCII")
        if any(ord(c) < 0x20 and c != "\n" or c == "\x7f" for c in text):
            raise InvalidStatement("statement text contains a control character (only LF separates lines)")
        lines = text.split("\n")
        action = next((a for a, h in _HEADLINES.items() if lines[0] == h), None)
        if action is None:
            raise InvalidStatement("unknown first line (wrong domain or action)")
        names = ["Domain", "Action", "Address", "Chain ID", "Installation ID"]
        if action == "authorize":
            names += ["Signing Key", "Identity Key"]
        names += ["Issued At", "Nonce"]
        if len(lines) != 3 + len(names):
            raise InvalidStatement(f"a {action} statement has exactly {3 + len(names)} lines")
        if lines[2] != "":
            raise InvalidStatement("the third line must be empty")
        fields: dict[str, str] = {}
        for name, line in zip(names, lines[3:]):
            prefix = f"{name}: "
            if not line.startswith(prefix):
                raise InvalidStatement(f"expected the line '{name}: …'")
            fields[name] = line[len(prefix):]
        if fields["Domain"] != DOMAIN:
            raise InvalidStatement(f"domain must be {DOMAIN!r}")
        if fields["Action"] != _ACTION_WORDS[action]:
            raise InvalidStatement("the Action line does not match the first line")
        if lines[1] != fields["Address"]:
            raise InvalidStatement("the address on line 2 differs from the Address line")
        if not _CHAIN_ID.fullmatch(fields["Chain ID"]):
            raise InvalidStatement("Chain ID must be a positive decimal integer without leading zeros")
        signing_key = identity_key = None
        if action == "authorize":
            signing_key = bytes.fromhex(_key_hex(fields["Signing Key"], "ed25519:", "Signing Key"))
            identity_key = bytes.fromhex(_key_hex(fields["Identity Key"], "x25519:", "Identity Key"))
        statement = cls(
            action=action,
            address=fields["Address"],
            chain_id=int(fields["Chain ID"]),
            installation_id=fields["Installation ID"],
            signing_key=signing_key,
            identity_key=identity_key,
            issued_at=parse_time(fields["Issued At"]),
            nonce=fields["Nonce"],
        )
        if statement.text() != text:  # belt and braces: only the canonical rendering is accepted
            raise InvalidStatement("statement text is not in canonical form")
        return statement


def _key_hex(value: str, prefix: str, name: str) -> str:
    if not value.startswith(prefix) or not _HEX64_LOWER.fullmatch(value[len(prefix):]):
        raise InvalidStatement(f"{name} must be {prefix}<64 lowercase hex digits>")
    return value[len(prefix):]


@dataclass(frozen=True)
class SignedStatement:
    """A statement text and its signature (65-byte EIP-191 for a wallet key; longer for smart accounts:
    EIP-1271, EIP-6492), as stored in an address's identity log.

    Construction checks only the shapes; :func:`bridge.identity.verify` checks the rest.

    Raises:
        InvalidStatement: (on construction) text not a string or too long, signature not 65–4096 bytes.
    """

    text: str
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or len(self.text) > MAX_STATEMENT_CHARS:
            raise InvalidStatement(f"statement text must be a string of at most {MAX_STATEMENT_CHARS} characters")
        if not isinstance(self.signature, bytes) or not SIGNATURE_LEN <= len(self.signature) <= MAX_SIGNATURE_LEN:
            raise InvalidStatement(f"signature must be {SIGNATURE_LEN} to {MAX_SIGNATURE_LEN} bytes")

    def to_record(self) -> bytes:
        """Canonical CBOR ``[1, "stmt", text, signature]``."""
        return wire.encode([1, RECORD_TAG, self.text, self.signature])

    @classmethod
    def from_record(cls, data: bytes) -> SignedStatement:
        """Decode a record produced by :meth:`to_record`.

        Raises:
            InvalidStatement: not bytes, too large, not canonical CBOR, wrong shape, version or tag.
        """
        try:
            obj = wire.decode(data, max_size=MAX_RECORD_BYTES)
        except wire.WireError as exc:
            raise InvalidStatement(f"malformed statement record: {exc}") from None
        if not isinstance(obj, list) or len(obj) != 4:
            raise InvalidStatement("a statement record is an array of 4 items")
        version, tag, text, signature = obj
        if type(version) is not int or version != 1 or tag != RECORD_TAG:
            raise InvalidStatement("statement record must start with 1, \"stmt\"")
        if not isinstance(text, str) or not isinstance(signature, bytes):
            raise InvalidStatement("statement record holds a text string and a signature byte string")
        return cls(text=text, signature=signature)

    def record_id(self) -> str:
        """Hex SHA-256 of the statement TEXT (UTF-8). Never of the signature: EIP-191 signatures are
        malleable (high-s, v forms), so two valid records of one statement share one id."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _new_nonce() -> str:
    return os.urandom(16).hex()


def authorize_statement(
    address: str,
    installation_id: str,
    signing_pub: bytes,
    identity_pub: bytes,
    *,
    chain_id: int = 1,
    issued_at: int | None = None,
    nonce: str | None = None,
) -> Statement:
    """Build an ``authorize`` statement; ``address`` may be given in any valid case.

    Raises:
        IdentityError: bad address.
        InvalidStatement: any other invalid field, or an installation id that does not match the keys.
    """
    return Statement(
        action="authorize",
        address=checksum_address(address),
        chain_id=chain_id,
        installation_id=installation_id,
        signing_key=signing_pub,
        identity_key=identity_pub,
        issued_at=int(time.time()) if issued_at is None else issued_at,
        nonce=_new_nonce() if nonce is None else nonce,
    )


def revoke_statement(
    address: str,
    installation_id: str,
    *,
    chain_id: int = 1,
    issued_at: int | None = None,
    nonce: str | None = None,
) -> Statement:
    """Build a ``revoke`` statement for ``installation_id``.

    Raises:
        IdentityError: bad address.
        InvalidStatement: any other invalid field.
    """
    return Statement(
        action="revoke",
        address=checksum_address(address),
        chain_id=chain_id,
        installation_id=installation_id,
        signing_key=None,
        identity_key=None,
        issued_at=int(time.time()) if issued_at is None else issued_at,
        nonce=_new_nonce() if nonce is None else nonce,
    )
