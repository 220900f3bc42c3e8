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
# Watches end (cleanly) after 1 s; a stream silent for 1.5 s is stalled.
FAST = Tuning(stall_timeout=1.5, forbidden_retry=1.0, watch_timeout=1, backoff_initial=0.05,
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


async def synced_and_watching(kube: KubeApiServer, running: Running, count: int = 1) -> None:
    await running.until(lambda: running.source.synced and len(watches(kube)) >= count)


async def test_resume_after_clean_close_and_after_bookmark(kube: KubeApiServer,
                                                           running: Running) -> None:
    kube.bed.apply(pod("a"))
    await synced_and_watching(kube, running)
    first = watches(kube)[0].query["resourceVersion"]
    kube.bed.controller.set_ready("default", "a", False)
    # The watch ends cleanly after 1 s; the next starts from the version of the last event.
    await running.until(lambda: len(watches(kube)) >= 2)
    assert running.actions("a") == ["unready"]
    event_rv = str(kube.bed.store.rv)
    assert watches(kube)[1].query["resourceVersion"] == event_rv != first
    # Another kind moves the shared counter: only a bookmark tells the pods watch about it.
    kube.bed.watch.bookmark_interval = 0.1
    kube.bed.add_node("n1")
    bookmark_rv = str(kube.bed.store.rv)
    await running.until(lambda: watches(kube)[-1].query["resourceVersion"] == bookmark_rv)
    assert len(lists(kube)) == 1
    assert running.actions("a") == ["unready"]


@pytest.mark.parametrize("as_http", [False, True], ids=["in-stream", "http"])
async def test_410_relists_and_a_gap_update_and_delete_are_each_seen_once(
        kube: KubeApiServer, running: Running, as_http: bool) -> None:
    kube.bed.apply(pod("stays"))
    kube.bed.apply(pod("goes"))
    await synced_and_watching(kube, running)
    kube.bed.watch.expired_as_http = as_http
    # While the source is between watches, the history it would resume from is forgotten.
    kube.bed.faults.add("stall", path=PODS, watch=True, count=1)
    await running.until(lambda: watches(kube)[-1].query["resourceVersion"] == str(
        kube.bed.store.rv) and len(watches(kube)) >= 2)
    kube.bed.controller.set_ready("default", "stays", False)
    kube.bed.store.delete(kube.bed.kind("v1", "pods"), "default", "goes")
    kube.bed.store.compact()
    await running.until(lambda: len(lists(kube)) >= 2, limit=10)
    await running.until(lambda: "unready" in running.actions("stays"))
    changes = [e for e in running.events if e.attributes.get("name") == "stays"]
    assert [e.action for e in changes] == ["unready"] and changes[0].synthetic
    assert running.source.cache.get("Pod", "default", "goes") is None


@pytest.mark.parametrize("fault", ["torn", "drop"])
async def test_torn_line_or_dropped_stream_rewatches_without_loss(
        kube: KubeApiServer, running: Running, fault: Any) -> None:
    kube.bed.apply(pod("a"))
    await synced_and_watching(kube, running)
    kube.bed.faults.add(fault, path=PODS, watch=True, after_events=1)
    await running.until(lambda: len(watches(kube)) >= 3)
    kube.bed.controller.set_ready("default", "a", False)
    await running.until(lambda: "unready" in running.actions("a"))
    kube.bed.controller.set_ready("default", "a", True)
    kube.bed.controller.crash_loop("default", "a", restart_count=3)
    await running.until(lambda: "crashloop" in running.actions("a"))
    # Each once, in order: the re-watch lost nothing and replayed nothing.
    assert running.actions("a")[:4] == ["unready", "ready", "restarted", "crashloop"]
    assert len(lists(kube)) == 1


async def test_a_stalled_watch_is_reconnected(kube: KubeApiServer, running: Running) -> None:
    await synced_and_watching(kube, running)
    kube.bed.faults.add("stall", path=PODS, watch=True, count=1)
    await running.until(lambda: kube.bed.faults.pending[-1].hits == 1)
    stalled = len(watches(kube))
    await running.until(lambda: len(watches(kube)) > stalled, limit=4)
    assert len(lists(kube)) == 1


async def test_403_logs_one_clear_error_and_retries_slowly(
        kube: KubeApiServer, running: Running, caplog: pytest.LogCaptureFixture) -> None:
    kube.bed.faults.add("status", path=PODS, watch=False, code=403, count=1_000)
    await kube.bed.log.wait_for("GET", PODS, watch=False)
    await asyncio.sleep(2.5)  # the window whose request count is bounded
    assert 2 <= len(lists(kube)) <= 4
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [errors[0]] and errors[0].startswith(
        "list pods: forbidden (RBAC: grant list/watch on pods;")
    assert not running.source.synced


async def test_429_waits_and_rewatches_without_relisting(kube: KubeApiServer,
                                                         running: Running) -> None:
    await synced_and_watching(kube, running)
    kube.bed.faults.add("status", path=PODS, watch=True, code=429, count=2, retry_after=0)
    await running.until(lambda: len([w for w in watches(kube) if w.status == 200]) >= 3)
    assert len(lists(kube)) == 1


async def test_pod_changes_wait_until_their_owners_have_listed(kube: KubeApiServer,
                                                              kubeconfig: Path) -> None:
    """A pod crash-looping when remedyd starts reaches rules with its Deployment named,
    however late the Deployments list (informers wait for every cache to sync)."""
    kube.bed.add_node("node-1")
    kube.bed.controller.crash_images.add("example/web:2.0")
    kube.bed.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                                 "containers": [{"name": "web", "image": "example/web:2.0"}]}}}})
    kube.bed.faults.add("status", path="/deployments$", watch=False, code=500, count=3)
    events: list[Event] = []
    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, events.append, Metrics(CollectorRegistry()),
                              ["pods", "replicasets", "deployments"], tuning=FAST)
    task = asyncio.create_task(source.run())
    try:
        running = Running(source, events)
        await kube.bed.log.wait_for("GET", PODS, watch=True)
        await kube.bed.log.wait_for("GET", "/replicasets$", watch=True)
        assert not source.cache.synced("Deployment") and events == []
        await running.until(lambda: any(e.action == "crashloop" for e in events))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    [crashloop] = [e for e in events if e.action == "crashloop"]
    assert (crashloop.attributes["workload_kind"], crashloop.attributes["workload_name"]) == (
        "Deployment", "web")


@pytest.mark.parametrize("late", ["replicasets", "deployments"])
async def test_a_pod_that_comes_before_its_owners_waits_for_them(
        kube: KubeApiServer, kubeconfig: Path, late: str) -> None:
    """Watches of different kinds are different streams: a new Pod's ADDED may come before
    its ReplicaSet's or its Deployment's. When its events go out, the Deployment its
    rollback acts on can be resolved, not a broken chain."""
    from daemon.kube.owners import resolve_target

    events: list[Event] = []
    resolvable: list[bool] = []
    source: KubernetesSource

    def emit(event: Event) -> None:
        events.append(event)
        resolvable.append(resolve_target(source.cache, event.subject, "deployment") is not None)

    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, emit, Metrics(CollectorRegistry()),
                              ["pods", "replicasets", "deployments"], tuning=FAST)
    task = asyncio.create_task(source.run())
    try:
        running = Running(source, events)
        await running.until(lambda: source.synced)
        # The next watch of that kind says nothing until remedyd calls it stalled (1.5 s):
        # its ADDED comes that much after the Pod's.
        kube.bed.faults.add("stall", path=f"/{late}$", watch=True, count=1)
        await running.until(lambda: any(f.hits for f in kube.bed.faults.pending))
        kube.bed.add_node("node-1")
        kube.bed.controller.crash_images.add("example/api:1")
        kube.bed.apply({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "example/api:1"}]}}}})
        await running.until(lambda: any(e.action == "crashloop" for e in events))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    [(crashloop, resolved)] = [(e, r) for e, r in zip(events, resolvable, strict=True)
                               if e.action == "crashloop"]
    assert resolved, crashloop.attributes
    assert crashloop.attributes.get("workload_name") == "api"
