"""On-chain relay pointers: where a wallet says its identity log and relay lists can be looked up.

A wallet may publish a *relay pointer*, a short list of relay URLs, as the ENS text record
``parley.relays`` of its name, or as the Lens account metadata attribute ``parley.relays``. A sender
that cannot find a recipient in its cache, its home relays or its directory relays asks these (when
configured) and then looks the wallet up on the relays the pointer names.

A pointer only says *where to look*: everything found there is still verified against the wallet's
signatures, so a wrong or hostile pointer can hide a wallet (the lookup misses) but cannot impersonate
it. Its text is hostile input all the same: :func:`parse_relay_pointer` keeps at most
:data:`MAX_POINTER_RELAYS` canonical ``http(s)`` URLs and drops everything else.

Each lookup returns ``[]`` when there is no record and raises :class:`SourceError` (``ENS`` or
``Lens API``) when the source cannot answer. The endpoints are the resolver's (:class:`ResolverSettings`
``eth_rpc_url``, ``ens_registry``, ``ens_universal_resolver``, ``lens_api_url``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bridge.identity import IdentityError, checksum_address
from bridge.protocol import relaylist
from bridge.resolve.sources import EnsSource, LensSource, SourceError

if TYPE_CHECKING:
    from bridge.resolve import ResolverSettings

__all__ = [
    "POINTER_KEY",
    "MAX_POINTER_CHARS",
    "MAX_POINTER_RELAYS",
    "MAX_RELAY_URL_CHARS",
    "LENS_POINTER_QUERY",
    "parse_relay_pointer",
    "canonical_relay_url",
    "relays_from_ens",
    "relays_from_lens",
    "relays_from_settings",
]

#: The ENS text record key and the Lens metadata attribute key.
POINTER_KEY = "parley.relays"
#: The pointer text is cut to this many characters before it is parsed.
MAX_POINTER_CHARS = 4096
#: At most this many relays of a pointer are used (the first valid ones, in order).
MAX_POINTER_RELAYS = 5
#: A relay URL longer than this (in its canonical form) is dropped.
MAX_RELAY_URL_CHARS = relaylist.MAX_RELAY_URL

#: Lens API v3: the account at an address, with its metadata attributes (``AccountMetadata.attributes:
#: [MetadataAttribute!]!``, each ``{type, key, value: String!}``).
LENS_POINTER_QUERY = (
    "query AccountPointer($request: AccountRequest!) {"
    " account(request: $request) { address metadata { attributes { type key value } } } }"
)

_SEPARATORS = re.compile(r"[,\s]+")


def canonical_relay_url(token: str) -> str | None:
    """One relay URL in the canonical form relay lists carry (bridge/protocol/relaylist.py, the one
    definition), or None when it is not an acceptable relay URL."""
    try:
        return relaylist.canonical_relay_url(token)
    except ValueError:
        return None


def parse_relay_pointer(text: object) -> list[str]:
    """The relays a pointer names: URLs separated by commas and/or whitespace, each checked and made
    canonical by :func:`canonical_relay_url`; invalid ones are dropped, duplicates (after
    canonicalisation) kept once, at most :data:`MAX_POINTER_RELAYS`, in the pointer's order.

    The text is cut to :data:`MAX_POINTER_CHARS` characters first (a URL cut in two is dropped), so a
    huge record costs no more than a small one. Anything that is not a string names no relay.
    """
    if not isinstance(text, str):
        return []
    tokens = _SEPARATORS.split(text[:MAX_POINTER_CHARS])
    if len(text) > MAX_POINTER_CHARS and not _SEPARATORS.match(text[MAX_POINTER_CHARS]):
        tokens.pop()  # the last token continues past the cut
    out: list[str] = []
    for token in tokens:
        url = canonical_relay_url(token)
        if url is not None and url not in out:
            out.append(url)
            if len(out) == MAX_POINTER_RELAYS:
                break
    return out


# --- ENS ------------------------------------------------------------------------------------------


def relays_from_ens(
    rpc_url: str, address: str, *, name: str | None = None, registry: str | None = None, universal_resolver: str | None = None,
) -> list[str]:
    """The relays in the ENS text record ``parley.relays`` of ``address``'s name.

    The name is ``name`` (when the peer was resolved from one) or else the address's primary name (the
    reverse record ``<addr>.addr.reverse``). Either way the name must resolve forward to ``address``
    now; a name that points elsewhere (a stale resolution, or a reverse record anyone can set to any
    name) is ignored. ``[]``: no name, no resolver, or no record.

    Raises:
        SourceError: source ``ENS``: the RPC endpoint failed or answered nonsense; or ``address`` is not
            an address.
    """
    from ens.exceptions import InvalidName, ResolverNotFound

    source = EnsSource(rpc_url, registry=registry, universal_resolver=universal_resolver)
    try:
        address = checksum_address(address)
    except IdentityError:
        raise SourceError(source.label, f"not an address: {address!r}") from None
    ns = source.ns()

    def find_name() -> str | None:
        try:
            if name is None:
                return ns.name(address)  # the reverse record, checked forward by web3
            return name if ns.address(name) == address else None
        except InvalidName:
            return None  # a reverse record naming an invalid name names nothing

    found = source.ask(find_name, name or address)
    if not found:
        return []

    def text() -> str:
        try:
            return ns.get_text(found, POINTER_KEY)
        except ResolverNotFound:
            return ""

    return parse_relay_pointer(source.ask(text, found))


# --- Lens -----------------------------------------------------------------------------------------


def relays_from_lens(api_url: str, address: str) -> list[str]:
    """The relays in the metadata attribute ``parley.relays`` of the Lens account at ``address`` (Lens
    API v3 ``account(request: {address})``; the first attribute with that key). ``[]``: no such
    account, no metadata, or no such attribute; an attribute whose value is not a string names none.

    ``address`` is the Lens account (contract) address: a Lens account's owner EOA is a different
    address with no metadata of its own.

    Raises:
        SourceError: source ``Lens API``: it could not be reached, failed, or answered a malformed
            account; or ``address`` is not an address.
    """
    source = LensSource(api_url)
    try:
        address = checksum_address(address)
    except IdentityError:
        raise SourceError(source.label, f"not an address: {address!r}") from None
    account = source.account({"address": address}, LENS_POINTER_QUERY)
    if account is None:
        return []
    if account.get("address") is not None and str(account.get("address")).lower() != address.lower():
        raise SourceError(source.label, "answered another account than the one asked for")
    metadata = account.get("metadata")
    if metadata is None:
        return []
    attributes = metadata.get("attributes") if isinstance(metadata, Mapping) else None
    if not isinstance(attributes, list):
        raise SourceError(source.label, "answered malformed account metadata (no attributes list)")
    for attr in attributes:
        if isinstance(attr, Mapping) and attr.get("key") == POINTER_KEY:
            return parse_relay_pointer(attr.get("value"))
    return []


# --- both, with the resolver's settings ------------------------------------------------------------


def relays_from_settings(
    settings: ResolverSettings, address: str, *, ens_name: str | None = None,
) -> tuple[list[str], list[SourceError]]:
    """Ask every pointer source the resolver has an endpoint for (ENS with ``eth_rpc_url``, then Lens
    with ``lens_api_url``; unset: not asked): their relays in that order, de-duplicated, at most
    :data:`MAX_POINTER_RELAYS`, and the errors of the sources that could not answer (one failing source
    does not hide the other's answer; the caller decides what an error means).
    """
    relays: list[str] = []
    errors: list[SourceError] = []
    asks = []
    if settings.eth_rpc_url:
        rpc = settings.eth_rpc_url
        asks.append(lambda: relays_from_ens(rpc, address, name=ens_name, registry=settings.ens_registry,
                                            universal_resolver=settings.ens_universal_resolver))
    if settings.lens_api_url:
        api = settings.lens_api_url
        asks.append(lambda: relays_from_lens(api, address))
    for ask in asks:
        try:
            found = ask()
        except SourceError as exc:
            errors.append(exc)
            continue
        relays.extend(url for url in found if url not in relays)
    return relays[:MAX_POINTER_RELAYS], errors
