"""``parley run``: the bridge daemon.

One process, listening on 127.0.0.1 only:

* the embedded relay (``/v1/identity``, ``/v1/prekeys``, ``/v1/envelopes``, ``/v1/subscribe``) when
  no relay URL is configured;
* the control endpoint for the CLI (``/v1/control/*``), authorised by a token in ``daemon.json``
  (mode 0600 in the home directory), so `parley send` needs no passphrase while the daemon runs;
* one subscriber thread per relay we read (home relays, and replaced ones in their grace period,
  bridge/homerelays.py) that keeps a WebSocket subscription to our inbox topic there and processes
  what arrives (an envelope that came through another relay already is skipped), reconnecting
  with backoff;
* a grace-period timer that stops reading a replaced home relay when its grace period ends (it wakes
  then, at least every ``GRACE_CHECK_S``, and when the relays change), not only at the next start;
* an outbox thread that retries queued messages, and publishes envelopes to the recipients' other
  inbox relays in the background (an envelope counts as delivered once one relay took it);
* a peer-refresh thread that refreshes the identity cache on a jittered schedule of its own, never
  because a message was sent or received (bridge/engine/peers.py; issue 8 item 2);
* a prekey thread that checks, every ``prekey_check_seconds`` (jittered), that the relay still has
  enough of our one-time prekeys (anonymous claims drain them), and rotates the signed and
  last-resort prekeys when due (bridge/engine/prekeys.py);
* a backup thread (issue 15) that, while ``backup_remote`` is on, keeps the encrypted incremental
  backup on every home relay up to date: at once when it is turned on, then when something changed,
  at most every ``backup_interval_minutes`` (bridge/backup/remote.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets as _secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, Response, abort, jsonify, request
from flask_sock import Sock
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from bridge import __version__
from bridge.api.access import Access, BridgeKey, PageSessions, chrome_ids
from bridge.api.rpc import INVALID_REQUEST, Hub, LocalApi, call_local_api
from bridge.api.web import register_local_api
from bridge.engine import BadInput, Engine, NotRegistered, inbox, outbox
from bridge.engine.engine import PROCESS_BATCH
from bridge.engine.prekeys import PrekeyPolicy
from bridge.home import Home, write_private
from bridge.homerelays import EMBEDDED_WARNING, record_embedded, relay_config, set_home_relays
from bridge.identity.smart import verifier_from_config
from bridge.keys import Secrets
from bridge.relay.client import RelayError, RelayUnavailable
from bridge.resolve import Contacts
from bridge.homerelays import pointer_lookup
from bridge.store import Store, now_ms

__all__ = [
    "Daemon", "DaemonClient", "run_daemon", "LOOPBACK_HOSTS", "HomeLock", "AlreadyRunning", "PortUnavailable", "port_in_use_message",
    "GRACE_CHECK_S",
]

log = logging.getLogger("parley.daemon")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
#: The grace-period timer looks at least this often (seconds) whether a replaced relay's grace period
#: is over, besides waking at the next end it knows of: a clock that jumps (suspend, NTP) is caught up.
GRACE_CHECK_S = 3600.0
#: While a backlog streams in, the daemon says how far it got at most this often (issue 13).
BACKLOG_REPORT_S = 2.0


def nodelay(server: BaseWSGIServer) -> None:
    """Disable Nagle on every connection (Linux: accepted sockets inherit it from the listener).

    The local API writes several small WebSocket frames in a row (notifications, then the answer);
    with Nagle on, the later ones wait for the client's delayed ACK: +40 ms per call.
    """
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def allowed_hosts(port: int) -> set[str]:
    return {f"{h}:{port}" for h in LOOPBACK_HOSTS}


class RedactingRequestHandler(WSGIRequestHandler):
    """werkzeug's request log without query strings: ``/login?t=…`` carries a one-time login token,
    and no secret may reach a log (issue 8)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path
        if "?" in path:
            self.path = path.split("?", 1)[0] + "?…"
        try:
            super().log_request(code, size)
        finally:
            self.path = path


class Daemon:
    """The daemon's parts, startable and stoppable from tests in-process as well as by ``run_daemon``."""

    def __init__(
        self, home: Home, secrets: Secrets, *, port: int, relay_url: str | None, echo: Callable[[str], Any] = log.info,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.echo = echo
        self.secrets = secrets
        #: Seconds since the epoch: when grace periods end (tests move it).
        self.clock = clock
        # One relay record per home (bridge/homerelays.py), read by the CLI too. `--relay URL` names
        # the home relay; with none recorded (or only the embedded one) we embed a relay.
        if relay_url is not None and relay_config(home).home != (relay_url.rstrip("/"),):
            set_home_relays(home, [relay_url])
        self.relays = relay_config(home)
        self.embedded = not self.relays.home or self.relays.embedded
        # No app-level static folder: Flask's default `/static/` route (files under the working
        # directory!) would shadow the pages' own files and answer without the Host check.
        self.app = Flask("parley.bridge", static_folder=None)
        self.app.url_map.merge_slashes = False  # as the relay's: no 308 redirects that rewrite paths
        self.app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
        self.sock = Sock(self.app)
        self.stop_event = threading.Event()
        self._registered = threading.Event()
        self.wake_outbox = threading.Event()
        self.control_token = _secrets.token_urlsafe(32)
        self._threads: list[threading.Thread] = []
        self._retention: Any = None
        self._storage: Any = None
        if self.embedded:
            from bridge.relay.server import RelaySettings, register_relay
            from bridge.relay.storage import open_storage

            cfg = home.config()
            self._storage = open_storage(str(home.relay_db_file))
            self._settings = RelaySettings(retention_days=cfg["retention_days"])
            # local bridges only: a loopback Host (with our port, or none: WebSocket clients send the
            # bare name), no web page (Origin) — the relay's own gate
            register_relay(
                self.app, self.sock, self._storage, self._settings,
                host_check=lambda host: host in LOOPBACK_HOSTS or host in allowed_hosts(self.port),
            )
        from bridge.relay.serving import env_number, make_guarded_server

        # half-open or idle connections must not each hold a thread for ever (issue 8)
        try:
            self.server: BaseWSGIServer = make_guarded_server(
                "127.0.0.1", port, self.app,
                header_timeout=env_number("PARLEY_BRIDGE_HEADER_TIMEOUT", 10.0),
                idle_timeout=env_number("PARLEY_BRIDGE_IDLE_TIMEOUT", 30.0),
                max_connections=int(env_number("PARLEY_BRIDGE_MAX_CONNECTIONS", 256)),
                handler_base=RedactingRequestHandler,
            )
        except OSError as exc:
            if self._storage is not None:
                self._storage.close()
            raise PortUnavailable(port_in_use_message(port, exc)) from None
        nodelay(self.server)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        if self.embedded and self.relays.home != (self.url,):
            self.relays = record_embedded(home, self.url)
        self.relay_url = self.relays.home[0]
        self.store = Store(home.db_file)
        self.engine = Engine(
            self.store, secrets, home.identity(), self.relay_url,
            verifier=verifier_from_config(home.config()),
            home_relays=self.relays.home, directory_relays=self.relays.directory, reading_relays=self._reading(),
            pointers=pointer_lookup(home.config()),
            peer_refresh_ms=int(float(home.config().get("peer_refresh_minutes") or 10) * 60_000),
        )
        #: The relays we read and whether each subscription is up (status, the extension's popup).
        self.relay_up: dict[str, bool] = {}
        self._subscribers: dict[str, threading.Event] = {}
        self._subscribers_lock = threading.Lock()
        self._relays_lock = threading.Lock()  # self.relays and the engine's relays change together
        self.wake_relays = threading.Event()  # the grace-period timer looks again now
        self.engine.prekeys.policy = PrekeyPolicy.from_config(home.config())
        self.engine.read_receipts = lambda: bool(home.config().get("read_receipts", True))  # type: ignore[method-assign]
        self.engine.listeners.append(self._on_event)
        # attachments (issue 12): downloads pending files of allowed conversations in the background
        from bridge.engine.attachments import Downloader

        self._downloader = Downloader(self.engine, self.stop_event)
        self.engine.listeners.append(self._downloader.on_event)
        # remote backup (issue 15): its own thread; idle while backup_remote is off
        from bridge.backup.remote import RemoteBackup

        self.backup = RemoteBackup(home, self.store, secrets, self.engine)
        self.access = Access(self.store)
        self.hub = Hub()
        #: relay URL → the run of envelopes being taken in from it (_take_in): {received, since, told, backlog}
        self._backlogs: dict[str, dict[str, Any]] = {}
        from bridge.api.wallet import WalletSignIn  # sign in with the browser wallet (issue 4 part 3)

        self.wallet = WalletSignIn(self.engine, home, secrets)
        self.pages = PageSessions()  # one-time links and sessions of the inbox and sign-in pages (memory only)
        self.api = LocalApi(
            self.engine, self.access, Contacts(home.contacts_file), lambda: self.relay_connected, self.hub,
            wallet=self.wallet, pages=self.pages, base_url=self.url, bridge_key=BridgeKey.load_or_create(home.path),
            echo=echo,
            # the popup's and the inbox page's backup.* (issue 15): the RemoteBackup the daemon runs
            # (self.backup, made above)
            backup=self.backup,
        )
        # The Chrome ids allowed (extension_ids / PARLEY_EXTENSION_IDS; an empty list: none, hence ("",));
        # Firefox origins are pinned at pairing.
        register_local_api(self.app, self.sock, self.api, port=self.port, extension_ids=chrome_ids(home.config()) or ("",))
        self._register_control()

    # --- control endpoint for the CLI ------------------------------------------------

    def _register_control(self) -> None:
        app = self.app

        def guard() -> None:
            if request.host not in allowed_hosts(self.port):
                abort(Response(json.dumps({"error": {"code": "bad_host", "message": "Host must be loopback"}}), 403, mimetype="application/json"))
            if request.headers.get("Origin") is not None:
                abort(Response(json.dumps({"error": {"code": "forbidden", "message": "browsers may not use the control API"}}), 403, mimetype="application/json"))
            supplied = request.headers.get("Authorization", "")
            if not _secrets.compare_digest(supplied.encode(), f"Bearer {self.control_token}".encode()):
                abort(Response(json.dumps({"error": {"code": "unauthorized", "message": "bad control token"}}), 401, mimetype="application/json"))

        @app.get("/v1/control/status")
        def control_status() -> Any:
            guard()
            return jsonify(self.status())

        @app.post("/v1/control/send")
        def control_send() -> Any:
            guard()
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("peer"), str) or not isinstance(body.get("text"), str):
                return jsonify({"error": {"code": "bad_request", "message": "expected {peer, text}"}}), 400
            try:
                r = self.engine.send(body["peer"], body["text"])
            except BadInput as exc:
                return jsonify({"error": {"code": "bad_input", "message": str(exc)}}), 400
            except NotRegistered as exc:
                return jsonify({"error": {"code": "not_registered", "message": str(exc)}}), 404
            if not r.delivered:
                self.wake_outbox.set()
            return jsonify({"message": r.message, "delivered": r.delivered, "error": r.error})

        @app.post("/v1/control/pair")
        def control_pair() -> Any:
            guard()
            code = self.access.new_pair_code()
            # The code itself goes only to the `parley pair` that asked for it: never into a log.
            self.echo("pairing code issued (valid 10 minutes; `parley pair` shows it)")
            return jsonify({"code": code})

        @app.post("/v1/control/open")
        def control_open() -> Any:
            guard()
            return jsonify({"url": f"{self.url}/login#t={self.pages.new_link('inbox')}"})

        @app.post("/v1/control/signin")
        def control_signin() -> Any:
            guard()
            return jsonify({"url": f"{self.url}/signin#t={self.pages.new_link('signin')}"})

        @app.post("/v1/control/relays")
        def control_relays() -> Any:
            """`parley relays set/directory` changed config.json: use it now (publish our new relay list,
            register on new relays, read them)."""
            guard()
            try:
                self.reload_relays()
            except (RelayUnavailable, RelayError) as exc:
                return jsonify({"error": {"code": "relay_unavailable", "message": str(exc)}}), 503
            return jsonify(self.relays.as_json())

        @app.post("/v1/control/sync")
        def control_sync() -> Any:
            guard()
            try:
                report = self.engine.sync_report()
            except (RelayUnavailable, RelayError) as exc:
                return jsonify({"error": {"code": "relay_unavailable", "message": str(exc)}}), 503
            return jsonify(report)

        # --- attachments (issue 12): `parley attachment save` asks the daemon to download a file
        @app.post("/v1/control/attachment-save")
        def control_attachment_save() -> Any:
            guard()
            from bridge.engine import attachments

            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                return jsonify({"error": {"code": "bad_request", "message": "expected {id}"}}), 400
            try:
                return jsonify(attachments.fetch(self.engine, body["id"]))
            except BadInput as exc:
                return jsonify({"error": {"code": "bad_input", "message": str(exc)}}), 400

        @app.post("/v1/control/call")
        def control_call() -> Any:
            """Issue 12: ``{method, params}`` → the local API method of that name (bridge/api/rpc.py), the
            same result as over JSON-RPC; errors as ``{error: {code, message, data?}}`` with its code."""
            guard()
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("method"), str) or not isinstance(body.get("params", {}), (dict, type(None))):
                return jsonify({"error": {"code": INVALID_REQUEST, "message": "expected {method, params}"}}), 400
            status, answer = call_local_api(self.api, body["method"], body.get("params"))
            if status == 200 and body["method"] in ("messages.send", "consent.set"):
                self.wake_outbox.set()  # anything left queued goes out with the outbox loop now
            return jsonify(answer), status

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "address": self.engine.address,
            "installation_id": self.engine.installation_id,
            "relay": {"url": self.relay_url, "connected": self.relay_connected, "embedded": self.embedded},
            "relays": {**self.relays.as_json(int(self.clock())), "connected": sorted(u for u, up in self.relay_up.items() if up)},
            "deliveries_pending": self.engine.pending_deliveries(),
            "pending": self.engine.pending_count(),
            "outbox": outbox.counts(self.store),
            "quarantined": inbox.quarantine_count(self.store),
        }

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "message.new" and payload.get("direction") == "in":
            log.info("new message %s from %s", payload["id"], payload["sender"])
        elif event == "message.sent":
            self.wake_outbox.set()  # its envelopes' other inbox relays are published to now, not in 5 s

    # --- background work ---------------------------------------------------------------

    @property
    def relay_connected(self) -> bool:
        """Whether we read our inbox on at least one relay right now."""
        return any(list(self.relay_up.values()))

    def reload_relays(self) -> None:
        """Apply config.json's relays (changed by `parley relays set/directory`): the engine uses them,
        our relay list names the new home relays and is published, and we read the new set.

        Raises:
            RelayUnavailable, RelayError: the new primary home relay could not be registered on.
        """
        relays = relay_config(self.home)
        if not relays.home:
            return
        with self._relays_lock:
            self.relays = relays
            self.relay_url = relays.home[0]
            self.engine.set_relays(relays.home, relays.directory, self._reading())
        self.wake_relays.set()  # the grace periods may have changed
        try:
            self.engine.register()
        finally:
            self._sync_subscribers()

    def _reading(self) -> tuple[str, ...]:
        """The relays we read now: home relays, and replaced ones whose grace period is not over."""
        return self.relays.reading(int(self.clock()))

    def drop_expired_relays(self) -> list[str]:
        """Stop reading the replaced home relays whose grace period is over. Returns them."""
        with self._relays_lock:
            reading = self._reading()
            dropped = [u for u in self.engine.reading_relays if u not in reading]
            if dropped:
                self.engine.set_relays(self.relays.home, self.relays.directory, reading)
        if dropped:
            self.echo("grace period over: no longer reading " + ", ".join(dropped))
            self._sync_subscribers()
        return dropped

    def next_grace_check(self) -> float:
        """Seconds until the grace-period timer looks again: the next end of a grace period, at most
        :data:`GRACE_CHECK_S`."""
        now = self.clock()
        return max(0.0, min([GRACE_CHECK_S, *(until - now for _, until in self.relays.previous if until > now)]))

    def _grace_timer(self) -> None:
        """Drop each replaced relay when its grace period ends, while the daemon runs."""
        while not self.stop_event.is_set():
            self.wake_relays.wait(self.next_grace_check())
            self.wake_relays.clear()
            if self.stop_event.is_set():
                break
            try:
                self.drop_expired_relays()
            except Exception:
                log.exception("ending a relay's grace period failed")

    def _sync_subscribers(self) -> None:
        """One subscriber thread per relay we read; stop those for relays we no longer read."""
        wanted = self._reading()
        with self._subscribers_lock:
            for url in list(self._subscribers):
                if url not in wanted:
                    self._subscribers.pop(url).set()
                    self.relay_up.pop(url, None)
            for url in wanted:
                if url not in self._subscribers:
                    stop = self._subscribers[url] = threading.Event()
                    t = threading.Thread(target=self._subscriber, args=(url, stop), name=f"parley-subscriber-{len(self._threads)}", daemon=True)
                    t.start()
                    self._threads.append(t)

    def _register(self) -> None:
        """Register on our relays until it works (the primary may be down at start)."""
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                self.engine.register()
                self.echo("registered on " + ", ".join(self.engine.home_relays))
                return
            except (RelayUnavailable, RelayError, OSError) as exc:
                log.warning("registering on %s: %s; retrying in %.1fs", self.relay_url, exc, backoff)
            except Exception:
                log.exception("registration failed; retrying in %.1fs", backoff)
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)

    def _subscriber(self, url: str, stop: threading.Event) -> None:
        """Keep one subscription to our inbox on the relay at ``url`` until ``stop`` (or the daemon stops)."""
        backoff = 0.5
        self._registered.wait()
        while not (self.stop_event.is_set() or stop.is_set()):
            try:
                token = self.engine.token(url)
                with self.engine.client(url).subscribe(self.engine.topic, self.engine.cursor(url), token=token) as sub:
                    self.relay_up[url] = True
                    self.echo(f"subscribed to {self.engine.topic} on {url}")
                    backoff = 0.5
                    self.wake_outbox.set()  # a relay is back: retry what is queued
                    while not (self.stop_event.is_set() or stop.is_set()):
                        env = sub.receive(1.0)  # None on timeout: a chance to notice a stop
                        if env is not None:
                            # a backlog (back after days offline) arrives as a burst: one transaction per burst
                            self._take_in(sub.drain(env, PROCESS_BATCH), url)
                        else:
                            self._backlog_done(url)
            except (RelayUnavailable, RelayError, OSError) as exc:
                if isinstance(exc, RelayError) and exc.status == 401:
                    self.engine.forget_token(url)  # a restarted relay no longer knows our token
                    log.warning("relay %s refused our credentials (%s: %s); authenticating again in %.1fs", url, exc.code, exc.message, backoff)
                else:
                    log.warning("relay %s: %s; retrying in %.1fs", url, exc, backoff)
            except Exception:
                log.exception("subscriber on %s failed; retrying in %.1fs", url, backoff)
            if stop.is_set():
                break
            self.relay_up[url] = False
            if stop.wait(backoff) or self.stop_event.is_set():
                break
            backoff = min(backoff * 2, 30.0)
        with self._subscribers_lock:
            if stop.is_set() and self._subscribers.get(url) is not stop:
                self.relay_up.pop(url, None)  # no longer read: neither up nor down

    def _take_in(self, envs: list[Any], url: str) -> None:
        """Process a burst of envelopes from ``url`` in one transaction. Envelopes with no quiet
        second between them make a run; a run with a burst of more than one envelope is a backlog
        (back after days offline), and the daemon tells it: a line on its output at most every
        BACKLOG_REPORT_S and a ``status`` notification on the local API ``{syncing, received}``,
        then ``{syncing: false, received}`` once the relay has sent everything it held."""
        self.engine.process_many(envs, url)
        now = time.monotonic()
        run = self._backlogs.setdefault(url, {"received": 0, "since": now, "told": 0.0, "backlog": False})
        run["received"] += len(envs)
        run["backlog"] = run["backlog"] or len(envs) > 1
        if run["backlog"] and now - run["told"] >= BACKLOG_REPORT_S:
            run["told"] = now
            self.echo(f"taking in the backlog on {url}: {run['received']} envelope(s) so far")
            self.hub.publish("status", {"syncing": True, "received": run["received"]})

    def _backlog_done(self, url: str) -> None:
        """A quiet second on ``url``: a backlog being taken in is complete."""
        run = self._backlogs.pop(url, None)
        if run is None or not run["backlog"]:
            return
        self.echo(f"backlog on {url} taken in: {run['received']} envelope(s) in {time.monotonic() - run['since']:.1f} s")
        self.hub.publish("status", {"syncing": False, "received": run["received"]})

    def _outbox(self) -> None:
        """Flush what is due: every 5 s, when woken (a send, the relay reconnecting), or sooner when a
        message's backoff (``next_attempt_at``, bridge/engine/outbox.py) ends before that."""
        wait = 5.0
        while not self.stop_event.is_set():
            self.wake_outbox.wait(wait)
            self.wake_outbox.clear()
            if self.stop_event.is_set():
                break
            wait = 5.0
            try:
                if self.engine.pending_count():
                    self.engine.flush_outbox()
                if self.engine.pending_deliveries():
                    self.engine.retry_deliveries()
                due = outbox.counts(self.store)["next_attempt_at"]
                if due is not None:
                    wait = min(5.0, max(0.2, (due - now_ms()) / 1000))
            except Exception:
                log.exception("outbox flush failed")

    def _prekey_check(self) -> None:
        """Keep our prekeys topped up and rotated while running, not only at start (issue 8)."""
        interval = self.engine.prekeys.policy.check_seconds
        while not self.stop_event.wait(interval * random.uniform(0.8, 1.2)):
            try:
                if self.engine.ensure_prekeys():
                    log.info("prekeys uploaded to %s", self.relay_url)
            except (RelayUnavailable, RelayError) as exc:
                log.warning("prekey check on %s failed: %s", self.relay_url, exc)
            except Exception:
                log.exception("prekey check failed")

    def start(self) -> None:
        if self.embedded:
            from bridge.relay.server import start_retention

            self._retention = start_retention(self._storage, self._settings)
        def register() -> None:
            self._register()
            self._registered.set()

        for target, name in (
            (self.server.serve_forever, "http"),
            (register, "register"),
            (self._outbox, "outbox"),
            (lambda: self.engine.peers.run(self.stop_event), "peers"),
            (self._prekey_check, "prekeys"),
            (self._grace_timer, "relay-grace"),
            (self._downloader.run, "downloads"),  # attachments (issue 12)
            (lambda: self.backup.run(self.stop_event), "backup"),  # remote backup (issue 15)
        ):
            t = threading.Thread(target=target, name=f"parley-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._sync_subscribers()
        info = {"pid": os.getpid(), "url": self.url, "port": self.port, "token": self.control_token, "relay": self.relay_url}
        write_private(self.home.daemon_file, json.dumps(info).encode())

    def stop(self) -> None:
        self.stop_event.set()
        self._downloader.wake()  # attachments (issue 12)
        self.backup.wake()  # its loop sees stop_event at once
        self._registered.set()
        self.wake_outbox.set()
        self.wake_relays.set()
        with contextlib.suppress(FileNotFoundError):
            info = json.loads(self.home.daemon_file.read_text())
            if info.get("pid") == os.getpid() and info.get("token") == self.control_token:
                self.home.daemon_file.unlink()
        self.server.shutdown()
        self.server.server_close()
        if self._retention is not None:
            self._retention.stop()
        for t in self._threads:
            t.join(timeout=5)
        if self._storage is not None:
            self._storage.close()
        self.store.close()


def run_daemon(home: Home, secrets: Secrets, *, port: int, relay_url: str | None, echo: Callable[[str], Any]) -> None:
    """Run until SIGINT/SIGTERM."""
    daemon = Daemon(home, secrets, port=port, relay_url=relay_url, echo=echo)
    stop = threading.Event()

    def _signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    daemon.start()
    relay_note = "embedded relay" if daemon.embedded else "home relays " + ", ".join(daemon.relays.home)
    echo(f"parley bridge listening on {daemon.url} ({relay_note})")
    if daemon.embedded:
        echo(EMBEDDED_WARNING)
    echo(f"address {daemon.engine.address}, installation {daemon.engine.installation_id}")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        echo("stopping")
        daemon.stop()


class PortUnavailable(Exception):
    """``parley run`` cannot listen on its port (the message is one line, from :func:`port_in_use_message`)."""


class AlreadyRunning(Exception):
    """Another ``parley run`` holds this home's lock (the message is one line)."""


class HomeLock:
    """The home directory itself, locked (``flock``, exclusive) for as long as ``parley run`` lives:
    one bridge per home. The kernel releases it when the process ends, however it ends (kill -9
    included), so a stale lock never blocks a new start; and no lock file is left behind (a refused
    or failed start changes nothing in the home)."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> "HomeLock":
        """Raises:
            AlreadyRunning: another process holds it (the message names its pid and URL when known).
        """
        import fcntl

        fd = os.open(self.home.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self._running_message()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _running_message(self) -> str:
        try:
            info = self.home.daemon_info() or {}
        except Exception:  # noqa: BLE001 - only for the message
            info = {}
        pid, url = info.get("pid"), info.get("url")
        alive = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and _alive(pid)
        if alive and isinstance(url, str):
            where = f" (pid {pid}, {url})"
        else:
            where = " (still starting)"  # daemon.json is written once it listens
        return "a bridge is already running for this home" + where

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_in_use_message(port: int, error: OSError) -> str:
    """One line for a port ``parley run`` cannot bind: names a Parley bridge or relay found there."""
    import errno

    if error.errno != errno.EADDRINUSE:
        return f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}"
    base = f"http://127.0.0.1:{port}"
    what = "another program"
    try:
        r = requests.get(f"{base}/v1/control/status", timeout=1.5)
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else None
        err = body.get("error") if isinstance(body, dict) else None
        if r.status_code == 401 and isinstance(err, dict) and err.get("message") == "bad control token":
            what = "another Parley bridge (another home)"
        else:
            h = requests.get(f"{base}/v1/health", timeout=1.5)
            data = h.json() if h.headers.get("Content-Type", "").startswith("application/json") else None
            if isinstance(data, dict) and data.get("ok") is True and "version" in data:
                what = "a Parley relay"
    except (requests.RequestException, ValueError):
        pass
    return (f"port {port} is used by {what}; stop it, or choose another port: "
            f"`parley run --port N` or `parley config set port N`")


class DaemonClient:
    """How the CLI talks to a running daemon of the same home."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.url = info["url"]
        self._headers = {"Authorization": f"Bearer {info['token']}"}
        self._http = requests.Session()

    @classmethod
    def find(cls, home: Home) -> "DaemonClient | None":
        info = home.daemon_info()
        if not info or not isinstance(info.get("pid"), int):
            return None
        try:
            os.kill(info["pid"], 0)
        except (ProcessLookupError, PermissionError):
            return None
        client = cls(info)
        try:
            client._call("GET", "status", timeout=2.0)
        except (RelayUnavailable, RelayError):
            return None
        return client

    def _call(self, method: str, name: str, body: dict[str, Any] | None = None, timeout: float = 120.0) -> dict[str, Any]:
        try:
            r = self._http.request(method, f"{self.url}/v1/control/{name}", json=body, headers=self._headers, timeout=timeout)
        except requests.RequestException as exc:
            raise RelayUnavailable(f"daemon at {self.url} unreachable: {exc}") from None
        data = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        if r.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            code, message = err.get("code", "error"), err.get("message", f"HTTP {r.status_code}")
            if code == "bad_input":
                raise BadInput(message)
            if code == "not_registered":
                raise NotRegistered(message)
            if code == "relay_unavailable":
                raise RelayUnavailable(message)
            raise RelayError(r.status_code, code, message)
        return data

    def send(self, peer: str, text: str) -> dict[str, Any]:
        return self._call("POST", "send", {"peer": peer, "text": text})

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """A local API method through ``/v1/control/call`` (issue 12).

        Raises:
            RpcError: the method's error (its JSON-RPC code); RelayUnavailable: the daemon is unreachable.
        """
        from bridge.api.rpc import INTERNAL_ERROR, RpcError

        try:
            r = self._http.post(f"{self.url}/v1/control/call", json={"method": method, "params": params}, headers=self._headers, timeout=300)
        except requests.RequestException as exc:
            raise RelayUnavailable(f"daemon at {self.url} unreachable: {exc}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RpcError(INTERNAL_ERROR, f"the daemon answered HTTP {r.status_code}")
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            code = err.get("code")
            raise RpcError(code if isinstance(code, int) else INTERNAL_ERROR, str(err.get("message", "error")), err.get("data"))
        return data.get("result")

    def sync(self) -> dict[str, Any]:
        return self._call("POST", "sync", {})

    def reload_relays(self) -> dict[str, Any]:
        return self._call("POST", "relays", {})

    def pair_code(self) -> str:
        return str(self._call("POST", "pair", {})["code"])

    def login_url(self) -> str:
        return str(self._call("POST", "open", {})["url"])

    def signin_url(self) -> str:
        return str(self._call("POST", "signin", {})["url"])
