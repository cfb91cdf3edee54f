"""TLS between bridges and a relay (docs/PROTOCOL.md §7 "TLS and relay URLs"), over real processes.

`parley relay --tls-cert/--tls-key` serves https and wss in both serving models; clients verify the
certificate against the system store plus ``PARLEY_CA_BUNDLE`` (a throw-away trustme CA here), for
every HTTP request and for the WebSocket subscription; an unknown CA, a certificate for another
host name, and a missing CA bundle are one-line errors naming the relay.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from bridge.relay.client import RelayClient, RelayUnavailable
from tests.procs import Proc, parley, start_relay
from tests.relay_fixtures import WALLET_ADDRESS, authorize_record, make_installation, tls_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real parley processes: not in make test-fast


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["gevent", "threaded"])
def tls_relay(request: pytest.FixtureRequest, tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[str, str]]:
    """A `parley relay` serving TLS with a certificate for 127.0.0.1 and localhost: (URL, CA bundle)."""
    chain, key, bundle = tls_files(tmp_path, ca, "127.0.0.1", "localhost")
    proc, url = start_relay(tmp_path / "relay.db", 0, 1000.0, "--tls-cert", chain, "--tls-key", key, "--server", request.param)
    try:
        yield url, bundle
    finally:
        proc.stop()


def test_relay_serves_https_and_wss_to_a_client_trusting_its_ca(tls_relay: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, bundle = tls_relay
    assert url.startswith("https://127.0.0.1:")
    monkeypatch.setenv("PARLEY_CA_BUNDLE", bundle)
    inst = make_installation()
    with RelayClient(url) as client:
        assert client.health()["ok"] is True
        assert client.publish_identity(WALLET_ADDRESS, authorize_record(inst)) == 1
        token = client.authenticate(inst.iid, inst.signing_priv)
        cursor = client.publish(inst.topic, b"over tls")
        assert [e.payload for e in client.fetch(inst.topic, 0, token=token)] == [b"over tls"]
        with client.subscribe(inst.topic, 0, token=token) as sub:  # wss://, verified by the same context
            env = sub.receive(10.0)
            assert env is not None and (env.cursor, env.payload) == (cursor, b"over tls")
            later = client.publish(inst.topic, b"live")
            env = sub.receive(10.0)
            assert env is not None and (env.cursor, env.payload) == (later, b"live")


def test_plain_http_to_a_tls_relay_fails(tls_relay: tuple[str, str]) -> None:
    url, _ = tls_relay
    with RelayClient(url.replace("https://", "http://"), timeout=5.0) as client, pytest.raises(RelayUnavailable):
        client.health()


def _one_line_refusal(url: str, call: object) -> str:
    with pytest.raises(RelayUnavailable) as exc:
        call()  # type: ignore[operator]
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_certificate_from_an_unknown_ca_is_refused(tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    chain, key, _ = tls_files(tmp_path, ca, "127.0.0.1")
    other_ca = trustme.CA()
    other = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(other))
    monkeypatch.setenv("PARLEY_CA_BUNDLE", str(other))
    proc, url = start_relay(tmp_path / "relay.db", 0, 1000.0, "--tls-cert", chain, "--tls-key", key)
    try:
        with RelayClient(url, timeout=5.0) as client:
            message = _one_line_refusal(url, client.health)
            assert re.fullmatch(rf"relay {re.escape(url)}: certificate verify failed \(unable to get local issuer certificate\)", message), message
            message = _one_line_refusal(url, lambda: client.subscribe(make_installation().topic, 0, token="t"))
            assert message.startswith(f"relay {url}: certificate verify failed ("), message
    finally:
        proc.stop()


def test_a_certificate_for_another_host_name_is_refused(tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    chain, key, bundle = tls_files(tmp_path, ca, "relay.example.org")
    monkeypatch.setenv("PARLEY_CA_BUNDLE", bundle)  # the CA is trusted: only the name is wrong
    proc, url = start_relay(tmp_path / "relay.db", 0, 1000.0, "--tls-cert", chain, "--tls-key", key, "--server", "threaded")
    try:
        with RelayClient(url, timeout=5.0) as client:
            message = _one_line_refusal(url, client.health)
            assert message.startswith(f"relay {url}: certificate verify failed (") and "mismatch" in message, message
            message = _one_line_refusal(url, lambda: client.subscribe(make_installation().topic, 0, token="t"))
            assert message.startswith(f"relay {url}: certificate verify failed (") and "mismatch" in message, message
    finally:
        proc.stop()


def test_a_missing_ca_bundle_is_a_clear_error(tls_relay: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = tls_relay
    missing = tmp_path / "nowhere.pem"
    monkeypatch.setenv("PARLEY_CA_BUNDLE", str(missing))
    with RelayClient(url, timeout=5.0) as client:
        assert _one_line_refusal(url, client.health) == f"relay {url}: PARLEY_CA_BUNDLE={missing}: no such file"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    monkeypatch.setenv("PARLEY_CA_BUNDLE", str(garbage))
    with RelayClient(url, timeout=5.0) as client:
        assert _one_line_refusal(url, client.health).startswith(f"relay {url}: PARLEY_CA_BUNDLE={garbage}: not a PEM file")


def test_silent_tls_clients_do_not_hold_the_relay(tls_relay: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections that never send a ClientHello: the handshake waits in their own thread/greenlet."""
    url, bundle = tls_relay
    monkeypatch.setenv("PARLEY_CA_BUNDLE", bundle)
    port = int(url.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        with RelayClient(url, timeout=5.0) as client:
            assert client.health()["ok"] is True
    finally:
        for s in silent:
            s.close()


def test_relay_refuses_a_key_that_is_missing(tmp_path: Path, ca: trustme.CA) -> None:
    chain, _, _ = tls_files(tmp_path, ca, "127.0.0.1")
    r = parley(None, "relay", "--port", "0", "--db", str(tmp_path / "r.db"), "--tls-cert", chain, "--tls-key", str(tmp_path / "no.pem"))
    assert r.returncode == 2 and r.stderr.strip() == f"parley: TLS file {tmp_path / 'no.pem'}: no such file", r.stderr
    r = parley(None, "relay", "--port", "0", "--db", str(tmp_path / "r.db"), "--tls-cert", chain)
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr


def test_a_bridge_registers_and_subscribes_over_tls(tls_relay: tuple[str, str], tmp_path: Path) -> None:
    """`parley init --relay https://…` and `parley run` with PARLEY_CA_BUNDLE: real processes, https and wss."""
    url, bundle = tls_relay
    home = tmp_path / "home"
    r = parley(home, "init", "--relay", url, PARLEY_CA_BUNDLE=bundle)
    assert r.returncode == 0 and f"registered on {url}" in r.stdout, r.stdout + r.stderr
    proc = Proc(["run", "--port", "0"], home=home, PARLEY_CA_BUNDLE=bundle)
    try:
        proc.expect(r"subscribed to ")
    finally:
        proc.stop()
