"""The name cache: answers from name services, kept with the time they were fetched (docs/PROTOCOL.md "Names").

One small SQLite file (``names.db`` in the home, mode 0600), shared safely by the daemon and CLI
commands. Only positive answers are stored; an entry older than the TTL is refreshed from its source,
and returned marked stale only when the source cannot answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from bridge.identity import IdentityError, checksum_address
from bridge.resolve.sources import Candidate

__all__ = ["NameCache", "NameCacheError"]


class NameCacheError(Exception):
    """The name cache was used in a way it cannot serve (a file operation on the in-memory cache)."""


class NameCache:
    def __init__(self, path: Path | None) -> None:
        """``path`` None: an in-memory cache for this process only."""
        self.path = path
        self._mem: dict[str, tuple[list[Candidate], float]] = {}

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            raise NameCacheError("an in-memory name cache has no database file")
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        c = sqlite3.connect(self.path, timeout=10)
        c.execute("CREATE TABLE IF NOT EXISTS names (key TEXT PRIMARY KEY, candidates TEXT NOT NULL, fetched_at REAL NOT NULL)")
        return c

    def get(self, key: str) -> tuple[list[Candidate], float] | None:
        """The candidates stored for ``key`` and when they were fetched (unix seconds), or None."""
        if self.path is None:
            return self._mem.get(key)
        try:
            c = self._connect()
            try:
                row = c.execute("SELECT candidates, fetched_at FROM names WHERE key = ?", (key,)).fetchone()
            finally:
                c.close()
        except sqlite3.Error:
            return None  # a broken cache is an empty cache
        if row is None:
            return None
        try:
            cands = [Candidate(checksum_address(a), str(r)) for a, r in json.loads(row[0])]
        except (ValueError, TypeError, IdentityError):
            return None
        return cands, float(row[1])

    def put(self, key: str, candidates: list[Candidate], fetched_at: float) -> None:
        if self.path is None:
            self._mem[key] = (list(candidates), fetched_at)
            return
        data = json.dumps([[c.address, c.role] for c in candidates])
        try:
            c = self._connect()
            try:
                with c:
                    c.execute(
                        "INSERT INTO names VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET candidates = excluded.candidates, "
                        "fetched_at = excluded.fetched_at",
                        (key, data, fetched_at),
                    )
            finally:
                c.close()
        except sqlite3.Error:
            pass  # caching is best effort
