"""Hostile input against every relay endpoint (issue 5, part 3; docs/PROTOCOL.md §7 "Conventions",
"Error codes"): Hypothesis drives the Flask test client of ``create_app`` over a real SQLite file.

Every input gets a 4xx answer whose body is exactly ``{"error": {"code", "message"}}`` with a code
from the protocol's table, never a 500, and the database is unchanged (row counts and a hash of
every table's contents, compared before and after each example).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from bridge.crypto import primitives as P
from bridge.protocol import wire
from bridge.relay.auth import auth_message
from bridge.relay.server import RelaySettings, create_app
from bridge.relay.sqlite_store import SQLiteStorage
from tests.relay_fixtures import WALLET_ADDRESS, Installation, authorize_record, make_installation, make_upload

__all__: list[str] = []

#: docs/PROTOCOL.md §7 "Error codes" (4xx only: a hostile input must never look like our fault).
CODES = {
    "bad_json", "bad_request", "bad_base64", "bad_cbor", "bad_address", "bad_topic", "bad_signature",
    "invalid_statement", "unknown_installation", "unauthorized", "challenge_expired", "not_found",
    "no_prekeys", "method_not_allowed", "stale_upload", "too_large", "rate_limited", "bad_content_type",
    "installation_bound", "log_full", "target_rate_limited", "inbox_full", "stale_relay_list",
}
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HUGE = 10**6


class World:
    """One relay with real state: an active installation, its prekeys, and a few envelopes."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "relay.db"
        self.storage = SQLiteStorage(str(self.path))
        self.settings = RelaySettings(
            publish_rate=HUGE, publish_burst=HUGE, claim_rate=HUGE, claim_burst=HUGE, auth_rate=HUGE, auth_burst=HUGE,
            identity_rate=HUGE, identity_burst=HUGE,
        )
        self.app = create_app(self.storage, settings=self.settings)
        self.client: FlaskClient = self.app.test_client()
        self.inst: Installation = make_installation()
        self.other: Installation = make_installation()  # never authorized
        self.record = authorize_record(self.inst)
        assert self.post_json(f"/v1/identity/{WALLET_ADDRESS}", {"record": b64(self.record)}).status_code == 201
        self.upload = make_upload(self.inst, otpk_ids=range(1, 6), pq_ids=range(1, 4))
        assert self.client.put(f"/v1/prekeys/{self.inst.iid}", json={"upload": b64(self.upload)}).status_code == 200
        for n in range(3):
            assert self.post_json("/v1/envelopes", {"topic": self.inst.topic, "payload": b64(b"sealed %d" % n)}).status_code == 202
        from bridge.protocol.relaylist import RelayList

        self.relay_list = RelayList(WALLET_ADDRESS, self.inst.iid, 5, 1_800_000_000, ("https://relay.example.org",)).sign(self.inst.signing_priv)
        assert self.client.put(f"/v1/relay-list/{self.inst.iid}", json={"record": b64(self.relay_list)}).status_code == 201

    def post_json(self, path: str, obj: Any) -> TestResponse:
        return self.client.post(path, data=json.dumps(obj), content_type="application/json")

    def snapshot(self) -> dict[str, tuple[int, str]]:
        con = sqlite3.connect(self.path)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            out = {}
            for t in tables:
                rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"'))
                out[t] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
            return out
        finally:
            con.close()

    def token(self) -> str:
        ch = self.post_json("/v1/auth/challenge", {"installation_id": self.inst.iid}).get_json()["challenge"]
        sig = P.ed25519_sign(self.inst.signing_priv, auth_message(self.inst.iid, base64.b64decode(ch)))
        r = self.post_json("/v1/auth/token", {"installation_id": self.inst.iid, "challenge": ch, "signature": b64(sig)})
        assert r.status_code == 200
        return str(r.get_json()["token"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("fuzzrelay"))
    yield w
    w.storage.close()


def rejected(w: World, before: dict[str, tuple[int, str]], r: TestResponse, *, allowed: set[int] | None = None) -> str:
    """Assert the answer is a well-formed 4xx JSON error and that nothing changed; return its code."""
    assert 400 <= r.status_code < 500, (r.status_code, r.get_data()[:300])
    if allowed is not None:
        assert r.status_code in allowed, (r.status_code, r.get_data()[:300])
    assert r.mimetype == "application/json", r.get_data()[:300]
    body = json.loads(r.get_data())
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    code, message = body["error"]["code"], body["error"]["message"]
    assert code in CODES, body
    assert isinstance(message, str) and message.strip() and "Traceback" not in message
    assert w.snapshot() == before, "a rejected request changed the relay's storage"
    return str(code)


# ---- strategies ------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
wrong_type = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=5), json_scalars, max_size=3))
bad_b64 = st.one_of(
    st.text(max_size=60).filter(lambda s: not re.fullmatch(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", s)),
    st.binary(min_size=1, max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().replace("=", "") + "-_"),
    st.binary(min_size=1, max_size=40).map(lambda b: base64.b64encode(b).decode() + "\n"),
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[" * 5000, b"{" * 5000, b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe{}", b'{"x": "\xed\xa0\x80"}', b"null"]),
)
HEX = "0123456789abcdef"
TOPIC_PREFIX = "parley.v1.inbox."


def hostile_topics(iid: str) -> st.SearchStrategy[str]:
    t = TOPIC_PREFIX + iid
    fixed = [
        t.upper(), t + "\n", t + "\0", "\0" + t, t + "/", "/" + t, t + "/../x", "../" + t, TOPIC_PREFIX + "../" + iid[3:],
        t + "%2f..", TOPIC_PREFIX + "%2f" + iid[3:], t.replace(".", "/"), t[:-1], t + "0", t + " ", " " + t,
        TOPIC_PREFIX + iid[:-1] + "\u0660", TOPIC_PREFIX + iid[:-1] + "\uff10", TOPIC_PREFIX + iid[:-1] + "é",
        t.replace("inbox", "ınbox"), t + "\r\n", "parley.v2.inbox." + iid, t * 2, t + "x" * 100_000, "", "..", "/",
    ]
    return st.one_of(
        st.sampled_from(fixed),
        st.text(max_size=80).filter(lambda s: not re.fullmatch(r"parley\.v1\.inbox\.[0-9a-f]{32}", s)),
        st.builds(lambda a, b: TOPIC_PREFIX + a + b, st.text(alphabet=HEX, max_size=31), st.text(min_size=1, max_size=3).filter(lambda s: not set(s) <= set(HEX))),
    )


hostile_iids = st.one_of(
    st.text(max_size=40).filter(lambda s: not re.fullmatch(r"[0-9a-f]{32}", s)),
    st.sampled_from(["A" * 32, "0" * 31, "0" * 33, "..", "%2e%2e", "0" * 31 + "\u0660", "g" * 32, "0" * 32 + "\n"]),
)


def non_canonical(data: bytes, how: int) -> bytes:
    """A CBOR array re-encoded non-canonically (same value): a longer length, or an indefinite array."""
    head = data[0]
    assert head >> 5 == 4 and head & 31 < 24  # a short definite array
    n = head & 31
    if how == 0:
        return bytes([0x98, n]) + data[1:]  # length in one extra byte
    if how == 1:
        return bytes([0x99, 0, n]) + data[1:]  # length in two extra bytes
    return b"\x9f" + data[1:] + b"\xff"  # indefinite length


# ---- every endpoint ---------------------------------------------------------------------------------


@FUZZ
@given(body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain", "application/cbor", ""]))
def test_malformed_bodies_on_every_json_endpoint(world: World, body: bytes, content_type: str) -> None:
    before = world.snapshot()
    for method, path in (
        ("POST", f"/v1/identity/{WALLET_ADDRESS}"),
        ("PUT", f"/v1/prekeys/{world.inst.iid}"),
        ("PUT", f"/v1/relay-list/{world.inst.iid}"),
        ("POST", "/v1/auth/challenge"),
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/envelopes"),
    ):
        r = world.client.open(path, method=method, data=body, content_type=content_type or None)
        rejected(world, before, r)


@FUZZ
@given(field=st.sampled_from(["record", "upload", "installation_id", "challenge", "signature", "topic", "payload"]), value=wrong_type, extra=st.booleans())
def test_wrong_types_for_every_field(world: World, field: str, value: Any, extra: bool) -> None:
    good = {
        "record": b64(world.record), "upload": b64(world.upload), "installation_id": world.inst.iid,
        "challenge": b64(bytes(32)), "signature": b64(bytes(64)), "topic": world.inst.topic, "payload": b64(b"x"),
    }
    bodies = {
        f"/v1/identity/{WALLET_ADDRESS}": ("POST", ["record"]),
        f"/v1/prekeys/{world.inst.iid}": ("PUT", ["upload"]),
        f"/v1/relay-list/{world.inst.iid}": ("PUT", ["record"]),
        "/v1/auth/challenge": ("POST", ["installation_id"]),
        "/v1/auth/token": ("POST", ["installation_id", "challenge", "signature"]),
        "/v1/envelopes": ("POST", ["topic", "payload"]),
    }
    before = world.snapshot()
    for path, (method, fields) in bodies.items():
        if field not in fields and not extra:
            continue
        obj = {f: good[f] for f in fields}
        if field in fields:
            obj[field] = value
        if extra:
            obj["unexpected"] = value  # an unknown field is refused even next to good ones
        r = world.client.open(path, method=method, data=json.dumps(obj), content_type="application/json")
        code = rejected(world, before, r)
        assert code in {"bad_request", "bad_json", "too_large"} | ({"bad_topic"} if field == "topic" else set()), (path, obj, code)


@FUZZ
@given(value=bad_b64, field=st.sampled_from(["record", "upload", "challenge", "signature", "payload", "relay_list"]))
def test_binary_fields_that_are_not_standard_base64(world: World, value: str, field: str) -> None:
    before = world.snapshot()
    path, method, obj = {
        "record": (f"/v1/identity/{WALLET_ADDRESS}", "POST", {"record": value}),
        "upload": (f"/v1/prekeys/{world.inst.iid}", "PUT", {"upload": value}),
        "relay_list": (f"/v1/relay-list/{world.inst.iid}", "PUT", {"record": value}),
        "challenge": ("/v1/auth/token", "POST", {"installation_id": world.inst.iid, "challenge": value, "signature": b64(bytes(64))}),
        "signature": ("/v1/auth/token", "POST", {"installation_id": world.inst.iid, "challenge": b64(bytes(32)), "signature": value}),
        "payload": ("/v1/envelopes", "POST", {"topic": world.inst.topic, "payload": value}),
    }[field]
    r = world.client.open(path, method=method, data=json.dumps(obj), content_type="application/json")
    assert rejected(world, before, r) in {"bad_base64", "bad_request", "too_large"}


def broken_copy(valid: bytes, data: st.DataObject) -> tuple[str, bytes]:
    """A broken copy of the CBOR ``valid``: random bytes, truncated, non-canonical, with trailing
    bytes, or one byte flipped. Returns (which, the bytes)."""
    kind = data.draw(st.sampled_from(["random", "truncated", "non_canonical", "trailing", "flipped"]))
    if kind == "random":
        return kind, data.draw(st.binary(min_size=1, max_size=600))
    if kind == "truncated":
        return kind, valid[: data.draw(st.integers(1, len(valid) - 1))]
    if kind == "non_canonical":
        return kind, non_canonical(valid, data.draw(st.integers(0, 2)))
    if kind == "trailing":
        return kind, valid + data.draw(st.binary(min_size=1, max_size=8))
    i = data.draw(st.integers(0, len(valid) - 1))
    return kind, valid[:i] + bytes([valid[i] ^ data.draw(st.integers(1, 255))]) + valid[i + 1 :]


@FUZZ
@given(data=st.data())
def test_malformed_cbor_prekey_uploads(world: World, data: st.DataObject) -> None:
    valid = world.upload
    kind, blob = broken_copy(valid, data)
    before = world.snapshot()
    r = world.client.put(f"/v1/prekeys/{world.inst.iid}", json={"upload": b64(blob)})
    code = rejected(world, before, r)
    if kind in ("truncated", "non_canonical", "trailing"):
        assert code == "bad_cbor"


@FUZZ
@given(data=st.data())
def test_malformed_relay_lists(world: World, data: st.DataObject) -> None:
    """PUT /v1/relay-list/<iid> with a broken copy of the stored list: refused, nothing changes (1.1)."""
    valid = world.relay_list
    kind, blob = broken_copy(valid, data)
    before = world.snapshot()
    r = world.client.put(f"/v1/relay-list/{world.inst.iid}", json={"record": b64(blob)})
    code = rejected(world, before, r)
    if kind in ("truncated", "non_canonical", "trailing"):
        assert code == "bad_cbor"


@FUZZ
@given(data=st.data())
def test_malformed_identity_records(world: World, data: st.DataObject) -> None:
    valid = world.record
    kind = data.draw(st.sampled_from(["random", "truncated", "non_canonical", "flipped", "other_address"]))
    address = WALLET_ADDRESS
    if kind == "random":
        blob = data.draw(st.binary(min_size=1, max_size=400))
    elif kind == "truncated":
        blob = valid[: data.draw(st.integers(1, len(valid) - 1))]
    elif kind == "non_canonical":
        blob = non_canonical(valid, data.draw(st.integers(0, 2)))
    elif kind == "flipped":
        i = data.draw(st.integers(0, len(valid) - 1))
        blob = valid[:i] + bytes([valid[i] ^ data.draw(st.integers(1, 255))]) + valid[i + 1 :]
    else:
        blob, address = valid, "0x" + "11" * 20  # a real record, for another address
    before = world.snapshot()
    r = world.post_json(f"/v1/identity/{address}", {"record": b64(blob)})
    code = rejected(world, before, r)
    assert code in {"invalid_statement", "bad_signature"}


@FUZZ
@given(address=st.one_of(
    st.text(max_size=60),
    st.sampled_from([WALLET_ADDRESS.lower()[:-1] + "\u0660", WALLET_ADDRESS + "\n", "0X" + WALLET_ADDRESS[2:], " " + WALLET_ADDRESS,
                     WALLET_ADDRESS[:2] + WALLET_ADDRESS[2:].swapcase(), "../" + WALLET_ADDRESS, WALLET_ADDRESS + "/..", "0x" + "1" * 400_00]),
).filter(lambda a: a not in (WALLET_ADDRESS, WALLET_ADDRESS.lower(), "0x" + WALLET_ADDRESS[2:].upper())), method=st.sampled_from(["GET", "POST"]))
def test_hostile_addresses(world: World, address: str, method: str) -> None:
    before = world.snapshot()
    r = world.client.open("/v1/identity/" + urllib.parse.quote(address, safe=""), method=method, json={"record": b64(world.record)})
    code = rejected(world, before, r)
    assert code in {"bad_address", "not_found", "invalid_statement", "too_large", "bad_request"}


@FUZZ
@given(iid=hostile_iids, quoted=st.booleans())
def test_hostile_installation_ids_on_prekey_and_auth_endpoints(world: World, iid: str, quoted: bool) -> None:
    before = world.snapshot()
    seg = urllib.parse.quote(iid, safe="") if quoted else urllib.parse.quote(iid, safe="/.%")
    for method, path, body in (
        ("PUT", f"/v1/prekeys/{seg}", {"upload": b64(world.upload)}),
        ("POST", f"/v1/prekeys/{seg}/claim", None),
        ("GET", f"/v1/prekeys/{seg}/count", None),
    ):
        r = world.client.open(path, method=method, json=body)
        rejected(world, before, r)
    r = world.post_json("/v1/auth/challenge", {"installation_id": iid})
    assert rejected(world, before, r) == "bad_request"


@FUZZ
@given(data=st.data())
def test_topics_made_to_escape(world: World, data: st.DataObject) -> None:
    topic = data.draw(hostile_topics(world.inst.iid))
    token = world.token()  # (issuing a token may itself be stored: the snapshot comes after)
    before = world.snapshot()
    r = world.post_json("/v1/envelopes", {"topic": topic, "payload": b64(b"sealed")})
    assert rejected(world, before, r) in {"bad_topic", "too_large"}
    for quoted in (urllib.parse.quote(topic, safe=""), urllib.parse.quote(topic, safe="/%")):
        r = world.client.get(f"/v1/envelopes/{quoted}", headers={"Authorization": f"Bearer {token}"})
        assert rejected(world, before, r) in {"bad_topic", "not_found", "bad_request"}


def test_doubled_slashes_in_a_topic_path_are_refused_not_redirected(world: World) -> None:
    token = world.token()
    before = world.snapshot()
    for path in (f"/v1/envelopes//{world.inst.topic}", f"/v1/envelopes/%2F{world.inst.topic}", f"/v1/envelopes/{world.inst.topic}//", "/v1//health", f"/v1/identity//{WALLET_ADDRESS}",
                 f"/v1/prekeys/{world.inst.iid[:5]}//count", f"/v1/prekeys/{world.inst.iid[:5]}%2F/claim"):
        r = world.client.get(path, headers={"Authorization": f"Bearer {token}"})
        rejected(world, before, r)


def test_valid_topic_of_an_unknown_installation_is_refused(world: World) -> None:
    before = world.snapshot()
    r = world.post_json("/v1/envelopes", {"topic": world.other.topic, "payload": b64(b"x")})
    assert rejected(world, before, r, allowed={404}) == "unknown_installation"


@FUZZ
@given(after=st.text(max_size=25), limit=st.text(max_size=25), token=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF).filter(lambda c: c != "\x7f"), max_size=60))
def test_fetch_with_bad_queries_and_tokens(world: World, after: str, limit: str, token: str) -> None:
    before = world.snapshot()
    ok_after = after.isascii() and after.isdigit() and len(after) <= 19
    ok_limit = limit.isascii() and limit.isdigit() and len(limit) <= 19 and 1 <= int(limit) <= 500
    r = world.client.get(f"/v1/envelopes/{world.inst.topic}", query_string={"after": after, "limit": limit}, headers={"Authorization": f"Bearer {token}"})
    code = rejected(world, before, r)
    assert code in ({"unauthorized"} if ok_after and ok_limit else {"bad_request", "unauthorized"})


def test_oversized_bodies_are_413_too_large(world: World) -> None:
    before = world.snapshot()
    big = world.settings.max_body + 1
    for method, path in (("POST", "/v1/envelopes"), ("PUT", f"/v1/prekeys/{world.inst.iid}"), ("POST", f"/v1/identity/{WALLET_ADDRESS}"), ("POST", "/v1/auth/token")):
        r = world.client.open(path, method=method, data=b"{" + b" " * big + b"}", content_type="application/json")
        assert rejected(world, before, r, allowed={413}) == "too_large"
    payload = b64(bytes(world.settings.max_envelope + 1))
    r = world.post_json("/v1/envelopes", {"topic": world.inst.topic, "payload": payload})
    assert rejected(world, before, r, allowed={413}) == "too_large"
    r = world.post_json(f"/v1/identity/{WALLET_ADDRESS}", {"record": b64(bytes(world.settings.max_record + 1))})
    assert rejected(world, before, r, allowed={413}) == "too_large"
    r = world.post_json("/v1/envelopes", {"topic": world.inst.topic, "payload": ""})
    assert rejected(world, before, r, allowed={400}) == "bad_request"


@FUZZ
@given(sig=st.binary(min_size=64, max_size=64), wrong_key=st.booleans())
def test_bad_signatures_on_prekey_uploads_and_tokens(world: World, sig: bytes, wrong_key: bool) -> None:
    before = world.snapshot()
    # A well-formed upload for our installation, signed by another key (or with a random signature).
    if wrong_key:
        blob = make_upload(world.inst, otpk_ids=range(100, 102), signer=world.other.signing_priv)
    else:
        signed = wire.decode(make_upload(world.inst, otpk_ids=range(100, 102)))
        blob = wire.encode([signed[0], signed[1], sig])
    r = world.client.put(f"/v1/prekeys/{world.inst.iid}", json={"upload": b64(blob)})
    assert rejected(world, before, r, allowed={400}) == "bad_signature"
    # A challenge is issued (maybe stored), then consumed by the failed token request: net, no change.
    ch = world.post_json("/v1/auth/challenge", {"installation_id": world.inst.iid}).get_json()["challenge"]
    r = world.post_json("/v1/auth/token", {"installation_id": world.inst.iid, "challenge": ch, "signature": b64(sig)})
    assert rejected(world, before, r, allowed={401}) == "bad_signature"
    # the challenge was consumed by the failed attempt: even a good signature is refused now
    good = P.ed25519_sign(world.inst.signing_priv, auth_message(world.inst.iid, base64.b64decode(ch)))
    r = world.post_json("/v1/auth/token", {"installation_id": world.inst.iid, "challenge": ch, "signature": b64(good)})
    assert rejected(world, before, r, allowed={401}) == "unauthorized"


def test_replayed_challenges_and_foreign_challenges(world: World) -> None:
    ch = world.post_json("/v1/auth/challenge", {"installation_id": world.inst.iid}).get_json()["challenge"]
    sig = b64(P.ed25519_sign(world.inst.signing_priv, auth_message(world.inst.iid, base64.b64decode(ch))))
    body = {"installation_id": world.inst.iid, "challenge": ch, "signature": sig}
    assert world.post_json("/v1/auth/token", body).status_code == 200
    before = world.snapshot()
    for _ in range(3):
        assert rejected(world, before, world.post_json("/v1/auth/token", body), allowed={401}) == "unauthorized"
    never_issued = b64(P.random_bytes(32))
    r = world.post_json("/v1/auth/token", {**body, "challenge": never_issued})
    assert rejected(world, before, r, allowed={401}) == "unauthorized"
    r = world.post_json("/v1/auth/challenge", {"installation_id": world.other.iid})
    assert rejected(world, before, r, allowed={401}) == "unknown_installation"


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=st.one_of(st.text(max_size=40), st.sampled_from(["/v1/health/x", "/v1/../v1/health", "/v1/envelopes", "/v1/auth", "/v2/health", "/%00", "/v1/subscribe"])),
)
def test_unknown_routes_and_methods_answer_json(world: World, method: str, path: str) -> None:
    target = path if path.startswith("/") else "/" + urllib.parse.quote(path, safe="")
    before = world.snapshot()
    r = world.client.open(target, method=method)
    if r.status_code < 400:
        # the few real GET routes a random path can hit (health, an identity, a topic)
        assert method in ("GET", "OPTIONS") and world.snapshot() == before
        return
    rejected(world, before, r)
