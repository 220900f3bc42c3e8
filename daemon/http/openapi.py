"""The OpenAPI 3 description of the HTTP API, served at /api/v1/openapi.json.

A test checks that its paths are exactly the routes served; an endpoint added to the
server must be described here too.
"""

from __future__ import annotations

from typing import Any

MAX_AUDIT_LIMIT = 1000

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {
        **responses, "405": _json("Method not allowed", _ERROR)}, **extra}}


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "remedyd", "version": "1",
             "description": "Read-only view of a running remedyd."},
    "paths": {
        "/metrics": _get("Prometheus metrics", {"200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/healthz": _get("Liveness", {"200": _json("The process runs", {
            "type": "object", "properties": {"status": {"type": "string"}}})}),
        "/readyz": _get("Readiness", {
            "200": _json("Ready", {"$ref": "#/components/schemas/Readiness"}),
            "503": _json("Not ready; names what is not", {
                "$ref": "#/components/schemas/Readiness"})}),
        "/api/v1/rules": _get("The active rules", {"200": _json("Rules", {
            "type": "object", "properties": {"rules": {"type": "array",
                                                       "items": {"type": "object"}}}})}),
        "/api/v1/audit": _get("The newest audit records, oldest first", {
            "200": _json("Records", {"type": "object", "properties": {
                "records": {"type": "array", "items": {"type": "object"}}}}),
            "400": _json("limit is not an integer in range, or given twice", _ERROR)},
            parameters=[{"name": "limit", "in": "query", "required": False, "schema": {
                "type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT,
                "default": 100}}]),
        "/api/v1/openapi.json": _get("This document", {"200": _json("OpenAPI 3", {
            "type": "object"})}),
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "Readiness": {"type": "object", "required": ["ready", "checks"], "properties": {
            "ready": {"type": "boolean"}, "checks": {"type": "object"}}},
    }},
}
