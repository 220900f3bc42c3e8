"""The executor's contract, on fake time: guards in order, one outcome per intent, budgets
that only changes spend, coalesced bursts, notifications that never hold a repair."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.actions.params import NoParams
from daemon.audit import AuditLog, verify
from daemon.core.decisions import Decision
from daemon.core.errors import TemporaryError
from daemon.core.events import Ref
from daemon.engine.budgets import GuardBook
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.telemetry.metrics import Metrics
from tests.rulekit import CATALOG, docker_event

pytestmark = pytest.mark.looptime


class Step(Action):
    """A test action: records when it ran; may stall, raise, or report a superseded state."""

    Params = NoParams

    def __init__(self, name: str, *, mutating: bool = True, stall: float = 0.0,
                 crash: bool = False, superseded_by: str | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.mutating = mutating  # type: ignore[misc]
        self.stall = stall
        self.crash = crash
        self.superseded_by = superseded_by
        self.runs: list[float] = []
        self.observed: list[Ref] = []

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        self.observed.append(target)
        return {"state": "now"}

    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        return self.superseded_by

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.runs.append(asyncio.get_running_loop().time())
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.crash:
            raise RuntimeError("a bug in the action")
        return {}


_logs: list[AuditLog] = []


@pytest.fixture(autouse=True)
def _close_logs() -> Any:
    yield
    while _logs:
        _logs.pop().close()


def executor(tmp_path: Path, *actions: Action, **settings: Any) -> Executor:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.open()
    _logs.append(audit)
    return Executor({a.name: a for a in actions}, audit, Metrics(), ExecutorSettings(**settings),
                    clock=asyncio.get_running_loop().time)


def rules(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    names = ("test.fix", "test.page", "test.crash", "test.slow-page")
    ruleset, errors = load_ruleset([path], {**CATALOG, **{n: NoParams for n in names}})
    assert not errors, errors
    return ruleset


def decide(ruleset: RuleSet, action: str = "health_status: unhealthy",
           container: str = "c1" * 32) -> list[Decision]:
    return Evaluator(ruleset).evaluate(docker_event(action, container), 0)


def records(ex: Executor, kind: str) -> list[dict[str, Any]]:
    return [r for r in ex.audit.tail(10_000) if r["kind"] == kind]


HEAL = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status"
    actions: [test.fix: {}]
"""


async def test_guards_are_recorded_in_order_with_their_verdicts(tmp_path: Path) -> None:
    ex = executor(tmp_path, Step("test.fix"))
    [decision] = decide(rules(tmp_path, HEAL))
    await ex.handle(decision)
    [record] = records(ex, "decision")
    assert [g["guard"] for g in record["guards"]] == [
        "audit", "target", "dry_run", "superseded", "cooldown", "budget", "notify_rate",
        "preflight"]
    assert {g["verdict"] for g in record["guards"]} == {"ok"}


async def test_a_superseded_target_is_refused_and_audited(tmp_path: Path) -> None:
    fix = Step("test.fix", superseded_by="the container was started again after the event")
    ex = executor(tmp_path, fix)
    [decision] = decide(rules(tmp_path, HEAL))
    await ex.handle(decision)
    assert fix.runs == []
    [record] = records(ex, "decision")
    assert record["decision"] == "suppressed" and record["suppressed_by"] == "superseded"
    assert "started again" in record["reason"]
    # A refused decision is closed in itself; it owes no outcome record.
    assert records(ex, "outcome") == []


async def test_the_target_is_observed_once_per_decision(tmp_path: Path) -> None:
    fix = Step("test.fix")
    ex = executor(tmp_path, fix)
    [decision] = decide(rules(tmp_path, HEAL))
    await ex.handle(decision)
    assert len(fix.observed) == 1  # superseded and preflight share the observation


NOTIFY_AND_HEAL = """
rules:
  - name: page-oom
    source: docker
    when: event.action == "oom"
    actions: [test.page: {}]
  - name: heal
    source: docker
    when: event.action == "health_status"
    actions: [test.fix: {}]
"""


async def test_notifications_do_not_spend_the_action_budget(tmp_path: Path) -> None:
    page, fix = Step("test.page", mutating=False), Step("test.fix")
    ex = executor(tmp_path, page, fix, global_max=30, global_per=3600, notify_max=None)
    ruleset = rules(tmp_path, NOTIFY_AND_HEAL)
    # 30 OOMs in an hour, each on another container: 30 notifications.
    for n in range(30):
        for decision in decide(ruleset, "oom", f"{n:064d}"):
            await ex.handle(decision)
        await asyncio.sleep(60)
    assert len(page.runs) == 30
    [decision] = decide(ruleset, "health_status: unhealthy")
    await ex.handle(decision)
    assert len(fix.runs) == 1, records(ex, "decision")[-1]


async def test_notifications_have_their_own_rate_limit(tmp_path: Path) -> None:
    page = Step("test.page", mutating=False)
    ex = executor(tmp_path, page, notify_max=5, notify_per=3600)
    ruleset = rules(tmp_path, NOTIFY_AND_HEAL)
    for n in range(8):
        for decision in decide(ruleset, "oom", f"{n:064d}"):
            await ex.handle(decision)
    assert len(page.runs) == 5
    refused = [r for r in records(ex, "decision") if r["decision"] == "suppressed"]
    assert {r["suppressed_by"] for r in refused} == {"notify_rate"} and len(refused) == 3


async def test_an_unexpected_exception_still_closes_the_decision(tmp_path: Path) -> None:
    ex = executor(tmp_path, Step("test.crash", crash=True))
    [decision] = decide(rules(tmp_path, HEAL.replace("test.fix", "test.crash")))
    await ex.handle(decision)
    [intent] = records(ex, "decision")
    [outcome] = records(ex, "outcome")
    assert outcome["incident"] == intent["incident"]
    assert outcome["outcome"] == "error" and "RuntimeError: a bug in the action" in (
        outcome["error"])
    assert verify(ex.audit.path).ok


async def test_every_intent_gets_exactly_one_outcome_even_when_cancelled(tmp_path: Path) -> None:
    fix = Step("test.fix", stall=3600)
    ex = executor(tmp_path, fix, action_timeout=7200)
    [decision] = decide(rules(tmp_path, HEAL))
    task = ex.submit(decision)
    assert task is not None
    await asyncio.sleep(10)
    assert await ex.drain(grace=5) == 1
    [outcome] = records(ex, "outcome")
    assert outcome["outcome"] == "cancelled"


BURST = """
rules:
  - name: page-oom
    source: docker
    when: event.action == "oom"
    actions: [test.page: {}]
"""


class NotYet(BaseGuard):
    """Refuses "for now" (as `leader` does on a follower) until told otherwise."""

    name = "not_yet"
    transient = True

    def __init__(self) -> None:
        self.open = False

    async def check(self, ctx: GuardContext) -> GuardResult:
        return self.ok() if self.open else self.refuse("not the leader")


async def test_a_repeat_after_a_for_now_refusal_is_judged_again_not_coalesced(
        tmp_path: Path) -> None:
    fix = Step("test.fix")
    ex = executor(tmp_path, fix, coalesce_window=5.0)
    gate = NotYet()
    ex.insert_guard(gate, before="dry_run")
    ruleset = rules(tmp_path, HEAL)
    [first] = decide(ruleset)
    await asyncio.gather(*filter(None, [ex.submit(first)]))
    gate.open = True  # the follower took over, a second later
    await asyncio.sleep(1)
    [again] = decide(ruleset)
    await asyncio.gather(*filter(None, [ex.submit(again)]))
    assert len(fix.runs) == 1
    assert [r["decision"] for r in records(ex, "decision")] == ["suppressed", "act"]


async def test_a_burst_of_one_incident_is_one_decision(tmp_path: Path) -> None:
    page = Step("test.page", mutating=False)
    ex = executor(tmp_path, page, coalesce_window=5.0)
    ruleset = rules(tmp_path, BURST)
    # cgroup v1 reports one OOM as a burst of events.
    for _ in range(20):
        for decision in decide(ruleset, "oom"):
            ex.submit(decision)
        await asyncio.sleep(0.05)
    await asyncio.sleep(6)
    assert len(page.runs) == 1
    assert len(records(ex, "decision")) == 1
    [coalesced] = records(ex, "coalesced")
    assert coalesced["count"] == 19
    assert coalesced["incident"] == records(ex, "decision")[0]["incident"]
    assert ex.metrics.registry.get_sample_value(
        "remedyd_decisions_coalesced_total", {"rule": "page-oom"}) == 19
    # After the window a new occurrence is a new incident.
    for decision in decide(ruleset, "oom"):
        ex.submit(decision)
    await asyncio.sleep(1)
    assert len(page.runs) == 2


SLOW_NOTIFY = """
rules:
  - name: page-oom
    source: docker
    when: event.action == "oom"
    actions: [test.slow-page: {}]
  - name: heal
    source: docker
    when: event.action == "health_status"
    actions: [test.fix: {}]
"""


async def test_a_slow_notification_does_not_hold_the_next_repair(tmp_path: Path) -> None:
    slow, fix = Step("test.slow-page", mutating=False, stall=50), Step("test.fix")
    ex = executor(tmp_path, slow, fix, action_timeout=60)
    ruleset = rules(tmp_path, SLOW_NOTIFY)
    loop = asyncio.get_running_loop()
    start = loop.time()
    [notify] = decide(ruleset, "oom")
    ex.submit(notify)
    await asyncio.sleep(1)
    [heal] = decide(ruleset, "health_status: unhealthy")
    ex.submit(heal)
    await asyncio.sleep(2)
    assert [t - start for t in fix.runs] == [pytest.approx(1)]
    await asyncio.sleep(60)
    assert len(records(ex, "outcome")) == 2


async def test_interrupted_intents_are_closed_with_the_targets_state(tmp_path: Path) -> None:
    fix = Step("test.fix", stall=3600)
    first = executor(tmp_path, fix, action_timeout=7200)
    [decision] = decide(rules(tmp_path, HEAL))
    # What a SIGKILL leaves: the intent on disk, no outcome.
    first.audit.append("decision", {**decision.summary(), "decision": "act"})
    first.audit.close()

    from daemon.audit import open_intents

    second = executor(tmp_path, fix)
    intents = open_intents(second.audit)
    assert [i["incident"] for i in intents] == [decision.incident_id]
    assert await second.close_interrupted(intents) == 1
    [outcome] = records(second, "outcome")
    assert outcome["incident"] == decision.incident_id
    assert outcome["outcome"] == "interrupted"
    assert outcome["state"] == {"exists": True}
    assert open_intents(second.audit) == []


def test_a_reloaded_budget_window_applies_from_the_reload_on() -> None:
    book = GuardBook(None, 3600)
    for t in (0.0, 10.0):
        book.spend("heal", "c1", t, (2, 3600.0), None)
    assert book.exhausted("heal", "c1", 120.0, (2, 3600.0), None) == "budget_target"
    # The operator shortens `per` to 1m and reloads: the old window no longer holds.
    assert book.exhausted("heal", "c1", 120.0, (2, 60.0), None) is None
    # ...and lengthening it again still sees the actions the short window skipped over.
    assert book.exhausted("heal", "c1", 130.0, (2, 3600.0), None) == "budget_target"


async def test_restore_does_not_count_notifications_against_budgets(tmp_path: Path) -> None:
    page, fix = Step("test.page", mutating=False), Step("test.fix")
    first = executor(tmp_path, page, fix, global_max=2, notify_max=None)
    ruleset = rules(tmp_path, NOTIFY_AND_HEAL)
    for n in range(5):
        for decision in decide(ruleset, "oom", f"{n:064d}"):
            await first.handle(decision)
    first.audit.close()
    second = executor(tmp_path, page, fix, global_max=2, notify_max=None)
    restored = second.restore(second.audit.tail(1000),
                              lambda name: c.rule if (c := ruleset.by_name(name)) else None,
                              time.time())
    assert restored == 5
    [decision] = decide(ruleset, "health_status: unhealthy")
    await second.handle(decision)
    assert len(fix.runs) == 1


def test_guard_state_of_targets_no_window_sees_is_forgotten() -> None:
    book = GuardBook(None, 3600)
    for n in range(10_000):  # a week of pods that came and went, each acted on once
        book.mark_acted("heal", f"pod-{n}", float(n))
        book.spend("heal", f"pod-{n}", float(n), (3, 3600.0), None)
    assert book.size() == 20_000
    book.sweep(now=10_000.0 + 3600, longest=3600)
    assert book.size() == 0
    # Still-open windows survive the sweep.
    book.mark_acted("heal", "pod-live", 20_000.0)
    book.sweep(now=20_010.0, longest=3600)
    assert book.cooldown_left("heal", "pod-live", 120, 20_010.0) == 110


class Blocked(Step):
    """Refused every time for a reason the peer names (a PodDisruptionBudget), to be asked
    again at the peer's steady pace."""

    def attempts(self, params: BaseModel) -> int | None:
        return 1000

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.runs.append(asyncio.get_running_loop().time())
        raise TemporaryError(f"still blocked (attempt {len(self.runs)})", 5.0, backoff=False)


async def test_a_steady_retry_keeps_its_pace_and_the_timeout_says_what_blocked_it(
        tmp_path: Path) -> None:
    blocked = Blocked("test.fix")
    ex = executor(tmp_path, blocked, action_timeout=32, retry_delay=1.0)
    [decision] = decide(rules(tmp_path, HEAL))
    start = asyncio.get_running_loop().time()
    await ex.handle(decision)
    # Every 5 s, not 5, 5, 5, 8, 16 as a doubling backoff would have it.
    assert [round(t - start) for t in blocked.runs] == [0, 5, 10, 15, 20, 25, 30]
    [outcome] = records(ex, "outcome")
    assert outcome["outcome"] == "timeout"
    assert outcome["error"] == "gave up after 32s: still blocked (attempt 7) (after 7 attempt(s))"


async def test_a_for_now_refusal_is_handed_back_to_be_decided_again(tmp_path: Path) -> None:
    ex = executor(tmp_path, Step("test.fix"))
    gate = NotYet()
    ex.insert_guard(gate, before="dry_run")
    handed_back: list[str] = []
    ex.on_refused_for_now.append(lambda decision: handed_back.append(decision.incident_id))
    ruleset = rules(tmp_path, HEAL)
    [refused] = decide(ruleset)
    await asyncio.gather(*filter(None, [ex.submit(refused)]))
    assert handed_back == [refused.incident_id]
    # A refusal that is a "no" (dry-run here), not a "not yet", is not handed back.
    gate.open = True
    ex.settings = dataclasses.replace(ex.settings, dry_run=True)
    [dry] = decide(ruleset)
    await asyncio.gather(*filter(None, [ex.resubmit(dry)]))
    assert handed_back == [refused.incident_id]
    assert [r.get("suppressed_by") for r in records(ex, "decision")] == ["not_yet", "dry_run"]
