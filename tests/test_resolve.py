"""The name resolver (docs/PROTOCOL.md "Names") against local servers speaking the Lens API v3 and
Farcaster hub shapes (tests/fakes/names.py) and an in-process chain for ENS and IdRegistry reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from bridge.resolve import Contacts, ResolveError, Resolver, ResolverSettings, parse_peer
from bridge.resolve.cache import NameCache
from tests.fakes.chain import ChainServer, EnsNames
from tests.fakes.names import FarcasterHub, LensApi

ACCOUNT = Account.create().address
OWNER = Account.create().address
V1, V2, CUSTODY = (Account.create().address for _ in range(3))


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[ChainServer, str, str, str]]:
    """An Ethereum chain with alice.eth → V1 and an IdRegistry with fid 7 → CUSTODY."""
    with ChainServer(chain_id=1) as c:
        ens = EnsNames(c)
        ens.set_addr("alice.eth", V1)
        idreg = c.deploy("IdRegistry")
        c.transact(idreg.functions.register(7, CUSTODY))
        yield c, ens.registry, ens.universal, idreg.address


@pytest.fixture
def lens() -> Iterator[LensApi]:
    with LensApi() as api:
        api.accounts["alice"] = (ACCOUNT, OWNER)
        yield api


@pytest.fixture
def hub() -> Iterator[FarcasterHub]:
    with FarcasterHub() as h:
        h.fnames["alice"] = 5
        h.verifications[5] = ["7UX2i7SucgLMQcfZ75s3VXmZZY4YRUyJN9X1RgfMoDUi", V1, V2]  # a Solana one, skipped
        h.fnames["nover"] = 7
        yield h


def make(tmp_path: Path, registered: set[str] | None = None, **settings: object) -> Resolver:
    reg = None if registered is None else (lambda a: a in registered)
    return Resolver(Contacts(tmp_path / "contacts.json"), ResolverSettings(**settings),  # type: ignore[arg-type]
                    cache=NameCache(tmp_path / "names.db"), registered=reg)


def test_parse_forms() -> None:
    assert parse_peer("lens:Alice").value == parse_peer("lens/alice").value == parse_peer("alice.lens").value == "alice"
    assert (parse_peer("farcaster:123").kind, parse_peer("farcaster:alice").kind) == ("farcaster", "farcaster")
    assert parse_peer("Vitalik.eth").kind == "ens" and parse_peer("bob").kind == "contact"
    for bad in ("lens:", "lens:a!b", "farcaster:", "x y", "<script>", "0x123", "0xnothex", ".eth", "a..eth", "", 5):
        with pytest.raises(ResolveError) as exc:
            parse_peer(bad)
        assert exc.value.reason == "malformed"


def test_lens_both_candidates_registered_one_wins(tmp_path: Path, lens: LensApi) -> None:
    r = make(tmp_path, {OWNER}, lens_api_url=lens.url).resolve("lens:alice")
    assert (r.address, r.source) == (OWNER, "lens")
    assert [(c.address, c.role) for c in r.candidates] == [(ACCOUNT, "account"), (OWNER, "owner")]
    assert r.registered == (False, True) and "owner has a registered installation" in r.reason
    d = r.to_dict()
    assert d["chosen"] == {"address": OWNER, "reason": r.reason} and d["candidates"][1]["registered"] is True
    assert lens.requests[0][2]["variables"] == {"request": {"username": {"localName": "alice"}}}
    # the account registered instead: the account wins; every form of the name works
    (tmp_path / "x").mkdir()
    for form in ("alice.lens", "lens/alice", "lens:alice"):
        assert make(tmp_path / "x", {ACCOUNT}, lens_api_url=lens.url).resolve(form).address == ACCOUNT
    r = make(tmp_path / "x", set(), lens_api_url=lens.url).resolve("lens:alice")
    assert r.address == ACCOUNT and "no candidate has a registered installation" in r.reason


def test_unknown_and_unconfigured(tmp_path: Path, lens: LensApi) -> None:
    with pytest.raises(ResolveError, match="no such name") as exc:
        make(tmp_path, lens_api_url=lens.url).resolve("lens:nobody")
    assert (exc.value.reason, exc.value.source) == ("unknown", "Lens API")
    with pytest.raises(ResolveError, match="no Lens API configured") as exc:
        make(tmp_path).resolve("lens:alice")
    assert exc.value.reason == "unknown"
    with pytest.raises(ResolveError, match="not in your contacts") as exc:
        make(tmp_path).resolve("bob")
    assert exc.value.reason == "unknown"


def test_cache_ttl_stale_and_unreachable(tmp_path: Path, lens: LensApi) -> None:
    now = [1000.0]
    res = make(tmp_path, {OWNER}, lens_api_url=lens.url, name_cache_ttl=60)
    res.clock = lambda: now[0]
    assert res.resolve("lens:alice").stale is False
    n = len(lens.requests)
    lens.down()
    r = res.resolve("lens:alice")  # fresh from the cache: no request
    assert (r.address, r.stale, len(lens.requests)) == (OWNER, False, n)
    now[0] += 61
    r = res.resolve("lens:alice")
    assert r.stale is True and r.address == OWNER and "stale answer" in r.reason and "Lens API unreachable" in r.reason
    # nothing cached and the source down: a clear error naming the source
    with pytest.raises(ResolveError, match=r"Lens API: .*HTTP 503") as exc:
        res.resolve("lens:other")
    assert (exc.value.reason, exc.value.source) == ("unreachable", "Lens API")
    # a source that cannot be reached at all
    (tmp_path / "d").mkdir()
    dead = make(tmp_path / "d", lens_api_url="http://127.0.0.1:1/graphql")
    with pytest.raises(ResolveError, match="Lens API: cannot reach http://127.0.0.1:1/graphql"):
        dead.resolve("lens:alice")
    # contacts still work while the source is down, and win over the name service
    Contacts(tmp_path / "contacts.json").add("lens:other", V2)
    assert res.resolve("lens:other").address == V2 and res.resolve("lens:other").source == "contacts"
    # the cache is shared through the file: a new resolver sees it, stale
    again = make(tmp_path, lens_api_url=lens.url, name_cache_ttl=60)
    again.clock = lambda: now[0]
    assert again.resolve("lens:alice").stale is True


def test_registration_check_failing_falls_back_to_first(tmp_path: Path, lens: LensApi) -> None:
    def boom(addr: str) -> bool:
        raise OSError("relay down")

    res = Resolver(Contacts(tmp_path / "c.json"), ResolverSettings(lens_api_url=lens.url), registered=boom)
    r = res.resolve("lens:alice")
    assert r.address == ACCOUNT and "could not check registrations: relay down" in r.reason


def test_farcaster_fname_fid_and_custody(tmp_path: Path, hub: FarcasterHub, chain: tuple[ChainServer, str, str, str]) -> None:
    c, _, _, idreg = chain
    res = make(tmp_path, {V2}, farcaster_hub_url=hub.url, op_rpc_url=c.url, farcaster_id_registry=idreg)
    r = res.resolve("farcaster:alice")
    assert [x.address for x in r.candidates] == [V1, V2] and r.address == V2 and r.source == "farcaster"
    assert res.resolve("farcaster:5").address == V2
    # no verified address: the IdRegistry custody address (read on chain)
    r = res.resolve("farcaster:nover")
    assert [(x.address, x.role) for x in r.candidates] == [(CUSTODY, "custody")]
    with pytest.raises(ResolveError) as exc:
        res.resolve("farcaster:ghost")
    assert exc.value.reason == "unknown"
    # hub down: a fid still resolves through custodyOf; an fname cannot
    hub.down()
    (tmp_path / "n").mkdir()
    fresh = make(tmp_path / "n", None, farcaster_hub_url=hub.url, op_rpc_url=c.url, farcaster_id_registry=idreg)
    assert fresh.resolve("farcaster:7").address == CUSTODY
    with pytest.raises(ResolveError, match="Farcaster hub: .*HTTP 503") as exc:
        make(tmp_path / "n", None, farcaster_hub_url=hub.url).resolve("farcaster:bob")
    assert exc.value.reason == "unreachable"


def test_ens_through_web3(tmp_path: Path, chain: tuple[ChainServer, str, str, str]) -> None:
    c, registry, universal, _ = chain
    res = make(tmp_path, None, eth_rpc_url=c.url, ens_registry=registry, ens_universal_resolver=universal)
    r = res.resolve("alice.eth")
    assert (r.address, r.source, r.name) == (V1, "ens", "alice.eth")
    with pytest.raises(ResolveError, match="no such name") as exc:
        res.resolve("nobody.eth")
    assert exc.value.reason == "unknown"
    c.down()
    try:
        with pytest.raises(ResolveError, match=r"ENS: ") as exc:
            Resolver(Contacts(tmp_path / "none.json"), ResolverSettings(eth_rpc_url=c.url, ens_registry=registry,
                     ens_universal_resolver=universal)).resolve("alice.eth")
        assert exc.value.reason == "unreachable" and exc.value.source == "ENS"
    finally:
        c.up()


def test_settings_env_overrides_config() -> None:
    s = ResolverSettings.from_config({"lens_api_url": "http://a", "eth_rpc_url": "http://b", "name_cache_ttl": 10},
                                     {"PARLEY_LENS_API_URL": "http://c", "PARLEY_NAME_CACHE_TTL": "99"})
    assert (s.lens_api_url, s.eth_rpc_url, s.name_cache_ttl, s.farcaster_hub_url) == ("http://c", "http://b", 99.0, None)
