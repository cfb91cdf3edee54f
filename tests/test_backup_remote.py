"""Remote incremental backup (issue 15 item 4; PROTOCOL.md §12.4).

The first part checks the pure logic (what changed, what a relay may receive) over record lists; the
second runs RemoteBackup against real relays over loopback, with real archives and a real store; the
last runs `parley run` with remote backup on and two relays (slow)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.backup.remote import (
    MAX_DELTAS,
    RelayState,
    delta_records,
    diff_records,
    parse_segment_name,
    plan_relay,
    record_digest,
    segment_name,
)

# --- the pure part -----------------------------------------------------------------------------


def key_of(record: Any) -> str | None:
    """A stand-in for snapshot.record_key: tag:id for rows, the tag for singletons, None for meta/end."""
    tag, body = record
    if tag in ("meta", "end"):
        return None
    if tag in ("settings", "contacts", "identity"):
        return tag
    if tag == "reaction":
        return f"reaction:{body['message_id']}:{body['emoji']}"
    return f"{tag}:{body['id']}"


def export(state: dict[str, list[Any]]) -> list[Any]:
    order = {"identity": 0, "settings": 1, "contacts": 2, "conversation": 3, "message": 4, "reaction": 5}
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
        ({4: 1000, 5: 100, 6: 100}, {"delta_bytes": 1001}, "compaction"),
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
