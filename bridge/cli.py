"""The ``parley`` command.

Exit codes (``Exit``): 0 ok, 1 anything else, 2 bad input or usage, 3 peer not registered or
unreachable, 130 interrupted (Ctrl-C, also at a prompt), 141 stdout closed early (``parley … | head``).
Errors are one line on stderr; a traceback only with ``--debug`` (or PARLEY_DEBUG=1).
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from bridge.home import DEFAULT_PORT, Home, HomeError, resolve_home

__all__ = ["main", "cli", "Exit"]

F = TypeVar("F", bound=Callable[..., Any])


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped
    BROKEN_PIPE = 141  # 128 + SIGPIPE: whoever read our output stopped reading


class Fail(Exception):
    """A user-facing failure: one line, one exit code."""

    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.code = code


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"parley: {message}", err=True)
    sys.exit(int(code))


def _interrupted() -> NoReturn:
    """Ctrl-C: end the line the terminal was on, nothing else, and exit 130."""
    try:
        click.echo("", err=True)
    except OSError:
        pass
    sys.exit(int(Exit.INTERRUPTED))


def _broken_pipe() -> NoReturn:
    """`parley … | head`: the reader is gone. No traceback, nothing more written to it, exit 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
    except (OSError, ValueError):
        pass
    sys.exit(int(Exit.BROKEN_PIPE))


def handle_errors(fn: F) -> F:
    """Turn known failures into one line on stderr and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bridge.engine import BadInput, NotRegistered
        from bridge.identity import IdentityError
        from bridge.keys import KeysError, WrongPassphrase
        from bridge.relay.client import RelayError, RelayUnavailable
        from bridge.relay.urls import RelayUrlError
        from bridge.store import StoreError

        try:
            return fn(*args, **kwargs)
        except Fail as exc:
            _die(str(exc), exc.code)
        except WrongPassphrase:
            _die("wrong passphrase", Exit.USAGE)
        except (KeysError, BadInput, IdentityError, HomeError, RelayUrlError) as exc:
            _die(str(exc), Exit.USAGE)
        except NotRegistered as exc:
            _die(str(exc), Exit.UNREACHABLE)
        except RelayUnavailable as exc:
            _die(str(exc), Exit.UNREACHABLE)
        except (RelayError, StoreError) as exc:
            _die(str(exc), Exit.ERROR)
        except (KeyboardInterrupt, click.exceptions.Abort):  # Ctrl-C (at a prompt: click's Abort)
            _interrupted()
        except BrokenPipeError:
            _broken_pipe()
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # unexpected: still one line unless debugging
            if os.environ.get("PARLEY_DEBUG"):
                raise
            _die(f"unexpected error: {type(exc).__name__}: {exc} (set PARLEY_DEBUG=1 for details)", Exit.ERROR)

    return wrapper  # type: ignore[return-value]


class Ctx:
    def __init__(self, home: Path) -> None:
        self.home = Home(home)

    def relays(self) -> Any:
        """The home's relays (bridge/homerelays.py); none recorded: the relay `parley run` embeds on
        its port (this machine only)."""
        from bridge.homerelays import RelayConfig, relay_config

        rc = relay_config(self.home)
        if rc.home:
            return rc
        return RelayConfig(home=(f"http://127.0.0.1:{self.home.config()['port']}",), directory=rc.directory, embedded=True)

    def relay_url(self, override: str | None = None) -> str:
        """``override`` (checked), else the primary home relay."""
        if override:
            return _check_url(override)
        return str(self.relays().home[0])


def _check_url(url: str, *, insecure: bool = False) -> str:
    """A relay URL in canonical form; plain http only to this machine unless ``insecure``.

    Raises:
        Fail: malformed, or plain http to another machine (exit 2, one line naming the URL and why).
    """
    from bridge.relay.urls import RelayUrlError, check_relay_url

    try:
        return check_relay_url(url, insecure=insecure or _insecure_default())
    except RelayUrlError as exc:
        raise Fail(str(exc), Exit.USAGE) from None


def _insecure_default() -> bool:
    """`--insecure` recorded in this home (config insecure_relays)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(Ctx) if ctx is not None else None
    return bool(obj is not None and obj.home.config().get("insecure_relays"))


def passphrase(*, confirm: bool = False) -> str:
    if os.environ.get("PARLEY_PASSPHRASE_FILE"):  # a systemd credential (`parley service install`)
        from bridge.cli_service import read_passphrase_file

        return read_passphrase_file(os.environ["PARLEY_PASSPHRASE_FILE"])
    value = os.environ.get("PARLEY_PASSPHRASE")
    if value is not None:
        if not value:
            raise Fail("PARLEY_PASSPHRASE is set but empty", Exit.USAGE)
        return value
    if not sys.stdin.isatty():
        raise Fail("no passphrase: set PARLEY_PASSPHRASE or run in a terminal", Exit.USAGE)
    value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise Fail("the passphrase cannot be empty", Exit.USAGE)
    return str(value)


def unlock(ctx: Ctx) -> Any:
    from bridge.keys import load_keyfile

    ctx.home.require()
    return load_keyfile(ctx.home.keys_file, passphrase())


def open_engine(ctx: Ctx, relay: str | None = None) -> Any:
    from bridge.engine import Engine
    from bridge.store import Store

    from bridge.identity.smart import verifier_from_config

    secrets = unlock(ctx)
    cfg = ctx.home.config()
    from bridge.engine.prekeys import PrekeyPolicy

    from bridge.homerelays import pointer_lookup

    rc = ctx.relays()
    home_relays = (ctx.relay_url(relay),) if relay else rc.home
    engine = Engine(
        Store(ctx.home.db_file), secrets, ctx.home.identity(), home_relays[0],
        verifier=verifier_from_config(cfg),
        home_relays=home_relays, directory_relays=rc.directory, reading_relays=rc.reading() if not relay else (),
        pointers=pointer_lookup(cfg),
    )
    engine.read_receipts = lambda: bool(ctx.home.config().get("read_receipts", True))  # type: ignore[method-assign]
    engine.prekeys.policy = PrekeyPolicy.from_config(cfg)  # rotation and grace as configured
    return engine


def _address_arg(value: str) -> str:
    from bridge.identity import IdentityError, checksum_address

    try:
        return checksum_address(value)
    except IdentityError:
        raise Fail(f"not an address: {value!r} (expected 0x followed by 40 hex digits)", Exit.USAGE) from None


def _fmt_time(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):  # outside what datetime can show: never fail a listing
        return f"@{ms}ms"


#: Characters from peers that a terminal would act on rather than show: C0 controls except newline
#: and tab, DEL, C1 controls (U+0080-U+009F: CSI, OSC, ST ... in their 8-bit forms), and the bidi
#: controls that reorder what is shown (Trojan Source: U+061C, U+200E/F, U+202A-E, U+2066-9).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    cp = ord(m.group())
    return f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}"


def terminal_safe(text: str, *, indent: str = "") -> str:
    """Peer text made harmless for a terminal: each unsafe character is shown as its escape
    (ESC as ``\\x1b``, U+202E as ``\\u202e``), and continuation lines are indented with ``indent``
    so a peer cannot forge a line that looks like the CLI's own. JSON output is never passed through this.
    """
    safe = _UNSAFE.sub(_escape, text)
    return safe.replace("\n", "\n" + indent) if indent else safe


# --- the command group ----------------------------------------------------------------


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line on stderr (the CLI contract), not click's
    three-line "Usage: / Try / Error:" block. Exit codes are click's (2 for usage errors)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see `{exc.ctx.command_path} --help`)"
            _die(exc.format_message().replace("\n", " ") + hint, exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            _interrupted()
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", "home", metavar="DIR", help="Parley home directory [env PARLEY_HOME; default: your user data dir].")
@click.option("-v", "--verbose", is_flag=True, help="Log what the bridge does to stderr.")
@click.version_option(package_name="parley", prog_name="parley")
@click.pass_context
def cli(click_ctx: click.Context, home: str | None, verbose: bool) -> None:
    """Parley: private, end-to-end encrypted messages between wallets.

    \b
    Quick start:
      parley init                       create your wallet and this installation
      parley run                        start the bridge (with an embedded relay)
      parley send 0xADDRESS "hello"     send a message
      parley messages 0xADDRESS         read a conversation

    The passphrase that protects your keys is read from PARLEY_PASSPHRASE, or asked for.
    """
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # werkzeug logs every request at INFO on its own handler; keep that for --verbose only.
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)
    click_ctx.obj = Ctx(resolve_home(home))


pass_ctx = click.make_pass_decorator(Ctx)


@cli.command()
@click.option("--generate", "source", flag_value="generate", default=True, help="Generate a new wallet (default).")
@click.option("--private-key-env", "key_env", metavar="VAR", help="Import the wallet from the hex private key in environment variable VAR.")
@click.option("--keystore", "keystore", type=click.Path(dir_okay=False, path_type=Path), help="Import the wallet from a Web3 Secret Storage v3 JSON file (password from PARLEY_KEYSTORE_PASSWORD or a prompt).")
@click.option(
    "--relay", "relays", metavar="URL", multiple=True,
    help="A home relay: it holds your inbox (repeat for up to 5; the first is primary; remembered). "
    "Default: the relay embedded in `parley run`, reachable from this machine only.",
)
@click.option("--insecure", is_flag=True, help="Allow plain http:// relays on other machines (remembered).")
@pass_ctx
@handle_errors
def init(ctx: Ctx, source: str, key_env: str | None, keystore: Path | None, relays: tuple[str, ...], insecure: bool) -> None:
    """Create this installation: a wallet (generated or imported) and installation keys, authorized by the wallet."""
    explicit_generate = click.get_current_context().get_parameter_source("source") == click.core.ParameterSource.COMMANDLINE
    if sum((bool(key_env), keystore is not None, explicit_generate)) > 1:
        raise Fail("choose one of --generate, --private-key-env and --keystore", Exit.USAGE)
    _initialise(ctx, key_env, keystore, relays, insecure)


def _initialise(ctx: Ctx, key_env: str | None, keystore: Path | None, relays: tuple[str, ...], insecure: bool) -> Any:
    """`parley init` (and `parley run --init`): create the installation; returns its unlocked Secrets."""
    from bridge import identity, keys
    from bridge.home import write_private
    from bridge.homerelays import MAX_HOME_RELAYS, checked_urls
    from bridge.relay.urls import RelayUrlError

    try:
        relays = checked_urls(relays, insecure=insecure, limit=MAX_HOME_RELAYS, what="home")
    except RelayUrlError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    home = ctx.home
    if home.keys_file.exists() or home.identity_file.exists():
        raise Fail(f"{home.path} already holds an installation; nothing was changed", Exit.USAGE)
    if key_env:
        wallet = keys.wallet_key_from_env(key_env)
    elif keystore:
        pw = os.environ.get("PARLEY_KEYSTORE_PASSWORD")
        if pw is None:
            if not sys.stdin.isatty():
                raise Fail("no keystore password: set PARLEY_KEYSTORE_PASSWORD or run in a terminal", Exit.USAGE)
            pw = click.prompt("Keystore password", hide_input=True)
        wallet = keys.wallet_key_from_keystore(keystore, pw)
    else:
        wallet = None
    pp = passphrase(confirm=True)
    secrets = keys.generate_secrets(wallet)
    address = secrets.address
    statement = identity.authorize_statement(address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    signed = identity.sign_statement(statement, secrets.wallet_key)
    home.create()
    keys.save_keyfile(home.keys_file, secrets, pp)
    ident = {
        "version": 1,
        "address": address,
        "did": identity.did(address),
        "installation_id": secrets.installation_id,
        "signing_pub": secrets.signing_pub.hex(),
        "identity_pub": secrets.identity_pub.hex(),
        "record": signed.to_record().hex(),
    }
    write_private(home.identity_file, json.dumps(ident, indent=2).encode() + b"\n")
    if relays:
        from bridge.homerelays import set_home_relays

        set_home_relays(home, relays, insecure=insecure)
    click.echo(f"initialised {home.path}")
    click.echo(f"address:      {address}")
    click.echo(f"did:          {ident['did']}")
    click.echo(f"installation: {secrets.installation_id}")
    from bridge.engine import Engine
    from bridge.relay.client import RelayError, RelayUnavailable
    from bridge.store import Store

    if not relays:
        click.echo("no relay configured: `parley run` embeds one (reachable from this machine only) and registers this installation with it")
        return secrets
    rc = ctx.relays()
    engine = Engine(
        Store(home.db_file), secrets, ident, rc.home[0], home_relays=rc.home, directory_relays=rc.directory, reading_relays=rc.reading()
    )
    try:
        engine.register()
        _mark_registered(engine)
        click.echo("registered on " + ", ".join(engine.home_relays))
    except (RelayUnavailable, RelayError) as exc:
        click.echo(f"not registered yet ({exc}); `parley run` or `parley sync` will register", err=True)
    return secrets


def _registration_key(engine: Any) -> bytes:
    return json.dumps([list(engine.home_relays), list(engine.directory_relays), engine.address]).encode()


def _mark_registered(engine: Any) -> None:
    with engine.store.write() as c:
        engine.store.set_meta(c, "registered_on", _registration_key(engine))


def _ensure_registered(engine: Any) -> None:
    """Register (statement, prekeys, relay list) unless done for exactly these relays already."""
    if engine.store.get_meta("registered_on") != _registration_key(engine):
        engine.register()
        _mark_registered(engine)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print {address, did, installation_id, relays} as JSON.")
@pass_ctx
@handle_errors
def whoami(ctx: Ctx, as_json: bool) -> None:
    """Show this installation's wallet address, DID and installation id (no passphrase needed)."""
    ctx.home.require()
    ident = ctx.home.identity()
    out: dict[str, Any] = {k: ident[k] for k in ("address", "did", "installation_id")}
    out["relays"] = ctx.relays().as_json()
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"address:      {out['address']}\ndid:          {out['did']}\ninstallation: {out['installation_id']}")
        click.echo("relays:       " + ", ".join(out["relays"]["home"]))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8738, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option("--db", "db", metavar="PATH_OR_URL", help="SQLite file path or sqlite:///path (default: relay.db in the user data dir), or a postgresql://user@host:port/dbname URL: several relay nodes may share one PostgreSQL database.")
@click.option("--retention-days", default=30, show_default=True, type=click.IntRange(1, 3650), help="Delete envelopes older than this.")
@click.option("--expire-interval", default=3600.0, show_default=True, type=click.FloatRange(1, 86400), help="Seconds between retention passes (each deletes in batches of 500).")
@click.option("--publish-rate", default=20.0, show_default=True, type=click.FloatRange(0.1, 1e6), help="Envelopes per second one client address may publish (burst: 5x).")
@click.option("--inbox-rate", default=10.0, show_default=True, type=click.FloatRange(0.01, 1e6), help="Envelopes per second one inbox may receive from all publishers together (429 inbox_rate_limited).")
@click.option("--inbox-burst", default=200, show_default=True, type=click.IntRange(1, 10**9), help="Envelopes one inbox may receive at once before --inbox-rate applies.")
@click.option("--inbox-max-envelopes", default=10_000, show_default=True, type=click.IntRange(1, 10**9), help="Quota: envelopes one inbox may hold until retention deletes them (429 inbox_full).")
@click.option("--inbox-max-mib", default=64, show_default=True, type=click.IntRange(1, 10**6), help="Quota: MiB of payload one inbox may hold (429 inbox_full).")
@click.option("--blob-quota-mib", default=256, show_default=True, type=click.IntRange(1, 10**7), help="Quota: MiB of attachment blobs one inbox may hold (429 blob_quota).")
@click.option("--blob-ttl-days", default=None, type=click.IntRange(1, 3650), help="Delete attachment blobs older than this (default: --retention-days).")
@click.option("--backup-quota-mib", default=1024, show_default=True, type=click.IntRange(1, 10**7), help="Quota: MiB one backup vault may hold, uploads in progress included (429 backup_quota).")
@click.option("--backup-ttl-days", default=180, show_default=True, type=click.IntRange(1, 36500), help="Delete backup vaults nobody has used (read or written) for this many days.")
@click.option("--tls-cert", "tls_cert", metavar="FILE", type=click.Path(dir_okay=False), help="Serve https/wss with this PEM certificate chain (e.g. certbot's fullchain.pem); needs --tls-key.")
@click.option("--tls-key", "tls_key", metavar="FILE", type=click.Path(dir_okay=False), help="The PEM private key of --tls-cert (e.g. certbot's privkey.pem).")
@click.option(
    "--trusted-proxies", default=0, show_default=True, type=click.IntRange(0, 10), envvar="PARLEY_RELAY_TRUSTED_PROXIES", show_envvar=True,
    help="Number of reverse proxies in front of the relay whose X-Forwarded-For/-Proto headers are believed, so rate "
    "limits apply to the real client. 0: use the TCP peer (the only safe value without a proxy: anyone can send the headers).",
)
@click.option(
    "--server", "model", type=click.Choice(["gevent", "threaded"]), default="gevent", show_default=True,
    help="Serving model: gevent (one process, a greenlet pair per WebSocket; holds 10,000 subscribers) "
    "or threaded (werkzeug, two OS threads per WebSocket; for small deployments).",
)
@click.pass_context
@handle_errors
def relay(click_ctx: click.Context, host: str, port: int, db: str | None, retention_days: int, expire_interval: float,
          publish_rate: float, inbox_rate: float, inbox_burst: int, inbox_max_envelopes: int, inbox_max_mib: int,
          blob_quota_mib: int, blob_ttl_days: int | None, backup_quota_mib: int, backup_ttl_days: int, tls_cert: str | None, tls_key: str | None, trusted_proxies: int, model: str) -> None:
    """Run a relay node: stores and forwards sealed envelopes it cannot read.

    Operators: docs/RELAY.md (TLS, reverse proxies, systemd, PostgreSQL, monitoring with /healthz
    and /metrics).
    """
    import platformdirs

    from bridge.relay import serving

    if (tls_cert is None) != (tls_key is None):
        raise Fail("--tls-cert and --tls-key go together", Exit.USAGE)
    ssl_context = None
    if tls_cert is not None and tls_key is not None:
        from bridge.relay.tls import TlsConfigError, server_context

        try:
            ssl_context = server_context(tls_cert, tls_key)  # checked before the re-exec: errors show once
        except TlsConfigError as exc:
            raise Fail(str(exc), Exit.USAGE) from None
    if db is None:
        d = Path(platformdirs.user_data_dir("parley-relay", appauthor=False))
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = str(d / "relay.db")
    if model == "gevent" and not serving.gevent_patched():
        # gevent must patch the standard library before anything else is imported: start over in
        # a patched interpreter (same PID, same stdout; see bridge/relay/serving.py).
        root = click_ctx.find_root().params
        args = ["-v"] if root.get("verbose") else []
        args += ["relay", *_command_args(click_ctx, db=db, model="gevent")]
        try:
            serving.reexec_patched(args)
        except OSError as exc:
            raise Fail(f"cannot start the gevent relay: {exc}", Exit.ERROR) from None
    from bridge.relay.server import RelaySettings, serve
    from bridge.relay.storage import StorageError

    shown_db = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", db)  # never print a database password
    scheme = "https" if ssl_context is not None else "http"

    def ready(bound_host: str, bound_port: int) -> None:
        click.echo(f"relay listening on {scheme}://{bound_host}:{bound_port} (db: {shown_db})")
        sys.stdout.flush()

    try:
        settings = RelaySettings(
            retention_days=retention_days,
            expire_interval=expire_interval,
            publish_rate=publish_rate,
            publish_burst=max(1, int(publish_rate * 5)),
            inbox_rate=inbox_rate,
            inbox_burst=inbox_burst,
            topic_max_envelopes=inbox_max_envelopes,
            topic_max_bytes=inbox_max_mib * 1024 * 1024,
            blob_quota_bytes=blob_quota_mib * 1024 * 1024,
            blob_ttl_days=blob_ttl_days,
            backup_quota_bytes=backup_quota_mib * 1024 * 1024,
            backup_ttl_days=backup_ttl_days,
            trusted_proxies=trusted_proxies,
            # Each idle subscription wakes every ws_poll_interval (delivery, client frames such as
            # pings, and the peer's close wake it at once: bench/README.md "Subscription ping → pong").
            # 0.5 s costs 42 % CPU at 5,000 subscribers; 5 s costs 5 % (bench/README.md).
            ws_poll_interval=5.0,
        )
        serve(host, port, db, settings=settings, ready_callback=ready, model=model, ssl_context=ssl_context)
    except serving.ServingError as exc:
        raise Fail(str(exc), Exit.ERROR) from None
    except StorageError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    except OSError as exc:
        raise Fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", Exit.ERROR) from None


def _command_args(click_ctx: click.Context, **override: Any) -> list[str]:
    """The options of the running command, as command-line arguments that reproduce them (every
    option of the command, so none is lost when ``parley relay`` re-executes itself)."""
    out: list[str] = []
    for param in click_ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None or param.name == "help":
            continue
        value = override.get(param.name, click_ctx.params.get(param.name))
        if value is None:
            continue
        if param.is_flag and not param.secondary_opts:
            if value:
                out.append(param.opts[0])
            continue
        out += [param.opts[0], repr(value) if isinstance(value, float) else str(value)]
    return out


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), help=f"Port on 127.0.0.1 [default: config, else {DEFAULT_PORT}].")
@click.option(
    "--relay", "relay", metavar="URL",
    help="Make URL the home relay (remembered, as `parley relays set URL`). None recorded: embed a relay on the same port (this machine only).",
)
@click.option("--insecure", is_flag=True, help="Allow a plain http:// relay on another machine (remembered).")
@click.option(
    "--init", "init_if_needed", is_flag=True,
    help="No installation in the home yet: create one first (as `parley init`; the passphrase is asked for once, "
    "with confirmation, and unlocks the bridge too).",
)
@pass_ctx
@handle_errors
def run(ctx: Ctx, port: int | None, relay: str | None, insecure: bool, init_if_needed: bool) -> None:
    """Run the bridge daemon: receives live from every home relay, retries the outbox, serves the local API.

    One bridge per home: a second `parley run` for the same home is refused (exit 1).
    """
    from bridge.daemon import AlreadyRunning, HomeLock, PortUnavailable, run_daemon

    relay_url = _check_url(relay, insecure=insecure) if relay else None
    secrets = None
    if init_if_needed and not ctx.home.exists():
        # `make run` on a fresh checkout: one passphrase prompt (with confirmation), not init's then run's
        secrets = _initialise(ctx, None, None, (), False)
    ctx.home.require()
    cfg = ctx.home.config()  # checked before the passphrase is asked for
    try:
        lock = HomeLock(ctx.home).acquire()  # one bridge per home, held until this process ends
    except AlreadyRunning as exc:
        raise Fail(str(exc), Exit.ERROR) from None
    if insecure:
        ctx.home.update_config(insecure_relays=True)
    if secrets is None:
        secrets = unlock(ctx)
    port = cfg["port"] if port is None else port
    try:
        run_daemon(ctx.home, secrets, port=port, relay_url=relay_url, echo=lambda s: click.echo(s) or sys.stdout.flush())
    except PortUnavailable as exc:
        raise Fail(str(exc), Exit.ERROR) from None
    finally:
        lock.release()


def _daemon(ctx: Ctx) -> Any:
    from bridge.daemon import DaemonClient

    return DaemonClient.find(ctx.home)


@cli.command()
@click.argument("recipient")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print the message as JSON.")
@click.option("--reply-to", "reply_to", metavar="ID", help="Send it as a reply to message ID of this conversation (shown with a quote).")
@click.option("--file", "files", metavar="PATH", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Attach the file at PATH (up to 25 MB; repeat for several). TEXT may then be \"\" (it is the caption).")
@pass_ctx
@handle_errors
def send(ctx: Ctx, recipient: str, text: str, as_json: bool, reply_to: str | None, files: tuple[Path, ...]) -> None:
    """Send TEXT to RECIPIENT: a 0x address, lens:NAME (or lens/NAME, NAME.lens), NAME.eth,
    farcaster:FID|FNAME, or a contact name. --reply-to ID answers a message; --file PATH attaches files.

    With the daemon running, it sends for you (no passphrase needed); otherwise the keys are unlocked
    here. If the relay is unreachable the message stays queued (exit 3) and goes out on the next
    `parley sync` or while `parley run` is up. A name that cannot be resolved exits 3 with the name
    service's reason; a malformed one exits 2.
    """
    from bridge.relay.client import RelayUnavailable

    ctx.home.require()
    resolution = _recipient(ctx, recipient, ctx.relay_url())
    peer = resolution.address if resolution is not None else _address_arg(recipient)
    if resolution is not None and not as_json:
        click.echo(_describe(resolution))
    daemon = None if reply_to or files else _daemon(ctx)
    if reply_to or files:  # issue 12: through the local API's messages.send (bridge/cli_messages.py)
        from bridge.cli_messages import send_rich

        result = send_rich(ctx, peer, text, reply_to, files)
    elif daemon is not None:
        result = daemon.send(peer, text)
    else:
        engine = open_engine(ctx)
        try:
            _ensure_registered(engine)
        except RelayUnavailable as exc:
            # Registration is retried by the next command. None of our home relays answered: the
            # peer's identity would be asked of them next, so the message is queued now rather than
            # after a second wait for the same relays.
            result = {"message": engine.queue(peer, text), "delivered": False, "error": str(exc)}
        else:
            r = engine.send(peer, text)
            result = {"message": r.message, "delivered": r.delivered, "error": r.error}
    msg = result["message"]
    if as_json:
        out = {**{k: msg[k] for k in ("id", "sender", "recipient", "text", "sent_at", "direction", "state")}, "delivered": result["delivered"]}
        if resolution is not None:
            out["resolution"] = resolution.to_dict()
        click.echo(json.dumps(out))
    elif result["delivered"]:
        click.echo(f"sent {msg['id']} to {msg['recipient']}")
    if not result["delivered"]:
        reason = result.get("error") or "not delivered yet"
        if msg["state"] == "failed":  # given up for good: saying "it will be retried" would be untrue
            raise Fail(f"not sent {msg['id']}: {reason}", Exit.UNREACHABLE)
        raise Fail(f"queued {msg['id']}: {reason}; it will be retried", Exit.UNREACHABLE)


def _recipient(ctx: Ctx, value: str, relay_url: str) -> Any:
    """Resolve a recipient name (docs/PROTOCOL.md "Names"); None for a 0x address (checked by the caller).

    Among several candidates the one registered on ``relay_url`` wins (asked by bucket, never by address:
    PROTOCOL.md §6.5).

    Raises:
        Fail: malformed, or a plain name not in the contacts (exit 2); unknown to its name service or the
            service unreachable (exit 3); contacts file unreadable (exit 1).
    """
    if value.lower().startswith("0x"):
        return None
    from bridge import identity
    from bridge.identity.smart import verifier_from_config
    from bridge.relay.client import RelayClient
    from bridge.resolve import ResolveError, Resolver

    cfg = ctx.home.config()
    verifier = verifier_from_config(cfg)
    client = RelayClient(relay_url)

    def registered(address: str) -> bool:
        return bool(identity.installations(address, client.logs_by_bucket([address])[address].records, verifier=verifier))

    try:
        return Resolver.for_home(ctx.home.path, cfg, registered=registered).resolve(value)
    except ResolveError as exc:
        if exc.reason == "malformed" or (exc.reason == "unknown" and exc.source == "contacts"):
            code = Exit.USAGE  # not a name any service could resolve: bad input
        else:
            code = Exit.ERROR if exc.reason == "contacts" else Exit.UNREACHABLE
        raise Fail(str(exc), code) from None


def _describe(r: Any) -> str:
    """One line: how a name was resolved and why that address."""
    line = f"{r.peer} → {r.address} ({r.source}"
    if len(r.candidates) > 1:
        line += f", {len(r.candidates)} candidates: " + ", ".join(
            f"{c.role} {c.address}{' (registered)' if f else ''}" for c, f in zip(r.candidates, r.registered)
        )
    line += f"; {r.reason})"
    return terminal_safe(line + (" [stale]" if r.stale else ""))  # names come from name services: not trusted


#: `parley sync` says how far it got once this many envelopes were taken in (a backlog).
_SYNC_PROGRESS_FROM = 500


def _sync_progress() -> tuple[Callable[[int], None], Callable[[], None]]:
    """``(show(n), finish())`` for taking in a backlog: on a terminal one line on stderr, rewritten
    in place; elsewhere a line every 5,000 envelopes. Nothing for fewer than _SYNC_PROGRESS_FROM.
    The relays do not say how many wait, so it counts up rather than showing a bar."""
    shown = [0]
    tty = sys.stderr.isatty()

    def show(n: int) -> None:
        if n < _SYNC_PROGRESS_FROM:
            return
        if tty:
            click.echo(f"\rreceiving: {n:,} envelope(s) taken in", nl=False, err=True)
            shown[0] = n
        elif n // 5000 > shown[0] // 5000:
            click.echo(f"receiving: {n:,} envelope(s) taken in", err=True)
            shown[0] = n

    def finish() -> None:
        if tty and shown[0]:
            click.echo(err=True)

    return show, finish


@cli.command()
@pass_ctx
@handle_errors
def sync(ctx: Ctx) -> None:
    """Fetch and process everything pending on the relay, send what is queued, then exit."""
    from bridge.engine import inbox
    from bridge.store import Store

    ctx.home.require()

    def quarantined() -> int:
        store = Store(ctx.home.db_file)
        try:
            return inbox.quarantine_count(store)
        finally:
            store.close()

    daemon = _daemon(ctx)
    if daemon is not None:
        before = quarantined()
        result = daemon.sync()
    else:
        engine = open_engine(ctx)  # unlocks first: a wrong passphrase touches no file
        before = inbox.quarantine_count(engine.store)
        _ensure_registered(engine)
        show, finish = _sync_progress()
        try:
            result = engine.sync_report(progress=show)
        finally:
            finish()
    click.echo(f"received {result['received']} new message(s); {result['pending']} waiting to be sent")
    rejected = quarantined() - before
    if rejected > 0:
        click.echo(f"{rejected} envelope(s) could not be read and were quarantined (see `parley status`)")
    if result["pending"]:
        raise Fail(f"{result['pending']} message(s) could not be sent yet; they will be retried", Exit.UNREACHABLE)


@cli.command()
@click.argument("peer")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of messages: {id, sender, recipient, text, sent_at, direction, state, read, flag, kind, reply_to, reactions, edited, deleted, attachments, ...}.")
@pass_ctx
@handle_errors
def messages(ctx: Ctx, peer: str, as_json: bool) -> None:
    """Show the conversation with PEER in arrival order (reads the local store; no passphrase needed).
    PEER is anything `send` takes: a 0x address, a contact name, lens:NAME, NAME.eth, farcaster:FID|FNAME.

    Control characters in message text (escape sequences, C1 controls, bidi overrides) are shown
    escaped, e.g. ESC as \\x1b; --json prints the text exactly as received. A message whose sender's
    installation later turned out revoked or unregistered is marked with a warning line (JSON: flag).
    """
    from bridge.engine import messages_of
    from bridge.store import Store

    ctx.home.require()
    resolution = _recipient(ctx, peer, ctx.relay_url())  # the names `send` takes (contacts first)
    address = resolution.address if resolution is not None else _address_arg(peer)
    rows = messages_of(Store(ctx.home.db_file), address)
    if as_json:
        from bridge.cli_messages import message_json  # issue 12: the message dict's new fields

        click.echo(json.dumps([message_json(m) for m in rows]))
        return
    if not rows:
        click.echo(f"no messages with {address}")
    for m in rows:
        arrow = "→" if m["direction"] == "out" else "←"
        marks = [m["state"]] if m["state"] in ("queued", "failed", "read") else []
        if m.get("edited") and not m.get("deleted"):
            marks.append("edited")
        suffix = f"  ({', '.join(marks)})" if marks else ""
        prefix = f"{_fmt_time(m['sent_at'])} {arrow} "
        pad = " " * len(prefix)
        quote = m.get("reply_preview")
        if quote:
            said = "a deleted message" if quote.get("deleted") else f"“{quote.get('text', '')}”"
            click.echo(f"{pad}↪ {terminal_safe(said)}")
        # Peer text is hostile: no control sequence reaches the terminal (JSON above stays exact).
        if m.get("deleted"):
            text = "[this message was deleted]"
        elif m.get("unsupported"):
            text = f"{m['text']}  [{m.get('content_type', 'unknown')}: not supported by this version]"
        else:
            text = m["text"]
        if text:
            click.echo(f"{prefix}{terminal_safe(text, indent=pad)}{suffix}")
        else:
            click.echo(f"{prefix.rstrip()}{suffix}")
        for a in m.get("attachments") or []:
            click.echo(f"{pad}📎 {terminal_safe(a['name'])} ({a['size']} bytes, {a.get('state', '?')}) id {a['id']}")
        reactions = m.get("reactions") or {}
        if reactions:
            click.echo(pad + "  ".join(f"{terminal_safe(e)} {len(who)}" for e, who in reactions.items()))
        if m["flag"]:
            click.echo(f"{pad}! not verified: {terminal_safe(m['flag'])}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print {address, installation_id, daemon, inbox (cursor, cursors per relay, quarantine), outbox} as JSON.")
@pass_ctx
@handle_errors
def status(ctx: Ctx, as_json: bool) -> None:
    """Show the inbox (cursor, quarantined envelopes) and the outbox (pending, backing off, failed).

    Reads the local store; no passphrase needed. An envelope that could not be taken in (malformed,
    forged, or one that made the bridge fail) is quarantined: kept for diagnosis, counted here, and
    the messages behind it still arrive.
    """
    from bridge.engine import inbox, outbox
    from bridge.protocol.ids import inbox_topic
    from bridge.store import Store

    ctx.home.require()
    ident = ctx.home.identity()
    store = Store(ctx.home.db_file)  # creates an empty store if nothing ran yet: the figures are then 0
    try:
        topic = inbox_topic(ident["installation_id"])
        rc = ctx.relays()
        # One cursor per relay read (each relay numbers its envelopes itself; engine.stream).
        cursors = {r["topic"][len(topic) + 1 :]: r["cursor"] for r in store.read("SELECT topic, cursor FROM cursors WHERE topic LIKE ?", (topic + "@%",))}
        out = {
            "address": ident["address"],
            "installation_id": ident["installation_id"],
            "daemon": None,
            "inbox": {
                "cursor": cursors.get(rc.home[0], 0),
                "cursors": {url: cursors.get(url, 0) for url in rc.reading()},
                "quarantined": inbox.quarantine_count(store),
                "recent_quarantine": inbox.quarantined(store),
            },
            "outbox": {
                **outbox.counts(store),
                "deliveries_pending": store.read("SELECT COUNT(*) AS n FROM outbox_deliveries WHERE state = 'pending'")[0]["n"],
            },
        }
    finally:
        store.close()
    daemon = _daemon(ctx)
    out["daemon"] = {"running": daemon is not None, "url": daemon.url if daemon is not None else None}
    if as_json:
        click.echo(json.dumps(out))
        return
    q, o = out["inbox"], out["outbox"]
    click.echo(f"address:      {out['address']}\ninstallation: {out['installation_id']}")
    click.echo(f"daemon:       {'running at ' + daemon.url if daemon is not None else 'not running'}")
    shown = ", ".join(f"{n} on {url}" for url, n in q["cursors"].items()) if len(q["cursors"]) > 1 else str(q["cursor"])
    click.echo(f"inbox:        cursor {shown}; {q['quarantined']} envelope(s) quarantined")
    for e in q["recent_quarantine"]:
        click.echo(f"  quarantined envelope {e['cursor']} at {_fmt_time(e['at'])}: {terminal_safe(e['error'])}")
    line = f"outbox:       {o['pending']} waiting to be sent"
    if o["backing_off"]:
        line += f" ({o['backing_off']} backing off, next retry {_fmt_time(o['next_attempt_at'])})"
    click.echo(f"{line}; {o['failed']} failed; {o['sent']} sent")
    if o["deliveries_pending"]:
        click.echo(f"              {o['deliveries_pending']} envelope(s) still to reach a recipient's other relays")


@cli.command("can-message")
@click.argument("address")
@click.option("--relay", "relay", metavar="URL", help="Ask this relay instead of the configured one.")
@pass_ctx
@handle_errors
def can_message(ctx: Ctx, address: str, relay: str | None) -> None:
    """Exit 0 if ADDRESS (a 0x address or any name `send` takes) has a Parley installation on your home
    or directory relays (or on --relay), 3 if not (or the relays or the name's source are unreachable)."""
    from bridge import identity
    from bridge.identity.smart import verifier_from_config
    from bridge.relay.client import RelayClient

    from bridge.relay.client import RelayError, RelayUnavailable

    rc = ctx.relays()
    asked = [ctx.relay_url(relay)] if relay else list(dict.fromkeys([*rc.home, *rc.directory]))
    resolution = _recipient(ctx, address, asked[0])
    peer = resolution.address if resolution is not None else _address_arg(address)
    if resolution is not None:
        click.echo(_describe(resolution))
    # Our home relays, then the directory (PROTOCOL.md §6.6), until one has an active installation;
    # each asked by bucket, never by address (§6.5): a relay must not learn whom we may write to.
    failures: list[str] = []
    for url in asked:
        try:
            records = RelayClient(url).logs_by_bucket([peer])[peer].records
        except (RelayUnavailable, RelayError) as exc:
            failures.append(str(exc))
            continue
        active = identity.installations(peer, records, verifier=verifier_from_config(ctx.home.config()))
        if active:
            click.echo(f"{peer} can receive messages ({len(active)} installation{'s' if len(active) != 1 else ''}; found on {url})")
            return
    if failures and len(failures) == len(asked):
        raise RelayUnavailable("; ".join(failures))
    reason = f" ({'; '.join(failures)})" if failures else ""
    raise Fail(f"{peer} is not registered on {', '.join(asked)}{reason}", Exit.UNREACHABLE)


@cli.command()
@click.argument("installation_id", required=False)
@pass_ctx
@handle_errors
def revoke(ctx: Ctx, installation_id: str | None) -> None:
    """Revoke an installation of your wallet (default: this one). Senders stop encrypting to it."""
    from bridge import identity
    from bridge.protocol.ids import is_installation_id

    engine = open_engine(ctx)
    if ctx.home.identity().get("wallet") == "browser":
        raise Fail(
            f"this installation speaks for {engine.address}, whose key is in your browser wallet: "
            "the wallet signs the revocation on the sign-in page; run `parley signin` and open the link "
            "in the browser that has your wallet",
            Exit.USAGE,
        )
    iid = installation_id or engine.installation_id
    if not is_installation_id(iid):
        raise Fail(f"not an installation id: {iid!r}", Exit.USAGE)
    signed = identity.sign_statement(identity.revoke_statement(engine.address, iid), engine.secrets.wallet_key)
    engine.publish_record(engine.address, signed.to_record())
    click.echo(f"revoked installation {iid} of {engine.address}")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"home": [...], "directory": [...], "reading": [...]}.')
@click.pass_context
@handle_errors
def relays(click_ctx: click.Context, as_json: bool) -> None:
    """Show the relays this home uses: home relays hold your inbox (the first is primary), directory
    relays are where identities are looked up, and reading lists every relay read now (home relays
    and replaced ones still in their grace period)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Ctx = click_ctx.find_object(Ctx)
    rc = ctx.relays()
    out = rc.as_json()
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo("home:      " + (", ".join(out["home"]) + (" (embedded: this machine only)" if rc.embedded else "")))
    click.echo("directory: " + (", ".join(out["directory"]) or "none"))
    click.echo("reading:   " + ", ".join(out["reading"]))


def _apply_relays(ctx: Ctx) -> None:
    """Tell the running daemon, or do it here: publish our new relay list and register on new relays."""
    daemon = _daemon(ctx)
    if daemon is not None:
        daemon.reload_relays()
        return
    ctx.home.require()
    engine = open_engine(ctx)
    engine.register()
    _mark_registered(engine)


@relays.command("set")
@click.argument("urls", nargs=-1, required=True, metavar="URL [URL...]")
@click.option("--insecure", is_flag=True, help="Allow plain http:// relays on other machines (remembered).")
@pass_ctx
@handle_errors
def relays_set(ctx: Ctx, urls: tuple[str, ...], insecure: bool) -> None:
    """Make URL... your home relays (1 to 5; the first is primary) and publish a new signed relay list.
    The relays you leave are still read for `relay_grace_days` (default 14), so nothing in flight is lost."""
    from bridge.homerelays import RelayUrlError, set_home_relays

    ctx.home.require()
    try:
        rc = set_home_relays(ctx.home, urls, insecure=insecure)
    except RelayUrlError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    _apply_relays(ctx)
    click.echo("home relays: " + ", ".join(rc.home))
    left = [u for u in rc.reading() if u not in rc.home]
    if left:
        click.echo("still reading (grace period): " + ", ".join(left))


@relays.command("directory")
@click.argument("urls", nargs=-1, metavar="[URL...]")
@click.option("--clear", is_flag=True, help="Use no directory relay.")
@click.option("--insecure", is_flag=True, help="Allow plain http:// relays on other machines (remembered).")
@pass_ctx
@handle_errors
def relays_directory(ctx: Ctx, urls: tuple[str, ...], clear: bool, insecure: bool) -> None:
    """Set the directory relays: where you and senders look up identities not found on home relays
    (like Nostr's indexer relays). PARLEY_DIRECTORY_RELAYS (comma-separated) overrides them."""
    from bridge.homerelays import RelayUrlError, set_directory_relays

    ctx.home.require()
    if bool(urls) == clear:
        raise Fail("name directory relay URLs, or pass --clear", Exit.USAGE)
    try:
        rc = set_directory_relays(ctx.home, urls, insecure=insecure)
    except RelayUrlError as exc:
        raise Fail(str(exc), Exit.USAGE) from None
    _apply_relays(ctx)
    click.echo("directory relays: " + (", ".join(rc.directory) or "none"))


# --- parley doctor (issue 11): one self-contained block; the checks live in bridge/doctor.py -------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON list of {source, setting, url, status, detail, ms}.")
@pass_ctx
@handle_errors
def doctor(ctx: Ctx, as_json: bool) -> None:
    """Check every configured source: the Lens API, each chain RPC (its chain id), the Farcaster hub,
    and the home and directory relays. One line each: ok, failed (why) or off. Exits 1 when any
    configured source fails."""
    from bridge.doctor import format_line, run_checks

    checks = run_checks(ctx.home)
    if as_json:
        click.echo(json.dumps([c.as_json() for c in checks], indent=2))
    else:
        width = max((len(c.source) for c in checks), default=0)
        for c in checks:
            click.echo(format_line(c, width))
    failed = [c for c in checks if c.status == "failed"]
    if failed:
        if not as_json:
            click.echo(f"{len(failed)} of {sum(c.status != 'off' for c in checks)} configured sources failed", err=True)
        raise SystemExit(Exit.ERROR)


def main(argv: list[str] | None = None) -> None:
    import bridge.cli_config  # noqa: F401  (registers config)
    import bridge.cli_local  # noqa: F401  (registers pair, open, contacts)
    import bridge.cli_service  # noqa: F401  (registers service install)
    import bridge.cli_attachments  # noqa: F401  (registers attachment save)
    import bridge.cli_messages  # noqa: F401  (issue 12)
    import bridge.cli_backup  # noqa: F401  (issue 15: backup export, import)
    import bridge.cli_restore  # noqa: F401  (issue 15: restore, backup remote)
    import bridge.cli_transfer  # noqa: F401  (issue 15: transfer send, receive)

    try:
        try:
            cli.main(args=argv, prog_name="parley")
        finally:
            sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe prints a traceback
    except BrokenPipeError:
        _broken_pipe()
