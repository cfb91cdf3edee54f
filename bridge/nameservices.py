"""The public endpoints Parley uses by default for names and smart accounts (README "Name services").

Without them every Lens profile that is not a contact showed "Not on Parley yet" (issue 11): the DM
button could not turn ``lens:NAME`` into an address. Each default is keyless and public, and each is
overridable and can be turned off, per home (``config.json``) or per process (environment):

========================  =====================================  ============================
setting                   default                                environment variable
========================  =====================================  ============================
``lens_api_url``          https://api.lens.xyz/graphql           ``PARLEY_LENS_API_URL``
``lens_chain_rpc_url``    https://rpc.lens.xyz (chain id 232)    ``PARLEY_LENS_CHAIN_RPC_URL``
``eth_rpc_url``           https://ethereum-rpc.publicnode.com    ``PARLEY_ETH_RPC_URL``
========================  =====================================  ============================

A non-empty environment variable beats ``config.json``, which beats the default; the value ``off``
(or ``none``, or an empty string or ``null`` in ``config.json``) turns the source off.
``PARLEY_NAME_SERVICE_DEFAULTS=off`` drops the built-in defaults only (what was configured still
applies): the test suites set it so that nothing they run reaches the internet.

This module imports nothing of Parley's, so :mod:`bridge.home` can take its defaults from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LENS_API_URL",
    "LENS_CHAIN_RPC_URL",
    "ETH_RPC_URL",
    "DEFAULTS",
    "DEFAULTS_SWITCH",
    "CONNECT_TIMEOUT",
    "RETRY_AFTER",
    "is_off",
    "endpoint",
    "timeout",
    "unreachable_for",
    "mark_unreachable",
    "mark_reachable",
]

#: Lens API v3, mainnet (https://lens.xyz/docs/protocol/getting-started/graphql). Public; rate limited.
LENS_API_URL = "https://api.lens.xyz/graphql"
#: Lens Chain mainnet's public RPC, chain id 232 (https://lens.xyz/docs/chain/resources/network-information).
LENS_CHAIN_RPC_URL = "https://rpc.lens.xyz"
#: PublicNode's Ethereum mainnet RPC: free, no API key (https://ethereum-rpc.publicnode.com).
ETH_RPC_URL = "https://ethereum-rpc.publicnode.com"

#: Setting → its built-in default.
DEFAULTS: dict[str, str] = {"lens_api_url": LENS_API_URL, "lens_chain_rpc_url": LENS_CHAIN_RPC_URL, "eth_rpc_url": ETH_RPC_URL}
#: ``off``: the built-in defaults are not used (explicit settings and variables still are).
DEFAULTS_SWITCH = "PARLEY_NAME_SERVICE_DEFAULTS"
#: Seconds to wait for a name service's TCP/TLS connection: an unreachable one fails fast (the read
#: timeout of an answer that is coming stays longer, bridge/resolve/sources.py TIMEOUT).
CONNECT_TIMEOUT = 3.05

#: Seconds an endpoint that could not be connected to is not asked again: lookups in that time fail at
#: once (a stale cached answer is still used) instead of each waiting for the connection timeout.
RETRY_AFTER = 30.0

_OFF = ("", "off", "none")
_down: dict[str, float] = {}
_down_lock = threading.Lock()


def timeout(read: float) -> tuple[float, float]:
    """A ``requests`` timeout: :data:`CONNECT_TIMEOUT` to connect, ``read`` seconds for the answer."""
    return (min(CONNECT_TIMEOUT, read), read)


def unreachable_for(url: str) -> float:
    """Seconds left before ``url``, which could not be connected to, is tried again (0: try it)."""
    with _down_lock:
        until = _down.get(url)
        left = 0.0 if until is None else until - time.monotonic()
        if until is not None and left <= 0:
            del _down[url]
        return max(0.0, left)


def mark_unreachable(url: str) -> None:
    """``url`` could not be connected to (refused, unresolvable, timed out): do not ask it for a while."""
    with _down_lock:
        if len(_down) >= 256:
            _down.pop(next(iter(_down)))
        _down[url] = time.monotonic() + RETRY_AFTER


def mark_reachable(url: str) -> None:
    with _down_lock:
        _down.pop(url, None)


def is_off(value: Any) -> bool:
    """Whether a setting's raw value turns its source off (not a string, empty, ``off`` or ``none``)."""
    return not isinstance(value, str) or value.strip().lower() in _OFF


def endpoint(setting: str, cfg: Mapping[str, Any], env: Mapping[str, str], var: str | None) -> str | None:
    """The URL of ``setting``: the environment variable ``var`` when set and not empty, else
    ``cfg[setting]`` (:meth:`bridge.home.Home.config` fills in the defaults); None when off."""
    raw = env.get(var) if var and env.get(var) else cfg.get(setting)
    if is_off(raw):
        return None
    value = str(raw).strip()
    if DEFAULTS.get(setting) == value and str(env.get(DEFAULTS_SWITCH, "")).strip().lower() == "off":
        return None
    return value
