"""`parley transfer send` / `parley transfer receive CODE` (PROTOCOL.md §12.7): two homes of one wallet,
both with a running bridge, move the history (messages, contacts, files) through a real relay; a hostile
relay that substitutes the answer or alters the archive, a wrong or used code, another wallet and a
receiver that never comes are refused with one clear line, and the receiving home is left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.backup import transfer as T
from bridge.backup.archive import write_archive
from bridge.crypto import primitives as P
from bridge.relay.backupauth import vault_of
from bridge.relay.client import RelayClient
from bridge.relay.sqlite_store import SQLiteStorage
from tests.procs import Proc, befriend, parley, start_bridge, start_relay, wait_for, whoami
from tests.relay_fixtures import serve_storage, unlimited_settings

pytestmark = pytest.mark.timeout(300)  # the tests that start processes are marked slow one by one

WALLET_A = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # Hardhat account #1
WALLET_B = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # Hardhat account #2


def init(home: Path, relay: str, key: str) -> dict[str, str]:
    parley(home, "init", "--private-key-env", "TEST_WALLET_KEY", "--relay", relay, check=True, TEST_WALLET_KEY=key)
    return whoami(home)


def conversation(home: Path, peer: str) -> list[dict[str, Any]]:
    return json.loads(parley(home, "messages", peer, "--json", check=True).stdout)  # type: ignore[no-any-return]


def home_state(home: Path) -> Any:
    """What a refused transfer must not change: every row of the store, contacts, config, files."""
    with closing(sqlite3.connect(home / "parley.db")) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables if t not in ("meta",)}
    files = sorted((str(p.relative_to(home)), p.read_bytes()) for p in home.rglob("*")
                   if p.is_file() and not p.name.startswith(("parley.db", "daemon", "bridge.log", "relay.db")))
    return rows, files


def one_error_line(stderr: str) -> str:
    """The error: one line, the last on stderr (progress lines come before it), no traceback."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("parley: ") and "Traceback" not in stderr, stderr
    assert all(not line.startswith("parley: ") for line in lines[:-1]), stderr
    return lines[-1]


def vault_rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as con:
        return sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("backup_objects", "backup_uploads", "backup_chunks"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A relay process; the laptop (wallet A, with a history: Bob's and its own messages and a file);
    Bob (wallet B); the desktop (wallet A, a second installation made after that history). The laptop's
    and the desktop's bridges run."""
    procs: list[Proc] = []
    try:
        relay, url = start_relay(tmp_path / "relay.db")
        procs.append(relay)
        laptop, desktop, bob = tmp_path / "laptop", tmp_path / "desktop", tmp_path / "bob"
        a = init(laptop, url, WALLET_A)
        b = init(bob, url, WALLET_B)
        befriend(laptop, bob)
        attachment = tmp_path / "photo.bin"
        attachment.write_bytes(os.urandom(300_000))
        parley(bob, "send", a["address"], "hello laptop", check=True)
        parley(bob, "send", a["address"], "a file for you", "--file", str(attachment), check=True)
        parley(laptop, "sync", check=True)
        parley(laptop, "send", b["address"], "hello bob", check=True)
        init(desktop, url, WALLET_A)
        for home in (laptop, desktop):
            p, _ = start_bridge(home)
            procs.append(p)
            p.expect("subscribed to")
        yield {"url": url, "relay_db": tmp_path / "relay.db", "laptop": laptop, "desktop": desktop, "bob": bob,
               "alice": a["address"], "bob_address": b["address"], "file": attachment, "tmp": tmp_path, "procs": procs}
    finally:
        for p in reversed(procs):
            p.stop()


SENDERS: list[Proc] = []


@pytest.fixture(autouse=True)
def _stop_senders() -> Iterator[None]:
    yield
    while SENDERS:
        SENDERS.pop().stop()


def start_send(home: Path, *args: str) -> tuple[Proc, str]:
    proc = Proc(["transfer", "send", "--json", *args], home=home)
    SENDERS.append(proc)
    return proc, proc.expect(r'"code": "([^"]+)"').group(1)


def finish(proc: Proc, timeout: float = 120) -> tuple[int, str]:
    """The sender's exit code and output, once its last line (the result, or the error) was read."""
    rc = proc.p.wait(timeout)
    wait_for(lambda: proc.output and (proc.output[-1].startswith('{"sent"') or proc.output[-1].startswith("parley: ")), what="the last line")
    proc.stop()  # (ended: closes its pipe)
    return rc, "".join(proc.output)


@pytest.mark.slow
def test_transfer_between_two_running_bridges(world: dict[str, Any]) -> None:
    laptop, desktop, bob = world["laptop"], world["desktop"], world["bob_address"]
    want = conversation(laptop, bob)
    assert [m["text"] for m in want] == ["hello laptop", "a file for you", "hello bob"]
    assert conversation(desktop, bob) == []
    sender, code = start_send(laptop)
    assert "@" + world["url"] in code
    r = parley(desktop, "transfer", "receive", code, "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["received"] is True and report["messages_added"] == 3 and report["files"] == 1
    rc, out = finish(sender)
    assert rc == 0, out
    sent = json.loads(out.strip().splitlines()[-1])
    assert sent["sent"] is True and sent["bytes"] > 300_000
    got = conversation(desktop, bob)
    key = ("id", "text", "direction", "sender", "recipient", "sent_at")
    assert [{k: m[k] for k in key} for m in got] == [{k: m[k] for k in key} for m in want]
    # the file came with it (in the archive, not fetched from the relay's blob afterwards)
    want_hash = hashlib.sha256(world["file"].read_bytes()).digest()
    (att,) = got[1]["attachments"]
    assert att["state"] == "done" and report["files"] == 1
    assert hashlib.sha256((desktop / "attachments" / att["id"]).read_bytes()).digest() == want_hash
    out_dir = world["tmp"] / "saved"
    out_dir.mkdir()
    saved = parley(desktop, "attachment", "save", att["id"], str(out_dir), check=True).stdout.strip()
    assert hashlib.sha256(Path(saved).read_bytes()).digest() == want_hash
    # the contacts came too, and the rendezvous left nothing on the relay
    assert bob in json.loads((desktop / "contacts.json").read_text()).values()
    assert vault_rows(world["relay_db"]) == 0
    # the code is spent: a second receive is refused and changes nothing
    before = home_state(desktop)
    again = parley(desktop, "transfer", "receive", code)
    assert again.returncode == 1 and "no transfer is waiting for this code" in again.stderr
    assert one_error_line(again.stderr)
    assert home_state(desktop) == before
    # receiving the same history twice adds nothing (idempotent by message id)
    sender, code = start_send(laptop)
    r = parley(desktop, "transfer", "receive", code, "--json", timeout=180)
    assert r.returncode == 0 and json.loads(r.stdout)["messages_added"] == 0 and json.loads(r.stdout)["messages_skipped"] == 3
    assert finish(sender)[0] == 0
    assert [m["id"] for m in conversation(desktop, bob)] == [m["id"] for m in want]


@pytest.mark.slow
def test_transfer_into_an_empty_home_makes_a_new_registered_installation(world: dict[str, Any]) -> None:
    laptop, bob = world["laptop"], world["bob_address"]
    phone = world["tmp"] / "phone"
    want = conversation(laptop, bob)
    sender, code = start_send(laptop)
    r = parley(phone, "transfer", "receive", code, "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert finish(sender)[0] == 0
    me = whoami(phone)
    assert me["address"] == world["alice"] == summary["address"]
    assert me["installation_id"] == summary["installation_id"] != whoami(laptop)["installation_id"]
    assert summary["registered"] is True and summary["revoked"] == []  # the sending device stays active
    key = ("id", "text", "direction", "sent_at")
    assert [{k: m[k] for k in key} for m in conversation(phone, bob)] == [{k: m[k] for k in key} for m in want]
    (att,) = conversation(phone, bob)[1]["attachments"]
    assert (phone / "attachments" / att["id"]).read_bytes() == world["file"].read_bytes()
    assert "3 installations" in parley(world["bob"], "can-message", world["alice"], check=True).stdout
    # a home that is not empty and has no installation is refused before anything is asked
    junk = world["tmp"] / "junk"
    junk.mkdir(mode=0o700)
    (junk / "notes.txt").write_text("mine")
    r = parley(junk, "transfer", "receive", T.new_code(world["url"]).text())
    assert r.returncode == 2 and one_error_line(r.stderr)
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]


# ---- a hostile relay -----------------------------------------------------------------------------------


class Tamper:
    """WSGI middleware in front of a real relay: records PUT paths, and on request swaps the answer the
    sender reads for one the relay made itself, or flips a byte of an archive part as it is stored."""

    def __init__(self, app: Any, mode: str) -> None:
        self.app, self.mode = app, mode
        self.puts: list[str] = []
        self.tampered = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if method == "PUT":
            self.puts.append(path.rsplit("/", 1)[-1])
        if self.mode == "flip" and method == "GET" and path.endswith("/part-0000"):
            status: list[Any] = []
            body = bytearray(b"".join(self.app(environ, lambda st, headers, exc=None: status.append((st, headers)))))
            if status[0][0].startswith("200"):
                body[len(body) // 2] ^= 0x01
                self.tampered.set()
            start_response(*status[0])
            return [bytes(body)]
        if self.mode == "swap" and method == "GET" and path.endswith("/answer") and self.puts.count("answer"):
            forged = self._forged_answer(path)
            self.tampered.set()
            start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(forged)))])
            return [forged]
        return self.app(environ, start_response)

    def _forged_answer(self, path: str) -> bytes:
        """An answer to the real offer (read from storage, as the relay can) with the relay's own keys;
        it cannot MAC it with the code's key, which it does not have."""
        from bridge.protocol import wire

        vault = path.split("/")[3]
        info = self.storage.backup_info(vault, "offer")
        assert info is not None
        offer = b"".join(self.storage.backup_chunk(info[0], i) or b"" for i in range(1 + info[1] // (256 * 1024)))
        body = wire.decode(wire.decode(offer)[0])
        _, x_pub = P.x25519_keypair()
        _, ct = P.mlkem768_encapsulate(body[4])
        raw = wire.encode([1, "transfer-answer", hashlib.sha256(offer).digest(), x_pub, ct])
        return wire.encode([raw, P.hmac_sha256(os.urandom(32), raw)])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["swap", "flip"])
def test_a_hostile_relay_cannot_substitute_the_answer_or_alter_the_archive(world: dict[str, Any], mode: str) -> None:
    laptop, desktop = world["laptop"], world["desktop"]
    storage = SQLiteStorage(str(world["tmp"] / "hostile.db"))
    tamper: list[Tamper] = []

    def wrap(app: Any) -> Any:
        t = Tamper(app, mode)
        t.storage = storage  # type: ignore[attr-defined]
        tamper.append(t)
        return t

    try:
        with serve_storage(storage, unlimited_settings(), wrap=wrap) as hostile:
            before = home_state(desktop)
            sender, code = start_send(laptop, "--relay", hostile, "--timeout", "60")
            r = parley(desktop, "transfer", "receive", code, timeout=180)
            rc, out = finish(sender)
            assert tamper[0].tampered.is_set()
            assert r.returncode == 1 and rc == 1, (r.stderr, out)
            assert one_error_line(r.stderr)
            if mode == "swap":
                # the sender sees the answer is not authenticated by the code and sends nothing
                assert "the answer does not authenticate" in out
                assert "the other side gave up: the answer does not authenticate" in r.stderr
                assert not [p for p in tamper[0].puts if p.startswith("part-")]
            else:
                assert "do not match what the sender sent" in r.stderr
                assert "the receiver refused the archive" in out
            assert home_state(desktop) == before
    finally:
        storage.close()


# ---- wrong code, another wallet, nobody receiving -----------------------------------------------------------


@pytest.mark.slow
def test_wrong_codes_another_wallet_and_a_timeout_are_refused(world: dict[str, Any]) -> None:
    laptop, desktop, url = world["laptop"], world["desktop"], world["url"]
    before = home_state(desktop)
    real = T.new_code(url).text()
    # a typo: the checksum catches it (exit 2)
    typo = ("b" if real[0] != "b" else "c") + real[1:]
    r = parley(desktop, "transfer", "receive", typo)
    assert r.returncode == 2 and "typo" in r.stderr
    for bad in ("hello", "abcd@" + url, real.split("@")[0] + "@ftp://x"):
        r = parley(desktop, "transfer", "receive", bad)
        assert r.returncode == 2 and one_error_line(r.stderr) and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    # a well-formed code nobody offered
    r = parley(desktop, "transfer", "receive", real)
    assert r.returncode == 1 and "no transfer is waiting for this code" in r.stderr
    # a home of another wallet is refused before anything is downloaded, and the sender is told
    bob_before = home_state(world["bob"])
    sender, code = start_send(laptop, "--timeout", "60")
    r = parley(world["bob"], "transfer", "receive", code)
    assert r.returncode == 1 and f"this transfer is from wallet {world['alice']}" in r.stderr
    rc, out = finish(sender)
    assert rc == 1 and "the other side gave up: the receiving home belongs to another wallet" in out
    assert home_state(world["bob"]) == bob_before
    # nobody receives: the sender gives up at its timeout and removes its offer
    sender, code = start_send(laptop, "--timeout", "2")
    rc, out = finish(sender)
    assert rc == 1 and "timed out after 2 s waiting for the receiver" in out
    r = parley(desktop, "transfer", "receive", code)
    assert r.returncode == 1 and "no transfer is waiting for this code" in r.stderr
    assert vault_rows(world["relay_db"]) == 0
    assert home_state(desktop) == before


# ---- the protocol in process: codes, parts through a small quota ----------------------------------------------


def test_codes_round_trip_and_carry_a_checksum() -> None:
    code = T.new_code("https://relay.example.org")
    text = code.text()
    assert " " not in text and text.count("-") == 7 and text.endswith("@https://relay.example.org")
    for variant in (text, text.upper().replace("@HTTPS://RELAY.EXAMPLE.ORG", "@https://relay.example.org"), text.replace("-", "", 3)):
        parsed = T.parse_code(variant)
        assert parsed.secret == code.secret and parsed.relay == "https://relay.example.org"
    secret = text.split("@")[0].replace("-", "")
    for i in range(len(secret)):  # every single-character change is caught
        other = "a" if secret[i] != "a" else "b"
        with pytest.raises(T.TransferError, match="typo|32 letters"):
            T.parse_code(secret[:i] + other + secret[i + 1:] + "@https://relay.example.org")
    assert code.secret.hex() not in repr(code)


def test_a_large_archive_flows_through_a_vault_smaller_than_it(tmp_path: Path) -> None:
    """Parts are taken (and deleted) by the receiver as they come: a 1.2 MiB archive passes a 300 KiB
    quota; the receiver gets exactly the records sent."""
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    records = [["meta", {"n": 0}], *[["message", {"i": i, "data": os.urandom(1000)}] for i in range(1200)], ["end", {}]]
    try:
        with serve_storage(storage, unlimited_settings(backup_quota_bytes=300 * 1024)) as url:
            code = T.new_code(url)
            result: dict[str, Any] = {}

            def send() -> None:
                with RelayClient(url) as client:
                    try:
                        result["sent"] = T.Sender(client, code, timeout=60, poll=0.05).run(
                            "0x0000000000000000000000000000000000000001",
                            lambda out, key, aid: write_archive(out, records, wrapping_key=key, backup_id=aid, purpose="transfer", level=1),
                            part_size=100 * 1024, tmp_dir=tmp_path)
                    except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                        result["error"] = exc

            t = threading.Thread(target=send)
            t.start()
            with RelayClient(url) as client:
                r = T.Receiver(client, code, timeout=60, poll=0.05)
                assert wait_for(lambda: "offer" in r.names(), what="the offer")
                assert r.offer()["address"] == "0x0000000000000000000000000000000000000001"
                got = r.receive(lambda recs, aid: list(recs), tmp_dir=tmp_path)
            t.join(60)
            assert "error" not in result, result.get("error")
            assert got == records
            assert result["sent"]["parts"] >= 12
            assert storage.counts()["backup_objects"] == 0 and storage.counts()["backup_chunks"] == 0
            assert storage.backup_usage(vault_of(T.code_keys(code.secret)[0])) == 0
    finally:
        storage.close()


def _in_process(url: str, tmp_path: Path, code: T.Code, writer: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """A Sender on its own thread (its result or exception in the dict)."""
    result: dict[str, Any] = {}

    def send() -> None:
        with RelayClient(url) as client:
            try:
                result["sent"] = T.Sender(client, code, timeout=30, poll=0.05).run(
                    "0x0000000000000000000000000000000000000001", writer, part_size=64 * 1024, tmp_dir=tmp_path)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                result["error"] = exc

    t = threading.Thread(target=send)
    t.start()
    return t, result


RECORDS = [["meta", {"n": 0}], ["message", {"text": "hi"}], ["end", {}]]


def test_a_second_receiver_of_one_code_is_refused(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    try:
        with serve_storage(storage, unlimited_settings()) as url, RelayClient(url) as c1, RelayClient(url) as c2:
            code = T.new_code(url)
            go = threading.Event()

            def writer(out: Any, key: bytes, aid: bytes) -> Any:
                go.wait(30)  # the archive is written only once the second receiver was turned away
                return write_archive(out, RECORDS, wrapping_key=key, backup_id=aid, purpose="transfer")

            t, result = _in_process(url, tmp_path, code, writer)
            first, second = T.Receiver(c1, code, timeout=30, poll=0.05), T.Receiver(c2, code, timeout=30, poll=0.05)
            assert wait_for(lambda: "offer" in first.names(), what="the offer")
            first.offer()
            got: dict[str, Any] = {}
            r = threading.Thread(target=lambda: got.update(records=first.receive(lambda recs, aid: list(recs), tmp_dir=tmp_path)))
            r.start()
            assert wait_for(lambda: "answer" in second.names(), what="the first answer")
            with pytest.raises(T.TransferError, match="already used by another receiver"):
                second.offer()
            go.set()
            r.join(30)
            t.join(30)
            assert got["records"] == RECORDS and "error" not in result
    finally:
        storage.close()


def test_an_archive_not_made_for_this_exchange_is_refused(tmp_path: Path) -> None:
    """The archive's header id must be the one both sides derived: a sender that wraps another archive
    (another id) is refused, and the sender hears why."""
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    try:
        with serve_storage(storage, unlimited_settings()) as url, RelayClient(url) as client:
            code = T.new_code(url)
            t, result = _in_process(url, tmp_path, code, lambda out, key, aid: write_archive(
                out, RECORDS, wrapping_key=key, backup_id=bytes(16), purpose="transfer"))
            receiver = T.Receiver(client, code, timeout=30, poll=0.05)
            assert wait_for(lambda: "offer" in receiver.names(), what="the offer")
            receiver.offer()
            consumed: list[Any] = []
            from bridge.backup.archive import ArchiveError

            with pytest.raises(ArchiveError, match="its id differs"):
                receiver.receive(lambda recs, aid: consumed.extend(recs), tmp_dir=tmp_path)
            t.join(30)
            assert consumed == []
            assert "the receiver refused the archive: the archive is not the one of this transfer" in str(result["error"])
    finally:
        storage.close()


def _hkdf(ikm: bytes, salt: bytes, info: bytes, n: int) -> bytes:
    """RFC 5869 with the standard library only (an independent reading of §12.7)."""
    import hmac

    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:n]


def test_keys_are_the_documented_derivations() -> None:
    """PROTOCOL.md §12.7 "Keys" and step 3, and the code's checksum, recomputed from the text."""
    import base64

    s, x, k = bytes(range(18)), bytes([7]) * 32, bytes([9]) * 32
    offer, answer = b"offer object", b"answer object"
    assert T.code_keys(s) == (_hkdf(s, b"", b"parley/2026-11-30/transfer-vault", 32), _hkdf(s, b"", b"parley/2026-11-30/transfer-mac", 32))
    okm = _hkdf(s + x + k, hashlib.sha256(offer + answer).digest(), b"parley/2026-11-30/transfer-key", 80)
    assert T.session_keys(s, x, k, offer, answer) == (okm[:32], okm[32:64], okm[64:])
    check = hashlib.sha256(b"parley/2026-11-30/transfer-code" + s).digest()[:2]
    b32 = base64.b32encode(s + check).decode().lower()
    assert T.Code(s, "https://r.example").text() == "-".join(b32[i:i + 4] for i in range(0, 32, 4)) + "@https://r.example"


def test_a_swapped_answer_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """In process (the fast suite): the relay serves the sender an answer of its own making; the sender
    refuses it (no part is ever stored) and the receiver learns why."""
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    tamper: list[Tamper] = []

    def wrap(app: Any) -> Any:
        tamper.append(Tamper(app, "swap"))
        tamper[0].storage = storage  # type: ignore[attr-defined]
        return tamper[0]

    try:
        with serve_storage(storage, unlimited_settings(), wrap=wrap) as url, RelayClient(url) as client:
            code = T.new_code(url)
            t, result = _in_process(url, tmp_path, code, lambda out, key, aid: write_archive(
                out, RECORDS, wrapping_key=key, backup_id=aid, purpose="transfer"))
            receiver = T.Receiver(client, code, timeout=30, poll=0.05)
            assert wait_for(lambda: "offer" in receiver.names(), what="the offer")
            receiver.offer()
            consumed: list[Any] = []
            with pytest.raises(T.TransferError, match="the other side gave up: the answer does not authenticate"):
                receiver.receive(lambda recs, aid: consumed.extend(recs), tmp_dir=tmp_path)
            t.join(30)
            assert tamper[0].tampered.is_set() and consumed == []
            assert "the answer does not authenticate" in str(result["error"])
            assert not [p for p in tamper[0].puts if p.startswith("part-")]
    finally:
        storage.close()
