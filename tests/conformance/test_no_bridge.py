"""The suite is an independent client: no module under tests/conformance imports bridge (or a test
helper that does), checked statically here and at run time by conftest.py's import guard."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FORBIDDEN = ("bridge", "tests.relay_fixtures", "tests.engines", "tests.vectors_loader", "tests.fakes", "tests.exact")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_module_imports_bridge() -> None:
    files = sorted(HERE.rglob("*.py"))
    assert len(files) >= 5
    bad = {str(f.relative_to(HERE)): sorted(n for n in imported_modules(f) if forbidden(n)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_scan_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom bridge.crypto import ratchet\nimportlib.import_module('tests.relay_fixtures')\n")
    assert {n for n in imported_modules(probe) if forbidden(n)} == {"bridge.crypto", "bridge.crypto.ratchet", "tests.relay_fixtures"}


def test_the_guard_refuses_bridge_imports_from_here() -> None:
    with pytest.raises(ImportError, match="must not import bridge"):
        importlib.import_module(".".join(["bridge", "conformance_probe"]))  # built at run time: the scan reads constants
