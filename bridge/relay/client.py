"""HTTP + WebSocket client of a relay node (DESIGN.md "Relay"; docs/PROTOCOL.md §7).

Errors:

* :class:`RelayUnavailable` — connection refused, timeout, 5xx, or an answer that is not the API's
  JSON; the message names the relay URL and the reason;
* :class:`RelayError` ``(status, code, message)`` — a 4xx answer, its text naming the relay URL too
  (``relay URL refused: code: message (HTTP n)``); :class:`NotFound` for 404.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from typing import Any, Iterator, Sequence
from urllib.parse import quote

import requests
import simple_websocket

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.protocol.ids import BUCKET_PREFIX_MAX, BUCKET_PREFIX_MIN, address_bucket
from bridge.protocol.wire import WireError
from bridge.relay.auth import auth_message
from bridge.relay.storage import Envelope
from bridge.relay.tls import ContextAdapter, TlsConfigError, client_context, describe_tls_error

__all__ = [
    "RelayClient",
    "Subscription",
    "Envelope",
    "Published",
    "LogAnswer",
    "RelayUnavailable",
    "RelayError",
    "NotFound",
    "PING_INTERVAL",
]

log = logging.getLogger("parley.relay.client")

#: Seconds between client ``{"type": "ping"}`` frames on a subscription.
PING_INTERVAL = 20.0
_TOKEN_MARGIN = 60.0
#: Tokens obtained by any client of this process, by (relay URL, installation id): an engine keeps
#: one client per thread, and the thread that publishes a wallet switch is not the one that
#: authenticated (see :meth:`RelayClient.publish_identity`).
_SHARED_TOKENS: dict[tuple[str, str], tuple[str, float]] = {}
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class Published:
    """The relay's answer to a publish: the envelope's cursor and, from relays that send it, how
    many records the identity log of each address the inbox's installation is bound to holds
    (address → count; empty from older relays, or when the relay sent something unusable)."""

    cursor: int
    logs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LogAnswer:
    """One address's entry of an identity answer: its identity log (raw records, append order) and the
    relay lists the relay stores for its active installations (raw records, sorted by installation id;
    ``[]`` from a 1.0 relay). The caller verifies both: the relay is not trusted."""

    records: list[bytes]
    relay_lists: list[bytes] = field(default_factory=list)


#: At most this many ``logs`` entries of a publish answer are read (an installation is bound to
#: one address, two or three after wallet switches).
MAX_PUBLISH_LOGS = 8
#: Most envelopes in one ``POST /v1/envelopes/batch`` (1.4; the relay's default limit).
MAX_PUBLISH_BATCH = 256


class RelayUnavailable(Exception):
    """The relay cannot be reached or failed (connection, timeout, 5xx, garbage answer)."""


def _record_installation(record: bytes) -> str | None:
    """The installation id a statement record names (``None`` if it does not parse)."""
    from bridge.identity import IdentityError, SignedStatement, Statement

    try:
        return Statement.parse(SignedStatement.from_record(record).text).installation_id
    except (IdentityError, ValueError):
        return None


class RelayError(Exception):
    """The relay refused a request (4xx) with a stable error ``code``. With ``relay`` (its base URL) the
    text names it, in the shape :class:`RelayUnavailable` has: ``relay URL refused: code: message (HTTP n)``."""

    def __init__(self, status: int, code: str, message: str, relay: str | None = None) -> None:
        super().__init__((f"relay {relay} refused: " if relay else "") + f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.relay = relay


class NotFound(RelayError):
    """HTTP 404 (e.g. ``no_prekeys``, ``unknown_installation`` on publish)."""


def _envelope(topic: str, obj: Any) -> Envelope:
    if not isinstance(obj, dict):
        raise WireError("envelope must be an object")
    cursor, received_at = obj.get("cursor"), obj.get("received_at")
    for v in (cursor, received_at):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise WireError("cursor and received_at must be non-negative integers")
    return Envelope(cursor=cursor, topic=topic, payload=wire.b64d(obj.get("payload")), received_at=received_at)  # type: ignore[arg-type]


def _close_sockets_in(exc: BaseException) -> None:
    """simple_websocket leaves its socket open when connect() fails; close it (no ResourceWarning)."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


#: The HTTP status a subscription error frame's code stands for (a frame carries no status).
_FRAME_STATUS = {"unauthorized": 401, "unknown_installation": 401}
#: Error frame codes that mean the relay failed, not that it refused us: retry later, same token.
_FRAME_UNAVAILABLE = frozenset({"storage_error", "internal_error", "timeout"})


def _frame_error(base_url: str, obj: dict[str, Any]) -> Exception:
    """The exception for a subscription's ``{"type": "error"}`` frame: a 401 only for a refused
    token or installation; a relay's own failure (``storage_error``) is RelayUnavailable."""
    # the relay's words reach logs and terminals: printable characters only, and not many
    code = "".join(ch if ch.isprintable() else "?" for ch in str(obj.get("code", "error"))[:64])
    message = "".join(ch if ch.isprintable() else "?" for ch in str(obj.get("message", ""))[:200])
    if code in _FRAME_UNAVAILABLE:
        return RelayUnavailable(f"relay {base_url} unavailable: {code}: {message}")
    return RelayError(_FRAME_STATUS.get(code, 400), code, message, base_url)


class Subscription:
    """A live subscription to one inbox topic: iterate for :class:`Envelope` objects.

    ``receive(timeout)`` returns the next envelope or ``None`` after ``timeout`` seconds, so callers
    can check a stop flag; iteration blocks until an envelope arrives and ends when :meth:`close` is
    called (from any thread). A ``{"type": "ping"}`` frame is sent every :data:`PING_INTERVAL` s.

    Raises (from ``receive``/iteration):
        RelayError: the relay sent an error frame (bad token, revoked installation, …).
        RelayUnavailable: the connection dropped.
    """

    def __init__(self, url: str, base_url: str, topic: str, after: int, token: str, timeout: float) -> None:
        self.topic = topic
        self.cursor = after
        self._base_url = base_url
        self._closed = threading.Event()
        #: what :meth:`drain` met after the envelopes it returned: the next :meth:`receive` raises it
        self._failed: Exception | None = None
        ssl_context = _tls_context(base_url) if url.startswith("wss://") else None
        try:
            self._ws = simple_websocket.Client.connect(url, ssl_context=ssl_context)
        except (OSError, simple_websocket.ConnectionError) as exc:
            _close_sockets_in(exc)
            tls = describe_tls_error(exc)
            if tls is not None:
                raise RelayUnavailable(f"relay {base_url}: {tls}") from None
            raise RelayUnavailable(f"relay {base_url} unavailable: cannot open WebSocket ({exc})") from None
        self._last_ping = time.monotonic()
        try:
            self._ws.send(json.dumps({"token": token, "topic": topic, "after": after}))
            first = self._frame(timeout)
        except BaseException:
            self.close()
            raise
        if first is None:
            self.close()
            raise RelayUnavailable(f"relay {base_url} unavailable: no answer to the subscription request")
        if first.get("type") != "ready":
            self.close()
            raise RelayUnavailable(f"relay {base_url} sent an unexpected first frame")

    def _frame(self, timeout: float) -> dict[str, Any] | None:
        """Next JSON frame (not pong), or None on timeout. ``timeout`` 0: only a frame already received."""
        deadline = time.monotonic() + timeout
        once = timeout <= 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not once:
                return None
            try:
                raw = self._ws.receive(timeout=0 if once else min(remaining, 1.0))
            except simple_websocket.ConnectionClosed:
                if self._closed.is_set():
                    raise StopIteration from None
                raise RelayUnavailable(f"relay {self._base_url} closed the subscription") from None
            if raw is None:
                if self._closed.is_set():
                    raise StopIteration
                if once:
                    return None
                if time.monotonic() - self._last_ping >= PING_INTERVAL:
                    self._last_ping = time.monotonic()
                    try:
                        self._ws.send(json.dumps({"type": "ping"}))
                    except simple_websocket.ConnectionClosed:
                        raise RelayUnavailable(f"relay {self._base_url} closed the subscription") from None
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, TypeError):
                raise RelayUnavailable(f"relay {self._base_url} sent a frame that is not JSON") from None
            if not isinstance(obj, dict):
                raise RelayUnavailable(f"relay {self._base_url} sent a frame that is not an object")
            if obj.get("type") == "error":
                raise _frame_error(self._base_url, obj)
            if obj.get("type") == "pong":
                continue
            return obj

    def receive(self, timeout: float) -> Envelope | None:
        """The next envelope, or ``None`` if none arrived within ``timeout`` seconds (or closed)."""
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed  # met by drain() after the envelopes it returned
        try:
            obj = self._frame(timeout)
        except StopIteration:
            return None
        if obj is None or obj.get("type") != "envelope":
            return None
        try:
            env = _envelope(self.topic, obj)
        except WireError as exc:
            raise RelayUnavailable(f"relay {self._base_url} sent a malformed envelope: {exc}") from None
        self.cursor = env.cursor
        return env

    def drain(self, first: Envelope, most: int) -> list[Envelope]:
        """``first`` and the envelopes already received after it, without waiting: at most ``most``
        (a backlog arrives as a burst of frames; the caller processes them in one transaction)."""
        batch = [first]
        while len(batch) < most:
            try:
                obj = self._frame(0)
                if obj is None:
                    break
                if obj.get("type") != "envelope":
                    continue
                try:
                    env = _envelope(self.topic, obj)
                except WireError as exc:
                    raise RelayUnavailable(f"relay {self._base_url} sent a malformed envelope: {exc}") from None
            except StopIteration:
                break
            except (RelayError, RelayUnavailable) as exc:
                # The envelopes before it are good: they are taken in first, and the next receive raises.
                self._failed = exc
                break
            self.cursor = env.cursor
            batch.append(env)
        return batch

    def __iter__(self) -> Iterator[Envelope]:
        while not self._closed.is_set():
            env = self.receive(1.0)
            if env is not None:
                yield env

    def close(self) -> None:
        """Close the socket; a blocked ``receive``/iteration returns promptly."""
        self._closed.set()
        try:
            self._ws.close()
        except (simple_websocket.ConnectionClosed, OSError, AttributeError):
            pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CONTEXTS: dict[tuple[str, float, int], Any] = {}
_CONTEXTS_LOCK = threading.Lock()


def _tls_context(base_url: str) -> Any:
    """The process's client TLS context (:func:`bridge.relay.tls.client_context`), built once per
    ``PARLEY_CA_BUNDLE`` value and file version.

    Raises:
        RelayUnavailable: the CA bundle cannot be used (the message names the relay and the file).
    """
    import os

    from bridge.relay.tls import CA_BUNDLE_ENV

    bundle = os.environ.get(CA_BUNDLE_ENV) or ""
    try:
        st = os.stat(bundle) if bundle else None
    except OSError:
        st = None
    key = (bundle, st.st_mtime if st else 0.0, st.st_size if st else -1)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            try:
                ctx = client_context()
            except TlsConfigError as exc:
                raise RelayUnavailable(f"relay {base_url}: {exc}") from None
            _CONTEXTS.clear()
            _CONTEXTS[key] = ctx
        return ctx


def _reason(exc: BaseException) -> str:
    """A short human reason for a failed request (requests nests the OS error several levels deep)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return (seen.strerror or str(seen)).lower()
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        seen = nxt if nxt is not seen else None
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                           ("timed out", "timed out"), ("Connection reset", "connection reset")):
        if needle in text:
            return reason
    return type(exc).__name__


#: Defaults of :func:`relay_timeouts` (seconds).
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0


def relay_timeouts() -> tuple[float, float]:
    """(connect, read) seconds for relay requests: ``PARLEY_RELAY_CONNECT_TIMEOUT`` and
    ``PARLEY_RELAY_READ_TIMEOUT`` (positive numbers, at most 300), else 3 and 5. The read timeout
    bounds each wait for bytes from the relay, so a relay that accepts and never answers costs that long."""
    import math
    import os

    out = []
    for var, default in (("PARLEY_RELAY_CONNECT_TIMEOUT", CONNECT_TIMEOUT), ("PARLEY_RELAY_READ_TIMEOUT", READ_TIMEOUT)):
        try:
            value = float(os.environ.get(var, ""))
        except ValueError:
            value = default
        out.append(value if math.isfinite(value) and 0 < value <= 300 else default)
    return out[0], out[1]


class _Limited:
    """A file object that yields at most ``n`` bytes of ``f`` (requests streams it)."""

    def __init__(self, f: Any, n: int) -> None:
        self._f = f
        self._left = n
        self.len = n

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(want)
        self._left -= len(data)
        return bytes(data)


class RelayClient:
    """Talks to one relay over ``requests.Session`` (thread-safe enough for one daemon)."""

    def __init__(self, base_url: str, *, timeout: float | None = None) -> None:
        """``timeout``: seconds for connecting and for each wait for the relay's answer; default
        :func:`relay_timeouts` (a hung relay is given up on within seconds, not tens of them)."""
        self.base_url = base_url.rstrip("/")
        self._timeouts = (timeout, timeout) if timeout is not None else relay_timeouts()
        self.timeout = self._timeouts[1]
        self._session = requests.Session()
        self._tls_ready = False
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        #: the relay answered the batch route 404 not_found (before 1.4): publish one by one
        self._no_batch = False

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP request to the relay; a transport failure (no connection, timeout, TLS) raises
        RelayUnavailable with the reason in one line."""
        url = self.base_url + path
        if not self._tls_ready and url.startswith("https://"):
            # every https request verifies the relay with the one client context (system store +
            # PARLEY_CA_BUNDLE), never with requests' own certifi bundle
            self._session.mount("https://", ContextAdapter(_tls_context(self.base_url)))
            self._tls_ready = True
        try:
            return self._session.request(method, url, timeout=self._timeouts, **kwargs)
        except requests.ConnectTimeout:
            raise RelayUnavailable(f"relay {self.base_url} unavailable: no connection within {self._timeouts[0]:g} s") from None
        except requests.Timeout:
            raise RelayUnavailable(f"relay {self.base_url} unavailable: no answer within {self._timeouts[1]:g} s") from None
        except requests.RequestException as exc:
            tls = describe_tls_error(exc)
            if tls is not None:
                raise RelayUnavailable(f"relay {self.base_url}: {tls}") from None
            raise RelayUnavailable(f"relay {self.base_url} unavailable: {_reason(exc)}") from None

    def _call(self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
              params: dict[str, Any] | None = None) -> Any:
        resp = self._send(method, path, json=body, headers=headers, params=params)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 500:
            detail = data.get("error", {}).get("message") if isinstance(data, dict) and isinstance(data.get("error"), dict) else resp.reason
            raise RelayUnavailable(f"relay {self.base_url} unavailable: HTTP {resp.status_code} ({detail})")
        if resp.status_code >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            code = str(err.get("code", "error")) if isinstance(err, dict) else "error"
            message = str(err.get("message", resp.reason)) if isinstance(err, dict) else str(resp.reason)
            cls = NotFound if resp.status_code == 404 else RelayError
            raise cls(resp.status_code, code, message, self.base_url)
        if not isinstance(data, dict):
            raise RelayUnavailable(f"relay {self.base_url} answered {method} {path} with something that is not a JSON object")
        return data

    # ---- blobs (protocol 1.2, PROTOCOL.md §7 "Blobs") ---------------------------------------

    def _raw(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request whose body or answer is streamed; never follows a redirect (a blob locator
        came from a peer: a redirect could point anywhere). Errors as :meth:`_call` raises them."""
        resp = self._send(method, path, allow_redirects=False, **kwargs)
        if resp.status_code >= 300:
            try:
                data = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else None
            except ValueError:
                data = None
            finally:
                resp.close()
            err = data.get("error") if isinstance(data, dict) else None
            code = str(err.get("code", "error")) if isinstance(err, dict) else "error"
            message = str(err.get("message", resp.reason)) if isinstance(err, dict) else str(resp.reason)
            if resp.status_code >= 500:
                raise RelayUnavailable(f"relay {self.base_url} unavailable: HTTP {resp.status_code} ({message})")
            cls = NotFound if resp.status_code == 404 else RelayError
            raise cls(resp.status_code, code, message, self.base_url)
        return resp

    def put_blob(self, installation_id: str, blob_id: str, body: Any, size: int) -> dict[str, Any]:
        """Upload ``size`` bytes read from the file object ``body`` (streamed). Returns ``{id, size, expires_at}``.

        Raises:
            RelayError: 409 exists, 413 too_large, 429 blob_quota / rate_limited; NotFound: unknown installation.
            RelayUnavailable
        """
        resp = self._raw(
            "PUT", f"/v1/blobs/{installation_id}/{blob_id}", data=body,
            headers={"Content-Length": str(int(size)), "Content-Type": "application/octet-stream"},
        )
        try:
            data = resp.json()
        except ValueError:
            data = None
        finally:
            resp.close()
        if not isinstance(data, dict):
            raise self._bad("the blob upload's answer is not a JSON object")
        return data

    def get_blob(self, installation_id: str, blob_id: str) -> requests.Response:
        """The relay's answer for a blob, its body not read yet (``stream=True``): the caller reads
        ``iter_content`` and closes it.

        Raises:
            NotFound: no such blob (or it expired). RelayError, RelayUnavailable
        """
        return self._raw("GET", f"/v1/blobs/{installation_id}/{blob_id}", stream=True)

    # ---- backup space (protocol 1.3, PROTOCOL.md §7 "Backups (1.3)") ------------------------

    def backup_put(self, auth_private: bytes, name: str, data: Any, size: int | None = None) -> dict[str, Any]:
        """Store (or atomically replace) object ``name`` of the vault of ``auth_private`` (an Ed25519
        seed). ``data``: bytes, or a binary file object read from its position (seekable: read twice,
        once for the SHA-256 the signature covers; else spooled to a temporary file first); ``size``
        bytes of it when given. Returns ``{"name", "size", "updated_at"}``.

        Raises:
            RelayError: 429 ``backup_quota``, 413 ``too_large``, 400 ``bad_request`` (name), 401 (clock
                skew, signature), …; RelayUnavailable.
        """
        import hashlib
        import io
        import tempfile

        from bridge.relay.backupauth import check_name, signed_headers, vault_of

        check_name(name)
        spool = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data) if size is None else bytes(data)[: int(size)]
            body: Any = io.BytesIO(raw)
            digest, n = hashlib.sha256(raw).digest(), len(raw)
        else:
            if not (hasattr(data, "seekable") and data.seekable()):
                spool = tempfile.TemporaryFile()
                left = None if size is None else int(size)
                while left is None or left > 0:
                    piece = data.read(1 << 16 if left is None else min(1 << 16, left))
                    if not piece:
                        break
                    spool.write(piece)
                    if left is not None:
                        left -= len(piece)
                spool.seek(0)
                data, size = spool, spool.seek(0, 2)
                spool.seek(0)
            start = data.tell()
            h = hashlib.sha256()
            n = 0
            while size is None or n < size:
                piece = data.read(1 << 16 if size is None else min(1 << 16, int(size) - n))
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
            if size is not None and n != size:
                raise ValueError(f"the file holds {n} bytes, not {size}")
            data.seek(start)
            digest = h.digest()
            body = _Limited(data, n)
        try:
            headers = signed_headers(auth_private, "PUT", name, digest)
            headers.update({"Content-Length": str(n), "Content-Type": "application/octet-stream"})
            resp = self._raw("PUT", f"/v1/backups/{vault_of(auth_private)}/{name}", data=body, headers=headers)
        finally:
            if spool is not None:
                spool.close()
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        finally:
            resp.close()
        if not isinstance(answer, dict):
            raise self._bad("the backup upload's answer is not a JSON object")
        return answer

    def backup_list(self, auth_private: bytes) -> list[dict[str, Any]]:
        """The vault's objects: ``[{"name", "size", "updated_at"}]`` sorted by name (checked: a relay's
        malformed entry raises RelayUnavailable)."""
        from bridge.relay.backupauth import BackupAuthError, check_name, signed_headers, vault_of

        data = self._call("GET", f"/v1/backups/{vault_of(auth_private)}", headers=signed_headers(auth_private, "GET", ""))
        objs = data.get("objects")
        if not isinstance(objs, list):
            raise self._bad("objects is not a list")
        out = []
        for o in objs:
            if not isinstance(o, dict):
                raise self._bad("an object entry is not an object")
            try:
                name = check_name(o.get("name"))  # type: ignore[arg-type]
            except BackupAuthError:
                raise self._bad("an object name is malformed") from None
            size, at = self._int(o, "size"), self._int(o, "updated_at")
            if size < 0 or at < 0:
                raise self._bad("a negative size or time")
            out.append({"name": name, "size": size, "updated_at": at})
        return out

    def backup_get(self, auth_private: bytes, name: str, out: Any = None, *, max_size: int | None = None,
                   on_progress: Any = None) -> bytes | None:
        """Object ``name`` of the vault: its bytes, or (``out`` given) written to ``out`` and ``None``.
        At most ``max_size`` (default 64 MiB, the protocol's largest object) bytes are accepted.

        Raises:
            NotFound: no such object (code ``not_found``). RelayError, RelayUnavailable (also a body
            shorter or longer than its Content-Length, or over ``max_size``).
        """
        import io

        from bridge.relay.backupauth import MAX_OBJECT, check_name, signed_headers, vault_of

        check_name(name)
        limit = MAX_OBJECT if max_size is None else int(max_size)
        resp = self._raw("GET", f"/v1/backups/{vault_of(auth_private)}/{name}", stream=True,
                         headers=signed_headers(auth_private, "GET", name))
        sink = io.BytesIO() if out is None else out
        try:
            try:
                declared = int(resp.headers.get("Content-Length", ""))
            except ValueError:
                raise self._bad("the backup object has no Content-Length") from None
            if declared < 0 or declared > limit:
                raise self._bad(f"the backup object is {declared} bytes, over {limit}")
            got = 0
            try:
                for piece in resp.raw.stream(1 << 16, decode_content=False):
                    got += len(piece)
                    if got > declared:
                        raise self._bad("the backup object is longer than its Content-Length")
                    sink.write(piece)
                    if on_progress is not None:
                        on_progress(len(piece))
            except (OSError, ValueError) as exc:
                if isinstance(exc, RelayUnavailable):
                    raise
                raise RelayUnavailable(f"relay {self.base_url} unavailable: the download broke off ({_reason(exc)})") from None
            except Exception as exc:  # urllib3's ProtocolError / ReadTimeoutError
                if isinstance(exc, (RelayUnavailable, RelayError)):
                    raise
                raise RelayUnavailable(f"relay {self.base_url} unavailable: the download broke off ({_reason(exc)})") from None
            if got != declared:
                raise self._bad(f"the backup object ended after {got} of {declared} bytes")
        finally:
            resp.close()
        return sink.getvalue() if out is None else None

    def backup_delete(self, auth_private: bytes, name: str) -> None:
        """Delete object ``name`` of the vault. Raises NotFound when there is none."""
        from bridge.relay.backupauth import check_name, signed_headers, vault_of

        check_name(name)
        self._call("DELETE", f"/v1/backups/{vault_of(auth_private)}/{name}", headers=signed_headers(auth_private, "DELETE", name))

    def _bad(self, what: str) -> RelayUnavailable:
        return RelayUnavailable(f"relay {self.base_url} sent a malformed answer: {what}")

    def _int(self, data: dict[str, Any], key: str) -> int:
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self._bad(f"{key} is not an integer")
        return v

    # ---- API ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"ok": true, "version": 1, "minor": 1}`` (a 1.0 relay sends no ``minor``)."""
        return self._call("GET", "/v1/health")  # type: ignore[no-any-return]

    def publish_identity(self, address: str, record: bytes) -> int:
        """Append a signed statement record to ``address``'s log; returns its sequence number.

        When this client holds a token of the installation the record names, it is sent along: the
        relay binds an installation already in another address's log to a second address only with
        that proof (a bridge moving to another wallet), else it answers 409 ``installation_bound``.
        """
        headers = None
        iid = _record_installation(record)
        with self._lock:
            cached = self._tokens.get(iid) if iid is not None else None
        if cached is None and iid is not None:
            with _SHARED_LOCK:
                cached = _SHARED_TOKENS.get((self.base_url, iid))
        if cached is not None and cached[1] > time.time():
            headers = {"Authorization": f"Bearer {cached[0]}"}
        return self._int(
            self._call("POST", f"/v1/identity/{quote(address, safe='')}", body={"record": wire.b64e(record)}, headers=headers), "seq"
        )

    def _log_answer(self, entry: dict[str, Any]) -> LogAnswer:
        """``records`` and (protocol 1.1) ``relay_lists`` of one identity answer: lists of base64.
        A missing ``relay_lists`` (a 1.0 relay) is ``[]``; anything else malformed raises."""
        recs, lists = entry.get("records"), entry.get("relay_lists", [])
        if not isinstance(recs, list):
            raise self._bad("records is not a list")
        if not isinstance(lists, list):
            raise self._bad("relay_lists is not a list")
        try:
            return LogAnswer([wire.b64d(r) for r in recs], [wire.b64d(r) for r in lists])
        except WireError:
            raise self._bad("a record or relay list is not base64") from None

    def identity_log(self, address: str) -> LogAnswer:
        """``address``'s log and relay lists (``GET /v1/identity/<address>``; the caller verifies them)."""
        return self._log_answer(self._call("GET", f"/v1/identity/{quote(address, safe='')}"))

    def identity(self, address: str) -> list[bytes]:
        """The raw records of ``address``'s log, in append order (the caller verifies them)."""
        return self.identity_log(address).records

    def identity_logs(self, prefix: str) -> dict[str, LogAnswer]:
        """Every identity log in the k-anonymous bucket ``prefix`` with its relay lists (PROTOCOL.md §7
        "Identity buckets").

        Returns address → :class:`LogAnswer` (the caller verifies them, and that each address is in the bucket).

        Raises:
            RelayError: ``bucket_too_large`` (413): ask again with a longer prefix; ``bad_prefix`` (400).
        """
        data = self._call("GET", f"/v1/identity-bucket/{quote(prefix, safe='')}")
        logs = data.get("logs")
        if data.get("prefix") != prefix or not isinstance(logs, list):
            raise self._bad("not an identity bucket answer")
        out: dict[str, LogAnswer] = {}
        for entry in logs:
            if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
                raise self._bad("bucket entry is not {address, records}")
            out[entry["address"]] = self._log_answer(entry)
        return out

    def logs_by_bucket(
        self, addresses: Iterable[str], width: int = BUCKET_PREFIX_MIN, *, on_longer: Callable[[int], None] | None = None
    ) -> dict[str, LogAnswer]:
        """The logs and relay lists of ``addresses`` (checksummed), asked for by k-anonymous bucket
        (PROTOCOL.md §6.5): the relay learns ``width`` hex digits of each address's bucket, not the
        address, so it cannot tell whom we are about to write to. An address without a log answers
        empty. A relay whose bucket is too large is asked again with a longer prefix (``on_longer`` is
        told the new width, to start with it next time); only a relay without the bucket route (older
        than issue 8) is asked by address.

        Raises:
            RelayUnavailable, RelayError
        """
        groups: dict[str, list[str]] = {}
        for a in dict.fromkeys(addresses):
            groups.setdefault(address_bucket(a)[:width], []).append(a)
        out: dict[str, LogAnswer] = {}
        for prefix, group in groups.items():
            out.update(self._bucket_logs(prefix, group, on_longer))
        return out

    def _bucket_logs(self, prefix: str, group: list[str], on_longer: Callable[[int], None] | None) -> dict[str, LogAnswer]:
        try:
            logs = self.identity_logs(prefix)
        except NotFound as exc:
            if exc.code != "not_found":
                raise
            log.warning("relay %s has no identity-bucket route; looking up %d address(es) by name", self.base_url, len(group))
            return {a: self.identity_log(a) for a in group}
        except RelayError as exc:
            if exc.code != "bucket_too_large" or len(prefix) >= BUCKET_PREFIX_MAX:
                raise
            if on_longer is not None:
                on_longer(len(prefix) + 1)
            return self.logs_by_bucket(group, len(prefix) + 1, on_longer=on_longer)
        # Only the logs asked about are read; the caller verifies each (and skips records for any other address).
        return {a: logs.get(a, LogAnswer([], [])) for a in group}

    def identity_bucket(self, prefix: str) -> dict[str, list[bytes]]:
        """Every identity log in the k-anonymous bucket ``prefix``: address → raw records (see :meth:`identity_logs`).

        Raises:
            RelayError: ``bucket_too_large`` (413): ask again with a longer prefix; ``bad_prefix`` (400).
        """
        return {address: answer.records for address, answer in self.identity_logs(prefix).items()}

    def publish_relay_list(self, iid: str, record: bytes) -> int:
        """``PUT /v1/relay-list/<iid>`` a signed relay list (:mod:`bridge.protocol.relaylist`); returns
        the version the relay now holds (a 200 for the very bytes already stored, 201 when stored).

        Raises:
            RelayError: ``stale_relay_list`` (409: the relay holds a newer version, or the same one with
                other bytes), ``unknown_installation`` (403), ``bad_signature``/``bad_cbor``/``bad_request`` (400);
                ``not_found`` (:class:`NotFound`) from a 1.0 relay.
        """
        data = self._call("PUT", f"/v1/relay-list/{quote(iid, safe='')}", body={"record": wire.b64e(record)})
        return self._int(data, "version")

    def upload_prekeys(self, iid: str, signed_upload: bytes) -> dict[str, int]:
        """PUT a signed :class:`~bridge.protocol.prekeys.PrekeyUpload`; returns the counts left."""
        data = self._call("PUT", f"/v1/prekeys/{quote(iid, safe='')}", body={"upload": wire.b64e(signed_upload)})
        return {"otpk": self._int(data, "otpk"), "pq_otpk": self._int(data, "pq_otpk")}

    def prekey_count(self, iid: str) -> dict[str, int]:
        data = self._call("GET", f"/v1/prekeys/{quote(iid, safe='')}/count")
        return {"otpk": self._int(data, "otpk"), "pq_otpk": self._int(data, "pq_otpk")}

    def claim(self, iid: str) -> bytes:
        """Claim a bundle (``Bundle.encode()`` bytes; the caller decodes and verifies it).

        Raises:
            NotFound: ``no_prekeys``.
        """
        data = self._call("POST", f"/v1/prekeys/{quote(iid, safe='')}/claim")
        try:
            return wire.b64d(data.get("bundle"))
        except WireError:
            raise self._bad("bundle is not base64") from None

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish an envelope (anonymous); returns its cursor."""
        return self.publish_envelope(topic, payload).cursor

    def publish_envelope(self, topic: str, payload: bytes) -> Published:
        """Publish an envelope (anonymous); returns its cursor and the log lengths the relay reports.

        Unknown answer fields are ignored, and so is a ``logs`` field that is not an object of
        address → non-negative integer (entries that are not are dropped): it is only a hint.
        """
        data = self._call("POST", "/v1/envelopes", body={"topic": topic, "payload": wire.b64e(payload)})
        cursor = self._int(data, "cursor")
        logs: dict[str, int] = {}
        raw = data.get("logs")
        if isinstance(raw, dict):
            for address, n in list(raw.items())[:MAX_PUBLISH_LOGS]:
                if isinstance(address, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                    logs[address] = n
        return Published(cursor, logs)

    def _logs_hint(self, raw: Any) -> dict[str, int]:
        logs: dict[str, int] = {}
        if isinstance(raw, dict):
            for address, n in list(raw.items())[:MAX_PUBLISH_LOGS]:
                if isinstance(address, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                    logs[address] = n
        return logs

    def publish_envelopes(self, items: Sequence[tuple[str, bytes]], *, batch: bool = True) -> tuple[list[Published], RelayError | None]:
        """Publish several envelopes in one request (``POST /v1/envelopes/batch``, 1.4), in order, at
        most :data:`MAX_PUBLISH_BATCH`. Returns the published prefix and, when the relay stopped at
        an envelope, its refusal (that envelope and the later ones were not stored).

        A relay without the route (before 1.4: 404 ``not_found``) is remembered, and this publishes
        the items one by one as :meth:`publish_envelope` does, stopping at the first refusal; so does
        ``batch=False`` (one message's few envelopes: the batch route is for a backlog).

        Raises:
            RelayUnavailable: the relay could not be reached (nothing is known to be stored), or its
                answer is malformed.
            RelayError: the relay refused the request as a whole.
        """
        if not items or len(items) > MAX_PUBLISH_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_PUBLISH_BATCH} envelopes")
        if batch and not self._no_batch:
            body = {"topics": [t for t, _ in items], "payloads": [wire.b64e(p) for _, p in items]}
            try:
                data = self._call("POST", "/v1/envelopes/batch", body=body)
            except NotFound as exc:
                if exc.code != "not_found":
                    raise
                self._no_batch = True  # a relay before 1.4
            else:
                return self._batch_answer(items, data)
        done: list[Published] = []
        for topic, payload in items:
            try:
                done.append(self.publish_envelope(topic, payload))
            except RelayUnavailable:
                if not done:
                    raise
                return done, None  # what went out went out; the rest is tried again later
            except RelayError as exc:
                return done, exc
        return done, None

    def _batch_answer(self, items: Sequence[tuple[str, bytes]], data: dict[str, Any]) -> tuple[list[Published], RelayError | None]:
        cursors, logs = data.get("cursors"), data.get("logs")
        if not isinstance(cursors, list) or len(cursors) > len(items) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cursors
        ):
            raise self._bad("cursors is not a list of at most one cursor per envelope")
        logs = logs if isinstance(logs, dict) else {}
        done = [Published(c, self._logs_hint(logs.get(items[i][0]))) for i, c in enumerate(cursors)]
        refused, error = data.get("refused"), None
        if len(done) < len(items):
            status = refused.get("status") if isinstance(refused, dict) else None
            if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
                raise self._bad("a batch stored only part of the envelopes and did not say why")
            # the relay's words reach logs and terminals: printable characters only, and not many
            code = "".join(ch if ch.isprintable() else "?" for ch in str(refused.get("code", "error"))[:64])
            message = "".join(ch if ch.isprintable() else "?" for ch in str(refused.get("message", ""))[:300])
            error = (NotFound if status == 404 else RelayError)(status, code, message, self.base_url)
        return done, error

    def authenticate(self, iid: str, signing_priv: bytes) -> str:
        """A bearer token for ``iid``'s inbox (cached; renewed a minute before it expires)."""
        with self._lock:
            cached = self._tokens.get(iid)
            if cached is not None and cached[1] - _TOKEN_MARGIN > time.time():
                return cached[0]
        ch = self._call("POST", "/v1/auth/challenge", body={"installation_id": iid})
        try:
            challenge = wire.b64d(ch.get("challenge"))
        except WireError:
            raise self._bad("challenge is not base64") from None
        signature = P.ed25519_sign(signing_priv, auth_message(iid, challenge))
        data = self._call(
            "POST",
            "/v1/auth/token",
            body={"installation_id": iid, "challenge": wire.b64e(challenge), "signature": wire.b64e(signature)},
        )
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise self._bad("token is not a string")
        expires = self._int(data, "expires_at")
        with self._lock:
            self._tokens[iid] = (token, float(expires))
        with _SHARED_LOCK:
            _SHARED_TOKENS[(self.base_url, iid)] = (token, float(expires))
        return token

    def forget_token(self, iid: str) -> None:
        """Drop a cached token (e.g. after a 401)."""
        with self._lock:
            self._tokens.pop(iid, None)
        with _SHARED_LOCK:
            _SHARED_TOKENS.pop((self.base_url, iid), None)

    def fetch(self, topic: str, after: int, limit: int = 100, *, token: str) -> list[Envelope]:
        """Envelopes of ``topic`` after cursor ``after`` (oldest first, at most ``limit``)."""
        data = self._call(
            "GET",
            f"/v1/envelopes/{quote(topic, safe='')}",
            params={"after": after, "limit": limit},
            headers={"Authorization": f"Bearer {token}"},
        )
        envs = data.get("envelopes")
        if not isinstance(envs, list):
            raise self._bad("envelopes is not a list")
        try:
            return [_envelope(topic, e) for e in envs]
        except WireError as exc:
            raise self._bad(str(exc)) from None

    def subscribe(self, topic: str, after: int, *, token: str) -> Subscription:
        """Open a WebSocket subscription (use as a context manager; iterate for envelopes)."""
        if self.base_url.startswith("https://"):
            ws_url = "wss://" + self.base_url[len("https://") :]
        elif self.base_url.startswith("http://"):
            ws_url = "ws://" + self.base_url[len("http://") :]
        else:
            raise RelayUnavailable(f"relay {self.base_url}: base URL must start with http:// or https://")
        return Subscription(ws_url + "/v1/subscribe", self.base_url, topic, after, token, self.timeout)
