"""Serving models of the standalone relay (docs/PROTOCOL.md §7; issue 5 part 4, "relay at scale").

Two models serve the same Flask app (:func:`bridge.relay.server.create_app`):

* ``"gevent"`` (the default of ``parley relay``): one process, gevent monkey-patched, served by
  :class:`gevent.pywsgi.WSGIServer`. Every WebSocket costs two greenlets (the subscribe handler and
  simple-websocket's reader) instead of two OS threads; a mass disconnect drains in seconds
  (bench/README.md has the figures).
* ``"threaded"``: werkzeug's threaded development server, two OS threads per WebSocket. It stays
  the server of the relay embedded in ``parley run``, which only serves the local bridges.

Both models bound what one connection may hold (issue 8: 1,000 half-open requests each held a
thread): a connection must deliver a request line and headers within ``header_timeout`` seconds of
connecting or of its previous answer (:class:`HeaderDeadlines` shuts it down otherwise); a request
body may stall at most ``idle_timeout`` seconds between reads; at most ``max_connections`` are
served at once (gevent: a pool, the rest wait in the listen backlog; threaded: the rest are closed at
once). WebSocket connections have no socket timeout: pings bound them.

Monkey-patching must happen before ``socket``, ``ssl`` and ``threading`` users are imported, so
``parley relay`` re-executes itself as ``python -m bridge.relay.serving relay …`` (same PID: the
process is replaced, stdout and signals are unchanged); this module's ``__main__`` patches first
and then runs the CLI.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Sequence

__all__ = [
    "SERVING_MODELS",
    "DEFAULT_MODEL",
    "ServingError",
    "patch_gevent",
    "gevent_patched",
    "reexec_patched",
    "raise_nofile_limit",
    "serve_gevent",
    "HeaderDeadlines",
    "make_guarded_server",
    "env_number",
    "main",
]

SERVING_MODELS = ("gevent", "threaded")
DEFAULT_MODEL = "gevent"
_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class ServingError(Exception):
    """The serving model cannot run (gevent missing, or the process is not monkey-patched)."""


def patch_gevent() -> None:
    """Monkey-patch the standard library for gevent (idempotent). Call before other imports.

    Raises:
        ServingError: gevent is not installed.
    """
    try:
        from gevent import monkey
    except ImportError as exc:  # pragma: no cover - gevent is a dependency
        raise ServingError(f"the gevent serving model needs the gevent package: {exc}") from None
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def gevent_patched() -> bool:
    """Whether this process has been monkey-patched by gevent (socket and threading)."""
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket") and monkey.is_module_patched("threading"))


def reexec_patched(cli_args: Sequence[str]) -> None:
    """Replace this process by ``python -m bridge.relay.serving <cli_args>`` (does not return).

    The PID, stdout/stderr, the process group and the environment are kept, so a supervisor that
    started ``parley relay`` still signals the right process.

    Raises:
        OSError: the interpreter cannot be executed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "bridge.relay.serving", *cli_args])


def raise_nofile_limit(target: int = 65536) -> int:
    """Raise this process's open-file limit towards ``target`` (above the hard limit only as root).

    Each WebSocket holds one descriptor (the gevent model hands simple-websocket the connection's own
    socket, not a ``dup``).
    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            new_hard = hard if hard == resource.RLIM_INFINITY else max(hard, target)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
        except (ValueError, OSError):
            if hard == resource.RLIM_INFINITY or hard > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard) if hard != resource.RLIM_INFINITY else target, hard))
                except (ValueError, OSError):
                    pass
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def serve_gevent(
    app: Callable[..., Any],
    host: str,
    port: int,
    *,
    ready_callback: Callable[[str, int], None] | None = None,
    stop_timeout: float = 2.0,
    header_timeout: float = 10.0,
    idle_timeout: float = 30.0,
    max_connections: int = 20_000,
    ssl_context: Any = None,
) -> None:
    """Serve the WSGI ``app`` with gevent's WSGIServer until SIGTERM or SIGINT.

    ``ready_callback(host, port)`` is called once the socket listens (the bound port for ``port=0``).
    On a signal the listener closes, handlers get ``stop_timeout`` seconds, then are killed.
    ``ssl_context`` (an ``ssl.SSLContext``): serve https and wss. Each connection's handshake runs in
    its own greenlet, lazily on the first read, so it falls under the header deadline like a slow
    request line.

    Raises:
        ServingError: the process is not monkey-patched (call :func:`patch_gevent` first).
        OSError: the address cannot be bound.
    """
    if not gevent_patched():
        raise ServingError("the gevent serving model needs patch_gevent() before anything else is imported")
    import gevent
    import gevent.event
    from gevent.pywsgi import WSGIServer

    raise_nofile_limit()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0] if infos else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Several small writes per answer and per WebSocket frame: without TCP_NODELAY each later
        # one waits for the peer's delayed ACK (~40 ms). Accepted sockets inherit it on Linux.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(infos[0][4] if infos else (host, port))
        listener.listen(_BACKLOG)
    except BaseException:
        listener.close()
        raise
    from gevent.pool import Pool

    deadlines = HeaderDeadlines(header_timeout).start()
    tls: dict[str, Any] = {} if ssl_context is None else {"ssl_context": ssl_context, "do_handshake_on_connect": False}
    server = WSGIServer(
        listener, app, log=None, spawn=Pool(max(1, int(max_connections))), handler_class=_gevent_handler(deadlines, idle_timeout),
        **tls,
    )
    stopping = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        server.start()
        if ready_callback is not None:
            ready_callback(host, int(listener.getsockname()[1]))
        stopping.wait()
    finally:
        for h in handlers:
            h.cancel()
        deadlines.stop()
        server.stop(timeout=stop_timeout)


class HeaderDeadlines:
    """Shuts down connections that have not delivered a request line and headers in time.

    ``begin(sock)`` when a request is awaited, ``end(sock)`` once its headers are read. One
    background thread (a greenlet under gevent) checks the deadlines a few times per
    ``timeout``; a late socket is shut down, so the read blocked on it returns end-of-file and
    the handler closes the connection. A total deadline, unlike a socket timeout, also stops a
    client that sends one header byte every few seconds.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self._due: dict[int, tuple[float, Any]] = {}
        self._late: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parley-header-deadlines", daemon=True)
        self.closed = 0  # connections shut down for being late (diagnostics)

    def start(self) -> HeaderDeadlines:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def begin(self, sock: Any) -> None:
        with self._lock:
            self._due[id(sock)] = (time.monotonic() + self.timeout, sock)
            self._late.discard(id(sock))

    def end(self, sock: Any) -> bool:
        """Stop the clock for ``sock``; ``True`` if it was already shut down for being late
        (then whatever was read is a truncated request and must not be served)."""
        with self._lock:
            self._due.pop(id(sock), None)
            late = id(sock) in self._late
            self._late.discard(id(sock))
            return late

    def _run(self) -> None:
        interval = max(0.01, min(0.5, self.timeout / 4))
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                late = [k for k, (due, _) in self._due.items() if due <= now]
                socks = [self._due.pop(k)[1] for k in late]
                self._late.update(late)
            for sock in socks:
                self.closed += 1
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def env_number(name: str, default: float) -> float:
    """A positive number from environment variable ``name``, else ``default`` (also when malformed)."""
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if value > 0 else default


def _is_websocket(headers: Any) -> bool:
    return str(headers.get("Upgrade", "") if headers is not None else "").lower() == "websocket"


def _gevent_handler(deadlines: HeaderDeadlines, idle_timeout: float) -> Any:
    from gevent.pywsgi import WSGIHandler

    class _Handler(WSGIHandler):  # type: ignore[misc]
        late = False

        def read_requestline(self) -> Any:
            deadlines.begin(self.socket)
            return super().read_requestline()

        def read_request(self, raw_requestline: Any) -> Any:
            try:
                return super().read_request(raw_requestline)
            finally:
                self.late = deadlines.end(self.socket)
                self.socket.settimeout(None if _is_websocket(getattr(self, "headers", None)) else idle_timeout)

        def handle_one_request(self) -> Any:
            sock = self.socket
            self.late = False
            try:
                result = super().handle_one_request()
            finally:
                self.late = deadlines.end(sock) or self.late
            return None if self.late else result  # late: the headers were cut off; just close

        def get_environ(self) -> Any:
            environ = super().get_environ()
            if _is_websocket(getattr(self, "headers", None)):
                # simple-websocket takes ``werkzeug.socket`` as it is; otherwise, under gevent, it
                # dup()s the connection's socket, and every WebSocket costs two descriptors.
                environ["werkzeug.socket"] = _HandedSocket(self.socket)
            return environ

        def run_application(self) -> Any:
            handed = self.environ.get("werkzeug.socket")
            if not isinstance(handed, _HandedSocket):
                return super().run_application()
            try:
                super().run_application()
            except _WebSocketDone:
                pass
            except BaseException:
                if handed.taken:
                    # Killed (the server stopping) or failed past Flask: gevent would answer
                    # "HTTP/1.1 500" into the WebSocket's stream unless it believes a response
                    # has begun; it then only closes the connection.
                    self.close_connection = True
                    self.response_length = self.response_length or 1
                raise
            if handed.taken:
                self.close_connection = True
                # simple-websocket's reader may still be waiting on this descriptor (its selector
                # or recv), and gevent closes the socket as soon as this returns: the reader would
                # linger on a closed descriptor until its next ping, and a descriptor closed under
                # a live libev watcher can abort the process (an assertion in epoll_ctl). Wake the
                # reader with a shutdown, and let it close its selector and the socket first.
                if not handed.closed.is_set():
                    try:
                        self.socket.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    handed.closed.wait(_READER_EXIT_TIMEOUT)
            return None

        def process_result(self) -> Any:
            handed = self.environ.get("werkzeug.socket")
            if isinstance(handed, _HandedSocket) and handed.taken:
                # The WebSocket wrote its own 101 answer and frames on this socket; flask-sock's
                # empty answer after it must not reach the wire (it would go out on a closed socket).
                self.headers_sent = True
                raise _WebSocketDone
            return super().process_result()

    return _Handler


class _WebSocketDone(Exception):
    """Raised past gevent's ``process_result`` once a WebSocket has used the connection."""


_READER_EXIT_TIMEOUT = 5.0  # seconds a WebSocket's reader gets to close its socket after a shutdown


class _HandedSocket:
    """A connection's socket as handed to simple-websocket: the socket itself, no ``dup``. Notes
    whether the WebSocket used it (a request refused before the handshake answers as usual) and
    when its reader closed it (it closes its selector first, then the socket); sends one at a time."""

    __slots__ = ("_sock", "taken", "closed", "_sending")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.taken = False
        self.closed = threading.Event()
        self._sending = threading.Lock()

    def send(self, data: Any, flags: int = 0) -> int:
        """All of ``data``, one sender at a time. The handler sends frames while the reader sends
        pongs and pings: with one socket object (no dup) two greenlets blocked on a full buffer
        would share its write watcher, and gevent refuses that (the reader would die, its selector
        left watching). simple-websocket also ignores a partial send's count."""
        self.taken = True
        with self._sending:
            self._sock.sendall(data, flags)
        return len(data)

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            self.closed.set()

    def __getattr__(self, name: str) -> Any:
        self.taken = True
        return getattr(self._sock, name)


class _BindFailed(Exception):
    """The listening socket could not be bound (carries the OSError past werkzeug's own handler,
    which would print two lines and exit the process)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def make_guarded_server(
    host: str, port: int, app: Any, *, header_timeout: float, idle_timeout: float, max_connections: int, handler_base: Any = None,
    ssl_context: Any = None,
) -> Any:
    """werkzeug's threaded WSGI server (a ``BaseWSGIServer``) with a header deadline, a body idle
    timeout and a connection cap: connections beyond ``max_connections`` are closed at once.
    ``server_close()`` also stops the deadline thread. werkzeug is imported here, not at module
    import, so that gevent can patch the process first. ``handler_base``: a ``WSGIRequestHandler``
    subclass to build on (e.g. one whose request log drops query strings). ``ssl_context`` (an
    ``ssl.SSLContext``): serve https and wss; each connection's TLS handshake runs in its own thread
    under the header deadline (werkzeug's own ``ssl_context`` would shake hands in the accepting
    thread, where one silent client stops every other connection).

    Raises:
        OSError: the address cannot be bound.
    """
    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    deadlines = HeaderDeadlines(header_timeout)
    slots = threading.BoundedSemaphore(max(1, int(max_connections)))

    class _Handler(handler_base or WSGIRequestHandler):  # type: ignore[misc]
        def handle_one_request(self) -> None:
            deadlines.begin(self.connection)
            try:
                super().handle_one_request()
            finally:
                if deadlines.end(self.connection):
                    self.close_connection = True

        def parse_request(self) -> bool:
            ok = bool(super().parse_request())
            if deadlines.end(self.connection):  # shut down for being late: the headers were cut off
                self.close_connection = True
                return False
            self.connection.settimeout(None if ok and _is_websocket(self.headers) else idle_timeout)
            return ok

    class _Server(ThreadedWSGIServer):
        def server_bind(self) -> None:
            # werkzeug prints two lines and exits when binding fails: raise past its handler instead
            try:
                super().server_bind()
            except OSError as exc:
                raise _BindFailed(exc) from None

        def verify_request(self, request: Any, client_address: Any) -> bool:
            return bool(slots.acquire(blocking=False))  # full: the new connection is closed

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                if ssl_context is not None:
                    request = _handshake(request)
                    if request is None:
                        return
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

        def server_close(self) -> None:
            deadlines.stop()
            super().server_close()

    def _handshake(raw: Any) -> Any:
        """The TLS server side of ``raw``, or None (closed) when the handshake fails or is late."""
        deadlines.begin(raw)
        try:
            raw.settimeout(header_timeout)
            tls = ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        except (OSError, ValueError):
            deadlines.end(raw)
            try:
                raw.close()
            except OSError:
                pass
            return None
        if deadlines.end(raw):
            tls.close()
            return None
        return tls

    try:
        server = _Server(host, port, app, handler=_Handler)
    except _BindFailed as failed:
        raise failed.error from None
    # werkzeug reads ``ssl_context`` to set wsgi.url_scheme (https) and to log TLS errors quietly
    server.ssl_context = ssl_context
    server.header_deadlines = deadlines  # type: ignore[attr-defined]
    deadlines.start()
    return server


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bridge.relay.serving relay …``: patch for gevent, then run the Parley CLI."""
    patch_gevent()
    from bridge.cli import main as cli_main

    cli_main(None if argv is None else list(argv))


if __name__ == "__main__":
    main()
