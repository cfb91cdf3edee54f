#!/usr/bin/env python3
"""Throughput of Parley's E2E layer, and its cost relative to the raw primitives it uses.

Run: ``python bench/crypto.py`` (about 10-20 s on 2 cores). Prints one table. Not a test.

* ratchet: one ``session.encrypt`` + one ``session.decrypt`` of a 100-byte message, same chain
  (per message: 2 KDF_CK + 2 HKDF message-key expansions + AES-CBC enc/dec + 2 HMAC + CBOR);
* ping-pong: the same but alternating direction, so every message is a DH ratchet step
  (adds a key generation + 2 X25519 + 2 HKDF on the receiver);
* setup: ``initiate`` (bundle verify, 4 X25519, ML-KEM encaps, HKDF) + first ``encrypt`` + ``accept``
  (4 X25519, ML-KEM decaps, HKDF, first decrypt with a DH ratchet step); bundle fetch excluded.

Each row also shows the time of the raw primitive operations that row performs, measured in the
same run, and the ratio (ours / raw): the overhead of state handling, encoding and checks.

Optional baseline (issue 13): Syndace's ``doubleratchet`` (PyPI, ``pip install doubleratchet``), run
in the same process with Parley's parameters (Curve25519, HKDF-SHA256 root chain, HMAC-SHA256 message
chains, AES-256-CBC + HMAC-SHA256 AEAD, 100-byte messages), same chain and with a DH step on every
message. Its coroutines never suspend, so they are driven without an event loop (no loop overhead is
counted against it). Skipped, with one line saying so, when it is not installed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.crypto import primitives as P  # noqa: E402
from bridge.crypto import session  # noqa: E402
from bridge.protocol.ids import installation_id  # noqa: E402
from bridge.protocol.prekeys import PQ_OTPK, SPK, Bundle, OneTimePrekey, sign_prekey  # noqa: E402

BUDGET = 1.0  # seconds per measurement


def rate(fn: Callable[[], object], budget: float = BUDGET) -> float:
    """Operations per second of ``fn`` over about ``budget`` seconds."""
    n, t0 = 0, time.perf_counter()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= budget:
            return n / dt
        batch = min(batch * 2, 256)


def ident() -> session.LocalIdentity:
    sp, spub = P.ed25519_keypair()
    ip, ipub = P.x25519_keypair()
    return session.LocalIdentity(installation_id(spub, ipub), sp, spub, ip, ipub)


def remote(li: session.LocalIdentity) -> session.RemoteInstallation:
    return session.RemoteInstallation(li.installation_id, li.signing_pub, li.identity_pub)


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (Syndace's crypto is synchronous under ``async``)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def syndace_rates(pt: bytes) -> tuple[float, float] | None:
    """encrypt+decrypt pairs/s of Syndace's doubleratchet, same chain and DH step each; None when absent."""
    try:
        from doubleratchet import DoubleRatchet, Header
        from doubleratchet.recommended import HashFunction, aead_aes_hmac, diffie_hellman_ratchet_curve25519, kdf_hkdf, kdf_separate_hmacs
    except ImportError:
        return None

    class Aead(aead_aes_hmac.AEAD):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench message keys"

    class RootKdf(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench root chain"

    class ChainKdf(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

    class Ratchet(DoubleRatchet):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
            return (associated_data + header.ratchet_pub + header.previous_sending_chain_length.to_bytes(8, "big")
                    + header.sending_chain_length.to_bytes(8, "big"))

    dh = diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet
    params = (dh, RootKdf, ChainKdf, b"\x02\x01", 1000, 1000, Aead)
    shared, ad = P.random_bytes(32), b"ad"
    bob_priv, bob_pub = P.x25519_keypair()
    a, first = drive(Ratchet.encrypt_initial_message(*params, shared, bob_pub, b"hello", ad))
    b, _ = drive(Ratchet.decrypt_initial_message(*params, shared, bob_priv, first, ad))
    b_reply = drive(b.encrypt_message(b"r", ad))
    drive(a.decrypt_message(b_reply, ad))
    state = {"a": a, "b": b}

    def one_way() -> None:
        drive(state["b"].decrypt_message(drive(state["a"].encrypt_message(pt, ad)), ad))

    flip = {"turn": 0}

    def ping_pong() -> None:
        s, d = ("a", "b") if flip["turn"] % 2 == 0 else ("b", "a")
        flip["turn"] += 1
        drive(state[d].decrypt_message(drive(state[s].encrypt_message(pt, ad)), ad))

    return rate(one_way), rate(ping_pong)


def main() -> None:
    alice, bob = ident(), ident()
    spk_priv, spk_pub = P.x25519_keypair()
    ot_priv, ot_pub = P.x25519_keypair()
    seed, pq_pub = P.mlkem768_keypair()
    bundle = Bundle(bob.installation_id, sign_prekey(bob.signing_priv, SPK, 1, spk_pub), OneTimePrekey(2, ot_pub),
                    sign_prekey(bob.signing_priv, PQ_OTPK, 3, pq_pub))
    ra, rb = remote(alice), remote(bob)
    pt = b"x" * 100

    # --- raw primitives ---
    xa, xpub = P.x25519_keypair()
    key32 = P.random_bytes(32)
    iv = P.random_bytes(16)
    cbc = P.aes256_cbc_encrypt(key32, iv, pt)
    _, kem_ct = P.mlkem768_encapsulate(pq_pub)
    raw = {
        "X25519 DH": rate(lambda: P.x25519_dh(xa, xpub)),
        "X25519 keygen": rate(lambda: P.x25519_keypair()),
        "Ed25519 verify (prekey)": rate(lambda: bundle.spk.verify(bob.signing_pub)),
        "ML-KEM-768 encaps": rate(lambda: P.mlkem768_encapsulate(pq_pub)),
        "ML-KEM-768 decaps": rate(lambda: P.mlkem768_decapsulate(seed, kem_ct)),
        "HKDF-SHA256 (L=80)": rate(lambda: P.hkdf_sha256(key32, salt=None, info=b"i", length=80)),
        "HMAC-SHA256": rate(lambda: P.hmac_sha256(key32, pt)),
        "AES-256-CBC enc 100 B": rate(lambda: P.aes256_cbc_encrypt(key32, iv, pt)),
        "AES-256-CBC dec 100 B": rate(lambda: P.aes256_cbc_decrypt(key32, iv, cbc)),
    }
    us = {k: 1e6 / v for k, v in raw.items()}

    # --- ratchet, same chain ---
    sa = session.initiate(alice, rb, bundle)
    sa, m = session.encrypt(sa, b"hello")
    sb, _ = session.accept(bob, ra, m, spk_priv=spk_priv, otpk_priv=ot_priv, pqpk_seed=seed)
    sb, r = session.encrypt(sb, b"r")
    sa, _ = session.decrypt(sa, r)
    state = {"a": sa, "b": sb}

    def one_way() -> None:
        state["a"], msg = session.encrypt(state["a"], pt)
        state["b"], _ = session.decrypt(state["b"], msg)

    flip = {"turn": 0}

    def ping_pong() -> None:
        s, d = ("a", "b") if flip["turn"] % 2 == 0 else ("b", "a")
        flip["turn"] += 1
        state[s], msg = session.encrypt(state[s], pt)
        state[d], _ = session.decrypt(state[d], msg)

    def setup() -> None:
        s = session.initiate(alice, rb, bundle)
        s, msg = session.encrypt(s, pt)
        session.accept(bob, ra, msg, spk_priv=spk_priv, otpk_priv=ot_priv, pqpk_seed=seed)

    # per message: KDF_CK = 2 HMAC on each side, message-key HKDF on each side, CBC enc + dec, tag + check
    sym = 6 * us["HMAC-SHA256"] + 2 * us["HKDF-SHA256 (L=80)"] + us["AES-256-CBC enc 100 B"] + us["AES-256-CBC dec 100 B"]
    ours = [
        ("ratchet encrypt+decrypt, same chain", rate(one_way), sym,
         "2 KDF_CK (4 HMAC) + 2 HKDF + CBC enc/dec + 2 HMAC tag"),
        ("ratchet encrypt+decrypt, DH step each", rate(ping_pong), sym + us["X25519 keygen"] + 2 * us["X25519 DH"] + 2 * us["HKDF-SHA256 (L=80)"],
         "same + keygen + 2 DH + 2 HKDF (KDF_RK)"),
        ("session setup (initiate+encrypt+accept)", rate(setup, 2 * BUDGET),
         2 * us["Ed25519 verify (prekey)"] + 4 * us["X25519 keygen"] + 11 * us["X25519 DH"] + us["ML-KEM-768 encaps"]
         + us["ML-KEM-768 decaps"] + 5 * us["HKDF-SHA256 (L=80)"] + sym,
         "2 verify + 4 keygen + 11 DH (4+1 Alice, 4+2 Bob) + encaps + decaps + 5 HKDF + first message"),
    ]
    print(f"{'raw primitive':<42}{'ops/s':>12}{'us/op':>10}")
    for k, v in raw.items():
        print(f"{k:<42}{v:>12,.0f}{1e6 / v:>10.1f}")
    print()
    print(f"{'Parley operation':<42}{'ops/s':>12}{'us/op':>10}{'raw us':>10}{'ratio':>8}  raw = ")
    for name, ops, raw_us, what in ours:
        print(f"{name:<42}{ops:>12,.0f}{1e6 / ops:>10.1f}{raw_us:>10.1f}{(1e6 / ops) / raw_us:>8.2f}  {what}")
    print("\nratio = time of our operation / time of the raw primitive calls it makes (same run).")
    syndace = syndace_rates(pt)
    if syndace is None:
        print("\nSyndace doubleratchet: not installed (pip install doubleratchet); baseline skipped")
        return
    print(f"\n{'vs Syndace doubleratchet (same run)':<42}{'Parley/s':>12}{'Syndace/s':>12}{'Parley faster':>15}")
    for (name, ops, _, _), theirs in zip(ours, syndace):
        print(f"{name:<42}{ops:>12,.0f}{theirs:>12,.0f}{ops / theirs:>14.2f}x")


if __name__ == "__main__":
    main()
