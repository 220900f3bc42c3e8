"""The OpenAPI 3 description of the HTTP API, served at /api/v1/openapi.json.

The daemon's own endpoints are described here; an integration that serves endpoints
(webhooks, the security API) describes them beside its routes (`Plugged.api`), and
`document()` joins the two. Tests check that the paths and methods described are exactly
the routes served, with every integration on.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MAX_AUDIT_LIMIT = 1000

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {
        **responses, "405": _json("Method not allowed", _ERROR)}, **extra}}


def post(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    """A POST path item; its 405 (any other method), 413 and 400 are the same everywhere."""
    operation: dict[str, Any] = {"summary": summary, "responses": {
        **responses, "405": _json("Method not allowed", _ERROR)}, **extra}
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    return {"post": operation}


def error(description: str) -> dict[str, Any]:
    """A response whose body is the Error object."""
    return _json(description, _ERROR)


def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return _json(description, schema)


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "basic": {"type": "http", "scheme": "basic"},
}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "remedyd", "version": "1",
             "description": "A running remedyd: its state (read-only), the webhooks it "
             "takes, and the endpoints that change something, each behind its credentials."},
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


def document(extra_paths: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """SPEC with the integrations' paths; the security schemes once any path uses one."""
    doc = copy.deepcopy(SPEC)
    for path, item in extra_paths.items():
        if path in doc["paths"]:
            raise ValueError(f"{path} is described twice")
        doc["paths"][path] = item
    if extra_paths:
        doc["components"]["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    return doc
