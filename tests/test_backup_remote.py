"""Remote incremental backup (issue 15 item 4; PROTOCOL.md §12.4).

The first part checks the pure logic (what changed, what a relay may receive) over record lists; the
second runs RemoteBackup against real relays over loopback, with real archives and a real store; the
last runs `parley run` with remote backup on and two relays (slow)."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.backup.remote import (
    COMPACT_FLOOR,
    MAX_DELTAS,
    RelayState,
    delta_records,
    diff_records,
    parse_segment_name,
    plan_relay,
    record_digest,
    segment_name,
)
from bridge.home import Home
from bridge.store import Store
from tests.plaintext import forms
from tests.procs import PASSPHRASE, Proc, befriend, free_port, parley, start_bridge, start_relay, wait_for, whoami

# --- the pure part -----------------------------------------------------------------------------


def key_of(record: Any) -> str | None:
    """A stand-in for snapshot.record_key: tag:id for rows, the tag for singletons, None for meta/end."""
    tag, body = record
    if tag in ("meta", "end"):
        return None
    if tag in ("settings", "contacts", "identity", "standby"):
        return tag
    if tag == "reaction":
        return f"reaction:{body['message_id']}:{body['emoji']}"
    return f"{tag}:{body['id']}"


def export(state: dict[str, list[Any]]) -> list[Any]:
    order = {"identity": 0, "settings": 1, "contacts": 2, "conversation": 3, "message": 4, "reaction": 5, "standby": 6}
    body = [r for _, r in sorted(state.items(), key=lambda kv: (order[kv[1][0]], kv[0]))]
    return [["meta", {"version": 1, "address": "0x" + "11" * 20}], *body, ["end", {"records": len(body) + 1}]]


def apply(replica: dict[str, list[Any]], records: list[Any]) -> None:
    """What a restore does with one segment (replace=True): upsert by key, forget removes."""
    for r in records:
        if r[0] == "forget":
            replica.pop(r[1]["key"], None)
        elif key_of(r) is not None:
            replica[key_of(r)] = r  # type: ignore[index]


def start_state() -> dict[str, list[Any]]:
    s: dict[str, list[Any]] = {
        "identity": ["identity", {"records": [b"x"]}],
        "settings": ["settings", {"read_receipts": True}],
        "contacts": ["contacts", [{"address": "0x" + "22" * 20, "name": "bob"}]],
        "conversation:b": ["conversation", {"id": "b", "created_at": 1}],
    }
    for i in range(5):
        s[f"message:{i}"] = ["message", {"id": str(i), "text": f"hello {i}", "read": 0, "deleted": 0}]
    s["reaction:1:👍"] = ["reaction", {"message_id": "1", "emoji": "👍"}]
    return s


def test_segment_names_are_eight_digits_and_nothing_else_parses() -> None:
    assert segment_name(3) == "seg-00000003"
    assert parse_segment_name("seg-00000003") == 3
    for bad in ("seg-3", "seg-000000003", "seg-0000000a", "xseg-00000003", "seg-00000003.tmp", None, 3):
        assert parse_segment_name(bad) is None


def test_diff_from_nothing_sends_every_keyed_record_and_no_forget() -> None:
    records = export(start_state())
    d = diff_records(records, {}, key_of)
    assert d.meta == records[0]
    assert d.changed == records[1:-1]  # meta and end are never compared
    assert d.forgets == [] and not d.overflow


def test_an_edit_a_read_and_a_delete_are_the_delta_and_gone_rows_are_forgotten_children_first() -> None:
    state = start_state()
    index = diff_records(export(state), {}, key_of).current
    state["message:2"] = ["message", {**state["message:2"][1], "text": "edited"}]
    state["message:3"] = ["message", {**state["message:3"][1], "read": 1}]
    state["message:4"] = ["message", {**state["message:4"][1], "deleted": 1, "text": ""}]
    state["message:9"] = ["message", {"id": "9", "text": "new", "read": 0, "deleted": 0}]
    del state["reaction:1:👍"], state["message:0"]
    d = diff_records(export(state), index, key_of)
    assert [key_of(r) for r in d.changed] == ["message:2", "message:3", "message:4", "message:9"]
    assert d.forgets == [["forget", {"tag": "reaction", "key": "reaction:1:👍"}], ["forget", {"tag": "message", "key": "message:0"}]]
    # and nothing when nothing changed
    again = diff_records(export(state), d.current, key_of)
    assert not again.any and again.changed == [] and again.forgets == []


def test_a_gone_record_no_forget_can_remove_means_a_base() -> None:
    state = start_state()
    state["standby"] = ["standby", {"id": "s"}]
    index = diff_records(export(state), {}, key_of).current
    del state["standby"]
    d = diff_records(export(state), index, key_of)
    assert d.overflow and d.changed == [] and d.forgets == []


def test_changes_over_the_limit_overflow_instead_of_being_held_in_memory() -> None:
    state = start_state()
    d = diff_records(export(state), {}, key_of, max_delta_bytes=120)
    assert d.overflow and d.any and d.changed == []
    assert len(d.current) == len(state)  # the digests are still complete (a base will use them)


def test_delta_records_are_numbered_and_end_counts_what_precedes() -> None:
    meta = ["meta", {"version": 1, "address": "0x" + "11" * 20, "segment": 9, "base": 9}]
    out = delta_records(meta, [["message", {"id": "1"}]], [["forget", {"tag": "message", "key": "message:2"}]], segment=12, base=7)
    assert out[0] == ["meta", {"version": 1, "address": "0x" + "11" * 20, "segment": 12, "base": 7}]
    assert out[-1] == ["end", {"records": 3}]
    assert meta[1]["segment"] == 9  # the export's meta is not changed


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["edit", "add", "delete", "react", "unreact", "read"]), st.integers(0, 12)), max_size=40), st.integers(1, 6))
def test_a_base_and_its_deltas_rebuild_the_state_exactly(ops: list[tuple[str, int]], every: int) -> None:
    """Property: after any sequence of changes, base + deltas (applied in order) == the state."""
    state = start_state()
    d = diff_records(export(state), {}, key_of)
    replica: dict[str, list[Any]] = {}
    apply(replica, d.changed + d.forgets)
    index = d.current
    for step, (op, n) in enumerate(ops):
        k = f"message:{n}"
        if op == "edit" and k in state:
            state[k] = ["message", {**state[k][1], "text": f"edit {step}"}]
        elif op == "add":
            state[k] = ["message", {"id": str(n), "text": f"m {step}", "read": 0, "deleted": 0}]
        elif op == "delete":
            state.pop(k, None)
            state.pop(f"reaction:{n}:👍", None)
        elif op == "react" and k in state:
            state[f"reaction:{n}:👍"] = ["reaction", {"message_id": str(n), "emoji": "👍"}]
        elif op == "unreact":
            state.pop(f"reaction:{n}:👍", None)
        elif op == "read" and k in state:
            state[k] = ["message", {**state[k][1], "read": 1}]
        if step % every == 0:
            d = diff_records(export(state), index, key_of)
            apply(replica, delta_records(export(state)[0], d.changed, d.forgets, segment=step + 2, base=1))
            index = d.current
            assert replica == state
    d = diff_records(export(state), index, key_of)
    apply(replica, d.changed + d.forgets)
    assert replica == state


def synced(**kw: Any) -> RelayState:
    rs = RelayState("http://r", base=4, last=6, last_size=100, version=3, deltas=2, base_bytes=1000, delta_bytes=200, state="ok")
    for k, v in kw.items():
        setattr(rs, k, v)
    return rs


def test_a_relay_holding_our_chain_and_state_may_take_a_delta() -> None:
    plan = plan_relay({2: 50, 4: 1000, 5: 100, 6: 100}, synced(), 3)
    assert plan.delta and plan.reason == "in sync"
    assert plan_relay({2: 50, 4: 1000, 5: 100, 6: 100}, synced(delta_bytes=COMPACT_FLOOR), 3).delta  # deltas > base, but small
    assert plan.stale == (2,)  # an older chain left there is deleted after the run


@pytest.mark.parametrize(
    "listing, state, reason",
    [
        ({4: 1000, 5: 100, 6: 100}, {"version": 2}, "it missed a segment"),
        ({4: 1000, 5: 100, 6: 100, 7: 80}, {}, "its segments are not the ones we uploaded"),
        ({4: 1000, 5: 100, 6: 99}, {}, "its segments are not the ones we uploaded"),
        ({}, {}, "its segments are not the ones we uploaded"),
        ({4: 1000, 6: 100}, {}, "a segment is missing there"),
        ({4: 1000, 5: 100, 6: 100}, {"last": None}, "no backup there yet"),
        ({4: 1000, 5: 100, 6: 100}, {"deltas": MAX_DELTAS}, "compaction"),
        ({4: 1000, 5: 100, 6: 100}, {"delta_bytes": COMPACT_FLOOR + 1}, "compaction"),
        ({4: 1000, 5: 100, 6: 100}, {"base_bytes": 2 * COMPACT_FLOOR, "delta_bytes": 2 * COMPACT_FLOOR + 1}, "compaction"),
    ],
)
def test_any_doubt_about_a_relays_chain_means_a_fresh_base_above_everything_it_lists(listing: dict[int, int], state: dict[str, Any], reason: str) -> None:
    plan = plan_relay(listing, synced(**state), 3)
    assert not plan.delta and plan.reason == reason
    assert plan.base_number == max([*listing, 6]) + 1
    assert plan.stale == tuple(sorted(listing))  # every older segment goes once the base is there


def test_digests_follow_content_only() -> None:
    a = ["message", {"id": "1", "text": "a"}]
    assert record_digest(a) == record_digest(["message", {"text": "a", "id": "1"}])  # canonical CBOR
    assert record_digest(a) != record_digest(["message", {"id": "1", "text": "b"}])



# --- real relays, real archives, a real store ------------------------------------------------------

def ok(r: Any) -> Any:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    return r


@dataclass
class Net:
    d: Path
    r1: str
    r2: str
    dbs: list[Path]
    bob: Path

    @property
    def bob_address(self) -> str:
        return whoami(self.bob)["address"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp("remote")
    started: list[Proc] = []
    try:
        p1, u1 = start_relay(d / "r1.db")
        started.append(p1)
        p2, u2 = start_relay(d / "r2.db")
        started.append(p2)
        ok(parley(d / "bob", "init", "--relay", u1, "--relay", u2))
        yield Net(d, u1, u2, [d / "r1.db", d / "r2.db"], d / "bob")
    finally:
        for p in reversed(started):
            p.stop()


def new_home(tmp_path: Path, name: str, relays: list[str], bob: Path) -> Path:
    home = tmp_path / name
    ok(parley(home, "init", *[a for u in relays for a in ("--relay", u)]))
    befriend(home, bob)
    return home


class Local:
    """A home's store and keys in this process, with a recovery key and RemoteBackup over ``relays``."""

    def __init__(self, home: Path, relays: list[str]) -> None:
        from bridge.backup import recovery, state
        from bridge.backup.remote import RemoteBackup
        from bridge.keys import load_keyfile

        self.home = Home(home)
        self.secrets = load_keyfile(home / "keys.json", PASSPHRASE)
        self.store = Store(home / "parley.db")
        self.key = state.create_recovery_key(self.store, self.secrets)
        self.keys = recovery.derive(self.key)
        self.rb = RemoteBackup(self.home, self.store, self.secrets, relays)

    def close(self) -> None:
        self.store.close()


def chain(url: str, keys: Any) -> dict[int, list[Any]]:
    """Every segment the relay holds in the vault, opened with the backup key: number -> records."""
    from bridge.backup import archive
    from bridge.relay.client import RelayClient

    out: dict[int, list[Any]] = {}
    with RelayClient(url) as c:
        for o in c.backup_list(keys.auth_private):
            n = parse_segment_name(o["name"])
            assert n is not None, o
            data = c.backup_get(keys.auth_private, o["name"])
            assert isinstance(data, bytes) and len(data) == o["size"]
            out[n] = list(archive.open_archive(io.BytesIO(data), keys.backup_key, purposes=("remote",)).records())
    return dict(sorted(out.items()))


def meta(records: list[Any]) -> dict[str, Any]:
    assert records[0][0] == "meta"
    return dict(records[0][1])


def messages(records: list[Any]) -> dict[str, dict[str, Any]]:
    """The messages a user sees (not the rows of the edits, deletes and receipts we sent)."""
    from bridge.engine.contents import DISPLAYABLE

    return {r[1]["id"]: r[1] for r in records if r[0] == "message" and r[1]["kind"] in DISPLAYABLE}


def contiguous(ch: dict[int, list[Any]]) -> bool:
    """A relay's vault is one chain: its first segment a base, then deltas numbered one after another."""
    nums = list(ch)
    base = nums[0]
    return (
        meta(ch[base])["base"] == meta(ch[base])["segment"] == base
        and nums == list(range(base, base + len(nums)))
        and all(meta(ch[n])["segment"] == n and meta(ch[n])["base"] == base for n in nums)
    )


def send(home: Path, to: str, text: str) -> str:
    return str(json.loads(ok(parley(home, "send", to, text, "--json")).stdout)["id"])


def no_plaintext(dbs: list[Path], texts: list[str]) -> None:
    for db in dbs:
        blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        for text in texts:
            for form, needle in forms(text.encode()).items():
                assert needle not in blob, f"{text!r} ({form}) found in {db.name}"


@pytest.mark.slow
def test_backs_up_to_every_home_relay_then_only_what_changed(net: Net, tmp_path: Path) -> None:
    alice = new_home(tmp_path, "alice", [net.r1, net.r2], net.bob)
    a, b = whoami(alice)["address"], net.bob_address
    texts = [f"secret-{secrets.token_hex(8)}" for _ in range(7)]
    in1, in2 = send(net.bob, a, texts[0]), send(net.bob, a, texts[1])
    out1, out2, out3 = send(alice, b, texts[2]), send(alice, b, texts[3]), send(alice, b, texts[4])
    ok(parley(alice, "sync"))
    loc = Local(alice, [net.r1, net.r2])
    try:
        status = loc.rb.run_once()
        assert [(r["url"], r["state"], r["error"]) for r in status["relays"]] == [(net.r1, "ok", None), (net.r2, "ok", None)]
        assert status["segments"] == 1 and status["size"] > 0 and status["last_backup_at"] is not None
        for url in (net.r1, net.r2):
            ch = chain(url, loc.keys)
            assert list(ch) == [1] and meta(ch[1])["base"] == 1
            assert set(messages(ch[1])) == {in1, in2, out1, out2, out3}
        loc.rb.run_once()  # nothing changed: nothing uploaded
        assert [list(chain(u, loc.keys)) for u in (net.r1, net.r2)] == [[1], [1]]
        # an edit, a delete, a read and a new message: one delta with exactly those
        ok(parley(alice, "edit", b, out1, texts[5]))
        ok(parley(alice, "delete", b, out2))
        in3 = send(net.bob, a, texts[6])
        ok(parley(alice, "sync"))
        ok(parley(alice, "read", b))
        status = loc.rb.run_once()
        assert status["segments"] == 2
        for url in (net.r1, net.r2):
            ch = chain(url, loc.keys)
            assert list(ch) == [1, 2] and contiguous(ch)
            delta = messages(ch[2])
            assert set(delta) == {out1, out2, in1, in2, in3}  # out3 did not change
            assert delta[out1]["text"] == texts[5] and delta[out2]["deleted"] and delta[in1]["read"] and delta[in2]["read"]
            assert not [r for r in ch[2] if r[0] == "wallet"]  # a delta carries what changed, not the wallet again
        no_plaintext(net.dbs, texts)
    finally:
        loc.close()


@pytest.mark.slow
def test_a_relay_that_was_down_gets_a_base_and_never_a_delta_that_skips(net: Net, tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    r3_proc, r3 = start_relay(tmp_path / "r3.db", port)
    procs.append(r3_proc)
    alice = new_home(tmp_path, "alice", [net.r1, r3], net.bob)
    b = net.bob_address
    loc = Local(alice, [net.r1, r3])
    try:
        loc.rb.run_once()
        r3_proc.stop()
        sent = [send(alice, b, f"while r3 is down {i}") for i in range(2)]
        status = loc.rb.run_once()
        (s1, s3) = status["relays"]
        assert s1["state"] == "ok" and s3["state"] == "error" and s3["error"] and r3.split("//")[1] in s3["error"]
        send(alice, b, "still down")
        loc.rb.run_once()
        assert list(chain(net.r1, loc.keys)) == [1, 2, 3]
        r3_proc, again = start_relay(tmp_path / "r3.db", port)
        procs.append(r3_proc)
        assert again == r3
        status = loc.rb.run_once()  # nothing changed, but r3 missed two segments: it gets a base
        assert [r["state"] for r in status["relays"]] == ["ok", "ok"]
        ch3 = chain(r3, loc.keys)
        assert list(ch3) == [2] and meta(ch3[2])["base"] == 2  # above what it listed; seg 1 deleted
        assert set(sent) <= set(messages(ch3[2]))
        last = send(alice, b, "after r3 came back")
        loc.rb.run_once()
        ch1, ch3 = chain(net.r1, loc.keys), chain(r3, loc.keys)
        assert list(ch1) == [1, 2, 3, 4] and list(ch3) == [2, 3]
        assert contiguous(ch1) and contiguous(ch3)
        assert set(messages(ch1[4])) == set(messages(ch3[3])) == {last}
    finally:
        loc.close()


@pytest.mark.slow
def test_compaction_and_segments_that_are_not_ours(net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.backup import remote
    from bridge.relay.client import RelayClient

    monkeypatch.setattr(remote, "MAX_DELTAS", 2)
    alice = new_home(tmp_path, "alice", [net.r1, net.r2], net.bob)
    b = net.bob_address
    loc = Local(alice, [net.r1, net.r2])
    try:
        loc.rb.run_once()
        ids = []
        for i in range(2):
            ids.append(send(alice, b, f"delta {i}"))
            loc.rb.run_once()
        assert [list(chain(u, loc.keys)) for u in (net.r1, net.r2)] == [[1, 2, 3], [1, 2, 3]]
        ids.append(send(alice, b, "compacted"))
        status = loc.rb.run_once()  # two deltas already: a base, and the old chain goes
        assert status["segments"] == 1
        for url in (net.r1, net.r2):
            ch = chain(url, loc.keys)
            assert list(ch) == [4] and meta(ch[4])["base"] == 4 and set(ids) <= set(messages(ch[4]))
        # someone else wrote into the vault on r1 (another device with the same key, a relay's junk):
        # never a delta after a segment we did not write; r1 gets a base above it and the junk goes
        with RelayClient(net.r1) as c:
            c.backup_put(loc.keys.auth_private, "seg-00000005", b"not ours" * 10, 80)
        send(alice, b, "after the foreign segment")
        loc.rb.run_once()
        ch1, ch2 = chain(net.r1, loc.keys), chain(net.r2, loc.keys)
        assert list(ch1) == [6] and meta(ch1[6])["base"] == 6
        assert list(ch2) == [4, 5] and contiguous(ch2)
    finally:
        loc.close()


@pytest.mark.slow
def test_the_daemon_backs_up_when_turned_on_and_after_a_change(net: Net, tmp_path: Path, procs: list[Proc]) -> None:
    from bridge.backup import recovery

    alice = new_home(tmp_path, "alice", [net.r1, net.r2], net.bob)
    a = whoami(alice)["address"]
    ok(parley(alice, "config", "set", "backup_interval_minutes", "0.02"))
    ok(parley(alice, "config", "set", "backup_standby", "false"))
    texts = [f"secret-{secrets.token_hex(8)}" for _ in range(2)]
    first = send(net.bob, a, texts[0])
    bridge, _ = start_bridge(alice)
    procs.append(bridge)
    out = json.loads(ok(parley(alice, "backup", "remote", "on", "--json")).stdout)
    keys = recovery.derive(recovery.parse(out["recovery_key"]))
    assert out["enabled"] is True and out["has_key"] is True
    wait_for(lambda: all(first in messages(chain(u, keys).get(1, [["meta", {}]])) for u in (net.r1, net.r2)), what="the first backup on both relays")
    later = send(net.bob, a, texts[1])
    wait_for(lambda: all(later in messages(chain(u, keys).get(2, [["meta", {}]])) for u in (net.r1, net.r2)), what="a delta on both relays")
    status = json.loads(ok(parley(alice, "backup", "remote", "status", "--json")).stdout)
    assert status["enabled"] and status["segments"] == 2 and [r["state"] for r in status["relays"]] == ["ok", "ok"]
    assert set(status) == {"enabled", "has_key", "confirmed", "last_backup_at", "size", "segments", "relays", "standby"}
    ok(parley(alice, "backup", "remote", "off"))
    assert json.loads(ok(parley(alice, "backup", "remote", "status", "--json")).stdout)["enabled"] is False
    no_plaintext(net.dbs, texts)
