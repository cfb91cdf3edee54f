"""Every planted bug in tests/mutants/ still applies to today's code (`make planted` re-plants them;
a patch that no longer applies would silently stop checking its test). Cheap: `git apply --check` only."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIFFS = sorted((ROOT / "tests" / "mutants").glob("*.diff"))


def _in_git_work_tree() -> bool:
    if shutil.which("git") is None:
        return False
    r = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "true"


@pytest.mark.skipif(not _in_git_work_tree(), reason="not a git checkout: git apply --check needs one")
@pytest.mark.parametrize("diff", DIFFS, ids=[d.stem for d in DIFFS])
def test_planted_bug_still_applies(diff: Path) -> None:
    r = subprocess.run(["git", "apply", "--check", str(diff)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:  # `make planted` may be running the suite with this very bug planted
        planted = subprocess.run(["git", "apply", "--check", "-R", str(diff)], cwd=ROOT, capture_output=True, text=True)
        assert planted.returncode == 0, f"{diff.name} no longer applies; re-make it against today's code:\n{r.stderr}"


def test_there_are_planted_bugs() -> None:
    assert len(DIFFS) >= 21
