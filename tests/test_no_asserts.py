"""No `assert` in the product: asserts vanish under `python -O`, and an AssertionError reached by
hostile input once wedged an inbox (issue 8 item 4). Input is checked with named, raised errors."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"


def test_bridge_has_no_assert_statements() -> None:
    found = [
        f"{path.relative_to(BRIDGE.parent)}:{node.lineno}"
        for path in sorted(BRIDGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.Assert)
    ]
    assert found == [], f"assert statements in bridge/: {found}"
