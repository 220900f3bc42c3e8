"""Flap detection on a fake clock: a value oscillating around its threshold makes no
repair, one notification, and decisions the `flapping` guard refuses (real Executor)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.flapping import FlappingGuard
from daemon.actions.params import NoParams
from daemon.audit import AuditLog
from daemon.core.decisions import Decision
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.enginekit import FIX, PAGE, Run, ruleset

FLAPPY = """
  - name: errors
    source: kpi
    query: job:errors:ratio
    when: event.attributes.value > 0.01
    for: 30s
    flap: {changes: 3, within: 10m}
    actions: [test.fix: {}, notify.page: {}]
"""
HIGH, LOW = 0.02, 0.005
# Every 15 s: above, below, above, below (four changes: flapping from the fourth), then
# long enough above to fire (marked), below, above long enough again, below.
OSCILLATING = [HIGH, LOW, HIGH, LOW, HIGH, HIGH, HIGH, LOW, HIGH, HIGH, HIGH, LOW]


def flapping_run(tmp_path: Path, body: str = FLAPPY) -> tuple[Run, float]:
    r = Run(Evaluator(ruleset(tmp_path, body)))
    return r, r.samples("errors", OSCILLATING)


def test_oscillating_around_the_threshold_notifies_once_and_marks_the_rest(
        tmp_path: Path) -> None:
    r, _ = flapping_run(tmp_path)
    notices = [d for d in r.decisions if not d.flapping]
    [notice] = notices
    assert [a.name for a in notice.actions] == [PAGE]  # the rule's non-mutating step
    assert notice.decided_at == 45.0  # the fourth change
    repairs = [d for d in r.decisions if d.flapping]
    assert len(repairs) == 2 and all([a.name for a in d.actions] == [FIX, PAGE]
                                     for d in repairs)
    assert r.kinds().count("flapping") == 1 and "flapping_ended" not in r.kinds()


def test_flapping_ends_when_the_changes_leave_the_window(tmp_path: Path) -> None:
    r, end = flapping_run(tmp_path)
    last_change = r.changes[-1].at
    r.samples("errors", [LOW] * 60, start=end)  # quiet for 15 minutes
    ended = [c for c in r.changes if c.change == "flapping_ended"]
    assert len(ended) == 1
    # Over once only `changes` (3) changes are left inside the 10 minute window.
    changed = [c.at for c in r.changes if c.change in ("pending", "firing", "resolved")]
    assert ended[0].at == changed[-4] + 600 and ended[0].at <= last_change + 600
    # With the window passed and the state resolved, nothing is kept for the series.
    assert r.engine.state.size().alerts == 0 and r.engine.next_due() is None
    r.samples("errors", [HIGH, HIGH, HIGH], start=end + 900)  # a real breach acts again
    assert r.decisions[-1].decided_at == end + 930 and not r.decisions[-1].flapping


def test_flap_notify_names_what_runs_when_flapping_starts(tmp_path: Path) -> None:
    body = FLAPPY.replace("flap: {changes: 3, within: 10m}",
                          "flap: {changes: 3, within: 10m, notify: [notify.webhook: {}]}")
    r, _ = flapping_run(tmp_path, body)
    [notice] = [d for d in r.decisions if not d.flapping]
    assert [a.name for a in notice.actions] == ["notify.webhook"]


def test_a_rule_that_only_changes_things_flaps_without_a_notice(tmp_path: Path) -> None:
    r, _ = flapping_run(tmp_path, FLAPPY.replace(", notify.page: {}", ""))
    assert all(d.flapping for d in r.decisions) and r.kinds().count("flapping") == 1


class Recording(Action):
    Params = NoParams

    def __init__(self, name: str, mutating: bool) -> None:
        self.name = name  # type: ignore[misc]
        self.mutating = mutating  # type: ignore[misc]
        self.ran: list[Decision] = []

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.ran.append(decision)
        return {}


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.open()
    yield log
    log.close()


async def test_the_flapping_guard_refuses_the_marked_decisions(tmp_path: Path,
                                                               audit: AuditLog) -> None:
    fix, page = Recording(FIX, mutating=True), Recording(PAGE, mutating=False)
    ex = Executor({FIX: fix, PAGE: page}, audit, Metrics(), ExecutorSettings(),
                  clock=asyncio.get_running_loop().time)
    ex.insert_guard(FlappingGuard(), before="superseded")
    r, _ = flapping_run(tmp_path)
    for decision in r.decisions:
        await ex.handle(decision)
    assert fix.ran == []  # no repair while it flaps
    assert len(page.ran) == 1 and not page.ran[0].flapping  # one notification
    decisions = [rec for rec in audit.tail(1000) if rec["kind"] == "decision"]
    suppressed = [rec for rec in decisions if rec["decision"] == "suppressed"]
    assert len(suppressed) == 2
    assert {rec["suppressed_by"] for rec in suppressed} == {"flapping"}
    assert all(rec["flapping"] for rec in suppressed)
    assert "flapping" in suppressed[0]["reason"]
    guards = [g["guard"] for g in suppressed[0]["guards"]]
    assert guards[guards.index("dry_run") + 1] == "flapping"
