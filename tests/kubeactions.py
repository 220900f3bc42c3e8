"""A cluster on the test bed for Kubernetes action tests: a KubernetesSource fills the cache
and emits real transitions, rules turn them into decisions, and the real Executor (with the
cache_synced guard, auditing to tmp_path) runs the pod, node and metadata actions."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.kube.catalog import kube_actions
from daemon.actions.kube.guards import CacheSyncedGuard
from daemon.audit import AuditLog
from daemon.clients.kubernetes import KubeClient
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import load_ruleset
from daemon.kube.cache import Cache
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.kube.faults import Request
from tests.kube.server import KubeApiServer
from tests.rulekit import CATALOG

Obj = dict[str, Any]
KINDS = ["pods", "replicasets", "deployments", "nodes"]
_TUNING = Tuning(stall_timeout=5, watch_timeout=5, backoff_initial=0.05, backoff_max=0.2)


def deployment(name: str = "web", replicas: int = 2) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": name, "image": f"example/{name}:1"}]}}}}


def bare_pod(name: str, node: str = "node-1", owner: Obj | None = None,
             annotations: dict[str, str] | None = None) -> Obj:
    """A Running, Ready pod as `kubectl get -o json` shows it, owned by `owner` (an
    ownerReference) or by nothing."""
    metadata: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                     "labels": {"app": name}, "annotations": annotations or {}}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "example/a:1"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                              "state": {"running": {}}}]}}


def pdb(name: str, min_available: int, app: str = "web") -> Obj:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}}


async def until(check: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """A bounded poll, for what offers no event to wait on."""
    for _ in range(int(limit / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {limit}s: {what}")


@dataclass
class Cluster:
    kube: KubeApiServer
    events: list[Event]
    executor: Executor
    tmp_path: Path

    def pods(self, app: str = "web") -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.store_list("v1", "pods")
                      if (p["metadata"].get("labels") or {}).get("app") == app)

    def store_list(self, api_version: str, plural: str) -> list[Obj]:
        return self.kube.bed.store.list(self.kube.bed.kind(api_version, plural))

    def find(self, api_version: str, plural: str, name: str,
             namespace: str | None = "default") -> Obj | None:
        return self.kube.bed.store.find(self.kube.bed.kind(api_version, plural), namespace,
                                        name)

    async def event(self, action: str, name: str, kind: str = "pod") -> Event:
        """The newest `action` transition about `name`, once the source has emitted it."""
        def found() -> list[Event]:
            return [e for e in self.events if (e.action, e.kind, e.subject.name) == (
                action, kind, name)]
        await until(lambda: bool(found()), f"a {kind} {action} event for {name}: "
                    f"{[(e.kind, e.action, e.subject.name) for e in self.events]}")
        return found()[-1]

    async def unready(self, pod: str) -> Event:
        self.kube.bed.controller.set_ready("default", pod, False)
        return await self.event("unready", pod)

    def decide(self, event: Event, actions: str) -> Decision:
        """The decision of one rule matching `event`'s action, with `actions` (YAML flow)."""
        path = self.tmp_path / "rules.yaml"
        path.write_text(f"rules:\n  - name: fix\n    source: kubernetes\n"
                        f"    when: event.action == \"{event.action}\"\n"
                        f"    actions: {actions}\n")
        ruleset, errors = load_ruleset([path], CATALOG)
        assert not errors, errors
        [decision] = Evaluator(ruleset).evaluate(event, 0.0)
        return self.executor.retarget(decision)

    async def handle(self, decision: Decision) -> tuple[Obj, Obj | None]:
        """The decision record and, when it acted, its outcome record."""
        await self.executor.handle(decision)
        records = [r for r in self.executor.audit.tail(1000)
                   if r.get("incident") == decision.incident_id]
        outcomes = [r for r in records if r["kind"] == "outcome"]
        return (next(r for r in records if r["kind"] == "decision"),
                outcomes[0] if outcomes else None)

    async def act(self, event: Event, actions: str) -> tuple[Obj, Obj | None]:
        return await self.handle(self.decide(event, actions))

    def settings(self, **changes: Any) -> None:
        self.executor.settings = dataclasses.replace(self.executor.settings, **changes)

    def writes(self) -> list[Request]:
        """Every POST, PUT, PATCH and DELETE the server received."""
        return self.kube.bed.log.mutations()


def kube_executor(client: KubeClient, cache: Cache, audit: AuditLog,
                  metrics: Metrics) -> Executor:
    """The real Executor with every Kubernetes action and the cache-synced guard, as the
    daemon wires them (fast retries, a short action timeout)."""
    executor = Executor({a.name: a for a in kube_actions(client, cache)}, audit, metrics,
                        ExecutorSettings(retry_delay=0.05, action_timeout=5))
    executor.insert_guard(CacheSyncedGuard(cache, frozenset(
        {"Pod", "ReplicaSet", "Deployment", "Node"})), before="target")
    return executor


@pytest_asyncio.fixture
async def cluster(kube: KubeApiServer, kubeconfig: Path,
                  tmp_path: Path) -> AsyncIterator[Cluster]:
    kube.bed.add_node("node-1")
    kube.bed.add_node("node-2")
    metrics = Metrics(CollectorRegistry())
    events: list[Event] = []
    client = KubeClient(kubeconfig, None, 5.0)
    cache = Cache()
    source = KubernetesSource(client, events.append, metrics, KINDS, tuning=_TUNING,
                              cache=cache)
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.open()
    executor = kube_executor(client, cache, audit, metrics)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.synced and len(kube.bed.log.find(
            "GET", watch=True)) >= len(KINDS), "the source listed and watches every kind")
        yield Cluster(kube, events, executor, tmp_path)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()
        audit.close()
