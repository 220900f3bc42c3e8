"""Guards, then intent, then the action, then its outcome: every step in the audit log.

An action runs only when every guard agrees. A refused decision is audited with
the guard that refused it. Intent is written before an action runs, so a crash
mid-action still leaves a record of what was attempted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from daemon.actions.base import Action, Refusal
from daemon.audit.log import AuditLog, AuditUnavailable, record_time
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError, PermanentError, TemporaryError
from daemon.core.events import Ref
from daemon.core.rules import ActionSpec, Rule
from daemon.engine.budgets import GuardBook
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.executor")


@dataclass(frozen=True)
class ExecutorSettings:
    dry_run: bool = False
    action_timeout: float = 60.0
    max_attempts: int = 3
    retry_delay: float = 1.0
    global_max: int | None = None
    global_per: float = 3600.0


@dataclass
class _Verdict:
    status: str  # act | suppressed | escalate
    guards: dict[str, str] = field(default_factory=dict)
    refused_by: str | None = None
    reason: str | None = None
    actions: tuple[ActionSpec, ...] = ()


class Executor:
    def __init__(self, actions: Mapping[str, Action], audit: AuditLog, metrics: Metrics,
                 settings: ExecutorSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.actions = dict(actions)
        self.audit = audit
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.guards = GuardBook(settings.global_max, settings.global_per)
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.accepting = True

    def submit(self, decision: Decision) -> asyncio.Task[None] | None:
        """Handle a decision in the background, one at a time per target."""
        if not self.accepting:
            return None
        task = asyncio.create_task(self._serialised(decision),
                                   name=f"incident-{decision.incident_id}")
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    async def _serialised(self, decision: Decision) -> None:
        key = decision.target.key
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                await self.handle(decision)
        except Exception:
            log.exception("incident %s (rule %s) failed unexpectedly", decision.incident_id,
                          decision.rule.name)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                self._locks.pop(key, None)

    async def handle(self, decision: Decision) -> None:
        rule = decision.rule
        self.metrics.rule_matches.labels(rule.name).inc()
        verdict = await self._judge(decision)
        if verdict.refused_by == "audit":
            # Fail closed: no action without a record of it, and no record can be written.
            self.metrics.suppressed.labels(rule.name, "audit").inc()
            log.error("refusing to act on %s for rule %s: %s", decision.target.name, rule.name,
                      verdict.reason)
            return
        record = {
            **decision.summary(),
            "event": decision.event.summary(),
            "decision": verdict.status,
            "guards": verdict.guards,
            "dry_run": self.settings.dry_run or rule.dry_run,
        }
        if verdict.refused_by:
            record["suppressed_by"] = verdict.refused_by
            record["reason"] = verdict.reason
        if verdict.status == "escalate":
            record["actions"] = [{"name": a.name, "params": a.params} for a in verdict.actions]
        try:
            self.audit.append("decision", record)
        except AuditUnavailable as exc:
            self._audit_failed(exc, decision)
            return
        finally:
            self.metrics.audit_healthy.set(int(self.audit.healthy))
        if verdict.status == "suppressed":
            self.metrics.suppressed.labels(rule.name, verdict.refused_by or "unknown").inc()
            log.info("rule %s on %s suppressed by %s: %s", rule.name, decision.target.name,
                     verdict.refused_by, verdict.reason)
            return
        if verdict.status == "escalate":
            self.metrics.escalations.labels(rule.name).inc()
            log.warning("rule %s on %s: budget exhausted, escalating", rule.name,
                        decision.target.name)
        budget = _rule_budgets(decision.rule)
        if verdict.status == "act":
            self.guards.spend(rule.name, decision.target.key, self.clock(), *budget)
        for spec in verdict.actions:
            ok = await self._run_one(decision, spec)
            if not ok:
                break

    async def _judge(self, decision: Decision) -> _Verdict:
        rule, target, now = decision.rule, decision.target.key, self.clock()
        verdict = _Verdict(status="act", actions=decision.actions)

        def refuse(guard: str, reason: str) -> _Verdict:
            verdict.guards[guard] = reason
            verdict.status, verdict.refused_by, verdict.reason = "suppressed", guard, reason
            return verdict

        if not self.audit.healthy:
            return refuse("audit", f"audit log unwritable: {self.audit.last_error}")
        verdict.guards["audit"] = "ok"
        if self.settings.dry_run or rule.dry_run:
            where = "globally" if self.settings.dry_run else "for this rule"
            return refuse("dry_run", f"dry-run is on {where}")
        verdict.guards["dry_run"] = "ok"
        left = self.guards.cooldown_left(rule.name, target, rule.cooldown, now)
        if left > 0:
            return refuse("cooldown", f"acted on this target {rule.cooldown - left:.1f}s ago; "
                          f"cooldown {rule.cooldown:g}s")
        verdict.guards["cooldown"] = "ok"
        exhausted = self.guards.exhausted(rule.name, target, now, *_rule_budgets(decision.rule))
        if exhausted is not None:
            reason = _budget_reason(decision, exhausted, self.settings)
            if rule.budget and rule.budget.then and exhausted != "budget_global" and (
                self.guards.escalate_once(rule.name, target, rule.budget.per, now)
            ):
                verdict.guards[exhausted] = reason
                verdict.status, verdict.actions = "escalate", tuple(rule.budget.then)
                verdict.reason = reason
            else:
                return refuse(exhausted, reason)
        else:
            verdict.guards["budget"] = "ok"
        for spec in verdict.actions:
            action = self.actions.get(spec.name)
            if action is None:
                return refuse("unavailable", f"{spec.name}: its source is not enabled here")
            try:
                refusal = await action.preflight(decision, action.parse(spec.params))
            except ActionError as exc:
                refusal = Refusal("preflight", str(exc))
            if refusal is not None:
                return refuse(refusal.guard, f"{spec.name}: {refusal.reason}")
        verdict.guards["preflight"] = "ok"
        return verdict

    async def _run_one(self, decision: Decision, spec: ActionSpec) -> bool:
        action = self.actions[spec.name]
        params = action.parse(spec.params)
        started = self.clock()
        outcome: dict[str, Any] = {"incident": decision.incident_id, "rule": decision.rule.name,
                                   "action": spec.name, "target": decision.target.as_dict()}
        attempts = 0
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                details, attempts = await self._attempts(action, decision, params)
            outcome.update(outcome="success", details=details, attempts=attempts)
            verified = await action.verify(decision, params, details)
            if verified is not None:
                outcome["verified"] = bool(verified)
        except asyncio.CancelledError:
            outcome.update(outcome="cancelled", error="daemon shutting down")
            self._finish(outcome, started)
            raise
        except TimeoutError:
            outcome.update(outcome="timeout",
                           error=f"gave up after {self.settings.action_timeout:g}s")
        except ActionError as exc:
            outcome.update(outcome="failed", error=str(exc))
        self._finish(outcome, started)
        return bool(outcome["outcome"] == "success")

    async def _attempts(self, action: Action, decision: Decision,
                        params: BaseModel) -> tuple[dict[str, Any], int]:
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return await action.run(decision, params), attempt
            except PermanentError:
                raise
            except TemporaryError as exc:
                if attempt == self.settings.max_attempts:
                    raise
                delay = max(exc.delay, self.settings.retry_delay * 2 ** (attempt - 1))
                log.info("%s on %s failed (%s); retrying in %.1fs", action.name,
                         decision.target.name, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _finish(self, outcome: dict[str, Any], started: float) -> None:
        duration = self.clock() - started
        outcome["duration_s"] = round(duration, 6)
        self.metrics.actions.labels(outcome["rule"], outcome["action"], outcome["outcome"]).inc()
        self.metrics.action_duration.labels(outcome["action"]).observe(duration)
        level = logging.INFO if outcome["outcome"] == "success" else logging.WARNING
        log.log(level, "%s on %s: %s%s", outcome["action"], outcome["target"]["name"],
                outcome["outcome"], f" ({outcome['error']})" if "error" in outcome else "")
        try:
            self.audit.append("outcome", outcome)
        except AuditUnavailable as exc:
            self.metrics.audit_failures.inc()
            log.error("could not audit the outcome of incident %s: %s", outcome["incident"], exc)
        self.metrics.audit_healthy.set(int(self.audit.healthy))

    def _audit_failed(self, exc: AuditUnavailable, decision: Decision) -> None:
        self.metrics.audit_failures.inc()
        self.metrics.suppressed.labels(decision.rule.name, "audit").inc()
        log.error("refusing to act on %s for rule %s: %s", decision.target.name,
                  decision.rule.name, exc)

    def restore(self, records: Iterable[Mapping[str, Any]],
                rule_named: Callable[[str], Rule | None], wall_now: float) -> int:
        """Re-spend cooldowns and budgets from audited decisions, so that a restart of the
        daemon (a crash loop, an upgrade) does not hand every target a fresh budget."""
        now, restored = self.clock(), 0
        for record in records:
            if record.get("kind") != "decision" or record.get("decision") not in ("act",
                                                                                  "escalate"):
                continue
            rule = rule_named(str(record.get("rule", "")))
            try:
                target = Ref(**record["target"]).key
            except (KeyError, TypeError):
                continue
            stamp = record_time(record)
            age = wall_now - stamp
            if rule is None or not stamp or age < 0:
                continue
            if record["decision"] == "act":
                self.guards.spend(rule.name, target, now - age, *_rule_budgets(rule))
            elif rule.budget is not None:
                self.guards.escalate_once(rule.name, target, rule.budget.per, now - age)
            restored += 1
        return restored

    async def drain(self, grace: float) -> int:
        """Stop taking decisions; give in-flight ones `grace` seconds, then cancel them."""
        self.accepting = False
        pending = [t for t in self.in_flight if not t.done()]
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
        return len(still)


def _rule_budgets(rule: Rule) -> tuple[tuple[int, float] | None, tuple[int, float] | None]:
    budget = rule.budget
    if budget is None:
        return None, None
    per_rule = (budget.rule_max, budget.per) if budget.rule_max else None
    return (budget.max, budget.per), per_rule


def _budget_reason(decision: Decision, which: str, settings: ExecutorSettings) -> str:
    budget = decision.rule.budget
    if which == "budget_global":
        return f"global budget of {settings.global_max} actions per {settings.global_per:g}s spent"
    assert budget is not None
    if which == "budget_rule":
        return f"rule budget of {budget.rule_max} actions per {budget.per:g}s spent"
    return f"budget of {budget.max} actions per {budget.per:g}s on this target spent"
