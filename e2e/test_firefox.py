"""Issue 11: the extension in a real Firefox (Debian's firefox-esr), headless, over WebDriver BiDi.

The driver is puppeteer-core (npm, pinned in package.json) run as a node subprocess
(e2e/firefox_driver.mjs): it speaks WebDriver BiDi to Firefox itself, with no geckodriver, and
installs the Firefox build (``scripts/build-firefox.mjs`` → dist/firefox/) as a temporary add-on with
BiDi's ``webExtension.install``. geckodriver is not packaged by Debian, and the PyPI packages that carry
it download the binary at run time, which the registries-only rule forbids.

Firefox has no ``--host-resolver-rules``: the site hosts reach the replica server through a small HTTP
CONNECT proxy here (Firefox proxy prefs) that tunnels hey.xyz, orb.club, orb.ac and firefly.social
to it and refuses every other host. 127.0.0.1 (the bridge) is never proxied.

The scenario: Alice's Firefox pairs with her real bridge (`parley run`) through the popup, with the
code from `parley pair`; the bridge pins the install's moz-extension origin; the DM button appears
on Bob's Orb profile and opens the widget, which the worker admits. The framed widget acts only while
IntersectionObserver v2 reports it unobscured (clickjacking guard, issue 8 item 6); Firefox 153 has
none, so it refuses a send (body[data-parley-refused]) and offers "Open in a window to send": a popup
window of the worker's own (top level, admitted with a window nonce), where Alice sends; Bob's bridge
(a second `parley run`) gets it and replies, and the reply shows in the window and the frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from e2e.demo import _init_home, one_relay
from e2e.harness import ARTIFACTS_DIR, HOST_SITES, replica_server
from tests.procs import parley

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "e2e" / "firefox_driver.mjs"
GECKO_ID = "parley@parley.invalid"  # scripts/build-firefox.mjs GECKO_ID
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def connect_proxy(target_port: int) -> Iterator[tuple[list[str], int]]:
    """An HTTP CONNECT proxy on 127.0.0.1:<free port> tunnelling the replica hosts (port 443) to
    127.0.0.1:``target_port``. Yields (the request lines it refused, its port)."""
    refused: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def serve(client: socket.socket) -> None:
        client.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = line.partition(" ")
            host, _, port = rest.split(" ", 1)[0].rpartition(":")
            if method != "CONNECT" or host.lower() not in HOST_SITES or port != "443":
                refused.append(line)
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)  # closed by pump()
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            client.settimeout(None)
            upstream.settimeout(None)
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
            pump(client, upstream)
        except OSError:
            client.close()
        except ValueError:  # a malformed request line
            refused.append(repr(head[:200]))
            client.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, name="connect-proxy", daemon=True)
    thread.start()
    try:
        yield refused, listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


class Driver:
    """The node driver's process; its JSON lines arrive on a queue."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.p = subprocess.Popen(
            ["node", str(DRIVER), json.dumps(options)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    self.events.put(obj)
        self.events.put({"error": f"driver exited {self.p.wait()}"})

    def expect(self, step: str, timeout: float = 45.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {step!r} from the Firefox driver in {timeout}s:\n{''.join(self.lines)}") from None
            if "error" in event:
                raise AssertionError(f"the Firefox driver failed before {step!r}: {event['error']}\n{''.join(self.lines)}")
            if event.get("step") == step:
                return event

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._reader.join(timeout=10)
        if self.p.stdout is not None:
            self.p.stdout.close()


def test_firefox_pairs_shows_the_dm_button_sends_from_its_window_and_receives(tmp_path: Path) -> None:
    if FIREFOX is None:
        if os.environ.get("CI"):
            pytest.fail("firefox-esr is missing: `make firefox` installs it")
        pytest.skip(reason="firefox-esr is not installed (`make firefox`); under CI=true this fails instead")
    dist = tmp_path / "dist"
    subprocess.run(["node", "scripts/build-firefox.mjs", "--out", str(dist)], cwd=ROOT, check=True, capture_output=True)
    with contextlib.ExitStack() as stack:
        homes = one_relay(tmp_path, stack)
        with ThreadPoolExecutor(2) as pool:  # `parley init` derives keys: both at once
            fa = pool.submit(_init_home, tmp_path / "alice", "alice", homes, pin_relay=True)
            fb = pool.submit(_init_home, tmp_path / "bob", "bob", homes, pin_relay=True)
            alice, bob = fa.result(), fb.result()
        replicas = stack.enter_context(replica_server())
        replicas.set_address("bob", bob.address)
        replicas.set_address("alice", alice.address)
        parley(alice.home, "contacts", "add", "lens:bob", bob.address, check=True)
        for bridge in (alice, bob):
            stack.callback(bridge.stop)
            bridge.start()
        refused, proxy_port = stack.enter_context(connect_proxy(replicas.port))
        install = str(uuid.uuid4())
        text, reply = "Hello Bob, from Firefox!", "Hi Alice, this reached your Firefox."
        driver = Driver({
            "firefox": FIREFOX, "extensionDir": str(dist / "firefox"), "uuid": install, "geckoId": GECKO_ID,
            "proxyPort": proxy_port, "bridgeUrl": alice.url, "code": alice.pair_code(),
            "profileUrl": replicas.url("orb.club", "/@bob"), "text": text, "reply": reply, "timeoutMs": 20_000,
            "shots": str(ARTIFACTS_DIR / "firefox"),
        })
        stack.callback(driver.stop)

        assert driver.expect("installed", timeout=60)["id"] == GECKO_ID
        paired = driver.expect("paired")
        assert paired["address"] == alice.address and "connected" in paired["status"]
        # The bridge pinned this install's origin to the new token.
        (token,) = json.loads(parley(alice.home, "pair", "--list", "--json", check=True).stdout)
        assert token["origin"] == f"moz-extension://{install}" and token["last_used"] is not None
        assert f"moz-extension://{install}" in alice.output()

        # widget.html opened top level with a made-up window nonce is refused (grants.js mintWindowNonce).
        assert driver.expect("forged-window")["gate"] == "refused"
        button = driver.expect("button")
        assert button["peer"] == "lens:bob"
        widget = driver.expect("widget")
        assert widget["url"] == f"moz-extension://{install}/widget/widget.html"  # admitted: its nonce reached it
        # Firefox has no IntersectionObserver v2, so the clickjacking guard keeps the widget from acting
        # (issue 8 item 6): a send is refused and nothing leaves. See the README's Firefox section.
        assert widget["ioV2"] is False and widget["visible"] == "false" and widget["actionable"] == "false"
        assert widget["storageSession"] == "undefined"  # Firefox: none in a framed extension page (widget.js start())
        refused_send = driver.expect("send-refused")
        assert int(refused_send["refused"]) >= 1 and refused_send["out"] == 0
        assert text not in parley(bob.home, "messages", alice.address, check=True).stdout
        # The frame offers a window of the worker's own (top level: no page can cover it); it sends.
        window = driver.expect("window")
        assert window["top"] is True and window["url"] == f"moz-extension://{install}/widget/widget.html?peer=lens%3Abob"
        driver.expect("sent")
        deadline = time.monotonic() + 20
        while text not in parley(bob.home, "messages", alice.address, check=True).stdout:  # Bob's bridge has it
            assert time.monotonic() < deadline, "Bob's bridge never received the message"
        # Bob's bridge (a second `parley run`) replies; Alice's window and framed widget show it.
        parley(bob.home, "send", alice.address, reply, check=True)
        driver.expect("received")
        driver.expect("done")
        assert driver.p.wait(timeout=20) == 0
        assert not [r for r in refused if any(h in r for h in HOST_SITES)], refused
