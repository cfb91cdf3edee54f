"""Relay lists at the relay (protocol 1.1): PUT /v1/relay-list/<iid>, the lists inside identity answers,
their deletion on revocation, and RelayClient's side. Parametrized over SQLite and PostgreSQL.

Every refused request is checked to change nothing the storage holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from bridge.protocol import wire
from bridge.protocol.ids import address_bucket
from bridge.protocol.relaylist import RelayList
from bridge.relay.client import LogAnswer, RelayClient, RelayError, RelayUnavailable
from bridge.relay.server import create_app
from bridge.relay.storage import InstallationNotActive, StaleRelayList, Storage
from tests.exact import raises_exactly
from tests.relay_fixtures import (
    OTHER_WALLET_ADDRESS,
    OTHER_WALLET_KEY,
    STORAGE_BACKENDS,
    WALLET_ADDRESS,
    Installation,
    authorize_record,
    make_installation,
    revoke_record,
    serve_relay,
    storage_backend,
    unlimited_settings,
)

RELAYS = ("https://relay.example.org", "https://backup.example.net/parley")


def relay_list(inst: Installation, version: int = 1, *, address: str = WALLET_ADDRESS, relays: tuple[str, ...] = RELAYS,
               issued_at: int = 1_800_000_000, signer: bytes | None = None) -> bytes:
    return RelayList(address, inst.iid, version, issued_at, relays).sign(signer or inst.signing_priv)


class Relay:
    """A relay app (Flask test client) over one storage backend."""

    def __init__(self, storage: Storage, **overrides: Any) -> None:
        self.storage = storage
        self.client: FlaskClient = create_app(storage, settings=unlimited_settings(**overrides)).test_client()

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | str | None = None,
             content_type: str = "application/json") -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        return self.client.open(path, method=method, data=data, content_type=content_type)

    def publish(self, address: str, record: bytes) -> None:
        r = self.call("POST", f"/v1/identity/{address}", {"record": wire.b64e(record)})
        assert r.status_code in (200, 201), r.get_json()

    def authorize(self, inst: Installation, wallet_key: bytes | None = None) -> None:
        if wallet_key is None:
            self.publish(WALLET_ADDRESS, authorize_record(inst))
        else:
            self.publish(OTHER_WALLET_ADDRESS, authorize_record(inst, wallet_key))

    def put(self, iid: str, record: bytes) -> Any:
        return self.call("PUT", f"/v1/relay-list/{iid}", {"record": wire.b64e(record)})

    def lists(self, address: str = WALLET_ADDRESS) -> list[bytes]:
        body = self.call("GET", f"/v1/identity/{address}").get_json()
        return [wire.b64d(x) for x in body["relay_lists"]]

    def snapshot(self) -> Any:
        """What a refused request could change: every table's row count and every stored list."""
        return self.storage.counts(), self.storage.relay_lists([WALLET_ADDRESS, OTHER_WALLET_ADDRESS])


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with storage_backend(request.param, tmp_path) as st:
        yield st


@pytest.fixture
def relay(storage: Storage) -> Relay:
    return Relay(storage)


def assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body


def refused(relay: Relay, status: int, code: str, method: str, path: str, body: Any = None, **kw: Any) -> None:
    before = relay.snapshot()
    assert_error(relay.call(method, path, body, **kw), status, code)
    assert relay.snapshot() == before


# ---- success ---------------------------------------------------------------------------------


def test_health_says_minor_1(relay: Relay) -> None:
    assert relay.call("GET", "/v1/health").get_json() == {"ok": True, "version": 1, "minor": 4}


def test_put_then_served_in_identity_and_bucket_answers(relay: Relay) -> None:
    a, b = make_installation(), make_installation()
    relay.authorize(a)
    relay.authorize(b)
    ra, rb = relay_list(a, 5), relay_list(b, 1, relays=RELAYS[:1])
    first = relay.put(a.iid, ra)
    assert (first.status_code, first.get_json()) == (201, {"version": 5})
    again = relay.put(a.iid, ra)  # the very bytes again: nothing changes
    assert (again.status_code, again.get_json()) == (200, {"version": 5})
    assert relay.put(b.iid, rb).status_code == 201
    want = [r for _, r in sorted([(a.iid, ra), (b.iid, rb)])]  # sorted by installation id
    got = relay.call("GET", f"/v1/identity/{WALLET_ADDRESS.lower()}").get_json()
    assert list(got) == ["address", "records", "relay_lists"]
    assert [wire.b64d(x) for x in got["relay_lists"]] == want
    assert relay.lists(OTHER_WALLET_ADDRESS) == []
    prefix = address_bucket(WALLET_ADDRESS)[:16]
    entry = relay.call("GET", f"/v1/identity-bucket/{prefix}").get_json()["logs"][0]
    assert list(entry) == ["address", "records", "relay_lists"]
    assert entry["address"] == WALLET_ADDRESS and [wire.b64d(x) for x in entry["relay_lists"]] == want
    assert relay.storage.counts()["relay_lists"] == 2


def test_newest_wins_and_stale_is_refused(relay: Relay) -> None:
    inst = make_installation()
    relay.authorize(inst)
    assert relay.put(inst.iid, relay_list(inst, 2)).status_code == 201
    newer = relay_list(inst, 3, relays=RELAYS[1:])
    r = relay.put(inst.iid, newer)
    assert (r.status_code, r.get_json()) == (201, {"version": 3})
    assert relay.lists() == [newer]
    refused(relay, 409, "stale_relay_list", "PUT", f"/v1/relay-list/{inst.iid}", {"record": wire.b64e(relay_list(inst, 2))})
    other_same_version = relay_list(inst, 3, relays=RELAYS[:1])
    refused(relay, 409, "stale_relay_list", "PUT", f"/v1/relay-list/{inst.iid}", {"record": wire.b64e(other_same_version)})
    assert relay.lists() == [newer]


def test_revocation_deletes_the_list(relay: Relay) -> None:
    inst, other = make_installation(), make_installation()
    relay.authorize(inst)
    relay.authorize(other)
    assert relay.put(inst.iid, relay_list(inst)).status_code == 201
    assert relay.put(other.iid, relay_list(other)).status_code == 201
    relay.publish(WALLET_ADDRESS, revoke_record(inst))
    assert relay.lists() == [relay_list(other)]  # the other installation's list stays
    assert relay.storage.counts()["relay_lists"] == 1
    refused(relay, 403, "unknown_installation", "PUT", f"/v1/relay-list/{inst.iid}", {"record": wire.b64e(relay_list(inst, 9))})


def test_wallet_switch_revocation_deletes_only_the_list_of_the_binding_it_ends(storage: Storage) -> None:
    """An installation bound to two addresses: revoking it in one log deletes its list when the list names
    that address, though the installation stays active through the other; a list naming the other (still
    active) binding is then accepted and served for that address alone."""
    from bridge.identity import SignedStatement, verify
    from bridge.relay.storage import IdentityEntry

    relay = Relay(storage)
    inst = make_installation()
    relay.authorize(inst)  # WALLET_ADDRESS
    # the second binding needs the installation's consent (its bearer token): given straight to storage
    rec = authorize_record(inst, OTHER_WALLET_KEY)
    signed = SignedStatement.from_record(rec)
    assert verify(signed).address == OTHER_WALLET_ADDRESS
    storage.append_identity(OTHER_WALLET_ADDRESS, signed.record_id(), rec,
                            IdentityEntry("authorize", inst.iid, inst.signing_pub, inst.identity_pub), max_records=256, consent=True)
    on_first = relay_list(inst, 2)
    assert relay.put(inst.iid, on_first).status_code == 201
    assert relay.lists(WALLET_ADDRESS) == [on_first] and relay.lists(OTHER_WALLET_ADDRESS) == []
    relay.publish(WALLET_ADDRESS, revoke_record(inst))  # ends the WALLET_ADDRESS binding only
    assert storage.installation(inst.iid) is not None  # still active through OTHER_WALLET_ADDRESS
    assert relay.lists(WALLET_ADDRESS) == [] and storage.counts()["relay_lists"] == 0
    assert_error(relay.put(inst.iid, relay_list(inst, 3)), 403, "unknown_installation")  # no longer bound to WALLET_ADDRESS
    on_other = relay_list(inst, 3, address=OTHER_WALLET_ADDRESS)
    assert relay.put(inst.iid, on_other).status_code == 201
    assert relay.lists(OTHER_WALLET_ADDRESS) == [on_other] and relay.lists(WALLET_ADDRESS) == []


def test_relay_lists_count_toward_the_bucket_cap(storage: Storage) -> None:
    inst = make_installation()
    prefix = address_bucket(WALLET_ADDRESS)[:16]
    tight = Relay(storage, bucket_max_records=1)
    tight.authorize(inst)
    assert tight.call("GET", f"/v1/identity-bucket/{prefix}").status_code == 200  # 1 record
    assert tight.put(inst.iid, relay_list(inst)).status_code == 201
    assert_error(tight.call("GET", f"/v1/identity-bucket/{prefix}"), 413, "bucket_too_large")  # 1 record + 1 list
    roomy = Relay(storage, bucket_max_records=2)
    assert roomy.call("GET", f"/v1/identity-bucket/{prefix}").status_code == 200


# ---- every refusal, and that it changes nothing ------------------------------------------------


def test_every_error_code(storage: Storage) -> None:
    relay = Relay(storage)
    inst, stranger, elsewhere = make_installation(), make_installation(), make_installation()
    relay.authorize(inst)
    relay.authorize(elsewhere, OTHER_WALLET_KEY)
    assert relay.put(inst.iid, relay_list(inst, 5)).status_code == 201
    path = f"/v1/relay-list/{inst.iid}"
    good = wire.b64e(relay_list(inst, 6))
    refused(relay, 400, "bad_json", "PUT", path, raw="{")
    refused(relay, 415, "bad_content_type", "PUT", path, raw=json.dumps({"record": good}), content_type="text/plain")
    refused(relay, 400, "bad_request", "PUT", path, raw="[]")
    refused(relay, 400, "bad_request", "PUT", path, {})
    refused(relay, 400, "bad_request", "PUT", path, {"record": good, "extra": 1})
    refused(relay, 400, "bad_request", "PUT", path, {"record": 5})
    refused(relay, 400, "bad_request", "PUT", f"/v1/relay-list/{inst.iid.upper()}", {"record": good})
    refused(relay, 400, "bad_base64", "PUT", path, {"record": good.rstrip("=") + "-_"})
    refused(relay, 413, "too_large", "PUT", path, {"record": wire.b64e(bytes(4097))})
    refused(relay, 400, "bad_cbor", "PUT", path, {"record": wire.b64e(b"\x01")})
    refused(relay, 400, "bad_cbor", "PUT", path, {"record": wire.b64e(relay_list(inst, 6) + b"\x00")})
    refused(relay, 400, "bad_request", "PUT", f"/v1/relay-list/{stranger.iid}", {"record": good})  # the record names inst
    refused(relay, 403, "unknown_installation", "PUT", f"/v1/relay-list/{stranger.iid}",
            {"record": wire.b64e(relay_list(stranger))})  # no wallet authorized it
    refused(relay, 403, "unknown_installation", "PUT", f"/v1/relay-list/{elsewhere.iid}",
            {"record": wire.b64e(relay_list(elsewhere))})  # authorized, but by another address than the list names
    refused(relay, 403, "unknown_installation", "PUT", f"/v1/relay-list/{elsewhere.iid}",
            {"record": wire.b64e(relay_list(elsewhere, signer=stranger.signing_priv))})  # the binding is checked before the signature
    refused(relay, 400, "bad_signature", "PUT", path, {"record": wire.b64e(relay_list(inst, 6, signer=stranger.signing_priv))})
    refused(relay, 409, "stale_relay_list", "PUT", path, {"record": wire.b64e(relay_list(inst, 4))})
    limited = Relay(storage, identity_rate=1e-9, identity_burst=1)
    assert limited.put(inst.iid, relay_list(inst, 5)).status_code == 200  # the burst of 1
    refused(limited, 429, "rate_limited", "PUT", path, {"record": good})
    assert relay.lists() == [relay_list(inst, 5)]


def test_a_record_of_4096_bytes_is_not_too_large(relay: Relay) -> None:
    """The size bound is on the decoded record: 4096 bytes pass the size check (then fail to parse)."""
    assert_error(relay.call("PUT", f"/v1/relay-list/{'0' * 32}", {"record": wire.b64e(bytes(4096))}), 400, "bad_cbor")


# ---- storage contract --------------------------------------------------------------------------


def test_storage_put_relay_list(storage: Storage) -> None:
    from bridge.relay.storage import IdentityEntry

    iid = "a" * 32
    with raises_exactly(InstallationNotActive):
        storage.put_relay_list(iid, "0xA", 1, b"r1")
    storage.append_identity("0xA", "id1", b"rec", IdentityEntry("authorize", iid, b"s" * 32, b"x" * 32), max_records=10)
    assert storage.installation_for(iid, "0xA") is not None and storage.installation_for(iid, "0xB") is None
    assert storage.put_relay_list(iid, "0xA", 1, b"r1") is True
    assert storage.put_relay_list(iid, "0xA", 1, b"r1") is False
    with raises_exactly(StaleRelayList):
        storage.put_relay_list(iid, "0xA", 1, b"r1-other")
    with raises_exactly(StaleRelayList):
        storage.put_relay_list(iid, "0xA", 0, b"r0")
    assert storage.put_relay_list(iid, "0xA", 7, b"r7") is True
    assert storage.relay_lists(["0xA", "0xB"]) == {"0xA": [b"r7"], "0xB": []}
    storage.append_identity("0xA", "id2", b"rev", IdentityEntry("revoke", iid), max_records=10)
    assert storage.relay_lists(["0xA"]) == {"0xA": []} and storage.counts()["relay_lists"] == 0
    with raises_exactly(InstallationNotActive):
        storage.put_relay_list(iid, "0xA", 8, b"r8")


# ---- RelayClient ---------------------------------------------------------------------------------


def test_client_publishes_and_reads_relay_lists(tmp_path: Path) -> None:
    inst = make_installation()
    record = authorize_record(inst)
    with serve_relay(tmp_path / "relay.db") as url, RelayClient(url) as client:
        client.publish_identity(WALLET_ADDRESS, record)
        assert client.health()["minor"] == 4
        rl = relay_list(inst, 6)
        assert client.publish_relay_list(inst.iid, rl) == 6
        assert client.publish_relay_list(inst.iid, rl) == 6  # 200: already there
        with pytest.raises(RelayError) as info:
            client.publish_relay_list(inst.iid, relay_list(inst, 3))
        assert (info.value.status, info.value.code) == (409, "stale_relay_list")
        log = client.identity_log(WALLET_ADDRESS)
        assert log == LogAnswer([record], [rl])
        prefix = address_bucket(WALLET_ADDRESS)[:2]
        logs = client.identity_logs(prefix)
        assert logs[WALLET_ADDRESS] == log
        assert client.identity_bucket(prefix) == {a: ans.records for a, ans in logs.items()}
        assert client.identity(WALLET_ADDRESS) == [record]


_ENTRY = {"address": WALLET_ADDRESS, "records": [wire.b64e(b"rec")]}


@pytest.mark.parametrize(
    "answer,want",
    [
        pytest.param({**_ENTRY}, LogAnswer([b"rec"], []), id="1.0 relay: no relay_lists"),
        pytest.param({**_ENTRY, "relay_lists": [wire.b64e(b"rl")]}, LogAnswer([b"rec"], [b"rl"]), id="1.1 relay"),
        pytest.param({**_ENTRY, "relay_lists": None}, None, id="relay_lists null"),
        pytest.param({**_ENTRY, "relay_lists": wire.b64e(b"rl")}, None, id="relay_lists a string"),
        pytest.param({**_ENTRY, "relay_lists": ["not base64!"]}, None, id="relay_lists entry not base64"),
        pytest.param({**_ENTRY, "relay_lists": [5]}, None, id="relay_lists entry a number"),
        pytest.param({"address": WALLET_ADDRESS, "relay_lists": []}, None, id="records missing"),
    ],
)
def test_client_reads_answers_of_10_and_11_relays(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], want: LogAnswer | None) -> None:
    client = RelayClient("http://127.0.0.1:9")
    prefix = address_bucket(WALLET_ADDRESS)[:2]
    monkeypatch.setattr(client, "_call", lambda method, path, **kw: (
        {"prefix": prefix, "logs": [answer]} if "/identity-bucket/" in path else answer))
    if want is None:
        with raises_exactly(RelayUnavailable):
            client.identity_logs(prefix)
        with raises_exactly(RelayUnavailable):
            client.identity_log(WALLET_ADDRESS)
        with raises_exactly(RelayUnavailable):
            client.identity_bucket(prefix)
        return
    assert client.identity_logs(prefix) == {WALLET_ADDRESS: want}
    assert client.identity_log(WALLET_ADDRESS) == want
    assert client.identity_bucket(prefix) == {WALLET_ADDRESS: want.records}
    assert client.identity(WALLET_ADDRESS) == want.records
