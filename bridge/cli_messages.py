"""Issue 12 commands: conversations and requests, consent decisions, reactions, edits, deletes, read.

Every command calls a local API method (bridge/api/rpc.py ``LocalApi.METHODS``, the same as JSON-RPC):
through the running daemon's ``/v1/control/call`` (no passphrase), or, with no daemon, over a local
engine unlocked here (:func:`call`: one code path). Registered on import by bridge/cli.py ``main``.
Exit codes: 2 bad input, 3 unreachable or unregistered, 1 anything else. Peer text is printed through
``terminal_safe``; ``--json`` prints it exactly.
"""

from __future__ import annotations

import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli import Ctx, Exit, Fail, _address_arg, _daemon, _fmt_time, _recipient, cli, handle_errors, open_engine, pass_ctx, terminal_safe

__all__ = ["call", "peer_address", "upload"]


def _fail_for(exc: Any) -> Fail:
    """An RpcError as the CLI's one line and exit code."""
    from bridge.api import rpc

    if exc.code in (rpc.INVALID_PARAMS, rpc.BAD_INPUT, rpc.CANNOT_RESOLVE):
        code = Exit.USAGE
    elif exc.code in (rpc.NOT_REGISTERED, rpc.RELAY_UNAVAILABLE):
        code = Exit.UNREACHABLE
    else:
        code = Exit.ERROR
    detail = exc.data.get("detail") if isinstance(exc.data, dict) else None
    return Fail(f"{exc.message}: {detail}" if detail else str(exc.message), code)


class _Local:
    """A local engine and the LocalApi over it, opened on first use (unlocks the keys)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.api: Any = None

    def __call__(self, method: str, params: dict[str, Any]) -> Any:
        from bridge.api.access import Access
        from bridge.api.rpc import Hub, LocalApi, RpcError, call_local_api
        from bridge.resolve import Contacts

        if self.api is None:
            engine = open_engine(self.ctx)
            self.api = LocalApi(engine, Access(engine.store), Contacts(self.ctx.home.contacts_file), lambda: False, Hub())
        status, answer = call_local_api(self.api, method, params)
        if "error" in answer:
            err = answer["error"]
            raise RpcError(err["code"], err["message"], err.get("data"))
        return answer["result"]

    def close(self) -> None:
        if self.api is not None:
            self.api.engine.close_clients()
            self.api.engine.store.close()


def _caller(ctx: Ctx) -> Any:
    daemon = _daemon(ctx)
    return daemon.call if daemon is not None else _Local(ctx)


def call(ctx: Ctx, method: str, params: dict[str, Any], *, caller: Any = None) -> Any:
    """Call local API ``method``: through the daemon when it runs, else over a local engine.

    Raises:
        Fail: the method's error, with the exit code for it.
    """
    from bridge.api.rpc import RpcError

    ctx.home.require()
    fn = caller or _caller(ctx)
    try:
        return fn(method, params)
    except RpcError as exc:
        raise _fail_for(exc) from None
    finally:
        if caller is None and isinstance(fn, _Local):
            fn.close()


def peer_address(ctx: Ctx, value: str) -> str:
    """A 0x address, or any name `send` takes (contacts first)."""
    resolution = _recipient(ctx, value, ctx.relay_url())
    return resolution.address if resolution is not None else _address_arg(value)


def _id_arg(value: str) -> str:
    from bridge.protocol.ids import is_message_id

    if not is_message_id(value):
        raise Fail(f"not a message id: {value[:64]!r} (32 lowercase hex digits)", Exit.USAGE)
    return value


# --- conversations and requests ---------------------------------------------------------------------


def _print_conversations(items: list[dict[str, Any]], empty: str) -> None:
    if not items:
        click.echo(empty)
    for c in items:
        extra = f", {c['held']} held" if c.get("held") else ""
        unread = f"{c['unread']} unread" if c.get("unread") else "read"
        last = c.get("last") or {}
        text = terminal_safe((last.get("text") or "").replace("\n", " ")[:60])
        click.echo(f"{c['peer']}  {c['consent']}  {unread}{extra}  {_fmt_time(c['last_message_at'])}  {text}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {peer, consent, unread, last_message_at, updated_at, held, dropped, last}.")
@click.option("--all", "show_all", is_flag=True, help="Every conversation: requests, declined and blocked ones too (default: the inbox, allowed only).")
@pass_ctx
@handle_errors
def conversations(ctx: Ctx, as_json: bool, show_all: bool) -> None:
    """List conversations, newest first: the inbox (people you accepted, wrote to, or have as contacts).
    With --all, also message requests, declined and blocked conversations (see `parley requests`)."""
    items = call(ctx, "conversations.list", {"folder": "all" if show_all else "inbox"})["conversations"]
    if as_json:
        click.echo(json.dumps(items))
    else:
        _print_conversations(items, "no conversations")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {peer, consent, unread, last_message_at, updated_at, held, dropped, last}.")
@pass_ctx
@handle_errors
def requests(ctx: Ctx, as_json: bool) -> None:
    """List message requests: first messages from addresses that are not your contacts and that you
    never wrote to. At most 3 messages of each are kept until you decide; later ones are counted as
    held. Decide with `parley accept|decline|block PEER`."""
    items = call(ctx, "requests.list", {})["requests"]
    if as_json:
        click.echo(json.dumps(items))
    else:
        _print_conversations(items, "no message requests")


def _decide(action: str, done: str) -> Any:
    def command(ctx: Ctx, peer: str, as_json: bool) -> None:
        address = peer_address(ctx, peer)
        out = call(ctx, "consent.set", {"peer": address, "action": action})
        if as_json:
            click.echo(json.dumps(out))
        else:
            click.echo(f"{address}: {done} (now {out['consent']})")

    return command


_DECISIONS = {
    "accept": ("accepted", "Accept PEER's message request: the conversation moves to the inbox and what they send is shown and notified."),
    "decline": ("declined", "Decline PEER's message request: the conversation is hidden (shown with `parley conversations --all`); at most 3 of their messages are kept."),
    "block": ("blocked", "Block PEER: everything they send from now on is dropped unread (only a counter changes); they are not told."),
    "unblock": ("unblocked", "Unblock PEER: back to the state before the block (allowed if there was none)."),
}
for _action, (_done, _help) in _DECISIONS.items():
    _cmd = _decide(_action, _done)
    _cmd.__doc__ = _help + " PEER is a 0x address or any name `send` takes. The decision reaches your other installations."
    _cmd.__name__ = _action
    cli.command(_action, help=_cmd.__doc__)(
        click.argument("peer")(click.option("--json", "as_json", is_flag=True, help="Print {peer, consent, held, dropped}.")(pass_ctx(handle_errors(_cmd))))
    )


# --- react, edit, delete, read ----------------------------------------------------------------------


def _print_result(out: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"{what} {out['message']['id']}")


@cli.command()
@click.argument("peer")
@click.argument("message_id", metavar="ID")
@click.argument("emoji")
@click.option("--remove", is_flag=True, help="Take your reaction back.")
@click.option("--json", "as_json", is_flag=True, help="Print {message} (the message reacted to) as JSON.")
@pass_ctx
@handle_errors
def react(ctx: Ctx, peer: str, message_id: str, emoji: str, remove: bool, as_json: bool) -> None:
    """React to message ID of the conversation with PEER with EMOJI (e.g. 👍), or --remove it."""
    address = peer_address(ctx, peer)
    params: dict[str, Any] = {"peer": address, "id": _id_arg(message_id), "emoji": emoji}
    if remove:
        params["remove"] = True
    _print_result(call(ctx, "messages.react", params), as_json, "reaction removed from" if remove else "reacted to")


@cli.command()
@click.argument("peer")
@click.argument("message_id", metavar="ID")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print {message} as JSON.")
@pass_ctx
@handle_errors
def edit(ctx: Ctx, peer: str, message_id: str, text: str, as_json: bool) -> None:
    """Replace the text of your message ID to PEER with TEXT, for everyone (marked "edited")."""
    address = peer_address(ctx, peer)
    _print_result(call(ctx, "messages.edit", {"peer": address, "id": _id_arg(message_id), "text": text}), as_json, "edited")


@cli.command()
@click.argument("peer")
@click.argument("message_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print {message} as JSON.")
@pass_ctx
@handle_errors
def delete(ctx: Ctx, peer: str, message_id: str, as_json: bool) -> None:
    """Delete your message ID to PEER for everyone (a tombstone stays: "This message was deleted")."""
    address = peer_address(ctx, peer)
    _print_result(call(ctx, "messages.delete", {"peer": address, "id": _id_arg(message_id)}), as_json, "deleted")


@cli.command()
@click.argument("peer")
@click.option("--json", "as_json", is_flag=True, help="Print {unread} as JSON.")
@pass_ctx
@handle_errors
def read(ctx: Ctx, peer: str, as_json: bool) -> None:
    """Mark the conversation with PEER read, and send read receipts (unless `parley config set
    read_receipts false`; never to message requests)."""
    address = peer_address(ctx, peer)
    out = call(ctx, "messages.markRead", {"peer": address})
    click.echo(json.dumps(out) if as_json else f"{address}: read ({out['unread']} unread in all conversations)")


# --- uploads for `parley send --file` ---------------------------------------------------------------

#: Bytes per attachments.chunk call (contract §7).
CHUNK = 196_608
#: Uploads at least this large show progress.
PROGRESS_FROM = 1024 * 1024


def upload(ctx: Ctx, peer: str, path: Path, fn: Any) -> str:
    """Hand the file at ``path`` to the bridge in chunks (``attachments.begin`` / ``attachments.chunk``,
    the same methods the extension uses, through the daemon or the local engine). Returns the upload id.

    Raises:
        Fail: unreadable file (exit 2), or the bridge refused it.
    """
    import base64

    from bridge.api.rpc import RpcError

    try:
        size = path.stat().st_size
        f = path.open("rb")
    except OSError as exc:
        raise Fail(f"cannot read {path}: {exc.strerror or exc}", Exit.USAGE) from None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        with f:
            begun = fn("attachments.begin", {"peer": peer, "name": path.name, "size": size, "mime": mime})
            uid = begun["upload_id"]
            chunk = int(begun.get("chunk_size") or CHUNK)
            show = size >= PROGRESS_FROM
            bar = click.progressbar(length=size, label=f"uploading {terminal_safe(path.name)}", file=sys.stderr) if show and sys.stderr.isatty() else None
            offset = 0
            last_pct = -1
            while offset < size or offset == 0:
                data = f.read(chunk)
                if not data and offset > 0:
                    break
                fn("attachments.chunk", {"peer": peer, "upload_id": uid, "offset": offset, "data": base64.b64encode(data).decode("ascii")})
                offset += len(data)
                if bar is not None:
                    bar.update(len(data))
                elif show:
                    pct = offset * 100 // size
                    if pct // 10 != last_pct // 10:
                        last_pct = pct
                        click.echo(f"uploading {terminal_safe(path.name)}: {pct}% ({offset}/{size} bytes)", err=True)
                if not data:
                    break
            if bar is not None:
                bar.render_finish()
    except RpcError as exc:
        raise _fail_for(exc) from None
    return str(uid)


def send_rich(ctx: Ctx, peer: str, text: str, reply_to: str | None, files: tuple[Path, ...]) -> dict[str, Any]:
    """`parley send` with --reply-to or --file: ``messages.send {peer, text, reply_to?, uploads?}``.
    Returns ``{message, delivered, error}``."""
    from bridge.api.rpc import RpcError

    ctx.home.require()
    fn = _caller(ctx)
    try:
        params: dict[str, Any] = {"peer": peer, "text": text}
        if reply_to is not None:
            params["reply_to"] = _id_arg(reply_to)
        if files:
            params["uploads"] = [upload(ctx, peer, Path(p), fn) for p in files]
        try:
            out = fn("messages.send", params)
        except RpcError as exc:
            raise _fail_for(exc) from None
        return {"message": out["message"], "delivered": out["delivered"], "error": out.get("error")}
    finally:
        if isinstance(fn, _Local):
            fn.close()


def message_json(m: dict[str, Any]) -> dict[str, Any]:
    """A message for `parley messages --json` (contract §4 and §8)."""
    keys = ("id", "peer", "sender", "recipient", "text", "sent_at", "direction", "state", "read", "flag", "kind",
            "content_type", "unsupported", "reply_to", "reactions", "edited", "deleted")
    defaults: dict[str, Any] = {"kind": "text", "content_type": "text", "unsupported": False, "reply_to": None,
                                "reactions": {}, "edited": False, "deleted": False, "read": False, "flag": None}
    out = {k: m.get(k, defaults.get(k)) for k in keys}
    out["attachments"] = [{k: a.get(k) for k in ("id", "name", "size", "sha256", "mime", "state")} for a in m.get("attachments") or []]
    return out

