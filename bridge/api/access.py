"""Who may use the local API: the paired extension, and the user's own browser on the inbox page.

Three checks guard ``ws://127.0.0.1:PORT/v1/rpc`` (DESIGN.md "Local API"):

1. ``Origin`` is ``chrome-extension://<id>`` for an id in the ``extension_ids`` setting (default:
   ours, fixed by the manifest ``key``; a store-signed build has the store's id), or
   ``moz-extension://<uuid>`` of Firefox (a UUID per install, so it cannot be listed in advance):
   admitted when an active token is pinned to it, or while a pairing code is live (then it can only
   pair);
2. ``Host`` is ``127.0.0.1:PORT`` or ``localhost:PORT`` (defeats DNS rebinding);
3. the first call presents a pairing token (or pairs with a one-time code shown by ``parley pair``).

Origin pinning: a token is bound to the ``Origin`` of the connection that paired (``api_tokens.origin``)
and only ever authenticates a connection with that same origin. So a Firefox install's origin is
pinned by the user's own pairing (the code typed into its popup); another extension, or the same one
reinstalled under a new UUID, must pair again with a new code, and gets a token of its own (listed by
``parley pair --list``, revoked separately). Tokens from before pinning (``origin`` NULL) keep working
for Chrome origins only.

Pairing codes and API tokens live in the bridge database, so the CLI can create them whether or not
the daemon runs. Only SHA-256 hashes of secrets are stored.

The bridge's own pages (the inbox ``/`` and the wallet sign-in page ``/signin``) use
:class:`PageSessions`, held in the daemon's memory: a one-time link carries its token in the URL
fragment (never sent to a server, never in a log or a Referer), the page's script trades it for a
session secret kept in ``sessionStorage`` (scoped to ``http://127.0.0.1:PORT``, port included) and
sends it as a header with every request. No cookie is set, so nothing reaches other local ports.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.store import Store, now_ms

__all__ = [
    "EXTENSION_ID",
    "AccessError",
    "Access",
    "ApiToken",
    "PAIR_CODE_TTL_MS",
    "LOGIN_TTL_MS",
    "SESSION_TTL_MS",
    "PageSession",
    "PageSessions",
    "SCOPES",
    "normalise_code",
    "BRIDGE_PROOF_CONTEXT",
    "BridgeKey",
    "bridge_proof_message",
    "pair_proof",
    "origin_allowed",
    "firefox_origin",
    "chrome_ids",
    "host_allowed",
]

#: The extension's id: SHA-256 of the public key in extension/manifest.json, first 32 hex digits as a–p.
#: tests/test_api.py re-derives it from the manifest.
EXTENSION_ID = "cjhgnfckfielldaiipkgieemaigbpmoe"

PAIR_CODE_TTL_MS = 10 * 60 * 1000
LOGIN_TTL_MS = 2 * 60 * 1000
SESSION_TTL_MS = 12 * 3600 * 1000
#: Wrong pairing codes allowed per minute (all clients together) before pairing is refused for a while.
PAIR_ATTEMPTS_PER_MINUTE = 5
#: A code dies after this many wrong guesses made while it was valid.
PAIR_GUESSES_PER_CODE = 5

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
_ID_RE = re.compile(r"[a-p]{32}")
#: Firefox's extension origins: ``moz-extension://`` and a random v4 UUID, lower case, per install.
_MOZ_RE = re.compile(r"moz-extension://[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Seconds between the ``last_used`` writes of one authenticated connection.
TOUCH_EVERY_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_pair_codes (
    code_hash   BLOB PRIMARY KEY,
    expires_at  INTEGER NOT NULL,
    wrong       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_pair_failures (
    at          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_used   INTEGER,
    revoked     INTEGER NOT NULL DEFAULT 0,
    origin      TEXT
);
DROP TABLE IF EXISTS web_logins;
DROP TABLE IF EXISTS web_sessions;
"""

#: What a page session may do: read and write the inbox, or sign the bridge in with a browser wallet.
SCOPES = ("inbox", "signin")
#: At most this many live page sessions and unused links each (the oldest is dropped).
MAX_PAGE_SESSIONS = 64


class AccessError(Exception):
    """A refused credential. ``reason`` is logged; the client only learns the public message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    created_at: int
    last_used: int | None
    revoked: bool
    #: The Origin the token was paired from and is bound to (None: paired before pinning, Chrome only).
    origin: str | None = None


#: Domain separation for the bridge's proof of identity on the local API (docs/PROTOCOL.md §8.1).
BRIDGE_PROOF_CONTEXT = b"parley local-api v1 bridge proof"
BRIDGE_KEY_FILE = "local_api_key"
CHALLENGE_BYTES = 32


def bridge_proof_message(challenge: bytes, origin: str, host: str) -> bytes:
    """What the bridge signs: ``context ‖ 0x00 ‖ origin ‖ 0x00 ‖ host ‖ 0x00 ‖ challenge`` (UTF-8).

    ``origin`` is the connection's ``Origin`` (``chrome-extension://<id>`` or ``moz-extension://<uuid>``) and ``host`` its ``Host``
    (``127.0.0.1:PORT``), so a proof made for one extension or port is worthless on another."""
    if len(challenge) != CHALLENGE_BYTES:
        raise AccessError("the challenge must be 32 bytes", "bad challenge length")
    return b"\0".join((BRIDGE_PROOF_CONTEXT, origin.encode(), host.encode(), challenge))


class BridgeKey:
    """The bridge's Ed25519 key for the local API (issue 8 item 9: port squatting).

    Kept in ``<home>/local_api_key`` (0600, the raw 32-byte seed), created on first use. The extension
    learns the public key when it pairs; on every connect it sends a fresh challenge and sends its
    token only once the bridge has signed :func:`bridge_proof_message` with this key."""

    def __init__(self, private: bytes) -> None:
        from bridge.crypto import primitives

        if len(private) != 32:
            raise AccessError("the local API key must be 32 bytes", "bad local API key file")
        self._private = private
        self.public = primitives.ed25519_public(private)

    @classmethod
    def load_or_create(cls, home_dir: Path) -> "BridgeKey":
        from bridge.crypto import primitives
        from bridge.home import write_private

        path = home_dir / BRIDGE_KEY_FILE
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            private, _ = primitives.ed25519_keypair()
            try:
                write_private(path, private, exclusive=True)
            except FileExistsError:  # another process created it first: use theirs
                pass
            return cls(path.read_bytes())

    def prove(self, challenge: bytes, origin: str, host: str) -> bytes:
        from bridge.crypto import primitives

        return primitives.ed25519_sign(self._private, bridge_proof_message(challenge, origin, host))


PAIR_PROOF_CONTEXT = b"parley local-api v1 pairing"


def pair_proof(code_hash: bytes, side: str, transcript: bytes) -> bytes:
    """HMAC-SHA256 keyed with SHA-256(normalised code) over ``context ‖ 0x00 ‖ side ‖ 0x00 ‖ transcript``
    (``side``: ``client`` or ``bridge``; ``transcript`` = the hello challenge ‖ the bridge's public key).
    Each side shows it knows the code without sending it: a stand-in on the port learns no code and
    cannot answer the extension's pairing."""
    return hmac.new(code_hash, b"\0".join((PAIR_PROOF_CONTEXT, side.encode(), transcript)), hashlib.sha256).digest()


def _h(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def normalise_code(code: str) -> str:
    """Upper-case, drop spaces and dashes: 'k7qf-m2xp' and 'K7QF M2XP' are the same code."""
    return re.sub(r"[\s-]", "", code).upper()


def chrome_ids(config: dict[str, Any], env: Any = None) -> tuple[str, ...]:
    """The Chrome extension ids allowed on the local API: ``PARLEY_EXTENSION_IDS`` (comma-separated)
    if set, else the ``extension_ids`` setting, else ours. Malformed entries are dropped. Listing ids
    replaces ours: a store-signed build's users need not trust the unpacked one (whose ``key``, and
    so whose id, anyone can copy)."""
    import os

    env = os.environ if env is None else env
    raw = env.get("PARLEY_EXTENSION_IDS")
    listed: Any = [x.strip() for x in raw.split(",")] if raw is not None else config.get("extension_ids", [EXTENSION_ID])
    if not isinstance(listed, (list, tuple)):
        return ()
    return tuple(x for x in listed if isinstance(x, str) and _ID_RE.fullmatch(x))


def origin_allowed(origin: str | None, extra_ids: list[str] | tuple[str, ...] = ()) -> bool:
    """A Chrome origin of an allowed id (``extra_ids``: the allowed ids; empty: ours)."""
    if not origin or not origin.startswith("chrome-extension://"):
        return False
    ext = origin[len("chrome-extension://"):]
    return bool(_ID_RE.fullmatch(ext)) and ext in (extra_ids or (EXTENSION_ID,))


def firefox_origin(origin: str | None) -> bool:
    """True for a well-formed ``moz-extension://<uuid>`` (which one is decided by pinning)."""
    return bool(origin) and bool(_MOZ_RE.fullmatch(origin or ""))


def host_allowed(host: str | None, port: int) -> bool:
    return host in (f"127.0.0.1:{port}", f"localhost:{port}")


class Access:
    """Pairing codes, API tokens and inbox sessions over the bridge database."""

    def __init__(self, store: Store, *, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        #: Milliseconds since the epoch; injectable so tests can let a minute pass.
        self.clock = clock
        conn = store._conn()
        conn.executescript(_SCHEMA)
        if "origin" not in {r[1] for r in conn.execute("PRAGMA table_info(api_tokens)")}:
            with store.write() as c:  # a database from before origin pinning
                c.execute("ALTER TABLE api_tokens ADD COLUMN origin TEXT")

    # --- pairing ---------------------------------------------------------------

    def new_pair_code(self) -> str:
        """A one-time code like ``K7QF-M2XP`` (40 bits), valid for 10 minutes."""
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        with self.store.write() as c:
            c.execute("DELETE FROM api_pair_codes WHERE expires_at < ?", (now_ms(),))
            c.execute("INSERT INTO api_pair_codes(code_hash, expires_at) VALUES (?, ?)", (_h(raw), now_ms() + PAIR_CODE_TTL_MS))
        return f"{raw[:4]}-{raw[4:]}"

    def pairing_open(self) -> bool:
        """True while a pairing code is live (an unpinned Firefox origin may then connect to pair)."""
        return bool(self.store.read("SELECT 1 FROM api_pair_codes WHERE expires_at >= ? LIMIT 1", (self.clock(),)))

    def pinned(self, origin: str) -> bool:
        """True when an active token is bound to ``origin``."""
        return bool(self.store.read("SELECT 1 FROM api_tokens WHERE origin = ? AND revoked = 0 LIMIT 1", (origin,)))

    def pair(self, code: Any, name: Any, origin: str | None = None) -> tuple[str, str]:
        """Trade a valid code for a new API token. Returns (token, token_id).

        Raises:
            AccessError: wrong, expired or used code, or too many wrong codes lately.
        """
        if not isinstance(code, str) or not 4 <= len(code) <= 32:
            raise AccessError("a pairing code is required", "malformed pairing code")
        code_hash = _h(normalise_code(code))

        def lookup(c: Any, now: int) -> bytes | None:
            row = c.execute("SELECT expires_at FROM api_pair_codes WHERE code_hash = ?", (code_hash,)).fetchone()
            return code_hash if row is not None and row["expires_at"] >= now else None

        token, token_id, _ = self._pair(lookup, name, origin)
        return token, token_id

    def pair_with_proof(self, proof: bytes, transcript: bytes, name: Any, origin: str | None = None) -> tuple[str, str, bytes]:
        """Pair without the code crossing the socket (docs/PROTOCOL.md §8.1): ``proof`` must be
        :func:`pair_proof` ``(code_hash, "client", transcript)`` for a live code. Returns (token,
        token_id, the bridge's answering proof).

        Raises:
            AccessError: no live code gives this proof, or too many wrong codes lately.
        """

        def lookup(c: Any, now: int) -> bytes | None:
            for row in c.execute("SELECT code_hash FROM api_pair_codes WHERE expires_at >= ?", (now,)).fetchall():
                if hmac.compare_digest(pair_proof(bytes(row["code_hash"]), "client", transcript), proof):
                    return bytes(row["code_hash"])
            return None

        token, token_id, code_hash = self._pair(lookup, name, origin)
        return token, token_id, pair_proof(code_hash, "bridge", transcript)

    def _pair(self, lookup: Callable[[Any, int], bytes | None], name: Any, origin: str | None) -> tuple[str, str, bytes]:
        """The limiter is kept in the database and checked, the code looked up and a failure recorded
        in one ``BEGIN IMMEDIATE`` transaction, so concurrent guesses from several threads or processes
        (the daemon, CLI commands) cannot together exceed ``PAIR_ATTEMPTS_PER_MINUTE``. The new token
        is bound to ``origin`` (see the module's "Origin pinning") and counts as used now."""
        label = name.strip()[:80] if isinstance(name, str) and name.strip() else "browser extension"
        token, token_id = secrets.token_urlsafe(32), secrets.token_hex(6)
        outcome, code_hash = "paired", b""
        with self.store.write() as c:
            now = self.clock()
            c.execute("DELETE FROM api_pair_failures WHERE at < ?", (now - 60_000,))
            recent = c.execute("SELECT COUNT(*) FROM api_pair_failures WHERE at >= ?", (now - 60_000,)).fetchone()[0]
            found = None if recent >= PAIR_ATTEMPTS_PER_MINUTE else lookup(c, now)
            if recent >= PAIR_ATTEMPTS_PER_MINUTE:
                outcome = "limited"
            elif found is None:
                # Every live code absorbs the wrong guess; after a few it dies.
                c.execute("INSERT INTO api_pair_failures(at) VALUES (?)", (now,))
                c.execute("UPDATE api_pair_codes SET wrong = wrong + 1")
                c.execute("DELETE FROM api_pair_codes WHERE wrong >= ? OR expires_at < ?", (PAIR_GUESSES_PER_CODE, now))
                outcome = "wrong"
            else:
                code_hash = found
                c.execute("DELETE FROM api_pair_codes WHERE code_hash = ?", (code_hash,))
                c.execute(
                    "INSERT INTO api_tokens(id, token_hash, name, created_at, last_used, origin) VALUES (?, ?, ?, ?, ?, ?)",
                    (token_id, _h(token), label, now, now, origin),
                )
        if outcome == "limited":
            raise AccessError("too many wrong pairing codes; wait a minute", "pairing rate limit")
        if outcome == "wrong":
            raise AccessError("wrong or expired pairing code", "wrong pairing code")
        return token, token_id, code_hash

    def check_token(self, token: Any, origin: str | None = None) -> str:
        """Return the token id of a valid, unrevoked token bound to ``origin`` (the connection's).
        A token from before pinning (no origin) is accepted from Chrome origins only.

        Raises:
            AccessError
        """
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            raise AccessError("invalid token", "malformed token")
        with self.store.write() as c:
            row = c.execute("SELECT id, revoked, origin FROM api_tokens WHERE token_hash = ?", (_h(token),)).fetchone()
            if row is None or row["revoked"]:
                raise AccessError("invalid token", "unknown or revoked token")
            bound = row["origin"]
            if bound is not None and bound != origin or bound is None and firefox_origin(origin):
                raise AccessError("invalid token", f"token {row['id']} is pinned to another origin")
            c.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (self.clock(), row["id"]))
            return str(row["id"])

    def touch(self, token_id: str) -> None:
        """Record that ``token_id`` was used now (an authenticated connection's calls, throttled)."""
        with self.store.write() as c:
            c.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (self.clock(), token_id))

    def token_valid(self, token_id: str) -> bool:
        rows = self.store.read("SELECT revoked FROM api_tokens WHERE id = ?", (token_id,))
        return bool(rows) and not rows[0]["revoked"]

    def tokens(self) -> list[ApiToken]:
        rows = self.store.read("SELECT * FROM api_tokens ORDER BY created_at")
        return [ApiToken(r["id"], r["name"], r["created_at"], r["last_used"], bool(r["revoked"]), r["origin"]) for r in rows]

    def revoke(self, token_id: str) -> bool:
        with self.store.write() as c:
            return c.execute("UPDATE api_tokens SET revoked = 1 WHERE id = ? AND revoked = 0", (token_id,)).rowcount == 1

    @staticmethod
    def csrf_ok(expected: str | None, supplied: Any) -> bool:
        return bool(expected) and isinstance(supplied, str) and hmac.compare_digest(expected.encode(), supplied.encode())


@dataclass(frozen=True)
class PageSession:
    scope: str
    csrf: str
    expires_at: float


class PageSessions:
    """One-time page links and the sessions they open, in memory (thread-safe).

    A link token is single use and lives :data:`LOGIN_TTL_MS`; a session lives :data:`SESSION_TTL_MS`.
    Only SHA-256 hashes of tokens and session secrets are kept.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._links: dict[bytes, tuple[str, float]] = {}
        self._sessions: dict[bytes, PageSession] = {}
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        for table in (self._links, self._sessions):
            for key in [k for k, v in table.items() if (v[1] if isinstance(v, tuple) else v.expires_at) < now]:
                del table[key]
            while len(table) >= MAX_PAGE_SESSIONS:
                del table[next(iter(table))]

    def new_link(self, scope: str) -> str:
        """A one-time token for a page link of ``scope`` (``inbox`` or ``signin``)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown page scope {scope!r}")
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            self._prune(now)
            self._links[_h(token)] = (scope, now + LOGIN_TTL_MS / 1000)
        return token

    def open(self, token: Any) -> tuple[str, str, str]:
        """Consume a link token; returns (session secret, csrf token, scope).

        Raises:
            AccessError: malformed, unknown, used or expired token.
        """
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            raise AccessError("this link is invalid, used or expired", "malformed page token")
        with self._lock:
            now = self.clock()
            entry = self._links.pop(_h(token), None)
            if entry is None or entry[1] < now:
                raise AccessError("this link is invalid, used or expired", "bad page token")
            self._prune(now)
            session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            self._sessions[_h(session)] = PageSession(entry[0], csrf, now + SESSION_TTL_MS / 1000)
        return session, csrf, entry[0]

    def get(self, session: Any, scope: str) -> PageSession | None:
        """The live session of ``scope`` with this secret, or None."""
        if not isinstance(session, str) or not 20 <= len(session) <= 100:
            return None
        with self._lock:
            found = self._sessions.get(_h(session))
        if found is None or found.scope != scope or found.expires_at < self.clock():
            return None
        return found
