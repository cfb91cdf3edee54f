"""`parley service install` (a systemd user unit) and PARLEY_PASSPHRASE_FILE, with real processes."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from bridge.cli_service import _quote, unit_text
from bridge.home import Home
from tests.procs import PASSPHRASE, Proc, parley

pytestmark = pytest.mark.timeout(180)


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("svc") / "home"
    parley(h, "init", check=True)
    Home(h).update_config(port=0)  # the unit's `parley run` takes the port from the config: any free one
    return h


def test_install_writes_the_user_unit_under_xdg_config_home(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    r = parley(home, "--home", str(home), "service", "install", XDG_CONFIG_HOME=str(xdg))
    assert r.returncode == 0, r.stderr
    target = xdg / "systemd" / "user" / "parley.service"
    assert f"wrote {target}" in r.stdout and "systemctl --user enable --now parley" in r.stdout
    assert str(xdg / "parley" / "passphrase") in r.stdout  # where to put the passphrase
    unit = _unit(target.read_text())
    svc = unit["Service"]
    argv = shlex.split(svc["ExecStart"].replace("%%", "%"))
    assert argv[-3:] == ["--home", str(home), "run"]
    assert Path(argv[0]).is_absolute()
    assert svc["LoadCredential"] == f"passphrase:{xdg / 'parley' / 'passphrase'}"
    assert svc["Environment"] == "PARLEY_PASSPHRASE_FILE=%d/passphrase"
    assert "PARLEY_PASSPHRASE=" not in target.read_text()  # never the secret itself
    assert unit["Install"]["WantedBy"] == "default.target"
    again = parley(home, "--home", str(home), "service", "install", XDG_CONFIG_HOME=str(xdg))
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert parley(home, "--home", str(home), "service", "install", "--force", XDG_CONFIG_HOME=str(xdg)).returncode == 0


def test_without_xdg_config_home_the_unit_goes_to_dot_config(home: Path, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": ""}
    r = parley(home, "service", "install", "--passphrase-file", str(tmp_path / "pp"), **env)
    assert r.returncode == 0, r.stderr
    unit = _unit((tmp_path / ".config" / "systemd" / "user" / "parley.service").read_text())
    assert unit["Service"]["LoadCredential"] == f"passphrase:{tmp_path / 'pp'}"


def test_print_writes_nothing(home: Path, tmp_path: Path) -> None:
    r = parley(home, "service", "install", "--print", XDG_CONFIG_HOME=str(tmp_path))
    assert r.returncode == 0 and _unit(r.stdout)["Service"]["ExecStart"].endswith(f"--home {home} run")
    assert not (tmp_path / "systemd").exists()


def test_unit_quotes_paths_for_systemd() -> None:
    assert _quote("/a b/c") == '"/a b/c"' and _quote("/50%/x$y") == "/50%%/x$$y"
    text = unit_text(Path("/home/me/my parley%"), Path("/s/pass%word"), command=["/usr/bin/parley"])
    svc = _unit(text)["Service"]
    assert svc["ExecStart"] == '/usr/bin/parley --home "/home/me/my parley%%" run'
    assert svc["LoadCredential"] == "passphrase:/s/pass%%word"


def test_run_reads_the_passphrase_file_like_the_unit_does(home: Path, tmp_path: Path) -> None:
    """The unit's ExecStart arguments, with PARLEY_PASSPHRASE_FILE pointing where systemd puts the
    credential: the file wins over PARLEY_PASSPHRASE (set wrong here), minus one trailing newline."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "passphrase").write_text(PASSPHRASE + "\n")
    r = parley(home, "service", "install", "--print")
    argv = shlex.split(_unit(r.stdout)["Service"]["ExecStart"].replace("%%", "%"))
    assert argv[-3:] == ["--home", str(home), "run"]
    proc = Proc(argv[-3:], PARLEY_PASSPHRASE="wrong", PARLEY_PASSPHRASE_FILE=str(creds / "passphrase"))
    try:
        proc.expect(r"listening on http://127\.0\.0\.1:\d+")
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize(
    "content, error",
    [
        (None, "PARLEY_PASSPHRASE_FILE={path}: no such file"),
        ("\n", "PARLEY_PASSPHRASE_FILE={path}: the file holds no passphrase"),
        (PASSPHRASE + "\n\n", "wrong passphrase"),  # only one newline is dropped
        (" " + PASSPHRASE, "wrong passphrase"),  # nothing else is stripped
    ],
)
def test_a_bad_passphrase_file_is_a_clear_error(home: Path, tmp_path: Path, content: str | None, error: str) -> None:
    path = tmp_path / "passphrase"
    if content is not None:
        path.write_text(content)
    r = parley(home, "run", "--port", "0", PARLEY_PASSPHRASE_FILE=str(path), timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "parley: " + error.format(path=path), r.stderr
