"""The OpenTelemetry tracer behind the facade (daemon/telemetry/tracing.py).

Imported only when the OTEL_* environment asks for export. `OtelTracer(provider)` is
also the tests' hook: handed a TracerProvider with the SDK's in-memory exporter, it
records the same spans the daemon exports.

An incident's root span is opened at its first decision (started at its event's time)
and ended when the incident is over (`forget`: the outcome of a rule without a ladder,
the end of a ladder); until then its context is kept by incident id, so every later
rung, verification and closing notification joins the same trace. At most
MAX_INCIDENTS are kept: the oldest is ended and dropped past that.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from daemon import __version__
from daemon.core.decisions import Decision
from daemon.telemetry.tracing import Attributes, Span, Tracer

log = logging.getLogger("remedyd.tracing")
MAX_INCIDENTS = 4096
_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


class _OtelSpan(Span):
    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        self.span.set_attribute(key, value)

    def fail(self, why: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, why))


class OtelTracer(Tracer):
    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("remedyd", __version__)
        self._roots: OrderedDict[str, trace.Span] = OrderedDict()

    def begin(self, decision: Decision, received: float | None = None,
              evaluated: float | None = None) -> None:
        incident = decision.incident_id
        if incident in self._roots:
            return
        event = decision.event
        start = _ns(event.occurred_at)
        root = self._tracer.start_span("incident", context=Context(), start_time=start,
                                       attributes={
                                           "remedyd.incident": incident,
                                           "remedyd.rule": decision.rule.name,
                                           "remedyd.target": decision.target.key,
                                           "remedyd.subject": event.subject.key,
                                           "remedyd.source": event.source})
        self._roots[incident] = root
        while len(self._roots) > MAX_INCIDENTS:
            _, oldest = self._roots.popitem(last=False)
            oldest.end()
        parent = trace.set_span_in_context(root)
        if received is not None:
            intake = self._tracer.start_span(
                "intake", context=parent, start_time=start,
                attributes={"remedyd.source": event.source, "remedyd.event": event.kind,
                            "remedyd.subject": event.subject.key})
            intake.end(end_time=max(start, _ns(received)))
            if evaluated is not None:
                evaluation = self._tracer.start_span(
                    "evaluate", context=parent, start_time=_ns(received),
                    attributes={"remedyd.rule": decision.rule.name})
                evaluation.end(end_time=max(_ns(received), _ns(evaluated)))

    def _parent(self, incident: str, parent: Span | None) -> Context:
        if isinstance(parent, _OtelSpan):
            return trace.set_span_in_context(parent.span)
        root = self._roots.get(incident)
        # An incident whose root is gone (evicted, or a decision that never began one)
        # still gets a trace of its own rather than joining whatever is current.
        return trace.set_span_in_context(root) if root is not None else Context()

    def span(self, incident: str, name: str, attributes: Attributes | None = None,
             parent: Span | None = None) -> AbstractContextManager[Span]:
        return self._span(self._parent(incident, parent), name, attributes)

    @contextmanager
    def _span(self, context: Context, name: str,
              attributes: Attributes | None) -> Iterator[Span]:
        span = self._tracer.start_span(name, context=context, attributes=attributes)
        try:
            yield _OtelSpan(span)
        except BaseException as exc:  # cancelled too: the span says why it stopped
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    def trace_id(self, incident: str) -> str | None:
        root = self._roots.get(incident)
        if root is None:
            return None
        return trace.format_trace_id(root.get_span_context().trace_id)

    def forget(self, incident: str) -> None:
        root = self._roots.pop(incident, None)
        if root is not None:
            root.end()

    def shutdown(self) -> None:
        while self._roots:
            _, root = self._roots.popitem(last=False)
            root.end()
        self.provider.shutdown()


def _resource() -> Resource:
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the SDK; without either
    # naming the service, it is remedyd rather than the SDK's "unknown_service".
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "remedyd"}))
    return resource


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip() for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                   environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
            if protocol != "http/protobuf":
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is supported; "
                            "exporting with it", protocol)
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                log.error("OTEL_TRACES_EXPORTER=otlp needs the OTLP/HTTP exporter: pip install "
                          "'remedyd[tracing]'; traces are not exported")
                continue
            # The exporter reads its endpoint, headers, timeout and compression from the
            # same OTEL_EXPORTER_OTLP_* variables.
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s: unknown exporter, ignored (otlp, console, "
                        "none)", name)
    return exporters


def from_environment(environ: Mapping[str, str]) -> Tracer:
    provider = TracerProvider(resource=_resource())
    exporters = _exporters(environ)
    for exporter in exporters:
        # The batch processor exports from its own thread: the event loop never waits on
        # a collector. Its OTEL_BSP_* variables apply.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    endpoint = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "-")
    log.info("tracing on: exporting spans (%s) to %s as service %s",
             ", ".join(type(e).__name__ for e in exporters) or "nothing",
             endpoint, provider.resource.attributes.get(SERVICE_NAME))
    return OtelTracer(provider)
