"""MLS wire structures from a hostile peer (issue 14): every truncation, a trailing byte, and random
byte mutations of the working group's messages must fail with DecodeError and nothing else, and
whatever still decodes must re-encode to the same bytes (one encoding per value)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bridge.mls.messages import _VECTOR_FIELDS, Commit, GroupSecrets
from bridge.mls.tls import DecodeError

CASES = json.loads((Path(__file__).parent / "vectors" / "mls" / "messages.json").read_text())


@pytest.mark.parametrize("index", [0, 101, 202])
def test_truncated_extended_and_mutated_messages_fail_cleanly(index: int) -> None:
    rng = random.Random(index)
    for name, (cls, _) in _VECTOR_FIELDS.items():
        data = bytes.fromhex(CASES[index][name])
        assert cls.decode(data).encode() == data
        for n in range(len(data)):
            with pytest.raises(DecodeError):
                cls.decode(data[:n])
        with pytest.raises(DecodeError):
            cls.decode(data + b"\x00")
        for _ in range(60):
            m = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            try:
                value = cls.decode(bytes(m))
            except DecodeError:
                continue
            assert value.encode() == bytes(m), f"{name}: a mutation decoded to a value that encodes differently"


def test_presence_bytes_other_than_0_and_1_are_refused() -> None:
    gs = bytes.fromhex(CASES[0]["group_secrets"])
    pos = len(GroupSecrets.decode(gs).joiner_secret) + 1
    assert gs[pos] == 1
    with pytest.raises(DecodeError):
        GroupSecrets.decode(gs[:pos] + b"\x02" + gs[pos + 1 :])
    cm = bytes.fromhex(CASES[0]["commit"])
    pos = 1 + len(b"".join(p.encode() for p in Commit.decode(cm).proposals))
    assert cm[pos] == 1
    for flag in (b"\x02", b"\x00"):  # 0 with the path's bytes still there: left over
        with pytest.raises(DecodeError):
            Commit.decode(cm[:pos] + flag + cm[pos + 1 :])
