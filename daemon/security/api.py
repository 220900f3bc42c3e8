"""The security API: what the security rules find now, and accepting a change.

`GET /api/v1/security/findings` reads the findings kept from the engine's state changes
of `source: security` rules (firing: a finding; resolved: gone), so it says what the
engine decided, not a second evaluation that could disagree with it.

`POST /api/v1/security/accept` changes the approved baseline, so it needs the
`[server] api_token` (a bearer token, compared in constant time); with none configured
it answers 403: nothing on the API changes state without one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from daemon.core.rules import SecurityCheck
from daemon.engine.changes import StateChange
from daemon.engine.ruleset import RuleSet
from daemon.http.webhook_auth import Credentials
from daemon.http.webhooks import read_limited
from daemon.security.events import baseline_key
from daemon.security.tracker import BaselineUnavailable, PostureTracker
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.security.api")

FINDINGS_PATH = "/api/v1/security/findings"
ACCEPT_PATH = "/api/v1/security/accept"
MAX_ACCEPT_BODY = 64 * 1024


def _error(status: int, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": message, **details}, status=status)


class CurrentFindings:
    """The security findings firing now, from the engine's state changes."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self._checks: dict[str, SecurityCheck] = {}  # rule name -> its check
        self._firing: dict[tuple[str, str], dict[str, Any]] = {}

    def on_rules(self, ruleset: RuleSet) -> None:
        self._checks = {c.rule.name: c.rule.security for c in ruleset.rules
                        if c.rule.security is not None}
        # A rule removed on reload fires no more: its findings would never resolve.
        for key in [k for k in self._firing if k[0] not in self._checks]:
            self._drop(key)

    def on_state(self, change: StateChange) -> None:
        check = self._checks.get(change.rule)
        if check is None:
            return
        key = (change.rule, change.subject.key)
        if change.change == "firing":
            if key in self._firing:
                return
            event = change.event
            drift = event.attributes.get("drift") if event is not None else None
            self._firing[key] = {
                "check": check.id, "severity": check.severity, "control": check.control,
                "remediation": check.remediation, "rule": change.rule,
                "subject": change.subject.as_dict(), "object": baseline_key(change.subject),
                "since": event.observed_at if event is not None else self._clock(),
                "incident": change.incident,
                "drift": drift if isinstance(drift, list) else []}
            self._metrics.security_findings.labels(check.id, check.severity).inc()
        elif change.change == "resolved":
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        found = self._firing.pop(key, None)
        if found is not None:
            self._metrics.security_findings.labels(found["check"], found["severity"]).dec()

    def all(self) -> list[dict[str, Any]]:
        return sorted(self._firing.values(), key=lambda f: (f["object"], f["check"]))


def parse_accept(body: bytes) -> dict[str, Any] | web.Response:
    """The accept request in `body`, or the 400 naming the field that is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"body is not JSON: {exc}", field="body")
    if not isinstance(doc, dict):
        return _error(400, "expected a JSON object {object, checks?, reason?, by?}",
                      field="body")
    target = doc.get("object")
    if not isinstance(target, str) or not target.strip():
        return _error(400, "object: expected a non-empty string such as "
                      "docker/container/NAME", field="object")
    checks = doc.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(c, str) and c for c in checks):
        return _error(400, "checks: expected a list of check ids", field="checks")
    for name in ("reason", "by"):
        if not isinstance(doc.get(name, ""), str):
            return _error(400, f"{name}: expected a string", field=name)
    unknown = sorted(set(doc) - {"object", "checks", "reason", "by"})
    if unknown:
        return _error(400, f"unknown field {unknown[0]!r}", field=unknown[0])
    return {"object": target.strip(), "checks": checks, "reason": doc.get("reason", ""),
            "by": doc.get("by", "") or "api"}


def security_routes(findings: CurrentFindings, tracker: PostureTracker,
                    token: str | None) -> list[web.AbstractRouteDef]:
    credentials = Credentials(token=token)

    async def list_findings(request: web.Request) -> web.Response:
        return web.json_response({"findings": findings.all()})

    async def accept(request: web.Request) -> web.Response:
        if token is None:
            return _error(403, "accepting needs [server] api_token set in the daemon's "
                          "configuration; none is, so the API changes nothing")
        if not credentials.allows(request.headers.get("Authorization")):
            response = _error(401, "missing or wrong bearer token ([server] api_token)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="remedyd"'
            return response
        body = await read_limited(request, MAX_ACCEPT_BODY)
        if isinstance(body, web.Response):
            return body
        parsed = parse_accept(body)
        if isinstance(parsed, web.Response):
            return parsed
        key = parsed["object"]
        if tracker.tracked(key) is None and "/" not in key:
            key = f"docker/container/{key}"  # a bare container name, as `docker ps` shows
        try:
            result = tracker.accept(key, parsed["checks"], by=parsed["by"],
                                    reason=parsed["reason"])
        except KeyError:
            return _error(404, f"no object {parsed['object']!r} is being watched (names "
                          "as findings give them: docker/container/NAME, "
                          "kubernetes/KIND/[NAMESPACE/]NAME)", field="object")
        except BaselineUnavailable as exc:
            return _error(409, f"the baseline could not be loaded, so nothing can be "
                          f"accepted into it: {exc}")
        log.info("security: %s accepted %s%s (%s)", result["by"], key,
                 f" for {', '.join(result['checks'])}" if result["checks"] else "",
                 result["reason"] or "no reason given")
        return web.json_response({"accepted": result})

    return [web.get(FINDINGS_PATH, list_findings), web.post(ACCEPT_PATH, accept)]
