"""The recovery key (bridge/backup/recovery.py; PROTOCOL.md §12.1): generation, the checksum, the forgiving
but strict parser and its one-line errors, and the keys HKDF derives from it. Known answers:
tests/vectors/parley_backup.json (at the end of this file)."""

from __future__ import annotations

import collections
import hashlib
import hmac
import re

import pytest

from bridge.backup import recovery as R
from bridge.crypto import primitives as P
from tests.exact import raises_exactly
from tests.vectors_loader import cases, load

#: A fixed, valid key (60 characters from a hash, then its checksum) so the typo tests are deterministic.
BODY = "".join(R.ALPHABET[b % 36] for b in hashlib.sha256(b"recovery-test").digest() * 2)[:60]
KEY = BODY + R.checksum(BODY)
ALICE = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
BOB = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_generate_gives_canonical_keys_that_parse_and_differ() -> None:
    keys = {R.generate() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert re.fullmatch(r"[a-z0-9]{64}", k)
        assert R.parse(k) == k
        assert k[60:] == R.checksum(k[:60])


def test_random_characters_are_drawn_by_rejection_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes 252..255 are redrawn, not folded modulo 36 (which would favour '0'-'3')."""
    feed = iter([bytes([252, 253, 254, 255, 0, 35, 36, 251]), bytes([71, 255, 3] + [0] * 20)])
    monkeypatch.setattr(R.secrets, "token_bytes", lambda n: next(feed)[:n])
    assert R._random_chars(6) == "0z0z" + R.ALPHABET[71 % 36] + "3"


def test_generated_characters_are_uniform() -> None:
    """Chi-square over 120,000 characters (35 degrees of freedom): a modulo bias gives ~235; p = 1e-8 is 100."""
    counts = collections.Counter("".join(R.generate()[:60] for _ in range(2000)))
    expected = 120000 / 36
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in R.ALPHABET)
    assert set(counts) == set(R.ALPHABET)
    assert chi2 < 100, chi2


def test_checksum_is_the_specified_function() -> None:
    v = int.from_bytes(hashlib.sha256(b"parley/2026-11-30/recovery-key-checksum" + BODY.encode()).digest()[:4], "big") % 36**4
    assert R.checksum(BODY) == "".join(R.ALPHABET[(v // 36**i) % 36] for i in (3, 2, 1, 0))


def test_every_single_typo_and_swap_of_a_key_is_refused() -> None:
    refused = 0
    for i in range(64):
        for c in R.ALPHABET:
            if c != KEY[i]:
                with raises_exactly(R.RecoveryKeyError, match="^recovery key checksum mismatch: probably a typo$"):
                    R.parse(KEY[:i] + c + KEY[i + 1:])
                refused += 1
    for i in range(63):
        if KEY[i] != KEY[i + 1]:
            with raises_exactly(R.RecoveryKeyError, match="checksum mismatch"):
                R.parse(KEY[:i] + KEY[i + 1] + KEY[i] + KEY[i + 2:])
    assert refused == 64 * 35


@pytest.mark.parametrize("typed", [
    KEY.upper(),
    R.display(KEY),
    R.display(KEY).upper().replace(" ", "-"),
    "\n".join(KEY[i:i + 16] for i in range(0, 64, 16)) + "\n",
    "  " + "\r\n".join(R.display(KEY).split(" ")) + "\t",
    "-".join(KEY),
])
def test_parse_forgives_case_spaces_dashes_and_newlines(typed: str) -> None:
    assert R.parse(typed) == KEY


@pytest.mark.parametrize("typed, reason", [
    (KEY[:63], "a recovery key has 64 characters, this one has 63"),
    (KEY + "a", "a recovery key has 64 characters, this one has 65"),
    ("", "a recovery key has 64 characters, this one has 0"),
    (R.display(KEY)[:10] + "!" + R.display(KEY)[10:], "bad character '!' at position 9 of the recovery key (only letters a-z and digits 0-9)"),
    (KEY[:20] + "_" + KEY[21:], "bad character '_' at position 21 of the recovery key (only letters a-z and digits 0-9)"),
    (KEY[:5] + "\u00e9" + KEY[6:], "bad character 'é' at position 6 of the recovery key (only letters a-z and digits 0-9)"),
    (KEY[:5] + "\u00a0" + KEY[5:], "bad character U+00A0 at position 6 of the recovery key (only letters a-z and digits 0-9)"),
    (KEY[:5] + "\u0130" + KEY[6:], "bad character 'İ' at position 6 of the recovery key (only letters a-z and digits 0-9)"),
    (KEY[:63] + ("0" if KEY[63] != "0" else "1"), "recovery key checksum mismatch: probably a typo"),
    ("a" * 1025, "a recovery key has 64 characters; this text has over 1024"),
])
def test_parse_names_the_problem_in_one_line(typed: str, reason: str) -> None:
    with raises_exactly(R.RecoveryKeyError) as info:
        R.parse(typed)
    assert str(info.value) == reason
    assert "\n" not in str(info.value)


def test_parse_refuses_what_is_not_text() -> None:
    with raises_exactly(R.RecoveryKeyError, match="^a recovery key must be text$"):
        R.parse(KEY.encode())  # type: ignore[arg-type]


def test_display_is_sixteen_groups_of_four() -> None:
    shown = R.display(KEY.upper())
    assert shown.split(" ") == [KEY[i:i + 4] for i in range(0, 64, 4)]
    with raises_exactly(R.RecoveryKeyError):
        R.display(KEY[:-1])


def _hkdf(ikm: bytes, info: bytes, n: int) -> bytes:
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + t, i + 1
    return out[:n]


def test_derive_uses_hkdf_with_the_dated_labels() -> None:
    keys = R.derive(KEY)
    ikm = KEY.encode()
    assert keys.backup_key == _hkdf(ikm, b"parley/2026-11-30/backup-key", 32)
    assert keys.auth_private == _hkdf(ikm, b"parley/2026-11-30/backup-auth-key", 32)
    assert keys.id_key == _hkdf(ikm, b"parley/2026-11-30/backup-id-key", 32)
    assert keys.auth_public == P.ed25519_public(keys.auth_private)
    assert keys.vault == keys.auth_public.hex() and re.fullmatch(r"[0-9a-f]{64}", keys.vault)
    assert len({keys.backup_key, keys.auth_private, keys.id_key}) == 3
    # the relay checks signatures with the vault key: the pair is a real Ed25519 pair
    P.ed25519_verify(keys.auth_public, P.ed25519_sign(keys.auth_private, b"x"), b"x")


def test_derive_accepts_the_typed_form_and_refuses_a_bad_key() -> None:
    assert R.derive(R.display(KEY).upper()) == R.derive(KEY)
    assert R.derive(R.generate()) != R.derive(KEY)
    with raises_exactly(R.RecoveryKeyError, match="checksum"):
        R.derive(KEY[:-1] + ("0" if KEY[-1] != "0" else "1"))


def test_backup_id_is_bound_to_the_checksummed_address() -> None:
    keys = R.derive(KEY)
    bid = keys.backup_id(ALICE)
    assert bid == _hkdf(keys.id_key, b"parley/2026-11-30/backup-id" + ALICE.encode(), 16)
    assert keys.backup_id(ALICE.lower()) == bid == keys.backup_id("0x" + ALICE[2:].upper())
    assert keys.backup_id(BOB) != bid
    assert R.derive(R.generate()).backup_id(ALICE) != bid


@pytest.mark.parametrize("bad", ["alice.eth", ALICE[:-1], ALICE.replace("F", "f", 1), "0x" + "g" * 40, 42, ""])
def test_backup_id_refuses_what_is_not_an_address(bad: object) -> None:
    with raises_exactly(ValueError, match="^a backup id is made for a wallet address"):
        R.derive(KEY).backup_id(bad)  # type: ignore[arg-type]


def test_repr_never_shows_a_secret() -> None:
    keys = R.derive(KEY)
    text = repr(keys) + str(keys)
    assert keys.vault in text
    for secret in (keys.backup_key, keys.auth_private, keys.id_key):
        assert secret.hex() not in text and repr(secret) not in text


def test_keys_round_trip_through_bytes_and_refuse_bad_bytes() -> None:
    keys = R.derive(KEY)
    assert R.BackupKeys.from_bytes(keys.to_bytes()) == keys
    for bad in (b"", keys.to_bytes()[:-1], keys.to_bytes() + b"\x00", b"\x84\x02" + keys.to_bytes()[2:]):
        with raises_exactly(ValueError, match="^stored backup keys are malformed"):
            R.BackupKeys.from_bytes(bad)
    with raises_exactly(ValueError, match="32 bytes"):
        R.BackupKeys(b"x" * 31, keys.auth_private, keys.auth_public, keys.id_key)


# --- known answers (tests/vectors/parley_backup.json; generated by our implementation, not published) ---

VECTORS = "parley_backup.json"


def test_the_vector_file_says_where_it_comes_from() -> None:
    data = load(VECTORS)
    assert data["family"] == "parley-backup" and data["source"].startswith("ours: scripts/gen_vectors.py")
    assert "not published" in data["source"]
    names = [v["name"] for v in data["vectors"]]
    assert sum(n.startswith("recovery key:") for n in names) >= 3
    assert sum(n.startswith("negative recovery key:") for n in names) >= 6


@pytest.mark.parametrize("vec", [c for c in cases(VECTORS) if "recovery key" in c.id])
def test_recovery_key_vector(vec: dict) -> None:
    i, e = vec["input"], vec["expected"]
    if "error" in e:
        with raises_exactly(R.RecoveryKeyError) as info:
            R.parse(i["typed"])
        assert (e["error"], str(info.value)) == ("RecoveryKeyError", e["reason"])
        return
    assert R.parse(i["typed"]) == e["canonical"] and R.display(i["typed"]) == e["display"]
    assert R.checksum(e["canonical"][:60]) == e["checksum"]
    keys = R.derive(i["typed"])
    assert (keys.backup_key.hex(), keys.auth_private.hex(), keys.auth_public.hex(), keys.vault, keys.id_key.hex()) == (
        e["backup_key"], e["auth_private"], e["auth_public"], e["vault"], e["id_key"])
    assert {a: keys.backup_id(a).hex() for a in i["addresses"]} == e["backup_ids"]
    # and the stdlib reference agrees with the file (the generator also checks it)
    ikm = e["canonical"].encode()
    assert _hkdf(ikm, b"parley/2026-11-30/backup-key", 32).hex() == e["backup_key"]
