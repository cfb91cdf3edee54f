"""Small web3 helpers: one JSON-RPC endpoint, contract reads pinned to (and reporting) a block number.

Used by the name resolver (ENS, Farcaster IdRegistry, docs/PROTOCOL.md "Names") and by the smart-account
verifiers (docs/PROTOCOL.md §3.x "Smart accounts"). Every read returns the block it was made at, so a
decision taken from chain state can say when that state was observed.

web3 is imported lazily (slow to import); nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChainError", "Chain", "Read", "selector"]

#: Seconds before one JSON-RPC request gives up.
DEFAULT_TIMEOUT = 10.0


class ChainError(Exception):
    """The chain endpoint could not be used: unreachable, an RPC error, a wrong chain id, or a reply that
    does not decode. ``url`` names the endpoint; the message says why."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class Read:
    """One decoded contract read and the block number it was made at."""

    values: tuple[Any, ...]
    block: int


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature`` (e.g. ``"owner()"``)."""
    from eth_hash.auto import keccak

    return bytes(keccak(signature.encode("ascii")))[:4]


def _short(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class Chain:
    """A JSON-RPC endpoint (``url``), optionally required to be chain ``chain_id`` (checked on first use).

    Thread-safe for reads (web3's HTTPProvider keeps a session per thread).
    """

    def __init__(self, url: str, *, chain_id: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.expected_chain_id = chain_id
        self.timeout = timeout
        self._w3: Any = None
        self._checked = chain_id is None

    @property
    def w3(self) -> Any:
        """The ``Web3`` instance (no retries: an unreachable endpoint fails at once).

        Raises:
            ChainError: the chain id differs from the expected one, or the endpoint is unreachable.
        """
        if self._w3 is None:
            from web3 import Web3

            from bridge.nameservices import timeout

            self._w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": timeout(self.timeout)}, exception_retry_configuration=None))
        if not self._checked:
            got = self._rpc(lambda: self._w3.eth.chain_id)
            if got != self.expected_chain_id:
                raise ChainError(f"{self.url} is chain {got}, expected chain {self.expected_chain_id}", self.url)
            self._checked = True
        return self._w3

    def _unreachable(self, exc: BaseException) -> ChainError:
        """A request failed: an endpoint that could not be connected to is not asked again for a while."""
        import requests

        from bridge import nameservices

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            nameservices.mark_unreachable(self.url)
        return ChainError(f"cannot reach {self.url}: {_short(exc)}", self.url)

    def _skip_if_down(self) -> None:
        from bridge import nameservices

        left = nameservices.unreachable_for(self.url)
        if left > 0:
            raise ChainError(f"cannot reach {self.url}: it could not be reached moments ago (next try in {left:.0f}s)", self.url)

    def _rpc(self, fn: Any) -> Any:
        import requests
        from web3.exceptions import Web3Exception

        self._skip_if_down()
        try:
            return fn()
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"{self.url} failed: {_short(exc)}", self.url) from None

    def block_number(self) -> int:
        """The latest block number.

        Raises:
            ChainError
        """
        w3 = self.w3
        return int(self._rpc(lambda: w3.eth.block_number))

    def code(self, address: str, block: int | str = "latest") -> bytes:
        """The code at ``address`` (empty for an EOA or an undeployed account).

        Raises:
            ChainError
        """
        w3 = self.w3
        return bytes(self._rpc(lambda: w3.eth.get_code(address, block_identifier=block)))

    def raw_call(self, tx: dict[str, Any], block: int | str = "latest") -> bytes:
        """``eth_call`` of ``tx`` at ``block``; returns the raw return data.

        Raises:
            Reverted: the call reverted.
            ChainError: any other failure.
        """
        from web3.exceptions import ContractLogicError

        w3 = self.w3
        try:
            return bytes(self._rpc_call(w3, tx, block))
        except ContractLogicError as exc:
            raise Reverted(f"call reverted: {_short(exc)}", self.url) from None

    def _rpc_call(self, w3: Any, tx: dict[str, Any], block: int | str) -> Any:
        import requests
        from web3.exceptions import ContractLogicError, Web3Exception

        self._skip_if_down()
        try:
            return w3.eth.call(tx, block_identifier=block)
        except ContractLogicError:
            raise
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"{self.url} failed: {_short(exc)}", self.url) from None

    def read(
        self,
        to: str,
        signature: str,
        arg_types: Sequence[str],
        args: Sequence[Any],
        ret_types: Sequence[str],
        *,
        block: int | None = None,
    ) -> Read:
        """Call ``signature`` on ``to`` at ``block`` (default: the latest block, fixed first so the
        reported number is the one read) and decode the result.

        Raises:
            Reverted: the call reverted.
            ChainError: unreachable, RPC error, or an undecodable reply.
        """
        from eth_abi import decode, encode

        at = self.block_number() if block is None else block
        data = selector(signature) + encode(list(arg_types), list(args))
        raw = self.raw_call({"to": to, "data": "0x" + data.hex()}, at)
        try:
            values = tuple(decode(list(ret_types), raw))
        except Exception as exc:  # hostile or wrong contract: any decoding failure
            raise ChainError(f"{signature} on {to} returned an undecodable reply ({_short(exc)})", self.url) from None
        return Read(values, at)


class Reverted(ChainError):
    """The contract call reverted (the function may not exist on that contract)."""


__all__ += ["Reverted", "DEFAULT_TIMEOUT"]
