#!/usr/bin/env python3
"""Plant one mutmut mutant in the working tree, to write (and watch fail) the test that kills it.

``mutmut show NAME`` prints the mutant as a diff of its function, dedented and with line numbers
relative to the function, so ``patch`` cannot apply it. This script finds each hunk's lines in the
real file (whitespace-insensitive, context included), re-indents the replacement to match, and
writes the file. ``git checkout -- FILE`` (or ``--revert``, which re-plants in reverse) undoes it.

    python scripts/mutant_plant.py 'bridge.api.rpc.xǁLocalApiǁm_messages_list__mutmut_92'
    python scripts/mutant_plant.py --from /path/to/checkout/with/mutants NAME   # where mutants/ is
    python scripts/mutant_plant.py --revert NAME
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def show(name: str, where: Path) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    r = subprocess.run([str(mutmut), "show", name], cwd=where, capture_output=True, text=True)
    if r.returncode != 0 or "\n--- " not in "\n" + r.stdout:
        sys.exit(f"mutmut show {name} failed in {where}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def hunks(diff: str) -> tuple[str, list[list[tuple[str, str]]]]:
    """The file the diff names, and its hunks as (tag, line) pairs; tag is " ", "-" or "+"."""
    path, out = "", []
    for line in diff.splitlines():
        if line.startswith("--- "):
            path = line[4:].strip()
        elif line.startswith("+++ "):
            continue
        elif line.startswith("@@"):
            out.append([])
        elif out and line[:1] in (" ", "-", "+"):
            out[-1].append((line[0], line[1:]))
    return path, out


def indent(s: str) -> int:
    return len(s) - len(s.lstrip(" "))


def plant(name: str, where: Path, revert: bool) -> Path:
    path, hs = hunks(show(name, where))
    target = ROOT / path
    lines = target.read_text().splitlines(keepends=True)
    for hunk in hs:
        if revert:
            hunk = [({"-": "+", "+": "-"}.get(tag, tag), text) for tag, text in hunk]
        old = [text for tag, text in hunk if tag != "+"]
        want = [t.strip() for t in old]
        found = [i for i in range(len(lines) - len(old) + 1) if [t.strip() for t in lines[i : i + len(old)]] == want]
        if len(found) != 1:
            sys.exit(f"{path}: the mutant's lines occur {len(found)} times (need exactly one); plant it by hand")
        i = found[0]
        # mutmut dedents code but not the inside of a docstring: take the shift most lines agree on.
        shifts = Counter(indent(lines[i + k]) - indent(t) for k, t in enumerate(old) if t.strip())
        delta = shifts.most_common(1)[0][0]
        repl, k = [], i
        for tag, text in hunk:
            if tag == " ":
                repl.append(lines[k])  # context stays exactly as it is in the file
            if tag != "+":
                k += 1
            if tag == "+":
                repl.append((" " * (indent(text) + delta) + text.lstrip(" ") if text.strip() else "") + "\n")
        lines[i:k] = repl
    target.write_text("".join(lines))
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="the mutant's name, as mutmut prints it")
    ap.add_argument("--from", dest="where", type=Path, default=ROOT, help="the checkout whose mutants/ holds it (default: this one)")
    ap.add_argument("--revert", action="store_true", help="undo a plant")
    a = ap.parse_args()
    print(f"{'reverted' if a.revert else 'planted'} {a.name} in {plant(a.name, a.where, a.revert).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
