"""One trace per incident: the span tree of a remediation whose first repair did not
hold and whose second did, collected with the SDK's in-memory exporter; its trace id in
every audit record of the incident and in its log lines; nothing imported when off."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

from daemon.telemetry import tracing
from daemon.telemetry.logs import JsonFormatter
from daemon.telemetry.otel import OtelTracer
from tests.test_ladder import LADDER, Bed


class Lines(logging.Handler):
    """Formats as `[log] format = "json"` does, when the line is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[tuple[Bed, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bed = Bed(tmp_path)
    bed.executor.tracer = OtelTracer(provider)
    yield bed, exporter
    await bed.close()


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    parent_id = parent.context.span_id
    return [s.name for s in sorted(spans, key=lambda s: s.start_time or 0)
            if s.parent is not None and s.parent.span_id == parent_id]


@pytest.mark.looptime
async def test_one_trace_for_an_incident_from_intake_to_its_last_verification(
        traced: tuple[Bed, InMemorySpanExporter]) -> None:
    bed, exporter = traced
    bed.start(LADDER)
    assert bed.evaluator is not None
    lines = Lines()
    logging.getLogger("remedyd").addHandler(lines)
    logging.getLogger("remedyd").setLevel(logging.INFO)
    event = bed.event()
    # What the engine loop does when tracing is on: when it took the event, when it decided.
    received = time.time()
    [decision] = bed.evaluator.evaluate(event, 0)
    bed.executor.tracer.begin(decision, received, time.time())
    bed.executor.submit(decision)
    await bed.until(lambda: bed.fix.runs)
    await asyncio.sleep(31)  # fake time: the first rung's verification runs out
    await bed.until(lambda: bed.fix2.runs)
    bed.resolve(decision)  # the second rung's verification hears the state resolve
    await bed.idle()

    spans = list(exporter.get_finished_spans())
    [root] = [s for s in spans if s.name == "incident"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert root.attributes is not None
    assert root.attributes["remedyd.incident"] == decision.incident_id
    guards = [g.name for g in bed.executor.guards]
    rung = [f"guard {name}" for name in guards]
    assert children(spans, root) == [
        "intake", "evaluate", *rung, "action test.fix", "verification",
        *rung, "action test.fix2", "verification"]
    [fix] = [s for s in spans if s.name == "action test.fix"]
    assert children(spans, fix) == ["attempt", "verify"]
    assert fix.attributes is not None and fix.attributes["remedyd.outcome"] == "success"
    verdicts = [(s.attributes or {}).get("remedyd.verdict") for s in spans
                if s.name == "verification"]
    assert verdicts == ["not_recovered", "recovered"]
    cooldown = [s for s in spans if s.name == "guard cooldown"]
    assert [(s.attributes or {}).get("remedyd.verdict") for s in cooldown] == ["ok", "ok"]

    trace_id = format_trace_id(root.context.trace_id)
    records = [r for r in bed.audit.tail(100) if r.get("incident") == decision.incident_id]
    assert [r["kind"] for r in records] == ["decision", "outcome", "verification"] * 2
    assert {r["trace_id"] for r in records} == {trace_id}
    # The executor's log lines about the incident carry it (the json format shows it).
    logging.getLogger("remedyd").removeHandler(lines)
    about = [e for e in map(json.loads, lines.lines)
             if e["logger"] == "remedyd.executor" and "test.fix" in e["message"]]
    assert len(about) == 2, lines.lines
    assert all(e["trace_id"] == trace_id and e["incident"] == decision.incident_id
               and e["rule"] == "heal" for e in about)
    # The incident is over: its root span ended after everything in it, its context gone.
    assert bed.executor.tracer.trace_id(decision.incident_id) is None
    assert all((s.end_time or 0) <= (root.end_time or 0) for s in spans)

def test_a_failed_action_marks_its_span() -> None:
    """Seen by the tree test's twin: a crash's span is an error with the step's reason."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    with pytest.raises(RuntimeError), tracer.span("i-1", "action x"):
        raise RuntimeError("boom")
    [span] = exporter.get_finished_spans()
    assert span.status.description == "RuntimeError: boom"


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "remedyd"}, False),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
     False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_traces_are_exported_only_when_otel_variables_ask(env: dict[str, str],
                                                          on: bool) -> None:
    assert tracing.wanted(env) is on


def test_off_by_default_opentelemetry_is_not_imported() -> None:
    code = ("import sys\nfrom daemon.app import Daemon\nfrom daemon.settings import Settings\n"
            "d = Daemon(Settings())\n"
            "print(d.executor.tracer.enabled, any(m.startswith('opentelemetry') "
            "for m in sys.modules))")
    env = {"PATH": "/usr/bin:/bin", "OTEL_SERVICE_NAME": "remedyd"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.split() == ["False", "False"], out.stderr
