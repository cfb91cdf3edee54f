"""One loader for tests/vectors/*.json (format: docs/test-vectors.md).

Every file is ``{"source": str, "vectors": [{"name": str, ...}, ...]}`` (crypto families also carry
``family`` and ``description`` and put each vector's fields under ``input`` / ``expected``). Bytes
are lowercase hex, absent values are null. :func:`cases` turns a file into ``pytest.param`` objects
named after the vectors, ready for ``pytest.mark.parametrize``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

__all__ = ["VECTOR_DIR", "load", "cases", "h", "error_class"]

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"


def load(filename: str) -> dict[str, Any]:
    """Read and structurally check one vector file.

    Raises:
        ValueError: the file lacks ``source`` or a non-empty ``vectors`` list of named vectors.
    """
    data = json.loads((VECTOR_DIR / filename).read_text(encoding="utf-8"))
    if not isinstance(data.get("source"), str) or not data["source"].strip():
        raise ValueError(f"{filename}: missing 'source' provenance")
    vectors = data.get("vectors")
    if not isinstance(vectors, list) or not vectors:
        raise ValueError(f"{filename}: missing 'vectors' list")
    names = [v.get("name") for v in vectors]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{filename}: every vector needs a unique name")
    return data


def cases(filename: str) -> list[Any]:
    """``pytest.param(vector, id=name)`` for every vector in the file."""
    return [pytest.param(v, id=v["name"]) for v in load(filename)["vectors"]]


def h(value: str | None) -> bytes | None:
    """Hex to bytes; ``None`` stays ``None``."""
    return None if value is None else bytes.fromhex(value)


def error_class(name: str) -> type[BaseException]:
    """Map an ``"error"`` name in a vector to the exception class it denotes."""
    from bridge.crypto import DuplicateMessage, SessionError, TooManySkipped
    from bridge.crypto.primitives import CryptoError, DecryptError, InvalidSignature
    from bridge.identity import BadSignature, IdentityError, InvalidStatement
    from bridge.protocol.wire import WireError

    table: dict[str, type[BaseException]] = {
        "CryptoError": CryptoError,
        "DecryptError": DecryptError,
        "InvalidSignature": InvalidSignature,
        "SessionError": SessionError,
        "DuplicateMessage": DuplicateMessage,
        "TooManySkipped": TooManySkipped,
        "WireError": WireError,
        "IdentityError": IdentityError,
        "InvalidStatement": InvalidStatement,
        "BadSignature": BadSignature,
    }
    return table[name]
