#!/usr/bin/env python3
"""Re-plant the audited bugs of issue 17 one at a time and check that the fast suite catches each.

Each ``tests/mutants/<ID>.diff`` is a small patch to the product (a bug an audit planted), headed by
two lines: ``# <ID>: what the bug is`` and ``# caught by: <test ids>``. For every diff this script

1. checks it applies to the working tree (``git apply --check``), and applies it;
2. runs the fast suite (``make test-fast``, node tests first, pytest stopping at its first failure;
   ``--cmd`` runs something else);
3. reverts the diff (``git apply -R``), whatever happened;

and prints one line per bug: ``caught`` (the suite failed, with the first failing tests) or
``MISSED``. It exits 1 if any bug was missed or a diff no longer applies.

    python scripts/planted.py              # every diff, with make test-fast
    python scripts/planted.py M01 MJ2      # some of them
    python scripts/planted.py --named      # only the tests each header names (quick)
    python scripts/planted.py --list       # the table, nothing run
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tests" / "mutants"


def header(diff: Path) -> tuple[str, list[str]]:
    what, caught_by = "", []
    for line in diff.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].partition(":")
        if key.strip() == diff.stem:
            what = value.strip()
        elif key.strip() == "caught by":
            caught_by = value.split()
    return what, caught_by


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def failures(output: str) -> list[str]:
    """The failing tests named in pytest's (``FAILED x::y``) or node's (``not ok N - name``) output."""
    found = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    found += [f"node: {m.strip()}" for m in re.findall(r"^\s*not ok \d+ - (.+)$", output, re.M)]
    return list(dict.fromkeys(found))


def named_cmd(diff: Path) -> list[str]:
    """Only the tests the diff's header names (a quick check that they are the ones that catch it)."""
    _, by = header(diff)
    node = [t.split("::")[0] for t in by if t.startswith("tests/js/")]
    py = [t for t in by if not t.startswith("tests/js/")]
    parts = []
    if node:
        parts.append(f"node --test {' '.join(node)}")
    if py:
        parts.append(f"{sys.executable} -m pytest -q -p no:cacheprovider {' '.join(py)}")
    return ["bash", "-c", " && ".join(parts) or "true"]


def run_one(diff: Path, cmd: list[str]) -> tuple[str, str]:
    if (r := git("apply", "--check", str(diff))).returncode != 0:
        return "NOT APPLICABLE", r.stderr.strip().splitlines()[0] if r.stderr.strip() else "git apply --check failed"
    git("apply", str(diff)).check_returncode()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    finally:
        git("apply", "-R", str(diff)).check_returncode()
    out = p.stdout + p.stderr
    if p.returncode == 0:
        return "MISSED", ""
    return "caught", ", ".join(failures(out)[:3]) or out.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="which diffs (e.g. M01 MJ2); default: all of tests/mutants/*.diff")
    ap.add_argument("--cmd", default="make test-fast PYTEST_ARGS=-x", help="the suite to run (default: %(default)s)")
    ap.add_argument("--named", action="store_true", help="run only the tests each diff's header names, not the suite")
    ap.add_argument("--list", action="store_true", help="print the table and run nothing")
    a = ap.parse_args()
    diffs = sorted(MUTANTS.glob("*.diff"))
    if a.ids:
        unknown = set(a.ids) - {d.stem for d in diffs}
        if unknown:
            ap.error(f"no such planted bug: {', '.join(sorted(unknown))} (see tests/mutants/)")
        diffs = [d for d in diffs if d.stem in a.ids]
    if a.list:
        for d in diffs:
            what, by = header(d)
            print(f"{d.stem:5} {what}\n      caught by: {' '.join(by)}")
        return 0
    if dirty := git("status", "--porcelain", "--untracked-files=no", "--", "bridge", "extension").stdout.strip():
        print(f"bridge/ or extension/ has uncommitted changes; commit or revert them first:\n{dirty}", file=sys.stderr)
        return 2
    missed = 0
    for i, d in enumerate(diffs, 1):
        what, _ = header(d)
        print(f"[{i}/{len(diffs)}] {d.stem}: {what} ...", end=" ", flush=True)
        t0 = time.monotonic()
        verdict, detail = run_one(d, named_cmd(d) if a.named else a.cmd.split())
        missed += verdict != "caught"
        print(f"{verdict} in {time.monotonic() - t0:.0f} s{': ' + detail if detail else ''}", flush=True)
    print(f"{len(diffs) - missed}/{len(diffs)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
