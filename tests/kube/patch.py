"""The three PATCH flavours kube-apiserver accepts: JSON merge, strategic merge, JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from tests.kube.status import ApiError

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# patchMergeKey of the list fields remedyd and kubectl touch; other lists are replaced whole,
# as the real server does for lists without a merge strategy.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
    "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid",
    "taints": "key", "tolerations": None, "finalizers": None,
}
PRIMITIVE_SETS = {"finalizers"}


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    ctype = content_type.split(";")[0].strip()
    if ctype == MERGE:
        return _need_dict(merge_patch(target, patch))
    if ctype == STRATEGIC:
        if not isinstance(patch, dict):
            raise ApiError(400, "strategic merge patch must be a JSON object")
        return _need_dict(strategic_merge(target, patch))
    if ctype == JSON_PATCH:
        return _need_dict(json_patch(target, patch))
    raise ApiError(415, f'the body of the request was in an unknown format - accepted media '
                   f'types include: {JSON_PATCH}, {MERGE}, {STRATEGIC}, '
                   'application/apply-patch+yaml', "UnsupportedMediaType")


def _need_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "patch result is not a JSON object")
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: dict[str, Any]) -> Any:
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(key, result.get(key) or [], value)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    merge_key = MERGE_KEYS[field]
    if field in PRIMITIVE_SETS:
        return list(current) + [v for v in patch if v not in current]
    if merge_key is None:
        return copy.deepcopy(patch)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ApiError(400, f"map: {item} does not contain declared merge key: {merge_key}")
        idx = next((i for i, c in enumerate(result)
                    if isinstance(c, dict) and c.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
        elif idx is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[idx] = strategic_merge(result[idx], item)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a JSON array of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid JSON patch operation: {op}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=True)
        elif kind == "remove":
            doc, _ = _take(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=False)
        elif kind == "move":
            doc, value = _take(doc, op["from"])
            doc = _put(doc, path, value, insert=True)
        elif kind == "copy":
            doc = _put(doc, path, copy.deepcopy(_get(doc, op["from"])), insert=True)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, f"testing value {path} failed", "Invalid")
        else:
            raise ApiError(400, f"Unexpected kind: {kind}")
    return doc


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"JSON pointer must start with '/': {path}", "Invalid")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise ApiError(422, "the root document cannot be the target here", "Invalid")
    cur = doc
    for tok in tokens[:-1]:
        cur = _step(cur, tok, path)
    return cur, tokens[-1]


def _step(cur: Any, tok: str, path: str) -> Any:
    if isinstance(cur, dict) and tok in cur:
        return cur[tok]
    if isinstance(cur, list) and tok.isdigit() and int(tok) < len(cur):
        return cur[int(tok)]
    raise ApiError(422, f"doc is missing path: \"{path}\": missing value", "Invalid")


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for tok in _tokens(path):
        cur = _step(cur, tok, path)
    return cur


def _put(doc: Any, path: str, value: Any, insert: bool) -> Any:
    if path == "":
        return value
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and insert:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (0 if insert else 1):
            if insert:
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            raise ApiError(422, f"add operation does not apply: doc is missing path: {path}",
                           "Invalid")
    else:
        raise ApiError(422, f"doc is missing path: \"{path}\": missing value", "Invalid")
    return doc


def _take(doc: Any, path: str) -> tuple[Any, Any]:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise ApiError(422, f"Unable to remove nonexistent key: {last}: missing value", "Invalid")
