"""The `parley` CLI contract (issue #2 §8; bridge/cli.py), checked on the real `python -m bridge`:
arguments, exit codes (0 ok, 2 usage, 3 unreachable/unregistered, 1 other), one-line errors, private
files, wrong passphrases that change nothing, the embedded relay, and concurrent commands sharing
one store with or without the daemon."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from eth_account import Account
from eth_utils import to_checksum_address

from bridge.cli import cli
from tests.procs import PARLEY, ROOT, Proc, env_for, free_port, parley, start_bridge, start_relay, wait_for, whoami

pytestmark = pytest.mark.slow

KEY_A = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # Hardhat account #3
KEY_B = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"  # Hardhat account #4
KEY_C = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"  # Hardhat account #5
KEY_D = "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"  # Hardhat account #6
KEY_E = "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"  # Hardhat account #7

ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def addr(key: str) -> str:
    return str(Account.from_key(key).address)


def random_address() -> str:
    return str(Account.from_key("0x" + secrets.token_hex(32)).address)


def fails(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert the contract's error shape: exit ``code``, exactly one line on stderr, no traceback."""
    assert r.returncode == code, f"exit {r.returncode}, expected {code}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    return r


def snapshot(home: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mtime and mode, plus the directory's own mtime (a new file changes it)."""
    out = {p.name: (p.read_bytes(), p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode)) for p in sorted(home.iterdir())}
    out["."] = (b"", home.stat().st_mtime_ns, stat.S_IMODE(home.stat().st_mode))
    return out


def assert_private(home: Path) -> list[str]:
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    names = []
    for p in home.iterdir():
        assert p.is_file(), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, f"{p.name} is {stat.S_IMODE(p.stat().st_mode):o}"
        names.append(p.name)
    return names


def conversation(home: Path, peer: str) -> list[dict[str, object]]:
    return json.loads(ok(parley(home, "messages", peer, "--json")).stdout)


def init(home: Path, relay: str, key: str) -> dict[str, str]:
    ok(parley(home, "init", "--private-key-env", "TEST_WALLET_KEY", "--relay", relay, TEST_WALLET_KEY=key))
    return whoami(home)


@dataclass
class Net:
    relay: Proc
    url: str
    alice: Path
    bob: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp("cli")
    relay, url = start_relay(d / "relay.db")
    try:
        n = Net(relay, url, d / "alice", d / "bob")
        init(n.alice, url, KEY_A)
        init(n.bob, url, KEY_B)
        # contacts of each other: many messages between them are not message requests (issue 12)
        ok(parley(n.alice, "contacts", "add", "bob", addr(KEY_B)))
        ok(parley(n.bob, "contacts", "add", "alice", addr(KEY_A)))
        yield n
    finally:
        relay.stop()


# --- init ----------------------------------------------------------------------------------------


def test_init_generate_whoami_and_private_files(tmp_path: Path, net: Net) -> None:
    home = tmp_path / "gen"
    r = ok(parley(home, "init", "--generate", "--relay", net.url))
    assert "registered on" in r.stdout
    me = json.loads(ok(parley(home, "whoami", "--json")).stdout)
    assert set(me) == {"address", "did", "installation_id", "relays"}
    assert me["relays"] == {"home": [net.url], "directory": [], "reading": [net.url]}
    assert ADDRESS_RE.fullmatch(me["address"]) and me["address"] == to_checksum_address(me["address"].lower())
    assert me["did"] == f"did:pkh:eip155:1:{me['address']}"
    assert re.fullmatch(r"[0-9a-f]{32}", me["installation_id"])
    text = ok(parley(home, "whoami")).stdout
    assert me["address"] in text and me["did"] in text and me["installation_id"] in text
    names = assert_private(home)
    assert {"keys.json", "identity.json", "config.json", "parley.db"} <= set(names)
    # --relay was remembered: commands without --relay use it.
    assert json.loads((home / "config.json").read_text())["relays"] == [net.url]
    ok(parley(home, "can-message", whoami(net.bob)["address"]))
    r = ok(parley(home, "sync"))
    assert "received 0" in r.stdout
    assert_private(home)
    # A generated wallet is a new one each time.
    other = tmp_path / "gen2"
    ok(parley(other, "init", "--relay", net.url))
    assert whoami(other)["address"] != me["address"]


def test_init_imports_a_private_key_from_the_environment(net: Net) -> None:
    assert whoami(net.alice)["address"] == addr(KEY_A)
    assert whoami(net.bob)["address"] == addr(KEY_B)


def test_init_imports_a_keystore(tmp_path: Path, net: Net) -> None:
    ks = tmp_path / "keystore.json"
    ks.write_text(json.dumps(Account.encrypt(KEY_C, "keystore pw", kdf="scrypt", iterations=2**4)))
    bad = tmp_path / "bad"
    fails(parley(bad, "init", "--keystore", str(ks), "--relay", net.url, PARLEY_KEYSTORE_PASSWORD="not it"), 2)
    assert not (bad / "keys.json").exists() and not (bad / "identity.json").exists()
    fails(parley(bad, "init", "--keystore", str(tmp_path / "missing.json"), "--relay", net.url, PARLEY_KEYSTORE_PASSWORD="x"), 2)
    fails(parley(bad, "init", "--keystore", str(ks), "--relay", net.url), 2, "PARLEY_KEYSTORE_PASSWORD")  # no tty, no password
    home = tmp_path / "ks"
    ok(parley(home, "init", "--keystore", str(ks), "--relay", net.url, PARLEY_KEYSTORE_PASSWORD="keystore pw"))
    assert whoami(home)["address"] == addr(KEY_C)
    assert_private(home)


def test_init_usage_errors_create_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ks = tmp_path / "ks.json"
    ks.write_text(json.dumps(Account.encrypt(KEY_C, "pw", kdf="scrypt", iterations=2**4)))
    dead = f"http://127.0.0.1:{free_port()}"
    fails(parley(home, "init", "--private-key-env", "PARLEY_TEST_UNSET_VAR", "--relay", dead), 2, "PARLEY_TEST_UNSET_VAR")
    fails(parley(home, "init", "--private-key-env", "K", "--relay", dead, K="0x1234"), 2)
    fails(parley(home, "init", "--private-key-env", "K", "--keystore", str(ks), "--relay", dead, K=KEY_C, PARLEY_KEYSTORE_PASSWORD="pw"), 2)
    fails(parley(home, "init", "--generate", "--keystore", str(ks), "--relay", dead, PARLEY_KEYSTORE_PASSWORD="pw"), 2)
    fails(parley(home, "init", "--generate", "--private-key-env", "K", "--relay", dead, K=KEY_C), 2)
    fails(parley(home, "init", "--relay", "ftp://example"), 2, "relay 'ftp://example' must start with https://")
    fails(parley(home, "init", "--relay", dead, PARLEY_PASSPHRASE=""), 2)
    assert not (home / "keys.json").exists() and not (home / "identity.json").exists()


def test_init_insecure_records_a_plain_http_relay_on_another_machine(tmp_path: Path) -> None:
    """`--insecure` end to end: the plain http URL to another machine is the home relay, and the
    permission is remembered (`insecure_relays`). Without it, init exits 2 and writes nothing:
    tests/test_three_operators.py::test_failures_name_the_relay_and_the_reason."""
    home, url = tmp_path / "h", "http://10.1.2.3:8737"
    r = ok(parley(home, "init", "--relay", url, "--insecure", PARLEY_RELAY_CONNECT_TIMEOUT="0.5", PARLEY_RELAY_READ_TIMEOUT="0.5"))
    assert f"initialised {home}" in r.stdout
    cfg = json.loads((home / "config.json").read_text())
    assert cfg["relays"] == [url] and cfg["insecure_relays"] is True
    assert json.loads(ok(parley(home, "relays", "--json")).stdout) == {"home": [url], "directory": [], "reading": [url]}
    assert ok(parley(home, "config", "get", "insecure_relays")).stdout.strip() == "true"


def test_init_twice_fails_and_changes_nothing(net: Net) -> None:
    before = snapshot(net.alice)
    fails(parley(net.alice, "init", "--relay", net.url), 2, "already")
    fails(parley(net.alice, "init", "--private-key-env", "K", K=KEY_D), 2, "already")
    fails(parley(net.alice, "init", "--private-key-env", "K", K=KEY_A, PARLEY_PASSPHRASE="another passphrase"), 2)
    assert snapshot(net.alice) == before


def test_commands_before_init_fail_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    for args in (["whoami"], ["whoami", "--json"], ["send", addr(KEY_B), "hi"], ["sync"], ["messages", addr(KEY_B)], ["run", "--port", "0"]):
        fails(parley(home, *args), 2, "parley init")
    assert not home.exists() or list(home.iterdir()) == []


# --- passphrase ----------------------------------------------------------------------------------


def test_wrong_passphrase_fails_and_changes_nothing(net: Net) -> None:
    before = snapshot(net.alice)
    for args in (["send", addr(KEY_B), "never sent"], ["sync"], ["run", "--port", "0"]):
        fails(parley(net.alice, *args, PARLEY_PASSPHRASE="wrong " + secrets.token_hex(4)), 2, "wrong passphrase")
        assert snapshot(net.alice) == before, args
    assert all(m["text"] != "never sent" for m in conversation(net.alice, addr(KEY_B)))


# --- send, can-message, messages --------------------------------------------------------------------


def test_send_errors_and_json(net: Net) -> None:
    bob = addr(KEY_B)
    fails(parley(net.alice, "send", "0x1234", "hi"), 2, "not an address")
    fails(parley(net.alice, "send", "not-an-address", "hi"), 2)
    fails(parley(net.alice, "send", bob, ""), 2, "empty")
    fails(parley(net.alice, "send", bob, "   "), 2, "empty")
    fails(parley(net.alice, "send", addr(KEY_A), "me"), 2)
    fails(parley(net.alice, "send", bob), 2, "TEXT")
    stranger = random_address()
    fails(parley(net.alice, "send", stranger, "anyone there?"), 3, "not registered")
    assert conversation(net.alice, stranger) == []  # nothing queued
    r = ok(parley(net.alice, "send", bob.lower(), "json please", "--json"))
    out = json.loads(r.stdout)
    assert set(out) == {"id", "sender", "recipient", "text", "sent_at", "direction", "state", "delivered"}
    assert out["sender"] == addr(KEY_A) and out["recipient"] == bob and out["text"] == "json please"
    assert out["direction"] == "out" and out["delivered"] is True and out["state"] == "sent"
    assert isinstance(out["sent_at"], int) and re.fullmatch(r"[0-9a-f]{32}", out["id"])
    assert conversation(net.alice, bob)[-1]["id"] == out["id"]


def test_can_message(net: Net) -> None:
    r = ok(parley(net.alice, "can-message", addr(KEY_B)))
    assert "1 installation" in r.stdout
    ok(parley(net.alice, "can-message", addr(KEY_B).lower()))
    fails(parley(net.alice, "can-message", random_address()), 3, "not registered")
    fails(parley(net.alice, "can-message", addr(KEY_B), "--relay", f"http://127.0.0.1:{free_port()}"), 3)
    fails(parley(net.alice, "can-message", "0xnothex"), 2, "not an address")
    fails(parley(net.alice, "can-message", addr(KEY_B), "--relay", "nope"), 2)


def test_messages_oldest_first_and_json_shape(tmp_path: Path, net: Net) -> None:
    carol_home = tmp_path / "carol"
    carol = init(carol_home, net.url, KEY_C)["address"]
    bob = addr(KEY_B)
    sent = [f"carol-{i}-{secrets.token_hex(3)}" for i in range(3)]
    for t in sent:
        ok(parley(carol_home, "send", bob, t))
    ok(parley(net.bob, "sync"))
    reply = "bob replies " + secrets.token_hex(3)
    ok(parley(net.bob, "send", carol, reply))
    ok(parley(carol_home, "sync"))
    for home, me in ((carol_home, carol), (net.bob, bob)):
        peer = bob if me == carol else carol
        view = conversation(home, peer)
        assert [m["text"] for m in view] == [*sent, reply]
        for m in view:
            assert set(m) >= {"id", "sender", "recipient", "text", "sent_at", "direction", "flag", "state", "reply_to", "reactions",
                              "edited", "deleted", "attachments"}  # issue 12 added the last ones
            assert m["flag"] is None  # no sender here was found revoked
            assert m["direction"] == ("out" if m["sender"] == me else "in")
            assert {m["sender"], m["recipient"]} == {carol, bob}
        times = [m["sent_at"] for m in view]
        assert times == sorted(times)
        text_out = ok(parley(home, "messages", peer)).stdout
        positions = [text_out.index(t) for t in [*sent, reply]]
        assert positions == sorted(positions)
    assert conversation(carol_home, random_address()) == []
    fails(parley(carol_home, "messages", "0x12"), 2, "not an address")
    fails(parley(carol_home, "messages"), 2)


def test_relay_down_queues_and_sync_delivers_exactly_once(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    db = tmp_path / "relay.db"
    relay, url = start_relay(db, port=port)
    procs.append(relay)
    dave, erin = tmp_path / "dave", tmp_path / "erin"
    init(dave, url, KEY_D)
    erin_addr = init(erin, url, KEY_E)["address"]
    ok(parley(dave, "send", erin_addr, "before the outage"))
    assert relay.stop() == 0
    text = "written during the outage " + secrets.token_hex(4)
    fails(parley(dave, "send", erin_addr, text), 3, "queued")
    assert "(queued)" in ok(parley(dave, "messages", erin_addr)).stdout
    fails(parley(dave, "sync"), 3)
    fails(parley(dave, "can-message", erin_addr), 3)
    relay, _ = start_relay(db, port=port)
    procs.append(relay)
    r = ok(parley(dave, "sync"))
    assert "0 waiting" in r.stdout
    ok(parley(dave, "sync"))  # nothing sent twice
    ok(parley(erin, "sync"))
    ok(parley(erin, "sync"))
    assert [m["text"] for m in conversation(erin, addr(KEY_D))] == ["before the outage", text]
    assert "(queued)" not in ok(parley(dave, "messages", erin_addr)).stdout


# --- help ---------------------------------------------------------------------------------------------

CONTRACT_OPTIONS = {
    "init": ["--generate", "--private-key-env", "--keystore", "--relay"],
    "whoami": ["--json"],
    "relay": ["--host", "--port", "--db"],
    "run": ["--port", "--relay"],
    "send": ["--json"],
    "sync": [],
    "messages": ["--json"],
    "can-message": [],
}


def test_help_for_the_group_and_every_command() -> None:
    r = subprocess.run([*PARLEY, "--help"], cwd=ROOT, env=env_for(), capture_output=True, text=True, timeout=60)
    ok(r)
    assert "--home" in r.stdout
    for name in CONTRACT_OPTIONS:
        assert name in r.stdout
    r = subprocess.run([*PARLEY, "send", "--help"], cwd=ROOT, env=env_for(), capture_output=True, text=True, timeout=60)
    assert ok(r).stdout.startswith("Usage: parley send")
    runner = CliRunner()
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        for opt in CONTRACT_OPTIONS.get(name, []):
            assert opt in res.output, (name, opt)
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("-"):
                    assert flag in res.output, (name, flag)
    assert set(CONTRACT_OPTIONS) <= set(cli.commands)  # type: ignore[attr-defined]


def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "h"
    fails(parley(home, "no-such-command"), 2)
    fails(parley(home, "--bogus-option", "whoami"), 2)
    fails(parley(home, "whoami", "--bogus"), 2)
    fails(parley(home, "relay", "--port", "70000"), 2)
    fails(parley(home, "run", "--port", "-1"), 2)


# --- the daemon: embedded relay, file modes, concurrency ------------------------------------------------


def test_run_without_relay_embeds_one_on_the_same_port(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice_home.mkdir(mode=0o700)
    (alice_home / "config.json").write_text(json.dumps({"port": port}))
    os.chmod(alice_home / "config.json", 0o600)
    r = parley(alice_home, "init", "--private-key-env", "K", K=KEY_A)  # nothing listens yet: registers later
    ok(r)
    alice = whoami(alice_home)["address"]
    daemon = Proc(["run"], home=alice_home)
    procs.append(daemon)
    url = daemon.expect(r"listening on (http://\S+)").group(1)
    assert url == f"http://127.0.0.1:{port}"
    daemon.expect("subscribed to")
    bob = init(bob_home, url, KEY_B)["address"]
    ok(parley(bob_home, "can-message", alice))
    ok(parley(bob_home, "send", alice, "hello through your embedded relay"))
    wait_for(lambda: [m["text"] for m in conversation(alice_home, bob)] == ["hello through your embedded relay"],
             timeout=30, interval=0.2, what="Alice's daemon to receive live")
    ok(parley(alice_home, "send", bob, "got it"))  # through the daemon's control endpoint
    ok(parley(bob_home, "sync"))
    assert [m["text"] for m in conversation(bob_home, alice)] == ["hello through your embedded relay", "got it"]
    names = assert_private(alice_home)
    assert {"relay.db", "parley.db", "daemon.json"} <= set(names)
    assert daemon.stop() == 0
    assert not (alice_home / "daemon.json").exists()
    assert_private(alice_home)


def test_one_home_one_relay_record_for_daemon_and_cli(tmp_path: Path, procs: list[Proc]) -> None:
    """Issue 10's report: `init`, then `run --port P` registered on its embedded relay at P while the
    same home's CLI used 8737, and `send` printed "sent" for a message that never arrived. Now `run`
    records its embedded relay (and says it is this machine only), and the CLI uses that record."""
    home, port = tmp_path / "b", free_port()
    ok(parley(home, "init"))
    daemon = Proc(["run", "--port", str(port)], home=home)
    procs.append(daemon)
    daemon.expect("only bridges on this machine can reach it")
    daemon.expect("subscribed to")
    url = f"http://127.0.0.1:{port}"
    assert json.loads(ok(parley(home, "relays", "--json")).stdout) == {"home": [url], "directory": [], "reading": [url]}
    assert "(embedded: this machine only)" in ok(parley(home, "relays")).stdout
    assert daemon.stop() == 0
    stranger = to_checksum_address("0x" + "ab" * 20)
    r = parley(home, "send", stranger, "hello?")
    assert r.returncode == 3 and url in r.stderr and ":8737" not in r.stderr and "sent" not in r.stdout, (r.stdout, r.stderr)


def _parallel(home: Path, peer: str, texts: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every `send` and one `sync` at once; wait for all."""
    env = env_for(home)
    cmds = [[*PARLEY, "send", peer, t] for t in texts] + [[*PARLEY, "sync"]]
    ps = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for c in cmds]
    out = []
    for c, p in zip(cmds, ps):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def _integrity(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


def test_concurrent_sends_and_sync_with_and_without_the_daemon(tmp_path: Path, net: Net, procs: list[Proc]) -> None:
    alice, bob = addr(KEY_A), addr(KEY_B)
    tag = secrets.token_hex(4)
    daemon = Proc(["run", "--port", "0"], home=net.alice)
    procs.append(daemon)
    daemon.expect("subscribed to")
    assert (net.alice / "daemon.json").exists()
    with_daemon = [f"daemon-{i}-{tag}" for i in range(4)]
    for r in _parallel(net.alice, bob, with_daemon):
        ok(r)
    names = assert_private(net.alice)  # the daemon holds the db open: its WAL files exist, 0600 too
    assert {"parley.db-wal", "parley.db-shm", "daemon.json"} <= set(names)
    assert daemon.stop() == 0
    direct = [f"direct-{i}-{tag}" for i in range(4)]
    for r in _parallel(net.alice, bob, direct):  # a sync reports only what it could not send, not what
        ok(r)  # a concurrent send queued after it began (Engine.sync_report)
    ok(parley(net.alice, "sync"))
    assert_private(net.alice)
    ok(parley(net.bob, "sync"))
    got = [m["text"] for m in conversation(net.bob, alice) if tag in str(m["text"])]
    assert sorted(got) == sorted(with_daemon + direct), "a message was lost or shown twice"
    mine = [m["text"] for m in conversation(net.alice, bob) if tag in str(m["text"])]
    assert sorted(mine) == sorted(with_daemon + direct)
    _integrity(net.alice / "parley.db")
    _integrity(net.bob / "parley.db")


def test_status_counts_quarantined_envelopes_and_later_messages_still_arrive(tmp_path: Path, net: Net) -> None:
    """Anyone may publish to an inbox topic: junk and forged envelopes are quarantined, shown by
    `parley status` (text and JSON), and the messages behind them arrive."""
    from bridge.protocol.ids import inbox_topic
    from bridge.relay.client import RelayClient

    dave_home = tmp_path / "dave"
    dave = init(dave_home, net.url, KEY_D)
    me = whoami(net.alice)
    ok(parley(net.alice, "sync"))
    before = json.loads(ok(parley(net.alice, "status", "--json")).stdout)
    assert set(before) == {"address", "installation_id", "daemon", "inbox", "outbox"}
    assert before["daemon"] == {"running": False, "url": None}
    junk = [b"\x00garbage\xff", b"\x1b[2J not an envelope"]
    cursors = [RelayClient(net.url).publish(inbox_topic(me["installation_id"]), j) for j in junk]
    text = "after the junk " + secrets.token_hex(3)
    ok(parley(dave_home, "send", me["address"], text))
    synced = ok(parley(net.alice, "sync")).stdout
    assert "received 1 new message(s)" in synced and "2 envelope(s) could not be read and were quarantined" in synced
    assert conversation(net.alice, dave["address"])[-1]["text"] == text
    after = json.loads(ok(parley(net.alice, "status", "--json")).stdout)
    assert after["inbox"]["quarantined"] == before["inbox"]["quarantined"] + 2
    assert after["inbox"]["cursor"] > cursors[-1]
    recent = {e["cursor"]: e for e in after["inbox"]["recent_quarantine"]}
    assert set(cursors) <= set(recent) and all(recent[c]["size"] == len(j) for c, j in zip(cursors, junk))
    assert after["outbox"] == {"pending": 0, "prepared": 0, "backing_off": 0, "next_attempt_at": None, "failed": 0, "sent": before["outbox"]["sent"], "deliveries_pending": 0}
    out = ok(parley(net.alice, "status")).stdout
    assert f"{after['inbox']['quarantined']} envelope(s) quarantined" in out
    assert f"quarantined envelope {cursors[-1]} at" in out
    assert "\x1b" not in out
    assert "0 waiting to be sent; 0 failed" in out


def _hostile_peer(tmp_path: Path, relay_url: str) -> object:
    """A peer running modified software: an in-process engine of a fresh wallet on the same relay."""
    from bridge import identity
    from bridge.engine import Engine
    from bridge.keys import generate_secrets
    from bridge.store import Store

    s = generate_secrets(None)
    record = identity.sign_statement(
        identity.authorize_statement(s.address, s.installation_id, s.signing_pub, s.identity_pub), s.wallet_key
    ).to_record()
    eng = Engine(Store(tmp_path / "hostile.db"), s, {"address": s.address, "installation_id": s.installation_id, "record": record.hex()}, relay_url)
    eng.register()
    return eng


def test_hostile_sent_at_does_not_break_any_view(tmp_path: Path, net: Net, procs: list[Proc]) -> None:
    """A peer chooses sent_at = 2^63-1 (and 0): the inbox page used to answer 500, `parley messages`
    to exit 1, and the message stayed pinned last for ever. Every view now shows the conversation in
    arrival order, with the arrival time for a timestamp that is not sane."""
    import time

    from tests.test_api import Bridge, call

    victim_home = tmp_path / "victim"
    ok(parley(victim_home, "init", "--generate", "--relay", net.url))
    victim = whoami(victim_home)["address"]
    hostile: Any = _hostile_peer(tmp_path, net.url)
    ok(parley(victim_home, "contacts", "add", "hostile", hostile.address))  # more than 3 messages: not a request (issue 12)
    try:
        def send_claiming(text: str, sent_at: int | None) -> None:
            mid = hostile.queue(victim, text)["id"]
            if sent_at is not None:
                with hostile.store.write() as c:  # what the modified sender puts in the content
                    c.execute("UPDATE messages SET sent_at = ? WHERE id = ?", (sent_at, mid))
            assert hostile.flush_outbox() == {}

        send_claiming("from the end of time", 2**63 - 1)
        send_claiming("from 1970", 0)
        send_claiming("an honest one", None)
    finally:
        hostile.relay.close()
        hostile.store.close()
    ok(parley(victim_home, "sync"))
    expected = ["from the end of time", "from 1970", "an honest one"]
    latest = int(time.time() * 1000) + 5 * 60 * 1000

    view = conversation(victim_home, hostile.address)  # parley messages --json
    assert [m["text"] for m in view] == expected
    assert all(0 <= m["sent_at"] <= latest for m in view)
    assert view[1]["sent_at"] == 0  # sane, if odd: shown as claimed
    text_out = ok(parley(victim_home, "messages", hostile.address)).stdout  # used to exit 1
    positions = [text_out.index(t) for t in expected]
    assert positions == sorted(positions)
    assert "1970-01-01 00:00:00 ← from 1970" in text_out

    proc, url = start_bridge(victim_home, relay=net.url)
    procs.append(proc)
    bridge = Bridge(victim_home, proc, url)
    ws, _ = bridge.paired()
    try:
        listed = call(ws, "messages.list", {"peer": hostile.address})["result"]["messages"]
        assert [m["text"] for m in listed] == expected
        first_page = call(ws, "messages.list", {"peer": hostile.address, "limit": 2})["result"]
        assert [m["text"] for m in first_page["messages"]] == expected[1:] and first_page["has_more"]
        older = call(ws, "messages.list", {"peer": hostile.address, "limit": 2, "before": first_page["messages"][0]["id"]})["result"]
        assert [m["text"] for m in older["messages"]] == expected[:1] and not older["has_more"]
        convs = call(ws, "conversations.list")["result"]["conversations"]
        assert [c["last"]["text"] for c in convs if c["peer"] == hostile.address] == ["an honest one"]
    finally:
        ws.close()
    # The inbox page (a static shell; its script renders /api/inbox/c/<peer> in the order given).
    login = parley(victim_home, "open", check=True).stdout.strip()
    token = login.split("#t=", 1)[1]
    with requests_session() as s:
        opened = s.post(f"{url}/api/session", json={"token": token}, headers={"Origin": url}, timeout=10)
        assert opened.status_code == 200, opened.text
        header = {"X-Parley-Session": opened.json()["session"]}
        assert s.get(f"{url}/c/{hostile.address}", timeout=10).status_code == 200
        listing = s.get(f"{url}/api/inbox", headers=header, timeout=10)
        assert listing.status_code == 200  # used to be 500
        page = s.get(f"{url}/api/inbox/c/{hostile.address}", headers=header, timeout=10)
        assert page.status_code == 200, page.text
        shown = page.json()["messages"]
        assert [m["text"] for m in shown] == expected
        assert all(0 <= m["sent_at"] <= latest for m in shown)


def requests_session() -> Any:
    import requests

    return requests.Session()


TERMINAL_ATTACKS = [
    "\x1b[2J\x1b[Hscreen cleared",  # CSI: erase the screen, cursor home
    "\x1b]52;c;cm0gLXJmIH4K\x07clipboard written",  # OSC 52: write the clipboard
    "\x1b]8;;https://evil.example/\x1b\\harmless link\x1b]8;;\x1b\\",  # OSC 8: hyperlink
    "\x9b2J 8-bit CSI, \x9d52;c;eA==\x9c 8-bit OSC",  # C1 controls
    "abc\u202edcba.exe \u2066isolate\u2069 bidi",  # bidi override and isolate
    "over\rwritten, back\x08space, del\x7f, bell\x07, nul\x00",
    "two lines\n2030-01-01 00:00:00 → I forged this line",
]


def test_peer_text_cannot_drive_the_terminal(tmp_path: Path, net: Net) -> None:
    """`parley messages` printed peer text raw: ESC[2J, OSC 52 (clipboard write) and OSC 8 reached
    the terminal. Control characters are now shown escaped; --json stays exact."""
    victim_home = tmp_path / "victim"
    ok(parley(victim_home, "init", "--generate", "--relay", net.url))
    victim = whoami(victim_home)["address"]
    hostile: Any = _hostile_peer(tmp_path, net.url)
    ok(parley(victim_home, "contacts", "add", "hostile", hostile.address))  # more than 3 messages: not a request (issue 12)
    try:
        for text in TERMINAL_ATTACKS:
            assert hostile.send(victim, text).delivered
    finally:
        hostile.relay.close()
        hostile.store.close()
    ok(parley(victim_home, "sync"))
    assert [m["text"] for m in conversation(victim_home, hostile.address)] == TERMINAL_ATTACKS  # JSON: exact
    out = ok(parley(victim_home, "messages", hostile.address)).stdout
    unsafe = [c for c in out if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
    assert unsafe == []
    for shown in ("\\x1b[2J\\x1b[Hscreen cleared", "\\x1b]52;c;cm0gLXJmIH4K\\x07clipboard", "\\x1b]8;;https://evil.example/\\x1b\\",
                  "\\x9b2J", "abc\\u202edcba.exe \\u2066isolate\\u2069", "over\\x0dwritten", "nul\\x00"):
        assert shown in out
    lines = out.splitlines()
    assert len(lines) == len(TERMINAL_ATTACKS) + 1  # the one newline a peer sent is kept, but indented
    assert lines[-1].startswith(" ") and lines[-1].strip() == "2030-01-01 00:00:00 → I forged this line"
