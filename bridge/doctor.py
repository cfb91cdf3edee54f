"""``parley doctor``: is every source this home is configured to use reachable and the right one?

One check per source, each bounded by the name services' timeouts (bridge/nameservices.py), run side
by side so the whole report takes as long as the slowest source:

- the Lens API (``lens_api_url``): a real ``account`` query (for the username ``lens``) must answer
  with ``data.account``;
- each chain RPC (``eth_rpc_url`` 1, ``lens_chain_rpc_url`` 232, ``op_rpc_url`` 10): ``eth_chainId``
  must be the chain the setting is for, then the latest block number is read;
- the Farcaster hub (``farcaster_hub_url``): a username-proof lookup must answer (found or not);
- each home and directory relay: ``GET /v1/health`` must say ``ok``. The relay embedded in
  ``parley run`` is reported off while no daemon runs.

A source that is not configured (or set to ``off``) is reported ``off`` and is not a failure; any
configured source that fails makes the exit status non-zero.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from bridge import nameservices
from bridge.home import Home

__all__ = ["Check", "run_checks", "format_line"]


@dataclass(frozen=True)
class Check:
    """One source's result. ``status``: ``ok`` | ``failed`` | ``off``."""

    source: str
    setting: str
    url: str | None
    status: str
    detail: str
    ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["url"] = redact(self.url) if self.url else None
        return out


def _lens(url: str) -> str:
    from bridge.resolve.sources import LensSource

    account = LensSource(url).account({"username": {"localName": "lens"}})
    return "answered an account query" + ("" if account is not None else " (no such account)")


def _chain(chain_id: int) -> Callable[[str], str]:
    def check(url: str) -> str:
        from bridge.chain import Chain

        block = Chain(url, chain_id=chain_id).block_number()  # checks eth_chainId first
        return f"chain {chain_id}, block {block}"

    return check


def _hub(url: str) -> str:
    from bridge.resolve.sources import FarcasterSource

    fid = FarcasterSource(url).fid_of("farcaster")
    return "answered a username lookup" + ("" if fid is not None else " (no such name)")


def _relay(url: str) -> str:
    from bridge.relay.client import RelayClient

    health = RelayClient(url, timeout=nameservices.CONNECT_TIMEOUT + 7).health()
    if not isinstance(health, dict) or health.get("ok") is not True:
        raise ValueError(f"unexpected health answer {str(health)[:80]}")
    minor = health.get("minor")
    return f"protocol {health.get('version')}" + (f".{minor}" if minor is not None else "")


_QUERY = re.compile(r"\?[^\s]*")
_USERINFO = re.compile(r"//[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` without URL query strings or user:password parts (where API keys usually live)."""
    return _USERINFO.sub("//…@", _QUERY.sub("?…", text))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(text)[:300]


def _run(source: str, setting: str, url: str, fn: Callable[[str], str]) -> Check:
    nameservices.mark_reachable(url)  # a fresh try, whatever happened before
    start = time.monotonic()
    try:
        detail = fn(url)
    except Exception as exc:  # every way a source can fail is a report line, not a crash
        return Check(source, setting, url, "failed", _reason(exc), int((time.monotonic() - start) * 1000))
    return Check(source, setting, url, "ok", detail, int((time.monotonic() - start) * 1000))


def run_checks(home: Home, env: Mapping[str, str] | None = None, *, daemon_running: bool | None = None) -> list[Check]:
    """Check every source ``home`` is configured to use (settings, overridden by ``env``).

    ``daemon_running``: whether ``parley run`` is up for this home (None: find out).
    """
    import os

    from bridge.homerelays import relay_config
    from bridge.resolve import ENV_SETTINGS

    env = os.environ if env is None else env
    cfg = home.config()
    plan: list[tuple[str, str, Callable[[str], str]]] = [
        ("Lens API", "lens_api_url", _lens),
        ("Ethereum RPC (ENS)", "eth_rpc_url", _chain(1)),
        ("Lens Chain RPC", "lens_chain_rpc_url", _chain(232)),
        ("OP Mainnet RPC", "op_rpc_url", _chain(10)),
        ("Farcaster hub", "farcaster_hub_url", _hub),
    ]
    jobs: list[tuple[str, str, str, Callable[[str], str]]] = []
    off: list[Check] = []
    for source, setting, fn in plan:
        url = nameservices.endpoint(setting, cfg, env, ENV_SETTINGS.get(setting))
        if url is None:
            off.append(Check(source, setting, None, "off", "not configured"))
        else:
            jobs.append((source, setting, url, fn))
    try:
        relays = relay_config(home, env)
    except Exception as exc:  # a bad PARLEY_DIRECTORY_RELAYS: say so, check the rest
        off.append(Check("Relays", "relays", None, "failed", _reason(exc)))
        relays = None
    if relays is not None:
        if relays.embedded and daemon_running is None:
            from bridge.daemon import DaemonClient

            daemon_running = DaemonClient.find(home) is not None
        for url in relays.home:
            if relays.embedded and not daemon_running:
                off.append(Check("Home relay (embedded)", "relays", url, "off", "runs inside `parley run`, which is not running"))
            else:
                jobs.append(("Home relay" + (" (embedded)" if relays.embedded else ""), "relays", url, _relay))
        if not relays.home:
            off.append(Check("Home relay", "relays", None, "off", "none configured: `parley run` embeds one"))
        for url in relays.directory:
            jobs.append(("Directory relay", "directory_relays", url, _relay))
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        done = list(pool.map(lambda job: _run(*job), jobs))
    order = {name: i for i, (name, _, _) in enumerate(plan)}
    return sorted(done + off, key=lambda c: (order.get(c.source, len(order)), c.source))


def format_line(check: Check, width: int = 20) -> str:
    """One line: ``source  url  ok: detail`` / ``failed: reason`` / ``off``."""
    where = redact(check.url) if check.url else "-"
    if check.status == "off":
        verdict = f"off ({check.detail})"
    else:
        verdict = f"{check.status}: {check.detail}" + (f" ({check.ms} ms)" if check.ms is not None else "")
    return f"{check.source:<{width}}  {where}  {verdict}"
