"""CLI commands for the local API: ``pair``, ``open``, ``signin`` and ``contacts`` (registered on the ``parley`` group)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from bridge.cli import Ctx, Exit, Fail, _daemon, cli, handle_errors, pass_ctx

__all__ = ["pair", "open_inbox", "signin", "contacts"]


def _when(ms: int | None) -> str:
    return "never" if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _access(ctx: Ctx):  # type: ignore[no-untyped-def]
    from bridge.api.access import Access
    from bridge.store import Store

    return Access(Store(ctx.home.db_file))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help='Print {"code": …} (or, with --list, the tokens) as JSON.')
@click.option("--list", "list_", is_flag=True, help="List the paired extensions (tokens).")
@click.option("--revoke", "revoke_id", metavar="ID", help="Revoke the token with this id; its extension is disconnected.")
@pass_ctx
@handle_errors
def pair(ctx: Ctx, as_json: bool, list_: bool, revoke_id: str | None) -> None:
    """Pair the browser extension: prints a one-time code (valid 10 minutes) to type into its popup.

    The code is printed alone on the last line. The running daemon's log shows it too.
    """
    ctx.home.require()
    if list_ and revoke_id:
        raise Fail("choose one of --list and --revoke", Exit.USAGE)
    if list_:
        tokens = _access(ctx).tokens()
        if as_json:
            click.echo(json.dumps([t.__dict__ for t in tokens]))
            return
        if not tokens:
            click.echo("no paired extensions")
        for t in tokens:
            state = "revoked" if t.revoked else "active"
            origin = f"  {t.origin}" if t.origin else ""
            click.echo(f"{t.id}  {state:7}  {t.name}  paired {_when(t.created_at)}, last used {_when(t.last_used)}{origin}")
        return
    if revoke_id:
        if not _access(ctx).revoke(revoke_id):
            raise Fail(f"no active token with id {revoke_id!r} (see `parley pair --list`)", Exit.USAGE)
        click.echo(f"revoked {revoke_id}")
        return
    daemon = _daemon(ctx)
    code = daemon.pair_code() if daemon is not None else _access(ctx).new_pair_code()
    if as_json:
        click.echo(json.dumps({"code": code}))
        return
    click.echo("Type this code into the Parley extension popup (valid 10 minutes, single use):")
    click.echo(code)


@cli.command("open")
@pass_ctx
@handle_errors
def open_inbox(ctx: Ctx) -> None:
    """Print a one-time login link to the local inbox page of the running bridge."""
    ctx.home.require()
    daemon = _daemon(ctx)
    if daemon is None:
        raise Fail("the bridge is not running: start it with `parley run`", Exit.UNREACHABLE)
    click.echo(daemon.login_url())


@cli.command()
@pass_ctx
@handle_errors
def signin(ctx: Ctx) -> None:
    """Print a one-time link to the bridge's wallet sign-in page (sign in with your browser wallet,
    revoke the previous identity or an installation of your wallet).

    Open it in the browser that has your wallet. The page shows the address and the installation id
    before the wallet is asked to sign anything.
    """
    ctx.home.require()
    daemon = _daemon(ctx)
    if daemon is None:
        raise Fail("the bridge is not running: start it with `parley run`", Exit.UNREACHABLE)
    click.echo(daemon.signin_url())


@cli.group()
def contacts() -> None:
    """Names you give to addresses; the DM button and `resolve` look them up."""


@contacts.command("add")
@click.argument("name")
@click.argument("address")
@pass_ctx
@handle_errors
def contacts_add(ctx: Ctx, name: str, address: str) -> None:
    """Remember NAME (e.g. lens:alice, farcaster:123, bob) as ADDRESS."""
    from bridge.resolve import Contacts, ContactsError

    ctx.home.require()
    try:
        addr = Contacts(ctx.home.contacts_file).add(name, address)
    except ContactsError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    click.echo(f"{name} → {addr}")


@contacts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print {name: address} as JSON.")
@pass_ctx
@handle_errors
def contacts_list(ctx: Ctx, as_json: bool) -> None:
    """List your contacts."""
    from bridge.resolve import Contacts, ContactsError

    ctx.home.require()
    try:
        data = Contacts(ctx.home.contacts_file).all()
    except ContactsError as exc:
        raise Fail(str(exc), Exit.ERROR) from None
    if as_json:
        click.echo(json.dumps(data))
        return
    if not data:
        click.echo("no contacts")
    for name, addr in data.items():
        click.echo(f"{name}  {addr}")


@contacts.command("remove")
@click.argument("name")
@pass_ctx
@handle_errors
def contacts_remove(ctx: Ctx, name: str) -> None:
    """Forget NAME."""
    from bridge.resolve import Contacts

    ctx.home.require()
    if not Contacts(ctx.home.contacts_file).remove(name):
        raise Fail(f"no contact named {name!r}", Exit.USAGE)
    click.echo(f"removed {name}")
