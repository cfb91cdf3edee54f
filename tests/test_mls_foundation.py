"""MLS foundation (issue 14): the TLS codec (RFC 9420 §2.1), tree math (Appendix C), the cipher
suites' labelled operations (§5), and the vector runner (``python -m bridge.mls.vectors``): that it
counts, skips only unsupported suites, fails what it cannot check, and keys nothing to file names."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mls import treemath as tm
from bridge.mls.errors import UnsupportedSuite, VerifyError
from bridge.mls.suite import SUPPORTED, suite
from bridge.mls.tls import MAX_VARINT, DecodeError, Reader, Writer, decode_all, varint
from bridge.mls.vectors import check_case, main, run_file

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "mls"


# --- TLS codec ------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_varint_round_trips_in_its_shortest_form(n: int) -> None:
    enc = varint(n)
    assert len(enc) == (1 if n < 64 else 2 if n < 16384 else 4)
    r = Reader(enc)
    assert r.varint() == n
    assert r.done()


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x40\x3f\x00", "a 2-byte varint for 63"),
        (b"\x80\x00\x3f\xff\x00", "a 4-byte varint for 16383"),
        (b"\xc0\x00\x00\x00\x00\x00\x00\x01", "an 8-byte varint"),
        (b"\x40", "a 2-byte varint cut short"),
        (b"", "nothing"),
    ],
)
def test_malformed_varints_are_decode_errors(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        Reader(data).varint()


def test_a_vector_longer_than_its_input_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        Reader(b"\x05abc").opaque()


def test_optional_presence_byte_and_leftovers_are_checked() -> None:
    assert Reader(b"\x00").optional(lambda r: r.u8()) is None
    assert Reader(b"\x01\x07").optional(lambda r: r.u8()) == 7
    with pytest.raises(DecodeError, match="neither 0 nor 1"):
        Reader(b"\x02\x07").optional(lambda r: r.u8())
    with pytest.raises(DecodeError, match="left over"):
        decode_all(b"\x01\x02", lambda r: r.u8())
    # a vector's items must use its body exactly: a u16 item cannot straddle its end
    with pytest.raises(DecodeError):
        Reader(b"\x03\x00\x01\x00").vector(lambda r: r.u16())


def test_writer_vectors_and_optionals() -> None:
    w = Writer().u16(1).vector([1, 2], lambda x: x.to_bytes(2, "big")).optional(None, bytes).optional(b"z", bytes)
    assert w.bytes() == b"\x00\x01\x04\x00\x01\x00\x02\x00\x01z"


# --- tree math --------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 4, 8, 64])
def test_tree_math_relations(n: int) -> None:
    r = tm.root(n)
    for x in range(tm.node_width(n)):
        if not tm.is_leaf(x):
            assert tm.parent(tm.left(x), n) == x and tm.parent(tm.right(x), n) == x
        if x != r:
            assert tm.sibling(tm.sibling(x, n), n) == x
            assert tm.direct_path(x, n)[-1] == r
            assert len(tm.copath(x, n)) == len(tm.direct_path(x, n))
    with pytest.raises(ValueError):
        tm.parent(r, n)


# --- cipher suites ------------------------------------------------------------------

def test_only_suites_1_and_3_and_the_others_are_refused() -> None:
    assert SUPPORTED == {1, 3}
    assert suite(1).nk == 16 and suite(3).nk == 32
    for other in (2, 4, 7, 0x0A0A):
        with pytest.raises(UnsupportedSuite):
            suite(other)


@pytest.mark.parametrize("sid", sorted(SUPPORTED))
def test_labelled_operations_refuse_the_wrong_label_key_or_bytes(sid: int) -> None:
    cs = suite(sid)
    sk, pk = cs.signature_keypair()
    sig = cs.sign_with_label(sk, "LeafNodeTBS", b"content")
    assert cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig)
    assert not cs.verify_with_label(pk, "KeyPackageTBS", b"content", sig)
    assert not cs.verify_with_label(pk, "LeafNodeTBS", b"content!", sig)
    assert not cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not cs.verify_with_label(b"\x00" * 31, "LeafNodeTBS", b"content", sig)  # a malformed key is a failure, not a crash
    hk, hp = cs.hpke_keypair()
    kem_output, ct = cs.encrypt_with_label(hp, "UpdatePathNode", b"ctx", b"secret")
    assert cs.decrypt_with_label(hk, "UpdatePathNode", b"ctx", kem_output, ct) == b"secret"
    for args in (("Welcome", b"ctx", kem_output, ct), ("UpdatePathNode", b"other", kem_output, ct),
                 ("UpdatePathNode", b"ctx", kem_output, ct[:-1] + bytes([ct[-1] ^ 1])), ("UpdatePathNode", b"ctx", b"\x01", ct)):
        with pytest.raises(VerifyError):
            cs.decrypt_with_label(hk, *args)
    key, nonce = bytes(cs.nk), bytes(cs.nn)
    sealed = cs.seal(key, nonce, b"aad", b"pt")
    assert cs.open(key, nonce, b"aad", sealed) == b"pt"
    with pytest.raises(VerifyError):
        cs.open(key, nonce, b"other aad", sealed)
    assert cs.derive_key_pair(b"ikm") == cs.derive_key_pair(b"ikm") != cs.derive_key_pair(b"ikm2")


# --- the vector runner ------------------------------------------------------------------

def _cases(name: str) -> list[dict[str, Any]]:
    return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]


def test_the_runner_keys_nothing_to_file_names_and_counts_per_file(tmp_path: Path) -> None:
    mixed = _cases("tree-math.json")[:3] + _cases("crypto-basics.json")
    renamed = tmp_path / "whatever.json"
    renamed.write_text(json.dumps(mixed))
    t = run_file(renamed)
    supported = sum(1 for c in _cases("crypto-basics.json") if c["cipher_suite"] in SUPPORTED)
    assert (t.passed, t.failed, t.skipped) == (3 + supported, 0, len(_cases("crypto-basics.json")) - supported)


def test_a_wrong_value_fails_and_only_unsupported_suites_are_skipped() -> None:
    case = next(c for c in _cases("crypto-basics.json") if c["cipher_suite"] == 1)
    assert check_case(case) is None
    for path in (("derive_secret", "out"), ("encrypt_with_label", "ciphertext"), ("sign_with_label", "signature")):
        bad = copy.deepcopy(case)
        v = bad[path[0]][path[1]]
        bad[path[0]][path[1]] = ("1" if v[0] == "0" else "0") + v[1:]
        with pytest.raises(Exception):  # noqa: B017 - any failure; the runner counts it
            check_case(bad)
    other = copy.deepcopy(case)
    other["cipher_suite"] = 2
    assert check_case(other) == "skipped"
    math = copy.deepcopy(_cases("tree-math.json")[4])
    math["sibling"][3] = 99
    with pytest.raises(AssertionError, match=r"sibling\[3\]"):
        check_case(math)


def test_an_unknown_format_fails_and_the_exit_status_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "odd.json"
    f.write_text(json.dumps([{"some": "thing"}, _cases("tree-math.json")[0]]))
    assert main([str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}: 1 passed, 1 failed, 0 skipped" in out
    assert "not a case of any known vector format" in out
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_cases("tree-math.json")))
    assert main([str(good)]) == 0
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert main([str(broken)]) == 1


def test_the_command_line() -> None:
    r = subprocess.run([sys.executable, "-m", "bridge.mls.vectors", str(VECTORS / "tree-math.json"), str(VECTORS / "deserialization.json")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [f"{VECTORS / 'tree-math.json'}: 10 passed, 0 failed, 0 skipped",
                                     f"{VECTORS / 'deserialization.json'}: 14 passed, 0 failed, 0 skipped"]
