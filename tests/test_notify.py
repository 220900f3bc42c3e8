"""notify.webhook against a real HTTP receiver on loopback, through the executor that owns
the one retry policy."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.notify import Webhook
from daemon.audit import AuditLog
from daemon.clients.http import HttpClient
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.harness import WebhookSink, free_port
from tests.rulekit import docker_event, ruleset

RULE = """
rules:
  - name: oom
    description: out of memory
    source: docker
    when: event.action == "oom"
    labels: {severity: warning}
    annotations: {summary: a container ran out of memory}
    actions: [notify.webhook: PARAMS]
"""


async def notify(tmp_path: Path, url: str, params: str = "{}",
                 max_attempts: int = 3) -> dict[str, Any]:
    """Handle one OOM decision with notify.webhook; return its outcome record."""
    rules = ruleset(tmp_path, RULE.replace("PARAMS", params))
    [decision] = Evaluator(rules).evaluate(docker_event("oom", name="db"), 0)
    async with HttpClient() as http:
        with AuditLog(tmp_path / "audit.jsonl") as audit:
            executor = Executor({"notify.webhook": Webhook(http, url)}, audit, Metrics(),
                                ExecutorSettings(max_attempts=max_attempts, retry_delay=0.01))
            await executor.handle(decision)
            [outcome] = [r for r in audit.tail(10) if r["kind"] == "outcome"]
            return outcome


async def test_delivers_the_incident_after_transient_failures(tmp_path: Path) -> None:
    with WebhookSink(fail_first=2) as sink:
        outcome = await notify(tmp_path, sink.url)
    assert outcome["outcome"] == "success"
    assert outcome["steps"][0]["attempts"] == 3
    [body] = sink.bodies
    assert body["rule"] == "oom"
    assert body["target"]["name"] == "db"
    assert body["labels"] == {"severity": "warning"}
    assert body["message"] == "a container ran out of memory"


async def test_one_decision_sends_at_most_max_attempts_requests(tmp_path: Path) -> None:
    # Retries used to run inside the action and again inside the executor: 12 POSTs.
    with WebhookSink(fail_first=100) as sink:
        outcome = await notify(tmp_path, sink.url, max_attempts=3)
    assert sink.attempts == 3
    assert outcome["outcome"] == "failed"
    assert "after 3 attempt(s)" in outcome["error"]


async def test_the_rules_retries_parameter_sets_the_attempts(tmp_path: Path) -> None:
    with WebhookSink(fail_first=100) as sink:
        outcome = await notify(tmp_path, sink.url, params="{retries: 1}")
    assert sink.attempts == 2
    assert outcome["outcome"] == "failed"


async def test_unreachable_receiver_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    outcome = await notify(tmp_path, url, max_attempts=2)
    assert outcome["outcome"] == "failed"
    assert url in outcome["error"]


@pytest.fixture
def gone_receiver() -> Iterator[tuple[str, list[int]]]:
    hits: list[int] = []

    class Gone(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(1)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", hits
    finally:
        server.shutdown()
        server.server_close()


async def test_client_errors_are_not_retried(tmp_path: Path,
                                             gone_receiver: tuple[str, list[int]]) -> None:
    url, hits = gone_receiver
    outcome = await notify(tmp_path, url)
    assert outcome["outcome"] == "failed" and "HTTP 404" in outcome["error"]
    assert len(hits) == 1
