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

from bridge.protocol import relaylist
from bridge.protocol.relaylist import MAX_RELAY_URL

__all__ = ["RelayUrlError", "MAX_RELAY_URL", "canonical_url", "check_relay_url", "is_loopback_host", "is_local_url"]


class RelayUrlError(ValueError):
    """A relay URL that is malformed, or plain http to another machine; the message is one line
    naming the URL and the reason."""


def _fail(url: str, reason: str) -> RelayUrlError:
    shown = url if len(url) <= 120 and url.isprintable() else repr(url[:120])
    return RelayUrlError(f"relay {shown}: {reason}")


def canonical_url(url: str) -> str:
    """``url`` in canonical form: the one definition, bridge.protocol.relaylist.canonical_relay_url
    (what relay lists carry); raises :class:`RelayUrlError` naming the URL and what is wrong."""
    try:
        return relaylist.canonical_relay_url(url)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("relay URL '"):  # "relay URL 'x' has a query" -> "relay 'x' has a query"
            raise RelayUrlError("relay " + text[len("relay URL ") :]) from None
        raise RelayUrlError(f"relay {url!r}: {text}") from None


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


def is_local_url(url: str) -> bool:
    """Whether a canonical relay URL names this machine or a private network: ``localhost``,
    loopback, RFC 1918 / unique-local, link-local or unspecified addresses.

    A relay URL that a peer chose (its signed relay list, an on-chain pointer) must not make our bridge
    send requests into our own machine or network (server-side request forgery); the engine follows
    such a URL only when our own relays are local too (a test or private deployment)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_reserved
