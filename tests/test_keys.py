"""Tests for bridge.keys: sealed secrets at rest and wallet-key import."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from eth_account import Account
from tests.exact import raises_exactly

from bridge.crypto.primitives import ed25519_public, x25519_public
from bridge.keys import (
    KeyFileError,
    KeyFileMissing,
    KeyImportError,
    KeysError,
    Secrets,
    WrongPassphrase,
    generate_secrets,
    load_keyfile,
    open_secrets,
    save_keyfile,
    seal_secrets,
    wallet_key_from_env,
    wallet_key_from_hex,
    wallet_key_from_keystore,
)
from bridge.protocol.ids import installation_id

FAST_N = 2**12
ANVIL0_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def secret_strings(secrets: Secrets) -> list[str]:
    """Every spelling of the secret keys that must never leak."""
    out = []
    for key in (secrets.wallet_key, secrets.signing_key, secrets.identity_key, secrets.storage_key):
        out += [key.hex(), key.hex().upper(), repr(key)]
    return out


# --- Secrets -----------------------------------------------------------------

def test_generate_and_derived_values() -> None:
    s = generate_secrets(ANVIL0_KEY)
    assert s.wallet_key == ANVIL0_KEY
    assert s.address == ANVIL0
    assert s.signing_pub == ed25519_public(s.signing_key)
    assert s.identity_pub == x25519_public(s.identity_key)
    assert s.installation_id == installation_id(s.signing_pub, s.identity_pub)
    fresh = generate_secrets()
    assert fresh.address == Account.from_key(fresh.wallet_key).address
    keys = {fresh.wallet_key, fresh.signing_key, fresh.identity_key, fresh.storage_key, s.signing_key, s.storage_key}
    assert len(keys) == 6


def test_secrets_validation() -> None:
    good = generate_secrets()
    for field in ("wallet_key", "signing_key", "identity_key", "storage_key"):
        with raises_exactly(KeysError):
            Secrets(**{**_fields(good), field: b"\x01" * 31})
    for wallet in (bytes(32), N.to_bytes(32, "big"), b"\xff" * 32):
        with raises_exactly(KeysError):
            Secrets(**{**_fields(good), "wallet_key": wallet})
    with raises_exactly(KeysError):
        generate_secrets(bytes(32))


def _fields(s: Secrets) -> dict[str, bytes]:
    return {"wallet_key": s.wallet_key, "signing_key": s.signing_key, "identity_key": s.identity_key, "storage_key": s.storage_key}


def test_repr_hides_secrets() -> None:
    s = generate_secrets()
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert s.installation_id in text
        for leaked in secret_strings(s):
            assert leaked not in text


# --- sealing -------------------------------------------------------------------

def test_seal_open_round_trip() -> None:
    s = generate_secrets()
    blob = seal_secrets(s, "correct horse", scrypt_n=FAST_N)
    assert set(blob) == {"version", "kdf", "n", "r", "p", "salt", "cipher", "ciphertext"}
    assert (blob["version"], blob["kdf"], blob["n"], blob["cipher"]) == (1, "scrypt", FAST_N, "aes-256-gcm")
    json.dumps(blob)  # JSON-able
    text = json.dumps(blob)
    for leaked in secret_strings(s):
        assert leaked not in text
    assert open_secrets(json.loads(text), "correct horse") == s
    assert seal_secrets(s, "correct horse", scrypt_n=FAST_N)["salt"] != blob["salt"]


def test_passphrase_is_nfc_normalized() -> None:
    s = generate_secrets()
    blob = seal_secrets(s, "caf\u00e9", scrypt_n=FAST_N)
    assert open_secrets(blob, "cafe\u0301") == s


def test_wrong_passphrase() -> None:
    blob = seal_secrets(generate_secrets(), "right", scrypt_n=FAST_N)
    with raises_exactly(WrongPassphrase):
        open_secrets(blob, "wrong")


def test_header_is_authenticated() -> None:
    """Changing n/r/p/salt/ciphertext bits is detected (AAD binds the header)."""
    blob = seal_secrets(generate_secrets(), "pw", scrypt_n=FAST_N)
    ct = blob["ciphertext"]
    flipped = ct[:-1] + ("0" if ct[-1] != "0" else "1")
    for change in ({"ciphertext": flipped}, {"salt": "00" * 16}, {"n": FAST_N * 2}, {"r": 4}):
        with raises_exactly(WrongPassphrase):
            open_secrets({**blob, **change}, "pw")


@pytest.mark.parametrize(
    "change",
    [
        {"version": 2},
        {"version": True},
        {"version": "1"},
        {"kdf": "pbkdf2"},
        {"cipher": "aes-128-gcm"},
        {"n": 1000},
        {"n": 2**40},
        {"n": 4096.0},
        {"r": 0},
        {"p": -1},
        {"salt": "zz" * 16},
        {"salt": "AB" * 16},
        {"salt": "00" * 4},
        {"ciphertext": "00"},
        {"ciphertext": 5},
        {"extra": 1},
    ],
    ids=repr,
)
def test_junk_blob_is_key_file_error(change: dict) -> None:
    blob = seal_secrets(generate_secrets(), "pw", scrypt_n=FAST_N)
    with raises_exactly(KeyFileError):
        open_secrets({**blob, **change}, "pw")


def test_missing_field_and_non_dict() -> None:
    blob = seal_secrets(generate_secrets(), "pw", scrypt_n=FAST_N)
    del blob["salt"]
    for bad in (blob, [], "x", None):
        with raises_exactly(KeyFileError):
            open_secrets(bad, "pw")  # type: ignore[arg-type]


# --- key files -------------------------------------------------------------------

def test_keyfile_round_trip_mode_and_no_overwrite(tmp_path: Path) -> None:
    s = generate_secrets()
    path = tmp_path / "sub" / "keys.json"
    save_keyfile(path, s, "pw", scrypt_n=FAST_N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["keys.json"]  # no temporary file left behind
    assert json.loads(path.read_text())["n"] == FAST_N  # loading honours the stored cost
    assert load_keyfile(path, "pw") == s
    before = path.read_bytes()
    with raises_exactly(KeyFileError):
        save_keyfile(path, generate_secrets(), "pw", scrypt_n=FAST_N)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["keys.json"]


def test_keyfile_mode_under_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_keyfile(tmp_path / "k.json", generate_secrets(), "pw", scrypt_n=FAST_N)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600


def test_refuses_to_overwrite_through_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "k.json").symlink_to(victim)
    with raises_exactly(KeyFileError):
        save_keyfile(tmp_path / "k.json", generate_secrets(), "pw", scrypt_n=FAST_N)
    assert victim.read_text() == "keep me"


def test_wrong_passphrase_leaves_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keyfile(path, generate_secrets(), "right", scrypt_n=FAST_N)
    before = path.read_bytes()
    with raises_exactly(WrongPassphrase) as info:
        load_keyfile(path, "wrong")
    assert "wrong" in str(info.value).lower() and "right" not in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"\xff\xfe", b"[]", b"{}", b'{"version": 1}', b"1" * 5000, b" " * 70_000],
    ids=["empty", "text", "binary", "list", "object", "partial", "big-int", "too-large"],
)
def test_corrupt_keyfile(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with raises_exactly(KeyFileError):
        load_keyfile(path, "pw")


def test_truncated_keyfile(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keyfile(path, generate_secrets(), "pw", scrypt_n=FAST_N)
    data = path.read_bytes()
    path.chmod(0o600)
    path.write_bytes(data[: len(data) // 2])
    with raises_exactly(KeyFileError):
        load_keyfile(path, "pw")


def test_missing_keyfile(tmp_path: Path) -> None:
    with raises_exactly(KeyFileMissing):
        load_keyfile(tmp_path / "nope.json", "pw")


# --- wallet import ------------------------------------------------------------------

def test_wallet_key_from_hex() -> None:
    hexkey = ANVIL0_KEY.hex()
    for text in (hexkey, "0x" + hexkey, "0X" + hexkey.upper(), f"  0x{hexkey}\n"):
        assert wallet_key_from_hex(text) == ANVIL0_KEY
    for bad in ("", "0x", hexkey[:-1], hexkey + "00", "0x" + "00" * 32, N.to_bytes(32, "big").hex(),
                "g" * 64, "0x" + hexkey[:-1] + "\uff10", "0x 0x" + hexkey):
        with raises_exactly(KeyImportError) as info:
            wallet_key_from_hex(bad)
        assert "\n" not in str(info.value)
        if len(bad) > 8:
            assert bad.strip() not in str(info.value)


def test_wallet_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    var = "PARLEY_TEST_WALLET_KEY"
    monkeypatch.delenv(var, raising=False)
    with raises_exactly(KeyImportError, match=f"{var} is not set"):
        wallet_key_from_env(var)
    monkeypatch.setenv(var, "   ")
    with raises_exactly(KeyImportError, match=f"{var} is empty"):
        wallet_key_from_env(var)
    garbage = "deadbeef" * 7 + "zzzzzzzz"
    monkeypatch.setenv(var, garbage)
    with raises_exactly(KeyImportError) as info:
        wallet_key_from_env(var)
    assert var in str(info.value) and garbage not in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv(var, "0x" + ANVIL0_KEY.hex())
    assert wallet_key_from_env(var) == ANVIL0_KEY


def _keystore(tmp_path: Path, password: str) -> Path:
    doc = Account.encrypt(ANVIL0_KEY, password, kdf="scrypt", iterations=2**4)
    path = tmp_path / "keystore.json"
    path.write_text(json.dumps(doc))
    return path


def test_wallet_key_from_keystore(tmp_path: Path) -> None:
    path = _keystore(tmp_path, "ks-pass")
    assert wallet_key_from_keystore(path, "ks-pass") == ANVIL0_KEY
    pbkdf2 = tmp_path / "pbkdf2.json"
    pbkdf2.write_text(json.dumps(Account.encrypt(ANVIL0_KEY, "p2", kdf="pbkdf2", iterations=2)))
    assert wallet_key_from_keystore(pbkdf2, "p2") == ANVIL0_KEY


def test_keystore_wrong_password(tmp_path: Path) -> None:
    path = _keystore(tmp_path, "ks-pass")
    with raises_exactly(KeyImportError, match="wrong password") as info:
        wallet_key_from_keystore(path, "nope-nope")
    message = str(info.value)
    assert "nope-nope" not in message and ANVIL0_KEY.hex() not in message and "\n" not in message
    assert str(path) in message


def test_bad_keystores(tmp_path: Path) -> None:
    good = json.loads(_keystore(tmp_path, "pw").read_text())
    huge_n = json.loads(json.dumps(good))
    huge_n["crypto"]["kdfparams"]["n"] = 2**30
    broken = json.loads(json.dumps(good))
    broken["crypto"]["ciphertext"] = "zz"
    cases = {
        "missing": None,
        "notjson": "{{{",
        "list": [],
        "v1": {**good, "version": 1},
        "nocrypto": {"version": 3},
        "huge-n": huge_n,
        "broken": broken,
    }
    for name, doc in cases.items():
        path = tmp_path / f"{name}.json"
        if doc is not None:
            path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        with raises_exactly(KeyImportError) as info:
            wallet_key_from_keystore(path, "pw")
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
