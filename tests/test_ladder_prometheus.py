"""`verify.query` against a real Prometheus (Debian's, scraping the KPI test service), and
against a port where none answers: recovered when a sample comes back, unknown when the
answer could not be read for the whole window (then notify and pause, no blind rung)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from daemon.actions.verify_prometheus import PrometheusSamples
from daemon.clients.http import HttpClient
from daemon.clients.prometheus import PrometheusClient
from tests.conftest import KpiStack
from tests.harness import free_port
from tests.test_ladder import QUERY, Bed


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient() as client:
        yield client


@pytest.fixture
async def beds(tmp_path: Path, http: HttpClient) -> AsyncIterator[Callable[..., Bed]]:
    made: list[Bed] = []

    def make(url: str, query: str, within: str) -> Bed:
        bed = Bed(tmp_path)
        made.append(bed)
        rules = QUERY.replace("within: 30s", f"within: {within}").replace(
            'up{job="api"} == 1', query)
        client = PrometheusClient(http, url, timeout=1.0)
        return bed.start(rules, PrometheusSamples(client), notify_url="http://127.0.0.1:9/h")

    yield make
    for bed in made:
        await bed.close()


async def test_a_sample_from_prometheus_is_a_recovery(beds: Callable[..., Bed],
                                                      kpi_stack: KpiStack) -> None:
    bed = beds(kpi_stack.url, "up == 1", "20s")
    bed.decide()
    await bed.until(lambda: bed.records("verification"), within=20)
    [verification] = bed.records("verification")
    assert verification["outcome"] == "recovered", verification
    assert bed.fix2.runs == []


async def test_a_query_that_returns_nothing_is_not_recovered(beds: Callable[..., Bed],
                                                             kpi_stack: KpiStack) -> None:
    bed = beds(kpi_stack.url, 'up{job="no-such-job"} == 1', "1s")
    bed.decide()
    await bed.until(lambda: bed.fix2.runs, within=20)
    [verification] = bed.records("verification")
    assert verification["outcome"] == "not_recovered", verification


async def test_prometheus_unreachable_for_the_window_is_unknown(
        beds: Callable[..., Bed]) -> None:
    bed = beds(f"http://127.0.0.1:{free_port()}", "up == 1", "1s")
    decision = bed.decide()
    await bed.until(lambda: bed.webhook.runs, within=20)
    await bed.idle()
    [verification] = bed.records("verification")
    assert verification["outcome"] == "unknown" and "Prometheus" in verification["detail"]
    assert bed.fix2.runs == []  # no repair on a guess
    [pause] = bed.records("pause")
    assert pause["incident"] == decision.incident_id
