"""A posture view as flat field paths, so a baseline diff reads field by field
(`containers[app].privileged: false -> true`) rather than as two JSON blobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.core.events import JSONValue

# Scalar lists whose order means something (a command line); every other scalar list
# is a set (capabilities, verbs, ports) and is sorted, so a reordering is no drift.
ORDERED_LISTS = frozenset({"command", "args", "entrypoint", "cmd"})
# What names an item of a list of dicts, in order of preference: `name` (containers,
# volumes, env), the container an image entry is for, a mount's destination; items with
# none are keyed by position.
IDENTITY_KEYS = ("name", "container", "destination", "target")


def flatten(view: Mapping[str, Any]) -> dict[str, JSONValue]:
    """`view` as {field path: scalar or scalar list}; see the module docstring."""
    out: dict[str, JSONValue] = {}
    _walk(view, "", out)
    return out


def diff(before: Mapping[str, JSONValue],
         after: Mapping[str, JSONValue]) -> list[dict[str, JSONValue]]:
    """The fields that differ, sorted by field; a field absent on one side is null there."""
    changes: list[dict[str, JSONValue]] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if _canonical(old) != _canonical(new):
            changes.append({"field": key, "before": old, "after": new})
    return changes


def fingerprint(fields: Mapping[str, JSONValue]) -> str:
    """sha256 (hex) of the canonical JSON of `fields`."""
    return hashlib.sha256(_canonical(fields).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _segment(key: str) -> str:
    # Label keys hold dots (`pod-security.kubernetes.io/enforce`): quoted, a path stays
    # unambiguous.
    return json.dumps(key) if any(c in key for c in ".[]\"") else key


def _join(prefix: str, key: str) -> str:
    segment = _segment(key)
    if not prefix:
        return segment
    return f"{prefix}[{segment}]" if segment.startswith('"') else f"{prefix}.{segment}"


def _walk(value: Any, path: str, out: dict[str, JSONValue]) -> None:
    if isinstance(value, Mapping):
        if not value and path:
            out[path] = {}
        for key in sorted(value, key=str):
            _walk(value[key], _join(path, str(key)), out)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if value and all(isinstance(item, Mapping) for item in value):
            for label, item in _item_labels(value):
                _walk(item, f"{path}[{label}]", out)
        else:
            out[path] = _scalar_list(value, path)
    else:
        out[path] = value


def _scalar_list(items: Sequence[Any], path: str) -> JSONValue:
    values = [item for item in items]
    leaf = path.rsplit(".", 1)[-1].lower()
    if leaf in ORDERED_LISTS:
        return values
    return sorted(values, key=_canonical)


def _item_labels(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    ident = next((key for key in IDENTITY_KEYS
                  if all(isinstance(item.get(key), str) and item.get(key) for item in items)),
                 None)
    if ident is None:
        return [(str(index), item) for index, item in enumerate(items)]
    names = [str(item[ident]) for item in items]
    repeated = {name for name in names if names.count(name) > 1}
    labelled: list[tuple[str, Mapping[str, Any]]] = []
    seen: dict[str, int] = {}
    for name, item in zip(names, items, strict=True):
        label = name
        if name in repeated and isinstance(item.get("type"), str):
            # An init container and an app container may share a name.
            label = f"{item['type']}:{name}"
        if label in seen:
            # Still ambiguous: its position among its namesakes keeps it apart.
            seen[label] += 1
            label = f"{label}#{seen[label]}"
        else:
            seen[label] = 0
        labelled.append((label, item))
    return labelled
