"""The conformance suite talks to Parley only through the wire protocol: importing `bridge` from here
is refused. A sys.meta_path finder raises on `bridge` / `bridge.*` when the import comes from a module
of tests/conformance (other test directories in the same pytest run keep importing bridge), and
test_no_bridge.py checks every module here statically."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = str(Path(__file__).resolve().parent)


class BridgeImportGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname != "bridge" and not fullname.startswith("bridge."):
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.startswith(HERE):
                raise ImportError(f"tests/conformance must not import {fullname}: it speaks the wire protocol only")
            frame = frame.f_back  # type: ignore[assignment]
        return None


GUARD = BridgeImportGuard()
sys.meta_path.insert(0, GUARD)


@pytest.fixture
def guard() -> BridgeImportGuard:
    return GUARD
