"""Relay URLs: the canonical form, and which relays a bridge may talk to in the clear.

A relay URL is ``scheme://host[:port][/path]`` (docs/PROTOCOL.md §7 "TLS and relay URLs"): scheme
``https`` or ``http``, host lower case (DNS name, IPv4, or ``[IPv6]``), no user info, query or
fragment, no trailing slash, no default port (443 for https, 80 for http), at most 200 characters.

Plain ``http`` reaches only this machine: anyone on the path could read who talks to which inbox
and substitute identity answers that clients then have to catch, so a bridge refuses a non-loopback
``http://`` relay unless told ``--insecure``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["RelayUrlError", "MAX_RELAY_URL", "canonical_url", "check_relay_url", "is_loopback_host"]

#: Longest canonical relay URL (the relay-list record's limit).
MAX_RELAY_URL = 200
_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class RelayUrlError(ValueError):
    """A relay URL that is malformed, or plain http to another machine; the message is one line
    naming the URL and the reason."""


def _fail(url: str, reason: str) -> RelayUrlError:
    shown = url if len(url) <= 120 and url.isprintable() else repr(url[:120])
    return RelayUrlError(f"relay {shown}: {reason}")


def canonical_url(url: str) -> str:
    """``url`` in canonical form (see the module docstring); raises :class:`RelayUrlError`."""
    if not isinstance(url, str) or not url.strip():
        raise _fail(str(url), "not a URL (expected https://host[:port])")
    text = url.strip()
    if not text.isascii() or any(c.isspace() or not c.isprintable() for c in text):
        raise _fail(text, "a relay URL is printable ASCII without spaces")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _fail(text, f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _fail(text, "the scheme must be https:// (or http:// to this machine)")
    if "@" in parts.netloc:
        raise _fail(text, "a relay URL carries no user name or password")
    if parts.query or "?" in text:
        raise _fail(text, "a relay URL has no query (?...)")
    if parts.fragment or "#" in text:
        raise _fail(text, "a relay URL has no fragment (#...)")
    host = (parts.hostname or "").lower()
    if not host:
        raise _fail(text, "no host")
    if ":" in host:  # IPv6: urlsplit took it out of its brackets
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise _fail(text, "not a valid IPv6 address") from None
    elif not set(host) <= _HOST_CHARS or host.startswith((".", "-")) or ".." in host or host.endswith("-"):
        raise _fail(text, f"not a valid host name: {host!r}")
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path.rstrip("/")
    out = f"{scheme}://{netloc}{path}"
    if len(out) > MAX_RELAY_URL:
        raise _fail(text, f"longer than {MAX_RELAY_URL} characters")
    return out


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (as in a canonical URL: lower case, IPv6 in brackets) names this machine:
    ``localhost``, 127.0.0.0/8 or ``[::1]``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_relay_url(url: str, *, insecure: bool = False) -> str:
    """The canonical form of a relay URL a bridge may use.

    Raises:
        RelayUrlError: the URL is malformed, or it is plain ``http://`` to a host that is not this
            machine's loopback and ``insecure`` is false.
    """
    out = canonical_url(url)
    if out.startswith("http://") and not insecure:
        host = urlsplit(out).netloc
        host = host.rsplit(":", 1)[0] if not host.endswith("]") and ":" in host else host
        if not is_loopback_host(host):
            raise _fail(out, "plain http is only allowed to this machine (127.0.0.1/localhost); use https:// or pass --insecure")
    return out
