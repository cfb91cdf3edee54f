"""The home directory's privacy, in process: what `parley` refuses to use and how it writes secrets.

The CLI sets ``umask(0o077)`` before it writes anything, which hides a file written 0644 (planted bug
M17 in tests/mutants/): these tests call the home layer directly under a permissive umask, and build
a home that other local users can read (M16).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.home import Home, HomeError, resolve_home, write_private
from tests.exact import raises_exactly


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def initialised(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.create()
    write_private(home.keys_file, b"{}")
    write_private(home.identity_file, json.dumps({"address": "0x" + "11" * 20}).encode())
    return home


def test_private_files_are_0600_whatever_the_umask(tmp_path: Path, permissive_umask: None) -> None:
    home = initialised(tmp_path)
    home.update_config(relay_url="http://127.0.0.1:1")
    home.rewrite_identity(address="0x" + "22" * 20, did="did:pkh:eip155:1:0x" + "22" * 20, record=b"r", wallet="browser")
    write_private(tmp_path / "exclusive.bin", b"secret", exclusive=True)
    files = [home.keys_file, home.identity_file, home.config_file, tmp_path / "exclusive.bin"]
    assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
    assert mode(home.path) == 0o700
    assert not [p for p in home.path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_exclusive_write_never_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    write_private(target, b"first")
    with raises_exactly(FileExistsError):
        write_private(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"


def test_create_tightens_an_existing_open_directory(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "home"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    Home(path).create()
    assert mode(path) == 0o700


@pytest.mark.parametrize("open_mode", [0o750, 0o740, 0o710, 0o705, 0o704, 0o701, 0o755, 0o777], ids=oct)
def test_a_home_other_users_can_reach_is_refused(tmp_path: Path, open_mode: int) -> None:
    home = initialised(tmp_path)
    os.chmod(home.path, open_mode)
    with raises_exactly(HomeError) as exc:
        home.require()
    assert f"chmod 700 {home.path}" in str(exc.value)
    os.chmod(home.path, 0o700)
    home.require()  # the same home, private again, is accepted


def test_an_uninitialised_home_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    home = Home(tmp_path / "empty")
    home.create()
    with raises_exactly(HomeError) as exc:
        home.require()
    assert "parley init" in str(exc.value)


def test_create_makes_missing_parent_directories(tmp_path: Path) -> None:
    """`parley --home ~/new/place/parley init`: the parents need not exist yet."""
    home = Home(tmp_path / "not" / "yet" / "home")
    home.create()
    assert home.path.is_dir() and mode(home.path) == 0o700


OLD = "0x" + "11" * 20
NEW = "0x" + "22" * 20


def generated_identity(tmp_path: Path) -> Home:
    """A home as `parley init` leaves it: a generated wallet's identity.json."""
    home = Home(tmp_path / "home")
    home.create()
    write_private(home.keys_file, b"{}")
    ident = {"version": 1, "address": OLD, "did": f"did:pkh:eip155:1:{OLD}", "installation_id": "ab" * 16,
             "signing_pub": "01" * 32, "identity_pub": "02" * 32, "record": "aa"}
    write_private(home.identity_file, json.dumps(ident, indent=2).encode() + b"\n")
    return home


def test_rewrite_identity_points_the_installation_at_the_new_wallet(tmp_path: Path) -> None:
    """Sign-in with a browser wallet: identity.json (read back by the next `parley run`) names the new
    address, DID, record and wallet, keeps the installation, and remembers the address it replaced."""
    home = generated_identity(tmp_path)
    new = home.rewrite_identity(address=NEW, did=f"did:pkh:eip155:1:{NEW}", record=b"\x01\x02", wallet="browser")
    expected = {"version": 1, "address": NEW, "did": f"did:pkh:eip155:1:{NEW}", "installation_id": "ab" * 16,
                "signing_pub": "01" * 32, "identity_pub": "02" * 32, "record": "0102", "wallet": "browser",
                "previous_address": OLD}
    assert new == expected
    assert Home(home.path).identity() == expected
    # Signing in again with the same wallet (a new record) keeps the address it first replaced.
    again = home.rewrite_identity(address=NEW, did=f"did:pkh:eip155:1:{NEW}", record=b"\x03", wallet="browser")
    assert again == {**expected, "record": "03"}
    assert Home(home.path).identity() == again


def test_rewrite_identity_to_the_same_address_records_no_previous_one(tmp_path: Path) -> None:
    home = generated_identity(tmp_path)
    new = home.rewrite_identity(address=OLD, did=f"did:pkh:eip155:1:{OLD}", record=b"\x05", wallet="browser")
    assert "previous_address" not in new and "previous_address" not in Home(home.path).identity()
    assert Home(home.path).identity() == new and (new["address"], new["record"]) == (OLD, "05")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_DATA_HOME names the data directory on Linux")
def test_resolve_home_is_the_option_then_parley_home_then_the_user_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("PARLEY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_home(None) == tmp_path / "data" / "parley"
    monkeypatch.setenv("PARLEY_HOME", "~/from-env")
    assert resolve_home(None) == tmp_path / "user" / "from-env"
    assert resolve_home("rel/home") == tmp_path / "rel" / "home"  # --home wins, made absolute
