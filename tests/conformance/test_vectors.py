"""The conformance client reproduces the published vectors (tests/vectors/*.json, every file: see
test_every_vector_file_is_covered), so the client that drives the relay and the bridge in the other tests
is itself proven against the spec. Negative vectors are checked by the class name of the client's own
exception (spec.py uses the §3/§5.6 names), never by the bridge's message text."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import cbor2
import pytest

from tests.conformance.procs import start_relay
from tests.conformance.wire_client import relay_api as R
from tests.conformance.wire_client import spec as S

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


# Every vector file is either checked by a test here or listed with the reason it is not (test_every_vector_file_is_covered).
NOT_COVERED: dict[str, str] = {
    "parley_backup.json": "protocol 1.3 backups (PROTOCOL.md §12.1-12.2) are read only by the same user's own installations, "
                          "never by a peer or a relay, so the 1.1 conformance client has no part in them; the format is written "
                          "out over the raw cryptography library in tests/test_backup_archive.py (_reference_open) instead",
}
COVERED: set[str] = set()


def load(name: str) -> Any:
    """A vector file, recorded as covered: call only from a test's parametrisation or a test's own data."""
    COVERED.add(name)
    return json.loads((VECTORS / name).read_text())


def cases(name: str) -> Any:
    data = load(name)
    return pytest.mark.parametrize("v", data["vectors"], ids=[v["name"] for v in data["vectors"]])


def h(x: str | None) -> bytes | None:
    return None if x is None else bytes.fromhex(x)


def check(v: dict[str, Any], run: Callable[[], Any]) -> Any:
    """Run a vector: a negative one must raise exactly its class (by name), a positive one must not."""
    err = v["expected"].get("error") if "expected" in v else None
    if err is None:
        return run()
    with pytest.raises(Exception) as info:
        run()
    assert type(info.value).__name__ == err, f"{v['name']}: raised {type(info.value).__name__}: {info.value}"
    return None


@cases("rfc5869_hkdf.json")
def test_hkdf(v: dict[str, Any]) -> None:
    i, e = v["input"], v["expected"]
    assert S.hmac256(h(i["salt"]) or bytes(32), h(i["ikm"])).hex() == e["prk"]
    assert S.hkdf(h(i["salt"]), h(i["ikm"]), h(i["info"]), i["length"]).hex() == e["okm"]


@cases("rfc4231_hmac.json")
def test_hmac(v: dict[str, Any]) -> None:
    assert S.hmac256(h(v["input"]["key"]), h(v["input"]["data"])).hex() == v["expected"]["mac"]


@cases("rfc7748_x25519.json")
def test_x25519(v: dict[str, Any]) -> None:
    i = v["input"]

    def run() -> str:
        if i["u"] == "09" + "00" * 31:
            return S.x25519_public(h(i["scalar"])).hex()
        return S.dh(h(i["scalar"]), h(i["u"])).hex()

    out = check(v, run)
    if out is not None:
        assert out == v["expected"]["output"]


@cases("rfc8032_ed25519.json")
def test_ed25519(v: dict[str, Any]) -> None:
    i = v["input"]
    if i["secret"] is not None and "error" not in v["expected"]:
        assert S.ed_public(h(i["secret"])).hex() == i["public"]
        assert S.ed_sign(h(i["secret"]), h(i["message"])).hex() == i["signature"]
    check(v, lambda: S.ed_verify(h(i["public"]), h(i["signature"]), h(i["message"])))


@cases("libsignal_chain_key.json")
def test_libsignal_chain_key(v: dict[str, Any]) -> None:
    i, e = v["input"], v["expected"]
    next_ck, mk = S.kdf_ck(h(i["chain_key"]))
    okm = S.hkdf(bytes(32), mk, h(i["info"]), 80)
    assert (okm[:32].hex(), okm[32:64].hex(), next_ck.hex()) == (e["cipher_key"], e["mac_key"], e["next_chain_key"])


@cases("parley_kdf_rk.json")
def test_kdf_rk(v: dict[str, Any]) -> None:
    out = check(v, lambda: S.kdf_rk(h(v["input"]["rk"]), h(v["input"]["dh_out"])))
    if out is not None:
        assert (out[0].hex(), out[1].hex()) == (v["expected"]["rk"], v["expected"]["ck"])


@cases("parley_kdf_ck.json")
def test_kdf_ck(v: dict[str, Any]) -> None:
    out = check(v, lambda: S.kdf_ck(h(v["input"]["ck"])))
    if out is not None:
        assert (out[0].hex(), out[1].hex()) == (v["expected"]["ck"], v["expected"]["mk"])


@cases("parley_message_keys.json")
def test_message_keys(v: dict[str, Any]) -> None:
    out = check(v, lambda: S.message_keys(h(v["input"]["mk"])))
    if out is not None:
        assert [x.hex() for x in out] == [v["expected"][k] for k in ("enc_key", "auth_key", "iv")]


@cases("parley_pqxdh_kdf.json")
def test_pqxdh_kdf(v: dict[str, Any]) -> None:
    out = check(v, lambda: S.pqxdh_sk([h(d) for d in v["input"]["dh"]], h(v["input"]["kem_ss"])))
    if out is not None:
        assert out.hex() == v["expected"]["sk"]


@cases("parley_header.json")
def test_header(v: dict[str, Any]) -> None:
    i = v["input"]
    if "encoded" in i:
        check(v, lambda: S.decode_header(h(i["encoded"])))
        return
    encoded = S.encode_header(h(i["dh"]), i["pn"], i["n"])
    assert encoded.hex() == v["expected"]["encoded"]
    assert S.decode_header(encoded) == (h(i["dh"]), i["pn"], i["n"])


@cases("parley_encrypt.json")
def test_encrypt(v: dict[str, Any]) -> None:
    i = v["input"]
    ad = h(i["ad"]) + h(i["header"])
    if "plaintext" in i:
        ct = S.encrypt(h(i["mk"]), h(i["plaintext"]), ad)
        assert ct.hex() == v["expected"]["ciphertext"]
        assert S.decrypt(h(i["mk"]), ct, ad) == h(i["plaintext"])
    else:
        check(v, lambda: S.decrypt(h(i["mk"]), h(i["ciphertext"]), ad))


def _peer(d: dict[str, Any]) -> S.Peer:
    return S.Peer(d["installation_id"], h(d["signing_pub"]), h(d["identity_pub"]))


@cases("parley_pqxdh.json")
def test_pqxdh(v: dict[str, Any]) -> None:
    i = v["input"]
    alice, bob = _peer(i["alice"]), i["bob"]
    if "bundle" in i:  # initiator side: the bundle must be refused
        check(v, lambda: S.initiate(S.Installation.generate(), _peer(bob),
                                    S.parse_bundle(h(i["bundle"]), bob["installation_id"], h(bob["signing_pub"]))))
        return
    me = S.Installation(h(bob["signing_priv"]), h(bob["identity_priv"]))
    assert me.iid == bob["installation_id"]
    m = S.parse_message(h(i["message"])) if "error" not in v["expected"] else None
    keys = S.PrivatePrekeys()
    raw = S.dec(h(i["message"]))  # ids as named by the message: the vector supplies exactly one key of each
    keys.spk[raw[5]] = h(i["spk_priv"])
    if i["otpk_priv"] is not None and raw[6] is not None:
        keys.otpk[raw[6]] = h(i["otpk_priv"])
    keys.pq[(raw[7], raw[8])] = h(i["pqpk_seed"])
    out = check(v, lambda: S.respond(me, alice, h(i["message"]), keys, keygen=lambda: h(i["bob_ratchet_priv"])))
    if out is not None:
        session, pt, sk = out
        e = v["expected"]
        assert (sk.hex(), session.ad.hex(), session.sid.hex(), pt.hex()) == (e["sk"], e["ad"], e["sid"], e["plaintext"])
        assert m is not None and m["ek_a"].hex() == e["ephemeral_pub"]


@cases("parley_session.json")
def test_session(v: dict[str, Any]) -> None:
    i = v["input"]
    bob_me = S.Installation(h(i["bob"]["signing_priv"]), h(i["bob"]["identity_priv"]))
    alice = S.Session.from_bytes(h(i["alice_session"]))
    assert alice.to_bytes().hex() == i["alice_session"]  # the §5.3.6 serialisation round-trips
    bob: S.Session | None = None
    keys = S.PrivatePrekeys()
    first = S.dec(h(i["steps"][0]["message"]))
    keys.spk[first[5]] = h(i["spk_priv"])
    if first[6] is not None:
        keys.otpk[first[6]] = h(i["otpk_priv"])
    keys.pq[(first[7], first[8])] = h(i["pqpk_seed"])
    for step in i["steps"]:
        msg = h(step["message"])
        if step["op"] == "send":
            if step["sender"] == "alice":
                alice, out = alice.encrypt(h(step["plaintext"]))
            else:
                assert bob is not None
                bob, out = bob.encrypt(h(step["plaintext"]))
            assert out.hex() == step["message"]
        elif step["op"] == "deliver":
            gen = lambda: h(step["ratchet_priv"])  # noqa: E731
            if step["to"] == "bob" and bob is None:
                bob, pt, _ = S.respond(bob_me, _peer(i["alice"]), msg, keys, keygen=gen)
            elif step["to"] == "bob":
                bob, pt = bob.decrypt(msg, keygen=gen)
            else:
                alice, pt = alice.decrypt(msg, keygen=gen)
            assert pt.hex() == step["plaintext"]
        else:
            target = bob if step["to"] == "bob" else alice
            assert target is not None
            with pytest.raises(Exception) as info:
                target.decrypt(msg)
            assert type(info.value).__name__ == step["error"]
    assert bob is not None
    assert alice.to_bytes().hex() == v["expected"]["alice_session"]
    assert bob.to_bytes().hex() == v["expected"]["bob_session"]


@cases("parley_sealed.json")
def test_sealed(v: dict[str, Any]) -> None:
    i = v["input"]
    out = check(v, lambda: S.unseal(h(i["identity_priv"]), i["own_iid"], h(i["payload"])))
    if out is not None:
        e = v["expected"]
        assert (out[0], out[1].hex(), out[2].hex()) == (e["sender_iid"], e["sender_record"], e["message"])


def test_sealed_round_trip() -> None:
    me = S.Installation.generate()
    payload = S.seal(me.identity_pub, me.iid, "ab" * 16, b"rec", b"msg")
    assert S.unseal(me.identity_priv, me.iid, payload) == ("ab" * 16, b"rec", b"msg")


@cases("parley_content_padding.json")
def test_content_padding(v: dict[str, Any]) -> None:
    i = v["input"]
    if "padded" in i:
        check(v, lambda: S.parse_content(h(i["padded"])))
        return
    c = S.content(i["message_id"], i["sender"], i["recipient"], i["sent_at"], i["text"])
    assert c.hex() == v["expected"]["content"]
    assert S.pad(c).hex() == v["expected"]["padded"]
    assert S.unpad(S.pad(c)) == c
    want = {k: i[k] for k in ("message_id", "sender", "recipient", "sent_at", "text")}
    assert S.parse_content(S.pad(c)) == {**want, "type": "text", "extra": []}


def _identity_vectors() -> list[dict[str, Any]]:
    return list(load("identity.json")["vectors"])


@pytest.mark.parametrize("v", _identity_vectors(), ids=lambda v: v["name"])
def test_identity(v: dict[str, Any]) -> None:
    # every vector here is a statement; a new kind must get its own check, not pass unseen
    assert v.get("text") is not None and v.get("action") in ("authorize", "revoke"), v["name"]
    key = h(v["wallet_key"])
    assert S.wallet_address(key) == v["address"]
    text = S.statement_text(v["action"], v["address"], v["chain_id"], v["installation_id"], v["issued_at"],
                            h(v["nonce"]), h(v["signing_pub"]), h(v["identity_pub"]))
    assert text == v["text"]
    if v["signing_pub"] is not None:
        assert S.installation_id(h(v["signing_pub"]), h(v["identity_pub"])) == v["installation_id"]
        assert S.ed_public(h(v["signing_private"])).hex() == v["signing_pub"]
        assert S.x25519_public(h(v["identity_private"])).hex() == v["identity_pub"]
    assert S.eip191_hash(text).hex() == v["eip191_hash"]
    sig = S.wallet_sign(key, text)
    assert sig.hex() == v["signature"]
    assert S.record(text, sig).hex() == v["record"]
    assert S.parse_record(h(v["record"])) == (text, sig)
    assert S.record_id(text) == v["record_id"]


@cases("parley_auth.json")
def test_auth(v: dict[str, Any]) -> None:
    """§7 Authentication: the signed bytes, the Ed25519 signature over them, the two JSON bodies."""
    i = v["input"]
    iid, ch, spub = i["installation_id"], h(i["challenge"]), h(i["signing_pub"])
    assert S.installation_id(spub, h(i["identity_pub"])) == iid
    assert S.ed_public(h(i["signing_priv"])) == spub
    if "signature" in i:  # negative: a signature over other bytes does not verify as the auth signature
        check(v, lambda: S.auth_verify(spub, iid, ch, h(i["signature"])))
        return
    e = v["expected"]
    assert S.auth_input(iid, ch).hex() == e["message"]
    sig = S.auth_sign(h(i["signing_priv"]), iid, ch)
    assert sig.hex() == e["signature"]
    S.auth_verify(spub, iid, ch, sig)
    assert R.challenge_request_body(iid) == e["challenge_request"]
    assert R.token_request_body(iid, ch, sig) == e["token_request"]


@cases("parley_content.json")
def test_content(v: dict[str, Any]) -> None:
    """§6.1 and §10.2: encode (content, padding) and the decoder's accept/refuse rules."""
    i, e = v["input"], v["expected"]
    if "content_compact" in i:  # prefix ‖ fill·count, padded by the rule
        cc = i["content_compact"]
        padded = S.pad(h(cc["prefix"]) + h(cc["fill"]) * cc["count"])
        assert len(padded) == e.get("padded_len", len(padded))
        out = check(v, lambda: S.parse_content(padded))
        if out is not None:
            assert len(out["text"].encode()) == e["text_bytes"]
        return
    if "padded" in i:  # decode-only vectors: negatives, 'lax:' and 'later:'
        out = check(v, lambda: S.parse_content(h(i["padded"])))
        if out is not None:
            assert e["decodes"] is True and out["sender"] == e["sender"]
            if "content_type" in e:
                assert (out["type"], out["text"]) == (e["content_type"], e["text"])
            if e.get("sender_relays") is not None:  # §6.1 (1.1): the eighth item of a text, a byte string
                assert out["type"] == "text" and out["extra"][0] == h(e["sender_relays"])
                assert len(out["extra"][0]) <= 4096
            elif "sender_relays" in e and out["type"] == "text" and out["extra"]:
                # not a relay list: another type, or a byte string over 4096 bytes (ignored by a receiver)
                assert not isinstance(out["extra"][0], bytes) or len(out["extra"][0]) > 4096
        return
    c = S.content(i["message_id"], i["sender"], i["recipient"], i["sent_at"], i["text"])
    assert c.hex() == e["content"]
    assert S.pad(c).hex() == e["padded"]
    assert S.parse_content(h(e["padded"])) == {**{k: i[k] for k in ("message_id", "sender", "recipient", "sent_at", "text")},
                                               "type": "text", "extra": []}


@cases("parley_prekeys.json")
def test_prekeys(v: dict[str, Any]) -> None:
    """§4: build signed prekeys, the upload body and `[1, body, sig]`, two bundles; parse and verify them;
    every negative upload or bundle refused by the layer the vector names (None: the relay's URL check)."""
    i, e = v["input"], v["expected"]
    spub = h(i["signing_pub"])
    assert S.ed_public(h(i["signing_priv"])) == spub
    assert S.installation_id(spub, h(i["identity_pub"])) == i["installation_id"]
    if "bundle" in i:
        check(v, lambda: S.parse_bundle(h(i["bundle"]), i["installation_id"], spub))
        return
    if "upload" in i:
        def run() -> S.Upload:
            up = S.parse_upload(h(i["upload"]))
            S.verify_upload(spub, up)
            return up

        if e.get("error") is not None:
            check(v, run)
            return
        up = run()  # the client takes it; only the relay's check that the upload names the URL's id decides
        if "otpks" in e:
            assert len(up.otpks) == e["otpks"]
        assert (up.iid == i["url_installation_id"]) == (e["relay_status"] == 200)
        return
    sk, iid = h(i["signing_priv"]), i["installation_id"]
    spk = S.signed_prekey(sk, S.SPK, i["spk"]["id"], h(i["spk"]["pub"]))
    assert S.x25519_public(h(i["spk"]["priv"])) == h(i["spk"]["pub"])
    otpks = [S.one_time_prekey(k["id"], h(k["pub"])) for k in i["otpks"]]
    for k in i["otpks"]:
        assert S.x25519_public(h(k["priv"])) == h(k["pub"])
    pq_otpks = [S.signed_prekey(sk, S.PQ_OTPK, k["id"], S.mlkem_public(h(k["seed"]))) for k in i["pq_otpks"]]
    pq_lrpk = S.signed_prekey(sk, S.PQ_LRPK, i["pq_lrpk"]["id"], S.mlkem_public(h(i["pq_lrpk"]["seed"])))
    assert S.prekey_signed_bytes(*spk[:3]).hex() == e["spk_signed"]
    assert S.prekey_signed_bytes(*pq_otpks[0][:3]).hex() == e["pq_otpk_signed"]
    assert S.enc(spk).hex() == e["spk"]
    assert S.enc(pq_otpks[0]).hex() == e["pq_otpk"]
    assert S.enc(pq_lrpk).hex() == e["pq_lrpk"]
    assert [S.enc(o).hex() for o in otpks] == e["otpks"]
    assert S.prekey_body(iid, i["issued_at"], spk, otpks, pq_otpks, pq_lrpk).hex() == e["body"]
    upload = S.prekey_upload(sk, iid, i["issued_at"], spk, otpks, pq_otpks, pq_lrpk)
    assert upload.hex() == e["upload"]
    up = S.parse_upload(upload)
    assert (up.iid, up.issued_at, up.spk, up.otpks, up.pq_otpks, up.pq_lrpk) == (iid, i["issued_at"], spk, otpks, pq_otpks, pq_lrpk)
    assert up.sig.hex() == e["upload_signature"]
    S.verify_upload(spub, up)
    for key, otpk, pq in (("bundle_with_one_time_keys", otpks[0], pq_otpks[0]), ("bundle_last_resort", None, pq_lrpk)):
        assert S.encode_bundle(iid, spk, otpk, pq).hex() == e[key]
        b = S.parse_bundle(h(e[key]), iid, spub)
        assert (b.spk_id, b.spk, b.otpk_id, b.otpk, b.pq_kind, b.pq_id, b.pq) == (
            spk[1], spk[2], otpk[1] if otpk else None, otpk[2] if otpk else None, pq[0], pq[1], pq[2])


@cases("parley_relay_list.json")
def test_relay_list(v: dict[str, Any]) -> None:
    """Relay lists (1.1): build body and `[1, body, sig]` from the fields; every negative record refused by the
    layer the vector names (None: only the relay refuses); `url:` vectors: which relay URLs are canonical."""
    i, e = v["input"], v["expected"]
    if "url" in i:
        assert S.is_canonical_relay_url(i["url"]) is e["canonical"]
        if e["normalised"] is not None:
            assert S.is_canonical_relay_url(e["normalised"])
        return
    spub = h(i["signing_pub"])
    assert S.ed_public(h(i["signing_priv"])) == spub
    assert S.installation_id(spub, h(i["identity_pub"])) == i["installation_id"]
    if "record" in i:
        def run() -> S.RelayListRecord:
            rl = S.parse_relay_list(h(i["record"]))
            S.verify_relay_list(spub, rl)
            return rl

        if e.get("error") is not None:
            check(v, run)
            return
        rl = run()  # the client takes it; only the relay's own state (URL, stored version, its index) refuses it
        if e.get("relay_code") == "bad_request":
            assert rl.iid != i["url_installation_id"]
        return
    body = S.relay_list_body(i["address"], i["installation_id"], i["version"], i["issued_at"], i["relays"])
    assert body.hex() == e["body"]
    rec = S.relay_list(h(i["signing_priv"]), i["address"], i["installation_id"], i["version"], i["issued_at"], i["relays"])
    assert rec.hex() == e["record"] and rec[-64:].hex() == e["signature"]
    rl = S.parse_relay_list(rec)
    assert (rl.address, rl.iid, rl.version, rl.issued_at, rl.relays) == (
        i["address"], i["installation_id"], i["version"], i["issued_at"], i["relays"])
    S.verify_relay_list(spub, rl)


@cases("identity_negative.json")
def test_identity_negative(v: dict[str, Any]) -> None:
    """§3: one vector per MUST-reject rule; the client refuses each with the same class (InvalidStatement
    for text and record rules, BadSignature for the signature, IdentityError for a log address that is not
    one). The vectors' messages are the bridge's own words, so only the class is compared."""
    i, e = v["input"], v["expected"]
    record = h(i["record"])
    if i["text"] is not None:  # the text named is the one inside the record (however malformed the record)
        assert cbor2.loads(record)[2] == i["text"]
    if "error" in e:
        check(v, lambda: S.verify_record_for(i["address"], record))
        if e["error"] != "IdentityError":
            assert S.installations(i["address"], [record]) == {}
        return
    text, _sig = S.parse_record(record)  # a bound: the record is well formed
    if "error_after_decode" in e:
        with pytest.raises(Exception) as info:
            S.verify_record_for(i["address"], record)
        assert type(info.value).__name__ == e["error_after_decode"], info.value
        return
    st = S.verify_record_for(i["address"], record)
    assert (st.iid, st.action) == (e["installation_id"], e["action"])
    if "record_id" in e:
        assert S.record_id(text) == e["record_id"]
    assert set(S.installations(i["address"], [record])) == ({st.iid} if st.action == "authorize" else set())


@cases("identity_active_set.json")
def test_identity_active_set(v: dict[str, Any]) -> None:
    """§3 "The active installation set" on the client's own parser and verifier, in both log orders."""
    i, e = v["input"], v["expected"]
    records = [h(r) for r in i["records"]]
    for log in (records, list(reversed(records))):
        active = S.installations(i["address"], log)
        assert {iid: rid for iid, (_st, rid) in active.items()} == e["active"]
        for iid, (st, rid) in active.items():
            assert st.action == "authorize" and S.installation_id(st.signing_pub, st.identity_pub) == iid
    revoked = set()
    for r in records:
        try:
            st = S.verify_record_for(i["address"], r)
        except S.IdentityError:
            continue
        if st.action == "revoke":
            revoked.add(st.iid)
    assert sorted(revoked) == e["revoked"]
    assert not revoked & set(e["active"])


@cases("parley_ratchet_limits.json")
def test_ratchet_limits(v: dict[str, Any]) -> None:
    """§5.3.4/§5.3.5 scripts (docs/test-vectors.md "Ratchet scripts") replayed through the client's ratchet."""
    i, want_steps = v["input"], v["expected"]["steps"]
    sk, spk_priv, ad = h(i["sk"]), h(i["bob_spk_priv"]), h(i["ad"])
    states = {"alice": S.Ratchet.alice(sk, S.x25519_public(spk_priv), keygen=lambda: h(i["alice_ratchet_priv"])),
              "bob": S.Ratchet.bob(sk, spk_priv)}
    sent: dict[str, list[tuple[bytes, bytes]]] = {"alice": [], "bob": []}
    assert len(i["steps"]) == len(want_steps)
    for k, (step, want) in enumerate(zip(i["steps"], want_steps)):
        where = f"step {k} {step}"
        if step["op"] == "send":
            who, digest = step["by"], hashlib.sha256()
            for _ in range(step["count"]):
                states[who], header, ct = states[who].encrypt(f"{who}:{len(sent[who])}".encode(), ad)
                sent[who].append((header, ct))
                digest.update(header + ct)
            assert (len(sent[who]) - 1, digest.hexdigest()) == (want["last"], want["sha256"]), where
            continue
        if step["op"] == "forge_pn":
            states[step["by"]] = replace(states[step["by"]], pn=step["pn"])
            continue
        assert step["op"] == "deliver", where
        to = step["to"]
        header, ct = sent["alice" if to == "bob" else "bob"][step["index"]]
        priv = hashlib.sha256(f"{i['seed']}/{k}".encode()).digest()
        if "error" in want:
            with pytest.raises(Exception) as info:
                states[to].decrypt(header, ct, ad, keygen=lambda: priv)
            assert type(info.value).__name__ == want["error"], f"{where}: {info.value!r}"
        else:
            states[to], pt = states[to].decrypt(header, ct, ad, keygen=lambda: priv)
            assert pt.decode() == want["plaintext"], where
        st = states[to]
        got = (len(st.skipped), len(st.old_dhr), hashlib.sha256(S.enc(st.to_list())).hexdigest())
        assert got == (want["skipped"], want["old_dhr"], want["state_sha256"]), where


def test_ratchet_limit_constants() -> None:
    """§5.3.5: the numbers the scripts are about."""
    assert (S.MAX_SKIP, S.MAX_STORED_SKIPPED, S.MAX_OLD_DHR) == (1000, 2000, 32)


@cases("parley_local_api_proof.json")
def test_local_api_proof(v: dict[str, Any]) -> None:
    """§8.1 gate 4: the bridge's Ed25519 proof over Origin, Host and hello's challenge, and the pairing HMACs."""
    i, e = v["input"], v["expected"]
    priv, ch = h(i["private"]), h(i["challenge"])
    assert S.ed_public(priv).hex() == e["public"]
    msg = S.bridge_proof_message(i["origin"], i["host"], ch)
    assert msg.hex() == e["message"]
    assert S.ed_sign(priv, msg).hex() == e["signature"]
    S.ed_verify(h(e["public"]), h(e["signature"]), msg)
    assert S.pair_proof(i["code"], "client", ch, h(e["public"])).hex() == e["pair_client"]
    assert S.pair_proof(i["code"], "bridge", ch, h(e["public"])).hex() == e["pair_bridge"]


# §7 relay answers: tests/vectors/relay_answers.json replayed against a `parley relay` process ------------
RELAY_SCRIPT = load("relay_answers.json")
VOLATILE = {
    "<base64: 32 random bytes>": lambda x: isinstance(x, str) and len(R.unb64(x)) == 32,
    "<integer: unix seconds>": lambda x: type(x) is int and 1_700_000_000 <= x <= 1_900_000_000,
    "<string: opaque bearer token>": lambda x: isinstance(x, str) and 0 < len(x) <= 256,  # §7: at most 256
}
# The script runs on a relay with small quotas (input.settings) and a clock it moves (advance_clock). A
# `parley relay` process is started with the settings its command line has (CLI_SETTINGS); it cannot take
# the others (§7 defaults) nor the moved clock. The steps whose answer depends on those are not sent: each
# is a refusal, which §7 says changes nothing, so every other step sees the same relay state as in the recording.
CLI_SETTINGS = {"topic_max_envelopes": "inbox_max_envelopes"}  # script setting -> `parley relay --inbox-max-envelopes`
NEEDS_SETTINGS = {"log_full": "max_identity_records", "too_large": "max_envelope",
                  "target_rate_limited": "claim_target_burst",
                  "bucket_too_large": "bucket_max_records", "rate_limited": "bucket_burst",
                  "challenge_expired": "the clock (advance_clock)"}


def _matches(want: Any, got: Any, where: str) -> None:
    if isinstance(want, str) and want in VOLATILE:
        assert VOLATILE[want](got), f"{where}: {got!r} is not {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: {got!r} has not the keys {list(want)}"
        for k in want:
            _matches(want[k], got[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r}"
        for n, (w, g) in enumerate(zip(want, got)):
            _matches(w, g, f"{where}[{n}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def _skipped_steps() -> list[int]:
    answers = RELAY_SCRIPT["vectors"][0]["expected"]["answers"]
    return [k for k, a in enumerate(answers) if a is None or a["body"].get("error", {}).get("code") in NEEDS_SETTINGS]


def test_relay_answers_skip_only_settings_steps() -> None:
    """The steps left out are exactly the clock moves and the refusals that need the script's settings."""
    steps = RELAY_SCRIPT["vectors"][0]["input"]["steps"]
    answers = RELAY_SCRIPT["vectors"][0]["expected"]["answers"]
    skipped = _skipped_steps()
    assert [k for k in skipped if steps[k]["op"] == "advance_clock"] == [k for k, s in enumerate(steps) if s["op"] == "advance_clock"]
    assert all(answers[k] is None or answers[k]["status"] >= 400 for k in skipped)
    assert len(skipped) == len(NEEDS_SETTINGS) + 1  # one step per code, one clock move
    assert set(RELAY_SCRIPT["vectors"][0]["input"]["settings"]) - set(NEEDS_SETTINGS.values()) - set(CLI_SETTINGS) == {
        "claim_target_rate", "bucket_rate"}  # the rates that go with the bursts above
    sent_refusals = [a["body"]["error"]["code"] for k, a in enumerate(answers) if a and k not in skipped and a["status"] >= 400]
    assert "inbox_full" in sent_refusals  # sent: the relay is started with the script's topic_max_envelopes


@pytest.mark.parametrize("n", range(len(RELAY_SCRIPT["vectors"])), ids=[v["name"] for v in RELAY_SCRIPT["vectors"]])
def test_relay_answers(tmp_path: Path, n: int) -> None:
    """Every other step: the same status and body (volatile values by type), key order included. Vector 1
    (the 1.4 batch publish) needs no setting a `parley relay` command line cannot give."""
    vec = RELAY_SCRIPT["vectors"][n]
    i, want_answers = vec["input"], vec["expected"]["answers"]
    assert n == 0 or set(i["settings"]) <= set(CLI_SETTINGS)
    skipped = set(_skipped_steps()) if n == 0 else set()
    proc, url = start_relay(tmp_path / "relay.db", **{flag: i["settings"][name] for name, flag in CLI_SETTINGS.items()})
    relay = R.Relay(url)
    answers: list[Any] = []
    try:
        for k, (step, want) in enumerate(zip(i["steps"], want_answers, strict=True)):
            if k in skipped:
                answers.append(None)
                continue
            a = R.replay_step(relay, step, answers, i["installations"])
            answers.append(a.body)
            where = f"step {k} ({step['why']})"
            assert a.status == want["status"], f"{where}: {a.status} {a.body}"
            assert a.content_type.startswith("application/json"), where
            _matches(want["body"], a.body, where)
    finally:
        relay.close()
        proc.stop()


def _content_type_extras(ctype: str, f: dict[str, Any]) -> list[Any]:
    """PROTOCOL.md §6.7's extras, from the vector's fields (written from the document, not the bridge)."""
    def file(x: dict[str, Any]) -> list[Any]:
        return [x["url"], h(x["key"]), h(x["nonce"]), h(x["digest"]), h(x["sha256"]), x["size"], x["name"], x["mime"]]
    return {
        "reply": lambda: [f.get("reply_to")],
        "attachment": lambda: [[file(x) for x in f.get("files", [])], f.get("reply_to"), f.get("caption")],
        "reaction": lambda: [f.get("target"), f.get("action"), f.get("emoji")],
        "edit": lambda: [f.get("target"), f.get("new_text")],
        "delete": lambda: [f.get("target")],
        "read-receipt": lambda: [f.get("ids")],
        "typing": lambda: [f.get("typing")],
        "consent": lambda: [f.get("peer"), f.get("state"), f.get("at")],
    }[ctype]()


@cases("parley_content_types.json")
def test_content_types_read_by_a_1_1_client(v: dict[str, Any]) -> None:
    """§6.7 and §10.2: this client implements 1.1. Each 1.2 content it is given encodes to the vector's
    bytes with its own CBOR encoder, and its 1.1 decoder accepts it and shows the fallback text (a
    1.1 peer never quarantines a 1.2 content). The 1.2 refusals (negatives) are the bridge's, not a 1.1 client's."""
    i, e = v["input"], v["expected"]
    if "error" in e:
        return
    if "padded" in i:  # a later type
        out = S.parse_content(h(i["padded"]))
        assert (out["type"], out["text"]) == (e["content_type"], e["text"])
        return
    fields = [S.V, i["content_type"], i["message_id"], i["sender"], i["recipient"], i["sent_at"], e["text"]]
    c = S.enc(fields + _content_type_extras(i["content_type"], i["fields"]))
    assert c.hex() == e["content"] and S.pad(c).hex() == e["padded"]
    out = S.parse_content(h(e["padded"]))
    assert (out["type"], out["text"]) == (i["content_type"], e["text"])


def test_every_vector_file_is_covered() -> None:
    """Each tests/vectors/*.json is checked by a test in this file or in NOT_COVERED with a reason, so a new
    family cannot be added without the conformance client either reproducing it or saying why not."""
    files = {p.name for p in VECTORS.glob("*.json")}
    assert not COVERED & set(NOT_COVERED), COVERED & set(NOT_COVERED)
    assert set(NOT_COVERED) <= files, set(NOT_COVERED) - files
    assert all(reason.strip() for reason in NOT_COVERED.values())
    assert files - set(NOT_COVERED) == COVERED, f"neither covered nor in NOT_COVERED: {sorted(files - COVERED - set(NOT_COVERED))}"
