"""`source: kpi` rules: each rule's PromQL polled every `interval`, each series answered
as a KPI sample event for that rule.

The scheduler (apscheduler's AsyncIOScheduler) only says when to poll; whether a value
has breached for long enough is the engine's business, on its own clock. A poll still
running when the next one is due is not doubled (max_instances=1: the late one is
counted as skipped), and polls missed while the loop stalled run once, not in a burst
(coalesce). An empty answer or NaN becomes a `missing` event (the rule's `on_missing`
decides what it means); Prometheus unreachable or a refused query becomes no event at
all (no breach invented, none cleared), only an audited change of the rule's query
state, a metric and the source's status. Polling goes on meanwhile, so it resumes by
itself when Prometheus is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.clients.prometheus import PrometheusClient, PrometheusError, QueryResult
from daemon.core.events import Event
from daemon.core.rules import Rule
from daemon.engine.kpi import missing_event, sample_event, series_id
from daemon.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

log = logging.getLogger("remedyd.source.kpi")

STATES = ("ok", "empty", "nan", "unreachable", "error")
# Polls a series that stopped answering keeps getting `missing` events before it is
# forgotten (series come and go with pods; the set must not grow without bound).
FORGET_AFTER = 10


@dataclass
class _Series:
    labels: dict[str, str]
    missed: int = 0


@dataclass
class RuleQuery:
    """What the last poll of one rule did."""

    state: str = "pending"
    error: str = ""
    series: int = 0
    at: float | None = None
    duration_s: float | None = None
    seen: dict[str, _Series] = field(default_factory=dict)

    def as_status(self, interval: float) -> dict[str, Any]:
        return {"state": self.state, "error": self.error, "series": self.series,
                "interval_s": interval, "duration_s": self.duration_s,
                "last_query": None if self.at is None else
                datetime.fromtimestamp(self.at, UTC).isoformat()}


Audit = Callable[[str, dict[str, Any]], None]


class KpiSource:
    name = "kpi"

    def __init__(self, client: PrometheusClient, emit: Callable[[Event], object],
                 metrics: Metrics, audit: Audit, default_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._emit = emit
        self._metrics = metrics
        self._audit = audit
        self._default_interval = default_interval
        self._clock = clock
        self._rules: dict[str, Rule] = {}
        self._queries: dict[str, RuleQuery] = {}
        self._scheduled: dict[str, float] = {}  # rule -> interval its job runs at
        self._scheduler: AsyncIOScheduler | None = None
        self._polls: set[asyncio.Task[Any]] = set()

    # -- rules ---------------------------------------------------------------------------

    def interval_of(self, rule: Rule) -> float:
        return rule.interval or self._default_interval

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """The loaded rule set (called on every successful load): jobs follow it."""
        self._rules = {r.name: r for r in rules if r.source == "kpi" and r.query}
        for gone in set(self._queries) - set(self._rules):
            del self._queries[gone]
            for state in STATES:
                with contextlib.suppress(KeyError):
                    self._metrics.kpi_query_state.remove(gone, state)
        for name in self._rules:
            self._queries.setdefault(name, RuleQuery())
        self._sync_jobs()

    def _sync_jobs(self) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return  # run() schedules them when it starts
        from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

        for name in set(self._scheduled) - set(self._rules):
            with contextlib.suppress(Exception):  # JobLookupError: already gone
                scheduler.remove_job(name)
            del self._scheduled[name]
        for name, rule in self._rules.items():
            interval = self.interval_of(rule)
            if self._scheduled.get(name) == interval:
                continue  # a changed query is read at the next poll; the rhythm stays
            scheduler.add_job(
                self.poll, IntervalTrigger(seconds=interval), args=[name], id=name,
                name=f"kpi {name}", replace_existing=True, max_instances=1, coalesce=True,
                misfire_grace_time=max(1, int(interval)),
                next_run_time=datetime.now(UTC))
            self._scheduled[name] = interval

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        from apscheduler.events import (  # type: ignore[import-untyped]
            EVENT_JOB_MAX_INSTANCES,
            JobSubmissionEvent,
        )
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # Its INFO lines ("Running job ...") come every interval for every rule.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone="UTC")

        def skipped(event: JobSubmissionEvent) -> None:
            self._metrics.kpi_queries.labels(event.job_id, "skipped").inc()

        scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
        self._scheduler, self._scheduled = scheduler, {}
        scheduler.start()
        self._sync_jobs()
        try:
            await asyncio.Event().wait()
        finally:
            self._scheduler = None
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # its shutdown runs as a loop callback
            polls = list(self._polls)
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)

    async def poll(self, name: str) -> None:
        """One query of rule `name` and what follows from its answer."""
        rule = self._rules.get(name)
        query = self._queries.get(name)
        if rule is None or query is None or rule.query is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
        started = time.monotonic()
        try:
            result = await self._client.query(rule.query)
        except PrometheusError as exc:
            self._settle(rule, query, exc.state, str(exc), 0, started)
            return
        finally:
            if task is not None:
                self._polls.discard(task)
        events, state = self._events(rule, query, result)
        for event in events:
            self._emit(event)
        self._settle(rule, query, state, "", len(result.samples), started)

    def _events(self, rule: Rule, query: RuleQuery,
                result: QueryResult) -> tuple[list[Event], str]:
        observed = self._clock()
        at = result.samples[0].at if result.samples else observed
        events: list[Event] = []
        answered: set[str] = set()
        for sample in result.samples:
            ident = series_id(sample.labels)
            answered.add(ident)
            query.seen[ident] = _Series(dict(sample.labels))
            if sample.is_nan:
                events.append(missing_event(rule.name, sample.labels, "nan", sample.at,
                                            observed))
            else:
                events.append(sample_event(rule.name, sample.labels, sample.value, sample.at,
                                           observed))
        for ident, series in list(query.seen.items()):
            if ident in answered:
                continue
            series.missed += 1
            if series.missed > FORGET_AFTER:
                del query.seen[ident]
                continue
            events.append(missing_event(rule.name, series.labels, "empty", at, observed))
        if not result.samples and not query.seen:
            events.append(missing_event(rule.name, {}, "empty", at, observed))
        if not result.samples:
            return events, "empty"
        return events, "ok" if any(not s.is_nan for s in result.samples) else "nan"

    def _settle(self, rule: Rule, query: RuleQuery, state: str, error: str, series: int,
                started: float) -> None:
        query.duration_s = round(time.monotonic() - started, 6)
        query.at, query.series = self._clock(), series
        self._metrics.kpi_queries.labels(rule.name, state).inc()
        self._metrics.kpi_query_duration.observe(query.duration_s)
        previous = query.state
        query.state, query.error = state, error
        if state == previous:
            return
        for known in STATES:
            self._metrics.kpi_query_state.labels(rule.name, known).set(1 if known == state else 0)
        if state in ("unreachable", "error"):
            log.warning("kpi rule %s: query %s: %s (no events until it answers)", rule.name,
                        state, error)
        else:
            log.info("kpi rule %s: query %s (%d series)", rule.name, state, series)
        self._audit("kpi", {"rule": rule.name, "state": state, "error": error,
                            "previous": previous, "series": series})

    # -- what readiness shows ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        # Always synced: a daemon whose Prometheus is down still serves its other rules;
        # the per-rule states say what the KPI rules are missing.
        rules = {name: q.as_status(self.interval_of(self._rules[name]))
                 for name, q in self._queries.items() if name in self._rules}
        failing = sorted(name for name, q in self._queries.items()
                         if q.state in ("unreachable", "error"))
        return {"synced": True, "prometheus": self._client.peer, "rules": rules,
                "failing": failing}
