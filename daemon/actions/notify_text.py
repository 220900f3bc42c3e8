"""What a notification says about an incident, shared by every notify action: the fields
its `title`/`body` templates may name, and the idempotency key of one send."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from daemon.actions.outbox import idempotency_key
from daemon.core.decisions import Decision

# `{name}` placeholders a title or body may use (str.format syntax, nothing else).
FIELDS = ("rule", "description", "summary", "incident", "severity", "check", "control",
          "remediation", "target", "kind", "namespace", "source", "event")
DEFAULT_TITLE = "[remedyd] {rule} on {target} ({severity})"
DEFAULT_BODY = "{summary}\nrule {rule}, incident {incident}\n{kind} {target}{namespace}\n" \
               "{check}event: {event}"


def check_template(template: str) -> str:
    """Raise ValueError unless every placeholder is one of FIELDS (checked at rule load)."""
    for _, field, spec, conv in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in FIELDS or spec or conv:
            raise ValueError(f"{template!r}: {{{field}}} is not one of "
                             + ", ".join("{" + f + "}" for f in FIELDS))
    return template


def severity(decision: Decision) -> str:
    check = decision.rule.security
    return check.severity if check is not None else decision.rule.labels.get("severity", "")


def fields(decision: Decision) -> dict[str, str]:
    rule, target, event = decision.rule, decision.target, decision.event
    check = rule.security
    summary = rule.annotations.get("summary") or rule.description or rule.name
    return {
        "rule": rule.name, "description": rule.description, "summary": summary,
        "incident": decision.incident_id, "severity": severity(decision) or "unset",
        "check": f"check {check.id}: {check.control}; fix: {check.remediation}\n"
                 if check is not None else "",
        "control": check.control if check is not None else "",
        "remediation": check.remediation if check is not None else "",
        "target": target.name, "kind": target.kind,
        "namespace": f" in namespace {target.namespace}" if target.namespace else "",
        "source": event.source,
        "event": f"{event.source} {event.kind} {event.action}"
                 + (f" {json.dumps(dict(event.attributes), sort_keys=True, default=str)[:500]}"
                    if event.attributes else ""),
    }


def render(template: str, decision: Decision) -> str:
    return template.format_map(fields(decision))


def key_of(decision: Decision, action: str, params: BaseModel, parse: Any,
           phase: str = "firing") -> str:
    """The idempotency key of this action's send for `decision`: its index in the rung's
    actions (two identical notifications in one rung are one), or, in an escalation's
    plan, a digest of its parameters."""
    digest = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True)
                            .encode()).hexdigest()
    index: int | str = "x" + digest[:12]
    for i, spec in enumerate(decision.actions):
        if spec.name == action and parse(spec.params) == params:
            index = i
            break
    return idempotency_key(decision.incident_id, decision.rule.name, decision.step, index,
                           phase)


def about(decision: Decision) -> Mapping[str, Any]:
    """What the audit record of a send the outbox settled says of its incident."""
    return {"incident": decision.incident_id, "rule": decision.rule.name,
            "target": decision.target.as_dict()}

