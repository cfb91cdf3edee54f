"""Start `parley relay` and `parley run` as subprocesses (python -m bridge: the implementation under
test, never imported here) and stop them in fixture teardown."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "conformance passphrase"


def env(home: Path | None = None, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    e["PARLEY_NAME_SERVICE_DEFAULTS"] = "off"  # nothing reaches the internet (bridge/nameservices.py)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    e["PARLEY_PASSPHRASE"] = PASSPHRASE
    e["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        e["PARLEY_HOME"] = str(home)
    e.update(extra)
    return e


def parley(home: Path | None, *args: str, check: bool = True, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env(home, **extra), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"parley {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def parley_json(home: Path, *args: str) -> Any:
    return json.loads(parley(home, *args).stdout)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Proc:
    def __init__(self, args: list[str], home: Path | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.p = subprocess.Popen([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env(home), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.output.append(line)
            self.lines.put(line)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline, rx = time.monotonic() + timeout, re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.p.poll() is not None:
                    raise AssertionError(f"exited {self.p.returncode}; output:\n{''.join(self.output)}") from None
                continue
            if m := rx.search(line):
                return m

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        if self.p.stdout is not None:
            self.p.stdout.close()


def start_relay(db: Path, publish_rate: float = 1000.0, **options: float) -> tuple[Proc, str]:
    """`parley relay`; options are its other command-line settings, e.g. inbox_max_envelopes=2 for
    `--inbox-max-envelopes 2`."""
    flags = [x for k, v in options.items() for x in ("--" + k.replace("_", "-"), repr(v))]
    proc = Proc(["relay", "--host", "127.0.0.1", "--port", "0", "--db", str(db), "--publish-rate", repr(publish_rate), *flags])
    return proc, proc.expect(r"relay listening on (http://\S+)").group(1)


def start_bridge(home: Path, relay: str | None) -> tuple[Proc, str]:
    """`parley run` on a free port; relay None: the relay embedded in the bridge, on the same port."""
    proc = Proc(["run", "--port", "0", *(["--relay", relay] if relay else [])], home=home)
    return proc, proc.expect(r"listening on (http://\S+)").group(1)
