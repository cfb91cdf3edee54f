"""Attacks on the relay (issue 8, item 5 and the relay's low items), played as an attacker would.

Every test runs the real Flask app of :func:`bridge.relay.server.create_app` over a real database
(SQLite file, and a fresh PostgreSQL schema where the test is parametrized), and checks that a
refused attack leaves the relay's storage unchanged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from bridge.identity import EOA, Statement
from bridge.protocol import wire
from bridge.relay.server import RelaySettings, RetentionThread, create_app
from bridge.relay.storage import Storage
from tests.relay_fixtures import (
    OTHER_WALLET_ADDRESS,
    OTHER_WALLET_KEY,
    STORAGE_BACKENDS,
    WALLET_ADDRESS,
    Installation,
    authorize_record,
    make_installation,
    make_upload,
    open_backend,
    postgres_schema,
    revoke_record,
    wait_until,
)

HUGE = 10**6
_BLOCK = 30.0  # upper bound for a blocked worker in these tests (never reached when all is well)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingVerifier:
    """EOA signature checks, counted per statement address; optionally held at a gate.

    ``hold(address)`` makes every later check of a statement for ``address`` wait on ``release``
    (set ``entered`` first), so a test can keep an append "in progress" for as long as it likes.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.held: str | None = None
        self.entered = threading.Event()
        self.release = threading.Event()

    def check(self, statement: Statement, text: str, signature: bytes) -> None:
        with self._lock:
            self.calls[statement.address] = self.calls.get(statement.address, 0) + 1
        if self.held == statement.address:
            self.entered.set()
            if not self.release.wait(_BLOCK):
                raise AssertionError("the gate was never opened")
        EOA.check(statement, text, signature)

    def count(self, address: str) -> int:
        with self._lock:
            return self.calls.get(address, 0)


class Relay:
    """A relay app over ``storage``, with a fake clock and helpers."""

    def __init__(self, storage: Storage, backend: str, pg_url: str | None, **overrides: Any) -> None:
        self.storage = storage
        self.backend = backend
        self.pg_url = pg_url
        self.clock = FakeClock()
        self.verifier = CountingVerifier()
        base: dict[str, Any] = dict(
            publish_rate=HUGE, publish_burst=HUGE, claim_rate=HUGE, claim_burst=HUGE, identity_rate=HUGE, identity_burst=HUGE,
            auth_rate=HUGE, auth_burst=HUGE,
        )
        base.update(overrides)
        self.settings = RelaySettings(clock=self.clock, verifier=self.verifier, **base)
        self.app = create_app(storage, settings=self.settings)
        self.client: FlaskClient = self.app.test_client()

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.client.post(path, data=json.dumps(body), content_type="application/json", **kw)

    def append(self, address: str, record: bytes, **kw: Any) -> Any:
        return self.post(f"/v1/identity/{address}", {"record": wire.b64e(record)}, **kw)

    def publish(self, inst: Installation, payload: bytes, **kw: Any) -> Any:
        return self.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(payload)}, **kw)

    def snapshot(self) -> str:
        """Every table's contents (a hash per table): equal snapshots mean nothing changed."""
        out = []
        if self.backend == "sqlite":
            path = self.storage._path  # type: ignore[attr-defined]
            con = sqlite3.connect(path)
            try:
                return "\n".join(con.iterdump())
            finally:
                con.close()
        import psycopg

        assert self.pg_url is not None
        with psycopg.connect(self.pg_url, autocommit=True) as con:
            tables = [r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
            for t in tables:
                rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"'))
                out.append(f"{t}:{len(rows)}:{hashlib.sha256(chr(10).join(rows).encode()).hexdigest()}")
        return "\n".join(out)


@pytest.fixture(params=STORAGE_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Storage, str | None]]:
    if request.param == "postgres":
        with postgres_schema() as url:
            st = open_backend("postgres", tmp_path, url)
            try:
                yield "postgres", st, url
            finally:
                st.close()
    else:
        st = open_backend("sqlite", tmp_path)
        try:
            yield "sqlite", st, None
        finally:
            st.close()


def make_relay(backend: tuple[str, Storage, str | None], **overrides: Any) -> Relay:
    name, storage, url = backend
    return Relay(storage, name, url, **overrides)


def assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def refused(relay: Relay, fn: Any, status: int, code: str) -> None:
    before = relay.snapshot()
    assert_error(fn(), status, code)
    assert relay.snapshot() == before, "a refused request changed the relay's storage"


# ---- item 5: identity appends ------------------------------------------------------------------


def test_long_identity_log_append_verifies_only_the_new_record(backend: tuple[str, Storage, str | None]) -> None:
    """An attacker grows one log; each later append must cost one signature check, not one per record."""
    relay = make_relay(backend)
    n = 40
    for _ in range(n):
        assert relay.append(WALLET_ADDRESS, authorize_record(make_installation())).status_code == 201
    before = relay.verifier.count(WALLET_ADDRESS)
    assert relay.append(WALLET_ADDRESS, authorize_record(make_installation())).status_code == 201
    assert relay.verifier.count(WALLET_ADDRESS) - before == 1
    # a revocation too: one check, and the revoked installation leaves the index
    victim = make_installation()
    assert relay.append(WALLET_ADDRESS, authorize_record(victim)).status_code == 201
    before = relay.verifier.count(WALLET_ADDRESS)
    assert relay.append(WALLET_ADDRESS, revoke_record(victim)).status_code == 201
    assert relay.verifier.count(WALLET_ADDRESS) - before == 1
    assert relay.storage.installation(victim.iid) is None


def test_identity_log_is_capped_with_a_clear_error(backend: tuple[str, Storage, str | None]) -> None:
    relay = make_relay(backend, max_identity_records=5)
    records = [authorize_record(make_installation()) for _ in range(5)]
    for rec in records:
        assert relay.append(WALLET_ADDRESS, rec).status_code == 201
    refused(relay, lambda: relay.append(WALLET_ADDRESS, authorize_record(make_installation())), 409, "log_full")
    assert relay.append(WALLET_ADDRESS, records[2]).status_code == 200  # a record already there is still "ok"
    assert relay.append(OTHER_WALLET_ADDRESS, authorize_record(make_installation(), OTHER_WALLET_KEY)).status_code == 201


def test_slow_append_on_one_address_blocks_no_other_append_or_publish(backend: tuple[str, Storage, str | None]) -> None:
    """While one address's append is held (slow verifier), other addresses append and publish.

    (Under werkzeug threads this held before the fix too: the old code verified the new record before
    taking its global lock; what it held under the lock was the whole-log re-verification, which the
    count test above and the PostgreSQL lock test below catch.)"""
    relay = make_relay(backend)
    bob = make_installation()
    assert relay.append(OTHER_WALLET_ADDRESS, authorize_record(bob, OTHER_WALLET_KEY)).status_code == 201
    relay.verifier.held = WALLET_ADDRESS
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(relay.append(WALLET_ADDRESS, authorize_record(make_installation())).status_code))
    worker.start()
    try:
        assert relay.verifier.entered.wait(_BLOCK)
        done: list[int] = []

        def others() -> None:
            done.append(relay.append(OTHER_WALLET_ADDRESS, authorize_record(make_installation(), OTHER_WALLET_KEY)).status_code)
            done.append(relay.publish(bob, b"sealed").status_code)

        t = threading.Thread(target=others)
        t.start()
        t.join(_BLOCK)
        assert done == [201, 202], "an append on another address or a publish waited for the held append"
        assert not results  # the held append is really still in progress
    finally:
        relay.verifier.release.set()
        worker.join(_BLOCK)
    assert results == [201]


def test_pg_append_held_on_another_node_blocks_only_its_own_address(tmp_path: Path) -> None:
    """PostgreSQL: an append in progress on one address (its per-address lock held by another node)
    must not stop an append to another address, nor a publish."""
    with postgres_schema() as url:
        storage = open_backend("postgres", tmp_path, url)
        try:
            relay = Relay(storage, "postgres", url)
            bob = make_installation()
            assert relay.append(OTHER_WALLET_ADDRESS, authorize_record(bob, OTHER_WALLET_KEY)).status_code == 201
            import psycopg

            with psycopg.connect(url) as other_node:  # a transaction, as another node's append would hold
                other_node.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("identity:" + WALLET_ADDRESS,))
                results: list[int] = []
                worker = threading.Thread(
                    target=lambda: results.append(relay.append(WALLET_ADDRESS, authorize_record(make_installation())).status_code)
                )
                worker.start()
                with psycopg.connect(url, autocommit=True) as probe:
                    assert wait_until(
                        lambda: probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0] > 0,  # type: ignore[index]
                        timeout=_BLOCK,
                    )
                done: list[int] = []

                def others() -> None:
                    done.append(relay.append(OTHER_WALLET_ADDRESS, authorize_record(make_installation(), OTHER_WALLET_KEY)).status_code)
                    done.append(relay.publish(bob, b"sealed").status_code)

                t = threading.Thread(target=others)
                t.start()
                t.join(_BLOCK)
                assert done == [201, 202], "another address's append or a publish waited for a held per-address lock"
                assert not results
                other_node.rollback()
            worker.join(_BLOCK)
            assert results == [201]
        finally:
            storage.close()


# ---- one installation id, one address ------------------------------------------------------------


def _token(relay: Relay, inst: Installation) -> str:
    from bridge.crypto import primitives as P
    from bridge.relay.auth import auth_message

    ch = relay.post("/v1/auth/challenge", {"installation_id": inst.iid}).get_json()["challenge"]
    sig = P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, wire.b64d(ch)))
    r = relay.post("/v1/auth/token", {"installation_id": inst.iid, "challenge": ch, "signature": wire.b64e(sig)})
    assert r.status_code == 200, r.get_json()
    return str(r.get_json()["token"])


def test_iid_authorized_in_mallorys_log_dies_with_alices_revocation(backend: tuple[str, Storage, str | None]) -> None:
    """Mallory re-authorizes Alice's installation in her own log; after Alice revokes it, it must be
    active nowhere: no challenge, no prekeys, no publishing to it."""
    relay = make_relay(backend)
    alice = make_installation()
    assert relay.append(WALLET_ADDRESS, authorize_record(alice)).status_code == 201
    assert relay.client.put(f"/v1/prekeys/{alice.iid}", json={"upload": wire.b64e(make_upload(alice, otpk_ids=range(1, 4)))}).status_code == 200
    mallory = make_installation()  # Mallory's own installation: its token is no consent for Alice's
    assert relay.append(OTHER_WALLET_ADDRESS, authorize_record(mallory, OTHER_WALLET_KEY)).status_code == 201
    foreign = {"Authorization": f"Bearer {_token(relay, mallory)}"}
    refused(relay, lambda: relay.append(OTHER_WALLET_ADDRESS, authorize_record(alice, OTHER_WALLET_KEY)), 409, "installation_bound")
    refused(relay, lambda: relay.append(OTHER_WALLET_ADDRESS, authorize_record(alice, OTHER_WALLET_KEY), headers=foreign), 409, "installation_bound")
    refused(relay, lambda: relay.append(OTHER_WALLET_ADDRESS, revoke_record(alice, OTHER_WALLET_KEY)), 409, "installation_bound")
    assert relay.append(WALLET_ADDRESS, revoke_record(alice)).status_code == 201
    assert relay.storage.installation(alice.iid) is None
    assert_error(relay.post("/v1/auth/challenge", {"installation_id": alice.iid}), 401, "unknown_installation")
    assert_error(relay.client.post(f"/v1/prekeys/{alice.iid}/claim"), 404, "no_prekeys")
    assert_error(relay.publish(alice, b"x"), 404, "unknown_installation")
    # and a later re-authorization anywhere stays refused or inert
    refused(relay, lambda: relay.append(OTHER_WALLET_ADDRESS, authorize_record(alice, OTHER_WALLET_KEY)), 409, "installation_bound")
    assert relay.append(WALLET_ADDRESS, authorize_record(alice)).status_code == 201  # revocation is final
    assert relay.storage.installation(alice.iid) is None


def test_installation_moves_to_another_wallet_with_its_own_token(backend: tuple[str, Storage, str | None]) -> None:
    """The legitimate case the binding rule must keep: one bridge signs in with another wallet
    (same installation); the relay accepts the second log with the installation's own token."""
    relay = make_relay(backend)
    inst = make_installation()
    assert relay.append(WALLET_ADDRESS, authorize_record(inst)).status_code == 201
    own = {"Authorization": f"Bearer {_token(relay, inst)}"}
    assert relay.append(OTHER_WALLET_ADDRESS, authorize_record(inst, OTHER_WALLET_KEY), headers=own).status_code == 201
    assert relay.append(WALLET_ADDRESS, revoke_record(inst)).status_code == 201  # the old wallet lets go
    active = relay.storage.installation(inst.iid)
    assert active is not None and active.address == OTHER_WALLET_ADDRESS
    assert relay.post("/v1/auth/challenge", {"installation_id": inst.iid}).status_code == 200


def test_concurrent_binding_of_one_iid_to_two_addresses_has_one_winner(backend: tuple[str, Storage, str | None]) -> None:
    relay = make_relay(backend)
    inst = make_installation()
    records = [(WALLET_ADDRESS, authorize_record(inst)), (OTHER_WALLET_ADDRESS, authorize_record(inst, OTHER_WALLET_KEY))] * 3
    barrier = threading.Barrier(len(records))
    codes: list[int] = []

    def go(addr: str, rec: bytes) -> None:
        barrier.wait()
        codes.append(relay.append(addr, rec).status_code)

    threads = [threading.Thread(target=go, args=r) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_BLOCK)
    assert sorted(codes) == [200, 200, 201, 409, 409, 409]
    active = relay.storage.installation(inst.iid)
    assert active is not None
    assert relay.storage.identity_records(active.address) != []
    loser = OTHER_WALLET_ADDRESS if active.address == WALLET_ADDRESS else WALLET_ADDRESS
    assert relay.storage.identity_records(loser) == []


# ---- prekey claims per target -------------------------------------------------------------------


def test_anonymous_claims_from_many_clients_cannot_drain_one_installation(backend: tuple[str, Storage, str | None]) -> None:
    relay = make_relay(backend, claim_target_rate=0.01, claim_target_burst=5)
    alice, carol = make_installation(), make_installation()
    for inst in (alice, carol):
        assert relay.append(WALLET_ADDRESS, authorize_record(inst)).status_code == 201
        up = make_upload(inst, otpk_ids=range(1, 21), pq_ids=range(1, 21))
        assert relay.client.put(f"/v1/prekeys/{inst.iid}", json={"upload": wire.b64e(up)}).status_code == 200
    codes = [
        relay.client.post(f"/v1/prekeys/{alice.iid}/claim", environ_base={"REMOTE_ADDR": f"10.0.{i // 250}.{i % 250 + 1}"}).status_code
        for i in range(8)
    ]
    assert codes == [200] * 5 + [429] * 3
    refused(relay, lambda: relay.client.post(f"/v1/prekeys/{alice.iid}/claim", environ_base={"REMOTE_ADDR": "10.9.9.9"}), 429, "target_rate_limited")
    assert relay.client.get(f"/v1/prekeys/{alice.iid}/count").get_json() == {"otpk": 15, "pq_otpk": 15}
    assert relay.client.post(f"/v1/prekeys/{carol.iid}/claim").status_code == 200  # other targets unaffected
    relay.clock.now += 100  # one token back
    assert relay.client.post(f"/v1/prekeys/{alice.iid}/claim").status_code == 200


# ---- per-inbox quota -------------------------------------------------------------------------------


def test_junk_flood_stops_at_the_inbox_quota(backend: tuple[str, Storage, str | None]) -> None:
    relay = make_relay(backend, topic_max_envelopes=4, topic_max_bytes=10_000)
    alice, bob = make_installation(), make_installation()
    for inst in (alice, bob):
        assert relay.append(WALLET_ADDRESS, authorize_record(inst)).status_code == 201
    assert [relay.publish(alice, b"j" * 100).status_code for _ in range(4)] == [202] * 4
    refused(relay, lambda: relay.publish(alice, b"j" * 100), 429, "inbox_full")
    assert relay.publish(bob, b"ok").status_code == 202  # another inbox is unaffected
    # bytes: 3 envelopes of 4,000 bytes do not fit in 10,000
    assert [relay.publish(bob, b"b" * 4000).status_code for _ in range(2)] == [202, 202]
    refused(relay, lambda: relay.publish(bob, b"b" * 4000), 429, "inbox_full")
    assert relay.publish(bob, b"b" * 1000).status_code == 202  # what still fits is accepted
    # expiry frees the quota
    relay.clock.now += relay.settings.retention_days * 86400 + 1
    assert RetentionThread(relay.storage, relay.settings).run_once() == 8
    assert relay.publish(alice, b"j" * 100).status_code == 202


# ---- Content-Type ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_cross_origin_form_post_with_json_text_is_refused(backend: tuple[str, Storage, str | None], content_type: str | None) -> None:
    """A web page can POST a JSON-looking body as a "simple" request (no CORS preflight)."""
    relay = make_relay(backend)
    alice = make_installation()
    assert relay.append(WALLET_ADDRESS, authorize_record(alice)).status_code == 201
    body = json.dumps({"topic": alice.topic, "payload": wire.b64e(b"from a web page")})
    refused(
        relay,
        lambda: relay.client.post("/v1/envelopes", data=body, content_type=content_type, headers={"Origin": "https://evil.example"}),
        415,
        "bad_content_type",
    )
    rec = json.dumps({"record": wire.b64e(authorize_record(make_installation()))})
    refused(relay, lambda: relay.client.post(f"/v1/identity/{WALLET_ADDRESS}", data=rec, content_type=content_type), 415, "bad_content_type")
    assert relay.client.post("/v1/envelopes", data=body, content_type="application/json; charset=utf-8").status_code == 202


# ---- upgrading a relay that was already attacked -----------------------------------------------------


def test_upgrade_rebuilds_bindings_and_inbox_usage(backend: tuple[str, Storage, str | None], tmp_path: Path) -> None:
    """A relay database from before bindings and quotas: the upgrade rebuilds the (installation,
    address) bindings from the logs (revocations per log), drops prekeys of inactive installations,
    counts stored envelopes against the quota, and from then on refuses unconsented bindings."""
    name, storage, url = backend
    alice, bob = make_installation(), make_installation()
    rows = [
        (WALLET_ADDRESS, authorize_record(alice)),
        (WALLET_ADDRESS, revoke_record(alice)),
        (OTHER_WALLET_ADDRESS, authorize_record(bob, OTHER_WALLET_KEY)),
    ]
    from bridge.identity import SignedStatement

    def old_rows(execute: Any, ph: str) -> None:
        seqs: dict[str, int] = {}
        for addr, rec in rows:
            seqs[addr] = seqs.get(addr, 0) + 1
            execute(f"INSERT INTO identity (address, seq, record_id, record) VALUES ({ph}, {ph}, {ph}, {ph})",
                    (addr, seqs[addr], SignedStatement.from_record(rec).record_id(), rec))
        # an old index that disagrees with the logs (Alice's revoked installation still listed)
        for iid, addr, inst in ((alice.iid, WALLET_ADDRESS, alice), (bob.iid, OTHER_WALLET_ADDRESS, bob)):
            execute(f"INSERT INTO installations (iid, address, signing_pub, identity_pub) VALUES ({ph}, {ph}, {ph}, {ph})",
                    (iid, addr, inst.signing_pub, inst.identity_pub))
        execute(f"INSERT INTO prekeys (iid, issued_at, spk, pq_lrpk) VALUES ({ph}, 1, {ph}, NULL)", (alice.iid, b"spk"))
        execute(f"INSERT INTO envelopes ({'cursor, ' if name == 'postgres' else ''}topic, payload, received_at) VALUES ({'7, ' if name == 'postgres' else ''}{ph}, {ph}, 1)", (bob.topic, b"12345"))

    storage.close()
    if name == "sqlite":
        path = storage._path  # type: ignore[attr-defined]
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("DROP TABLE iid_bindings")
        con.execute("DROP TABLE topic_usage")
        old_rows(con.execute, "?")
        con.execute("PRAGMA user_version=2")
        con.close()
        from bridge.relay.sqlite_store import SQLiteStorage

        upgraded: Storage = SQLiteStorage(path)
    else:
        import psycopg

        from bridge.relay.postgres_store import PostgresStorage

        assert url is not None
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("DROP TABLE iid_bindings")
            con.execute("DROP TABLE topic_usage")
            con.execute("DELETE FROM parley_schema WHERE version >= 2")  # back to schema 1
            old_rows(con.execute, "%s")
        upgraded = PostgresStorage(url)
    try:
        assert upgraded.installation(alice.iid) is None
        assert upgraded.prekey_counts(alice.iid) == (0, 0) and upgraded.claim_prekeys(alice.iid) is None
        kept = upgraded.installation(bob.iid)
        assert kept is not None and kept.address == OTHER_WALLET_ADDRESS
        from bridge.relay.storage import IdentityEntry, InboxFull, InstallationBound

        with pytest.raises(InstallationBound):
            upgraded.append_identity(WALLET_ADDRESS, "x", b"r", IdentityEntry("authorize", bob.iid, bob.signing_pub, bob.identity_pub), max_records=256)
        with pytest.raises(InboxFull):  # the envelope already stored counts against the quota
            upgraded.publish(bob.topic, b"123456", 2, max_count=10, max_bytes=10)
    finally:
        upgraded.close()
