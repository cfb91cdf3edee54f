"""Tests for bridge.identity: statement text, records, EIP-191 signatures, the active installation set."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.exact import raises_exactly
from tests.vectors_loader import load

from bridge.crypto.primitives import ed25519_public, random_bytes, x25519_public
from bridge.identity.smart import UnverifiableSigner
from bridge.identity import (
    BadSignature,
    IdentityError,
    InvalidStatement,
    SignedStatement,
    Statement,
    address_from_did,
    authorize_statement,
    checksum_address,
    did,
    installations,
    revoke_statement,
    sign_statement,
    verify,
    verify_record_for,
)
from bridge.protocol import wire
from bridge.protocol.ids import installation_id

VECTORS = load("identity.json")
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ANVIL0_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL1_KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
ANVIL1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
T0 = 1795716000  # 2026-11-26T18:00:00Z


def new_installation() -> tuple[bytes, bytes, str]:
    sp = ed25519_public(random_bytes(32))
    ip = x25519_public(random_bytes(32))
    return sp, ip, installation_id(sp, ip)


def authorize(address: str = ANVIL0, *, issued_at: int = T0, keys: tuple[bytes, bytes, str] | None = None) -> Statement:
    sp, ip, iid = keys or new_installation()
    return authorize_statement(address, iid, sp, ip, issued_at=issued_at)


def raw_sign(text: str, key: bytes) -> bytes:
    """Sign any text with EIP-191, bypassing sign_statement's checks (what an attacker can do)."""
    return bytes(Account.sign_message(encode_defunct(text=text), key).signature)


def high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


# --- vectors -----------------------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector(vector: dict) -> None:
    assert VECTORS["source"]
    wallet_key = bytes.fromhex(vector["wallet_key"])
    assert Account.from_key(wallet_key).address == vector["address"]
    assert did(vector["address"]) == vector["did"]
    if vector["action"] == "authorize":
        sp = ed25519_public(bytes.fromhex(vector["signing_private"]))
        ip = x25519_public(bytes.fromhex(vector["identity_private"]))
        assert sp.hex() == vector["signing_pub"] and ip.hex() == vector["identity_pub"]
        assert installation_id(sp, ip) == vector["installation_id"]
        statement = authorize_statement(
            vector["address"], vector["installation_id"], sp, ip,
            chain_id=vector["chain_id"], issued_at=vector["issued_at"], nonce=vector["nonce"],
        )
    else:
        assert vector["signing_pub"] is None and vector["identity_pub"] is None
        statement = revoke_statement(
            vector["address"], vector["installation_id"],
            chain_id=vector["chain_id"], issued_at=vector["issued_at"], nonce=vector["nonce"],
        )
    text = vector["text"]
    assert statement.text() == text
    assert Statement.parse(text) == statement
    # EIP-191 hash, computed here independently of eth-account.
    data = text.encode("utf-8")
    assert keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data).hex() == vector["eip191_hash"]
    signed = sign_statement(statement, wallet_key)
    assert signed.signature.hex() == vector["signature"]
    assert signed.to_record().hex() == vector["record"]
    assert signed.record_id() == vector["record_id"] == hashlib.sha256(data).hexdigest()
    assert verify(SignedStatement.from_record(bytes.fromhex(vector["record"]))) == statement


def test_vector_text_layout() -> None:
    text = VECTORS["vectors"][0]["text"]
    assert text.split("\n") == [
        "parley wants you to authorize an installation for your account:",
        ANVIL0,
        "",
        "Domain: parley",
        "Action: authorize-installation",
        f"Address: {ANVIL0}",
        "Chain ID: 1",
        "Installation ID: cd6c77c7c512e11f5916e83451163d0b",
        "Signing Key: ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "Identity Key: x25519:8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "Issued At: 2026-11-26T18:00:00Z",
        "Nonce: 000102030405060708090a0b0c0d0e0f",
    ]


# --- round trips -------------------------------------------------------------

def test_sign_verify_round_trip() -> None:
    statement = authorize()
    signed = sign_statement(statement, ANVIL0_KEY)
    assert verify(signed) == statement
    again = SignedStatement.from_record(signed.to_record())
    assert again == signed
    assert verify_record_for(ANVIL0, signed.to_record()) == statement
    assert verify_record_for(ANVIL0.lower(), signed.to_record()) == statement


def test_revoke_round_trip() -> None:
    statement = revoke_statement(ANVIL0, new_installation()[2])
    assert statement.signing_key is None and statement.identity_key is None
    assert verify(sign_statement(statement, ANVIL0_KEY)) == statement
    assert "revoke an installation" in statement.text().split("\n")[0]


def test_defaults_fill_time_and_fresh_nonce() -> None:
    sp, ip, iid = new_installation()
    a = authorize_statement(ANVIL0, iid, sp, ip)
    b = authorize_statement(ANVIL0, iid, sp, ip)
    assert a.nonce != b.nonce
    assert abs(a.issued_at - time.time()) < 60


addresses = st.binary(min_size=20, max_size=20).map(lambda b: checksum_address("0x" + b.hex()))


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    action = draw(st.sampled_from(["authorize", "revoke"]))
    sp, ip = draw(st.binary(min_size=32, max_size=32)), draw(st.binary(min_size=32, max_size=32))
    return Statement(
        action=action,
        address=draw(addresses),
        chain_id=draw(st.integers(1, 2**63 - 1)),
        installation_id=installation_id(sp, ip) if action == "authorize" else draw(st.binary(min_size=16, max_size=16)).hex(),
        signing_key=sp if action == "authorize" else None,
        identity_key=ip if action == "authorize" else None,
        issued_at=draw(st.integers(0, 253402300799)),
        nonce=draw(st.binary(min_size=16, max_size=16)).hex(),
    )


@given(statements())
def test_parse_text_round_trip(statement: Statement) -> None:
    text = statement.text()
    assert Statement.parse(text) == statement
    assert text.isascii() and "\r" not in text and not text.endswith("\n")


@settings(max_examples=25, deadline=None)
@given(statements())
def test_record_round_trip_property(statement: Statement) -> None:
    signed = SignedStatement(text=statement.text(), signature=random_bytes(65))
    assert SignedStatement.from_record(signed.to_record()) == signed


# --- wrong signer, wrong keys, tampering ---------------------------------------

def test_wrong_wallet_is_bad_signature() -> None:
    statement = authorize(ANVIL0)
    forged = SignedStatement(text=statement.text(), signature=raw_sign(statement.text(), ANVIL1_KEY))
    with raises_exactly(BadSignature):
        verify(forged)
    with raises_exactly(BadSignature):
        verify_record_for(ANVIL0, forged.to_record())
    assert installations(ANVIL0, [forged.to_record()]) == {}


def test_sign_statement_refuses_foreign_key() -> None:
    with raises_exactly(IdentityError):
        sign_statement(authorize(ANVIL0), ANVIL1_KEY)
    with raises_exactly(IdentityError):
        sign_statement(authorize(ANVIL0), bytes(32))


def test_installation_id_not_matching_keys_is_invalid() -> None:
    sp, ip, iid = new_installation()
    other_iid = new_installation()[2]
    with raises_exactly(InvalidStatement):
        authorize_statement(ANVIL0, other_iid, sp, ip)
    text = authorize(keys=(sp, ip, iid)).text()
    for bad in (
        text.replace(iid, other_iid),  # another installation's id with these keys
        text.replace(sp.hex(), "@@").replace(ip.hex(), sp.hex()).replace("@@", ip.hex()),  # keys swapped
    ):
        assert bad != text
        # Even correctly signed by the wallet, the text itself is invalid.
        with raises_exactly(InvalidStatement):
            verify(SignedStatement(text=bad, signature=raw_sign(bad, ANVIL0_KEY)))


def test_tampered_text_is_rejected() -> None:
    statement = authorize()
    signed = sign_statement(statement, ANVIL0_KEY)
    for old, new in (("Chain ID: 1", "Chain ID: 5"), (f"Nonce: {statement.nonce}", f"Nonce: {'0' * 32}"),
                     ("2026-11-26T18:00:00Z", "2026-11-26T18:00:01Z")):
        tampered = SignedStatement(text=signed.text.replace(old, new), signature=signed.signature)
        assert tampered.text != signed.text
        with raises_exactly(BadSignature):
            verify(tampered)
    swapped_action = signed.text.replace("authorize", "revoke")
    with raises_exactly(InvalidStatement):
        verify(SignedStatement(text=swapped_action, signature=signed.signature))


def test_signature_shapes() -> None:
    statement = authorize()
    signed = sign_statement(statement, ANVIL0_KEY)
    sig = signed.signature
    # v as 0/1 (hardware wallets) is accepted.
    assert verify(SignedStatement(signed.text, sig[:64] + bytes([sig[64] - 27]))) == statement
    for bad in (sig[:64] + b"\x1d", sig[:64] + b"\x25", bytes(32) + sig[32:], sig[:32] + N.to_bytes(32, "big") + sig[64:], bytes(65)):
        with raises_exactly(BadSignature):
            verify(SignedStatement(signed.text, bad))
    for wrong_length in (sig[:64], b"", bytes(4097)):
        with raises_exactly(InvalidStatement):
            SignedStatement(signed.text, wrong_length)
    # Longer signatures are smart-account ones (EIP-1271/6492): the record holds them, an EOA check refuses them.
    with raises_exactly(BadSignature):
        verify(SignedStatement(signed.text, sig + b"\x00"))


def test_malleated_signature_same_record_id() -> None:
    statement = authorize()
    signed = sign_statement(statement, ANVIL0_KEY)
    mal = SignedStatement(text=signed.text, signature=high_s(signed.signature))
    assert mal.signature != signed.signature and mal.to_record() != signed.to_record()
    assert int.from_bytes(mal.signature[32:64], "big") > N // 2
    assert verify(mal) == statement  # eth-account accepts high-s …
    assert mal.record_id() == signed.record_id()  # … so records de-duplicate by text
    active = installations(ANVIL0, [signed.to_record(), mal.to_record()])
    assert list(active) == [statement.installation_id]


# --- the active set ------------------------------------------------------------

def test_revocation_excludes_whatever_the_order() -> None:
    keys_a, keys_b = new_installation(), new_installation()
    auth_a = sign_statement(authorize(keys=keys_a, issued_at=T0 + 100), ANVIL0_KEY).to_record()
    auth_b = sign_statement(authorize(keys=keys_b, issued_at=T0), ANVIL0_KEY).to_record()
    # The revocation is even dated *before* the authorization: revocation is final.
    rev_a = sign_statement(revoke_statement(ANVIL0, keys_a[2], issued_at=T0 - 100), ANVIL0_KEY).to_record()
    for order in itertools.permutations([auth_a, auth_b, rev_a]):
        active = installations(ANVIL0, order)
        assert set(active) == {keys_b[2]}
        assert active[keys_b[2]].signing_key == keys_b[0]
    assert set(installations(ANVIL0, [auth_a, auth_b])) == {keys_a[2], keys_b[2]}


def test_other_addresses_and_junk_are_ignored() -> None:
    keys_mine, keys_theirs = new_installation(), new_installation()
    mine = sign_statement(authorize(ANVIL0, keys=keys_mine), ANVIL0_KEY).to_record()
    theirs = sign_statement(authorize(ANVIL1, keys=keys_theirs), ANVIL1_KEY).to_record()
    # Another wallet "revoking" my installation signs a statement for *its* address: no effect on me.
    their_revoke = sign_statement(revoke_statement(ANVIL1, keys_mine[2]), ANVIL1_KEY).to_record()
    junk = [b"", b"\xff" * 10, wire.encode([1, "stmt", "hello", bytes(65)]), wire.encode([2, "stmt", "x", bytes(65)])]
    active = installations(ANVIL0, [theirs, their_revoke, *junk, mine])
    assert set(active) == {keys_mine[2]}
    assert set(installations(ANVIL1, [theirs, their_revoke, mine])) == {keys_theirs[2]}
    with raises_exactly(InvalidStatement):
        verify_record_for(ANVIL1, mine)
    with raises_exactly(IdentityError):
        installations("not an address", [mine])


def test_latest_authorization_wins() -> None:
    keys = new_installation()
    older = authorize(keys=keys, issued_at=T0)
    newer = authorize(keys=keys, issued_at=T0 + 10)
    records = [sign_statement(s, ANVIL0_KEY).to_record() for s in (older, newer)]
    for order in (records, records[::-1]):
        assert installations(ANVIL0, order) == {keys[2]: newer}


def test_pluggable_verifier() -> None:
    """A smart-account style verifier: the account is valid if an owner EOA signed (the Lens rule)."""
    account = checksum_address("0x" + "ab" * 20)

    class OwnerVerifier:
        def __init__(self, owners: dict[str, set[str]]) -> None:
            self.owners = owners

        def check(self, statement: Statement, text: str, signature: bytes) -> None:
            signer = Account.recover_message(encode_defunct(text=text), signature=signature)
            if signer not in self.owners.get(statement.address, set()):
                raise BadSignature("not an owner")

    statement = authorize(account)
    record = SignedStatement(statement.text(), raw_sign(statement.text(), ANVIL0_KEY)).to_record()
    assert installations(account, [record]) == {}  # the default EOA verifier says no
    assert installations(account, [record], verifier=OwnerVerifier({account: {ANVIL0}})) == {statement.installation_id: statement}
    assert installations(account, [record], verifier=OwnerVerifier({account: {ANVIL1}})) == {}
    with raises_exactly(BadSignature):
        verify_record_for(account, record, verifier=OwnerVerifier({}))


# --- hostile input ---------------------------------------------------------------

def _base_text() -> tuple[Statement, str]:
    statement = authorize()
    return statement, statement.text()


def _hostile_variants(statement: Statement, text: str) -> dict[str, str]:
    lines = text.split("\n")
    lower = statement.address.lower()
    return {
        "crlf": text.replace("\n", "\r\n"),
        "cr in a line": text.replace("Domain: parley", "Domain: parley\r"),
        "trailing newline": text + "\n",
        "leading newline": "\n" + text,
        "trailing space": text.replace("Chain ID: 1", "Chain ID: 1 "),
        "double space": text.replace("Chain ID: 1", "Chain ID:  1"),
        "extra line": text + "\nResources: https://evil.example",
        "extra line in the middle": "\n".join(lines[:4] + ["Note: hi"] + lines[4:]),
        "missing line": "\n".join(lines[:-1]),
        "fields swapped": "\n".join(lines[:3] + [lines[4], lines[3]] + lines[5:]),
        "lowercase address": text.replace(statement.address, lower),
        "uppercase hex address": text.replace(statement.address, "0x" + lower[2:].upper()),
        "header address differs": text.replace(f"\n{statement.address}\n", f"\n{ANVIL1}\n", 1),
        "wrong domain": text.replace("Domain: parley", "Domain: parley.evil"),
        "wrong headline domain": text.replace("parley wants", "parlay wants"),
        "cyrillic a": text.replace("Domain: parley", "Domain: p\u0430rley"),
        "fullwidth digit": text.replace("Chain ID: 1", "Chain ID: \uff11"),
        "arabic-indic digit": text.replace("Chain ID: 1", "Chain ID: \u0661"),
        "nul": text.replace("Domain: parley", "Domain: parley\x00"),
        "tab": text.replace("Domain: parley", "Domain:\tparley"),
        "leading zero chain": text.replace("Chain ID: 1", "Chain ID: 01"),
        "zero chain": text.replace("Chain ID: 1", "Chain ID: 0"),
        "negative chain": text.replace("Chain ID: 1", "Chain ID: -1"),
        "huge chain": text.replace("Chain ID: 1", "Chain ID: " + "9" * 30),
        "uppercase iid": text.replace(statement.installation_id, statement.installation_id.upper()),
        "uppercase key hex": text.replace(statement.signing_key.hex(), statement.signing_key.hex().upper()),  # type: ignore[union-attr]
        "wrong key prefix": text.replace("ed25519:", "x25519:", 1),
        "offset time": text.replace("2026-11-26T18:00:00Z", "2026-11-26T18:00:00+00:00"),
        "fractional time": text.replace("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.000Z"),
        "lowercase z": text.replace("2026-11-26T18:00:00Z", "2026-11-26T18:00:00z"),
        "impossible date": text.replace("2026-11-26T18:00:00Z", "2026-02-30T18:00:00Z"),
        "leap second": text.replace("2026-11-26T18:00:00Z", "2026-12-31T23:59:60Z"),
        "short nonce": text.replace(f"Nonce: {statement.nonce}", f"Nonce: {statement.nonce[:-2]}"),
        "unknown action": text.replace("Action: authorize-installation", "Action: delete-installation"),
        "revoke headline with keys": text.replace("to authorize an", "to revoke an").replace("authorize-installation", "revoke-installation"),
        "empty": "",
        "huge": text + "\n" + "A" * 1_000_000,
    }


@pytest.mark.parametrize("case", list(_hostile_variants(*_base_text())))
def test_hostile_text_rejected(case: str) -> None:
    statement, text = _base_text()
    bad = _hostile_variants(statement, text)[case]
    assert bad != text
    with raises_exactly(InvalidStatement):
        Statement.parse(bad)
    if len(bad) <= 1024:
        # A wallet signature does not make a malformed text acceptable.
        with raises_exactly(InvalidStatement):
            verify(SignedStatement(text=bad, signature=raw_sign(bad, ANVIL0_KEY)))


def test_revoke_without_keys_and_authorize_needs_keys() -> None:
    iid = new_installation()[2]
    text = revoke_statement(ANVIL0, iid, issued_at=T0, nonce="0" * 32).text()
    as_authorize = text.replace("to revoke an", "to authorize an").replace("revoke-installation", "authorize-installation")
    with raises_exactly(InvalidStatement):
        Statement.parse(as_authorize)
    with raises_exactly(InvalidStatement):
        Statement(action="revoke", address=ANVIL0, chain_id=1, installation_id=iid, signing_key=bytes(32),
                  identity_key=None, issued_at=T0, nonce="0" * 32)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        "not bytes",
        wire.encode([1, "stmt", "text"]),
        wire.encode([1, "stmt", "text", bytes(65), 0]),
        wire.encode([True, "stmt", "text", bytes(65)]),
        wire.encode([1, "STMT", "text", bytes(65)]),
        wire.encode([1, "stmt", b"text", bytes(65)]),
        wire.encode([1, "stmt", "text", "sig"]),
        wire.encode([1, "stmt", "text", bytes(64)]),
        wire.encode({"text": "x"}),
        wire.encode([1, "stmt", "x" * 1500, bytes(65)]),
        bytes.fromhex("84") + bytes.fromhex("1801") + wire.encode("stmt") + wire.encode("t") + wire.encode(bytes(65)),  # non-canonical int
    ],
)
def test_hostile_records_rejected(data: object) -> None:
    with raises_exactly(InvalidStatement):
        SignedStatement.from_record(data)  # type: ignore[arg-type]
    if isinstance(data, bytes):
        assert installations(ANVIL0, [data]) == {}


# --- addresses and did ------------------------------------------------------------

def test_checksum_address() -> None:
    assert checksum_address(ANVIL0.lower()) == ANVIL0
    assert checksum_address("0x" + ANVIL0[2:].upper()) == ANVIL0
    assert checksum_address(ANVIL0) == ANVIL0
    # Every EIP-55 example from the EIP itself.
    for example in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"):
        assert checksum_address(example.lower()) == example
    i = next(i for i, c in enumerate(ANVIL0) if i > 1 and c.isalpha())
    flipped = ANVIL0[:i] + ANVIL0[i].swapcase() + ANVIL0[i + 1:]
    assert flipped.lower() == ANVIL0.lower() and flipped != ANVIL0
    for bad in (flipped, "0X" + ANVIL0[2:], ANVIL0[:-1], ANVIL0 + "0", ANVIL0[2:], " " + ANVIL0, ANVIL0.replace("f", "\uff46"), 42, None):
        with raises_exactly(IdentityError):
            checksum_address(bad)  # type: ignore[arg-type]


def test_did() -> None:
    assert did(ANVIL0.lower()) == f"did:pkh:eip155:1:{ANVIL0}"
    assert address_from_did(did(ANVIL0)) == ANVIL0
    for bad in (f"did:pkh:eip155:232:{ANVIL0}", f"did:pkh:eip155:1:{ANVIL0.lower()}", "did:web:example.com", ANVIL0):
        with raises_exactly(IdentityError):
            address_from_did(bad)


def test_import_is_cheap() -> None:
    """`import bridge.identity` must not pull in eth-account (the CLI stays fast)."""
    code = "import sys, bridge.identity; sys.exit(1 if 'eth_account' in sys.modules or 'web3' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, timeout=60)
    assert result.returncode == 0


# --- docs/PROTOCOL.md states the sizes the code enforces ------------------------------------

def test_protocol_md_record_and_signature_sizes_are_the_codes() -> None:
    """PROTOCOL.md's record grammar, record cap and limits table carry the numbers from
    bridge.identity.statement (and the relay's settings); the code enforces exactly those bounds."""
    from bridge.identity.statement import MAX_RECORD_BYTES, MAX_SIGNATURE_LEN, MAX_STATEMENT_CHARS, SIGNATURE_LEN
    from bridge.relay.server import RelaySettings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    grammar = re.search(r'record = \[1, "stmt", text: tstr \.size \((\d+)\.\.(\d+)\), signature: bstr \.size \((\d+)\.\.(\d+)\)\]', doc)
    assert grammar, "record grammar not found in PROTOCOL.md"
    assert tuple(int(x) for x in grammar.groups()) == (0, MAX_STATEMENT_CHARS, SIGNATURE_LEN, MAX_SIGNATURE_LEN)
    assert f"signature is {SIGNATURE_LEN} to {MAX_SIGNATURE_LEN} bytes" in " ".join(doc.split())
    caps = re.findall(r"larger than (\d+) bytes", doc)
    assert caps and {int(c) for c in caps} == {MAX_RECORD_BYTES}
    largest = SignedStatement("a" * MAX_STATEMENT_CHARS, bytes(MAX_SIGNATURE_LEN)).to_record()
    assert re.search(rf"a valid record is\s+at most {len(largest)} bytes", doc)
    table = re.search(r"\| identity record \| (\d+) KiB \(the identity layer itself caps records at (\d+) bytes\) \|", doc)
    assert table and (int(table[1]) * 1024, int(table[2])) == (RelaySettings().max_record, MAX_RECORD_BYTES)
    assert re.search(r"smaller than|2048", doc[doc.index("### Record encoding"):doc.index("### The active installation set")]) is None

    # the bounds themselves
    assert len(largest) <= MAX_RECORD_BYTES <= RelaySettings().max_record
    assert SignedStatement.from_record(largest).signature == bytes(MAX_SIGNATURE_LEN)
    for n in (SIGNATURE_LEN - 1, MAX_SIGNATURE_LEN + 1):
        with raises_exactly(InvalidStatement):
            SignedStatement("text", bytes(n))
        with raises_exactly(InvalidStatement):
            SignedStatement.from_record(wire.encode([1, "stmt", "text", bytes(n)]))
    with raises_exactly(InvalidStatement):
        SignedStatement("a" * (MAX_STATEMENT_CHARS + 1), bytes(SIGNATURE_LEN))
    oversized = wire.encode([1, "stmt", "a" * MAX_STATEMENT_CHARS, bytes(MAX_RECORD_BYTES)])
    with raises_exactly(InvalidStatement, match="malformed"):
        SignedStatement.from_record(oversized)


# --- smart-account verifier plumbing (what the chain tests in test_smart_accounts.py do not pin) ---

def test_checked_blocks_skips_junk_without_hiding_later_records() -> None:
    """A junk or foreign record early in a log must not hide the on-chain checks of later records."""
    from bridge.identity.smart import SmartCheck, SmartVerifier

    st = authorize(ANVIL0)
    good = SignedStatement(text=st.text(), signature=random_bytes(65))

    class Recorded(SmartVerifier):
        def last_check(self, text: str, signature: bytes) -> SmartCheck | None:
            return SmartCheck("eip1271", ANVIL0, None, 1, 1234, 0.0) if (text, signature) == (good.text, good.signature) else None

    v = Recorded({})
    for junk in (b"", b"\xff" * 10, wire.encode([1, "stmt", "not a statement", bytes(65)])):
        assert v.checked_blocks([junk, good.to_record()]) == {st.installation_id: 1234}


def test_verifiers_read_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.identity.smart import verifier_from_config, verifier_from_env

    monkeypatch.setenv("PARLEY_OP_RPC_URL", "http://127.0.0.1:4")
    monkeypatch.delenv("PARLEY_ETH_RPC_URL", raising=False)
    monkeypatch.delenv("PARLEY_LENS_CHAIN_RPC_URL", raising=False)
    assert {cid: c.url for cid, c in verifier_from_env().chains.items()} == {10: "http://127.0.0.1:4"}
    assert {cid: c.url for cid, c in verifier_from_config({}).chains.items()} == {10: "http://127.0.0.1:4"}


def test_verifier_from_config_ignores_settings_that_are_not_urls() -> None:
    from bridge.identity.smart import verifier_from_config

    for junk in (5, ["http://127.0.0.1:1"], True, ""):
        assert verifier_from_config({"eth_rpc_url": junk}, {}).chains == {}


@pytest.mark.parametrize("value", [None, 42, b"did:pkh:eip155:1:", ["did:pkh:eip155:1:"]])
def test_address_from_did_refuses_non_strings(value: object) -> None:
    with raises_exactly(IdentityError):
        address_from_did(value)  # type: ignore[arg-type]


# --- EOA signature checks: each bound is ours, not only eth-account's -------------------------

def _with(sig: bytes, *, r: int | None = None, s: int | None = None, v: int | None = None) -> bytes:
    return ((sig[:32] if r is None else r.to_bytes(32, "big")) + (sig[32:64] if s is None else s.to_bytes(32, "big"))
            + bytes([sig[64] if v is None else v]))


def test_eoa_signature_bounds_are_checked_before_recovery() -> None:
    """PROTOCOL.md: 65 bytes, v in {27, 28, 0, 1}, r and s in [1, n-1]; each refusal comes from that
    check itself, and values on the inside of each bound reach recovery."""
    st = authorize()
    sig = sign_statement(st, ANVIL0_KEY).signature
    text = st.text()
    for bad in (sig + b"\x00", bytes(66), bytes(4096)):
        with raises_exactly(BadSignature, match="65 bytes"):
            verify(SignedStatement(text, bad))
    for v in (2, 26, 29, 255):
        with raises_exactly(BadSignature, match="v must be"):
            verify(SignedStatement(text, _with(sig, v=v)))
    for r, s in ((0, 1), (1, 0), (N, 1), (1, N), (2**256 - 1, 1)):
        with raises_exactly(BadSignature, match="out of range"):
            verify(SignedStatement(text, _with(sig, r=r, s=s)))
    for r, s in ((1, 1), (N - 1, 1), (1, N - 1)):  # in range: refused later, by recovery or the signer check
        with raises_exactly(BadSignature, match="recover|not signed by"):
            verify(SignedStatement(text, _with(sig, r=r, s=s)))


def test_eoa_accepts_both_recovery_ids_in_both_encodings() -> None:
    """v = 27/28 and the hardware-wallet form 0/1, for signatures of both parities."""
    seen = set()
    for i in range(64):
        st = authorize(issued_at=T0 + i)
        sig = sign_statement(st, ANVIL0_KEY).signature
        seen.add(sig[64])
        assert verify(SignedStatement(st.text(), sig)) == st
        assert verify(SignedStatement(st.text(), _with(sig, v=sig[64] - 27))) == st
        if seen == {27, 28}:
            break
    assert seen == {27, 28}


def test_sign_statement_key_range() -> None:
    """Keys 1 and n-1 are valid secp256k1 keys; 0, n, and anything not 32 bytes are refused."""
    from eth_account import Account as A

    for k in (1, N - 1):
        key = k.to_bytes(32, "big")
        st = authorize(A.from_key(key).address)
        assert verify(sign_statement(st, key)) == st
    for bad in (bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, b"\x00" + ANVIL0_KEY, ANVIL0_KEY[:31], ANVIL0_KEY.hex()):
        with raises_exactly(IdentityError):
            sign_statement(authorize(), bad)  # type: ignore[arg-type]


def test_revoke_statement_defaults_to_chain_1() -> None:
    st = revoke_statement(ANVIL0, new_installation()[2])
    assert st.chain_id == 1 and st.action == "revoke"


def test_same_issued_at_keeps_the_smaller_record_id_in_any_order() -> None:
    """Two authorizations of one installation with the same Issued At: the smaller record id wins,
    whatever the order; a later Issued At wins whatever the record ids."""
    keys = new_installation()
    recs = []
    for _ in range(2):
        st = authorize(keys=keys)  # same issued_at, fresh nonce
        recs.append((SignedStatement(st.text(), raw_sign(st.text(), ANVIL0_KEY)), st))
    small, big = sorted(recs, key=lambda p: p[0].record_id())
    for order in ((small, big), (big, small)):
        got = installations(ANVIL0, [r.to_record() for r, _ in order])
        assert got[keys[2]] == small[1]
    # a later Issued At beats a smaller record id (try until the later one has the bigger id)
    for _ in range(64):
        later = authorize(keys=keys, issued_at=T0 + 60)
        later_rec = SignedStatement(later.text(), raw_sign(later.text(), ANVIL0_KEY))
        if later_rec.record_id() > small[0].record_id():
            break
    assert later_rec.record_id() > small[0].record_id()
    for order in ((small[0], later_rec), (later_rec, small[0])):
        assert installations(ANVIL0, [r.to_record() for r in order])[keys[2]] == later


def test_unwrap_6492_needs_the_suffix() -> None:
    """An ABI-shaped signature without the 0x6492… suffix is not a wrapper (EIP-1271 signatures of
    several owners are often ABI-encoded)."""
    from eth_abi import encode

    from bridge.identity.smart import EIP6492_SUFFIX, unwrap_6492, wrap_6492

    body = encode(["address", "bytes", "bytes"], [ANVIL1, b"calldata", b"inner"])
    assert unwrap_6492(body + bytes(32)) is None
    assert unwrap_6492(body + EIP6492_SUFFIX) == (ANVIL1, b"calldata", b"inner")
    assert unwrap_6492(wrap_6492(ANVIL1, b"c", b"i")) == (ANVIL1, b"c", b"i")
    for short in (EIP6492_SUFFIX, b"\x00" + EIP6492_SUFFIX, b""):
        assert unwrap_6492(short) is None


class _FakeChain:
    """Duck-typed bridge.chain.Chain with one contract, at ``account``: records the block of every read;
    isAccountManager may revert. Like Chain.read, a read ABI-encodes its arguments with the caller's types
    and decodes the answer (encoded with the function's real return types; empty from an address without
    code) with the caller's return types."""

    RETURNS = {
        "owner()": ["address"],
        "isAccountManager(address)": ["bool"],
        "canExecuteTransactions(address)": ["bool"],
        "isValidSignature(bytes32,bytes)": ["bytes4"],
    }

    def __init__(self, account: str, *, owner: str, managers: set[str], legacy: bool, head: int = 77) -> None:
        self.account, self.owner, self.managers, self.legacy, self.head = account, owner, managers, legacy, head
        self.calls: list[tuple[str, object]] = []

    def block_number(self) -> int:
        return self.head

    def code(self, address: str, block: object = None) -> bytes:
        self.calls.append(("code", block))
        return b"\x60\x00" if address == self.account else b""

    def read(self, address: str, sig: str, in_types: list, args: list, out_types: list, *, block: object = None):  # type: ignore[no-untyped-def, type-arg]
        from eth_abi import decode, encode

        from bridge.chain import ChainError, Read, Reverted
        from bridge.identity.smart import EIP1271_MAGIC

        encode(list(in_types), list(args))  # the calldata: wrong argument types fail here
        self.calls.append((sig, block))
        if sig == "owner()":
            answer: object = self.owner
        elif sig == "isAccountManager(address)" and self.legacy:
            raise Reverted("no such function", "fake")
        elif sig in ("isAccountManager(address)", "canExecuteTransactions(address)"):
            answer = args[0] in self.managers
        elif sig == "isValidSignature(bytes32,bytes)":  # a one-owner EIP-1271 wallet
            try:
                ok = Account._recover_hash(args[0], signature=args[1]) == self.owner
            except Exception:
                ok = False
            answer = EIP1271_MAGIC if ok else b"\xff\xff\xff\xff"
        else:
            raise AssertionError(f"unexpected read {sig}")
        raw = encode(self.RETURNS[sig], [answer]) if address == self.account else b""
        try:
            return Read(tuple(decode(list(out_types), raw)), block)
        except Exception as exc:
            raise ChainError(f"{sig} returned an undecodable reply ({exc})", "fake") from None


@pytest.mark.parametrize("legacy", [False, True])
def test_lens_checks_read_everything_at_one_block_and_record_it(legacy: bool) -> None:
    """Owner, manager (isAccountManager, or canExecuteTransactions on older Lens accounts) are all read
    at the block the check records; the SmartCheck names the account, signer, chain and block."""
    from eth_account import Account as A

    from bridge.identity.smart import LENS_CHAIN_ID, SmartCheck, SmartVerifier

    owner, manager, stranger = A.create(), A.create(), A.create()
    account = A.create().address  # the Lens account contract's address
    chain = _FakeChain(account, owner=owner.address, managers={manager.address}, legacy=legacy)
    v = SmartVerifier({}, clock=lambda: 5.0)
    v.chains[LENS_CHAIN_ID] = chain  # type: ignore[assignment]
    st = authorize(account)
    st = authorize_statement(account, st.installation_id, st.signing_key, st.identity_key, chain_id=LENS_CHAIN_ID)
    text = st.text()
    sign = lambda acct: bytes(A.sign_message(encode_defunct(text=text), acct.key).signature)  # noqa: E731
    assert v.verify_signature(st, text, sign(owner)) == SmartCheck("lens-owner", account, owner.address, LENS_CHAIN_ID, 77, 5.0)
    assert v.verify_signature(st, text, sign(manager)) == SmartCheck("lens-manager", account, manager.address, LENS_CHAIN_ID, 77, 5.0)
    with raises_exactly(BadSignature, match="neither the owner nor an account manager"):
        v.verify_signature(st, text, sign(stranger))
    assert chain.calls and all(block == 77 for _, block in chain.calls)
    expected = "canExecuteTransactions(address)" if legacy else "isAccountManager(address)"
    assert any(sig == expected for sig, _ in chain.calls)


def test_eip1271_check_reads_at_one_block_and_records_it() -> None:
    """A contract wallet outside Lens is asked isValidSignature at the block the check records; the
    SmartCheck names the account, chain and block (no signer); a signature of anyone else is refused."""
    from eth_account import Account as A

    from bridge.identity.smart import SmartCheck, SmartVerifier

    owner, stranger = A.create(), A.create()
    account = A.create().address  # the wallet contract's address
    chain = _FakeChain(account, owner=owner.address, managers=set(), legacy=False)
    v = SmartVerifier({}, clock=lambda: 5.0)
    v.chains[1] = chain  # type: ignore[assignment]
    st = authorize(account)
    text = st.text()
    sign = lambda acct: bytes(A.sign_message(encode_defunct(text=text), acct.key).signature)  # noqa: E731
    assert v.verify_signature(st, text, sign(owner)) == SmartCheck("eip1271", account, None, 1, 77, 5.0)
    with raises_exactly(BadSignature, match="not 0x1626ba7e"):
        v.verify_signature(st, text, sign(stranger))
    assert [sig for sig, _ in chain.calls] == ["code", "isValidSignature(bytes32,bytes)"] * 2
    assert all(block == 77 for _, block in chain.calls)


def test_statement_numeric_fields_bounds() -> None:
    """Chain ID in [1, 2^63-1] and Issued At in [0, 9999-12-31T23:59:59Z], integers but not bools."""
    from dataclasses import replace

    from bridge.identity.statement import format_time, parse_time

    st = authorize()
    top = 253402300799
    for ok in (dict(chain_id=1), dict(chain_id=2**63 - 1), dict(issued_at=0), dict(issued_at=top)):
        assert Statement.parse(replace(st, **ok).text()) == replace(st, **ok)
    for bad in (dict(chain_id=0), dict(chain_id=2**63), dict(chain_id=True), dict(chain_id="1"),
                dict(issued_at=-1), dict(issued_at=top + 1), dict(issued_at=True), dict(issued_at=1.5)):
        with raises_exactly(InvalidStatement):
            replace(st, **bad)
    assert parse_time(format_time(top)) == top == parse_time("9999-12-31T23:59:59Z")
    for bad_time in (None, 5, "2026-11-26T18:00:00", "2026-02-30T00:00:00Z", "2026-11-26 18:00:00Z",
                     "1969-12-31T23:59:59Z"):  # canonical, but before 1970
        with raises_exactly(InvalidStatement):
            parse_time(bad_time)  # type: ignore[arg-type]


def test_smart_verifier_eoa_check_is_recorded_in_full() -> None:
    from bridge.identity.smart import SmartCheck, SmartVerifier

    st = authorize()
    sig = sign_statement(st, ANVIL0_KEY).signature
    v = SmartVerifier({}, clock=lambda: 9.0)
    assert v.verify_signature(st, st.text(), sig) == SmartCheck("eoa", ANVIL0, ANVIL0, 1, None, 9.0)
    for bad in (b"", bytes(4097), "not bytes"):
        with raises_exactly(BadSignature):
            v.verify_signature(st, st.text(), bad)  # type: ignore[arg-type]


def test_smart_verifier_defaults() -> None:
    """Each configured endpoint is held to its chain id (checked against eth_chainId on first use);
    answers are cached 5 minutes (PROTOCOL.md); a 4096-byte signature is still looked at."""
    from bridge.identity.smart import SmartVerifier, verifier_from_env

    v = verifier_from_env({"PARLEY_ETH_RPC_URL": "http://127.0.0.1:1", "PARLEY_OP_RPC_URL": "http://127.0.0.1:2"})
    assert {cid: c.expected_chain_id for cid, c in v.chains.items()} == {1: 1, 10: 10}
    assert SmartVerifier().cache_ttl == 300.0
    st = authorize()
    with raises_exactly(UnverifiableSigner):  # not an EOA signature, no chain for chain 1: unverifiable, not refused as malformed
        SmartVerifier({}).verify_signature(st, st.text(), bytes(4096))
