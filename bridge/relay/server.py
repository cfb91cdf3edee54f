"""The relay node's HTTP + WebSocket API (DESIGN.md "Relay"; docs/PROTOCOL.md §7).

``create_app`` builds a standalone relay; ``register_relay`` mounts the same routes (one Blueprint)
on the daemon's Flask app; ``serve`` runs a standalone relay with werkzeug's threaded server.

Every request body is hostile until checked: a rejected request gets a 4xx JSON error
``{"error": {"code", "message"}}`` and changes nothing in storage.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Blueprint, Flask, Response, jsonify, request
from flask_sock import Sock
from werkzeug.exceptions import HTTPException

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import TopicError, is_installation_id, parse_inbox_topic
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, SPK, Bundle, OneTimePrekey, PrekeyUpload, SignedPrekey
from bridge.protocol.wire import WireError
from bridge.relay.auth import auth_message
from bridge.relay.storage import (
    IdentityEntry,
    InboxFull,
    InstallationBound,
    InstallationNotActive,
    LogFull,
    StaleRelayList,
    StaleUpload,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredPrekeys,
    Wakeup,
    open_storage,
)

__all__ = [
    "RelaySettings",
    "ApiError",
    "create_app",
    "register_relay",
    "install_json_errors",
    "serve",
    "RetentionThread",
    "start_retention",
    "auth_message",
    "PROTOCOL_VERSION",
    "PROTOCOL_MINOR",
]

PROTOCOL_VERSION = 1
#: The 1.x revision served (GET /v1/health "minor"): 1 adds relay lists (PUT /v1/relay-list/<iid>),
#: 2 adds the blob store (PUT/GET /v1/blobs/<iid>/<blob_id>), 3 the backup space (/v1/backups/<vault>).
PROTOCOL_MINOR = 4
MiB = 1024 * 1024
_MAX_JSON_CONTAINERS = 16


def _env_float(name: str, default: float) -> float:
    from bridge.relay.serving import env_number

    return env_number(name, default)


def _env_int(name: str, default: int) -> int:
    return max(1, int(_env_float(name, float(default))))


@dataclass
class RelaySettings:
    """Relay limits and timings (all configurable; defaults from DESIGN.md "Relay").

    Rates are tokens per second per client address (``request.remote_addr``); bursts are bucket sizes.
    ``clock`` returns unix seconds and is injectable for tests.
    """

    retention_days: float = 30.0
    expire_interval: float = 3600.0
    max_envelope: int = MiB
    max_record: int = 16 * 1024
    #: largest relay-list record (PUT /v1/relay-list/<iid>): 413 too_large
    max_relay_list: int = 4096
    max_prekey_upload: int = 512 * 1024
    max_one_time_prekeys: int = 500
    publish_rate: float = 20.0
    publish_burst: int = 100
    claim_rate: float = 2.0
    claim_burst: int = 50
    auth_rate: float = 2.0
    auth_burst: int = 20
    identity_rate: float = 2.0
    identity_burst: int = 50
    #: k-anonymous identity lookups (GET /v1/identity-bucket/<prefix>): rate, and the answer cap beyond
    #: which the relay answers 413 bucket_too_large so the client asks with a longer prefix.
    bucket_rate: float = 10.0
    bucket_burst: int = 200
    bucket_max_addresses: int = 64
    bucket_max_records: int = 1024
    challenge_ttl: int = 60
    token_ttl: int = 3600
    max_pending_challenges: int = 10_000
    max_tokens: int = 100_000
    require_known_topic: bool = True
    fetch_default_limit: int = 100
    fetch_max_limit: int = 500
    #: ``POST /v1/envelopes/batch`` (1.4): most envelopes in one request (the body cap still applies).
    max_publish_batch: int = 256
    ws_first_frame_timeout: float = 10.0
    #: longest sleep of an idle subscription in Storage.wait: a publish, a client frame (ping) or the
    #: peer's close ends it at once, and it ends when the installation re-check is due
    ws_poll_interval: float = 0.5
    ws_recheck_interval: float = 30.0
    #: records one address's identity log may hold (docs/PROTOCOL.md §7 "Identity log"): 409 log_full
    max_identity_records: int = 256
    #: claims of one target installation's prekeys, from all clients together: 429 target_rate_limited
    claim_target_rate: float = 0.1
    claim_target_burst: int = 30
    #: per-inbox quota (envelopes held for one topic, until retention deletes them): 429 inbox_full
    topic_max_envelopes: int = 10_000
    topic_max_bytes: int = 64 * MiB
    #: publishes to one inbox topic from all clients together (tokens per second, bucket size):
    #: 429 inbox_rate_limited. One flood cannot fill a user's quota in seconds, whatever its addresses.
    inbox_rate: float = 10.0
    inbox_burst: int = 200
    #: reverse proxies in front of the relay whose X-Forwarded-For / X-Forwarded-Proto are believed
    #: (werkzeug ProxyFix): rate limits then key on the client address the nearest N proxies saw.
    #: 0 (default): the TCP peer is the client, and forwarded headers are ignored (anyone can send them).
    trusted_proxies: int = 0
    #: seconds a connection may take to send a request line and headers (also the keep-alive idle
    #: time between requests) [env PARLEY_RELAY_HEADER_TIMEOUT]
    header_timeout: float = field(default_factory=lambda: _env_float("PARLEY_RELAY_HEADER_TIMEOUT", 10.0))
    #: seconds a request body may stall between reads [env PARLEY_RELAY_IDLE_TIMEOUT]
    idle_timeout: float = field(default_factory=lambda: _env_float("PARLEY_RELAY_IDLE_TIMEOUT", 30.0))
    #: concurrent connections served; more wait in the listen backlog [env PARLEY_RELAY_MAX_CONNECTIONS]
    max_connections: int = field(default_factory=lambda: _env_int("PARLEY_RELAY_MAX_CONNECTIONS", 20_000))
    #: blob store (protocol 1.2, PUT/GET /v1/blobs/<iid>/<blob_id>): the largest blob (a 25 MiB
    #: attachment's ciphertext and GCM tag; 413 too_large), the bytes one inbox's blobs may hold
    #: (429 blob_quota), and how long a blob is kept (None: retention_days)
    blob_max_bytes: int = 25 * MiB + 16
    blob_quota_bytes: int = 256 * MiB
    blob_ttl_days: float | None = None
    #: backup space (protocol 1.3, /v1/backups/<vault>[/<name>]): the largest object (413 too_large),
    #: the bytes and objects one vault may hold (429 backup_quota), how long a vault nobody
    #: touches is kept, the accepted clock skew of a signed request, and requests per client address
    backup_max_bytes: int = 64 * MiB
    backup_quota_bytes: int = 1024 * MiB
    backup_max_objects: int = 1024
    backup_ttl_days: float = 180.0
    backup_skew: int = 300
    backup_rate: float = 20.0
    backup_burst: int = 200
    clock: Callable[[], float] = field(default=time.time, repr=False)
    #: Checks statement signatures (bridge.identity.Verifier). None: from PARLEY_ETH_RPC_URL,
    #: PARLEY_OP_RPC_URL and PARLEY_LENS_CHAIN_RPC_URL; with none set, EOA signatures only.
    verifier: Any = field(default=None, repr=False)

    @property
    def max_body(self) -> int:
        """Largest request body accepted: a base64 envelope plus JSON framing."""
        return max(self.max_envelope * 4 // 3 + 8, self.max_prekey_upload * 4 // 3 + 8) + 64 * 1024


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_response(status: int, code: str, message: str) -> Response:
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    return resp


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _RepeatedField(ValueError):
    """A JSON object names one field twice (its name is the message)."""


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _RepeatedField(name)
        seen.add(name)
    return dict(pairs)


def _loads_flat(text: str) -> Any:
    """``json.loads`` for request bodies and WebSocket frames: no NaN/Infinity, no repeated field
    (raises :class:`_RepeatedField`, a ValueError)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_without_repeats)


# ---- rate limiting ---------------------------------------------------------------------------


class _TokenBucket:
    """Per-key token buckets with bounded memory (oldest keys dropped beyond ``max_keys``)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], max_keys: int = 50_000) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)  # re-inserted: dict order is least recently used first
            while len(self._buckets) > self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
            return ok


# ---- authentication (state in the Storage: shared by every node on one database) -------------


class _Auth:
    """Challenges and tokens (docs/PROTOCOL.md §7 "Authentication"), kept in the :class:`Storage`.

    A challenge is deleted by the first token request naming it (atomically, so it is single use
    across all nodes sharing the database). Only the SHA-256 of a token is stored, so a database
    dump does not hand out valid tokens; any node can check a token issued by another.
    """

    def __init__(self, settings: RelaySettings, storage: Storage) -> None:
        self.s = settings
        self.storage = storage

    @staticmethod
    def _token_hash(token: str) -> bytes:
        import hashlib

        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def new_challenge(self, iid: str) -> tuple[bytes, int]:
        now = self.s.clock()
        challenge = P.random_bytes(32)
        expires = int(now) + self.s.challenge_ttl
        if not self.storage.put_challenge(challenge, iid, expires, now=int(now), max_pending=self.s.max_pending_challenges):
            raise ApiError(429, "rate_limited", "too many pending challenges; try again later")
        return challenge, expires

    def take_challenge(self, challenge: bytes, iid: str) -> None:
        """Consume a challenge (single use, even when the rest of the request then fails)."""
        now = self.s.clock()
        entry = self.storage.take_challenge(challenge)
        if entry is None or not secrets.compare_digest(entry[0], iid):
            raise ApiError(401, "unauthorized", "unknown or already used challenge")
        if entry[1] <= now:
            raise ApiError(401, "challenge_expired", "the challenge has expired; request a new one")

    def new_token(self, iid: str) -> tuple[str, int]:
        now = self.s.clock()
        token = secrets.token_urlsafe(32)
        expires = int(now) + self.s.token_ttl
        if not self.storage.put_token(self._token_hash(token), iid, expires, now=int(now), max_tokens=self.s.max_tokens):
            raise ApiError(429, "rate_limited", "too many active tokens; try again later")
        return token, expires

    def token_iid(self, token: str) -> str | None:
        if len(token) > 256:  # ours are 43 characters
            return None
        return self.storage.token_owner(self._token_hash(token), int(self.s.clock()))


# ---- the relay ------------------------------------------------------------------------------


class _Relay:
    def __init__(self, storage: Storage, settings: RelaySettings) -> None:
        self.storage = storage
        self.s = settings
        self.auth = _Auth(settings, storage)
        self.publish_limit = _TokenBucket(settings.publish_rate, settings.publish_burst, settings.clock)
        self.claim_limit = _TokenBucket(settings.claim_rate, settings.claim_burst, settings.clock)
        self.claim_target_limit = _TokenBucket(settings.claim_target_rate, settings.claim_target_burst, settings.clock)
        self.auth_limit = _TokenBucket(settings.auth_rate, settings.auth_burst, settings.clock)
        self.identity_limit = _TokenBucket(settings.identity_rate, settings.identity_burst, settings.clock)
        self.bucket_limit = _TokenBucket(settings.bucket_rate, settings.bucket_burst, settings.clock)
        self.inbox_limit = _TokenBucket(settings.inbox_rate, settings.inbox_burst, settings.clock)
        self.backup_limit = _TokenBucket(settings.backup_rate, settings.backup_burst, settings.clock)
        from bridge.relay.metrics import RelayMetrics

        self.metrics = RelayMetrics()
        if settings.verifier is not None:
            self.verifier = settings.verifier
        else:
            from bridge.identity.smart import verifier_from_env

            smart = verifier_from_env()
            # No chain to ask: plain EOA checks, so a forged signature is "bad_signature", not "unverifiable".
            self.verifier = smart if smart.chains else None

    # -- helpers --

    def limit(self, bucket: _TokenBucket) -> None:
        if not bucket.take(request.remote_addr or "unknown"):
            raise ApiError(429, "rate_limited", "too many requests from this client; slow down")

    def json_body(self, allowed: set[str]) -> dict[str, Any]:
        if request.mimetype != "application/json":
            # a web page can send text/plain or a form cross-origin without a CORS preflight
            raise ApiError(415, "bad_content_type", "the request body must be sent as Content-Type: application/json")
        length = request.content_length
        if length is not None and length > self.s.max_body:
            raise ApiError(413, "too_large", f"request body exceeds {self.s.max_body} bytes")
        raw = request.get_data(cache=False)  # bounded by request.max_content_length (413)
        if raw.count(b"[") + raw.count(b"{") > _MAX_JSON_CONTAINERS:
            # the API's bodies are flat objects; deep nesting can crash the C JSON scanner
            raise ApiError(400, "bad_json", "the request body is not a flat JSON object")
        try:
            obj = _loads_flat(raw.decode("utf-8"))
        except _RepeatedField as exc:
            raise ApiError(400, "bad_request", f"field {str(exc)!r} appears more than once") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "bad_json", "the request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "bad_request", "the request body must be a JSON object")
        extra = set(obj) - allowed
        if extra:
            raise ApiError(400, "bad_request", f"unexpected field {sorted(extra)[0]!r}")
        return obj

    def no_body(self) -> None:
        """A route documented without a body (PROTOCOL.md §7): it takes none, or ``{}`` sent as JSON.

        Anything else is refused like a body with an unknown field (``bad_request``), non-JSON
        (``bad_json``) or a non-JSON Content-Type (415), before the route spends anything.
        """
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if not request.content_length and not chunked:
            return  # no body (Content-Length 0 or absent): what RelayClient sends
        if request.mimetype != "application/json":
            raise ApiError(415, "bad_content_type", "the request body must be sent as Content-Type: application/json")
        if chunked and request.get_data(cache=True) == b"":
            return  # an empty chunked body (json_body below reads the cached data)
        self.json_body(set())

    @staticmethod
    def field_str(obj: dict[str, Any], name: str) -> str:
        value = obj.get(name)
        if not isinstance(value, str):
            raise ApiError(400, "bad_request", f"field {name!r} must be a string")
        return value

    def field_b64(self, obj: dict[str, Any], name: str, max_len: int, *, exact: int | None = None) -> bytes:
        text = self.field_str(obj, name)
        if len(text) > (max_len + 2) // 3 * 4:
            raise ApiError(413, "too_large", f"field {name!r} exceeds {max_len} bytes")
        try:
            data = wire.b64d(text, max_size=len(text))
        except WireError:
            raise ApiError(400, "bad_base64", f"field {name!r} is not valid standard base64") from None
        if len(data) > max_len:
            raise ApiError(413, "too_large", f"field {name!r} exceeds {max_len} bytes")
        if exact is not None and len(data) != exact:
            raise ApiError(400, "bad_request", f"field {name!r} must be {exact} bytes")
        return data

    @staticmethod
    def iid_param(value: str) -> str:
        if not is_installation_id(value):
            raise ApiError(400, "bad_request", "installation id must be 32 lowercase hex digits")
        return value

    @staticmethod
    def topic_param(value: Any) -> str:
        try:
            return parse_inbox_topic(value)
        except TopicError:
            raise ApiError(400, "bad_topic", "topic must be parley.v1.inbox.<32 lowercase hex digits>") from None

    @staticmethod
    def address_param(value: str) -> str:
        from bridge.identity import IdentityError, checksum_address

        try:
            return checksum_address(value)
        except (IdentityError, ValueError, TypeError):
            raise ApiError(400, "bad_address", "not an EVM address (0x + 40 hex digits)") from None

    def require_token(self, token: str | None, iid: str) -> None:
        if not token:
            raise ApiError(401, "unauthorized", "a bearer token for this inbox is required")
        owner = self.auth.token_iid(token)
        if owner is None or not secrets.compare_digest(owner, iid):
            raise ApiError(401, "unauthorized", "the token is unknown, expired, or not for this inbox")
        if self.storage.installation(iid) is None:
            raise ApiError(401, "unknown_installation", "the installation is not active (revoked?)")

    def now(self) -> int:
        return int(self.s.clock())

    # -- blobs (protocol 1.2) --

    @staticmethod
    def blob_id_param(value: str) -> str:
        if not is_installation_id(value):  # the same shape: 32 lowercase hex digits
            raise ApiError(400, "bad_request", "blob id must be 32 lowercase hex digits")
        return value

    def put_blob(self, iid_raw: str, blob_raw: str) -> tuple[dict[str, Any], int]:
        """Store one blob, streamed in BLOB_CHUNK rows (PROTOCOL.md §7 "Blobs")."""
        from bridge.relay.storage import BLOB_CHUNK, BlobExists, BlobQuota

        length = request.content_length
        te = request.headers.get("Transfer-Encoding", "")
        if te or length is None:
            # a chunked body has no size to check against the quota before reading it
            raise ApiError(411, "length_required", "a blob upload needs Content-Length (no chunked body)")
        if length > self.s.blob_max_bytes:
            raise ApiError(413, "too_large", f"a blob is at most {self.s.blob_max_bytes} bytes")
        # every refusal is answered before a body byte is read (the server then drops the
        # connection after draining what the client keeps sending)
        self.limit(self.publish_limit)
        iid = self.iid_param(iid_raw)
        blob_id = self.blob_id_param(blob_raw)
        if length == 0:
            raise ApiError(400, "bad_request", "the blob is empty")
        if self.storage.installation(iid) is None:
            raise ApiError(404, "unknown_installation", "no active installation has this inbox")
        if not self.inbox_limit.take("parley.v1.inbox." + iid):
            raise ApiError(429, "inbox_rate_limited", "too many uploads for this inbox right now; try again later")
        now = self.now()
        ttl = self.s.blob_ttl_days if self.s.blob_ttl_days is not None else self.s.retention_days
        expires = now + int(ttl * 86400)
        try:
            self.storage.blob_begin(iid, blob_id, length, now=now, expires_at=expires, quota=self.s.blob_quota_bytes)
        except BlobExists:
            raise ApiError(409, "exists", "a blob with this id is already stored for this inbox") from None
        except BlobQuota:
            raise ApiError(429, "blob_quota", "this inbox's blob store is full; try again later") from None
        stream = request.environ["wsgi.input"]  # the raw input: request.stream would apply max_content_length
        committed = False
        try:
            got = 0
            seq = 0
            buf = bytearray()
            while got < length:
                piece = stream.read(min(64 * 1024, length - got, BLOB_CHUNK - len(buf)))
                if not piece:
                    raise ApiError(400, "bad_request", "the body ended before Content-Length bytes")
                got += len(piece)
                buf += piece
                if len(buf) >= BLOB_CHUNK or got == length:
                    self.storage.blob_put_chunk(iid, blob_id, seq, bytes(buf))
                    seq += 1
                    buf = bytearray()
            self.storage.blob_commit(iid, blob_id)
            committed = True
        finally:
            if not committed:
                try:
                    self.storage.blob_abort(iid, blob_id)
                except StorageError:
                    pass  # the expiry pass removes stale incomplete uploads
        return {"id": blob_id, "size": length, "expires_at": expires}, 201

    def get_blob(self, iid_raw: str, blob_raw: str) -> Response:
        self.limit(self.publish_limit)
        iid = self.iid_param(iid_raw)
        blob_id = self.blob_id_param(blob_raw)
        self.no_body()
        info = self.storage.blob_info(iid, blob_id, self.now())
        if info is None:
            raise ApiError(404, "not_found", "no such blob (never stored, or expired)")
        size = info[0]
        storage = self.storage

        def chunks() -> Any:
            sent = 0
            seq = 0
            while sent < size:
                data = storage.blob_chunk(iid, blob_id, seq)
                if data is None:  # deleted meanwhile: the client sees a short body
                    return
                data = data[: size - sent]
                sent += len(data)
                seq += 1
                yield data

        resp = Response(chunks(), status=200, mimetype="application/octet-stream", direct_passthrough=True)
        resp.headers["Content-Length"] = str(size)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    # -- backups (protocol 1.3) --

    def backup_auth(self, method: str, vault_raw: str, name_raw: str | None, *, body_hash: bytes | None = None) -> tuple[str, str, bytes]:
        """Check a backup request's vault, name and signature headers (PROTOCOL.md §7 "Backups"), and
        spend its nonce. Returns ``(vault, name, declared body hash)``; ``body_hash`` given (a request
        without a body): the declared hash must be it."""
        from bridge.relay.backupauth import BackupAuthError, NONCE_BYTES, check_name, check_vault, request_message

        self.limit(self.backup_limit)
        try:
            vault = check_vault(vault_raw)
            name = "" if name_raw is None else check_name(name_raw)
        except BackupAuthError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        h = request.headers
        raw_time, raw_nonce, raw_hash, raw_sig = (
            h.get("X-Parley-Time"), h.get("X-Parley-Nonce"), h.get("X-Parley-Content-SHA256"), h.get("X-Parley-Signature")
        )
        if raw_time is None or raw_nonce is None or raw_hash is None or raw_sig is None:
            raise ApiError(
                401, "unauthorized",
                "a backup request is signed by its vault's key: X-Parley-Time, X-Parley-Nonce, X-Parley-Content-SHA256 and X-Parley-Signature are required",
            )
        if not (raw_time.isascii() and raw_time.isdigit()) or len(raw_time) > 12:
            raise ApiError(400, "bad_request", "X-Parley-Time must be whole Unix seconds in decimal digits")
        t = int(raw_time)
        nonce, declared, sig = (self._header_b64(name_h, v, n) for name_h, v, n in (
            ("X-Parley-Nonce", raw_nonce, NONCE_BYTES), ("X-Parley-Content-SHA256", raw_hash, 32), ("X-Parley-Signature", raw_sig, 64)))
        now = self.now()
        if abs(now - t) > self.s.backup_skew:
            raise ApiError(401, "clock_skew", f"X-Parley-Time is more than {self.s.backup_skew} s from the relay's clock ({now})")
        try:
            P.ed25519_verify(bytes.fromhex(vault), sig, request_message(method, vault, name, t, nonce, declared))
        except (P.InvalidSignature, ValueError):
            raise ApiError(401, "bad_signature", "the request's signature does not verify with the vault's key") from None
        if body_hash is not None and not secrets.compare_digest(declared, body_hash):
            raise ApiError(400, "body_mismatch", "X-Parley-Content-SHA256 is not the SHA-256 of the request's body")
        if not self.storage.backup_take_nonce(vault, nonce, now=now, expires_at=t + self.s.backup_skew + 1):
            raise ApiError(401, "replayed", "this request's nonce was already used: a replay")
        return vault, name, declared

    @staticmethod
    def _header_b64(header: str, value: str, size: int) -> bytes:
        try:
            data = wire.b64d(value, max_size=(size + 2) // 3 * 4)
        except WireError:
            data = b""
        if len(data) != size:
            raise ApiError(400, "bad_base64", f"{header} must be {size} bytes in standard base64")
        return data

    def _backup_no_body(self) -> bytes:
        """A backup GET or DELETE carries no body: the SHA-256 its signature covers is that of b""."""
        import hashlib

        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if request.content_length or chunked:
            raise ApiError(400, "bad_request", "this request takes no body")
        return hashlib.sha256(b"").digest()

    def put_backup(self, vault_raw: str, name_raw: str) -> tuple[dict[str, Any], int]:
        """Store (or atomically replace) one object of a vault, streamed in BACKUP_CHUNK rows."""
        import hashlib

        from bridge.relay.storage import BACKUP_CHUNK, BackupQuota

        length = request.content_length
        if request.headers.get("Transfer-Encoding", "") or length is None:
            raise ApiError(411, "length_required", "a backup upload needs Content-Length (no chunked body)")
        if length > self.s.backup_max_bytes:
            raise ApiError(413, "too_large", f"a backup object is at most {self.s.backup_max_bytes} bytes")
        # every refusal is answered before a body byte is read
        vault, name, declared = self.backup_auth("PUT", vault_raw, name_raw)
        now = self.now()
        try:
            upload = self.storage.backup_begin(
                vault, name, length, now=now, quota=self.s.backup_quota_bytes, max_objects=self.s.backup_max_objects
            )
        except BackupQuota as exc:
            raise ApiError(429, "backup_quota", f"this vault's backup space is full: {exc}") from None
        stream = request.environ["wsgi.input"]  # the raw input: request.stream would apply max_content_length
        committed = False
        digest = hashlib.sha256()
        try:
            got = 0
            seq = 0
            buf = bytearray()
            while got < length:
                piece = stream.read(min(64 * 1024, length - got, BACKUP_CHUNK - len(buf)))
                if not piece:
                    raise ApiError(400, "bad_request", "the body ended before Content-Length bytes")
                got += len(piece)
                digest.update(piece)
                buf += piece
                if len(buf) >= BACKUP_CHUNK or got == length:
                    self.storage.backup_put_chunk(upload, seq, bytes(buf))
                    seq += 1
                    buf = bytearray()
            if not secrets.compare_digest(digest.digest(), declared):
                raise ApiError(400, "body_mismatch", "X-Parley-Content-SHA256 is not the SHA-256 of the request's body")
            self.storage.backup_commit(upload, now=now)
            committed = True
        finally:
            if not committed:
                try:
                    self.storage.backup_abort(upload)
                except StorageError:
                    pass  # the expiry pass removes stale uploads
        self.metrics.backup_bytes.inc(length)
        return {"name": name, "size": length, "updated_at": now}, 201

    def list_backups(self, vault_raw: str) -> dict[str, Any]:
        vault, _, _ = self.backup_auth("GET", vault_raw, None, body_hash=self._backup_no_body())
        return {"objects": [{"name": n, "size": sz, "updated_at": t} for n, sz, t in self.storage.backup_list(vault)]}

    def get_backup(self, vault_raw: str, name_raw: str) -> Response:
        vault, name, _ = self.backup_auth("GET", vault_raw, name_raw, body_hash=self._backup_no_body())
        info = self.storage.backup_info(vault, name)
        if info is None:
            raise ApiError(404, "not_found", "no such object in this vault")
        upload, size = info
        storage = self.storage

        def chunks() -> Any:
            sent = 0
            seq = 0
            while sent < size:
                data = storage.backup_chunk(upload, seq)
                if data is None:  # replaced or deleted meanwhile: the client sees a short body
                    return
                data = data[: size - sent]
                sent += len(data)
                seq += 1
                yield data

        resp = Response(chunks(), status=200, mimetype="application/octet-stream", direct_passthrough=True)
        resp.headers["Content-Length"] = str(size)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def delete_backup(self, vault_raw: str, name_raw: str) -> dict[str, Any]:
        vault, name, _ = self.backup_auth("DELETE", vault_raw, name_raw, body_hash=self._backup_no_body())
        if not self.storage.backup_delete(vault, name):
            raise ApiError(404, "not_found", "no such object in this vault")
        return {"deleted": name}

    # -- identity --

    def publish_identity(self, address: str) -> tuple[dict[str, Any], int]:
        from bridge.identity import BadSignature, IdentityError, SignedStatement, verify_record_for
        from bridge.identity.smart import UnverifiableSigner

        self.limit(self.identity_limit)
        addr = self.address_param(address)
        body = self.json_body({"record"})
        record = self.field_b64(body, "record", self.s.max_record)
        try:
            # the only signature check of an append: the log's other records were checked when they
            # were appended, and the index is updated from this record alone (no lock is held here)
            stmt = verify_record_for(addr, record, verifier=self.verifier)
            record_id = SignedStatement.from_record(record).record_id()
        except UnverifiableSigner as exc:
            raise ApiError(400, "unverifiable_signer", f"the identity record cannot be checked here: {exc}") from None
        except BadSignature as exc:
            raise ApiError(400, "bad_signature", f"the identity record's signature does not verify: {exc}") from None
        except IdentityError as exc:
            raise ApiError(400, "invalid_statement", f"the identity record was rejected: {exc}") from None
        except Exception:  # a verifier bug must not become a 500 with a traceback
            raise ApiError(400, "invalid_statement", "the identity record could not be verified") from None
        entry = IdentityEntry(stmt.action, stmt.installation_id, stmt.signing_key, stmt.identity_key)
        try:
            seq, created = self.storage.append_identity(
                addr, record_id, record, entry, max_records=self.s.max_identity_records, consent=self._installation_consents(entry)
            )
        except InstallationBound:
            raise ApiError(
                409,
                "installation_bound",
                "this installation id belongs to another address's identity log; naming it in a second log "
                "needs the installation's own bearer token",
            ) from None
        except LogFull:
            raise ApiError(
                409, "log_full", f"this address's identity log holds {self.s.max_identity_records} records, the most allowed"
            ) from None
        return {"seq": seq}, 201 if created else 200

    def _installation_consents(self, entry: IdentityEntry) -> bool:
        """Whether the request carries a bearer token of the named, still active installation: its
        own key then asks for the record (a bridge moving to another wallet), not a third party."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        owner = self.auth.token_iid(header[len("Bearer ") :].strip())
        if owner is None or not secrets.compare_digest(owner, entry.installation_id):
            return False
        return self.storage.installation(entry.installation_id) is not None

    def get_identity(self, address: str) -> dict[str, Any]:
        addr = self.address_param(address)
        self.no_body()
        records = self.storage.identity_records(addr)
        lists = self.storage.relay_lists([addr])[addr]
        return {"address": addr, "records": [wire.b64e(r) for r in records], "relay_lists": [wire.b64e(r) for r in lists]}

    def get_identity_bucket(self, prefix: str) -> dict[str, Any]:
        """Every identity log in a k-anonymous bucket (PROTOCOL.md §7 "Identity buckets")."""
        from bridge.protocol.ids import BUCKET_PREFIX_MAX, BUCKET_PREFIX_MIN, is_bucket_prefix

        self.limit(self.bucket_limit)
        if not is_bucket_prefix(prefix):
            raise ApiError(
                400, "bad_prefix", f"a bucket prefix is {BUCKET_PREFIX_MIN} to {BUCKET_PREFIX_MAX} lowercase hex digits"
            )
        self.no_body()
        logs = self.storage.identity_bucket(
            prefix, max_addresses=self.s.bucket_max_addresses, max_records=self.s.bucket_max_records
        )
        lists = {} if logs is None else self.storage.relay_lists(logs)
        if logs is None or sum(map(len, logs.values())) + sum(map(len, lists.values())) > self.s.bucket_max_records:
            raise ApiError(
                413,
                "bucket_too_large",
                f"more than {self.s.bucket_max_addresses} addresses or {self.s.bucket_max_records} records and relay lists: "
                "use a longer prefix",
            )
        return {
            "prefix": prefix,
            "logs": [
                {"address": a, "records": [wire.b64e(r) for r in recs], "relay_lists": [wire.b64e(r) for r in lists[a]]}
                for a, recs in sorted(logs.items())
            ],
        }

    # -- relay lists (protocol 1.1) --

    def put_relay_list(self, iid_raw: str) -> tuple[dict[str, Any], int]:
        """Store an installation's signed relay list (PROTOCOL.md "Relay lists"); the newest version wins."""
        from bridge.protocol import relaylist

        self.limit(self.identity_limit)
        iid = self.iid_param(iid_raw)
        body = self.json_body({"record"})
        record = self.field_b64(body, "record", self.s.max_relay_list)
        try:
            rl, rl_body, sig = relaylist.parse(record)
        except WireError as exc:
            raise ApiError(400, "bad_cbor", f"the relay list is malformed: {exc}") from None
        if rl.installation_id != iid:
            raise ApiError(400, "bad_request", "the relay list is for another installation")
        inst = self.storage.installation_for(iid, rl.address)
        if inst is None:
            raise ApiError(
                403, "unknown_installation", "the relay list's address has not authorized this installation (or revoked it)"
            )
        try:
            P.ed25519_verify(inst.signing_pub, sig, rl_body)
        except P.InvalidSignature:
            raise ApiError(400, "bad_signature", "the relay list is not signed by the installation's key") from None
        try:
            created = self.storage.put_relay_list(iid, rl.address, rl.version, record)
        except InstallationNotActive:  # revoked between the check above and the store
            raise ApiError(
                403, "unknown_installation", "the relay list's address has not authorized this installation (or revoked it)"
            ) from None
        except StaleRelayList as exc:
            raise ApiError(409, "stale_relay_list", str(exc)) from None
        return {"version": rl.version}, 201 if created else 200

    # -- prekeys --

    def put_prekeys(self, iid_raw: str) -> dict[str, Any]:
        iid = self.iid_param(iid_raw)
        body = self.json_body({"upload"})
        data = self.field_b64(body, "upload", self.s.max_prekey_upload)
        try:
            upload, _body, sig = PrekeyUpload.parse_signed(data)
        except WireError as exc:
            raise ApiError(400, "bad_cbor", f"the prekey upload is malformed: {exc}") from None
        if upload.installation_id != iid:
            raise ApiError(400, "bad_request", "the upload is for another installation")
        inst = self.storage.installation(iid)
        if inst is None:
            raise ApiError(403, "unknown_installation", "no wallet has authorized this installation (or it was revoked)")
        try:
            upload.verify_all(inst.signing_pub, sig)
        except P.InvalidSignature:
            raise ApiError(400, "bad_signature", "the upload is not signed by the installation's key") from None
        stored = StoredPrekeys(
            issued_at=upload.issued_at,
            spk=wire.encode(upload.spk.to_wire()),
            pq_lrpk=None if upload.pq_lrpk is None else wire.encode(upload.pq_lrpk.to_wire()),
            otpks={k.id: wire.encode(k.to_wire()) for k in reversed(upload.otpks)},
            pq_otpks={k.id: wire.encode(k.to_wire()) for k in reversed(upload.pq_otpks)},
        )
        try:
            otpk, pq = self.storage.put_prekeys(iid, stored, max_one_time=self.s.max_one_time_prekeys)
        except StaleUpload as exc:
            raise ApiError(409, "stale_upload", str(exc)) from None
        return {"otpk": otpk, "pq_otpk": pq}

    def claim(self, iid_raw: str) -> dict[str, Any]:
        self.limit(self.claim_limit)
        iid = self.iid_param(iid_raw)
        self.no_body()  # before the target's claim budget or a key is spent
        if not self.claim_target_limit.take(iid):  # many clients together cannot drain one installation
            raise ApiError(429, "target_rate_limited", "too many prekey claims for this installation; try again later")
        claimed = self.storage.claim_prekeys(iid)
        if claimed is None:
            raise ApiError(404, "no_prekeys", "this installation has no prekeys on this relay")
        try:
            bundle = Bundle(
                iid,
                SignedPrekey.from_wire(wire.decode(claimed.spk), (SPK,)),
                None if claimed.otpk is None else OneTimePrekey.from_wire(wire.decode(claimed.otpk)),
                SignedPrekey.from_wire(wire.decode(claimed.pqpk), (PQ_OTPK, PQ_LRPK)),
            )
        except WireError:
            raise ApiError(503, "storage_error", "stored prekeys are corrupt") from None
        return {"bundle": wire.b64e(bundle.encode())}

    def prekey_count(self, iid_raw: str) -> dict[str, Any]:
        iid = self.iid_param(iid_raw)
        self.no_body()
        otpk, pq = self.storage.prekey_counts(iid)
        return {"otpk": otpk, "pq_otpk": pq}

    # -- auth --

    def challenge(self) -> dict[str, Any]:
        self.limit(self.auth_limit)
        body = self.json_body({"installation_id"})
        iid = self.iid_param(self.field_str(body, "installation_id"))
        if self.storage.installation(iid) is None:
            raise ApiError(401, "unknown_installation", "no wallet has authorized this installation (or it was revoked)")
        challenge, expires = self.auth.new_challenge(iid)
        return {"challenge": wire.b64e(challenge), "expires_at": expires}

    def token(self) -> dict[str, Any]:
        self.limit(self.auth_limit)
        body = self.json_body({"installation_id", "challenge", "signature"})
        iid = self.iid_param(self.field_str(body, "installation_id"))
        challenge = self.field_b64(body, "challenge", 32, exact=32)
        signature = self.field_b64(body, "signature", 64, exact=64)
        self.auth.take_challenge(challenge, iid)
        inst = self.storage.installation(iid)
        if inst is None:
            raise ApiError(401, "unknown_installation", "no wallet has authorized this installation (or it was revoked)")
        try:
            P.ed25519_verify(inst.signing_pub, signature, auth_message(iid, challenge))
        except P.InvalidSignature:
            raise ApiError(401, "bad_signature", "the challenge signature does not verify") from None
        token, expires = self.auth.new_token(iid)
        return {"token": token, "expires_at": expires}

    # -- envelopes --

    def publish(self) -> tuple[dict[str, Any], int]:
        self.limit(self.publish_limit)
        body = self.json_body({"topic", "payload"})
        topic = body.get("topic")
        iid = self.topic_param(topic)
        payload = self.field_b64(body, "payload", self.s.max_envelope)
        if not payload:
            raise ApiError(400, "bad_request", "the payload is empty")
        if self.s.require_known_topic and self.storage.installation(iid) is None:
            raise ApiError(404, "unknown_installation", "no active installation has this inbox topic")
        if not self.inbox_limit.take(str(topic)):  # all publishers to this inbox together
            raise ApiError(429, "inbox_rate_limited", "too many envelopes for this inbox right now; try again later")
        try:
            cursor = self.storage.publish(
                str(topic), payload, self.now(), max_count=self.s.topic_max_envelopes, max_bytes=self.s.topic_max_bytes
            )
        except InboxFull:
            raise ApiError(
                429, "inbox_full", "this inbox holds as many envelopes as the relay keeps for one inbox; try again later"
            ) from None
        self.metrics.envelopes.inc()
        self.metrics.bytes_stored.inc(len(payload))
        # How long the identity log of each address this inbox's installation is bound to is now
        # (public data): a sender whose cached log is shorter refreshes it, so a recipient's
        # installation authorized since then gets the message too (PROTOCOL.md §6.5, issue 9).
        return {"cursor": cursor, "logs": self.storage.identity_log_lengths(iid)}, 202

    def publish_batch(self) -> tuple[dict[str, Any], int]:
        """``POST /v1/envelopes/batch`` (1.4, PROTOCOL.md §7 "Envelopes"): envelopes checked in order,
        each exactly as a single publish; the first refused one stops the batch, and the prefix before
        it is stored in one transaction. 200 ``{"cursors", "logs": {topic: {address: n}}, "refused"?}``."""
        body = self.json_body({"topics", "payloads"})
        topics, payloads = body.get("topics"), body.get("payloads")
        if not isinstance(topics, list) or not isinstance(payloads, list) or len(topics) != len(payloads):
            raise ApiError(400, "bad_request", "topics and payloads must be arrays of the same length")
        if not 1 <= len(topics) <= self.s.max_publish_batch:
            raise ApiError(400, "bad_request", f"a batch holds 1 to {self.s.max_publish_batch} envelopes")
        items: list[tuple[str, bytes]] = []
        iids: dict[str, str] = {}
        refused: tuple[int, ApiError] | None = None
        for i, (topic, b64) in enumerate(zip(topics, payloads)):
            try:
                self.limit(self.publish_limit)  # per envelope, as for single publishes
                iid = self.topic_param(topic)
                payload = self.field_b64({"payload": b64}, "payload", self.s.max_envelope)
                if not payload:
                    raise ApiError(400, "bad_request", "the payload is empty")
                if self.s.require_known_topic and str(topic) not in iids and self.storage.installation(iid) is None:
                    raise ApiError(404, "unknown_installation", "no active installation has this inbox topic")
                if not self.inbox_limit.take(str(topic)):
                    raise ApiError(429, "inbox_rate_limited", "too many envelopes for this inbox right now; try again later")
            except ApiError as exc:
                refused = (i, exc)
                break
            iids[str(topic)] = iid
            items.append((str(topic), payload))
        cursors = self.storage.publish_many(
            items, self.now(), max_count=self.s.topic_max_envelopes, max_bytes=self.s.topic_max_bytes
        ) if items else []
        if len(cursors) < len(items):
            refused = (len(cursors), ApiError(
                429, "inbox_full", "this inbox holds as many envelopes as the relay keeps for one inbox; try again later"
            ))
        for _topic, payload in items[: len(cursors)]:
            self.metrics.envelopes.inc()
            self.metrics.bytes_stored.inc(len(payload))
        stored_topics = dict.fromkeys(t for t, _ in items[: len(cursors)])
        answer: dict[str, Any] = {
            "cursors": cursors,
            "logs": {t: self.storage.identity_log_lengths(iids[t]) for t in stored_topics},
        }
        if refused is not None:
            index, exc = refused
            self.metrics.refused(exc.code)
            answer["refused"] = {"index": index, "status": exc.status, "code": exc.code, "message": exc.message}
        return answer, 200

    def fetch(self, topic_raw: str) -> dict[str, Any]:
        iid = self.topic_param(topic_raw)
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else None
        for name in request.args:
            if name not in ("after", "limit") or len(request.args.getlist(name)) > 1:
                raise ApiError(400, "bad_request", "the query takes after and limit, each at most once")
        after = self._int_arg("after", 0, 0, 2**63 - 1)
        limit = self._int_arg("limit", self.s.fetch_default_limit, 1, self.s.fetch_max_limit)
        self.no_body()
        self.require_token(token, iid)
        envs = self.storage.fetch(topic_raw, after, limit)
        return {
            "envelopes": [{"cursor": e.cursor, "payload": wire.b64e(e.payload), "received_at": e.received_at} for e in envs],
            "next": envs[-1].cursor if envs else after,
        }

    @staticmethod
    def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
        raw = request.args.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not lo <= int(raw) <= hi:
            raise ApiError(400, "bad_request", f"query parameter {name!r} must be an integer in [{lo}, {hi}]")
        return int(raw)

    # -- websocket --

    def subscribe(self, ws: Any) -> None:
        def fail(code: str, message: str) -> None:
            self.metrics.refused(code)
            ws.send(json.dumps({"type": "error", "code": code, "message": message}))
            ws.close()

        first = ws.receive(timeout=self.s.ws_first_frame_timeout)
        if first is None:
            return fail("timeout", "send {token, topic, after} first")
        try:
            if not isinstance(first, str) or len(first) > 4096:
                raise ApiError(400, "bad_request", "the first frame must be a small JSON text frame")
            if first.count("[") + first.count("{") > _MAX_JSON_CONTAINERS:
                raise ApiError(400, "bad_json", "the first frame is not a flat JSON object")
            try:
                hello = _loads_flat(first)
            except _RepeatedField:
                raise ApiError(400, "bad_request", "expected {token, topic, after}, each once") from None
            except (ValueError, RecursionError):
                raise ApiError(400, "bad_json", "the first frame is not valid JSON") from None
            if not isinstance(hello, dict) or set(hello) != {"token", "topic", "after"}:
                raise ApiError(400, "bad_request", "expected exactly {token, topic, after}")
            topic = hello["topic"]
            iid = self.topic_param(topic)
            after = hello["after"]
            if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
                raise ApiError(400, "bad_request", "after must be an integer from 0 to 2^63-1")
            token = hello["token"]
            if not isinstance(token, str):
                raise ApiError(400, "bad_request", "token must be a string")
            self.require_token(token, iid)
        except ApiError as exc:
            return fail(exc.code, exc.message)
        except StorageError:
            return fail("storage_error", "the relay's storage is unavailable")
        wake = Wakeup()
        if hasattr(ws, "event"):  # simple-websocket: its reader sets ws.event for every frame and the close
            ws.event = _FrameEvent(ws.event, wake)
        ws.send(json.dumps({"type": "ready"}))
        self.metrics.subscriptions.inc()
        try:
            return self._deliver(ws, fail, str(topic), iid, after, wake)
        finally:
            self.metrics.subscriptions.dec()

    def _deliver(self, ws: Any, fail: Callable[[str, str], None], topic: str, iid: str, after: int, wake: Wakeup) -> None:
        """The subscription after ``ready``: backlog, then live envelopes until the peer goes or
        the installation is revoked."""
        cursor = after
        last_check = time.monotonic()
        fetch_due = True  # the backlog first
        try:
            while True:
                while fetch_due:  # backlog and anything new, in cursor order
                    batch = self.storage.fetch(str(topic), cursor, 100)
                    for e in batch:
                        ws.send(
                            json.dumps(
                                {"type": "envelope", "cursor": e.cursor, "payload": wire.b64e(e.payload), "received_at": e.received_at}
                            )
                        )
                        cursor = e.cursor
                    fetch_due = len(batch) == 100
                wake.clear()  # before reading: a frame arriving from here on ends the next wait at once
                while (msg := ws.receive(timeout=0)) is not None:  # raises ConnectionClosed when gone
                    self._ws_frame(ws, msg)
                recheck_in = last_check + self.s.ws_recheck_interval - time.monotonic()
                if recheck_in <= 0:
                    last_check = time.monotonic()
                    if self.storage.installation(iid) is None:
                        return fail("unknown_installation", "the installation was revoked")
                    fetch_due = True  # periodic catch-up from the cursor, whatever the wake-ups said
                if not fetch_due:
                    # True when an envelope after the cursor exists (woken by a publish on any node);
                    # a client frame (a ping) or the peer's close ends the wait early through ``wake``
                    timeout = min(self.s.ws_poll_interval, max(recheck_in, 0.0))
                    fetch_due = self.storage.wait(str(topic), cursor, timeout, wake)
        except StorageError:
            return fail("storage_error", "the relay's storage is unavailable")

    @staticmethod
    def _ws_frame(ws: Any, msg: Any) -> None:
        try:
            ok = isinstance(msg, str) and len(msg) <= 4096 and msg.count("[") + msg.count("{") <= _MAX_JSON_CONTAINERS
            obj = json.loads(msg) if ok else None
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "ping":
            ws.send(json.dumps({"type": "pong"}))


class _FrameEvent:
    """Stands in for a simple-websocket connection's ``event``, which its reader (a thread, or a
    greenlet under gevent) sets for every complete client message, the close and errors, and which
    ``receive`` waits on. It also sets the subscription's :class:`Wakeup`, so the handler's
    ``Storage.wait`` ends when a ping arrives instead of at its timeout: no extra thread per
    subscription, and the same in both serving models."""

    def __init__(self, event: Any, wake: Wakeup) -> None:
        self._event = event
        self._wake = wake

    def set(self) -> None:
        self._event.set()
        self._wake.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


def _blueprint(relay: _Relay, sock: Sock, host_check: Callable[[str], bool] | None = None) -> Blueprint:
    bp = Blueprint("parley_relay", __name__)

    @bp.before_request
    def _limit_body() -> None:
        request.max_content_length = relay.s.max_body
        if request.path.startswith(("/v1/blobs/", "/v1/backups/")) and request.method == "PUT":
            request.max_content_length = None  # put_blob / put_backup check Content-Length themselves (413 too_large)
        if host_check is not None:
            # the relay embedded in a bridge serves local bridges only: no web page (a browser
            # always sends Origin on cross-origin POSTs and WebSockets), no DNS-rebound host name
            if not host_check(request.host):
                raise ApiError(403, "bad_host", "the Host header must name this machine's loopback address and port")
            origin = request.headers.get("Origin")
            # (WebSocket client libraries send Origin: http://<the relay's own host>, which is allowed)
            if origin is not None and not (origin.startswith("http://") and host_check(origin[len("http://") :])):
                raise ApiError(403, "forbidden_origin", "web pages may not use this relay")

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        relay.metrics.refused(exc.code)
        return _error_response(exc.status, exc.code, exc.message)

    @bp.errorhandler(StorageUnavailable)
    @bp.errorhandler(StorageError)
    def _storage_error(exc: StorageError) -> Response:
        relay.metrics.refused("storage_error")
        return _error_response(503, "storage_error", "the relay's storage is unavailable; try again later")

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        resp = _http_json(exc)
        relay.metrics.refused(_HTTP_CODES.get(resp.status_code, "internal_error" if resp.status_code >= 500 else "bad_request"))
        return resp

    @bp.get("/v1/health")
    def health() -> Any:
        relay.no_body()
        return jsonify({"ok": True, "version": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR})

    @bp.post("/v1/identity/<path:address>")
    def identity_post(address: str) -> Any:
        body, status = relay.publish_identity(address)
        return jsonify(body), status

    @bp.get("/v1/identity/<path:address>")
    def identity_get(address: str) -> Any:
        return jsonify(relay.get_identity(address))

    @bp.get("/v1/identity-bucket/<path:prefix>")
    def identity_bucket_get(prefix: str) -> Any:
        return jsonify(relay.get_identity_bucket(prefix))

    @bp.put("/v1/relay-list/<iid>")
    def relay_list_put(iid: str) -> Any:
        body, status = relay.put_relay_list(iid)
        return jsonify(body), status

    @bp.put("/v1/prekeys/<iid>")
    def prekeys_put(iid: str) -> Any:
        return jsonify(relay.put_prekeys(iid))

    @bp.post("/v1/prekeys/<iid>/claim")
    def prekeys_claim(iid: str) -> Any:
        return jsonify(relay.claim(iid))

    @bp.get("/v1/prekeys/<iid>/count")
    def prekeys_count(iid: str) -> Any:
        return jsonify(relay.prekey_count(iid))

    @bp.post("/v1/auth/challenge")
    def auth_challenge() -> Any:
        return jsonify(relay.challenge())

    @bp.post("/v1/auth/token")
    def auth_token() -> Any:
        return jsonify(relay.token())

    @bp.post("/v1/envelopes")
    def envelopes_post() -> Any:
        body, status = relay.publish()
        return jsonify(body), status

    @bp.post("/v1/envelopes/batch")
    def envelopes_batch_post() -> Any:
        body, status = relay.publish_batch()
        return jsonify(body), status

    @bp.get("/v1/envelopes/<path:topic>")
    def envelopes_get(topic: str) -> Any:
        return jsonify(relay.fetch(topic))

    @bp.put("/v1/blobs/<iid>/<blob_id>")
    def blob_put(iid: str, blob_id: str) -> Any:
        body, status = relay.put_blob(iid, blob_id)
        return jsonify(body), status

    @bp.get("/v1/blobs/<iid>/<blob_id>")
    def blob_get(iid: str, blob_id: str) -> Any:
        return relay.get_blob(iid, blob_id)

    @bp.get("/v1/backups/<vault>")
    def backup_list(vault: str) -> Any:
        return jsonify(relay.list_backups(vault))

    @bp.put("/v1/backups/<vault>/<name>")
    def backup_put(vault: str, name: str) -> Any:
        body, status = relay.put_backup(vault, name)
        return jsonify(body), status

    @bp.get("/v1/backups/<vault>/<name>")
    def backup_get(vault: str, name: str) -> Any:
        return relay.get_backup(vault, name)

    @bp.delete("/v1/backups/<vault>/<name>")
    def backup_delete(vault: str, name: str) -> Any:
        return jsonify(relay.delete_backup(vault, name))

    @sock.route("/v1/subscribe", bp=bp)
    def subscribe(ws: Any) -> None:
        relay.subscribe(ws)

    return bp


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


def _http_json(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
    message = {
        404: "no such endpoint",
        405: "method not allowed for this endpoint",
        413: "request body too large",
    }.get(status, exc.description or exc.name)
    resp = _error_response(status, code, str(message))
    if status == 405 and isinstance(exc, HTTPException):
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
    return resp


def install_json_errors(app: Flask) -> None:
    """Make 404/405/413/500 answers JSON on ``app`` (no HTML error pages, no tracebacks)."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return _http_json(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return _http_json(exc)
        app.logger.exception("unhandled error in relay request")
        return _error_response(500, "internal_error", "internal error")


def register_relay(
    app: Flask,
    sock: Sock,
    storage: Storage,
    settings: RelaySettings | None = None,
    *,
    host_check: Callable[[str], bool] | None = None,
) -> Any:
    """Mount the relay routes (a Blueprint) on an existing Flask app and flask-sock ``Sock``;
    returns the relay's :class:`bridge.relay.metrics.RelayMetrics`.

    ``host_check(host)`` (the embedded relay of ``parley run``): requests whose ``Host`` it refuses
    (403 ``bad_host``), and requests carrying an ``Origin`` other than ``http://<a host it accepts>``
    (403 ``forbidden_origin``: any other web page), are answered before any route runs.

    Errors raised inside relay views are answered as JSON by the Blueprint. App-wide JSON handlers
    for routing errors (404/405) are installed only if the app has no handler of its own for
    ``HTTPException``. Retention is not started here: call :func:`start_retention`.
    """
    relay = _Relay(storage, settings or RelaySettings())
    app.register_blueprint(_blueprint(relay, sock, host_check))
    if HTTPException not in app.error_handler_spec.get(None, {}).get(None, {}):
        install_json_errors(app)
    return relay.metrics


def create_app(storage: Storage, *, settings: RelaySettings | None = None) -> Flask:
    """A standalone relay Flask app over ``storage``.

    Besides the API it serves what an operator monitors (outside ``/v1/``, not part of the protocol
    clients speak): ``GET /healthz`` (200 ``{"ok": true}``, or 503 ``storage_error`` when the
    database does not answer) and ``GET /metrics`` (Prometheus text format, the app's own registry).
    With ``settings.trusted_proxies`` = N > 0 the app believes the last N ``X-Forwarded-For`` /
    ``X-Forwarded-Proto`` entries (werkzeug ProxyFix), so rate limits key on the real client.
    """
    s = settings or RelaySettings()
    app = Flask("parley_relay")
    app.url_map.merge_slashes = False  # '//' in a path is a 404, never a 308 redirect to another topic
    app.config["MAX_CONTENT_LENGTH"] = s.max_body
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25, "max_message_size": 64 * 1024}
    app.json.sort_keys = False  # type: ignore[attr-defined]
    sock = Sock(app)
    metrics = register_relay(app, sock, storage, s)
    app.extensions["parley_relay_storage"] = storage
    app.extensions["parley_relay_metrics"] = metrics
    _add_operator_routes(app, storage, metrics)
    if s.trusted_proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=s.trusted_proxies, x_proto=s.trusted_proxies)  # type: ignore[method-assign]
    return app


#: a well-formed installation id no installation has (all zero): /healthz asks the index for it
_PROBE_IID = "0" * 32


def _add_operator_routes(app: Flask, storage: Storage, metrics: Any) -> None:
    """``/healthz``, ``/metrics`` and the per-request counter of a standalone relay."""
    from bridge.relay.metrics import CONTENT_TYPE

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            storage.installation(_PROBE_IID)  # one indexed read: the database answers
        except StorageError:
            metrics.refused("storage_error")
            return _error_response(503, "storage_error", "the relay's storage is unavailable")
        return jsonify({"ok": True})

    @app.get("/metrics")
    def metrics_view() -> Any:
        return Response(metrics.render(), status=200, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})

    @app.after_request
    def _count(resp: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(route=rule, status=str(resp.status_code)).inc()
        return resp


# ---- retention ------------------------------------------------------------------------------


class RetentionThread(threading.Thread):
    """Deletes envelopes older than ``settings.retention_days``, every ``settings.expire_interval`` s."""

    def __init__(self, storage: Storage, settings: RelaySettings) -> None:
        super().__init__(name="parley-relay-retention", daemon=True)
        self.storage = storage
        self.settings = settings
        self._stop_event = threading.Event()
        self.passes = 0
        self.deleted = 0
        self.blobs_deleted = 0
        self.vaults_deleted = 0

    def run_once(self) -> int:
        """One expiry pass (envelopes past retention; blobs past their TTL and uploads cut off more
        than an hour ago; backup vaults untouched for ``backup_ttl_days``, backup uploads cut off
        more than an hour ago, spent nonces); returns how many envelopes were deleted."""
        now = self.settings.clock()
        before = int(now - self.settings.retention_days * 86400)
        n = self.storage.expire(before)
        self.blobs_deleted += self.storage.expire_blobs(int(now), stale_before=int(now) - 3600)
        self.vaults_deleted += self.storage.expire_backups(
            touched_before=int(now - self.settings.backup_ttl_days * 86400), stale_before=int(now) - 3600, now=int(now)
        )
        self.deleted += n
        self.passes += 1
        return n

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.run_once()
            except StorageError:
                pass  # try again next interval
            self._stop_event.wait(self.settings.expire_interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)


def start_retention(storage: Storage, settings: RelaySettings | None = None) -> RetentionThread:
    """Start the background expiry pass; call ``.stop()`` on the result when shutting down."""
    t = RetentionThread(storage, settings or RelaySettings())
    t.start()
    return t


# ---- standalone server ----------------------------------------------------------------------


def serve(
    host: str,
    port: int,
    db: str,
    *,
    ready_callback: Callable[[str, int], None] | None = None,
    settings: RelaySettings | None = None,
    model: str = "threaded",
    ssl_context: Any = None,
) -> None:
    """Run a standalone relay until SIGTERM/SIGINT. Prints nothing.

    ``ssl_context`` (an ``ssl.SSLContext``, :func:`bridge.relay.tls.server_context`): serve https
    and wss instead of plain http and ws.

    ``model`` is the serving model (:mod:`bridge.relay.serving`): ``"threaded"`` (werkzeug's
    threaded server) or ``"gevent"`` (gevent's WSGIServer; the process must already be
    monkey-patched, see :func:`bridge.relay.serving.patch_gevent`). ``ready_callback(host, port)``
    is called once the socket listens (``port`` is the bound port, useful with ``port=0``).

    Raises:
        StorageError: the database cannot be opened.
        OSError: the address cannot be bound.
        ValueError: an unknown ``model``.
        bridge.relay.serving.ServingError: ``model="gevent"`` in a process that is not patched.
    """
    from bridge.relay import serving

    if model not in serving.SERVING_MODELS:
        raise ValueError(f"unknown serving model {model!r} (expected one of {', '.join(serving.SERVING_MODELS)})")
    if model == "gevent" and not serving.gevent_patched():
        raise serving.ServingError("the gevent serving model needs patch_gevent() before anything else is imported")
    s = settings or RelaySettings()
    storage = open_storage(db)
    if model == "gevent":
        try:
            app = create_app(storage, settings=s)
            retention = start_retention(storage, s)  # a greenlet under monkey-patching
        except BaseException:
            storage.close()
            raise
        try:
            serving.serve_gevent(
                app, host, port, ready_callback=ready_callback, header_timeout=s.header_timeout,
                idle_timeout=s.idle_timeout, max_connections=s.max_connections, ssl_context=ssl_context,
            )
        finally:
            retention.stop()
            storage.close()
        return
    try:
        app = create_app(storage, settings=s)
        server = serving.make_guarded_server(
            host, port, app, header_timeout=s.header_timeout, idle_timeout=s.idle_timeout, max_connections=s.max_connections,
            ssl_context=ssl_context,
        )
        # Several small writes per answer (headers, body, WebSocket frames): without this each later one
        # waits for the client's delayed ACK (~40 ms). Accepted sockets inherit it on Linux.
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        storage.close()
        raise
    retention = start_retention(storage, s)
    stopping = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, name="parley-relay-shutdown", daemon=True).start()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _stop)
    try:
        if ready_callback is not None:
            ready_callback(host, int(server.server_port))
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        retention.stop()
        server.server_close()
        storage.close()

