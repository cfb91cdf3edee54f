"""Known-answer tests for the protocol layers above the crypto (docs/test-vectors.md): identity negatives
and the active set (§3), prekey uploads (§4), the ratchet limits (§5.3.5), content (§6.1), inbox auth (§7),
relay lists (1.1).

Every vector is checked against the bridge's own code; where the relay is the layer that decides (its
answer codes), the vector is also replayed against a real relay app (Flask test client, real SQLite)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from tests.exact import raises_exactly
from tests.relay_fixtures import unlimited_settings
from tests.vectors_loader import cases, error_class, h, load

from bridge import identity
from bridge.crypto import primitives as P
from bridge.crypto import ratchet
from bridge.protocol import wire
from bridge.protocol.content import KNOWN_TYPES, TextContent, pad
from bridge.protocol.ids import installation_id
from bridge.protocol.prekeys import Bundle, OneTimePrekey, PrekeyUpload, sign_prekey
from bridge.relay.auth import auth_message
from bridge.relay.server import create_app
from bridge.relay.sqlite_store import SQLiteStorage

NEW_FILES = ["identity_negative.json", "identity_active_set.json", "parley_content.json", "parley_prekeys.json",
             "parley_auth.json", "parley_ratchet_limits.json", "relay_answers.json", "parley_relay_list.json"]
ANVIL0_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")


@pytest.mark.parametrize("filename", NEW_FILES)
def test_vector_files_are_well_formed(filename: str) -> None:
    data = load(filename)
    assert data["family"] and data["description"] and data["source"].startswith("ours: scripts/gen_vectors.py")
    for v in data["vectors"]:
        assert set(v) == {"name", "input", "expected"}
        assert v["name"].startswith("negative") == ("error" in v["expected"]), v["name"]


def test_identity_json_points_at_the_protocol() -> None:
    assert "docs/PROTOCOL.md section 3" in load("identity.json")["source"]
    assert "docs/protocol/identity.md" not in load("identity.json")["source"]


# --- a relay app over real SQLite ---------------------------------------------------------------

class RelayApp:
    def __init__(self, tmp_path: Path) -> None:
        self.storage = SQLiteStorage(str(tmp_path / "relay.db"))
        self.client: FlaskClient = create_app(self.storage, settings=unlimited_settings()).test_client()

    def post(self, path: str, body: Any, method: str = "POST") -> Any:
        return self.client.open(path, method=method, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayApp]:
    r = RelayApp(tmp_path)
    yield r
    r.storage.close()


def error_of(resp: Any) -> tuple[int, str]:
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return resp.status_code, body["error"]["code"]


# --- §3 identity: one negative per MUST-reject rule --------------------------------------------

IDENTITY_NEGATIVE = load("identity_negative.json")


@pytest.mark.parametrize("vec", cases("identity_negative.json"))
def test_identity_negative(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    record = h(i["record"])
    if i["text"] is not None:  # the text named is the one inside the record
        assert wire.decode(record, max_size=len(record), canonical=False)[2] == i["text"]
    if "error" not in e:  # a bound that is accepted (shape-wise or in full)
        signed = identity.SignedStatement.from_record(record)
        if "error_after_decode" in e:
            with raises_exactly(error_class(e["error_after_decode"])) as ei:
                identity.verify_record_for(i["address"], record)
            assert str(ei.value) == e["message"]
            return
        st = identity.verify_record_for(i["address"], record)
        assert (st.installation_id, st.action) == (e["installation_id"], e["action"])
        if "record_id" in e:
            assert signed.record_id() == e["record_id"]
        return
    with raises_exactly(error_class(e["error"])) as ei:
        identity.verify_record_for(i["address"], record)
    if "message" in e:
        assert str(ei.value) == e["message"]
    else:
        assert str(ei.value).startswith(e["message_prefix"])
    # and installations() skips it, never raises (the address itself aside)
    if e["error"] != "IdentityError":
        assert identity.installations(i["address"], [record]) == {}


def test_identity_negatives_get_their_relay_codes(relay: RelayApp) -> None:
    """POST /v1/identity/<address> answers 400 with the vector's relay_code, and stores nothing."""
    for vec in IDENTITY_NEGATIVE["vectors"]:
        i, e = vec["input"], vec["expected"]
        if "relay_code" not in e:
            continue
        resp = relay.post(f"/v1/identity/{i['address']}", {"record": wire.b64e(h(i["record"]))})
        assert error_of(resp) == (400, e["relay_code"]), vec["name"]
    assert relay.storage.identity_records(identity.checksum_address(IDENTITY_NEGATIVE["vectors"][0]["input"]["address"])) == []


def test_identity_negatives_cover_every_rule() -> None:
    """The §3 MUST-reject rules the issue lists each have a vector (by name)."""
    names = " | ".join(v["name"] for v in IDENTITY_NEGATIVE["vectors"])
    for needle in ("trailing newline", "CR", "trailing space", "look-alike", "Action revoke-installation", "line 2",
                   "EIP-55 checksum", "0X", "chain id 0", "leading zero", "2^63", "another key pair", "swapped",
                   "key lines in a revocation", "leap second", "February 30", "before 1970", "1024", "non-canonical",
                   "3 items", "true instead of 1", "tag Stmt", "64 bytes", "4097 bytes", "8192", "v = 29", "r = 0", "s = n",
                   "another wallet", "another address"):
        assert needle in names, needle


# --- §3 the active set --------------------------------------------------------------------------

@pytest.mark.parametrize("vec", cases("identity_active_set.json"))
def test_identity_active_set(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    records = [h(r) for r in i["records"]]
    active = identity.installations(i["address"], records)
    assert {iid: hashlib.sha256(st.text().encode()).hexdigest() for iid, st in active.items()} == e["active"]
    assert not set(e["revoked"]) & set(active)
    # the revoked set: exactly the ids a valid revocation for this address names
    revoked = set()
    for r in records:
        try:
            st = identity.verify_record_for(i["address"], r)
        except identity.IdentityError:
            continue
        if st.action == "revoke":
            revoked.add(st.installation_id)
    assert sorted(revoked) == e["revoked"]
    # order does not matter
    assert identity.installations(i["address"], list(reversed(records))).keys() == active.keys()


@pytest.mark.parametrize("vec", cases("identity_active_set.json"))
def test_identity_active_set_relay_index_agrees(vec: dict[str, Any], relay: RelayApp) -> None:
    """The relay's incremental index (fed one published record at a time) ends where the client's rule does."""
    i, e = vec["input"], vec["expected"]
    for r in i["records"]:
        relay.post(f"/v1/identity/{i['address']}", {"record": wire.b64e(h(r))})
    named = set(e["active"]) | set(e["revoked"])
    for iid in named:
        assert (relay.storage.installation(iid) is not None) == (iid in e["active"]), iid


# --- §6.1 content -------------------------------------------------------------------------------

def _compact(c: dict[str, Any]) -> bytes:
    return h(c["prefix"]) + h(c["fill"]) * c["count"]


@pytest.mark.parametrize("vec", cases("parley_content.json"))
def test_content(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    if "content_compact" in i:
        padded = pad(_compact(i["content_compact"]))
        assert len(padded) == e.get("padded_len", len(padded))
        if "error" in e:
            with raises_exactly(error_class(e["error"])):
                TextContent.decode(padded)
        else:
            assert len(TextContent.decode(padded).text.encode()) == e["text_bytes"]
        return
    if "error" in e:
        with raises_exactly(error_class(e["error"])):
            TextContent.decode(h(i["padded"]))
        return
    if e.get("decodes"):
        c = TextContent.decode(h(i["padded"]))
        assert c.sender == e["sender"]
        if "content_type" in e:  # §10.2: a later type shows its fallback text
            # 1.2 (§6.7) knows "typing" and the other new types; a name outside them stays a later type
            assert (c.content_type, c.text, c.known) == (e["content_type"], e["text"], e["content_type"] in KNOWN_TYPES)
        if "sender_relays" in e:  # §6.1 (1.1): a text content's relay list, or none
            assert (c.sender_relays.hex() if c.sender_relays is not None else None) == e["sender_relays"]
            assert TextContent.decode(c.encode()) == c
        return
    c = TextContent(i["message_id"], i["sender"], i["recipient"], i["sent_at"], i["text"])
    assert c.encode().hex() == e["padded"]
    assert e["padded"].startswith(e["content"] + "80")
    assert TextContent.decode(h(e["padded"])) == c


# --- §4 prekeys ---------------------------------------------------------------------------------

PREKEYS = load("parley_prekeys.json")


def _upload_of(i: dict[str, Any]) -> PrekeyUpload:
    sk = h(i["signing_priv"])
    from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, SPK

    return PrekeyUpload(
        installation_id=i["installation_id"], issued_at=i["issued_at"],
        spk=sign_prekey(sk, SPK, i["spk"]["id"], h(i["spk"]["pub"])),
        otpks=tuple(OneTimePrekey(k["id"], h(k["pub"])) for k in i["otpks"]),
        pq_otpks=tuple(sign_prekey(sk, PQ_OTPK, k["id"], P.mlkem768_public(h(k["seed"]))) for k in i["pq_otpks"]),
        pq_lrpk=sign_prekey(sk, PQ_LRPK, i["pq_lrpk"]["id"], P.mlkem768_public(h(i["pq_lrpk"]["seed"]))),
    )


@pytest.mark.parametrize("vec", cases("parley_prekeys.json"))
def test_prekeys(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    spub = h(i["signing_pub"])
    assert P.ed25519_public(h(i["signing_priv"])) == spub
    assert installation_id(spub, h(i["identity_pub"])) == i["installation_id"]
    if "bundle" in i:
        with raises_exactly(error_class(e["error"])):
            Bundle.decode(h(i["bundle"])).verify(spub)
        return
    if "upload" in i:
        def run() -> PrekeyUpload:
            upload, _body, sig = PrekeyUpload.parse_signed(h(i["upload"]))
            upload.verify_all(spub, sig)
            return upload
        if e.get("error"):
            with raises_exactly(error_class(e["error"])):
                run()
        else:
            upload = run()
            if "otpks" in e:
                assert len(upload.otpks) == e["otpks"]
            assert (upload.installation_id == i["url_installation_id"]) == (e["relay_status"] == 200)
        return
    up = _upload_of(i)
    assert up.spk.to_wire() == wire.decode(h(e["spk"]))
    assert wire.encode(up.spk.to_wire()).hex() == e["spk"]
    assert wire.encode(up.pq_otpks[0].to_wire()).hex() == e["pq_otpk"]
    assert up.pq_lrpk is not None and wire.encode(up.pq_lrpk.to_wire()).hex() == e["pq_lrpk"]
    assert [wire.encode(k.to_wire()).hex() for k in up.otpks] == e["otpks"]
    P.ed25519_verify(spub, up.spk.sig, h(e["spk_signed"]))
    P.ed25519_verify(spub, up.pq_otpks[0].sig, h(e["pq_otpk_signed"]))
    assert up.body().hex() == e["body"]
    assert up.sign(h(i["signing_priv"])).hex() == e["upload"]
    parsed, _body, sig = PrekeyUpload.parse_signed(h(e["upload"]))
    assert parsed == up and sig.hex() == e["upload_signature"]
    parsed.verify_all(spub, sig)
    for key, otpk, pq in (("bundle_with_one_time_keys", up.otpks[0], up.pq_otpks[0]), ("bundle_last_resort", None, up.pq_lrpk)):
        b = Bundle(i["installation_id"], up.spk, otpk, pq)
        assert b.encode().hex() == e[key]
        assert Bundle.decode(h(e[key])) == b
        b.verify(spub)


def _register(relay: RelayApp, signing_pub: bytes, identity_pub: bytes) -> None:
    iid = installation_id(signing_pub, identity_pub)
    st = identity.authorize_statement("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", iid, signing_pub, identity_pub, issued_at=1795716000,
                                      nonce="00" * 16)
    r = relay.post("/v1/identity/0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                   {"record": wire.b64e(identity.sign_statement(st, ANVIL0_KEY).to_record())})
    assert r.status_code == 201, r.get_json()


def test_prekey_uploads_get_their_relay_answers(relay: RelayApp) -> None:
    """PUT /v1/prekeys/<iid>: each negative upload gets its status and code; the good ones are stored."""
    first = PREKEYS["vectors"][0]["input"]
    _register(relay, h(first["signing_pub"]), h(first["identity_pub"]))
    for vec in PREKEYS["vectors"][1:]:
        i, e = vec["input"], vec["expected"]
        if "upload" not in i:
            continue
        resp = relay.post(f"/v1/prekeys/{i['url_installation_id']}", {"upload": wire.b64e(h(i["upload"]))}, method="PUT")
        if e["relay_status"] == 200:
            assert resp.status_code == 200 and resp.get_json()["otpk"] == e["otpks"], vec["name"]
        else:
            assert error_of(resp) == (e["relay_status"], e["relay_code"]), vec["name"]
    resp = relay.post(f"/v1/prekeys/{first['installation_id']}", {"upload": wire.b64e(h(PREKEYS["vectors"][0]["expected"]["upload"]))}, method="PUT")
    assert resp.status_code == 200


# --- relay lists (protocol 1.1) -----------------------------------------------------------------

RELAY_LIST = load("parley_relay_list.json")


@pytest.mark.parametrize("vec", cases("parley_relay_list.json"))
def test_relay_list(vec: dict[str, Any]) -> None:
    """Positive: the fields encode, sign and parse to the vector's bytes. Negative: parse + verify raise exactly
    the vector's class (null: they pass; only the relay refuses). url: the canonical form and the normaliser."""
    from bridge.protocol import relaylist

    i, e = vec["input"], vec["expected"]
    if "url" in i:
        assert relaylist.is_canonical_relay_url(i["url"]) is e["canonical"]
        if e["normalised"] is None:
            with raises_exactly(ValueError):
                relaylist.canonical_relay_url(i["url"])
        else:
            assert relaylist.canonical_relay_url(i["url"]) == e["normalised"]
        return
    spub = h(i["signing_pub"])
    assert P.ed25519_public(h(i["signing_priv"])) == spub
    assert installation_id(spub, h(i["identity_pub"])) == i["installation_id"]
    if "record" in i:
        if e.get("error") is not None:
            with raises_exactly(error_class(e["error"])):
                relaylist.verify(h(i["record"]), spub)
        else:
            relaylist.verify(h(i["record"]), spub)
        return
    rl = relaylist.RelayList(i["address"], i["installation_id"], i["version"], i["issued_at"], tuple(i["relays"]))
    assert rl.body().hex() == e["body"]
    assert rl.sign(h(i["signing_priv"])).hex() == e["record"]
    assert relaylist.parse(h(e["record"])) == (rl, h(e["body"]), h(e["signature"]))
    assert relaylist.verify(h(e["record"]), spub) == rl


def test_relay_lists_get_their_relay_answers(relay: RelayApp) -> None:
    """PUT /v1/relay-list/<iid>: the first positive record is stored (201); every other record gets the vector's
    status and code, and a refused one changes nothing stored."""
    first = RELAY_LIST["vectors"][0]
    i = first["input"]
    r = relay.post(f"/v1/identity/{i['address']}", {"record": wire.b64e(h(i["authorize_record"]))})
    assert r.status_code == 201, r.get_json()
    r = relay.post(f"/v1/relay-list/{i['installation_id']}", {"record": wire.b64e(h(first["expected"]["record"]))}, method="PUT")
    assert (r.status_code, r.get_json()) == (201, {"version": i["version"]})
    stored = relay.storage.relay_lists([i["address"]])
    assert stored == {i["address"]: [h(first["expected"]["record"])]}
    replayed = 0
    for vec in RELAY_LIST["vectors"]:
        v_in, e = vec["input"], vec["expected"]
        if "url_installation_id" not in v_in:
            continue
        replayed += 1
        resp = relay.post(f"/v1/relay-list/{v_in['url_installation_id']}", {"record": wire.b64e(h(v_in["record"]))}, method="PUT")
        if e["relay_status"] == 200:
            assert resp.get_json() == {"version": e["relay_version"]}, vec["name"]
        else:
            assert error_of(resp) == (e["relay_status"], e["relay_code"]), vec["name"]
        assert relay.storage.relay_lists([i["address"]]) == stored, vec["name"]
    assert replayed >= 30


# --- §7 auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("vec", cases("parley_auth.json"))
def test_auth(vec: dict[str, Any]) -> None:
    i, e = vec["input"], vec["expected"]
    iid, ch, spub = i["installation_id"], h(i["challenge"]), h(i["signing_pub"])
    assert installation_id(spub, h(i["identity_pub"])) == iid
    if "error" in e:
        with raises_exactly(error_class(e["error"])):
            P.ed25519_verify(spub, h(i["signature"]), auth_message(iid, ch))
        return
    assert auth_message(iid, ch).hex() == e["message"]
    sig = P.ed25519_sign(h(i["signing_priv"]), auth_message(iid, ch))
    assert sig.hex() == e["signature"]
    assert e["token_request"] == {"installation_id": iid, "challenge": wire.b64e(ch), "signature": wire.b64e(sig)}
    assert base64.b64decode(e["token_request"]["challenge"], validate=True) == ch


def test_auth_token_request_is_what_the_relay_takes(relay: RelayApp) -> None:
    """The vector's signing rule gets a token from a real relay for a relay-issued challenge."""
    i = load("parley_auth.json")["vectors"][0]["input"]
    _register(relay, h(i["signing_pub"]), h(i["identity_pub"]))
    ch = relay.post("/v1/auth/challenge", {"installation_id": i["installation_id"]}).get_json()
    sig = P.ed25519_sign(h(i["signing_priv"]), auth_message(i["installation_id"], base64.b64decode(ch["challenge"])))
    r = relay.post("/v1/auth/token", {"installation_id": i["installation_id"], "challenge": ch["challenge"], "signature": wire.b64e(sig)})
    assert r.status_code == 200 and set(r.get_json()) == {"token", "expires_at"}


# --- §5.3.5 ratchet limits (scripts) ------------------------------------------------------------

def run_script(inp: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    sk, spk_priv, ad = h(inp["sk"]), h(inp["bob_spk_priv"]), h(inp["ad"])
    states: dict[str, ratchet.RatchetState] = {
        "alice": ratchet.init_alice(sk, P.x25519_public(spk_priv), ratchet_priv=h(inp["alice_ratchet_priv"])),
        "bob": ratchet.init_bob(sk, spk_priv),
    }
    sent: dict[str, list[tuple[bytes, bytes]]] = {"alice": [], "bob": []}
    assert len(inp["steps"]) == len(expected)
    for n, (step, want) in enumerate(zip(inp["steps"], expected)):
        where = f"step {n} {step}"
        if step["op"] == "send":
            who, digest = step["by"], hashlib.sha256()
            for _ in range(step["count"]):
                states[who], hb, ct = ratchet.encrypt(states[who], f"{who}:{len(sent[who])}".encode(), ad)
                sent[who].append((hb, ct))
                digest.update(hb + ct)
            assert (len(sent[who]) - 1, digest.hexdigest()) == (want["last"], want["sha256"]), where
        elif step["op"] == "forge_pn":
            states[step["by"]] = replace(states[step["by"]], pn=step["pn"])
        else:
            to = step["to"]
            hb, ct = sent["alice" if to == "bob" else "bob"][step["index"]]
            before = states[to]
            rp = hashlib.sha256(f"{inp['seed']}/{n}".encode()).digest()
            if "error" in want:
                with raises_exactly(error_class(want["error"])):
                    ratchet.decrypt(before, hb, ct, ad, ratchet_priv=rp)
            else:
                states[to], pt = ratchet.decrypt(before, hb, ct, ad, ratchet_priv=rp)
                assert pt.decode() == want["plaintext"], where
            st = states[to]
            got = (len(st.skipped), len(st.old_dhr), hashlib.sha256(st.to_bytes()).hexdigest())
            assert got == (want["skipped"], want["old_dhr"], want["state_sha256"]), where


@pytest.mark.parametrize("vec", cases("parley_ratchet_limits.json"))
def test_ratchet_limits(vec: dict[str, Any]) -> None:
    run_script(vec["input"], vec["expected"]["steps"])


def test_ratchet_limits_pin_the_constants() -> None:
    """The scripts are about these numbers; a change to one must come with new vectors."""
    assert (ratchet.MAX_SKIP, ratchet.MAX_STORED_SKIPPED, ratchet.MAX_OLD_REMOTE_KEYS) == (1000, 2000, 32)


# --- §5.5 / §6.3 sealed sender with real records and messages, through the engine ---------------

def _engine_for(tmp_path: Path, e: dict[str, Any]) -> Any:
    from bridge.engine import Engine
    from bridge.keys.keyfile import Secrets
    from bridge.store import Store

    r = e["recipient"]
    secrets = Secrets(h(r["wallet_key"]), h(r["signing_priv"]), h(r["identity_priv"]), hashlib.sha256(b"storage").digest())
    assert secrets.installation_id == r["installation_id"] and secrets.address == r["address"]
    eng = Engine(Store(tmp_path / "bridge.db"), secrets, {"address": r["address"], "installation_id": r["installation_id"],
                                                          "record": r["record"]}, "http://127.0.0.1:9")
    keys = {(kind, pid): h(priv) for kind, pid, priv in e.get("prekeys", [])}
    eng._prekey = lambda c, kind, pid: keys[(kind, pid)]  # the vector's prekey private halves
    eng.ensure_prekeys = lambda: False  # no relay here: the top-up after a PreKey message is not under test
    if "session" in e:
        from bridge.crypto import session

        with eng.store.write() as c:
            eng._save_session(c, session.Session.from_bytes(h(e["session"])))
    return eng


SEALED_ENGINE = [v for v in load("parley_sealed.json")["vectors"] if "engine" in v["input"]]


@pytest.mark.parametrize("vec", [pytest.param(v, id=v["name"]) for v in SEALED_ENGINE])
def test_sealed_through_the_engine(vec: dict[str, Any], tmp_path: Path) -> None:
    from bridge.engine import inbox
    from bridge.relay.storage import Envelope

    i, e = vec["input"], vec["expected"]
    eng = _engine_for(tmp_path, i["engine"])
    try:
        env = Envelope(7, eng.topic, h(i["payload"]), 1)
        msg = eng.process(env)
        quarantined = inbox.quarantined(eng.store)
        if "stored" in e["engine"]:
            want = e["engine"]["stored"]
            assert msg is not None and quarantined == []
            assert {k: msg[k] for k in ("id", "sender", "recipient", "text", "sent_at")} == want
        else:
            assert msg is None
            assert [q["error"] for q in quarantined] == [e["engine"]["quarantined"]]
            assert eng.store.read("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 0
            assert eng.store.read("SELECT COUNT(*) AS n FROM sessions")[0]["n"] == (1 if "session" in i["engine"] else 0)
        assert eng.store.read("SELECT cursor FROM cursors")[0]["cursor"] == 7
    finally:
        eng.store.close()


# --- §7 relay answers: replay a scripted session against a fresh relay --------------------------

RELAY = load("relay_answers.json")
VOLATILE_CHECKS = {
    "<base64: 32 random bytes>": lambda v: isinstance(v, str) and len(base64.b64decode(v, validate=True)) == 32,
    "<integer: unix seconds>": lambda v: type(v) is int and 1_700_000_000 <= v <= 1_900_000_000,
    "<string: opaque bearer token>": lambda v: isinstance(v, str) and 16 <= len(v) <= 256,
}


def matches(want: Any, got: Any, where: str) -> None:
    if isinstance(want, str) and want in VOLATILE_CHECKS:
        assert VOLATILE_CHECKS[want](got), f"{where}: {got!r} is not {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {got!r} != {list(want)}"
        for k in want:
            matches(want[k], got[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r}"
        for n, (w, g) in enumerate(zip(want, got)):
            matches(w, g, f"{where}[{n}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def _resolve(value: Any, answers: list[Any], insts: dict[str, Any]) -> Any:
    import re

    if isinstance(value, dict):
        return {k: _resolve(x, answers, insts) for k, x in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: Any) -> str:
        kind, k, *rest = m.group(1).split(":")
        body = answers[int(k)]
        if kind in ("challenge", "token"):
            return str(body[kind])
        inst = insts[rest[0]]
        return base64.b64encode(P.ed25519_sign(h(inst["signing_priv"]),
                                               auth_message(inst["installation_id"], base64.b64decode(body["challenge"])))).decode()
    return re.sub(r"\$\{([^}]+)\}", sub, value)


def test_relay_answers(tmp_path: Path) -> None:
    from bridge.relay.server import RelaySettings

    vec = RELAY["vectors"][0]
    i, answers_want = vec["input"], vec["expected"]["answers"]
    now = [float(i["clock_start"])]
    lifted: dict[str, Any] = {}
    for n in ("publish", "claim", "claim_target", "auth", "identity", "bucket"):
        lifted[f"{n}_rate"], lifted[f"{n}_burst"] = 1e6, 10**6
    storage = SQLiteStorage(str(tmp_path / "relay.db"))
    client = create_app(storage, settings=RelaySettings(clock=lambda: now[0], verifier=None, **{**lifted, **i["settings"]})).test_client()
    answers: list[Any] = []
    try:
        for n, (step, want) in enumerate(zip(i["steps"], answers_want, strict=True)):
            if step["op"] == "advance_clock":
                now[0] += step["seconds"]
                answers.append(None)
                assert want is None
                continue
            body = _resolve(step["body"], answers, i["installations"])
            data = step["raw"] if step["raw"] is not None else (None if body is None else json.dumps(body))
            kw: dict[str, Any] = {"headers": _resolve(step["headers"], answers, i["installations"])}
            if data is not None:
                kw.update(data=data, content_type=step["content_type"])
            r = client.open(step["path"], method=step["method"], **kw)
            got = r.get_json(silent=True)
            answers.append(got)
            where = f"step {n} ({step['why']})"
            assert r.status_code == want["status"], f"{where}: {r.status_code} {got}"
            assert r.content_type.startswith("application/json"), where
            matches(want["body"], got, where)
    finally:
        storage.close()


def test_relay_answers_cover_the_error_table() -> None:
    """Every §7 error code a standalone relay can be made to give in a script appears in the replay."""
    codes = {a["body"]["error"]["code"] for a in RELAY["vectors"][0]["expected"]["answers"] if a and "error" in a["body"]}
    provokable = {"bad_json", "bad_request", "bad_base64", "bad_cbor", "bad_address", "bad_topic", "bad_signature", "invalid_statement",
                  "unknown_installation", "unauthorized", "challenge_expired", "not_found", "bad_prefix", "bucket_too_large", "no_prekeys",
                  "method_not_allowed", "stale_upload", "installation_bound", "log_full", "bad_content_type", "too_large", "rate_limited",
                  "target_rate_limited", "inbox_full"}
    assert codes == provokable
