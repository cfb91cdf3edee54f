#!/usr/bin/env python3
"""Run mutmut over bridge/ (``make mutate-py``), all of it or a seeded random sample per module group.

A full run checks about 9,100 mutants; survivors re-run every fast test that covers their function,
and many functions run inside the `parley` processes the API and relay tests start, so a full run
takes many hours on two cores (docs/mutation.md). ``--sample N`` checks N mutants drawn at random
(fixed ``--seed``) from each group of ``[tool.mutmut] source_paths``: an unbiased estimate of each
group's score, with its confidence interval printed by scripts/mutation_summary.py. Results
accumulate in ./mutants/ (mutmut keeps a mutant's result until its code or its tests change), so a
later full run or a bigger sample reuses them.

    python scripts/mutation_run.py                      # every mutant
    python scripts/mutation_run.py --sample 80          # 80 per group
    python scripts/mutation_run.py --sample 80 --jobs 2 --groups bridge/engine/ bridge/relay/server.py
    python scripts/mutation_run.py --sample 80 --unresolved   # after new tests: re-run what was not killed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"


def groups() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["source_paths"])


def group_of(path: str) -> str | None:
    """The source_paths entry a file (relative to the checkout) falls under, if any."""
    return next((g for g in groups() if path == g or (g.endswith("/") and path.startswith(g))), None)


def mutmut(*args: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/ first itself
    env["PARLEY_MUTMUT_HITS"] = str(MUTANTS / "child-hits")  # see conftest.py
    return subprocess.run([str(Path(sys.executable).with_name("mutmut")), "run", *args], cwd=ROOT, env=env).returncode


#: mutmut exit codes that mean the mutant was detected: a test failed, pytest errored, the type
#: checker refused it, or it ran out of time (scripts/mutation_summary.py counts them the same way).
DETECTED = {1, 3, 37, 36, 24, -24, 152, 255}


def names_by_group() -> tuple[dict[str, list[str]], set[str]]:
    """Every generated mutant's name, by the source_paths entry its file falls under; and the detected ones."""
    out: dict[str, list[str]] = {g: [] for g in groups()}
    detected: set[str] = set()
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        rel = str(meta.with_suffix("").relative_to(MUTANTS))
        group = group_of(rel)
        if group is not None:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            out[group] += sorted(codes)
            detected |= {k for k, v in codes.items() if v in DETECTED}
    return out, detected


def sample(by_group: dict[str, list[str]], n: int, seed: int) -> dict[str, list[str]]:
    """``n`` mutants per group drawn with ``seed`` (every group in order, one generator), or all if ``n`` is 0.
    scripts/mutation_summary.py --sample draws the same ones."""
    rng = random.Random(seed)
    return {g: names if not n or n >= len(names) else rng.sample(names, n) for g, names in by_group.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="mutants drawn per group (default: all of them)")
    ap.add_argument("--seed", type=int, default=17, help="random seed of the sample (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut workers (default: %(default)s; the machine is shared)")
    ap.add_argument("--groups", nargs="+", metavar="PATH", help="only these source_paths entries (default: all)")
    ap.add_argument("--unresolved", action="store_true",
                    help="of the chosen mutants, run only those not already killed (after new tests: survivors and unchecked ones)")
    a = ap.parse_args()
    chosen = a.groups or groups()
    if unknown := set(chosen) - set(groups()):
        ap.error(f"not in [tool.mutmut] source_paths: {', '.join(sorted(unknown))}")
    if not a.sample and not a.groups and not a.unresolved:
        return mutmut("--max-children", str(a.jobs))
    if not list(MUTANTS.rglob("*.py.meta")):
        print("generating mutants (and mutmut's coverage pass) first ...", flush=True)
        mutmut("--max-children", str(a.jobs), "bridge.__no_such_module__*")
    by_group, detected = names_by_group()
    picked: list[str] = []
    for group, take in sample(by_group, a.sample, a.seed).items():
        if group not in chosen:
            continue
        if a.unresolved:
            take = [n for n in take if n not in detected]
        print(f"{group}: {len(take)} of {len(by_group[group])} mutants", flush=True)
        picked += take
    return mutmut("--max-children", str(a.jobs), *picked)


if __name__ == "__main__":
    sys.exit(main())
