"""TLS presentation language encoding as RFC 9420 uses it (§2.1): fixed-width big-endian integers,
and variable-length vectors whose length is a QUIC-style variable-length integer (§2.1.2: 1, 2 or
4 bytes, the top two bits giving the width; the shortest form only; 8-byte lengths are refused).

:class:`Writer` builds bytes; :class:`Reader` consumes them and raises :class:`DecodeError` on
anything malformed (short input, a non-minimal or too-long length, bytes left over).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["DecodeError", "Reader", "Writer", "varint", "opaque", "decode_all"]

T = TypeVar("T")

#: The largest vector length §2.1.2 allows (a 4-byte varint carries 30 bits).
MAX_VARINT = (1 << 30) - 1


class DecodeError(ValueError):
    """Bytes that are not a well-formed encoding of the structure asked for."""


def varint(n: int) -> bytes:
    """The §2.1.2 variable-length integer of ``n`` (shortest form).

    Raises:
        ValueError: negative, or 2^30 and above.
    """
    if n < 0:
        raise ValueError("negative length")
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return (0x4000 | n).to_bytes(2, "big")
    if n <= MAX_VARINT:
        return (0x80000000 | n).to_bytes(4, "big")
    raise ValueError(f"length {n} does not fit a 30-bit varint")


def opaque(data: bytes) -> bytes:
    """``opaque data<V>``: the varint length, then the bytes."""
    return varint(len(data)) + bytes(data)


class Writer:
    """Accumulates an encoding: ``w.u16(1).opaque(b"x").bytes()``."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def u8(self, n: int) -> Writer:
        return self.raw(n.to_bytes(1, "big"))

    def u16(self, n: int) -> Writer:
        return self.raw(n.to_bytes(2, "big"))

    def u32(self, n: int) -> Writer:
        return self.raw(n.to_bytes(4, "big"))

    def u64(self, n: int) -> Writer:
        return self.raw(n.to_bytes(8, "big"))

    def opaque(self, data: bytes) -> Writer:
        return self.raw(opaque(data))

    def vector(self, items: Iterable[T], encode: Callable[[T], bytes]) -> Writer:
        """``T items<V>``: the items' encodings, prefixed by their total length in bytes."""
        return self.opaque(b"".join(encode(x) for x in items))

    def optional(self, value: T | None, encode: Callable[[T], bytes]) -> Writer:
        """``optional<T>``: 0, or 1 then the value."""
        if value is None:
            return self.u8(0)
        return self.u8(1).raw(encode(value))

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Consumes an encoding from the front. Every method raises :class:`DecodeError` on short or
    malformed input."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._pos = pos
        self._end = len(self._data) if end is None else end

    @property
    def pos(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def done(self) -> bool:
        return self._pos == self._end

    def expect_end(self, what: str = "structure") -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} bytes left over after the {what}")

    def raw(self, n: int) -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise DecodeError(f"needed {n} bytes, {self._end - self._pos} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return self.raw(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.raw(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.raw(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.raw(8), "big")

    def varint(self) -> int:
        first = self.raw(1)[0]
        prefix = first >> 6
        if prefix == 0:
            return first & 0x3F
        if prefix == 1:
            n = ((first & 0x3F) << 8) | self.raw(1)[0]
            if n < 1 << 6:
                raise DecodeError("length not in its shortest form")
            return n
        if prefix == 2:
            n = ((first & 0x3F) << 24) | int.from_bytes(self.raw(3), "big")
            if n < 1 << 14:
                raise DecodeError("length not in its shortest form")
            return n
        raise DecodeError("8-byte varint lengths are not allowed (RFC 9420 §2.1.2)")

    def opaque(self) -> bytes:
        return self.raw(self.varint())

    def sub(self) -> Reader:
        """A reader over the next ``<V>``-prefixed body (this one moves past it)."""
        n = self.varint()
        if self._pos + n > self._end:
            raise DecodeError(f"vector of {n} bytes, {self._end - self._pos} left")
        inner = Reader(self._data, self._pos, self._pos + n)
        self._pos += n
        return inner

    def vector(self, decode: Callable[[Reader], T]) -> list[T]:
        """``T items<V>``: decode items until the vector's body is used up."""
        inner = self.sub()
        out = []
        while not inner.done():
            out.append(decode(inner))
        return out

    def optional(self, decode: Callable[[Reader], T]) -> T | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag != 1:
            raise DecodeError(f"optional presence byte {flag} is neither 0 nor 1")
        return decode(self)


def decode_all(data: bytes, decode: Callable[[Reader], Any], what: str = "structure") -> Any:
    """Decode ``data`` as exactly one structure (no bytes left over)."""
    r = Reader(data)
    out = decode(r)
    r.expect_end(what)
    return out
