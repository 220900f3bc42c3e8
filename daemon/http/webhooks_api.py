"""The OpenAPI description of the webhook endpoints (daemon/http/webhooks.py)."""

from __future__ import annotations

from typing import Any

from daemon.http.openapi import answer, error, post
from daemon.http.webhooks import (
    ALERTMANAGER_PATH,
    GENERIC_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

_TAKEN = {"type": "object", "properties": {
    "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
    "dropped": {"type": "integer"}}}
_COMMON = {
    "400": error("The body is not JSON or not the expected shape; `field` names where"),
    "413": error("The body is larger than [webhooks] max_body_bytes"),
    "503": error("The engine's queue is full, or this replica is a follower that could "
                 "not hand the webhook to the leader; retry after Retry-After seconds"),
}


def alertmanager_api() -> dict[str, dict[str, Any]]:
    return {ALERTMANAGER_PATH: post(
        "Alertmanager's webhook_config: each alert becomes an event (source: webhook)",
        {"200": answer("Taken (alerts seen before are counted as duplicates)", _TAKEN),
         "401": error("Missing or wrong credentials (the receiver's http_config)"),
         **_COMMON},
        body={"type": "object", "required": ["version", "alerts"], "properties": {
            "version": {"type": "string"}, "status": {"type": "string"},
            "receiver": {"type": "string"}, "groupKey": {"type": "string"},
            "alerts": {"type": "array", "items": {"type": "object"}}}},
        # No credentials configured: none are asked.
        security=[{}, {"basic": []}, {"bearer": []}])}


def generic_api() -> dict[str, dict[str, Any]]:
    return {GENERIC_PATH: post(
        "A signed webhook from any sender: the JSON object becomes an event",
        {"200": answer("Taken", {"type": "object", "properties": {
            "accepted": {"type": "integer"}}}),
         "401": error(f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} missing, malformed, "
                      "wrong, or outside the replay window"),
         "404": error("No [webhooks.generic.<name>] of that name"),
         "409": error("This delivery (its signature) was taken already"),
         **_COMMON},
        body={"type": "object"},
        parameters=[
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": TIMESTAMP_HEADER, "in": "header", "required": True,
             "description": "Unix seconds when the request was signed",
             "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}},
            {"name": SIGNATURE_HEADER, "in": "header", "required": True,
             "description": "sha256=<hex HMAC-SHA256 of '<timestamp>.<body>' with the "
             "webhook's secret>",
             "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"}}])}
