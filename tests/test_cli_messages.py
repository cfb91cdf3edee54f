"""Issue 12 CLI (bridge/cli_messages.py; contract §8), on the real `python -m bridge` against a real
relay process: requests, accept/decline/block/unblock, conversations [--json] [--all], messages --json
fields, exit codes, terminal-safe peer text; with and without a running daemon (``/v1/control/call``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def j(home: Path, *args: str, **env: str) -> Any:
    return json.loads(ok(parley(home, *args, "--json", **env)).stdout)


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


def test_reply_file_react_edit_delete_with_and_without_the_daemon(tmp_path: Path, relay_url: str, procs: list[Proc]) -> None:
    me, friend = tmp_path / "me", tmp_path / "friend"
    init(me, relay_url, KEY_A)
    f = init(friend, relay_url, KEY_B)["address"]
    my = whoami(me)["address"]
    first = json.loads(ok(parley(me, "send", f, "first", "--json")).stdout)["id"]
    ok(parley(friend, "sync"))
    # without a daemon (the friend's home): a reply, a file, a reaction
    reply = json.loads(ok(parley(friend, "send", my, "a reply", "--reply-to", first, "--json")).stdout)["id"]
    src = tmp_path / "note.txt"
    src.write_bytes(b"attached bytes\n")
    ok(parley(friend, "send", my, "", "--file", str(src)))
    ok(parley(friend, "react", my, first, "👍"))
    # with the daemon (my home): edit and delete my own message, read
    proc, _ = start_bridge(me, relay=relay_url)
    procs.append(proc)
    wait_for(lambda: len(j(me, "messages", f)) == 3, what="the reply and the file")
    view = j(me, "messages", f)
    by_id = {m["id"]: m for m in view}
    assert by_id[reply]["reply_to"] == first
    (att,) = [m for m in view if m["attachments"]]
    assert [(a["name"], a["size"]) for a in att["attachments"]] == [("note.txt", 15)]
    wait_for(lambda: {m["id"]: m for m in j(me, "messages", f)}[first]["reactions"] == {"👍": [f]}, what="the reaction")
    # The plain view shows them too: the reply's quote, the file with its id, the reaction count.
    plain = ok(parley(me, "messages", f)).stdout
    assert "↪ “first”" in plain and f"📎 note.txt (15 bytes," in plain and att["attachments"][0]["id"] in plain and "👍 1" in plain
    ok(parley(me, "edit", f, first, "first, edited", PARLEY_PASSPHRASE="wrong"))
    assert {m["id"]: m for m in j(me, "messages", f)}[first]["edited"] is True
    assert "first, edited  (edited)" in ok(parley(me, "messages", f)).stdout
    ok(parley(me, "delete", f, first, PARLEY_PASSPHRASE="wrong"))
    assert {m["id"]: m for m in j(me, "messages", f)}[first]["deleted"] is True
    plain = ok(parley(me, "messages", f)).stdout
    assert "[this message was deleted]" in plain and "first, edited" not in plain and "↪ a deleted message" in plain
    fails(parley(me, "edit", f, reply, "not mine", PARLEY_PASSPHRASE="wrong"), 2)  # someone else's message
    assert j(me, "read", f, PARLEY_PASSPHRASE="wrong")["unread"] == 0
