"""/metrics shows the process as well as remedyd: CPU, memory, file descriptors, GC."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from daemon.telemetry.metrics import Metrics
from tests.test_http import get, send, server


async def test_metrics_include_process_and_python_families() -> None:
    async with server() as port:
        answer = await send(port, get("/metrics"))
    assert answer.status == 200
    families = {f.name for f in text_string_to_metric_families(answer.body.decode())}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
            "process_start_time_seconds", "python_info",
            "python_gc_collections"} <= families, sorted(families)
    assert "remedyd_audit_last_seq" in families


def test_each_registry_gets_its_own_collectors() -> None:
    # A second daemon in one process (as in tests) must neither clash nor share.
    for metrics in (Metrics(), Metrics()):
        assert metrics.registry.get_sample_value("process_open_fds") is not None
