"""The partition guard on the test bed: while the API server answers lists and watches with
500s, a pod action is refused by `partition` and nothing is written; once a relist brings
the Pod cache back in sync, the paused decision is judged again and acted on, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.actions.executor import Executor
from daemon.actions.kube.partition import PartitionGuard
from daemon.audit import AuditLog
from daemon.clients.kubernetes import KubeClient
from daemon.core.events import Event
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import load_ruleset
from daemon.kube.cache import Cache
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.kube.server import KubeApiServer
from tests.kubeactions import KINDS, deployment, kube_executor, until
from tests.rulekit import CATALOG

EVICTIONS = r"/pods/[^/]+/eviction$"
# Watches end every second, so a fault on the next one shows within a second.
TUNING = Tuning(stall_timeout=5, watch_timeout=1, backoff_initial=0.05, backoff_max=0.1)


@dataclass
class Bed:
    kube: KubeApiServer
    source: KubernetesSource
    executor: Executor
    events: list[Event]


@pytest_asyncio.fixture
async def bed(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> AsyncIterator[Bed]:
    kube.bed.add_node("node-1")
    metrics = Metrics(CollectorRegistry())
    events: list[Event] = []
    client = KubeClient(kubeconfig, None, 5.0)
    cache = Cache()
    source = KubernetesSource(client, events.append, metrics, KINDS, tuning=TUNING, cache=cache)
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.open()
    executor = kube_executor(client, cache, audit, metrics)
    executor.insert_guard(PartitionGuard(source, executor.resubmit), before="target")
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.synced, "the source listed every kind")
        yield Bed(kube, source, executor, events)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()
        audit.close()


async def test_actions_pause_while_the_api_is_unreachable_and_resume_after_the_relist(
        bed: Bed, tmp_path: Path) -> None:
    bed.kube.bed.apply(deployment("web", replicas=2))
    pod = sorted(p["metadata"]["name"] for p in bed.kube.bed.store.list(
        bed.kube.bed.kind("v1", "pods")))[0]
    bed.kube.bed.controller.set_ready("default", pod, False)
    await until(lambda: any(e.action == "unready" and e.subject.name == pod
                            for e in bed.events), "the unready event")
    event = next(e for e in bed.events if e.action == "unready")
    lists_before = bed.source.status()["kinds"]["pods"]["scopes"][0]["lists"]

    # The API server fails every list and watch: the Pod watch breaks off.
    fault = bed.kube.bed.faults.add("status", code=500, method="GET", count=10_000)
    await until(lambda: not bed.source.in_sync("Pod")[0], "the Pod cache out of sync")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: evict-unready\n    source: kubernetes\n"
                     "    when: event.action == \"unready\"\n"
                     "    actions: [kubernetes.evict: {}]\n")
    ruleset, errors = load_ruleset([rules], CATALOG)
    assert not errors
    [decision] = Evaluator(ruleset).evaluate(event, 0.0)
    task = bed.executor.submit(decision)
    assert task is not None
    await task
    [paused] = [r for r in bed.executor.audit.tail(100) if r["kind"] == "decision"]
    assert (paused["decision"], paused["suppressed_by"]) == ("suppressed", "partition")
    assert "the Pod watch has not re-synced with the API server" in paused["reason"]
    assert "judged again once it has" in paused["reason"]

    # Meanwhile the other pod changed, and the server comes back with its history
    # compacted: the watch cannot resume from its version and must relist.
    other = sorted(p["metadata"]["name"] for p in bed.kube.bed.store.list(
        bed.kube.bed.kind("v1", "pods")))[1]
    bed.kube.bed.controller.set_ready("default", other, False)
    bed.kube.bed.store.compact()
    fault.count = 0
    await until(lambda: len([r for r in bed.executor.audit.tail(100)
                             if r["kind"] == "outcome"]) == 1, "the resumed decision's outcome")

    records = [r for r in bed.executor.audit.tail(100) if r.get("incident") == decision.incident_id]
    assert [(r["kind"], r["decision"]) for r in records] == [
        ("decision", "suppressed"), ("decision", "act"), ("outcome", "act")]
    assert records[2]["outcome"] == "success"
    assert bed.source.status()["kinds"]["pods"]["scopes"][0]["lists"] > lists_before
    evictions = bed.kube.bed.log.find("POST", EVICTIONS)
    assert [e.status for e in evictions] == [201]
    assert evictions[0].path.endswith(f"/pods/{pod}/eviction")
