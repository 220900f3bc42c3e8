"""Log lines as text or JSON, tagged with the incident they are about, secrets masked.

`[log] format = "text"` keeps the classic line and appends `incident=… trace=…` when
the line is about an incident; `"json"` writes one object a line: time (RFC 3339, UTC),
level, logger, message, and incident / trace_id / rule / target when known. What an
incident is comes from `extra={"incident": ...}` on the call, or from the context the
executor sets while it handles a decision (`incident_context`): every line logged in
that task, and in the tasks it starts, carries it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from daemon.telemetry.redact import scrub

FIELDS = ("incident", "trace_id", "rule", "target")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_incident: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "remedyd_incident", default=None)


@contextmanager
def incident_context(**fields: str | None) -> Iterator[None]:
    """Tag the log lines of the code inside (and of tasks started there) with these."""
    token = _incident.set({k: v for k, v in fields.items() if v})
    try:
        yield
    finally:
        _incident.reset(token)


def _tags(record: logging.LogRecord) -> dict[str, str]:
    tags = dict(_incident.get() or {})
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value:
            tags[name] = str(value)
    return tags


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = _tags(record)
        extra = " ".join(f"{short}={tags[name]}" for name, short in
                         (("incident", "incident"), ("trace_id", "trace")) if name in tags)
        if extra:
            head, newline, rest = line.partition("\n")  # after the message, before a traceback
            line = f"{head} {extra}{newline}{rest}"
        return scrub(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_tags(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Masked after encoding too: a secret in a key or split by escaping is still one
        # string in the line.
        return scrub(json.dumps({k: scrub(v) if isinstance(v, str) else v
                                 for k, v in entry.items()}, ensure_ascii=False))


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Set up the root logger once for `remedyd run`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
