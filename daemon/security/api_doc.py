"""The OpenAPI description of the security API (daemon/security/api.py)."""

from __future__ import annotations

from typing import Any

from daemon.http.openapi import answer, error, get, post
from daemon.security.api import ACCEPT_PATH, FINDINGS_PATH

_FINDING = {"type": "object", "properties": {
    "check": {"type": "string"}, "severity": {"type": "string"},
    "control": {"type": "string"}, "remediation": {"type": "string"},
    "rule": {"type": "string"}, "subject": {"type": "object"},
    "object": {"type": "string"}, "since": {"type": "number"},
    "incident": {"type": "string"},
    "drift": {"type": "array", "items": {"type": "object"}}}}


def security_api() -> dict[str, dict[str, Any]]:
    return {
        FINDINGS_PATH: get("The security findings firing now", {
            "200": answer("Findings, by object and check", {"type": "object", "properties": {
                "findings": {"type": "array", "items": _FINDING}}})}),
        ACCEPT_PATH: post(
            "Accept an object's current security state into the baseline, or with checks, "
            "those findings on it as they are (audited)",
            {"200": answer("Accepted", {"type": "object", "properties": {
                "accepted": {"type": "object"}}}),
             "400": error("The body is not the expected object; `field` names where"),
             "401": error("Missing or wrong bearer token ([server] api_token)"),
             "403": error("No [server] api_token is configured: the API changes nothing"),
             "404": error("No such object is being watched"),
             "409": error("The baseline could not be loaded"),
             "413": error("The body is larger than 64 KiB")},
            body={"type": "object", "required": ["object"], "additionalProperties": False,
                  "properties": {
                      "object": {"type": "string", "minLength": 1,
                                 "description": "docker/container/NAME or "
                                 "kubernetes/KIND/[NAMESPACE/]NAME, as findings name it"},
                      "checks": {"type": "array", "items": {"type": "string",
                                                            "minLength": 1}},
                      "reason": {"type": "string"}, "by": {"type": "string"}}},
            security=[{"bearer": []}]),
    }
