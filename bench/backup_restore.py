#!/usr/bin/env python3
"""Restore speed (issue 15 goals): 100,000 messages in 1,000 conversations imported from an archive in
≤ 30 s, and the 1,000 conversations listed after the import in ≤ 1 s.

Run: ``python bench/backup_restore.py [--messages N] [--conversations C]`` (about a minute on 2 cores).
Not a test. Prints one table.

1. A home's store is filled by direct SQL (fast): C conversations (consent ``allowed``), N messages
   spread over them (texts of 20-200 characters, both directions), a reaction on every 20th message.
2. ``export``: bridge/backup/snapshot.export_records → archive.write_archive (zstd + AES-256-GCM) to a file.
3. ``import``: archive.open_archive → snapshot.import_records into an EMPTY store of the same wallet
   (what ``parley backup import`` and a restore do: every record checked, staged, one transaction).
4. ``list``: ``Engine.conversations("inbox")`` on the imported store: the call the inbox page and the
   RPC ``conversations`` make.

Baseline, measured in the same run: the same message rows bulk-inserted into an empty store with one
``executemany`` in one transaction (no archive, no decryption, no checks). The ratio import / baseline
is the cost of reading, checking and staging.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import identity  # noqa: E402
from bridge.backup import archive, recovery, snapshot  # noqa: E402
from bridge.engine import Engine  # noqa: E402
from bridge.home import Home, write_private  # noqa: E402
from bridge.keys import Secrets, generate_secrets  # noqa: E402
from bridge.store import Store  # noqa: E402

GOAL_IMPORT_S = 30.0
GOAL_LIST_S = 1.0


def make_home(path: Path, secrets: Secrets, ident: dict[str, str]) -> Home:
    home = Home(path)
    home.create()
    write_private(home.identity_file, json.dumps(ident).encode())
    return home


def peers(n: int) -> list[str]:
    return [identity.checksum_address("0x" + hashlib.sha256(i.to_bytes(4, "big")).hexdigest()[:40]) for i in range(n)]


def rows(me: str, who: list[str], n: int) -> list[tuple[object, ...]]:
    rnd = random.Random(15)
    out = []
    t = 1_700_000_000_000
    words = "the quick brown fox jumps over a lazy dog while parley keeps every message private".split()
    for i in range(n):
        peer = who[i % len(who)]
        t += rnd.randint(1, 5000)
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(4, 35)))[:200]
        if i % 2:
            out.append((f"{i:032x}", peer, me, peer, text, t, t, "out", "sent", 1))
        else:
            out.append((f"{i:032x}", peer, peer, me, text, t, t, "in", "received", int(i % 3 != 0)))
    return out


INSERT = ("INSERT INTO messages(id, peer, sender, recipient, text, sent_at, received_at, direction, state, read) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def fill(store: Store, who: list[str], msgs: list[tuple[object, ...]]) -> None:
    with store.write() as c:
        c.executemany("INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, 0, 0)", [(p,) for p in who])
        c.executemany("INSERT INTO consent(peer, state, updated_at) VALUES (?, 'allowed', 0)", [(p,) for p in who])
        c.executemany(INSERT, msgs)
        c.executemany("INSERT INTO reactions(message_id, reactor, emoji, at) VALUES (?, ?, '👍', ?)",
                      [(m[0], m[1], m[6]) for m in msgs[::20]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--conversations", type=int, default=1_000)
    args = ap.parse_args()
    secrets = generate_secrets()
    me = secrets.address
    st = identity.authorize_statement(me, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    ident = {"version": 1, "address": me, "installation_id": secrets.installation_id,
             "record": identity.sign_statement(st, secrets.wallet_key).to_record().hex()}
    who = peers(args.conversations)
    msgs = rows(me, who, args.messages)
    keys = recovery.derive(recovery.generate())
    results: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        src_home = make_home(base / "source", secrets, ident)
        src = Store(src_home.db_file)
        t0 = time.perf_counter()
        fill(src, who, msgs)
        results.append(("fill source store (direct SQL)", time.perf_counter() - t0, ""))

        path = base / "backup.parley"
        t0 = time.perf_counter()
        with open(path, "wb") as out:
            info = archive.write_archive(out, snapshot.export_records(src_home, src, secrets, purpose="export", include_files=True),
                                         wrapping_key=keys.backup_key, backup_id=keys.backup_id(me), purpose="export")
        export_s = time.perf_counter() - t0
        results.append(("export (records → zstd → AES-GCM file)", export_s,
                        f"{info['records']} records, {info['plain_bytes'] / 1e6:.1f} MB → {info['bytes'] / 1e6:.1f} MB"))
        src.close()

        # baseline: the same rows, one executemany, one transaction, into an empty store
        base_store = Store(base / "baseline.db")
        t0 = time.perf_counter()
        with base_store.write() as c:
            c.executemany("INSERT INTO conversations(peer, created_at, updated_at) VALUES (?, 0, 0)", [(p,) for p in who])
            c.executemany(INSERT, msgs)
        baseline_s = time.perf_counter() - t0
        base_store.close()
        results.append(("baseline: bulk INSERT of the same messages", baseline_s, "one executemany, one transaction"))

        dst_home = make_home(base / "restored", secrets, ident)
        dst = Store(dst_home.db_file)
        t0 = time.perf_counter()
        with open(path, "rb") as inp:
            reader = archive.open_archive(inp, keys.backup_key)
            rep = snapshot.import_records(dst_home, dst, secrets, reader.records(), backup_keys=keys, backup_id=reader.header.backup_id)
        import_s = time.perf_counter() - t0
        if rep.messages_added != args.messages:
            raise SystemExit(f"import added {rep.messages_added} messages, expected {args.messages}")
        results.append(("import into an empty store", import_s,
                        f"goal ≤ {GOAL_IMPORT_S:.0f} s: {'met' if import_s <= GOAL_IMPORT_S else 'MISSED'}; "
                        f"{import_s / baseline_s:.1f}× the baseline"))

        engine = Engine(dst, secrets, ident, "http://127.0.0.1:9")
        t0 = time.perf_counter()
        listed = engine.conversations("inbox")
        list_s = time.perf_counter() - t0
        if len(listed) != args.conversations:
            raise SystemExit(f"listed {len(listed)} conversations, expected {args.conversations}")
        results.append((f"list {len(listed)} conversations (Engine.conversations)", list_s,
                        f"goal ≤ {GOAL_LIST_S:.0f} s: {'met' if list_s <= GOAL_LIST_S else 'MISSED'}"))
        engine.close_clients()
        dst.close()

    print(f"backup restore: {args.messages} messages in {args.conversations} conversations")
    width = max(len(r[0]) for r in results)
    for name, secs, note in results:
        print(f"  {name:<{width}}  {secs:8.2f} s  {note}")


if __name__ == "__main__":
    main()
