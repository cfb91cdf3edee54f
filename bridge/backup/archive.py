"""The backup archive (docs/PROTOCOL.md §12.2): records → zstd → STREAM chunks of AES-256-GCM.

Layout::

    "PARLEYB1" ‖ u32 BE header length ‖ header ‖ chunk 0 ‖ chunk 1 ‖ … ‖ chunk n (the last)

    header = canonical CBOR [1, backup_id(16), purpose, chunk_size, nonce_prefix(7), created_at(ms),
                             wrap_nonce(12), wrapped_key(48)]
    wrapped_key = AES-256-GCM(wrapping_key, wrap_nonce, data_key(32), AAD = WRAP_LABEL ‖ CBOR [first six fields])
    body        = one zstd frame of (u32 BE length ‖ canonical CBOR record)*
    chunk i     = AES-256-GCM(data_key, nonce_prefix ‖ u32 BE i ‖ last(1), body[i·chunk_size : (i+1)·chunk_size],
                              AAD = SHA-256(magic ‖ length ‖ header))

Every chunk but the last carries exactly ``chunk_size`` body bytes; the last carries 0..chunk_size and
has the flag 1. Both directions stream with bounded memory: the writer holds one chunk and the
compressor's window; the reader holds two chunks, one decompressed piece (≤ 8.1 MiB, even for a
hostile frame: input is fed to zstd 256 bytes at a time and a zstd block is at most 128 KiB) and one
record (≤ 16 MiB).

:meth:`Reader.records` yields each record as soon as the chunk holding its end is authenticated and
raises :class:`ArchiveError` at the first problem, **including at the very end** (a missing last chunk,
trailing bytes, an unterminated zstd frame, a partial record). A consumer MUST NOT commit anything
until the iterator is exhausted without an error.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from bridge.crypto import primitives as P
from bridge.protocol import wire

__all__ = [
    "MAGIC",
    "VERSION",
    "PURPOSES",
    "WRAP_LABEL",
    "MIN_CHUNK",
    "MAX_CHUNK",
    "DEFAULT_CHUNK",
    "MAX_HEADER",
    "MAX_RECORD",
    "MAX_PLAIN",
    "MAX_WINDOW",
    "TAG",
    "ArchiveError",
    "WrongKey",
    "Header",
    "Encoded",
    "write_archive",
    "seal_compressed",
    "read_header",
    "open_archive",
    "Reader",
]

MAGIC = b"PARLEYB1"
VERSION = 1
PURPOSES = ("export", "transfer", "remote")
WRAP_LABEL = b"parley/2026-11-30/archive-data-key"
MIN_CHUNK = 4096
MAX_CHUNK = 4 * 1024 * 1024
DEFAULT_CHUNK = 65536
#: The header is about 130 bytes; anything above this is refused before it is read.
MAX_HEADER = 512
#: One record's canonical CBOR (its u32 length prefix excluded).
MAX_RECORD = 16 * 1024 * 1024
#: Default bound on the decompressed body (records and their length prefixes) of one archive.
MAX_PLAIN = 64 * 1024 * 1024 * 1024
#: zstd window a reader accepts (levels 1-19 use at most 8 MiB).
MAX_WINDOW = 8 * 1024 * 1024
TAG = 16
#: Input fed to the zstd decompressor per call: bounds one call's output to (256/4 + 1) · 128 KiB.
_FEED = 256
#: The writer hands framed records to the compressor in batches of about this size.
_BATCH = 256 * 1024
_MAX_CHUNKS = 2**32


class ArchiveError(Exception):
    """An archive is refused; the message is one line naming the check that failed."""


class WrongKey(ArchiveError):
    """The wrapping key does not open this archive's data key (or the header/wrapped key was altered:
    the two cannot be told apart)."""

    def __init__(self, message: str = "the recovery key does not open this archive") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Header:
    """A parsed header. ``raw`` is the archive's first bytes up to the end of the header
    (magic ‖ u32 length ‖ CBOR header): its SHA-256 is every chunk's AAD."""

    version: int
    backup_id: bytes
    purpose: str
    chunk_size: int
    nonce_prefix: bytes
    created_at: int
    wrap_nonce: bytes
    wrapped_key: bytes
    raw: bytes

    @property
    def aad(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


@dataclass(frozen=True)
class Encoded:
    """A record already encoded as canonical CBOR of the protocol's plain types (wire.encode), handed
    to :func:`write_archive` as is (saves encoding it twice when the caller also hashes it). Not
    checked: a reader refuses an archive with a non-canonical record."""

    cbor: bytes


def _wrap_aad(backup_id: bytes, purpose: str, chunk_size: int, nonce_prefix: bytes, created_at: int) -> bytes:
    return WRAP_LABEL + wire.encode([VERSION, backup_id, purpose, chunk_size, nonce_prefix, created_at])


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


_LEAVES = frozenset({int, bool, bytes, str, type(None)})


def _check_plain(obj: Any, index: int) -> None:
    """Refuse what a reader would refuse (wire.decode: only int, bytes, str, null, arrays and maps)."""
    stack = [obj]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t in _LEAVES:
            continue
        if t is dict:
            extend(v)
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        elif isinstance(v, dict):
            extend(v)
            extend(v.values())
        elif isinstance(v, (list, tuple)):
            extend(v)
        elif not isinstance(v, (int, bytes, str)):
            raise ArchiveError(f"record {index} holds a {type(v).__name__}, which an archive cannot carry")


def _encode_record(record: Any, index: int) -> bytes:
    """Canonical CBOR of one record (the bytes ``wire.encode`` gives), refusing what an archive cannot carry."""
    enc = wire.encode_plain(record)  # the plain types only: anything else is refused below
    if enc is None:
        _check_plain(record, index)
        enc = wire.encode(record)
    return enc


# --- writing ----------------------------------------------------------------------------------------

class _Sealer:
    """Cuts the compressed body into chunk_size pieces and writes each as a sealed chunk. A full chunk
    is held back until more data comes, so the last chunk (flag 1) may be full or, for an empty body, empty."""

    def __init__(self, out: BinaryIO, aead: P.AesGcm, nonce_prefix: bytes, aad: bytes, chunk_size: int,
                 written: int, on_progress: Callable[[int], None] | None) -> None:
        self.out, self.aead, self.prefix, self.aad, self.size = out, aead, nonce_prefix, aad, chunk_size
        self.buf = bytearray()
        self.counter = 0
        self.written = written
        self.on_progress = on_progress

    def _emit(self, data: bytes | bytearray | memoryview, last: bool) -> None:
        if self.counter >= _MAX_CHUNKS:
            raise ArchiveError("archive would need more than 2^32 chunks")
        ct = self.aead.seal(_nonce(self.prefix, self.counter, last), data, self.aad)
        self.out.write(ct)
        self.counter += 1
        self.written += len(ct)
        if self.on_progress is not None:
            self.on_progress(self.written)

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.buf += data
        if len(self.buf) <= self.size:
            return
        view = memoryview(self.buf)
        pos = 0
        while len(self.buf) - pos > self.size:
            self._emit(view[pos:pos + self.size], last=False)
            pos += self.size
        view.release()
        del self.buf[:pos]

    def close(self) -> None:
        self._emit(bytes(self.buf), last=True)
        self.buf = bytearray()


def _check_params(wrapping_key: bytes, backup_id: bytes, purpose: str, chunk_size: int, created_at: int,
                  data_key: bytes, nonce_prefix: bytes, wrap_nonce: bytes) -> None:
    for value, n, name in ((wrapping_key, 32, "wrapping_key"), (backup_id, 16, "backup_id"), (data_key, 32, "data_key"),
                           (nonce_prefix, 7, "nonce_prefix"), (wrap_nonce, 12, "wrap_nonce")):
        if not isinstance(value, bytes) or len(value) != n:
            raise ValueError(f"{name} must be {n} bytes")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    if type(chunk_size) is not int or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be an integer in [{MIN_CHUNK}, {MAX_CHUNK}]")
    if type(created_at) is not int or not 0 <= created_at < 2**63:
        raise ValueError("created_at must be a non-negative integer (ms)")


def _start(out: BinaryIO, *, wrapping_key: bytes, backup_id: bytes, purpose: str, chunk_size: int, created_at: int | None,
           data_key: bytes | None, nonce_prefix: bytes | None, wrap_nonce: bytes | None,
           on_progress: Callable[[int], None] | None) -> _Sealer:
    created_at = int(time.time() * 1000) if created_at is None else created_at
    data_key = P.random_bytes(32) if data_key is None else data_key
    nonce_prefix = P.random_bytes(7) if nonce_prefix is None else nonce_prefix
    wrap_nonce = P.random_bytes(12) if wrap_nonce is None else wrap_nonce
    _check_params(wrapping_key, backup_id, purpose, chunk_size, created_at, data_key, nonce_prefix, wrap_nonce)
    wrapped = P.AesGcm(wrapping_key).seal(wrap_nonce, data_key, _wrap_aad(backup_id, purpose, chunk_size, nonce_prefix, created_at))
    header = wire.encode([VERSION, backup_id, purpose, chunk_size, nonce_prefix, created_at, wrap_nonce, wrapped])
    raw = MAGIC + struct.pack(">I", len(header)) + header
    out.write(raw)
    return _Sealer(out, P.AesGcm(data_key), nonce_prefix, hashlib.sha256(raw).digest(), chunk_size, len(raw), on_progress)


def write_archive(out: BinaryIO, records: Iterable[Any], *, wrapping_key: bytes, backup_id: bytes, purpose: str,
                  chunk_size: int = DEFAULT_CHUNK, level: int = 3, created_at: int | None = None,
                  data_key: bytes | None = None, nonce_prefix: bytes | None = None, wrap_nonce: bytes | None = None,
                  on_progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write an archive of ``records`` (each encoded as canonical CBOR, or an :class:`Encoded`) to ``out``.

    Streams: memory stays at about one chunk, one batch of records and the zstd window whatever the
    number of records. ``data_key``, ``nonce_prefix``, ``wrap_nonce`` and ``created_at`` are random /
    now unless given (vectors). ``on_progress(n)`` gets the archive bytes written so far after each chunk.
    Returns ``{"bytes": archive size, "records": count, "plain_bytes": body size before compression}``.
    On an error ``out`` holds a partial archive: write to a temporary file and rename it on success.

    Raises:
        ValueError: a parameter out of range (key lengths, purpose, chunk_size, level 1-19).
        ArchiveError: a record over 16 MiB, or holding a value CBOR records may not carry (float, …).
    """
    if type(level) is not int or not 1 <= level <= 19:
        raise ValueError("level must be an integer in [1, 19]")
    sealer = _start(out, wrapping_key=wrapping_key, backup_id=backup_id, purpose=purpose, chunk_size=chunk_size,
                    created_at=created_at, data_key=data_key, nonce_prefix=nonce_prefix, wrap_nonce=wrap_nonce,
                    on_progress=on_progress)
    comp = zstandard.ZstdCompressor(level=level).compressobj()
    batch = bytearray()
    count = plain = 0
    for record in records:
        if isinstance(record, Encoded):
            enc = record.cbor
        else:
            enc = _encode_record(record, count)
        if len(enc) > MAX_RECORD:
            raise ArchiveError(f"record {count} of {len(enc)} bytes exceeds {MAX_RECORD}")
        batch += struct.pack(">I", len(enc))
        batch += enc
        count += 1
        plain += 4 + len(enc)
        if len(batch) >= _BATCH:
            sealer.write(comp.compress(batch))
            batch = bytearray()
    if batch:
        sealer.write(comp.compress(batch))
    sealer.write(comp.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
    sealer.close()
    return {"bytes": sealer.written, "records": count, "plain_bytes": plain}


def seal_compressed(out: BinaryIO, compressed: bytes | Iterable[bytes], *, wrapping_key: bytes, backup_id: bytes,
                    purpose: str, chunk_size: int = DEFAULT_CHUNK, created_at: int | None = None,
                    data_key: bytes | None = None, nonce_prefix: bytes | None = None, wrap_nonce: bytes | None = None) -> int:
    """The encryption half of :func:`write_archive` over a given body (the vectors' ``encrypt(compressed)``
    direction; tests use it to seal hostile bodies). Returns the archive size. The body is not checked."""
    sealer = _start(out, wrapping_key=wrapping_key, backup_id=backup_id, purpose=purpose, chunk_size=chunk_size,
                    created_at=created_at, data_key=data_key, nonce_prefix=nonce_prefix, wrap_nonce=wrap_nonce,
                    on_progress=None)
    for piece in [compressed] if isinstance(compressed, (bytes, bytearray)) else compressed:
        sealer.write(bytes(piece))
    sealer.close()
    return sealer.written


# --- reading ----------------------------------------------------------------------------------------

def _read_upto(inp: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream."""
    data = inp.read(n)
    if data is None:
        data = b""
    if len(data) >= n or not data:
        return bytes(data[:n]) if len(data) > n else bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = inp.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_header(inp: BinaryIO) -> Header:
    """Read and check the header's structure (nothing is authenticated yet: see :func:`open_archive`).

    Checks, in order: magic, header length ≤ 512, header present, canonical CBOR, an array of 8,
    version 1, backup_id 16 bytes, purpose known, chunk_size in [4 KiB, 4 MiB], nonce_prefix 7 bytes,
    created_at an integer ≥ 0, wrap_nonce 12 bytes, wrapped_key 48 bytes.

    Raises:
        ArchiveError: the first check that fails.
    """
    start = _read_upto(inp, len(MAGIC) + 4)
    if len(start) < len(MAGIC) or start[:len(MAGIC)] != MAGIC:
        if len(start) < len(MAGIC) and MAGIC.startswith(start):
            raise ArchiveError("archive truncated in the header")
        raise ArchiveError("not a Parley backup archive (bad magic)")
    if len(start) < len(MAGIC) + 4:
        raise ArchiveError("archive truncated in the header")
    (length,) = struct.unpack(">I", start[len(MAGIC):])
    if not 1 <= length <= MAX_HEADER:
        raise ArchiveError(f"header length {length} outside [1, {MAX_HEADER}]")
    body = _read_upto(inp, length)
    if len(body) < length:
        raise ArchiveError("archive truncated in the header")
    try:
        obj = wire.decode(body, max_size=MAX_HEADER)
    except wire.WireError as exc:
        raise ArchiveError(f"malformed header: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 8:
        raise ArchiveError("malformed header: not an array of 8 items")
    version, backup_id, purpose, chunk_size, nonce_prefix, created_at, wrap_nonce, wrapped = obj
    if type(version) is not int or version != VERSION:
        raise ArchiveError(f"unsupported archive version {version!r}")
    for value, n, name in ((backup_id, 16, "backup_id"),):
        if not isinstance(value, bytes) or len(value) != n:
            raise ArchiveError(f"header: {name} must be {n} bytes")
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        raise ArchiveError(f"header: unknown purpose {purpose!r}"[:120])
    if type(chunk_size) is not int or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ArchiveError(f"header: chunk_size {chunk_size!r} outside [{MIN_CHUNK}, {MAX_CHUNK}]"[:120])
    if not isinstance(nonce_prefix, bytes) or len(nonce_prefix) != 7:
        raise ArchiveError("header: nonce_prefix must be 7 bytes")
    if type(created_at) is not int or created_at < 0:
        raise ArchiveError("header: created_at must be a non-negative integer")
    if not isinstance(wrap_nonce, bytes) or len(wrap_nonce) != 12:
        raise ArchiveError("header: wrap_nonce must be 12 bytes")
    if not isinstance(wrapped, bytes) or len(wrapped) != 48:
        raise ArchiveError("header: wrapped_key must be 48 bytes")
    return Header(version, backup_id, purpose, chunk_size, nonce_prefix, created_at, wrap_nonce, wrapped, start + body)


def open_archive(inp: BinaryIO, wrapping_key: bytes, *, purposes: Iterable[str] = PURPOSES,
                 max_plain: int = MAX_PLAIN) -> "Reader":
    """Read the header, check the purpose is one the caller accepts, unwrap the data key.

    ``max_plain`` bounds the decompressed body (default 64 GiB).

    Raises:
        ValueError: ``wrapping_key`` is not 32 bytes.
        ArchiveError: a header check (:func:`read_header`), or a purpose not in ``purposes``.
        WrongKey: the key does not unwrap the data key (wrong key, or header / wrapped key altered).
    """
    if not isinstance(wrapping_key, bytes) or len(wrapping_key) != 32:
        raise ValueError("wrapping_key must be 32 bytes")
    header = read_header(inp)
    allowed = tuple(purposes)
    if header.purpose not in allowed:
        raise ArchiveError(f"this is a '{header.purpose}' archive; expected {' or '.join(repr(p) for p in allowed)}")
    aad = _wrap_aad(header.backup_id, header.purpose, header.chunk_size, header.nonce_prefix, header.created_at)
    try:
        data_key = P.AesGcm(wrapping_key).open(header.wrap_nonce, header.wrapped_key, aad)
    except P.DecryptError:
        raise WrongKey() from None
    return Reader(inp, header, data_key, max_plain=max_plain)


class Reader:
    """An opened archive. :meth:`records` (or, one level down, :meth:`chunks`) may be iterated once."""

    def __init__(self, inp: BinaryIO, header: Header, data_key: bytes, *, max_plain: int = MAX_PLAIN) -> None:
        self.header = header
        self._inp = inp
        self._aead = P.AesGcm(data_key)
        self._aad = header.aad
        self._max_plain = max_plain
        self._used = False
        #: archive bytes read and authenticated so far (header included)
        self.position = len(header.raw)

    def __repr__(self) -> str:
        return f"Reader(purpose={self.header.purpose!r}, chunk_size={self.header.chunk_size})"

    def _open(self, n: int, block: bytes, last: bool) -> bytes | None:
        try:
            return self._aead.open(_nonce(self.header.nonce_prefix, n, last), block, self._aad)
        except P.DecryptError:
            return None

    def chunks(self) -> Iterator[bytes]:
        """The body's authenticated chunk plaintexts, in order (the compressed stream, cut).

        Raises (at the point where it is found):
            ArchiveError: "archive truncated: no chunk after the header", "archive truncated in chunk N"
                (fewer bytes than a tag), "archive truncated after chunk N" (a full chunk that is not the
                last, then nothing), "chunk N failed authentication", "trailing bytes after the last chunk".
        """
        if self._used:
            raise ArchiveError("this archive has already been read")
        self._used = True
        size = self.header.chunk_size + TAG
        n = 0
        block = _read_upto(self._inp, size)
        if not block:
            raise ArchiveError("archive truncated: no chunk after the header")
        while True:
            if n >= _MAX_CHUNKS:
                raise ArchiveError("archive has more than 2^32 chunks")
            if len(block) < size:  # a short read: the stream ended, so this must be the last chunk
                if len(block) < TAG:
                    raise ArchiveError(f"archive truncated in chunk {n}")
                pt = self._open(n, block, last=True)
                if pt is None:
                    raise ArchiveError(f"chunk {n} failed authentication")
                self.position += len(block)
                yield pt
                return
            following = _read_upto(self._inp, size)
            if not following:  # a full chunk and then the end: it must be the last one
                pt = self._open(n, block, last=True)
                if pt is None:
                    if self._open(n, block, last=False) is not None:
                        raise ArchiveError(f"archive truncated after chunk {n}")
                    raise ArchiveError(f"chunk {n} failed authentication")
                self.position += len(block)
                yield pt
                return
            pt = self._open(n, block, last=False)
            if pt is None:
                if self._open(n, block, last=True) is not None:
                    raise ArchiveError("trailing bytes after the last chunk")
                raise ArchiveError(f"chunk {n} failed authentication")
            self.position += len(block)
            yield pt
            block = following
            n += 1

    def records(self, on_progress: Callable[[int], None] | None = None) -> Iterator[Any]:
        """Yield each record (decoded canonical CBOR) once the chunk that ends it is authenticated.

        ``on_progress(n)`` gets the archive bytes read so far after each chunk. Raises
        :class:`ArchiveError` at the first problem, including after the last record: consumers MUST
        NOT commit anything until this iterator is exhausted without an error.

        Raises (besides :meth:`chunks`'s):
            ArchiveError: "compressed stream is malformed: …", "compressed stream needs a zstd window
                over 8 MiB", "data after the end of the compressed stream", "the compressed stream ends
                before its frame does", "record N of L bytes exceeds 16777216", "record N is not
                canonical CBOR: …", "the archive ends inside record N", "decompressed body exceeds M bytes".
        """
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
        buf = bytearray()
        plain = 0
        index = 0
        need: int | None = None  # length of the record being assembled, once its prefix is in buf
        for piece in self.chunks():
            view = memoryview(piece)
            for off in range(0, len(view), _FEED):
                if dctx.eof:
                    raise ArchiveError("data after the end of the compressed stream")
                try:
                    out = dctx.decompress(view[off:off + _FEED])
                except zstandard.ZstdError as exc:
                    text = " ".join(str(exc).split())
                    if "too much memory" in text:  # libzstd's words for a window over max_window_size
                        raise ArchiveError(f"compressed stream needs a zstd window over {MAX_WINDOW // (1024 * 1024)} MiB") from None
                    raise ArchiveError(f"compressed stream is malformed: {text}") from None
                if dctx.eof and dctx.unused_data:
                    raise ArchiveError("data after the end of the compressed stream")
                if not out:
                    continue
                plain += len(out)
                if plain > self._max_plain:
                    raise ArchiveError(f"decompressed body exceeds {self._max_plain} bytes")
                buf += out
                pos = 0
                while True:
                    if need is None:
                        if len(buf) - pos < 4:
                            break
                        (need,) = struct.unpack_from(">I", buf, pos)
                        if need > MAX_RECORD:
                            raise ArchiveError(f"record {index} of {need} bytes exceeds {MAX_RECORD}")
                    if len(buf) - pos < 4 + need:
                        break
                    with memoryview(buf) as mv:
                        data = bytes(mv[pos + 4:pos + 4 + need])
                    pos += 4 + need
                    need = None
                    try:
                        record = wire.decode(data, max_size=MAX_RECORD)
                    except wire.WireError as exc:
                        raise ArchiveError(f"record {index} is not canonical CBOR: {' '.join(str(exc).split())}") from None
                    index += 1
                    yield record
                if pos:
                    del buf[:pos]
            if on_progress is not None:
                on_progress(self.position)
        if not dctx.eof:
            raise ArchiveError("the compressed stream ends before its frame does")
        if buf:
            raise ArchiveError(f"the archive ends inside record {index}")
