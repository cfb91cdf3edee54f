"""Our prekeys on the relay (PROTOCOL.md §4; bridge/engine/prekeys.py): refilled when anonymous
claims drain them, the signed prekey and the last-resort ML-KEM prekey rotated, retired private
keys kept for a grace period and then deleted, one-time private keys deleted once used.

Engines run in-process over real SQLite stores against a real relay (create_app served by werkzeug
on 127.0.0.1:0 in a thread); the daemon test runs `parley run` as a process against it.
Time is injected (``Engine.prekeys.clock``) where rotation and grace periods are tested.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.crypto import sealed, session
from bridge.engine import Engine
from bridge.engine import prekeys as prekeys_mod
from bridge.home import Home
from bridge.protocol import prekeys as PK
from bridge.relay.client import Envelope, RelayClient, RelayUnavailable
from bridge.store import Store, now_ms
from tests.procs import Proc, parley, start_bridge, wait_for, whoami
from tests.engines import close_engines, track  # noqa: F401 (close_engines: autouse fixture)
from tests.engines import make_engine as _make_engine
from tests.relay_fixtures import serve_relay

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as url:
        yield url


class FakeClock:
    """Unix milliseconds that only move when the test says so (starts at the real time)."""

    def __init__(self) -> None:
        self.ms = now_ms()

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


_clients: list[RelayClient] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def make_engine(path: Path, relay_url: str, clock: FakeClock | None = None) -> Engine:
    """A registered installation of a fresh wallet, its store at ``path``; its prekeys on ``clock``."""
    eng = _make_engine(path, relay_url, register=False)
    if clock is not None:
        eng.prekeys.clock = clock
    eng.register()
    return eng


def client(url: str) -> RelayClient:
    c = RelayClient(url)
    _clients.append(c)
    return c


def inbox(eng: Engine) -> list[Envelope]:
    return eng.relay.fetch(eng.topic, 0, 500, token=eng.token())


def ids(eng: Engine, kind: str) -> set[int]:
    return {r[0] for r in eng.store.read("SELECT id FROM prekeys WHERE kind = ?", (kind,))}


def row(eng: Engine, kind: str, pid: int) -> tuple[Any, ...] | None:
    rows = eng.store.read("SELECT kind, id, public FROM prekeys WHERE kind = ? AND id = ?", (kind, pid))
    return tuple(rows[0]) if rows else None


def prekey_info(eng: Engine, env: Envelope) -> session.MessageInfo:
    """Which of ``eng``'s prekeys a first message names (only the recipient can see this)."""
    return session.peek(sealed.unseal(eng.secrets.identity_key, eng.installation_id, env.payload).message)


def quarantined(eng: Engine) -> list[tuple[int, str]]:
    """Envelopes the engine refused, with the reason (kept for diagnosis)."""
    return [(r[0], r[1]) for r in eng.store.read("SELECT cursor, error FROM quarantine ORDER BY cursor")]


def claim(url: str, iid: str) -> PK.Bundle:
    return PK.Bundle.decode(client(url).claim(iid))


# --- V1 of issue 17: a first message that really uses a post-quantum one-time prekey -----------


def test_first_message_uses_a_pq_one_time_prekey_and_its_private_half_is_deleted(tmp_path: Path, relay_url: str) -> None:
    alice, bob = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "bob.db", relay_url)
    pq_before = ids(bob, PK.PQ_OTPK)
    assert len(pq_before) == prekeys_mod.PQ_OTPK_TARGET
    assert alice.send(bob.address, "first message, with a one-time ML-KEM prekey").delivered
    (env,) = inbox(bob)
    info = prekey_info(bob, env)
    assert info.is_prekey and info.pqpk_kind == PK.PQ_OTPK  # not the last-resort key: this branch runs
    assert info.pqpk_id in pq_before and info.otpk_id in ids(bob, PK.OTPK)
    assert bob.sync() == 1
    assert [m["text"] for m in bob.messages(alice.address)] == ["first message, with a one-time ML-KEM prekey"]
    # Exactly the used ML-KEM one-time prekey is gone (19 left on the relay: no top-up yet).
    assert ids(bob, PK.PQ_OTPK) == pq_before - {info.pqpk_id}
    assert info.otpk_id not in ids(bob, PK.OTPK)
    assert bob.relay.prekey_count(bob.installation_id)["pq_otpk"] == prekeys_mod.PQ_OTPK_TARGET - 1


# --- rotation of the signed prekey and the last-resort ML-KEM prekey ---------------------------


def current(eng: Engine, kind: str) -> int:
    (r,) = eng.store.read("SELECT id FROM prekeys WHERE kind = ? AND retired_at IS NULL", (kind,))
    return int(r[0])


def drain_pq(url: str, eng: Engine) -> None:
    """Claim until bundles carry the last-resort ML-KEM key (what anonymous claimers can do)."""
    for _ in range(eng.relay.prekey_count(eng.installation_id)["pq_otpk"]):
        claim(url, eng.installation_id)
    assert eng.relay.prekey_count(eng.installation_id)["pq_otpk"] == 0


def test_rotated_signed_prekeys_open_in_flight_first_messages_until_the_grace_period_ends(tmp_path: Path, relay_url: str) -> None:
    clock = FakeClock()
    bob = make_engine(tmp_path / "bob.db", relay_url, clock)
    alice, dave, erin = (make_engine(tmp_path / f"{n}.db", relay_url) for n in ("alice", "dave", "erin"))
    old_spk, old_lrpk = current(bob, PK.SPK), current(bob, PK.PQ_LRPK)

    # Not yet due: nothing rotates.
    clock.advance(prekeys_mod.ROTATE_MS - 60_000)
    bob.ensure_prekeys()
    assert (current(bob, PK.SPK), current(bob, PK.PQ_LRPK)) == (old_spk, old_lrpk)
    assert claim(relay_url, bob.installation_id).spk.id == old_spk

    # A minute before the rotation, two first messages are made with the old bundle (last-resort
    # ML-KEM key: the one-time ones are drained); both are still on the relay when Bob rotates.
    drain_pq(relay_url, bob)
    assert alice.send(bob.address, "made with the old bundle, read inside the grace period").delivered
    assert dave.send(bob.address, "made with the old bundle, read after the grace period").delivered
    env_alice, env_dave = inbox(bob)
    for env in (env_alice, env_dave):
        info = prekey_info(bob, env)
        assert (info.spk_id, info.pqpk_kind, info.pqpk_id) == (old_spk, PK.PQ_LRPK, old_lrpk)

    # A week on: both are rotated, the relay hands out the new ones, signed by Bob's installation.
    clock.advance(60_000)
    assert bob.ensure_prekeys()
    rotated_at = clock.ms
    new_spk, new_lrpk = current(bob, PK.SPK), current(bob, PK.PQ_LRPK)
    assert new_spk > old_spk and new_lrpk > old_lrpk
    bundle = claim(relay_url, bob.installation_id)
    bundle.verify(bob.local.signing_pub)
    assert (bundle.spk.id, bundle.spk.pub) == (new_spk, row(bob, PK.SPK, new_spk)[2])  # type: ignore[index]
    drain_pq(relay_url, bob)
    bundle = claim(relay_url, bob.installation_id)
    assert (bundle.pqpk.kind, bundle.pqpk.id, bundle.pqpk.pub) == (PK.PQ_LRPK, new_lrpk, row(bob, PK.PQ_LRPK, new_lrpk)[2])  # type: ignore[index]
    # The old private keys are kept for the grace period ...
    assert row(bob, PK.SPK, old_spk) and row(bob, PK.PQ_LRPK, old_lrpk)

    # ... so a first message made with the old bundle still opens inside it.
    clock.advance(prekeys_mod.GRACE_MS - 60_000)
    bob.ensure_prekeys()
    assert row(bob, PK.SPK, old_spk) and row(bob, PK.PQ_LRPK, old_lrpk)
    assert bob.process(env_alice) is not None
    assert [m["text"] for m in bob.messages(alice.address)] == ["made with the old bundle, read inside the grace period"]

    # After the grace period the old private keys are gone (rows deleted), the current ones stay.
    clock.ms = rotated_at + prekeys_mod.GRACE_MS
    bob.ensure_prekeys()
    assert row(bob, PK.SPK, old_spk) is None and row(bob, PK.PQ_LRPK, old_lrpk) is None
    assert row(bob, PK.SPK, new_spk) and row(bob, PK.PQ_LRPK, new_lrpk)
    # A first message made with the old bundle is refused cleanly: quarantined, cursor past it.
    assert bob.process(env_dave) is None
    assert bob.cursor() == env_dave.cursor
    assert bob.messages(dave.address) == []
    ((cursor, reason),) = quarantined(bob)
    assert cursor == env_dave.cursor and f"{PK.SPK}/{old_spk}" in reason
    # Later envelopes flow: a new sender's first message (new bundle) arrives.
    assert erin.send(bob.address, "made with the new bundle").delivered
    assert bob.sync() == 1
    assert [m["text"] for m in bob.messages(erin.address)] == ["made with the new bundle"]


def test_a_rotation_whose_upload_failed_is_uploaded_on_the_next_check(tmp_path: Path, relay_url: str) -> None:
    clock = FakeClock()
    bob = make_engine(tmp_path / "bob.db", relay_url, clock)
    old_spk = current(bob, PK.SPK)
    clock.advance(prekeys_mod.ROTATE_MS)
    real_upload = bob.relay.upload_prekeys

    def lost(iid: str, data: bytes) -> dict[str, int]:
        raise RelayUnavailable("connection reset")

    bob.relay.upload_prekeys = lost  # type: ignore[method-assign]
    with pytest.raises(RelayUnavailable):
        bob.ensure_prekeys()
    new_spk = current(bob, PK.SPK)
    assert new_spk != old_spk  # rotated locally, the private half stored before the upload
    assert claim(relay_url, bob.installation_id).spk.id == old_spk  # the relay still has the old one
    bob.relay.upload_prekeys = real_upload  # type: ignore[method-assign]
    assert bob.ensure_prekeys()  # not due again, but never uploaded: sent now
    assert claim(relay_url, bob.installation_id).spk.id == new_spk
    assert not bob.ensure_prekeys()  # nothing left to do


def test_rotation_and_grace_are_settings(tmp_path: Path) -> None:
    policy = prekeys_mod.PrekeyPolicy.from_config({"prekey_rotation_days": 1, "prekey_grace_days": 2.5, "prekey_check_seconds": 30})
    assert (policy.rotate_ms, policy.grace_ms, policy.check_seconds) == (DAY_MS, int(2.5 * DAY_MS), 30.0)
    default = prekeys_mod.PrekeyPolicy.from_config(Home(tmp_path / "home").config())
    assert (default.rotate_ms, default.grace_ms) == (prekeys_mod.ROTATE_MS, prekeys_mod.GRACE_MS) == (7 * DAY_MS, 30 * DAY_MS)
    for bad in ({"prekey_rotation_days": 0}, {"prekey_grace_days": -1}, {"prekey_check_seconds": "often"}, {"prekey_rotation_days": True}):
        with pytest.raises(prekeys_mod.BadPrekeySetting):
            prekeys_mod.PrekeyPolicy.from_config(bad)



# --- one-time private keys handed out to claimers who never write ----------------------------------


def handed_out(eng: Engine, kind: str) -> set[int]:
    return {r[0] for r in eng.store.read("SELECT id FROM prekeys WHERE kind = ? AND retired_at IS NOT NULL", (kind,))}


def test_one_time_prekeys_handed_out_to_drainers_are_deleted_after_the_grace_period(tmp_path: Path, relay_url: str) -> None:
    clock = FakeClock()
    bob = make_engine(tmp_path / "bob.db", relay_url, clock)
    alice, erin = make_engine(tmp_path / "alice.db", relay_url), make_engine(tmp_path / "erin.db", relay_url)
    otpks, pqs = ids(bob, PK.OTPK), ids(bob, PK.PQ_OTPK)
    # Alice's first message is in flight when a drainer claims 40 more bundles and never writes.
    assert alice.send(bob.address, "in flight while the drain happens").delivered
    (env,) = inbox(bob)
    used = prekey_info(bob, env)
    drained = [claim(relay_url, bob.installation_id) for _ in range(40)]
    claimed = {b.otpk.id for b in drained if b.otpk} | {used.otpk_id}
    claimed_pq = {b.pqpk.id for b in drained if b.pqpk.kind == PK.PQ_OTPK} | {used.pqpk_id}
    assert claimed == set(sorted(otpks)[:41]) and claimed_pq == pqs  # lowest ids first (PROTOCOL §4)
    assert bob.ensure_prekeys()  # the daemon's check: tops up, notes what the relay handed out
    assert (handed_out(bob, PK.OTPK), handed_out(bob, PK.PQ_OTPK)) == (claimed, claimed_pq)
    # Inside the grace period a first message made with a handed-out key still opens (and uses it up).
    clock.advance(prekeys_mod.GRACE_MS - 60_000)
    bob.ensure_prekeys()
    assert bob.sync() == 1
    assert handed_out(bob, PK.OTPK) == claimed - {used.otpk_id}
    # After it, the drained keys' private halves are gone; the ones still on the relay stay and work.
    clock.advance(60_000)
    bob.ensure_prekeys()
    assert handed_out(bob, PK.OTPK) == handed_out(bob, PK.PQ_OTPK) == set()
    assert not (ids(bob, PK.OTPK) & claimed) and not (ids(bob, PK.PQ_OTPK) & claimed_pq)
    assert len(ids(bob, PK.OTPK)) == bob.relay.prekey_count(bob.installation_id)["otpk"] == prekeys_mod.OTPK_TARGET
    assert erin.send(bob.address, "with a key still on the relay").delivered
    assert bob.sync() == 1
    assert [m["text"] for m in bob.messages(erin.address)] == ["with a key still on the relay"]


def test_a_drain_grows_the_store_by_at_most_max_handed_out_keys(tmp_path: Path, relay_url: str) -> None:
    bob = make_engine(tmp_path / "bob.db", relay_url)
    bob.prekeys.policy = replace(bob.prekeys.policy, max_handed_out=25)
    claimed: dict[str, list[int]] = {PK.OTPK: [], PK.PQ_OTPK: []}
    for _ in range(4):  # four drains below the low-water mark, each topped up (as the daemon would)
        for _ in range(prekeys_mod.OTPK_TARGET - prekeys_mod.OTPK_LOW + 1):
            b = claim(relay_url, bob.installation_id)
            assert b.otpk is not None
            claimed[PK.OTPK].append(b.otpk.id)
            if b.pqpk.kind == PK.PQ_OTPK:
                claimed[PK.PQ_OTPK].append(b.pqpk.id)
        assert bob.ensure_prekeys()
    assert (len(claimed[PK.OTPK]), len(claimed[PK.PQ_OTPK])) == (4 * 31, 4 * 20)
    # Only the newest 25 handed-out keys of each kind are kept; the rest of the store is what the
    # relay still holds.
    left = bob.relay.prekey_count(bob.installation_id)
    for kind, n in ((PK.OTPK, left["otpk"]), (PK.PQ_OTPK, left["pq_otpk"])):
        assert handed_out(bob, kind) == set(sorted(claimed[kind])[-25:])
        assert len(ids(bob, kind)) == 25 + n



def test_a_relay_reporting_negative_counts_cannot_make_us_mint_keys_without_bound(tmp_path: Path, relay_url: str) -> None:
    bob = make_engine(tmp_path / "bob.db", relay_url)
    before = {k: len(ids(bob, k)) for k in (PK.OTPK, PK.PQ_OTPK)}
    bob.relay.prekey_count = lambda iid: {"otpk": -5000, "pq_otpk": -5000}  # type: ignore[method-assign]
    bob.ensure_prekeys()
    made = {k: len(ids(bob, k)) - before[k] for k in (PK.OTPK, PK.PQ_OTPK)}
    assert made == {PK.OTPK: prekeys_mod.OTPK_TARGET, PK.PQ_OTPK: prekeys_mod.PQ_OTPK_TARGET}


# --- refill below the threshold, without a restart -----------------------------------------------


@pytest.mark.slow
def test_prekeys_drained_by_anonymous_claims_are_refilled_by_the_running_daemon(tmp_path: Path, relay_url: str, procs: list[Proc]) -> None:
    # Bob is a `parley run` process; the relay is the module's (its generic rate limits lifted, so
    # the drain and Alice's claim are not refused on the shared 127.0.0.1).
    bob_home = tmp_path / "bob"
    parley(bob_home, "init", "--relay", relay_url, check=True)
    Home(bob_home).update_config(prekey_check_seconds=0.5)
    bob = whoami(bob_home)
    proc, _ = start_bridge(bob_home)
    procs.append(proc)
    proc.expect("subscribed to")
    iid = bob["installation_id"]
    attacker = client(relay_url)
    full = attacker.prekey_count(iid)
    assert full == {"otpk": prekeys_mod.OTPK_TARGET, "pq_otpk": prekeys_mod.PQ_OTPK_TARGET}

    # An anonymous claimer drains every one-time prekey: it claims until a bundle comes with neither
    # kind (bounded: a top-up in the middle only means more claims).
    for claims in range(1, 20 * prekeys_mod.OTPK_TARGET):
        drained = PK.Bundle.decode(attacker.claim(iid))
        if drained.otpk is None and drained.pqpk.kind == PK.PQ_LRPK:
            break
    assert drained.otpk is None and drained.pqpk.kind == PK.PQ_LRPK and claims > prekeys_mod.OTPK_TARGET

    # The running daemon notices and tops up: no restart, no message needed. (Both counts were 0
    # when the drain ended; only Bob uploads.)
    def topped_up() -> bool:
        left = attacker.prekey_count(iid)
        return left["otpk"] >= prekeys_mod.OTPK_LOW and left["pq_otpk"] >= prekeys_mod.PQ_OTPK_LOW

    wait_for(topped_up, timeout=20, interval=0.2, what="the daemon to refill its prekeys")
    db = bob_home / "parley.db"

    def otpk_ids() -> set[int]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return {r[0] for r in con.execute("SELECT id FROM prekeys WHERE kind = ?", (PK.OTPK,))}
        finally:
            con.close()

    refilled = otpk_ids()
    # A new sender still gets a one-time prekey (every older one was claimed): Bob's daemon accepts
    # the session with one of the refilled keys and deletes its private half.
    alice = make_engine(tmp_path / "alice.db", relay_url)
    assert alice.send(bob["address"], "after the drain").delivered
    used = wait_for(lambda: refilled - otpk_ids(), timeout=20, interval=0.2, what="Bob's daemon to accept the first message")
    assert len(used) == 1
    out = json.loads(parley(bob_home, "messages", alice.address, "--json", check=True).stdout)
    assert [m["text"] for m in out] == ["after the drain"]


# --- the store migration --------------------------------------------------------------------------


def reopen(eng: Engine) -> Engine:
    """The same installation after a restart: a new Engine over a new connection to the same file."""
    eng.store.close()
    ident = {"address": eng.address, "installation_id": eng.installation_id, "record": eng.record.hex()}
    new = Engine(Store(eng.store.path), eng.secrets, ident, eng.relay_url)
    track(new)
    return new


def test_a_store_from_before_rotation_is_migrated_and_keeps_its_keys(tmp_path: Path, relay_url: str) -> None:
    bob = make_engine(tmp_path / "bob.db", relay_url)
    spk, lrpk = current(bob, PK.SPK), current(bob, PK.PQ_LRPK)
    bob.store.close()
    # What a bridge from before this change left: no retired_at column, nothing marked uploaded.
    con = sqlite3.connect(tmp_path / "bob.db")
    con.execute("ALTER TABLE prekeys DROP COLUMN retired_at")
    con.execute("UPDATE prekeys SET uploaded = 0")
    con.commit()
    con.close()
    bob = reopen(bob)
    assert "retired_at" in {r[1] for r in bob.store.read("PRAGMA table_info(prekeys)")}
    Store(bob.store.path).close()  # the column check is idempotent
    assert (current(bob, PK.SPK), current(bob, PK.PQ_LRPK)) == (spk, lrpk)  # not due: no rotation
    assert bob.ensure_prekeys()  # never marked uploaded: sent once more (the same keys) ...
    assert not bob.ensure_prekeys()  # ... and then not again
    assert claim(relay_url, bob.installation_id).spk.id == spk
    alice = make_engine(tmp_path / "alice.db", relay_url)
    assert alice.send(bob.address, "after the upgrade").delivered
    assert bob.sync() == 1
