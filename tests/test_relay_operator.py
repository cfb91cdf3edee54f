"""What a public relay's operator relies on (docs/RELAY.md; docs/PROTOCOL.md §7 "Operating a relay"):
``/healthz``, ``/metrics`` (a registry per app), the per-inbox publish rate limit, and rate limits
keyed on the real client behind ``--trusted-proxies`` reverse proxies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from bridge.protocol import wire
from bridge.relay.client import RelayClient
from bridge.relay.sqlite_store import SQLiteStorage
from bridge.relay.storage import StorageUnavailable
from tests.procs import start_relay
from tests.relay_fixtures import WALLET_ADDRESS, authorize_record, make_installation, wait_until
from tests.test_relay_api import Relay, assert_error, rejected

pytestmark = pytest.mark.timeout(120)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))).strip(",") == want:
            return float(m.group(3))
    return 0.0


def _publish(relay: Relay, topic: str, payload: bytes, addr: str = "127.0.0.1", **headers: str) -> object:
    return relay.post("/v1/envelopes", {"topic": topic, "payload": wire.b64e(payload)}, environ_base={"REMOTE_ADDR": addr}, headers=headers)


class _FailingStorage(SQLiteStorage):
    down = False

    def installation(self, installation_id: str):  # type: ignore[no-untyped-def]
        if self.down:
            raise StorageUnavailable("database is locked")
        return super().installation(installation_id)


def test_healthz_is_ok_and_503_when_storage_is_down(tmp_path: Path) -> None:
    relay = Relay(tmp_path)
    storage = _FailingStorage(str(tmp_path / "healthz.db"))
    try:
        from bridge.relay.server import create_app

        r = relay.client.get("/healthz")
        assert (r.status_code, r.get_json()) == (200, {"ok": True})
        client = create_app(storage).test_client()
        assert client.get("/healthz").status_code == 200
        storage.down = True
        assert_error(client.get("/healthz"), 503, "storage_error")
        storage.down = False
        assert client.get("/healthz").status_code == 200
    finally:
        relay.storage.close()
        storage.close()


def test_metrics_count_requests_envelopes_bytes_and_refusals_per_app(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    relay, other = Relay(tmp_path / "a"), Relay(tmp_path / "b")  # two apps in one process: separate registries
    try:
        inst = make_installation()
        relay.authorize(inst)
        assert _publish(relay, inst.topic, b"x" * 10).status_code == 202  # type: ignore[attr-defined]
        assert _publish(relay, inst.topic, b"y" * 5).status_code == 202  # type: ignore[attr-defined]
        assert_error(relay.post("/v1/envelopes", {"topic": "parley.v1.inbox.XYZ", "payload": "AAAA"}), 400, "bad_topic")
        assert relay.client.get("/no/such/route").status_code == 404
        r = relay.client.get("/metrics")
        assert r.status_code == 200 and r.content_type.startswith("text/plain; version=")
        text = r.get_data(as_text=True)
        assert _metric(text, "parley_relay_envelopes_published_total") == 2
        assert _metric(text, "parley_relay_envelope_bytes_stored_total") == 15
        assert _metric(text, "parley_relay_refusals_total", code="bad_topic") == 1
        assert _metric(text, "parley_relay_requests_total", route="/v1/envelopes", status="202") == 2
        assert _metric(text, "parley_relay_requests_total", route="/v1/envelopes", status="400") == 1
        assert _metric(text, "parley_relay_requests_total", route="/v1/identity/<path:address>", status="201") == 1
        assert _metric(text, "parley_relay_requests_total", route="unmatched", status="404") == 1
        assert _metric(text, "parley_relay_subscriptions") == 0 and "parley_relay_subscriptions " in text
        assert inst.iid not in text and WALLET_ADDRESS not in text  # labels never name an inbox or an address
        other_text = other.client.get("/metrics").get_data(as_text=True)
        assert _metric(other_text, "parley_relay_envelopes_published_total") == 0
    finally:
        relay.storage.close()
        other.storage.close()


def test_inbox_rate_limit_counts_all_publishers_to_one_inbox(tmp_path: Path) -> None:
    relay = Relay(tmp_path, inbox_rate=1.0, inbox_burst=3, publish_rate=1e6, publish_burst=10**6)
    try:
        alice, bob = make_installation(), make_installation()
        relay.authorize(alice)
        relay.authorize(bob)
        codes = [_publish(relay, alice.topic, b"j", addr=f"10.0.0.{i}").status_code for i in range(1, 4)]  # type: ignore[attr-defined]
        assert codes == [202] * 3
        rejected(relay, lambda: _publish(relay, alice.topic, b"j", addr="10.0.0.99"), 429, "inbox_rate_limited")
        assert _publish(relay, bob.topic, b"ok").status_code == 202  # type: ignore[attr-defined]  # another inbox
        relay.clock.now += 1.0  # one token back
        assert _publish(relay, alice.topic, b"j", addr="10.0.0.5").status_code == 202  # type: ignore[attr-defined]
        assert_error(_publish(relay, alice.topic, b"j", addr="10.0.0.6"), 429, "inbox_rate_limited")  # type: ignore[arg-type]
        text = relay.client.get("/metrics").get_data(as_text=True)
        assert _metric(text, "parley_relay_refusals_total", code="inbox_rate_limited") == 2
    finally:
        relay.storage.close()


@pytest.mark.parametrize("trusted", [0, 1])
def test_rate_limits_key_on_forwarded_for_only_behind_trusted_proxies(tmp_path: Path, trusted: int) -> None:
    relay = Relay(tmp_path, trusted_proxies=trusted, publish_rate=0.001, publish_burst=1)
    try:
        inst = make_installation()
        relay.authorize(inst)
        # the proxy (127.0.0.1) appends the client it saw; anything before it is the client's own claim
        assert _publish(relay, inst.topic, b"a", **{"X-Forwarded-For": "203.0.113.7"}).status_code == 202  # type: ignore[attr-defined]
        second = _publish(relay, inst.topic, b"b", **{"X-Forwarded-For": "203.0.113.8"})
        spoofed = _publish(relay, inst.topic, b"c", **{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        if trusted:
            assert second.status_code == 202  # type: ignore[attr-defined]  # another real client
            assert_error(spoofed, 429, "rate_limited")  # keyed on the entry the proxy wrote, not the forged one
        else:
            assert_error(second, 429, "rate_limited")  # headers ignored: everyone is the TCP peer
    finally:
        relay.storage.close()


def test_parley_relay_process_options_and_subscription_gauge(tmp_path: Path) -> None:
    """The options reach the app across the gevent re-exec (--trusted-proxies through its environment
    variable, --inbox-burst); /healthz, /metrics and the live-subscription gauge over a real socket."""
    proc, url = start_relay(
        tmp_path / "relay.db", 0, 0.1, "--inbox-rate", "0.01", "--inbox-burst", "2", PARLEY_RELAY_TRUSTED_PROXIES="1"
    )
    try:
        assert requests.get(url + "/healthz", timeout=10).json() == {"ok": True}
        inst = make_installation()
        with RelayClient(url) as client:
            client.publish_identity(WALLET_ADDRESS, authorize_record(inst))
            body = {"topic": inst.topic, "payload": "AAAA"}
            codes = [
                requests.post(url + "/v1/envelopes", json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10).status_code
                for i in range(3)
            ]
            assert codes == [202, 202, 429]  # one per client address (trusted proxy), the inbox's burst of 2
            token = client.authenticate(inst.iid, inst.signing_priv)

            def gauge() -> float:
                return _metric(requests.get(url + "/metrics", timeout=10).text, "parley_relay_subscriptions")

            with client.subscribe(inst.topic, 0, token=token) as sub:
                assert sub.receive(10.0) is not None
                assert gauge() == 1
            assert wait_until(lambda: gauge() == 0, timeout=30)
            text = requests.get(url + "/metrics", timeout=10).text
            assert _metric(text, "parley_relay_refusals_total", code="inbox_rate_limited") == 1
    finally:
        proc.stop()


def _batch(relay: Relay, items: list[tuple[str, bytes]], addr: str = "127.0.0.1") -> object:
    body = {"topics": [t for t, _ in items], "payloads": [wire.b64e(p) for _, p in items]}
    return relay.post("/v1/envelopes/batch", body, environ_base={"REMOTE_ADDR": addr})


def test_a_batch_counts_every_envelope_against_the_inbox_and_address_limits(tmp_path: Path) -> None:
    """1.4 batch publish: no way around a limit by batching. Each envelope takes its per-inbox and
    per-address token; the first one refused stops the batch, the ones before it are stored."""
    relay = Relay(tmp_path, inbox_rate=1e-9, inbox_burst=3, publish_rate=1e-9, publish_burst=6)
    try:
        alice, bob = make_installation(), make_installation()
        relay.authorize(alice)
        relay.authorize(bob)
        r = _batch(relay, [(alice.topic, b"1"), (alice.topic, b"2"), (bob.topic, b"3"), (alice.topic, b"4"), (alice.topic, b"5")])
        assert r.status_code == 200  # type: ignore[attr-defined]
        body = r.get_json()  # type: ignore[attr-defined]
        assert len(body["cursors"]) == 4 and body["refused"]["index"] == 4
        assert (body["refused"]["status"], body["refused"]["code"]) == (429, "inbox_rate_limited")  # alice's 4th
        assert set(body["logs"]) == {alice.topic, bob.topic}
        # this address has spent 5 of its 6 publish tokens (the refused envelope took one, as a refused
        # single publish does): a batch of 2 stores one, then 429 rate_limited
        r = _batch(relay, [(bob.topic, b"6"), (bob.topic, b"7")])
        body = r.get_json()  # type: ignore[attr-defined]
        assert len(body["cursors"]) == 1 and (body["refused"]["index"], body["refused"]["code"]) == (1, "rate_limited")
        assert _publish(relay, bob.topic, b"8", addr="10.0.0.2").status_code == 202  # type: ignore[attr-defined]  # another address
        stored = relay.storage.fetch(alice.topic, 0, 10) + relay.storage.fetch(bob.topic, 0, 10)
        assert sorted(e.payload for e in stored) == [b"1", b"2", b"3", b"4", b"6", b"8"]
        text = relay.client.get("/metrics").get_data(as_text=True)
        assert _metric(text, "parley_relay_envelopes_published_total") == 6
        assert _metric(text, "parley_relay_refusals_total", code="inbox_rate_limited") == 1
        assert _metric(text, "parley_relay_refusals_total", code="rate_limited") == 1
    finally:
        relay.storage.close()


def test_a_batch_body_is_flat_and_bounded(tmp_path: Path) -> None:
    """Hostile batch bodies: nested values, wrong types, a payload over max_envelope, an oversized body."""
    relay = Relay(tmp_path, publish_rate=1e6, publish_burst=10**6, max_envelope=100)
    try:
        inst = make_installation()
        relay.authorize(inst)
        for body in ({"topics": [[inst.topic]] * 20, "payloads": ["AAAA"] * 20},  # nested: bad_json (container cap)
                     {"topics": [inst.topic], "payloads": None}, {"topics": None, "payloads": None}, {"payloads": ["AAAA"]}):
            r = relay.post("/v1/envelopes/batch", body)
            assert r.status_code == 400, body  # type: ignore[attr-defined]
        r = relay.post("/v1/envelopes/batch", {"topics": [inst.topic, 5], "payloads": ["AAAA", "AAAA"]})
        assert r.get_json()["refused"]["code"] == "bad_topic" and len(r.get_json()["cursors"]) == 1  # type: ignore[attr-defined]
        r = relay.post("/v1/envelopes/batch", {"topics": [inst.topic] * 2, "payloads": ["AAAA", wire.b64e(bytes(101))]})
        assert r.get_json()["refused"] == {  # type: ignore[attr-defined]
            "index": 1, "status": 413, "code": "too_large", "message": "field 'payload' exceeds 100 bytes"}
        r = relay.post("/v1/envelopes/batch", {"topics": [inst.topic], "payloads": ["not base64!"]})
        assert r.get_json()["refused"]["code"] == "bad_base64"  # type: ignore[attr-defined]
        assert_error(relay.post("/v1/envelopes/batch", raw="x" * (relay.settings.max_body + 1)), 413, "too_large")
        assert [e.payload for e in relay.storage.fetch(inst.topic, 0, 10)] == [wire.b64d("AAAA")] * 2
    finally:
        relay.storage.close()
