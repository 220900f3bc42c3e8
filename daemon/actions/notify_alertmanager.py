"""notify.alertmanager: the incident as an alert on Alertmanager's API v2, so it follows
the operators' routing, grouping, inhibitions and silences.

The alert's labels name the incident (alertname = the rule, incident, target, severity,
source), so the firing and the resolved post are one alert to Alertmanager, and a resend
(the outbox's, after a crash) is de-duplicated by it. As Prometheus does, a firing alert
carries an `endsAt` a few refresh intervals ahead and is posted again every interval
while the rule's state fires: an alert whose remedyd died expires on its own instead of
firing forever. When the rule's state for the incident resolves (a state hook), the alert
is posted once more with `endsAt` now, through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from daemon.actions.base import Refusal
from daemon.actions.notify import Notification
from daemon.actions.notify_text import about, key_of, render, severity
from daemon.actions.outbox import Outbox
from daemon.actions.params import AlertmanagerParams
from daemon.clients.http import HttpClient, HttpError
from daemon.core.decisions import Decision
from daemon.core.errors import PermanentError, TemporaryError
from daemon.core.redact import redact_url
from daemon.engine.changes import StateChange

log = logging.getLogger("remedyd.notify.alertmanager")

REFRESH = 60.0
# endsAt of a firing alert, in refresh intervals ahead (Prometheus uses 4 evaluations).
HOLD = 4


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def alert_of(decision: Decision, params: AlertmanagerParams, generator: str,
             now: float) -> dict[str, Any]:
    target = decision.target
    labels = {**decision.rule.labels, **params.labels,
              "alertname": decision.rule.name, "incident": decision.incident_id,
              "target_kind": target.kind, "target_name": target.name,
              "target_namespace": target.namespace, "severity": severity(decision),
              "source": decision.event.source}
    annotations = {"summary": render(params.summary or "{summary}", decision),
                   "description": render(params.description or "{description}", decision)}
    check = decision.rule.security
    if check is not None:
        labels["check"] = check.id
        annotations.update(control=check.control, remediation=check.remediation)
    return {"labels": {k: v for k, v in labels.items() if v},
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": rfc3339(now), "generatorURL": generator}


@dataclass
class _Firing:
    url: str
    alert: dict[str, Any]
    timeout: float
    keys: list[str] = field(default_factory=list)
    about: Mapping[str, Any] = field(default_factory=dict)


class AlertmanagerNotify(Notification):
    name = "notify.alertmanager"
    Params = AlertmanagerParams

    def __init__(self, http: HttpClient, default_url: str | None, outbox: Outbox | None,
                 generator: str, refresh: float = REFRESH,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.http = http
        self.default_url = default_url.rstrip("/") if default_url else None
        self.outbox = outbox
        self.generator = generator
        self.refresh = refresh
        self.clock = wall_clock
        # Incidents whose alert fires: refreshed until their rule's state resolves.
        self.firing: dict[str, _Firing] = {}
        if outbox is not None:
            outbox.register(self.name, self.deliver)

    def _url(self, params: AlertmanagerParams) -> str | None:
        return str(params.url).rstrip("/") if params.url is not None else self.default_url

    async def preflight(self, decision: Decision, params: BaseModel,
                        state: Mapping[str, Any] | None) -> Refusal | None:
        assert isinstance(params, AlertmanagerParams)
        if not self._url(params):
            return Refusal("no_receiver", "no Alertmanager url: set it on the action or as "
                           "[alertmanager] url")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, AlertmanagerParams)
        url = self._url(params)
        assert url is not None
        now = self.clock()
        firing = self.firing.get(decision.incident_id)
        if firing is None:
            alert = alert_of(decision, params, self.generator, now)
            firing = self.firing[decision.incident_id] = _Firing(
                url, alert, params.timeout, about=about(decision))
        key = key_of(decision, self.name, params, self.parse)
        if key not in firing.keys:
            firing.keys.append(key)
        alert = {**firing.alert, "endsAt": rfc3339(now + HOLD * self.refresh)}
        payload = {"url": url, "alerts": [alert], "timeout": params.timeout}
        if self.outbox is None:
            return await self.deliver(payload, key)
        return await self.outbox.send(key, self.name, payload, about(decision))

    async def deliver(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        url = f"{payload['url']}/api/v2/alerts"
        try:
            status = await self.http.post_json(url, payload["alerts"],
                                               float(payload["timeout"]))
        except HttpError as exc:
            raise TemporaryError(f"alertmanager {redact_url(url)}: unreachable") from exc
        if status < 300:
            return {"url": redact_url(url), "status": status,
                    "resolved": any(a.get("endsAt", "") <= rfc3339(self.clock())
                                    for a in payload["alerts"])}
        if 400 <= status < 500 and status not in (408, 429):
            raise PermanentError(f"alertmanager {redact_url(url)} refused the alert: "
                                 f"HTTP {status}")
        raise TemporaryError(f"alertmanager {redact_url(url)} answered HTTP {status}")

    # -- resolution and refresh ---------------------------------------------------------------

    def on_state(self, change: StateChange) -> None:
        if change.change != "resolved":
            return
        firing = self.firing.pop(change.incident, None)
        if firing is None:
            return
        ended = rfc3339(self.clock())
        alert = {**firing.alert, "endsAt": ended}
        for key in firing.keys:
            # Not delivered yet: when it is, it says the incident is over already.
            if self.outbox is not None:
                self.outbox.update(key, lambda e: e["payload"].update(alerts=[alert]))
        payload = {"url": firing.url, "alerts": [alert], "timeout": firing.timeout}
        key = firing.keys[0].rsplit("/", 1)[0] + "/resolved"
        if self.outbox is None:
            asyncio.get_running_loop().create_task(self._best_effort(payload, key))
            return
        self.outbox.put(key, self.name, payload, firing.about)
        self.outbox.kick()

    async def _best_effort(self, payload: Mapping[str, Any], key: str) -> None:
        try:
            await self.deliver(payload, key)
        except (TemporaryError, PermanentError) as exc:
            log.warning("%s: %s", key, exc)

    # A Source to the daemon: the refresh loop, started with the others.
    @property
    def source_name(self) -> str:
        return "alertmanager-alerts"

    def status(self) -> dict[str, Any]:
        return {"synced": True, "firing": len(self.firing)}

    async def run_refresh(self) -> None:
        """Post every firing alert again each interval, with its endsAt moved ahead."""
        while True:
            await asyncio.sleep(self.refresh)
            by_url: dict[str, list[dict[str, Any]]] = {}
            ends = rfc3339(self.clock() + HOLD * self.refresh)
            for firing in list(self.firing.values()):
                by_url.setdefault(firing.url, []).append({**firing.alert, "endsAt": ends})
            for url, alerts in by_url.items():
                try:
                    await self.deliver({"url": url, "alerts": alerts, "timeout": 10.0},
                                       "refresh")
                except (TemporaryError, PermanentError) as exc:
                    log.warning("could not refresh %d firing alert(s): %s", len(alerts), exc)
