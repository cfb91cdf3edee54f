"""Vector checks of the parts with no module of their own: tree math (§4.2, Appendix C), the
cipher suites' labelled operations (§5) and the variable-length header (§2.1.2). Each takes one
case of its format (tests/vectors/mls/test-vectors.md) and raises on a failure; an unsupported
suite raises :class:`~bridge.mls.errors.UnsupportedSuite`."""

from __future__ import annotations

from typing import Any

from bridge.mls import treemath as tm
from bridge.mls.suite import suite
from bridge.mls.tls import Reader, varint

__all__ = ["tree_math", "crypto_basics", "deserialization", "expect"]


def expect(what: str, got: Any, want: Any) -> None:
    """Raise AssertionError naming ``what`` when ``got != want`` (hex for bytes)."""
    if got != want:
        g = got.hex() if isinstance(got, (bytes, bytearray)) else got
        w = want.hex() if isinstance(want, (bytes, bytearray)) else want
        raise AssertionError(f"{what}: got {g}, expected {w}")


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def _or_none(fn: Any, *args: Any) -> int | None:
    try:
        return fn(*args)  # type: ignore[no-any-return]
    except ValueError:
        return None


def tree_math(case: dict[str, Any]) -> None:
    n = case["n_leaves"]
    expect("n_nodes", tm.node_width(n), case["n_nodes"])
    expect("root", tm.root(n), case["root"])
    for i in range(case["n_nodes"]):
        expect(f"left[{i}]", _or_none(tm.left, i), case["left"][i])
        expect(f"right[{i}]", _or_none(tm.right, i), case["right"][i])
        expect(f"parent[{i}]", _or_none(tm.parent, i, n), case["parent"][i])
        expect(f"sibling[{i}]", _or_none(tm.sibling, i, n), case["sibling"][i])


def crypto_basics(case: dict[str, Any]) -> None:
    cs = suite(case["cipher_suite"])
    r = case["ref_hash"]
    expect("ref_hash", cs.ref_hash(r["label"], _h(r["value"])), _h(r["out"]))
    e = case["expand_with_label"]
    expect("expand_with_label", cs.expand_with_label(_h(e["secret"]), e["label"], _h(e["context"]), e["length"]), _h(e["out"]))
    d = case["derive_secret"]
    expect("derive_secret", cs.derive_secret(_h(d["secret"]), d["label"]), _h(d["out"]))
    t = case["derive_tree_secret"]
    expect("derive_tree_secret", cs.derive_tree_secret(_h(t["secret"]), t["label"], t["generation"], t["length"]), _h(t["out"]))
    s = case["sign_with_label"]
    pub, content = _h(s["pub"]), _h(s["content"])
    expect("sign_with_label: the given signature verifies", cs.verify_with_label(pub, s["label"], content, _h(s["signature"])), True)
    expect("sign_with_label: the given public key is the private key's", cs.signature_public(_h(s["priv"])), pub)
    ours = cs.sign_with_label(_h(s["priv"]), s["label"], content)
    expect("sign_with_label: our signature verifies", cs.verify_with_label(pub, s["label"], content, ours), True)
    expect("sign_with_label: another label does not verify", cs.verify_with_label(pub, s["label"] + "x", content, ours), False)
    c = case["encrypt_with_label"]
    priv, label, ctx, pt = _h(c["priv"]), c["label"], _h(c["context"]), _h(c["plaintext"])
    expect("encrypt_with_label: the given ciphertext opens", cs.decrypt_with_label(priv, label, ctx, _h(c["kem_output"]), _h(c["ciphertext"])), pt)
    kem_output, ct = cs.encrypt_with_label(_h(c["pub"]), label, ctx, pt)
    expect("encrypt_with_label: ours opens", cs.decrypt_with_label(priv, label, ctx, kem_output, ct), pt)


def deserialization(case: dict[str, Any]) -> None:
    """§2.1.2: ``vlbytes_header`` is the shortest varint of ``length``, and decodes back to it."""
    header = _h(case["vlbytes_header"])
    expect("header of length", varint(case["length"]), header)
    r = Reader(header)
    expect("length of header", r.varint(), case["length"])
    r.expect_end("header")
