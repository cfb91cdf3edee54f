"""Engines for in-process tests: a registered installation over its own store, closed after each test.

Import ``close_engines`` into a test module (it is an autouse fixture) together with ``make_engine``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import identity
from bridge.engine import Engine
from bridge.keys import generate_secrets
from bridge.store import Store

__all__ = ["OPEN", "befriend", "close_engines", "make_engine", "track"]

#: Engines the current test opened; closed (relay client and store) when it ends.
OPEN: list[Engine] = []


def track(engine: Engine) -> Engine:
    """Close ``engine`` when the test ends."""
    OPEN.append(engine)
    return engine


@pytest.fixture(autouse=True)
def close_engines() -> Iterator[None]:
    yield
    while OPEN:
        e = OPEN.pop()
        e.close_clients()
        e.store.close()


def make_engine(path: Path, relay_url: str, wallet: bytes | None = None, *, register: bool = True, **kwargs: Any) -> Engine:
    """An installation of ``wallet`` (a fresh one by default) with its store at ``path``, registered on
    the relay unless ``register`` is false; ``kwargs`` go to :class:`Engine` (clock, rng, …)."""
    secrets = generate_secrets(wallet)
    st = identity.authorize_statement(secrets.address, secrets.installation_id, secrets.signing_pub, secrets.identity_pub)
    record = identity.sign_statement(st, secrets.wallet_key).to_record()
    ident = {"address": secrets.address, "installation_id": secrets.installation_id, "record": record.hex()}
    eng = track(Engine(Store(path), secrets, ident, relay_url, **kwargs))
    if register:
        eng.register()
    return eng


def befriend(*engines: Engine) -> None:
    """Put every engine's address in the contacts.json next to each one's store, so their messages to
    each other are not message requests (issue 12: a stranger's 4th message is held)."""
    import json

    for eng in engines:
        path = eng.store.path.parent / "contacts.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        for other in engines:
            if other.address != eng.address:
                data[f"c{other.address[2:10].lower()}"] = other.address
        path.write_text(json.dumps(data))
