"""Relay URLs (bridge/relay/urls.py; docs/PROTOCOL.md §7 "TLS and relay URLs"): the canonical form,
and plain http only to this machine unless --insecure."""

from __future__ import annotations

import pytest

from bridge.relay.urls import MAX_RELAY_URL, RelayUrlError, check_relay_url

CANONICAL = [
    ("https://relay.example.org", "https://relay.example.org"),
    ("HTTPS://Relay.Example.ORG/", "https://relay.example.org"),
    ("https://relay.example.org:443", "https://relay.example.org"),
    ("https://relay.example.org:8443/", "https://relay.example.org:8443"),
    ("https://relay.example.org/parley/", "https://relay.example.org/parley"),
    ("https://relay.example.org/Parley", "https://relay.example.org/Parley"),  # the path keeps its case
    ("http://127.0.0.1:8738", "http://127.0.0.1:8738"),
    ("http://127.0.0.1:80/", "http://127.0.0.1"),
    ("http://LOCALHOST:8737", "http://localhost:8737"),
    ("http://127.5.6.7:1", "http://127.5.6.7:1"),
    ("http://[::1]:8738", "http://[::1]:8738"),
    ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
    ("  https://relay.example.org  ", "https://relay.example.org"),
]


@pytest.mark.parametrize("raw, canonical", CANONICAL)
def test_canonical_form(raw: str, canonical: str) -> None:
    assert check_relay_url(raw) == canonical
    assert check_relay_url(canonical) == canonical  # idempotent


MALFORMED = [
    ("ftp://relay.example.org", "must start with https://"),
    ("relay.example.org", "must start with https://"),
    ("ws://relay.example.org", "must start with https://"),
    ("https://user:pw@relay.example.org", "has user info"),
    ("https://relay.example.org/?x=1", "has a query"),
    ("https://relay.example.org/#top", "has a fragment"),
    ("https://", "has no host"),
    ("https://relay.example.org:99999", "bad port"),
    ("https://relay..example.org", "is not a host name"),
    ("https://relay_example.org", "is not a host name"),
    ("https://r\u00e9lay.example.org", "must be ASCII"),
    ("https://relay.example.org/a b", "whitespace"),
    ("https://[::zz]", "not an IPv6 address"),
    ("", "must not be empty"),
    ("https://relay.example.org/" + "p" * MAX_RELAY_URL, f"longer than {MAX_RELAY_URL} characters"),
]


@pytest.mark.parametrize("raw, reason", MALFORMED)
def test_malformed_urls_are_refused_with_one_line(raw: str, reason: str) -> None:
    with pytest.raises(RelayUrlError) as exc:
        check_relay_url(raw, insecure=True)
    message = str(exc.value)
    assert message.startswith("relay ") and reason in message and "\n" not in message, message
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("url", ["http://relay.example.org", "http://10.0.0.5:8738", "http://[2001:db8::1]", "http://128.0.0.1",
                                 "http://localhost.example.org", "http://127.0.0.1.nip.io"])
def test_plain_http_to_another_machine_needs_insecure(url: str) -> None:
    with pytest.raises(RelayUrlError) as exc:
        check_relay_url(url)
    assert str(exc.value) == (
        f"relay {url}: plain http is only allowed to this machine (127.0.0.1/localhost); use https:// or pass --insecure"
    )
    assert check_relay_url(url, insecure=True) == url


def test_the_canonical_length_limit_is_inclusive() -> None:
    base = "https://relay.example.org/"
    ok = base + "p" * (MAX_RELAY_URL - len(base))
    assert len(ok) == MAX_RELAY_URL and check_relay_url(ok) == ok
    with pytest.raises(RelayUrlError):
        check_relay_url(ok + "p")
