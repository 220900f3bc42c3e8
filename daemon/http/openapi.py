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


def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {
        **responses, "405": error("Method not allowed")}, **extra}}


def post(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    """A POST path item, with the 405 every path answers for another method."""
    operation: dict[str, Any] = {"summary": summary, "responses": {
        **responses, "405": error("Method not allowed")}, **extra}
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    return {"post": operation}


def error(description: str) -> dict[str, Any]:
    """A response whose body is the Error object."""
    return answer(description, _ERROR)


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
        "/metrics": get("Prometheus metrics", {"200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/healthz": get("Liveness", {"200": answer("The process runs", {
            "type": "object", "properties": {"status": {"type": "string"}}})}),
        "/readyz": get("Readiness", {
            "200": answer("Ready", {"$ref": "#/components/schemas/Readiness"}),
            "503": answer("Not ready; names what is not", {
                "$ref": "#/components/schemas/Readiness"})}),
        "/api/v1/rules": get("The active rules", {"200": answer("Rules", {
            "type": "object", "properties": {"rules": {"type": "array",
                                                       "items": {"type": "object"}}}})}),
        "/api/v1/audit": get("The newest audit records, oldest first", {
            "200": answer("Records", {"type": "object", "properties": {
                "records": {"type": "array", "items": {"type": "object"}}}}),
            "400": error("limit is not an integer in range, or given twice")},
            parameters=[{"name": "limit", "in": "query", "required": False, "schema": {
                "type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT,
                "default": 100}}]),
        "/api/v1/openapi.json": get("This document", {"200": answer("OpenAPI 3", {
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
