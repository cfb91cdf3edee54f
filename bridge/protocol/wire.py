"""Deterministic wire encoding: canonical CBOR (RFC 8949 §4.2.1) via cbor2.

Every structure that crosses a process boundary or is signed is a CBOR *array*
whose first element is the protocol version (``1``) or a type tag, so the layout
is fixed by position and the bytes are reproducible.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import cbor2

__all__ = ["WireError", "encode", "encode_plain", "decode", "b64e", "b64d", "MAX_DECODE"]

#: Upper bound on any CBOR blob we agree to decode (the envelope limit plus slack).
MAX_DECODE = 1024 * 1024 + 4096


class WireError(ValueError):
    """Bytes that are not a well-formed, canonical Parley structure."""


_LEAVES = frozenset({int, bool, bytes, str, type(None)})


class _NotPlain(Exception):
    pass


#: a map's keys in insertion order -> the same keys in canonical order (the keys are all text)
_ORDERS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _key_order(item: tuple[bytes, str]) -> tuple[int, bytes]:
    return len(item[0]), item[0]


def _presorted(v: Any) -> Any:
    t = type(v)
    if t in _LEAVES:
        return v
    if t is dict:
        keys = tuple(v)
        order = _ORDERS.get(keys)
        if order is None:
            if any(type(k) is not str for k in keys):
                raise _NotPlain
            order = tuple(k for _, k in sorted(((k.encode(), k) for k in keys), key=_key_order))
            if len(_ORDERS) < 4096:  # records repeat a few key sets (archive records, §12.3)
                _ORDERS[keys] = order
        return {k: _presorted(v[k]) for k in order}
    if t is list or t is tuple:
        return [_presorted(x) for x in v]
    raise _NotPlain


def encode_plain(obj: Any) -> bytes | None:
    """Canonical CBOR of ``obj`` when it holds only the protocol's plain types (int, bool, bytes, str,
    None, lists and tuples, maps with text keys), else None. Every map's keys are put in canonical
    order first (length-first, then bytewise), so cbor2's plain encoder writes exactly the canonical
    bytes, about 2.5× faster than ``canonical=True``, which sorts by encoded key for every map."""
    try:
        return cbor2.dumps(_presorted(obj))
    except _NotPlain:
        return None


def encode(obj: Any) -> bytes:
    """Encode ``obj`` as canonical CBOR."""
    enc = encode_plain(obj)
    return enc if enc is not None else cbor2.dumps(obj, canonical=True)


def decode(data: bytes, *, max_size: int = MAX_DECODE, canonical: bool = True) -> Any:
    """Decode CBOR and, by default, insist it is canonical (re-encodes to the same bytes).

    Raises:
        WireError: not bytes, too large, malformed, trailing data, or not canonical.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise WireError(f"structure of {len(data)} bytes exceeds {max_size}")
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, …)
        raise WireError(f"malformed CBOR: {exc}") from None
    if canonical:
        try:
            again = encode(obj)
        except Exception as exc:
            raise WireError(f"unencodable CBOR value: {exc}") from None
        if again != data:
            raise WireError("CBOR is not in canonical form")
    _check_plain(obj)
    return obj


#: The only CBOR values Parley structures are made of (docs/PROTOCOL.md §0 "Types").
_PLAIN = (int, bytes, str, list, dict, type(None))
_PLAIN_LEAVES = frozenset({int, bool, bytes, str, type(None)})


def _check_plain(obj: Any) -> None:
    """Refuse every CBOR value outside the protocol's types: floats, tags (which cbor2 turns into
    datetimes, sets, decimals, …), ``undefined`` and other simple values. ``bool`` is an ``int``.

    Raises:
        WireError: such a value, at any depth.
    """
    stack = [obj]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _PLAIN_LEAVES:  # exact types: cbor2 decodes to these, never to subclasses
            continue
        if t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif not isinstance(v, _PLAIN):
            raise WireError(f"CBOR value of type {type(v).__name__} is not allowed")
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())


def expect_array(obj: Any, tag: Any, length: int) -> list[Any]:
    """Check that ``obj`` is an array of ``length`` items starting with ``tag``.

    Raises:
        WireError: on any mismatch.
    """
    if not isinstance(obj, list) or len(obj) != length:
        raise WireError(f"expected an array of {length} items")
    if type(obj[0]) is not type(tag) or obj[0] != tag:  # `true` and 1.0 are not the version 1
        raise WireError(f"expected tag {tag!r}, got {obj[0]!r}")
    return obj


def expect_bytes(value: Any, length: int | None = None, name: str = "field") -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"{name} must be bytes")
    if length is not None and len(value) != length:
        raise WireError(f"{name} must be {length} bytes, got {len(value)}")
    return value


def expect_int(value: Any, name: str = "field", lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WireError(f"{name} must be an integer in [{lo}, {hi}]")
    return value


def expect_str(value: Any, name: str = "field", max_len: int = 1 << 20) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise WireError(f"{name} must be a string of at most {max_len} characters")
    return value


def b64e(data: bytes) -> str:
    """Standard base64 with padding (what JSON bodies carry)."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: Any, *, max_size: int = 2 * MAX_DECODE) -> bytes:
    """Strict base64 decode.

    Raises:
        WireError: not a string, too long, or not valid base64.
    """
    if not isinstance(text, str) or len(text) > max_size:
        raise WireError("expected a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise WireError("invalid base64") from None


__all__ += ["expect_array", "expect_bytes", "expect_int", "expect_str"]
