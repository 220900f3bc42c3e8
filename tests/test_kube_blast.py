"""The blast radius and the short-circuit through the real Executor on the test bed: pod
actions stop at a share of a workload's pods and a number of a namespace's within a window
(also after a restart, from the audit log), and a workload whose pods are unhealthy in
numbers gets one escalation and refusals instead of evictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.actions.executor import Executor
from daemon.actions.guards import Guard
from daemon.actions.kube.blast import BlastRadiusGuard
from daemon.actions.kube.podscope import Limits
from daemon.actions.kube.shortcircuit import UnhealthyShareGuard
from daemon.actions.notify import Webhook
from daemon.clients.http import HttpClient
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.core.rules import Rule
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import load_ruleset
from daemon.kube.cache import Cache
from tests.harness import WebhookSink
from tests.kubeactions import Cluster, Obj, deployment
from tests.kubeactions import cluster as cluster  # the fixture
from tests.rulekit import CATALOG

EVICTIONS = r"/pods/[^/]+/eviction$"
LIMITS = Limits(max_workload_share=0.25, max_namespace_pods=10, window=600.0,
                max_unhealthy_share=0.4)


def guards_for(executor: Executor, limits: Limits = LIMITS) -> list[Guard]:
    cache = executor.actions["kubernetes.evict"].cache  # type: ignore[attr-defined]
    assert isinstance(cache, Cache)
    return [UnhealthyShareGuard(cache, limits), BlastRadiusGuard(cache, limits)]


def plug(executor: Executor, limits: Limits = LIMITS) -> None:
    for guard in guards_for(executor, limits):
        executor.insert_guard(guard, before="preflight")


def decide(cluster: Cluster, event: Event, extra: str = "") -> Decision:
    path = cluster.tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: evict-unready\n    source: kubernetes\n"
                    f"    when: event.action == \"{event.action}\"\n{extra}"
                    "    actions: [kubernetes.evict: {}]\n")
    ruleset, errors = load_ruleset([path], CATALOG)
    assert not errors, errors
    [decision] = Evaluator(ruleset).evaluate(event, 0.0)
    return cluster.executor.retarget(decision)


async def evict_unready(cluster: Cluster, pods: list[str], extra: str = "") -> list[Obj]:
    """Each pod made unready and its decision handled in turn; the decision records."""
    records = []
    for pod in pods:
        event = await cluster.unready(pod)
        record, _ = await cluster.handle(decide(cluster, event, extra))
        records.append(record)
    return records


def guard_of(record: Obj, name: str) -> Obj:
    return next(g for g in record["guards"] if g["guard"] == name)


async def test_pod_actions_stop_at_the_workload_share(cluster: Cluster) -> None:
    plug(cluster.executor)
    cluster.kube.bed.apply(deployment("web", replicas=8))
    first, second, third = cluster.pods()[:3]
    records = await evict_unready(cluster, [first, second, third])

    # 25% of 8 pods is 2: the third eviction is refused, and says why.
    assert [r["decision"] for r in records] == ["act", "act", "suppressed"]
    assert guard_of(records[1], "blast_radius")["reason"] == (
        "pod 2 of at most 2 (25% of its 8 pods) of Deployment default/web within 600s")
    assert records[2]["suppressed_by"] == "blast_radius"
    assert records[2]["reason"] == (
        "2 of the 8 pods of Deployment default/web were acted on within 600s; one more "
        "would exceed 25% of its 8 pods (max_workload_share: 2 pod(s))")
    evicted = {r.path.rsplit("/", 2)[1] for r in cluster.kube.bed.log.find("POST", EVICTIONS)}
    assert evicted == {first, second}


async def test_a_rule_sets_its_own_limits_and_the_namespace_counts_across_workloads(
        cluster: Cluster) -> None:
    plug(cluster.executor)
    cluster.kube.bed.apply(deployment("web", replicas=2))
    cluster.kube.bed.apply(deployment("api", replicas=2))
    own = "    blast_radius: {max_namespace_pods: 1, max_workload_share: 1.0}\n"
    records = await evict_unready(cluster, [cluster.pods("web")[0], cluster.pods("api")[0]],
                                  own)

    assert [r["decision"] for r in records] == ["act", "suppressed"]
    assert records[1]["suppressed_by"] == "blast_radius"
    assert records[1]["reason"] == ("1 pods of namespace default were acted on within 600s; "
                                    "at most 1 (max_namespace_pods)")
    assert len(cluster.kube.bed.log.find("POST", EVICTIONS)) == 1


async def test_what_was_spent_is_counted_again_after_a_restart(cluster: Cluster) -> None:
    plug(cluster.executor)
    cluster.kube.bed.apply(deployment("web", replicas=4))
    first, second = cluster.pods()[:2]
    [acted] = await evict_unready(cluster, [first])
    assert acted["decision"] == "act" and acted["kept"]["blast_radius"]["workload"]

    # A new daemon: fresh guards, restored from the audited decisions as app.py does.
    executor = cluster.executor
    fresh = Executor(executor.actions, executor.audit, executor.metrics, executor.settings,
                     guards=[g for g in executor.guards if g.name not in (
                         "blast_radius", "unhealthy_share")])
    plug(fresh)
    records = executor.audit.tail(1000)
    ruleset, _ = load_ruleset([cluster.tmp_path / "rules.yaml"], CATALOG)

    def rule_named(name: str) -> Rule | None:
        compiled = ruleset.by_name(name)
        return compiled.rule if compiled else None

    assert fresh.restore(records, rule_named, executor.wall_clock()) == 1
    cluster.executor = fresh
    [refused] = await evict_unready(cluster, [second])

    # 25% of 4 is 1, spent before the restart.
    assert refused["suppressed_by"] == "blast_radius", refused
    assert len(cluster.kube.bed.log.find("POST", EVICTIONS)) == 1


async def test_an_unhealthy_majority_short_circuits_pod_actions(cluster: Cluster) -> None:
    plug(cluster.executor)
    sink = WebhookSink()
    http = HttpClient()
    cluster.executor.actions["notify.webhook"] = Webhook(http, sink.__enter__().url)
    try:
        await short_circuited(cluster, sink)
    finally:
        await http.close()
        sink.__exit__(None, None, None)


async def short_circuited(cluster: Cluster, sink: WebhookSink) -> None:
    cluster.kube.bed.apply(deployment("web", replicas=5))
    pods = cluster.pods()
    for pod in pods[:3]:  # 3 of 5: more than 40%
        await cluster.unready(pod)
    records = []
    for pod in pods[:3]:
        event = next(e for e in reversed(cluster.events)
                     if e.action == "unready" and e.subject.name == pod)
        record, _ = await cluster.handle(decide(cluster, event))
        records.append(record)

    first, *others = records
    assert first["decision"] == "escalate", first.get("reason")
    assert guard_of(first, "unhealthy_share")["reason"] == (
        "3 of 5 pods of Deployment default/web are unhealthy at once (more than 40%)")
    [note] = first["actions"]
    assert note["name"] == "notify.webhook"
    assert "3 of 5 pods" in note["params"]["message"]
    assert "holding off" in note["params"]["message"]
    assert [r["suppressed_by"] for r in others] == ["unhealthy_share"] * 2
    assert all(f"short-circuited by incident {first['incident']}" in r["reason"]
               for r in others)
    assert cluster.kube.bed.log.find("POST", EVICTIONS) == []
    assert cluster.kube.bed.log.find("DELETE") == []
    [body] = sink.bodies
    assert body["incident"] == first["incident"] and "3 of 5 pods" in body["message"]


@pytest.mark.parametrize("override", ["{max_workload_share: 0}", "{window: 0s}",
                                      "{max_namespace_pods: 0}", "{max_pods: 3}"])
def test_bad_blast_radius_keys_are_refused_at_load_naming_the_rule(
        tmp_path: Path, override: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: evict-unready\n    source: kubernetes\n"
                    "    when: event.action == \"unready\"\n"
                    f"    blast_radius: {override}\n    actions: [kubernetes.evict: {{}}]\n")
    _, errors = load_ruleset([path], CATALOG)
    assert len(errors) == 1 and "evict-unready" in str(errors[0])
    assert "blast_radius" in str(errors[0])
