#!/usr/bin/env python3
"""Export throughput of the backup archive writer against plain zstd + AES-256-GCM over the same bytes.

Run: ``python bench/backup_export.py [-n 100000] [--repeat 3]`` (about 20-40 s on 2 cores). Not a test.

The record stream is what an export of a busy history looks like (PROTOCOL.md §12.3): ``n`` message
records (random 16-byte ids, two peers, texts of 5-60 words from a 2,000-word vocabulary, timestamps,
states, some replies and edits) between a meta/settings/contacts head and an end record.

Rows (MB/s of the framed plaintext body, the best of ``--repeat`` runs, all in this process):

* baseline: ``zstandard.ZstdCompressor(level=3).compress(body)`` in one call, then one AES-256-GCM over
  the compressed bytes: the least work that can turn the same bytes into the same kind of ciphertext;
* write_archive, pre-encoded: ``write_archive`` fed ``Encoded`` records (the framing, batching, streamed
  compression and the STREAM chunks; what the issue's goal compares: "within 2x of plain zstd plus
  AEAD over the same bytes");
* write_archive, from objects: the same fed the Python records (adds canonical CBOR encoding and the
  value check, which the baseline does not do at all).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard  # noqa: E402

from bridge.backup import archive as A  # noqa: E402
from bridge.crypto import primitives as P  # noqa: E402
from bridge.protocol import wire  # noqa: E402

ALICE = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
BOB = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


class Sink:
    """A file that only counts (so the disk is not what is measured)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)


def records(n: int, seed: int = 15) -> list[Any]:
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    t = 1_790_000_000_000
    out: list[Any] = [
        ["meta", {"version": 1, "address": ALICE, "installation_id": rng.randbytes(16).hex(), "wallet": "generated",
                  "created_at": t, "purpose": "export"}],
        ["settings", {"display_name": "alice", "read_receipts": True, "typing_indicators": True}],
        ["contacts", [{"address": BOB, "name": "Bob"}]],
        ["conversation", {"peer": BOB, "created_at": t, "updated_at": t + n * 30_000}],
    ]
    ids: list[str] = []
    for i in range(n):
        t += rng.randint(1_000, 60_000)
        mine = rng.random() < 0.5
        mid = rng.randbytes(16).hex()
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 60)))
        reply = rng.choice(ids) if ids and rng.random() < 0.1 else None
        out.append(["message", {
            "id": mid, "peer": BOB, "sender": ALICE if mine else BOB, "recipient": BOB if mine else ALICE, "text": text,
            "sent_at": t, "received_at": t + rng.randint(50, 900), "direction": "out" if mine else "in",
            "state": "delivered" if mine else "received", "read": True, "claimed_sent_at": t, "kind": "text",
            "content_type": "reply" if reply else "text", "extra": None, "reply_to": reply,
            "edited_at": t + 5_000 if rng.random() < 0.02 else None, "deleted": False, "read_at": t + rng.randint(1_000, 99_000)}])
        ids.append(mid)
        if len(ids) > 200:
            ids.pop(0)
    out.append(["end", {"records": len(out)}])
    return out


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="message records (default 100000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--level", type=int, default=3)
    args = ap.parse_args()

    recs = records(args.n)
    encoded = [wire.encode(r) for r in recs]
    body = b"".join(struct.pack(">I", len(c)) + c for c in encoded)
    mb = len(body) / 1e6
    key, bid = P.random_bytes(32), P.random_bytes(16)

    def baseline() -> int:
        compressed = zstandard.ZstdCompressor(level=args.level).compress(body)
        return len(P.aes256_gcm_encrypt(key, compressed))

    def archive(items: list[Any]) -> int:
        sink = Sink()
        A.write_archive(sink, items, wrapping_key=key, backup_id=bid, purpose="export", level=args.level)  # type: ignore[arg-type]
        return sink.n

    pre = [A.Encoded(c) for c in encoded]
    t_base, base_size = best(baseline, args.repeat)
    t_pre, pre_size = best(lambda: archive(pre), args.repeat)
    t_obj, _ = best(lambda: archive(recs), args.repeat)

    print(f"records: {len(recs):,} ({args.n:,} messages); framed body {mb:.1f} MB; zstd level {args.level}; "
          f"chunk {A.DEFAULT_CHUNK // 1024} KiB; best of {args.repeat}")
    print(f"{'':34} {'seconds':>8} {'MB/s':>8} {'output':>10} {'vs baseline':>12}")
    print(f"{'baseline: zstd + AES-256-GCM':34} {t_base:8.3f} {mb / t_base:8.1f} {base_size / 1e6:9.2f}M {1:11.2f}x")
    print(f"{'write_archive, pre-encoded':34} {t_pre:8.3f} {mb / t_pre:8.1f} {pre_size / 1e6:9.2f}M {t_pre / t_base:11.2f}x")
    print(f"{'write_archive, from objects':34} {t_obj:8.3f} {mb / t_obj:8.1f} {pre_size / 1e6:9.2f}M {t_obj / t_base:11.2f}x")
    print(f"goal (issue 15): write_archive within 2x of the baseline: "
          f"{'met' if t_pre / t_base <= 2 else 'NOT met'} ({t_pre / t_base:.2f}x pre-encoded); "
          f"CBOR encoding of the records adds {t_obj - t_pre:.2f} s ({(t_obj - t_pre) / len(recs) * 1e6:.1f} us per record)")


if __name__ == "__main__":
    main()
