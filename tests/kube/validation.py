"""API validation the test bed applies on create and update: RBAC roles and bindings, as
pkg/apis/rbac/validation does (a rule with no verbs, a resource rule with no API group, a
binding to a kind of role that cannot be bound are 422 Invalid), and ConfigMaps as
pkg/apis/core/validation does (config keys, at most 1 MiB of data)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.kube.resources import Kind
from tests.kube.status import ApiError

RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str  # the Status cause reason
    message: str  # "Required value: ..." as field.Error renders its type and detail

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "FieldValueRequired",
                      "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid",
                      f"Invalid value: {json.dumps(value)}: {detail}")


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    return FieldError(field, "FieldValueNotSupported",
                      f"Unsupported value: {json.dumps(value)}: supported values: "
                      + ", ".join(json.dumps(s) for s in supported))


def validate(kind: Kind, obj: dict[str, Any]) -> None:
    """Raise the 422 a real server answers for `obj`, if any."""
    check = _CHECKS.get((kind.group, kind.kind))
    errors = check(obj, kind.namespaced) if check else []
    if not errors:
        return
    name = (obj.get("metadata") or {}).get("name", "")
    qualified = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details: dict[str, Any] = {"name": name}
    if kind.group:
        details["group"] = kind.group
    details["kind"] = kind.kind
    details["causes"] = [{"reason": e.reason, "message": e.message, "field": e.field}
                         for e in errors]
    raise ApiError(422, f'{qualified} "{name}" is invalid: {listed}', "Invalid", details)


def _role(obj: dict[str, Any], namespaced: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, rule in enumerate(obj.get("rules") or []):
        errors.extend(_policy_rule(rule if isinstance(rule, dict) else {}, namespaced,
                                   f"rules[{i}]"))
    return errors


def _policy_rule(rule: dict[str, Any], namespaced: bool, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not rule.get("verbs"):
        errors.append(required(f"{path}.verbs", "verbs must contain at least one value"))
    urls = rule.get("nonResourceURLs")
    if urls:
        if namespaced:
            errors.append(invalid(f"{path}.nonResourceURLs", urls,
                                  "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errors.append(invalid(f"{path}.nonResourceURLs", urls, "rules cannot apply to "
                                  "both regular resources and non-resource URLs"))
        return errors
    if not rule.get("apiGroups"):
        errors.append(required(f"{path}.apiGroups",
                               "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        errors.append(required(f"{path}.resources",
                               "resource rules must supply at least one resource"))
    if rule.get("resourceNames") and len(rule.get("resources") or []) > 1:
        errors.append(required(f"{path}.resourceNames",
                               "resource names cannot apply to multiple resources"))
    return errors


def _binding(obj: dict[str, Any], namespaced: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    ref = obj.get("roleRef") or {}
    if ref.get("apiGroup") != RBAC_GROUP:
        errors.append(not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if ref.get("kind") not in kinds:
        errors.append(not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        errors.append(required("roleRef.name"))
    for i, subject in enumerate(obj.get("subjects") or []):
        errors.extend(_subject(subject if isinstance(subject, dict) else {}, namespaced,
                               f"subjects[{i}]"))
    return errors


def _subject(subject: dict[str, Any], namespaced: bool, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    name, kind, group = subject.get("name"), subject.get("kind"), subject.get("apiGroup", "")
    if not name:
        errors.append(required(f"{path}.name"))
    if kind == "ServiceAccount":
        if group:
            errors.append(not_supported(f"{path}.apiGroup", group, [""]))
        if not namespaced and not subject.get("namespace"):
            errors.append(required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if group != RBAC_GROUP:
            errors.append(not_supported(f"{path}.apiGroup", group, [RBAC_GROUP]))
    else:
        errors.append(not_supported(f"{path}.kind", kind or "",
                                    ["ServiceAccount", "User", "Group"]))
    return errors


# core/v1 ValidateConfigMap: data and binaryData together, keys plus values.
MAX_CONFIG_MAP_BYTES = 1024 * 1024
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _config_map(obj: dict[str, Any], namespaced: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    size = 0
    for field in ("data", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            size += len(key) + len(str(value).encode())
            if len(key) > 253 or not _CONFIG_KEY.match(key) or key in (".", ".."):
                errors.append(invalid(f"{field}[{key}]", key, (
                    "a valid config key must consist of alphanumeric characters, '-', '_' "
                    "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                    "for validation is '[-._a-zA-Z0-9]+')")))
    if size > MAX_CONFIG_MAP_BYTES:
        errors.append(FieldError("[]", "FieldValueTooLong",
                                 f"Too long: may not be more than {MAX_CONFIG_MAP_BYTES} bytes"))
    return errors


_CHECKS = {
    ("", "ConfigMap"): _config_map,
    (RBAC_GROUP, "Role"): _role, (RBAC_GROUP, "ClusterRole"): _role,
    (RBAC_GROUP, "RoleBinding"): _binding, (RBAC_GROUP, "ClusterRoleBinding"): _binding,
}
