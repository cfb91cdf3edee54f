"""Relay node (DESIGN.md "Relay"; docs/PROTOCOL.md §7).

Submodules, imported explicitly so that storage users do not pull in Flask:

* :mod:`bridge.relay.storage` — ``Storage`` interface, ``Envelope``, ``open_storage``;
* :mod:`bridge.relay.sqlite_store` — the SQLite backend;
* :mod:`bridge.relay.server` — ``create_app``, ``register_relay``, ``RelaySettings``, ``serve``;
* :mod:`bridge.relay.client` — ``RelayClient`` and its errors;
* :mod:`bridge.relay.auth` — the signed-challenge message.
"""

__all__: list[str] = []
