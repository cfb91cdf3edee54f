"""contrib/parley-relay.service (docs/RELAY.md) stays runnable: it parses as a unit, its ExecStart runs
`parley relay` with options that command accepts (values included), and every `--option` the file
mentions, comments too, exists in `parley relay --help`."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import click

from tests.procs import ROOT, parley

UNIT = ROOT / "contrib" / "parley-relay.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    return parser["Service"]


def test_exec_start_runs_parley_relay_with_options_it_accepts() -> None:
    from bridge.cli import cli

    svc = _service()
    argv = shlex.split(svc["ExecStart"].replace("${STATE_DIRECTORY}", "/var/lib/parley-relay"))
    assert Path(argv[0]).name == "parley" and argv[1] == "relay", argv
    relay = cli.commands["relay"]  # type: ignore[attr-defined]
    with relay.make_context("relay", argv[2:]) as ctx:  # raises click.UsageError on an unknown option or a bad value
        assert ctx.params["trusted_proxies"] == 1 and ctx.params["db"] == "/var/lib/parley-relay/relay.db"
    assert svc["StateDirectory"] == "parley-relay" and svc["DynamicUser"] == "yes"
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert key in svc, key


def test_every_option_the_unit_mentions_exists() -> None:
    help_text = parley(None, "relay", "--help", check=True).stdout
    lines = [line for line in UNIT.read_text().splitlines() if "systemctl" not in line]  # (systemctl's own --now)
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", "\n".join(lines)))
    assert {"--tls-cert", "--tls-key", "--trusted-proxies", "--db"} <= mentioned
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", help_text))
    assert mentioned - known == set()


def test_an_unknown_option_would_be_caught() -> None:
    """The check itself: click refuses an option `parley relay` does not have."""
    from bridge.cli import cli

    try:
        cli.commands["relay"].make_context("relay", ["--no-such-option", "1"])  # type: ignore[attr-defined]
    except click.UsageError as exc:
        assert "--no-such-option" in str(exc)
    else:
        raise AssertionError("an unknown option was accepted")
