"""``parley restore`` and ``parley backup remote on|off|status`` (issue 15; PROTOCOL.md §12.4, §12.6).

``restore`` is registered on the ``parley`` group, ``remote`` on the ``backup`` group of
bridge/cli_backup.py; bridge/cli.py imports this module."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from bridge.cli import Ctx, Exit, Fail, _check_url, _daemon, cli, handle_errors, open_engine, pass_ctx, passphrase, terminal_safe
from bridge.cli_backup import backup

__all__ = ["restore", "remote"]


class _Lines:
    """Progress of long work on stderr: one line when a stage starts, then at most one per 10 % (bytes)
    or per 10,000 records, and one when it ends."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.mark = -1

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self.stage:
            self.stage, self.mark = stage, -1
        if total:
            step = done * 10 // max(1, total)
            if step != self.mark:
                self.mark = step
                click.echo(f"{stage}: {done * 100 // max(1, total)}% ({done} of {total} bytes)", err=True)
        else:
            step = done // 10_000
            if step != self.mark:
                self.mark = step
                click.echo(f"{stage}: {done}", err=True)


def _recovery_key(value: str | None) -> str:
    from bridge.backup import recovery

    if value is None:
        if not sys.stdin.isatty():
            raise Fail("no recovery key: pass --recovery-key KEY", Exit.USAGE)
        value = click.prompt("Recovery key", hide_input=True)
    try:
        return recovery.parse(value)
    except recovery.RecoveryKeyError as exc:
        raise Fail(f"not a recovery key: {exc}", Exit.USAGE) from None


@cli.command()
@click.option("--recovery-key", "recovery_key", metavar="KEY", help="The recovery key you wrote down (64 characters; spaces, dashes and case do not matter). Asked for when omitted, on a terminal.")
@click.option("--relay", "relay", metavar="URL", help="The relay that holds your backup (one of your home relays).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="Restore from a file made by `parley backup export` instead of a relay.")
@click.option("--revoke-lost/--keep-lost", "revoke_lost", default=None, help="Revoke the lost installation(s) without asking, or keep them (default: ask; no answer keeps them).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON: {address, installation_id, wallet, messages, conversations, segments, registered, relays, drained, standby, lost, revoked, kept, notes}.")
@pass_ctx
@handle_errors
def restore(ctx: Ctx, recovery_key: str | None, relay: str | None, file: Path | None, revoke_lost: bool | None, as_json: bool) -> None:
    """Restore your wallet, contacts and whole history into an EMPTY --home from your recovery key alone,
    with no other device: from the backup on a relay (--relay URL) or an export file (--file FILE).

    Everything is downloaded and checked before the home is written; on any failure the home is left
    as it was. Then a new installation is registered on your home relays, the standby's inbox (messages
    sent while you had no device) is read, the lost installation is revoked if you confirm, and remote
    backup is turned on with the same recovery key. A browser-wallet backup restores the history; run
    `parley signin` afterwards to authorize the new installation with your wallet.
    """
    from bridge.backup import archive, recovery
    from bridge.backup.restore import NoBackup, RestoreError, check_empty_home, file_segments, restore_home, segment_records, vault_segments

    key = _recovery_key(recovery_key)
    if (relay is None) == (file is None):
        raise Fail("name where your backup is: --relay URL (a relay that holds it) or --file FILE (an export)", Exit.USAGE)
    url = _check_url(relay) if relay is not None else None
    if file is not None and not file.is_file():
        raise Fail(f"no such file: {file}", Exit.USAGE)
    try:
        check_empty_home(ctx.home)
    except RestoreError as exc:
        raise Fail(str(exc), Exit(exc.code)) from None
    pp = passphrase(confirm=True)  # protects the new installation's keys
    keys = recovery.derive(key)
    lines = _Lines()

    def confirm(lost: list[str]) -> bool:
        if not sys.stdin.isatty():
            return False
        for iid in lost:
            click.echo(f"  active installation of your wallet: {iid}", err=True)
        return click.confirm("Revoke the installation(s) above (your lost device)?", default=False, err=True)

    with tempfile.TemporaryDirectory(prefix="parley-restore-") as tmp:
        try:
            if url is not None:
                from bridge.relay.client import RelayClient

                with RelayClient(url) as client:
                    segments = vault_segments(client, keys, url, Path(tmp), lines)
                factory = segment_records(segments, keys, ("remote",), lines)
            else:
                factory = segment_records(file_segments(file), keys, ("export", "remote"), lines)  # type: ignore[arg-type]
            summary = restore_home(
                ctx.home, factory, passphrase=pp, relays=[url] if url else [], backup_keys=keys,
                revoke_lost=revoke_lost, progress=lines, recovery_key=key, confirm=confirm,
            )
        except archive.WrongKey:
            raise Fail("the recovery key does not open this backup; nothing was changed", Exit.ERROR) from None
        except NoBackup as exc:
            raise Fail(f"{exc}; nothing was changed", Exit.ERROR) from None
        except RestoreError as exc:
            raise Fail(f"restore refused: {exc}; nothing was changed", Exit(exc.code)) from None
        except archive.ArchiveError as exc:
            raise Fail(f"restore refused: {exc}; nothing was changed", Exit.ERROR) from None
        except _snapshot_error() as exc:
            raise Fail(f"restore refused: {exc}; nothing was changed", Exit.ERROR) from None
    if as_json:
        click.echo(json.dumps(summary))
        return
    print_new_home(ctx, summary, "restored")
    for iid in summary["revoked"]:
        click.echo(f"revoked:       {iid}")
    for iid in summary["kept"]:
        click.echo(f"still active:  {iid} (`parley revoke {iid}` if it is lost)")
    for note in summary["notes"]:
        click.echo(f"note: {terminal_safe(note)}", err=True)
    if summary["wallet"] == "browser":
        click.echo("your wallet is in your browser: run `parley run`, then `parley signin` to authorize this installation with it")
    else:
        click.echo("remote backup is on, with the same recovery key")


def print_new_home(ctx: Ctx, summary: dict[str, Any], verb: str) -> None:
    """The first lines about a home made from an archive (``restore``, ``transfer receive`` into an empty
    home): where, which wallet, the new installation, the history, the relays it registered on."""
    click.echo(f"{verb} {ctx.home.path}")
    click.echo(f"address:       {summary['address']}")
    click.echo(f"installation:  {summary['installation_id']} (new)")
    click.echo(f"messages:      {summary['messages']} in {summary['conversations']} conversation(s)")
    if summary.get("drained"):
        click.echo(f"while away:    {summary['drained']} message(s) read from the standby installation")
    if summary["registered"]:
        click.echo("registered on " + ", ".join(summary["relays"]))


def _snapshot_error() -> type[Exception]:
    from bridge.backup.snapshot import SnapshotError

    return SnapshotError


@backup.command("remote")
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@click.option("--json", "as_json", is_flag=True, help='Print the status as JSON: {"enabled", "has_key", "confirmed", "last_backup_at", "size", "segments", "relays": [{"url", "state", "last_at", "error"}], "standby"} (with "recovery_key" when `on` created one).')
@pass_ctx
@handle_errors
def remote(ctx: Ctx, action: str, as_json: bool) -> None:
    """Remote backup on your home relays: on, off, or its status.

    `on` creates the recovery key if there is none and prints it ONCE (write it down: with it alone
    you can restore everything with `parley restore`), creates the standby installation, and backs up
    now (the running bridge does it, or this command). The relays see only ciphertext and sizes. It
    holds attachment locators and keys, not the files. `off` stops updating it (what the relays hold
    stays until it expires there).
    """
    from bridge.backup.remote import RemoteBackup, RemoteBackupError

    ctx.home.require()
    if action == "off":
        ctx.home.update_config(backup_remote=False)
        _print_status(ctx, as_json, None, note="remote backup is off; the relays keep the last backup until it expires there")
        return
    if action == "status":
        _print_status(ctx, as_json, None)
        return
    engine = open_engine(ctx)
    rb = RemoteBackup(ctx.home, engine.store, engine.secrets, engine)
    key = rb.enable()
    if key is not None and not as_json:
        from bridge.backup import recovery

        click.echo("Your recovery key (shown once; write it down and keep it safe):")
        click.echo("")
        click.echo("    " + recovery.display(key))
        click.echo("")
    daemon = _daemon(ctx)
    note = None
    if daemon is not None:
        note = "remote backup is on; the running bridge backs up now"
    else:
        try:
            rb.run_once(progress=_Lines())
        except RemoteBackupError as exc:
            raise Fail(str(exc), Exit.ERROR) from None
        note = "remote backup is on; `parley run` keeps it up to date"
    _print_status(ctx, as_json, rb, key=key, note=note)


def _print_status(ctx: Ctx, as_json: bool, rb: Any, *, key: str | None = None, note: str | None = None) -> None:
    from bridge.backup.remote import RemoteBackup
    from bridge.store import Store

    store = None
    if rb is None:
        store = Store(ctx.home.db_file)
        rb = RemoteBackup(ctx.home, store, None, list(ctx.relays().home))
    try:
        status = rb.status()
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps({**status, **({"recovery_key": key} if key is not None else {})}))
        return
    if note:
        click.echo(note)
    when = _when(status["last_backup_at"])
    click.echo(f"remote backup: {'on' if status['enabled'] else 'off'}; recovery key: {'yes' if status['has_key'] else 'none'}"
               f"{' (confirmed)' if status['confirmed'] else ''}")
    click.echo(f"last backup:   {when}; {status['size']} bytes in {status['segments']} segment(s)")
    for r in status["relays"]:
        extra = f" ({terminal_safe(r['error'])})" if r["error"] else ""  # a relay's words: never raw to a terminal
        click.echo(f"  {r['url']}: {r['state']}, last {_when(r['last_at'])}{extra}")
    sb = status["standby"]
    click.echo(f"standby:       {sb['installation_id'] or 'none'}")


def _when(ms: int | None) -> str:
    from bridge.cli import _fmt_time

    return "never" if ms is None else _fmt_time(ms) + " UTC"
