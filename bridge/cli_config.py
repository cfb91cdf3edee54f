"""``parley config list|get|set|unset``: the home's settings (config.json), checked by bridge/config.py."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from bridge.cli import Ctx, Exit, Fail, _apply_relays, cli, handle_errors, pass_ctx, terminal_safe

__all__ = ["config"]


def _effective(ctx: Ctx) -> list[dict[str, Any]]:
    """Every setting: its value in effect and where it comes from (default, config, env VAR)."""
    from bridge import nameservices
    from bridge.config import env_var
    from bridge.home import SETTINGS

    stored = ctx.home.config_file_values()
    out = []
    for s in SETTINGS:
        var = env_var(s.name)
        raw = os.environ.get(var) if var else None
        if raw is not None and raw.strip():
            value: Any = [u.strip() for u in raw.split(",") if u.strip()] if s.name == "directory_relays" else raw
            source = f"env {var}"
        elif s.name in stored:
            value, source = stored[s.name], "config"
        else:
            value, source = s.default, "default"
            if s.name in nameservices.DEFAULTS and nameservices.endpoint(s.name, {s.name: s.default}, os.environ, None) is None:
                value, source = None, f"default, off by {nameservices.DEFAULTS_SWITCH}=off"
        out.append({"name": s.name, "value": value, "source": source, "env": var, "help": s.help})
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return terminal_safe(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return terminal_safe(",".join(value))
    return terminal_safe(json.dumps(value))


@cli.group("config")
def config() -> None:
    """Show and change this home's settings (config.json): every one is checked, and an unknown
    name is refused with the closest known one.

    \b
      parley config list                    every setting, its value and where it comes from
      parley config get port
      parley config set port 8740
      parley config set relays https://a.example,https://b.example
      parley config unset port              back to the default
    """


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print {NAME: {"value": …, "source": "default"|"config"|"env VAR"}} as JSON.')
@pass_ctx
@handle_errors
def config_list(ctx: Ctx, as_json: bool) -> None:
    """Every setting with its value and its source: default, config (config.json) or env VAR
    (an environment variable overrides config.json)."""
    rows = _effective(ctx)
    if as_json:
        click.echo(json.dumps({r["name"]: {"value": r["value"], "source": r["source"]} for r in rows}))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {_show(r['value']) or '(empty)'}  [{r['source']}]")


@config.command("get")
@click.argument("name")
@pass_ctx
@handle_errors
def config_get(ctx: Ctx, name: str) -> None:
    """Print setting NAME's value in effect (a string as is, a list comma-separated, anything else as JSON)."""
    from bridge.config import setting

    setting(name)
    row = next(r for r in _effective(ctx) if r["name"] == name)
    click.echo(_show(row["value"]))


@config.command("set")
@click.argument("name")
@click.argument("value")
@pass_ctx
@handle_errors
def config_set(ctx: Ctx, name: str, value: str) -> None:
    """Set NAME to VALUE in config.json, checked first (nothing is written when it is refused).

    VALUE is read as the setting's type: true/false (also yes/no, on/off, 1/0), a number, or a
    string. A list setting (relays, directory_relays, extension_ids) takes a comma-separated VALUE;
    "" is the empty list. Setting relays or directory_relays is `parley relays set` / `parley relays
    directory`: URLs are checked and a running bridge is told.
    """
    from bridge.config import MANAGED, parse_value, setting

    setting(name)
    if name in MANAGED:
        raise Fail(f"{name} is not set by hand: {MANAGED[name]}", Exit.USAGE)
    parsed = parse_value(name, value)
    if name in ("relays", "directory_relays"):
        from bridge.homerelays import RelayUrlError, set_directory_relays, set_home_relays

        ctx.home.require()
        try:
            if name == "relays":
                set_home_relays(ctx.home, parsed)
            else:
                set_directory_relays(ctx.home, parsed)
        except RelayUrlError as exc:
            raise Fail(str(exc), Exit.USAGE) from None
        _apply_relays(ctx)
    else:
        ctx.home.create()
        ctx.home.update_config(**{name: parsed})
    _report(ctx, name)


@config.command("unset")
@click.argument("name")
@pass_ctx
@handle_errors
def config_unset(ctx: Ctx, name: str) -> None:
    """Remove NAME from config.json: its default applies again. A name config.json holds but no
    setting has (a misspelling) is removed too."""
    from bridge.config import MANAGED, setting

    stored = ctx.home._read_json(ctx.home.config_file)  # unchecked: unset is how a bad key is removed
    if name not in stored:
        setting(name)  # an unknown name that is not in the file either: say so
        click.echo(f"{name} is not set in {ctx.home.config_file}")
        return
    if name in MANAGED:
        raise Fail(f"{name} is not set by hand: {MANAGED[name]}", Exit.USAGE)
    ctx.home.unset_config(name)
    from bridge.home import SETTINGS

    if any(s.name == name for s in SETTINGS):
        _report(ctx, name)
    else:
        click.echo(f"removed {name} from {ctx.home.config_file}")


def _report(ctx: Ctx, name: str) -> None:
    row = next(r for r in _effective(ctx) if r["name"] == name)
    click.echo(f"{name} = {_show(row['value']) or '(empty)'} [{row['source']}]")
    if row["source"].startswith("env ") and ctx.home.config_file_values().get(name, object()) != row["value"]:
        click.echo(f"note: {row['env']} is set: it overrides config.json in this environment", err=True)
