"""The lifecycle the fake servers share: serve in a thread on 127.0.0.1:0, and play dead on demand."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Served"]


class Served:
    """``with server:`` serves until the block ends; ``down()``/``up()`` toggle answering HTTP 503."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread
    _down: bool = False

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> str:
        """Bind ``handler`` to a free loopback port; returns the base URL."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def down(self) -> None:
        """Answer every request with HTTP 503 (a service that is down)."""
        self._down = True

    def up(self) -> None:
        self._down = False
