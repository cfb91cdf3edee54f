"""Which relays a home uses: one record in ``config.json``, read by the daemon and the CLI alike (issue 10).

* **home** relays hold this installation's inbox (the first is the primary: it also holds the one-time
  prekeys). They are what the installation's signed relay list names (PROTOCOL.md §3.6).
* **directory** relays are where senders and we look up identity logs and relay lists we do not find
  on our home relays (a bootstrap list, like Nostr's indexer relays). Config ``directory_relays``;
  ``PARLEY_DIRECTORY_RELAYS`` (comma-separated) overrides it.
* **previous** relays were home relays until ``parley relays set`` replaced them: they are still read
  until their grace period ends (``relay_grace_days``, default 14), so nothing in flight is lost.
* **embedded**: no relay was configured, so ``parley run`` embeds one and records it as the home
  relay. It listens on 127.0.0.1: only bridges on this machine can reach it.

Older homes kept one ``relay_url``; it is read as the one home relay.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.home import Home
from bridge.relay.urls import RelayUrlError, check_relay_url

__all__ = [
    "RelayConfig",
    "RelayUrlError",
    "relay_config",
    "set_home_relays",
    "set_directory_relays",
    "record_embedded",
    "checked_urls",
    "EMBEDDED_WARNING",
    "pointer_lookup",
    "MAX_HOME_RELAYS",
    "MAX_DIRECTORY_RELAYS",
]

MAX_HOME_RELAYS = 5  # a relay list names 1 to 5 inbox relays (PROTOCOL.md §3.6)
MAX_DIRECTORY_RELAYS = 8
DAY_S = 86_400

EMBEDDED_WARNING = (
    "warning: no relay is configured, so this bridge embeds one on 127.0.0.1: only bridges on this machine "
    "can reach it. To talk to someone on another machine, choose a public relay: "
    "`parley relays set https://relay.example.org` (see the README)."
)


@dataclass(frozen=True)
class RelayConfig:
    home: tuple[str, ...]
    directory: tuple[str, ...]
    previous: tuple[tuple[str, int], ...] = ()  # (url, read until: seconds since the epoch)
    embedded: bool = False
    insecure: bool = False

    @property
    def primary(self) -> str | None:
        return self.home[0] if self.home else None

    def reading(self, now_s: int | None = None) -> tuple[str, ...]:
        """Home relays, then previous ones still in their grace period: every relay we subscribe to."""
        now_s = int(time.time()) if now_s is None else now_s
        return tuple(dict.fromkeys([*self.home, *(url for url, until in self.previous if until > now_s)]))

    def as_json(self, now_s: int | None = None) -> dict[str, Any]:
        """What ``parley relays --json`` prints (the issue's CLI contract)."""
        return {"home": list(self.home), "directory": list(self.directory), "reading": list(self.reading(now_s))}


def checked_urls(urls: Iterable[str], *, insecure: bool, limit: int, what: str) -> tuple[str, ...]:
    """Canonical, de-duplicated relay URLs (first occurrence kept).

    Raises:
        RelayUrlError: a URL is malformed, plain http to another machine without ``insecure``, or too many.
    """
    out = tuple(dict.fromkeys(check_relay_url(u, insecure=insecure) for u in urls))
    if len(out) > limit:
        raise RelayUrlError(f"at most {limit} {what} relays, got {len(out)}")
    return out


def _urls(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def relay_config(home: Home, env: Mapping[str, str] | None = None) -> RelayConfig:
    """The home's relays as recorded (config.json), with ``PARLEY_DIRECTORY_RELAYS`` applied.

    Raises:
        RelayUrlError: the environment names a bad directory relay.
    """
    env = os.environ if env is None else env
    cfg = home.config()
    insecure = bool(cfg.get("insecure_relays"))
    homes = _urls(cfg.get("relays")) or ([cfg["relay_url"]] if isinstance(cfg.get("relay_url"), str) and cfg["relay_url"] else [])
    directory: list[str] = _urls(cfg.get("directory_relays"))
    raw = env.get("PARLEY_DIRECTORY_RELAYS")
    if raw is not None and raw.strip():
        directory = list(checked_urls([u for u in raw.split(",") if u.strip()], insecure=insecure, limit=MAX_DIRECTORY_RELAYS, what="directory"))
    previous = tuple(
        (p["url"], int(p["until"]))
        for p in (cfg.get("previous_relays") or [])
        if isinstance(p, dict) and isinstance(p.get("url"), str) and isinstance(p.get("until"), int)
    )
    return RelayConfig(
        home=tuple(homes),
        directory=tuple(u for u in directory if u not in homes),  # a home relay is asked first anyway
        previous=previous,
        embedded=bool(cfg.get("embedded_relay")) and bool(homes),
        insecure=insecure,
    )


def set_home_relays(home: Home, urls: Iterable[str], *, insecure: bool = False, now_s: int | None = None) -> RelayConfig:
    """Make ``urls`` the home relays (the first is primary). Home relays that are dropped keep being
    read for ``relay_grace_days`` (moving house: nothing in flight is lost).

    Raises:
        RelayUrlError: no URL, too many, or a bad one (nothing is changed).
    """
    now_s = int(time.time()) if now_s is None else now_s
    current = relay_config(home)
    insecure = insecure or current.insecure
    new = checked_urls(urls, insecure=insecure, limit=MAX_HOME_RELAYS, what="home")
    if not new:
        raise RelayUrlError("name at least one relay URL")
    grace_s = int(home.config().get("relay_grace_days", 14)) * DAY_S
    previous = {url: until for url, until in current.previous if until > now_s and url not in new}
    for url in current.home:
        if url not in new and not current.embedded:
            previous[url] = now_s + grace_s
    home.update_config(
        relays=list(new),
        relay_url=None,
        embedded_relay=False,
        insecure_relays=insecure,
        previous_relays=[{"url": u, "until": t} for u, t in sorted(previous.items())],
    )
    return relay_config(home)


def set_directory_relays(home: Home, urls: Iterable[str], *, insecure: bool = False) -> RelayConfig:
    """Make ``urls`` the directory relays (may be empty: no directory).

    Raises:
        RelayUrlError: a bad URL or too many (nothing is changed).
    """
    insecure = insecure or relay_config(home).insecure
    new = checked_urls(urls, insecure=insecure, limit=MAX_DIRECTORY_RELAYS, what="directory")
    home.update_config(directory_relays=list(new), insecure_relays=insecure)
    return relay_config(home)


def record_embedded(home: Home, url: str) -> RelayConfig:
    """``parley run`` found no relay configured: record its embedded relay as the home relay."""
    home.update_config(relays=[check_relay_url(url)], relay_url=None, embedded_relay=True)
    return relay_config(home)


def pointer_lookup(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Callable[[str], list[str]] | None:
    """The on-chain pointer lookup discovery asks last (PROTOCOL.md §6.6), or None when ``relay_pointers``
    is off or neither an ENS RPC endpoint nor a Lens API is configured: address → the relay URLs its ENS
    text record and Lens account attribute ``parley.relays`` name (at most 5; plain http to another
    machine dropped). On by default, with the public endpoints of bridge/nameservices.py: each lookup
    tells them which wallet this IP is about to write to (docs/SECURITY.md).

    The lookup raises SourceError only when every configured source failed."""
    from bridge.resolve import ResolverSettings
    from bridge.resolve.pointers import relays_from_settings

    if cfg.get("relay_pointers", True) is False:
        return None
    s = ResolverSettings.from_config(cfg, env)
    if not s.eth_rpc_url and not s.lens_api_url:
        return None
    sources = int(bool(s.eth_rpc_url)) + int(bool(s.lens_api_url))

    def lookup(address: str) -> list[str]:
        found, errors = relays_from_settings(s, address)
        if errors and len(errors) == sources:
            raise errors[0]
        usable: list[str] = []
        for url in found:
            try:
                usable.append(check_relay_url(url))
            except RelayUrlError:
                continue  # plain http to another machine: never used without --insecure
        return usable[:MAX_HOME_RELAYS]

    return lookup
