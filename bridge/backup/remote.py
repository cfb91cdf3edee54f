"""Remote, incremental backups on the home relays (PROTOCOL.md §12.4; issue 15 item 4).

Each home relay keeps, in the backup space (vault) of the recovery key (PROTOCOL.md §7 "Backups"),
a chain of archives named ``seg-<n:08d>`` (purpose ``remote``, wrapped by the backup key): a **base**
segment that holds everything (``meta.base == meta.segment``), then **delta** segments ``base+1``,
``base+2``… that hold the records that changed or appeared since the previous segment and a
``forget`` record for each row that is gone. A restore takes the newest base and every later delta,
in order, and refuses a chain with a gap (bridge/backup/restore.py).

What was last uploaded is remembered locally, per ``record_key`` (``backup_index``: a digest of each
record), so a run exports the state, compares digests and uploads only the difference. The relays are
independent: each has its own chain numbering and its own state here (``backup_remote`` in the store's
meta table). A delta goes to a relay only when it holds exactly the state the digests describe and
its listing shows our last segment there, unchanged; any other relay (it was down, lost data, someone
else wrote to the vault, it never had a backup) gets a fresh base, numbered after everything it
lists, and then loses its older segments. A relay that cannot be reached is marked ``error`` and
tried again later; the others still get their segment. A chain is compacted (a new base) after
``MAX_DELTAS`` deltas, or when its deltas together outgrow its base (and ``COMPACT_FLOOR``).

The relay sees ciphertext, sizes and times. Remote backups carry attachment locators and keys, not
file bytes (the relay holding the encrypted blob serves it to the restored installation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets as _secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.home import Home
from bridge.protocol import wire
from bridge.store import Store, now_ms

__all__ = [
    "RemoteBackup",
    "RemoteBackupError",
    "RelayState",
    "RelayPlan",
    "Diff",
    "segment_name",
    "parse_segment_name",
    "record_digest",
    "diff_records",
    "Differ",
    "delta_records",
    "plan_relay",
    "MAX_DELTAS",
    "COMPACT_FLOOR",
    "MAX_DELTA_BYTES",
    "MAX_CHAIN",
]

log = logging.getLogger("parley.backup.remote")

#: A base after this many deltas.
MAX_DELTAS = 16
#: Compaction when the deltas together outgrow the base, but not before they reach this (small homes: every
#: MAX_DELTAS deltas).
COMPACT_FLOOR = 1024 * 1024
#: A delta whose changed records exceed this (encoded) is not kept in memory: a base is written instead.
MAX_DELTA_BYTES = 8 * 1024 * 1024
#: A restore refuses a chain longer than this (compaction keeps it at MAX_DELTAS + 1).
MAX_CHAIN = 1024
#: Where the state is kept (the store's meta table) and the digests table.
STATE_KEY = "backup_remote"
_SEGMENT = re.compile(r"seg-([0-9]{8})")
#: Records a delta may ``forget``, children before parents (a forget comes before its parent's). Any other
#: record that disappears (the standby, say) cannot be said in a delta: a base is written instead.
FORGETTABLE = ("attachment", "reaction", "message", "conversation", "consent")
#: Retry a relay in error after this many seconds at first, doubling up to the backup interval.
RETRY_FIRST_S = 5.0


@contextlib.contextmanager
def _home_lock(home: Home, name: str) -> Iterator[None]:
    """An exclusive lock across processes on ``<home>/.<name>.lock`` (flock; released on exit or death)."""
    import fcntl

    fd = os.open(home.path / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class RemoteBackupError(Exception):
    """Remote backup cannot run (no recovery key, no home relay): one line."""


def segment_name(n: int) -> str:
    return f"seg-{n:08d}"


def parse_segment_name(name: Any) -> int | None:
    """The number of a segment's object name, or None for any other name."""
    if not isinstance(name, str):
        return None
    m = _SEGMENT.fullmatch(name)
    return int(m.group(1)) if m else None


def record_digest(record: Any) -> bytes:
    """16 bytes identifying a record's content (canonical CBOR, SHA-256)."""
    return hashlib.sha256(wire.encode(record)).digest()[:16]


# --- the pure part: what changed, what goes where -------------------------------------------------


@dataclass
class Diff:
    """One pass over the exported records compared with the index of what was uploaded."""

    meta: list[Any] | None = None
    current: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (tag, digest)
    changed: list[Any] = field(default_factory=list)  # records new or different, in export order
    forgets: list[list[Any]] = field(default_factory=list)  # ["forget", {tag, key}] for rows gone
    changed_bytes: int = 0
    overflow: bool = False  # a base is needed: the changes outgrew MAX_DELTA_BYTES, or a record no forget can remove is gone
    standby: dict[str, Any] | None = None  # the standby record exported, if any (its public part goes in the status)

    @property
    def any(self) -> bool:
        return self.overflow or bool(self.changed) or bool(self.forgets)


class Differ:
    """:func:`diff_records`, one record at a time (so the same pass can also write a base archive)."""

    def __init__(self, index: dict[str, tuple[str, bytes]], key_of: Callable[[Any], str | None], *, max_delta_bytes: int = MAX_DELTA_BYTES) -> None:
        self.index = index
        self.key_of = key_of
        self.max = max_delta_bytes
        self.d = Diff()

    def add(self, record: Any) -> None:
        d = self.d
        tag = record[0]
        if tag == "meta" and d.meta is None:
            d.meta = record
        elif tag == "standby" and isinstance(record[1], dict):
            d.standby = record[1]
        key = self.key_of(record)
        if key is None:
            return
        digest = record_digest(record)
        d.current[key] = (tag, digest)
        if self.index.get(key, (None, None))[1] == digest or d.overflow:
            return
        size = len(wire.encode(record))
        if d.changed_bytes + size > self.max:
            d.overflow, d.changed = True, []
            return
        d.changed.append(record)
        d.changed_bytes += size

    def finish(self) -> Diff:
        d = self.d
        gone = [(tag, key) for key, (tag, _) in self.index.items() if key not in d.current]
        if any(tag not in FORGETTABLE for tag, _ in gone):
            d.overflow, d.changed = True, []  # e.g. the standby was removed: only a base can say it
        rank = {t: i for i, t in enumerate(FORGETTABLE)}
        gone.sort(key=lambda tk: (rank.get(tk[0], len(rank)), tk[1]))
        d.forgets = [["forget", {"tag": tag, "key": key}] for tag, key in gone if tag in FORGETTABLE]
        return d


def diff_records(
    records: Iterable[Any],
    index: dict[str, tuple[str, bytes]],
    key_of: Callable[[Any], str | None],
    *,
    max_delta_bytes: int = MAX_DELTA_BYTES,
) -> Diff:
    """Compare ``records`` (an export, in order) with ``index`` (key -> (tag, digest) last uploaded):
    the records new or different (in export order), ``forget`` records for keys gone (children before
    parents), and the new index. Records without a key (meta, end, file pieces) are not compared; the
    first ``meta`` is kept. Changes larger than ``max_delta_bytes`` set ``overflow`` (a base is due)."""
    differ = Differ(index, key_of, max_delta_bytes=max_delta_bytes)
    for record in records:
        differ.add(record)
    return differ.finish()


def delta_records(meta: list[Any], changed: Sequence[Any], forgets: Sequence[Any], *, segment: int, base: int) -> list[Any]:
    """A delta segment's records: meta (numbered), the changed records, the forgets, end."""
    m = dict(meta[1])
    m.update(segment=segment, base=base)
    body = [["meta", m], *changed, *forgets]
    return [*body, ["end", {"records": len(body)}]]


@dataclass
class RelayState:
    """What we know of one relay's chain (kept in the store's meta table)."""

    url: str
    base: int | None = None  # its current base segment
    last: int | None = None  # its newest segment (ours)
    last_size: int | None = None
    version: int = -1  # the index version it holds (-1: none)
    deltas: int = 0
    base_bytes: int = 0
    delta_bytes: int = 0
    state: str = "pending"  # ok | error | pending
    last_at: int | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, url: str, data: Any) -> "RelayState":
        rs = cls(url)
        if isinstance(data, dict):
            for k in ("base", "last", "last_size", "last_at"):
                v = data.get(k)
                setattr(rs, k, v if isinstance(v, int) and not isinstance(v, bool) else None)
            for k in ("version", "deltas", "base_bytes", "delta_bytes"):
                v = data.get(k)
                if isinstance(v, int) and not isinstance(v, bool):
                    setattr(rs, k, v)
            if data.get("state") in ("ok", "error", "pending"):
                rs.state = data["state"]
            if isinstance(data.get("error"), str):
                rs.error = data["error"]
        return rs

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("url")
        return out

    def public(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "last_at": self.last_at, "error": self.error}


@dataclass(frozen=True)
class RelayPlan:
    """What one run does on one relay."""

    delta: bool  # it holds the indexed state and our last segment: a delta (if anything changed) will do
    base_number: int  # the number a base would get there (after everything it lists)
    stale: tuple[int, ...]  # its segments older than its current base (deleted after the upload)
    reason: str  # why a base (or "in sync")


def plan_relay(listing: dict[int, int], rs: RelayState, version: int) -> RelayPlan:
    """Decide, from the relay's listing (segment number -> size) and what we recorded for it, whether a
    delta may follow its chain or it needs a fresh base. A delta never skips a segment: it goes only
    where our newest segment is the relay's newest too, with the size we uploaded, and every segment
    from its base up to it is listed."""
    top = max(listing, default=0)
    base_number = max(top, rs.last or 0) + 1
    if rs.last is None or rs.base is None:
        reason = "no backup there yet"
    elif rs.version != version:
        reason = "it missed a segment"
    elif top != rs.last or listing.get(rs.last) != rs.last_size:
        reason = "its segments are not the ones we uploaded"
    elif any(n not in listing for n in range(rs.base, rs.last + 1)):
        reason = "a segment is missing there"
    elif rs.deltas >= MAX_DELTAS or rs.delta_bytes > max(rs.base_bytes, COMPACT_FLOOR):
        reason = "compaction"
    else:
        stale = tuple(sorted(n for n in listing if n < rs.base))
        return RelayPlan(True, base_number, stale, "in sync")
    return RelayPlan(False, base_number, tuple(sorted(n for n in listing if n < base_number)), reason)


def _public_standby(rec: Any) -> dict[str, Any]:
    """What the status shows of a standby record: its installation id and when it was made."""
    if not isinstance(rec, dict):
        return {"installation_id": None, "created_at": None}
    iid, at = rec.get("installation_id"), rec.get("created_at")
    return {"installation_id": iid if isinstance(iid, str) else None, "created_at": at if isinstance(at, int) and not isinstance(at, bool) else None}


# --- the local index -------------------------------------------------------------------------------

_INDEX_SQL = "CREATE TABLE IF NOT EXISTS backup_index (key TEXT PRIMARY KEY, tag TEXT NOT NULL, digest BLOB NOT NULL)"


def _load_index(store: Store) -> dict[str, tuple[str, bytes]]:
    with store.write() as c:
        c.execute(_INDEX_SQL)
    return {r["key"]: (r["tag"], bytes(r["digest"])) for r in store.read("SELECT key, tag, digest FROM backup_index")}


def _save_index(c: Any, old: dict[str, tuple[str, bytes]], new: dict[str, tuple[str, bytes]]) -> None:
    c.execute(_INDEX_SQL)
    gone = [(k,) for k in old if k not in new]
    if gone:
        c.executemany("DELETE FROM backup_index WHERE key = ?", gone)
    rows = [(k, t, d) for k, (t, d) in new.items() if old.get(k) != (t, d)]
    if rows:
        c.executemany(
            "INSERT INTO backup_index(key, tag, digest) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET tag = excluded.tag, digest = excluded.digest",
            rows,
        )


def reset_local_state(store: Store) -> None:
    """Forget what was uploaded (a restored or new home): the next run writes bases everywhere."""
    with store.write() as c:
        c.execute(_INDEX_SQL)
        c.execute("DELETE FROM backup_index")
        c.execute("DELETE FROM meta WHERE key = ?", (STATE_KEY,))


# --- the backup ------------------------------------------------------------------------------------


Progress = Callable[[str, int, "int | None"], None]


class RemoteBackup:
    """Remote backup of one home (PROTOCOL.md §12.4).

    ``engine_or_relays``: the running Engine (its home relays and relay clients are used, so a change of
    home relays applies at the next run), or a sequence of relay URLs. ``client_factory`` (url -> an
    object with ``backup_list/put/get/delete``) replaces the relay clients, for tests.
    """

    def __init__(
        self,
        home: Home,
        store: Store,
        secrets: Any,
        engine_or_relays: Any,
        *,
        clock: Callable[[], int] = now_ms,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.secrets = secrets
        self.engine = None if isinstance(engine_or_relays, (list, tuple)) else engine_or_relays
        self._relays = tuple(engine_or_relays) if self.engine is None else ()
        self.clock = clock
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._fingerprint: Any = None

    # --- plumbing

    def relays(self) -> tuple[str, ...]:
        if self.engine is not None:
            return tuple(self.engine.home_relays)
        return self._relays

    def client(self, url: str) -> Any:
        if self._client_factory is not None:
            return self._client_factory(url)
        if self.engine is not None:
            return self.engine.client(url)
        from bridge.relay.client import RelayClient

        return RelayClient(url)

    def _load_state(self) -> dict[str, Any]:
        raw = self.store.get_meta(STATE_KEY)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _relay_states(self, data: dict[str, Any]) -> dict[str, RelayState]:
        saved = data.get("relays") if isinstance(data.get("relays"), dict) else {}
        return {url: RelayState.from_json(url, saved.get(url)) for url in self.relays()}

    def _save(self, c: Any, data: dict[str, Any], states: dict[str, RelayState]) -> None:
        data = dict(data)
        data["relays"] = {url: rs.to_json() for url, rs in states.items()}
        self.store.set_meta(c, STATE_KEY, json.dumps(data, sort_keys=True).encode())

    def enabled(self) -> bool:
        return bool(self.home.config().get("backup_remote"))

    def wake(self) -> None:
        """Run soon (the daemon's loop): remote backup was just enabled."""
        self._wake.set()

    # --- public API (contract §5)

    def status(self) -> dict[str, Any]:
        """The status JSON (``parley backup remote status --json``, RPC ``backup.status``)."""
        from bridge.backup import state

        data = self._load_state()
        states = self._relay_states(data)
        ks = state.key_state(self.store)
        best = max(
            (rs for rs in states.values() if rs.state == "ok" and rs.last is not None),
            key=lambda rs: (rs.version, rs.last_at or 0),
            default=None,
        )
        standby: dict[str, Any] = {"installation_id": None, "created_at": None}
        if self.secrets is not None:
            try:
                rec = state.load_standby(self.store, self.secrets)
            except Exception:  # noqa: BLE001 - status never fails on a sealed record it cannot read
                log.exception("cannot read the standby record")
                rec = None
            standby = _public_standby(rec)
        else:
            standby = _public_standby(data.get("standby"))
        return {
            "enabled": self.enabled(),
            "has_key": bool(ks.get("has_key")),
            "confirmed": bool(ks.get("confirmed")),
            "last_backup_at": data.get("last_backup_at") if isinstance(data.get("last_backup_at"), int) else None,
            "size": (best.base_bytes + best.delta_bytes) if best is not None else 0,
            "segments": (best.deltas + 1) if best is not None else 0,
            "relays": [rs.public() for rs in states.values()],
            "standby": standby,
        }

    def enable(self) -> str | None:
        """Turn remote backup on; returns a new recovery key when none existed (shown once, never stored),
        else None. Creates the standby installation when ``backup_standby`` is on and the engine is here
        (a failure there is logged: the daemon tries again)."""
        from bridge.backup import state

        key = None
        if state.backup_keys(self.store, self.secrets) is None:
            key = state.create_recovery_key(self.store, self.secrets)
        self.home.update_config(backup_remote=True)
        try:
            self.ensure_standby()
        except Exception as exc:  # noqa: BLE001 - the backup itself does not depend on it
            log.warning("standby installation not created yet: %s", exc)
        self.wake()
        return key

    def disable(self) -> None:
        """Turn remote backup off (what the relays hold stays until their retention ends)."""
        self.home.update_config(backup_remote=False)

    def ensure_standby(self) -> dict[str, Any] | None:
        """Create and save the standby installation if the settings want one and none exists."""
        from bridge.backup import state

        if self.engine is None or not self.home.config().get("backup_standby", True):
            return None
        if self.home.identity().get("wallet") == "browser":
            return None  # the wallet key is in the browser: no statement can be signed here
        # One standby per home: `parley backup remote on` and the daemon's loop may both get here at
        # once (two processes), and creating one takes network round trips. A lock file serialises
        # them; the second finds the first one's record.
        with _home_lock(self.home, "standby"):
            if state.load_standby(self.store, self.secrets) is not None:
                return None
            keys = state.backup_keys(self.store, self.secrets)
            if keys is None:
                return None
            from bridge.backup import standby

            record = standby.create_standby(self.engine, keys)
            state.save_standby(self.store, self.secrets, record)
            return dict(record)

    def run_once(self, progress: Progress | None = None) -> dict[str, Any]:
        """One backup pass to every home relay; returns the status.

        Raises:
            RemoteBackupError: no recovery key, or no home relay.
        """
        with self._lock:
            self._run(progress or (lambda stage, done, total: None))
        return self.status()

    def _run(self, progress: Progress) -> None:
        from bridge.backup import state

        keys = state.backup_keys(self.store, self.secrets)
        if keys is None:
            raise RemoteBackupError("no recovery key yet: run `parley backup remote on` (or `parley backup export`) first")
        relays = self.relays()
        if not relays:
            raise RemoteBackupError("no home relay to back up to")
        data = self._load_state()
        version = data.get("version") if isinstance(data.get("version"), int) else 0
        states = self._relay_states(data)
        index = _load_index(self.store)
        now = self.clock()
        # 1. what each relay holds
        plans: dict[str, RelayPlan] = {}
        for url in relays:
            rs = states[url]
            try:
                listing = self._listing(url, keys.auth_private)
            except Exception as exc:  # noqa: BLE001 - one relay down must not stop the others
                self._failed(rs, exc)
                continue
            plans[url] = plan_relay(listing, rs, version)
        if not plans:
            with self.store.write() as c:
                self._save(c, data, states)
            return
        need_base = [u for u, p in plans.items() if not p.delta]
        # 2. export once: digests, the changed records, and (if a relay needs one) a base
        diff, base = self._export(keys, index, need_base, plans, progress)
        if diff.overflow and base is None:
            need_base = list(plans)
            diff, base = self._export(keys, index, need_base, plans, progress)
        new_version = version + 1 if diff.any else version
        took = False
        try:
            for url, plan in plans.items():
                rs = states[url]
                client = self.client(url)
                try:
                    if url in need_base and base is not None:
                        path, number, size = base
                        progress(f"uploading the backup to {url}", 0, size)
                        with open(path, "rb") as fh:
                            client.backup_put(keys.auth_private, segment_name(number), fh, size)
                        progress(f"uploading the backup to {url}", size, size)
                        rs.base = rs.last = number
                        rs.last_size, rs.base_bytes, rs.delta_bytes, rs.deltas = size, size, 0, 0
                        rs.version = new_version
                        stale = [n for n in plan.stale if n < number]
                    elif url in need_base:
                        raise RemoteBackupError("no base segment was written")  # unreachable: _export writes one
                    elif diff.any:
                        if diff.meta is None or rs.last is None or rs.base is None:
                            raise RemoteBackupError("the export has no meta record")
                        number = rs.last + 1
                        blob = self._archive(keys, delta_records(diff.meta, diff.changed, diff.forgets, segment=number, base=rs.base))
                        progress(f"uploading changes to {url}", 0, len(blob))
                        client.backup_put(keys.auth_private, segment_name(number), blob, len(blob))
                        progress(f"uploading changes to {url}", len(blob), len(blob))
                        rs.last, rs.last_size = number, len(blob)
                        rs.deltas += 1
                        rs.delta_bytes += len(blob)
                        rs.version = new_version
                        stale = list(plan.stale)
                    else:
                        stale = list(plan.stale)
                except Exception as exc:  # noqa: BLE001
                    self._failed(rs, exc)
                    continue
                took = took or rs.version == new_version
                rs.state, rs.error, rs.last_at = "ok", None, now
                for n in stale:  # older chains: not needed any more (a failure is retried next run)
                    with contextlib.suppress(Exception):
                        client.backup_delete(keys.auth_private, segment_name(n))
        finally:
            if base is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(base[0])
        data["standby"] = _public_standby(diff.standby)
        with self.store.write() as c:
            if took:
                _save_index(c, index, diff.current)
                data["version"] = new_version
                data["last_backup_at"] = now
            self._save(c, data, states)

    def _failed(self, rs: RelayState, exc: BaseException) -> None:
        rs.state = "error"
        rs.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.warning("remote backup on %s: %s", rs.url, rs.error)

    def _listing(self, url: str, auth_private: bytes) -> dict[int, int]:
        objects = self.client(url).backup_list(auth_private)
        out: dict[int, int] = {}
        for o in objects or []:
            n = parse_segment_name(o.get("name")) if isinstance(o, dict) else None
            size = o.get("size") if isinstance(o, dict) else None
            if n is not None and isinstance(size, int) and not isinstance(size, bool):
                out[n] = size
        return out

    def _archive(self, keys: Any, records: Iterable[Any]) -> bytes:
        import io

        from bridge.backup import archive

        address = self.home.identity()["address"]
        buf = io.BytesIO()
        archive.write_archive(buf, records, wrapping_key=keys.backup_key, backup_id=keys.backup_id(address), purpose="remote")
        return buf.getvalue()

    def _export(
        self, keys: Any, index: dict[str, tuple[str, bytes]], need_base: list[str], plans: dict[str, RelayPlan], progress: Progress
    ) -> tuple[Diff, tuple[str, int, int] | None]:
        """One pass over the export: the diff against ``index`` and, when a relay needs a base, the base
        archive in a temporary file (the digests come from the very records written to it)."""
        from bridge.backup import archive, snapshot

        address = self.home.identity()["address"]
        number = max((plans[u].base_number for u in need_base), default=0)
        extra = {"segment": number, "base": number} if need_base else {}
        seen = [0]

        def records() -> Iterator[Any]:
            for record in snapshot.export_records(self.home, self.store, self.secrets, purpose="remote", include_files=False, meta_extra=extra):
                seen[0] += 1
                if seen[0] % 1000 == 0:
                    progress("exporting", seen[0], None)
                yield record

        if not need_base:
            return diff_records(records(), index, snapshot.record_key), None
        differ = Differ(index, snapshot.record_key)

        def tee() -> Iterator[Any]:
            for record in records():
                differ.add(record)
                yield record

        path = str(self.home.path / f".backup-{_secrets.token_hex(6)}.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                info = archive.write_archive(fh, tee(), wrapping_key=keys.backup_key, backup_id=keys.backup_id(address), purpose="remote")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return differ.finish(), (path, number, int(info["bytes"]))

    # --- the daemon's loop

    def fingerprint(self) -> tuple[Any, ...]:
        """Cheap: has anything that goes into a backup possibly changed? (the files' sizes and times)."""
        out: list[Any] = []
        for p in (self.home.db_file, self.home.db_file.with_name(self.home.db_file.name + "-wal"), self.home.config_file, self.home.contacts_file):
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def run(self, stop: threading.Event, *, tick: float = 2.0) -> None:
        """The daemon's loop: while ``backup_remote`` is on, back up at once when it is turned on (and
        when the daemon starts), then when something changed, at most every ``backup_interval_minutes``.
        A relay in error is retried sooner: after RETRY_FIRST_S, doubling up to the interval."""
        import time

        was_enabled = False
        next_at = 0.0
        retry = 0.0
        while not stop.is_set():
            try:
                cfg = self.home.config()
                enabled = bool(cfg.get("backup_remote"))
                interval = float(cfg.get("backup_interval_minutes") or 15) * 60
            except Exception:  # noqa: BLE001 - config.json being rewritten by hand: next tick
                log.exception("reading the backup settings")
                enabled, interval = was_enabled, 900.0
            woken = self._wake.is_set()
            self._wake.clear()
            now = time.monotonic()
            if enabled and (woken or not was_enabled or now >= next_at):
                failing = self._failing()
                if woken or not was_enabled or failing or self.fingerprint() != self._fingerprint:
                    try:
                        with contextlib.suppress(Exception):
                            self.ensure_standby()
                        self.run_once()
                        failing = self._failing()
                    except RemoteBackupError as exc:
                        log.warning("remote backup: %s", exc)
                        failing = False
                    except Exception:  # noqa: BLE001 - never let the thread die
                        log.exception("remote backup failed")
                        failing = True
                    self._fingerprint = self.fingerprint()  # our own state write is not a change
                    retry = min(interval, retry * 2 or RETRY_FIRST_S) if failing else 0.0
                    next_at = time.monotonic() + (retry if failing else interval)
            was_enabled = enabled
            self._wake.wait(tick)

    def _failing(self) -> bool:
        """Some home relay is not up to date (error, or never reached)."""
        return any(rs.state != "ok" for rs in self._relay_states(self._load_state()).values())
