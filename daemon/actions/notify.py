"""notify.webhook: POST a JSON description of the incident; one attempt per run (the
executor retries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from daemon.actions.base import Action, Refusal
from daemon.actions.params import WebhookParams
from daemon.clients.http import HttpClient, HttpError
from daemon.core.decisions import Decision
from daemon.core.errors import PermanentError, TemporaryError


class Webhook(Action):
    name = "notify.webhook"
    Params = WebhookParams
    mutating = False

    def __init__(self, http: HttpClient, default_url: str | None) -> None:
        self.http = http
        self.default_url = default_url

    def attempts(self, params: BaseModel) -> int | None:
        assert isinstance(params, WebhookParams)
        return None if params.retries is None else params.retries + 1

    def _url(self, params: WebhookParams) -> str | None:
        return str(params.url) if params.url is not None else self.default_url

    async def preflight(self, decision: Decision, params: BaseModel,
                        state: Mapping[str, Any] | None) -> Refusal | None:
        assert isinstance(params, WebhookParams)
        if not self._url(params):
            return Refusal("no_receiver",
                           "no webhook url: set it on the action or as [notify] webhook_url")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, WebhookParams)
        url = self._url(params)
        assert url is not None
        body = {
            "version": "1",
            "incident": decision.incident_id,
            "rule": decision.rule.name,
            "description": decision.rule.description,
            "message": params.message or decision.rule.annotations.get("summary", ""),
            "labels": dict(decision.rule.labels),
            "annotations": dict(decision.rule.annotations),
            "target": decision.target.as_dict(),
            "event": decision.event.summary(),
        }
        check = decision.rule.security
        if check is not None:
            # The finding as scanners report it; a drift's field diff is in the event's
            # attributes (event.attributes.drift).
            body["security"] = {"id": check.id, "severity": check.severity,
                                "control": check.control, "remediation": check.remediation}
        try:
            status = await self.http.post_json(url, body, params.timeout)
        except HttpError as exc:
            raise TemporaryError(f"webhook {exc}") from exc
        if status < 300:
            return {"url": url, "status": status}
        if 400 <= status < 500 and status not in (408, 429):
            raise PermanentError(f"webhook {url} refused the notification: HTTP {status}")
        raise TemporaryError(f"webhook {url} answered HTTP {status}")
