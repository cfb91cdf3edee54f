"""Name services: Lens (API v3 GraphQL), ENS (web3 over an RPC), Farcaster (hub HTTP API + IdRegistry).

Implements docs/PROTOCOL.md "Names". Every answer from the network is hostile until checked: shapes are
validated and every address is EIP-55 checksummed here, and a source that answers nonsense is reported
as failing, like one that cannot be reached.

Each source's ``lookup(value)`` returns the candidates in preference order, ``[]`` when the name does not
exist, and raises :class:`SourceError` (naming the source and why) when the source cannot answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge import nameservices
from bridge.chain import Chain, ChainError
from bridge.identity import IdentityError, checksum_address

__all__ = ["SourceError", "NotConfigured", "Candidate", "LensSource", "EnsSource", "FarcasterSource", "LENS_ACCOUNT_QUERY", "TIMEOUT"]

#: Seconds before an HTTP request to a name service gives up.
TIMEOUT = 10.0

T = TypeVar("T")

#: The Lens API v3 query (https://lens.xyz/docs/protocol: ``account(request: AccountRequest!)``).
LENS_ACCOUNT_QUERY = (
    "query Account($request: AccountRequest!) {"
    " account(request: $request) { address owner username { localName value } } }"
)

_ZERO = "0x0000000000000000000000000000000000000000"


class SourceError(Exception):
    """A name service could not answer. ``source`` is its label (``Lens API``, ``ENS``, ``Farcaster hub``…)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class NotConfigured(SourceError):
    """The source has no endpoint configured."""


@dataclass(frozen=True)
class Candidate:
    """One address a name maps to. ``role``: ``address`` | ``contact`` | ``account`` (Lens account
    contract) | ``owner`` (its owner EOA) | ``ens`` | ``verified`` (Farcaster verified address) |
    ``custody`` (Farcaster custody address)."""

    address: str
    role: str


def _address(value: Any, source: str, what: str) -> str:
    try:
        return checksum_address(value)
    except IdentityError:
        raise SourceError(source, f"answered a malformed {what}") from None


def _skip_if_down(source: str, url: str) -> None:
    """Fail at once when ``url`` could not be connected to moments ago (bridge/nameservices.py)."""
    left = nameservices.unreachable_for(url)
    if left > 0:
        raise SourceError(source, f"cannot reach {url} (it could not be reached moments ago; next try in {left:.0f}s)")


def _http_error(source: str, url: str, exc: Exception) -> SourceError:
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        nameservices.mark_unreachable(url)
    if isinstance(exc, requests.Timeout):
        return SourceError(source, f"{url} timed out after {TIMEOUT:g}s")
    if isinstance(exc, requests.ConnectionError):
        return SourceError(source, f"cannot reach {url} (connection refused or host unreachable)")
    return SourceError(source, f"{url} failed: {type(exc).__name__}")


class LensSource:
    """Lens API v3: ``account(request: {username: {localName}})`` → ``address`` (the account contract) and
    ``owner`` (the EOA that owns it). Candidates: the account, then the owner."""

    label = "Lens API"

    def __init__(self, url: str) -> None:
        self.url = url

    def account(self, request: dict[str, Any], query: str = LENS_ACCOUNT_QUERY) -> dict[str, Any] | None:
        """Ask ``query`` (an ``account(request: $request)`` query) with ``request`` (an ``AccountRequest``):
        the ``account`` object, or None when the API knows no such account.

        Raises:
            SourceError
        """
        import requests

        body = {"query": query, "variables": {"request": request}}
        _skip_if_down(self.label, self.url)
        try:
            r = requests.post(self.url, json=body, timeout=nameservices.timeout(TIMEOUT), headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise _http_error(self.label, self.url, exc) from None
        nameservices.mark_reachable(self.url)
        try:
            data = r.json()
        except ValueError:
            raise SourceError(self.label, f"{self.url} answered HTTP {r.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise SourceError(self.label, "answered a malformed response")
        errors = data.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            message = str(first.get("message", "error"))[:200]
            raise SourceError(self.label, f"query failed: {message}")
        if r.status_code != 200:
            raise SourceError(self.label, f"{self.url} answered HTTP {r.status_code}")
        payload = data.get("data")
        if not isinstance(payload, dict) or "account" not in payload:
            raise SourceError(self.label, "answered without data.account")
        account = payload["account"]
        if account is not None and not isinstance(account, dict):
            raise SourceError(self.label, "answered a malformed account")
        return account

    def lookup(self, local_name: str) -> list[Candidate]:
        """Raises:
        SourceError
        """
        account = self.account({"username": {"localName": local_name}})
        if account is None:
            return []
        out = [Candidate(_address(account.get("address"), self.label, "account address"), "account")]
        owner = account.get("owner")
        if owner is not None:
            owner = _address(owner, self.label, "owner address")
            if owner != out[0].address and owner != _ZERO:
                out.append(Candidate(owner, "owner"))
        return out


class EnsSource:
    """ENS through web3 (``ENS.address``), over ``rpc_url``. web3 8 resolves through the ENS Universal
    Resolver; ``registry`` and ``universal_resolver`` default to mainnet's and may point elsewhere."""

    label = "ENS"

    def __init__(self, rpc_url: str, *, registry: str | None = None, universal_resolver: str | None = None) -> None:
        self.rpc_url = rpc_url
        self.registry = registry
        self.universal_resolver = universal_resolver

    def ns(self) -> Any:
        """web3's ``ENS`` over this source's RPC, registry and universal resolver (nothing is asked yet)."""
        from ens import ENS
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": nameservices.timeout(TIMEOUT)}, exception_retry_configuration=None))
        ns = ENS.from_web3(w3, addr=checksum_address(self.registry) if self.registry else None)
        if self.universal_resolver:
            from ens import abis

            ns._universal_resolver = ns.w3.eth.contract(abi=abis.UNIVERSAL_RESOLVER, address=checksum_address(self.universal_resolver))
        return ns

    def ask(self, call: Callable[[], T], what: str) -> T:
        """Run ``call`` (web3 ENS calls), turning every way it can fail into :class:`SourceError`;
        ``what`` names the query in the message (e.g. the name).

        Raises:
            SourceError
        """
        import requests
        from eth_abi.exceptions import DecodingError
        from ens.exceptions import ENSException
        from web3.exceptions import Web3Exception

        _skip_if_down(self.label, self.rpc_url)
        try:
            return call()
        except requests.RequestException as exc:
            raise _http_error(self.label, self.rpc_url, exc) from None
        except ENSException as exc:
            raise SourceError(self.label, f"{what}: {exc}") from None
        except (Web3Exception, DecodingError, ValueError, OSError) as exc:
            raise SourceError(self.label, f"{self.rpc_url} failed: {str(exc)[:200]}") from None

    def lookup(self, name: str) -> list[Candidate]:
        """Raises:
        SourceError
        """
        ns = self.ns()
        found = self.ask(lambda: ns.address(name), name)
        if not found:
            return []
        return [Candidate(_address(str(found), self.label, "address"), "ens")]


class FarcasterSource:
    """Farcaster: a hub's HTTP API (``/v1/userNameProofByName?name=`` → fid; ``/v1/verificationsByFid?fid=``
    → verified Ethereum addresses); the custody address (IdRegistry ``custodyOf(fid)`` on Optimism, via
    ``op_rpc_url``) is the fallback when a fid has no verified address or the hub cannot be reached."""

    label = "Farcaster hub"

    def __init__(self, hub_url: str | None, *, op_rpc_url: str | None = None, id_registry: str | None = None) -> None:
        self.hub_url = hub_url.rstrip("/") if hub_url else None
        self.op_rpc_url = op_rpc_url
        self.id_registry = id_registry

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """GET a hub path: its JSON object, or None for a not-found answer."""
        import requests

        if self.hub_url is None:
            raise NotConfigured(self.label, "no hub URL configured")
        url = f"{self.hub_url}{path}"
        _skip_if_down(self.label, self.hub_url)
        try:
            r = requests.get(url, params=params, timeout=nameservices.timeout(TIMEOUT), headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise _http_error(self.label, self.hub_url, exc) from None
        nameservices.mark_reachable(self.hub_url)
        try:
            data = r.json()
        except ValueError:
            raise SourceError(self.label, f"{url} answered HTTP {r.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise SourceError(self.label, f"{path} answered a malformed response")
        if r.status_code != 200:
            code = str(data.get("errCode", ""))
            if r.status_code == 404 or code.startswith("not_found"):
                return None
            raise SourceError(self.label, f"{path} answered HTTP {r.status_code} {code} {str(data.get('details', ''))[:120]}".rstrip())
        return data

    def fid_of(self, fname: str) -> int | None:
        """Raises:
        SourceError
        """
        if not self.hub_url:
            raise NotConfigured(self.label, "no hub configured (farcaster_hub_url / PARLEY_FARCASTER_HUB_URL)")
        data = self._get("/v1/userNameProofByName", {"name": fname})
        if data is None:
            return None
        fid = data.get("fid")
        if type(fid) is not int or fid <= 0 or str(data.get("name", "")).lower() != fname:
            raise SourceError(self.label, "answered a malformed username proof")
        return fid

    def verified(self, fid: int) -> list[str]:
        """Raises:
        SourceError
        """
        if not self.hub_url:
            raise NotConfigured(self.label, "no hub configured (farcaster_hub_url / PARLEY_FARCASTER_HUB_URL)")
        out: list[str] = []
        token: str | None = None
        for _ in range(20):  # pages
            params: dict[str, Any] = {"fid": fid, "pageSize": 100}
            if token:
                params["pageToken"] = token
            data = self._get("/v1/verificationsByFid", params)
            if data is None:
                return out
            messages = data.get("messages")
            if not isinstance(messages, list):
                raise SourceError(self.label, "verificationsByFid answered without messages")
            for m in messages:
                d = m.get("data") if isinstance(m, dict) else None
                if not isinstance(d, dict) or d.get("type") != "MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS" or d.get("fid") != fid:
                    continue
                body = d.get("verificationAddAddressBody") or d.get("verificationAddEthAddressBody")
                if not isinstance(body, dict) or body.get("protocol", "PROTOCOL_ETHEREUM") != "PROTOCOL_ETHEREUM":
                    continue
                try:
                    addr = checksum_address(body.get("address"))
                except IdentityError:
                    continue  # one bad message does not spoil the others
                if addr not in out:
                    out.append(addr)
            token = data.get("nextPageToken") or None
            if not token or not isinstance(token, str):
                break
        return out

    def custody(self, fid: int) -> str | None:
        """Raises:
        SourceError
        """
        if not self.op_rpc_url or not self.id_registry:
            raise NotConfigured("Farcaster IdRegistry", "no Optimism RPC configured (op_rpc_url / PARLEY_OP_RPC_URL)")
        try:
            read = Chain(self.op_rpc_url).read(checksum_address(self.id_registry), "custodyOf(uint256)", ["uint256"], [fid], ["address"])
        except ChainError as exc:
            raise SourceError("Farcaster IdRegistry", str(exc)) from None
        addr = checksum_address(read.values[0])
        return None if addr == _ZERO else addr

    def lookup(self, value: str) -> list[Candidate]:
        """``value`` is a fid (digits) or an fname.

        Raises:
            SourceError
        """
        hub_error: SourceError | None = None
        fid: int | None
        if value.isdigit():
            fid = int(value)
        else:
            fid = self.fid_of(value)
            if fid is None:
                return []
        try:
            verified = self.verified(fid)
        except SourceError as exc:
            verified, hub_error = [], exc
        if verified:
            return [Candidate(a, "verified") for a in verified]
        try:
            custody = self.custody(fid)
        except SourceError as exc:
            raise hub_error or exc from None
        return [Candidate(custody, "custody")] if custody else []
