"""Each container action against the real engine: what it does and what it refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.docker import docker_actions
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.audit import AuditLog
from daemon.clients.docker import DockerClient
from daemon.core.decisions import Decision
from daemon.engine.evaluator import Evaluator
from daemon.telemetry.metrics import Metrics
from tests.conftest import ContainerFactory, docker_inspect
from tests.rulekit import docker_event, ruleset


@pytest.fixture
async def client(docker_host: str) -> AsyncIterator[DockerClient]:
    async with DockerClient(docker_host) as docker:
        yield docker


def decision_for(tmp_path: Path, cid: str, action: str, params: str = "{}") -> Decision:
    rules = ruleset(tmp_path, f"""
rules:
  - name: act
    source: docker
    when: event.action == "oom"
    actions: [{action}: {params}]
""")
    [decision] = Evaluator(rules).evaluate(docker_event("oom", cid), 0)
    return decision


async def act(tmp_path: Path, client: DockerClient, cid: str, action: str,
              params: str = "{}") -> dict[str, Any]:
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        executor = Executor({a.name: a for a in docker_actions(client)}, audit, Metrics(),
                            ExecutorSettings(max_attempts=1))
        await executor.handle(decision_for(tmp_path, cid, action, params))
        return audit.tail(2)[-1]


def state(docker_host: str, cid: str) -> dict[str, Any]:
    result: dict[str, Any] = docker_inspect(docker_host, cid)["State"]
    return result


async def test_stop(tmp_path: Path, docker_host: str, containers: ContainerFactory,
                    client: DockerClient) -> None:
    cid = containers()
    record = await act(tmp_path, client, cid, "docker.stop", "{timeout: 0s}")
    assert record["outcome"] == "success"
    assert state(docker_host, cid)["Running"] is False


async def test_kill_with_a_signal(tmp_path: Path, docker_host: str,
                                  containers: ContainerFactory, client: DockerClient) -> None:
    cid = containers()
    record = await act(tmp_path, client, cid, "docker.kill", "{signal: SIGKILL}")
    assert record["outcome"] == "success"
    assert record["steps"][0]["details"]["signal"] == "SIGKILL"
    assert state(docker_host, cid)["ExitCode"] == 137


async def test_pause_then_unpause_and_refusals(tmp_path: Path, docker_host: str,
                                              containers: ContainerFactory,
                                              client: DockerClient) -> None:
    cid = containers()
    refused = await act(tmp_path, client, cid, "docker.unpause")
    assert refused["decision"] == "suppressed" and "not paused" in refused["reason"]
    assert (await act(tmp_path, client, cid, "docker.pause"))["outcome"] == "success"
    assert state(docker_host, cid)["Paused"] is True
    again = await act(tmp_path, client, cid, "docker.pause")
    assert again["decision"] == "suppressed" and "already paused" in again["reason"]
    assert (await act(tmp_path, client, cid, "docker.unpause"))["outcome"] == "success"
    assert state(docker_host, cid)["Paused"] is False


async def test_a_vanished_container_is_refused_not_retried(
        tmp_path: Path, client: DockerClient) -> None:
    record = await act(tmp_path, client, "0" * 64, "docker.restart")
    assert record["decision"] == "suppressed"
    assert record["suppressed_by"] == "target"
    assert "no longer exists" in record["reason"]
