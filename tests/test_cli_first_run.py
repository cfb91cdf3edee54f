"""Issue 11, "first run": checked settings (`parley config`), one bridge per home, a busy port, and the
CLI papercuts (one passphrase prompt on a first `make run`, Ctrl-C at a prompt, contact names in
`messages`, a closed stdout, relay error frames, a hung relay). Real processes over loopback; the
terminal tests drive a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.home import SETTINGS, Home
from tests.procs import PARLEY, PASSPHRASE, ROOT, Proc, env_for, parley, start_bridge, wait_for

pytestmark = pytest.mark.timeout(240)

BOB = "0x1111111111111111111111111111111111111111"


def one_line(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single `parley:` line of a failed command (exit ``code``) holding every needle."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parley: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def cli(home: Path, *args: str, check: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """`parley --home HOME ARGS` in this process (click's runner: the same code path, without the
    cost of starting Python); the answer has the shape of :func:`tests.procs.parley`'s."""
    from click.testing import CliRunner

    import bridge.cli_config  # noqa: F401  (registers `config`, as bridge.cli.main does)
    from bridge.cli import cli as group

    res = CliRunner().invoke(group, ["--home", str(home), *args], env={"PARLEY_PASSPHRASE": PASSPHRASE, **env})
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    r = subprocess.CompletedProcess(["parley", *args], res.exit_code, res.stdout, res.stderr)
    if check and r.returncode != 0:
        raise AssertionError(f"parley {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two initialised homes (no relay recorded: `parley run` embeds one)."""
    d = tmp_path_factory.mktemp("firstrun")
    for name in ("a", "b"):
        parley(d / name, "init", check=True)
    return d / "a", d / "b"


# --- settings ----------------------------------------------------------------------------------


def test_the_schema_is_built_from_settings() -> None:
    """One source: every setting in SETTINGS, and nothing else, has a checked type; every default in
    SETTINGS passes the check (the defaults themselves are not repeated in the schema)."""
    from bridge.config import check_config, field_schemas

    assert list(field_schemas()) == [s.name for s in SETTINGS]
    assert check_config({s.name: s.default for s in SETTINGS}, "defaults") == {s.name: s.default for s in SETTINGS}
    assert Home(Path("/nonexistent-parley-home")).config() == {s.name: s.default for s in SETTINGS}


def test_a_bad_config_file_is_one_line_naming_file_key_and_fix(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    cfg = home / "config.json"
    cfg.write_text(json.dumps({"prot": 9000}))
    # any command reading the settings refuses it: exit 2, the file, the key, the closest one
    one_line(parley(home, "relays"), 2, str(cfg), "unknown setting 'prot'", "did you mean 'port'?")  # a real process
    one_line(cli(home, "config", "list"), 2, "unknown setting 'prot'")
    cfg.write_text(json.dumps({"port": "abc"}))
    one_line(cli(home, "relays"), 2, f'{cfg}: port: must be an integer (got "abc")')
    cfg.write_text(json.dumps({"relays": ["http://127.0.0.1:1", 7], "insecure_relays": "yes"}))
    line = one_line(cli(home, "relays"), 2)
    assert re.search(r"relays\[1\]: must be a string \(got 7\)|insecure_relays: must be true or false", line), line
    assert "unexpected error" not in line
    # a hostile file cannot drive the terminal or flood it through the error line
    cfg.write_text(json.dumps({"\x1b]0;owned\x07" + "p" * 5000: 1}))
    line = one_line(cli(home, "relays"), 2, "unknown setting")
    assert "\x1b" not in line and "\x07" not in line and len(line) < 300 + len(str(cfg)), line


def test_update_config_refuses_to_write_a_bad_value(tmp_path: Path) -> None:
    from bridge.config import ConfigError

    home = Home(tmp_path)
    home.update_config(port=9001)
    before = home.config_file.read_bytes()
    for bad in ({"port": "9002"}, {"port": -1}, {"relay_grace_days": True}, {"extension_ids": ["x"]}, {"nope": 1}):
        with pytest.raises(ConfigError):
            home.update_config(**bad)
        assert home.config_file.read_bytes() == before, bad
    assert home.config()["port"] == 9001


def test_config_set_get_list_unset(homes: tuple[Path, Path]) -> None:
    home = homes[1]
    cfg = home / "config.json"
    r = cli(home, "config", "set", "port", "9123", check=True)
    assert "port = 9123 [config]" in r.stdout
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    assert json.loads(cfg.read_text())["port"] == 9123
    assert cli(home, "config", "get", "port", check=True).stdout == "9123\n"
    before = cfg.read_bytes()
    one_line(cli(home, "config", "set", "port", "abc"), 2, 'port: must be an integer (got "abc")')
    one_line(cli(home, "config", "set", "port", "70000"), 2, "port: must be at most 65535")
    one_line(cli(home, "config", "set", "prot", "1"), 2, "unknown setting 'prot'", "did you mean 'port'?")
    one_line(cli(home, "config", "get", "retention_dys"), 2, "did you mean 'retention_days'?")
    one_line(cli(home, "config", "set", "previous_relays", ""), 2, "not set by hand")
    # relays go through the same checks as `parley relays set` (plain http to another machine refused)
    one_line(cli(home, "config", "set", "relays", "http://relay.example.org"), 2, "relay.example.org")
    assert cfg.read_bytes() == before  # nothing refused was written
    # lists are comma-separated; booleans true/false
    cli(home, "config", "set", "extension_ids", "a" * 32 + ", " + "b" * 32, check=True)
    assert json.loads(cfg.read_text())["extension_ids"] == ["a" * 32, "b" * 32]
    cli(home, "config", "set", "insecure_relays", "false", check=True)
    listed = json.loads(cli(home, "config", "list", "--json", PARLEY_LENS_API_URL="https://lens.example/graphql", check=True).stdout)
    assert set(listed) == {s.name for s in SETTINGS}
    assert listed["port"] == {"value": 9123, "source": "config"}
    assert listed["chain_id"] == {"value": 1, "source": "default"}
    assert listed["lens_api_url"] == {"value": "https://lens.example/graphql", "source": "env PARLEY_LENS_API_URL"}
    # a built-in name-service default that PARLEY_NAME_SERVICE_DEFAULTS=off drops is listed as off, not as its URL
    off = json.loads(cli(home, "config", "list", "--json", PARLEY_NAME_SERVICE_DEFAULTS="off", check=True).stdout)
    assert off["eth_rpc_url"] == {"value": None, "source": "default, off by PARLEY_NAME_SERVICE_DEFAULTS=off"}
    on = json.loads(cli(home, "config", "list", "--json", PARLEY_NAME_SERVICE_DEFAULTS="", check=True).stdout)
    assert on["eth_rpc_url"] == {"value": "https://ethereum-rpc.publicnode.com", "source": "default"}
    cli(home, "config", "unset", "port", check=True)
    assert "port" not in json.loads(cfg.read_text())
    assert cli(home, "config", "get", "port", check=True).stdout == "8737\n"
    # a misspelt key written by hand can be removed with unset
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**data, "prot": 1}))
    cli(home, "config", "unset", "prot", check=True)
    cli(home, "config", "unset", "extension_ids", check=True)
    cli(home, "config", "unset", "insecure_relays", check=True)
    assert cli(home, "config", "list", check=True).returncode == 0


# --- one bridge per home, a busy port ----------------------------------------------------------


@pytest.mark.slow  # starts bridges
def test_one_bridge_per_home_and_a_busy_port_is_one_line(homes: tuple[Path, Path], procs: list[Proc]) -> None:
    a, b = homes
    first, url = start_bridge(a)
    procs.append(first)
    port = int(url.rsplit(":", 1)[1])
    info = (a / "daemon.json").read_bytes()
    # a second bridge for the same home: refused before anything is touched
    r = parley(a, "run", "--port", "0", timeout=60)
    one_line(r, 1, f"a bridge is already running for this home (pid {first.p.pid}, {url})")
    assert (a / "daemon.json").read_bytes() == info
    # another home's bridge on that port: one line saying whose port it is (not werkzeug's two)
    one_line(parley(b, "run", "--port", str(port), timeout=60), 1, f"port {port} is used by another Parley bridge")
    # a port some other program holds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        other = s.getsockname()[1]
        one_line(parley(b, "run", "--port", str(other), timeout=60), 1, f"port {other} is used by another program")
    # kill -9: the kernel drops the lock with the process, and a new bridge starts
    first.kill()
    again, _ = start_bridge(a)
    procs.append(again)
    wait_for(lambda: json.loads((a / "daemon.json").read_text())["pid"] == again.p.pid, what="the new daemon.json")


# --- terminals ---------------------------------------------------------------------------------

# Run the command as the session leader of a new session whose controlling terminal is the pty, so
# that ^C typed into the pty is the SIGINT a user's terminal sends.
_CTTY = "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"


class Pty:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.p = subprocess.Popen(
            [sys.executable, "-c", _CTTY, *args], cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.out = ""

    def expect(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.out):
            left = deadline - time.monotonic()
            assert left > 0 and self.p.poll() is None or re.search(pattern, self._drain()), f"no {pattern!r} in {self.out!r}"
            ready, _, _ = select.select([self.master], [], [], min(max(left, 0), 0.5))
            if ready:
                self._read()

    def _read(self) -> None:
        try:
            self.out += os.read(self.master, 65536).decode(errors="replace")
        except OSError:  # EIO: the child closed the terminal
            pass

    def _drain(self) -> str:
        while select.select([self.master], [], [], 0.2)[0]:
            before = len(self.out)
            self._read()
            if len(self.out) == before:
                break
        return self.out

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                self._read()
        code = self.p.wait(timeout=1)
        self._drain()
        return code

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    started: list[Pty] = []
    yield started
    for t in started:
        t.close()


def _no_passphrase_env(home: Path) -> dict[str, str]:
    env = env_for(home)
    del env["PARLEY_PASSPHRASE"]
    return env


@pytest.mark.slow  # starts bridges
def test_first_make_run_asks_for_the_passphrase_once(tmp_path: Path, ptys: list[Pty]) -> None:
    """`make run` on a fresh home: one prompt and its confirmation, then the bridge runs unlocked."""
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    assert recipe.group(1).strip().splitlines() == ["$(PARLEY) run --init --port $(PORT)"]
    home = tmp_path / "fresh"
    t = Pty([*PARLEY, "run", "--init", "--port", "0"], _no_passphrase_env(home))
    ptys.append(t)
    t.expect(r"Passphrase: ")
    t.send(PASSPHRASE + "\n")
    t.expect(r"Repeat for confirmation: ")
    t.send(PASSPHRASE + "\n")
    t.expect(r"parley bridge listening on http://127\.0\.0\.1:\d+")
    assert t.out.count("Passphrase") == 1, t.out
    assert (home / "keys.json").exists()
    # the next start of an existing home asks once (no confirmation)
    t.close()
    again = Pty([*PARLEY, "run", "--init", "--port", "0"], _no_passphrase_env(home))
    ptys.append(again)
    again.expect(r"Passphrase: ")
    again.send(PASSPHRASE + "\n")
    again.expect(r"parley bridge listening on")
    assert again.out.count("Passphrase") == 1 and "Repeat" not in again.out, again.out


def test_ctrl_c_at_a_prompt_exits_130_quietly(tmp_path: Path, ptys: list[Pty]) -> None:
    t = Pty([*PARLEY, "init"], _no_passphrase_env(tmp_path / "h"))
    ptys.append(t)
    t.expect(r"Passphrase: ")
    t.send("\x03")
    assert t.wait() == 130, t.out
    assert "unexpected error" not in t.out and "Traceback" not in t.out and "Abort" not in t.out, t.out
    assert not (tmp_path / "h" / "keys.json").exists()


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """`parley init | head -0`: the reader is gone before we write. No traceback; exit 141; the
    installation was still created (output is not what makes it)."""
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        p = subprocess.run(
            [*PARLEY, "init"], cwd=ROOT, env=env_for(tmp_path / "h"), stdin=subprocess.DEVNULL, stdout=w_fd,
            stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(w_fd)
    assert p.returncode == 141, p.stderr
    assert p.stderr == "", p.stderr
    assert (tmp_path / "h" / "keys.json").exists()


# --- send to a hung relay; messages by contact name ---------------------------------------------


class HungRelay:
    """Accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(c)

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.mark.slow  # several processes, one 5 s wait
def test_send_to_a_hung_relay_queues_after_one_bounded_wait_and_messages_takes_contact_names(tmp_path: Path) -> None:
    hung = HungRelay()
    try:
        home = tmp_path / "h"
        parley(home, "init", check=True)
        Home(home).update_config(relays=[hung.url])
        parley(home, "contacts", "add", "bob", BOB, check=True)
        r = parley(home, "send", "bob", "hello through a hung relay", timeout=60)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert re.search(rf"^parley: queued [0-9a-f]+: relay {re.escape(hung.url)} unavailable: no answer within 5 s; it will be retried$", r.stderr.strip()), r.stderr
        # one wait for the hung relay (registration), not a second one for the peer's identity
        assert len(hung.accepted) == 1
        status = json.loads(parley(home, "status", "--json", check=True).stdout)
        assert status["outbox"]["pending"] == 1
        # `messages` takes the contact name `send` took
        shown = json.loads(parley(home, "messages", "bob", "--json", check=True).stdout)
        assert [(m["recipient"], m["text"], m["direction"]) for m in shown] == [(BOB, "hello through a hung relay", "out")]
        one_line(parley(home, "messages", "carol"), 2, "carol")
    finally:
        hung.close()


# --- subscription error frames -------------------------------------------------------------------


def test_subscription_error_frames_keep_their_meaning() -> None:
    """A refused token is a 401; the relay's storage failing is RelayUnavailable (retry, same token),
    never reported as a 401; anything else is a 400 with its code."""
    from flask import Flask
    from flask_sock import Sock

    from bridge.relay.client import RelayClient, RelayError, RelayUnavailable
    from bridge.relay.serving import make_guarded_server

    app = Flask("fake-relay")
    sock = Sock(app)
    answer: dict[str, str] = {}

    @sock.route("/v1/subscribe")
    def subscribe(ws):  # type: ignore[no-untyped-def]
        ws.receive(timeout=5)
        ws.send(json.dumps({"type": "error", **answer}))
        ws.close()

    server = make_guarded_server("127.0.0.1", 0, app, header_timeout=5, idle_timeout=5, max_connections=8)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        client = RelayClient(f"http://127.0.0.1:{server.server_port}")
        topic = "parley.v1.inbox." + "ab" * 16
        for code, status in (("unauthorized", 401), ("unknown_installation", 401), ("bad_topic", 400)):
            answer.update(code=code, message="no\x1b[31m")
            with pytest.raises(RelayError) as refused:
                client.subscribe(topic, 0, token="t")
            assert (refused.value.status, refused.value.code) == (status, code)
            assert "\x1b" not in str(refused.value)
        answer.update(code="storage_error", message="the relay's storage is unavailable")
        with pytest.raises(RelayUnavailable, match="storage_error"):
            client.subscribe(topic, 0, token="t")
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@pytest.mark.slow  # two relays, a bridge
def test_a_relay_that_forgot_our_token_is_logged_as_an_authentication_failure(tmp_path: Path, procs: list[Proc]) -> None:
    """The relay restarts with an empty database: the bridge's token is refused (a 401 error frame).
    The log says so, naming the relay, and the bridge authenticates again."""
    from tests.procs import start_relay

    relay, url = start_relay(tmp_path / "one.db")
    procs.append(relay)
    home = tmp_path / "h"
    parley(home, "init", "--relay", url, check=True)
    bridge = Proc(["-v", "run", "--port", "0"], home=home)
    procs.append(bridge)
    bridge.expect(rf"subscribed to \S+ on {re.escape(url)}")
    relay.stop()
    port = int(url.rsplit(":", 1)[1])
    again, url2 = start_relay(tmp_path / "two.db", port)
    procs.append(again)
    assert url2 == url
    line = bridge.expect(rf"relay {re.escape(url)} refused our credentials \(unauthorized: .*\); authenticating again", timeout=90).group(0)
    assert "storage_error" not in line


def test_relay_timeouts_come_from_the_environment_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.relay.client import RelayClient, relay_timeouts

    monkeypatch.delenv("PARLEY_RELAY_CONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PARLEY_RELAY_READ_TIMEOUT", raising=False)
    assert relay_timeouts() == (3.0, 5.0)
    monkeypatch.setenv("PARLEY_RELAY_CONNECT_TIMEOUT", "1.5")
    monkeypatch.setenv("PARLEY_RELAY_READ_TIMEOUT", "12")
    assert relay_timeouts() == (1.5, 12.0) and RelayClient("http://127.0.0.1:1").timeout == 12.0
    for bad in ("0", "-1", "nan", "inf", "1e9", "soon"):
        monkeypatch.setenv("PARLEY_RELAY_READ_TIMEOUT", bad)
        assert relay_timeouts()[1] == 5.0, bad
    assert RelayClient("http://127.0.0.1:1", timeout=2.0).timeout == 2.0
