"""`parley restore` (issue 15 item 5; PROTOCOL.md §12.6): from the recovery key alone, into an empty home,
with real relays and real processes; a wrong key, a hostile relay and a hostile file are refused and
leave the home as it was."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.relay.client import RelayClient
from tests.procs import Proc, befriend, parley, start_relay, whoami

pytestmark = pytest.mark.slow


def ok(r: Any) -> Any:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    return r


def fails(r: Any, code: int, *needles: str) -> str:
    assert r.returncode == code, f"exit {r.returncode}, expected {code}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.splitlines() if line.startswith("parley:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def empty(home: Path) -> bool:
    return not home.exists() or not any(home.iterdir())


@dataclass
class Net:
    d: Path
    r1: str
    r2: str
    bob: Path
    carol: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp("restore")
    started: list[Proc] = []
    try:
        p1, u1 = start_relay(d / "r1.db")
        started.append(p1)
        p2, u2 = start_relay(d / "r2.db")
        started.append(p2)
        for name in ("bob", "carol"):
            ok(parley(d / name, "init", "--relay", u1, "--relay", u2))
        yield Net(d, u1, u2, d / "bob", d / "carol")
    finally:
        for p in reversed(started):
            p.stop()


def send(home: Path, to: str, text: str, *files: Path) -> str:
    args = [a for f in files for a in ("--file", str(f))]
    return str(json.loads(ok(parley(home, "send", to, text, *args, "--json")).stdout)["id"])


def listing(home: Path, peer: str) -> list[dict[str, Any]]:
    """What a user sees of a conversation, without what a new installation legitimately changes."""
    rows = json.loads(ok(parley(home, "messages", peer, "--json")).stdout)
    keep = ("id", "sender", "recipient", "text", "sent_at", "direction", "read", "edited", "deleted", "reply_to", "kind")
    out = []
    for m in rows:
        row = {k: m.get(k) for k in keep}
        row["attachments"] = [{k: a.get(k) for k in ("id", "name", "size")} for a in m.get("attachments") or []]
        out.append(row)
    return out


@dataclass
class History:
    home: Path
    address: str
    installation_id: str
    key: str
    messages: list[dict[str, Any]]
    contacts: Any
    file_in: str  # attachment id of a file bob sent (alice never downloaded it: only its locator and key)
    file_bytes: bytes
    ids: dict[str, str] = field(default_factory=dict)
    counts: tuple[int, int] = (0, 0)  # displayable messages and conversations in the store, all peers


def history(net: Net, tmp_path: Path, *, remote: bool = True) -> History:
    """Alice with real history: messages both ways, an edit, a file each way, contacts, a declined request;
    then remote backup on (a base) and one more change (a delta)."""
    alice = tmp_path / "alice"
    ok(parley(alice, "init", "--relay", net.r1, "--relay", net.r2))
    ok(parley(alice, "config", "set", "backup_standby", "false"))
    befriend(alice, net.bob)
    a, b, c = whoami(alice)["address"], whoami(net.bob)["address"], whoami(net.carol)["address"]
    ids = {"in1": send(net.bob, a, "hello alice")}
    ids["out1"] = send(alice, b, "hi bob")
    doc = tmp_path / "notes.bin"
    data = os.urandom(5000)
    doc.write_bytes(data)
    ids["file_msg"] = send(net.bob, a, "a file for you", doc)
    ours = tmp_path / "mine.txt"
    ours.write_bytes(b"alice's own file")
    ids["out_file"] = send(alice, b, "and one from me", ours)
    send(net.carol, a, "hi, I am a stranger")
    ok(parley(alice, "sync"))
    ok(parley(alice, "decline", c))
    if remote:
        out = json.loads(ok(parley(alice, "backup", "remote", "on", "--json")).stdout)
        key = out["recovery_key"]
        assert [r["state"] for r in out["relays"]] == ["ok", "ok"]
        ok(parley(alice, "edit", b, ids["out1"], "hi bob (edited)"))
        ids["in2"] = send(net.bob, a, "after the base")
        ok(parley(alice, "sync"))
        out = json.loads(ok(parley(alice, "backup", "remote", "on", "--json")).stdout)  # runs again: a delta
        assert out["segments"] == 2 and "recovery_key" not in out
    else:
        key = ""
    msgs = listing(alice, b)
    db = sqlite3.connect(alice / "parley.db")
    try:
        counts = (
            db.execute("SELECT COUNT(*) FROM messages WHERE kind IN ('text', 'reply', 'attachment', 'unknown')").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0],
        )
    finally:
        db.close()
    file_in = next(a_["id"] for m in msgs if m["id"] == ids["file_msg"] for a_ in m["attachments"])
    return History(
        alice, a, whoami(alice)["installation_id"], key, msgs,
        json.loads(ok(parley(alice, "contacts", "list", "--json")).stdout), file_in, data, ids, counts,
    )


def active(url: str, address: str) -> set[str]:
    from bridge import identity

    return set(identity.installations(address, RelayClient(url).identity(address)))


def test_restore_from_a_relay_after_the_home_is_gone(net: Net, tmp_path: Path) -> None:
    h = history(net, tmp_path)
    b = whoami(net.bob)["address"]
    shutil.rmtree(h.home)
    new = tmp_path / "alice-restored"
    r = ok(parley(new, "restore", "--recovery-key", h.key, "--relay", net.r1, "--revoke-lost", "--json"))
    s = json.loads(r.stdout)
    assert "downloading seg-00000001" in r.stderr and "downloading seg-00000002" in r.stderr  # progress lines
    assert s["address"] == h.address and s["installation_id"] != h.installation_id
    assert s["wallet"] == "generated" and s["segments"] == 2 and s["registered"] is True
    assert s["relays"] == [net.r1, net.r2]  # the backup's home relays, not just where it was found
    assert s["lost"] == [h.installation_id] and s["revoked"] == [h.installation_id] and s["kept"] == []
    assert (s["messages"], s["conversations"]) == h.counts and s["messages"] == len(h.messages) + 1  # + carol's request
    # the whole history, in order, with the edit of the delta, the contacts and the declined request
    assert listing(new, b) == h.messages
    assert [m["text"] for m in h.messages if m["id"] == h.ids["out1"]] == ["hi bob (edited)"]
    assert json.loads(ok(parley(new, "contacts", "list", "--json")).stdout) == h.contacts
    c = whoami(net.carol)["address"]
    assert c not in json.dumps(json.loads(ok(parley(new, "conversations", "--json")).stdout))  # still declined: hidden
    # the file bob sent: only its locator and key were in the backup, and they still open it
    out_dir = tmp_path / "saved"
    out_dir.mkdir()
    saved = Path(ok(parley(new, "attachment", "save", h.file_in, str(out_dir))).stdout.strip().split()[-1])
    assert saved.read_bytes() == h.file_bytes
    # a new installation of the same wallet, the lost one revoked on both relays
    assert whoami(new)["address"] == h.address
    for url in (net.r1, net.r2):
        assert active(url, h.address) == {s["installation_id"]}
    # remote backup is on again, with the same key
    status = json.loads(ok(parley(new, "backup", "remote", "status", "--json")).stdout)
    assert status["enabled"] is True and status["has_key"] is True
    # and messages flow both ways
    send(new, b, "back from the dead")
    ok(parley(net.bob, "sync"))
    assert "back from the dead" in [m["text"] for m in listing(net.bob, h.address)]
    # (bob's cache still lists only the revoked installation until its scheduled refresh: a sender that
    # looks alice up now, as any new correspondent does, reaches the new installation)
    dave = tmp_path / "dave"
    ok(parley(dave, "init", "--relay", net.r1))
    send(dave, h.address, "welcome back")
    ok(parley(new, "sync"))
    assert "welcome back" in [m["text"] for m in listing(new, whoami(dave)["address"])]
    # nothing private left behind; no temporary directory left in the home
    assert oct(new.stat().st_mode & 0o777) == "0o700"
    assert not [p for p in new.iterdir() if p.name.startswith(".restore-")]
    # the second relay holds the same backup; this time the installation made above is kept, and listed
    other = tmp_path / "alice-again"
    s2 = json.loads(ok(parley(other, "restore", "--recovery-key", h.key, "--relay", net.r2, "--keep-lost", "--json")).stdout)
    assert s2["messages"] == s["messages"] and s2["revoked"] == [] and s2["kept"] == [s["installation_id"]]


def test_wrong_key_bad_key_and_a_used_home_are_refused_and_nothing_is_written(net: Net, tmp_path: Path) -> None:
    from bridge.backup import recovery

    home = tmp_path / "new"
    fails(parley(home, "restore", "--recovery-key", recovery.generate(), "--relay", net.r1), 1, "no backup for this recovery key", net.r1)
    assert not home.exists()
    fails(parley(home, "restore", "--recovery-key", "not-a-key", "--relay", net.r1), 2, "not a recovery key")
    fails(parley(home, "restore", "--recovery-key", recovery.generate()), 2, "--relay URL")
    assert not home.exists()
    home.mkdir(mode=0o700)
    fails(parley(home, "restore", "--recovery-key", recovery.generate(), "--relay", net.r1), 1, "no backup")
    assert empty(home)  # an empty directory stays an empty directory
    used = tmp_path / "used"
    ok(parley(used, "init", "--relay", net.r1))
    before = sorted((p.name, p.read_bytes()) for p in used.iterdir() if p.is_file())
    fails(parley(used, "restore", "--recovery-key", recovery.generate(), "--relay", net.r1), 2, "already holds an installation")
    assert sorted((p.name, p.read_bytes()) for p in used.iterdir() if p.is_file()) == before


def put(url: str, keys: Any, name: str, data: bytes) -> None:
    with RelayClient(url) as c:
        c.backup_put(keys.auth_private, name, data, len(data))


def get(url: str, keys: Any, name: str) -> bytes:
    with RelayClient(url) as c:
        data = c.backup_get(keys.auth_private, name)
    assert isinstance(data, bytes)
    return data


def test_a_hostile_relay_is_refused_and_the_home_stays_empty(net: Net, tmp_path: Path) -> None:
    """The relay drops a middle segment, replays an old one under a newer name, serves another vault's
    segment, flips a bit: each is refused with one clear line, and the home is left empty."""
    from bridge.backup import recovery

    h = history(net, tmp_path)
    keys = recovery.derive(h.key)
    b = whoami(net.bob)["address"]
    ok(parley(h.home, "edit", b, h.ids["out1"], "third segment"))
    out = json.loads(ok(parley(h.home, "backup", "remote", "on", "--json")).stdout)
    assert out["segments"] == 3
    seg = {n: get(net.r1, keys, f"seg-0000000{n}") for n in (1, 2, 3)}
    # another wallet's backup (carol's vault, another recovery key)
    carol_out = json.loads(ok(parley(net.carol, "backup", "remote", "on", "--json")).stdout)
    foreign = get(net.r1, recovery.derive(carol_out["recovery_key"]), "seg-00000001")
    home = tmp_path / "target"

    def attempt(*needles: str) -> None:
        r = parley(home, "restore", "--recovery-key", h.key, "--relay", net.r1, "--keep-lost")
        fails(r, 1, *needles)
        assert not home.exists(), "the home was written before the backup was verified"

    with RelayClient(net.r1) as c:
        c.backup_delete(keys.auth_private, "seg-00000002")
    attempt("seg-00000002 is missing")
    put(net.r1, keys, "seg-00000002", seg[2])
    put(net.r1, keys, "seg-00000003", seg[2])  # an old segment replayed under the newest name
    attempt("seg-00000003", "says it is segment 2")
    put(net.r1, keys, "seg-00000003", seg[3])
    put(net.r1, keys, "seg-00000002", seg[1])  # the base replayed as a delta
    attempt("seg-00000002", "says it is segment 1")
    put(net.r1, keys, "seg-00000002", foreign)  # another vault's segment in the middle
    attempt("seg-00000002", "does not open with this recovery key")
    flipped = bytearray(seg[2])
    flipped[len(flipped) // 2] ^= 1
    put(net.r1, keys, "seg-00000002", bytes(flipped))
    attempt("seg-00000002", "failed authentication")
    put(net.r1, keys, "seg-00000002", seg[2])
    s = json.loads(ok(parley(home, "restore", "--recovery-key", h.key, "--relay", net.r1, "--keep-lost", "--json")).stdout)
    assert s["segments"] == 3 and "third segment" in [m["text"] for m in listing(home, b)]


def test_restore_from_an_export_file(net: Net, tmp_path: Path) -> None:
    h = history(net, tmp_path, remote=False)
    b = whoami(net.bob)["address"]
    archive = tmp_path / "alice.parley"
    out = json.loads(ok(parley(h.home, "backup", "export", str(archive), "--json")).stdout)
    key = out["recovery_key"]
    messages = listing(h.home, b)
    mine = next(a["id"] for m in messages if m["id"] == h.ids["out_file"] for a in m["attachments"])
    shutil.rmtree(h.home)
    new = tmp_path / "from-file"
    fails(parley(new, "restore", "--recovery-key", __import__("bridge.backup.recovery", fromlist=["generate"]).generate(), "--file", str(archive)), 1, "does not open")
    assert not new.exists()
    s = json.loads(ok(parley(new, "restore", "--recovery-key", key, "--file", str(archive), "--keep-lost", "--json")).stdout)
    assert s["address"] == h.address and s["kept"] == [h.installation_id] and s["revoked"] == []
    assert listing(new, b) == messages
    saved_dir = tmp_path / "saved"
    saved_dir.mkdir()
    saved = Path(ok(parley(new, "attachment", "save", mine, str(saved_dir))).stdout.strip().split()[-1])
    assert saved.read_bytes() == b"alice's own file"  # the export carried the file itself


def test_a_relay_that_lists_a_segment_it_does_not_serve() -> None:
    """vault_segments with a relay double that lists seg-1..2 but answers 404 for seg-1."""
    import tempfile

    from bridge.backup import recovery
    from bridge.backup.restore import RestoreError, vault_segments
    from bridge.relay.client import NotFound

    keys = recovery.derive(recovery.generate())

    class Liar:
        def backup_list(self, auth: bytes) -> list[dict[str, Any]]:
            return [{"name": "seg-00000001", "size": 10}, {"name": "seg-00000002", "size": 10}, {"name": "junk", "size": 1}]

        def backup_get(self, auth: bytes, name: str, out: Any = None) -> bytes:
            raise NotFound(404, "not_found", "no such object")

    with tempfile.TemporaryDirectory() as d, pytest.raises(RestoreError, match="seg-00000002 is listed on http://liar but missing there"):
        vault_segments(Liar(), keys, "http://liar", Path(d))


def test_messages_sent_while_away_are_drained_from_the_standby_which_is_rotated_not_revoked(net: Net, tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    ok(parley(alice, "init", "--relay", net.r1, "--relay", net.r2))
    befriend(alice, net.bob)
    a, b = whoami(alice)["address"], whoami(net.bob)["address"]
    send(net.bob, a, "before the loss")
    ok(parley(alice, "sync"))
    out = json.loads(ok(parley(alice, "backup", "remote", "on", "--json")).stdout)  # backup_standby is on by default
    old_standby, old = out["standby"]["installation_id"], whoami(alice)["installation_id"]
    assert old_standby and active(net.r1, a) == {old, old_standby}
    shutil.rmtree(alice)
    send(net.bob, a, "while you had no device")
    new = tmp_path / "alice-new"
    s = json.loads(ok(parley(new, "restore", "--recovery-key", out["recovery_key"], "--relay", net.r2, "--revoke-lost", "--json")).stdout)
    assert s["drained"] == 1 and s["notes"] == []
    assert [m["text"] for m in listing(new, b)] == ["before the loss", "while you had no device"]
    assert s["lost"] == [old] and s["revoked"] == [old]  # the standby is not "lost": it is rotated
    assert s["standby"] not in (None, old_standby)
    assert active(net.r1, a) == {s["installation_id"], s["standby"]}
    status = json.loads(ok(parley(new, "backup", "remote", "status", "--json")).stdout)
    assert status["standby"]["installation_id"] == s["standby"] and status["confirmed"] is True


def test_the_new_home_summary_names_the_home_wallet_installation_history_and_relays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from bridge.cli_restore import print_new_home

    summary = {"address": "0xabc", "installation_id": "ab" * 16, "messages": 7, "conversations": 2, "drained": 3,
               "registered": True, "relays": ["https://r1.example", "https://r2.example"]}
    print_new_home(SimpleNamespace(home=SimpleNamespace(path=tmp_path)), summary, "restored")  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        f"restored {tmp_path}",
        "address:       0xabc",
        f"installation:  {'ab' * 16} (new)",
        "messages:      7 in 2 conversation(s)",
        "while away:    3 message(s) read from the standby installation",
        "registered on https://r1.example, https://r2.example",
    ]
    print_new_home(SimpleNamespace(home=SimpleNamespace(path=tmp_path)), {**summary, "drained": 0, "registered": False}, "received into")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.startswith(f"received into {tmp_path}\n") and "while away" not in out and "registered on" not in out
