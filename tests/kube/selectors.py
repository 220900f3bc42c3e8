"""Label and field selectors with kube-apiserver's syntax and error messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.kube.status import ApiError

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")

FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "status.phase": ("status", "phase"),
    "spec.unschedulable": ("spec", "unschedulable"),
    "involvedObject.name": ("involvedObject", "name"),
    "regarding.name": ("regarding", "name"),
    "type": ("type",),
    "reason": ("reason",),
}


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t for t in terms if t.strip()]


def label_selector(text: str) -> Predicate:
    checks: list[Predicate] = []
    for term in _split_terms(text):
        eq = _EQ_RE.match(term)
        if eq:
            key, op, value = eq.groups()
            checks.append(_label_equals(key, value, op != "!="))
            continue
        st = _SET_RE.match(term)
        if not st:
            raise ApiError(400, f"unable to parse requirement: found '{term.strip()}', "
                           "expected: in, notin, =, ==, !=, gt, lt")
        neg, key, op, values = st.groups()
        if op:
            allowed = {v.strip() for v in values.split(",") if v.strip()}
            checks.append(_label_in(key, allowed, op == "in"))
        else:
            checks.append(_label_exists(key, not neg))
    return lambda o: all(c(o) for c in checks)


def match_labels_selector(selector: Obj) -> Predicate:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as a predicate."""
    want = dict(selector.get("matchLabels") or {})
    exprs = list(selector.get("matchExpressions") or [])

    def check(o: Obj) -> bool:
        labels = _labels(o)
        if any(labels.get(k) != v for k, v in want.items()):
            return False
        for e in exprs:
            key, op, values = e["key"], e["operator"], set(e.get("values") or [])
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and key in labels and labels[key] in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True

    return check


def field_selector(text: str, allowed: tuple[str, ...] | None = None) -> Predicate:
    checks: list[Predicate] = []
    for term in _split_terms(text):
        eq = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not eq:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = eq.groups()
        path = FIELDS.get(field)
        if path is None or (allowed is not None and field not in allowed):
            raise ApiError(400, f'field label not supported: {field}')
        checks.append(_field_equals(path, value, op != "!="))
    return lambda o: all(c(o) for c in checks)


def _label_equals(key: str, value: str, equal: bool) -> Predicate:
    return lambda o: (_labels(o).get(key) == value) == equal


def _label_in(key: str, allowed: set[str], inside: bool) -> Predicate:
    return lambda o: (_labels(o).get(key) in allowed) == inside


def _label_exists(key: str, present: bool) -> Predicate:
    return lambda o: (key in _labels(o)) == present


def _field_equals(path: tuple[str, ...], value: str, equal: bool) -> Predicate:
    return lambda o: (_field(o, path) == value) == equal


def _labels(o: Obj) -> dict[str, str]:
    return dict((o.get("metadata") or {}).get("labels") or {})


def _field(o: Obj, path: tuple[str, ...]) -> str:
    cur: Any = o
    for part in path:
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)
