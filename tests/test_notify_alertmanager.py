"""remedyd -> Alertmanager, both real: notify.alertmanager posts the incident as an alert
to Debian's Alertmanager, which routes it to its webhook receiver, resolves it when the
rule's state resolves, and keeps to itself what an operator silenced with amtool."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import AlertmanagerStack
from tests.harness import DaemonProcess, WebhookSink, free_port, posts_served, wait_for

RULES = """
rules:
  - name: service-down
    description: a service stopped answering
    source: probe
    when: event.kind == "probe" && event.action == "failed"
    labels: {severity: critical, team: storage}
    annotations: {summary: a service failed its probe}
    actions:
      - notify.alertmanager: {description: "{target} failed: {event}"}
"""


def listen(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    return server


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as answer:
        found: list[dict[str, Any]] = json.loads(answer.read())
    return found


def notified(sink: WebhookSink, target: str, status: str) -> list[dict[str, Any]]:
    return [a for body in sink.bodies for a in body.get("alerts", [])
            if a["labels"].get("target_name") == target and a["status"] == status]


def test_the_incident_is_an_alert_routed_silenced_and_resolved(
        tmp_path: Path, alertmanager: AlertmanagerStack) -> None:
    db_port, cache_port = free_port(), free_port()
    db = listen(db_port)
    with WebhookSink() as sink:
        am = alertmanager.start(sink.url)
        am.amtool("silence", "add", "target_name=cache", "--comment=maintenance",
                  "--author=test", "--duration=1h")
        daemon = DaemonProcess(tmp_path / "remedyd", RULES, extra={
            "kubernetes": {"enabled": False}, "alertmanager": {"url": am.url}})
        with daemon.config.open("a") as config:
            for name, port in (("db", db_port), ("cache", cache_port)):
                config.write(f'\n[[probes]]\nname = "{name}"\ntcp = "127.0.0.1:{port}"\n'
                             'interval = "100ms"\ntimeout = "100ms"\nfailures = 1\n')
        daemon.start()
        try:
            # The cache's probe fails at once (nothing listens): its alert is silenced.
            cache = wait_for(lambda: [a for a in am_alerts(am.url)
                                      if a["labels"]["target_name"] == "cache"], 15,
                             "the cache's alert in Alertmanager")[0]
            assert cache["status"]["state"] == "suppressed" and cache["status"]["silencedBy"]
            labels = cache["labels"]
            assert labels["alertname"] == "service-down" and labels["severity"] == "critical"
            assert labels["team"] == "storage" and labels["source"] == "probe"
            assert labels["target_kind"] == "probe" and labels["incident"]
            assert cache["annotations"]["summary"] == "a service failed its probe"
            assert cache["annotations"]["description"].startswith("cache failed: probe")

            db.close()  # the db goes down after: its alert is in the cache's group
            [firing] = wait_for(lambda: notified(sink, "db", "firing"), 15,
                                "Alertmanager to route the db's alert")
            assert notified(sink, "cache", "firing") == []
            assert [a for body in sink.bodies for a in body["alerts"]
                    if a["labels"]["target_name"] == "cache"] == []
            db = listen(db_port)  # back up: the rule's state resolves, and so does the alert
            [resolved] = wait_for(lambda: notified(sink, "db", "resolved"), 15,
                                  "the db's alert to resolve")
            assert resolved["labels"] == firing["labels"]
            outcomes = [r for r in daemon.audit("outcome") if r["rule"] == "service-down"]
            assert {o["outcome"] for o in outcomes} == {"success"} and len(outcomes) == 2
            assert daemon.audit("notification")[-1]["details"]["resolved"] is True
        finally:
            db.close()
            assert daemon.stop() == 0
    assert daemon.verify_audit().returncode == 0


def test_an_alert_with_no_alertmanager_anywhere_is_a_warning(tmp_path: Path) -> None:
    from tests.test_check import check, lines

    text = RULES.replace("source: probe", "source: docker")
    result = check(tmp_path, text, docker=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result)[0].endswith(
        "warning: notify.alertmanager has no url and [alertmanager] url is not set; the "
        "alert cannot be sent")
    named = text.replace('{description: "{target} failed: {event}"}',
                         '{url: "http://127.0.0.1:9093"}')
    assert check(tmp_path, named, "--strict", docker=True).returncode == 0


async def test_a_firing_alert_is_refreshed_until_its_rule_resolves(tmp_path: Path) -> None:
    import asyncio

    from aiohttp import web

    from daemon.actions.notify_alertmanager import AlertmanagerNotify, rfc3339
    from daemon.actions.params import AlertmanagerParams
    from daemon.clients.http import HttpClient
    from daemon.engine.changes import StateChange
    from daemon.engine.evaluator import Evaluator
    from tests.rulekit import docker_event, ruleset

    posts: list[list[dict[str, Any]]] = []
    arrived = asyncio.Event()

    async def take(request: web.Request) -> web.Response:
        posts.append(await request.json())
        arrived.set()
        return web.Response()

    text = RULES.replace("source: probe", "source: docker").replace(
        'event.kind == "probe" && event.action == "failed"', 'event.action == "oom"')
    [decision] = Evaluator(ruleset(tmp_path, text)).evaluate(docker_event("oom"), 0)
    async with posts_served("/api/v2/alerts", take) as port, HttpClient() as http:
        action = AlertmanagerNotify(http, f"http://127.0.0.1:{port}", None, "", refresh=0.05)
        refresh = asyncio.create_task(action.run_refresh())
        try:
            await action.run(decision, AlertmanagerParams())
            async with asyncio.timeout(10):
                while len(posts) < 3:  # the first post, then two refreshes
                    arrived.clear()
                    await arrived.wait()
            ends = [batch[0]["endsAt"] for batch in posts[:3]]
            assert ends == sorted(ends) and ends[0] < ends[2]
            assert {batch[0]["labels"]["incident"] for batch in posts} == {
                decision.incident_id}
            before = len(posts)
            action.on_state(StateChange(decision.rule.name, decision.target, "resolved",
                                        decision.incident_id, 1.0))
            after = rfc3339(time.time())
            assert action.status()["firing"] == 0

            def resolved() -> list[dict[str, Any]]:
                return [b[0] for b in posts[before:] if b[0]["endsAt"] <= after]

            async with asyncio.timeout(10):
                while not resolved():
                    arrived.clear()
                    await arrived.wait()
            assert resolved()[0]["labels"] == posts[0][0]["labels"]
        finally:
            refresh.cancel()
