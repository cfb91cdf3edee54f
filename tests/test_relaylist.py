"""Relay-list records (bridge/protocol/relaylist.py): encoding, the strict parser, signatures, relay URLs."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.crypto import primitives as P
from bridge.protocol import relaylist as R
from bridge.protocol import wire
from bridge.protocol.ids import installation_id
from bridge.protocol.wire import WireError
from tests.exact import raises_exactly
from tests.relay_fixtures import WALLET_ADDRESS

SIGNING_PRIV = hashlib.sha256(b"test_relaylist/signing").digest()
SIGNING_PUB = P.ed25519_public(SIGNING_PRIV)
IID = installation_id(SIGNING_PUB, P.x25519_public(hashlib.sha256(b"test_relaylist/identity").digest()))
RELAYS = ("https://relay.example.org", "https://relay2.example.org:8443/parley")


def good(**changes: Any) -> R.RelayList:
    fields: dict[str, Any] = dict(address=WALLET_ADDRESS, installation_id=IID, version=3, issued_at=1_800_000_000, relays=RELAYS)
    fields.update(changes)
    return R.RelayList(**fields)


def body_items(**changes: Any) -> list[Any]:
    items: list[Any] = [1, "parley-relays", WALLET_ADDRESS, IID, 3, 1_800_000_000, list(RELAYS)]
    names = ["v", "tag", "address", "iid", "version", "issued_at", "relays"]
    for name, value in changes.items():
        items[names.index(name)] = value
    return items


def signed(body: bytes) -> bytes:
    return wire.encode([1, body, P.ed25519_sign(SIGNING_PRIV, body)])


def by_hand(raw_items: dict[int, bytes]) -> bytes:
    """The body array written item by item, with the items at the given indexes replaced by raw CBOR."""
    items = [raw_items.get(i, cbor2.dumps(x, canonical=True)) for i, x in enumerate(body_items())]
    return b"\x87" + b"".join(items)


def record_with(**changes: Any) -> bytes:
    """A correctly signed record whose body has the given items replaced (bypassing the encoder's checks)."""
    return signed(wire.encode(body_items(**changes)))


# ---- round trip ------------------------------------------------------------------------------


def test_sign_parse_verify_round_trip() -> None:
    rl = good()
    record = rl.sign(SIGNING_PRIV)
    got, body, sig = R.parse(record)
    assert got == rl and body == rl.body() and len(sig) == 64
    assert R.verify(record, SIGNING_PUB) == rl
    assert R.RelayList.decode(record) == rl
    assert body == cbor2.dumps(body_items(), canonical=True)
    assert cbor2.loads(record) == [1, body, sig]


def test_bounds_accepted() -> None:
    """1 and 5 relays, version 1 and 2^63-1, issued_at 0, a 200-character URL."""
    long_url = "https://r.example/" + "a" * (200 - len("https://r.example/"))
    assert len(long_url) == 200
    five = tuple(f"https://r{i}.example" for i in range(5))
    for rl in (good(relays=RELAYS[:1]), good(relays=five), good(version=1), good(version=2**63 - 1), good(issued_at=0),
               good(relays=(long_url,))):
        assert R.verify(rl.sign(SIGNING_PRIV), SIGNING_PUB) == rl


# ---- negative: layout ------------------------------------------------------------------------

_BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("6 relays", dict(relays=[f"https://r{i}.example" for i in range(6)])),
    ("0 relays", dict(relays=[])),
    ("duplicate relay", dict(relays=[RELAYS[0], RELAYS[0]])),
    ("uppercase host", dict(relays=["https://Relay.example.org"])),
    ("uppercase scheme", dict(relays=["HTTPS://relay.example.org"])),
    ("trailing slash", dict(relays=["https://relay.example.org/"])),
    ("trailing slash after a path", dict(relays=["https://relay.example.org/p/"])),
    ("default https port", dict(relays=["https://relay.example.org:443"])),
    ("default http port", dict(relays=["http://relay.example.org:80"])),
    ("userinfo", dict(relays=["https://user@relay.example.org"])),
    ("query", dict(relays=["https://relay.example.org/?a=1"])),
    ("empty query", dict(relays=["https://relay.example.org?"])),
    ("fragment", dict(relays=["https://relay.example.org#x"])),
    ("ftp scheme", dict(relays=["ftp://relay.example.org"])),
    ("wss scheme", dict(relays=["wss://relay.example.org"])),
    ("over 200 characters", dict(relays=["https://r.example/" + "a" * 183])),
    ("leading space", dict(relays=[" https://relay.example.org"])),
    ("non-compressed IPv6", dict(relays=["https://[0:0:0:0:0:0:0:1]"])),
    ("lowercase percent-escape", dict(relays=["https://relay.example.org/a%2f"])),
    ("relay not a text", dict(relays=[b"https://relay.example.org"])),
    ("relays not an array", dict(relays="https://relay.example.org")),
    ("version 0", dict(version=0)),
    ("version 2^63", dict(version=2**63)),
    ("version a float", dict(version=3.0)),
    ("version a bool", dict(version=True)),
    ("version a text", dict(version="3")),
    ("issued_at negative", dict(issued_at=-1)),
    ("issued_at a float", dict(issued_at=1.5)),
    ("wrong tag", dict(tag="parley-relay")),
    ("tag as bytes", dict(tag=b"parley-relays")),
    ("body version 2", dict(v=2)),
    ("body version true", dict(v=True)),
    ("iid as bytes", dict(iid=bytes.fromhex(IID))),
    ("iid in upper case", dict(iid=IID.upper())),
    ("iid of 31 digits", dict(iid=IID[:31])),
    ("address in lower case (not EIP-55)", dict(address=WALLET_ADDRESS.lower())),
    ("address in upper case", dict(address="0x" + WALLET_ADDRESS[2:].upper())),
    ("address with a wrong checksum", dict(address=WALLET_ADDRESS[:2] + WALLET_ADDRESS[2:].swapcase())),
    ("address without 0x", dict(address=WALLET_ADDRESS[2:])),
]


@pytest.mark.parametrize("changes", [c for _, c in _BAD_BODIES], ids=[n for n, _ in _BAD_BODIES])
def test_bad_body_is_refused(changes: dict[str, Any]) -> None:
    record = record_with(**changes)
    with raises_exactly(WireError):
        R.parse(record)
    with raises_exactly(WireError):
        R.verify(record, SIGNING_PUB)


def test_body_with_an_extra_item_or_missing_one() -> None:
    for items in (body_items() + [0], body_items()[:-1]):
        with raises_exactly(WireError):
            R.parse(signed(wire.encode(items)))


def test_the_encoder_refuses_what_the_parser_would() -> None:
    for changes in (dict(relays=()), dict(relays=("https://A.example",)), dict(version=0), dict(address=WALLET_ADDRESS.lower()),
                    dict(installation_id="x" * 32), dict(relays=RELAYS + RELAYS[:1])):
        with raises_exactly(WireError):
            good(**changes).sign(SIGNING_PRIV)


def test_outer_layout_errors() -> None:
    record = good().sign(SIGNING_PRIV)
    body, sig = cbor2.loads(record)[1:]
    cases = {
        "trailing bytes": record + b"\x00",
        "outer version 2": wire.encode([2, body, sig]),
        "outer version true": b"\x83\xf5" + record[2:],
        "signature of 63 bytes": wire.encode([1, body, sig[:63]]),
        "signature of 65 bytes": wire.encode([1, body, sig + b"\x00"]),
        "signature as text": wire.encode([1, body, sig.hex()]),
        "body as an array, not bytes": wire.encode([1, cbor2.loads(body), sig]),
        "outer of 4 items": wire.encode([1, body, sig, 0]),
        "indefinite-length outer array": b"\x9f" + record[1:] + b"\xff",
        "non-canonical body (version as 2-byte int)": signed(by_hand({4: b"\x18\x03"})),
        "body with trailing bytes": signed(body + b"\x00"),
        "a tagged body item": signed(by_hand({4: cbor2.dumps(cbor2.CBORTag(1, 3))})),
        "a float body item": signed(by_hand({5: cbor2.dumps(1.5)})),
        "over 4096 bytes": wire.encode([1, body, sig]) + b"\x00" * 4096,
        "not CBOR": b"\xff",
        "empty": b"",
    }
    for name, data in cases.items():
        with raises_exactly(WireError):
            R.parse(data)



# ---- negative: signature ---------------------------------------------------------------------


def test_bad_signature() -> None:
    record = good().sign(SIGNING_PRIV)
    body, sig = cbor2.loads(record)[1:]
    flipped = wire.encode([1, body, sig[:-1] + bytes([sig[-1] ^ 1])])
    other_key = good().sign(hashlib.sha256(b"another installation").digest())
    for bad in (flipped, other_key):
        R.parse(bad)  # well formed
        with raises_exactly(P.InvalidSignature):
            R.verify(bad, SIGNING_PUB)
    other_body = good(version=4).body()
    with raises_exactly(P.InvalidSignature):
        R.verify(wire.encode([1, other_body, sig]), SIGNING_PUB)


# ---- relay URLs ------------------------------------------------------------------------------

_NORMALISED = [
    ("https://Relay.Example.COM/", "https://relay.example.com"),
    ("HTTPS://relay.example.com:443", "https://relay.example.com"),
    ("http://relay.example.com:80/", "http://relay.example.com"),
    ("http://relay.example.com:8080//", "http://relay.example.com:8080"),
    ("  https://relay.example.com/a/b/  ", "https://relay.example.com/a/b"),
    ("https://[0:0:0:0:0:0:0:1]:8443/", "https://[::1]:8443"),
    ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
    ("https://127.0.0.1:443/x%7e%2f", "https://127.0.0.1/x~%2F"),
    ("https://relay.example.com:0443", "https://relay.example.com"),
    ("https://relay.example.com/Case/Kept", "https://relay.example.com/Case/Kept"),
]


@pytest.mark.parametrize("text,want", _NORMALISED)
def test_canonical_relay_url_normalises(text: str, want: str) -> None:
    assert R.canonical_relay_url(text) == want
    assert R.is_canonical_relay_url(want)
    assert R.is_canonical_relay_url(text) == (text == want)


_REFUSED = [
    "", "   ", "relay.example.com", "ftp://relay.example.com", "wss://relay.example.com", "https:relay.example.com",
    "https://", "https:///path", "https://user@relay.example.com", "https://user:pw@relay.example.com",
    "https://relay.example.com?x", "https://relay.example.com/#f", "https://relay.example.com:0", "https://relay.example.com:65536",
    "https://relay.example.com:", "https://relay.example.com:x", "https://relay.example.com:-1", "https://relay.example.com:８０",
    "https://relay_example.com", "https://-relay.example.com", "https://relay.example.com.", "https://relay..example.com",
    "https://rélay.example.com", "https://1.2.3", "https://256.1.1.1", "https://01.2.3.4", "https://[::1", "https://[fe80::1%25eth0]",
    "https://[::ffff:1.2.3.4]", "https://[nothex]", "https://relay.example.com/a//b", "https://relay.example.com/./a",
    "https://relay.example.com/a/../b", "https://relay.example.com/a b", "https://relay.example.com/a%zz", "https://relay.example.com/a%2",
    "https://relay.example.com\\a", "https://relay.example.com/\u00e9", "https://relay.example.com/\x00",
    "https://r.example/" + "a" * 183, "https://" + "a" * 64 + ".example",
]


@pytest.mark.parametrize("text", _REFUSED)
def test_canonical_relay_url_refuses(text: str) -> None:
    with raises_exactly(ValueError):
        R.canonical_relay_url(text)
    assert not R.is_canonical_relay_url(text)


def test_canonical_relay_url_message_names_the_url() -> None:
    with pytest.raises(ValueError, match="ftp://relay.example.com"):
        R.canonical_relay_url("ftp://relay.example.com")
    assert not R.is_canonical_relay_url(None)
    assert not R.is_canonical_relay_url(b"https://relay.example.com")


_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_HOST = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join).filter(lambda h: not h.split(".")[-1].isdigit()),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a.exploded}]"),
)
_SEGMENT = st.text(alphabet="abcXYZ019._~!$&'()*+,;=:@-%2Fe", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and "%" not in s.replace("%2F", ""))
_URL = st.builds(
    lambda scheme, host, port, segments, slashes: f"{scheme}://{host}{'' if port is None else f':{port}'}"
    + "".join("/" + s for s in segments) + "/" * slashes,
    st.sampled_from(["https", "http", "HTTPS", "Http"]),
    _HOST,
    st.one_of(st.none(), st.integers(1, 65535), st.sampled_from([80, 443])),
    st.lists(_SEGMENT, max_size=4),
    st.integers(0, 2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_URL)
def test_canonical_relay_url_is_accepted_and_idempotent(text: str) -> None:
    """Whatever canonical_relay_url gives is canonical, and normalising it again changes nothing."""
    try:
        out = R.canonical_relay_url(text)
    except ValueError:
        return  # e.g. too long
    assert R.is_canonical_relay_url(out)
    assert R.canonical_relay_url(out) == out
    assert R.verify(good(relays=(out,)).sign(SIGNING_PRIV), SIGNING_PUB).relays == (out,)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_canonical_relay_url_on_any_text(text: str) -> None:
    """Any text either raises ValueError or gives a canonical, idempotent URL."""
    try:
        out = R.canonical_relay_url(text)
    except ValueError:
        assert not R.is_canonical_relay_url(text)
        return
    assert R.canonical_relay_url(out) == out and R.is_canonical_relay_url(out)
