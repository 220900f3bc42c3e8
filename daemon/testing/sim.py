"""The daemon's engine loop and executor on a fake clock, with recording actions and an
audit log in a file of its own: what `remedyd test` and `remedyd replay` run."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.flapping import FlappingGuard
from daemon.actions.ladder import Ladder
from daemon.audit.log import AuditLog
from daemon.core.events import Event, Ref
from daemon.engine.evaluator import EvaluationProblem, Evaluator
from daemon.engine.ruleset import RuleSet
from daemon.kube.cache import Cache
from daemon.settings import NotifySettings, SafetySettings, Settings
from daemon.telemetry.metrics import Metrics
from daemon.testing.fakeloop import FakeClockLoop
from daemon.testing.recorder import Recording, recorders

# Timers and `for` holds one advance() stops at, at most: a replay of a day of events
# stops a few times per event.
MAX_STOPS = 10_000_000


@dataclass(frozen=True)
class Happened:
    """A decision (as audited) or a change of a rule's state for a subject."""

    at: float  # seconds since the start
    rule: str
    what: str  # "decision" | "state"
    status: str  # act | suppressed | escalate, or the state change
    target: Ref | None = None  # the decision's target, the state's subject
    guard: str = ""
    reason: str = ""
    actions: tuple[str, ...] = ()
    step: int = 0
    incident: str = ""


def executor_settings(settings: Settings | None = None) -> ExecutorSettings:
    """As the daemon builds its executor from the configuration; None: the defaults
    (not the environment's REMEDYD_* either, so a test means the same everywhere)."""
    safety = settings.safety if settings is not None else SafetySettings()
    notify = settings.notify if settings is not None else NotifySettings()
    return ExecutorSettings(
        dry_run=safety.dry_run, action_timeout=safety.action_timeout,
        max_attempts=safety.max_attempts, global_max=safety.max_actions,
        global_per=safety.max_actions_per, notify_max=notify.max_notifications,
        notify_per=notify.max_notifications_per, coalesce_window=safety.coalesce_window)


class _TeeAudit(AuditLog):
    """The audit log, and every record it stores handed to the simulation as well."""

    def __init__(self, path: Path, sink: list[dict[str, Any]], clock: Any) -> None:
        super().__init__(path, fsync=False, clock=clock)
        self.sink = sink

    def append(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        stored = super().append(kind, fields)
        self.sink.append(stored)
        return stored


class Simulation:
    """Feed events at times; read off what was decided, suppressed and changed."""

    def __init__(self, ruleset: RuleSet, settings: ExecutorSettings, audit_path: Path,
                 wall_start: float = 0.0, cache: Cache | None = None,
                 notify_url: str | None = None) -> None:
        self.loop = FakeClockLoop()
        self.wall_start = wall_start
        self.records: list[dict[str, Any]] = []
        self.audit = _TeeAudit(audit_path, self.records, self.wall_time)
        self.audit.open()
        counter = itertools.count(1)
        self.evaluator = Evaluator(ruleset, new_id=lambda: f"incident-{next(counter):04d}")
        self.recording = Recording()
        self.executor = Executor(recorders(self.recording, self.loop.time, cache), self.audit,
                                 Metrics(CollectorRegistry()), settings, clock=self.loop.time,
                                 wall_clock=self.wall_time)
        # As the daemon wires them: decisions made while flapping are refused (audited),
        # ladders verify and escalate (a PromQL `verify.query` has no Prometheus here:
        # unknown). The gates that ask a peer (unless, recheck, silences, Kubernetes
        # leadership and cache) are not in the chain.
        self.executor.insert_guard(FlappingGuard(), before="superseded")
        self.ladder = Ladder(self.executor, notify_url=notify_url)
        self.happened: list[Happened] = []
        self.problems: list[EvaluationProblem] = []
        self._read = 0

    def wall_time(self) -> float:
        return self.wall_start + self.loop.now

    @property
    def now(self) -> float:
        return self.loop.now

    def close(self) -> None:
        self.audit.close()
        self.loop.close()

    # -- driving it ------------------------------------------------------------------------

    async def advance(self, until: float) -> None:
        """Move the clock to `until`, stopping at every timer and `for` falling due (one
        due at `until` itself too: it fires before the events of that moment)."""
        for _ in range(MAX_STOPS):
            moments = [m for m in (self.loop.next_timer(), self.evaluator.next_due())
                       if m is not None and m <= until]
            if not moments:
                break
            self.loop.now = max(self.loop.now, min(moments))
            await self.loop.settle()
            await self._step(None)
        else:
            raise RuntimeError(f"more than {MAX_STOPS} timers before {until:g}s")
        self.loop.now = max(self.loop.now, until)
        await self.loop.settle()
        self._collect()

    async def feed(self, events: Sequence[Event]) -> None:
        """Events arriving at the current time, one after the other as the engine takes
        them off the bus."""
        for event in events:
            await self._step(event)

    async def _step(self, event: Event | None) -> None:
        """One turn of the daemon's engine loop (Daemon._engine_loop), in its order."""
        now = self.loop.now
        decisions = [] if event is None else self.evaluator.evaluate(event, now)
        if event is not None:
            self.ladder.observe(event)
        decisions += self.evaluator.due(now)
        self.problems.extend(self.evaluator.take_problems())
        for change in self.evaluator.take_changes():
            self.audit.append("state", change.summary())
            self.ladder.on_state(change)
        for decision in decisions:
            self.executor.submit(decision)
        await self.loop.settle()
        self._collect()

    async def drain(self) -> None:
        await self.ladder.close()
        await self.executor.drain(0.0)
        await self.loop.settle()
        self._collect()

    def _collect(self) -> None:
        for record in self.records[self._read:]:
            happened = _from_record(record, self.loop.now)
            if happened is not None:
                self.happened.append(happened)
        self._read = len(self.records)


def _from_record(record: Mapping[str, Any], at: float) -> Happened | None:
    if record.get("kind") == "decision":
        return Happened(
            at=at, rule=str(record.get("rule", "")), what="decision",
            status=str(record.get("decision", "")), target=ref_of_record(record.get("target")),
            guard=str(record.get("suppressed_by") or ""),
            reason=str(record.get("reason") or ""),
            actions=tuple(str(a.get("name")) for a in record.get("actions") or []
                          if isinstance(a, dict)),
            step=int(record.get("step") or 0), incident=str(record.get("incident", "")))
    if record.get("kind") == "state":
        return Happened(at=at, rule=str(record.get("rule", "")), what="state",
                        status=str(record.get("change", "")),
                        target=ref_of_record(record.get("subject")),
                        incident=str(record.get("incident", "")))
    return None


def ref_of_record(value: Any) -> Ref | None:
    """A Ref back from an audit record's `target` or `subject`."""
    if not isinstance(value, dict):
        return None
    try:
        return Ref(**{k: str(v) for k, v in value.items()
                      if k in ("source", "kind", "name", "id", "namespace")})
    except TypeError:
        return None
