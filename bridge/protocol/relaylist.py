"""Relay lists (protocol 1.1): which relays an installation reads its inbox on, signed by the installation.

Encoding (canonical CBOR outside and inside, like the prekey upload of PROTOCOL.md §4)::

    relay_list = [1, body: bstr, sig: bstr(64)]        ; sig = Ed25519(installation signing key, body)
    body       = CBOR([1, "parley-relays", address: tstr, iid: tstr, version: uint,
                       issued_at: uint, relays: [1*5 tstr]])

* ``address`` is the EIP-55 checksummed wallet whose identity log authorizes ``iid``;
* ``iid`` is 32 lowercase hex digits;
* ``version`` is 1 .. 2^63-1 (the highest version is the newest); ``issued_at`` whole seconds, <= 2^63-1;
* ``relays`` holds 1 to 5 distinct relay URLs, each in the canonical form of :func:`canonical_relay_url`.

The parser never normalises: anything that is not exactly the canonical form is a :class:`WireError`,
so one list has one encoding and one signature input. :func:`canonical_relay_url` is for user input.
Whether ``iid`` is active in ``address``'s verified identity log is the caller's check (the relay checks
its index; clients check the log they verified): :func:`verify` checks the layout and the signature.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import is_installation_id
from bridge.protocol.wire import WireError

__all__ = [
    "MAX_RELAYS",
    "MAX_RELAY_URL",
    "MAX_RELAY_LIST_RECORD",
    "RELAY_LIST_TAG",
    "RelayList",
    "parse",
    "verify",
    "canonical_relay_url",
    "is_canonical_relay_url",
]

#: Most relays one list may name.
MAX_RELAYS = 5
#: Longest relay URL, in characters.
MAX_RELAY_URL = 200
#: Largest encoded relay list (``[1, body, sig]``) a parser accepts and a relay stores (bytes).
MAX_RELAY_LIST_RECORD = 4096
#: The body's type tag.
RELAY_LIST_TAG = "parley-relays"
_MAX_UINT = 2**63 - 1

_DEFAULT_PORT = {"https": 443, "http": 80}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# RFC 3986 pchar minus pct-encoded (handled separately): unreserved / sub-delims / ":" / "@"
_PATH_CHAR = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]")
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")


def _checksummed(address: str) -> str:
    from bridge.identity.statement import IdentityError, checksum_address

    try:
        return checksum_address(address)
    except IdentityError as exc:
        raise ValueError(str(exc)) from None


# ---- relay URLs ------------------------------------------------------------------------------


def _host(raw: str, url: str) -> str:
    """The canonical form of a URL's host (lowercase DNS name, dotted-quad IPv4, or ``[compressed IPv6]``)."""
    if not raw:
        raise ValueError(f"relay URL {url!r} has no host")
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise ValueError(f"relay URL {url!r}: an IPv6 host must be written [address]")
        inner = raw[1:-1]
        if "%" in inner:
            raise ValueError(f"relay URL {url!r}: an IPv6 zone id is not allowed")
        if "." in inner:
            raise ValueError(f"relay URL {url!r}: write the IPv6 address in hex only (no dotted IPv4 part)")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise ValueError(f"relay URL {url!r}: {inner!r} is not an IPv6 address") from None
    if not raw.isascii():
        raise ValueError(f"relay URL {url!r}: the host must be ASCII (write an internationalised name in its xn-- form)")
    host = raw.lower()
    labels = host.split(".")
    if labels[-1].isdigit():  # a dotted quad, never a DNS name (its last label would be numeric)
        try:
            addr = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"relay URL {url!r}: {raw!r} is not an IPv4 address") from None
        return str(addr)
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"relay URL {url!r}: {raw!r} is not a host name (dot-separated labels of letters, digits and inner hyphens)"
        )
    return host


def _path(raw: str, url: str) -> str:
    """The canonical form of a URL's path: no trailing slash, no empty or dot segments, percent-escapes
    in upper case and only for characters that need one."""
    path = raw.rstrip("/")
    if not path:
        return ""
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%":
            hexdigits = path[i + 1 : i + 3]
            if len(hexdigits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in hexdigits):
                raise ValueError(f"relay URL {url!r}: a bad percent-escape in the path")
            decoded = chr(int(hexdigits, 16))
            out.append(decoded if _UNRESERVED.fullmatch(decoded) else "%" + hexdigits.upper())
            i += 3
            continue
        if ch != "/" and not _PATH_CHAR.fullmatch(ch):
            raise ValueError(f"relay URL {url!r}: the character {ch!r} is not allowed in a path (percent-escape it)")
        out.append(ch)
        i += 1
    canonical = "".join(out)
    for segment in canonical.split("/")[1:]:
        if segment in ("", ".", ".."):
            raise ValueError(f"relay URL {url!r}: the path has an empty, '.' or '..' segment")
    return canonical


def canonical_relay_url(text: str) -> str:
    """Normalise a relay URL typed by a user to the one form relay lists carry.

    ``scheme://host[:port][/path]``: scheme ``https`` or ``http`` in lower case, host in lower case,
    IPv6 in brackets in RFC 5952 §4 form (hex only), the default port (443, 80) dropped, trailing slashes dropped,
    percent-escapes in upper case. What cannot be normalised without changing the meaning is refused:
    another scheme, user info, a query, a fragment, a bad host or port, and more than
    :data:`MAX_RELAY_URL` characters.

    Raises:
        ValueError: the message names the URL and what is wrong with it.
    """
    if not isinstance(text, str):
        raise ValueError("a relay URL must be a string")
    url = text.strip()
    if not url:
        raise ValueError("a relay URL must not be empty")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError(f"relay URL {url!r} contains whitespace or control characters")
    if "?" in url:
        raise ValueError(f"relay URL {url!r} has a query; a relay URL is scheme://host[:port][/path]")
    if "#" in url:
        raise ValueError(f"relay URL {url!r} has a fragment; a relay URL is scheme://host[:port][/path]")
    if "\\" in url:
        raise ValueError(f"relay URL {url!r} contains a backslash")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORT:
        raise ValueError(f"relay URL {url!r} must start with https:// or http://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise ValueError(f"relay URL {url!r} has user info (user@); it is not allowed")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"relay URL {url!r}: an IPv6 host must be written [address]")
        host_raw, port_raw = authority[: end + 1], authority[end + 1 :]
    else:
        host_raw, colon, digits = authority.partition(":")
        port_raw = colon + digits
    port: int | None = None
    if port_raw:
        digits = port_raw[1:]
        if not (port_raw.startswith(":") and digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 65535):
            raise ValueError(f"relay URL {url!r} has a bad port (a number from 1 to 65535)")
        port = int(digits)
    host = _host(host_raw, url)
    canonical = f"{scheme}://{host}"
    if port is not None and port != _DEFAULT_PORT[scheme]:
        canonical += f":{port}"
    canonical += _path(slash + path, url)
    if len(canonical) > MAX_RELAY_URL:
        raise ValueError(f"relay URL {url[:60]!r}… is longer than {MAX_RELAY_URL} characters")
    return canonical


def is_canonical_relay_url(text: object) -> bool:
    """True when ``text`` is a relay URL exactly in the form :func:`canonical_relay_url` gives."""
    if not isinstance(text, str):
        return False
    try:
        return canonical_relay_url(text) == text
    except ValueError:
        return False


# ---- the record ------------------------------------------------------------------------------


def _check_fields(address: Any, iid: Any, version: Any, issued_at: Any, relays: Any) -> None:
    """Every rule on a relay list's fields.

    Raises:
        WireError: the first rule broken, named.
    """
    if not isinstance(address, str) or len(address) != 42:
        raise WireError("relay list: address must be a text of 42 characters")
    try:
        if _checksummed(address) != address:
            raise WireError("relay list: address must be in EIP-55 checksummed form")
    except ValueError as exc:
        raise WireError(f"relay list: bad address: {exc}") from None
    if not is_installation_id(iid):
        raise WireError("relay list: installation id must be 32 lowercase hex digits")
    wire.expect_int(version, "relay list version", 1, _MAX_UINT)
    wire.expect_int(issued_at, "relay list issued_at", 0, _MAX_UINT)
    if not isinstance(relays, (list, tuple)) or not 1 <= len(relays) <= MAX_RELAYS:
        raise WireError(f"relay list: relays must be an array of 1 to {MAX_RELAYS} URLs")
    for url in relays:
        if not is_canonical_relay_url(url):
            raise WireError(f"relay list: {url!r} is not a relay URL in canonical form")
    if len(set(relays)) != len(relays):
        raise WireError("relay list: a relay URL appears twice")


@dataclass(frozen=True)
class RelayList:
    """The relays installation ``installation_id`` of wallet ``address`` reads its inbox on."""

    address: str
    installation_id: str
    version: int
    issued_at: int
    relays: tuple[str, ...]

    def body(self) -> bytes:
        """The signed bytes: canonical CBOR ``[1, "parley-relays", address, iid, version, issued_at, relays]``.

        Raises:
            WireError: a field breaks a rule (the list could never be parsed back).
        """
        _check_fields(self.address, self.installation_id, self.version, self.issued_at, self.relays)
        return wire.encode([1, RELAY_LIST_TAG, self.address, self.installation_id, self.version, self.issued_at, list(self.relays)])

    def sign(self, signing_priv: bytes) -> bytes:
        """The record ``[1, body, Ed25519(signing_priv, body)]``.

        Raises:
            WireError: a field breaks a rule.
        """
        body = self.body()
        return wire.encode([1, body, P.ed25519_sign(signing_priv, body)])

    @classmethod
    def decode(cls, record: bytes) -> "RelayList":
        """The relay list in ``record`` (signature not checked; see :func:`verify`).

        Raises:
            WireError: any layout error or non-canonical form.
        """
        return parse(record)[0]


def parse(record: bytes) -> tuple[RelayList, bytes, bytes]:
    """Parse ``[1, body, sig]`` strictly; returns (relay list, body bytes, signature). The caller verifies.

    Raises:
        WireError: not canonical CBOR, larger than :data:`MAX_RELAY_LIST_RECORD`, another shape, version,
            tag or type, a field out of range, or a relay URL not in canonical form.
    """
    outer = wire.expect_array(wire.decode(record, max_size=MAX_RELAY_LIST_RECORD), 1, 3)
    body = wire.expect_bytes(outer[1], None, "relay list body")
    sig = wire.expect_bytes(outer[2], 64, "relay list signature")
    b = wire.expect_array(wire.decode(body, max_size=MAX_RELAY_LIST_RECORD), 1, 7)
    if type(b[1]) is not str or b[1] != RELAY_LIST_TAG:
        raise WireError(f"relay list: expected the tag {RELAY_LIST_TAG!r}")
    _check_fields(b[2], b[3], b[4], b[5], b[6])
    return RelayList(b[2], b[3], b[4], b[5], tuple(b[6])), body, sig


def verify(record: bytes, signing_pub: bytes) -> RelayList:
    """Parse ``record`` and check its signature with the installation's Ed25519 key.

    The caller has taken ``signing_pub`` from the authorization of the list's installation in the
    list's address's verified identity log (or, at the relay, from its index).

    Raises:
        WireError: as :func:`parse`.
        InvalidSignature: the signature is not the installation's over the body.
    """
    rl, body, sig = parse(record)
    P.ed25519_verify(signing_pub, sig, body)
    return rl
