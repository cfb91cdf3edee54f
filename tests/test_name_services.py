"""Issue 11: working name-service defaults (bridge/nameservices.py) and ``parley doctor`` (bridge/doctor.py).

The defaults are the public Lens API, Lens Chain RPC and a keyless Ethereum RPC; each is overridable
by config.json and by its environment variable, and ``off`` turns it off. No test reaches them: every
test process has ``PARLEY_NAME_SERVICE_DEFAULTS=off`` (conftest.py, tests/procs.py), and the doctor is
pointed at local fakes (a Lens API, eth-tester chains, a relay) through the same variables users have.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import nameservices
from bridge.doctor import run_checks
from bridge.home import SETTINGS, Home
from bridge.identity.smart import verifier_from_config, verifier_from_env
from bridge.resolve import ResolverSettings
from bridge.resolve.sources import LensSource, SourceError
from tests.fakes.chain import ChainServer
from tests.fakes.names import LensApi
from tests.procs import free_port, parley
from tests.relay_fixtures import serve_relay

DEFAULTS = {
    "lens_api_url": "https://api.lens.xyz/graphql",
    "lens_chain_rpc_url": "https://rpc.lens.xyz",
    "eth_rpc_url": "https://ethereum-rpc.publicnode.com",
}


def home_with(tmp_path: Path, **config: object) -> Home:
    home = Home(tmp_path / "home")
    home.create()
    if config:
        home.update_config(**config)
    return home


# --- the defaults ------------------------------------------------------------------------------


def test_a_fresh_home_uses_the_public_lens_api_lens_chain_and_ethereum_rpc(tmp_path: Path) -> None:
    cfg = home_with(tmp_path).config()
    assert {s.name: s.default for s in SETTINGS if s.name in DEFAULTS} == DEFAULTS
    s = ResolverSettings.from_config(cfg, {})
    assert (s.lens_api_url, s.eth_rpc_url, s.lens_chain_rpc_url) == tuple(DEFAULTS[k] for k in ("lens_api_url", "eth_rpc_url", "lens_chain_rpc_url"))
    assert (s.farcaster_hub_url, s.op_rpc_url) == (None, None)  # no keyless public default for these
    assert {cid: c.url for cid, c in verifier_from_config(cfg, {}).chains.items()} == {1: DEFAULTS["eth_rpc_url"], 232: DEFAULTS["lens_chain_rpc_url"]}


def test_each_default_is_overridable_by_config_and_environment_and_can_be_turned_off(tmp_path: Path) -> None:
    cfg = home_with(tmp_path, lens_api_url="http://127.0.0.1:9/graphql", eth_rpc_url="off", lens_chain_rpc_url=None).config()
    s = ResolverSettings.from_config(cfg, {})
    assert (s.lens_api_url, s.eth_rpc_url, s.lens_chain_rpc_url) == ("http://127.0.0.1:9/graphql", None, None)
    assert verifier_from_config(cfg, {}).chains == {}
    env = {"PARLEY_LENS_API_URL": "OFF", "PARLEY_ETH_RPC_URL": "http://127.0.0.1:8", "PARLEY_LENS_CHAIN_RPC_URL": "http://127.0.0.1:7"}
    s = ResolverSettings.from_config(cfg, env)
    assert (s.lens_api_url, s.eth_rpc_url, s.lens_chain_rpc_url) == (None, "http://127.0.0.1:8", "http://127.0.0.1:7")
    assert {cid: c.url for cid, c in verifier_from_config(cfg, env).chains.items()} == {1: "http://127.0.0.1:8", 232: "http://127.0.0.1:7"}
    # an empty variable is "not set" (the config applies), as before
    assert ResolverSettings.from_config(cfg, {"PARLEY_LENS_API_URL": ""}).lens_api_url == "http://127.0.0.1:9/graphql"
    # the relay's verifier (environment only) takes `off` as off, not as a URL
    assert verifier_from_env({"PARLEY_ETH_RPC_URL": "off", "PARLEY_OP_RPC_URL": " none "}).chains == {}


def test_the_test_switch_drops_only_the_built_in_defaults(tmp_path: Path) -> None:
    cfg = home_with(tmp_path, eth_rpc_url="http://127.0.0.1:8").config()
    off = {"PARLEY_NAME_SERVICE_DEFAULTS": "off"}
    s = ResolverSettings.from_config(cfg, off)
    assert (s.lens_api_url, s.eth_rpc_url, s.lens_chain_rpc_url) == (None, "http://127.0.0.1:8", None)
    assert ResolverSettings.from_config(cfg, {**off, "PARLEY_LENS_API_URL": "http://127.0.0.1:9/g"}).lens_api_url == "http://127.0.0.1:9/g"
    assert {cid: c.url for cid, c in verifier_from_config(cfg, off).chains.items()} == {1: "http://127.0.0.1:8"}


def test_every_test_process_runs_with_the_defaults_off() -> None:
    """The harness itself: this process (conftest.py) and every `parley` it starts (tests/procs.py)."""
    import os

    assert os.environ.get("PARLEY_NAME_SERVICE_DEFAULTS") == "off"
    r = parley(None, "doctor", "--json")
    checks = {c["setting"]: c for c in json.loads(r.stdout)}
    assert all(checks[k]["status"] == "off" for k in DEFAULTS), checks


# --- failing fast ------------------------------------------------------------------------------


@pytest.fixture
def fresh_breaker() -> Iterator[None]:
    nameservices._down.clear()
    yield
    nameservices._down.clear()


def test_an_unreachable_source_is_not_asked_again_for_a_while(fresh_breaker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that cannot be connected to fails every lookup at once for RETRY_AFTER seconds (each
    would otherwise wait for the connection timeout), then is tried again."""
    accepted: list[int] = []
    with socket.socket() as listener:  # accepts and hangs up at once: "connection aborted"
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/graphql"

        def hang_up() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(1)
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        src = LensSource(url)
        with pytest.raises(SourceError, match="cannot reach"):
            src.lookup("alice")
        assert len(accepted) == 1
        start = time.monotonic()
        for _ in range(5):
            with pytest.raises(SourceError, match="could not be reached moments ago"):
                src.lookup("alice")
        assert len(accepted) == 1 and time.monotonic() - start < 0.5
        monkeypatch.setattr(nameservices, "RETRY_AFTER", 0.0)
        nameservices.mark_unreachable(url)  # expires at once
        with pytest.raises(SourceError, match="cannot reach"):
            src.lookup("alice")
        assert len(accepted) == 2
    assert nameservices.timeout(10.0) == (nameservices.CONNECT_TIMEOUT, 10.0) and nameservices.CONNECT_TIMEOUT < 5


def test_a_chain_that_cannot_be_reached_fails_at_once_the_second_time(fresh_breaker: None) -> None:
    from bridge.chain import Chain, ChainError

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainError, match="cannot reach"):
        Chain(url, chain_id=1).block_number()
    with pytest.raises(ChainError, match="moments ago"):
        Chain(url, chain_id=1).block_number()


# --- parley doctor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Lens API, an Ethereum chain (1), a Lens Chain (232), a chain that says it is 1, a relay."""
    with LensApi() as lens, ChainServer(chain_id=1) as eth, ChainServer(chain_id=232) as lens_chain, \
            ChainServer(chain_id=1) as wrong, serve_relay(tmp_path_factory.mktemp("relay") / "relay.db") as relay, \
            serve_relay(tmp_path_factory.mktemp("directory") / "relay.db") as directory:
        lens.accounts["lens"] = ("0x" + "11" * 20, "0x" + "22" * 20)
        yield {"lens": lens.url, "eth": eth.url, "lens_chain": lens_chain.url, "wrong": wrong.url, "relay": relay, "directory": directory}


def test_doctor_says_ok_for_each_working_source_and_off_for_the_rest(tmp_path: Path, sources: dict[str, str], fresh_breaker: None) -> None:
    home = home_with(tmp_path, relays=[sources["relay"]], directory_relays=[sources["directory"]])
    env = {"PARLEY_LENS_API_URL": sources["lens"], "PARLEY_ETH_RPC_URL": sources["eth"], "PARLEY_LENS_CHAIN_RPC_URL": sources["lens_chain"],
           "PARLEY_NAME_SERVICE_DEFAULTS": "off"}
    checks = {(c.source, c.setting): c for c in run_checks(home, env)}
    status = {k: c.status for k, c in checks.items()}
    assert status == {
        ("Lens API", "lens_api_url"): "ok", ("Ethereum RPC (ENS)", "eth_rpc_url"): "ok", ("Lens Chain RPC", "lens_chain_rpc_url"): "ok",
        ("OP Mainnet RPC", "op_rpc_url"): "off", ("Farcaster hub", "farcaster_hub_url"): "off",
        ("Home relay", "relays"): "ok", ("Directory relay", "directory_relays"): "ok",
    }
    assert checks[("Lens Chain RPC", "lens_chain_rpc_url")].detail.startswith("chain 232, block ")
    assert checks[("Home relay", "relays")].detail.startswith("protocol 1")


def test_doctor_reports_a_failing_a_wrong_and_an_unreachable_source_and_exits_non_zero(
    tmp_path: Path, sources: dict[str, str], fresh_breaker: None
) -> None:
    """Through the real command: one line per source, `failed: why` for each broken one, exit 1;
    --json carries the same."""
    dead = f"http://127.0.0.1:{free_port()}"
    home = home_with(tmp_path, relays=[dead], lens_chain_rpc_url=sources["wrong"], op_rpc_url="off")
    env = {"PARLEY_LENS_API_URL": sources["relay"] + "/graphql",  # answers, but not GraphQL: a 404 without data
           "PARLEY_ETH_RPC_URL": sources["eth"], "PARLEY_FARCASTER_HUB_URL": dead}
    r = parley(home.path, "doctor", **env)
    assert r.returncode == 1, r
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 6, r.stdout
    by_source = {line.split("  ")[0].strip(): line for line in lines}
    assert "failed: Lens API:" in by_source["Lens API"]
    assert "ok: chain 1, block" in by_source["Ethereum RPC (ENS)"]
    assert f"failed: {sources['wrong']} is chain 1, expected chain 232" in by_source["Lens Chain RPC"]
    assert "off" in by_source["OP Mainnet RPC"]
    assert "failed:" in by_source["Farcaster hub"] and "cannot reach" in by_source["Farcaster hub"]
    assert "failed:" in by_source["Home relay"] and dead in by_source["Home relay"]
    assert "4 of 5 configured sources failed" in r.stderr

    j = parley(home.path, "doctor", "--json", **env)
    assert j.returncode == 1
    got = {c["setting"]: c["status"] for c in json.loads(j.stdout)}
    assert got == {"lens_api_url": "failed", "eth_rpc_url": "ok", "lens_chain_rpc_url": "failed", "op_rpc_url": "off",
                   "farcaster_hub_url": "failed", "relays": "failed"}



def test_doctor_keeps_api_keys_in_urls_out_of_its_report(tmp_path: Path, fresh_breaker: None) -> None:
    """Providers put keys in the query string or user info; the report (often pasted into an issue)
    names the endpoint without them."""
    from bridge.doctor import format_line

    dead = free_port()
    env = {"PARLEY_NAME_SERVICE_DEFAULTS": "off", "PARLEY_ETH_RPC_URL": f"http://127.0.0.1:{dead}/v1?apikey=hunter2",
           "PARLEY_LENS_API_URL": f"http://user:hunter2@127.0.0.1:{dead}/graphql"}
    checks = [c for c in run_checks(home_with(tmp_path), env) if c.status != "off"]
    assert {c.status for c in checks} == {"failed"} and len(checks) == 2
    for c in checks:
        text = format_line(c) + json.dumps(c.as_json())
        assert "hunter2" not in text and str(dead) in text, text
