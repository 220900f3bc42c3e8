"""Ladders on fake time: a repair verified, the next rung when it did not hold, the last
one ending in a notification and the rule paused on the subject until it resolves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.actions.ladder import Ladder
from daemon.actions.params import NoParams, WebhookParams
from daemon.audit import AuditLog
from daemon.core.decisions import Decision
from daemon.engine.changes import StateChange
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.telemetry.metrics import Metrics
from tests.rulekit import CATALOG, docker_event
from tests.test_executor import Step

pytestmark = pytest.mark.looptime

CID = "c1" * 32
OTHER = "c2" * 32


class Page(Step):
    Params = WebhookParams


class FakePrometheus:
    """Our own query interface (daemon.actions.verify.PromQuery), answering from a script:
    each answer is a list of samples or an exception; the last one repeats."""

    def __init__(self, *answers: list[Any] | Exception) -> None:
        self.answers = list(answers)
        self.queries: list[str] = []

    async def query(self, q: str) -> Sequence[Any]:
        self.queries.append(q)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Bed:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.tmp_path = tmp_path
        self.fix, self.fix2 = Step("test.fix"), Step("test.fix2")
        self.crash = Step("test.crash", crash=True)
        self.page, self.webhook = Step("test.page", mutating=False), Page(
            "notify.webhook", mutating=False)
        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.audit.open()
        actions = (self.fix, self.fix2, self.crash, self.page, self.webhook)
        self.executor = Executor({a.name: a for a in actions}, self.audit, Metrics(),
                                 ExecutorSettings(**settings),
                                 clock=asyncio.get_running_loop().time)
        self.ladder: Ladder | None = None
        self.evaluator: Evaluator | None = None

    def start(self, text: str, prometheus: Any = None, notify_url: str | None = None) -> Bed:
        self.ladder = Ladder(self.executor, prometheus=prometheus, notify_url=notify_url)
        self.evaluator = Evaluator(self.rules(text))
        return self

    def rules(self, text: str) -> RuleSet:
        path = self.tmp_path / "rules.yaml"
        path.write_text(text)
        names = ("test.fix", "test.fix2", "test.crash", "test.page")
        ruleset, errors = load_ruleset([path], {**CATALOG, **{n: NoParams for n in names}})
        assert not errors, errors
        return ruleset

    def event(self, action: str = "health_status: unhealthy", container: str = CID) -> Any:
        event = docker_event(action, container)
        assert self.ladder is not None
        self.ladder.observe(event)
        return event

    def decide(self, action: str = "health_status: unhealthy",
               container: str = CID) -> Decision:
        assert self.evaluator is not None
        [decision] = self.evaluator.evaluate(self.event(action, container), 0)
        self.executor.submit(decision)
        return decision

    def resolve(self, decision: Decision) -> None:
        assert self.ladder is not None
        self.ladder.on_state(StateChange(decision.rule.name, decision.event.subject,
                                         "resolved", decision.incident_id, 0.0))

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.audit.tail(10_000) if r["kind"] == kind]

    def story(self, incident: str) -> list[tuple[str, int, str]]:
        """(kind, step, decision or outcome) of each record of the incident, in order."""
        return [(r["kind"], r.get("step", 0), r.get("decision") or r.get("outcome", "")
                 if r["kind"] != "outcome" else r["outcome"])
                for r in self.audit.tail(10_000) if r.get("incident") == incident
                and r["kind"] in ("decision", "outcome", "verification", "pause")]

    async def until(self, predicate: Callable[[], Any], within: float = 600) -> None:
        """Poll on fake time, bounded."""
        for _ in range(int(within * 10)):
            if predicate():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not within {within}s (fake): {self.records('decision')[-3:]}")

    async def idle(self) -> None:
        assert self.ladder is not None
        await self.until(lambda: not self.executor.in_flight and not self.ladder._tasks)

    async def close(self) -> None:
        if self.ladder is not None:
            await self.ladder.close()
        await self.executor.drain(1)
        self.audit.close()


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    made = Bed(tmp_path)
    yield made
    await made.close()


LADDER = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status"
    cooldown: 1h
    actions:
      - test.fix: {}
        verify: {within: 30s, until: 'event.action == "start"'}
    escalate:
      - test.fix2: {}
        verify: {within: 30s}
      - test.page: {}
"""


async def test_a_recovered_verification_ends_the_ladder(bed: Bed) -> None:
    bed.start(LADDER)
    decision = bed.decide()
    await bed.until(lambda: bed.fix.runs)
    await asyncio.sleep(5)
    bed.event("start", OTHER)  # another container's start says nothing about this one
    bed.event("start")
    await bed.idle()
    [verification] = bed.records("verification")
    assert verification["outcome"] == "recovered" and verification["signal"] == "until"
    assert verification["step"] == 0 and verification["incident"] == decision.incident_id
    assert bed.fix2.runs == [] and bed.page.runs == []
    assert bed.story(decision.incident_id) == [
        ("decision", 0, "act"), ("outcome", 0, "success"), ("verification", 0, "recovered")]
    metric = bed.executor.metrics.registry.get_sample_value(
        "remedyd_verifications_total", {"rule": "heal", "outcome": "recovered"})
    assert metric == 1


async def test_not_recovered_climbs_the_ladder_then_pauses_until_resolved(bed: Bed) -> None:
    bed.start(LADDER)
    first = bed.decide()
    await bed.until(lambda: bed.page.runs)
    await bed.idle()
    assert len(bed.fix.runs) == len(bed.fix2.runs) == len(bed.page.runs) == 1
    # 30 s for the first rung to hold, 30 s for the second: then the last rung.
    assert bed.fix2.runs[0] - bed.fix.runs[0] == pytest.approx(30, abs=0.5)
    assert bed.story(first.incident_id) == [
        ("decision", 0, "act"), ("outcome", 0, "success"), ("verification", 0, "not_recovered"),
        ("decision", 1, "act"), ("outcome", 1, "success"), ("verification", 1, "not_recovered"),
        ("decision", 2, "act"), ("outcome", 2, "success"), ("pause", 0, "")]
    # The cooldown the first rung started did not hold back the later ones...
    rung = next(r for r in bed.records("decision") if r.get("step") == 1)
    assert {g["guard"]: g["verdict"] for g in rung["guards"]}["cooldown"] == "ok"

    # ...and the rule is paused on the subject: a later decision is refused, by `paused`.
    await asyncio.sleep(7200)  # past the cooldown, so only the pause can refuse it
    later = bed.decide()
    await bed.idle()
    refused = bed.records("decision")[-1]
    assert refused["incident"] == later.incident_id
    assert refused["suppressed_by"] == "paused" and first.incident_id in refused["reason"]
    assert len(bed.fix.runs) == 1

    bed.resolve(first)
    [_, unpaused] = bed.records("pause")
    assert unpaused["paused"] is False and unpaused["incident"] == first.incident_id
    again = bed.decide()
    await bed.until(lambda: len(bed.fix.runs) == 2)
    assert bed.records("decision")[-1]["incident"] == again.incident_id


async def test_a_later_rung_is_not_superseded_by_the_earlier_rungs_repair(bed: Bed) -> None:
    # Rung 0 restarted the target after the event: the event is stale for rung 1, but
    # the verification that found the repair did not hold is not.
    bed.fix2.superseded_by = "the container was started again after the event"
    bed.start(LADDER)
    bed.decide()
    await bed.until(lambda: bed.fix2.runs)
    rung = next(r for r in bed.records("decision") if r.get("step") == 1)
    assert rung["decision"] == "act"


async def test_a_later_incident_still_waits_for_a_rungs_cooldown(bed: Bed) -> None:
    bed.start(LADDER)
    first = bed.decide()
    await bed.until(lambda: bed.fix2.runs)
    bed.resolve(first)  # rung 1 held
    await bed.idle()
    # An hour after rung 0, but not after rung 1: a new incident is still cooling down.
    loop = asyncio.get_running_loop()
    await asyncio.sleep(bed.fix.runs[0] + 3610 - loop.time())
    later = bed.decide()
    await bed.idle()
    refused = bed.records("decision")[-1]
    assert refused["incident"] == later.incident_id and refused["suppressed_by"] == "cooldown"
    assert len(bed.fix.runs) == 1


async def test_each_rung_runs_at_most_once_per_incident(bed: Bed) -> None:
    bed.start(LADDER.replace("cooldown: 1h", "cooldown: 0s"))
    first = bed.decide()
    await bed.until(lambda: bed.fix.runs)
    # The same incident decided again (a repeat under the same episode) while it climbs.
    bed.executor.submit(first)
    await bed.until(lambda: bed.page.runs)
    await bed.idle()
    assert len(bed.fix.runs) == len(bed.fix2.runs) == len(bed.page.runs) == 1
    repeat = bed.records("decision")[1]
    assert repeat["incident"] == first.incident_id and repeat["suppressed_by"] == "ladder"
    steps = [r.get("step", 0) for r in bed.records("verification")]
    assert steps == [0, 1]


async def test_a_resolved_state_stops_a_pending_verification(bed: Bed) -> None:
    bed.start(LADDER.replace("within: 30s, until", "within: 1h, until"))
    decision = bed.decide()
    await bed.until(lambda: bed.fix.runs)
    await asyncio.sleep(60)
    started = asyncio.get_running_loop().time()
    bed.resolve(decision)
    await bed.idle()
    assert asyncio.get_running_loop().time() - started < 5
    [verification] = bed.records("verification")
    assert verification["outcome"] == "recovered" and "resolved" in verification["detail"]
    assert bed.fix2.runs == []


async def test_the_default_signal_is_the_rule_state_resolving(bed: Bed) -> None:
    bed.start(LADDER.replace("within: 30s, until: 'event.action == \"start\"'", "within: 30s"))
    decision = bed.decide()
    await bed.until(lambda: bed.fix.runs)
    bed.event("start")  # events are no signal without `until`
    await asyncio.sleep(10)
    bed.resolve(decision)
    await bed.idle()
    [verification] = bed.records("verification")
    assert verification["outcome"] == "recovered" and verification["signal"] == "state"
    assert bed.fix2.runs == []


QUERY = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status"
    actions:
      - test.fix: {}
        verify: {within: 30s, query: 'up{job="api"} == 1'}
    escalate:
      - test.fix2: {}
"""


async def test_a_query_recovers_once_it_returns_a_sample(bed: Bed) -> None:
    prometheus = FakePrometheus([], [], [{"metric": {"job": "api"}, "value": 1}])
    bed.start(QUERY, prometheus)
    bed.decide()
    await bed.until(lambda: bed.records("verification"))
    [verification] = bed.records("verification")
    assert verification["outcome"] == "recovered" and verification["signal"] == "query"
    assert verification["query"] == 'up{job="api"} == 1'
    assert len(prometheus.queries) == 3 and bed.fix2.runs == []


async def test_a_query_that_stays_empty_is_not_recovered(bed: Bed) -> None:
    prometheus = FakePrometheus(ConnectionError("refused"), [])
    bed.start(QUERY, prometheus)
    bed.decide()
    await bed.until(lambda: bed.fix2.runs)
    [verification] = bed.records("verification")
    assert verification["outcome"] == "not_recovered"
    assert 5 <= len(prometheus.queries) <= 31  # polled every few seconds, bounded


async def test_an_unreadable_signal_notifies_and_pauses_without_escalating(bed: Bed) -> None:
    prometheus = FakePrometheus(ConnectionError("connection refused"))
    bed.start(QUERY, prometheus, notify_url="http://127.0.0.1:9/hook")
    decision = bed.decide()
    await bed.until(lambda: bed.webhook.runs)
    await bed.idle()
    [verification] = bed.records("verification")
    assert verification["outcome"] == "unknown" and "connection refused" in (
        verification["detail"])
    assert bed.fix2.runs == []  # no repair on a guess
    [pause] = bed.records("pause")
    assert pause["paused"] is True and pause["incident"] == decision.incident_id
    notify = bed.records("decision")[-1]
    assert notify["incident"] == decision.incident_id
    assert notify["actions"][0]["name"] == "notify.webhook" and notify["step"] == 2


async def test_a_failed_rung_goes_to_the_next_one(bed: Bed) -> None:
    bed.start(LADDER.replace("- test.fix: {}", "- test.crash: {}"))
    decision = bed.decide()
    await bed.until(lambda: bed.fix2.runs)
    assert bed.records("verification") == []  # nothing ran to verify
    assert bed.records("decision")[-1]["incident"] == decision.incident_id


async def test_a_rung_refused_by_its_budget_ends_the_ladder_paused(bed: Bed) -> None:
    bed.start(LADDER.replace("cooldown: 1h", "budget: {max: 1, per: 1h}"))
    decision = bed.decide()
    await bed.until(lambda: bed.records("pause"))
    await bed.idle()
    rung = [r for r in bed.records("decision") if r.get("step") == 1]
    assert rung[0]["suppressed_by"] == "budget_target" and bed.fix2.runs == []
    # The closing notification is the rule's notify step that never ran.
    assert bed.page.runs and bed.records("decision")[-1]["step"] == 3
    [pause] = bed.records("pause")
    assert pause["incident"] == decision.incident_id and "budget_target" in pause["reason"]


class Recovered(BaseGuard):
    """As the KPI re-check just before acting answers when the series recovered."""

    name = "recheck"

    async def check(self, ctx: GuardContext) -> GuardResult:
        if ctx.decision.step == 0:
            return self.ok()
        return self.refuse("recovered before acting: the error ratio is now 0")


async def test_a_rung_not_needed_any_more_ends_the_ladder_unpaused(bed: Bed) -> None:
    bed.executor.insert_guard(Recovered())
    bed.start(LADDER)
    bed.decide()
    await bed.until(lambda: len(bed.records("decision")) == 2)
    await bed.idle()
    assert bed.records("decision")[-1]["suppressed_by"] == "recheck"
    assert bed.records("pause") == [] and bed.page.runs == []


async def test_shutdown_cancels_pending_verifications_cleanly(bed: Bed) -> None:
    bed.start(LADDER.replace("within: 30s, until", "within: 1h, until"))
    bed.decide()
    await bed.until(lambda: bed.fix.runs)
    await asyncio.sleep(1)
    assert bed.ladder is not None
    await asyncio.wait_for(bed.ladder.close(), 1)
    [verification] = bed.records("verification")
    assert verification["outcome"] == "unknown" and "cancelled" in verification["detail"]
    assert bed.fix2.runs == [] and not bed.ladder._tasks
