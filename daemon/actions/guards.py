"""The executor's guards: an ordered list, each saying ok, refuse or escalate, and why.

Every guard a decision passed through is recorded, in order, in its audit record, so
an operator reads off the record which guard let it through or stopped it. New
guards (leader, cache synced, blast radius, silences, gates) are added to the list;
the executor does not know any of them by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from daemon.actions.base import Action, Refusal
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError
from daemon.core.rules import ActionSpec, Rule
from daemon.engine.budgets import GuardBook

Verdict = Literal["ok", "refuse", "escalate"]
# Targets whose cooldown's incident the cooldown guard remembers (ladder rules only).
COOLDOWN_INCIDENTS = 50_000


@dataclass(frozen=True, slots=True)
class GuardResult:
    guard: str
    verdict: Verdict
    reason: str = ""
    # For "escalate": what runs instead of the rule's actions.
    instead: tuple[ActionSpec, ...] = ()
    # What a guard that keeps state counted for this decision (a blast radius: the pod's
    # workload and namespace), when the target alone does not say: audited in the
    # decision record under `kept` and handed back to its commit, live and on restore.
    keep: Mapping[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, str]:
        record = {"guard": self.guard, "verdict": self.verdict}
        if self.reason:
            record["reason"] = self.reason
        return record


@dataclass(frozen=True, slots=True)
class Spend:
    """What an acted-on decision costs the guards that keep state (also replayed on start)."""

    rule: Rule
    target: str
    escalation: bool
    mutating: bool
    at: float
    # Per guard name, what its GuardResult asked to keep (see GuardResult.keep).
    kept: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The incident that spent it: a later rung of that incident's ladder is not held
    # back by the cooldown its first rung started.
    incident: str = ""


@dataclass
class GuardContext:
    """One decision on its way through the chain."""

    decision: Decision
    now: float
    actions: Mapping[str, Action]
    # What will run if every guard agrees; an escalation replaces it.
    plan: tuple[ActionSpec, ...]
    escalation: bool = False
    _observed: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)

    @property
    def mutating(self) -> bool:
        return changes_something(self.actions, (s.name for s in self.plan))

    def observed(self, action: Action) -> Mapping[str, Any] | None:
        """What `observe` read for this action, if a guard asked (None otherwise)."""
        return self._observed.get(action.observe_key)

    async def observe(self, action: Action) -> Mapping[str, Any] | None:
        """The target's current state as `action` sees it; fetched once per decision."""
        key = action.observe_key
        if key not in self._observed:
            self._observed[key] = await action.observe(self.decision.target)
        return self._observed[key]


class Guard(Protocol):
    name: str

    async def check(self, ctx: GuardContext) -> GuardResult: ...

    def commit(self, spend: Spend) -> None:
        """Remember an action taken (or restored from the audit log); most guards keep none."""


class BaseGuard:
    """Verdict helpers, and no state to commit unless a guard overrides `commit`."""

    name = ""
    # A refusal that says "not now" rather than "no" (not the leader, a cache not yet
    # synced, a partition): the next decision of that rule on that target is judged
    # afresh instead of being coalesced into the refused incident.
    transient = False

    def ok(self) -> GuardResult:
        return GuardResult(self.name, "ok")

    def refuse(self, reason: str, guard: str | None = None) -> GuardResult:
        return GuardResult(guard or self.name, "refuse", reason)

    def commit(self, spend: Spend) -> None:
        return None


class TargetGuard(BaseGuard):
    """No target could be resolved for the actions (a broken owner chain, actions that
    would act on different objects): nothing runs, rather than a guessed or wider target."""

    name = "target"

    async def check(self, ctx: GuardContext) -> GuardResult:
        if ctx.decision.unresolved:
            return self.refuse(ctx.decision.unresolved)
        return self.ok()


class DryRunGuard(BaseGuard):
    name = "dry_run"

    def __init__(self, globally: Callable[[], bool]) -> None:
        self._globally = globally

    async def check(self, ctx: GuardContext) -> GuardResult:
        if self._globally():
            return self.refuse("dry-run is on globally")
        if ctx.decision.rule.dry_run:
            return self.refuse("dry-run is on for this rule")
        return self.ok()


class SupersededGuard(BaseGuard):
    """The target is no longer in the state the event reported: the repair is stale."""

    name = "superseded"

    async def check(self, ctx: GuardContext) -> GuardResult:
        if ctx.decision.step > 0:
            # A later rung of a ladder: its own earlier rung changed the target since the
            # event, and the verification that found the repair did not hold is newer.
            return GuardResult(self.name, "ok", "a later rung: its verification is newer "
                               "than the event")
        for spec in ctx.plan:
            action = ctx.actions.get(spec.name)
            if action is None or not action.mutating:
                continue
            try:
                state = await ctx.observe(action)
            except ActionError:
                continue  # preflight asks again and refuses with the reason
            reason = action.superseded(ctx.decision, state)
            if reason:
                return self.refuse(reason)
        return self.ok()


class CooldownGuard(BaseGuard):
    """A rule acts on a target at most once per `cooldown`; the next rung of a ladder is
    part of the incident that started the cooldown, not a new one, so it is let by (and
    restarts the cooldown: a later incident waits for it too)."""

    name = "cooldown"

    def __init__(self, book: GuardBook) -> None:
        self.book = book
        # (rule, target) -> the incident whose action started its cooldown; only for
        # rules with a ladder, and bounded.
        self._started_by: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def check(self, ctx: GuardContext) -> GuardResult:
        decision = ctx.decision
        rule = decision.rule
        left = self.book.cooldown_left(rule.name, decision.target.key, rule.cooldown, ctx.now)
        if left > 0 and decision.step > 0 and self._started_by.get(
                (rule.name, decision.target.key)) == decision.incident_id:
            return GuardResult(self.name, "ok", f"rung {decision.step} of the incident "
                               "that started the cooldown")
        if left > 0:
            return self.refuse(f"acted on this target {rule.cooldown - left:.1f}s ago; "
                               f"cooldown {rule.cooldown:g}s")
        return self.ok()

    def commit(self, spend: Spend) -> None:
        if spend.escalation:
            return
        self.book.mark_acted(spend.rule.name, spend.target, spend.at)
        if spend.rule.escalate and spend.incident:
            key = (spend.rule.name, spend.target)
            self._started_by.pop(key, None)
            self._started_by[key] = spend.incident
            while len(self._started_by) > COOLDOWN_INCIDENTS:
                self._started_by.popitem(last=False)


class BudgetGuard(BaseGuard):
    """Budgets count actions that change something; notifications have their own limit."""

    name = "budget"

    def __init__(self, book: GuardBook) -> None:
        self.book = book

    async def check(self, ctx: GuardContext) -> GuardResult:
        if not ctx.mutating:
            return self.ok()
        rule, target = ctx.decision.rule, ctx.decision.target.key
        exhausted = self.book.exhausted(rule.name, target, ctx.now, *rule_budgets(rule))
        if exhausted is None:
            return self.ok()
        reason = self._reason(rule, exhausted)
        budget = rule.budget
        if budget and budget.then and exhausted != "budget_global" and (
            not self.book.escalated_within(rule.name, target, budget.per, ctx.now)
        ):
            return GuardResult(exhausted, "escalate", reason, tuple(budget.then))
        return self.refuse(reason, exhausted)

    def _reason(self, rule: Rule, which: str) -> str:
        if which == "budget_global":
            return (f"global budget of {self.book.global_max} actions per "
                    f"{self.book.global_per:g}s spent")
        budget = rule.budget
        assert budget is not None
        if which == "budget_rule":
            return f"rule budget of {budget.rule_max} actions per {budget.per:g}s spent"
        return f"budget of {budget.max} actions per {budget.per:g}s on this target spent"

    def commit(self, spend: Spend) -> None:
        if spend.escalation:
            if spend.rule.budget is not None:
                self.book.escalate_once(spend.rule.name, spend.target, spend.rule.budget.per,
                                        spend.at)
        elif spend.mutating:
            self.book.spend(spend.rule.name, spend.target, spend.at, *rule_budgets(spend.rule))


class NotifyRateGuard(BaseGuard):
    """At most `limit` notify-only decisions per window, across rules: a flood guard."""

    name = "notify_rate"

    def __init__(self, book: GuardBook, limit: int | None, per: float) -> None:
        self.book, self.limit, self.per = book, limit, per

    async def check(self, ctx: GuardContext) -> GuardResult:
        if ctx.mutating or self.limit is None:
            return self.ok()
        if self.book.notifications(ctx.now, self.per) >= self.limit:
            return self.refuse(f"notification rate limit of {self.limit} per {self.per:g}s "
                               "reached")
        return self.ok()

    def commit(self, spend: Spend) -> None:
        if not spend.mutating:
            self.book.notified(spend.at)


@dataclass(frozen=True, slots=True)
class Pause:
    """A rule stopped on a subject: its ladder ran out without the repair holding."""

    rule: str
    incident: str
    reason: str
    # The keys it covers: the target the ladder acted on and the subject its events are
    # about (a Pod's rollback acts on its Deployment).
    keys: tuple[str, ...]


class PausedGuard(BaseGuard):
    """A ladder's guard. Refuses a rule's decisions on a subject whose ladder ended
    without a repair that held, until the rule's state for it resolves (the ladder's own
    closing notification, one step past its last rung, is let by); and a rung an incident
    has run already (the engine deciding again within the same episode while the ladder
    verifies), audited as refused by `ladder`: each rung runs once."""

    name = "paused"

    def __init__(self) -> None:
        self._paused: dict[tuple[str, str], Pause] = {}
        # Incident -> the rungs its running ladder has acted on (shared with the ladder).
        self.rungs: dict[str, set[int]] = {}

    def pause(self, pause: Pause) -> None:
        for key in pause.keys:
            self._paused[(pause.rule, key)] = pause

    def unpause(self, rule: str, key: str) -> Pause | None:
        """Lift the pause covering (rule, key), if any, and every key it covered."""
        pause = self._paused.get((rule, key))
        if pause is not None:
            for covered in pause.keys:
                if self._paused.get((rule, covered)) is pause:
                    del self._paused[(rule, covered)]
        return pause

    def paused(self, rule: str, key: str) -> Pause | None:
        return self._paused.get((rule, key))

    async def check(self, ctx: GuardContext) -> GuardResult:
        decision = ctx.decision
        closing = decision.step > len(decision.rule.escalate)
        for key in (decision.target.key, decision.event.subject.key):
            pause = self._paused.get((decision.rule.name, key))
            if pause is not None and not (closing and pause.incident == decision.incident_id):
                return self.refuse(f"paused since incident {pause.incident}: {pause.reason}; "
                                   "until the rule's state for it resolves")
        ran = self.rungs.get(decision.incident_id)
        if ran is not None and decision.step in ran:
            return self.refuse(f"rung {decision.step} of this incident ran already; its "
                               f"ladder is at rung {max(ran)}", "ladder")
        return self.ok()


class PreflightGuard(BaseGuard):
    """Each action's own check of its target (exists, not already being restarted...)."""

    name = "preflight"

    async def check(self, ctx: GuardContext) -> GuardResult:
        for spec in ctx.plan:
            action = ctx.actions.get(spec.name)
            if action is None:
                return self.refuse(f"{spec.name}: its source is not enabled here",
                                   "unavailable")
            try:
                state = await ctx.observe(action) if action.mutating else None
                refusal = await action.preflight(ctx.decision, action.parse(spec.params), state)
            except ActionError as exc:
                refusal = Refusal("preflight", str(exc))
            if refusal is not None:
                return self.refuse(f"{spec.name}: {refusal.reason}", refusal.guard)
        return self.ok()


def changes_something(actions: Mapping[str, Action], names: Iterable[str]) -> bool:
    """Whether running these actions changes anything (an unknown one counts as changing)."""
    return any(getattr(actions.get(name), "mutating", True) for name in names)


def rule_budgets(rule: Rule) -> tuple[tuple[int, float] | None, tuple[int, float] | None]:
    budget = rule.budget
    if budget is None:
        return None, None
    per_rule = (budget.rule_max, budget.per) if budget.rule_max else None
    return (budget.max, budget.per), per_rule

