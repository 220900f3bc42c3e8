"""The tracer facade: one trace per incident, or nothing at all.

The daemon talks to a `Tracer`; the one it gets when no exporter is configured (the
default) is this module's no-op, whose every call returns a shared object, so the hot
path pays a method call and OpenTelemetry is never imported. `from_environment` picks
the real one (daemon/telemetry/otel.py) only when the standard `OTEL_*` variables ask
for an exporter: OTEL_TRACES_EXPORTER other than "none", or an OTLP endpoint set, and
OTEL_SDK_DISABLED not "true".

Spans are parented explicitly (the incident's root, or a span handed in), never through
a context variable, so a decision's spans stay in its incident's trace whichever task
runs them: a ladder's later rung, a verification waiting in its own task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.core.decisions import Decision

Attributes = Mapping[str, str | int | float | bool]


class Span:
    """A span being recorded; the no-op one records nothing."""

    def set(self, key: str, value: str | int | float | bool) -> None:
        """An attribute learned while the span runs (a guard's verdict, an outcome)."""

    def fail(self, why: str) -> None:
        """Mark the span as failed (an action's failure, a verification not recovered)."""


NOOP_SPAN = Span()
# nullcontext is reentrant and reusable: one object serves every no-op span.
_NOOP_CM: AbstractContextManager[Span] = contextlib.nullcontext(NOOP_SPAN)


class Tracer:
    """The no-op tracer, and the interface of the real one."""

    enabled = False

    def begin(self, decision: Decision, received: float | None = None,
              evaluated: float | None = None) -> None:
        """Open the incident's trace if it has none: its root span from the event's time,
        an intake span up to `received` (wall time the engine took the event) and an
        evaluation span up to `evaluated` (when its rule decided)."""

    def span(self, incident: str, name: str, attributes: Attributes | None = None,
             parent: Span | None = None) -> AbstractContextManager[Span]:
        """A child of `parent`, or of the incident's root span."""
        return _NOOP_CM

    def trace_id(self, incident: str) -> str | None:
        """The incident's trace id (32 hex digits), None when it has none."""
        return None

    def forget(self, incident: str) -> None:
        """The incident is over: end its root span and drop its context."""

    def shutdown(self) -> None:
        """End every open incident and flush what is queued for export."""


NOOP = Tracer()

_TRUE = frozenset({"true", "1", "yes", "on"})


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* environment asks for trace export (off by default)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None and exporters.strip():
        return any(name.strip() not in ("", "none") for name in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def from_environment(environ: Mapping[str, str]) -> Tracer:
    """The tracer the environment configures: the no-op unless export is asked for."""
    if not wanted(environ):
        return NOOP
    from daemon.telemetry.otel import from_environment as build

    return build(environ)

