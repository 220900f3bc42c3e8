"""Guards, then intent, then the action, then its outcome: every step in the audit log.

A decision passes the guard list in order; the first refusal stops it and is
audited with the guard that refused it. Intent is written before anything runs,
so a crash mid-action still leaves a record of what was attempted, and every
intent is closed by exactly one outcome record (`record_outcome`). Changing
actions run one target at a time under that target's lock; notifications run
after them, outside the lock, so a dead receiver cannot hold up the next repair.
The executor owns the one retry policy: an action makes one attempt per `run`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.actions.audit_gate import AuditGate
from daemon.actions.base import Action
from daemon.actions.guards import (
    BudgetGuard,
    CooldownGuard,
    DryRunGuard,
    Guard,
    GuardContext,
    GuardResult,
    NotifyRateGuard,
    PreflightGuard,
    Spend,
    SupersededGuard,
    TargetGuard,
    changes_something,
)
from daemon.audit.log import AuditLog, AuditUnavailable, record_time
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError, PermanentError, TemporaryError
from daemon.core.events import Ref
from daemon.core.redact import redact
from daemon.core.rules import ActionSpec, Rule
from daemon.engine.budgets import GuardBook
from daemon.engine.targets import aim
from daemon.telemetry.logs import incident_context
from daemon.telemetry.metrics import Metrics
from daemon.telemetry.tracing import NOOP, Span, Tracer

log = logging.getLogger("remedyd.executor")
# The steps handed back to `Action.remember` on start: done, or maybe done (the daemon
# died between the intent and the outcome).
REMEMBERED = ("success", "interrupted")
# Incidents remembered as spent, so that restoring from a second place (the Kubernetes
# shared state after the audit log, or again on a takeover) counts each once.
SPENT_INCIDENTS = 50_000


@dataclass(frozen=True)
class ExecutorSettings:
    dry_run: bool = False
    action_timeout: float = 60.0
    max_attempts: int = 3
    retry_delay: float = 1.0
    global_max: int | None = None
    global_per: float = 3600.0
    # Notify-only decisions across all rules per window (None: no limit).
    notify_max: int | None = None
    notify_per: float = 3600.0
    # Decisions of one rule on one target within this window are one incident.
    coalesce_window: float = 0.0


@dataclass
class _Intent:
    """A decision that passed its guards and was audited: it owes one outcome record."""

    decision: Decision
    status: str  # act | escalate
    plan: tuple[ActionSpec, ...]
    started: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return any(step["outcome"] != "success" for step in self.steps)


def _rung(decision: Decision) -> dict[str, int]:
    """A ladder's later rung says which it is in its records (the first says nothing)."""
    return {"step": decision.step} if decision.step else {}


def _last_rung(decision: Decision) -> bool:
    """Whether the incident is over with this decision's outcome: its rule has no ladder
    (daemon/actions/ladder.py ends a ladder's), or this is the ladder's closing
    notification."""
    rule = decision.rule
    laddered = bool(rule.escalate) or any(spec.verify is not None for spec in rule.actions)
    return not laddered or decision.step > len(rule.escalate)


@dataclass
class _Coalesced:
    incident: str
    rule: str
    target: Ref
    count: int = 0


class Executor:
    def __init__(self, actions: Mapping[str, Action], audit: AuditLog, metrics: Metrics,
                 settings: ExecutorSettings, clock: Callable[[], float] = time.monotonic,
                 guards: Sequence[Guard] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.actions = dict(actions)
        self.audit = audit
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.book = GuardBook(settings.global_max, settings.global_per)
        self.audit_gate = AuditGate(audit, metrics, wall_clock)
        self.guards: list[Guard] = list(guards) if guards is not None else self.default_guards()
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}
        self._coalescing: dict[tuple[str, str], _Coalesced] = {}
        self._coalesce_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.accepting = True
        # Awaited with each decision that acts or escalates, once audited and committed and
        # before its actions run (the Kubernetes shared state: a replica killed mid-action
        # leaves its intent where the next leader reads it); then called with its outcome.
        self.on_decision: list[Callable[[Decision, Mapping[str, Any]], Awaitable[None]]] = []
        self.on_outcome: list[Callable[[Decision, Mapping[str, Any]], None]] = []
        # Called with each decision a guard refused for now (guards marked transient:
        # leader, partition, cache_synced, unless, silence), so the engine can decide it
        # again while the rule's state still fires.
        self.on_refused_for_now: list[Callable[[Decision], None]] = []
        self._spent: OrderedDict[str, None] = OrderedDict()
        # The no-op unless OTEL_* asks for traces (daemon/telemetry/tracing.py).
        self.tracer: Tracer = NOOP

    def default_guards(self) -> list[Guard]:
        return [
            self.audit_gate,
            TargetGuard(),
            DryRunGuard(lambda: self.settings.dry_run),
            SupersededGuard(),
            CooldownGuard(self.book),
            BudgetGuard(self.book),
            NotifyRateGuard(self.book, self.settings.notify_max, self.settings.notify_per),
            PreflightGuard(),
        ]

    def insert_guard(self, guard: Guard, before: str = "preflight") -> None:
        """Add a guard ahead of the named one (integrations add leader, cache-synced...)."""
        names = [g.name for g in self.guards]
        self.guards.insert(names.index(before) if before in names else len(names), guard)

    # -- intake ----------------------------------------------------------------------------

    def submit(self, decision: Decision) -> asyncio.Task[None] | None:
        """Handle a decision in the background; a repeat within the coalescing window of
        the same rule's decision on the same target is counted, not handled again."""
        if not self.accepting:
            return None
        decision = self.retarget(decision)
        if self._coalesce(decision):
            return None
        return self._start(decision)

    def resubmit(self, decision: Decision) -> asyncio.Task[None] | None:
        """Judge again a decision a guard held back until it could be (a partition healed):
        not coalesced, since its own first submission opened that window."""
        return self._start(decision) if self.accepting else None

    def _start(self, decision: Decision) -> asyncio.Task[None]:
        task = asyncio.create_task(self.handle(decision), name=f"incident-{decision.incident_id}")
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    def retarget(self, decision: Decision) -> Decision:
        """The decision aimed at what its changing actions act on (a Pod's rollback at its
        Deployment), so that three crash-looping Pods of one Deployment are one incident
        on one target, with one cooldown and one budget."""
        if decision.unresolved or decision.target.key != decision.event.subject.key:
            # Aimed once (by submit()): the cache may have lost the subject since (a
            # rollout deleted the pod), which must not turn the decision into a refusal.
            return decision
        if decision.rule.target is not None:  # a KPI or webhook rule names its object
            aimed = aim(decision.rule.target, decision.event)
            return (dataclasses.replace(decision, target=aimed) if isinstance(aimed, Ref)
                    else dataclasses.replace(decision, unresolved=aimed))
        targets: dict[str, Ref] = {}
        for spec in decision.actions:
            action = self.actions.get(spec.name)
            if action is None or not action.mutating:
                continue
            resolved = action.resolve_target(decision.event)
            if isinstance(resolved, str):
                return dataclasses.replace(decision, unresolved=f"{spec.name}: {resolved}")
            targets[resolved.key] = resolved
        if len(targets) > 1:
            return dataclasses.replace(decision, unresolved=(
                "this rule's actions act on different objects (" + ", ".join(sorted(targets))
                + "): split it into one rule per target"))
        if targets:
            (target,) = targets.values()
            if target.key != decision.target.key:
                return dataclasses.replace(decision, target=target)
        return decision

    def _coalesce(self, decision: Decision) -> bool:
        window = self.settings.coalesce_window
        if window <= 0:
            return False
        key = (decision.rule.name, decision.target.key)
        open_incident = self._coalescing.get(key)
        if open_incident is not None:
            open_incident.count += 1
            self.metrics.coalesced.labels(decision.rule.name).inc()
            return True
        self._coalescing[key] = _Coalesced(decision.incident_id, decision.rule.name,
                                           decision.target)
        self._coalesce_timers[key] = asyncio.get_running_loop().call_later(
            window, self._close_coalescing, key)
        return False

    def _end_coalescing(self, decision: Decision) -> None:
        """A decision refused for now (not the leader, a partition): repeats are judged
        again, so the one after a takeover or a resync is not swallowed by this one."""
        key = (decision.rule.name, decision.target.key)
        incident = self._coalescing.get(key)
        if incident is not None and incident.incident == decision.incident_id:
            timer = self._coalesce_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._close_coalescing(key)

    def _guard_named(self, results: list[GuardResult]) -> Guard | None:
        """The guard object behind the last (refusing) result."""
        return self.guards[len(results) - 1] if results else None

    def _close_coalescing(self, key: tuple[str, str]) -> None:
        self._coalesce_timers.pop(key, None)
        incident = self._coalescing.pop(key, None)
        if incident is None or not incident.count:
            return
        log.info("rule %s on %s: %d repeat decision(s) coalesced into incident %s",
                 incident.rule, incident.target.name, incident.count, incident.incident)
        try:
            self.audit.append("coalesced", {
                "incident": incident.incident, "rule": incident.rule,
                "target": incident.target.as_dict(), "count": incident.count,
                "window_s": self.settings.coalesce_window})
        except (AuditUnavailable, RuntimeError):
            self.audit_gate.failed()

    # -- one decision ------------------------------------------------------------------------

    async def handle(self, decision: Decision) -> None:
        decision = self.retarget(decision)  # idempotent: submit() may have done it already
        self.metrics.rule_matches.labels(decision.rule.name).inc()
        key = decision.target.key
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        intent: _Intent | None = None
        tracer = self.tracer
        tracer.begin(decision)
        context = incident_context(incident=decision.incident_id, rule=decision.rule.name,
                                   target=decision.target.key,
                                   trace_id=tracer.trace_id(decision.incident_id))
        try:
            context.__enter__()
            async with lock:
                intent = await self._open_intent(decision)
                if intent is not None:
                    await self._run_steps(intent, mutating=True)
            if intent is not None:
                await self._run_steps(intent, mutating=False)
        except asyncio.CancelledError:
            if intent is not None:
                intent.cancelled = True
            raise
        except Exception as exc:  # a bug, not an action's failure: close the record anyway
            log.exception("incident %s (rule %s) failed unexpectedly", decision.incident_id,
                          decision.rule.name)
            if intent is not None:
                intent.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                self._locks.pop(key, None)
            if intent is not None:
                self.record_outcome(intent)
            elif decision.step == 0 or _last_rung(decision):
                tracer.forget(decision.incident_id)  # refused: no ladder carries it on
            context.__exit__(None, None, None)

    async def _judge(self, decision: Decision) -> tuple[GuardContext, list[GuardResult]]:
        ctx = GuardContext(decision=decision, now=self.clock(), actions=self.actions,
                           plan=decision.actions)
        results: list[GuardResult] = []
        for guard in self.guards:
            with self.tracer.span(decision.incident_id, f"guard {guard.name}",
                                  {"remedyd.guard": guard.name,
                                   "remedyd.step": decision.step}) as span:
                try:
                    result = await guard.check(ctx)
                except Exception as exc:  # fail closed: a broken guard never lets one by
                    log.exception("guard %s failed on incident %s", guard.name,
                                  decision.incident_id)
                    result = GuardResult(guard.name, "refuse",
                                         f"guard failed: {type(exc).__name__}: {exc}")
                span.set("remedyd.verdict", result.verdict)
                if result.reason:
                    span.set("remedyd.reason", result.reason)
            results.append(result)
            if result.verdict == "refuse":
                break
            if result.verdict == "escalate":
                ctx.plan, ctx.escalation = result.instead, True
        return ctx, results

    async def _open_intent(self, decision: Decision) -> _Intent | None:
        rule = decision.rule
        ctx, results = await self._judge(decision)
        refused = results[-1] if results and results[-1].verdict == "refuse" else None
        if refused is not None and refused.guard == self.audit_gate.name:
            # Fail closed: no action without a record of it, and no record can be written.
            self.audit_gate.refused_decision(rule.name)
            log.error("refusing to act on %s for rule %s: %s", decision.target.name, rule.name,
                      refused.reason)
            return None
        status = "suppressed" if refused else ("escalate" if ctx.escalation else "act")
        record = {
            **decision.summary(),
            "event": decision.event.summary(),
            "decision": status,
            "guards": [r.as_record() for r in results],
            "dry_run": self.settings.dry_run or rule.dry_run,
            **_rung(decision),
            **self._trace(decision),
        }
        if refused is not None:
            record.update(suppressed_by=refused.guard, reason=refused.reason,
                          outcome="suppressed")
        if ctx.escalation:
            record["actions"] = [{"name": a.name, "params": redact(a.params)}
                                 for a in ctx.plan]
            record["reason"] = next(r.reason for r in results if r.verdict == "escalate")
        if refused is None and (intents := self._intents(ctx)):
            record["intent"] = intents
        kept = {r.guard: dict(r.keep) for r in results if r.keep}
        if refused is None and kept:
            record["kept"] = kept
        try:
            stored = self.audit.append("decision", record)
        except AuditUnavailable as exc:
            self.audit_gate.failed()
            self.audit_gate.refused_decision(rule.name)
            log.error("refusing to act on %s for rule %s: %s", decision.target.name, rule.name,
                      exc)
            return None
        if refused is not None and getattr(self._guard_named(results), "transient", False):
            self._end_coalescing(decision)
            for refused_hook in self.on_refused_for_now:
                refused_hook(decision)
        if refused is not None:
            self.metrics.suppressed.labels(rule.name, refused.guard).inc()
            log.info("rule %s on %s suppressed by %s: %s", rule.name, decision.target.name,
                     refused.guard, refused.reason)
            return None
        if ctx.escalation:
            self.metrics.escalations.labels(rule.name).inc()
            log.warning("rule %s on %s: budget exhausted, escalating", rule.name,
                        decision.target.name)
        spend = Spend(rule, decision.target.key, ctx.escalation, ctx.mutating, ctx.now, kept,
                      decision.incident_id)
        for guard in self.guards:
            guard.commit(spend)
        self._spend(decision.incident_id, stored.get("time"))
        for hook in self.on_decision:
            try:
                await hook(decision, stored)
            except Exception:  # sharing the decision never stops it
                log.exception("incident %s: a decision hook failed", decision.incident_id)
        return _Intent(decision, status, ctx.plan, self.clock())

    def _spend(self, incident: str, stamp: object) -> bool:
        """Whether the decision audited as `incident` at `stamp` (its record's time, which
        every copy of the record keeps) was not spent yet, and now is."""
        key = f"{incident}@{stamp}"
        if key in self._spent:
            return False
        self._spent[key] = None
        while len(self._spent) > SPENT_INCIDENTS:
            self._spent.popitem(last=False)
        return True

    def _intents(self, ctx: GuardContext) -> list[dict[str, Any]]:
        intents = []
        for spec in ctx.plan:
            action = self.actions.get(spec.name)
            if action is None or not action.mutating:
                continue
            try:
                details = action.intent(ctx.decision, action.parse(spec.params),
                                        ctx.observed(action))
            except Exception:  # an intent is for the record: it never stops the action
                log.exception("%s could not describe its intent", spec.name)
                continue
            if details:
                intents.append({"action": spec.name, "details": details})
        return intents

    async def _run_steps(self, intent: _Intent, *, mutating: bool) -> None:
        for spec in intent.plan:
            action = self.actions[spec.name]
            if action.mutating != mutating:
                continue
            if mutating and intent.failed:
                intent.steps.append({"action": spec.name, "outcome": "skipped",
                                     "error": "an earlier step failed"})
                continue
            intent.steps.append(await self._run_step(intent, action, spec))

    async def _run_step(self, intent: _Intent, action: Action,
                        spec: ActionSpec) -> dict[str, Any]:
        decision = intent.decision
        params = action.parse(spec.params)
        step: dict[str, Any] = {"action": spec.name}
        started = self.clock()
        # The last temporary failure: why the attempts ran into the timeout.
        last: list[str] = []
        with self.tracer.span(decision.incident_id, f"action {spec.name}",
                              {"remedyd.action": spec.name, "remedyd.step": decision.step,
                               "remedyd.target": decision.target.key}) as span:
            try:
                await self._guarded_step(intent, action, params, step, last, span, started)
            finally:
                span.set("remedyd.outcome", step.get("outcome", "cancelled"))
                if step.get("outcome", "success") != "success":
                    span.fail(str(step.get("error", step.get("outcome"))))
        if step["outcome"] == "success":
            self._remember(action, step, self.wall_clock())
        return self._timed(step, started, decision)

    async def _guarded_step(self, intent: _Intent, action: Action, params: Any,
                            step: dict[str, Any], last: list[str], span: Span,
                            started: float) -> None:
        decision = intent.decision
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                details, attempts = await self._attempts(action, decision, params, last,
                                                         span)
            step.update(outcome="success", details=details, attempts=attempts)
            with self.tracer.span(decision.incident_id, "verify",
                                  {"remedyd.action": action.name}, parent=span) as checked:
                verified = await action.verify(decision, params, details)
                if verified is not None:
                    checked.set("remedyd.verified", bool(verified))
            if verified is not None:
                step["verified"] = bool(verified)
        except asyncio.CancelledError:
            step.update(outcome="cancelled", error="daemon shutting down")
            intent.steps.append(self._timed(step, started, decision))
            raise
        except TimeoutError:
            step.update(outcome="timeout",
                        error=f"gave up after {self.settings.action_timeout:g}s"
                        + (f": {last[-1]}" if last else ""))
        except ActionError as exc:
            step.update(outcome="failed", error=str(exc))
        except Exception as exc:  # an action's bug: its step fails, the record still closes
            log.exception("%s on %s raised unexpectedly", action.name, decision.target.name)
            step.update(outcome="error", error=f"{type(exc).__name__}: {exc}")

    def _timed(self, step: dict[str, Any], started: float, decision: Decision) -> dict[str, Any]:
        duration = self.clock() - started
        step["duration_s"] = round(duration, 6)
        self.metrics.actions.labels(decision.rule.name, step["action"], step["outcome"]).inc()
        self.metrics.action_duration.labels(step["action"]).observe(duration)
        level = logging.INFO if step["outcome"] == "success" else logging.WARNING
        log.log(level, "%s on %s: %s%s", step["action"], decision.target.name, step["outcome"],
                f" ({step['error']})" if "error" in step else "")
        return step

    async def _attempts(self, action: Action, decision: Decision, params: Any,
                        last: list[str], span: Span) -> tuple[dict[str, Any], int]:
        attempts = action.attempts(params) or self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                with self.tracer.span(decision.incident_id, "attempt",
                                      {"remedyd.attempt": attempt}, parent=span):
                    return await action.run(decision, params), attempt
            except PermanentError:
                raise
            except TemporaryError as exc:
                if attempt == attempts:
                    raise ActionError(f"{exc} (after {attempt} attempt(s))") from exc
                last[:] = [f"{exc} (after {attempt} attempt(s))"]
                delay = exc.delay if not exc.backoff else max(
                    exc.delay, self.settings.retry_delay * 2 ** (attempt - 1))
                log.info("%s on %s failed (%s); retrying in %.1fs", action.name,
                         decision.target.name, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def record_outcome(self, intent: _Intent) -> None:
        """The one place an outcome record is written: exactly once per intent."""
        decision = intent.decision
        error: str | None
        if intent.cancelled:
            outcome, error = "cancelled", "daemon shutting down"
        elif intent.error is not None:
            outcome, error = "error", intent.error
        else:
            bad = next((s for s in intent.steps if s["outcome"] != "success"), None)
            outcome = bad["outcome"] if bad else "success"
            error = bad.get("error") if bad else None
        record: dict[str, Any] = {
            "incident": decision.incident_id, "rule": decision.rule.name,
            "target": decision.target.as_dict(), "decision": intent.status,
            **_rung(decision), "outcome": outcome, "steps": intent.steps,
            "duration_s": round(self.clock() - intent.started, 6),
            **self._trace(decision),
        }
        if error:
            record["error"] = error
        stored = self._append_outcome(record)
        for hook in self.on_outcome:
            try:
                hook(decision, stored or record)
            except Exception:
                log.exception("incident %s: an outcome hook failed", decision.incident_id)
        if _last_rung(decision):
            self.tracer.forget(decision.incident_id)

    def _trace(self, decision: Decision) -> dict[str, str]:
        trace_id = self.tracer.trace_id(decision.incident_id)
        return {"trace_id": trace_id} if trace_id else {}

    def _append_outcome(self, record: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.audit.append("outcome", record)
        except (AuditUnavailable, RuntimeError) as exc:
            self.audit_gate.failed()
            log.error("could not audit the outcome of incident %s: %s", record["incident"], exc)
            return None

    # -- start and stop -----------------------------------------------------------------------

    async def close_interrupted(self, intents: Iterable[Mapping[str, Any]]) -> int:
        """Give each intent a previous run left open an `interrupted` outcome, saying what
        its target looks like now (the action may or may not have happened)."""
        closed = 0
        for intent in intents:
            try:
                target = Ref(**intent["target"])
            except (KeyError, TypeError):
                continue
            names = [a.get("name") for a in intent.get("actions") or [] if isinstance(a, dict)]
            # What the actions were about to do: each may or may not have happened, and an
            # action that must not repeat itself (a rollback) treats it as done.
            steps = [{"action": i.get("action"), "outcome": "interrupted",
                      "details": i.get("details")} for i in intent.get("intent") or []
                     if isinstance(i, dict) and isinstance(i.get("details"), dict)]
            for step in steps:
                if (interrupted := self.actions.get(str(step["action"]))) is not None:
                    self._remember(interrupted, step, record_time(intent))
            record: dict[str, Any] = {
                "incident": intent.get("incident"), "rule": intent.get("rule"),
                "target": target.as_dict(), "decision": intent.get("decision"),
                "outcome": "interrupted", "steps": steps,
                "error": "the daemon stopped before this decision's outcome was recorded; "
                         "whether its actions ran is unknown: see the target's state",
            }
            action = next((self.actions[n] for n in names
                           if n in self.actions and self.actions[n].mutating), None)
            if action is not None:
                try:
                    record["state"] = action.describe_state(await action.observe(target))
                except ActionError as exc:
                    record["state"] = {"error": str(exc)}
            self._append_outcome(record)
            closed += 1
        return closed

    def restore(self, records: Iterable[Mapping[str, Any]],
                rule_named: Callable[[str], Rule | None], wall_now: float) -> int:
        """Re-spend cooldowns and budgets from audited decisions, so that a restart of the
        daemon (a crash loop, an upgrade) does not hand every target a fresh budget; hand
        audited outcomes' successful steps back to their actions (`Action.remember`)."""
        now, restored = self.clock(), 0
        for record in records:
            if record.get("kind") == "outcome":
                self._remember_outcome(record)
                continue
            status = record.get("decision")
            if record.get("kind") != "decision" or status not in ("act", "escalate"):
                continue
            rule = rule_named(str(record.get("rule", "")))
            try:
                target = Ref(**record["target"]).key
            except (KeyError, TypeError):
                continue
            incident = record.get("incident")
            if isinstance(incident, str) and not self._spend(incident, record.get("time")):
                continue  # restored already, or decided here
            stamp = record_time(record)
            age = wall_now - stamp
            if rule is None or not stamp or age < 0:
                continue
            names = [a.get("name") for a in record.get("actions") or [] if isinstance(a, dict)]
            kept = record.get("kept")
            spend = Spend(rule, target, status == "escalate",
                          changes_something(self.actions, map(str, names)), now - age,
                          {k: v for k, v in kept.items() if isinstance(v, dict)}
                          if isinstance(kept, dict) else {},
                          incident if isinstance(incident, str) else "")
            for guard in self.guards:
                guard.commit(spend)
            restored += 1
        return restored

    def _remember_outcome(self, record: Mapping[str, Any]) -> None:
        """Hand each successful step of an audited outcome back to its action (a rollback
        must know, after a restart too, which revisions it already rolled away from)."""
        steps = record.get("steps")
        for step in steps if isinstance(steps, list) else ():
            action = self.actions.get(str(step.get("action"))) if isinstance(step, dict) else None
            if action is not None and step.get("outcome") in REMEMBERED:
                self._remember(action, step, record_time(record))

    @staticmethod
    def _remember(action: Action, step: Mapping[str, Any], at: float) -> None:
        try:
            action.remember(step, at)
        except Exception:  # a bad record or a bug must not stop the daemon or fail the step
            log.exception("%s could not remember a step: %s", action.name, step)

    async def drain(self, grace: float) -> int:
        """Stop taking decisions; give in-flight ones `grace` seconds, then cancel them."""
        self.accepting = False
        for key, timer in list(self._coalesce_timers.items()):
            timer.cancel()
            self._close_coalescing(key)
        pending = [t for t in self.in_flight if not t.done()]
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
        return len(still)
