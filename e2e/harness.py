"""Helpers for the real-browser e2e suite (DESIGN.md "Running and testing", "Practical notes").

- :func:`replica_server` serves the three site replicas (``e2e/sites/{lens,orb,firefly}``) over
  HTTPS on ``127.0.0.1:<free port>`` with a self-signed certificate made at runtime, choosing the
  site by the ``Host`` header (hey.xyz → lens, orb.club/orb.ac → orb, firefly.social → firefly).
  Unknown paths get the site's ``index.html`` (SPA fallback); ``/fixtures.json`` is the user table.
  Every replica comes in :data:`SHAPES` (issue 11), chosen per tab by ``?shape=`` on its first page
  (``ReplicaServer.url(host, path, shape=...)``): one server, one browser for all of them.
- :func:`launch_browser` starts Chromium (Debian's ``/usr/bin/chromium`` when present) with the
  unpacked extension loaded and the real host names mapped onto the replica server.
- :func:`shared_playwright` is the one Playwright of the thread: every launcher goes through it, so
  suites with session-wide and per-module browsers run in any order.

These are helpers, not tests.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import mimetypes
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import BrowserContext, Page, Playwright, Worker, sync_playwright

from e2e.extension_id import EXTENSION_DIR, extension_id

__all__ = [
    "ARTIFACTS_DIR",
    "CHROMIUM",
    "FIXTURES_PATH",
    "HOST_SITES",
    "SHAPES",
    "SITES_DIR",
    "BrowserSession",
    "HarnessError",
    "ReplicaServer",
    "launch_browser",
    "replica_server",
    "shared_playwright",
    "wait_until",
]

E2E_DIR = Path(__file__).resolve().parent
SITES_DIR = E2E_DIR / "sites"
FIXTURES_PATH = E2E_DIR / "fixtures.json"
ARTIFACTS_DIR = E2E_DIR / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
HOST_SITES: dict[str, str] = {
    "hey.xyz": "lens",
    "orb.club": "orb",
    "orb.ac": "orb",
    "firefly.social": "firefly",
}
#: Replica layouts (e2e/sites/shared/spa.js): Follow and the menu as direct children of one row; the
#: sites' real component wrappers (Hey: from heyxyz/hey; Orb: no <main>; Firefly: from its public
#: source); and a layout the extension cannot recognise, where its floating button must appear.
SHAPES: tuple[str, ...] = ("direct", "wrapped", "unknown")


class HarnessError(RuntimeError):
    """The harness could not start something (server, browser, extension worker) in time."""


_playwright = threading.local()  # .pw: the running Playwright, .users: how many blocks use it


@contextlib.contextmanager
def shared_playwright() -> Iterator[Playwright]:
    """The Playwright already running in this thread, or a new one, stopped when its last user leaves.

    The sync API allows one at a time in a thread: a second ``sync_playwright()`` while one runs fails
    with "using Playwright Sync API inside the asyncio loop". A session-wide browser and a module's own
    browser would then work in one order of the test files and not in the other.
    """
    if getattr(_playwright, "users", 0) == 0:
        _playwright.pw = sync_playwright().start()
        _playwright.users = 0
    _playwright.users += 1
    try:
        yield _playwright.pw
    finally:
        _playwright.users -= 1
        if _playwright.users == 0:
            pw, _playwright.pw = _playwright.pw, None
            pw.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value and return it.

    Raises:
        HarnessError: ``predicate`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for the site host names (and 127.0.0.1) into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parley e2e replicas")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in HOST_SITES]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class ReplicaServer:
    """A running replica server. ``fixtures`` is served as ``/fixtures.json``; replace it freely."""

    port: int
    fixtures: dict[str, Any]
    requests: list[tuple[str, str]] = field(default_factory=list)

    def url(self, host: str, path: str = "/", shape: str | None = None) -> str:
        """``https://<host><path>`` (the browser maps the host onto this server); with ``shape``, the
        replica renders that layout in this tab (kept across its client-side navigation)."""
        if host not in HOST_SITES:
            raise HarnessError(f"unknown replica host {host!r}")
        if shape is None:
            return f"https://{host}{path}"
        if shape not in SHAPES:
            raise HarnessError(f"unknown replica shape {shape!r}")
        base, _, fragment = path.partition("#")
        url = f"https://{host}{base}{'&' if '?' in base else '?'}shape={shape}"
        return f"{url}#{fragment}" if fragment else url

    def set_fixtures(self, fixtures: dict[str, Any]) -> None:
        """Replace the user table served to every replica (e.g. lens:bob → Bob's real wallet)."""
        self.fixtures = fixtures

    def set_address(self, handle: str, address: str) -> None:
        """Point user ``handle`` at ``address`` on all three replicas."""
        users = dict(self.fixtures["users"])
        users[handle] = {**users[handle], "address": address}
        self.fixtures = {**self.fixtures, "users": users}


def _make_handler(server_state: ReplicaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ParleyReplica/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            site = HOST_SITES.get(host)
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            server_state.requests.append((host, path))
            if site is None:
                self._send(421, b"unknown host", "text/plain")
                return
            if path == "/fixtures.json":
                self._send(200, json.dumps(server_state.fixtures).encode(), "application/json")
                return
            base = SITES_DIR / "shared" if path.startswith("/_shared/") else SITES_DIR / site
            rel = path.removeprefix("/_shared/") if path.startswith("/_shared/") else path.lstrip("/")
            target = (base / rel).resolve()
            if target.is_file() and target.is_relative_to(base.resolve()):
                ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                if target.suffix == ".js":
                    ctype = "text/javascript"
                self._send(200, target.read_bytes(), ctype)
                return
            if "." in rel.rsplit("/", 1)[-1] and not rel.startswith(("u/", "account/", "profile/", "@")):
                self._send(404, b"not found", "text/plain")
                return
            self._send(200, (SITES_DIR / site / "index.html").read_bytes(), "text/html; charset=utf-8")

    return Handler


@contextlib.contextmanager
def replica_server(fixtures: dict[str, Any] | None = None) -> Iterator[ReplicaServer]:
    """Serve the three replicas over HTTPS on 127.0.0.1:<free port> until the block exits.

    Raises:
        HarnessError: the server did not start.
    """
    state = ReplicaServer(port=0, fixtures=fixtures or json.loads(FIXTURES_PATH.read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="parley-replica-") as tmp:
        cert, key = _self_signed(Path(tmp))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
        httpd.daemon_threads = True
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        state.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, name="replica-server", daemon=True)
        thread.start()
        try:
            yield state
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)


@dataclass
class BrowserSession:
    """A Chromium persistent context with the extension loaded."""

    context: BrowserContext
    extension_id: str
    artifacts: Path = ARTIFACTS_DIR

    @property
    def extension_origin(self) -> str:
        return f"chrome-extension://{self.extension_id}"

    def service_worker(self, timeout: float = 15.0) -> Worker:
        """The extension's service worker (waits for it to register).

        Raises:
            HarnessError: no worker for our extension appeared in time.
        """
        prefix = f"{self.extension_origin}/"

        def find() -> Worker | None:
            return next((w for w in self.context.service_workers if w.url.startswith(prefix)), None)

        worker = find()
        if worker is None:
            with contextlib.suppress(Exception):
                self.context.wait_for_event("serviceworker", timeout=timeout * 1000)
            worker = wait_until(find, timeout=timeout, what="the extension service worker")
        return worker

    def open_popup(self) -> Page:
        """Open the popup page in a tab (chrome-extension://ID/popup/popup.html)."""
        page = self.context.new_page()
        page.goto(f"{self.extension_origin}/popup/popup.html")
        return page

    def screenshot(self, page: Page, name: str) -> Path:
        """Save a screenshot as ``e2e/artifacts/<name>.png`` and return its path."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        page.screenshot(path=str(path))
        return path


def chromium_args(port: int, extension_dir: Path = EXTENSION_DIR) -> list[str]:
    """Command-line flags: load the extension only, map the site hosts onto 127.0.0.1:``port``."""
    rules = ", ".join(f"MAP {host} 127.0.0.1:{port}" for host in HOST_SITES)
    return [
        f"--disable-extensions-except={extension_dir}",
        f"--load-extension={extension_dir}",
        f"--host-resolver-rules={rules}",
        "--ignore-certificate-errors",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-sandbox",
        "--disable-gpu",
    ]


@contextlib.contextmanager
def launch_browser(
    user_data_dir: Path | str,
    port: int,
    *,
    playwright: Playwright | None = None,
    extension_dir: Path = EXTENSION_DIR,
    headless: bool = True,
) -> Iterator[BrowserSession]:
    """Start Chromium with the extension, the site hosts mapped onto the replica ``port``.

    Without ``playwright``, the thread's :func:`shared_playwright` (started if none runs).

    Raises:
        HarnessError: the extension's service worker never started.
    """
    with contextlib.ExitStack() as stack:
        pw = playwright if playwright is not None else stack.enter_context(shared_playwright())
        kwargs: dict[str, Any] = {}
        if CHROMIUM.exists():
            kwargs["executable_path"] = str(CHROMIUM)
        context = pw.chromium.launch_persistent_context(
            str(user_data_dir),
            headless=headless,
            args=chromium_args(port, extension_dir),
            ignore_https_errors=True,
            **kwargs,
        )
        stack.callback(context.close)
        session = BrowserSession(context=context, extension_id=extension_id(extension_dir))
        session.service_worker()
        yield session

