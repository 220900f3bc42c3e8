"""notify.apprise through Apprise's real json:// plugin, posting to a loopback receiver."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.notify_apprise import AppriseNotify
from daemon.audit import AuditLog
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.harness import ROOT, posts_served
from tests.rulekit import docker_event, ruleset

SECRET = "s3cret-pw-4711"


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any], str]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, await request.json(),
                           request.headers.get("Authorization", "")))
        return web.Response(status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    got = Receiver()
    async with posts_served("/{path:.*}", got.handle) as port:
        yield got, port


def rule(params: str) -> str:
    return f"""
rules:
  - name: oom
    description: out of memory
    source: docker
    when: event.action == "oom"
    labels: {{severity: critical}}
    annotations: {{summary: a container ran out of memory}}
    actions: [notify.apprise: {params}]
"""


async def send(tmp_path: Path, params: str, attempts: int = 2) -> dict[str, Any]:
    [decision] = Evaluator(ruleset(tmp_path, rule(params))).evaluate(
        docker_event("oom", name="db"), 0)
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        executor = Executor({"notify.apprise": AppriseNotify(timeout=5)}, audit, Metrics(),
                            ExecutorSettings(max_attempts=attempts, retry_delay=0.01))
        await executor.handle(decision)
        [outcome] = [r for r in audit.tail(10) if r["kind"] == "outcome"]
    return outcome


async def test_the_incident_reaches_the_service_and_its_password_stays_out_of_the_audit(
        tmp_path: Path, receiver: tuple[Receiver, int]) -> None:
    got, port = receiver
    outcome = await send(tmp_path, f'{{urls: ["json://ops:{SECRET}@127.0.0.1:{port}/hook"], '
                                   'title: "{rule} on {target}"}')
    assert outcome["outcome"] == "success", outcome
    [(path, body, auth)] = got.posts
    assert path == "/hook"
    assert body["title"] == "oom on db"
    assert "a container ran out of memory" in body["message"]
    assert "rule oom" in body["message"] and body["type"] == "failure"
    # The credentials were used, and nothing remedyd wrote holds them.
    assert base64.b64decode(auth.split()[1]).decode() == f"ops:{SECRET}"
    [url] = outcome["steps"][0]["details"]["urls"]
    assert url.startswith(f"json://ops:****@127.0.0.1:{port}/hook")
    assert SECRET not in (tmp_path / "audit.jsonl").read_text()


async def test_a_service_that_fails_is_a_temporary_error_retried(
        tmp_path: Path, receiver: tuple[Receiver, int]) -> None:
    got, port = receiver
    got.status = 500
    outcome = await send(tmp_path, f'{{urls: ["json://127.0.0.1:{port}/hook"]}}', attempts=2)
    assert outcome["outcome"] == "failed"
    assert "did not take the notification" in outcome["error"]
    assert len(got.posts) == 2


async def test_the_tag_picks_the_urls_notified(tmp_path: Path,
                                               receiver: tuple[Receiver, int]) -> None:
    got, port = receiver
    outcome = await send(tmp_path, f'{{urls: ["ops=json://127.0.0.1:{port}/ops", '
                                   f'"dev=json://127.0.0.1:{port}/dev"], tag: [ops]}}')
    assert outcome["outcome"] == "success"
    assert [path for path, _, _ in got.posts] == ["/ops"]


def test_a_template_naming_an_unknown_field_fails_at_load(tmp_path: Path) -> None:
    from daemon.engine.ruleset import load_ruleset
    from tests.rulekit import CATALOG

    path = tmp_path / "rules.yaml"
    path.write_text(rule('{urls: ["json://127.0.0.1:1/x"], title: "{password}"}'))
    _, errors = load_ruleset([path], CATALOG)
    assert errors and "{password} is not one of" in str(errors[0])


def test_a_daemon_whose_rules_send_nothing_through_apprise_does_not_import_it() -> None:
    code = ("import sys\nfrom daemon.app import Daemon\nfrom daemon.settings import Settings\n"
            "Daemon(Settings())\nprint('apprise' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


SECURITY_RULE = """
rules:
  - name: privileged-pod
    description: a Pod runs privileged
    source: security
    when: event.attributes.privileged == true
    security:
      id: TEST-PRIV-1
      severity: high
      control: "CIS 5.2.1"
      remediation: set privileged to false
    actions: [notify.apprise: {urls: ["json://127.0.0.1:1/x"]}]
"""


def test_a_security_finding_says_its_check_severity_and_fix(tmp_path: Path) -> None:
    from daemon.actions.notify_alertmanager import alert_of
    from daemon.actions.notify_text import DEFAULT_BODY, DEFAULT_TITLE, render
    from daemon.actions.params import AlertmanagerParams
    from daemon.core.events import Event, Ref

    event = Event("security", "pod", "finding", Ref("kubernetes", "pod", "web-1",
                                                    namespace="shop"),
                  "e1", 0.0, 0.0, {"privileged": True})
    [decision] = Evaluator(ruleset(tmp_path, SECURITY_RULE)).evaluate(event, 0)
    assert render(DEFAULT_TITLE, decision) == "[remedyd] privileged-pod on web-1 (high)"
    body = render(DEFAULT_BODY, decision)
    assert "check TEST-PRIV-1: CIS 5.2.1; fix: set privileged to false" in body
    assert "pod web-1 in namespace shop" in body
    alert = alert_of(decision, AlertmanagerParams(), "http://127.0.0.1:9464/", 0.0)
    assert alert["labels"]["severity"] == "high" and alert["labels"]["check"] == "TEST-PRIV-1"
    assert alert["labels"]["target_namespace"] == "shop"
    assert alert["annotations"]["remediation"] == "set privileged to false"
