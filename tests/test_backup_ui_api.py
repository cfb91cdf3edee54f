"""The backup's local API (issue 15 item 8; PROTOCOL.md §8.2 ``backup.*``, §8.3 ``/api/backup*``).

Real parts: an engine registered on a real relay (``parley relay`` over loopback), its SQLite store,
the real recovery key and state (bridge/backup/state.py), RemoteBackup backing up to that relay, the
real JSON-RPC connection and the real Flask routes with the daemon's gates. Checked: the key is in
createKey's answer once and nowhere else (not the database, not the log); a second key is refused;
only the key made, typed back, confirms, and only then is backup on; an unconfirmed key can be
replaced (backup goes off until the new one is confirmed), a confirmed one cannot; the page routes
need an inbox session, our Origin and the CSRF token, and a refused request changes nothing.
(Which callers may reach ``backup.*`` — the popup, not a widget — is the worker's part:
tests/js/backup-worker.test.mjs and e2e/test_backup_ui.py.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sock import Sock

from bridge.api.access import EXTENSION_ID, Access, PageSessions
from bridge.api.rpc import Hub, LocalApi, RpcConnection
from bridge.api.web import register_local_api
from bridge.backup import recovery, state
from bridge.backup.remote import RemoteBackup
from bridge.home import Home
from bridge.resolve import Contacts
from tests.engines import close_engines, track  # noqa: F401 (close_engines: autouse fixture)
from tests.procs import PASSPHRASE, Proc, parley, start_relay

PORT = 8737
OURS = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc: Proc
    proc, url = start_relay(tmp_path_factory.mktemp("relay") / "relay.db")
    try:
        yield url
    finally:
        proc.stop()


class Bridge:
    """A bridge's local API over a real engine and store, with remote backup to ``relay``."""

    def __init__(self, tmp: Path, relay: str, *, backups: bool = True) -> None:
        from bridge.engine import Engine
        from bridge.keys import load_keyfile
        from bridge.store import Store

        self.tmp = tmp
        parley(tmp, "init", "--relay", relay, check=True)
        self.home = Home(tmp)
        self.secrets = load_keyfile(tmp / "keys.json", PASSPHRASE)
        self.engine = track(Engine(Store(self.home.db_file), self.secrets, self.home.identity(), relay))
        self.store = self.engine.store
        self.remote = RemoteBackup(self.home, self.store, self.secrets, [relay]) if backups else None
        self.api = LocalApi(self.engine, Access(self.store), Contacts(tmp / "contacts.json"), lambda: True, Hub(),
                            pages=PageSessions(), backup=self.remote)
        self.sent: list[Any] = []
        self.rpc = RpcConnection(self.api, lambda text: self.sent.append(json.loads(text)), lambda code, reason: None, "test",
                                 origin=f"chrome-extension://{EXTENSION_ID}", host=f"127.0.0.1:{PORT}")
        self.rpc.token_id = "t"  # authenticated (the pairing itself is tests/test_api.py's)
        self.api.access.token_valid = lambda token_id: True  # type: ignore[method-assign]
        app = Flask(__name__)
        register_local_api(app, Sock(app), self.api, port=PORT)
        self.client = app.test_client()
        self.headers = self.session("inbox")

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """One JSON-RPC call: {"result": ...} or {"error": {code, message, data?}}."""
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": len(self.sent) + 1, "method": method}
        if params is not None:
            req["params"] = params
        self.rpc.handle(json.dumps(req))
        out = self.sent[-1]
        return {k: v for k, v in out.items() if k in ("result", "error")}

    def session(self, scope: str) -> dict[str, str]:
        r = self.client.post("/api/session", json={"token": self.api.pages.new_link(scope)}, headers={"Origin": OURS}, base_url=OURS)
        s = r.get_json()
        return {"X-Parley-Session": s["session"], "X-Parley-CSRF": s["csrf"], "Origin": OURS}

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers if headers is None else headers, base_url=OURS, **kw)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=self.headers if headers is None else headers, base_url=OURS)

    def db_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.tmp.glob("parley.db*")))

    def snapshot(self) -> tuple[Any, ...]:
        """What a refused request may not change: the key state and the remote setting."""
        return (state.key_state(self.store), state.backup_keys(self.store, self.secrets), self.home.config().get("backup_remote"))


def _other(key: str) -> str:
    """Another valid recovery key (checksum right), so a refusal is a mismatch, not a typo."""
    while True:
        other = recovery.display(recovery.generate())
        if other != key:
            return other


def _error(reply: dict[str, Any]) -> tuple[int, str | None]:
    err = reply["error"]
    return err["code"], (err.get("data") or {}).get("reason")


def test_rpc_the_key_once_then_typed_back_then_on(tmp_path: Path, relay: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    b = Bridge(tmp_path, relay)
    st = b.call("backup.status")["result"]
    assert (st["has_key"], st["confirmed"], st["enabled"], st["key_created_at"]) == (False, False, False, None)
    # Nothing to confirm, nothing to turn on yet.
    assert _error(b.call("backup.confirmKey", {"recovery_key": _other("")})) == (-32010, "no_key")
    assert _error(b.call("backup.setRemote", {"enabled": True})) == (-32010, "no_key")

    key = b.call("backup.createKey", {})["result"]["recovery_key"]
    assert recovery.display(key) == key  # the display form: 16 groups of 4
    canonical = recovery.parse(key)
    assert canonical.encode() not in b.db_bytes() and key.encode() not in b.db_bytes()
    st = b.call("backup.status")["result"]
    assert (st["has_key"], st["confirmed"], st["enabled"]) == (True, False, False)
    assert isinstance(st["key_created_at"], int)
    assert canonical not in json.dumps(st) and key not in json.dumps(st)

    # Shown once: a second createKey is refused, and so is a replace while… (unconfirmed: see below).
    assert _error(b.call("backup.createKey", {})) == (-32010, "exists")
    assert _error(b.call("backup.createKey")) == (-32010, "exists")
    # Not on before it is typed back.
    assert _error(b.call("backup.setRemote", {"enabled": True})) == (-32010, "unconfirmed")
    # A typo (checksum) and another valid key are refused, nothing changes.
    before = b.snapshot()
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    err = b.call("backup.confirmKey", {"recovery_key": typo})["error"]
    assert (err["code"], err["data"]["reason"]) == (-32010, "malformed") and "checksum" in err["message"]
    assert _error(b.call("backup.confirmKey", {"recovery_key": _other(key)})) == (-32010, "mismatch")
    assert b.snapshot() == before and b.home.config().get("backup_remote") is False

    # The right key, typed as people type it: confirmed, and remote backup is on.
    typed = key.upper().replace(" ", "-")
    assert b.call("backup.confirmKey", {"recovery_key": typed})["result"] == {"confirmed": True, "enabled": True}
    assert state.key_state(b.store)["confirmed"] is True and b.home.config().get("backup_remote") is True
    # A confirmed key is never replaced from here; a new key is still refused.
    assert _error(b.call("backup.createKey", {"replace": True})) == (-32010, "confirmed")
    assert _error(b.call("backup.createKey", {})) == (-32010, "exists")

    # The backup reaches the relay; the status says so (what the popup and the page show).
    b.remote.run_once()
    st = b.call("backup.status")["result"]
    assert st["last_backup_at"] and st["size"] > 0 and [r["state"] for r in st["relays"]] == ["ok"]
    assert st == {**b.remote.status(), "key_created_at": state.key_state(b.store)["created_at"]}
    from bridge.relay.client import RelayClient

    assert RelayClient(relay).backup_list(recovery.derive(canonical).auth_private)
    # Off and on again (a confirmed key).
    assert b.call("backup.setRemote", {"enabled": False})["result"]["enabled"] is False
    assert b.call("backup.setRemote", {"enabled": True})["result"]["enabled"] is True

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "a recovery key was created (shown once)" in logged
    assert canonical not in logged and key not in logged and typed not in logged


def test_an_unconfirmed_key_can_be_replaced_and_backup_waits_for_the_new_one(tmp_path: Path, relay: str) -> None:
    """The popup closed on the key (or `parley backup remote on` printed it and nobody typed it back)."""
    b = Bridge(tmp_path, relay)
    old = b.call("backup.createKey", {})["result"]["recovery_key"]
    b.remote.enable()  # as `parley backup remote on` did: on, with a key never typed back
    assert b.home.config().get("backup_remote") is True
    new = b.call("backup.createKey", {"replace": True})["result"]["recovery_key"]
    assert new != old
    assert b.home.config().get("backup_remote") is False, "on again only once the new key is typed back"
    assert _error(b.call("backup.confirmKey", {"recovery_key": old})) == (-32010, "mismatch")
    assert b.call("backup.confirmKey", {"recovery_key": new})["result"]["confirmed"] is True
    assert b.home.config().get("backup_remote") is True
    assert _error(b.call("backup.createKey", {"replace": True})) == (-32010, "confirmed")


@pytest.mark.parametrize(("method", "params"), [
    ("backup.status", {"x": 1}), ("backup.status", [1]),
    ("backup.createKey", {"replace": "yes"}), ("backup.createKey", {"replace": 1}), ("backup.createKey", {"key": "abc"}),
    ("backup.confirmKey", {}), ("backup.confirmKey", {"recovery_key": 7}), ("backup.confirmKey", {"recovery_key": ""}),
    ("backup.confirmKey", {"recovery_key": "a" * 201}), ("backup.confirmKey", {"recovery_key": "x", "enabled": True}),
    ("backup.setRemote", {}), ("backup.setRemote", {"enabled": "true"}), ("backup.setRemote", {"enabled": 1}),
])
def test_rpc_bad_params_change_nothing(tmp_path: Path, relay: str, method: str, params: Any) -> None:
    b = Bridge(tmp_path, relay)
    before = b.snapshot()
    assert b.call(method, params)["error"]["code"] == -32602
    assert b.snapshot() == before


def test_without_backups_every_method_says_so(tmp_path: Path, relay: str) -> None:
    b = Bridge(tmp_path, relay, backups=False)
    for method, params in (("backup.status", None), ("backup.createKey", {}), ("backup.confirmKey", {"recovery_key": "x"}),
                           ("backup.setRemote", {"enabled": True})):
        assert _error(b.call(method, params)) == (-32010, "unavailable")
    assert b.get("/api/backup").status_code == 503
    assert state.key_state(b.store)["has_key"] is False


# --- the inbox page's routes -------------------------------------------------------------------------

WRITES = [("/api/backup/key", {}), ("/api/backup/confirm", {"recovery_key": "x" * 64}), ("/api/backup/remote", {"enabled": False})]


@pytest.mark.parametrize(("path", "body"), WRITES, ids=[w[0].rsplit("/", 1)[1] for w in WRITES])
def test_page_writes_need_an_inbox_session_our_origin_the_csrf_token_and_json(tmp_path: Path, relay: str, path: str, body: dict[str, Any]) -> None:
    b = Bridge(tmp_path, relay)
    good = b.headers
    signin = b.session("signin")  # the sign-in page's session is not the inbox's
    before = b.snapshot()
    for headers, status, code in (
        ({k: v for k, v in good.items() if k != "X-Parley-Session"}, 401, "no-session"),
        (signin, 401, "no-session"),
        ({**good, "Origin": "https://hey.xyz"}, 403, "origin"),
        ({k: v for k, v in good.items() if k != "Origin"}, 403, "origin"),
        ({**good, "Origin": "http://127.0.0.1:1"}, 403, "origin"),
        ({k: v for k, v in good.items() if k != "X-Parley-CSRF"}, 403, "csrf"),
        ({**good, "X-Parley-CSRF": signin["X-Parley-CSRF"]}, 403, "csrf"),
    ):
        r = b.post(path, body, headers)
        assert (r.status_code, r.get_json()["error"]["code"]) == (status, code), headers
    form = b.client.post(path, data=json.dumps(body), content_type="text/plain", headers=good, base_url=OURS)
    assert form.status_code == 415
    assert b.client.post(path, json=body, headers={**good, "Host": "evil.example"}).status_code == 403
    assert b.snapshot() == before, "a refused request changed the backup"
    # The status needs the inbox session too (the sign-in page's gets nothing).
    assert b.get("/api/backup", signin).status_code == 401
    assert b.get("/api/backup", {}).status_code == 401


def test_page_the_same_flow_with_clear_refusals(tmp_path: Path, relay: str) -> None:
    b = Bridge(tmp_path, relay)
    st = b.get("/api/backup")
    assert st.status_code == 200 and st.get_json()["has_key"] is False
    assert st.headers["Cache-Control"] == "no-store" and "default-src 'none'" in st.headers["Content-Security-Policy"]
    assert b.post("/api/backup/remote", {"enabled": True}).get_json()["error"]["code"] == "no_key"
    made = b.post("/api/backup/key", {})
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    key = made.get_json()["recovery_key"]
    again = b.post("/api/backup/key", {})
    assert (again.status_code, again.get_json()) == (400, {"error": {"code": "exists", "message": "a recovery key exists"}})
    assert b.post("/api/backup/key", {"replace": "yes"}).get_json()["error"]["code"] == "bad-request"
    assert b.post("/api/backup/key", {"other": 1}).get_json()["error"]["code"] == "bad-request"
    wrong = b.post("/api/backup/confirm", {"recovery_key": _other(key)})
    assert (wrong.status_code, wrong.get_json()["error"]["code"]) == (400, "mismatch")
    assert b.post("/api/backup/confirm", {"recovery_key": key[:-4]}).get_json()["error"]["code"] == "malformed"
    assert b.post("/api/backup/remote", {"enabled": True}).get_json()["error"]["code"] == "unconfirmed"
    assert b.post("/api/backup/confirm", {"recovery_key": key}).get_json() == {"confirmed": True, "enabled": True}
    assert b.get("/api/backup").get_json()["enabled"] is True
    off = b.post("/api/backup/remote", {"enabled": False}).get_json()
    assert off["enabled"] is False and off["confirmed"] is True
    assert recovery.parse(key).encode() not in b.db_bytes()
