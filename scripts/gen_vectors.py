#!/usr/bin/env python3
"""Write Parley's crypto test vectors to tests/vectors/*.json (format: docs/test-vectors.md).

Published vectors (RFC 5869, RFC 4231, RFC 7748, RFC 8032, libsignal) are literal constants copied
from their source, never computed here. Our own vectors are generated from fixed seeds
(``seed(label) = SHA-256("parley-vectors/" ‖ label)``) with every random input injected. The key
derivations are computed here with an independent stdlib HKDF/HMAC (hashlib + hmac), not with
bridge.crypto.kdf, so the checked-in vectors are a cross-check, not a copy of the code under test.
ML-KEM encapsulation and HPKE randomness cannot be injected, so those vectors are recorded once in
the decrypt direction; re-running this script therefore changes the PQXDH/session/sealed files
(that is expected; the tests check the checked-in bytes).

Usage: python scripts/gen_vectors.py [--record] [--check]
  (no flag: rewrite the deterministic families; --record: also re-record the PQXDH, session and sealed
  families, whose bytes change on every run; --check: regenerate the deterministic families in memory
  and compare them with the files on disk, and verify the recorded PQXDH, session and sealed families
  in the decrypt direction (independent reference derivation, replay, exact error classes), and say
  why each of those cannot be regenerated; exit 1 on a difference or on a file in the directory no
  family covers. --vectors DIR checks another copy of tests/vectors)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.crypto import primitives as P  # noqa: E402
from bridge.crypto import ratchet, sealed, session  # noqa: E402
from bridge.protocol import wire  # noqa: E402
from bridge.protocol.ids import installation_id  # noqa: E402
from bridge.protocol.prekeys import PQ_LRPK, PQ_OTPK, SPK, Bundle, OneTimePrekey, sign_prekey  # noqa: E402

from scripts.backup_vectors import backup_family  # noqa: E402  (protocol 1.3, §12.1-12.2)
from scripts.content_type_vectors import content_types_family  # noqa: E402  (protocol 1.2, §6.7)

OUT = ROOT / "tests" / "vectors"
GEN = "scripts/gen_vectors.py"


def seed(label: str, n: int = 32) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"parley-vectors/{label}/{i}".encode()).digest()
        i += 1
    return out[:n]


# --- independent reference KDFs (stdlib only) --------------------------------

def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def ref_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = ref_hmac(salt or bytes(32), ikm)
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = ref_hmac(prk, t + info + bytes([i]))
        okm += t
        i += 1
    return okm[:length]


def hx(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def family(name: str, source: str, description: str, vectors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"family": name, "source": source, "description": description, "vectors": vectors}


# --- published ---------------------------------------------------------------

def rfc5869() -> dict[str, Any]:
    v = [
        dict(name="A.1 basic", input=dict(ikm="0b" * 22, salt="000102030405060708090a0b0c", info="f0f1f2f3f4f5f6f7f8f9", length=42),
             expected=dict(prk="077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
                           okm="3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")),
        dict(name="A.2 longer inputs", input=dict(ikm=bytes(range(0x00, 0x50)).hex(), salt=bytes(range(0x60, 0xB0)).hex(),
                                                  info=bytes(range(0xB0, 0x100)).hex(), length=82),
             expected=dict(prk="06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
                           okm="b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
                               "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87")),
        dict(name="A.3 zero-length salt and info", input=dict(ikm="0b" * 22, salt="", info="", length=42),
             expected=dict(prk="19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
                           okm="8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")),
    ]
    return family("hkdf-sha256", "RFC 5869, Appendix A, test cases 1-3 (https://www.rfc-editor.org/rfc/rfc5869#appendix-A)",
                  "HKDF-SHA256: input ikm/salt/info (hex), length; expected prk and okm (hex).", v)


def rfc4231() -> dict[str, Any]:
    v = [
        dict(name="4.2 test case 1", input=dict(key="0b" * 20, data=b"Hi There".hex()),
             expected=dict(mac="b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")),
        dict(name="4.3 test case 2", input=dict(key=b"Jefe".hex(), data=b"what do ya want for nothing?".hex()),
             expected=dict(mac="5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")),
    ]
    return family("hmac-sha256", "RFC 4231, §4.2-4.3, HMAC-SHA-256 results (https://www.rfc-editor.org/rfc/rfc4231#section-4)",
                  "HMAC-SHA256: input key, data (hex); expected mac (hex).", v)


def rfc7748() -> dict[str, Any]:
    v = [
        dict(name="5.2 vector 1", input=dict(scalar="a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                                             u="e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
             expected=dict(output="c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")),
        dict(name="5.2 vector 2", input=dict(scalar="4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                                             u="e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
             expected=dict(output="95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")),
        dict(name="6.1 Alice public key", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                                                     u="09" + "00" * 31),
             expected=dict(output="8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")),
        dict(name="6.1 Bob public key", input=dict(scalar="5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                                                   u="09" + "00" * 31),
             expected=dict(output="de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")),
        dict(name="6.1 shared secret (Alice side)", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                                                              u="de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
             expected=dict(output="4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")),
        dict(name="6.1 shared secret (Bob side)", input=dict(scalar="5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                                                            u="8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
             expected=dict(output="4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")),
        # negative vectors (ours, §6.1 says to check for the all-zero output)
        dict(name="negative: u=0 gives the all-zero secret", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                                                                        u="00" * 32), expected=dict(error="CryptoError")),
        dict(name="negative: u=1 (low order) gives the all-zero secret", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                                                                                    u="01" + "00" * 31), expected=dict(error="CryptoError")),
        dict(name="negative: 31-byte u", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                                                    u="09" + "00" * 30), expected=dict(error="CryptoError")),
        dict(name="negative: 33-byte scalar", input=dict(scalar="77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a00",
                                                         u="09" + "00" * 31), expected=dict(error="CryptoError")),
    ]
    return family("x25519", "RFC 7748, §5.2 (test vectors) and §6.1 (Diffie-Hellman) (https://www.rfc-editor.org/rfc/rfc7748); "
                  "negative vectors: ours", "X25519(scalar, u): input scalar, u (hex); expected output (hex) or error.", v)


def rfc8032() -> dict[str, Any]:
    s1 = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    s2 = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    p1 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    p2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    bad = bytearray(bytes.fromhex(s2)); bad[0] ^= 0x01  # noqa: E702
    v = [
        dict(name="7.1 TEST 1", input=dict(secret="9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", public=p1, message="", signature=s1),
             expected=dict(valid=True)),
        dict(name="7.1 TEST 2", input=dict(secret="4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", public=p2, message="72", signature=s2),
             expected=dict(valid=True)),
        dict(name="negative: TEST 2 signature with one bit flipped", input=dict(secret=None, public=p2, message="72", signature=bad.hex()),
             expected=dict(error="InvalidSignature")),
        dict(name="negative: TEST 1 signature on another message", input=dict(secret=None, public=p1, message="72", signature=s1),
             expected=dict(error="InvalidSignature")),
        dict(name="negative: 63-byte signature", input=dict(secret=None, public=p2, message="72", signature=s2[:-2]),
             expected=dict(error="InvalidSignature")),
    ]
    return family("ed25519", "RFC 8032, §7.1, TEST 1 and TEST 2 (https://www.rfc-editor.org/rfc/rfc8032#section-7.1); negative vectors: ours",
                  "Ed25519: input secret (hex or null), public, message, signature; expected valid=true (sign reproduces the "
                  "signature, verify accepts) or error.", v)


def libsignal_chain() -> dict[str, Any]:
    v = [dict(
        name="test_chain_key_derivation",
        input=dict(chain_key="8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f", info=b"WhisperMessageKeys".hex()),
        expected=dict(cipher_key="bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217",
                      mac_key="c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b",
                      next_chain_key="28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d"),
    )]
    return family("libsignal-chain-key",
                  "signalapp/libsignal, rust/protocol/src/ratchet/keys.rs, test test_chain_key_derivation "
                  "(same values as the Java ChainKeyTest). cipher_key/mac_key are the first 64 bytes of "
                  "HKDF-SHA256(salt=none, ikm=HMAC(ck,0x01), info='WhisperMessageKeys', L=80)",
                  "KDF_CK + message-key expansion with libsignal's info string: input chain_key, info (hex); "
                  "expected cipher_key, mac_key, next_chain_key.", v)


# --- ours: deterministic ---------------------------------------------------------

def kdf_rk_family() -> dict[str, Any]:
    v = []
    for i in range(3):
        rk, dh = seed(f"kdf_rk/{i}/rk"), seed(f"kdf_rk/{i}/dh")
        out = ref_hkdf(dh, rk, b"Parley_Ratchet_v1", 64)
        v.append(dict(name=f"kdf_rk {i}", input=dict(rk=rk.hex(), dh_out=dh.hex()), expected=dict(rk=out[:32].hex(), ck=out[32:].hex())))
    v.append(dict(name="negative: 31-byte dh_out", input=dict(rk=seed("x").hex(), dh_out=seed("y")[:31].hex()), expected=dict(error="CryptoError")))
    v.append(dict(name="negative: 33-byte root key", input=dict(rk=(seed("x") + b"\0").hex(), dh_out=seed("y").hex()), expected=dict(error="CryptoError")))
    return family("parley-kdf-rk", f"ours: {GEN} (reference HKDF from Python's hmac/hashlib)",
                  "KDF_RK: HKDF-SHA256(salt=rk, ikm=dh_out, info='Parley_Ratchet_v1', L=64) -> rk || ck.", v)


def kdf_ck_family() -> dict[str, Any]:
    v = []
    for i in range(3):
        ck = seed(f"kdf_ck/{i}")
        v.append(dict(name=f"kdf_ck {i}", input=dict(ck=ck.hex()), expected=dict(ck=ref_hmac(ck, b"\x02").hex(), mk=ref_hmac(ck, b"\x01").hex())))
    v.append(dict(name="negative: 16-byte chain key", input=dict(ck=seed("z")[:16].hex()), expected=dict(error="CryptoError")))
    return family("parley-kdf-ck", f"ours: {GEN} (reference HMAC from Python's hmac)",
                  "KDF_CK: mk = HMAC-SHA256(ck, 0x01), ck' = HMAC-SHA256(ck, 0x02).", v)


def message_keys_family() -> dict[str, Any]:
    v = []
    for i in range(3):
        mk = seed(f"mk/{i}")
        out = ref_hkdf(mk, bytes(32), b"Parley_MessageKeys_v1", 80)
        v.append(dict(name=f"message keys {i}", input=dict(mk=mk.hex()),
                      expected=dict(enc_key=out[:32].hex(), auth_key=out[32:64].hex(), iv=out[64:].hex())))
    v.append(dict(name="negative: 0-byte message key", input=dict(mk=""), expected=dict(error="CryptoError")))
    return family("parley-message-keys", f"ours: {GEN} (reference HKDF from Python's hmac/hashlib)",
                  "HKDF-SHA256(salt=32 zero bytes, ikm=mk, info='Parley_MessageKeys_v1', L=80) -> enc_key 32 || auth_key 32 || iv 16.", v)


def pqxdh_kdf_family() -> dict[str, Any]:
    v = []
    for i, ndh in enumerate((3, 4)):
        dhs = [seed(f"pqxdh_kdf/{i}/dh{j}") for j in range(ndh)]
        ss = seed(f"pqxdh_kdf/{i}/ss")
        sk = ref_hkdf(b"\xff" * 32 + b"".join(dhs) + ss, bytes(32), b"Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768", 32)
        v.append(dict(name=f"pqxdh sk with {ndh} DH outputs", input=dict(dh=[d.hex() for d in dhs], kem_ss=ss.hex()), expected=dict(sk=sk.hex())))
    v.append(dict(name="negative: only 2 DH outputs", input=dict(dh=[seed("a").hex(), seed("b").hex()], kem_ss=seed("c").hex()), expected=dict(error="CryptoError")))
    v.append(dict(name="negative: 31-byte DH3", input=dict(dh=[seed("a").hex(), seed("b").hex(), seed("c")[:31].hex()], kem_ss=seed("d").hex()),
                  expected=dict(error="CryptoError")))
    return family("parley-pqxdh-kdf", f"ours: {GEN} (reference HKDF from Python's hmac/hashlib)",
                  "SK = HKDF-SHA256(salt=32 zero bytes, ikm=0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS, "
                  "info='Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768', L=32).", v)


def header_family() -> dict[str, Any]:
    v = []
    for i, (pn, n) in enumerate(((0, 0), (3, 24), (1000, 2**32 - 1))):
        dh = P.x25519_public(seed(f"header/{i}"))
        enc = bytes([0x83, 0x58, 0x20]) + dh  # array(3), bytes(32)
        for x in (pn, n):  # canonical CBOR unsigned integers, written out by hand
            enc += (bytes([x]) if x < 24 else bytes([0x18, x]) if x < 256 else (b"\x19" + x.to_bytes(2, "big")) if x < 65536 else b"\x1a" + x.to_bytes(4, "big"))
        v.append(dict(name=f"header pn={pn} n={n}", input=dict(dh=dh.hex(), pn=pn, n=n), expected=dict(encoded=enc.hex())))
    dh = P.x25519_public(seed("header/0"))
    v += [
        dict(name="negative: 31-byte ratchet key", input=dict(encoded=("835f" if False else "83581f") + dh[:31].hex() + "0000"), expected=dict(error="WireError")),
        dict(name="negative: non-canonical integer", input=dict(encoded="835820" + dh.hex() + "1800" + "00"), expected=dict(error="WireError")),
        dict(name="negative: negative counter", input=dict(encoded="835820" + dh.hex() + "0020"), expected=dict(error="WireError")),
        dict(name="negative: counter above 2^32-1", input=dict(encoded="835820" + dh.hex() + "00" + "1b0000000100000000"), expected=dict(error="WireError")),
        dict(name="negative: 4 items", input=dict(encoded="845820" + dh.hex() + "000000"), expected=dict(error="WireError")),
    ]
    return family("parley-header", f"ours: {GEN} (canonical CBOR written out by hand)",
                  "Double Ratchet header: canonical CBOR [dh_pub (bytes 32), pn (uint32), n (uint32)]. Positive vectors "
                  "encode and decode; negative vectors must be rejected by decode.", v)


def encrypt_family() -> dict[str, Any]:
    v = []
    for i, pt in enumerate((b"", b"hello, parley", bytes(range(48)))):
        mk, ad = seed(f"enc/{i}/mk"), seed(f"enc/{i}/ad", 137)
        hb = ratchet.Header(P.x25519_public(seed(f"enc/{i}/dh")), i, i * 7).encode()
        keys = ref_hkdf(mk, bytes(32), b"Parley_MessageKeys_v1", 80)
        cbc = P.aes256_cbc_encrypt(keys[:32], keys[64:], pt)
        ct = cbc + ref_hmac(keys[32:64], ad + hb + cbc)
        v.append(dict(name=f"encrypt {len(pt)}-byte plaintext", input=dict(mk=mk.hex(), ad=ad.hex(), header=hb.hex(), plaintext=pt.hex()),
                      expected=dict(ciphertext=ct.hex())))
    base = v[1]["input"]
    ct = bytes.fromhex(v[1]["expected"]["ciphertext"])
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    for name, c, hd in (("tag bit flipped", flip(ct, len(ct) - 1), base["header"]),
                        ("ciphertext bit flipped", flip(ct, 0), base["header"]),
                        ("header changed", ct, flip(bytes.fromhex(base["header"]), 5).hex()),
                        ("tag truncated to 16 bytes", ct[:-16], base["header"]),
                        ("empty", b"", base["header"])):
        v.append(dict(name=f"negative: {name}", input=dict(mk=base["mk"], ad=base["ad"], header=hd, ciphertext=c.hex()),
                      expected=dict(error="DecryptError")))
    return family("parley-encrypt", f"ours: {GEN} (reference HKDF/HMAC from Python's hmac/hashlib; AES-256-CBC via primitives)",
                  "ENCRYPT(mk, plaintext, AD || header) -> AES-256-CBC(PKCS#7) || HMAC-SHA256(auth_key, AD || header || cbc). "
                  "Negative vectors give a ciphertext that DECRYPT must reject.", v)


# --- ours: recorded once (ML-KEM / HPKE randomness) ------------------------------------

def _ident(label: str) -> session.LocalIdentity:
    sp, spub = P.ed25519_keypair(seed(f"{label}/signing"))
    ip, ipub = P.x25519_keypair(seed(f"{label}/identity"))
    return session.LocalIdentity(installation_id(spub, ipub), sp, spub, ip, ipub)


def _remote(li: session.LocalIdentity) -> session.RemoteInstallation:
    return session.RemoteInstallation(li.installation_id, li.signing_pub, li.identity_pub)


def _bob_prekeys(bob: session.LocalIdentity, with_otpk: bool, pq_kind: str) -> tuple[dict[str, Any], Bundle]:
    spk_priv, spk_pub = P.x25519_keypair(seed("bob/spk"))
    ot_priv, ot_pub = P.x25519_keypair(seed("bob/otpk"))
    pq_seed, pq_pub = P.mlkem768_keypair(seed("bob/pqpk", 64))
    bundle = Bundle(bob.installation_id, sign_prekey(bob.signing_priv, SPK, 1, spk_pub),
                    OneTimePrekey(17, ot_pub) if with_otpk else None, sign_prekey(bob.signing_priv, pq_kind, 5, pq_pub))
    privs = dict(spk_priv=spk_priv.hex(), otpk_priv=ot_priv.hex() if with_otpk else None, pqpk_seed=pq_seed.hex())
    return privs, bundle


def _keys(li: session.LocalIdentity) -> dict[str, Any]:
    return dict(installation_id=li.installation_id, signing_priv=li.signing_priv.hex(), signing_pub=li.signing_pub.hex(),
                identity_priv=li.identity_priv.hex(), identity_pub=li.identity_pub.hex())


def pqxdh_family() -> dict[str, Any]:
    alice, bob = _ident("alice"), _ident("bob")
    v = []
    first_msg = b""
    for with_otpk, kind in ((True, PQ_OTPK), (False, PQ_LRPK)):
        privs, bundle = _bob_prekeys(bob, with_otpk, kind)
        s = session.initiate(alice, _remote(bob), bundle, ephemeral_priv=seed("alice/ek"), ratchet_priv=seed("alice/ratchet0"))
        pt = b"first message from alice"
        s, msg = session.encrypt(s, pt)
        # record what the initiator derived (SK is not kept in the session; recompute it through the responder)
        from bridge.crypto import pqxdh
        info = session._parse(msg)
        sk, ad, sid = pqxdh.respond(bob.identity_priv, bob.identity_pub, bob.installation_id, alice.installation_id,
                                    alice.identity_pub, info.ephemeral_pub, info.kem_ct, info.info.spk_id, info.info.otpk_id,
                                    info.info.pqpk_kind, info.info.pqpk_id, spk_priv=bytes.fromhex(privs["spk_priv"]),
                                    otpk_priv=None if privs["otpk_priv"] is None else bytes.fromhex(privs["otpk_priv"]),
                                    pqpk_seed=bytes.fromhex(privs["pqpk_seed"]))
        assert sid == s.sid and ad == s.ad
        v.append(dict(name=f"respond: {'with' if with_otpk else 'without'} one-time prekey, {kind}",
                      input=dict(alice=dict(installation_id=alice.installation_id, signing_pub=alice.signing_pub.hex(), identity_pub=alice.identity_pub.hex()),
                                 bob=_keys(bob), **privs, bob_ratchet_priv=seed("bob/ratchet1").hex(), message=msg.hex(),
                                 prekey_ids=dict(spk_id=bundle.spk.id, otpk_id=bundle.otpk.id if bundle.otpk else None,
                                                 pqpk_kind=bundle.pqpk.kind, pqpk_id=bundle.pqpk.id)),
                      expected=dict(sk=sk.hex(), ad=ad.hex(), sid=sid.hex(), ephemeral_pub=info.ephemeral_pub.hex(), plaintext=pt.hex())))
        if with_otpk:
            first_msg, first_in = msg, v[-1]["input"]
    o = wire.decode(first_msg)
    def mutate(idx: int, value: Any) -> str:
        x = list(o); x[idx] = value  # noqa: E702
        return wire.encode(x).hex()
    ct = bytearray(o[9]); ct[0] ^= 1  # noqa: E702
    body = bytearray(o[11]); body[-1] ^= 1  # noqa: E702
    negs = [
        ("KEM ciphertext changed (sid no longer matches)", dict(message=mutate(9, bytes(ct))), "SessionError"),
        ("ratchet tag changed", dict(message=mutate(11, bytes(body))), "DecryptError"),
        ("wrong one-time prekey private key", dict(otpk_priv=seed("other").hex()), "DecryptError"),
        ("one-time prekey named but none supplied", dict(otpk_priv=None), "SessionError"),
        ("wrong ML-KEM seed (implicit rejection, SK differs)", dict(pqpk_seed=seed("other", 64).hex()), "DecryptError"),
        ("identity key in message is not the sender's", dict(message=mutate(3, P.x25519_public(seed("mallory")))), "SessionError"),
        ("31-byte ephemeral key", dict(message=mutate(4, o[4][:31])), "SessionError"),
        ("1087-byte KEM ciphertext", dict(message=mutate(9, o[9][:-1])), "SessionError"),
    ]
    for name, change, err in negs:
        v.append(dict(name=f"negative: {name}", input={**first_in, **change}, expected=dict(error=err)))
    # all-zero DH: the "sender" identity key is a low-order point (installation id computed honestly from it)
    zero_ik = bytes(32)
    zi = dict(installation_id=installation_id(alice.signing_pub, zero_ik), signing_pub=alice.signing_pub.hex(), identity_pub=zero_ik.hex())
    v.append(dict(name="negative: sender identity key is a low-order point (all-zero DH1)",
                  input={**first_in, "alice": zi, "message": mutate(3, zero_ik)}, expected=dict(error="CryptoError")))
    # bad signature on the bundle (initiator side)
    privs, bundle = _bob_prekeys(bob, True, PQ_OTPK)
    badsig = bytearray(bundle.spk.sig); badsig[10] ^= 1  # noqa: E702
    from dataclasses import replace
    bad = replace(bundle, spk=replace(bundle.spk, sig=bytes(badsig)))
    v.append(dict(name="negative: initiate with a signed-prekey signature that does not verify",
                  input=dict(alice=_keys(alice), bob=dict(installation_id=bob.installation_id, signing_pub=bob.signing_pub.hex(),
                                                          identity_pub=bob.identity_pub.hex()), bundle=bad.encode().hex()),
                  expected=dict(error="InvalidSignature")))
    other = _ident("carol")
    v.append(dict(name="negative: initiate with a bundle for another installation",
                  input=dict(alice=_keys(alice), bob=dict(installation_id=other.installation_id, signing_pub=other.signing_pub.hex(),
                                                          identity_pub=other.identity_pub.hex()), bundle=bundle.encode().hex()),
                  expected=dict(error="SessionError")))
    return family("parley-pqxdh", f"ours: {GEN} (recorded once; ML-KEM encapsulation randomness cannot be injected)",
                  "PQXDH responder: Bob's keys and private prekeys + Alice's PreKey message -> SK, AD, sid and the first "
                  "plaintext (accept with bob_ratchet_priv injected). input.prekey_ids are the ids Bob's private prekeys are stored "
                  "under, which the message names. Vectors with 'bundle' run initiate() and must fail.", v)


def session_family() -> dict[str, Any]:
    alice, bob = _ident("alice"), _ident("bob")
    privs, bundle = _bob_prekeys(bob, True, PQ_OTPK)
    sa = session.initiate(alice, _remote(bob), bundle, ephemeral_priv=seed("alice/ek"), ratchet_priv=seed("alice/ratchet0"))
    sa0 = sa.to_bytes()
    sb: session.Session | None = None
    script = [("alice", b"A1: hi bob"), ("alice", b"A2: are you there?"), ("bob", b"B1: hi alice"), ("bob", b"B2: yes"),
              ("alice", b"A3: good"), ("bob", b"B3: bye"), ("alice", b"A4: out of order (delivered after A5)"),
              ("alice", b"A5: delivered first"), ("bob", b"B4: got both")]
    rk_i = 0
    sa = session.Session.from_bytes(sa0)
    steps: list[dict[str, Any]] = []
    def deliver_to_bob(m: bytes, pt: bytes) -> None:
        nonlocal sb, rk_i
        rp = seed(f"ratchet/{rk_i}"); rk_i += 1  # noqa: E702
        if sb is None:
            sb, got = session.accept(bob, _remote(alice), m, spk_priv=bytes.fromhex(privs["spk_priv"]),
                                     otpk_priv=bytes.fromhex(privs["otpk_priv"]), pqpk_seed=bytes.fromhex(privs["pqpk_seed"]), ratchet_priv=rp)
        else:
            sb, got = session.decrypt(sb, m, ratchet_priv=rp)
        assert got == pt
        steps.append(dict(op="deliver", to="bob", message=m.hex(), ratchet_priv=rp.hex(), plaintext=pt.hex()))
    def deliver_to_alice(m: bytes, pt: bytes) -> None:
        nonlocal sa, rk_i
        rp = seed(f"ratchet/{rk_i}"); rk_i += 1  # noqa: E702
        sa, got = session.decrypt(sa, m, ratchet_priv=rp)
        assert got == pt
        steps.append(dict(op="deliver", to="alice", message=m.hex(), ratchet_priv=rp.hex(), plaintext=pt.hex()))
    def send(frm: str, pt: bytes) -> bytes:
        nonlocal sa, sb
        if frm == "alice":
            sa, m = session.encrypt(sa, pt)
        else:
            assert sb is not None
            sb, m = session.encrypt(sb, pt)
        steps.append(dict(op="send", sender=frm, plaintext=pt.hex(), message=m.hex()))
        return m
    a1 = send("alice", script[0][1]); a2 = send("alice", script[1][1])  # noqa: E702
    deliver_to_bob(a1, script[0][1]); deliver_to_bob(a2, script[1][1])  # noqa: E702
    b1 = send("bob", script[2][1]); b2 = send("bob", script[3][1])  # noqa: E702
    deliver_to_alice(b1, script[2][1]); deliver_to_alice(b2, script[3][1])  # noqa: E702
    a3 = send("alice", script[4][1]); deliver_to_bob(a3, script[4][1])  # noqa: E702
    b3 = send("bob", script[5][1]); deliver_to_alice(b3, script[5][1])  # noqa: E702
    a4 = send("alice", script[6][1]); a5 = send("alice", script[7][1])  # noqa: E702
    deliver_to_bob(a5, script[7][1]); deliver_to_bob(a4, script[6][1])  # noqa: E702
    b4 = send("bob", script[8][1]); deliver_to_alice(b4, script[8][1])  # noqa: E702
    steps.append(dict(op="replay", to="bob", message=a3.hex(), error="DuplicateMessage"))
    steps.append(dict(op="replay", to="alice", message=b1.hex(), error="DuplicateMessage"))
    assert sb is not None
    v = [dict(name="full session: PreKey messages, ping-pong with DH ratchet steps, one out-of-order delivery, replays",
              input=dict(alice=_keys(alice), bob=_keys(bob), **privs, alice_session=sa0.hex(), steps=steps),
              expected=dict(alice_session=sa.to_bytes().hex(), bob_session=sb.to_bytes().hex()))]
    return family("parley-session", f"ours: {GEN} (recorded once; the initial Alice session pins the ML-KEM ciphertext, "
                  "every later byte is deterministic)",
                  "Replay the steps in order from alice_session (initiator state right after initiate) and Bob's keys: "
                  "'send' must reproduce message byte for byte; 'deliver' (accept for Bob's first, else decrypt, with "
                  "ratchet_priv injected) must give plaintext; 'replay' must raise error. Final states must serialise to "
                  "the expected bytes.", v)


def sealed_family() -> dict[str, Any]:
    alice, bob = _ident("alice"), _ident("bob")
    rec, msg = b"opaque sender record", b"inner session message bytes"
    payload = sealed.seal(bob.identity_pub, bob.installation_id, alice.installation_id, rec, msg)
    base = dict(identity_priv=bob.identity_priv.hex(), own_iid=bob.installation_id, payload=payload.hex())
    hp = wire.decode(payload)[1]
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    v = [
        dict(name="open", input=base, expected=dict(sender_iid=alice.installation_id, sender_record=rec.hex(), message=msg.hex())),
        dict(name="negative: wrong recipient installation id (info differs)", input={**base, "own_iid": alice.installation_id}, expected=dict(error="DecryptError")),
        dict(name="negative: wrong recipient key", input={**base, "identity_priv": alice.identity_priv.hex()}, expected=dict(error="DecryptError")),
        dict(name="negative: encapsulated key changed", input={**base, "payload": wire.encode([1, flip(hp, 0)]).hex()}, expected=dict(error="DecryptError")),
        dict(name="negative: AEAD tag changed", input={**base, "payload": wire.encode([1, flip(hp, len(hp) - 1)]).hex()}, expected=dict(error="DecryptError")),
        dict(name="negative: truncated below enc+tag", input={**base, "payload": wire.encode([1, hp[:40]]).hex()}, expected=dict(error="DecryptError")),
        dict(name="negative: outer version 2", input={**base, "payload": wire.encode([2, hp]).hex()}, expected=dict(error="WireError")),
        dict(name="negative: not CBOR", input={**base, "payload": "ff00"}, expected=dict(error="WireError")),
    ] + sealed_real_vectors()
    return family("parley-sealed", f"ours: {GEN} (recorded once; HPKE ephemerals cannot be injected)",
                  "Sealed sender open: recipient identity_priv + own_iid + payload -> sender_iid, sender_record, message. "
                  "Vectors with input.engine also go through Engine.process of the recipient (its keys and record in "
                  "input.engine.recipient; prekey private keys [kind, id, private] in input.engine.prekeys; input.engine.session, "
                  "a session saved before): expected.engine.stored is the message it keeps, expected.engine.quarantined the "
                  "quarantine error (name 'engine-negative': the payload opens, the engine's binding checks refuse it).", v)


def content_padding_family() -> dict[str, Any]:
    """PROTOCOL.md §6.1: content CBOR ‖ 0x80 ‖ 0x00* to the next power of two >= max(len + 1, 512).
    The padding is computed here by hand (a loop over sizes), not with bridge.protocol.content.pad."""
    mid, sender, recipient, sent_at = seed("content/mid", 16).hex(), "0x" + "A" * 40, "0x" + "b" * 40, 1_764_460_800_000

    def by_hand(content: bytes) -> bytes:
        size = 512
        while size < len(content) + 1:
            size <<= 1
        return content + bytes([0x80]) + bytes(size - len(content) - 1)

    v = []
    probe = len(wire.encode([1, "text", mid, sender, recipient, sent_at, ""]))
    for n in (1, 200, 511 - probe - 2, 512 - probe - 2, 3000):  # the text-header grows by 1 byte at 24 and 2 at 256
        text = ("x" * n)
        content = wire.encode([1, "text", mid, sender, recipient, sent_at, text])
        padded = by_hand(content)
        v.append(dict(name=f"text of {n} bytes -> {len(padded)}",
                      input=dict(message_id=mid, sender=sender, recipient=recipient, sent_at=sent_at, text=text),
                      expected=dict(content=content.hex(), padded=padded.hex())))
    content = wire.encode([1, "text", mid, sender, recipient, sent_at, "hi"])
    good = by_hand(content)
    v += [
        dict(name="negative: unpadded content", input=dict(padded=content.hex()), expected=dict(error="WireError")),
        dict(name="negative: marker 0x00 instead of 0x80", input=dict(padded=(content + bytes(512 - len(content))).hex()), expected=dict(error="WireError")),
        dict(name="negative: not a power of two", input=dict(padded=(good + b"\x00").hex()), expected=dict(error="WireError")),
        dict(name="negative: larger bucket than needed", input=dict(padded=(good + bytes(512)).hex()), expected=dict(error="WireError")),
        dict(name="negative: nonzero byte after the marker", input=dict(padded=(good[:-1] + b"\x01").hex()), expected=dict(error="WireError")),
    ]
    return family("parley-content-padding", f"ours: {GEN} (padding computed by hand)",
                  "Message content padding (PROTOCOL.md 6.1): CBOR [1, 'text', id, sender, recipient, sent_at, text] || 0x80 || 0x00* "
                  "to the smallest power of two >= max(len + 1, 512). Positive vectors: TextContent.encode gives 'padded' and "
                  "decode inverts it; negative vectors must be rejected by TextContent.decode.", v)


def local_api_proof_family() -> dict[str, Any]:
    from bridge.api.access import BridgeKey, bridge_proof_message, normalise_code, pair_proof

    v = []
    for i, (origin, host, code) in enumerate((
        ("chrome-extension://cjhgnfckfielldaiipkgieemaigbpmoe", "127.0.0.1:8737", "K7QF-M2XP"),
        ("chrome-extension://cjhgnfckfielldaiipkgieemaigbpmoe", "localhost:51234", "ab2c d3ef"),
    )):
        private, challenge = seed(f"local-api-proof/{i}/key"), seed(f"local-api-proof/{i}/challenge")
        key = BridgeKey(private)
        code_hash = hashlib.sha256(normalise_code(code).encode()).digest()
        v.append(dict(name=f"proof {i + 1}", input=dict(private=hx(private), origin=origin, host=host, challenge=hx(challenge), code=code),
                      expected=dict(public=hx(key.public), message=hx(bridge_proof_message(challenge, origin, host)),
                                    signature=hx(key.prove(challenge, origin, host)),
                                    pair_client=hx(pair_proof(code_hash, "client", challenge + key.public)),
                                    pair_bridge=hx(pair_proof(code_hash, "bridge", challenge + key.public)))))
    return family("local_api_proof", "ours (docs/PROTOCOL.md §8.1)",
                  "The bridge's proof on the local API: message = context || 0x00 || origin || 0x00 || host || 0x00 || "
                  "challenge (UTF-8); signature = Ed25519(private, message). Pairing proofs: HMAC-SHA256(key = "
                  "SHA-256(normalised code), 'parley local-api v1 pairing' || 0x00 || side || 0x00 || challenge || public), "
                  "side 'client' or 'bridge'. tests/js/bridge-proof.test.mjs checks the extension's side against these.", v)


# --- identity (docs/PROTOCOL.md §3) --------------------------------------------------------
#
# Wallet keys: Hardhat/Anvil default accounts #0 and #1 (publicly documented test keys). EIP-191
# signatures by eth-account are deterministic (RFC 6979), so these families regenerate byte for byte.

ANVIL0_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL1_KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
ANVIL1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
T0 = 1795716000  # 2026-11-26T18:00:00Z
IDENTITY_SOURCE = ("Parley's own vectors (docs/PROTOCOL.md section 3). Wallet key: Hardhat/Anvil default account #0 (publicly "
                   "documented test key, address 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266). Installation keys: the RFC 8032 "
                   "section 7.1 TEST 1 Ed25519 secret key and the RFC 7748 section 6.1 Alice X25519 private key. Signatures: "
                   "EIP-191 personal_sign by eth-account 0.14 (deterministic ECDSA, RFC 6979, low-s), cross-checked once against "
                   "OpenSSL's deterministic ECDSA over the same EIP-191 hash (same r; the same s after low-s normalization). "
                   "Bytes are lowercase hex; null means absent.")


def raw_sign(text: str, key: bytes) -> bytes:
    """EIP-191 personal_sign of any text (bypasses sign_statement's checks: what an attacker can do)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return bytes(Account.sign_message(encode_defunct(text=text), key).signature)


def eip191_hash(text: str) -> bytes:
    from eth_hash.auto import keccak

    data = text.encode("utf-8")
    return bytes(keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data))


def identity_family() -> dict[str, Any]:
    """tests/vectors/identity.json (its historical layout: flat vectors, indent 2)."""
    from bridge import identity

    sp_priv = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    ip_priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    sp, ip = P.ed25519_public(sp_priv), P.x25519_public(ip_priv)
    iid = installation_id(sp, ip)
    v = []
    for name, st, privs in (
        ("authorize, Anvil account #0, RFC 8032/7748 installation keys",
         identity.authorize_statement(ANVIL0, iid, sp, ip, issued_at=T0, nonce=bytes(range(16)).hex()), (sp_priv, ip_priv)),
        ("revoke of the same installation",
         identity.revoke_statement(ANVIL0, iid, issued_at=T0 + 3600, nonce=bytes(range(0xF0, -1, -0x10)).hex()), (None, None)),
    ):
        signed = identity.sign_statement(st, ANVIL0_KEY)
        v.append(dict(name=name, wallet_key=ANVIL0_KEY.hex(), address=st.address, did=identity.did(st.address), action=st.action,
                      chain_id=st.chain_id, signing_private=hx(privs[0]), signing_pub=hx(st.signing_key),
                      identity_private=hx(privs[1]), identity_pub=hx(st.identity_key), installation_id=st.installation_id,
                      issued_at=st.issued_at, nonce=st.nonce, text=signed.text, eip191_hash=eip191_hash(signed.text).hex(),
                      signature=signed.signature.hex(), record=signed.to_record().hex(), record_id=signed.record_id()))
    return {"source": IDENTITY_SOURCE, "vectors": v}


def _inst(label: str) -> tuple[bytes, bytes, str]:
    sp = P.ed25519_public(seed(f"{label}/signing"))
    ip = P.x25519_public(seed(f"{label}/identity"))
    return sp, ip, installation_id(sp, ip)


def _record(text: str, sig: bytes) -> bytes:
    return wire.encode([1, "stmt", text, sig])


def identity_negative_family() -> dict[str, Any]:
    """One negative vector per MUST-reject rule of §3; each runs verify_record_for(address, record)."""
    from bridge import identity

    sp_priv = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    ip_priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    sp, ip = P.ed25519_public(sp_priv), P.x25519_public(ip_priv)
    iid = installation_id(sp, ip)
    auth = identity.authorize_statement(ANVIL0, iid, sp, ip, issued_at=T0, nonce=bytes(range(16)).hex()).text()
    rev = identity.revoke_statement(ANVIL0, iid, issued_at=T0 + 3600, nonce=bytes(range(0xF0, -1, -0x10)).hex()).text()
    lower = ANVIL0.lower()
    bad_sum = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # first letter's case flipped: wrong EIP-55 checksum
    good_sig = raw_sign(auth, ANVIL0_KEY)

    def signed(text: str) -> tuple[str, bytes]:
        return text, _record(text, raw_sign(text, ANVIL0_KEY))

    def line(text: str, prefix: str, new: str) -> str:
        out = [new if ln.startswith(prefix) else ln for ln in text.split("\n")]
        assert out != text.split("\n"), prefix
        return "\n".join(out)

    def sig_with(r: int | None = None, s: int | None = None, v: int | None = None) -> bytes:
        b = bytearray(good_sig)
        if r is not None:
            b[:32] = r.to_bytes(32, "big")
        if s is not None:
            b[32:64] = s.to_bytes(32, "big")
        if v is not None:
            b[64] = v
        return bytes(b)

    iid2 = _inst("identity/other")[2]
    other_id_auth = line(auth, "Installation ID: ", f"Installation ID: {iid2}")
    swapped = line(line(auth, "Signing Key: ", f"Signing Key: ed25519:{ip.hex()}"), "Identity Key: ", f"Identity Key: x25519:{sp.hex()}")
    rev_with_keys = rev.replace("Issued At:", f"Signing Key: ed25519:{sp.hex()}\nIdentity Key: x25519:{ip.hex()}\nIssued At:")
    long_text = auth + "\nNote: " + "x" * (1025 - len(auth) - 7)
    assert len(long_text) == 1025
    # a 65-byte signature whose r is not the x coordinate of any curve point: recovery fails
    r_off = next(r for r in range(1, 100) if _not_on_curve(r))
    cases: list[tuple[str, str, bytes, str | None, str, str]] = []  # name, address, record, text, error, message

    def text_case(name: str, text: str, error: str, message: str, address: str = ANVIL0) -> None:
        t, rec = signed(text)
        cases.append((name, address, rec, t, error, message))

    IS, BS = "InvalidStatement", "BadSignature"
    text_case("text: trailing newline", auth + "\n", IS, "a authorize statement has exactly 12 lines")
    text_case("text: CRLF line endings", auth.replace("\n", "\r\n"), IS, "statement text contains a control character (only LF separates lines)")
    text_case("text: a lone CR at the end", auth + "\r", IS, "statement text contains a control character (only LF separates lines)")
    text_case("text: trailing space after the Nonce", auth + " ", IS, "nonce must be lowercase hex of the right length")
    text_case("text: trailing space after the headline", auth.replace(":\n0x", ": \n0x", 1), IS, "unknown first line (wrong domain or action)")
    text_case("text: trailing space after Domain", line(auth, "Domain: ", "Domain: parley "), IS, "domain must be 'parley'")
    text_case("text: Cyrillic o in Domain (look-alike)", line(auth, "Domain: ", "Domain: parl\u0435y"), IS, "statement text must be ASCII")
    text_case("text: fullwidth digit in Chain ID", line(auth, "Chain ID: ", "Chain ID: \uff11"), IS, "statement text must be ASCII")
    text_case("text: NUL byte", auth.replace("Domain", "Dom\x00ain"), IS, "statement text contains a control character (only LF separates lines)")
    text_case("text: authorize headline with Action revoke-installation",
              line(auth, "Action: ", "Action: revoke-installation"), IS, "the Action line does not match the first line")
    text_case("text: revoke headline with Action authorize-installation",
              line(rev, "Action: ", "Action: authorize-installation"), IS, "the Action line does not match the first line")
    text_case("text: unknown headline (other domain)", auth.replace("parley wants", "parly wants", 1), IS, "unknown first line (wrong domain or action)")
    text_case("text: line 2 lower-case, Address checksummed", auth.replace("\n" + ANVIL0 + "\n", "\n" + lower + "\n", 1), IS,
              "the address on line 2 differs from the Address line")
    text_case("text: line 2 names another address", auth.replace("\n" + ANVIL0 + "\n", "\n" + ANVIL1 + "\n", 1), IS,
              "the address on line 2 differs from the Address line")
    text_case("text: address in lower case on both lines", auth.replace(ANVIL0, lower), IS, "address must be written in EIP-55 checksummed form")
    text_case("text: address with a wrong EIP-55 checksum", auth.replace(ANVIL0, bad_sum), IS, "address has an invalid EIP-55 checksum")
    text_case("text: 0X prefix", auth.replace(ANVIL0, "0X" + ANVIL0[2:]), IS, "an address must be 0x followed by 40 hex digits")
    text_case("text: Domain line missing", "\n".join(ln for ln in auth.split("\n") if not ln.startswith("Domain")), IS,
              "a authorize statement has exactly 12 lines")
    text_case("text: lines out of order (Chain ID before Address)",
              auth.replace(f"Address: {ANVIL0}\nChain ID: 1", f"Chain ID: 1\nAddress: {ANVIL0}"), IS, "expected the line 'Address: …'")
    text_case("text: chain id 0", line(auth, "Chain ID: ", "Chain ID: 0"), IS, "Chain ID must be a positive decimal integer without leading zeros")
    text_case("text: chain id with a leading zero", line(auth, "Chain ID: ", "Chain ID: 01"), IS,
              "Chain ID must be a positive decimal integer without leading zeros")
    text_case("text: chain id 2^63", line(auth, "Chain ID: ", f"Chain ID: {2**63}"), IS, f"chain id must be an integer in [1, {2**63 - 1}]")
    text_case("text: chain id of 20 digits", line(auth, "Chain ID: ", "Chain ID: 10000000000000000000"), IS,
              "Chain ID must be a positive decimal integer without leading zeros")
    text_case("text: chain id negative", line(auth, "Chain ID: ", "Chain ID: -1"), IS, "Chain ID must be a positive decimal integer without leading zeros")
    text_case("text: installation id of another key pair", other_id_auth, IS, "installation id is not the hash of the installation keys")
    text_case("text: signing and identity keys swapped", swapped, IS, "installation id is not the hash of the installation keys")
    text_case("text: installation id in upper case", auth.replace(iid, iid.upper()), IS, "installation id must be lowercase hex of the right length")
    text_case("text: signing key in upper case hex", line(auth, "Signing Key: ", f"Signing Key: ed25519:{sp.hex().upper()}"), IS,
              "Signing Key must be ed25519:<64 lowercase hex digits>")
    text_case("text: key lines in a revocation", rev_with_keys, IS, "a revoke statement has exactly 10 lines")
    text_case("text: leap second 60", line(auth, "Issued At: ", "Issued At: 2016-12-31T23:59:60Z"), IS, "Issued At is not a canonical UTC time")
    text_case("text: February 30", line(auth, "Issued At: ", "Issued At: 2026-02-30T12:00:00Z"), IS, "Issued At is not a valid date and time")
    text_case("text: hour 24", line(auth, "Issued At: ", "Issued At: 2026-11-26T24:00:00Z"), IS, "Issued At is not a valid date and time")
    text_case("text: before 1970", line(auth, "Issued At: ", "Issued At: 1969-12-31T23:59:59Z"), IS, "Issued At is not a canonical UTC time")
    text_case("text: five-digit year", line(auth, "Issued At: ", "Issued At: 10000-01-01T00:00:00Z"), IS, "Issued At must be YYYY-MM-DDTHH:MM:SSZ")
    text_case("text: fractional seconds", line(auth, "Issued At: ", "Issued At: 2026-11-26T18:00:00.0Z"), IS, "Issued At must be YYYY-MM-DDTHH:MM:SSZ")
    text_case("text: offset instead of Z", line(auth, "Issued At: ", "Issued At: 2026-11-26T18:00:00+00:00"), IS, "Issued At must be YYYY-MM-DDTHH:MM:SSZ")
    text_case("text: nonce of 31 hex digits", line(auth, "Nonce: ", "Nonce: " + "0" * 31), IS, "nonce must be lowercase hex of the right length")
    text_case("text: longer than 1024 characters", long_text, IS, "statement text must be a string of at most 1024 characters")
    # record encoding
    canon = _record(auth, good_sig)
    assert canon[:7] == bytes.fromhex("84016473746d74") and canon[7:10] == bytes.fromhex("7901ff")
    noncanon = canon[:7] + bytes.fromhex("7a000001ff") + canon[10:]  # text length in 4 bytes where 2 suffice
    cases += [
        ("record: text length not in its shortest form (non-canonical CBOR)", ANVIL0, noncanon, None, IS,
         "malformed statement record: CBOR is not in canonical form"),
        ("record: indefinite-length array", ANVIL0, b"\x9f" + canon[1:] + b"\xff", None, IS, "malformed statement record: CBOR is not in canonical form"),
        ("record: 3 items", ANVIL0, wire.encode([1, "stmt", auth]), None, IS, "a statement record is an array of 4 items"),
        ("record: 5 items", ANVIL0, wire.encode([1, "stmt", auth, good_sig, b""]), None, IS, "a statement record is an array of 4 items"),
        ("record: a map", ANVIL0, wire.encode({"text": auth}), None, IS, "a statement record is an array of 4 items"),
        ("record: true instead of 1", ANVIL0, b"\x84\xf5" + canon[2:], None, IS, "statement record must start with 1, \"stmt\""),
        ("record: version 2", ANVIL0, wire.encode([2, "stmt", auth, good_sig]), None, IS, "statement record must start with 1, \"stmt\""),
        ("record: tag Stmt", ANVIL0, wire.encode([1, "Stmt", auth, good_sig]), None, IS, "statement record must start with 1, \"stmt\""),
        ("record: text as a byte string", ANVIL0, wire.encode([1, "stmt", auth.encode(), good_sig]), None, IS,
         "statement record holds a text string and a signature byte string"),
        ("record: signature of 64 bytes", ANVIL0, _record(auth, good_sig[:64]), None, IS, "signature must be 65 to 4096 bytes"),
        ("record: signature of 4097 bytes", ANVIL0, _record(auth, good_sig + bytes(4032)), None, IS, "signature must be 65 to 4096 bytes"),
        ("record: larger than 8192 bytes", ANVIL0, _record(auth, good_sig + bytes(8192 - 65)), None, IS,
         f"malformed statement record: structure of {len(_record(auth, good_sig + bytes(8192 - 65)))} bytes exceeds 8192"),
        ("record: not CBOR at all", ANVIL0, b"\xff", None, IS, "malformed statement record: malformed CBOR: ..."),
        # signatures (EOA verifier)
        ("signature: v = 29", ANVIL0, _record(auth, sig_with(v=29)), auth, BS, "signature v must be 27 or 28 (or 0 or 1)"),
        ("signature: v = 2", ANVIL0, _record(auth, sig_with(v=2)), auth, BS, "signature v must be 27 or 28 (or 0 or 1)"),
        ("signature: r = 0", ANVIL0, _record(auth, sig_with(r=0)), auth, BS, "signature r or s out of range"),
        ("signature: s = 0", ANVIL0, _record(auth, sig_with(s=0)), auth, BS, "signature r or s out of range"),
        ("signature: r = n", ANVIL0, _record(auth, sig_with(r=SECP256K1_N)), auth, BS, "signature r or s out of range"),
        ("signature: s = n", ANVIL0, _record(auth, sig_with(s=SECP256K1_N)), auth, BS, "signature r or s out of range"),
        (f"signature: r = {r_off} is no curve point's x (unrecoverable)", ANVIL0, _record(auth, sig_with(r=r_off)), auth, BS,
         "signature does not recover to any key"),
        ("signature: 66 bytes (EOA verifier takes 65 only)", ANVIL0, _record(auth, good_sig + b"\x00"), auth, BS, "signature must be 65 bytes"),
        ("signature: by another wallet (Anvil #1)", ANVIL0, _record(auth, raw_sign(auth, ANVIL1_KEY)), auth, BS,
         "statement was not signed by its Address"),
        ("signature: over another text (the revocation)", ANVIL0, _record(auth, raw_sign(rev, ANVIL0_KEY)), auth, BS,
         "statement was not signed by its Address"),
        # the record is valid, the log is not its address's
        ("address: a valid record published for another address", ANVIL1, canon, auth, IS, "the statement is for another address"),
        ("address: the log's address is not an address", "0x" + "g" * 40, canon, auth, "IdentityError", "an address must be 0x followed by 40 hex digits"),
    ]
    relay_code = {"InvalidStatement": "invalid_statement", "BadSignature": "bad_signature", "IdentityError": "bad_address"}
    v = []
    for name, address, rec, text, err, message in cases:
        # a message ending in "..." is a prefix (the rest is the CBOR decoder's own words)
        msg = dict(message_prefix=message[:-3]) if message.endswith("...") else dict(message=message)
        v.append(dict(name=f"negative: {name}", input=dict(address=address, text=text, record=rec.hex()),
                      expected=dict(error=err, **msg, relay_code=relay_code[err])))
    # the bounds themselves are accepted (shape-wise): a 4096-byte signature decodes, an EOA verifier refuses its length
    v.append(dict(name="bound: a 4096-byte signature is a well-formed record (the EOA verifier then wants 65)",
                  input=dict(address=ANVIL0, text=auth, record=_record(auth, good_sig + bytes(4031)).hex()),
                  expected=dict(decodes=True, error_after_decode="BadSignature", message="signature must be 65 bytes")))
    v.append(dict(name="bound: v = 0 and v = 1 are accepted as 27 and 28",
                  input=dict(address=ANVIL0, text=auth, record=_record(auth, good_sig[:64] + bytes([good_sig[64] - 27])).hex()),
                  expected=dict(decodes=True, installation_id=iid, action="authorize")))
    n = SECP256K1_N
    s = int.from_bytes(good_sig[32:64], "big")
    high = good_sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - good_sig[64]])
    v.append(dict(name="bound: the high-s twin of a valid signature is accepted (same record id)",
                  input=dict(address=ANVIL0, text=auth, record=_record(auth, high).hex()),
                  expected=dict(decodes=True, installation_id=iid, action="authorize",
                                record_id=hashlib.sha256(auth.encode()).hexdigest())))
    return family("identity-negative", f"ours: {GEN} (docs/PROTOCOL.md §3; wallet keys Anvil #0/#1, installation keys as identity.json; "
                  "every text is EIP-191-signed by the wallet whose Address it names, so only the rule under test fails)",
                  "verify_record_for(input.address, input.record) must raise exactly expected.error with exactly expected.message; "
                  "expected.relay_code is the relay's 400 answer to POST /v1/identity/<address> with that record. input.text is the "
                  "statement text inside the record (null when the record has none or it is not the point). 'bound' vectors pin "
                  "values at the limits that are accepted.", v)


def _not_on_curve(x: int) -> bool:
    p = 2**256 - 2**32 - 977
    y2 = (pow(x, 3, p) + 7) % p
    return pow(y2, (p - 1) // 2, p) != 1 and y2 != 0


def active_set_family() -> dict[str, Any]:
    """Logs of records -> the active map (iid -> record id of the kept authorization) and the revoked set."""
    from bridge import identity

    keys = {k: _inst(f"active/{k}") for k in ("A", "B", "C")}

    def auth(k: str, at: int, nonce: str, address: str = ANVIL0, wallet: bytes = ANVIL0_KEY) -> bytes:
        sp, ip, iid = keys[k]
        st = identity.authorize_statement(address, iid, sp, ip, issued_at=at, nonce=nonce)
        return identity.sign_statement(st, wallet).to_record()

    def rev(k: str, at: int, nonce: str, address: str = ANVIL0, wallet: bytes = ANVIL0_KEY) -> bytes:
        st = identity.revoke_statement(address, keys[k][2], issued_at=at, nonce=nonce)
        return identity.sign_statement(st, wallet).to_record()

    def rid(rec: bytes) -> str:
        return identity.SignedStatement.from_record(rec).record_id()

    a1 = auth("A", T0, "01" * 16)
    a2 = auth("A", T0 + 60, "02" * 16)          # later: wins over a1
    a3 = auth("A", T0 + 60, "03" * 16)          # same time as a2: the smaller record id wins
    b1 = auth("B", T0, "04" * 16)
    rb_before = rev("B", T0 - 3600, "05" * 16)  # revocation dated before the authorization: still final
    rb_after = rev("B", T0 + 3600, "06" * 16)
    c1 = auth("C", T0, "07" * 16)
    c_other = auth("C", T0 + 999, "08" * 16, ANVIL1, ANVIL1_KEY)   # another address's log names C
    rc_other = rev("C", T0 + 999, "09" * 16, ANVIL1, ANVIL1_KEY)   # another address revokes C: no effect here
    forged = _record(identity.SignedStatement.from_record(auth("B", T0 + 5, "0a" * 16)).text,
                     raw_sign(identity.SignedStatement.from_record(auth("B", T0 + 5, "0a" * 16)).text, ANVIL1_KEY))
    tampered = bytearray(a2)
    tampered[-2] ^= 1
    winner_tie = min((a2, a3), key=rid)
    v = []

    def vec(name: str, records: list[bytes], active: dict[str, bytes], revoked: list[str], labels: list[str]) -> None:
        v.append(dict(name=name, input=dict(address=ANVIL0, records=[r.hex() for r in records], labels=labels),
                      expected=dict(active={keys[k][2]: rid(r) for k, r in active.items()}, revoked=sorted(keys[k][2] for k in revoked))))

    vec("one authorization", [a1], {"A": a1}, [], ["auth A @T0"])
    vec("re-authorization with a later Issued At wins", [a1, a2], {"A": a2}, [], ["auth A @T0", "auth A @T0+60"])
    vec("later Issued At wins whatever the order", [a2, a1], {"A": a2}, [], ["auth A @T0+60", "auth A @T0"])
    vec("equal Issued At: the smaller record_id wins (order a2, a3)", [a2, a3], {"A": winner_tie}, [], ["auth A @T0+60 n2", "auth A @T0+60 n3"])
    vec("equal Issued At: the smaller record_id wins (order a3, a2)", [a3, a2], {"A": winner_tie}, [], ["auth A @T0+60 n3", "auth A @T0+60 n2"])
    vec("revocation after the authorization", [b1, rb_after], {}, ["B"], ["auth B @T0", "revoke B @T0+3600"])
    vec("revocation before the authorization in the log", [rb_after, b1], {}, ["B"], ["revoke B @T0+3600", "auth B @T0"])
    vec("revocation dated before the authorization is still final", [b1, rb_before], {}, ["B"], ["auth B @T0", "revoke B @T0-3600"])
    vec("revocation of a never-authorized installation", [rb_after], {}, ["B"], ["revoke B"])
    vec("invalid records are skipped", [bytes(tampered), forged, b"\xff", a1], {"A": a1}, [],
        ["auth A @T0+60 with a changed signature byte", "auth B signed by another wallet", "not CBOR", "auth A @T0"])
    vec("records for another address are skipped (authorization and revocation)", [c1, c_other, rc_other], {"C": c1}, [],
        ["auth C @T0", "auth C for Anvil #1", "revoke C for Anvil #1"])
    vec("a mixed log", [a1, b1, c1, a3, rb_before, a2, rc_other, bytes(tampered)], {"A": winner_tie, "C": c1}, ["B"],
        ["auth A @T0", "auth B", "auth C", "auth A @T0+60 n3", "revoke B", "auth A @T0+60 n2", "revoke C for Anvil #1", "tampered"])
    vec("empty log", [], {}, [], [])
    return family("identity-active-set", f"ours: {GEN} (docs/PROTOCOL.md §3 'The active installation set'; wallets Anvil #0/#1, "
                  "installation keys from seeds)",
                  "installations(input.address, input.records) must map exactly the installation ids of expected.active to the "
                  "authorize statement whose record_id (SHA-256 of its text) is given; expected.revoked lists the ids named by a "
                  "valid revocation for input.address (none of them is active). input.labels describe the records.", v)


# --- content, prekeys, auth (docs/PROTOCOL.md §6.1, §4, §7) ------------------------------------

def _cbor_head(major: int, n: int) -> bytes:
    """Canonical CBOR head, written by hand (not bridge.protocol.wire)."""
    mt = major << 5
    if n < 24:
        return bytes([mt | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([mt | ai]) + n.to_bytes(size, "big")
    raise ValueError(n)


def _ctext(s: str) -> bytes:
    b = s.encode("utf-8")
    return _cbor_head(3, len(b)) + b


def _by_hand_pad(content: bytes) -> bytes:
    size = 512
    while size < len(content) + 1:
        size <<= 1
    return content + b"\x80" + bytes(size - len(content) - 1)


def _content_by_hand(mid: Any, sender: Any, recipient: Any, sent_at: int, text: str, tag: str = "text") -> bytes:
    def item(x: Any) -> bytes:
        if isinstance(x, str):
            return _ctext(x)
        if isinstance(x, bytes):
            return _cbor_head(2, len(x)) + x
        return _cbor_head(0, x)
    return b"\x87\x01" + _ctext(tag) + item(mid) + item(sender) + item(recipient) + _cbor_head(0, sent_at) + _ctext(text)


def content_family() -> dict[str, Any]:
    mid = seed("content2/mid", 16).hex()
    a, b = ANVIL0, ANVIL1
    v = []
    for name, text, sent_at in (("empty text", "", 0), ("short text", "hi bob", 1_795_716_000_123),
                                ("non-ASCII text", "gr\u00fc\u00df dich \U0001F44B", 1_795_716_000_000),
                                ("sent_at 2^63-1", "x", 2**63 - 1)):
        content = _content_by_hand(mid, a, b, sent_at, text)
        v.append(dict(name=name, input=dict(message_id=mid, sender=a, recipient=b, sent_at=sent_at, text=text),
                      expected=dict(content=content.hex(), padded=_by_hand_pad(content).hex())))
    # the 64 KiB bound, compactly: content = prefix || fill * count (then padded by the rule)
    for n, ok in ((65536, True), (65537, False)):
        full = _content_by_hand(mid, a, b, 1, "x" * n)
        prefix = full[: len(full) - n]
        entry = dict(prefix=prefix.hex(), fill="78", count=n)
        if ok:
            v.append(dict(name="text of exactly 64 KiB", input=dict(content_compact=entry), expected=dict(text_bytes=n, padded_len=131072)))
        else:
            v.append(dict(name="negative: text of 64 KiB + 1 byte", input=dict(content_compact=entry), expected=dict(error="WireError")))
    lax = [
        ("sender not checksummed (lower case): decodes; the engine then refuses it, content.sender != the statement's Address",
         a.lower()),
        ("sender of 40 non-hex characters after 0x: decodes (the content layer checks only 0x and length 42)", "0x" + "z" * 40),
    ]
    for name, sender in lax:
        content = _content_by_hand(mid, sender, b, 1, "hi")
        v.append(dict(name=f"lax: {name}", input=dict(padded=_by_hand_pad(content).hex()), expected=dict(decodes=True, sender=sender)))
    # §10: a later 1.x content type decodes to its fallback text; extra fields after the seven are ignored
    later = [
        ("a later type 'file' with its own field: shown by its fallback text", "file",
         b"\x88" + _content_by_hand(mid, a, b, 1, "a file", tag="file")[1:] + b"\x43abc"),
        ("a later type 'typing' with an empty fallback: decodes, nothing to show", "typing",
         b"\x88" + _content_by_hand(mid, a, b, 1, "", tag="typing")[1:] + b"\xf5"),
        ("a 'text' content with an eighth item: the item is ignored", "text",
         b"\x88" + _content_by_hand(mid, a, b, 1, "hi")[1:] + b"\x00"),
    ]
    for name, kind, content in later:
        text = {"file": "a file", "typing": ""}.get(kind, "hi")
        v.append(dict(name=f"later: {name}", input=dict(padded=_by_hand_pad(content).hex()),
                      expected=dict(decodes=True, sender=a, content_type=kind, text=text, sender_relays=None)))
    # 1.1 (§6.1): a 'text' content's eighth item, a byte string of at most 4096 bytes, is the sender
    # installation's relay list (checked by the receiver against the sealed sender's key, not here)
    from bridge.protocol import relaylist

    rl = relaylist.RelayList(a, installation_id(P.ed25519_public(seed("content/rl")), P.x25519_public(seed("content/rl-x"))), 1,
                             T0, ("https://relay.example.org",)).sign(seed("content/rl"))
    for name, extra, kept in (("carrying the sender's relay list (1.1): kept as sender_relays", rl, True),
                              ("with an eighth byte string of 4097 bytes: ignored, no relay list", b"\x00" * 4097, False)):
        content = b"\x88" + _content_by_hand(mid, a, b, 1, "hi")[1:] + _cbor_head(2, len(extra)) + extra
        v.append(dict(name=f"later: a 'text' content {name}", input=dict(padded=_by_hand_pad(content).hex()),
                      expected=dict(decodes=True, sender=a, content_type="text", text="hi", sender_relays=extra.hex() if kept else None)))
    negs: list[tuple[str, bytes]] = [
        ("message_id as a 16-byte byte string", _content_by_hand(bytes.fromhex(mid), a, b, 1, "hi")),
        ("message_id in upper-case hex", _content_by_hand(mid.upper(), a, b, 1, "hi")),
        ("message_id of 31 hex digits", _content_by_hand(mid[:31], a, b, 1, "hi")),
        ("message_id of 33 hex digits", _content_by_hand(mid + "0", a, b, 1, "hi")),
        ("message_id with a 0x prefix", _content_by_hand("0x" + mid[2:], a, b, 1, "hi")),
        ("type tag not lower case ('File')", _content_by_hand(mid, a, b, 1, "hi", tag="File")),
        ("type tag of 65 characters", _content_by_hand(mid, a, b, 1, "hi", tag="a" * 65)),
        ("6 items (no text)", b"\x86" + _content_by_hand(mid, a, b, 1, "hi")[1:-3]),
        ("sender without 0x", _content_by_hand(mid, a[2:] + "00", b, 1, "hi")),
        ("sender of 41 characters", _content_by_hand(mid, a[:41], b, 1, "hi")),
        ("recipient as a byte string", _content_by_hand(mid, a, bytes.fromhex(b[2:]), 1, "hi")),
        ("recipient 0X prefix", _content_by_hand(mid, a, "0X" + b[2:], 1, "hi")),
        ("version 2", b"\x87\x02" + _content_by_hand(mid, a, b, 1, "hi")[2:]),
        ("sent_at negative", _content_by_hand(mid, a, b, 0, "hi")[:-4] + b"\x20" + _ctext("hi")),
        ("sent_at a float", _content_by_hand(mid, a, b, 0, "hi")[:-4] + b"\xf9\x3c\x00" + _ctext("hi")),
        ("sent_at true", _content_by_hand(mid, a, b, 0, "hi")[:-4] + b"\xf5" + _ctext("hi")),
        ("sent_at 2^64-1 (above 2^63-1)", _content_by_hand(mid, a, b, 0, "hi")[:-4] + b"\x1b" + b"\xff" * 8 + _ctext("hi")),
        ("text as a byte string", _content_by_hand(mid, a, b, 1, "hi")[:-3] + b"\x42hi"),
        ("non-canonical CBOR: sent_at 1 in two bytes", _content_by_hand(mid, a, b, 0, "hi")[:-4] + b"\x18\x01" + _ctext("hi")),
        ("non-canonical CBOR: text length in two bytes", _content_by_hand(mid, a, b, 1, "hi")[:-3] + b"\x78\x02hi"),
        ("non-canonical CBOR: indefinite-length array", b"\x9f" + _content_by_hand(mid, a, b, 1, "hi")[1:] + b"\xff"),
        ("invalid UTF-8 in text", _content_by_hand(mid, a, b, 1, "hi")[:-3] + b"\x62\xc3\x28"),
    ]
    for name, content in negs:
        v.append(dict(name=f"negative: {name}", input=dict(padded=_by_hand_pad(content).hex()), expected=dict(error="WireError")))
    return family("parley-content", f"ours: {GEN} (CBOR and padding written out by hand; addresses Anvil #0 -> #1)",
                  "Message content (PROTOCOL.md 6.1): CBOR [1, 'text', message_id (text, 32 lowercase hex), sender, recipient, "
                  "sent_at (uint ms, <= 2^63-1), text (<= 65536 UTF-8 bytes)], padded. Positive vectors: TextContent(...).encode() "
                  "gives expected.padded and decode() inverts it. input.content_compact = {prefix, fill, count} stands for the "
                  "content prefix || fill*count, padded by the rule. Negative vectors: TextContent.decode(input.padded) raises "
                  "WireError. 'lax' vectors decode: the content layer accepts them and a later layer decides. 'later' vectors "
                  "(PROTOCOL.md 10.2) decode to expected.content_type and expected.text (the fallback text), and expected.sender_relays: "
                  "the relay-list bytes a 1.1 'text' content carries as its eighth item (PROTOCOL.md 6.1), or null.", v)


def _prekey_keys() -> dict[str, Any]:
    sign_priv = seed("prekeys/signing")
    ident_priv = seed("prekeys/identity")
    sp, ip = P.ed25519_public(sign_priv), P.x25519_public(ident_priv)
    return dict(signing_priv=sign_priv, signing_pub=sp, identity_pub=ip, iid=installation_id(sp, ip))


def prekeys_family() -> dict[str, Any]:
    from bridge.protocol.prekeys import OTPK

    k = _prekey_keys()
    sk = k["signing_priv"]
    spk_priv = seed("prekeys/spk")
    otpk_privs = [seed(f"prekeys/otpk/{i}") for i in range(2)]
    pq_seeds = [seed(f"prekeys/pq/{i}", 64) for i in range(2)]
    spk_pub = P.x25519_public(spk_priv)
    pq_pubs = [P.mlkem768_public(s) for s in pq_seeds]
    issued_at = 1_795_716_000

    def tbs(kind: str, pid: int, pub: bytes) -> bytes:  # by hand: [1, "prekey", kind, id, pub]
        return b"\x85\x01" + _ctext("prekey") + _ctext(kind) + _cbor_head(0, pid) + _cbor_head(2, len(pub)) + pub

    def signed(kind: str, pid: int, pub: bytes) -> tuple[bytes, bytes]:
        sig = P.ed25519_sign(sk, tbs(kind, pid, pub))
        return sig, b"\x84" + _ctext(kind) + _cbor_head(0, pid) + _cbor_head(2, len(pub)) + pub + _cbor_head(2, 64) + sig

    spk_w = signed(SPK, 1, spk_pub)[1]
    pq0_w = signed(PQ_OTPK, 100, pq_pubs[0])[1]
    lr_w = signed(PQ_LRPK, 7, pq_pubs[1])[1]
    otpk_ws = [b"\x83" + _ctext(OTPK) + _cbor_head(0, 10 + i) + _cbor_head(2, 32) + P.x25519_public(p) for i, p in enumerate(otpk_privs)]

    def arr(items: list[bytes]) -> bytes:
        return _cbor_head(4, len(items)) + b"".join(items)

    body = (b"\x88\x01" + _ctext("prekeys") + _ctext(k["iid"]) + _cbor_head(0, issued_at) + spk_w + arr(otpk_ws) + arr([pq0_w]) + lr_w)
    up_sig = P.ed25519_sign(sk, body)
    upload = b"\x83\x01" + _cbor_head(2, len(body)) + body + _cbor_head(2, 64) + up_sig
    bundle1 = b"\x86\x01" + _ctext("bundle") + _ctext(k["iid"]) + spk_w + otpk_ws[0] + pq0_w
    bundle2 = b"\x86\x01" + _ctext("bundle") + _ctext(k["iid"]) + spk_w + b"\xf6" + lr_w
    keys_in = dict(signing_priv=sk.hex(), signing_pub=k["signing_pub"].hex(), identity_pub=k["identity_pub"].hex(), installation_id=k["iid"])
    v = [dict(name="upload and bundles", input=dict(**keys_in, issued_at=issued_at, spk=dict(id=1, priv=spk_priv.hex(), pub=spk_pub.hex()),
                                                     otpks=[dict(id=10 + i, priv=p.hex(), pub=P.x25519_public(p).hex()) for i, p in enumerate(otpk_privs)],
                                                     pq_otpks=[dict(id=100, seed=pq_seeds[0].hex())], pq_lrpk=dict(id=7, seed=pq_seeds[1].hex())),
              expected=dict(spk_signed=tbs(SPK, 1, spk_pub).hex(), spk=spk_w.hex(), pq_otpk_signed=tbs(PQ_OTPK, 100, pq_pubs[0]).hex(),
                            pq_otpk=pq0_w.hex(), pq_lrpk=lr_w.hex(), otpks=[w.hex() for w in otpk_ws], body=body.hex(),
                            upload_signature=up_sig.hex(), upload=upload.hex(), bundle_with_one_time_keys=bundle1.hex(),
                            bundle_last_resort=bundle2.hex()))]

    def resign(b: bytes) -> bytes:
        return b"\x83\x01" + _cbor_head(2, len(b)) + b + _cbor_head(2, 64) + P.ed25519_sign(sk, b)

    forged_pq = pq0_w[:-1] + bytes([pq0_w[-1] ^ 1])
    body_forged = body.replace(pq0_w, forged_pq)
    other_iid = _inst("prekeys/other")[2]
    body_other = body.replace(_ctext(k["iid"]), _ctext(other_iid))
    many = [b"\x83" + _ctext(OTPK) + _cbor_head(0, 1000 + i) + _cbor_head(2, 32) + P.x25519_public(seed(f"prekeys/many/{i}")) for i in range(201)]
    body_many = body.replace(arr(otpk_ws), arr(many))
    body_200 = body.replace(arr(otpk_ws), arr(many[:200]))
    body_nc = body.replace(_cbor_head(0, issued_at), b"\x1b" + issued_at.to_bytes(8, "big"))
    negs = [
        # name, upload bytes, error of parse_signed+verify_all (or null), relay status, relay code
        ("one forged ML-KEM prekey signature (upload signature valid)", resign(body_forged), "InvalidSignature", 400, "bad_signature"),
        ("forged signed-prekey signature (upload signature valid)", resign(body.replace(spk_w, spk_w[:-1] + bytes([spk_w[-1] ^ 1]))),
         "InvalidSignature", 400, "bad_signature"),
        ("upload signature changed", upload[:-1] + bytes([upload[-1] ^ 1]), "InvalidSignature", 400, "bad_signature"),
        ("upload for another installation than the URL's", resign(body_other), None, 400, "bad_request"),
        ("201 one-time X25519 prekeys", resign(body_many), "WireError", 400, "bad_cbor"),
        ("non-canonical issued_at", resign(body_nc), "WireError", 400, "bad_cbor"),
        ("non-canonical outer array (indefinite length)", b"\x9f" + upload[1:] + b"\xff", "WireError", 400, "bad_cbor"),
        ("upload signature of 65 bytes", upload[:-65] + _cbor_head(2, 65) + up_sig + b"\x00", "WireError", 400, "bad_cbor"),
        ("outer version 2", b"\x83\x02" + upload[2:], "WireError", 400, "bad_cbor"),
        ("body tag 'prekey'", resign(body.replace(_ctext("prekeys"), _ctext("prekey"), 1)), "WireError", 400, "bad_cbor"),
        ("signed prekey of kind mlkem768-lrpk in the spk place", resign(body.replace(spk_w, lr_w, 1)), "WireError", 400, "bad_cbor"),
    ]
    for name, up, err, status, code in negs:
        v.append(dict(name=f"negative: {name}", input=dict(**keys_in, url_installation_id=k["iid"], upload=up.hex()),
                      expected=dict(error=err, relay_status=status, relay_code=code)))
    v.append(dict(name="bound: 200 one-time X25519 prekeys are accepted", input=dict(**keys_in, url_installation_id=k["iid"], upload=resign(body_200).hex()),
                  expected=dict(otpks=200, relay_status=200)))
    bad_bundle = bundle1.replace(spk_w, spk_w[:-1] + bytes([spk_w[-1] ^ 1]))
    v.append(dict(name="negative: bundle with a forged signed-prekey signature", input=dict(**keys_in, bundle=bad_bundle.hex()),
                  expected=dict(error="InvalidSignature")))
    v.append(dict(name="negative: bundle whose pqpk is an X25519 signed prekey", input=dict(**keys_in, bundle=bundle1.replace(pq0_w, spk_w).hex()),
                  expected=dict(error="WireError")))
    v.append(dict(name="negative: bundle with a non-canonical prekey id", input=dict(**keys_in, bundle=bundle1.replace(
        _ctext(OTPK) + _cbor_head(0, 10), _ctext(OTPK) + b"\x18\x0a").hex()), expected=dict(error="WireError")))
    return family("parley-prekeys", f"ours: {GEN} (CBOR written out by hand; Ed25519 is deterministic; keys from seeds)",
                  "Prekeys (PROTOCOL.md 4): signed prekey [kind, id, pub, sig], sig = Ed25519(signing_priv, CBOR [1, 'prekey', kind, id, "
                  "pub]) (expected.*_signed are those bytes); upload [1, body, Ed25519(body)] with body [1, 'prekeys', iid, issued_at "
                  "(unix s), spk, [otpk...], [pq_otpk...], pq_lrpk | null]; bundles [1, 'bundle', iid, spk, otpk | null, pqpk]. "
                  "ML-KEM public keys come from the 64-byte seeds. Negative uploads: PrekeyUpload.parse_signed then verify_all(signing_pub) "
                  "raise expected.error (null: both pass, the relay refuses on the URL), and PUT /v1/prekeys/<url_installation_id> "
                  "answers expected.relay_status/relay_code. Negative bundles: Bundle.decode then verify(signing_pub).", v)


def auth_family() -> dict[str, Any]:
    v = []
    for i in range(2):
        sk = seed(f"auth/{i}/signing")
        sp, ip = P.ed25519_public(sk), P.x25519_public(seed(f"auth/{i}/identity"))
        iid = installation_id(sp, ip)
        ch = seed(f"auth/{i}/challenge")
        msg = b"\x84\x01" + _ctext("parley-auth") + _ctext(iid) + _cbor_head(2, 32) + ch
        sig = P.ed25519_sign(sk, msg)
        import base64
        v.append(dict(name=f"token request {i + 1}", input=dict(signing_priv=sk.hex(), signing_pub=sp.hex(), identity_pub=ip.hex(),
                                                                installation_id=iid, challenge=ch.hex()),
                      expected=dict(message=msg.hex(), signature=sig.hex(),
                                    challenge_request={"installation_id": iid},
                                    token_request={"installation_id": iid, "challenge": base64.b64encode(ch).decode(),
                                                   "signature": base64.b64encode(sig).decode()})))
    base = v[0]
    msg0 = bytes.fromhex(base["expected"]["message"])
    for name, m in (("signature over the installation id in upper case", msg0.replace(base["input"]["installation_id"].encode(),
                                                                                        base["input"]["installation_id"].upper().encode())),
                    ("signature over context 'parley-auth2'", b"\x84\x01" + _ctext("parley-auth2") + msg0[14:]),
                    ("signature over the challenge as text", msg0[:-34] + _ctext(bytes.fromhex(base["input"]["challenge"]).hex()))):
        sig = P.ed25519_sign(bytes.fromhex(base["input"]["signing_priv"]), m)
        v.append(dict(name=f"negative: {name}", input={**base["input"], "signature": sig.hex()}, expected=dict(error="InvalidSignature")))
    return family("parley-auth", f"ours: {GEN} (CBOR written out by hand; Ed25519 is deterministic)",
                  "Inbox authentication (PROTOCOL.md 7): the installation signs message = CBOR [1, 'parley-auth', installation_id (text), "
                  "challenge (bytes 32)] with its Ed25519 key; POST /v1/auth/challenge takes expected.challenge_request and "
                  "POST /v1/auth/token takes expected.token_request (JSON, standard base64 with padding). Negative vectors: a "
                  "signature over other bytes must not verify against auth_message(installation_id, challenge).", v)


# --- relay lists (protocol 1.1) -----------------------------------------------------------------

def relay_list_family() -> dict[str, Any]:
    """Relay-list records written out by hand; the negatives are checked here against bridge.protocol.relaylist
    (a generator that no longer agrees fails --check)."""
    from bridge import identity
    from bridge.protocol import relaylist

    sk = seed("relaylist/signing")
    sp, ip = P.ed25519_public(sk), P.x25519_public(seed("relaylist/identity"))
    iid = installation_id(sp, ip)
    other_sk = seed("relaylist/other-signing")
    auth = identity.sign_statement(identity.authorize_statement(ANVIL0, iid, sp, ip, issued_at=T0, nonce="55" * 16), ANVIL0_KEY)
    keys_in = dict(signing_priv=sk.hex(), signing_pub=sp.hex(), identity_pub=ip.hex(), installation_id=iid, address=ANVIL0,
                   authorize_record=auth.to_record().hex())

    def item(x: Any) -> bytes:
        if isinstance(x, bool):
            return b"\xf5" if x else b"\xf4"
        if isinstance(x, str):
            return _ctext(x)
        if isinstance(x, bytes):
            return _cbor_head(2, len(x)) + x
        if isinstance(x, list):
            return _cbor_head(4, len(x)) + b"".join(item(y) for y in x)
        return _cbor_head(0, x)

    def body(version: Any = 7, *, relays: Any = None, tag: Any = "parley-relays", address: Any = ANVIL0, iid_: Any = iid,
             issued_at: Any = T0, raw: dict[int, bytes] | None = None) -> bytes:
        items = [1, tag, address, iid_, version, issued_at, ["https://relay.example.org", "https://backup.example.net:8443/parley"]
                 if relays is None else relays]
        parts = [(raw or {}).get(i, item(x)) for i, x in enumerate(items)]
        return _cbor_head(4, 7) + b"".join(parts)

    def record(b: bytes, key: bytes = sk) -> bytes:
        return b"\x83\x01" + _cbor_head(2, len(b)) + b + _cbor_head(2, 64) + P.ed25519_sign(key, b)

    v: list[dict[str, Any]] = []
    positives = [
        ("two relays", 7, T0, ["https://relay.example.org", "https://backup.example.net:8443/parley"]),
        ("one plain-http loopback relay, version 1, issued_at 0", 1, 0, ["http://127.0.0.1:8787"]),
        ("five relays, largest version", 2**63 - 1, T0, ["https://a.example", "https://[2001:db8::1]", "http://localhost:9000/r",
                                                         "https://b.example/x~y/%2F", "https://c.example:1"]),
        ("a 200-character relay URL", 2, T0, ["https://relay.example.org/" + "p" * (200 - len("https://relay.example.org/"))]),
    ]
    for name, version, issued_at, relays in positives:
        b = body(version, relays=relays, issued_at=issued_at)
        rec = record(b)
        rl = relaylist.verify(rec, sp)  # the implementation agrees with the bytes written by hand
        if rl.sign(sk) != rec:
            raise ValueError(f"relay list {name!r}: RelayList.sign disagrees with the bytes written by hand")
        v.append(dict(name=name, input=dict(**keys_in, version=version, issued_at=issued_at, relays=relays),
                      expected=dict(body=b.hex(), signature=rec[-64:].hex(), record=rec.hex())))
    good = bytes.fromhex(v[0]["expected"]["record"])
    six = [f"https://r{i}.example" for i in range(6)]
    negs: list[tuple[str, bytes, str | None, int, str]] = [
        ("6 relays", record(body(relays=six)), "WireError", 400, "bad_cbor"),
        ("0 relays", record(body(relays=[])), "WireError", 400, "bad_cbor"),
        ("the same relay twice", record(body(relays=["https://relay.example.org"] * 2)), "WireError", 400, "bad_cbor"),
        ("relay host in upper case", record(body(relays=["https://Relay.example.org"])), "WireError", 400, "bad_cbor"),
        ("relay scheme in upper case", record(body(relays=["HTTPS://relay.example.org"])), "WireError", 400, "bad_cbor"),
        ("relay URL with a trailing slash", record(body(relays=["https://relay.example.org/"])), "WireError", 400, "bad_cbor"),
        ("relay URL with the default port", record(body(relays=["https://relay.example.org:443"])), "WireError", 400, "bad_cbor"),
        ("relay URL with user info", record(body(relays=["https://user@relay.example.org"])), "WireError", 400, "bad_cbor"),
        ("relay URL with a query", record(body(relays=["https://relay.example.org/?x=1"])), "WireError", 400, "bad_cbor"),
        ("relay URL with a fragment", record(body(relays=["https://relay.example.org#f"])), "WireError", 400, "bad_cbor"),
        ("relay URL of scheme ftp", record(body(relays=["ftp://relay.example.org"])), "WireError", 400, "bad_cbor"),
        ("relay URL of 201 characters", record(body(relays=["https://relay.example.org/" + "p" * 175])), "WireError", 400, "bad_cbor"),
        ("IPv6 host not compressed", record(body(relays=["https://[2001:db8:0:0:0:0:0:1]"])), "WireError", 400, "bad_cbor"),
        ("version 0", record(body(0)), "WireError", 400, "bad_cbor"),
        ("version a float (1.0)", record(body(raw={4: b"\xf9\x3c\x00"})), "WireError", 400, "bad_cbor"),
        ("version true", record(body(True)), "WireError", 400, "bad_cbor"),
        ("version in a non-canonical head", record(body(raw={4: b"\x18\x07"})), "WireError", 400, "bad_cbor"),
        ("tag 'parley-relay'", record(body(tag="parley-relay")), "WireError", 400, "bad_cbor"),
        ("installation id as 16 bytes", record(body(iid_=bytes.fromhex(iid))), "WireError", 400, "bad_cbor"),
        ("address in lower case (not EIP-55)", record(body(address=ANVIL0.lower())), "WireError", 400, "bad_cbor"),
        ("body with 8 items", record(b"\x88" + body()[1:] + b"\x00"), "WireError", 400, "bad_cbor"),
        ("trailing byte after the record", good + b"\x00", "WireError", 400, "bad_cbor"),
        ("outer version 2", b"\x83\x02" + good[2:], "WireError", 400, "bad_cbor"),
        ("signature of 63 bytes", good[:-66] + _cbor_head(2, 63) + good[-64:-1], "WireError", 400, "bad_cbor"),
        ("record over 4096 bytes", record(body()) + bytes(4097 - len(record(body()))), "WireError", 413, "too_large"),
        ("signature changed", good[:-1] + bytes([good[-1] ^ 1]), "InvalidSignature", 400, "bad_signature"),
        ("signed by another key", record(body(), other_sk), "InvalidSignature", 400, "bad_signature"),
        ("older version than the stored one", record(body(6)), None, 409, "stale_relay_list"),
        ("same version as the stored one, other relays", record(body(relays=["https://relay.example.org"])), None, 409,
         "stale_relay_list"),
        ("address whose log does not authorize the installation", record(body(address=ANVIL1)), None, 403, "unknown_installation"),
    ]
    for name, rec, err, status, code in negs:
        try:
            relaylist.verify(rec, sp)
            got = None
        except Exception as exc:  # noqa: BLE001 - compared with the vector's class below
            got = type(exc).__name__
        if got != err:
            raise ValueError(f"relay list negative {name!r}: bridge.protocol.relaylist gives {got}, the vector says {err}")
        v.append(dict(name=f"negative: {name}", input=dict(**keys_in, url_installation_id=iid, record=rec.hex()),
                      expected=dict(error=err, relay_status=status, relay_code=code)))
    other_iid = _inst("relaylist/another")[2]
    v.append(dict(name="negative: record for another installation than the URL's",
                  input=dict(**keys_in, url_installation_id=other_iid, record=good.hex()),
                  expected=dict(error=None, relay_status=400, relay_code="bad_request")))
    v.append(dict(name="bound: the stored record again", input=dict(**keys_in, url_installation_id=iid, record=good.hex()),
                  expected=dict(relay_status=200, relay_version=7)))
    urls = [("https://relay.example.org", True, "https://relay.example.org"),
            ("https://Relay.Example.org/", False, "https://relay.example.org"),
            ("HTTP://relay.example.org:80", False, "http://relay.example.org"),
            ("https://[2001:DB8:0::1]:443/a/", False, "https://[2001:db8::1]/a"),
            ("https://relay.example.org/a%7e%2f", False, "https://relay.example.org/a~%2F"),
            ("https://relay.example.org:8443/p", True, "https://relay.example.org:8443/p"),
            ("https://user@relay.example.org", False, None),
            ("https://relay.example.org?x", False, None),
            ("wss://relay.example.org", False, None),
            ("https://relay.example.org/a//b", False, None),
            ("https://1.2.3", False, None),
            ("https://[::ffff:1.2.3.4]", False, None)]
    for text, canonical, normalised in urls:
        if relaylist.is_canonical_relay_url(text) != canonical:
            raise ValueError(f"relay URL {text!r}: is_canonical_relay_url disagrees")
        try:
            got_n: str | None = relaylist.canonical_relay_url(text)
        except ValueError:
            got_n = None
        if got_n != normalised:
            raise ValueError(f"relay URL {text!r}: canonical_relay_url gives {got_n!r}")
        v.append(dict(name=f"url: {text}", input=dict(url=text), expected=dict(canonical=canonical, normalised=normalised)))
    return family("parley-relay-list", f"ours: {GEN} (CBOR written out by hand; Ed25519 is deterministic; keys from seeds; the "
                  "authorization by Anvil account #0 is RFC 6979)",
                  "Relay lists (protocol 1.1): record [1, body, sig], body = CBOR [1, 'parley-relays', address (EIP-55), iid, version "
                  "(1..2^63-1), issued_at (unix s), [1..5 canonical relay URLs]], sig = Ed25519(signing_priv, body). Positive vectors: "
                  "the fields give expected.body, .signature and .record. Negative vectors: parse then verify(signing_pub) raise "
                  "expected.error (null: both pass and only the relay refuses), and PUT /v1/relay-list/<url_installation_id> on a relay "
                  "where input.authorize_record is in input.address's log and the first positive record is stored answers "
                  "expected.relay_status/relay_code. 'url:' vectors: input.url is canonical (expected.canonical) and normalises "
                  "to expected.normalised (null: refused).", v)


# --- ratchet limits (docs/PROTOCOL.md §5.3.5), as scripts ---------------------------------------

def ratchet_script_run(inp: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a ratchet-limits script (encoding: docs/test-vectors.md); returns each step's outcome."""
    from dataclasses import replace

    sk, spk_priv, ad = bytes.fromhex(inp["sk"]), bytes.fromhex(inp["bob_spk_priv"]), bytes.fromhex(inp["ad"])
    states: dict[str, Any] = {"alice": ratchet.init_alice(sk, P.x25519_public(spk_priv), ratchet_priv=bytes.fromhex(inp["alice_ratchet_priv"])),
                              "bob": ratchet.init_bob(sk, spk_priv)}
    sent: dict[str, list[tuple[bytes, bytes]]] = {"alice": [], "bob": []}
    out = []
    for i, step in enumerate(inp["steps"]):
        if step["op"] == "send":
            who, h = step["by"], hashlib.sha256()
            for _ in range(step["count"]):
                states[who], hb, ct = ratchet.encrypt(states[who], f"{who}:{len(sent[who])}".encode(), ad)
                sent[who].append((hb, ct))
                h.update(hb + ct)
            out.append(dict(last=len(sent[who]) - 1, sha256=h.hexdigest()))
        elif step["op"] == "forge_pn":
            states[step["by"]] = replace(states[step["by"]], pn=step["pn"])
            out.append({})
        else:
            to = step["to"]
            frm = "alice" if to == "bob" else "bob"
            hb, ct = sent[frm][step["index"]]
            rp = hashlib.sha256(f"{inp['seed']}/{i}".encode()).digest()
            res: dict[str, Any] = {}
            try:
                states[to], pt = ratchet.decrypt(states[to], hb, ct, ad, ratchet_priv=rp)
                res["plaintext"] = pt.decode()
            except P.CryptoError as exc:
                res["error"] = type(exc).__name__
            st = states[to]
            res.update(skipped=len(st.skipped), old_dhr=len(st.old_dhr), state_sha256=hashlib.sha256(st.to_bytes()).hexdigest())
            out.append(res)
    return out


def ratchet_limits_family() -> dict[str, Any]:
    def send(by: str, count: int = 1) -> dict[str, Any]:
        return dict(op="send", by=by, count=count)

    def deliver(to: str, index: int) -> dict[str, Any]:
        return dict(op="deliver", to=to, index=index)

    scripts: list[tuple[str, list[dict[str, Any]]]] = []
    scripts.append(("first message (no receiving chain yet): n = 1001 is TooManySkipped, n = 1000 is accepted", [
        send("alice", 1002), deliver("bob", 1001), deliver("bob", 1000), deliver("bob", 0), deliver("bob", 1001)]))
    scripts.append(("current chain: n skipping 1001 keys is TooManySkipped, state unchanged; 1000 is accepted", [
        send("alice", 1003), deliver("bob", 0), deliver("bob", 1002), deliver("bob", 1001), deliver("bob", 1002), deliver("bob", 5)]))
    scripts.append(("previous chain via pn: skipping 1001 keys of the old chain is TooManySkipped, state unchanged", [
        send("alice", 1002), deliver("bob", 0), send("bob"), deliver("alice", 0), send("alice"), deliver("bob", 1002),
        deliver("bob", 1001), deliver("bob", 1002), deliver("bob", 7)]))
    scripts.append(("previous chain via pn: skipping exactly 1000 keys of the old chain is accepted", [
        send("alice", 1001), deliver("bob", 0), send("bob"), deliver("alice", 0), send("alice"), deliver("bob", 1001),
        deliver("bob", 1000)]))
    scripts.append(("first message with a forged pn = 1001: TooManySkipped although there is no chain to skip; pn = 1000 accepted", [
        dict(op="forge_pn", by="alice", pn=1001), send("alice"), deliver("bob", 0),
        dict(op="forge_pn", by="alice", pn=1000), send("alice"), deliver("bob", 1), deliver("bob", 0)]))
    scripts.append(("2000 stored skipped keys: the oldest is evicted first; its message is then a DuplicateMessage", [
        send("alice", 1001), deliver("bob", 1000), send("bob"), deliver("alice", 0),
        send("alice", 1001), deliver("bob", 2001), send("bob"), deliver("alice", 1),
        send("alice", 2), deliver("bob", 2003), deliver("bob", 0), deliver("bob", 1), deliver("bob", 2002), deliver("bob", 1001)]))
    pingpong: list[dict[str, Any]] = []
    for r in range(34):
        pingpong += [send("alice"), deliver("bob", r), send("bob"), deliver("alice", r)]
        if r == 31:  # Bob's old_dhr holds Alice's keys 0..30 (31 of them): the first message is a duplicate
            pingpong.append(deliver("bob", 0))
        if r == 32:  # 32 remembered (0..31): still a duplicate
            pingpong.append(deliver("bob", 0))
        if r == 33:  # key 0 is the 33rd-oldest: forgotten
            pingpong += [deliver("bob", 0), deliver("bob", 1), deliver("bob", 33)]
    pingpong += [send("alice"), deliver("bob", 34)]
    scripts.append(("old_dhr keeps the last 32 remote ratchet keys: a replay on a remembered one is a DuplicateMessage, on the "
                    "33rd-oldest (forgotten) a DecryptError (taken for a new ratchet key; the tag fails), state unchanged", pingpong))
    v = []
    for n, (name, steps) in enumerate(scripts):
        inp = dict(sk=seed(f"ratchet-limits/{n}/sk").hex(), bob_spk_priv=seed(f"ratchet-limits/{n}/spk").hex(),
                   alice_ratchet_priv=seed(f"ratchet-limits/{n}/alice0").hex(), ad=seed(f"ratchet-limits/{n}/ad", 137).hex(),
                   seed=f"parley-vectors/ratchet-limits/{n}", steps=steps)
        v.append(dict(name=name, input=inp, expected=dict(steps=ratchet_script_run(inp))))
    return family("parley-ratchet-limits", f"ours: {GEN} (every key from seeds; every DH-ratchet key pair injected)",
                  "Double Ratchet limits as scripts (encoding in docs/test-vectors.md 'Ratchet scripts'): alice = init_alice(sk, "
                  "X25519(bob_spk_priv), alice_ratchet_priv), bob = init_bob(sk, bob_spk_priv); steps run in order: 'send' encrypts "
                  "count messages with plaintext '<by>:<index>' (index counts that party's messages from 0); 'forge_pn' sets the "
                  "sender's PN (a hostile sender); 'deliver' decrypts the other party's message number index with ratchet_priv = "
                  "SHA-256(seed || '/' || step number). expected.steps[k] is step k's outcome: for send, the last index and SHA-256 of "
                  "the header || ciphertext bytes it produced; for deliver, plaintext or error (exact class), then the number of stored "
                  "skipped keys, of remembered old remote keys, and SHA-256 of the recipient's state bytes (after an error: the state "
                  "kept, which is the one before the step).", v)


ANVIL2_KEY = bytes.fromhex("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")
ANVIL2 = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def sealed_real_vectors() -> list[dict[str, Any]]:
    """Sealed payloads carrying a real identity record and a real session message (recorded: HPKE and
    ML-KEM randomness). Engine-level vectors name what Engine.process does with them (§5.5, §6.3)."""
    from bridge import identity
    from bridge.protocol.content import TextContent

    alice, bob, carol = _ident("alice"), _ident("bob"), _ident("carol")

    def record(li: session.LocalIdentity, wallet: bytes, address: str, action: str = "authorize") -> bytes:
        if action == "authorize":
            st = identity.authorize_statement(address, li.installation_id, li.signing_pub, li.identity_pub, issued_at=T0, nonce="11" * 16)
        else:
            st = identity.revoke_statement(address, li.installation_id, issued_at=T0 + 60, nonce="22" * 16)
        return identity.sign_statement(st, wallet).to_record()

    rec_alice, rec_bob = record(alice, ANVIL0_KEY, ANVIL0), record(bob, ANVIL1_KEY, ANVIL1)
    privs, bundle = _bob_prekeys(bob, True, PQ_OTPK)
    sa = session.initiate(alice, _remote(bob), bundle, ephemeral_priv=seed("sealed/alice/ek"), ratchet_priv=seed("sealed/alice/ratchet0"))
    c1 = TextContent(seed("sealed/mid1", 16).hex(), ANVIL0, ANVIL1, 1_795_716_000_000, "hello bob, sealed")
    sa, m1 = session.encrypt(sa, c1.encode())
    alice_session = sa.to_bytes()
    c_else = TextContent(seed("sealed/mid2", 16).hex(), ANVIL0, ANVIL2, 1_795_716_000_500, "meant for someone else")
    sa, m_else = session.encrypt(sa, c_else.encode())
    sb, _ = session.accept(bob, _remote(alice), m1, spk_priv=bytes.fromhex(privs["spk_priv"]), otpk_priv=bytes.fromhex(privs["otpk_priv"]),
                           pqpk_seed=bytes.fromhex(privs["pqpk_seed"]), ratchet_priv=seed("sealed/bob/ratchet1"))
    c2 = TextContent(seed("sealed/mid3", 16).hex(), ANVIL1, ANVIL0, 1_795_716_001_000, "hello alice, a normal message")
    sb, m2 = session.encrypt(sb, c2.encode())

    def keys(li: session.LocalIdentity, wallet: bytes, address: str, rec: bytes) -> dict[str, Any]:
        return dict(address=address, wallet_key=wallet.hex(), installation_id=li.installation_id, signing_priv=li.signing_priv.hex(),
                    identity_priv=li.identity_priv.hex(), record=rec.hex())

    bob_engine = dict(recipient=keys(bob, ANVIL1_KEY, ANVIL1, rec_bob),
                      prekeys=[["x25519-spk", 1, privs["spk_priv"]], ["x25519-otpk", 17, privs["otpk_priv"]], [PQ_OTPK, 5, privs["pqpk_seed"]]])
    v = []

    def vec(name: str, to: str, sender_iid: str, rec: bytes, msg: bytes, engine: dict[str, Any], extra_in: dict[str, Any] | None = None) -> None:
        li = bob if to == "bob" else alice
        payload = sealed.seal(li.identity_pub, li.installation_id, sender_iid, rec, msg)
        v.append(dict(name=name, input=dict(identity_priv=li.identity_priv.hex(), own_iid=li.installation_id, payload=payload.hex(),
                                            engine=dict(bob_engine if to == "bob" else dict(recipient=keys(alice, ANVIL0_KEY, ANVIL0, rec_alice)),
                                                        **(extra_in or {}))),
                      expected=dict(sender_iid=sender_iid, sender_record=rec.hex(), message=msg.hex(), engine=engine)))

    def stored(c: TextContent) -> dict[str, Any]:
        return dict(stored=dict(id=c.message_id, sender=c.sender, recipient=c.recipient, text=c.text, sent_at=c.sent_at))

    vec("open: real identity record and PreKey message; the engine stores the message", "bob", alice.installation_id, rec_alice, m1, stored(c1))
    vec("open: real identity record and normal message (Bob's reply); Alice's engine stores it", "alice", bob.installation_id, rec_bob, m2,
        stored(c2), dict(session=alice_session.hex()))
    bad_sig = bytearray(rec_alice)
    bad_sig[-2] ^= 1
    for name, sender_iid, rec, msg, err in (
        ("record names another installation than sender_iid (§6.3)", carol.installation_id, rec_alice, m1,
         "InvalidStatement: sealed-sender statement does not authorize the sending installation"),
        ("record is a revocation of sender_iid", alice.installation_id, record(alice, ANVIL0_KEY, ANVIL0, "revoke"), m1,
         "InvalidStatement: sealed-sender statement does not authorize the sending installation"),
        ("PreKey ik_A is not the identity key in the record (§5.5)", carol.installation_id, record(carol, ANVIL0_KEY, ANVIL0), m1,
         "SessionError: PreKey message identity key is not the sender's"),
        ("record is for another address than content.sender (§6.3)", alice.installation_id, record(alice, ANVIL2_KEY, ANVIL2), m1,
         "InvalidStatement: content sender does not match the sealed-sender statement"),
        ("record signature does not verify", alice.installation_id, bytes(bad_sig), m1,
         "BadSignature: statement was not signed by its Address"),
        ("content addressed to another wallet", alice.installation_id, rec_alice, m_else,
         "InvalidStatement: message addressed to someone else"),
    ):
        vec(f"engine-negative: {name}", "bob", sender_iid, rec, msg, dict(quarantined=err))
    return v


# --- relay answers (docs/PROTOCOL.md §7): a scripted session against a real relay app ------------

RELAY_VOLATILE = {
    "challenge": "<base64: 32 random bytes>",
    "expires_at": "<integer: unix seconds>",
    "token": "<string: opaque bearer token>",
    "received_at": "<integer: unix seconds>",
}
RELAY_SETTINGS = dict(max_identity_records=3, max_envelope=1024, claim_target_rate=1e-9, claim_target_burst=2,
                      bucket_rate=1e-9, bucket_burst=4, bucket_max_records=1, topic_max_envelopes=2)
RELAY_CLOCK_START = 1_800_000_000


def relay_resolve(value: Any, answers: list[Any], insts: dict[str, Any]) -> Any:
    """Replace ${challenge:K}, ${sign:K:LABEL}, ${token:K} (K: an earlier step's answer) in strings."""
    import re

    from bridge.relay.auth import auth_message

    if isinstance(value, dict):
        return {k: relay_resolve(x, answers, insts) for k, x in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: Any) -> str:
        kind, k, *rest = m.group(1).split(":")
        body = answers[int(k)]
        if kind == "challenge":
            return str(body["challenge"])
        if kind == "token":
            return str(body["token"])
        inst = insts[rest[0]]
        sig = P.ed25519_sign(bytes.fromhex(inst["signing_priv"]), auth_message(inst["installation_id"], wire.b64d(body["challenge"])))
        return wire.b64e(sig)
    return re.sub(r"\$\{([^}]+)\}", sub, value)


def relay_answers_family() -> dict[str, Any]:
    from bridge import identity
    from bridge.protocol.ids import address_bucket, inbox_topic
    from bridge.protocol.prekeys import PrekeyUpload

    insts = {}
    for label in ("inst1", "inst2", "inst3", "inst4"):
        sk = seed(f"relay/{label}/signing")
        sp, ip = P.ed25519_public(sk), P.x25519_public(seed(f"relay/{label}/identity"))
        insts[label] = dict(signing_priv=sk.hex(), signing_pub=sp.hex(), identity_pub=ip.hex(), installation_id=installation_id(sp, ip))
    i1, i2 = insts["inst1"]["installation_id"], insts["inst2"]["installation_id"]

    def rec(label: str, action: str = "authorize", wallet: bytes = ANVIL0_KEY, address: str = ANVIL0, at: int = T0) -> str:
        d = insts[label]
        st = (identity.authorize_statement(address, d["installation_id"], bytes.fromhex(d["signing_pub"]), bytes.fromhex(d["identity_pub"]),
                                           issued_at=at, nonce="33" * 16) if action == "authorize"
              else identity.revoke_statement(address, d["installation_id"], issued_at=at, nonce="44" * 16))
        return wire.b64e(identity.sign_statement(st, wallet).to_record())

    def upload(label: str, issued_at: int) -> str:
        d = insts[label]
        sk = bytes.fromhex(d["signing_priv"])
        up = PrekeyUpload(d["installation_id"], issued_at, sign_prekey(sk, SPK, 1, P.x25519_public(seed(f"relay/{label}/spk"))),
                          tuple(OneTimePrekey(10 + j, P.x25519_public(seed(f"relay/{label}/otpk/{j}"))) for j in range(2)),
                          (sign_prekey(sk, PQ_OTPK, 100, P.mlkem768_public(seed(f"relay/{label}/pq", 64))),),
                          sign_prekey(sk, PQ_LRPK, 7, P.mlkem768_public(seed(f"relay/{label}/lr", 64))))
        return wire.b64e(up.sign(sk))

    bad_sig_rec = bytearray(wire.b64d(rec("inst1")))
    bad_sig_rec[-2] ^= 1
    topic1, topic2 = inbox_topic(i1), inbox_topic(i2)
    prefix = address_bucket(ANVIL0)[:2]
    J = "application/json"

    def http(method: str, path: str, body: Any = None, *, raw: str | None = None, ct: str | None = J, headers: dict[str, str] | None = None,
             why: str = "") -> dict[str, Any]:
        return dict(op="http", why=why, method=method, path=path, content_type=ct if (body is not None or raw is not None) else None,
                    body=body, raw=raw, headers=headers or {})

    steps: list[dict[str, Any]] = []

    def add(step: dict[str, Any]) -> int:
        steps.append(step)
        return len(steps) - 1

    add(http("GET", "/v1/health", why="health"))
    add(http("GET", "/v1/nothing-here", why="unknown route: JSON 404"))
    add(http("DELETE", "/v1/health", why="wrong method: JSON 405"))
    add(http("POST", f"/v1/identity/{ANVIL0}", raw='{"record": "AA=="}', ct="text/plain", why="not JSON content type"))
    add(http("POST", f"/v1/identity/{ANVIL0}", raw="{not json", why="body not JSON"))
    add(http("POST", f"/v1/identity/{ANVIL0}", raw='[1, 2]', why="body not an object"))
    add(http("POST", f"/v1/identity/{ANVIL0}", raw='{"record": NaN}', why="NaN"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst1"), "extra": 1}, why="unknown field"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": 5}, why="wrong type"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": "AA-_"}, why="URL-safe base64"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": "AA"}, why="base64 without padding"))
    add(http("POST", "/v1/identity/0x1234", {"record": rec("inst1")}, why="not an address"))
    add(http("POST", f"/v1/identity/{ANVIL0.replace('F', 'f', 1)}", {"record": rec("inst1")}, why="mixed case, wrong EIP-55 checksum"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": wire.b64e(bytes(bad_sig_rec))}, why="record signature does not verify"))
    add(http("POST", f"/v1/identity/{ANVIL1}", {"record": rec("inst1")}, why="record for another address"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": wire.b64e(b"\x01")}, why="record is the CBOR integer 1"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst1")}, why="authorize inst1: new"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst1")}, why="the same record again"))
    add(http("POST", f"/v1/identity/{ANVIL0.lower()}", {"record": rec("inst1")}, why="all lower-case address is accepted and checksummed"))
    add(http("GET", f"/v1/identity/{ANVIL0.lower()}", why="the log, address checksummed in the answer"))
    add(http("GET", f"/v1/identity/{ANVIL1}", why="an empty log"))
    add(http("GET", f"/v1/identity-bucket/{prefix}", why="the bucket holding Anvil #0"))
    add(http("GET", f"/v1/identity-bucket/{prefix.upper()}X", why="bad prefix"))
    add(http("PUT", f"/v1/prekeys/{i1}", {"upload": upload("inst1", T0)}, why="prekey upload"))
    add(http("PUT", f"/v1/prekeys/{i1}", {"upload": upload("inst1", T0 - 1)}, why="older upload"))
    add(http("PUT", f"/v1/prekeys/{i2}", {"upload": upload("inst2", T0)}, why="upload of an installation no wallet authorized"))
    add(http("PUT", f"/v1/prekeys/{i2}", {"upload": upload("inst1", T0)}, why="upload naming another installation than the URL"))
    add(http("PUT", f"/v1/prekeys/{i1}", {"upload": wire.b64e(wire.encode([1, b"", b""]))}, why="upload of the wrong shape"))
    add(http("PUT", f"/v1/prekeys/{i1}", {"upload": wire.b64e(wire.b64d(upload("inst1", T0 + 1))[:-1] + b"\x00")}, why="upload signature wrong"))
    add(http("GET", f"/v1/prekeys/{i1}/count", why="one-time keys left"))
    add(http("POST", f"/v1/prekeys/{i1}/claim", why="claim 1: lowest one-time ids first"))
    add(http("POST", f"/v1/prekeys/{i1}/claim", why="claim 2: the ML-KEM one-time key is gone, last resort"))
    add(http("POST", f"/v1/prekeys/{i1}/claim", why="claim 3: target limit (burst 2 in this script)"))
    add(http("POST", f"/v1/prekeys/{i2}/claim", why="no prekeys"))
    add(http("POST", f"/v1/prekeys/{i1.upper()}/claim", why="installation id in upper case"))
    add(http("POST", "/v1/auth/challenge", {"installation_id": i2}, why="challenge for an installation no wallet authorized"))
    add(http("POST", "/v1/auth/challenge", {"installation_id": i1.upper()}, why="bad installation id"))
    c1 = add(http("POST", "/v1/auth/challenge", {"installation_id": i1}, why="challenge"))
    add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": f"${{challenge:{c1}}}", "signature": f"${{sign:{c1}:inst2}}"},
             why="token: signature by another key"))
    add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": f"${{challenge:{c1}}}", "signature": f"${{sign:{c1}:inst1}}"},
             why="token: the challenge was consumed by the failed request"))
    add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": "AAAA", "signature": wire.b64e(bytes(64))},
             why="token: challenge of 3 bytes"))
    c2 = add(http("POST", "/v1/auth/challenge", {"installation_id": i1}, why="challenge"))
    add(dict(op="advance_clock", seconds=61, why="the challenge is now 61 s old"))
    add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": f"${{challenge:{c2}}}", "signature": f"${{sign:{c2}:inst1}}"},
             why="token: expired challenge"))
    c3 = add(http("POST", "/v1/auth/challenge", {"installation_id": i1}, why="challenge"))
    t1 = add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": f"${{challenge:{c3}}}", "signature": f"${{sign:{c3}:inst1}}"},
                  why="token"))
    add(http("POST", "/v1/envelopes", {"topic": topic1.upper(), "payload": "AAAA"}, why="bad topic"))
    add(http("POST", "/v1/envelopes", {"topic": topic1 + "\n", "payload": "AAAA"}, why="topic with a trailing newline"))
    add(http("POST", "/v1/envelopes", {"topic": topic2, "payload": "AAAA"}, why="topic of an installation no wallet authorized"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": ""}, why="empty payload"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": wire.b64e(bytes(1025))}, why="payload over max_envelope (1024 here)"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": wire.b64e(b"envelope one")}, why="publish"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": wire.b64e(b"envelope two")}, why="publish"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": wire.b64e(b"envelope three")}, why="inbox quota (2 here)"))
    add(http("GET", f"/v1/envelopes/{topic1}", why="fetch without a token"))
    add(http("GET", f"/v1/envelopes/{topic1}", headers={"Authorization": "Bearer not-a-token"}, why="fetch with an unknown token"))
    add(http("GET", f"/v1/envelopes/{topic1}?after=1&limit=0", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="limit 0"))
    add(http("GET", f"/v1/envelopes/{topic1}?after=-1", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="after -1"))
    add(http("GET", f"/v1/envelopes/{topic1}", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="fetch"))
    add(http("GET", f"/v1/envelopes/{topic1}?after=1&limit=5", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="fetch after 1"))
    add(http("GET", f"/v1/envelopes/{topic1}?after=2", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="nothing after 2"))
    add(http("POST", f"/v1/identity/{ANVIL1}", {"record": rec("inst1", wallet=ANVIL1_KEY, address=ANVIL1)},
             why="another wallet's log names inst1, without inst1's token"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst3", "revoke")}, why="revoke inst3 (never authorized): record 2 of 3"))
    add(http("GET", f"/v1/identity-bucket/{prefix}", why="bucket over its cap (1 record here)"))
    add(http("GET", f"/v1/identity-bucket/{prefix}0", why="bucket lookup 4 of burst 4: the longer prefix is empty"))
    add(http("GET", f"/v1/identity-bucket/{prefix}00", why="bucket lookups rate-limited"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst1", "revoke", at=T0 + 10)}, why="revoke inst1: record 3 of 3"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst4", "revoke")}, why="a 4th record: log full"))
    add(http("GET", f"/v1/envelopes/{topic1}", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="fetch after the revocation"))
    add(http("POST", "/v1/envelopes", {"topic": topic1, "payload": "AAAA"}, why="publish to a revoked installation"))
    add(http("GET", f"/v1/prekeys/{i1}/count", why="a revoked installation's prekeys are gone"))
    add(http("POST", "/v1/auth/challenge", {"installation_id": i1}, why="challenge for a revoked installation"))

    inp = dict(settings=RELAY_SETTINGS, clock_start=RELAY_CLOCK_START, installations=insts, steps=steps)
    expected = relay_script_run(inp)
    v = [dict(name="one relay, one scripted session", input=inp, expected=dict(answers=expected))]

    # 1.4: POST /v1/envelopes/batch, on a fresh relay (its own script: the session above has no room left)
    steps = []
    batch = "/v1/envelopes/batch"
    add(http("GET", "/v1/health", why="health: minor 4"))
    add(http("POST", f"/v1/identity/{ANVIL0}", {"record": rec("inst1")}, why="authorize inst1"))
    add(http("POST", batch, {"topics": [topic1], "payloads": []}, why="batch: arrays of different lengths"))
    add(http("POST", batch, {"topics": [], "payloads": []}, why="batch: empty"))
    add(http("POST", batch, {"topics": [topic1] * 257, "payloads": ["AAAA"] * 257}, why="batch: over max_publish_batch (256)"))
    add(http("POST", batch, {"topics": topic1, "payloads": "AAAA"}, why="batch: not arrays"))
    add(http("POST", batch, {"topics": [topic1], "payloads": ["AAAA"], "extra": 1}, why="batch: unknown field"))
    add(http("POST", batch, {"topics": [topic2, topic1], "payloads": ["AAAA", "AAAA"]},
             why="batch: the first envelope's topic has no active installation: nothing stored"))
    add(http("POST", batch, {"topics": [topic1, topic1.upper()], "payloads": [wire.b64e(b"batch one"), "AAAA"]},
             why="batch: the second topic is malformed: the first is stored"))
    add(http("POST", batch, {"topics": [topic1, topic1], "payloads": [wire.b64e(b"batch two"), wire.b64e(b"batch three")]},
             why="batch: the quota (2 here) stops the second"))
    add(http("POST", batch, {"topics": [topic1], "payloads": [""]}, why="batch: an empty payload"))
    c1 = add(http("POST", "/v1/auth/challenge", {"installation_id": i1}, why="challenge"))
    t1 = add(http("POST", "/v1/auth/token", {"installation_id": i1, "challenge": f"${{challenge:{c1}}}", "signature": f"${{sign:{c1}:inst1}}"},
                  why="token"))
    add(http("GET", f"/v1/envelopes/{topic1}", headers={"Authorization": f"Bearer ${{token:{t1}}}"}, why="fetch: what the batches stored, in order"))
    inp = dict(settings=dict(topic_max_envelopes=2), clock_start=RELAY_CLOCK_START, installations=insts, steps=steps)
    v.append(dict(name="batch publish (1.4)", input=inp, expected=dict(answers=relay_script_run(inp))))
    return family("relay-answers", f"ours: {GEN} (recorded against bridge.relay.server.create_app over SQLite through Flask's test "
                  "client; records and uploads are deterministic, volatile fields replaced by descriptions)",
                  "Replay input.steps against a fresh relay (RelaySettings: every rate limit lifted, then input.settings; clock = "
                  "clock_start, moved by 'advance_clock'). An 'http' step sends method + path with headers, and body as JSON (or raw "
                  "as given) with content_type; ${challenge:K}, ${token:K} stand for that field of step K's answer, ${sign:K:LABEL} for "
                  "base64 Ed25519(LABEL's signing_priv, CBOR [1, 'parley-auth', LABEL's iid, challenge of step K]). expected.answers[K] "
                  "is {status, body} (null for advance_clock); a body string '<...>' in RELAY_VOLATILE's words stands for a value of "
                  "that type ('<base64: 32 random bytes>', '<integer: unix seconds>', '<string: opaque bearer token>').", v)


def relay_script_run(inp: dict[str, Any]) -> list[Any]:
    import json as _json
    import tempfile

    from bridge.relay.server import RelaySettings, create_app
    from bridge.relay.sqlite_store import SQLiteStorage

    now = [float(inp["clock_start"])]
    lifted: dict[str, Any] = {}
    for n in ("publish", "claim", "claim_target", "auth", "identity", "bucket"):
        lifted[f"{n}_rate"], lifted[f"{n}_burst"] = 1e6, 10**6
    lifted.update(inp["settings"])
    out: list[Any] = []
    answers: list[Any] = []
    with tempfile.TemporaryDirectory() as d:
        storage = SQLiteStorage(str(Path(d) / "relay.db"))
        try:
            client = create_app(storage, settings=RelaySettings(clock=lambda: now[0], verifier=None, **lifted)).test_client()
            for step in inp["steps"]:
                if step["op"] == "advance_clock":
                    now[0] += step["seconds"]
                    out.append(None)
                    answers.append(None)
                    continue
                body = relay_resolve(step["body"], answers, inp["installations"])
                data = step["raw"] if step["raw"] is not None else (None if body is None else _json.dumps(body))
                kw: dict[str, Any] = {"headers": relay_resolve(step["headers"], answers, inp["installations"])}
                if data is not None:
                    kw.update(data=data, content_type=step["content_type"])
                r = client.open(relay_resolve(step["path"], answers, inp["installations"]), method=step["method"], **kw)
                got = r.get_json(silent=True)
                answers.append(got)
                out.append(dict(status=r.status_code, body=_describe(got)))
        finally:
            storage.close()
    return out


def _describe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: (RELAY_VOLATILE[k] if k in RELAY_VOLATILE else _describe(v)) for k, v in x.items()}
    if isinstance(x, list):
        return [_describe(v) for v in x]
    return x


FAMILIES = {
    "rfc5869_hkdf.json": rfc5869,
    "rfc4231_hmac.json": rfc4231,
    "rfc7748_x25519.json": rfc7748,
    "rfc8032_ed25519.json": rfc8032,
    "libsignal_chain_key.json": libsignal_chain,
    "parley_kdf_rk.json": kdf_rk_family,
    "parley_kdf_ck.json": kdf_ck_family,
    "parley_message_keys.json": message_keys_family,
    "parley_pqxdh_kdf.json": pqxdh_kdf_family,
    "parley_header.json": header_family,
    "parley_encrypt.json": encrypt_family,
    "parley_pqxdh.json": pqxdh_family,
    "parley_session.json": session_family,
    "parley_sealed.json": sealed_family,
    "parley_content_padding.json": content_padding_family,
    "parley_local_api_proof.json": local_api_proof_family,
    "identity.json": identity_family,
    "identity_negative.json": identity_negative_family,
    "identity_active_set.json": active_set_family,
    "parley_content.json": content_family,
    "parley_prekeys.json": prekeys_family,
    "parley_auth.json": auth_family,
    "parley_ratchet_limits.json": ratchet_limits_family,
    "relay_answers.json": relay_answers_family,
    "parley_relay_list.json": relay_list_family,
    "parley_content_types.json": content_types_family,
    "parley_backup.json": backup_family,
}
RECORDED = {"parley_pqxdh.json", "parley_session.json", "parley_sealed.json"}
#: Why a recorded family cannot be regenerated: what --check does instead.
WHY_RECORDED = {
    "parley_pqxdh.json": "decrypt direction only: ML-KEM-768 encapsulation takes no injected randomness, so the KEM "
                         "ciphertext cannot be re-derived; checked by an independent PQXDH/first-message derivation, then bridge.crypto",
    "parley_session.json": "replayed: the initial Alice session pins an ML-KEM ciphertext (as above); every later byte is "
                           "re-derived (sends must reproduce their bytes, final states theirs)",
    "parley_sealed.json": "decrypt direction only: HPKE (RFC 9180) generates its ephemeral key inside the library; the "
                          "payloads are opened, not re-sealed, and those with input.engine go through Engine.process",
}


# --- --check for the recorded families (decrypt direction) ----------------------------------
#
# Their bytes cannot be regenerated (ML-KEM encapsulation and HPKE randomness cannot be injected),
# so --check verifies the checked-in vectors instead: PQXDH is recomputed independently (stdlib
# HKDF/HMAC/SHA-256 over the DH and KEM outputs, and the first ratchet message decrypted with the
# same reference KDFs), then through bridge.crypto; the session script is replayed (every send must
# reproduce its bytes, every delivery its plaintext, every replay its error, and both final states
# their bytes); sealed-sender payloads are opened; every negative vector must raise exactly its class.

def _error_class(name: str) -> type[BaseException]:
    from bridge.crypto import DuplicateMessage, SessionError, TooManySkipped
    from bridge.protocol.wire import WireError

    return {"CryptoError": P.CryptoError, "DecryptError": P.DecryptError, "InvalidSignature": P.InvalidSignature,
            "SessionError": SessionError, "DuplicateMessage": DuplicateMessage, "TooManySkipped": TooManySkipped,
            "WireError": WireError}[name]


def _raises(expected: str, fn: Any) -> str | None:
    """None if ``fn()`` raises exactly the class named ``expected``, else what went wrong."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any other class is a finding
        return None if type(exc) is _error_class(expected) else f"raised {type(exc).__name__} ({exc}), expected {expected}"
    return f"did not raise {expected}"


def _b(x: str | None) -> bytes | None:
    return None if x is None else bytes.fromhex(x)


def _local(d: dict[str, Any]) -> session.LocalIdentity:
    return session.LocalIdentity(d["installation_id"], bytes.fromhex(d["signing_priv"]), bytes.fromhex(d["signing_pub"]),
                                 bytes.fromhex(d["identity_priv"]), bytes.fromhex(d["identity_pub"]))


def _remote_of(d: dict[str, Any]) -> session.RemoteInstallation:
    return session.RemoteInstallation(d["installation_id"], bytes.fromhex(d["signing_pub"]), bytes.fromhex(d["identity_pub"]))


def _ref_first_message(i: dict[str, Any]) -> dict[str, str]:
    """PQXDH responder and Bob's first RatchetDecrypt, with reference KDFs only (no bridge.crypto.kdf)."""
    o = wire.decode(bytes.fromhex(i["message"]))
    if not (isinstance(o, list) and len(o) == 12 and o[:2] == [1, "prekey"]):
        raise ValueError("not a PreKey message")
    _, _, sid, ik_a, ek_a, spk_id, otpk_id, kind, pq_id, kem_ct, header, body = o
    spk_priv, otpk_priv = bytes.fromhex(i["spk_priv"]), _b(i["otpk_priv"])
    bob = i["bob"]
    dhs = [P.x25519_dh(spk_priv, bytes.fromhex(i["alice"]["identity_pub"])),
           P.x25519_dh(bytes.fromhex(bob["identity_priv"]), ek_a), P.x25519_dh(spk_priv, ek_a)]
    if otpk_priv is not None:
        dhs.append(P.x25519_dh(otpk_priv, ek_a))
    ss = P.mlkem768_decapsulate(bytes.fromhex(i["pqpk_seed"]), kem_ct)
    sk = ref_hkdf(b"\xff" * 32 + b"".join(dhs) + ss, bytes(32), b"Parley_PQXDH_CURVE25519_SHA-256_ML-KEM-768", 32)
    ad = (b"parley/v1" + bytes.fromhex(i["alice"]["identity_pub"]) + bytes.fromhex(bob["identity_pub"])
          + i["alice"]["installation_id"].encode() + bob["installation_id"].encode())
    ref_sid = hashlib.sha256(ad + ek_a + kem_ct + wire.encode([spk_id, otpk_id, kind, pq_id])).digest()[:16]
    if ref_sid != sid:
        raise ValueError("sid in the message is not SHA-256(AD ‖ EK ‖ CT ‖ ids)[:16]")
    if ik_a.hex() != i["alice"]["identity_pub"]:
        raise ValueError("identity key in the message is not Alice's")
    dh_pub, pn, n = wire.decode(header)
    out = ref_hkdf(P.x25519_dh(spk_priv, dh_pub), sk, b"Parley_Ratchet_v1", 64)  # RatchetInitBob: RK = SK, DHs = SPK
    ck = out[32:]
    for _ in range(n):
        ck = ref_hmac(ck, b"\x02")
    keys = ref_hkdf(ref_hmac(ck, b"\x01"), bytes(32), b"Parley_MessageKeys_v1", 80)
    cbc, tag = body[:-32], body[-32:]
    if not hmac.compare_digest(ref_hmac(keys[32:64], ad + header + cbc), tag):
        raise ValueError("ratchet tag does not verify under the reference derivation")
    pt = P.aes256_cbc_decrypt(keys[:32], keys[64:], cbc)
    return dict(sk=sk.hex(), ad=ad.hex(), sid=sid.hex(), ephemeral_pub=ek_a.hex(), plaintext=pt.hex())


def check_pqxdh(data: dict[str, Any]) -> list[str]:
    problems = []
    for v in data["vectors"]:
        i, e = v["input"], v["expected"]
        if "bundle" in i:  # initiator-side negative
            err = _raises(e["error"], lambda: session.initiate(_local(i["alice"]), _remote_of(i["bob"]), Bundle.decode(bytes.fromhex(i["bundle"]))))
            if err:
                problems.append(f"{v['name']}: {err}")
            continue
        run = lambda: session.accept(  # noqa: E731
            _local(i["bob"]), _remote_of(i["alice"]), bytes.fromhex(i["message"]), spk_priv=bytes.fromhex(i["spk_priv"]),
            otpk_priv=_b(i["otpk_priv"]), pqpk_seed=bytes.fromhex(i["pqpk_seed"]), ratchet_priv=bytes.fromhex(i["bob_ratchet_priv"]))
        if "error" in e:
            err = _raises(e["error"], run)
            if err:
                problems.append(f"{v['name']}: {err}")
            continue
        try:
            ref = _ref_first_message(i)
        except (ValueError, P.CryptoError) as exc:
            problems.append(f"{v['name']}: reference derivation failed: {exc}")
            continue
        if ref != e:
            problems.append(f"{v['name']}: reference derivation gives {sorted(k for k in e if ref.get(k) != e[k])} other than expected")
        s, pt = run()
        if (pt.hex(), s.sid.hex(), s.ad.hex()) != (e["plaintext"], e["sid"], e["ad"]):
            problems.append(f"{v['name']}: session.accept disagrees with the vector")
    return problems


def check_session(data: dict[str, Any]) -> list[str]:
    problems = []
    for v in data["vectors"]:
        i, e = v["input"], v["expected"]
        bob = _local(i["bob"])
        alice_remote = _remote_of(i["alice"])
        states: dict[str, session.Session | None] = {"alice": session.Session.from_bytes(bytes.fromhex(i["alice_session"])), "bob": None}
        for n, step in enumerate(i["steps"]):
            where = f"{v['name']}: step {n} ({step['op']})"
            try:
                if step["op"] == "send":
                    st = states[step["sender"]]
                    if st is None:
                        raise ValueError("sender has no session")
                    states[step["sender"]], msg = session.encrypt(st, bytes.fromhex(step["plaintext"]))
                    if msg.hex() != step["message"]:
                        problems.append(f"{where}: message bytes differ")
                elif step["op"] == "deliver":
                    st, m, rp = states[step["to"]], bytes.fromhex(step["message"]), bytes.fromhex(step["ratchet_priv"])
                    if st is None:
                        st, pt = session.accept(bob, alice_remote, m, spk_priv=bytes.fromhex(i["spk_priv"]), otpk_priv=_b(i["otpk_priv"]),
                                                pqpk_seed=bytes.fromhex(i["pqpk_seed"]), ratchet_priv=rp)
                    else:
                        st, pt = session.decrypt(st, m, ratchet_priv=rp)
                    states[step["to"]] = st
                    if pt.hex() != step["plaintext"]:
                        problems.append(f"{where}: plaintext differs")
                else:
                    held = states[step["to"]]
                    if held is None:
                        raise ValueError("recipient has no session")
                    err = _raises(step["error"], lambda: session.decrypt(held, bytes.fromhex(step["message"])))
                    if err:
                        problems.append(f"{where}: {err}")
            except (ValueError, P.CryptoError) as exc:
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
                break
        else:
            for who in ("alice", "bob"):
                st = states[who]
                if st is None or st.to_bytes().hex() != e[f"{who}_session"]:
                    problems.append(f"{v['name']}: final {who} session differs")
    return problems


def check_sealed(data: dict[str, Any]) -> list[str]:
    problems = []
    for v in data["vectors"]:
        i, e = v["input"], v["expected"]
        run = lambda: sealed.unseal(bytes.fromhex(i["identity_priv"]), i["own_iid"], bytes.fromhex(i["payload"]))  # noqa: E731
        if "error" in e:
            err = _raises(e["error"], run)
            if err:
                problems.append(f"{v['name']}: {err}")
            continue
        try:
            u = run()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{v['name']}: {type(exc).__name__}: {exc}")
            continue
        if (u.sender_iid, u.sender_record.hex(), u.message.hex()) != (e["sender_iid"], e["sender_record"], e["message"]):
            problems.append(f"{v['name']}: opened payload differs")
        if "engine" in i:
            try:
                got = _engine_outcome(i)
            except Exception as exc:  # noqa: BLE001
                got = {"raised": f"{type(exc).__name__}: {exc}"}
            if got != e["engine"]:
                problems.append(f"{v['name']}: the engine gives {got}, expected {e['engine']}")
    return problems


def _engine_outcome(i: dict[str, Any]) -> dict[str, Any]:
    """Engine.process of the payload by the vector's recipient (fresh store): what it stores or quarantines."""
    import tempfile

    from bridge.engine import Engine, inbox
    from bridge.keys.keyfile import Secrets
    from bridge.relay.storage import Envelope
    from bridge.store import Store

    import logging

    logging.getLogger("bridge").addHandler(logging.NullHandler())  # quarantine warnings are expected here
    e = i["engine"]
    r = e["recipient"]
    secrets = Secrets(bytes.fromhex(r["wallet_key"]), bytes.fromhex(r["signing_priv"]), bytes.fromhex(r["identity_priv"]),
                      hashlib.sha256(b"storage").digest())
    with tempfile.TemporaryDirectory() as d:
        eng = Engine(Store(Path(d) / "bridge.db"), secrets, {"address": r["address"], "installation_id": r["installation_id"],
                                                             "record": r["record"]}, "http://127.0.0.1:9")
        try:
            keys = {(kind, pid): bytes.fromhex(priv) for kind, pid, priv in e.get("prekeys", [])}
            eng._prekey = lambda c, kind, pid: keys[(kind, pid)]  # type: ignore[method-assign]
            eng.ensure_prekeys = lambda: False  # type: ignore[method-assign]
            if "session" in e:
                with eng.store.write() as c:
                    eng._save_session(c, session.Session.from_bytes(bytes.fromhex(e["session"])))
            msg = eng.process(Envelope(7, eng.topic, bytes.fromhex(i["payload"]), 1))
            if msg is not None:
                return {"stored": {k: msg[k] for k in ("id", "sender", "recipient", "text", "sent_at")}}
            return {"quarantined": inbox.quarantined(eng.store)[0]["error"]}
        finally:
            eng.store.close()


CHECKS = {"parley_pqxdh.json": check_pqxdh, "parley_session.json": check_session, "parley_sealed.json": check_sealed}


#: identity.json predates the generator and keeps its layout (indent 2)
INDENT = {"identity.json": 2}


def dump(obj: dict[str, Any], name: str = "") -> str:
    return json.dumps(obj, indent=INDENT.get(name, 1), sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    out = OUT
    if "--vectors" in argv:  # --check another copy of the directory (the tests use this)
        out = Path(argv[argv.index("--vectors") + 1])
    bad = 0
    for name, fn in FAMILIES.items():
        path = out / name
        if check:
            if name in RECORDED:
                try:
                    problems = CHECKS[name](json.loads(path.read_text()))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    problems = [f"unreadable: {type(exc).__name__}: {exc}"]
                for p in problems:
                    print(f"DIFFERS: {name}: {p}")
                bad += bool(problems)
                print(f"{'checked' if not problems else 'FAILED '} {name} ({'decrypt direction' if name != 'parley_session.json' else 'replayed'})")
                print(f"    {name}: {WHY_RECORDED[name]}")
                continue
            try:
                fresh = dump(fn(), name)
            except Exception as exc:  # noqa: BLE001 - the code under test no longer behaves as recorded
                print(f"DIFFERS: {name}: regenerating failed: {type(exc).__name__}: {exc}")
                bad += 1
                continue
            if not path.exists() or path.read_text() != fresh:
                print(f"DIFFERS: {name}")
                bad += 1
            else:
                print(f"checked {name} (regenerated)")
            continue
        if name in RECORDED and "--record" not in argv and path.exists():
            continue
        path.write_text(dump(fn(), name))
        print(f"wrote {path.relative_to(ROOT)}")
    if check:
        unknown = sorted(p.name for p in out.glob("*.json") if p.name not in FAMILIES)
        for name in unknown:  # every file in the directory must be one of ours
            print(f"DIFFERS: {name}: no generator or check for this file")
        bad += len(unknown)
        print(f"regenerated and compared: {len(FAMILIES) - len(RECORDED)} families; decrypt direction / replay only: "
              f"{', '.join(sorted(RECORDED))}")
        print(f"all {len(FAMILIES)} families match" if not bad else f"{bad} families differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
