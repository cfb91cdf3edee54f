"""Known-answer tests: every derivation and encoding of the E2E layer against tests/vectors/*.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.exact import raises_exactly as raises_class
from tests.vectors_loader import cases, error_class, h, load

from bridge.crypto import chain, kdf, ratchet, sealed, session
from bridge.crypto import primitives as P
from bridge.crypto.ratchet import Header
from bridge.protocol.prekeys import Bundle

CRYPTO_FILES = [
    "rfc5869_hkdf.json", "rfc4231_hmac.json", "rfc7748_x25519.json", "rfc8032_ed25519.json",
    "libsignal_chain_key.json", "parley_kdf_rk.json", "parley_kdf_ck.json", "parley_message_keys.json",
    "parley_pqxdh_kdf.json", "parley_header.json", "parley_encrypt.json", "parley_pqxdh.json",
    "parley_session.json", "parley_sealed.json",
]


def raises_exactly(vec: dict[str, Any]) -> Any:
    """Context manager: the vector's named error, and exactly that class."""
    return pytest.raises(error_class(vec["expected"]["error"]))


def check_exact(excinfo: Any, vec: dict[str, Any]) -> None:
    assert excinfo.type is error_class(vec["expected"]["error"]), excinfo.value


@pytest.mark.parametrize("filename", CRYPTO_FILES)
def test_vector_files_are_well_formed(filename: str) -> None:
    data = load(filename)
    assert data["family"] and data["description"]
    for v in data["vectors"]:
        assert set(v) == {"name", "input", "expected"}
        assert v["name"].startswith("negative") == ("error" in v["expected"])


@pytest.mark.parametrize("vec", cases("rfc5869_hkdf.json"))
def test_rfc5869_hkdf(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    salt = h(i["salt"]) or None  # RFC: absent/empty salt = HashLen zeros
    assert P.hkdf_sha256(h(i["ikm"]), salt=salt, info=h(i["info"]), length=i["length"]).hex() == e["okm"]
    assert P.hmac_sha256(salt or bytes(32), h(i["ikm"])).hex() == e["prk"]


@pytest.mark.parametrize("vec", cases("rfc4231_hmac.json"))
def test_rfc4231_hmac(vec: dict[str, Any]) -> None:
    assert P.hmac_sha256(h(vec["input"]["key"]), h(vec["input"]["data"])).hex() == vec["expected"]["mac"]


@pytest.mark.parametrize("vec", cases("rfc7748_x25519.json"))
def test_rfc7748_x25519(vec: dict[str, Any]) -> None:
    i = vec["input"]
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            P.x25519_dh(h(i["scalar"]), h(i["u"]))
        check_exact(ei, vec)
        return
    assert P.x25519_dh(h(i["scalar"]), h(i["u"])).hex() == vec["expected"]["output"]
    if i["u"] == "09" + "00" * 31:
        assert P.x25519_public(h(i["scalar"])).hex() == vec["expected"]["output"]


@pytest.mark.parametrize("vec", cases("rfc8032_ed25519.json"))
def test_rfc8032_ed25519(vec: dict[str, Any]) -> None:
    i = vec["input"]
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            P.ed25519_verify(h(i["public"]), h(i["signature"]), h(i["message"]))
        check_exact(ei, vec)
        return
    assert P.ed25519_public(h(i["secret"])).hex() == i["public"]
    assert P.ed25519_sign(h(i["secret"]), h(i["message"])).hex() == i["signature"]
    P.ed25519_verify(h(i["public"]), h(i["signature"]), h(i["message"]))


@pytest.mark.parametrize("vec", cases("libsignal_chain_key.json"))
def test_libsignal_chain_key(vec: dict[str, Any]) -> None:
    ck, info = h(vec["input"]["chain_key"]), h(vec["input"]["info"])
    next_ck, mk = chain.step(ck)
    keys = kdf.message_keys(mk, info=info)
    assert next_ck.hex() == vec["expected"]["next_chain_key"]
    assert keys.enc_key.hex() == vec["expected"]["cipher_key"]
    assert keys.auth_key.hex() == vec["expected"]["mac_key"]


@pytest.mark.parametrize("vec", cases("parley_kdf_rk.json"))
def test_kdf_rk(vec: dict[str, Any]) -> None:
    i = vec["input"]
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            kdf.kdf_rk(h(i["rk"]), h(i["dh_out"]))
        check_exact(ei, vec)
        return
    rk, ck = kdf.kdf_rk(h(i["rk"]), h(i["dh_out"]))
    assert (rk.hex(), ck.hex()) == (vec["expected"]["rk"], vec["expected"]["ck"])


@pytest.mark.parametrize("vec", cases("parley_kdf_ck.json"))
def test_kdf_ck(vec: dict[str, Any]) -> None:
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            kdf.kdf_ck(h(vec["input"]["ck"]))
        check_exact(ei, vec)
        return
    ck, mk = kdf.kdf_ck(h(vec["input"]["ck"]))
    assert (ck.hex(), mk.hex()) == (vec["expected"]["ck"], vec["expected"]["mk"])


@pytest.mark.parametrize("vec", cases("parley_message_keys.json"))
def test_message_keys(vec: dict[str, Any]) -> None:
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            kdf.message_keys(h(vec["input"]["mk"]))
        check_exact(ei, vec)
        return
    k = kdf.message_keys(h(vec["input"]["mk"]))
    assert (k.enc_key.hex(), k.auth_key.hex(), k.iv.hex()) == (vec["expected"]["enc_key"], vec["expected"]["auth_key"], vec["expected"]["iv"])


@pytest.mark.parametrize("vec", cases("parley_pqxdh_kdf.json"))
def test_pqxdh_kdf(vec: dict[str, Any]) -> None:
    dhs = [h(d) for d in vec["input"]["dh"]]
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            kdf.pqxdh_sk(dhs, h(vec["input"]["kem_ss"]))
        check_exact(ei, vec)
        return
    assert kdf.pqxdh_sk(dhs, h(vec["input"]["kem_ss"])).hex() == vec["expected"]["sk"]


@pytest.mark.parametrize("vec", cases("parley_header.json"))
def test_header(vec: dict[str, Any]) -> None:
    i = vec["input"]
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            Header.decode(h(i["encoded"]))
        check_exact(ei, vec)
        return
    hd = Header(h(i["dh"]), i["pn"], i["n"])
    assert hd.encode().hex() == vec["expected"]["encoded"]
    assert Header.decode(h(vec["expected"]["encoded"])) == hd


@pytest.mark.parametrize("vec", cases("parley_encrypt.json"))
def test_encrypt(vec: dict[str, Any]) -> None:
    i = vec["input"]
    ad = h(i["ad"]) + h(i["header"])
    if "error" in vec["expected"]:
        with raises_exactly(vec) as ei:
            chain.decrypt(h(i["mk"]), h(i["ciphertext"]), ad)
        check_exact(ei, vec)
        return
    ct = chain.encrypt(h(i["mk"]), h(i["plaintext"]), ad)
    assert ct.hex() == vec["expected"]["ciphertext"]
    assert chain.decrypt(h(i["mk"]), ct, ad) == h(i["plaintext"])


def _local(d: dict[str, Any]) -> session.LocalIdentity:
    return session.LocalIdentity(d["installation_id"], h(d["signing_priv"]), h(d["signing_pub"]), h(d["identity_priv"]), h(d["identity_pub"]))


def _remote(d: dict[str, Any]) -> session.RemoteInstallation:
    return session.RemoteInstallation(d["installation_id"], h(d["signing_pub"]), h(d["identity_pub"]))


@pytest.mark.parametrize("vec", cases("parley_pqxdh.json"))
def test_pqxdh_responder(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    if "bundle" in i:  # initiator-side negative
        with raises_exactly(vec) as ei:
            session.initiate(_local(i["alice"]), _remote(i["bob"]), Bundle.decode(h(i["bundle"])))
        check_exact(ei, vec)
        return
    run = lambda: session.accept(  # noqa: E731
        _local(i["bob"]), _remote(i["alice"]), h(i["message"]),
        spk_priv=h(i["spk_priv"]), otpk_priv=h(i["otpk_priv"]), pqpk_seed=h(i["pqpk_seed"]), ratchet_priv=h(i["bob_ratchet_priv"]),
    )
    if "error" in e:
        with raises_exactly(vec) as ei:
            run()
        check_exact(ei, vec)
        return
    info = session.peek(h(i["message"]))
    assert info.is_prekey and info.sid.hex() == e["sid"] and info.identity_pub.hex() == i["alice"]["identity_pub"]
    ids = i["prekey_ids"]  # the ids Bob stored his private prekeys under, as the message names them
    assert (info.spk_id, info.otpk_id, info.pqpk_kind, info.pqpk_id) == (ids["spk_id"], ids["otpk_id"], ids["pqpk_kind"], ids["pqpk_id"])
    # SK: the PQXDH layer alone
    from bridge.crypto import pqxdh
    parsed = session._parse(h(i["message"]))
    assert parsed.ephemeral_pub is not None and parsed.ephemeral_pub.hex() == e["ephemeral_pub"]
    assert parsed.kem_ct is not None
    sk, ad, sid = pqxdh.respond(
        h(i["bob"]["identity_priv"]), h(i["bob"]["identity_pub"]), i["bob"]["installation_id"], i["alice"]["installation_id"],
        h(i["alice"]["identity_pub"]), parsed.ephemeral_pub, parsed.kem_ct,
        info.spk_id, info.otpk_id, info.pqpk_kind, info.pqpk_id,
        spk_priv=h(i["spk_priv"]), otpk_priv=h(i["otpk_priv"]), pqpk_seed=h(i["pqpk_seed"]),
    )
    assert (sk.hex(), ad.hex(), sid.hex()) == (e["sk"], e["ad"], e["sid"])
    s, pt = run()
    assert pt.hex() == e["plaintext"]
    assert s.sid.hex() == e["sid"] and s.ad.hex() == e["ad"] and s.remote_iid == i["alice"]["installation_id"]


@pytest.mark.parametrize("vec", cases("parley_session.json"))
def test_full_session(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    alice, bob = _local(i["alice"]), _local(i["bob"])
    ra = session.RemoteInstallation(alice.installation_id, alice.signing_pub, alice.identity_pub)
    states: dict[str, session.Session | None] = {"alice": session.Session.from_bytes(h(i["alice_session"])), "bob": None}
    for step in i["steps"]:
        if step["op"] == "send":
            st = states[step["sender"]]
            assert st is not None
            states[step["sender"]], msg = session.encrypt(st, h(step["plaintext"]))
            assert msg.hex() == step["message"]
        elif step["op"] == "deliver":
            st = states[step["to"]]
            if st is None:
                st, pt = session.accept(bob, ra, h(step["message"]), spk_priv=h(i["spk_priv"]), otpk_priv=h(i["otpk_priv"]),
                                        pqpk_seed=h(i["pqpk_seed"]), ratchet_priv=h(step["ratchet_priv"]))
            else:
                st, pt = session.decrypt(st, h(step["message"]), ratchet_priv=h(step["ratchet_priv"]))
            states[step["to"]] = st
            assert pt.hex() == step["plaintext"]
        else:
            st = states[step["to"]]
            assert st is not None
            with pytest.raises(error_class(step["error"])):
                session.decrypt(st, h(step["message"]))
    assert states["alice"] is not None and states["bob"] is not None
    assert states["alice"].to_bytes().hex() == e["alice_session"]
    assert states["bob"].to_bytes().hex() == e["bob_session"]


@pytest.mark.parametrize("vec", cases("parley_sealed.json"))
def test_sealed_open(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    if "error" in e:
        with raises_exactly(vec) as ei:
            sealed.unseal(h(i["identity_priv"]), i["own_iid"], h(i["payload"]))
        check_exact(ei, vec)
        return
    u = sealed.unseal(h(i["identity_priv"]), i["own_iid"], h(i["payload"]))
    assert (u.sender_iid, u.sender_record.hex(), u.message.hex()) == (e["sender_iid"], e["sender_record"], e["message"])


# --- primitives: what the published vectors do not pin ---------------------------------------

@pytest.mark.parametrize("length", [0, 1, 16, 20, 31, 33, 64])
def test_forged_short_or_padded_hmac_tag_refused(length: int) -> None:
    """An attacker who can match only a prefix of the tag (16 bytes is 2^128 work, not 2^256) or who
    appends bytes to the genuine tag gets nothing: only the full 32-byte HMAC-SHA256 verifies."""
    key, data = P.random_bytes(32), b"AD || header || ciphertext"
    full = P.hmac_sha256(key, data)
    tag = (full + bytes(32))[:length]  # a correct prefix of the genuine tag, or the genuine tag plus padding
    with raises_class(P.DecryptError):
        P.hmac_sha256_verify(key, data, tag)
    P.hmac_sha256_verify(key, data, full)  # the genuine full tag still verifies
    for i in (0, 15, 16, 31):  # and a single changed byte anywhere in it does not
        with raises_class(P.DecryptError):
            P.hmac_sha256_verify(key, data, full[:i] + bytes([full[i] ^ 1]) + full[i + 1:])


def test_all_zero_x25519_secret_refused_even_when_the_backend_returns_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7748 §6.1: the caller must check for the all-zero output. OpenSSL (through pyca/cryptography)
    refuses it itself today; Parley's own check must hold if a backend ever hands it back (older OpenSSL,
    another library), so the peer's low-order point cannot force a known shared secret."""
    real = P.x25519

    class Priv:
        def __init__(self, raw: bytes) -> None:
            self.key = real.X25519PrivateKey.from_private_bytes(raw)

        @classmethod
        def from_private_bytes(cls, raw: bytes) -> "Priv":
            return cls(raw)

        def exchange(self, pub: Any) -> bytes:
            try:
                return self.key.exchange(pub)
            except ValueError:  # the lenient backend: low-order point in, all-zero secret out
                return bytes(32)

    monkeypatch.setattr(P, "x25519", SimpleNamespace(X25519PrivateKey=Priv, X25519PublicKey=real.X25519PublicKey))
    scalar = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    for low_order in (bytes(32), b"\x01" + bytes(31)):
        with raises_class(P.CryptoError, match="all-zero"):
            P.x25519_dh(scalar, low_order)
    # the lenient backend is otherwise genuine: RFC 7748 §6.1's shared secret still comes out
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert P.x25519_dh(scalar, bob_pub).hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


# --- scripts/gen_vectors.py --check covers every family ------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def run_check(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_vectors.py"), "--check", *extra],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)


def test_gen_vectors_check_covers_every_family() -> None:
    """--check re-derives or verifies every file in tests/vectors (not only the crypto ones), and names
    the families it can check in the decrypt direction only, with the reason."""
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(p.name for p in (ROOT / "tests" / "vectors").glob("*.json"))
    assert set(CRYPTO_FILES) <= set(files)
    for name in files:
        assert f"checked {name}" in result.stdout, result.stdout
    for name, why in (("parley_pqxdh.json", "ML-KEM"), ("parley_session.json", "ML-KEM"), ("parley_sealed.json", "HPKE")):
        assert any(line.strip().startswith(f"{name}: ") and why in line for line in result.stdout.splitlines()), result.stdout


def test_gen_vectors_check_refuses_a_file_no_family_covers(tmp_path: Path) -> None:
    copy = tmp_path / "vectors"
    shutil.copytree(ROOT / "tests" / "vectors", copy)
    (copy / "stray.json").write_text('{"source": "x", "vectors": [{"name": "y"}]}\n')
    result = run_check("--vectors", str(copy))
    assert result.returncode == 1 and "DIFFERS: stray.json" in result.stdout, result.stdout


def _flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def _vec(data: dict[str, Any], name_start: str) -> dict[str, Any]:
    return next(v for v in data["vectors"] if v["name"].startswith(name_start))


def _steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return data["vectors"][0]["input"]["steps"]


TAMPER = {
    "pqxdh: expected SK": ("parley_pqxdh.json", lambda d: _vec(d, "respond: with").__setitem__(
        "expected", {**_vec(d, "respond: with")["expected"], "sk": _flip_hex(_vec(d, "respond: with")["expected"]["sk"])})),
    "pqxdh: expected plaintext": ("parley_pqxdh.json", lambda d: _vec(d, "respond: without")["expected"].__setitem__(
        "plaintext", _vec(d, "respond: without")["expected"]["plaintext"] + "00")),
    "pqxdh: error loosened to the base class": ("parley_pqxdh.json", lambda d: _vec(d, "negative: ratchet tag")["expected"].__setitem__(
        "error", "CryptoError")),
    "session: a sent message": ("parley_session.json", lambda d: next(s for s in _steps(d) if s["op"] == "send").__setitem__(
        "message", _flip_hex(next(s for s in _steps(d) if s["op"] == "send")["message"]))),
    "session: final Bob state": ("parley_session.json", lambda d: d["vectors"][0]["expected"].__setitem__(
        "bob_session", d["vectors"][0]["expected"]["bob_session"][:-2] + "00")),
    "session: replay error": ("parley_session.json", lambda d: next(s for s in _steps(d) if s["op"] == "replay").__setitem__(
        "error", "DecryptError")),
    "sealed: opened message": ("parley_sealed.json", lambda d: _vec(d, "open")["expected"].__setitem__(
        "message", _flip_hex(_vec(d, "open")["expected"]["message"]))),
    "sealed: the engine's quarantine reason": ("parley_sealed.json", lambda d: _vec(d, "engine-negative: record names another")["expected"].__setitem__(
        "engine", {"quarantined": "InvalidStatement: something else"})),
    "sealed: error loosened to the base class": ("parley_sealed.json", lambda d: _vec(d, "negative: AEAD tag")["expected"].__setitem__(
        "error", "CryptoError")),
}


@pytest.mark.parametrize("change", list(TAMPER))
def test_gen_vectors_check_catches_a_changed_recorded_vector(change: str, tmp_path: Path) -> None:
    """--check must fail when a recorded (not regenerable) vector no longer matches the code."""
    filename, tamper = TAMPER[change]
    copy = tmp_path / "vectors"
    shutil.copytree(ROOT / "tests" / "vectors", copy)
    data = json.loads((copy / filename).read_text())
    tamper(data)
    (copy / filename).write_text(json.dumps(data, indent=1) + "\n")
    result = run_check("--vectors", str(copy))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"DIFFERS: {filename}" in result.stdout
    assert all(f"DIFFERS: {other}" not in result.stdout for other in CRYPTO_FILES if other != filename)


def test_mlkem_keypair_honours_an_injected_seed() -> None:
    """The 64-byte seed is the private key (FIPS 203 d ‖ z): the same seed gives the same public key,
    through both entry points, and decapsulates what was encapsulated to it."""
    seed = bytes(range(64))
    got_seed, pub = P.mlkem768_keypair(seed)
    assert got_seed == seed and P.mlkem768_public(seed) == pub and len(pub) == P.MLKEM768_PUBLIC_LEN
    assert P.mlkem768_keypair(seed)[1] == pub != P.mlkem768_keypair()[1]
    ss, ct = P.mlkem768_encapsulate(pub)
    assert P.mlkem768_decapsulate(seed, ct) == ss


@pytest.mark.parametrize("length", [0, 16, 31, 32, 47])
def test_hpke_open_refuses_impossible_lengths_before_any_work(length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter than enc(32) ‖ tag(16): refused by length, the HPKE suite is never run on it."""
    opened: list[bytes] = []
    real = P._HPKE
    monkeypatch.setattr(P, "_HPKE", SimpleNamespace(decrypt=lambda ct, *a, **k: opened.append(ct) or real.decrypt(ct, *a, **k)))
    with raises_class(P.DecryptError, match="too short"):
        P.hpke_open(P.x25519_keypair()[0], P.random_bytes(length), b"info")
    assert opened == []


def test_hpke_open_shortest_possible_message_reaches_hpke(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty plaintext seals to exactly 48 bytes, and it opens."""
    priv, pub = P.x25519_keypair()
    sealed_empty = P.hpke_seal(pub, b"", b"info")
    assert len(sealed_empty) == 48
    opened: list[bytes] = []
    real = P._HPKE
    monkeypatch.setattr(P, "_HPKE", SimpleNamespace(decrypt=lambda ct, *a, **k: opened.append(ct) or real.decrypt(ct, *a, **k)))
    assert P.hpke_open(priv, sealed_empty, b"info") == b""
    with raises_class(P.DecryptError, match="open failed"):
        P.hpke_open(priv, P.random_bytes(48), b"info")
    assert opened == [sealed_empty, opened[1]] and len(opened[1]) == 48


def test_aes_gcm_shortest_blob_and_default_aad() -> None:
    """nonce(12) ‖ tag(16) is the shortest blob (an empty plaintext) and it opens; shorter is refused;
    the default associated data is empty on both sides."""
    key = P.random_bytes(32)
    blob = P.aes256_gcm_encrypt(key, b"")
    assert len(blob) == 28 and P.aes256_gcm_decrypt(key, blob) == b""
    assert P.aes256_gcm_decrypt(key, P.aes256_gcm_encrypt(key, b"x", b"")) == b"x"
    assert P.aes256_gcm_decrypt(key, P.aes256_gcm_encrypt(key, b"x"), b"") == b"x"
    for n in (0, 12, 27):
        with raises_class(P.DecryptError):
            P.aes256_gcm_decrypt(key, blob[:n])
    with raises_class(P.DecryptError):
        P.aes256_gcm_decrypt(key, blob, b"other aad")


def test_injected_randomness_is_used() -> None:
    """Every primitive that takes injected randomness uses it (known-answer vectors depend on it)."""
    seed = bytes(range(32))
    assert P.ed25519_keypair(seed) == (seed, P.ed25519_public(seed))
    assert P.x25519_keypair(seed) == (seed, P.x25519_public(seed))
    key, nonce = P.random_bytes(32), bytes(12)
    blob = P.aes256_gcm_encrypt(key, b"pt", b"ad", nonce=nonce)
    assert blob[:12] == nonce and blob == P.aes256_gcm_encrypt(key, b"pt", b"ad", nonce=nonce)


def test_scrypt_defaults_match_the_reference() -> None:
    """primitives.scrypt's defaults are r=8, p=1, 32 bytes (the key file format relies on them);
    checked against Python's own hashlib.scrypt (OpenSSL)."""
    import hashlib

    pw, salt = b"correct horse", bytes(range(16))
    assert P.scrypt(pw, salt, n=16) == hashlib.scrypt(pw, salt=salt, n=16, r=8, p=1, dklen=32)
    assert P.scrypt(pw, salt, n=16, r=1, p=2, length=40) == hashlib.scrypt(pw, salt=salt, n=16, r=1, p=2, dklen=40)


@pytest.mark.parametrize("length", [0, 1, 15, 17, 31, 33])
def test_cbc_ciphertext_that_is_not_whole_blocks_refused(length: int) -> None:
    with raises_class(P.DecryptError):
        P.aes256_cbc_decrypt(bytes(32), bytes(16), bytes(length))
