"""Names → addresses (docs/PROTOCOL.md "Names"; DESIGN.md bridge/resolve).

Every place that takes a recipient (CLI ``send`` / ``can-message``, RPC ``resolve`` / ``canMessage``, the
DM button through RPC ``resolve``) goes through :class:`Resolver`. Accepted forms:

- ``0x`` + 40 hex digits: the address itself;
- a name in the user's contacts file (checked first: the user's own names win);
- ``lens:alice``, ``lens/alice``, ``alice.lens``: Lens API v3 → the account contract and its owner;
- ``alice.eth`` (any name ending in ``.eth``): ENS through web3;
- ``farcaster:123`` (fid) or ``farcaster:alice`` (fname): hub → verified addresses (custody fallback).

When a name maps to several addresses, the first that has a registered installation wins (``registered``
callback); the result lists every candidate and says why one was chosen. Answers are cached for
``name_cache_ttl`` seconds; when a source cannot answer, an expired cached answer is returned marked
``stale``, otherwise :class:`ResolveError` (reason ``unreachable``) names the source and why.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.identity import IdentityError, checksum_address
from bridge.nameservices import endpoint
from bridge.resolve.cache import NameCache
from bridge.resolve.contacts import Contacts, ContactsError
from bridge.resolve.sources import (
    Candidate,
    EnsSource,
    FarcasterSource,
    LensSource,
    NotConfigured,
    SourceError,
)

__all__ = [
    "Resolution",
    "ResolveError",
    "Resolver",
    "ResolverSettings",
    "Candidate",
    "resolve",
    "resolver_for_contacts",
    "parse_peer",
    "Contacts",
    "ContactsError",
    "PEER_RE",
    "ENV_SETTINGS",
]

#: Anything a recipient argument may look like (finer checks in :func:`parse_peer`).
PEER_RE = re.compile(r"0x[0-9a-fA-F]{40}|[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}")

_LENS_LOCAL = re.compile(r"[a-z0-9_]{1,64}")
_FNAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_FID = re.compile(r"[1-9][0-9]{0,18}")
_ENS = re.compile(r"(?:[a-z0-9_-]+\.)+eth")

#: Setting → environment variable that overrides it.
ENV_SETTINGS: dict[str, str] = {
    "lens_api_url": "PARLEY_LENS_API_URL",
    "eth_rpc_url": "PARLEY_ETH_RPC_URL",
    "ens_registry": "PARLEY_ENS_REGISTRY",
    "ens_universal_resolver": "PARLEY_ENS_UNIVERSAL_RESOLVER",
    "farcaster_hub_url": "PARLEY_FARCASTER_HUB_URL",
    "op_rpc_url": "PARLEY_OP_RPC_URL",
    "farcaster_id_registry": "PARLEY_FARCASTER_ID_REGISTRY",
    "lens_chain_rpc_url": "PARLEY_LENS_CHAIN_RPC_URL",
    "name_cache_ttl": "PARLEY_NAME_CACHE_TTL",
}


class ResolveError(Exception):
    """The peer cannot be resolved. ``reason``: ``malformed`` (not a form we accept), ``unknown`` (no such
    name, or no source configured for it), ``unreachable`` (the source could not answer; ``source`` names
    it) or ``contacts`` (the contacts file is unreadable)."""

    def __init__(self, message: str, reason: str, source: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source


@dataclass(frozen=True)
class Resolution:
    """``address`` is the chosen candidate; ``reason`` says why. ``source``: ``address`` | ``contacts`` |
    ``lens`` | ``ens`` | ``farcaster``. ``stale``: an expired cached answer (the source was unreachable)."""

    peer: str
    address: str
    source: str
    name: str | None
    candidates: tuple[Candidate, ...] = ()
    registered: tuple[bool | None, ...] = ()
    reason: str = "the only address"
    stale: bool = False
    fetched_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "address": self.address,
            "source": self.source,
            "name": self.name,
            "candidates": [
                {"address": c.address, "role": c.role, "registered": r} for c, r in zip(self.candidates, self.registered)
            ],
            "chosen": {"address": self.address, "reason": self.reason},
            "stale": self.stale,
            "fetched_at": None if self.fetched_at is None else int(self.fetched_at),
        }


@dataclass(frozen=True)
class ResolverSettings:
    """Endpoints (None: that source is off) and the cache TTL. See README "Settings" and "Name services"
    (the Lens API and ENS have public defaults, filled in by :meth:`bridge.home.Home.config`)."""

    lens_api_url: str | None = None
    eth_rpc_url: str | None = None
    ens_registry: str | None = None
    ens_universal_resolver: str | None = None
    farcaster_hub_url: str | None = None
    op_rpc_url: str | None = None
    farcaster_id_registry: str | None = None
    lens_chain_rpc_url: str | None = None
    name_cache_ttl: float = 300.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ResolverSettings:
        """The home's settings, each overridden by its environment variable (:data:`ENV_SETTINGS`)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in ENV_SETTINGS.items():
            if name.endswith("_url"):  # an endpoint: `off` turns it off (bridge/nameservices.py)
                values[name] = endpoint(name, cfg, env, var)
                continue
            value = env.get(var) or cfg.get(name)
            if name == "name_cache_ttl":
                try:
                    values[name] = float(value) if value is not None else 300.0
                except (TypeError, ValueError):
                    values[name] = 300.0
            else:
                values[name] = value if isinstance(value, str) and value else None
        return cls(**values)


@dataclass(frozen=True)
class _Name:
    kind: str  # address | lens | ens | farcaster | contact
    value: str


def parse_peer(peer: object) -> _Name:
    """Classify a recipient string.

    Raises:
        ResolveError: reason ``malformed``.
    """
    if not isinstance(peer, str) or not PEER_RE.fullmatch(peer):
        raise ResolveError("not a recipient this bridge understands (0x address, lens:NAME, NAME.eth, farcaster:FID|FNAME or a contact)", "malformed")
    low = peer.lower()
    if low.startswith("0x"):
        try:
            return _Name("address", checksum_address(peer))
        except IdentityError:
            raise ResolveError(f"not an address: {peer!r} (expected 0x followed by 40 hex digits)", "malformed") from None
    for prefix in ("lens:", "lens/"):
        if low.startswith(prefix):
            local = low[len(prefix):]
            if not _LENS_LOCAL.fullmatch(local):
                raise ResolveError(f"not a Lens username: {peer!r}", "malformed")
            return _Name("lens", local)
    if low.endswith(".lens"):
        local = low[: -len(".lens")]
        if not _LENS_LOCAL.fullmatch(local):
            raise ResolveError(f"not a Lens username: {peer!r}", "malformed")
        return _Name("lens", local)
    if low.startswith("farcaster:"):
        value = low[len("farcaster:"):]
        if not (_FID.fullmatch(value) or (_FNAME.fullmatch(value) and not value.isdigit())):
            raise ResolveError(f"not a Farcaster fid or fname: {peer!r}", "malformed")
        return _Name("farcaster", value)
    if low.endswith(".eth"):
        if not _ENS.fullmatch(low):
            raise ResolveError(f"not an ENS name: {peer!r}", "malformed")
        return _Name("ens", low)
    return _Name("contact", peer)


class Resolver:
    """Resolve recipients for one home (see the module docstring).

    ``registered(address) -> bool`` tells whether an address has an installation (relay identity log);
    it may raise (relay unavailable), and the choice then falls back to the first candidate.
    """

    def __init__(
        self,
        contacts: Contacts,
        settings: ResolverSettings | None = None,
        *,
        cache: NameCache | None = None,
        registered: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.contacts = contacts
        self.settings = settings or ResolverSettings()
        self.cache = cache or NameCache(None)
        self.registered = registered
        self.clock = clock

    @classmethod
    def for_home(
        cls, home_dir: Path, cfg: Mapping[str, Any], *, registered: Callable[[str], bool] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Resolver:
        """The resolver of a Parley home: its contacts file, settings (+ env) and ``names.db`` cache."""
        cache_path = home_dir / "names.db" if home_dir.is_dir() else None
        return cls(Contacts(home_dir / "contacts.json"), ResolverSettings.from_config(cfg, env), cache=NameCache(cache_path), registered=registered)

    # --- sources --------------------------------------------------------------------------------

    def _lookup(self, name: _Name) -> list[Candidate]:
        s = self.settings
        if name.kind == "lens":
            if not s.lens_api_url:
                raise NotConfigured("Lens API", "no Lens API configured (lens_api_url / PARLEY_LENS_API_URL)")
            return LensSource(s.lens_api_url).lookup(name.value)
        if name.kind == "ens":
            if not s.eth_rpc_url:
                raise NotConfigured("ENS", "no Ethereum RPC configured (eth_rpc_url / PARLEY_ETH_RPC_URL)")
            return EnsSource(s.eth_rpc_url, registry=s.ens_registry, universal_resolver=s.ens_universal_resolver).lookup(name.value)
        if name.kind == "farcaster":
            registry = s.farcaster_id_registry or "0x00000000Fc6c5F01Fc30151999387Bb99A9f489b"
            return FarcasterSource(s.farcaster_hub_url, op_rpc_url=s.op_rpc_url, id_registry=registry).lookup(name.value)
        raise AssertionError(name.kind)

    # --- the choice -----------------------------------------------------------------------------

    def _choose(self, cands: list[Candidate]) -> tuple[int, tuple[bool | None, ...], str]:
        if len(cands) == 1 or self.registered is None:
            reason = "the only address" if len(cands) == 1 else f"the first candidate ({cands[0].role}); registrations not checked"
            return 0, (None,) * len(cands), reason
        flags: list[bool | None] = []
        error: str | None = None
        for c in cands:
            if error is not None:
                flags.append(None)
                continue
            try:
                flags.append(bool(self.registered(c.address)))
            except Exception as exc:  # relay unavailable or erroring: the choice must still be made
                error = str(exc) or type(exc).__name__
                flags.append(None)
        if error is not None:
            return 0, tuple(flags), f"the first candidate ({cands[0].role}); could not check registrations: {error}"
        for i, f in enumerate(flags):
            if f:
                others = sum(1 for x in flags if x)
                tail = "" if others == 1 else f" (the first of {others} registered)"
                return i, tuple(flags), f"{cands[i].role} has a registered installation{tail}"
        return 0, tuple(flags), f"no candidate has a registered installation; the first ({cands[0].role})"

    # --- resolve --------------------------------------------------------------------------------

    def resolve(self, peer: object) -> Resolution:
        """Raises:
        ResolveError: reason ``malformed`` | ``unknown`` | ``unreachable`` | ``contacts``.
        """
        name = parse_peer(peer)
        if not isinstance(peer, str):  # parse_peer accepts only strings; kept for the type checker
            raise ResolveError("a peer is a string", "malformed")
        if name.kind == "address":
            return Resolution(peer, name.value, "address", None, (Candidate(name.value, "address"),), (None,))
        try:
            found = self.contacts.lookup(peer)
        except ContactsError as exc:
            found = None
            contacts_error: ContactsError | None = exc
        else:
            contacts_error = None
        if found is not None:
            return Resolution(peer, found, "contacts", peer, (Candidate(found, "contact"),), (None,))
        if name.kind == "contact":
            if contacts_error is not None:
                raise ResolveError(str(contacts_error), "contacts")
            raise ResolveError(
                f"{peer} is not in your contacts (and is not lens:NAME, NAME.eth or farcaster:FID|FNAME)", "unknown", "contacts"
            )
        key = f"{name.kind}:{name.value}"
        cached = self.cache.get(key)
        now = self.clock()
        stale = False
        if cached is not None and now - cached[1] < self.settings.name_cache_ttl:
            cands, fetched = cached
        else:
            try:
                cands, fetched = self._lookup(name), now
            except NotConfigured as exc:
                raise ResolveError(f"{peer} is not in your contacts, and {exc}", "unknown", exc.source) from None
            except SourceError as exc:
                if cached is None:
                    raise ResolveError(f"cannot resolve {peer}: {exc}", "unreachable", exc.source) from None
                (cands, fetched), stale = cached, True
            else:
                if not cands:
                    raise ResolveError(f"{peer}: no such name ({_LABELS[name.kind]} has no record of it)", "unknown", _LABELS[name.kind])
                self.cache.put(key, cands, fetched)
        index, flags, reason = self._choose(cands)
        if stale:
            reason += f"; stale answer from {int(now - fetched)} s ago ({_LABELS[name.kind]} unreachable)"
        return Resolution(peer, cands[index].address, name.kind, peer, tuple(cands), flags, reason, stale, fetched)


_LABELS = {"lens": "Lens API", "ens": "ENS", "farcaster": "Farcaster hub"}


def resolver_for_contacts(
    contacts: Contacts, *, registered: Callable[[str], bool] | None = None, env: Mapping[str, str] | None = None
) -> Resolver:
    """The resolver of the home that holds ``contacts`` (its settings are re-read on every call, so a
    changed setting applies without a restart).

    Raises:
        HomeError: the home's config.json is unreadable.
    """
    from bridge.home import Home

    home_dir = contacts.path.parent
    return Resolver.for_home(home_dir, Home(home_dir).config(), registered=registered, env=env)


def resolve(peer: object, contacts: Contacts, *, resolver: Resolver | None = None) -> Resolution:
    """Resolve ``peer`` with ``resolver`` (default: contacts and addresses only, no name services).

    Raises:
        ResolveError
    """
    return (resolver or Resolver(contacts)).resolve(peer)

