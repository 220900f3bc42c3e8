"""PromQL gates before acting: `unless:` queries, and a fresh re-check of a KPI breach.

Both ask Prometheus just before a repair changes something, and both fail closed: a
gate that cannot ask (Prometheus unreachable, a refused query) refuses, saying so,
since acting while a blocking condition may hold, or on a breach that may be over, is
what they exist to prevent. Notifications pass: telling someone costs nothing to undo.
"""

from __future__ import annotations

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.clients.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusUnreachable,
    Sample,
)
from daemon.core.conditions import ConditionError
from daemon.core.events import Event
from daemon.engine.kpi import SOURCE, missing_event, sample_event, series_id, still_breaching
from daemon.engine.targets import labels_of


def _value(sample: Sample) -> str:
    return f"{sample.value:g}"


def _cannot_ask(what: str, exc: PrometheusError) -> str:
    why = "Prometheus unreachable" if isinstance(exc, PrometheusUnreachable) else "query failed"
    return f"{what}: {why}, refusing to act (fail closed): {exc}"


class UnlessGuard(BaseGuard):
    """Any of the rule's `unless:` queries answering a series blocks the repair, as
    kured's blocking alerts block a reboot."""

    name = "unless"
    # A blocking query is a "not now": the breach is acted on once it stops blocking.
    transient = True

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client

    async def check(self, ctx: GuardContext) -> GuardResult:
        queries = ctx.decision.rule.unless
        if not queries or not ctx.mutating:
            return self.ok()
        for query in queries:
            try:
                result = await self.client.query(query)
            except PrometheusError as exc:
                return self.refuse(_cannot_ask(f"unless {query!r}", exc))
            if result.samples:
                first = result.samples[0]
                return self.refuse(
                    f"unless {query!r} answered {len(result.samples)} series, first "
                    f"{series_id(first.labels)} = {_value(first)}")
        return self.ok()


class RecheckGuard(BaseGuard):
    """A KPI decision's query asked again just before acting: a series that recovered
    meanwhile (the rule's condition no longer holds, or the series is gone) is left
    alone."""

    name = "recheck"

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client

    async def check(self, ctx: GuardContext) -> GuardResult:
        decision = ctx.decision
        rule, event = decision.rule, decision.event
        if event.source != SOURCE or rule.query is None or not ctx.mutating:
            return self.ok()
        try:
            result = await self.client.query(rule.query)
        except PrometheusError as exc:
            return self.refuse(_cannot_ask("could not re-check the KPI before acting", exc))
        fresh = self._fresh(rule.name, event, result.samples)
        try:
            breaching = still_breaching(rule, fresh)
        except ConditionError as exc:
            return self.refuse(f"could not re-check the KPI before acting: {exc}")
        value = fresh.attributes.get("value")
        now = (f"{value:g}" if isinstance(value, float) else
               f"missing ({fresh.attributes.get('reason')})")
        if not breaching:
            return self.refuse(f"recovered before acting: {event.subject.id} is now {now}")
        return GuardResult(self.name, "ok", f"still breaching: {event.subject.id} is {now}")

    @staticmethod
    def _fresh(rule: str, event: Event, samples: tuple[Sample, ...]) -> Event:
        """The event the source would make of the series in a fresh answer."""
        observed = event.observed_at
        for sample in samples:
            if series_id(sample.labels) == event.subject.id:
                if sample.is_nan:
                    return missing_event(rule, sample.labels, "nan", sample.at, observed)
                return sample_event(rule, sample.labels, sample.value, sample.at, observed)
        at = samples[0].at if samples else event.occurred_at
        return missing_event(rule, labels_of(event), "empty", at, observed)
