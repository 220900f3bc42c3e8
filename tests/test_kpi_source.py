"""The KPI source against a real Prometheus: what each answer turns into, what a failing
Prometheus turns into (no event, an audited state), and its jobs following the rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from daemon.clients.http import HttpClient
from daemon.clients.prometheus import PrometheusClient
from daemon.core.events import Event
from daemon.core.rules import Rule
from daemon.sources.kpi import KpiSource
from daemon.telemetry.metrics import Metrics
from tests.conftest import KpiStack
from tests.harness import free_port


def kpi_rule(name: str, query: str, interval: str = "200ms") -> Rule:
    return Rule.model_validate({"name": name, "source": "kpi", "query": query,
                                "interval": interval, "when": "event.attributes.value > 0.5",
                                "actions": ["notify.webhook"]})


@dataclass
class Rig:
    source: KpiSource
    metrics: Metrics
    events: list[Event] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    async def until(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        deadline = time.monotonic() + within
        while not (value := predicate()):
            assert time.monotonic() < deadline, f"timed out: {self.source.status()}"
            await asyncio.sleep(0.02)
        return value

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def of(self, rule: str, action: str | None = None) -> list[Event]:
        return [e for e in self.events if e.for_rule == rule
                and (action is None or e.action == action)]


@pytest.fixture
async def rig_for() -> AsyncIterator[Callable[[str], Rig]]:
    tasks: list[asyncio.Task[None]] = []
    http = HttpClient()

    def make(url: str) -> Rig:
        metrics = Metrics(CollectorRegistry())
        events: list[Event] = []
        audit: list[dict[str, Any]] = []
        source = KpiSource(PrometheusClient(http, url, timeout=1.0), events.append, metrics,
                           lambda kind, fields: audit.append({"kind": kind, **fields}), 30.0)
        tasks.append(asyncio.create_task(source.run()))
        return Rig(source, metrics, events, audit)

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close()


async def test_each_series_is_a_sample_event_for_its_rule(kpi_stack: KpiStack,
                                                          rig_for: Callable[[str], Rig]) -> None:
    rig = rig_for(kpi_stack.url)
    two = ('label_replace(vector(0.75), "service", "a\\"b", "", "") '
           'or label_replace(vector(0.1), "service", "c", "", "")')
    rig.source.set_rules([kpi_rule("ratio", two)])
    await rig.until(lambda: len(rig.of("ratio", "sample")) >= 2)
    by_id = {e.subject.id: e for e in rig.of("ratio")[:2]}
    first = by_id['{service="a\\"b"}']
    assert first.source == "kpi" and first.kind == "series" and first.action == "sample"
    assert first.subject.name == 'ratio{service="a\\"b"}'
    assert first.attributes == {"value": 0.75, "labels": {"service": 'a"b'}}
    assert by_id['{service="c"}'].attributes["value"] == 0.1
    assert first.id != by_id['{service="c"}'].id
    status = rig.source.status()
    assert status["synced"] and status["rules"]["ratio"]["state"] == "ok"
    assert status["rules"]["ratio"]["series"] == 2
    assert rig.audit[0] == {"kind": "kpi", "rule": "ratio", "state": "ok", "error": "",
                            "previous": "pending", "series": 2}
    assert rig.metric("remedyd_kpi_query_state", rule="ratio", state="ok") == 1


async def test_empty_and_nan_are_missing_not_values(kpi_stack: KpiStack,
                                                    rig_for: Callable[[str], Rig]) -> None:
    rig = rig_for(kpi_stack.url)
    rig.source.set_rules([kpi_rule("none", 'up{job="no-such-job"}'),
                          kpi_rule("nan", "vector(0) / 0")])
    missing = await rig.until(lambda: rig.of("none", "missing"))
    assert missing[0].subject.id == "{}"
    assert missing[0].attributes == {"labels": {}, "reason": "empty"}
    nan = await rig.until(lambda: rig.of("nan", "missing"))
    assert nan[0].attributes == {"labels": {}, "reason": "nan"}
    assert not rig.of("none", "sample") and not rig.of("nan", "sample")
    await rig.until(lambda: {a["state"] for a in rig.audit} >= {"empty", "nan"})
    assert rig.source.status()["rules"]["none"]["state"] == "empty"


async def test_a_series_that_vanishes_is_missing_for_its_own_subject(
        kpi_stack: KpiStack, rig_for: Callable[[str], Rig]) -> None:
    kpi_stack.service.set("vanishing")
    query = 'sum by (service) (http_requests_total{service="vanishing"})'
    await rig_for(kpi_stack.url).until(lambda: kpi_stack.query(query), within=15)
    rig = rig_for(kpi_stack.url)
    rig.source.set_rules([kpi_rule("gone", query)])
    await rig.until(lambda: rig.of("gone", "sample"))
    kpi_stack.service.remove("vanishing")
    # Prometheus keeps a vanished series for its 5-minute lookback unless it is marked
    # stale; a scrape without it marks it stale at once.
    missing = await rig.until(lambda: rig.of("gone", "missing"), within=15)
    assert missing[0].subject.id == '{service="vanishing"}'
    assert missing[0].attributes == {"labels": {"service": "vanishing"}, "reason": "empty"}


async def test_unreachable_and_refused_queries_give_no_event_but_an_audited_state(
        rig_for: Callable[[str], Rig], kpi_stack: KpiStack) -> None:
    rig = rig_for(f"http://127.0.0.1:{free_port()}")
    bad = rig_for(kpi_stack.url)
    rig.source.set_rules([kpi_rule("down", "vector(1)")])
    bad.source.set_rules([kpi_rule("broken", "sum(rate(")])
    await rig.until(lambda: rig.metric("remedyd_kpi_queries_total", rule="down",
                                       result="unreachable") >= 3)
    await bad.until(lambda: bad.metric("remedyd_kpi_queries_total", rule="broken",
                                       result="error") >= 3)
    assert rig.events == [] and bad.events == []
    # Audited once, on the change, not on every failing poll.
    assert [a["state"] for a in rig.audit] == ["unreachable"]
    assert "Prometheus at http://127.0.0.1" in rig.audit[0]["error"]
    assert [a["state"] for a in bad.audit] == ["error"]
    assert "parse error" in bad.audit[0]["error"]
    status = rig.source.status()
    assert status["synced"] is True and status["failing"] == ["down"]
    assert status["rules"]["down"]["state"] == "unreachable"
    assert rig.metric("remedyd_kpi_query_state", rule="down", state="unreachable") == 1
    assert rig.metric("remedyd_kpi_query_state", rule="down", state="ok") == 0


async def test_jobs_follow_the_rule_set(kpi_stack: KpiStack,
                                        rig_for: Callable[[str], Rig]) -> None:
    rig = rig_for(kpi_stack.url)
    rig.source.set_rules([kpi_rule("old", "vector(1)")])
    await rig.until(lambda: rig.of("old"))
    rig.source.set_rules([kpi_rule("new", "vector(2)")])
    await rig.until(lambda: rig.of("new"))
    polled = len(rig.of("old"))
    await rig.until(lambda: len(rig.of("new")) >= 4)
    assert len(rig.of("old")) == polled
    assert list(rig.source.status()["rules"]) == ["new"]
    # A changed query applies from the next poll on.
    rig.source.set_rules([kpi_rule("new", "vector(3)")])
    await rig.until(lambda: rig.of("new")[-1].attributes["value"] == 3)


def stall(seconds: float) -> None:
    """Block the event loop, as a long synchronous step in the daemon would."""
    time.sleep(seconds)


async def test_a_slow_prometheus_is_not_asked_twice_at_once_nor_in_a_burst() -> None:
    delay, running, most = [0.5], [0], [0]
    answers: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(delay[0])
        running[0] -= 1
        answers.append(time.monotonic())
        return web.json_response({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": {}, "value": [time.time(), "1"]}]}})

    app = web.Application()
    app.router.add_post("/api/v1/query", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    http = HttpClient()
    metrics = Metrics(CollectorRegistry())
    source = KpiSource(PrometheusClient(http, f"http://127.0.0.1:{port}", timeout=5),
                       lambda event: None, metrics, lambda kind, fields: None, 30.0)
    task = asyncio.create_task(source.run())
    rig = Rig(source, metrics)
    try:
        source.set_rules([kpi_rule("slow", "vector(1)", interval="100ms")])
        await rig.until(lambda: rig.metric("remedyd_kpi_queries_total", rule="slow",
                                           result="skipped"))
        assert most[0] == 1
        # Fast answers now; then the loop stalls for 1 s, ten polls due: one follows.
        delay[0] = 0.0
        await rig.until(lambda: not running[0] and len(answers) >= 2
                        and answers[-1] - answers[-2] < 0.2)
        stall(1.0)
        resumed = time.monotonic()
        await rig.until(lambda: [a for a in answers if a > resumed])
        await rig.until(lambda: time.monotonic() - resumed > 0.3)
        # Ten polls fell due during the stall: one runs for all of them, then the schedule
        # goes on at its 100 ms ticks (which can come right after it); a burst would be ten.
        after = [a for a in answers if resumed < a <= resumed + 0.25]
        assert len(after) <= 4 and most[0] == 1, [round(a - resumed, 3) for a in after]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.close()
        await runner.cleanup()
