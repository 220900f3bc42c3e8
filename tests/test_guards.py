"""Guards over hours of fake time (looptime): cooldowns, budgets, escalation, retries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.params import NoParams
from daemon.audit import AuditLog, verify
from daemon.core.decisions import Decision
from daemon.core.errors import TemporaryError
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.telemetry.metrics import Metrics
from tests.rulekit import CATALOG, docker_event

pytestmark = pytest.mark.looptime


class Recorder(Action):
    """An action that records when it ran and fails or stalls as told."""

    Params = NoParams

    def __init__(self, name: str, failures: int = 0, stall: float = 0.0) -> None:
        self.name = name  # type: ignore[misc]
        self.failures = failures
        self.stall = stall
        self.runs: list[float] = []

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.runs.append(asyncio.get_running_loop().time())
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.failures:
            self.failures -= 1
            raise TemporaryError("engine busy")
        return {}


def load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    ruleset, errors = load_ruleset(
        [path], {**CATALOG, "test.fix": NoParams, "test.page": NoParams})
    assert not errors, errors
    return ruleset


_open_logs: list[AuditLog] = []


@pytest.fixture(autouse=True)
def _close_audit_logs() -> Any:
    yield
    while _open_logs:
        _open_logs.pop().close()


def executor(tmp_path: Path, *actions: Action, audit_path: Path | None = None,
             **settings: Any) -> Executor:
    audit = AuditLog(audit_path or tmp_path / "audit.jsonl")
    audit.open()
    _open_logs.append(audit)
    return Executor({a.name: a for a in actions}, audit, Metrics(),
                    ExecutorSettings(**settings), clock=asyncio.get_running_loop().time)


RULE = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    cooldown: 2m
    budget: {max: 3, per: 1h, then: [test.page: {}]}
    actions: [test.fix: {}]
"""


async def test_cooldown_budget_and_one_escalation_per_window(tmp_path: Path) -> None:
    fix, page = Recorder("test.fix"), Recorder("test.page")
    ex = executor(tmp_path, fix, page, global_max=None)
    engine = Evaluator(load(tmp_path, RULE))
    loop = asyncio.get_running_loop()
    start = loop.time()
    # A container that turns unhealthy every minute for three hours.
    for _ in range(180):
        for decision in engine.evaluate(docker_event("health_status: unhealthy"), loop.time()):
            await ex.handle(decision)
        await asyncio.sleep(60)

    first_hour = [t - start for t in fix.runs if t - start < 3600]
    assert first_hour == [0, 120, 240]
    assert all(b - a >= 120 for a, b in zip(fix.runs, fix.runs[1:], strict=False))
    # Never more than three restarts in any one-hour window.
    assert all(sum(1 for u in fix.runs if t <= u < t + 3600) <= 3 for t in fix.runs)
    # One page per exhausted window, not one per refused decision.
    assert len(page.runs) == 3
    assert len(fix.runs) == 9

    records = ex.audit.tail(1000)
    suppressed = {r.get("suppressed_by") for r in records if r.get("decision") == "suppressed"}
    assert suppressed == {"cooldown", "budget_target"}
    assert verify(ex.audit.path).ok


async def test_global_budget_caps_all_rules(tmp_path: Path) -> None:
    fix = Recorder("test.fix")
    ex = executor(tmp_path, fix, global_max=2, global_per=600)
    engine = Evaluator(load(tmp_path, RULE.replace("cooldown: 2m", "cooldown: 0s")))
    loop = asyncio.get_running_loop()
    for container in ("a", "b", "c"):
        event = docker_event("health_status: unhealthy", container * 64)
        for decision in engine.evaluate(event, loop.time()):
            await ex.handle(decision)
    assert len(fix.runs) == 2
    assert ex.audit.tail(1)[0]["suppressed_by"] == "budget_global"
    await asyncio.sleep(601)
    for decision in engine.evaluate(docker_event("health_status: unhealthy", "c" * 64),
                                    loop.time()):
        await ex.handle(decision)
    assert len(fix.runs) == 3


async def test_temporary_failures_are_retried_with_growing_delays(tmp_path: Path) -> None:
    fix = Recorder("test.fix", failures=2)
    ex = executor(tmp_path, fix, retry_delay=1.0, max_attempts=3)
    [decision] = Evaluator(load(tmp_path, RULE)).evaluate(
        docker_event("health_status: unhealthy"), 0)
    await ex.handle(decision)
    gaps = [b - a for a, b in zip(fix.runs, fix.runs[1:], strict=False)]
    assert gaps == [1.0, 2.0]
    outcome = ex.audit.tail(1)[0]
    assert outcome["outcome"] == "success" and outcome["steps"][0]["attempts"] == 3


async def test_a_stalled_action_times_out(tmp_path: Path) -> None:
    fix = Recorder("test.fix", stall=10_000)
    ex = executor(tmp_path, fix, action_timeout=60)
    loop = asyncio.get_running_loop()
    start = loop.time()
    [decision] = Evaluator(load(tmp_path, RULE)).evaluate(
        docker_event("health_status: unhealthy"), start)
    await ex.handle(decision)
    assert loop.time() - start == pytest.approx(60)
    assert ex.audit.tail(1)[0]["outcome"] == "timeout"


async def test_unwritable_audit_log_refuses_to_act(tmp_path: Path) -> None:
    fix = Recorder("test.fix")
    ex = executor(tmp_path, fix, audit_path=Path("/dev/full"))
    engine = Evaluator(load(tmp_path, RULE))
    for container in ("a", "b"):
        for decision in engine.evaluate(docker_event("health_status: unhealthy", container * 64),
                                        0):
            await ex.handle(decision)
    assert fix.runs == []
    assert not ex.audit.healthy
    assert "No space left on device" in (ex.audit.last_error or "")
    metric = ex.metrics.registry.get_sample_value("remedyd_decisions_suppressed_total",
                                                  {"rule": "heal", "guard": "audit"})
    assert metric == 2


async def test_docker_source_backs_off_while_the_engine_is_unreachable(tmp_path: Path) -> None:
    from daemon.aio import Backoff
    from daemon.clients.docker import DockerClient
    from daemon.sources.docker import DockerSource

    metrics = Metrics()
    client = DockerClient(f"unix://{tmp_path}/absent.sock")
    source = DockerSource(client, lambda event: None, metrics,
                          backoff=Backoff(0.5, 30.0, rng=lambda: 1.0))
    task = asyncio.create_task(source.run())
    await asyncio.sleep(120)
    # Attempts at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 61.5, 91.5: doubling, capped at 30 s.
    assert metrics.registry.get_sample_value(
        "remedyd_source_reconnects_total", {"source": "docker"}) == 9
    assert not source.synced
    assert "absent.sock" in (source.last_error or "")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.close()


async def test_a_restarted_daemon_keeps_spent_budgets_from_its_audit_log(tmp_path: Path) -> None:
    import time

    rules = load(tmp_path, RULE.replace("cooldown: 2m", "cooldown: 0s"))
    fix = Recorder("test.fix")
    first = executor(tmp_path, fix, global_max=None)
    engine = Evaluator(rules)
    for _ in range(3):
        for decision in engine.evaluate(docker_event("health_status: unhealthy"), 0):
            await first.handle(decision)
    first.audit.close()
    assert len(fix.runs) == 3

    # A new process: fresh memory, same audit log.
    page = Recorder("test.page")
    second = executor(tmp_path, fix, page, global_max=None)
    restored = second.restore(second.audit.tail(1000),
                              lambda name: c.rule if (c := rules.by_name(name)) else None,
                              time.time())
    assert restored == 3
    for decision in engine.evaluate(docker_event("health_status: unhealthy"), 0):
        await second.handle(decision)
    assert len(fix.runs) == 3
    assert len(page.runs) == 1


async def test_per_rule_dry_run_and_per_rule_budget(tmp_path: Path) -> None:
    fix = Recorder("test.fix")
    ex = executor(tmp_path, fix, global_max=None)
    text = RULE.replace("cooldown: 2m", "cooldown: 0s").replace(
        "budget: {max: 3, per: 1h, then: [test.page: {}]}",
        "budget: {max: 3, per: 1h, rule_max: 2}")
    dry = text.replace("name: heal", "name: heal-dry") + "    dry_run: true\n"
    engine = Evaluator(load(tmp_path, text))
    loop = asyncio.get_running_loop()
    for container in ("a", "b", "c"):
        for decision in engine.evaluate(docker_event("health_status: unhealthy", container * 64),
                                        loop.time()):
            await ex.handle(decision)
    assert len(fix.runs) == 2
    assert ex.audit.tail(1)[0]["suppressed_by"] == "budget_rule"

    engine = Evaluator(load(tmp_path, dry))
    for decision in engine.evaluate(docker_event("health_status: unhealthy", "d" * 64),
                                    loop.time()):
        await ex.handle(decision)
    assert len(fix.runs) == 2
    last = ex.audit.tail(1)[0]
    assert last["suppressed_by"] == "dry_run" and "for this rule" in last["reason"]
