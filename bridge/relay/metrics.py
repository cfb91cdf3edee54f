"""What a public relay reports to its operator's monitoring (``GET /metrics``, Prometheus text format).

Each relay app has its own :class:`prometheus_client.CollectorRegistry` (never the process-global
one), so several apps in one process (the test suite, a bridge embedding a relay) do not clash.
Label values are bounded: routes are URL rules (``/v1/envelopes/<path:topic>``), never paths, and
error codes come from the relay's fixed list. Nothing here names an inbox, an address or a client.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["RelayMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class RelayMetrics:
    """The relay's counters and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "parley_relay_requests", "HTTP requests answered, by route (URL rule) and status.", ["route", "status"],
            registry=self.registry,
        )
        self.envelopes = Counter("parley_relay_envelopes_published", "Envelopes stored (accepted publishes).", registry=self.registry)
        self.bytes_stored = Counter(
            "parley_relay_envelope_bytes_stored", "Payload bytes of the envelopes stored.", registry=self.registry
        )
        self.refusals = Counter(
            "parley_relay_refusals", "Requests and subscriptions refused, by error code.", ["code"], registry=self.registry
        )
        self.backup_bytes = Counter(
            "parley_relay_backup_bytes_stored", "Bytes of backup objects stored (accepted PUT /v1/backups).", registry=self.registry
        )
        self.subscriptions = Gauge(
            "parley_relay_subscriptions", "WebSocket subscriptions open on this node.", registry=self.registry
        )

    def refused(self, code: str) -> None:
        self.refusals.labels(code=code).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return bytes(generate_latest(self.registry))
