"""The notification outbox: an undelivered notification is kept on disk, resent with
backoff, also by the next run of remedyd, and delivered once per incident."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Any

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.notify import Webhook
from daemon.actions.outbox import Outbox, OutboxPolicy
from daemon.audit import AuditLog
from daemon.clients.http import HttpClient
from daemon.core.decisions import Decision
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.harness import DaemonProcess, free_port, posts_served, wait_for
from tests.rulekit import docker_event, ruleset
from tests.test_notify import (
    RULE,
    gone_receiver,  # noqa: F401 (a fixture)
)


class Receiver:
    """A webhook receiver on a port chosen before it is up: it counts what it gets."""

    def __init__(self, port: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.bodies.append(json.loads(body or b"{}"))
                receiver.keys.append(self.headers.get("Idempotency-Key"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def decision(tmp_path: Path) -> Decision:
    rules = ruleset(tmp_path, RULE.replace("PARAMS", "{}"))
    [made] = Evaluator(rules).evaluate(docker_event("oom", name="db"), 0)
    return made


async def handle(tmp_path: Path, http: HttpClient, outbox: Outbox, url: str,
                 made: Decision) -> dict[str, Any]:
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        executor = Executor({"notify.webhook": Webhook(http, url, outbox)}, audit, Metrics(),
                            ExecutorSettings(max_attempts=2, retry_delay=0.01))
        await executor.handle(made)
        [outcome] = [r for r in audit.tail(50) if r["kind"] == "outcome"][-1:]
        return outcome


async def test_a_notification_the_executor_gave_up_on_is_delivered_once_by_a_later_run(
        tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    made = decision(tmp_path)
    box = tmp_path / "outbox"
    async with HttpClient() as http:
        first = Outbox(box, None, OutboxPolicy(backoff=0.01))
        outcome = await handle(tmp_path, http, first, url, made)
        assert outcome["outcome"] == "failed"
        [pending] = first.pending()
        assert pending["attempts"] == 2 and pending["payload"]["body"]["rule"] == "oom"
        assert os.stat(next(box.glob("*.json"))).st_mode & 0o777 == 0o600

        # The next run of the daemon: a new outbox on the same directory, the receiver up.
        receiver = Receiver(port)
        try:
            with AuditLog(tmp_path / "audit.jsonl") as audit:
                second = Outbox(box, audit, OutboxPolicy(backoff=0.01))
                Webhook(http, url, second)
                await second.round(resend_all=True)
                await second.round(resend_all=True)
                [record] = [r for r in audit.tail(10) if r["kind"] == "notification"]
            assert len(receiver.bodies) == 1
            [body] = receiver.bodies
            key = body["idempotency_key"]
            assert receiver.keys == [key]
            assert key == f"{made.incident_id}/oom/0/0/firing"
            assert record["outcome"] == "delivered" and record["idempotency_key"] == key
            assert record["incident"] == made.incident_id and record["attempts"] == 3
            assert second.pending() == []
            # The same decision handled again (a retry, a replay): nothing is sent.
            again = await handle(tmp_path, http, second, url, made)
            assert again["outcome"] == "success"
            assert again["steps"][0]["details"]["already_delivered"] is True
            assert len(receiver.bodies) == 1
        finally:
            receiver.close()


async def test_a_refused_notification_is_dropped_not_retried(
        tmp_path: Path, gone_receiver: tuple[str, list[int]]) -> None:  # noqa: F811
    url, hits = gone_receiver
    async with HttpClient() as client:
        outbox = Outbox(tmp_path / "outbox", None, OutboxPolicy(backoff=0.01))
        outcome = await handle(tmp_path, client, outbox, url, decision(tmp_path))
        await outbox.round(resend_all=True)
    assert outcome["outcome"] == "failed" and "HTTP 404" in outcome["error"]
    assert len(hits) == 1
    assert [e["state"] for e in outbox.entries()] == ["dropped"]


async def test_an_entry_past_its_max_age_is_dropped_and_audited(tmp_path: Path) -> None:
    now = [1000.0]
    async with HttpClient() as http:
        outbox = Outbox(tmp_path / "outbox", None, OutboxPolicy(backoff=0.01, max_age=60),
                        wall_clock=lambda: now[0])
        url = f"http://127.0.0.1:{free_port()}/hook"
        await handle(tmp_path, http, outbox, url, decision(tmp_path))
        with AuditLog(tmp_path / "audit.jsonl") as audit:
            outbox.audit = audit
            now[0] += 61
            await outbox.round()
            [record] = [r for r in audit.tail(10) if r["kind"] == "notification"]
    assert record["outcome"] == "dropped" and "not delivered within 60s" in record["error"]
    assert outbox.pending() == []


RESTART_RULES = """
rules:
  - name: probe-down
    description: a probe failed
    source: probe
    when: event.kind == "probe" && event.action == "failed"
    cooldown: 1h
    labels: {severity: critical}
    actions:
      - notify.webhook: {}
"""


def test_receiver_down_remedyd_restarted_receiver_up_one_delivery(tmp_path: Path) -> None:
    port = free_port()
    daemon = DaemonProcess(
        tmp_path, RESTART_RULES, webhook_url=f"http://127.0.0.1:{port}/hook",
        extra={"kubernetes": {"enabled": False}, "safety": {"max_attempts": 1},
               "notify": {"outbox_backoff": "200ms"}})
    with daemon.config.open("a") as config:
        # Nothing listens there: the probe fails from the start.
        config.write(f'\n[[probes]]\nname = "db"\ntcp = "127.0.0.1:{free_port()}"\n'
                     'interval = "100ms"\ntimeout = "100ms"\nfailures = 1\n')
    daemon.start()
    try:
        wait_for(lambda: daemon.audit("outcome"), 15, "the notification's first attempt")
        [outcome] = daemon.audit("outcome")
        assert outcome["outcome"] == "failed"
        wait_for(lambda: daemon.readiness()["checks"]["source:outbox"]["pending"] == 1, 5,
                 "the outbox to hold it")
    finally:
        assert daemon.stop() == 0
    receiver = Receiver(port)
    try:
        daemon.start()
        wait_for(lambda: daemon.audit("notification"), 15, "the outbox to deliver it")
        [record] = daemon.audit("notification")
        assert record["outcome"] == "delivered"
        assert record["incident"] == outcome["incident"]
        assert record["details"]["url"] == f"http://127.0.0.1:{port}/hook"
        # The probe still fails: the restored cooldown keeps the rule from a second send.
        wait_for(lambda: daemon.readiness()["checks"]["source:outbox"]["pending"] == 0, 5,
                 "an empty outbox")
        assert len(receiver.bodies) == 1
        assert receiver.bodies[0]["incident"] == outcome["incident"]
        assert receiver.keys == [receiver.bodies[0]["idempotency_key"]]
    finally:
        assert daemon.stop() == 0
        receiver.close()
    assert daemon.verify_audit().returncode == 0


async def test_a_send_cut_by_the_action_timeout_waits_a_backoff_before_the_next(
        tmp_path: Path) -> None:
    from aiohttp import web

    hits: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        hits.append(1)
        await asyncio.sleep(1)
        return web.Response()

    async with posts_served("/hook", slow) as port, HttpClient() as client:
        outbox = Outbox(tmp_path / "outbox", None, OutboxPolicy(backoff=30))
        with AuditLog(tmp_path / "audit.jsonl") as audit:
            executor = Executor(
                {"notify.webhook": Webhook(client, f"http://127.0.0.1:{port}/hook", outbox)},
                audit, Metrics(), ExecutorSettings(action_timeout=0.3))
            await executor.handle(decision(tmp_path))
            [outcome] = [r for r in audit.tail(10) if r["kind"] == "outcome"]
        assert outcome["outcome"] == "timeout"
        [entry] = outbox.pending()
        assert entry["error"] == "interrupted" and entry["next_at"] > entry["created"] + 29
        assert await outbox.round() > 29  # not due: nothing sent meanwhile
        assert len(hits) == 1


async def test_a_shutdown_arriving_as_the_loop_is_woken_still_stops_it(tmp_path: Path) -> None:
    """The wake-up (a notification handed over) and the cancel of a shutdown in one turn
    of the loop: asyncio.wait_for on Python 3.11 returned normally then and lost the
    cancel, and the loop slept on, holding the daemon's stop for its idle wait."""
    outbox = Outbox(tmp_path / "outbox", None, OutboxPolicy(backoff=0.01))
    task = asyncio.create_task(outbox.run())
    for _ in range(10):
        await asyncio.sleep(0)  # into its idle wait
    for _ in range(20):
        outbox._wake.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(2):
                await task
        assert task.cancelled()
        task = asyncio.create_task(outbox.run())
        for _ in range(10):
            await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
