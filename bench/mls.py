#!/usr/bin/env python3
"""MLS groups (issue 14): the goals, each against a baseline taken in the same run.

* **Adding members**: one commit adding 250 members (with the Welcome), against the same members
  joining a group one commit at a time. Goal: ≤ 2 s.
* **Sending**: one application message to a 1,000-member group: its size (one envelope for the
  whole group) and the time to encrypt it, against sending the same 100-byte message pairwise over
  1:1 sessions (Parley's ratchet plus the sealed-sender envelope for each of the 999 others).
  Goal: ≤ 5 ms.
* **Commits**: a member processing a commit (a self-update with an UpdatePath) at 1,000 members,
  against the committer making it. Goal: ≤ 50 ms.

Run: ``python bench/mls.py [--members 1000] [--adds 250] [--suite 3]`` (about 20-40 s on 2 cores). A
script, not a test: it prints the figures and ratios, it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.crypto import ident, remote  # noqa: E402
from bench.relay_load import describe_machine  # noqa: E402
from bridge.crypto import primitives as P  # noqa: E402
from bridge.crypto import sealed, session  # noqa: E402
from bridge.mls.group import GroupState, KeyPackageSecrets, create, join, new_key_package  # noqa: E402
from bridge.mls.messages import MLSMessage  # noqa: E402
from bridge.mls.suite import suite  # noqa: E402
from bridge.protocol.prekeys import PQ_OTPK, SPK, Bundle, OneTimePrekey, sign_prekey  # noqa: E402


def members(cs, n: int, prefix: str) -> list[KeyPackageSecrets]:
    return [new_key_package(cs, f"{prefix}{i}".encode(), cs.signature_keypair()[0]) for i in range(n)]


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """(median seconds of ``repeat`` runs, the last result)."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def pairwise_sessions(n: int) -> list[tuple[session.Session, bytes, str]]:
    """n 1:1 sessions from one sender, each with its recipient's identity key and id (for sealing)."""
    alice = ident()
    out = []
    for _ in range(n):
        bob = ident()
        spk_priv, spk_pub = P.x25519_keypair()
        _, ot_pub = P.x25519_keypair()
        _, pq_pub = P.mlkem768_keypair()
        bundle = Bundle(bob.installation_id, sign_prekey(bob.signing_priv, SPK, 1, spk_pub), OneTimePrekey(2, ot_pub),
                        sign_prekey(bob.signing_priv, PQ_OTPK, 3, pq_pub))
        out.append((session.initiate(alice, remote(bob), bundle), bob.identity_pub, bob.installation_id))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1000, help="group size for sending and commits (default 1000)")
    ap.add_argument("--adds", type=int, default=250, help="members added in one commit (default 250)")
    ap.add_argument("--suite", type=int, default=3, choices=(1, 3), help="cipher suite (default 3, XMTP's)")
    args = ap.parse_args()
    cs = suite(args.suite)
    print(describe_machine())
    print(f"# cipher suite 0x{cs.id:04x} ({cs.name})")

    # --- adding members ---
    newcomers = members(cs, args.adds, "n")
    group = create(cs, b"bench-adds", members(cs, 1, "admin")[0])
    t_one, committed = timed(lambda: group.commit(add=tuple(k.key_package for k in newcomers)))
    welcome_size = len(committed.welcome or b"")
    state = create(cs, b"bench-adds-1by1", members(cs, 1, "admin")[0])
    t = time.perf_counter()
    for k in newcomers:
        state = state.commit(add=(k.key_package,)).state
    t_each = time.perf_counter() - t
    print(f"\n## adding {args.adds} members (goal: <= 2 s)")
    print(f"one commit adding all:         {t_one:8.3f} s   (Welcome {welcome_size:,} bytes)")
    print(f"baseline, one commit each:     {t_each:8.3f} s   ratio x{t_one / t_each:.3f}")

    # --- a group of --members ---
    everyone = members(cs, args.members - 1, "m")
    admin = create(cs, b"bench-big", members(cs, 1, "admin")[0])
    big = admin.commit(add=tuple(k.key_package for k in everyone))
    admin = big.state
    welcome = MLSMessage.decode(big.welcome or b"").body
    k = everyone[len(everyone) // 2]
    reader: GroupState = join(cs, welcome, k.key_package, init_priv=k.init_priv, encryption_priv=k.encryption_priv,  # type: ignore[arg-type]
                              signature_priv=k.signature_priv)
    pt = b"x" * 100
    t_send, envelope = timed(lambda: admin.encrypt(pt), repeat=50)
    assert reader.receive(envelope).content.application_data == pt  # type: ignore[arg-type]
    sessions = pairwise_sessions(args.members - 1)
    sender_iid = ident().installation_id

    def pairwise() -> int:
        total = 0
        for i, (s, ipub, iid) in enumerate(sessions):
            s2, msg = session.encrypt(s, pt)
            sessions[i] = (s2, ipub, iid)
            total += len(sealed.seal(ipub, iid, sender_iid, b"r" * 200, msg))
        return total

    t_pair, pair_bytes = timed(pairwise, repeat=3)
    print(f"\n## sending 100 bytes to a group of {args.members} (goal: one envelope, <= 5 ms)")
    print(f"MLS application message:       {t_send * 1000:8.3f} ms  1 envelope of {len(envelope):,} bytes")  # type: ignore[arg-type]
    print(f"baseline, pairwise 1:1:        {t_pair * 1000:8.1f} ms  {args.members - 1} envelopes, {pair_bytes:,} bytes  ratio x{t_send / t_pair:.5f}")

    # --- commits at --members ---
    processed, made = [], []
    for _ in range(5):
        t = time.perf_counter()
        c = admin.commit()
        made.append(time.perf_counter() - t)
        t = time.perf_counter()
        reader.receive(c.message)
        processed.append(time.perf_counter() - t)
        admin = c.state
        assert reader.epoch_authenticator() == admin.epoch_authenticator()
    print(f"\n## a commit (self-update with an UpdatePath) at {args.members} members (goal: processing <= 50 ms)")
    print(f"a member processing it:        {statistics.median(processed) * 1000:8.1f} ms  (median of 5)")
    print(f"baseline, the committer making it: {statistics.median(made) * 1000:6.1f} ms  ratio x{statistics.median(processed) / statistics.median(made):.2f}")


if __name__ == "__main__":
    main()
