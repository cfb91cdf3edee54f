"""`parley send NAME` / `parley can-message NAME` with real processes: names resolved through the fake
Lens API, an ENS name through the fake chain's JSON-RPC endpoint, and a source that is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from tests.fakes.chain import ChainServer, EnsNames
from tests.fakes.names import LensApi
from tests.procs import Proc, parley, start_relay, whoami

pytestmark = pytest.mark.slow

KEY_A = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # Hardhat account #3
KEY_B = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"  # Hardhat account #4
LENS_ACCOUNT = Account.create().address  # Bob's Lens account contract: not registered, Bob's EOA owns it


@dataclass
class World:
    relay: Proc
    url: str
    alice: Path
    bob: str
    lens: LensApi
    chain: ChainServer
    env: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("names")
    relay, url = start_relay(d / "relay.db")
    try:
        for home, key in ((d / "alice", KEY_A), (d / "bob", KEY_B)):
            parley(home, "init", "--private-key-env", "K", "--relay", url, check=True, K=key)
        bob = whoami(d / "bob")["address"]
        with LensApi() as lens, ChainServer(chain_id=1) as chain:
            lens.accounts["bob"] = (LENS_ACCOUNT, bob)
            ens = EnsNames(chain)
            ens.set_addr("bob.eth", bob)
            env = {
                "PARLEY_LENS_API_URL": lens.url,
                "PARLEY_ETH_RPC_URL": chain.url,
                "PARLEY_ENS_REGISTRY": ens.registry,
                "PARLEY_ENS_UNIVERSAL_RESOLVER": ens.universal,
            }
            yield World(relay, url, d / "alice", bob, lens, chain, env)
    finally:
        relay.stop()


def run(w: World, *args: str, **extra: str):  # type: ignore[no-untyped-def]
    return parley(w.alice, *args, **{**w.env, **extra})


def test_send_to_a_lens_name_reaches_the_registered_owner(world: World) -> None:
    r = run(world, "send", "lens:bob", "hi via lens")
    assert r.returncode == 0, r.stderr
    # both candidates shown; Bob registered his EOA (the owner), so it wins over the account contract
    assert f"lens:bob → {world.bob} (lens, 2 candidates: account {LENS_ACCOUNT}, owner {world.bob} (registered)" in r.stdout
    assert "owner has a registered installation" in r.stdout
    assert "sent " in r.stdout and world.bob in r.stdout.splitlines()[-1]
    out = json.loads(run(world, "send", "bob.lens", "json too", "--json").stdout)
    assert out["recipient"] == world.bob and out["resolution"]["chosen"]["address"] == world.bob
    assert [c["role"] for c in out["resolution"]["candidates"]] == ["account", "owner"]
    r = run(world, "can-message", "lens/bob")
    assert r.returncode == 0 and "1 installation" in r.stdout


def test_send_to_an_ens_name_through_the_chain_rpc(world: World) -> None:
    n = len(world.chain.requests)
    r = run(world, "send", "bob.eth", "hi via ens")
    assert r.returncode == 0, r.stderr
    assert f"bob.eth → {world.bob} (ens; the only address)" in r.stdout
    assert "eth_call" in world.chain.requests[n:]  # resolved on the chain, through its JSON-RPC endpoint
    assert run(world, "can-message", "bob.eth").returncode == 0


def test_unknown_malformed_and_a_source_down(world: World) -> None:
    r = run(world, "send", "lens:nobody", "x")
    assert r.returncode == 3 and r.stderr.strip() == "parley: lens:nobody: no such name (Lens API has no record of it)"
    r = run(world, "send", "nobody.eth", "x")
    assert r.returncode == 3 and "ENS has no record" in r.stderr
    for bad in ("lens:", "lens:no!pe", "farcaster:", "x y"):
        r = run(world, "send", bad, "x")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    assert run(world, "can-message", "lens:a!").returncode == 2
    # Lens API down, nothing cached for this name: exit 3, one line naming the source and why
    parley(world.alice, "contacts", "add", "lens:carol", world.bob, check=True)
    world.lens.down()
    try:
        r = run(world, "send", "lens:zed", "x")
        assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
        assert r.stderr.startswith("parley: cannot resolve lens:zed: Lens API: ") and "HTTP 503" in r.stderr
        r = run(world, "send", "lens:zed", "x", PARLEY_LENS_API_URL="http://127.0.0.1:1/graphql")
        assert r.returncode == 3 and "Lens API: cannot reach http://127.0.0.1:1/graphql" in r.stderr
        # the contacts file still works
        r = run(world, "send", "lens:carol", "via contacts")
        assert r.returncode == 0, r.stderr
        assert f"lens:carol → {world.bob} (contacts" in r.stdout
        # an answer cached earlier is still used, marked stale, once its TTL is over
        r = run(world, "send", "lens:bob", "stale ok", PARLEY_NAME_CACHE_TTL="0")
        assert r.returncode == 0, r.stderr
        assert "[stale]" in r.stdout and "Lens API unreachable" in r.stdout
    finally:
        world.lens.up()
