"""notify.webhook against a real HTTP receiver on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.actions.notify import Webhook
from daemon.actions.params import WebhookParams
from daemon.clients.http import HttpClient
from daemon.core.errors import PermanentError, TemporaryError
from daemon.engine.evaluator import Evaluator
from tests.harness import WebhookSink
from tests.rulekit import docker_event, ruleset

RULE = """
rules:
  - name: oom
    description: out of memory
    source: docker
    when: event.action == "oom"
    labels: {severity: warning}
    annotations: {summary: a container ran out of memory}
    actions: [notify.webhook: {}]
"""


async def notify(tmp_path: Path, url: str, retries: int = 3) -> dict[str, object]:
    [decision] = Evaluator(ruleset(tmp_path, RULE)).evaluate(docker_event("oom", name="db"), 0)
    http = HttpClient()
    try:
        hook = Webhook(http, url, backoff_base=0.01)
        return await hook.run(decision, WebhookParams(retries=retries, timeout=2))
    finally:
        await http.close()


async def test_delivers_the_incident_after_transient_failures(tmp_path: Path) -> None:
    with WebhookSink(fail_first=2) as sink:
        details = await notify(tmp_path, sink.url)
    assert details["attempts"] == 3
    [body] = sink.bodies
    assert body["rule"] == "oom"
    assert body["target"]["name"] == "db"
    assert body["labels"] == {"severity": "warning"}
    assert body["message"] == "a container ran out of memory"


async def test_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    with WebhookSink(fail_first=100) as sink:
        with pytest.raises(TemporaryError, match="failed after 3 attempt"):
            await notify(tmp_path, sink.url, retries=2)
        assert sink.attempts == 3


async def test_unreachable_receiver_names_the_url(tmp_path: Path) -> None:
    from tests.harness import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(TemporaryError, match=url):
        await notify(tmp_path, url, retries=1)


async def test_client_errors_are_not_retried(tmp_path: Path) -> None:
    import http.server
    import threading

    class Gone(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PermanentError, match="HTTP 404"):
            await notify(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/hook")
    finally:
        server.shutdown()
        server.server_close()
