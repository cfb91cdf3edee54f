"""Local HTTP servers speaking the real request/response shapes of the Lens API v3 (GraphQL) and a
Farcaster hub's HTTP API, on 127.0.0.1:0 in a thread.

Shapes modelled (checked against the Lens v3 docs, https://lens.xyz/docs/protocol, and the Farcaster hub
HTTP API docs, https://docs.farcaster.xyz/reference/hubble/httpapi; the verificationsByFid response was
re-checked against the Snapchain HTTP API reference, docs.neynar.com/snapchain/httpapi/verification, whose
example names the body ``verificationAddEthAddressBody``; the resolver also accepts the protobuf name
``verificationAddAddressBody``):

- Lens: ``POST /graphql`` ``{"query": …, "variables": {"request": {"username": {"localName": "alice"}}}}``
  → ``{"data": {"account": {"address", "owner", "username": {"localName", "value": "lens/alice"}}}}``, or
  ``{"data": {"account": null}}`` for an unknown name; a malformed query → ``{"errors": [{"message"}]}``.
  By address (the schema's ``AccountRequest.address: EvmAddress``): ``{"request": {"address": "0x…"}}`` →
  the same account; when the query selects ``metadata``, it carries ``{"id", "name", "bio", "attributes":
  [{"type": "STRING", "key", "value"}]}`` (``AccountMetadata.attributes: [MetadataAttribute!]!``, with
  ``MetadataAttribute {type: MetadataAttributeType!, key: String!, value: String!}``, checked against
  lens-protocol/lens-sdk packages/graphql/schema.graphql) or ``null`` for an account without metadata.
- Hub: ``GET /v1/userNameProofByName?name=alice`` → ``{"timestamp", "name", "owner", "signature", "fid",
  "type": "USERNAME_TYPE_FNAME"}``; ``GET /v1/verificationsByFid?fid=N`` → ``{"messages": [{"data": {"type":
  "MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS", "fid", "timestamp", "network", "verificationAddEthAddressBody":
  {"address", "ethSignature", "blockHash", "protocol"}}, "hash", …}], "nextPageToken": ""}``; unknown
  → HTTP 400 ``{"errCode": "not_found", "presentable": false, "name": "NOT_FOUND", "code": 5, "details"}``.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.served import Served
from urllib.parse import parse_qs, urlsplit

__all__ = ["LensApi", "FarcasterHub"]


class _Server(Served):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self._down = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if server._down:
                    return self._reply(503, {"error": "down"})
                u = urlsplit(self.path)
                server.requests.append(("GET", u.path, parse_qs(u.query)))
                self._reply(*server.get(u.path, {k: v[0] for k, v in parse_qs(u.query).items()}))

            def do_POST(self) -> None:  # noqa: N802
                if server._down:
                    return self._reply(503, {"error": "down"})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                server.requests.append(("POST", self.path, body))
                self._reply(*server.post(self.path, body))

        self.base = self._serve(Handler)

    def get(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        return 404, {"errCode": "not_found", "presentable": False, "name": "NOT_FOUND", "code": 5, "details": path}

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return 404, {"error": "not found"}


class LensApi(_Server):
    """``accounts``: localName → (account address, owner address). ``metadata``: account address → the
    ``metadata`` object answered for it (a test may put a malformed one there); see :meth:`set_attributes`."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, tuple[str, str]] = {}
        self.metadata: dict[str, Any] = {}
        self.url = f"{self.base}/graphql"

    def set_attributes(self, account: str, attributes: dict[str, str]) -> None:
        """Give ``account`` metadata with these STRING attributes (key → value), as the API answers it."""
        self.metadata[account] = {
            "id": "0f0e5c9e-6b1e-4a59-9d2c-2f0b6f0c0001", "name": None, "bio": None,
            "attributes": [{"type": "STRING", "key": k, "value": v} for k, v in attributes.items()],
        }

    def _account(self, local: str | None, address: str | None) -> dict[str, Any] | None:
        for name, (account, owner) in self.accounts.items():
            if name == local or (address is not None and account.lower() == address.lower()):
                return {"address": account, "owner": owner, "username": {"localName": name, "value": f"lens/{name}"}}
        for account in self.metadata:  # an account known only by its address (no username)
            if address is not None and account.lower() == address.lower():
                return {"address": account, "owner": account, "username": None}
        return None

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        if path != "/graphql":
            return 404, {"error": "not found"}
        query = body.get("query", "") if isinstance(body, dict) else ""
        try:
            request = body["variables"]["request"]
            local = request["username"]["localName"] if "username" in request else None
            address = request["address"] if "address" in request else None
        except (KeyError, TypeError):
            return 200, {"errors": [{"message": "Variable \"$request\" of required type \"AccountRequest!\" was not provided."}]}
        if (local is None) == (address is None):
            return 200, {"errors": [{"message": "AccountRequest: exactly one of address, username, legacyProfileId, txHash"}]}
        if "account(request: $request)" not in query:
            return 200, {"errors": [{"message": "Unknown query"}]}
        found = self._account(local, address)
        if found is None:
            return 200, {"data": {"account": None}}
        if "metadata" in query:
            found["metadata"] = self.metadata.get(found["address"])
        return 200, {"data": {"account": found}}


class FarcasterHub(_Server):
    """``fnames``: fname → fid; ``verifications``: fid → addresses (``solana`` entries are skipped by clients)."""

    def __init__(self) -> None:
        super().__init__()
        self.fnames: dict[str, int] = {}
        self.verifications: dict[int, list[str]] = {}
        self.url = self.base

    def get(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        not_found = (400, {"errCode": "not_found", "presentable": False, "name": "NOT_FOUND", "code": 5, "details": "NotFound"})
        if path == "/v1/userNameProofByName":
            name = q.get("name", "")
            if name not in self.fnames:
                return not_found
            return 200, {
                "timestamp": 1700000000, "name": name, "owner": "0x" + "11" * 20, "signature": "AAAA",
                "fid": self.fnames[name], "type": "USERNAME_TYPE_FNAME",
            }
        if path == "/v1/verificationsByFid":
            try:
                fid = int(q.get("fid", ""))
            except ValueError:
                return 400, {"errCode": "bad_request.validation_failure", "presentable": False, "name": "VALIDATION_FAILURE", "code": 3, "details": "fid"}
            messages = []
            for addr in self.verifications.get(fid, []):
                solana = not addr.startswith("0x")
                messages.append({
                    "data": {
                        "type": "MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS", "fid": fid, "timestamp": 100000000,
                        "network": "FARCASTER_NETWORK_MAINNET",
                        "verificationAddEthAddressBody": {
                            "address": addr, "ethSignature": "AAAA", "blockHash": "0x" + "00" * 32,
                            "protocol": "PROTOCOL_SOLANA" if solana else "PROTOCOL_ETHEREUM",
                        },
                    },
                    "hash": "0x" + "ab" * 20, "hashScheme": "HASH_SCHEME_BLAKE3", "signature": "AAAA",
                    "signatureScheme": "SIGNATURE_SCHEME_ED25519", "signer": "0x" + "cd" * 32,
                })
            return 200, {"messages": messages, "nextPageToken": ""}
        return super().get(path, q)
