"""`make demo`: the Alice/Bob story in headless Chromium against real processes (issue 3, item 4).

A relay and two bridges (``parley run``) start in a temporary directory; the site replicas are
served over HTTPS; two browsers (Alice's and Bob's) load the real extension. Alice pairs, writes to
Bob from his Orb profile, Bob answers from Alice's Firefly profile, and Alice finds the whole thread
on Bob's Lens profile. Screenshots go into ``e2e/artifacts/demo/``; every process is stopped even on
error.

The :class:`World` (relay + bridges + replicas + browsers) and the step helpers are shared with
``e2e/test_scenarios.py`` and ``bench/extension.py``.

Usage: ``python e2e/demo.py [--headed] [--docs-png]`` (``make demo``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import FrameLocator, Locator, Page, Playwright, expect

from e2e.harness import ARTIFACTS_DIR, BrowserSession, ReplicaServer, launch_browser, replica_server, shared_playwright
from tests.procs import Proc, free_port, parley, start_bridge, start_relay, whoami

__all__ = [
    "BUTTON",
    "DEMO_DIR",
    "DOCS_PNG",
    "TIMEOUT_MS",
    "Bridge",
    "RawWs",
    "World",
    "DemoError",
    "Homes",
    "main",
    "one_relay",
    "open_dm",
    "open_pair_form",
    "open_profile",
    "pair_via_popup",
    "play_story",
    "send_in_widget",
    "widget",
    "world",
]

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ARTIFACTS_DIR / "demo"
DOCS_PNG = ROOT / "docs" / "demo.png"
BUTTON = '[data-parley="dm-button"]'
TIMEOUT_MS = 15_000
ALICE_FID = 1001


class DemoError(RuntimeError):
    """A step of the story did not happen (the message says which)."""


@dataclass
class Bridge:
    """One user's bridge: its home, the running ``parley run`` process and its URL."""

    name: str
    home: Path
    address: str
    did: str
    port: int
    relay_url: str
    proc: Proc | None = None
    #: Pass ``--relay relay_url`` to ``parley run`` (the one-relay world); else the daemon runs with
    #: the home's recorded home and directory relays.
    pin_relay: bool = True
    #: More environment for every ``parley`` command and the daemon (e.g. ``PARLEY_CA_BUNDLE``).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start ``parley run`` on :attr:`port` and wait until it is subscribed on its (primary) relay."""
        self.proc, url = start_bridge(self.home, self.port, self.relay_url if self.pin_relay else None, **self.env)
        if url != self.url:
            raise DemoError(f"{self.name}'s bridge listens on {url}, expected {self.url}")
        self.proc.expect("subscribed to")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def restart(self) -> None:
        """Stop ``parley run`` and start it again on the same port."""
        self.stop()
        self.start()

    def output(self) -> str:
        """Everything the daemon printed so far (log lines included)."""
        return "".join(self.proc.output) if self.proc is not None else ""

    def pair_code(self) -> str:
        return parley(self.home, "pair", check=True, **self.env).stdout.strip().splitlines()[-1]


@dataclass
class Homes:
    """The relays a world runs and where Alice and Bob live on them (issue 10: home relays hold an
    inbox, directory relays are where strangers are looked up).

    ``relays`` maps a name to its process and URL; the first one is :attr:`World.relay`. ``home`` and
    ``directory`` map ``"alice"``/``"bob"`` to URLs (the first home relay is primary; no entry in
    ``directory``: none). ``env`` goes to every ``parley`` command and daemon of the world.
    """

    relays: dict[str, tuple[Proc, str]]
    home: dict[str, tuple[str, ...]]
    directory: dict[str, tuple[str, ...]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


#: Starts a world's relays in a directory (stopping them through the stack) and says where each user lives.
RelayPlan = Callable[[Path, contextlib.ExitStack], Homes]


def one_relay(tmp: Path, stack: contextlib.ExitStack) -> Homes:
    """The default plan: one relay (``relay.db``), home of both Alice and Bob, no directory."""
    relay, url = start_relay(tmp / "relay.db")
    stack.callback(relay.stop)
    return Homes(relays={"relay": (relay, url)}, home={"alice": (url,), "bob": (url,)})


@dataclass
class World:
    """The relays, Alice's and Bob's bridges, the replicas (lens:bob → Bob etc.) and two browsers.
    ``relay``/``relay_url`` is the first relay (the only one unless ``world(relays=...)``)."""

    tmp: Path
    relay: Proc
    relay_url: str
    alice: Bridge
    bob: Bridge
    replicas: ReplicaServer
    playwright: Playwright
    alice_browser: BrowserSession
    bob_browser: BrowserSession
    notes: dict[str, object] = field(default_factory=dict)
    #: Every relay of the world by name: (process, URL).
    relays: dict[str, tuple[Proc, str]] = field(default_factory=dict)


def _init_home(home: Path, name: str, homes: Homes, *, pin_relay: bool) -> Bridge:
    """``parley init`` with ``name``'s home relays, then ``parley relays directory`` if it has any."""
    relays = homes.home[name]
    parley(home, "init", *(arg for url in relays for arg in ("--relay", url)), check=True, **homes.env)
    if homes.directory.get(name):
        parley(home, "relays", "directory", *homes.directory[name], check=True, **homes.env)
    me = whoami(home)
    return Bridge(
        name=name, home=home, address=me["address"], did=me["did"], port=free_port(), relay_url=relays[0],
        pin_relay=pin_relay, env=dict(homes.env),
    )


@contextlib.contextmanager
def world(
    *,
    headless: bool = True,
    artifacts: Path = ARTIFACTS_DIR,
    carol_contact: bool = True,
    playwright: Playwright | None = None,
    relays: RelayPlan | None = None,
) -> Iterator[World]:
    """Start everything; stop everything (processes, browsers, servers) when the block exits.

    Alice's contacts map ``lens:bob`` (and ``lens:carol`` to the replicas' unregistered Carol);
    Bob's map ``farcaster:1001`` and ``lens:alice`` to Alice. The replicas show the real addresses.
    Pass ``playwright`` when one is already running in this thread (pytest's session fixture).
    ``relays``: a plan that starts the relays and says where each user lives (default
    :func:`one_relay`); with a plan, the daemons run with the relays their homes recorded.

    Raises:
        DemoError: a bridge did not come up on its port.
    """
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-world-")))
        homes = (relays or one_relay)(tmp, stack)
        relay, relay_url = next(iter(homes.relays.values()))
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(_init_home, tmp / "alice", "alice", homes, pin_relay=relays is None)
            fb = pool.submit(_init_home, tmp / "bob", "bob", homes, pin_relay=relays is None)
            alice, bob = fa.result(), fb.result()
        replicas = stack.enter_context(replica_server())
        replicas.set_address("alice", alice.address)
        replicas.set_address("bob", bob.address)
        parley(alice.home, "contacts", "add", "lens:bob", bob.address, check=True, **homes.env)
        if carol_contact:
            parley(alice.home, "contacts", "add", "lens:carol", str(replicas.fixtures["users"]["carol"]["address"]), check=True, **homes.env)
        parley(bob.home, "contacts", "add", f"farcaster:{ALICE_FID}", alice.address, check=True, **homes.env)
        parley(bob.home, "contacts", "add", "lens:alice", alice.address, check=True, **homes.env)
        for bridge in (alice, bob):
            stack.callback(bridge.stop)
            bridge.start()
        pw = playwright if playwright is not None else stack.enter_context(shared_playwright())
        a_session = stack.enter_context(launch_browser(tmp / "chromium-alice", replicas.port, playwright=pw, headless=headless))
        b_session = stack.enter_context(launch_browser(tmp / "chromium-bob", replicas.port, playwright=pw, headless=headless))
        a_session.artifacts = artifacts
        b_session.artifacts = artifacts
        yield World(tmp, relay, relay_url, alice, bob, replicas, pw, a_session, b_session, relays=dict(homes.relays))


class RawWs:
    """A minimal RFC 6455 client on a plain socket, so the test controls Host and Origin exactly
    (simple_websocket sends ``Host`` without the port, which the bridge rightly refuses)."""

    def __init__(self, port: int, host: str, origin: str | None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /v1/rpc HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status_line = head.split(b"\r\n", 1)[0].decode()
        self.notes: list[dict[str, object]] = []

    def close(self) -> None:
        self.sock.close()

    def send_text(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("socket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rpc(self, method: str, params: dict[str, object] | None = None, *, rid: int = 1) -> dict[str, object]:
        """Send one request and return its response (notifications arriving first are kept in ``notes``)."""
        self.send_text(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, **({"params": params} if params else {})}))
        while True:
            msg = self.next_json()
            if msg.get("id") == rid:
                return msg
            self.notes.append(msg)

    def next_json(self) -> dict[str, object]:
        """The next text frame, parsed (pings are skipped).

        Raises:
            ConnectionError: the server closed the connection.
        """
        while True:
            opcode, payload = self.frame()
            if opcode == 0x1:
                return dict(json.loads(payload))
            if opcode == 0x8:
                raise ConnectionError(f"closed {int.from_bytes(payload[:2], 'big') if payload else None}")

    def frame(self) -> tuple[int, bytes]:
        """The next frame (opcode, payload); server frames are not masked."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        return b0 & 0x0F, self._read(n)


# --- steps ----------------------------------------------------------------------------------------


def open_pair_form(popup: Page) -> None:
    """Show the popup's pairing fields: once paired they are hidden behind "Pair again…" (issue 11)."""
    expect(popup.locator("body")).to_have_attribute("data-parley-ready", "true", timeout=TIMEOUT_MS)
    again = popup.locator('[data-parley="pair-again"]')
    if again.is_visible():
        again.click()
    expect(popup.locator('[data-parley="pair-code"]')).to_be_visible()


def pair_via_popup(session: BrowserSession, bridge: Bridge) -> Page:
    """Pair ``session``'s extension with ``bridge`` through the popup; return the popup page (left open)."""
    popup = session.open_popup()
    open_pair_form(popup)
    popup.locator('[data-parley="bridge-url"]').fill(bridge.url)
    popup.locator('[data-parley="pair-code"]').fill(bridge.pair_code())
    popup.locator('[data-parley="pair-submit"]').click()
    try:
        expect(popup.locator('[data-parley="status"]')).to_contain_text("connected", timeout=TIMEOUT_MS)
    except AssertionError as e:
        shown = popup.locator('[data-parley="error"]').text_content()
        url = popup.locator('[data-parley="bridge-url"]').input_value()
        raise AssertionError(f"{e}\nthe popup shows the error {shown!r}, bridge URL {url!r} (wanted {bridge.url!r})") from e
    expect(popup.locator('[data-parley="address"]')).to_have_text(bridge.address, timeout=TIMEOUT_MS)
    expect(popup.locator('[data-parley="did"]')).to_have_text(bridge.did, timeout=TIMEOUT_MS)
    return popup


def widget(page: Page) -> FrameLocator:
    return page.frame_locator('iframe[data-parley="widget"]')


def ready_button(page: Page, peer: str) -> Locator:
    button = page.locator(BUTTON)
    expect(button).to_have_count(1, timeout=TIMEOUT_MS)
    expect(button).to_have_attribute("data-parley-peer", peer, timeout=TIMEOUT_MS)
    expect(button).to_have_attribute("data-parley-state", "ready", timeout=TIMEOUT_MS)
    return button


def open_dm(page: Page, peer: str) -> FrameLocator:
    """Click the (ready) DM button for ``peer`` and wait until the widget's composer is enabled and the
    widget acts (it has been visible, uncovered, for a moment: issue 8 item 6)."""
    ready_button(page, peer).click()
    w = widget(page)
    expect(w.locator('[data-parley="composer"]')).to_be_enabled(timeout=TIMEOUT_MS)
    expect(w.locator("body")).to_have_attribute("data-parley-actionable", "true", timeout=TIMEOUT_MS)
    return w


def send_in_widget(w: FrameLocator, text: str) -> None:
    w.locator('[data-parley="composer"]').fill(text)
    w.locator('[data-parley="send"]').click()
    expect(w.locator('[data-parley="message"][data-direction="out"]', has_text=text)).to_have_count(1, timeout=TIMEOUT_MS)


def expect_message(w: FrameLocator, text: str, direction: str, timeout: int = TIMEOUT_MS) -> None:
    expect(w.locator(f'[data-parley="message"][data-direction="{direction}"]', has_text=text)).to_have_count(1, timeout=timeout)


#: The replicas' test-only controls (e.g. "Re-render header", which e2e/test_injection.py clicks): not
#: part of the sites they copy, so not in the demo's screenshots or docs/demo.png (issue 11).
TEST_CONTROLS_CSS = '[data-replica="rerender"] { display: none !important; }'


def open_profile(session: BrowserSession, replicas: ReplicaServer, host: str, path: str) -> Page:
    """A new tab on a replica profile page as a visitor sees it: the replica's test-only controls hidden."""
    page = session.context.new_page()
    page.goto(replicas.url(host, path))
    page.add_style_tag(content=TEST_CONTROLS_CSS)
    return page


def play_story(wd: World, shots: Path) -> list[Path]:
    """Pair both, Orb → Firefly → Lens. Returns the screenshots, in order."""
    shots.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def snap(page: Page, name: str) -> None:
        path = shots / f"{len(out) + 1:02d}-{name}.png"
        page.screenshot(path=str(path))
        out.append(path)

    a_popup = pair_via_popup(wd.alice_browser, wd.alice)
    snap(a_popup, "alice-paired-popup")
    b_popup = pair_via_popup(wd.bob_browser, wd.bob)
    snap(b_popup, "bob-paired-popup")

    a_orb = open_profile(wd.alice_browser, wd.replicas, "orb.club", "/@bob")
    ready_button(a_orb, "lens:bob")
    snap(a_orb, "alice-on-bobs-orb-profile")
    a_w = open_dm(a_orb, "lens:bob")
    hello = "Hi Bob! Found you on Orb. Coffee on Friday?"
    send_in_widget(a_w, hello)
    snap(a_orb, "alice-sent-from-orb")

    b_ff = open_profile(wd.bob_browser, wd.replicas, "firefly.social", f"/profile/farcaster/{ALICE_FID}")
    b_w = open_dm(b_ff, f"farcaster:{ALICE_FID}")
    expect_message(b_w, hello, "in")
    reply = "Hey Alice! Friday works, 10am?"
    send_in_widget(b_w, reply)
    snap(b_ff, "bob-replies-on-firefly")
    expect_message(a_w, reply, "in")
    snap(a_orb, "alice-sees-reply-live")

    a_lens = open_profile(wd.alice_browser, wd.replicas, "hey.xyz", "/u/bob")
    l_w = open_dm(a_lens, "lens:bob")
    expect_message(l_w, hello, "out")
    expect_message(l_w, reply, "in")
    snap(a_lens, "alice-whole-thread-on-lens")
    wd.notes.update(hello=hello, reply=reply)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headed", action="store_true", help="show the browsers")
    parser.add_argument("--docs-png", action="store_true", help=f"also copy the Lens screenshot to {DOCS_PNG}")
    args = parser.parse_args(argv)
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    started = time.monotonic()
    with world(headless=not args.headed, artifacts=DEMO_DIR) as wd:
        print(f"relay {wd.relay_url}; Alice's bridge {wd.alice.url} ({wd.alice.address}); Bob's bridge {wd.bob.url} ({wd.bob.address})")
        shots = play_story(wd, DEMO_DIR)
    for path in shots:
        print(f"  {path.relative_to(ROOT)}")
    if args.docs_png:
        DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots[-1], DOCS_PNG)
        print(f"copied {shots[-1].name} to {DOCS_PNG.relative_to(ROOT)}")
    print(f"demo done in {time.monotonic() - started:.1f}s: {len(shots)} screenshots in {DEMO_DIR.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
