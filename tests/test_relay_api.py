"""Relay HTTP API through the Flask test client (docs/PROTOCOL.md §7).

Every rejection is checked to leave the database byte-for-byte unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.crypto import primitives as P
from bridge.identity import SignedStatement
from bridge.protocol import wire
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, Bundle, PrekeyUpload
from bridge.protocol.wire import WireError
from bridge.relay.auth import auth_message
from bridge.relay.server import RelaySettings, RetentionThread, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from tests.exact import raises_exactly
from tests.relay_fixtures import (
    OTHER_WALLET_ADDRESS,
    OTHER_WALLET_KEY,
    WALLET_ADDRESS,
    Installation,
    authorize_record,
    make_installation,
    make_upload,
    revoke_record,
)

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Relay:
    """A relay app over a real SQLite file, with helpers."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.clock = FakeClock()
        self.path = tmp_path / "relay.db"
        self.storage = SQLiteStorage(str(self.path))
        self.settings = RelaySettings(clock=self.clock, **overrides)
        self.app: Flask = create_app(self.storage, settings=self.settings)
        self.client: FlaskClient = self.app.test_client()

    def dump(self) -> str:
        con = sqlite3.connect(self.path)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()

    def post(self, path: str, body: Any = None, *, raw: bytes | str | None = None, method: str = "POST", **kw: Any) -> Any:
        data = raw if raw is not None else json.dumps(body)
        return self.client.open(path, method=method, data=data, content_type="application/json", **kw)

    def authorize(self, inst: Installation, wallet_key: bytes | None = None) -> None:
        rec = authorize_record(inst) if wallet_key is None else authorize_record(inst, wallet_key)
        addr = WALLET_ADDRESS if wallet_key is None else OTHER_WALLET_ADDRESS
        r = self.post(f"/v1/identity/{addr}", {"record": wire.b64e(rec)})
        assert r.status_code == 201, r.get_json()

    def token(self, inst: Installation) -> str:
        ch = self.post("/v1/auth/challenge", {"installation_id": inst.iid}).get_json()
        challenge = base64.b64decode(ch["challenge"])
        sig = P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, challenge))
        r = self.post(
            "/v1/auth/token",
            {"installation_id": inst.iid, "challenge": ch["challenge"], "signature": wire.b64e(sig)},
        )
        assert r.status_code == 200, r.get_json()
        return str(r.get_json()["token"])


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = Relay(tmp_path)
    yield r
    r.storage.close()


def assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.content_type.startswith("application/json")
    body = resp.get_json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def rejected(relay: Relay, resp_fn: Any, status: int, code: str) -> None:
    """Run a request that must be rejected and check the database did not change."""
    before = relay.dump()
    assert_error(resp_fn(), status, code)
    assert relay.dump() == before


# ---- basics -------------------------------------------------------------------------------


def test_health(relay: Relay) -> None:
    r = relay.client.get("/v1/health")
    assert r.status_code == 200 and r.get_json() == {"ok": True, "version": 1, "minor": 4}


def test_unknown_route_and_method_are_json(relay: Relay) -> None:
    assert_error(relay.client.get("/nope"), 404, "not_found")
    assert_error(relay.client.get("/v1/health/extra"), 404, "not_found")
    assert_error(relay.client.delete("/v1/health"), 405, "method_not_allowed")
    assert_error(relay.client.get("/v1/envelopes"), 405, "method_not_allowed")


# ---- identity -----------------------------------------------------------------------------


def test_identity_publish_get_and_dedup(relay: Relay) -> None:
    a, b = make_installation(), make_installation()
    rec_a, rec_b = authorize_record(a), authorize_record(b)
    r = relay.post(f"/v1/identity/{WALLET_ADDRESS.lower()}", {"record": wire.b64e(rec_a)})
    assert r.status_code == 201 and r.get_json() == {"seq": 1}
    r = relay.post(f"/v1/identity/{WALLET_ADDRESS}", {"record": wire.b64e(rec_b)})
    assert r.status_code == 201 and r.get_json() == {"seq": 2}
    # same record again, and the same statement with a malleated (high-s) signature: not appended
    signed = SignedStatement.from_record(rec_a)
    s = int.from_bytes(signed.signature[32:64], "big")
    mal = signed.signature[:32] + (_N - s).to_bytes(32, "big") + bytes([55 - signed.signature[64]])
    for rec in (rec_a, SignedStatement(signed.text, mal).to_record()):
        before = relay.dump()
        r = relay.post(f"/v1/identity/{WALLET_ADDRESS}", {"record": wire.b64e(rec)})
        assert r.status_code == 200 and r.get_json() == {"seq": 1}
        assert relay.dump() == before
    g = relay.client.get(f"/v1/identity/{WALLET_ADDRESS.upper().replace('0X', '0x')}").get_json()
    assert g == {"address": WALLET_ADDRESS, "records": [wire.b64e(rec_a), wire.b64e(rec_b)], "relay_lists": []}
    assert relay.client.get(f"/v1/identity/{OTHER_WALLET_ADDRESS}").get_json() == {
        "address": OTHER_WALLET_ADDRESS,
        "records": [],
        "relay_lists": [],
    }


@pytest.mark.parametrize(
    "address",
    ["0x123", "0x" + "g" * 40, "vitalik.eth", "0x" + "a" * 41, "0x" + "٠" * 40, WALLET_ADDRESS + " ",
     WALLET_ADDRESS[:-1] + ("a" if WALLET_ADDRESS[-1] != "a" else "b"), "..%2F..%2Fx"],
)
def test_identity_bad_address(relay: Relay, address: str) -> None:
    rec = authorize_record(make_installation())
    rejected(relay, lambda: relay.post(f"/v1/identity/{address}", {"record": wire.b64e(rec)}), 400, "bad_address")
    assert_error(relay.client.get(f"/v1/identity/{address}"), 400, "bad_address")


def test_identity_address_with_newline_is_not_routed(relay: Relay) -> None:
    rec = authorize_record(make_installation())
    url = f"/v1/identity/{WALLET_ADDRESS}%0A"
    rejected(relay, lambda: relay.post(url, {"record": wire.b64e(rec)}), 404, "not_found")


def test_identity_verifier_failure_is_a_400_not_a_500(tmp_path: Path) -> None:
    """A verifier that fails unexpectedly (an RPC client bug) rejects the record as invalid_statement;
    it never becomes a 500 with a traceback, and nothing is appended."""

    class FailingVerifier:
        volatile = False

        def check(self, statement: Any, text: str, signature: bytes) -> None:
            raise RuntimeError("the chain client broke")

    relay = Relay(tmp_path, verifier=FailingVerifier())
    try:
        rec = authorize_record(make_installation())
        rejected(relay, lambda: relay.post(f"/v1/identity/{WALLET_ADDRESS}", {"record": wire.b64e(rec)}), 400, "invalid_statement")
    finally:
        relay.storage.close()


def test_identity_hostile_records(relay: Relay) -> None:
    inst = make_installation()
    good = authorize_record(inst)
    url = f"/v1/identity/{WALLET_ADDRESS}"
    other = authorize_record(inst, OTHER_WALLET_KEY)
    signed = SignedStatement.from_record(good)
    forged = SignedStatement(signed.text, SignedStatement.from_record(authorize_record(make_installation())).signature)
    noncanonical = b"\x84\x18\x01" + good[2:]  # the version 1 written in two bytes
    assert wire.decode(good)[0] == 1 and good[1] == 0x01
    cases: list[tuple[Any, int, str]] = [
        ({"record": wire.b64e(other)}, 400, "invalid_statement"),  # statement for another address
        ({"record": wire.b64e(forged.to_record())}, 400, "bad_signature"),
        ({"record": wire.b64e(noncanonical)}, 400, "invalid_statement"),
        ({"record": wire.b64e(b"\x00garbage")}, 400, "invalid_statement"),
        ({"record": "!!!notbase64"}, 400, "bad_base64"),
        ({"record": wire.b64e(good)[:-1]}, 400, "bad_base64"),
        ({"record": wire.b64e(good).replace("+", "-").replace("/", "_") + "\n"}, 400, "bad_base64"),
        ({"record": "\ud800"}, 400, "bad_base64"),
        ({"record": 5}, 400, "bad_request"),
        ({"record": None}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"record": wire.b64e(good), "extra": 1}, 400, "bad_request"),
        ([wire.b64e(good)], 400, "bad_request"),
        ({"record": "A" * 40_000}, 413, "too_large"),
    ]
    for body, status, code in cases:
        rejected(relay, lambda: relay.post(url, body), status, code)
    for raw in ("{", "", "nul", b'{"record": "\xed\xa0\x80"}', "[" * 100_000, b"\xff\xfe", "NaN"):
        rejected(relay, lambda: relay.post(url, raw=raw), 400, "bad_json")


# ---- prekeys ------------------------------------------------------------------------------


def test_prekeys_upload_count_claim(relay: Relay) -> None:
    inst = make_installation()
    up = make_upload(inst, otpk_ids=range(3), pq_ids=range(2), issued_at=10)
    rejected(relay, lambda: relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(up)}, method="PUT"), 403, "unknown_installation")
    relay.authorize(inst)
    r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(up)}, method="PUT")
    assert r.status_code == 200 and r.get_json() == {"otpk": 3, "pq_otpk": 2}
    assert relay.client.get(f"/v1/prekeys/{inst.iid}/count").get_json() == {"otpk": 3, "pq_otpk": 2}
    seen_otpk: set[bytes] = set()
    kinds = []
    for i in range(4):
        r = relay.client.post(f"/v1/prekeys/{inst.iid}/claim")
        assert r.status_code == 200
        bundle = Bundle.decode(base64.b64decode(r.get_json()["bundle"]))
        bundle.verify(inst.signing_pub)
        assert bundle.installation_id == inst.iid
        if bundle.otpk is not None:
            assert bundle.otpk.pub not in seen_otpk
            seen_otpk.add(bundle.otpk.pub)
        else:
            assert i == 3
        kinds.append(bundle.pqpk.kind)
    assert len(seen_otpk) == 3
    assert kinds == [PQ_OTPK, PQ_OTPK, PQ_LRPK, PQ_LRPK]
    assert relay.client.get(f"/v1/prekeys/{inst.iid}/count").get_json() == {"otpk": 0, "pq_otpk": 0}
    # a replayed upload cannot bring the handed-out keys back
    r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(up)}, method="PUT")
    assert r.status_code == 200 and r.get_json() == {"otpk": 0, "pq_otpk": 0}
    # an older upload cannot roll the signed prekey back
    older = make_upload(inst, otpk_ids=range(100, 102), issued_at=9)
    rejected(relay, lambda: relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(older)}, method="PUT"), 409, "stale_upload")
    # a newer upload adds keys again
    r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(5, 7), issued_at=11))}, method="PUT")
    assert r.get_json() == {"otpk": 2, "pq_otpk": 0}


@pytest.mark.parametrize("iid", ["0123456789ABCDEF" * 2, "0123456789abcdef" * 2 + "\n", "0123456789abcdef", 7, None],
                         ids=["uppercase", "newline", "16-digits", "int", "null"])
def test_bundle_naming_no_valid_installation_is_refused(relay: Relay, iid: object) -> None:
    """What the client makes of a claim answer: a bundle whose installation id is not 32 lowercase hex
    digits (a broken or hostile relay) is a WireError, which the engine skips like a missing bundle."""
    inst = make_installation()
    relay.authorize(inst)
    relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(1), issued_at=1))}, method="PUT")
    raw = base64.b64decode(relay.client.post(f"/v1/prekeys/{inst.iid}/claim").get_json()["bundle"])
    assert Bundle.decode(raw).installation_id == inst.iid
    fields = wire.decode(raw)
    fields[2] = iid
    with raises_exactly(WireError):
        Bundle.decode(wire.encode(fields))


def test_claim_of_corrupt_stored_prekeys_is_a_storage_error(relay: Relay) -> None:
    """A signed prekey the database returns damaged is the relay's fault: 503 storage_error (the client
    retries later or elsewhere), never a 500 or a bundle built from it."""
    inst = make_installation()
    relay.authorize(inst)
    r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(1), issued_at=1))}, method="PUT")
    assert r.status_code == 200
    con = sqlite3.connect(relay.path)
    try:
        with con:
            assert con.execute("UPDATE prekeys SET spk = ? WHERE iid = ?", (b"\xa0", inst.iid)).rowcount == 1
    finally:
        con.close()
    assert_error(relay.client.post(f"/v1/prekeys/{inst.iid}/claim"), 503, "storage_error")


def test_prekeys_cap(tmp_path: Path) -> None:
    relay = Relay(tmp_path, max_one_time_prekeys=5)
    try:
        inst = make_installation()
        relay.authorize(inst)
        r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(8), pq_ids=range(3), issued_at=1))}, method="PUT")
        assert r.get_json() == {"otpk": 5, "pq_otpk": 3}
        r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(2), pq_ids=range(2, 9), issued_at=2))}, method="PUT")
        assert r.get_json() == {"otpk": 5, "pq_otpk": 5}
    finally:
        relay.storage.close()


def test_prekeys_no_prekeys_and_hostile(relay: Relay) -> None:
    inst, other = make_installation(), make_installation()
    relay.authorize(inst)
    relay.authorize(other)
    rejected(relay, lambda: relay.client.post(f"/v1/prekeys/{inst.iid}/claim"), 404, "no_prekeys")
    url = f"/v1/prekeys/{inst.iid}"
    good = make_upload(inst, otpk_ids=range(2), issued_at=5)
    outer = wire.decode(good)
    bad_sig_outer = wire.encode([1, outer[1], bytes(64)])
    # a prekey signature must be 64 bytes: a 65-byte one is malformed, whatever else the upload holds
    upload = PrekeyUpload.parse_signed(good)[0]
    long_spk_sig = dataclasses.replace(upload, spk=dataclasses.replace(upload.spk, sig=upload.spk.sig + b"\0"))
    cases: list[tuple[str, Any, int, str]] = [
        (url, {"upload": wire.b64e(long_spk_sig.sign(inst.signing_priv))}, 400, "bad_cbor"),
        (url, {"upload": wire.b64e(make_upload(inst, signer=other.signing_priv))}, 400, "bad_signature"),
        (url, {"upload": wire.b64e(bad_sig_outer)}, 400, "bad_signature"),
        (f"/v1/prekeys/{other.iid}", {"upload": wire.b64e(good)}, 400, "bad_request"),  # upload names inst
        (url, {"upload": wire.b64e(b"\x83\x18\x01" + good[2:])}, 400, "bad_cbor"),
        (url, {"upload": wire.b64e(wire.encode([1, b"x", bytes(64)]))}, 400, "bad_cbor"),
        (url, {"upload": "%%%"}, 400, "bad_base64"),
        (url, {"upload": 1}, 400, "bad_request"),
        (url, {"upload": "A" * 800_000}, 413, "too_large"),
        (f"/v1/prekeys/{inst.iid.upper()}", {"upload": wire.b64e(good)}, 400, "bad_request"),
        ("/v1/prekeys/..%2F..%2Fetc", {"upload": wire.b64e(good)}, 404, "not_found"),
        ("/v1/prekeys/" + "٠" * 32, {"upload": wire.b64e(good)}, 400, "bad_request"),
    ]
    for path, body, status, code in cases:
        rejected(relay, lambda: relay.post(path, body, method="PUT"), status, code)
    assert_error(relay.client.get(f"/v1/prekeys/{inst.iid}x/count"), 400, "bad_request")
    assert_error(relay.client.post("/v1/prekeys/zz/claim"), 400, "bad_request")


# Bodies a route documented without one refuses (PROTOCOL.md §7 General: "exactly the documented
# fields", here none), each with its status and code. An empty body, or {} sent as JSON, is accepted.
_NOT_NO_BODY: list[tuple[dict[str, Any], int, str]] = [
    ({"data": json.dumps({"a": 1}), "content_type": "application/json"}, 400, "bad_request"),
    ({"data": json.dumps({"installation_id": "0" * 32}), "content_type": "application/json"}, 400, "bad_request"),
    ({"data": "[]", "content_type": "application/json"}, 400, "bad_request"),
    ({"data": "null", "content_type": "application/json"}, 400, "bad_request"),
    ({"data": "{", "content_type": "application/json"}, 400, "bad_json"),
    ({"data": " ", "content_type": "application/json"}, 400, "bad_json"),
    ({"data": "{}", "content_type": "text/plain"}, 415, "bad_content_type"),
    ({"data": "a=1", "content_type": "application/x-www-form-urlencoded"}, 415, "bad_content_type"),
    ({"data": "{}"}, 415, "bad_content_type"),  # no Content-Type at all
]


def test_claim_takes_no_body_and_a_refused_one_consumes_nothing(tmp_path: Path) -> None:
    """POST /v1/prekeys/<iid>/claim is documented without a body: an empty body (what RelayClient
    sends) or {} as JSON is a claim; anything else is refused before a key or the target's claim
    budget is spent (a burst of 1 here: one spent token would make the genuine claim a 429)."""
    relay = Relay(tmp_path, claim_target_burst=1, claim_target_rate=1e-9)
    try:
        inst = make_installation()
        relay.authorize(inst)
        r = relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(3), issued_at=1))}, method="PUT")
        assert r.status_code == 200
        claim = f"/v1/prekeys/{inst.iid}/claim"
        for kw, status, code in _NOT_NO_BODY:
            rejected(relay, lambda: relay.client.post(claim, **kw), status, code)
        assert relay.client.get(f"/v1/prekeys/{inst.iid}/count").get_json() == {"otpk": 3, "pq_otpk": 0}
        r = relay.client.post(claim, data="{}", content_type="application/json")
        assert r.status_code == 200, r.get_json()
        assert Bundle.decode(base64.b64decode(r.get_json()["bundle"])).otpk is not None
    finally:
        relay.storage.close()
    (tmp_path / "empty").mkdir()
    relay = Relay(tmp_path / "empty")
    try:
        inst = make_installation()
        relay.authorize(inst)
        relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(3), issued_at=1))}, method="PUT")
        for kw in ({}, {"data": b""}, {"data": b"", "content_type": "text/plain"}, {"data": "{}", "content_type": "application/json; charset=utf-8"}):
            r = relay.client.post(f"/v1/prekeys/{inst.iid}/claim", **kw)
            assert r.status_code == 200, (kw, r.get_json())
        assert relay.client.get(f"/v1/prekeys/{inst.iid}/count").get_json() == {"otpk": 0, "pq_otpk": 0}
    finally:
        relay.storage.close()


def test_a_repeated_field_is_refused(relay: Relay) -> None:
    """A body names each documented field once: {"record": a, "record": b} is not "exactly the
    documented fields" (a parser that keeps the first and one that keeps the last would disagree)."""
    inst = make_installation()
    rec = json.dumps(wire.b64e(authorize_record(inst)))
    rejected(relay, lambda: relay.post(f"/v1/identity/{WALLET_ADDRESS}", raw=f'{{"record": {rec}, "record": {rec}}}'), 400, "bad_request")
    iid = json.dumps(inst.iid)
    rejected(relay, lambda: relay.post("/v1/auth/challenge", raw=f'{{"installation_id": {iid}, "installation_id": {iid}}}'), 400, "bad_request")
    rejected(relay, lambda: relay.post(f"/v1/prekeys/{inst.iid}/claim", raw='{"a": 1, "a": 1}'), 400, "bad_request")
    assert relay.post(f"/v1/identity/{WALLET_ADDRESS}", raw=f'{{"record": {rec}}}').status_code == 201


def test_fetch_takes_after_and_limit_once_each_and_nothing_else(relay: Relay) -> None:
    """GET /v1/envelopes/<topic> documents two query parameters: a repeated one (whose first or last
    value would win?) or an unknown one is a bad query parameter (400 bad_request)."""
    inst = make_installation()
    relay.authorize(inst)
    auth = {"Authorization": f"Bearer {relay.token(inst)}"}
    for q in ("after=1&after=2", "after=1&after=zz", "limit=5&limit=0", "x=1", "after=0&limit=1&cursor=3", "After=1"):
        assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}?{q}", headers=auth), 400, "bad_request")
    r = relay.client.get(f"/v1/envelopes/{inst.topic}?after=0&limit=1", headers=auth)
    assert r.status_code == 200 and r.get_json() == {"envelopes": [], "next": 0}


def test_get_routes_take_no_body(relay: Relay) -> None:
    """The GET routes are documented without a body too: a body other than {} (as JSON) is refused."""
    inst = make_installation()
    relay.authorize(inst)
    token = relay.token(inst)
    auth = {"Authorization": f"Bearer {token}"}
    from bridge.protocol.ids import address_bucket

    routes = [
        ("/v1/health", {}),
        (f"/v1/identity/{WALLET_ADDRESS}", {}),
        (f"/v1/identity-bucket/{address_bucket(WALLET_ADDRESS)[:4]}", {}),
        (f"/v1/prekeys/{inst.iid}/count", {}),
        (f"/v1/envelopes/{inst.topic}", {"headers": auth}),
    ]
    for path, extra in routes:
        for kw, status, code in _NOT_NO_BODY:
            rejected(relay, lambda: relay.client.get(path, **kw, **extra), status, code)
        for kw in ({}, {"data": "{}", "content_type": "application/json"}):
            r = relay.client.get(path, **kw, **extra)
            assert r.status_code == 200, (path, kw, r.get_json())


def test_revocation_drops_prekeys_and_blocks_upload(relay: Relay) -> None:
    inst = make_installation()
    relay.authorize(inst)
    relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, otpk_ids=range(2), issued_at=1))}, method="PUT")
    token = relay.token(inst)
    r = relay.post(f"/v1/identity/{WALLET_ADDRESS}", {"record": wire.b64e(revoke_record(inst))})
    assert r.status_code == 201
    assert relay.client.get(f"/v1/prekeys/{inst.iid}/count").get_json() == {"otpk": 0, "pq_otpk": 0}
    assert_error(relay.client.post(f"/v1/prekeys/{inst.iid}/claim"), 404, "no_prekeys")
    rejected(
        relay,
        lambda: relay.post(f"/v1/prekeys/{inst.iid}", {"upload": wire.b64e(make_upload(inst, issued_at=2))}, method="PUT"),
        403,
        "unknown_installation",
    )
    assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}", headers={"Authorization": f"Bearer {token}"}), 401, "unknown_installation")
    assert_error(relay.post("/v1/auth/challenge", {"installation_id": inst.iid}), 401, "unknown_installation")


# ---- auth ---------------------------------------------------------------------------------


def test_auth_flow_replay_expiry_and_bad_signature(relay: Relay) -> None:
    inst, other = make_installation(), make_installation()
    relay.authorize(inst)
    relay.authorize(other)
    assert_error(relay.post("/v1/auth/challenge", {"installation_id": make_installation().iid}), 401, "unknown_installation")
    assert_error(relay.post("/v1/auth/challenge", {"installation_id": "nope"}), 400, "bad_request")

    def get_challenge() -> tuple[str, bytes]:
        body = relay.post("/v1/auth/challenge", {"installation_id": inst.iid}).get_json()
        assert body["expires_at"] == int(relay.clock.now) + 60
        return body["challenge"], base64.b64decode(body["challenge"])

    def token_req(ch_b64: str, sig: bytes, iid: str | None = None) -> Any:
        return relay.post(
            "/v1/auth/token", {"installation_id": iid or inst.iid, "challenge": ch_b64, "signature": wire.b64e(sig)}
        )

    ch_b64, ch = get_challenge()
    sig = P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, ch))
    r = token_req(ch_b64, sig)
    assert r.status_code == 200
    assert r.get_json()["expires_at"] == int(relay.clock.now) + 3600
    assert_error(token_req(ch_b64, sig), 401, "unauthorized")  # replayed challenge

    ch_b64, ch = get_challenge()
    assert_error(token_req(ch_b64, P.ed25519_sign(other.signing_priv, auth_message(inst.iid, ch))), 401, "bad_signature")
    assert_error(token_req(ch_b64, P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, ch))), 401, "unauthorized")  # burnt

    ch_b64, ch = get_challenge()  # a challenge issued to inst cannot mint a token for other
    assert_error(token_req(ch_b64, P.ed25519_sign(other.signing_priv, auth_message(other.iid, ch)), other.iid), 401, "unauthorized")

    ch_b64, ch = get_challenge()
    relay.clock.now += 61
    assert_error(token_req(ch_b64, P.ed25519_sign(inst.signing_priv, auth_message(inst.iid, ch))), 401, "challenge_expired")

    ch_b64, _ = get_challenge()
    assert_error(token_req(ch_b64[:-2], bytes(64)), 400, "bad_base64")
    assert_error(token_req(wire.b64e(b"short"), bytes(64)), 400, "bad_request")
    assert_error(relay.post("/v1/auth/token", {"installation_id": inst.iid, "challenge": ch_b64}), 400, "bad_request")


# ---- envelopes ----------------------------------------------------------------------------


def test_publish_fetch_with_token(relay: Relay) -> None:
    inst, other = make_installation(), make_installation()
    relay.authorize(inst)
    relay.authorize(other)
    cursors = []
    for i in range(5):
        r = relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"sealed %d" % i)})
        assert r.status_code == 202
        cursors.append(r.get_json()["cursor"])
    relay.post("/v1/envelopes", {"topic": other.topic, "payload": wire.b64e(b"for other")})
    assert cursors == sorted(cursors) and len(set(cursors)) == 5
    token = relay.token(inst)
    auth = {"Authorization": f"Bearer {token}"}
    body = relay.client.get(f"/v1/envelopes/{inst.topic}", headers=auth).get_json()
    assert [base64.b64decode(e["payload"]) for e in body["envelopes"]] == [b"sealed %d" % i for i in range(5)]
    assert [e["cursor"] for e in body["envelopes"]] == cursors
    assert all(e["received_at"] == int(relay.clock.now) for e in body["envelopes"])
    assert body["next"] == cursors[-1]
    page = relay.client.get(f"/v1/envelopes/{inst.topic}?after={cursors[1]}&limit=2", headers=auth).get_json()
    assert [e["cursor"] for e in page["envelopes"]] == cursors[2:4] and page["next"] == cursors[3]
    empty = relay.client.get(f"/v1/envelopes/{inst.topic}?after={cursors[-1]}", headers=auth).get_json()
    assert empty == {"envelopes": [], "next": cursors[-1]}
    # the token does not open another inbox; missing/garbage tokens; expiry
    assert_error(relay.client.get(f"/v1/envelopes/{other.topic}", headers=auth), 401, "unauthorized")
    assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}"), 401, "unauthorized")
    assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}", headers={"Authorization": token}), 401, "unauthorized")
    assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}", headers={"Authorization": "Bearer x"}), 401, "unauthorized")
    for q in ("after=-1", "after=abc", "limit=0", "limit=501", "after=%D9%A1", "after=" + "9" * 30, "limit=1.5"):
        assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}?{q}", headers=auth), 400, "bad_request")
    relay.clock.now += 3601
    assert_error(relay.client.get(f"/v1/envelopes/{inst.topic}", headers=auth), 401, "unauthorized")


def test_publish_answer_tells_the_length_of_the_inbox_owners_identity_log(relay: Relay) -> None:
    """Issue 9 (PROTOCOL.md §7): a sender whose cached log is shorter refreshes it, so a recipient's
    new installation is not left out until the next scheduled pass."""
    first, second = make_installation(), make_installation()
    relay.authorize(first)

    def publish(inst: Installation) -> dict[str, Any]:
        r = relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"sealed")})
        assert r.status_code == 202
        return dict(r.get_json())

    answer = publish(first)
    assert answer == {"cursor": answer["cursor"], "logs": {WALLET_ADDRESS: 1}}
    relay.authorize(second)  # the same wallet authorizes another installation: its log grows
    assert publish(first)["logs"] == {WALLET_ADDRESS: 2}
    assert publish(second)["logs"] == {WALLET_ADDRESS: 2}


def test_publish_hostile(tmp_path: Path) -> None:
    relay = Relay(tmp_path, max_envelope=1000)
    try:
        inst = make_installation()
        relay.authorize(inst)
        iid = inst.iid
        bad_topics: list[Any] = [
            "parley.v1.inbox.../../x",
            f"PARLEY.V1.INBOX.{iid}",
            f"parley.v1.inbox.{iid.upper()}",
            f"parley.v1.inbox.{iid}\n",
            f"parley.v1.inbox.{iid}x",
            f" parley.v1.inbox.{iid}",
            "parley.v1.inbox." + "٠" * 32,
            iid,
            "",
            5,
            None,
            ["parley.v1.inbox." + iid],
            "parley.v1.inbox." + "a" * 10_000,
        ]
        for topic in bad_topics:
            rejected(relay, lambda: relay.post("/v1/envelopes", {"topic": topic, "payload": "AAAA"}), 400, "bad_topic")
        unknown = make_installation()
        rejected(relay, lambda: relay.post("/v1/envelopes", {"topic": unknown.topic, "payload": "AAAA"}), 404, "unknown_installation")
        cases: list[tuple[Any, int, str]] = [
            ({"topic": inst.topic, "payload": wire.b64e(b"x" * 1001)}, 413, "too_large"),
            ({"topic": inst.topic, "payload": ""}, 400, "bad_request"),
            ({"topic": inst.topic, "payload": "AAA"}, 400, "bad_base64"),
            ({"topic": inst.topic, "payload": "AA AA"}, 400, "bad_base64"),
            ({"topic": inst.topic, "payload": 12}, 400, "bad_request"),
            ({"topic": inst.topic}, 400, "bad_request"),
            ({"topic": inst.topic, "payload": "AAAA", "from": "me"}, 400, "bad_request"),
            ("string", 400, "bad_request"),
        ]
        for body, status, code in cases:
            rejected(relay, lambda: relay.post("/v1/envelopes", body), status, code)
        # exactly at the limit is accepted
        assert relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"x" * 1000)}).status_code == 202
        # a body over MAX_CONTENT_LENGTH is refused before parsing
        huge = b'{"topic": "' + b"a" * (relay.settings.max_body + 10) + b'"}'
        rejected(relay, lambda: relay.post("/v1/envelopes", raw=huge), 413, "too_large")
        token = relay.token(inst)
        auth = {"Authorization": f"Bearer {token}"}
        for path in ("/v1/envelopes/parley.v1.inbox.../../x", f"/v1/envelopes/PARLEY.V1.INBOX.{iid}", f"/v1/envelopes/{iid}"):
            assert_error(relay.client.get(path, headers=auth), 400, "bad_topic")
        # a newline never matches a route: a JSON 404, not the inbox
        assert_error(relay.client.get(f"/v1/envelopes/parley.v1.inbox.{iid}%0A", headers=auth), 404, "not_found")
    finally:
        relay.storage.close()


def test_default_envelope_limit_is_one_mib(relay: Relay) -> None:
    inst = make_installation()
    relay.authorize(inst)
    assert relay.settings.max_envelope == 1024 * 1024
    ok = relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"\x01" * (1024 * 1024))})
    assert ok.status_code == 202
    rejected(relay, lambda: relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"\x01" * (1024 * 1024 + 1))}), 413, "too_large")


def test_a_body_of_exactly_max_body_bytes_is_read_one_more_is_too_large(relay: Relay) -> None:
    inst = make_installation()
    relay.authorize(inst)
    body = json.dumps({"installation_id": inst.iid}).encode()
    exact = body + b" " * (relay.settings.max_body - len(body))  # JSON allows trailing white space
    r = relay.post("/v1/auth/challenge", raw=exact)
    assert r.status_code == 200 and set(r.get_json()) >= {"challenge"}
    rejected(relay, lambda: relay.post("/v1/auth/challenge", raw=exact + b" "), 413, "too_large")


def test_rate_limits(tmp_path: Path) -> None:
    relay = Relay(tmp_path, publish_burst=3, publish_rate=1.0, claim_burst=2, claim_rate=0.5)
    try:
        inst = make_installation()
        relay.authorize(inst)
        body = {"topic": inst.topic, "payload": "AAAA"}
        assert [relay.post("/v1/envelopes", body).status_code for _ in range(3)] == [202] * 3
        rejected(relay, lambda: relay.post("/v1/envelopes", body), 429, "rate_limited")
        # a different client address has its own bucket
        other = relay.post("/v1/envelopes", body, environ_base={"REMOTE_ADDR": "10.0.0.2"})
        assert other.status_code == 202
        relay.clock.now += 1.0  # one token back
        assert relay.post("/v1/envelopes", body).status_code == 202
        assert_error(relay.post("/v1/envelopes", body), 429, "rate_limited")
        codes = [relay.client.post(f"/v1/prekeys/{inst.iid}/claim").status_code for _ in range(3)]
        assert codes[:2] == [404, 404] and codes[2] == 429
    finally:
        relay.storage.close()


def test_retention_pass(relay: Relay) -> None:
    inst = make_installation()
    relay.authorize(inst)
    relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"old")})
    relay.clock.now += 29 * 86400
    relay.post("/v1/envelopes", {"topic": inst.topic, "payload": wire.b64e(b"new")})
    worker = RetentionThread(relay.storage, relay.settings)
    assert worker.run_once() == 0
    relay.clock.now += 1 * 86400 + 1
    assert worker.run_once() == 1
    assert [e.payload for e in relay.storage.fetch(inst.topic, 0, 10)] == [b"new"]
