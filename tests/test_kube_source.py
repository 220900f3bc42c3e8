"""The Kubernetes source against the test bed: list then watch, resume, 410, stream faults,
403/429, and readiness of a real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.clients.kubernetes import KubeClient
from daemon.core.events import Event
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.harness import DaemonProcess, wait_for
from tests.kube.server import KubeApiServer

Obj = dict[str, Any]
PODS = "/api/v1/pods$"
NOTIFY_RULE = """
rules:
  - name: pod-crashloop
    source: kubernetes
    when: event.action == "crashloop"
    actions: [notify.webhook: {url: "http://127.0.0.1:9/hook"}]
"""
FAST = Tuning(stall_timeout=1.0, forbidden_retry=1.0, watch_timeout=30, backoff_initial=0.05,
              backoff_max=0.2)


def pod(name: str, ready: bool = True) -> Obj:
    flag = "True" if ready else "False"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": flag}],
                       "containerStatuses": [{"name": "app", "restartCount": 0, "ready": ready,
                                              "state": {"running": {}}}]}}


class Running:
    def __init__(self, source: KubernetesSource, events: list[Event]) -> None:
        self.source, self.events = source, events

    def actions(self, name: str) -> list[str]:
        return [e.action for e in self.events if e.attributes.get("name") == name]

    async def until(self, check: Callable[[], bool], limit: float = 5.0) -> None:
        """A bounded poll: the source offers no event to wait on."""
        for _ in range(int(limit / 0.02)):
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not within {limit}s; events: {self.events}")


@pytest_asyncio.fixture
async def running(kube: KubeApiServer, kubeconfig: Path) -> AsyncIterator[Running]:
    events: list[Event] = []
    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, events.append, Metrics(CollectorRegistry()), ["pods"],
                              tuning=FAST)
    task = asyncio.create_task(source.run())
    try:
        yield Running(source, events)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()


def watches(kube: KubeApiServer) -> list[Any]:
    return kube.bed.log.find("GET", PODS, watch=True)


def lists(kube: KubeApiServer) -> list[Any]:
    return kube.bed.log.find("GET", PODS, watch=False)


async def test_list_then_watch_delivers_transitions(kube: KubeApiServer,
                                                    running: Running) -> None:
    kube.bed.apply(pod("old", ready=False))
    await running.until(lambda: running.source.synced)
    assert running.actions("old") == ["unready"]  # a state on the first listing
    await kube.bed.log.wait_for("GET", PODS, watch=True)
    kube.bed.controller.crash_loop("default", "old", restart_count=4)
    await running.until(lambda: "crashloop" in running.actions("old"))
    first = watches(kube)[0].query
    assert first["allowWatchBookmarks"] == "true" and first["resourceVersion"] not in ("", "0")


async def test_readyz_waits_until_every_kind_has_listed(kube: KubeApiServer, kubeconfig: Path,
                                                        tmp_path: Path) -> None:
    kube.bed.faults.add("status", path=PODS, watch=False, code=500, count=10_000)
    daemon = DaemonProcess(tmp_path / "d", NOTIFY_RULE, extra={"kubernetes": {
        "enabled": True, "kubeconfig": str(kubeconfig), "kinds": ["pods", "nodes"]}})
    await asyncio.to_thread(daemon.start, wait_ready=False)
    try:
        await kube.bed.log.wait_for("GET", "/api/v1/nodes$", watch=True, limit=20)
        await kube.bed.log.wait_for("GET", PODS, watch=False, limit=20)
        answer = await asyncio.to_thread(daemon.get, "/readyz")
        assert answer is not None and answer[0] == 503
        assert b"kubernetes" in answer[1], answer
        kube.bed.faults.clear()
        await asyncio.to_thread(wait_for, daemon.ready, 20, "/readyz 200")
    finally:
        await asyncio.to_thread(daemon.stop)
