"""notify.webhook: POST a JSON description of the incident; one attempt per run (the
executor retries, then the outbox when one is given). The body and the
`Idempotency-Key` header carry the send's key, so a receiver can drop a repeat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from daemon.actions.base import Action, Refusal
from daemon.actions.notify_text import about, key_of
from daemon.actions.outbox import Outbox
from daemon.actions.params import WebhookParams
from daemon.clients.http import HttpClient, HttpError
from daemon.core.decisions import Decision
from daemon.core.errors import PermanentError, TemporaryError
from daemon.core.redact import redact_url


class Notification(Action):
    """What every notify action shares: it changes nothing, and a rule's `retries` sets
    the executor's attempts."""

    mutating = False

    def attempts(self, params: BaseModel) -> int | None:
        retries = getattr(params, "retries", None)
        return None if retries is None else int(retries) + 1


class Webhook(Notification):
    name = "notify.webhook"
    Params = WebhookParams

    def __init__(self, http: HttpClient, default_url: str | None,
                 outbox: Outbox | None = None) -> None:
        self.http = http
        self.default_url = default_url
        self.outbox = outbox
        if outbox is not None:
            outbox.register(self.name, self.deliver)

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
        key = key_of(decision, self.name, params, self.parse)
        body["idempotency_key"] = key
        payload = {"url": url, "body": body, "timeout": params.timeout}
        if self.outbox is None:
            return await self.deliver(payload, key)
        return await self.outbox.send(key, self.name, payload, about(decision))

    async def deliver(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        url, shown = str(payload["url"]), redact_url(str(payload["url"]))
        try:
            status = await self.http.post_json(url, payload["body"], float(payload["timeout"]),
                                               headers={"Idempotency-Key": key})
        except HttpError as exc:
            raise TemporaryError(f"webhook {str(exc).replace(url, shown)}") from exc
        if status < 300:
            return {"url": shown, "status": status}
        if 400 <= status < 500 and status not in (408, 429):
            raise PermanentError(f"webhook {shown} refused the notification: HTTP {status}")
        raise TemporaryError(f"webhook {shown} answered HTTP {status}")
