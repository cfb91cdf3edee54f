"""Smart accounts as identities: Lens v3 accounts, EIP-1271 wallets, EIP-6492 counterfactual wallets.

Implements docs/PROTOCOL.md §3.x "Smart accounts" (DESIGN.md "Identity"). :class:`SmartVerifier` is a
:class:`bridge.identity.Verifier`; the order of checks for a statement whose ``Address`` is A, on the chain
named by its ``Chain ID`` line (C), with the EIP-191 hash H of its text:

1. EOA: ECDSA recovery of the 65-byte signature gives A → accepted (no chain access).
2. Otherwise the chain C must be configured (an RPC URL); if it is not, or it cannot be reached, the
   statement is *unverifiable* (:class:`UnverifiableSigner`), never accepted.
3. At one block B (recorded in the result):
   a. C is Lens Chain (232) and A has code: the recovered signer must be ``A.owner()`` or an account
      manager (``A.isAccountManager(signer)``, else ``A.canExecuteTransactions(signer)`` on older
      deployments). A Lens account has no EIP-1271.
   b. A has code: ``A.isValidSignature(H, signature) == 0x1626ba7e`` (EIP-1271). A signature wrapped per
      EIP-6492 is unwrapped first.
   c. A has no code and the signature ends in the EIP-6492 suffix: simulate the factory deployment and the
      EIP-1271 check in one ``eth_call`` (:mod:`bridge.chain.validator`).
   Anything else is refused (:class:`BadSignature`).

Answers are cached for ``cache_ttl`` seconds (ownership can change, so not for ever).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bridge.chain import Chain, ChainError, Reverted
from bridge.identity.statement import SIGNATURE_LEN, BadSignature, Statement, checksum_address

__all__ = [
    "LENS_CHAIN_ID",
    "EIP1271_MAGIC",
    "EIP6492_SUFFIX",
    "UnverifiableSigner",
    "SmartCheck",
    "SmartVerifier",
    "verifier_from_env",
    "verifier_from_config",
    "wrap_6492",
]

#: Lens Chain mainnet.
LENS_CHAIN_ID = 232
#: ``bytes4(keccak256("isValidSignature(bytes32,bytes)"))``, what a valid EIP-1271 check returns.
EIP1271_MAGIC = bytes.fromhex("1626ba7e")
#: EIP-6492 marks a wrapped signature with this 32-byte suffix.
EIP6492_SUFFIX = bytes.fromhex("6492" * 16)

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MAX_SIGNATURE = 4096


class UnverifiableSigner(BadSignature):
    """Not an EOA signature by the Address, and the smart-account check could not be made: no RPC is
    configured for the statement's chain, or the RPC is unreachable. Not a proof of forgery."""


@dataclass(frozen=True)
class SmartCheck:
    """How a statement's signature was accepted.

    ``kind``: ``eoa`` | ``lens-owner`` | ``lens-manager`` | ``eip1271`` | ``eip6492``; ``signer``: the EOA
    that signed (``None`` when the wallet contract decided); ``block``: the block number the chain state
    was read at (``None`` for ``eoa``).
    """

    kind: str
    address: str
    signer: str | None
    chain_id: int
    block: int | None
    checked_at: float


def _recover(text: str, signature: bytes) -> str | None:
    """The EIP-191 signer of ``text``, or None when ``signature`` is not a well-formed 65-byte ECDSA one."""
    if len(signature) != SIGNATURE_LEN:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (0, 1, 27, 28) or not (0 < r < _N and 0 < s < _N):
        return None
    if v < 27:
        signature = signature[:64] + bytes([v + 27])
    from eth_account import Account
    from eth_account.messages import encode_defunct

    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception:  # hostile bytes: several exception types
        return None


def _eip191_hash(text: str) -> bytes:
    from eth_account.messages import defunct_hash_message

    return bytes(defunct_hash_message(text=text))


def unwrap_6492(signature: bytes) -> tuple[str, bytes, bytes] | None:
    """``(factory, factory_calldata, inner_signature)`` of an EIP-6492 wrapped signature, else None."""
    if len(signature) <= 32 or not signature.endswith(EIP6492_SUFFIX):
        return None
    from eth_abi import decode

    try:
        factory, calldata, inner = decode(["address", "bytes", "bytes"], signature[:-32])
    except Exception:
        return None
    return checksum_address(factory), bytes(calldata), bytes(inner)


def wrap_6492(factory: str, factory_calldata: bytes, signature: bytes) -> bytes:
    """EIP-6492: ``abi.encode(factory, calldata, signature) ‖ 0x6492…6492``."""
    from eth_abi import encode

    return encode(["address", "bytes", "bytes"], [factory, factory_calldata, signature]) + EIP6492_SUFFIX


class SmartVerifier:
    """A :class:`bridge.identity.Verifier` for EOAs and smart accounts (see the module docstring).

    ``chains`` maps a chain id to its JSON-RPC URL (or a :class:`Chain`); each endpoint's ``eth_chainId``
    is checked against the id on first use. With no chains it accepts exactly what the EOA verifier
    accepts, but refuses smart-account statements with :class:`UnverifiableSigner`.
    """

    def __init__(
        self,
        chains: Mapping[int, str | Chain] | None = None,
        *,
        lens_chain_id: int = LENS_CHAIN_ID,
        cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chains: dict[int, Chain] = {
            cid: (c if isinstance(c, Chain) else Chain(c, chain_id=cid)) for cid, c in (chains or {}).items() if c
        }
        self.lens_chain_id = lens_chain_id
        self.cache_ttl = cache_ttl
        self.clock = clock
        self._cache: dict[bytes, SmartCheck] = {}
        self._lock = threading.Lock()

    def check(self, statement: Statement, text: str, signature: bytes) -> None:
        """Raises:
        UnverifiableSigner: not an EOA signature by the Address and the chain cannot be asked.
        BadSignature: refused.
        """
        self.verify_signature(statement, text, signature)

    def last_check(self, text: str, signature: bytes) -> SmartCheck | None:
        """The cached result for this statement and signature (with its block number), if any."""
        with self._lock:
            return self._cache.get(self._key(text, signature))

    def checked_blocks(self, records: Iterable[bytes]) -> dict[str, int]:
        """For records this verifier accepted on chain: installation id → the block it was checked at."""
        from bridge.identity.statement import IdentityError, SignedStatement

        out: dict[str, int] = {}
        for record in records:
            try:
                signed = SignedStatement.from_record(record)
                check = self.last_check(signed.text, signed.signature)
                if check is not None and check.block is not None:
                    out[Statement.parse(signed.text).installation_id] = check.block
            except IdentityError:
                continue
        return out

    @staticmethod
    def _key(text: str, signature: bytes) -> bytes:
        return hashlib.sha256(text.encode() + b"\x00" + signature).digest()

    def verify_signature(self, statement: Statement, text: str, signature: bytes) -> SmartCheck:
        """Decide, and say how (see :class:`SmartCheck`).

        Raises:
            UnverifiableSigner, BadSignature
        """
        if not isinstance(signature, bytes) or not 0 < len(signature) <= _MAX_SIGNATURE:
            raise BadSignature(f"signature must be 1 to {_MAX_SIGNATURE} bytes")
        address, chain_id = statement.address, statement.chain_id
        signer = _recover(text, signature)
        if signer == address:
            return SmartCheck("eoa", address, signer, chain_id, None, self.clock())
        key = self._key(text, signature)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and self.clock() - hit.checked_at < self.cache_ttl:
            return hit
        chain = self.chains.get(chain_id)
        if chain is None:
            raise UnverifiableSigner(
                f"the signature is not by {address} as an EOA, and no RPC is configured for chain {chain_id} "
                "to check a smart account"
            )
        try:
            result = self._on_chain(chain, statement, text, signature, signer)
        except Reverted as exc:
            raise BadSignature(f"{address} on chain {chain_id} refused the signature ({exc})") from None
        except ChainError as exc:
            raise UnverifiableSigner(f"cannot check smart account {address} on chain {chain_id}: {exc}") from None
        with self._lock:
            if len(self._cache) >= 4096:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = result
        return result

    def _on_chain(self, chain: Chain, st: Statement, text: str, signature: bytes, signer: str | None) -> SmartCheck:
        address, chain_id = st.address, st.chain_id
        block = chain.block_number()
        code = chain.code(address, block)
        wrapped = unwrap_6492(signature)
        if code and chain_id == self.lens_chain_id and signer is not None:
            owner = chain.read(address, "owner()", [], [], ["address"], block=block).values[0]
            if checksum_address(owner) == signer:
                return SmartCheck("lens-owner", address, signer, chain_id, block, self.clock())
            try:
                manager = chain.read(address, "isAccountManager(address)", ["address"], [signer], ["bool"], block=block).values[0]
            except Reverted:  # older Lens account deployments
                manager = chain.read(address, "canExecuteTransactions(address)", ["address"], [signer], ["bool"], block=block).values[0]
            if manager is True:
                return SmartCheck("lens-manager", address, signer, chain_id, block, self.clock())
            raise BadSignature(f"{signer} is neither the owner nor an account manager of Lens account {address} (block {block})")
        digest = _eip191_hash(text)
        if code:
            inner = wrapped[2] if wrapped else signature
            try:
                magic = chain.read(address, "isValidSignature(bytes32,bytes)", ["bytes32", "bytes"], [digest, inner], ["bytes4"], block=block).values[0]
            except Reverted:
                raise BadSignature(f"{address} has no working EIP-1271 isValidSignature (block {block})") from None
            if bytes(magic) != EIP1271_MAGIC:
                raise BadSignature(f"{address}.isValidSignature answered 0x{bytes(magic).hex()}, not 0x1626ba7e (block {block})")
            return SmartCheck("eip1271", address, None, chain_id, block, self.clock())
        if wrapped is None:
            raise BadSignature(f"the statement was not signed by {address}, which has no contract on chain {chain_id}")
        from eth_abi import encode

        from bridge.chain.validator import VALIDATOR_INIT_CODE

        data = VALIDATOR_INIT_CODE + encode(["address", "bytes32", "bytes"], [address, digest, signature])
        out = chain.raw_call({"data": "0x" + data.hex(), "gas": 10_000_000}, block)
        if out != b"\x01":
            raise BadSignature(f"the EIP-6492 signature does not deploy a wallet at {address} that accepts it (block {block})")
        return SmartCheck("eip6492", address, None, chain_id, block, self.clock())


#: Environment variable → chain id of the RPC it names (docs: README settings table).
ENV_CHAINS: dict[str, int] = {
    "PARLEY_ETH_RPC_URL": 1,
    "PARLEY_OP_RPC_URL": 10,
    "PARLEY_LENS_CHAIN_RPC_URL": LENS_CHAIN_ID,
}
#: config.json setting → the same chain ids.
SETTING_CHAINS: dict[str, int] = {"eth_rpc_url": 1, "op_rpc_url": 10, "lens_chain_rpc_url": LENS_CHAIN_ID}


def verifier_from_env(env: Mapping[str, str] | None = None) -> SmartVerifier:
    """The relay's verifier: chains from PARLEY_ETH_RPC_URL (1), PARLEY_OP_RPC_URL (10) and
    PARLEY_LENS_CHAIN_RPC_URL (232). None set: EOA-only, smart accounts refused as unverifiable."""
    from bridge.nameservices import is_off

    env = os.environ if env is None else env
    return SmartVerifier({cid: env[name].strip() for name, cid in ENV_CHAINS.items() if not is_off(env.get(name))})


def verifier_from_config(cfg: Mapping[str, object], env: Mapping[str, str] | None = None) -> SmartVerifier:
    """The bridge's verifier: the home's settings (``eth_rpc_url``, ``op_rpc_url``, ``lens_chain_rpc_url``;
    Ethereum and Lens Chain have public defaults, README "Name services"), each overridden by its
    environment variable; ``off`` turns a chain off."""
    from bridge.nameservices import endpoint

    env = os.environ if env is None else env
    variable = {cid: name for name, cid in ENV_CHAINS.items()}
    chains: dict[int, str] = {}
    for setting, cid in SETTING_CHAINS.items():
        url = endpoint(setting, cfg, env, variable[cid])
        if url:
            chains[cid] = url
    return SmartVerifier(chains)


__all__ += ["unwrap_6492", "ENV_CHAINS", "SETTING_CHAINS"]
