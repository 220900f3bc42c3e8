"""The PromQL gates (`unless:`, the re-check of a KPI breach) against a real Prometheus,
and a KPI decision aimed at the object its rule's `target:` names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.actions.gates import RecheckGuard, UnlessGuard
from daemon.actions.guards import GuardContext, GuardResult
from daemon.actions.notify import Webhook
from daemon.clients.http import HttpClient
from daemon.clients.prometheus import PrometheusClient
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.core.rules import Rule
from daemon.engine.kpi import sample_event
from daemon.engine.targets import aim
from tests.conftest import KpiStack
from tests.harness import free_port


class Restart(Webhook):
    """A changing action, as far as the gates can tell (they only ask `mutating`)."""

    name = "docker.restart"
    mutating = True


def rule(**extra: Any) -> Rule:
    spec = {"name": "errors", "source": "kpi", "when": "event.attributes.value > 0.5",
            "query": 'label_replace(vector(0.9), "service", "api", "", "")',
            "actions": ["docker.restart"], **extra}
    return Rule.model_validate(spec)


def decision_on(rule: Rule, labels: dict[str, str] | None = None,
                value: float = 0.9) -> Decision:
    event = sample_event(rule.name, labels if labels is not None else {"service": "api"},
                         value, 1.0, 1.0)
    return Decision("i1", rule, event, event.subject, tuple(rule.actions), 1.0)


async def judge(guard: UnlessGuard | RecheckGuard, decision: Decision) -> GuardResult:
    actions = {"docker.restart": Restart(HttpClient(), None)}
    return await guard.check(GuardContext(decision, 0.0, actions, decision.actions))


@pytest.fixture
async def prometheus(kpi_stack: KpiStack) -> AsyncIterator[PrometheusClient]:
    async with HttpClient() as http:
        yield PrometheusClient(http, kpi_stack.url, timeout=2)


async def test_unless_refuses_while_a_query_answers_and_names_it(
        prometheus: PrometheusClient) -> None:
    guard = UnlessGuard(prometheus)
    blocked = rule(unless=["vector(1) == 2",
                           'label_replace(vector(1), "alertname", "Maintenance", "", "")'])
    result = await judge(guard, decision_on(blocked))
    assert result.verdict == "refuse"
    assert "Maintenance" in result.reason and '{alertname="Maintenance"} = 1' in result.reason
    assert (await judge(guard, decision_on(rule(unless=["vector(1) == 2"])))).verdict == "ok"


async def test_the_gates_fail_closed_when_prometheus_is_unreachable() -> None:
    async with HttpClient() as http:
        down = PrometheusClient(http, f"http://127.0.0.1:{free_port()}")
        unless = await judge(UnlessGuard(down), decision_on(rule(unless=["vector(1)"])))
        recheck = await judge(RecheckGuard(down), decision_on(rule()))
    for result in (unless, recheck):
        assert result.verdict == "refuse"
        assert "Prometheus unreachable, refusing to act (fail closed)" in result.reason


async def test_recheck_acts_on_a_breach_that_still_holds(prometheus: PrometheusClient) -> None:
    result = await judge(RecheckGuard(prometheus), decision_on(rule()))
    assert result.verdict == "ok" and "still breaching" in result.reason


async def test_recheck_leaves_a_recovered_series_alone(prometheus: PrometheusClient) -> None:
    recovered = rule(query='label_replace(vector(0.1), "service", "api", "", "")')
    result = await judge(RecheckGuard(prometheus), decision_on(recovered))
    assert result.verdict == "refuse"
    assert result.reason.startswith("recovered before acting")
    # Gone from the answer: left alone too.
    gone = await judge(RecheckGuard(prometheus), decision_on(rule(), {"service": "other"}))
    assert gone.verdict == "refuse" and "missing" in gone.reason
    # With hysteresis the breach lasts until clear_when holds.
    sticky = rule(query='label_replace(vector(0.4), "service", "api", "", "")',
                  clear_when="event.attributes.value < 0.2")
    assert (await judge(RecheckGuard(prometheus), decision_on(sticky))).verdict == "ok"


def test_a_target_renders_from_the_series_labels() -> None:
    target = rule(target={"kind": "kubernetes/deployment", "name": "{{ $labels.deployment }}",
                          "namespace": "{{ $labels.namespace }}"}).target
    assert target is not None
    event = sample_event("r", {"deployment": "api", "namespace": "shop"}, 1.0, 1.0, 1.0)
    assert aim(target, event) == Ref("kubernetes", "deployment", "api", namespace="shop")
    unnamed = sample_event("r", {"deployment": "api"}, 1.0, 1.0, 1.0)
    missing = aim(target, unnamed)
    assert isinstance(missing, str) and "no label namespace" in missing


def test_an_event_without_labels_has_no_target() -> None:
    target = rule(target={"kind": "docker/container", "name": "{{ $labels.container }}"}).target
    assert target is not None
    event = Event("kpi", "series", "missing", Ref("kpi", "series", "r{}", "{}"), "x", 1.0, 1.0)
    assert "no label container" in str(aim(target, event))
