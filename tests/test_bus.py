"""The queue between sources and the engine: bounded, and loud about what it drops."""

from __future__ import annotations

from daemon.bus import Bus
from daemon.telemetry.metrics import Metrics
from tests.rulekit import docker_event


async def test_a_full_queue_drops_and_counts_instead_of_blocking_the_source() -> None:
    metrics = Metrics()
    bus = Bus(metrics, maxsize=10)
    accepted = [bus.emit(docker_event("start")) for _ in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    sample = metrics.registry.get_sample_value
    assert sample("remedyd_queue_dropped_total", {"source": "docker"}) == 5
    assert sample("remedyd_queue_depth") == 10
    first = await bus.get()
    assert first.action == "start"
    assert sample("remedyd_queue_depth") == 9
