#!/usr/bin/env python3
"""Summarise a finished ``mutmut run`` (docs/mutation.md): score per module and every mutant that was
not killed, with its one-line diff.

Reads mutmut 3's own files under ``mutants/`` (``*.meta``: exit code per mutant; ``*.spans``: where
each mutant's function lives), so it needs no per-mutant ``mutmut show`` call.

Usage: python scripts/mutation_summary.py [--survivors]
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def main(argv: list[str]) -> int:
    rows = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        src = meta.with_suffix("")
        spans_file = src.with_name(src.name + ".spans")
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        spans = json.loads(spans_file.read_text())["spans"] if spans_file.exists() else {}
        source = src.read_text(encoding="utf-8").splitlines()
        module = str(src.relative_to(MUTANTS))
        for key, code in exit_codes.items():
            status = "killed" if code in KILLED else STATUS.get(code, f"suspicious ({code})")
            rows.append((module, key, status, mutant_diff(source, spans, key) if status != "killed" else ""))
    per_module: dict[str, Counter[str]] = {}
    for module, _, status, _ in rows:
        per_module.setdefault(module, Counter())[status] += 1
    print("| module | mutants | killed | survived | other | score |")
    print("|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for module, c in per_module.items():
        total.update(c)
        n = sum(c.values())
        other = n - c["killed"] - c["survived"]
        print(f"| `{module}` | {n} | {c['killed']} | {c['survived']} | {other} | {100 * c['killed'] / n:.1f} % |")
    n = sum(total.values())
    print(f"| **all** | {n} | {total['killed']} | {total['survived']} | {n - total['killed'] - total['survived']} | "
          f"{100 * total['killed'] / max(n, 1):.1f} % |")
    if "--survivors" in argv:
        print()
        for module, key, status, diff in rows:
            if status != "killed":
                print(f"{key}\t{status}\t{kind(diff)}\t{diff}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
