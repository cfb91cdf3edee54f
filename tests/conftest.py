"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.procs import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; stopped (SIGTERM, then SIGKILL) in reverse order when it ends."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()
