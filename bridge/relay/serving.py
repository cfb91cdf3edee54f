"""Serving models of the standalone relay (docs/PROTOCOL.md §7; issue 5 part 4, "relay at scale").

Two models serve the same Flask app (:func:`bridge.relay.server.create_app`):

* ``"gevent"`` (the default of ``parley relay``): one process, gevent monkey-patched, served by
  :class:`gevent.pywsgi.WSGIServer`. Every WebSocket costs two greenlets (the subscribe handler and
  simple-websocket's reader) instead of two OS threads; a mass disconnect drains in seconds
  (bench/README.md has the figures).
* ``"threaded"``: werkzeug's threaded development server, two OS threads per WebSocket. It stays
  the server of the relay embedded in ``parley run``, which only serves the local bridges.

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

    Each WebSocket holds one or two descriptors (gevent's pywsgi hands simple-websocket a ``dup``).
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
) -> None:
    """Serve the WSGI ``app`` with gevent's WSGIServer until SIGTERM or SIGINT.

    ``ready_callback(host, port)`` is called once the socket listens (the bound port for ``port=0``).
    On a signal the listener closes, handlers get ``stop_timeout`` seconds, then are killed.

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
    server = WSGIServer(listener, app, log=None)
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
        server.stop(timeout=stop_timeout)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bridge.relay.serving relay …``: patch for gevent, then run the Parley CLI."""
    patch_gevent()
    from bridge.cli import main as cli_main

    cli_main(None if argv is None else list(argv))


if __name__ == "__main__":
    main()
