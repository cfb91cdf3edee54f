"""Repository metadata a user or a packager reads first (issue 11 "first run"): the licence and the
README's first-run notes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_is_an_spdx_string_matching_the_license_file() -> None:
    """pyproject's ``license = {text = ...}`` table made setuptools warn; PEP 639 wants an SPDX
    expression, with the licence text in a LICENSE file that the package ships."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    # The string form needs setuptools 77 or newer (older ones reject it).
    requires = project["build-system"]["requires"]
    floor = next(re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", r) for r in requires if r.startswith("setuptools"))
    assert floor is not None and int(floor.group(1)) >= 77, requires
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_readme_says_how_to_reach_parley_after_make_run_and_where_to_read_about_other_machines() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_run = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in first_run
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in first_run
    assert "[docs/RELAY.md](docs/RELAY.md)" in first_run
    assert "(#talking-to-someone-on-another-machine)" in first_run
    assert "### Talking to someone on another machine" in readme  # the anchor above exists
    assert (ROOT / "docs" / "RELAY.md").is_file()
