"""Faults an operator would meet on a real host, on a real dockerd: a stale repair, a daemon
killed mid-action, a full disk under the audit log, an operator who signals twice."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.docker import docker_actions
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.audit import AuditLog
from daemon.clients.docker import DockerClient
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.conftest import ContainerFactory, docker_cli, docker_inspect
from tests.harness import DaemonProcess, WebhookSink, wait_for
from tests.rulekit import docker_event, ruleset
from tests.test_audit_disk_full import fill
from tests.test_docker_e2e import HEALTH_FAILS, records_for, restart_rule

HEAL = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    actions: [docker.restart: {timeout: 1s}]
"""

# Only this test's containers: others on the same engine die too.
CASE = f"case-{uuid.uuid4().hex[:12]}"
MINE = ("--label", f"remedyd-case={CASE}")
NOTIFY_DIE = f"""
rules:
  - name: notify-die
    source: docker
    when: event.action == "die" && event.attributes["remedyd-case"] == "{CASE}"
    actions: [notify.webhook: {{timeout: 60s}}]
"""


async def test_a_container_restarted_since_the_event_is_not_restarted_again(
        tmp_path: Path, docker_host: str, containers: ContainerFactory) -> None:
    cid = containers()
    # The event remedyd reads late: unhealthy, then an operator restarted the container.
    [decision] = Evaluator(ruleset(tmp_path, HEAL)).evaluate(
        docker_event("health_status: unhealthy", cid), 0)
    docker_cli(docker_host, "restart", "-t", "0", cid)
    started_by_operator = docker_inspect(docker_host, cid)["State"]["StartedAt"]

    async with DockerClient(docker_host) as client:
        with AuditLog(tmp_path / "audit.jsonl") as audit:
            executor = Executor({a.name: a for a in docker_actions(client)}, audit, Metrics(),
                                ExecutorSettings())
            await executor.handle(decision)
            [record] = audit.tail(1)
    assert record["decision"] == "suppressed" and record["suppressed_by"] == "superseded"
    assert "started again" in record["reason"]
    assert docker_inspect(docker_host, cid)["State"]["StartedAt"] == started_by_operator


def test_a_decision_interrupted_by_sigkill_is_closed_on_the_next_start(
        tmp_path: Path, docker_host: str, containers: ContainerFactory) -> None:
    # busybox `sleep` as PID 1 ignores SIGTERM: the restart waits its whole 30 s grace.
    rules = restart_rule(cooldown="10m", timeout="30s")
    daemon = DaemonProcess(tmp_path / "d", rules, docker_url=docker_host).start()
    cid = containers(*HEALTH_FAILS, "--stop-timeout", "30")
    try:
        wait_for(lambda: records_for(daemon, cid, "decision"), 30, "the restart to begin")
        daemon.signal(signal.SIGKILL)
        assert daemon.proc is not None and daemon.proc.wait(10) == -signal.SIGKILL
    finally:
        daemon.stop()
    [intent] = [r for r in records_for(daemon, cid, "decision") if r["decision"] == "act"]
    assert records_for(daemon, cid, "outcome") == []

    daemon.start()
    try:
        [outcome] = wait_for(lambda: records_for(daemon, cid, "outcome"), 20,
                             "the interrupted decision to be closed")
        assert outcome["incident"] == intent["incident"]
        assert outcome["outcome"] == "interrupted"
        assert outcome["state"]["exists"] is True and "status" in outcome["state"]
    finally:
        daemon.stop()
    assert daemon.verify_audit().returncode == 0


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("256k")


def test_the_audit_log_recovers_by_itself_once_the_disk_has_room(
        tmp_path: Path, small_disk: Path, docker_host: str,
        containers: ContainerFactory) -> None:
    with WebhookSink() as sink:
        daemon = DaemonProcess(tmp_path / "d", NOTIFY_DIE, docker_url=docker_host,
                               webhook_url=sink.url,
                               extra={"audit": {"path": str(small_disk / "audit.jsonl")}})
        daemon.audit_path = small_disk / "audit.jsonl"
        daemon.start()
        try:
            filler = fill(small_disk)
            # The log's last page may still hold a record or two: die until it does not.
            for _ in range(20):
                containers(*MINE, command=("true",))
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: not daemon.ready(), 3, "/readyz to report the full disk")
                    break
            assert not daemon.ready()
            assert daemon.metric("remedyd_audit_writable") == 0
            audit = daemon.readiness()["checks"]["audit"]
            assert "No space left on device" in audit["error"]
            sent = len(sink.bodies)
            refused = daemon.readiness()["checks"]["audit"]["refused_meanwhile"]
            containers(*MINE, command=("true",))
            wait_for(lambda: daemon.readiness()["checks"]["audit"]["refused_meanwhile"]
                     > refused, 20, "the next decision to be refused too")
            refused = daemon.readiness()["checks"]["audit"]["refused_meanwhile"]
            assert len(sink.bodies) == sent  # no action without a record of it

            filler.unlink()
            wait_for(daemon.ready, 30, "the audit log to recover by itself")
            assert daemon.metric("remedyd_audit_writable") == 1
        finally:
            daemon.stop()
    [recovery] = [r for r in daemon.audit("recovery") if r.get("refused")]
    assert recovery["refused"] == {"notify-die": {"audit": refused}}
    assert recovery["unwritable_s"] > 0
    assert daemon.verify_audit().returncode == 0


@pytest.fixture
def silent_receiver() -> Iterator[str]:
    """Accepts connections and never answers: a webhook receiver that hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_readyz_is_503_while_draining_and_a_second_sigterm_forces_exit(
        tmp_path: Path, docker_host: str, containers: ContainerFactory,
        silent_receiver: str) -> None:
    daemon = DaemonProcess(tmp_path / "d", NOTIFY_DIE, docker_url=docker_host,
                           webhook_url=silent_receiver,
                           extra={"safety": {"shutdown_timeout": "60s"}}).start()
    try:
        containers(*MINE, command=("true",))
        wait_for(lambda: daemon.audit("decision"), 20, "the notification to begin")
        daemon.signal(signal.SIGTERM)
        report: dict[str, Any] = wait_for(
            lambda: (r := daemon.readiness()) and not r["ready"] and r, 10,
            "/readyz to report draining")
        assert report["checks"]["draining"]["ready"] is False
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        daemon.proc.wait(15)
        assert time.monotonic() - started < 10
    finally:
        daemon.stop()
    [outcome] = daemon.audit("outcome")
    assert outcome["outcome"] == "cancelled"
    assert os.path.exists(daemon.audit_path)
    assert daemon.verify_audit().returncode == 0
