#!/usr/bin/env python3
"""Summarise a finished ``mutmut run`` (docs/mutation.md): score per module and every mutant that was
not killed, with its one-line diff.

Reads mutmut 3's own files under ``mutants/`` (``*.meta``: exit code per mutant; ``*.spans``: where
each mutant's function lives), so it needs no per-mutant ``mutmut show`` call.

Usage: python scripts/mutation_summary.py [--sample N [--seed S]] [--survivors] [--table]

--sample N: count only the N mutants per group that scripts/mutation_run.py --sample N drew (seed 17).

--survivors: every mutant not killed, tab-separated (name, status, kind, diff).
--table: the same as a Markdown table with the reason each lives, from docs/mutation-survivors.tsv
         ("error text only" when the mutant only rewords an error); **NOT EXPLAINED** otherwise.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import mutation_run  # noqa: E402 (the groups and the sample are mutation_run's)
MUTANTS = ROOT / "mutants"
KILLED = {1, 3, 37}  # test failure, pytest internal error (a kill for mutmut), caught by type check
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", None: "not checked"}


def mutant_diff(source: list[str], spans: dict[str, list[int]], key: str) -> str:
    """The changed lines of one mutant against its original function, as ``- old / + new``."""
    func = key.rsplit(".", 1)[1]
    orig = func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    if func not in spans or orig not in spans:
        return "(no source span)"
    def body(name: str) -> list[str]:  # the def line names the mutant: leave it out
        lines = [line.strip() for line in source[spans[name][0] - 1 : spans[name][1]]]
        return [line for line in lines if not (line.startswith("def ") and "__mutmut_" in line)]

    a, b = body(orig), body(func)
    out = []
    for line in difflib.unified_diff(a, b, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        out.append(line)
    return " / ".join(out) if out else "(signature line changed)"


_STRING = re.compile(r"""[rbfu]?("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


def kind(diff: str) -> str:
    """``message`` when the mutant only changes the text of an error (a string literal, or None for it,
    in a raise or in the ``name`` argument of a wire.expect_* check); else ``logic``."""
    parts = diff.split(" / ")
    if len(parts) != 2 or not (parts[0].startswith("-") and parts[1].startswith("+")):
        return "logic"
    old, new = parts[0][1:], parts[1][1:]
    if not any(k in old for k in ("raise ", "expect_bytes(", "expect_int(", "_need(", "opt32(", "_check_hex(")):
        return "logic"
    def norm(t: str) -> str:
        t = re.sub(r"\b(None|name)\b|str\((exc|S)\)", "S", _STRING.sub("S", t))
        return re.sub(r"(\(|, )(?=\))", r"\1S", t)  # an argument left out: the parameter's default name
    return "message" if norm(old) == norm(new) else "logic"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


SAMPLED = False  # set by --sample: every score is then an estimate of its group's


def row(name: str, c: Counter[str]) -> str:
    n = sum(c.values())
    checked = n - c["not checked"]
    detected = c["killed"] + c["timeout"]
    other = checked - detected - c["survived"] - c["no tests"]
    score = "–" if not checked else f"{100 * detected / checked:.1f} %"
    if 0 < checked and (checked < n or SAMPLED):
        lo, hi = wilson(detected, checked)
        score += f" ({100 * lo:.0f}–{100 * hi:.0f} %)"
    return (f"| {name} | {n} | {checked} | {c['killed']} | {c['timeout']} | {c['survived']}{f' (+{other} other)' if other else ''} "
            f"| {c['no tests']} | {score} |")


def main(argv: list[str]) -> int:
    keep: set[str] | None = None
    if "--sample" in argv:  # only the mutants scripts/mutation_run.py --sample N [--seed S] drew
        global SAMPLED
        SAMPLED = True
        n = int(argv[argv.index("--sample") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 17
        keep = {m for names in mutation_run.sample(mutation_run.names_by_group()[0], n, seed).values() for m in names}
    rows = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        src = meta.with_suffix("")
        spans_file = src.with_name(src.name + ".spans")
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        spans = json.loads(spans_file.read_text())["spans"] if spans_file.exists() else {}
        source = src.read_text(encoding="utf-8").splitlines()
        module = str(src.relative_to(MUTANTS))
        for key, code in exit_codes.items():
            if keep is not None and key not in keep:
                continue
            status = "killed" if code in KILLED else STATUS.get(code, f"suspicious ({code})")
            rows.append((module, key, status, mutant_diff(source, spans, key) if status != "killed" else ""))
    per_module: dict[str, Counter[str]] = {}
    for module, _, status, _ in rows:
        per_module.setdefault(module, Counter())[status] += 1
    print("Score = detected (killed or timed out) / checked; the interval is Wilson's 95 % when only a sample was checked.\n")
    print("| module | mutants | checked | killed | timeout | survived | no tests | score |")
    print("|---|---|---|---|---|---|---|---|")
    by_group: dict[str, Counter[str]] = {}
    for module, c in per_module.items():
        print(row(f"`{module}`", c))
        group = mutation_run.group_of(module) or module
        by_group.setdefault(group, Counter()).update(c)
    print("\n| group | mutants | checked | killed | timeout | survived | no tests | score |")
    print("|---|---|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for group, c in by_group.items():
        total.update(c)
        print(row(f"`{group}`", c))
    print(row("**all**", total))
    alive = [(key, status, diff) for _, key, status, diff in rows if status not in ("killed", "timeout", "not checked")]
    if "--survivors" in argv:
        print()
        for key, status, diff in alive:
            print(f"{key}\t{status}\t{kind(diff)}\t{diff}")
    if "--table" in argv:
        why = explanations()
        missing = 0
        print("\n| mutant | status | change | why it lives |\n|---|---|---|---|")
        for key, status, diff in alive:
            reason = why.get(key) or ("error text only" if kind(diff) == "message" else "")
            missing += not reason
            change = diff if len(diff) <= 140 else diff[:137] + "…"
            print(f"| `{key.removeprefix('bridge.')}` | {status} | `{change.replace('|', '¦')}` | {reason or '**NOT EXPLAINED**'} |")
        print(f"\n{len(alive)} alive, {missing} not explained")
    return 0


def explanations() -> dict[str, str]:
    """docs/mutation-survivors.tsv: ``mutant<TAB>why it lives`` (one line each; # comments)."""
    path = ROOT / "docs" / "mutation-survivors.tsv"
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            key, _, why = line.partition("\t")
            out[key.strip()] = why.strip()
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
