"""Recorded history as Events at times: an audit log's decision and state records, or
raw events (`docker events --format '{{json .}}'`, Kubernetes watch events
`{"type": ..., "object": ...}` as `kubectl get -w -o json --output-watch-events` prints
them), normalised by the daemon's own code (the Docker source's normalise(), the
Kubernetes cache and transitions)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.audit.records import record_time
from daemon.core.events import Event, JSONValue, Ref
from daemon.kube.cache import Cache
from daemon.kube.stamps import seconds
from daemon.kube.transitions import transitions
from daemon.kube.trim import TrimError
from daemon.sources.docker import EVENT_FILTERS, normalise
from daemon.testing.shapes import default_resolves

# The Kubernetes timestamps that say when an object was last written, for watch events
# recorded without a time of their own.
_STAMPS = frozenset({"creationTimestamp", "deletionTimestamp", "lastTransitionTime",
                     "lastUpdateTime", "startedAt", "finishedAt", "lastTimestamp",
                     "eventTime", "time"})
_MAX_DEPTH = 8


class RecordedError(Exception):
    """A file that is not an audit log or an event recording: names the file and line."""


@dataclass(frozen=True)
class Recorded:
    at: float  # wall-clock seconds
    event: Event


@dataclass
class History:
    events: list[Recorded] = field(default_factory=list)
    # The audit log's decision records (what was decided then), oldest first.
    decisions: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # lines that were not events remedyd's sources would pass on
    problems: list[str] = field(default_factory=list)


def read_audit(path: Path) -> History:
    """The events the audit log's decision and state records carry (each once, by id)."""
    history = History()
    seen: set[str] = set()
    for line_number, value in _values(path):
        if not isinstance(value, dict) or "kind" not in value:
            history.skipped += 1
            continue
        kind = value.get("kind")
        if kind == "decision":
            history.decisions.append(value)
        elif kind == "state":
            history.states.append(value)
        else:
            continue
        summary = value.get("event")
        if not isinstance(summary, dict):
            continue
        event = event_from_summary(summary, value)
        if event is None:
            history.problems.append(f"{path}:{line_number}: an event the daemon could not "
                                    "have sent (no source, kind, action or subject)")
            continue
        if event.id in seen:
            continue
        seen.add(event.id)
        history.events.append(Recorded(event.occurred_at or record_time(value), event))
    history.events.sort(key=lambda r: r.at)
    return history


def event_from_summary(summary: Mapping[str, Any], record: Mapping[str, Any]) -> Event | None:
    """An Event back from what the audit log kept of it (Event.summary()); a KPI sample's
    rule from its subject's name, `<rule>{labels}`."""
    subject = summary.get("subject")
    if not isinstance(subject, dict) or not all(
            isinstance(summary.get(k), str) for k in ("source", "kind", "action")):
        return None
    ref = Ref(**{k: str(v) for k, v in subject.items()
                 if k in ("source", "kind", "name", "id", "namespace")})
    attributes = summary.get("attributes")
    occurred = summary.get("occurred_at")
    for_rule = ""
    if summary["source"] == "kpi":
        for_rule = str(record.get("rule") or ref.name.partition("{")[0])
    return Event(
        source=summary["source"], kind=summary["kind"], action=summary["action"], subject=ref,
        id=str(summary.get("id") or ""),
        occurred_at=float(occurred) if isinstance(occurred, int | float) else 0.0,
        observed_at=float(occurred) if isinstance(occurred, int | float) else 0.0,
        attributes=_attributes(attributes), synthetic=bool(summary.get("synthetic")),
        resolves=_resolves(summary), for_rule=for_rule)


def _resolves(summary: Mapping[str, Any]) -> tuple[str, ...]:
    resolves = summary.get("resolves")
    if isinstance(resolves, list):
        return tuple(str(r) for r in resolves)
    return default_resolves(str(summary["source"]), str(summary["kind"]),
                            str(summary["action"]))


def _attributes(value: Any) -> dict[str, JSONValue]:
    return dict(value) if isinstance(value, dict) else {}


def read_events(paths: Sequence[Path], cache: Cache, history: History) -> Iterator[Recorded]:
    """Raw Docker and Kubernetes events from one or more files (JSON Lines, or kubectl's
    indented objects; `kubectl get -w` watches one kind, so a recording is often one
    file per kind), merged in time order. Handed out lazily: `cache` holds the
    Kubernetes objects as of the event just handed out, which is what the daemon's
    actions resolve their targets through at that moment."""
    timed: list[tuple[float, int, str, dict[str, Any]]] = []
    for path in paths:
        last = 0.0
        for line_number, value in _values(path):
            where = f"{path}:{line_number}"
            if not isinstance(value, dict):
                history.skipped += 1
            elif "object" in value and "type" in value:
                last = _watch_time(value, last)
                timed.append((last, len(timed), where, value))
            elif "Action" in value or "status" in value:
                last = _docker_time(value, last)
                timed.append((last, len(timed), where, value))
            else:
                history.problems.append(f"{where}: neither a Docker event (Type, Action, "
                                        "Actor) nor a Kubernetes watch event (type, object)")
    timed.sort(key=lambda item: (item[0], item[1]))
    for at, _, where, value in timed:
        if "object" in value and "type" in value:
            events = _kube(cache, value, at, history, where)
        else:
            events = _docker(value, at)
        if events is None:
            history.skipped += 1
            continue
        for event in events:
            yield Recorded(at, event)


def _docker_time(raw: dict[str, Any], last: float) -> float:
    nano = raw.get("timeNano")
    if isinstance(nano, int) and nano:
        return nano / 1e9
    return float(raw["time"]) if isinstance(raw.get("time"), int | float) else last


def _docker(raw: dict[str, Any], at: float) -> list[Event] | None:
    if str(raw.get("Type") or "container") not in EVENT_FILTERS["type"]:
        return None  # the source asks the engine for container events only
    event = normalise(raw, observed_at=at)
    return [event] if event is not None else None


def _kube(cache: Cache, value: dict[str, Any], at: float, history: History,
          where: str) -> list[Event] | None:
    kind = value.get("type")
    if kind in ("BOOKMARK", "ERROR") or not isinstance(kind, str):
        return None
    try:
        change = cache.apply(kind, value["object"])
    except TrimError as exc:
        history.problems.append(f"{where}: {exc}")
        return None
    if change is None:
        return []
    return transitions(cache, change, at)


def _watch_time(value: dict[str, Any], last: float) -> float:
    """When a watch event happened: its own `time` (added by whoever recorded it), else
    the newest timestamp in the object, else the previous event's."""
    own = value.get("time")
    if isinstance(own, int | float):
        return float(own)
    if isinstance(own, str) and (stamp := seconds(own)) is not None:
        return stamp
    newest = max(_stamps(value.get("object"), 0), default=None)
    return newest if newest is not None else last


def _stamps(node: Any, depth: int) -> Iterator[float]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, dict):
        for key, child in node.items():
            if key in _STAMPS and (stamp := seconds(child)) is not None:
                yield stamp
            elif isinstance(child, dict | list):
                yield from _stamps(child, depth + 1)
    elif isinstance(node, list):
        for child in node:
            yield from _stamps(child, depth + 1)


def _values(path: Path) -> Iterator[tuple[int, Any]]:
    """Each JSON value in the file with the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordedError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RecordedError(f"{path}: not UTF-8 text: {exc}") from None
    decoder = json.JSONDecoder()
    position, length = 0, len(text)
    while True:
        while position < length and text[position].isspace():
            position += 1
        if position >= length:
            return
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise RecordedError(f"{path}:{line}: not JSON: {exc.msg}") from None
        yield line, value
