"""Smart accounts as identities (docs/PROTOCOL.md §3.x): Lens accounts (owner / account managers),
EIP-1271 wallets, EIP-6492 counterfactual wallets, on an in-process chain (eth-tester) behind a real
JSON-RPC endpoint (tests/fakes/chain.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import identity
from eth_account import Account
from eth_account.messages import encode_defunct

from bridge.chain import Chain
from bridge.chain.validator import VALIDATOR_INIT_CODE
from bridge.crypto.primitives import ed25519_public, random_bytes, x25519_public
from bridge.identity import BadSignature, SignedStatement, authorize_statement, installations, verify, verify_record_for
from bridge.identity.smart import (
    LENS_CHAIN_ID,
    SmartVerifier,
    UnverifiableSigner,
    unwrap_6492,
    verifier_from_config,
    verifier_from_env,
    wrap_6492,
)
from bridge.protocol.ids import installation_id
from tests.fakes.chain import BUILD, ChainServer

OWNER = Account.create()
MANAGER = Account.create()
STRANGER = Account.create()


def statement_for(address: str, chain_id: int):  # type: ignore[no-untyped-def]
    sp, ip = ed25519_public(random_bytes(32)), x25519_public(random_bytes(32))
    return authorize_statement(address, installation_id(sp, ip), sp, ip, chain_id=chain_id)


def sign(text: str, account: object) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=text), account.key).signature)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def lens() -> Iterator[ChainServer]:
    with ChainServer(chain_id=LENS_CHAIN_ID) as chain:
        yield chain


@pytest.fixture(scope="module")
def eth() -> Iterator[ChainServer]:
    with ChainServer(chain_id=1) as chain:
        yield chain


def test_validator_bytecode_is_the_compiled_contract() -> None:
    built = json.loads((BUILD / "ValidateSigOffchain.json").read_text())
    assert bytes.fromhex(built["bytecode"][2:]) == VALIDATOR_INIT_CODE
    assert (Path(BUILD).parent / "UniversalSigValidator.sol").exists()


# --- Lens accounts ----------------------------------------------------------------------------


def test_lens_owner_and_manager_accepted_stranger_refused(lens: ChainServer) -> None:
    deployer = lens.accounts[0]
    account = lens.deploy("LensAccount", deployer)
    lens.transact(account.functions.addAccountManager(MANAGER.address), deployer)
    lens.transact(account.functions.transferOwnership(OWNER.address), deployer)
    v = SmartVerifier({LENS_CHAIN_ID: lens.url})
    st = statement_for(account.address, LENS_CHAIN_ID)
    text = st.text()

    got = v.verify_signature(st, text, sign(text, OWNER))
    assert (got.kind, got.signer, got.chain_id) == ("lens-owner", OWNER.address, 232)
    assert got.block == lens.w3.eth.block_number  # the block the owner was read at is recorded
    assert v.last_check(text, sign(text, OWNER)) == got

    got = v.verify_signature(st, text, sign(text, MANAGER))
    assert (got.kind, got.signer) == ("lens-manager", MANAGER.address)

    with pytest.raises(BadSignature, match="neither the owner nor an account manager") as exc:
        v.verify_signature(st, text, sign(text, STRANGER))
    assert not isinstance(exc.value, UnverifiableSigner)

    # through the Verifier protocol and a record, as engine and relay use it
    record = SignedStatement(text, sign(text, OWNER)).to_record()
    assert verify_record_for(account.address, record, verifier=v) == st
    bad = SignedStatement(text, sign(text, STRANGER)).to_record()
    assert set(installations(account.address, [record, bad], verifier=v)) == {st.installation_id}
    # the default (EOA) verifier refuses the same record
    with pytest.raises(BadSignature):
        verify(SignedStatement(text, sign(text, OWNER)))


def test_the_block_of_each_on_chain_check_is_recorded(lens: ChainServer) -> None:
    account = lens.deploy("LensAccount", OWNER.address)
    v = SmartVerifier({LENS_CHAIN_ID: lens.url})
    st = statement_for(account.address, LENS_CHAIN_ID)
    record = SignedStatement(st.text(), sign(st.text(), OWNER)).to_record()
    eoa_st = statement_for(OWNER.address, LENS_CHAIN_ID)
    eoa_record = SignedStatement(eoa_st.text(), sign(eoa_st.text(), OWNER)).to_record()
    assert list(identity.installations(account.address, [record], verifier=v)) == [st.installation_id]
    identity.installations(OWNER.address, [eoa_record], verifier=v)
    head = lens.w3.eth.block_number
    # the Lens account's check was read at a block; the EOA needed no chain
    assert v.checked_blocks([record, eoa_record, b"junk"]) == {st.installation_id: head}


def test_lens_manager_removed_is_refused_after_cache_ttl(lens: ChainServer) -> None:
    deployer = lens.accounts[0]
    account = lens.deploy("LensAccount", deployer)
    lens.transact(account.functions.addAccountManager(MANAGER.address), deployer)
    now = [1000.0]
    v = SmartVerifier({LENS_CHAIN_ID: lens.url}, cache_ttl=60, clock=lambda: now[0])
    st = statement_for(account.address, LENS_CHAIN_ID)
    sig = sign(st.text(), MANAGER)
    first = v.verify_signature(st, st.text(), sig)
    assert first.kind == "lens-manager"
    lens.transact(account.functions.removeAccountManager(MANAGER.address), deployer)
    assert v.verify_signature(st, st.text(), sig) == first  # cached within the TTL
    now[0] += 61
    with pytest.raises(BadSignature, match="neither the owner"):
        v.verify_signature(st, st.text(), sig)


def test_lens_statement_needs_the_lens_chain(lens: ChainServer) -> None:
    account = lens.deploy("LensAccount", OWNER.address)
    st = statement_for(account.address, LENS_CHAIN_ID)
    sig = sign(st.text(), OWNER)
    with pytest.raises(UnverifiableSigner, match="no RPC is configured for chain 232"):
        SmartVerifier({}).check(st, st.text(), sig)
    with pytest.raises(UnverifiableSigner, match="no RPC is configured for chain 232"):
        verifier_from_env({}).check(st, st.text(), sig)
    # an RPC that is another chain is not trusted as Lens Chain
    with pytest.raises(UnverifiableSigner, match="is chain 232, expected chain 5"):
        SmartVerifier({LENS_CHAIN_ID: Chain(lens.url, chain_id=5)}).check(st, st.text(), sig)
    # an unreachable RPC: unverifiable, naming why
    lens.down()
    try:
        with pytest.raises(UnverifiableSigner, match="cannot reach"):
            SmartVerifier({LENS_CHAIN_ID: lens.url}).check(st, st.text(), sig)
    finally:
        lens.up()


def test_eoa_statements_need_no_chain() -> None:
    st = statement_for(OWNER.address, 1)
    got = SmartVerifier({}).verify_signature(st, st.text(), sign(st.text(), OWNER))
    assert (got.kind, got.block) == ("eoa", None)
    with pytest.raises(UnverifiableSigner):
        SmartVerifier({}).check(st, st.text(), sign(st.text(), STRANGER))


# --- EIP-1271 ----------------------------------------------------------------------------------


def test_eip1271_accepted_and_wrong_magic_refused(eth: ChainServer) -> None:
    v = SmartVerifier({1: eth.url})
    wallet = eth.deploy("Wallet1271", OWNER.address)
    st = statement_for(wallet.address, 1)
    got = v.verify_signature(st, st.text(), sign(st.text(), OWNER))
    assert (got.kind, got.signer) == ("eip1271", None)
    assert got.block is not None and got.block <= eth.w3.eth.block_number
    with pytest.raises(BadSignature, match="not 0x1626ba7e"):
        v.check(st, st.text(), sign(st.text(), STRANGER))

    broken = eth.deploy("WrongMagicWallet", OWNER.address)
    st2 = statement_for(broken.address, 1)
    with pytest.raises(BadSignature, match="answered 0x1626ba7f, not 0x1626ba7e"):
        v.check(st2, st2.text(), sign(st2.text(), OWNER))

    # a Lens account has no EIP-1271: on a non-Lens chain it is refused
    lens_like = eth.deploy("LensAccount", OWNER.address)
    st3 = statement_for(lens_like.address, 1)
    with pytest.raises(BadSignature, match="no working EIP-1271"):
        v.check(st3, st3.text(), sign(st3.text(), OWNER))


# --- EIP-6492 ----------------------------------------------------------------------------------


def test_eip6492_counterfactual_wallet(eth: ChainServer) -> None:
    v = SmartVerifier({1: eth.url})
    factory = eth.deploy("WalletFactory")
    other_factory = eth.deploy("WalletFactory")
    salt = random_bytes(32)
    predicted = factory.functions.addressOf(OWNER.address, salt).call()
    assert eth.w3.eth.get_code(predicted) == b""
    st = statement_for(predicted, 1)
    inner = sign(st.text(), OWNER)
    calldata = bytes.fromhex(factory.functions.deploy(OWNER.address, salt)._encode_transaction_data()[2:])
    wrapped = wrap_6492(factory.address, calldata, inner)
    assert unwrap_6492(wrapped) == (factory.address, calldata, inner)

    got = v.verify_signature(st, st.text(), wrapped)
    assert got.kind == "eip6492" and got.block is not None
    assert eth.w3.eth.get_code(predicted) == b""  # the deployment was only simulated

    # the wrapped signature travels in an ordinary identity record, and the active set accepts it
    record = identity.SignedStatement(st.text(), wrapped).to_record()
    assert identity.verify(identity.SignedStatement.from_record(record), verifier=v) == st
    assert list(identity.installations(st.address, [record], verifier=v)) == [st.installation_id]
    with pytest.raises(BadSignature):
        identity.verify(identity.SignedStatement.from_record(record))  # EOA-only cannot accept it

    # the wrong factory deploys the wallet elsewhere: refused
    with pytest.raises(BadSignature, match="EIP-6492"):
        v.check(st, st.text(), wrap_6492(other_factory.address, calldata, inner))
    # right factory, a signer who is not the wallet's owner: refused
    with pytest.raises(BadSignature, match="EIP-6492"):
        v.check(st, st.text(), wrap_6492(factory.address, calldata, sign(st.text(), STRANGER)))
    # not wrapped and no code: refused
    with pytest.raises(BadSignature, match="has no contract"):
        v.check(st, st.text(), sign(st.text(), STRANGER))

    # once deployed, the wrapped signature is checked with plain EIP-1271
    eth.transact(factory.functions.deploy(OWNER.address, salt))
    assert v.verify_signature(st, st.text(), wrapped).kind == "eip6492"  # cached answer
    assert SmartVerifier({1: eth.url}).verify_signature(st, st.text(), wrapped).kind == "eip1271"


def test_verifier_from_config_env_overrides() -> None:
    v = verifier_from_config({"eth_rpc_url": "http://127.0.0.1:1", "lens_chain_rpc_url": "http://127.0.0.1:2"},
                             {"PARLEY_LENS_CHAIN_RPC_URL": "http://127.0.0.1:3"})
    assert {cid: c.url for cid, c in v.chains.items()} == {1: "http://127.0.0.1:1", 232: "http://127.0.0.1:3"}
    assert verifier_from_env({"PARLEY_OP_RPC_URL": "http://127.0.0.1:4"}).chains[10].url == "http://127.0.0.1:4"
