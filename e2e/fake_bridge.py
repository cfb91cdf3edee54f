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
    #: issue 12: consent per peer ({consent, held, dropped}; no entry = allowed), uploads in progress
    #: (upload_id → {name, size, mime, chunks: [(offset, bytes)]}), attachment bytes by attachment id.
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
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

    def add_message(self, peer: str, text: str, direction: str, **extra: Any) -> dict[str, Any]:
        """Store a message in the message-dict shape of the issue-12 contract (§4)."""
        peer = peer.lower()
        msg = {
            "id": secrets.token_hex(16),
            "sender": peer if direction == "in" else self.own_address,
            "recipient": self.own_address if direction == "in" else peer,
            "peer": peer,
            "text": text,
            "sent_at": int(time.time() * 1000),
            "direction": direction,
            "read": direction == "out",
            "state": "sent" if direction == "out" else "received",
            "flag": None,
            "kind": "text",
            "content_type": "text",
            "unsupported": False,
            "reply_to": None,
            "reply_preview": None,
            "reactions": {},
            "edited": False,
            "deleted": False,
            "attachments": [],
        }
        msg.update(extra)
        self.messages.setdefault(peer, []).append(msg)
        return msg

    def find(self, peer: str, mid: str) -> dict[str, Any]:
        for m in self.messages.get(peer.lower(), []):
            if m["id"] == mid:
                return m
        raise _RpcFault(-32010, "unknown message")

    def add_file_message(self, peer: str, name: str, data: bytes, mime: str, direction: str = "in", text: str = "") -> dict[str, Any]:
        """An attachment message whose file the bridge already holds (state done)."""
        msg = self.add_message(peer, text, direction, kind="attachment", content_type="attachment")
        att_id = f"{msg['id']}-0"
        self.files[att_id] = data
        msg["attachments"] = [{
            "id": att_id, "name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mime": mime,
            "state": "done", "thumbnail": mime.startswith("image/"), "progress": None,
        }]
        return msg

    def consent_of(self, peer: str) -> dict[str, Any]:
        peer = peer.lower()
        return {"peer": peer, **self.consent.get(peer, {"consent": "allowed", "held": 0, "dropped": 0})}

    def set_consent(self, peer: str, state: str, held: int = 0) -> None:
        self.consent[peer.lower()] = {"consent": state, "held": held, "dropped": 0}

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Push any notification of the contract (typing, consent.changed, message.updated, attachment.progress)."""
        self._broadcast({"jsonrpc": "2.0", "method": method, "params": params})

    def push_updated(self, msg: dict[str, Any]) -> None:
        self.notify("message.updated", {"message": msg})

    def push_typing(self, peer: str, typing: bool) -> None:
        self.notify("typing", {"peer": peer.lower(), "typing": typing})

    def uploaded(self, upload_id: str) -> bytes:
        """The chunks received for an upload, concatenated in the order they came (offsets checked)."""
        out = b""
        for offset, data in self.uploads[upload_id]["chunks"]:
            assert offset == len(out), (offset, len(out))
            out += data
        return out

    def unread(self) -> int:
        return sum(1 for msgs in self.messages.values() for m in msgs if not m["read"])

    def push_incoming(self, peer: str, text: str) -> dict[str, Any]:
        """Store an incoming message and notify every authenticated client (message.new)."""
        msg = self.add_message(peer, text, "in")
        self._broadcast({"jsonrpc": "2.0", "method": "message.new", "params": {"message": msg, "consent": self.consent_of(peer)["consent"]}})
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
            return self._send(params)
        if method in _ISSUE12:
            return getattr(self, "_" + method.replace(".", "_"))(params)
        if method == "messages.markRead":
            for m in self.messages.get(str(params["peer"]).lower(), []):
                m["read"] = True
            return {"unread": self.unread()}
        raise _RpcFault(-32601, "method not found")

    # --- issue 12 (contract §7), shapes as the real bridge's -------------------------------------

    def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        peer = str(params["peer"]).lower()
        text = str(params["text"])
        uploads = list(params.get("uploads") or [])
        reply_to = params.get("reply_to")
        extra: dict[str, Any] = {}
        if reply_to:
            target = self.find(peer, str(reply_to))
            extra.update(kind="reply", content_type="reply", reply_to=target["id"], reply_preview={
                "id": target["id"], "sender": target["sender"], "text": target["text"], "deleted": target["deleted"]})
        if not text and not uploads:
            raise _RpcFault(-32010, "empty message")
        msg = self.add_message(peer, text, "out", **extra)
        if uploads:
            msg.update(kind="attachment", content_type="attachment")
            for i, upload_id in enumerate(uploads):
                up = self.uploads.get(str(upload_id))
                if up is None:
                    raise _RpcFault(-32010, "unknown upload")
                data = self.uploaded(str(upload_id))
                if len(data) != up["size"]:
                    raise _RpcFault(-32010, "upload incomplete")
                att_id = f"{msg['id']}-{i}"
                self.files[att_id] = data
                msg["attachments"].append({
                    "id": att_id, "name": up["name"], "size": up["size"], "sha256": hashlib.sha256(data).hexdigest(),
                    "mime": up["mime"], "state": "done", "thumbnail": up["mime"].startswith("image/"), "progress": None})
        self.set_consent(peer, "allowed")  # sending accepts
        return {"message": msg, "delivered": 1}

    def _messages_react(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self.find(str(params["peer"]), str(params["id"]))
        emoji = str(params["emoji"])
        who = msg["reactions"].setdefault(emoji, [])
        if params.get("remove"):
            who[:] = [a for a in who if a != self.own_address]
        elif self.own_address not in who:
            who.append(self.own_address)
            who.sort()
        msg["reactions"] = {e: w for e, w in msg["reactions"].items() if w}
        return {"message": msg}

    def _own(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self.find(str(params["peer"]), str(params["id"]))
        if msg["direction"] != "out":
            raise _RpcFault(-32010, "not the sender's message")
        if msg["deleted"]:
            raise _RpcFault(-32010, "message deleted")
        return msg

    def _messages_edit(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self._own(params)
        msg.update(text=str(params["text"]), edited=True)
        return {"message": msg}

    def _messages_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self._own(params)
        msg.update(text="", deleted=True, attachments=[])
        return {"message": msg}

    def _typing_set(self, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params.get("typing"), bool):
            raise _RpcFault(-32010, "typing must be a boolean")
        return {"sent": True}

    def _consent_get(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.consent_of(str(params["peer"]))

    def _consent_set(self, params: dict[str, Any]) -> dict[str, Any]:
        peer = str(params["peer"]).lower()
        action = params.get("action")
        state = {"accept": "allowed", "decline": "declined", "block": "blocked", "unblock": "allowed"}.get(str(action))
        if state is None:
            raise _RpcFault(-32010, "bad action")
        self.set_consent(peer, state)
        return self.consent_of(peer)

    def _attachments_begin(self, params: dict[str, Any]) -> dict[str, Any]:
        size = params.get("size")
        if not isinstance(size, int) or size < 0 or size > FILE_MAX:
            raise _RpcFault(-32010, "file too large", {"reason": "too_large"})
        upload_id = secrets.token_hex(16)
        self.uploads[upload_id] = {"name": str(params["name"]), "size": size, "mime": str(params["mime"]), "chunks": []}
        return {"upload_id": upload_id, "chunk_size": CHUNK_SIZE}

    def _attachments_chunk(self, params: dict[str, Any]) -> dict[str, Any]:
        up = self.uploads.get(str(params.get("upload_id")))
        if up is None:
            raise _RpcFault(-32010, "unknown upload")
        data = base64.b64decode(str(params["data"]), validate=True)
        received = sum(len(d) for _, d in up["chunks"])
        if len(data) > CHUNK_SIZE or params.get("offset") != received or received + len(data) > up["size"]:
            raise _RpcFault(-32010, "bad chunk")
        up["chunks"].append((params["offset"], data))
        return {"received": received + len(data)}

    def _attachments_cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        self.uploads.pop(str(params.get("upload_id")), None)
        return {"ok": True}

    def _attachment(self, params: dict[str, Any]) -> bytes:
        att_id = str(params.get("id"))
        mid = att_id.rsplit("-", 1)[0]
        self.find(str(params["peer"]), mid)  # the id belongs to that conversation
        if att_id not in self.files:
            raise _RpcFault(-32012, "attachment unavailable", {"reason": "unavailable"})
        return self.files[att_id]

    def _attachments_thumbnail(self, params: dict[str, Any]) -> dict[str, Any]:
        self._attachment(params)
        return {"data_url": "data:image/png;base64," + base64.b64encode(THUMB_PNG).decode()}

    def _attachments_read(self, params: dict[str, Any]) -> dict[str, Any]:
        data = self._attachment(params)
        offset, length = int(params["offset"]), int(params["length"])
        if length > CHUNK_SIZE or offset < 0:
            raise _RpcFault(-32010, "bad range")
        part = data[offset:offset + length]
        return {"data": base64.b64encode(part).decode(), "eof": offset + len(part) >= len(data), "size": len(data)}

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


FILE_MAX = 26_214_400
CHUNK_SIZE = 196_608
_ISSUE12 = frozenset({
    "messages.react", "messages.edit", "messages.delete", "typing.set", "consent.get", "consent.set",
    "attachments.begin", "attachments.chunk", "attachments.cancel", "attachments.thumbnail", "attachments.read",
})


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG (what the bridge's Pillow thumbnail would be): solid colour."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


THUMB_PNG = _png(32, 24, (88, 70, 220))


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data
