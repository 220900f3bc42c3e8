"""Status error bodies shaped exactly like kube-apiserver's."""

from __future__ import annotations

from typing import Any

from tests.kube.resources import Kind

REASONS = {
    400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 504: "Timeout",
}


class ApiError(Exception):
    """Raised by handlers; the server turns it into a Status response."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details)


def status_body(code: int, message: str, reason: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def success_body(code: int = 200, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success"}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(kind: Kind, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if kind.group:
        details["group"] = kind.group
    details["kind"] = kind.plural
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, f'{kind.qualified} "{name}" not found', "NotFound", _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(409, f'{kind.qualified} "{name}" already exists', "AlreadyExists",
                    _details(kind, name))


def conflict(kind: Kind, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try "
                    "again", "Conflict", _details(kind, name))


def precondition_failed(kind: Kind, obj: dict[str, Any], field: str, wanted: str,
                        actual: str) -> ApiError:
    """A delete (or eviction) whose preconditions (UID, ResourceVersion) name another object:
    a real server's storage layer answers 409 with this message."""
    meta = obj["metadata"]
    key = "/".join(["/registry", kind.plural, *([meta["namespace"]] if meta.get("namespace")
                                                 else []), meta["name"]])
    return ApiError(409, f'Operation cannot be fulfilled on {kind.qualified} "{meta["name"]}": '
                    f"StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, "
                    f"AdditionalErrorMsg: Precondition failed: {field} in precondition: "
                    f"{wanted}, {field} in object meta: {actual}", "Conflict",
                    _details(kind, meta["name"]))


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, f"too old resource version: {requested} ({oldest})", "Expired")


def forbidden(verb: str, kind: Kind, namespace: str | None,
              user: str = "system:serviceaccount:remedyd:remedyd", name: str | None = None,
              subresource: str | None = None) -> ApiError:
    """What the RBAC authorizer answers: the object's name (when the request names one) and
    the resource with its subresource ("pods/eviction"), as the verb's rule needs them."""
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    named = f' "{name}"' if name else ""
    return ApiError(403, f'{kind.qualified}{named} is forbidden: User "{user}" cannot {verb} '
                    f'resource "{resource}" in API group "{kind.group}" {scope}', "Forbidden",
                    ({"name": name} if name else {}) | {"kind": kind.plural}
                    | ({"group": kind.group} if kind.group else {}))


def invalid(kind: Kind, name: str, field: str, message: str) -> ApiError:
    details = _details(kind, name)
    details["kind"] = kind.kind
    details["causes"] = [{"reason": "FieldValueInvalid", "message": message, "field": field}]
    return ApiError(422, f'{kind.kind} "{name}" is invalid: {field}: {message}', "Invalid", details)
