"""`parley backup export` / `parley backup import` (bridge/cli_backup.py; issue 15 CLI contract) on the real
`python -m bridge` against a real relay process: two wallets exchange messages, a file and a reaction;
the export makes the recovery key once; a second home of the same wallet imports it (twice: nothing
added), with and without its daemon running; a wrong key, another wallet's archive and a damaged file
are one line, exit 1, nothing changed; FILE is never replaced without --force; progress on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.backup import recovery
from tests.procs import Proc, parley, start_bridge, start_relay, wait_for
from tests.test_cli import KEY_A, KEY_B, fails, init, ok

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def world(tmp_path: Path, procs: list[Proc]) -> dict[str, Any]:
    """Alice and Bob (contacts of each other) on one relay: Bob sends a text and a 1.5 MiB file, Alice
    answers, reacts, and queues one message while the relay is down."""
    proc, url = start_relay(tmp_path / "relay.db")
    procs.append(proc)
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    a, b = init(alice, url, KEY_A)["address"], init(bob, url, KEY_B)["address"]
    ok(parley(alice, "contacts", "add", "bob", b))
    ok(parley(bob, "contacts", "add", "alice", a))
    ok(parley(bob, "send", a, "hello alice"))
    blob = tmp_path / "photo.bin"
    blob.write_bytes(os.urandom(1_500_000))
    ok(parley(bob, "send", a, "a file", "--file", str(blob)))
    ok(parley(alice, "sync"))
    msgs = json.loads(ok(parley(alice, "messages", b, "--json")).stdout)
    ok(parley(alice, "send", b, "hi bob"))
    ok(parley(alice, "react", b, msgs[0]["id"], "👍"))
    att = msgs[1]["attachments"][0]["id"]
    saved = tmp_path / "saved"
    saved.mkdir()
    ok(parley(alice, "attachment", "save", att, str(saved)))  # downloaded into alice's home
    return {"url": url, "alice": alice, "bob": bob, "a": a, "b": b, "blob": blob, "tmp": tmp_path, "relay": proc}


def tree(home: Path) -> dict[str, bytes]:
    """Every file under the home (its database's rows included, as a dump) by content."""
    out = {}
    for p in sorted(home.rglob("*")):
        if p.is_file() and not p.name.endswith(("-shm", "-wal")) and p.name not in ("parley.db", "daemon.json"):
            out[str(p.relative_to(home))] = hashlib.sha256(p.read_bytes()).digest()
    conn = sqlite3.connect(home / "parley.db")
    try:
        out["parley.db rows"] = hashlib.sha256("\n".join(conn.iterdump()).encode()).digest()
    finally:
        conn.close()
    return out


def messages(home: Path, peer: str, **env: str) -> list[dict[str, Any]]:
    return json.loads(ok(parley(home, "messages", peer, "--json", **env)).stdout)


def same_history(x: list[dict[str, Any]], y: list[dict[str, Any]]) -> bool:
    keep = ("id", "sender", "text", "sent_at", "direction", "kind", "reactions", "reply_to", "deleted")
    return [{k: m.get(k) for k in keep} for m in x] == [{k: m.get(k) for k in keep} for m in y]


def test_export_then_import_into_another_home_of_the_wallet(world: dict[str, Any]) -> None:
    alice, tmp, b = world["alice"], world["tmp"], world["b"]
    archive = tmp / "alice.parley"
    first = json.loads(ok(parley(alice, "backup", "export", str(archive), "--json")).stdout)
    key = first["recovery_key"]
    assert recovery.parse(key) == key and first["file"] == str(archive) and first["messages"] >= 4
    assert first["bytes"] == archive.stat().st_size > 1_500_000  # the file travels with it
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []  # no temporary left
    # never overwritten without --force; the key is shown once only
    before = archive.read_bytes()
    fails(parley(alice, "backup", "export", str(archive)), 2, "exists", "--force")
    assert archive.read_bytes() == before
    again = json.loads(ok(parley(alice, "backup", "export", str(archive), "--force", "--json")).stdout)
    assert again["recovery_key"] is None and archive.read_bytes() != before
    plain = ok(parley(alice, "backup", "export", str(tmp / "plain.parley"))).stdout
    assert "recovery key" not in plain.lower() and "exported" in plain

    # a new home of the same wallet (lost laptop, new one set up with the same wallet key)
    alice2 = tmp / "alice2"
    init(alice2, world["url"], KEY_A)
    rep = json.loads(ok(parley(alice2, "backup", "import", str(archive), "--recovery-key", recovery.display(key), "--json")).stdout)
    assert rep["messages_added"] == first["messages"] and rep["messages_skipped"] == 0 and rep["files"] == 1
    assert rep["address"] == world["a"] and rep["contacts"] == 1
    assert same_history(messages(alice2, b), messages(alice, b))
    # the file is there without a download: the relay is stopped, `attachment save` still works
    world["relay"].stop()
    att = next(m for m in messages(alice2, b) if m["attachments"])["attachments"][0]["id"]
    out = tmp / "out2"
    out.mkdir()
    saved = Path(ok(parley(alice2, "attachment", "save", att, str(out))).stdout.strip())
    assert saved.read_bytes() == world["blob"].read_bytes()
    assert "bob" in ok(parley(alice2, "contacts", "list")).stdout
    # importing twice adds nothing and changes nothing
    before_tree = tree(alice2)
    rep = json.loads(ok(parley(alice2, "backup", "import", str(archive), "--recovery-key", key, "--json")).stdout)
    assert rep["messages_added"] == 0 and rep["messages_skipped"] == first["messages"] and rep["files"] == 0
    assert tree(alice2) == before_tree
    human = ok(parley(alice2, "backup", "import", str(archive), "--recovery-key", key)).stdout
    assert human.startswith(f"imported 0 messages from {archive}")
    # the home adopted the key it was given: its next export makes no new one
    assert json.loads(ok(parley(alice2, "backup", "export", str(tmp / "a2.parley"), "--json")).stdout)["recovery_key"] is None


def test_wrong_key_other_wallet_and_damaged_archives_change_nothing(world: dict[str, Any]) -> None:
    alice, bob, tmp = world["alice"], world["bob"], world["tmp"]
    a_file, b_file = tmp / "a.parley", tmp / "b.parley"
    a_key = json.loads(ok(parley(alice, "backup", "export", str(a_file), "--json")).stdout)["recovery_key"]
    b_key = json.loads(ok(parley(bob, "backup", "export", str(b_file), "--json")).stdout)["recovery_key"]
    before = tree(alice)
    # a well-formed key that is not this archive's
    fails(parley(alice, "backup", "import", str(a_file), "--recovery-key", recovery.generate()), 1,
          "the recovery key does not open this archive")
    assert tree(alice) == before
    # a malformed key: a usage error naming the problem
    fails(parley(alice, "backup", "import", str(a_file), "--recovery-key", a_key[:-1] + ("0" if a_key[-1] != "0" else "1")), 2,
          "not a recovery key")
    # another wallet's archive, opened with its own key: refused in one line naming both addresses
    r = fails(parley(alice, "backup", "import", str(b_file), "--recovery-key", b_key), 1)
    assert r.strip() == f"parley: this archive belongs to {world['b']}, this home is {world['a']}"
    assert tree(alice) == before
    # damaged: truncated, a bit flipped in the middle, bytes appended
    data = a_file.read_bytes()
    for name, bad in (("truncated", data[:-100]), ("flipped", data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 4]) + data[len(data) // 2 + 1:]),
                      ("trailing", data + b"junk"), ("header only", data[:40])):
        damaged = tmp / f"{name}.parley"
        damaged.write_bytes(bad)
        r = parley(alice, "backup", "import", str(damaged), "--recovery-key", a_key)
        # progress lines (a 1.5 MB archive), then the error: one line, exit 1
        assert r.returncode == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert all(x.startswith("importing: ") for x in r.stderr.splitlines()[:-1]), (name, r.stderr)
        last = r.stderr.splitlines()[-1]
        assert last.startswith("parley: ") and "nothing was changed" in last and str(damaged) in last, (name, last)
        assert tree(alice) == before, name
    fails(parley(alice, "backup", "import", str(tmp / "missing.parley"), "--recovery-key", a_key), 2, "cannot read")
    fails(parley(alice, "backup", "import", str(a_file)), 2, "--recovery-key")


def test_import_while_the_daemon_runs(world: dict[str, Any], procs: list[Proc]) -> None:
    alice, tmp, b = world["alice"], world["tmp"], world["b"]
    archive = tmp / "alice.parley"
    key = json.loads(ok(parley(alice, "backup", "export", str(archive), "--json")).stdout)["recovery_key"]
    alice2 = tmp / "alice2"
    init(alice2, world["url"], KEY_A)
    proc, _ = start_bridge(alice2)
    procs.append(proc)
    rep = json.loads(ok(parley(alice2, "backup", "import", str(archive), "--recovery-key", key, "--json")).stdout)
    assert rep["messages_added"] >= 4
    # the daemon serves them at once (the CLI's reads go through its control route: no passphrase)
    assert same_history(messages(alice2, b, PARLEY_PASSPHRASE="wrong"), messages(alice, b))
    # and keeps working: bob's new message arrives through it
    ok(parley(world["bob"], "send", world["a"], "after the import"))
    wait_for(lambda: any(m["text"] == "after the import" for m in messages(alice2, b, PARLEY_PASSPHRASE="wrong")),
             what="a new message through the daemon after the import")


def test_progress_is_shown_on_stderr_for_large_archives(world: dict[str, Any]) -> None:
    alice, tmp, a, b = world["alice"], world["tmp"], world["a"], world["b"]
    conn = sqlite3.connect(alice / "parley.db")
    with conn:
        conn.executemany(
            "INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'in', 'received', 1)",
            [(f"{i:032x}", b, b, a, f"old message {i}", i, i) for i in range(6000)],
        )
    conn.close()
    archive = tmp / "big.parley"
    r = ok(parley(alice, "backup", "export", str(archive), "--json"))
    key = json.loads(r.stdout)["recovery_key"]
    lines = r.stderr.splitlines()
    assert lines[0].startswith("exporting: 0%") and lines[-1].startswith("exporting: 100%"), lines
    alice2 = tmp / "alice2"
    init(alice2, world["url"], KEY_A)
    r = ok(parley(alice2, "backup", "import", str(archive), "--recovery-key", key, "--json"))
    lines = r.stderr.splitlines()
    assert any(x.startswith("importing: ") for x in lines) and lines[-1].startswith("importing: 100%"), lines
    assert json.loads(r.stdout)["messages_added"] >= 6004
