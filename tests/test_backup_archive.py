"""The backup archive (bridge/backup/archive.py; PROTOCOL.md §12.2): round trips (property test), and the
hostile archive: every truncation, chunk permutation and bit flip refused, the STREAM last flag and counter,
the header bound to every chunk, hostile header fields, hostile bodies (unterminated or extended zstd
frame, over-long or partial records, a decompression bomb), bounded memory both ways, and the known
answers of tests/vectors/parley_backup.json (with the format written out over the raw library)."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.backup import archive as A
from bridge.crypto import primitives as P
from bridge.protocol import wire
from tests.exact import raises_exactly
from tests.vectors_loader import cases, h, load

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
BID = bytes(range(100, 116))
FIXED = dict(created_at=1_796_083_200_000, data_key=bytes(range(200, 232)), nonce_prefix=b"\x01" * 7, wrap_nonce=b"\x02" * 12)


def write(records: list[Any], *, chunk_size: int = 4096, purpose: str = "export", **kw: Any) -> bytes:
    out = io.BytesIO()
    A.write_archive(out, records, wrapping_key=KEY, backup_id=BID, purpose=purpose, chunk_size=chunk_size, **kw)
    return out.getvalue()


def read(data: bytes, key: bytes = KEY, **kw: Any) -> list[Any]:
    return list(A.open_archive(io.BytesIO(data), key, **kw).records())


def refusal(data: bytes, key: bytes = KEY, **kw: Any) -> A.ArchiveError:
    """The ArchiveError (or WrongKey) reading ``data`` to the end raises; fails the test if it reads."""
    with pytest.raises(A.ArchiveError) as info:
        read(data, key, **kw)
    assert "\n" not in str(info.value)
    return info.value


def seal(body: bytes, chunk_size: int = 4096, **kw: Any) -> bytes:
    out = io.BytesIO()
    A.seal_compressed(out, body, wrapping_key=KEY, backup_id=BID, purpose="export", chunk_size=chunk_size, **{**FIXED, **kw})
    return out.getvalue()


def frame(plain: bytes) -> bytes:
    c = zstandard.ZstdCompressor(level=3).compressobj()
    return c.compress(plain) + c.flush()


def framed(*records: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(r)) + r for r in records)


def split(data: bytes, chunk_size: int = 4096) -> tuple[bytes, list[bytes]]:
    """(header bytes, [chunk ciphertexts]) of an archive."""
    (n,) = struct.unpack(">I", data[8:12])
    head, body = data[:12 + n], data[12 + n:]
    size = chunk_size + A.TAG
    return head, [body[i:i + size] for i in range(0, len(body), size)]


RNG = random.Random(15)
#: Five records of incompressible bytes: six chunks of 4096.
BIG_RECORDS = [["file", {"offset": i, "data": RNG.randbytes(4500)}] for i in range(5)] + [["end", {"records": 5}]]
BIG = write(BIG_RECORDS, **FIXED)
HEAD, CHUNKS = split(BIG)


def test_the_fixture_spans_six_chunks_with_a_short_last_one() -> None:
    assert len(CHUNKS) == 6 and all(len(c) == 4112 for c in CHUNKS[:-1]) and 16 < len(CHUNKS[-1]) < 4112
    assert read(BIG) == BIG_RECORDS


# --- round trips ----------------------------------------------------------------------------------

def test_round_trip_returns_the_sizes_and_the_header() -> None:
    records = [["meta", {"version": 1, "address": "0xabc"}], ["message", {"id": "a" * 32, "text": "hi", "read": True, "n": None}]]
    out = io.BytesIO()
    info = A.write_archive(out, records, wrapping_key=KEY, backup_id=BID, purpose="remote", **FIXED)
    data = out.getvalue()
    assert info == {"bytes": len(data), "records": 2, "plain_bytes": sum(4 + len(wire.encode(r)) for r in records)}
    reader = A.open_archive(io.BytesIO(data), KEY)
    h = reader.header
    assert (h.version, h.backup_id, h.purpose, h.chunk_size, h.nonce_prefix, h.created_at, h.wrap_nonce) == (
        1, BID, "remote", 65536, FIXED["nonce_prefix"], FIXED["created_at"], FIXED["wrap_nonce"])
    assert data.startswith(h.raw) and h.raw[:8] == b"PARLEYB1" and len(h.wrapped_key) == 48
    assert list(reader.records()) == records
    assert reader.position == len(data)


def test_random_values_differ_per_archive_and_created_at_defaults_to_now() -> None:
    a, b = (A.open_archive(io.BytesIO(write([["x", {}]])), KEY).header for _ in range(2))
    assert a.nonce_prefix != b.nonce_prefix and a.wrap_nonce != b.wrap_nonce and a.wrapped_key != b.wrapped_key
    assert abs(a.created_at - b.created_at) < 60_000 and a.created_at > 1_700_000_000_000


def test_an_empty_record_list_is_one_chunk_and_reads_back_empty() -> None:
    data = write([])
    head, chunks = split(data)
    assert len(chunks) == 1 and read(data) == []


def test_encoded_records_are_written_as_given() -> None:
    recs = [["message", {"id": "1"}], ["end", {"records": 1}]]
    assert read(write([A.Encoded(wire.encode(r)) for r in recs], **FIXED)) == recs
    assert write([A.Encoded(wire.encode(r)) for r in recs], **FIXED) == write(recs, **FIXED)


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=40) | st.binary(max_size=3000),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10) | st.integers(0, 99), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=st.lists(PLAIN, max_size=30), chunk_size=st.integers(A.MIN_CHUNK, 9000), level=st.integers(1, 19))
def test_property_read_of_write_is_identity(records: list[Any], chunk_size: int, level: int) -> None:
    data = write(records, chunk_size=chunk_size, level=level)
    assert read(data) == records


# --- hostile archives: truncation, reordering, bit flips (fuzz) ------------------------------------

@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(BIG) - 1))
def test_fuzz_every_truncation_is_refused(cut: int) -> None:
    refusal(BIG[:cut])


@pytest.mark.parametrize("n", range(6))
def test_truncation_at_each_chunk_boundary_says_so(n: int) -> None:
    cut = HEAD + b"".join(CHUNKS[:n])
    assert str(refusal(cut)) == ("archive truncated: no chunk after the header" if n == 0 else f"archive truncated after chunk {n - 1}")


@pytest.mark.parametrize("cut, reason", [
    (0, "archive truncated in the header"),
    (5, "archive truncated in the header"),
    (10, "archive truncated in the header"),
    (len(HEAD) - 1, "archive truncated in the header"),
    (len(HEAD) + 4112 + 15, "archive truncated in chunk 1"),
    (len(HEAD) + 4112 + 16, "chunk 1 failed authentication"),
    (len(HEAD) + 2 * 4112 + 2000, "chunk 2 failed authentication"),
    (len(BIG) - 1, "chunk 5 failed authentication"),
])
def test_truncation_reasons(cut: int, reason: str) -> None:
    assert str(refusal(BIG[:cut])) == reason


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(range(6)))
def test_fuzz_every_chunk_permutation_is_refused(order: list[int]) -> None:
    if order == list(range(6)):
        assert read(HEAD + b"".join(CHUNKS)) == BIG_RECORDS
        return
    first = next(i for i, j in enumerate(order) if i != j)
    assert str(refusal(HEAD + b"".join(CHUNKS[j] for j in order))) in (
        f"chunk {first} failed authentication", "trailing bytes after the last chunk")


def test_two_chunks_swapped_names_the_first_one_out_of_place() -> None:
    swapped = HEAD + CHUNKS[0] + CHUNKS[2] + CHUNKS[1] + b"".join(CHUNKS[3:])
    assert str(refusal(swapped)) == "chunk 1 failed authentication"
    dropped = HEAD + CHUNKS[0] + b"".join(CHUNKS[2:])  # a chunk removed from the middle
    assert str(refusal(dropped)) == "chunk 1 failed authentication"
    duplicated = HEAD + CHUNKS[0] + CHUNKS[0] + b"".join(CHUNKS[1:])
    assert str(refusal(duplicated)) == "chunk 1 failed authentication"


@settings(max_examples=400, deadline=None)
@given(bit=st.integers(0, 8 * len(BIG) - 1))
def test_fuzz_every_single_bit_flip_is_refused(bit: int) -> None:
    flipped = bytearray(BIG)
    flipped[bit // 8] ^= 1 << (bit % 8)
    refusal(bytes(flipped))


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def test_bit_flips_name_where_they_are() -> None:
    raw = A.open_archive(io.BytesIO(BIG), KEY).header.raw
    bid_at = raw.index(BID)
    wrapped_at = len(raw) - 48
    assert str(refusal(_flip(BIG, 0))) == "not a Parley backup archive (bad magic)"
    for offset in (bid_at, bid_at + 15, raw.index(FIXED["nonce_prefix"]), raw.index(FIXED["wrap_nonce"]), wrapped_at, len(raw) - 1):
        err = refusal(_flip(BIG, offset))
        assert type(err) is A.WrongKey and str(err) == "the recovery key does not open this archive", offset
    assert str(refusal(_flip(BIG, 8))) == "header length %d outside [1, 512]" % ((1 << 24) + len(raw) - 12)
    assert str(refusal(_flip(BIG, 11))).startswith("malformed header: malformed CBOR: ")  # one byte shorter
    for n in range(6):
        assert str(refusal(_flip(BIG, len(HEAD) + n * 4112 + 7))) == f"chunk {n} failed authentication"
        assert str(refusal(_flip(BIG, len(HEAD) + n * 4112 + len(CHUNKS[n]) - 1))) == f"chunk {n} failed authentication"  # the tag


NOISE = random.Random(16).randbytes(9000)


def _body_of_length(n: int) -> bytes:
    """A zstd frame of one record, exactly ``n`` bytes long (incompressible data: the size is linear)."""
    size = n - 100
    for _ in range(10):
        body = frame(framed(wire.encode(["file", {"data": NOISE[:size]}])))
        if len(body) == n:
            return body
        size += n - len(body)
    raise AssertionError("no body of that length")


def test_trailing_bytes_are_refused() -> None:
    assert str(refusal(BIG + b"\x00")) == "chunk 5 failed authentication"  # they lengthen the short last chunk
    # a body of exactly two chunks: its last chunk is full, so a byte after it is seen as such
    body = _body_of_length(8192)
    data = seal(body)
    assert len(split(data)[1]) == 2 and read(data)[0][0] == "file"
    assert str(refusal(data + b"\x00")) == "trailing bytes after the last chunk"
    assert str(refusal(data + data[-4112:])) == "trailing bytes after the last chunk"


def test_a_last_flagged_chunk_cannot_be_extended_by_chunks_of_another_body() -> None:
    """Two bodies under the same header (same data key): the first ends with a full last chunk; the
    third chunk of the second body is valid at index 2. Splicing it on must fail on the last flag alone."""
    two = seal(RNG.randbytes(8192))
    three = seal(RNG.randbytes(3 * 4096 - 100))
    head, a = split(two)
    head2, b = split(three)
    assert head == head2 and len(a) == 2 and len(b) == 3
    reader = A.open_archive(io.BytesIO(head + a[0] + a[1] + b[2]), KEY)
    with raises_exactly(A.ArchiveError, match="^trailing bytes after the last chunk$"):
        list(reader.chunks())
    reader = A.open_archive(io.BytesIO(head + b[0] + b[1]), KEY)  # the last chunk cut off at a boundary
    got = []
    with raises_exactly(A.ArchiveError, match="^archive truncated after chunk 1$"):
        for piece in reader.chunks():
            got.append(piece)
    assert len(got) == 1  # chunk 0 was authenticated; chunk 1's verdict waited for what follows it


def test_the_header_is_bound_to_every_chunk() -> None:
    """Someone who knows the data key re-wraps it into a new header (another purpose and backup id) and
    keeps the chunks: the wrap opens, every chunk fails."""
    aead = P.AesGcm(KEY)
    for purpose, bid in (("transfer", BID), ("export", bytes(16))):
        aad = A.WRAP_LABEL + wire.encode([1, bid, purpose, 4096, FIXED["nonce_prefix"], FIXED["created_at"]])
        wrapped = aead.seal(FIXED["wrap_nonce"], FIXED["data_key"], aad)
        header = wire.encode([1, bid, purpose, 4096, FIXED["nonce_prefix"], FIXED["created_at"], FIXED["wrap_nonce"], wrapped])
        forged = b"PARLEYB1" + struct.pack(">I", len(header)) + header + b"".join(CHUNKS)
        assert A.open_archive(io.BytesIO(forged), KEY).header.purpose == purpose
        assert str(refusal(forged)) == "chunk 0 failed authentication"


def test_another_key_is_wrong_key() -> None:
    with raises_exactly(A.WrongKey, match="^the recovery key does not open this archive$"):
        A.open_archive(io.BytesIO(BIG), OTHER_KEY)


# --- hostile headers ------------------------------------------------------------------------------

def _header(fields: list[Any] | None = None, *, raw: bytes | None = None, length: int | None = None) -> bytes:
    if raw is None:
        base = [1, BID, "export", 4096, FIXED["nonce_prefix"], FIXED["created_at"], FIXED["wrap_nonce"], bytes(48)]
        raw = wire.encode(fields if fields is not None else base)
    return b"PARLEYB1" + struct.pack(">I", len(raw) if length is None else length) + raw + bytes(4112)


def _with(i: int, value: Any) -> list[Any]:
    f = [1, BID, "export", 4096, FIXED["nonce_prefix"], FIXED["created_at"], FIXED["wrap_nonce"], bytes(48)]
    f[i] = value
    return f


@pytest.mark.parametrize("data, reason", [
    (b"PARLEYB2" + bytes(100), "not a Parley backup archive (bad magic)"),
    (b"PK\x03\x04" + bytes(100), "not a Parley backup archive (bad magic)"),
    (_header(length=0), "header length 0 outside [1, 512]"),
    (_header(length=513), "header length 513 outside [1, 512]"),
    (_header(length=2**32 - 1), "header length 4294967295 outside [1, 512]"),
    (_header(raw=b"\xff" * 20), "malformed header: malformed CBOR: "),
    (_header(raw=b"\x98\x08" + wire.encode(_with(0, 1))[1:]), "malformed header: CBOR is not in canonical form"),
    (_header(raw=wire.encode(_with(0, 1)[:7])), "malformed header: not an array of 8 items"),
    (_header(raw=wire.encode({"version": 1})), "malformed header: not an array of 8 items"),
    (_header(_with(0, 2)), "unsupported archive version 2"),
    (_header(_with(0, True)), "unsupported archive version True"),
    (_header(_with(1, bytes(15))), "header: backup_id must be 16 bytes"),
    (_header(_with(1, "x" * 16)), "header: backup_id must be 16 bytes"),
    (_header(_with(2, "backup")), "header: unknown purpose 'backup'"),
    (_header(_with(2, b"export")), "header: unknown purpose b'export'"),
    (_header(_with(3, 4095)), "header: chunk_size 4095 outside [4096, 4194304]"),
    (_header(_with(3, 4 * 1024 * 1024 + 1)), "header: chunk_size 4194305 outside [4096, 4194304]"),
    (_header(_with(3, 2**63)), "header: chunk_size 9223372036854775808 outside [4096, 4194304]"),
    (_header(_with(3, -1)), "header: chunk_size -1 outside [4096, 4194304]"),
    (_header(_with(3, "4096")), "header: chunk_size '4096' outside [4096, 4194304]"),
    (_header(_with(4, bytes(8))), "header: nonce_prefix must be 7 bytes"),
    (_header(_with(5, -5)), "header: created_at must be a non-negative integer"),
    (_header(_with(5, None)), "header: created_at must be a non-negative integer"),
    (_header(_with(6, bytes(24))), "header: wrap_nonce must be 12 bytes"),
    (_header(_with(7, bytes(32))), "header: wrapped_key must be 48 bytes"),
    (_header(), "the recovery key does not open this archive"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_hostile_headers_are_refused_with_their_reason(data: bytes, reason: str) -> None:
    err = refusal(data)
    assert str(err).startswith(reason) if reason.endswith(": ") else str(err) == reason


def test_a_header_float_is_refused() -> None:
    import cbor2

    assert str(refusal(_header(raw=cbor2.dumps(_with(5, 1.5), canonical=True)))) == "malformed header: CBOR value of type float is not allowed"


def test_read_header_reads_exactly_the_header() -> None:
    inp = io.BytesIO(BIG)
    h = A.read_header(inp)
    assert inp.tell() == len(h.raw) == len(HEAD) and h.purpose == "export" and h.chunk_size == 4096


def test_open_archive_accepts_only_the_callers_purposes() -> None:
    data = write([["x", {}]], purpose="transfer")
    assert read(data, purposes=("transfer",)) == [["x", {}]]
    with raises_exactly(A.ArchiveError, match="^this is a 'transfer' archive; expected 'export' or 'remote'$"):
        A.open_archive(io.BytesIO(data), KEY, purposes=("export", "remote"))
    with raises_exactly(ValueError, match="wrapping_key"):
        A.open_archive(io.BytesIO(data), KEY[:16])


# --- hostile bodies (sealed under the right key: only the body is wrong) --------------------------

REC = wire.encode(["end", {"records": 0}])


@pytest.mark.parametrize("body, reason", [
    (frame(framed(REC))[:-3], "the compressed stream ends before its frame does"),
    (frame(framed(REC)) + frame(framed(REC)), "data after the end of the compressed stream"),
    (frame(framed(REC)) + b"\x00", "data after the end of the compressed stream"),
    (frame(framed(REC)) + bytes(5000), "data after the end of the compressed stream"),
    (b"", "the compressed stream ends before its frame does"),
    (b"not zstd at all", "compressed stream is malformed: "),
    (frame(struct.pack(">I", A.MAX_RECORD + 1)), "record 0 of 16777217 bytes exceeds 16777216"),
    (frame(framed(REC) + struct.pack(">I", 2**32 - 1)), "record 1 of 4294967295 bytes exceeds 16777216"),
    (frame(framed(REC) + struct.pack(">I", 10) + b"12345"), "the archive ends inside record 1"),
    (frame(framed(REC) + b"\x00\x00"), "the archive ends inside record 1"),
    (frame(framed(b"")), "record 0 is not canonical CBOR: malformed CBOR: "),
    (frame(framed(b"\x18\x01")), "record 0 is not canonical CBOR: CBOR is not in canonical form"),
    (frame(framed(REC, b"\xf9\x3c\x00")), "record 1 is not canonical CBOR: CBOR value of type float is not allowed"),
    (frame(framed(REC + b"\x00")), "record 0 is not canonical CBOR: CBOR is not in canonical form"),
])
def test_hostile_bodies_are_refused_with_their_reason(body: bytes, reason: str) -> None:
    err = refusal(seal(body))
    assert str(err).startswith(reason) if reason.endswith(": ") else str(err) == reason


def test_a_frame_asking_for_a_huge_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=25)
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = c.compress(framed(REC)) + c.flush()
    assert str(refusal(seal(body))) == "compressed stream needs a zstd window over 8 MiB"


def test_records_come_before_an_error_found_at_the_very_end() -> None:
    """What consumers must expect: every record can be yielded and the archive still be refused."""
    got: list[Any] = []
    reader = A.open_archive(io.BytesIO(HEAD + b"".join(CHUNKS[:-1])), KEY)
    with raises_exactly(A.ArchiveError, match="^archive truncated after chunk 4$"):
        for r in reader.records():
            got.append(r)
    assert got == BIG_RECORDS[:3]  # record 3 ends in chunk 4, whose verdict waited for what follows it


def test_records_can_be_read_once() -> None:
    reader = A.open_archive(io.BytesIO(BIG), KEY)
    list(reader.records())
    with raises_exactly(A.ArchiveError, match="already been read"):
        list(reader.records())


def test_max_plain_bounds_the_decompressed_body() -> None:
    records = [["x", {"n": i}] for i in range(2000)]
    data = write(records)
    plain = sum(4 + len(wire.encode(r)) for r in records)
    assert read(data, max_plain=plain) == records
    assert str(refusal(data, max_plain=plain - 1)) == f"decompressed body exceeds {plain - 1} bytes"


# --- the writer -----------------------------------------------------------------------------------

@pytest.mark.parametrize("record, reason", [
    (["x", 1.5], "record 0 holds a float, which an archive cannot carry"),
    (["x", {1, 2}], "record 0 holds a set, which an archive cannot carry"),
    (["x", {"a": object()}], "record 0 holds a object, which an archive cannot carry"),
])
def test_the_writer_refuses_values_a_reader_would_refuse(record: Any, reason: str) -> None:
    with raises_exactly(A.ArchiveError) as info:
        write([["ok", {}], record])  # the first record is index 0 only if it fails
    assert str(info.value) == reason.replace("record 0", "record 1")


def test_the_writer_refuses_a_record_over_16_mib() -> None:
    with raises_exactly(A.ArchiveError, match="^record 0 of 16777237 bytes exceeds 16777216$"):
        write([b"x" * (16 * 1024 * 1024 + 16)])
    edge = b"x" * (16 * 1024 * 1024 - 5)  # exactly 16 MiB of CBOR
    assert len(wire.encode(edge)) == A.MAX_RECORD and read(write([edge], chunk_size=A.MAX_CHUNK)) == [edge]


@pytest.mark.parametrize("kw, match", [
    (dict(wrapping_key=KEY[:31]), "wrapping_key must be 32 bytes"),
    (dict(backup_id=BID + b"x"), "backup_id must be 16 bytes"),
    (dict(purpose="backup"), "purpose must be one of"),
    (dict(chunk_size=4095), "chunk_size must be"),
    (dict(chunk_size=A.MAX_CHUNK + 1), "chunk_size must be"),
    (dict(level=0), "level must be"),
    (dict(level=20), "level must be"),
    (dict(data_key=bytes(16)), "data_key must be 32 bytes"),
    (dict(nonce_prefix=bytes(8)), "nonce_prefix must be 7 bytes"),
    (dict(created_at=-1), "created_at"),
])
def test_the_writer_checks_its_parameters(kw: dict[str, Any], match: str) -> None:
    args = dict(wrapping_key=KEY, backup_id=BID, purpose="export") | kw
    with raises_exactly(ValueError, match=match):
        A.write_archive(io.BytesIO(), [], **args)


def test_progress_is_reported_both_ways() -> None:
    seen_w: list[int] = []
    out = io.BytesIO()
    A.write_archive(out, BIG_RECORDS, wrapping_key=KEY, backup_id=BID, purpose="export", chunk_size=4096, on_progress=seen_w.append)
    seen_r: list[int] = []
    list(A.open_archive(io.BytesIO(out.getvalue()), KEY).records(on_progress=seen_r.append))
    for seen in (seen_w, seen_r):
        assert len(seen) == 6 and seen == sorted(seen) and seen[-1] == len(out.getvalue())


# --- bounded memory -------------------------------------------------------------------------------

def _traced(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_20_mb_archive_is_written_and_read_with_bounded_memory(tmp_path: Path) -> None:
    """20,000 records of 1 KiB of random bytes (incompressible): the archive is ~20.6 MB, written from a
    generator to a file and read back from the file; neither direction's peak comes near its size."""
    path = tmp_path / "big.parley"
    seed = random.Random(7)

    def records() -> Any:
        for i in range(20_000):
            yield ["file", {"attachment": "a", "offset": i, "data": seed.randbytes(1024)}]

    def do_write() -> None:
        with path.open("wb") as f:
            A.write_archive(f, records(), wrapping_key=KEY, backup_id=BID, purpose="export")

    peak_w = _traced(do_write)
    size = path.stat().st_size
    assert size > 20_000_000
    count = 0

    def do_read() -> None:
        nonlocal count
        with path.open("rb") as f:
            for r in A.open_archive(f, KEY).records():
                count += 1

    peak_r = _traced(do_read)
    assert count == 20_000
    assert peak_w < 3_000_000, peak_w
    assert peak_r < 3_000_000, peak_r


def test_a_decompression_bomb_is_streamed_not_inflated() -> None:
    """1 GiB of records of zeros that compresses to a few hundred KiB: reading stops at max_plain, and
    memory stays at one decompressed piece and one record, however large the body claims to be."""
    c = zstandard.ZstdCompressor(level=3).compressobj()
    one = framed(wire.encode(bytes(65536 - 5))) * 256  # 16 MiB of 64 KiB records
    body = b"".join(c.compress(one) for _ in range(64)) + c.flush()
    assert len(body) < 200_000
    data = seal(body)

    def bomb() -> None:
        seen = 0
        with raises_exactly(A.ArchiveError, match=f"^decompressed body exceeds {64 << 20} bytes$"):
            for _ in A.open_archive(io.BytesIO(data), KEY, max_plain=64 << 20).records():
                seen += 1  # each record dropped, as a consumer writing them out would
        assert seen > 900

    assert _traced(bomb) < 12_000_000


def test_a_16_mib_record_of_zeros_costs_a_bounded_amount() -> None:
    body = frame(struct.pack(">I", A.MAX_RECORD) + bytes(A.MAX_RECORD))
    data = seal(body)
    assert len(data) < 10_000

    def bomb() -> None:
        assert str(refusal(data)).startswith("record 0 is not canonical CBOR")

    assert _traced(bomb) < 3 * A.MAX_RECORD + 10_000_000


# --- known answers (tests/vectors/parley_backup.json; generated by our implementation, not published) ---

VECTORS = "parley_backup.json"


def _reference_open(archive: bytes, wrapping_key: bytes) -> tuple[dict[str, Any], bytes]:
    """PROTOCOL.md §12.2 written out with the cryptography library directly (not bridge.backup.archive):
    the header fields and the compressed stream."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert archive[:8] == b"PARLEYB1"
    n = int.from_bytes(archive[8:12], "big")
    header = wire.decode(archive[12:12 + n])
    version, bid, purpose, chunk_size, prefix, created_at, wrap_nonce, wrapped = header
    aad_wrap = b"parley/2026-11-30/archive-data-key" + wire.encode(header[:6])
    data_key = AESGCM(wrapping_key).decrypt(wrap_nonce, wrapped, aad_wrap)
    aad = hashlib.sha256(archive[:12 + n]).digest()
    body, size = archive[12 + n:], chunk_size + 16
    pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    out = b"".join(AESGCM(data_key).decrypt(prefix + i.to_bytes(4, "big") + bytes([i == len(pieces) - 1]), ct, aad)
                   for i, ct in enumerate(pieces))
    return dict(version=version, backup_id=bid, purpose=purpose, chunk_size=chunk_size, nonce_prefix=prefix,
                created_at=created_at, wrap_nonce=wrap_nonce, data_key=data_key), out


def test_the_archive_vectors_cover_what_they_must() -> None:
    names = [v["name"] for v in load(VECTORS)["vectors"]]
    assert {"archive: empty record list", "archive: a few records", "archive: three chunks of 4096"} <= set(names)
    assert sum(n.startswith("negative archive:") for n in names) >= 8
    multi = next(v for v in load(VECTORS)["vectors"] if v["name"] == "archive: three chunks of 4096")
    assert multi["input"]["chunk_size"] == 4096 and multi["expected"]["chunks"] >= 3


@pytest.mark.parametrize("vec", [c for c in cases(VECTORS) if c.id.startswith(("archive:", "negative archive:"))])
def test_archive_vector(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    key = h(i["wrapping_key"])
    if "error" in e:
        cls = {"ArchiveError": A.ArchiveError, "WrongKey": A.WrongKey}[e["error"]]
        with raises_exactly(cls) as info:
            for _ in A.open_archive(io.BytesIO(h(i["archive"])), key).records():
                pass
        assert str(info.value) == e["reason"]
        return
    archive, compressed = h(e["archive"]), h(e["compressed"])
    records = [wire.decode(h(r), max_size=A.MAX_RECORD) for r in i["records"]]
    assert [wire.encode(r).hex() for r in records] == i["records"]
    # decrypt -> the compressed stream (ours, and the spec written out with the raw library)
    reader = A.open_archive(io.BytesIO(archive), key)
    assert b"".join(reader.chunks()) == compressed
    fields, ref_stream = _reference_open(archive, key)
    assert ref_stream == compressed and fields["data_key"].hex() == i["data_key"]
    assert (fields["purpose"], fields["chunk_size"], fields["created_at"]) == (i["purpose"], i["chunk_size"], i["created_at"])
    assert h(e["header"]) == archive[:len(h(e["header"]))] and reader.header.wrapped_key.hex() == e["wrapped_key"]
    # decompress -> the records
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compressed) == h(e["plain"])
    assert list(A.open_archive(io.BytesIO(archive), key).records()) == records
    # encrypt(compressed) with the fixed values -> the archive, byte for byte
    fixed = dict(created_at=i["created_at"], data_key=h(i["data_key"]), nonce_prefix=h(i["nonce_prefix"]), wrap_nonce=h(i["wrap_nonce"]))
    out = io.BytesIO()
    size = A.seal_compressed(out, compressed, wrapping_key=key, backup_id=h(i["backup_id"]), purpose=i["purpose"],
                             chunk_size=i["chunk_size"], **fixed)
    assert out.getvalue() == archive and size == len(archive)
    # write_archive with the same values: the same bytes wherever this zstd compresses as the recorded one did
    out = io.BytesIO()
    info = A.write_archive(out, records, wrapping_key=key, backup_id=h(i["backup_id"]), purpose=i["purpose"],
                           chunk_size=i["chunk_size"], level=i["level"], **fixed)
    assert info["plain_bytes"] == len(h(e["plain"])) and info["records"] == len(records)
    assert list(A.open_archive(io.BytesIO(out.getvalue()), key).records()) == records
    c = zstandard.ZstdCompressor(level=i["level"]).compressobj()
    if c.compress(h(e["plain"])) + c.flush() == compressed:
        assert out.getvalue() == archive


def test_the_generator_keeps_a_recorded_stream_another_zstd_made() -> None:
    """--check must not depend on the installed zstd: a recorded stream that still decompresses to the
    records is reused; one that does not is replaced."""
    from scripts import backup_vectors as BV

    plain = BV.framed(BV.FEW)
    other = zstandard.ZstdCompressor(level=19).compress(plain)  # another compressor's output, same records
    assert other != BV._zstd(plain)
    assert BV._compress("x", plain, {"x": other.hex()}) == other
    assert BV._compress("x", plain, {"x": BV._zstd(b"something else").hex()}) == BV._zstd(plain)
    assert BV._compress("x", plain, {"x": "00"}) == BV._zstd(plain)


def test_the_spec_states_the_labels_and_limits_of_the_code() -> None:
    """docs/PROTOCOL.md §12.1/§12.2 and §11 name the same labels and numbers as the code."""
    from bridge.backup import recovery as R

    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    spec = doc[doc.index("### 12.1 Recovery key"):doc.index("### 12.3 Archive records")]
    limits = doc[doc.index("## 11. Every limit"):doc.index("## 12. Backups")]
    for label in (R.CHECKSUM_LABEL, R.BACKUP_KEY_LABEL, R.AUTH_KEY_LABEL, R.ID_KEY_LABEL, R.BACKUP_ID_LABEL, A.WRAP_LABEL, A.MAGIC):
        assert f'"{label.decode()}"' in spec or f"`{label.decode()}`" in spec, label
    for number in (f"{A.MAX_RECORD:,}".replace(",", " "), f"{A.MAX_CHUNK:,}".replace(",", " "), str(A.MIN_CHUNK), str(A.MAX_HEADER)):
        assert number in spec and number in limits, number
    assert "64 GiB" in spec and "64 GiB" in limits and A.MAX_PLAIN == 64 << 30
    assert "8 MiB" in spec and "8 MiB" in limits and A.MAX_WINDOW == 8 << 20
    assert "1024" in spec and R.MAX_INPUT == 1024
