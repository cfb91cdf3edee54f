"""``parley backup export FILE`` and ``parley backup import FILE --recovery-key KEY`` (issue 15; PROTOCOL.md
§12.2, §12.3). Registered on the ``parley`` group by bridge/cli.py; ``parley backup remote`` is added to
the same group by bridge/cli_restore.py.

Both read and write the store directly (SQLite WAL is shared with a running daemon: an import stages
the archive's records in a scratch database and then holds the write lock only for one short
transaction, so the daemon keeps working and sees the imported messages at once).
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from bridge.cli import Ctx, Exit, Fail, cli, handle_errors, pass_ctx, unlock

__all__ = ["backup"]

#: A progress display for an export of at least this many records (or a file import over 1 MiB).
_PROGRESS_RECORDS = 5000


@cli.group()
def backup() -> None:
    """Encrypted backups of this home: messages, files, contacts, consent, settings.

    \b
      parley backup export FILE                      write an archive (creates your recovery key once)
      parley backup import FILE --recovery-key KEY   bring an archive of this wallet back in

    The recovery key opens every backup of this wallet; it is shown once, when it is made. Into a new,
    empty home use `parley restore` instead.
    """


def _records_progress(label: str, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """``(update(done), finish())``: a click progress bar on a terminal, else a line on stderr every 10%;
    nothing for small archives."""
    if total < _PROGRESS_RECORDS:
        return (lambda done: None), (lambda: None)
    if sys.stderr.isatty():
        bar = click.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()
        seen = [0]

        def update(done: int) -> None:
            done = min(done, total)
            if done > seen[0]:
                bar.update(done - seen[0])
                seen[0] = done

        return update, lambda: bar.__exit__(None, None, None)
    last = [-1]

    def line(done: int) -> None:
        pct = min(100, done * 100 // max(1, total))
        if pct // 10 != last[0]:
            last[0] = pct // 10
            click.echo(f"{label}: {pct}% ({min(done, total)} of {total} records)", err=True)

    return line, lambda: None


def _export_size(store: Any, include_files: bool) -> tuple[int, int]:
    """(messages, records an export will have, about) for the progress display."""
    q = lambda sql: int(store.read(sql)[0][0])  # noqa: E731
    messages = q("SELECT COUNT(*) FROM messages")
    total = 8 + messages + q("SELECT COUNT(*) FROM consent") + q("SELECT COUNT(*) FROM conversations")
    total += q("SELECT COUNT(*) FROM reactions") + q("SELECT COUNT(*) FROM attachments")
    if include_files:
        total += q(f"SELECT COALESCE(SUM((size + {1 << 20} - 1) / {1 << 20}), 0) FROM attachments WHERE path IS NOT NULL")
    return messages, total


@backup.command("export")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help='Print {"recovery_key": KEY or null, "file", "bytes", "messages"} as JSON (KEY only when it was made now).')
@click.option("--no-files", "no_files", is_flag=True,
              help="Leave attachment files out (their relay locators and keys are kept: they are fetched again while the relay keeps them).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists (default: refuse).")
@pass_ctx
@handle_errors
def export_cmd(ctx: Ctx, file: Path, as_json: bool, no_files: bool, force: bool) -> None:
    """Write this home's history, contacts, consent and settings to FILE, encrypted.

    The first export makes your recovery key and prints it ONCE: write it down. Every later backup of
    this wallet (export, remote, transfer) opens with the same key. FILE is written atomically (0600);
    an existing FILE is never replaced without --force. With the daemon running, the export reads the
    store as it is at the start.
    """
    from bridge.backup import archive, recovery, snapshot, state
    from bridge.store import Store

    ctx.home.require()
    file = file.expanduser().absolute()
    if (file.exists() or file.is_symlink()) and not force:
        raise Fail(f"{file} exists; nothing was written (--force replaces it)", Exit.USAGE)
    if not file.parent.is_dir():
        raise Fail(f"{file.parent} is not a directory", Exit.USAGE)
    secrets = unlock(ctx)
    store = Store(ctx.home.db_file)
    tmp = file.with_name(f".{file.name}.{_secrets.token_hex(4)}.tmp")
    try:
        try:
            keys = state.backup_keys(store, secrets)
        except state.StateError as exc:
            raise Fail(str(exc), Exit.ERROR) from None
        new_key = None
        if keys is None:
            new_key = recovery.generate()
            keys = recovery.derive(new_key)
        address = ctx.home.identity()["address"]
        messages, total = _export_size(store, not no_files)
        update, finish = _records_progress("exporting", total)
        counted = [0]

        def records() -> Iterator[Any]:
            for i, r in enumerate(snapshot.export_records(ctx.home, store, secrets, purpose="export", include_files=not no_files)):
                counted[0] = i + 1
                if i % 500 == 0:
                    update(i)
                yield r

        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise Fail(f"cannot write in {file.parent}: {exc.strerror or exc}", Exit.ERROR) from None
        try:
            with os.fdopen(fd, "wb") as out:
                info = archive.write_archive(out, records(), wrapping_key=keys.backup_key, backup_id=keys.backup_id(address),
                                             purpose="export")
                out.flush()
                os.fsync(out.fileno())
            update(total)  # done (the count was an estimate)
        except (snapshot.SnapshotError, archive.ArchiveError) as exc:
            raise Fail(f"export failed: {exc}", Exit.ERROR) from None
        finally:
            finish()
        try:
            if force:
                os.replace(tmp, file)
            else:
                os.link(tmp, file)  # fails if FILE appeared meanwhile: never replaced without --force
        except FileExistsError:
            raise Fail(f"{file} exists; nothing was written (--force replaces it)", Exit.USAGE) from None
        if new_key is not None:
            try:
                state.create_recovery_key(store, secrets, key=new_key)
            except state.StateError:
                file.unlink(missing_ok=True)
                raise Fail("a recovery key was made meanwhile (another command); run the export again", Exit.ERROR) from None
    finally:
        tmp.unlink(missing_ok=True)
        store.close()
    if as_json:
        click.echo(json.dumps({"recovery_key": new_key, "file": str(file), "bytes": info["bytes"], "messages": messages}))
        return
    click.echo(f"exported {messages} messages to {file} ({info['bytes']} bytes)")
    if new_key is not None:
        click.echo("")
        click.echo("Your recovery key (it opens every backup of this wallet; it is shown only this once):")
        click.echo("")
        click.echo("    " + recovery.display(new_key))
        click.echo("")
        click.echo("Write it down and keep it somewhere safe: without it no backup can be restored.")


@backup.command("import")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recovery-key", "recovery_key", metavar="KEY", required=True,
              help="The recovery key the archive was made with (spaces, dashes and case do not matter).")
@click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON (messages_added, messages_skipped, files, …).")
@pass_ctx
@handle_errors
def import_cmd(ctx: Ctx, file: Path, recovery_key: str, as_json: bool) -> None:
    """Bring the archive FILE (an export or transfer of THIS wallet) into this home.

    Idempotent: messages already here are kept as they are, so importing twice adds nothing. Contacts
    are merged (your names win), settings fill in only what this home has not set (its relays stay).
    Nothing changes unless the whole archive reads and checks out: a wrong key, another wallet's
    archive, or a damaged file is one line and exit 1. Works while the daemon runs. Into a new, empty
    home use `parley restore --file FILE` instead.
    """
    from bridge.backup import archive, recovery, snapshot, state
    from bridge.cli_attachments import progress_reporter
    from bridge.store import Store

    ctx.home.require()
    try:
        key = recovery.parse(recovery_key)
    except recovery.RecoveryKeyError as exc:
        raise Fail(f"not a recovery key: {exc}", Exit.USAGE) from None
    keys = recovery.derive(key)
    try:
        fh = open(file, "rb")
    except OSError as exc:
        raise Fail(f"cannot read {file}: {exc.strerror or exc}", Exit.USAGE) from None
    with fh:
        try:
            reader = archive.open_archive(fh, keys.backup_key)
        except archive.WrongKey:
            raise Fail("the recovery key does not open this archive; nothing was changed", Exit.ERROR) from None
        except archive.ArchiveError as exc:
            raise Fail(f"{file} is not a usable archive: {exc}; nothing was changed", Exit.ERROR) from None
        address = ctx.home.identity()["address"]
        secrets = unlock(ctx)
        store = Store(ctx.home.db_file)
        size = os.fstat(fh.fileno()).st_size
        update, finish = progress_reporter("importing", size)
        try:
            report = snapshot.import_records(
                ctx.home, store, secrets, reader.records(on_progress=lambda n: update(n, size)),
                expect_address=address, backup_keys=keys, backup_id=reader.header.backup_id,
            )
            if state.key_state(store)["has_key"] is False:
                state.adopt_recovery_key(store, secrets, key)  # this home's backups use the key the user has
        except snapshot.SnapshotError as exc:
            raise Fail(f"{exc}; nothing was changed" if not str(exc).startswith("this archive belongs") else str(exc), Exit.ERROR) from None
        except archive.ArchiveError as exc:
            raise Fail(f"{file} is damaged: {exc}; nothing was changed", Exit.ERROR) from None
        finally:
            finish()
            store.close()
    if as_json:
        click.echo(json.dumps({"file": str(file), **report.to_json()}))
        return
    click.echo(f"imported {report.messages_added} messages from {file} ({report.messages_skipped} already here)")
    extras = [f"{report.files} files" if report.files else "", f"{report.contacts} contacts" if report.contacts else "",
              f"settings: {', '.join(report.settings)}" if report.settings else "",
              f"{report.requeued} queued messages will be sent" if report.requeued else ""]
    if any(extras):
        click.echo("also: " + "; ".join(x for x in extras if x))
