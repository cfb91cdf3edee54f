"""A thin client of the relay API (PROTOCOL.md §7): HTTP with requests, subscriptions with
websocket-client. Answers are returned as (status, json) so tests can check errors exactly."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

from . import spec as S


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def challenge_request_body(iid: str) -> dict[str, str]:
    return {"installation_id": iid}


def token_request_body(iid: str, challenge: bytes, signature: bytes) -> dict[str, str]:
    """§7: both byte fields standard base64 (of exactly 32 and 64 bytes)."""
    return {"installation_id": iid, "challenge": b64(challenge), "signature": b64(signature)}


@dataclass
class Answer:
    status: int
    body: Any
    content_type: str

    @property
    def code(self) -> str | None:
        return self.body["error"]["code"] if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict) else None


class Relay:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None,
             content_type: str | None = "application/json", headers: dict[str, str] | None = None) -> Answer:
        h = dict(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None and content_type is not None:
            h["Content-Type"] = content_type
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        r = self.http.request(method, self.url + path, data=data, headers=h, timeout=30)
        try:
            parsed = r.json()
        except ValueError:
            parsed = r.text
        return Answer(r.status_code, parsed, r.headers.get("Content-Type", ""))

    # endpoints (§7 table)
    def health(self) -> Answer:
        return self.call("GET", "/v1/health")

    def publish_identity(self, address: str, record: bytes, token: str | None = None) -> Answer:
        return self.call("POST", f"/v1/identity/{address}", {"record": b64(record)}, token=token)

    def identity(self, address: str) -> Answer:
        return self.call("GET", f"/v1/identity/{address}")

    def bucket(self, prefix: str) -> Answer:
        return self.call("GET", f"/v1/identity-bucket/{prefix}")

    def put_relay_list(self, iid: str, record: bytes) -> Answer:
        """Protocol 1.1: `PUT /v1/relay-list/<iid>` `{"record": b64}`."""
        return self.call("PUT", f"/v1/relay-list/{iid}", {"record": b64(record)})

    def upload_prekeys(self, iid: str, upload: bytes) -> Answer:
        return self.call("PUT", f"/v1/prekeys/{iid}", {"upload": b64(upload)})

    def claim(self, iid: str) -> Answer:
        return self.call("POST", f"/v1/prekeys/{iid}/claim")

    def count(self, iid: str) -> Answer:
        return self.call("GET", f"/v1/prekeys/{iid}/count")

    def challenge(self, iid: str) -> Answer:
        return self.call("POST", "/v1/auth/challenge", challenge_request_body(iid))

    def token_request(self, iid: str, challenge: bytes, signature: bytes) -> Answer:
        return self.call("POST", "/v1/auth/token", token_request_body(iid, challenge, signature))

    def publish(self, topic: str, payload: bytes) -> Answer:
        return self.call("POST", "/v1/envelopes", {"topic": topic, "payload": b64(payload)})

    def envelopes(self, topic: str, token: str | None, after: int = 0, limit: int = 100) -> Answer:
        return self.call("GET", f"/v1/envelopes/{topic}?after={after}&limit={limit}", token=token)

    def backup(self, method: str, vault_priv: bytes, name: str = "", body: bytes | None = None, *, t: int | None = None,
               nonce: bytes | None = None, signed_body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        """A signed request to the backup space (§7 "Backups (1.3)"): the vault is the hex Ed25519 public
        key; the signature covers encode([1, "parley-backup", method, vault, name, time, nonce, sha256(body)]).
        ``signed_body``: sign over other bytes than those sent (a hostile client)."""
        vault = S.ed_public(vault_priv).hex()
        t = int(time.time()) if t is None else t
        nonce = os.urandom(16) if nonce is None else nonce
        digest = hashlib.sha256(body or b"" if signed_body is None else signed_body).digest()
        sig = S.ed_sign(vault_priv, S.enc([1, "parley-backup", method, vault, name, t, nonce, digest]))
        h = {"X-Parley-Time": str(t), "X-Parley-Nonce": b64(nonce), "X-Parley-Content-SHA256": b64(digest),
             "X-Parley-Signature": b64(sig), **(headers or {})}
        path = f"/v1/backups/{vault}" + (f"/{name}" if name else "")
        if method == "GET" and name and body is None:  # an object's bytes, not JSON
            r = self.http.request(method, self.url + path, headers=h, timeout=30)
            ok = r.headers.get("Content-Type", "").startswith("application/octet-stream")
            return Answer(r.status_code, r.content if ok else r.json(), r.headers.get("Content-Type", ""))
        return self.call(method, path, raw=body, content_type="application/octet-stream" if body is not None else None, headers=h)

    # flows
    def login(self, me: S.Installation) -> str:
        """§7 Authentication: challenge -> signed [1, "parley-auth", iid, challenge] -> token."""
        a = self.challenge(me.iid)
        assert a.status == 200, a
        ch = unb64(a.body["challenge"])
        t = self.token_request(me.iid, ch, S.auth_sign(me.signing_priv, me.iid, ch))
        assert t.status == 200, t
        return str(t.body["token"])

    def subscribe(self, token: str, topic: str, after: int = 0) -> websocket.WebSocket:
        ws = websocket.create_connection(self.url.replace("http", "ws", 1) + "/v1/subscribe", timeout=10)
        ws.send(json.dumps({"token": token, "topic": topic, "after": after}))
        return ws


def ws_next(ws: websocket.WebSocket, timeout: float = 10.0) -> dict[str, Any]:
    ws.settimeout(timeout)
    return dict(json.loads(ws.recv()))


@dataclass
class Client:
    """One wallet with one installation, registered the way §3/§4 say."""

    wallet_key: bytes
    me: S.Installation
    record: bytes = b""
    text: str = ""
    keys: S.PrivatePrekeys = field(default_factory=S.PrivatePrekeys)
    next_id: int = 1

    @staticmethod
    def new() -> Client:
        return Client(os.urandom(31).rjust(32, b"\x01"), S.Installation.generate())

    @property
    def address(self) -> str:
        return S.wallet_address(self.wallet_key)

    @property
    def iid(self) -> str:
        return self.me.iid

    @property
    def topic(self) -> str:
        return S.inbox_topic(self.iid)

    def statement(self, action: str = "authorize", iid: str | None = None, issued_at: int | None = None) -> tuple[str, bytes]:
        keys = (self.me.signing_pub, self.me.identity_pub) if action == "authorize" else (None, None)
        text = S.statement_text(action, self.address, 1, iid or self.iid, issued_at or int(time.time()), os.urandom(16), *keys)
        return text, S.record(text, S.wallet_sign(self.wallet_key, text))

    def relay_list(self, version: int, relays: list[str] | None = None, *, address: str | None = None,
                   signer: bytes | None = None) -> bytes:
        """This installation's signed relay list (protocol 1.1)."""
        return S.relay_list(signer or self.me.signing_priv, address or self.address, self.iid, version, int(time.time()),
                            relays or ["https://relay.example.org"])

    def register(self, relay: Relay) -> Answer:
        self.text, self.record = self.statement()
        return relay.publish_identity(self.address, self.record)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def prekey_upload(self, otpks: int = 3, pq_otpks: int = 2, issued_at: int | None = None) -> bytes:
        """A signed upload (§4) with a fresh signed prekey, last-resort key and one-time keys; privates kept."""
        sk = self.me.signing_priv
        spk_priv, sid = S.random_x25519(), self._id()
        self.keys.spk[sid] = spk_priv
        spk = S.signed_prekey(sk, S.SPK, sid, S.x25519_public(spk_priv))
        ots = []
        for _ in range(otpks):
            priv, kid = S.random_x25519(), self._id()
            self.keys.otpk[kid] = priv
            ots.append([S.OTPK, kid, S.x25519_public(priv)])
        pqs = []
        for kind, n in ((S.PQ_OTPK, pq_otpks), (S.PQ_LRPK, 1)):
            for _ in range(n):
                seed, kid = os.urandom(64), self._id()
                self.keys.pq[(kind, kid)] = seed
                pqs.append(S.signed_prekey(sk, kind, kid, S.mlkem_public(seed)))
        return S.prekey_upload(sk, self.iid, issued_at or int(time.time()), spk, ots[:], pqs[:-1], pqs[-1])


# scripted sessions (tests/vectors/relay_answers.json, docs/test-vectors.md "Relay scripts") ------
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def resolve(value: Any, answers: list[Any], installations: dict[str, dict[str, str]]) -> Any:
    """`${challenge:K}` / `${token:K}`: that field of step K's answer; `${sign:K:LABEL}`: the §7 auth
    signature (standard base64) by LABEL over the challenge of step K's answer."""
    if isinstance(value, dict):
        return {k: resolve(x, answers, installations) for k, x in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        kind, k, *rest = m.group(1).split(":")
        body = answers[int(k)]
        if kind in ("challenge", "token"):
            return str(body[kind])
        assert kind == "sign" and len(rest) == 1, m.group(0)
        inst = installations[rest[0]]
        return b64(S.auth_sign(bytes.fromhex(inst["signing_priv"]), inst["installation_id"], unb64(body["challenge"])))

    return _PLACEHOLDER.sub(sub, value)


def replay_step(relay: Relay, step: dict[str, Any], answers: list[Any], installations: dict[str, dict[str, str]]) -> Answer:
    """One `http` step: `body` sent as JSON, or `raw` as given, with the step's content type and headers."""
    body = resolve(step["body"], answers, installations)
    raw = step["raw"].encode() if step["raw"] is not None else None
    if raw is None and body is not None:
        raw = json.dumps(body).encode()
    return relay.call(step["method"], step["path"], raw=raw, content_type=step["content_type"],
                      headers=resolve(step["headers"], answers, installations))
