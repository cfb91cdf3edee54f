"""Real processes for integration tests: a relay and bridges, talking over 127.0.0.1.

Every process is started with a deadline for readiness and stopped (SIGTERM, then SIGKILL) by the
fixture that started it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARLEY = [sys.executable, "-m", "bridge"]
PASSPHRASE = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Every test process runs without the built-in public name services (bridge/nameservices.py): no test
#: reaches the internet. A test that wants a name service points its variable at a local fake.
OFFLINE = {"PARLEY_NAME_SERVICE_DEFAULTS": "off"}


def env_for(home: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(OFFLINE)
    env["PARLEY_PASSPHRASE"] = PASSPHRASE
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env["PARLEY_HOME"] = str(home)
    hits = os.environ.get("PARLEY_MUTMUT_HITS")
    if hits and os.environ.get("MUTANT_UNDER_TEST") == "stats":  # mutmut's coverage pass: see conftest.py
        env["PARLEY_MUTMUT_HITS"] = hits
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests" / "mutmut_site"), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def parley(home: Path | None, *args: str, check: bool = False, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run one `parley` command to completion."""
    r = subprocess.run(
        [*PARLEY, *args], cwd=ROOT, env=env_for(home, **extra_env), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and r.returncode != 0:
        raise AssertionError(f"parley {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value. Raises AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A long-running `parley` process whose output lines are collected."""

    def __init__(self, args: list[str], home: Path | None = None, **extra_env: str) -> None:
        self.args = args
        self.home = home
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.p = subprocess.Popen(
            [*PARLEY, *args], cwd=ROOT, env=env_for(home, **extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.output.append(line)
            self.lines.put(line)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{''.join(self.output)}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    raise AssertionError(f"process exited {self.p.returncode} before {pattern!r}; output:\n{''.join(self.output)}")
                continue
            m = rx.search(line)
            if m:
                return m

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            with_suppress(lambda: os.killpg(self.p.pid, sig))
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                with_suppress(lambda: os.killpg(self.p.pid, signal.SIGKILL))
                self.p.wait(timeout)
        if self.p.stdout is not None:
            self.p.stdout.close()
        return int(self.p.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def with_suppress(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except (ProcessLookupError, PermissionError):
        pass


def start_relay(db: Path, port: int = 0, publish_rate: float = 1000.0, *extra: str, **extra_env: str) -> tuple[Proc, str]:
    """A relay process. All test clients share 127.0.0.1, so the per-address publish limit is raised
    (and the per-inbox one, which tests of many messages to one inbox would reach). ``extra``: more
    `parley relay` arguments (e.g. ``--tls-cert``); the URL is https:// when the relay serves TLS."""
    proc = Proc(
        ["relay", "--port", str(port), "--db", str(db), "--publish-rate", str(publish_rate), "--inbox-rate", "1000",
         "--inbox-burst", "100000", *extra],
        **extra_env,
    )
    try:
        url = proc.expect(r"relay listening on (https?://\S+)").group(1)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def start_bridge(home: Path, port: int = 0, relay: str | None = None, **extra_env: str) -> tuple[Proc, str]:
    """``parley run`` on ``port`` (0: any free one); ``relay``: pass ``--relay`` (else the home's recorded
    relays); ``extra_env``: more environment (e.g. ``PARLEY_CA_BUNDLE`` for a TLS relay). Returns the
    process and the local API URL it listens on."""
    args = ["run", "--port", str(port)]
    if relay:
        args += ["--relay", relay]
    proc = Proc(args, home=home, **extra_env)
    try:
        url = proc.expect(r"listening on (http://\S+)").group(1)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def whoami(home: Path) -> dict[str, str]:
    return json.loads(parley(home, "whoami", "--json", check=True).stdout)


def befriend(*homes: Path) -> None:
    """Make each home a contact of every other (`parley contacts add`): their messages to each other are
    not message requests, of which only 3 are kept until accepted (issue 12)."""
    addresses = {home: whoami(home)["address"] for home in homes}
    for home in homes:
        for other, address in addresses.items():
            if other != home:
                parley(home, "contacts", "add", f"c{address[2:10].lower()}", address, check=True)
