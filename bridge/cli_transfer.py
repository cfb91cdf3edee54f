"""``parley transfer send`` and ``parley transfer receive CODE`` (issue 15 item 7; docs/PROTOCOL.md §12.7):
move a home's history, contacts, settings and files to another device of the same wallet, through a
relay that sees only ciphertext. Registered on the ``parley`` group by bridge/cli.py."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from bridge.cli import Ctx, Exit, Fail, cli, handle_errors, pass_ctx, unlock

__all__ = ["transfer"]


def _reporter(as_json: bool) -> Callable[[str, int, int], None]:
    """Progress on stderr: a line per stage, and the bytes sent or received (a bar on a terminal, a
    line every 10 % otherwise, nothing for archives up to 1 MiB)."""
    from bridge.cli_attachments import progress_reporter

    state: dict[str, Any] = {"stage": None, "bar": None}

    def report(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"][1]()
                state["bar"] = None
            state["stage"] = stage
            if total <= 0:
                click.echo(f"{stage}…", err=True)
        if total > 0:
            if state["bar"] is None:
                state["bar"] = progress_reporter(stage, total)
            state["bar"][0](done, total)

    return report


def _fail(exc: BaseException) -> Fail:
    """One line; a relay's or a peer's words in it are escaped for the terminal."""
    from bridge.cli import terminal_safe

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Fail(terminal_safe(text), Exit.ERROR)


@cli.group()
def transfer() -> None:
    """Move this installation's history to another device of the same wallet.

    \b
    On the device that has the history:   parley transfer send
    On the new device:                    parley transfer receive CODE
    """


@transfer.command("send")
@click.option("--relay", "relay", metavar="URL", help="Rendezvous relay [default: this home's primary relay].")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1, 86400), help="Seconds to wait for the receiver at each step.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: {\"code\"} at once, then the result.")
@pass_ctx
@handle_errors
def send(ctx: Ctx, relay: str | None, timeout: float, as_json: bool) -> None:
    """Show a code, wait for `parley transfer receive CODE` on the other device, send everything.

    The archive (messages, contacts, consent, settings, identity, files) is encrypted under a key only
    the two devices know; the relay sees its size. Both bridges may be running.
    """
    from bridge.backup import transfer as T
    from bridge.backup.archive import ArchiveError, write_archive
    from bridge.backup.snapshot import SnapshotError, export_records
    from bridge.relay.client import RelayClient
    from bridge.store import Store

    ctx.home.require()
    secrets = unlock(ctx)
    address = str(ctx.home.identity()["address"])
    url = ctx.relay_url(relay)
    code = T.new_code(url)
    if as_json:
        click.echo(json.dumps({"code": code.text(), "relay": url, "expires_in": int(timeout)}))
    else:
        click.echo(f"Transfer code (for {int(timeout // 60)} minutes, one use):\n\n  {code.text()}\n\n"
                   "On the other device run:  parley transfer receive CODE")
    sys.stdout.flush()
    report = _reporter(as_json)
    store = Store(ctx.home.db_file)

    def write(out: Any, key: bytes, archive_id: bytes) -> dict[str, Any]:
        records = export_records(ctx.home, store, secrets, purpose="transfer", include_files=True)
        return write_archive(out, records, wrapping_key=key, backup_id=archive_id, purpose="transfer",
                             on_progress=lambda n: report("writing the archive", 0, 0))

    try:
        with RelayClient(url, timeout=60) as client:
            result = T.Sender(client, code, timeout=timeout, progress=report).run(address, write, tmp_dir=ctx.home.path)
    except (T.TransferError, ArchiveError, SnapshotError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"sent": True, **result}))
    else:
        click.echo(f"sent {result['bytes']} bytes ({result['records']} records); the other device imported them")


@transfer.command("receive")
@click.argument("code_text", metavar="CODE")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1, 86400), help="Seconds to wait for the sender at each step.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
@pass_ctx
@handle_errors
def receive(ctx: Ctx, code_text: str, timeout: float, as_json: bool) -> None:
    """Receive what `parley transfer send` offers under CODE, check it, import it.

    Into a home of the same wallet: added to what it has (idempotent by message id). A home of
    another wallet is refused before anything is downloaded. Nothing changes unless the whole
    archive arrives and checks out.
    """
    from bridge.backup import transfer as T
    from bridge.backup.archive import ArchiveError
    from bridge.backup.snapshot import SnapshotError, import_records
    from bridge.relay.client import RelayClient
    from bridge.store import Store

    try:
        code = T.parse_code(code_text)
    except T.TransferError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    if not ctx.home.exists():
        return _receive_into_empty_home(ctx, code, timeout, as_json)
    ctx.home.require()
    secrets = unlock(ctx)
    own = str(ctx.home.identity()["address"])
    report = _reporter(as_json)
    store = Store(ctx.home.db_file)
    try:
        with RelayClient(code.relay, timeout=60) as client:
            receiver = T.Receiver(client, code, timeout=timeout, progress=report)
            offer = receiver.offer()
            if offer["address"] != own:
                receiver.abort("the receiving home belongs to another wallet")
                raise Fail(f"this transfer is from wallet {offer['address']}, this home is {own}: a transfer goes between "
                           "installations of one wallet", Exit.ERROR)

            def consume(records: Any, archive_id: bytes) -> Any:
                return import_records(ctx.home, store, secrets, records, expect_address=own,
                                      progress=lambda n: report("importing", 0, 0))

            imported = receiver.receive(consume, tmp_dir=ctx.home.path)
    except (T.TransferError, ArchiveError, SnapshotError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    out = imported.to_json() if hasattr(imported, "to_json") else {}
    if as_json:
        click.echo(json.dumps({"received": True, "address": own, **out}))
    else:
        click.echo(f"received: {out.get('messages_added', 0)} messages added, {out.get('messages_skipped', 0)} already here, "
                   f"{out.get('files', 0)} files")


def _receive_into_empty_home(ctx: Ctx, code: Any, timeout: float, as_json: bool) -> None:
    """A new device: the archive becomes the home (bridge/backup/restore.py restore_home: a new
    installation of the wallet, registered; the sending device stays active, nothing is revoked)."""
    from bridge.backup import transfer as T
    from bridge.backup.archive import ArchiveError
    from bridge.backup.restore import RestoreError, check_empty_home, restore_home
    from bridge.backup.snapshot import SnapshotError
    from bridge.cli import passphrase, terminal_safe
    from bridge.cli_restore import print_new_home
    from bridge.relay.client import RelayClient

    try:
        check_empty_home(ctx.home)
    except RestoreError as exc:
        raise Fail(str(exc), Exit(exc.code)) from None
    pp = passphrase(confirm=True)  # protects the new installation's keys
    report = _reporter(as_json)
    try:
        with RelayClient(code.relay, timeout=60) as client:
            receiver = T.Receiver(client, code, timeout=timeout, progress=report)
            receiver.offer()

            def consume(records: Any, archive_id: bytes) -> Any:
                return restore_home(ctx.home, lambda: records, passphrase=pp, relays=[code.relay], backup_keys=None,
                                    revoke_lost=False, progress=lambda stage, done, total: report(stage, 0, 0))

            summary = receiver.receive(consume)
    except RestoreError as exc:
        raise Fail(f"transfer refused: {exc}; nothing was changed", Exit(exc.code)) from None
    except (T.TransferError, ArchiveError, SnapshotError) as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps({"received": True, **summary}))
        return
    print_new_home(ctx, summary, "received into")
    for note in summary["notes"]:
        click.echo(f"note: {terminal_safe(note)}", err=True)
