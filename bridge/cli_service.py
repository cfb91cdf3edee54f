"""``parley service install``: run the bridge as a systemd *user* service (registered on the ``parley`` group).

The unit runs ``parley --home HOME run``. Its passphrase comes from systemd credentials, never from
the unit or the environment block: ``LoadCredential=passphrase:FILE`` hands the service a private
copy of FILE under ``$CREDENTIALS_DIRECTORY`` (``%d``), and ``PARLEY_PASSPHRASE_FILE=%d/passphrase``
tells ``parley`` to read it (:func:`read_passphrase_file`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from bridge.cli import Ctx, Exit, Fail, cli, handle_errors, pass_ctx

__all__ = ["service", "install", "read_passphrase_file", "unit_text", "user_unit_dir", "PASSPHRASE_FILE_ENV"]

PASSPHRASE_FILE_ENV = "PARLEY_PASSPHRASE_FILE"
UNIT_NAME = "parley.service"


def read_passphrase_file(path: str) -> str:
    """The passphrase in file ``path``: its UTF-8 content minus one trailing newline (``\\n`` or
    ``\\r\\n``), so ``echo secret > file`` works and a passphrase may still end in spaces.

    Raises:
        Fail: the file is missing, unreadable, not UTF-8, or holds an empty passphrase (exit 2).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise Fail(f"{PASSPHRASE_FILE_ENV}={path}: no such file", Exit.USAGE) from None
    except IsADirectoryError:
        raise Fail(f"{PASSPHRASE_FILE_ENV}={path}: is a directory, not a file", Exit.USAGE) from None
    except OSError as exc:
        raise Fail(f"{PASSPHRASE_FILE_ENV}={path}: cannot read it ({exc.strerror or exc})", Exit.USAGE) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Fail(f"{PASSPHRASE_FILE_ENV}={path}: not UTF-8 text", Exit.USAGE) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise Fail(f"{PASSPHRASE_FILE_ENV}={path}: the file holds no passphrase", Exit.USAGE)
    return text


def user_unit_dir() -> Path:
    """Where systemd looks for the user's own units: ``$XDG_CONFIG_HOME/systemd/user`` (default
    ``~/.config/systemd/user``)."""
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def _quote(arg: str) -> str:
    """One ExecStart= word: ``%`` and ``$`` escaped (systemd specifiers and variables), quoted when
    it holds whitespace, quotes or backslashes."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in escaped) or not escaped:
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _parley_command() -> list[str]:
    """How to start this very ``parley``: the script next to this interpreter (a venv's bin/), else
    ``python -m bridge`` with this interpreter (always the same code as the one installing)."""
    script = Path(sys.executable).with_name("parley")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "bridge"]


def unit_text(home: Path, passphrase_file: Path, command: list[str] | None = None) -> str:
    """The user unit that runs ``parley --home HOME run`` with its passphrase from a credential."""
    exec_start = " ".join(_quote(a) for a in [*(command or _parley_command()), "--home", str(home), "run"])
    cred = str(passphrase_file).replace("%", "%%")
    return f"""# Written by `parley service install`; `parley service install --force` rewrites it.
[Unit]
Description=Parley bridge (end-to-end encrypted wallet messages) for {str(home).replace("%", "%%")}
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={exec_start}
# The passphrase is a systemd credential: a private copy of the file under $CREDENTIALS_DIRECTORY (%d).
LoadCredential=passphrase:{cred}
Environment=PARLEY_PASSPHRASE_FILE=%d/passphrase
Restart=on-failure
RestartSec=10
UMask=0077
NoNewPrivileges=yes

[Install]
WantedBy=default.target
"""


@cli.group()
def service() -> None:
    """Run the bridge in the background as a systemd user service."""


@service.command()
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--force", is_flag=True, help="Replace an existing parley.service.")
@click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="File holding the passphrase (one line, mode 600), handed to the service as a systemd credential "
    "[default: $XDG_CONFIG_HOME/parley/passphrase].",
)
@pass_ctx
@handle_errors
def install(ctx: Ctx, print_only: bool, force: bool, passphrase_file: Path | None) -> None:
    """Write ~/.config/systemd/user/parley.service (honours XDG_CONFIG_HOME), which runs
    `parley --home HOME run` with the passphrase from a systemd credential."""
    ctx.home.require()
    unit_dir = user_unit_dir()
    secret = (passphrase_file or unit_dir.parent.parent / "parley" / "passphrase").expanduser().absolute()
    text = unit_text(ctx.home.path, secret)
    if print_only:
        click.echo(text, nl=False)
        return
    target = unit_dir / UNIT_NAME
    if target.exists() and not force:
        raise Fail(f"{target} exists; pass --force to replace it", Exit.USAGE)
    unit_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{UNIT_NAME}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    click.echo(f"wrote {target}")
    if not secret.exists():
        click.echo(f"put your passphrase in {secret} (one line, readable only by you):")
        click.echo(f"  install -m 600 /dev/null {shlex_quote(str(secret))} && $EDITOR {shlex_quote(str(secret))}")
    click.echo("then start it now and at every login:")
    click.echo("  systemctl --user daemon-reload")
    click.echo("  systemctl --user enable --now parley")
    if shutil.which("loginctl"):
        click.echo("(to keep it running while you are logged out: loginctl enable-linger)")


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
