"""Canonical CBOR as docs/PROTOCOL.md §0 defines it: only the protocol's types, and a version is the
unsigned integer 1 (not `true`, not 1.0)."""
from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.crypto import SessionError, session
from bridge.protocol import wire
from bridge.protocol.content import TextContent, pad
from bridge.protocol.wire import WireError
from tests.exact import raises_exactly

MID = "0123456789abcdef0123456789abcdef"
ALICE = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
BOB = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.mark.parametrize(
    ("hexbytes", "what"),
    [
        ("f93c00", "float"),  # 1.0 as a half float: canonical, but not an integer
        ("c11a00000001", "tag 1 (epoch time)"),
        ("d9010280", "tag 258 (a set)"),
        ("f7", "undefined"),
        ("f0", "simple value 16"),
        ("8201f93c00", "a float inside an array"),
        ("a10181d9010280", "a tag inside a map value"),
    ],
)
def test_values_outside_the_protocol_types_are_refused(hexbytes: str, what: str) -> None:
    with raises_exactly(WireError):
        wire.decode(bytes.fromhex(hexbytes))


def test_protocol_values_still_decode() -> None:
    obj = [1, "msg", b"\x00" * 16, None, True, False, {"a": [2**63 - 1]}]
    assert wire.decode(wire.encode(obj)) == obj


def test_trailing_bytes_are_refused() -> None:
    with raises_exactly(WireError):
        wire.decode(wire.encode([1, "x"]) + b"\x00")


@pytest.mark.parametrize("version", [True, "1", b"\x01"])
def test_a_version_that_only_compares_equal_to_1_is_refused(version: object) -> None:
    with raises_exactly(WireError):
        wire.expect_array(wire.decode(wire.encode([version, "x"])), 1, 2)


def test_a_session_message_with_version_true_is_refused() -> None:
    good = wire.encode([1, "msg", b"\x01" * 16, b"h", b"c"])
    session.peek(good)  # the well-formed twin parses
    with raises_exactly(SessionError):
        session.peek(wire.encode([True, "msg", b"\x01" * 16, b"h", b"c"]))


def test_content_with_version_true_or_a_byte_message_id_is_refused() -> None:
    fields = [MID, ALICE, BOB, 1_700_000_000_000, "hi"]
    assert TextContent.decode(pad(wire.encode([1, "text", *fields]))).message_id == MID
    with raises_exactly(WireError):
        TextContent.decode(pad(cbor2.dumps([True, "text", *fields], canonical=True)))
    with raises_exactly(WireError):  # §6.1: the id is text, never its 16 bytes
        TextContent.decode(pad(wire.encode([1, "text", bytes.fromhex(MID), *fields[1:]])))


def _content(kind: object, *rest: object, text: object = "fallback", mid: object = MID) -> bytes:
    return pad(wire.encode([1, kind, mid, ALICE, BOB, 1_700_000_000_000, text, *rest]))


def test_a_later_content_type_decodes_to_its_fallback_text() -> None:
    c = TextContent.decode(_content("poll", MID, "+", text="voted + in a poll"))  # "reaction" is known since 1.2 (§6.7)
    assert (c.content_type, c.known, c.text, c.message_id) == ("poll", False, "voted + in a poll", MID)
    assert TextContent.decode(_content("text", text="hi")).known
    assert TextContent.decode(_content("text", "extra", text="hi")).text == "hi"  # later fields are ignored


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(pad(wire.encode([1, "reaction", MID, ALICE, BOB, 1])), id="fewer than the seven common fields"),
        pytest.param(_content("Reaction"), id="type not lowercase"),
        pytest.param(_content("a" * 65), id="type over 64 characters"),
        pytest.param(_content(b"text"), id="type as bytes"),
        pytest.param(_content("text", mid=MID.upper()), id="upper-case message id"),
        pytest.param(_content("text", text=b"hi"), id="text as bytes"),
        pytest.param(pad(wire.encode([1, "text", MID, ALICE[:-1], BOB, 1, "hi"])), id="sender of 41 characters"),
        pytest.param(pad(wire.encode([1, "text", MID, ALICE, "1x" + BOB[2:], 1, "hi"])), id="recipient without 0x"),
        pytest.param(pad(wire.encode([1, "text", MID, ALICE, BOB, -1, "hi"])), id="negative sent_at"),
    ],
)
def test_malformed_content_is_refused(content: bytes) -> None:
    with raises_exactly(WireError):
        TextContent.decode(content)


_LEAF = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=40), st.text(max_size=30), st.none(), st.booleans(),
    st.floats(allow_nan=False),
)
_TREE = st.recursive(
    _LEAF,
    lambda c: st.one_of(st.lists(c, max_size=5), st.tuples(c, c), st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), c, max_size=6)),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_TREE)
def test_the_fast_encoder_writes_exactly_cbor2s_canonical_bytes(obj: object) -> None:
    """wire.encode presorts text-keyed maps and uses cbor2's plain encoder (issue 15's export speed);
    anything else goes the canonical=True way. Non-ASCII keys, keys of several lengths, nested maps."""
    assert wire.encode(obj) == cbor2.dumps(obj, canonical=True)


def test_encode_plain_declines_what_is_not_plain() -> None:
    assert wire.encode_plain([1, {"b": 2, "a": 1}]) == cbor2.dumps([1, {"a": 1, "b": 2}], canonical=True)
    assert wire.encode_plain({1: "int key"}) is None and wire.encode_plain([1.5]) is None
    assert wire.encode_plain({"é": 1, "zz": 2, "b": 3}) == cbor2.dumps({"é": 1, "zz": 2, "b": 3}, canonical=True)
