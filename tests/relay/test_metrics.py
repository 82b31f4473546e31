from __future__ import annotations

from parley.relay.metrics import RelayMetrics


def test_each_relay_counts_in_its_own_registry() -> None:
    first, second = RelayMetrics(), RelayMetrics()
    first.rejected.labels("too_large").inc()
    first.messages_in.inc(3)
    assert first.registry.get_sample_value("parley_relay_messages_in_total") == 3
    assert second.registry.get_sample_value("parley_relay_messages_in_total") == 0
    text = first.render().decode()
    for name in (
        "parley_relay_connections",
        "parley_relay_messages_in_total",
        "parley_relay_messages_out_total",
        "parley_relay_messages_stored_total",
        "parley_relay_messages_expired_total",
    ):
        assert f"\n{name} " in text
    assert 'parley_relay_rejected_total{reason="too_large"} 1.0' in text
