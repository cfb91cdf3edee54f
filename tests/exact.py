"""``raises_exactly``: like ``pytest.raises`` but the exception must be exactly the named class.

``pytest.raises(CryptoError)`` also accepts ``DecryptError``, ``SessionError``, ``DuplicateMessage`` …,
so a test meant for one failure passes when the code fails for another reason (or a mutant changes
which check fires). Use this where one specific class is meant; pass a tuple only where several
outcomes are genuinely acceptable (every member is then still matched exactly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["raises_exactly"]


@contextmanager
def raises_exactly(exc: type[BaseException] | tuple[type[BaseException], ...], match: str | None = None) -> Iterator[Any]:
    classes = exc if isinstance(exc, tuple) else (exc,)
    with pytest.raises(classes, match=match) as info:
        yield info
    assert type(info.value) in classes, (
        f"expected exactly {' or '.join(c.__name__ for c in classes)}, got {type(info.value).__name__}: {info.value}"
    )
