"""``parley attachment save ID DIR`` (issue 12; README "Command line"): write a received (or sent)
file into DIR and print its path. Registered on the ``parley`` group by bridge/cli.py."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from bridge.cli import Ctx, Exit, Fail, _daemon, cli, handle_errors, open_engine, pass_ctx

__all__ = ["attachment", "unique_path", "progress_reporter"]

_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")
_ATTACHMENT_ID = re.compile(r"[0-9a-f]{32}-[0-9]{1,2}")
_BAR_MIN = 1024 * 1024


def progress_reporter(label: str, total: int) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """``(update(done, total), finish())``: a click progress bar on a terminal, else a line on stderr
    now and then; nothing for files up to 1 MiB."""
    if total <= _BAR_MIN:
        return (lambda done, total: None), (lambda: None)
    if sys.stderr.isatty():
        bar = click.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()
        seen = [0]

        def update(done: int, _total: int) -> None:
            if done > seen[0]:
                bar.update(done - seen[0])
                seen[0] = done

        return update, lambda: bar.__exit__(None, None, None)
    last = [-1]

    def line(done: int, _total: int) -> None:
        pct = done * 100 // max(1, total)
        if pct // 10 != last[0]:
            last[0] = pct // 10
            click.echo(f"{label}: {pct}% ({done} of {total} bytes)", err=True)

    return line, lambda: None


def unique_path(directory: Path, name: str) -> tuple[Path, int]:
    """Create (exclusively, 0600) a new file in ``directory`` named ``name``, or ``name (1).ext``,
    ``name (2).ext``… when taken: never overwrites. Returns the path and an open descriptor."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    for n in range(0, 10_000):
        candidate = name if n == 0 else (f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})")
        path = directory / candidate
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
    raise Fail(f"too many files named like {name} in {directory}", Exit.ERROR)


def _safe_name(name: Any, aid: str) -> str:
    from bridge.engine import BadInput
    from bridge.engine.attachments import check_name

    try:
        return check_name(name)
    except BadInput:
        return f"attachment-{aid}"


def _rows(ctx: Ctx, ident: str) -> list[Any]:
    from bridge.store import Store

    if _ATTACHMENT_ID.fullmatch(ident):
        where, arg = "id = ?", ident
    elif _MESSAGE_ID.fullmatch(ident):
        where, arg = "message_id = ?", ident
    else:
        raise Fail(f"not an attachment or message id: {ident!r}", Exit.USAGE)
    store = Store(ctx.home.db_file)
    try:
        rows = store.read(f"SELECT id, name, size, state, path, error FROM attachments WHERE {where} ORDER BY idx", (arg,))
    finally:
        store.close()
    if not rows:
        raise Fail(f"no attachment {ident}", Exit.USAGE)
    return [dict(r) for r in rows]


@cli.group()
def attachment() -> None:
    """Files of messages (attachments)."""


@attachment.command("save")
@click.argument("ident", metavar="ID")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
@handle_errors
def save(ctx: Ctx, ident: str, directory: Path) -> None:
    """Write the file of attachment ID (or every file of message ID) into DIR and print each path.

    A file not downloaded yet is downloaded first (by the running daemon, else here: the passphrase is
    asked for). An existing file is never overwritten: "name (1).ext" is used instead.
    """
    ctx.home.require()
    rows = _rows(ctx, ident)
    if not directory.is_dir():
        raise Fail(f"{directory} is not a directory", Exit.USAGE)
    missing = [r for r in rows if r["state"] not in ("done", "local") or not r["path"] or not Path(r["path"]).exists()]
    if missing:
        daemon = _daemon(ctx)
        if daemon is not None:
            for r in missing:
                res = daemon._call("POST", "attachment-save", {"id": r["id"]}, timeout=600.0)
                r.update(state=res.get("state"), path=res.get("path"), error=res.get("error"))
        else:
            engine = open_engine(ctx)
            try:
                for r in missing:
                    update, finish = progress_reporter(f"downloading {_safe_name(r['name'], r['id'])}", int(r["size"]) + 16)

                    def listener(event: str, payload: dict[str, Any], aid: str = r["id"], update: Any = update) -> None:
                        if event == "attachment.progress" and payload.get("id") == aid:
                            update(int(payload["done"]), int(payload["total"]))

                    engine.listeners.append(listener)
                    try:
                        res = engine.attachment_fetch(r["id"])
                    finally:
                        engine.listeners.remove(listener)
                        finish()
                    r.update(state=res["state"], path=res["path"], error=res["error"])
            finally:
                engine.close_clients()
                engine.store.close()
    failed = [r for r in rows if r["state"] not in ("done", "local") or not r["path"]]
    for r in rows:
        if r in failed:
            continue
        name = _safe_name(r["name"], r["id"])
        dest, fd = unique_path(directory, name)
        total = os.path.getsize(r["path"])
        update, finish = progress_reporter(f"saving {name}", total)
        done = 0
        try:
            with open(r["path"], "rb") as src, os.fdopen(fd, "wb") as out:
                while piece := src.read(1024 * 1024):
                    out.write(piece)
                    done += len(piece)
                    update(done, total)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            finish()
        click.echo(str(dest))
    if failed:
        r = failed[0]
        reason = r.get("error") or r.get("state")
        code = Exit.UNREACHABLE if r.get("state") == "pending" else Exit.ERROR
        raise Fail(f"attachment {r['id']} not saved: {reason}", code)

