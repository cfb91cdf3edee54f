"""A stand-in for the bridge's local API, for testing the extension alone (DESIGN.md "Bridge":
local API; the JSON-RPC contract in e2e/README.md). Test code only: the real bridge lives in
``bridge/api``. It speaks the same contract, records what the extension sent (Origin, Host,
methods), and can push ``message.new`` notifications.

Uses ``websockets`` (installed as a dependency of web3) in its threaded sync flavour.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from bridge.api.access import bridge_proof_message, normalise_code, pair_proof
from bridge.crypto import primitives
from websockets.sync.server import Server, ServerConnection, serve

__all__ = ["FakeBridge"]


@dataclass
class FakeBridge:
    """Serve ws://127.0.0.1:<port>/v1/rpc until :meth:`stop`. ``directory`` maps peers to addresses."""

    pair_code: str
    own_address: str
    directory: dict[str, str]
    parley_users: set[str]
    port: int = 0
    tokens: set[str] = field(default_factory=set)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    handshakes: list[dict[str, str]] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _server: Server | None = None
    _thread: threading.Thread | None = None
    _clients: set[ServerConnection] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: The stand-in's own local-API key: it proves itself like the real bridge (PROTOCOL.md §8.1).
    key: bytes = field(default_factory=lambda: primitives.ed25519_keypair()[0])

    def start(self) -> FakeBridge:
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-bridge")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._clients.clear()

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def add_message(self, peer: str, text: str, direction: str) -> dict[str, Any]:
        peer = peer.lower()
        msg = {
            "id": secrets.token_hex(8),
            "sender": peer if direction == "in" else self.own_address,
            "recipient": self.own_address if direction == "in" else peer,
            "peer": peer,
            "text": text,
            "sent_at": int(time.time() * 1000),
            "direction": direction,
            "read": direction == "out",
            "state": "sent",
        }
        self.messages.setdefault(peer, []).append(msg)
        return msg

    def unread(self) -> int:
        return sum(1 for msgs in self.messages.values() for m in msgs if not m["read"])

    def push_incoming(self, peer: str, text: str, consent: str = "allowed") -> dict[str, Any]:
        """Store an incoming message and notify every authenticated client (message.new; ``consent`` as
        the real bridge sends it since issue 12: the extension notifies only for "allowed")."""
        msg = self.add_message(peer, text, "in")
        self._broadcast({"jsonrpc": "2.0", "method": "message.new", "params": {"message": msg, "consent": consent}})
        return msg

    def push_conversation_updated(self, peer: str) -> None:
        """Notify every authenticated client of ``peer``'s unread count (conversation.updated)."""
        peer = peer.lower()
        unread = sum(1 for m in self.messages.get(peer, []) if not m["read"])
        self._broadcast({"jsonrpc": "2.0", "method": "conversation.updated",
                         "params": {"peer": peer, "unread": unread, "total_unread": self.unread()}})

    def _broadcast(self, note: dict[str, Any]) -> None:
        with self._lock:
            clients = list(self._clients)
        for ws in clients:
            try:
                ws.send(json.dumps(note))
            except ConnectionClosed:
                pass

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "ping":
            return "pong"
        if method in ("status", "identity"):
            ident = {"address": self.own_address, "did": f"did:pkh:eip155:1:{self.own_address}", "installation_id": "ab" * 16}
            if method == "identity":
                return ident
            return {**ident, "version": "fake", "relay": {"url": "ws://127.0.0.1:1", "connected": True}, "unread": self.unread()}
        if method == "resolve":
            peer = str(params.get("peer", ""))
            address = self.directory.get(peer) or (peer if peer.startswith("0x") else None)
            if address is None:
                raise _RpcFault(-32004, "cannot resolve", {"reason": "unknown"})
            return {"peer": peer, "address": address, "source": "contacts", "name": peer.split(":")[-1].title()}
        if method == "canMessage":
            return {"address": params["address"], "canMessage": params["address"] in self.parley_users}
        if method == "messages.list":
            return {"messages": list(self.messages.get(str(params["peer"]).lower(), [])), "has_more": False}
        if method == "messages.send":
            return {"message": self.add_message(str(params["peer"]), str(params["text"]), "out")}
        if method == "messages.markRead":
            for m in self.messages.get(str(params["peer"]).lower(), []):
                m["read"] = True
            return {"unread": self.unread()}
        raise _RpcFault(-32601, "method not found")

    def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        self.handshakes.append({"origin": request.headers.get("Origin", ""), "host": request.headers.get("Host", ""), "path": request.path})
        authed = False
        challenge = b""
        try:
            for raw in ws:
                req = json.loads(raw)
                method, params, rid = req.get("method"), req.get("params") or {}, req.get("id")
                self.calls.append((method, params))
                if method == "hello":
                    challenge = base64.urlsafe_b64decode(str(params.get("challenge", "")) + "==")
                    message = bridge_proof_message(challenge, request.headers.get("Origin", ""), request.headers.get("Host", ""))
                    proof = {"v": 1, "key": _b64u(primitives.ed25519_public(self.key)), "signature": _b64u(primitives.ed25519_sign(self.key, message))}
                    ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": proof}))
                    continue
                if not authed:
                    public = primitives.ed25519_public(self.key)
                    code_hash = hashlib.sha256(normalise_code(self.pair_code).encode()).digest()
                    wanted = _b64u(pair_proof(code_hash, "client", challenge + public))
                    if method == "pair" and params.get("proof") == wanted:
                        token = secrets.token_urlsafe(24)
                        self.tokens.add(token)
                        answer = _b64u(pair_proof(code_hash, "bridge", challenge + public))
                        result = {"token": token, "token_id": "t1", "bridge_key": _b64u(public), "proof": answer}
                        ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}))
                    elif method == "auth" and params.get("token") in self.tokens:
                        ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"ok": True}}))
                    else:
                        ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32001, "message": "not authenticated"}}))
                        ws.close(4401, "not authenticated")
                        return
                    authed = True
                    with self._lock:
                        self._clients.add(ws)
                    continue
                try:
                    body: dict[str, Any] = {"result": self._result(method, params)}
                except _RpcFault as fault:
                    body = {"error": {"code": fault.code, "message": str(fault), "data": fault.data}}
                ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, **body}))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.discard(ws)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data
