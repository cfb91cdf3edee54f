"""An in-process chain (eth-tester + py-evm) behind a real JSON-RPC HTTP endpoint on 127.0.0.1.

web3 has no JSON-RPC server built in; this one forwards each request to an ``EthereumTesterProvider``
(through the provider's own middleware, so results are what web3 expects), and writes the answers the way
a node does: quantities as hex strings, bytes as 0x-hex, a revert as error code 3 "execution reverted"
with the revert data (geth's shape). ``chain_id`` overrides ``eth_chainId`` (e.g. 232 for Lens Chain).

Also: contract deployment from ``tests/contracts/build/*.json`` and ``down()``/``up()`` to simulate an outage.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.fakes.served import Served

__all__ = ["ChainServer", "EnsNames", "load_contract", "namehash"]

BUILD = Path(__file__).resolve().parent.parent / "contracts" / "build"


def load_contract(name: str) -> dict[str, Any]:
    """``{abi, bytecode}`` of a compiled test contract."""
    return json.loads((BUILD / f"{name}.json").read_text())


def _wire(value: Any) -> Any:
    """Python values from eth-tester → JSON-RPC wire values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    return value


class ChainServer(Served):
    """``with ChainServer() as chain: chain.url, chain.w3, chain.deploy("Name", *args)``."""

    def __init__(self, *, chain_id: int | None = None) -> None:
        from web3 import EthereumTesterProvider, Web3

        self.provider = EthereumTesterProvider()
        self.w3 = Web3(self.provider)
        self.chain_id = chain_id
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self._down = False
        self._request = self.provider.request_func(self.w3, self.w3.middleware_onion)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                if server._down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                reply = [server.handle(r) for r in body] if isinstance(body, list) else server.handle(body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.url = self._serve(Handler)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        rid, method, params = req.get("id"), req.get("method"), req.get("params") or []
        self.requests.append(str(method))
        if method == "eth_chainId" and self.chain_id is not None:
            return {"jsonrpc": "2.0", "id": rid, "result": hex(self.chain_id)}
        try:
            with self.lock:
                resp = self._request(method, params)
        except Exception as exc:  # eth-tester raises on reverts and bad requests
            data = getattr(exc, "data", None)
            if data is None and exc.args and isinstance(exc.args[-1], (bytes, str)) and str(exc.args[-1]).startswith("0x"):
                data = exc.args[-1]
            err: dict[str, Any] = {"code": 3 if "revert" in str(exc).lower() or data else -32000, "message": f"execution reverted: {exc}"[:300]}
            if data is not None:
                err["data"] = data if isinstance(data, str) else "0x" + bytes(data).hex()
            return {"jsonrpc": "2.0", "id": rid, "error": err}
        if "error" in resp:
            return {"jsonrpc": "2.0", "id": rid, "error": _wire(resp["error"])}
        return {"jsonrpc": "2.0", "id": rid, "result": _wire(resp.get("result"))}

    # --- helpers ---------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        return list(self.w3.eth.accounts)

    def deploy(self, name: str, *args: Any, sender: str | None = None) -> Any:
        """Deploy build/<name>.json with constructor ``args``; returns the web3 contract."""
        spec = load_contract(name)
        with self.lock:
            factory = self.w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
            tx = factory.constructor(*args).transact({"from": sender or self.w3.eth.accounts[0]})
            receipt = self.w3.eth.wait_for_transaction_receipt(tx)
            return self.w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])

    def transact(self, fn: Any, sender: str | None = None) -> Any:
        """Send a contract function call as a transaction and wait for it."""
        with self.lock:
            tx = fn.transact({"from": sender or self.w3.eth.accounts[0]})
            return self.w3.eth.wait_for_transaction_receipt(tx)


def namehash(name: str) -> bytes:
    """ENS namehash (EIP-137), computed here rather than by web3 so a test does not check web3 with itself."""
    from eth_hash.auto import keccak

    node = b"\0" * 32
    if name:
        for label in reversed(name.split(".")):
            node = keccak(node + keccak(label.encode()))
    return node


class EnsNames:
    """ENS on a :class:`ChainServer`: ENSRegistry, PublicResolver and UniversalResolver from
    tests/contracts/Names.sol. The chain's first account owns every name it creates.

    ``registry`` and ``universal`` are the addresses to give the resolver (``ens_registry``,
    ``ens_universal_resolver``)."""

    def __init__(self, chain: ChainServer) -> None:
        self.chain = chain
        self.owner = chain.accounts[0]
        self._registry = chain.deploy("ENSRegistry")
        self.resolver = chain.deploy("PublicResolver", self._registry.address)
        self.registry: str = self._registry.address
        self.universal: str = chain.deploy("UniversalResolver", self._registry.address).address
        self._made: set[str] = {""}

    def _node(self, name: str) -> bytes:
        """Create ``name`` (and its parents) owned by :attr:`owner`, with the public resolver."""
        if name not in self._made:
            label, _, parent = name.partition(".")
            from eth_hash.auto import keccak

            self._node(parent)
            self.chain.transact(self._registry.functions.setSubnodeOwner(namehash(parent), keccak(label.encode()), self.owner))
            self.chain.transact(self._registry.functions.setResolver(namehash(name), self.resolver.address))
            self._made.add(name)
        return namehash(name)

    def set_addr(self, name: str, address: str) -> None:
        """``name`` resolves to ``address``."""
        self.chain.transact(self.resolver.functions.setAddr(self._node(name), address))

    def set_text(self, name: str, key: str, value: str) -> None:
        """``name``'s text record ``key`` (ENSIP-5)."""
        self.chain.transact(self.resolver.functions.setText(self._node(name), key, value))

    def set_reverse(self, address: str, name: str) -> None:
        """``address``'s primary name claim: ``name(<addr>.addr.reverse)`` = ``name`` (ENSIP-3)."""
        self.chain.transact(self.resolver.functions.setName(self._node(f"{address.lower()[2:]}.addr.reverse"), name))
