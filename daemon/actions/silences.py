"""The `silence` guard: an operator who silenced something in Alertmanager has said
"leave it alone", and remedyd does.

A decision is matched by its label set: {"alertname": <rule>} + the rule's labels +
the event's `labels` attribute (an alert's or a KPI series' own) + {"namespace": <the
target's>}, later ones winning. Any active silence whose matchers all hold refuses it,
audited with the silence's id, author and comment.

Silences are read at most every `ttl` seconds (one request however many decisions
wait for it), so a silence created just now may take that long to count.

When Alertmanager cannot be asked (down, an error, a silence whose regex cannot be
evaluated here): a plan that changes something is refused (it may be silenced, and
an action nobody wanted is worse than one that waits), while a notification-only
plan goes ahead with a warning (a page that might have been silenced beats none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.clients.alertmanager import AlertmanagerClient, AlertmanagerError, Silence
from daemon.core.decisions import Decision
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.silences")

CACHE_TTL = 5.0
_COMMENT = 120


def decision_labels(decision: Decision) -> dict[str, str]:
    labels = {"alertname": decision.rule.name, **decision.rule.labels}
    own = decision.event.attributes.get("labels")
    if isinstance(own, Mapping):
        labels.update({str(k): str(v) for k, v in own.items()})
    if decision.target.namespace:
        labels["namespace"] = decision.target.namespace
    return labels


def describe(silence: Silence) -> str:
    comment = silence.comment if len(silence.comment) <= _COMMENT else (
        silence.comment[:_COMMENT] + "...")
    return f"silence {silence.id} by {silence.created_by or '?'}: {comment!r}"


class SilenceGuard(BaseGuard):
    name = "silence"
    # A silence expires: a breach still firing then is acted on.
    transient = True

    def __init__(self, client: AlertmanagerClient, metrics: Metrics, ttl: float = CACHE_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._metrics = metrics
        self._ttl = ttl
        self._clock = clock
        self._wall_clock = wall_clock
        self._read_at = -float("inf")
        self._cached: list[Silence] | AlertmanagerError = []
        self._reading: asyncio.Future[list[Silence] | AlertmanagerError] | None = None

    async def check(self, ctx: GuardContext) -> GuardResult:
        if not ctx.decision.rule.silences:
            return self.ok()
        silences = await self._silences()
        if isinstance(silences, AlertmanagerError):
            return self._unknown(ctx, f"Alertmanager's silences cannot be read: {silences}")
        labels = decision_labels(ctx.decision)
        now = self._wall_clock()
        unreadable = ""
        for silence in silences:
            if not silence.active(now):
                continue
            if silence.unreadable:
                unreadable = unreadable or f"silence {silence.id}: {silence.unreadable}"
            elif silence.matches(labels):
                return self.refuse(describe(silence))
        if unreadable:
            return self._unknown(ctx, unreadable)
        return self.ok()

    def _unknown(self, ctx: GuardContext, why: str) -> GuardResult:
        if ctx.mutating:
            return self.refuse(f"{why}; not acting on a plan that changes something while "
                               "it may be silenced")
        log.warning("rule %s: %s; notifying anyway (notification-only plan)",
                    ctx.decision.rule.name, why)
        return GuardResult(self.name, "ok", f"{why}; notification-only plan let through")

    async def _silences(self) -> list[Silence] | AlertmanagerError:
        if self._clock() - self._read_at < self._ttl:
            return self._cached
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        reading = self._reading
        # shield: one waiting decision cancelled does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read(self) -> list[Silence] | AlertmanagerError:
        try:
            result: list[Silence] | AlertmanagerError = await self._client.silences()
            self._metrics.silence_fetches.labels("ok").inc()
        except Exception as exc:  # AlertmanagerError, or a bug: either way, unknown
            self._metrics.silence_fetches.labels("error").inc()
            log.warning("%s", exc)
            result = exc if isinstance(exc, AlertmanagerError) else AlertmanagerError(
                f"{type(exc).__name__}: {exc}")
        # Errors are kept as long as answers: a down Alertmanager is asked every ttl,
        # not once per decision, each waiting out its timeout.
        self._cached, self._read_at, self._reading = result, self._clock(), None
        return result
