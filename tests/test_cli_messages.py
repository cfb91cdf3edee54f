"""Issue 12 CLI (bridge/cli_messages.py; contract §8), on the real `python -m bridge` against a real
relay process: requests, accept/decline/block/unblock, conversations [--json] [--all], messages --json
fields, exit codes, terminal-safe peer text; with and without a running daemon (``/v1/control/call``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import Proc, parley, start_bridge, start_relay, wait_for, whoami
from tests.test_cli import KEY_A, KEY_B, KEY_C, fails, init, ok

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def relay_url(tmp_path: Path, procs: list[Proc]) -> str:
    proc, url = start_relay(tmp_path / "relay.db")
    procs.append(proc)
    return url


def j(home: Path, *args: str) -> object:
    return json.loads(ok(parley(home, *args, "--json")).stdout)


def test_a_stranger_lands_in_requests_and_the_decisions_work_without_a_daemon(tmp_path: Path, relay_url: str) -> None:
    me, stranger = tmp_path / "me", tmp_path / "stranger"
    init(me, relay_url, KEY_A)
    s = init(stranger, relay_url, KEY_B)["address"]
    my = whoami(me)["address"]
    for text in ("one", "two", "\x1b[31mthree\u202e", "four"):
        ok(parley(stranger, "send", my, text))
    ok(parley(me, "sync"))
    (req,) = j(me, "requests")
    assert (req["peer"], req["consent"], req["unread"], req["held"]) == (s, "requested", 3, 1)
    assert j(me, "conversations") == []  # the inbox: allowed only
    assert [c["consent"] for c in j(me, "conversations", "--all")] == ["requested"]
    human = ok(parley(me, "requests")).stdout
    assert s in human and "1 held" in human
    # peer text is escaped for the terminal
    lines = ok(parley(me, "conversations", "--all")).stdout
    assert "\x1b" not in lines and "\u202e" not in lines and "\\x1b[31mthree\\u202e" in lines
    msgs = j(me, "messages", s)
    assert [m["text"] for m in msgs] == ["one", "two", "\x1b[31mthree\u202e"]
    for m in msgs:
        assert {"reply_to", "reactions", "edited", "deleted", "state", "attachments", "kind"} <= set(m)
        assert (m["reply_to"], m["reactions"], m["edited"], m["deleted"], m["attachments"]) == (None, {}, False, False, [])
    assert j(me, "read", s) == {"unread": 0}
    assert j(me, "requests")[0]["unread"] == 0
    # decisions
    assert j(me, "accept", s) == {"peer": s, "consent": "allowed", "held": 1, "dropped": 0}
    assert [c["peer"] for c in j(me, "conversations")] == [s] and j(me, "requests") == []
    assert "blocked" in ok(parley(me, "block", s)).stdout
    ok(parley(stranger, "send", my, "while blocked"))
    ok(parley(me, "sync"))
    assert [m["text"] for m in j(me, "messages", s)][-1] == "\x1b[31mthree\u202e"
    assert j(me, "unblock", s)["consent"] == "allowed"
    assert j(me, "decline", s)["consent"] == "declined"
    assert j(me, "conversations") == [] and [c["consent"] for c in j(me, "conversations", "--all")] == ["declined"]
    # bad input: exit 2, one line
    fails(parley(me, "block", "0x123"), 2, "not an address")
    fails(parley(me, "block", my), 2, "own address")
    fails(parley(me, "react", s, "nope", "👍"), 2, "not a message id")
    assert "Block PEER" in ok(parley(me, "block", "--help")).stdout


def test_with_the_daemon_the_cli_uses_the_control_call_route(tmp_path: Path, relay_url: str, procs: list[Proc]) -> None:
    me, stranger = tmp_path / "me", tmp_path / "stranger"
    init(me, relay_url, KEY_A)
    s = init(stranger, relay_url, KEY_C)["address"]
    my = whoami(me)["address"]
    proc, url = start_bridge(me, relay=relay_url)
    procs.append(proc)
    ok(parley(stranger, "send", my, "hello from afar"))
    # no passphrase: only the daemon can answer
    wait_for(lambda: json.loads(ok(parley(me, "requests", "--json", PARLEY_PASSPHRASE="wrong")).stdout), what="the request")
    (req,) = j(me, "requests")
    assert req["peer"] == s and req["consent"] == "requested"
    out = json.loads(ok(parley(me, "accept", s, "--json", PARLEY_PASSPHRASE="wrong")).stdout)
    assert out == {"peer": s, "consent": "allowed", "held": 0, "dropped": 0}
    fails(parley(me, "block", my, PARLEY_PASSPHRASE="wrong"), 2)
    # the route itself: same guard as the other control routes, errors as JSON with a code
    info = json.loads((me / "daemon.json").read_text())
    r = requests.post(f"{url}/v1/control/call", json={"method": "consent.get", "params": {"peer": s}}, timeout=10)
    assert r.status_code == 401
    auth = {"Authorization": f"Bearer {info['token']}"}
    r = requests.post(f"{url}/v1/control/call", json={"method": "consent.get", "params": {"peer": s}}, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json() == {"result": {"peer": s, "consent": "allowed", "held": 0, "dropped": 0}}
    r = requests.post(f"{url}/v1/control/call", json={"method": "consent.set", "params": {"peer": s, "action": "x"}}, headers=auth, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602
    r = requests.post(f"{url}/v1/control/call", json={"method": "nope", "params": {}}, headers=auth, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == -32601
    r = requests.post(f"{url}/v1/control/call", json={"method": "consent.get", "params": {"peer": s}},
                      headers={**auth, "Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403
