"""Ladders: verify each repair, run the next rung when it did not hold, stop paused.

A rule's rungs are its `actions` (step 0) and then each of its `escalate` entries
(step n = escalate[n-1]), all under the incident of the first. After a rung acted and
its steps succeeded, the rung's `verify` (the first of its actions that has one) waits
for the recovery signal (daemon/actions/verify.py): recovered ends the ladder;
not_recovered, or a rung whose action failed, hands the next rung to the executor,
which judges it with every guard (the cooldown its own incident started excepted). The
last rung failing, a rung refused, or a verification that could not read its signal
(unknown: no blind escalation to a repair) ends the ladder: the rule's notification
steps that have not run yet (or a notify.webhook to [notify] webhook_url when the rule
has none) run as step len(escalate)+1, and the rule is paused on the subject until its
state for it resolves. Every rung runs at most once per incident, so a ladder is never
a loop; a resolved state stops a pending one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.actions.executor import Executor
from daemon.actions.guards import Pause, PausedGuard, changes_something
from daemon.actions.verify import PromQuery, Verdict, Verification, signal_of
from daemon.audit.log import AuditUnavailable
from daemon.core.conditions import Condition, ConditionError
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.core.rules import ActionSpec, Rule, Verify
from daemon.engine.changes import StateChange

log = logging.getLogger("remedyd.ladder")
SHUTDOWN_GRACE = 5.0
# How far back a refused rung's decision record is looked for.
REFUSAL_LOOKBACK = 500
# Guards whose refusal of a later rung can mean the subject recovered before it acted
# (the KPI re-check just before acting): the ladder ends there, not paused.
RECOVERED_BY = frozenset({"recheck"})


def has_ladder(rule: Rule) -> bool:
    return bool(rule.escalate) or any(spec.verify is not None for spec in rule.actions)


def rung(rule: Rule, step: int) -> tuple[ActionSpec, ...]:
    if step == 0:
        return tuple(rule.actions)
    return (rule.escalate[step - 1],) if 0 < step <= len(rule.escalate) else ()


def closing_step(rule: Rule) -> int:
    """The step of a ladder's closing notification: one past its last rung."""
    return len(rule.escalate) + 1


@dataclass(eq=False)
class _Run:
    """One incident's ladder."""

    incident: str
    rule: Rule
    event: Event
    target: Ref
    # The rungs that acted (their decisions passed the guards), and those whose outcome
    # came back.
    acted: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    resolved: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.target.key, self.event.subject.key)))


class Ladder:
    def __init__(self, executor: Executor, *, prometheus: PromQuery | None = None,
                 notify_url: str | None = None) -> None:
        self.executor = executor
        self.prometheus = prometheus
        self.notify_url = notify_url
        self.guard = PausedGuard()
        executor.insert_guard(self.guard, before="cooldown")
        executor.on_decision.append(self.on_decision)
        executor.on_outcome.append(self.on_outcome)
        self._runs: dict[str, _Run] = {}
        # Subject or target key -> the verifications waiting on its events and state.
        self._waiting: dict[str, list[tuple[_Run, Verification]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._conditions: dict[str, Condition] = {}
        self._paused = 0
        self.closed = False

    # -- what the daemon feeds in -------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Every event the engine takes: one dict lookup unless a verification waits on it."""
        waiting = self._waiting.get(event.subject.key)
        if waiting:
            for _, verification in list(waiting):
                verification.observe(event)

    def on_state(self, change: StateChange) -> None:
        if change.change != "resolved":
            return
        key = change.subject.key
        for run in list(self._runs.values()):
            if run.rule.name == change.rule and key in run.keys:
                run.resolved = True
        for run, verification in list(self._waiting.get(key, ())):
            if run.rule.name == change.rule:
                verification.resolved()
        pause = self.guard.unpause(change.rule, key)
        if pause is not None:
            self._paused -= 1
            self.executor.metrics.paused.set(self._paused)
            log.info("rule %s resumed on %s: its state resolved", change.rule, change.subject.name)
            self._audit("pause", {"incident": pause.incident, "rule": change.rule,
                                  "subject": change.subject.as_dict(), "paused": False,
                                  "reason": "the rule's state for the subject resolved",
                                  "resolved_by": change.incident})

    async def on_decision(self, decision: Decision, record: Mapping[str, Any]) -> None:
        """A decision about to act: the first rung opens its incident's ladder."""
        rule, incident = decision.rule, decision.incident_id
        if not has_ladder(rule) or record.get("decision") != "act":
            return
        run = self._runs.get(incident)
        if run is None and decision.step == 0:
            run = self._runs[incident] = _Run(incident, rule, decision.event, decision.target)
            self.guard.rungs[incident] = run.acted
        if run is not None and decision.step < closing_step(rule):
            run.acted.add(decision.step)

    def on_outcome(self, decision: Decision, record: Mapping[str, Any]) -> None:
        run = self._runs.get(decision.incident_id)
        step = decision.step
        # Not a rung of a running ladder (its closing notification, a ladder a restart
        # lost), or one whose outcome came already: nothing to do.
        if run is None or step not in run.acted or step in run.done:
            return
        run.done.add(step)
        rule = run.rule
        outcome = record.get("outcome")
        specs = rung(rule, step)
        verify = next((s.verify for s in specs if s.verify is not None), None)
        if outcome in ("cancelled", "interrupted") or self.closed:
            if verify is not None:
                self._verdict(run, step, verify, Verdict("unknown", "cancelled: the daemon "
                                                                   "is shutting down"))
            self._end(run)
            return
        if outcome != "success":
            self._next(run, step, f"rung {step} ({_names(specs)}) {outcome}"
                       + (f": {record['error']}" if record.get("error") else ""))
        elif verify is not None:
            if run.resolved:
                self._verdict(run, step, verify, Verdict("recovered", "the rule's state for "
                                                         "the subject resolved meanwhile"))
                self._end(run)
                return
            task = asyncio.create_task(self._verify(run, step, verify),
                                       name=f"verify-{run.incident}-{step}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif not changes_something(self.executor.actions, (s.name for s in specs)):
            # A notification says nothing about the repair: on to the next rung.
            self._next(run, step, f"rung {step} ({_names(specs)}) only notified")
        else:
            self._end(run)  # acted, with nothing to verify it by

    # -- verifying -------------------------------------------------------------------------------

    async def _verify(self, run: _Run, step: int, verify: Verify) -> None:
        verification = Verification(run.rule.name, verify, dict(run.rule.params),
                                    self._condition(verify.until), self.prometheus)
        for key in run.keys:
            self._waiting.setdefault(key, []).append((run, verification))
        tracer = self.executor.tracer
        try:
            with tracer.span(run.incident, "verification",
                             {"remedyd.step": step, "remedyd.signal": signal_of(verify),
                              "remedyd.within": verify.within}) as span:
                verdict = await verification.wait()
                span.set("remedyd.verdict", verdict.outcome)
                span.set("remedyd.detail", verdict.detail)
                if verdict.outcome != "recovered":
                    span.fail(verdict.detail)
        except asyncio.CancelledError:
            self._verdict(run, step, verify, Verdict("unknown", "cancelled: the daemon is "
                                                               "shutting down"))
            self._end(run)
            raise
        finally:
            for key in run.keys:
                waiting = self._waiting.get(key, [])
                if (run, verification) in waiting:
                    waiting.remove((run, verification))
                if not waiting:
                    self._waiting.pop(key, None)
        self._verdict(run, step, verify, verdict)
        if verdict.outcome == "recovered":
            self._end(run)
        elif verdict.outcome == "not_recovered":
            self._next(run, step, f"rung {step} did not hold: {verdict.detail}")
        else:
            self._close(run, f"rung {step}'s verification could not read its signal "
                             f"({verdict.detail}); not escalating to a repair blindly")

    def _condition(self, until: str | None) -> Condition | None:
        if until is None:
            return None
        condition = self._conditions.get(until)
        if condition is None:
            try:
                condition = self._conditions[until] = Condition(until)
            except ConditionError:  # checked when the rule loaded: not expected here
                log.exception("verify.until %r does not compile", until)
                return None
        return condition

    def _verdict(self, run: _Run, step: int, verify: Verify, verdict: Verdict) -> None:
        signal = signal_of(verify)
        self.executor.metrics.verifications.labels(run.rule.name, verdict.outcome).inc()
        level = logging.INFO if verdict.outcome == "recovered" else logging.WARNING
        log.log(level, "incident %s (rule %s) rung %d on %s: %s (%s)", run.incident,
                run.rule.name, step, run.target.name, verdict.outcome, verdict.detail)
        record: dict[str, Any] = {
            "incident": run.incident, "rule": run.rule.name, "target": run.target.as_dict(),
            "step": step, "outcome": verdict.outcome, "within": verify.within,
            "signal": signal, "detail": verdict.detail}
        if trace_id := self.executor.tracer.trace_id(run.incident):
            record["trace_id"] = trace_id
        if verify.until is not None:
            record["until"] = verify.until
        if verify.query is not None:
            record["query"] = verify.query
        self._audit("verification", record)

    # -- climbing and stopping -----------------------------------------------------------------

    def _next(self, run: _Run, step: int, why: str) -> None:
        following = step + 1
        if run.resolved:
            self._end(run)
        elif following > len(run.rule.escalate) or following in run.acted:
            self._close(run, why)
        elif not self._submit(run, following, rung(run.rule, following), why):
            self._end(run)

    def _submit(self, run: _Run, step: int, actions: tuple[ActionSpec, ...], why: str) -> bool:
        decision = Decision(incident_id=run.incident, rule=run.rule, event=run.event,
                            target=run.target, actions=actions,
                            decided_at=self.executor.clock(), step=step)
        task = self.executor.resubmit(decision)
        if task is None:  # the executor is draining
            return False
        log.warning("incident %s (rule %s) on %s: step %d (%s): %s", run.incident,
                    run.rule.name, run.target.name, step, _names(actions), why)
        if step < closing_step(run.rule):
            task.add_done_callback(lambda done: self._judged(run, step, done))
        return True

    def _judged(self, run: _Run, step: int, task: asyncio.Task[None]) -> None:
        """A rung handled without acting was refused: the ladder ends there, paused,
        unless the refusal says the subject recovered meanwhile (a KPI's re-check)."""
        if step in run.acted or task.cancelled() or self.closed:
            return
        guard, reason = self._refusal(run.incident, step)
        if guard in RECOVERED_BY and reason.startswith("recovered"):
            log.info("incident %s: rung %d not needed: %s", run.incident, step, reason)
            self._end(run)
            return
        refused = f"refused by {guard}: {reason}" if guard else "not acted on"
        self._close(run, f"rung {step} ({_names(rung(run.rule, step))}) {refused}")

    def _refusal(self, incident: str, step: int) -> tuple[str, str]:
        """The guard that refused a rung and why, from its decision record (just written)."""
        try:
            for scanned, record in enumerate(self.executor.audit.iter_backwards()):
                if scanned >= REFUSAL_LOOKBACK:
                    break
                if (record.get("kind") == "decision" and record.get("incident") == incident
                        and record.get("step", 0) == step):
                    return str(record.get("suppressed_by", "")), str(record.get("reason", ""))
        except AuditUnavailable:
            pass
        return "", ""

    def _close(self, run: _Run, why: str) -> None:
        """The ladder ran out without a repair that held: pause the rule on the subject
        and send the notifications that have not gone out."""
        self._end(run, trace=False)  # its closing notification ends the trace
        pause = Pause(run.rule.name, run.incident, why, run.keys)
        if self.guard.paused(run.rule.name, run.target.key) is None:
            self._paused += 1
            self.executor.metrics.paused.set(self._paused)
        self.guard.pause(pause)
        log.error("incident %s: rule %s paused on %s: %s", run.incident, run.rule.name,
                  run.target.name, why)
        self._audit("pause", {"incident": run.incident, "rule": run.rule.name,
                              "target": run.target.as_dict(),
                              "subject": run.event.subject.as_dict(), "paused": True,
                              "reason": why})
        notify = self._notifications(run, why)
        if notify is None:
            log.error("incident %s: no one to tell (the rule has no notify step and "
                      "[notify] webhook_url is unset)", run.incident)
        if not notify or not self._submit(run, closing_step(run.rule), notify, why):
            self.executor.tracer.forget(run.incident)

    def _notifications(self, run: _Run, why: str) -> tuple[ActionSpec, ...] | None:
        """The rule's notification steps that have not run (none left: every one did);
        without any, a notify.webhook to [notify] webhook_url; None: nothing to send."""
        actions = self.executor.actions
        quiet = [(step, spec) for step in range(closing_step(run.rule))
                 for spec in rung(run.rule, step) if not changes_something(actions, (spec.name,))]
        if quiet:
            return tuple(spec for step, spec in quiet if step not in run.acted)
        if self.notify_url and "notify.webhook" in actions:
            message = f"remedyd: rule {run.rule.name} paused on {run.target.name}: {why}"
            return (ActionSpec(name="notify.webhook", params={"message": message}),)
        return None

    def _end(self, run: _Run, trace: bool = True) -> None:
        """The ladder is over: a later decision of its incident starts afresh (a paused
        subject's are refused by the pause)."""
        if self._runs.get(run.incident) is run:
            del self._runs[run.incident]
            self.guard.rungs.pop(run.incident, None)
            if trace:
                self.executor.tracer.forget(run.incident)

    def _audit(self, kind: str, record: dict[str, Any]) -> None:
        try:
            self.executor.audit.append(kind, record)
        except (AuditUnavailable, RuntimeError) as exc:
            self.executor.audit_gate.failed()
            log.error("could not audit a %s record of incident %s: %s", kind,
                      record.get("incident"), exc)

    async def close(self) -> None:
        """Cancel pending verifications (each audited as unknown); nothing escalates after."""
        self.closed = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)


def _names(specs: tuple[ActionSpec, ...]) -> str:
    return ", ".join(spec.name for spec in specs)
