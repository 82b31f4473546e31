"""Prometheus metrics of one relay, in a registry of its own.

A registry per instance (not the process-global one) keeps several relays in one
process, as the tests and benchmarks run them, from counting into each other.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "RelayMetrics"]


class RelayMetrics:
    """The relay's Prometheus metrics (served at ``/metrics``): connections, messages, refusals by
    limit, store and bus timings."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "parley_relay_connections",
            "Authenticated connections open now.",
            registry=self.registry,
        )
        self.messages_in = Counter(
            "parley_relay_messages_in",
            "Send frames received from authenticated clients.",
            registry=self.registry,
        )
        self.messages_out = Counter(
            "parley_relay_messages_out",
            "Deliver frames written to connections.",
            registry=self.registry,
        )
        self.messages_stored = Counter(
            "parley_relay_messages_stored",
            "Envelopes durably stored (duplicates of a stored envelope excluded).",
            registry=self.registry,
        )
        self.messages_expired = Counter(
            "parley_relay_messages_expired",
            "Inbox rows dropped because their envelope expired before delivery.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "parley_relay_rejected",
            "Requests refused, by reason (the wire error code).",
            ["reason"],
            registry=self.registry,
        )
        self.limited = Counter(
            "parley_relay_limited",
            "Requests and connections refused or closed by a limit, by which limit: "
            "device, identity (request rates), registration and preauth (per network "
            "address), connections (a device's oldest connection closed), slow_reader.",
            ["limit"],
            registry=self.registry,
        )

        self.store_seconds = Histogram(
            "parley_relay_store_seconds",
            "Time of each store operation, by backend and operation.",
            ["backend", "operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.bus_events = Counter(
            "parley_relay_bus_events",
            "Events published to and received from other relay nodes, by kind.",
            ["direction", "kind"],
            registry=self.registry,
        )
        self.bus_gaps = Counter(
            "parley_relay_bus_gaps",
            "Times the bus may have lost events and this node re-read the store.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
