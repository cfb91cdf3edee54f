"""Restore into an empty home with nothing but the recovery key (PROTOCOL.md §12.6; issue 15 item 5).

:func:`restore_home` is the one way a home is made from a backup: ``parley restore`` (from the vault
on a relay, :func:`vault_segments`, or from an export file, :func:`file_segments`) and ``parley transfer
receive`` into an empty home (the records of a transfer archive) both call it.

Order, so that nothing is half-changed:

1. Everything is imported into a temporary home *inside* the target directory (``.restore-…``, 0700):
   every archive authenticated to its last chunk, every segment's ``meta`` checked (its number is its
   name, its base is the chain's, the header's backup id is the one of ``meta.address`` under the
   recovery key), the wallet key (generated or imported wallets) checked against the address. Any
   failure removes the temporary home: the target is left as it was (empty, or absent).
2. Only then are the new installation keys sealed with the passphrase, a fresh statement signed by the
   wallet, and the files moved into the home, ``keys.json`` and ``identity.json`` last.
3. Then the network: registration on the backup's home relays, the standby's inbox drained and the
   standby rotated, the lost installation(s) revoked if the user agrees. A failure there is reported
   in the summary; the home stays usable (``parley run`` registers, the user can revoke later).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as _secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from bridge.home import Home, write_private

__all__ = [
    "RestoreError",
    "NoBackup",
    "restore_home",
    "vault_segments",
    "file_segments",
    "check_empty_home",
]

log = logging.getLogger("parley.backup.restore")

#: Bytes of a segment downloaded at most (the relay's own limit per object is 64 MiB).
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


class RestoreError(Exception):
    """The restore was refused or failed; the home is as it was. One line; ``code``: the CLI's exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class NoBackup(RestoreError):
    """No backup for this recovery key where we looked."""


Progress = Callable[[str, int, "int | None"], None]


def _quiet(stage: str, done: int, total: int | None) -> None:
    return None


def check_empty_home(home: Home) -> None:
    """Raises RestoreError (exit 2) unless the home directory is absent or empty."""
    if home.keys_file.exists() or home.identity_file.exists() or home.db_file.exists():
        raise RestoreError(f"{home.path} already holds an installation; restore needs an empty home (pass a new --home)", 2)
    if home.path.exists():
        if not home.path.is_dir():
            raise RestoreError(f"{home.path} is not a directory", 2)
        left = [p.name for p in home.path.iterdir() if not p.name.startswith(".restore-")]
        if left:
            raise RestoreError(f"{home.path} is not empty ({', '.join(sorted(left)[:3])}…); restore needs an empty home (pass a new --home)", 2)


# --- where the records come from ------------------------------------------------------------------


class _Segment:
    """One downloaded archive (a temporary file) and what its name says it is."""

    def __init__(self, path: Path, number: int | None, base: int | None, label: str) -> None:
        self.path = path
        self.number = number
        self.base = base
        self.label = label


def _open(path: Path, key: bytes, purposes: Sequence[str], label: str) -> tuple[IO[bytes], Any]:
    from bridge.backup import archive

    fh = open(path, "rb")
    try:
        return fh, archive.open_archive(fh, key, purposes=purposes)
    except archive.WrongKey:
        fh.close()
        raise
    except archive.ArchiveError as exc:
        fh.close()
        raise RestoreError(f"{label}: {exc}") from None
    except BaseException:
        fh.close()
        raise


def _first_meta(path: Path, key: bytes, label: str) -> dict[str, Any]:
    """The authenticated meta record of a downloaded segment (the first chunk is enough)."""
    from bridge.backup import archive

    fh, reader = _open(path, key, ("remote",), label)
    try:
        first = next(iter(reader.records()), None)
    except archive.ArchiveError as exc:
        raise RestoreError(f"{label}: {exc}") from None
    finally:
        fh.close()
    if not (isinstance(first, list) and len(first) == 2 and first[0] == "meta" and isinstance(first[1], dict)):
        raise RestoreError(f"{label} does not start with a meta record")
    return first[1]


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def vault_segments(client: Any, keys: Any, url: str, directory: Path, progress: Progress = _quiet) -> list[_Segment]:
    """Download the newest chain (its base and every later delta) of the vault on the relay at ``url`` into
    ``directory`` and check it is whole: the newest segment names its base, every segment from the base
    to the newest is listed and downloaded.

    Raises:
        NoBackup: the vault is empty or unknown there.
        RestoreError: the chain has a gap, a segment is not what its name says, the listing is absurd.
        WrongKey: the newest segment does not open with the key.
        RelayUnavailable, RelayError: the relay.
    """
    from bridge.backup import archive
    from bridge.backup.remote import MAX_CHAIN, parse_segment_name, segment_name
    from bridge.relay.client import NotFound

    try:
        objects = client.backup_list(keys.auth_private)
    except NotFound:
        objects = []
    listed: dict[int, int] = {}
    for o in objects if isinstance(objects, list) else []:
        n = parse_segment_name(o.get("name")) if isinstance(o, dict) else None
        if n is not None:
            listed[n] = _int(o.get("size")) or 0
    if not listed:
        raise NoBackup(f"no backup for this recovery key on {url}")
    newest = max(listed)

    def fetch(n: int) -> Path:
        name = segment_name(n)
        path = directory / f"{name}.part"
        size = listed.get(n) or 0
        if size > MAX_SEGMENT_BYTES:
            raise RestoreError(f"{name} on {url} is {size} bytes, more than a segment may be")
        progress(f"downloading {name}", 0, size or None)
        with open(path, "wb") as out:
            try:
                got = client.backup_get(keys.auth_private, name, out)
            except NotFound:
                raise RestoreError(f"{name} is listed on {url} but missing there: the backup there is incomplete") from None
            if isinstance(got, (bytes, bytearray)):
                out.write(got)
        done = path.stat().st_size
        if done > MAX_SEGMENT_BYTES:
            raise RestoreError(f"{name} on {url} is larger than a segment may be")
        progress(f"downloading {name}", done, size or done)
        return path

    top = fetch(newest)
    try:
        meta = _first_meta(top, keys.backup_key, segment_name(newest))
    except archive.WrongKey:
        raise RestoreError(f"{segment_name(newest)} on {url} does not open with this recovery key") from None
    seg, base = _int(meta.get("segment")), _int(meta.get("base"))
    if seg != newest:
        raise RestoreError(f"{segment_name(newest)} on {url} says it is segment {seg}: the relay renamed or replayed a segment")
    if base is None or base > newest:
        raise RestoreError(f"{segment_name(newest)} on {url} names no valid base segment")
    if newest - base + 1 > MAX_CHAIN:
        raise RestoreError(f"the backup on {url} has {newest - base + 1} segments in a row; at most {MAX_CHAIN} are accepted")
    missing = [n for n in range(base, newest) if n not in listed]
    if missing:
        raise RestoreError(f"{segment_name(missing[0])} is missing on {url}: the backup there is incomplete")
    out = [_Segment(fetch(n), n, base, segment_name(n)) for n in range(base, newest)]
    out.append(_Segment(top, newest, base, segment_name(newest)))
    return out


def file_segments(path: Path) -> list[_Segment]:
    """An export archive (or a base segment saved as a file): one segment, no numbering."""
    return [_Segment(path, None, None, str(path))]


def segment_records(segments: Sequence[_Segment], keys: Any, purposes: Sequence[str], progress: Progress = _quiet) -> Callable[[], Iterator[Iterator[Any]]]:
    """A records factory for :func:`restore_home`: each segment opened in turn (authenticated as it is
    read), its meta checked against its name, its chain and the recovery key."""
    from bridge.backup import archive

    applied: list[int] = []

    def one(seg: _Segment) -> Iterator[Any]:
        if seg.number is not None:  # a chain is applied base first, then each delta once, in order
            if seg.number != (applied[-1] + 1 if applied else seg.base):
                raise RestoreError(f"{seg.label} would be applied out of order (after {applied[-1] if applied else 'nothing'})")
            applied.append(seg.number)
        try:
            fh, reader = _open(seg.path, keys.backup_key, purposes, seg.label)
        except archive.WrongKey:
            if seg.number is None or seg.number == segments[-1].number:
                raise
            raise RestoreError(f"{seg.label} does not open with this recovery key: the relay served another backup's segment") from None
        total = seg.path.stat().st_size
        try:
            first = True
            for record in reader.records(on_progress=lambda n: progress(f"reading {seg.label}", n, total)):
                if first:
                    _check_segment_meta(record, seg, reader.header, keys)
                    first = False
                yield record
            if first:
                raise RestoreError(f"{seg.label} holds no record")
        except archive.ArchiveError as exc:
            raise RestoreError(f"{seg.label}: {exc}") from None
        finally:
            fh.close()

    return lambda: (one(seg) for seg in segments)


def _check_segment_meta(record: Any, seg: _Segment, header: Any, keys: Any) -> None:
    from bridge import identity

    if not (isinstance(record, list) and len(record) == 2 and record[0] == "meta" and isinstance(record[1], dict)):
        raise RestoreError(f"{seg.label} does not start with a meta record")
    meta = record[1]
    if seg.number is not None:
        if _int(meta.get("segment")) != seg.number:
            raise RestoreError(f"{seg.label} says it is segment {meta.get('segment')!r}: the relay renamed or replayed a segment")
        if _int(meta.get("base")) != seg.base:
            raise RestoreError(f"{seg.label} belongs to the chain of base {meta.get('base')!r}, not {seg.base}: segments of different backups were mixed")
    elif header.purpose == "remote" and _int(meta.get("segment")) != _int(meta.get("base")):
        raise RestoreError(f"{seg.label} is a remote delta, not a whole backup")
    try:
        address = identity.checksum_address(meta.get("address"))
    except (identity.IdentityError, TypeError, AttributeError):
        raise RestoreError(f"{seg.label}: meta names no valid address") from None
    if keys is not None and header.backup_id != keys.backup_id(address):
        raise RestoreError(f"{seg.label} is not the backup of {address} under this recovery key (backup id mismatch)")


# --- the restore -----------------------------------------------------------------------------------


class _Seen:
    """What restore_home needs from the records as they pass into the import: meta, wallet, standby, relays."""

    def __init__(self) -> None:
        self.metas: list[dict[str, Any]] = []
        self.wallet_key: bytes | None = None
        self.standby: dict[str, Any] | None = None
        self.settings: dict[str, Any] = {}
        self.address: str | None = None

    def watch(self, records: Iterable[Any]) -> Iterator[Any]:
        from bridge import identity

        first = True
        for record in records:
            if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], str)):
                raise RestoreError("the backup holds a malformed record")
            tag, body = record
            if first:
                if tag != "meta" or not isinstance(body, dict):
                    raise RestoreError("the backup does not start with a meta record")
                try:
                    address = identity.checksum_address(body.get("address"))
                except (identity.IdentityError, TypeError, AttributeError):
                    raise RestoreError("the backup's meta names no valid address") from None
                if self.address is not None and address != self.address:
                    raise RestoreError(f"the backup mixes two wallets ({self.address} and {address})")
                self.address = address
                self.metas.append(body)
                first = False
            elif tag == "wallet" and isinstance(body, dict):
                key = body.get("key")
                if not isinstance(key, bytes) or len(key) != 32:
                    raise RestoreError("the backup's wallet key is malformed")
                self.wallet_key = key
            elif tag == "standby":
                self.standby = body if isinstance(body, dict) else None
            elif tag == "forget" and isinstance(body, dict) and body.get("tag") == "standby":
                self.standby = None
            elif tag == "settings" and isinstance(body, dict):
                self.settings.update(body)
            yield record


def _is_record(obj: Any) -> bool:
    return isinstance(obj, (list, tuple)) and len(obj) == 2 and isinstance(obj[0], str)


def _streams(factory: Callable[[], Any]) -> Iterator[Iterable[Any]]:
    """``factory()`` gives either one archive's records, or (remote chains) an iterable of archives'
    records. Yields one iterable of records per archive."""
    it = iter(factory())
    try:
        head = next(it)
    except StopIteration:
        return
    if _is_record(head):
        def single() -> Iterator[Any]:
            yield head
            yield from it

        yield single()
        return
    yield head
    yield from it


def restore_home(
    home: Home,
    records_iter_factory: Callable[[], Any],
    *,
    passphrase: str,
    relays: Sequence[str],
    backup_keys: Any = None,
    revoke_lost: bool | None = None,
    progress: Progress | None = None,
    recovery_key: str | None = None,
    confirm: Callable[[list[str]], bool] | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Make an empty ``home`` from a backup (module docstring for the order of things).

    ``records_iter_factory()``: one archive's records (a transfer, an export), or an iterable of record
    iterables (a remote chain: base then deltas, applied in order with ``replace=True``); every iterator
    raises at the first problem and is only trusted once exhausted. ``relays``: where to register when
    the backup names no home relay (e.g. the relay the backup was found on). ``backup_keys``: check the
    archives' backup id against meta.address (None for a transfer). ``recovery_key``: adopted by the new
    home (its future backups use it) and remote backup is turned on. ``revoke_lost``: True/False decide;
    None asks ``confirm(installation ids)`` (no ``confirm``: keep).

    Returns the summary ``{address, installation_id, wallet, messages, conversations, contacts,
    segments, registered, relays, drained, standby, lost, revoked, kept, notes}``.

    Raises:
        RestoreError: refused or failed before the home was written (the home is as it was).
    """
    from bridge import identity, keys as K
    from bridge.backup import snapshot, state
    from bridge.engine import contents
    from bridge.store import Store

    progress = progress or _quiet
    check_empty_home(home)
    if recovery_key is not None and backup_keys is None:
        from bridge.backup import recovery

        backup_keys = recovery.derive(recovery.parse(recovery_key))
    existed = home.path.exists()
    home.create()
    tmp = home.path / f".restore-{_secrets.token_hex(6)}"
    tmp.mkdir(mode=0o700)
    moved: list[Path] = []
    seen = _Seen()
    try:
        fresh = K.generate_secrets()  # the new installation; the wallet key is replaced by the backup's
        tmp_home = Home(tmp)
        store = Store(tmp_home.db_file)
        try:
            segments = 0
            for stream in _streams(records_iter_factory):
                segments += 1
                snapshot.import_records(
                    tmp_home, store, fresh, seen.watch(stream), replace=True, expect_address=seen.address,
                    progress=lambda n, label=f"importing part {segments}": progress(label, n, None),
                )
            if not seen.metas or seen.address is None:
                raise RestoreError("the backup holds nothing to restore")
            meta = seen.metas[-1]
            address = seen.address
            kind = meta.get("wallet") if meta.get("wallet") in ("generated", "imported", "browser") else "generated"
            if kind == "browser":
                wallet_key = fresh.wallet_key  # this installation's own key until `parley signin`
            else:
                if seen.wallet_key is None:
                    raise RestoreError("the backup holds no wallet key (it says the wallet was " + kind + ")")
                wallet_key = seen.wallet_key
            secrets = K.Secrets(wallet_key=wallet_key, signing_key=fresh.signing_key, identity_key=fresh.identity_key, storage_key=fresh.storage_key)
            if kind != "browser" and secrets.address != address:
                raise RestoreError(f"the backup's wallet key is not the key of {address}")
            own_address = secrets.address
            cfg = tmp_home.config()
            statement = identity.authorize_statement(
                own_address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub, chain_id=int(cfg.get("chain_id") or 1)
            )
            signed = identity.sign_statement(statement, secrets.wallet_key)
            counts = {
                "messages": store.read(f"SELECT COUNT(*) AS n FROM messages WHERE kind IN {contents.DISPLAYABLE_SQL}")[0]["n"],
                "conversations": store.read("SELECT COUNT(*) AS n FROM conversations")[0]["n"],
            }
            # attachments imported with files were written under the temporary home: point at the real one
            prefix = str(tmp) + os.sep
            with store.write() as c:
                for table in ("attachments", "uploads"):
                    c.execute(
                        f"UPDATE {table} SET path = ? || substr(path, ?) WHERE substr(path, 1, ?) = ?",
                        (str(home.path) + os.sep, len(prefix) + 1, len(prefix), prefix),
                    )
            from bridge.backup.remote import reset_local_state

            reset_local_state(store)
            if recovery_key is not None:
                state.adopt_recovery_key(store, secrets, recovery_key)
            store.read("PRAGMA wal_checkpoint(TRUNCATE)")  # one file to move
        finally:
            store.close()
        # settings: the backup's home relays, else where it was found; remote backup on with the key
        from bridge.homerelays import relay_config, set_home_relays

        if not relay_config(tmp_home).home and relays:
            set_home_relays(tmp_home, relays, insecure=insecure)
        tmp_home.update_config(embedded_relay=False, **({"backup_remote": True} if recovery_key is not None else {}))
        K.save_keyfile(tmp_home.keys_file, secrets, passphrase)
        ident: dict[str, Any] = {
            "version": 1,
            "address": own_address,
            "did": identity.did(own_address),
            "installation_id": secrets.installation_id,
            "signing_pub": secrets.signing_pub.hex(),
            "identity_pub": secrets.identity_pub.hex(),
            "record": signed.to_record().hex(),
        }
        if kind != "browser":
            ident["wallet"] = kind
        write_private(tmp_home.identity_file, json.dumps(ident, indent=2).encode() + b"\n")
        # 2. into place: everything but the keys and identity first
        last = {"keys.json", "identity.json"}
        names = sorted(p.name for p in tmp.iterdir() if p.name not in last) + ["keys.json", "identity.json"]
        for name in names:
            target = home.path / name
            if target.exists():
                raise RestoreError(f"{target} appeared during the restore; nothing was changed")
            os.replace(tmp / name, target)
            moved.append(target)
    except BaseException:
        for target in reversed(moved):
            with contextlib.suppress(OSError):
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
        if not existed:
            with contextlib.suppress(OSError):
                home.path.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(home.path)
    summary: dict[str, Any] = {
        "address": address,
        "installation_id": secrets.installation_id,
        "wallet": kind,
        **counts,
        "segments": segments,
        "registered": False,
        "relays": [],
        "drained": 0,
        "standby": None,
        "lost": [],
        "revoked": [],
        "kept": [],
        "notes": [],
    }
    _after(home, secrets, ident, seen, meta, kind, revoke_lost, confirm, backup_keys, summary, progress)
    return summary


def _after(
    home: Home, secrets: Any, ident: dict[str, Any], seen: _Seen, meta: dict[str, Any], kind: str,
    revoke_lost: bool | None, confirm: Callable[[list[str]], bool] | None, backup_keys: Any, summary: dict[str, Any], progress: Progress,
) -> None:
    """3. The network part: register, drain and rotate the standby, revoke the lost installation(s)."""
    from bridge import identity
    from bridge.engine import Engine
    from bridge.homerelays import relay_config
    from bridge.identity.smart import verifier_from_config
    from bridge.relay.client import RelayError, RelayUnavailable
    from bridge.store import Store

    notes: list[str] = summary["notes"]
    rc = relay_config(home)
    summary["relays"] = list(rc.home)
    if not rc.home:
        notes.append("no home relay recorded: `parley run` embeds one and registers there")
        return
    store = Store(home.db_file)
    engine = Engine(
        store, secrets, ident, rc.home[0], verifier=verifier_from_config(home.config()),
        home_relays=rc.home, directory_relays=rc.directory, reading_relays=rc.reading(),
    )
    try:
        try:
            engine.register()
            summary["registered"] = True
            with store.write() as c:  # as `parley init` marks it (bridge/cli.py _mark_registered)
                store.set_meta(c, "registered_on", json.dumps([list(engine.home_relays), list(engine.directory_relays), engine.address]).encode())
        except (RelayUnavailable, RelayError) as exc:
            notes.append(f"not registered yet ({exc}); `parley run` or `parley sync` will register")
        standby_ids: set[str] = set()
        if seen.standby is not None:
            from bridge.backup import standby, state

            old_iid = seen.standby.get("installation_id")
            if isinstance(old_iid, str):
                standby_ids.add(old_iid)
            try:
                drained = standby.drain_standby(home, store, secrets, seen.standby, rc.home, progress=lambda done, *_: progress("draining the standby", done, None))
                summary["drained"] = int(drained.get("messages", 0))
            except Exception as exc:  # noqa: BLE001 - the history is restored; the standby is extra
                notes.append(f"the standby's inbox could not be drained: {exc}")
            else:
                if kind != "browser" and backup_keys is not None and home.config().get("backup_standby", True):
                    try:
                        new = standby.rotate_standby(engine, backup_keys, seen.standby)
                        state.save_standby(store, secrets, new)
                        from bridge.backup.remote import STATE_KEY, _public_standby

                        with store.write() as c:  # what `parley backup remote status` shows before the first run
                            store.set_meta(c, STATE_KEY, json.dumps({"standby": _public_standby(new)}).encode())
                        summary["standby"] = new.get("installation_id")
                        standby_ids.add(str(new.get("installation_id")))
                    except Exception as exc:  # noqa: BLE001
                        notes.append(f"the standby was not rotated ({exc}); the next backup run creates one")
        # the lost installation(s): the one that made the backup, and any other active one of the wallet
        records: list[bytes] = []
        for url in rc.home:
            with contextlib.suppress(RelayUnavailable, RelayError):
                records += [r for r in engine.client(url).identity(seen.address) if r not in records]
        active = identity.installations(seen.address, records, verifier=engine.verifier) if records else {}
        lost_iid = meta.get("installation_id")
        lost = [iid for iid in active if iid != secrets.installation_id and iid not in standby_ids]
        lost.sort(key=lambda iid: (iid != lost_iid, iid))
        summary["lost"] = lost
        if not lost:
            return
        if kind == "browser":
            summary["kept"] = lost
            notes.append("revoke the lost installation on the sign-in page after `parley signin` (your browser wallet signs it)")
            return
        decide = revoke_lost if revoke_lost is not None else (confirm(lost) if confirm is not None else False)
        if not decide:
            summary["kept"] = lost
            return
        for iid in lost:
            try:
                signed = identity.sign_statement(identity.revoke_statement(seen.address, iid), secrets.wallet_key)
                engine.publish_record(seen.address, signed.to_record())
                summary["revoked"].append(iid)
            except (RelayUnavailable, RelayError, identity.IdentityError) as exc:
                summary["kept"].append(iid)
                notes.append(f"{iid} not revoked ({exc}); `parley revoke {iid}` later")
    finally:
        engine.close_clients()
        store.close()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
