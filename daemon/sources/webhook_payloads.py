"""Inbound webhook bodies, checked before anything is built from them.

Alertmanager's webhook payload (version 4: what notify/webhook sends) becomes a
Notification; a generic webhook's body stays the JSON it was, once it is known to be
JSON the rest of remedyd can hold: finite numbers (the audit log writes no NaN), text
that encodes as UTF-8 (no lone surrogates from `\\ud800` escapes) and no deeper than
MAX_DEPTH (CEL and the audit log recurse). Every refusal is a PayloadError naming the
field, so the sender's 400 says what to fix. Unknown extra fields are ignored, as
Alertmanager may add some.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.core import rfc3339

MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN = 40


class PayloadError(ValueError):
    """The body is not what the endpoint takes; `field` names where (a JSON path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str
    fingerprint: str
    # startsAt (firing) or endsAt (resolved) as unix seconds: when it happened.
    occurred_at: float


@dataclass(frozen=True, slots=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number remedyd keeps (the audit log is strict JSON)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:_SHOWN]} overflows a float")
    return value


def decode_json(body: bytes) -> Any:
    """The body as JSON, or PayloadError saying why not (never another exception)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        raise PayloadError("", f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, an int of >4300 digits, the checks above
        raise PayloadError("", f"the body is not JSON: {exc}") from None
    _check_value(value, "$", 0)
    return value


def _check_value(value: Any, path: str, depth: int) -> None:
    # Iterating the whole body once is the price of holding any of it safely.
    if depth > MAX_DEPTH:
        raise PayloadError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_value(item, f"{path}.{key}" if len(key) <= _SHOWN else f"{path}.<key>",
                         depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)


def _check_text(text: str, path: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise PayloadError(path, "contains a lone surrogate (\\ud800-\\udfff), not text")


def _kind(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "number", float: "number",
                                         str: "string", list: "array",
                                         dict: "object"}.get(type(value), "value")


def _string(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{path}.{key}", "missing" if value is None and key not in obj
                           else f"expected a string, got {_kind(value)}")
    return value


def _string_map(obj: Mapping[str, Any], key: str, path: str, *,
                required: bool = False) -> dict[str, str]:
    value = obj.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{path}.{key}", "missing" if key not in obj
                           else f"expected an object of strings, got {_kind(value)}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{path}.{key}.{name[:_SHOWN]}",
                               f"expected a string, got {_kind(item)}")
    return value


def parse_time(text: str, field: str) -> float:
    try:
        return rfc3339.parse(text)
    except ValueError as exc:
        raise PayloadError(field, str(exc)) from None


def _alert(raw: Any, path: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(path, f"expected an object, got {_kind(raw)}")
    status = _string(raw, "status", path, required=True)
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{path}.status", f'expected "firing" or "resolved", got '
                           f"{status[:_SHOWN]!r}")
    fingerprint = _string(raw, "fingerprint", path, required=True)
    if not fingerprint:
        raise PayloadError(f"{path}.fingerprint", "empty")
    starts_at = _string(raw, "startsAt", path, required=True)
    started = parse_time(starts_at, f"{path}.startsAt")
    ends_at = _string(raw, "endsAt", path)
    ended = parse_time(ends_at, f"{path}.endsAt") if ends_at else started
    return Alert(status=status, labels=_string_map(raw, "labels", path, required=True),
                 annotations=_string_map(raw, "annotations", path), starts_at=starts_at,
                 ends_at=ends_at, generator_url=_string(raw, "generatorURL", path),
                 fingerprint=fingerprint,
                 occurred_at=ended if status == "resolved" else started)


def parse_alertmanager(body: Any) -> Notification:
    """Alertmanager's webhook payload, or PayloadError naming the field that is wrong."""
    if not isinstance(body, dict):
        raise PayloadError("$", f"expected an object, got {_kind(body)}")
    version = body.get("version")
    if version is not None and version != "4":
        raise PayloadError("$.version", f'expected "4" (Alertmanager\'s webhook payload), '
                           f"got {json.dumps(version)[:_SHOWN]}")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("$.alerts", "missing" if "alerts" not in body
                           else f"expected an array, got {_kind(alerts)}")
    truncated = body.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("$.truncatedAlerts", f"expected a count, got {_kind(truncated)} "
                           f"{json.dumps(truncated)[:_SHOWN]}")
    status = _string(body, "status", "$")
    if status not in ("", "firing", "resolved"):
        raise PayloadError("$.status", f'expected "firing" or "resolved", got '
                           f"{status[:_SHOWN]!r}")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        _string_map(body, key, "$")
    return Notification(
        receiver=_string(body, "receiver", "$"), status=status,
        group_key=_string(body, "groupKey", "$"), external_url=_string(body, "externalURL", "$"),
        truncated_alerts=truncated,
        alerts=tuple(_alert(raw, f"$.alerts[{i}]") for i, raw in enumerate(alerts)))
