"""This installation's prekeys (PROTOCOL.md §4): made, uploaded, topped up, rotated and deleted.

* **One-time prekeys** (X25519 and ML-KEM) are kept between a low-water mark and a target on the
  relay. Anonymous claims drain them, so the relay's count is checked periodically (the daemon,
  :attr:`PrekeyPolicy.check_seconds`), after a first message was accepted, and at registration.
* **The signed X25519 prekey and the last-resort ML-KEM prekey** are replaced every
  :attr:`PrekeyPolicy.rotate_ms` (PQXDH §3.2: "at some interval"). A replaced key is *retired*,
  not deleted: its private half is kept for :attr:`PrekeyPolicy.grace_ms` so first messages made
  with a bundle claimed before the rotation still open, and then deleted (forward secrecy). A
  first message naming a deleted key is refused (``SessionError``), never a crash.
* **One-time private keys the relay handed out** to claimers who never wrote are not kept for
  ever: a relay hands one-time keys out lowest id first (PROTOCOL.md §4), so after each count the
  uploaded keys below the newest ``left`` are marked handed out (``retired_at``) and deleted after the
  same grace period; beyond :attr:`PrekeyPolicy.max_handed_out` of a kind, the oldest go at once. A
  drain can then grow the store by at most that many keys, however often the daemon refills.
* Private halves are committed to the store **before** the upload; a key counts as published only
  once an upload carrying it succeeded (``uploaded``), so a rotation whose upload failed is sent
  again on the next check instead of leaving the relay with a key we are about to delete.

Time comes from :attr:`Prekeys.clock` (unix ms), injectable for tests.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.crypto import SessionError
from bridge.crypto import primitives as P
from bridge.home import HomeError
from bridge.keys import Secrets
from bridge.protocol import prekeys as PK
from bridge.relay.client import NotFound, RelayClient, RelayError, RelayUnavailable
from bridge.store import Store, now_ms

log = logging.getLogger("parley.prekeys")

__all__ = [
    "OTPK_TARGET",
    "PQ_OTPK_TARGET",
    "OTPK_LOW",
    "PQ_OTPK_LOW",
    "ROTATE_MS",
    "GRACE_MS",
    "CHECK_SECONDS",
    "MAX_HANDED_OUT",
    "BadPrekeySetting",
    "PrekeyPolicy",
    "Prekeys",
]

#: Keep this many one-time prekeys of each kind on the relay.
OTPK_TARGET = 50
PQ_OTPK_TARGET = 20
#: Replenish when fewer than this many are left.
OTPK_LOW = 20
PQ_OTPK_LOW = 8
_DAY_MS = 86_400_000
#: Replace the signed prekey and the last-resort ML-KEM prekey this often (a week).
ROTATE_MS = 7 * _DAY_MS
#: Keep a replaced key's private half this long (30 days: the relay's default envelope retention,
#: so a first message still waiting on the relay when its key was replaced opens).
GRACE_MS = 30 * _DAY_MS
#: How often the daemon asks the relay how many one-time prekeys are left.
CHECK_SECONDS = 60.0
#: Keep at most this many handed-out, unused one-time private keys of each kind (oldest deleted first).
MAX_HANDED_OUT = 500
#: The kinds that are rotated (one current key each), as opposed to used once.
ROTATED = (PK.SPK, PK.PQ_LRPK)
ONE_TIME = (PK.OTPK, PK.PQ_OTPK)


class BadPrekeySetting(HomeError, ValueError):
    """A prekey setting in config.json is not a positive number (a HomeError: the CLI shows it as a usage error)."""


def _positive(cfg: Mapping[str, Any], name: str, default: float) -> float:
    value = cfg.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BadPrekeySetting(f"setting {name} must be a positive number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrekeyPolicy:
    rotate_ms: int = ROTATE_MS
    grace_ms: int = GRACE_MS
    check_seconds: float = CHECK_SECONDS
    max_handed_out: int = MAX_HANDED_OUT

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "PrekeyPolicy":
        """From the home's settings ``prekey_rotation_days``, ``prekey_grace_days``, ``prekey_check_seconds``.

        Raises:
            BadPrekeySetting: a value that is not a positive number.
        """
        return cls(
            rotate_ms=int(_positive(cfg, "prekey_rotation_days", ROTATE_MS / _DAY_MS) * _DAY_MS),
            grace_ms=int(_positive(cfg, "prekey_grace_days", GRACE_MS / _DAY_MS) * _DAY_MS),
            check_seconds=_positive(cfg, "prekey_check_seconds", CHECK_SECONDS),
        )


class Prekeys:
    """One installation's prekeys in its store and on its relay."""

    def __init__(
        self,
        store: Store,
        secrets: Secrets,
        installation_id: str,
        relay: Callable[[], RelayClient],
        *,
        policy: PrekeyPolicy | None = None,
        clock: Callable[[], int] = now_ms,
        secondaries: Callable[[], dict[str, RelayClient]] | None = None,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.installation_id = installation_id
        self._relay = relay
        #: Our other home relays (url -> client): they hold the signed and last-resort prekeys only.
        self._secondaries = secondaries or (lambda: {})
        self.policy = policy or PrekeyPolicy()
        self.clock = clock
        # Two threads of one process (the daemon's check, a first message) must not both top up.
        self._lock = threading.Lock()

    # --- private halves -------------------------------------------------------------------

    def _aad(self, kind: str, pid: int) -> bytes:
        return f"prekey/{kind}/{pid}".encode()

    def new(self, c: sqlite3.Connection, kind: str, count: int) -> list[tuple[int, bytes, bytes]]:
        """Make ``count`` key pairs of ``kind``, store them (private half sealed); returns ``(id, priv, pub)``."""
        # Ids come from a counter that never goes backwards: a used (deleted) one-time prekey's id is
        # never reused, and the relay refuses ids it has already handed out.
        key = f"next_prekey_id/{kind}"
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        start = int(row[0]) if row else (c.execute("SELECT MAX(id) FROM prekeys WHERE kind = ?", (kind,)).fetchone()[0] or 0) + 1
        self.store.set_meta(c, key, str(start + max(count, 0)).encode())
        now = self.clock()
        out = []
        for pid in range(start, start + count):
            if kind in (PK.PQ_OTPK, PK.PQ_LRPK):
                priv, pub = P.mlkem768_keypair()
            else:
                priv, pub = P.x25519_keypair()
            c.execute(
                "INSERT INTO prekeys(kind, id, private, public, created_at) VALUES (?, ?, ?, ?, ?)",
                (kind, pid, P.aes256_gcm_encrypt(self.secrets.storage_key, priv, self._aad(kind, pid)), pub, now),
            )
            out.append((pid, priv, pub))
        return out

    def adopt(self, c: sqlite3.Connection, kind: str, pid: int, private: bytes, public: bytes, created_at: int) -> None:
        """Store a key pair made elsewhere as an uploaded key of ours (private half sealed): the standby
        installation's prekeys, rebuilt from its backup record to drain its inbox (bridge/backup/standby.py)."""
        c.execute(
            "INSERT OR REPLACE INTO prekeys(kind, id, private, public, created_at, uploaded) VALUES (?, ?, ?, ?, ?, 1)",
            (kind, pid, P.aes256_gcm_encrypt(self.secrets.storage_key, private, self._aad(kind, pid)), public, created_at),
        )

    def private(self, c: sqlite3.Connection, kind: str, pid: int | None) -> bytes:
        """The private half of our prekey ``kind``/``pid`` (a retired signed prekey too, until deleted).

        Raises:
            SessionError: no such key: never ours, a one-time key already used, or a retired key
                whose grace period is over.
        """
        row = c.execute("SELECT private FROM prekeys WHERE kind = ? AND id = ?", (kind, pid)).fetchone()
        if row is None or pid is None:
            raise SessionError(f"unknown or already used prekey {kind}/{pid}")
        return P.aes256_gcm_decrypt(self.secrets.storage_key, bytes(row["private"]), self._aad(kind, pid))

    # --- rotation and deletion --------------------------------------------------------------

    def delete_expired(self, c: sqlite3.Connection, now: int) -> int:
        """Delete retired and handed-out keys whose grace period is over. Returns how many."""
        cur = c.execute("DELETE FROM prekeys WHERE retired_at IS NOT NULL AND retired_at <= ?", (now - self.policy.grace_ms,))
        return cur.rowcount

    def _note_handed_out(self, c: sqlite3.Connection, kind: str, left: int, now: int) -> None:
        """Mark the uploaded one-time keys of ``kind`` the relay no longer holds; keep at most
        ``max_handed_out`` of them (the relay holds the newest ``left``: it hands out lowest id first)."""
        c.execute(
            "UPDATE prekeys SET retired_at = ?, public = x'' WHERE kind = ? AND uploaded = 1 AND retired_at IS NULL "
            "AND id NOT IN (SELECT id FROM prekeys WHERE kind = ? AND uploaded = 1 AND retired_at IS NULL ORDER BY id DESC LIMIT ?)",
            (now, kind, kind, left),
        )
        c.execute(
            "DELETE FROM prekeys WHERE kind = ? AND retired_at IS NOT NULL "
            "AND id NOT IN (SELECT id FROM prekeys WHERE kind = ? AND retired_at IS NOT NULL ORDER BY id DESC LIMIT ?)",
            (kind, kind, self.policy.max_handed_out),
        )

    def _current(self, c: sqlite3.Connection, kind: str, now: int) -> tuple[int, bytes, bool]:
        """The current key of a rotated kind, made or rotated if needed: ``(id, pub, needs_upload)``."""
        rows = c.execute(
            "SELECT id, public, created_at, uploaded FROM prekeys WHERE kind = ? AND retired_at IS NULL ORDER BY id DESC", (kind,)
        ).fetchall()
        for extra in rows[1:]:  # a database from before rotation existed: only the newest is current
            c.execute("UPDATE prekeys SET retired_at = ? WHERE kind = ? AND id = ?", (now, kind, extra["id"]))
        if rows and now - rows[0]["created_at"] < self.policy.rotate_ms:
            return rows[0]["id"], bytes(rows[0]["public"]), not rows[0]["uploaded"]
        if rows:
            c.execute("UPDATE prekeys SET retired_at = ? WHERE kind = ? AND id = ?", (now, kind, rows[0]["id"]))
        pid, _, pub = self.new(c, kind, 1)[0]
        return pid, pub, True

    # --- the check ------------------------------------------------------------------------------

    def ensure(self) -> bool:
        """Rotate what is due, delete what is expired, top up one-time keys, upload. True if uploaded.

        Raises:
            RelayUnavailable, RelayError: the relay could not be asked or refused the upload (what
                was made locally is uploaded by the next call).
        """
        with self._lock:
            with self.store.write() as c:  # forward secrecy does not wait for the relay
                self.delete_expired(c, self.clock())
            try:
                return self._ensure_primary()
            finally:
                self._ensure_secondaries()

    def _ensure_secondaries(self) -> None:
        """Give every other home relay our current signed and last-resort prekeys, without one-time keys
        (PROTOCOL.md §4: one-time keys live on the primary only, so no key is handed out twice), so a
        sender can start a session while the primary is down. Failures are logged; the next check
        tries again."""
        relays = self._secondaries()
        if not relays:
            return
        with self.store.write() as c:
            now = self.clock()
            spk_id, spk_pub, _ = self._current(c, PK.SPK, now)
            lrpk_id, lrpk_pub, _ = self._current(c, PK.PQ_LRPK, now)
        mark = f"{spk_id}:{lrpk_id}".encode()
        sk = self.secrets.signing_key
        for url, relay in relays.items():
            key = f"prekeys_on:{url}"
            if self.store.get_meta(key) == mark:
                continue
            upload = PK.PrekeyUpload(
                installation_id=self.installation_id,
                issued_at=now // 1000,
                spk=PK.sign_prekey(sk, PK.SPK, spk_id, spk_pub),
                otpks=(),
                pq_otpks=(),
                pq_lrpk=PK.sign_prekey(sk, PK.PQ_LRPK, lrpk_id, lrpk_pub),
            )
            try:
                relay.upload_prekeys(self.installation_id, upload.sign(sk))
            except (RelayUnavailable, RelayError) as exc:
                log.warning("could not upload our signed prekeys to %s: %s", url, exc)
                continue
            with self.store.write() as c:
                c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, mark))

    def _ensure_primary(self) -> bool:
        relay = self._relay()
        try:
            counts = relay.prekey_count(self.installation_id)
        except NotFound:
            counts = {"otpk": 0, "pq_otpk": 0}
        # The relay's numbers are untrusted: a negative count must not make us mint keys without bound.
        otpk_left, pq_left = max(int(counts.get("otpk", 0)), 0), max(int(counts.get("pq_otpk", 0)), 0)
        with self.store.write() as c:
            now = self.clock()
            self._note_handed_out(c, PK.OTPK, otpk_left, now)
            self._note_handed_out(c, PK.PQ_OTPK, pq_left, now)
            spk_id, spk_pub, spk_new = self._current(c, PK.SPK, now)
            lrpk_id, lrpk_pub, lrpk_new = self._current(c, PK.PQ_LRPK, now)
            otpks = self.new(c, PK.OTPK, OTPK_TARGET - otpk_left) if otpk_left < OTPK_LOW else []
            pq = self.new(c, PK.PQ_OTPK, PQ_OTPK_TARGET - pq_left) if pq_left < PQ_OTPK_LOW else []
        if not (spk_new or lrpk_new or otpks or pq):
            return False
        sk = self.secrets.signing_key
        upload = PK.PrekeyUpload(
            installation_id=self.installation_id,
            issued_at=now // 1000,
            spk=PK.sign_prekey(sk, PK.SPK, spk_id, spk_pub),
            otpks=tuple(PK.OneTimePrekey(pid, pub) for pid, _, pub in otpks),
            pq_otpks=tuple(PK.sign_prekey(sk, PK.PQ_OTPK, pid, pub) for pid, _, pub in pq),
            pq_lrpk=PK.sign_prekey(sk, PK.PQ_LRPK, lrpk_id, lrpk_pub),
        )
        relay.upload_prekeys(self.installation_id, upload.sign(sk))
        sent = [(PK.SPK, spk_id), (PK.PQ_LRPK, lrpk_id)]
        sent += [(PK.OTPK, pid) for pid, _, _ in otpks] + [(PK.PQ_OTPK, pid) for pid, _, _ in pq]
        with self.store.write() as c:
            c.executemany("UPDATE prekeys SET uploaded = 1 WHERE kind = ? AND id = ?", sent)
        return True
