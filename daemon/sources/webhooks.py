"""Inbound webhooks -> Events: Alertmanager's alerts and generic signed deliveries.

The HTTP layer (daemon/http/webhooks.py) authenticates and reads a request; what it
carried is handed here, turned into events and put on the engine's bus. A delivery is
remembered only once the bus took it: a sender answered 503 (the bus full) retries,
and its retry goes in, while a repeat of something taken is recognised and dropped.

Alertmanager repeats itself on purpose: it retries a failed notification, both members
of an HA pair notify, and every group_interval re-sends the group with its still-firing
alerts. An alert is one occurrence per (fingerprint, startsAt, status), so that is
what a re-delivery is recognised by.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.core.events import Event, JSONValue, Ref
from daemon.sources.webhook_payloads import Alert, Notification
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.source.webhook")

SOURCE = "webhook"
# Alerts remembered as delivered: at ~150 bytes each, 100,000 are ~15 MiB at most; an
# occurrence older than a day (more than Alertmanager's default repeat_interval of 4h)
# that is re-sent is taken as new, and the rule's cooldown decides what to do with it.
SEEN_ALERTS = 100_000
SEEN_FOR = 86_400.0
# Generic deliveries remembered per webhook (their signatures, until their timestamp
# leaves the replay window); only correctly signed ones are, so filling it needs the key.
SEEN_SIGNATURES = 100_000
# Distinct receiver names a metric is labelled with; the rest count as "other".
RECEIVER_LABELS = 32


class Recent:
    """Keys seen, each until it expires; at most `limit`, the oldest forgotten first."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._limit = limit
        self._clock = clock

    def __contains__(self, key: str) -> bool:
        expires = self._expiry.get(key)
        return expires is not None and expires > self._clock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, key: str, expires: float) -> None:
        self._expiry[key] = expires
        self._expiry.move_to_end(key)
        now = self._clock()
        # Insertion order is close to expiry order (a window's worth apart at most), so
        # trimming the front keeps memory bounded; lookups check expiry themselves.
        while self._expiry:
            oldest, at = next(iter(self._expiry.items()))
            if at > now and len(self._expiry) <= self._limit:
                break
            del self._expiry[oldest]


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of a delivery's alerts."""

    accepted: int = 0
    duplicates: int = 0
    # Not taken: the bus was full. The sender must retry (503).
    dropped: int = 0


def alert_event(alert: Alert, notification: Notification, observed_at: float) -> Event:
    fingerprint = alert.fingerprint
    attributes: dict[str, JSONValue] = {
        "labels": dict(alert.labels), "annotations": dict(alert.annotations),
        "status": alert.status, "fingerprint": fingerprint, "startsAt": alert.starts_at,
        "endsAt": alert.ends_at, "generatorURL": alert.generator_url,
        "receiver": notification.receiver, "groupKey": notification.group_key,
    }
    return Event(
        source=SOURCE, kind="alert", action=alert.status,
        # An alert without an alertname (one posted by hand) is still one subject.
        subject=Ref(source=SOURCE, kind="alert", name=alert.labels.get("alertname")
                    or fingerprint, id=fingerprint),
        id=occurrence(alert), occurred_at=alert.occurred_at, observed_at=observed_at,
        attributes=attributes, resolves=("firing",) if alert.status == "resolved" else ())


def occurrence(alert: Alert) -> str:
    return f"alertmanager/{alert.fingerprint}/{alert.starts_at}/{alert.status}"


def generic_event(webhook: str, body: Any, delivery: str, occurred_at: float,
                  observed_at: float) -> Event:
    """A generic delivery (a JSON object; see decode_json for what it may hold)."""
    action = body.get("action")
    subject = body.get("subject")
    labels = body.get("labels")
    if not (isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())):
        labels = {}
    return Event(
        source=SOURCE, kind="generic",
        action=action if isinstance(action, str) and action else "received",
        subject=Ref(source=SOURCE, kind="generic",
                    name=subject if isinstance(subject, str) and subject else webhook),
        id=f"generic/{webhook}/{delivery}", occurred_at=occurred_at, observed_at=observed_at,
        attributes={"webhook": webhook, "payload": body, "labels": labels})


class AlertIntake:
    """Alertmanager notifications -> one event per alert occurrence not seen before."""

    def __init__(self, emit: Callable[[Event], object], metrics: Metrics,
                 clock: Callable[[], float] = time.time, seen_limit: int = SEEN_ALERTS) -> None:
        self._emit = emit
        self._metrics = metrics
        self._clock = clock
        self.seen = Recent(seen_limit, clock)
        self.totals = {"accepted": 0, "duplicate": 0, "dropped": 0, "truncated": 0}
        self._receivers: set[str] = set()
        self._counters = {(status, outcome): metrics.webhook_alerts.labels(status, outcome)
                          for status in ("firing", "resolved")
                          for outcome in ("accepted", "duplicate", "dropped")}

    def take(self, notification: Notification) -> Taken:
        now = self._clock()
        accepted = duplicates = dropped = 0
        if notification.truncated_alerts:
            self._truncated(notification)
        for alert in notification.alerts:
            key = occurrence(alert)
            if key in self.seen:
                outcome = "duplicate"
                duplicates += 1
            elif self._emit(alert_event(alert, notification, now)) is False:
                outcome = "dropped"
                dropped += 1
            else:
                self.seen.add(key, now + SEEN_FOR)
                outcome = "accepted"
                accepted += 1
            self._counters[alert.status, outcome].inc()
        self.totals["accepted"] += accepted
        self.totals["duplicate"] += duplicates
        self.totals["dropped"] += dropped
        return Taken(accepted, duplicates, dropped)

    def _truncated(self, notification: Notification) -> None:
        count = notification.truncated_alerts
        self.totals["truncated"] += count
        # The receiver's name is the sender's text: a bounded set of label values.
        receiver = notification.receiver[:64]
        if receiver not in self._receivers:
            if len(self._receivers) >= RECEIVER_LABELS:
                receiver = "other"
            else:
                self._receivers.add(receiver)
        self._metrics.webhook_truncated.labels(receiver).inc(count)
        # Those alerts never reach remedyd: the operator must raise max_alerts.
        log.warning("Alertmanager receiver %r left %d alert(s) out of group %s (its "
                    "webhook_config max_alerts); remedyd cannot act on them",
                    notification.receiver, count, notification.group_key)


class GenericIntake:
    """Signed generic deliveries -> events; a signature is accepted once."""

    def __init__(self, emit: Callable[[Event], object], names: list[str],
                 clock: Callable[[], float] = time.time,
                 seen_limit: int = SEEN_SIGNATURES) -> None:
        self._emit = emit
        self._clock = clock
        self.seen = {name: Recent(seen_limit, clock) for name in names}
        self.totals = {"accepted": 0, "dropped": 0, "replayed": 0}

    def replayed(self, webhook: str, signature: str) -> bool:
        if signature in self.seen[webhook]:
            self.totals["replayed"] += 1
            return True
        return False

    def take(self, webhook: str, body: Any, signature: str, timestamp: float,
             remember_until: float) -> bool:
        """False when the bus was full (nothing remembered: the retry goes in)."""
        event = generic_event(webhook, body, signature, timestamp, self._clock())
        if self._emit(event) is False:
            self.totals["dropped"] += 1
            return False
        self.seen[webhook].add(signature, remember_until)
        self.totals["accepted"] += 1
        return True


class WebhookSource:
    """The webhooks' place among the sources: readiness and counts. The HTTP server does
    the receiving, so there is nothing to run; it is ready as soon as it listens."""

    name = SOURCE

    def __init__(self, alerts: AlertIntake | None, generic: GenericIntake | None) -> None:
        self.alerts = alerts
        self.generic = generic

    async def run(self) -> None:
        await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"synced": True}
        if self.alerts is not None:
            status["alertmanager"] = {**self.alerts.totals, "remembered": len(self.alerts.seen)}
        if self.generic is not None:
            status["generic"] = {**self.generic.totals,
                                 "webhooks": sorted(self.generic.seen)}
        return status
