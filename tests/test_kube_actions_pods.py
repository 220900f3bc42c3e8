"""kubernetes.evict, kubernetes.delete_pod and kubernetes.quarantine through the real Executor,
on decisions made from the transitions a KubernetesSource sees on the test bed: what reaches
the API server (its request log and store), what is refused and why, as audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.actions.kube.podsafety import MIRROR
from daemon.actions.kube.quarantine import MANAGED_BY
from daemon.engine.ruleset import load_ruleset
from tests.kubeactions import Cluster, Obj, bare_pod, deployment, pdb, until
from tests.kubeactions import cluster as cluster  # the fixture
from tests.rulekit import CATALOG

EVICTIONS = r"/api/v1/namespaces/default/pods/[^/]+/eviction$"
POLICIES = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"


async def test_an_eviction_a_pdb_blocks_is_retried_and_never_becomes_a_delete(
        cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    cluster.kube.bed.apply(pdb("web-pdb", min_available=2))
    victim, _ = cluster.pods()
    event = await cluster.unready(victim)
    uid = event.subject.id
    task = asyncio.create_task(cluster.act(event, "[kubernetes.evict: {retry_every: 100ms}]"))
    await until(lambda: len(cluster.kube.bed.log.find("POST", EVICTIONS)) >= 3,
                "three eviction attempts")
    # Relaxed: the other, Ready pod alone now meets the budget.
    cluster.kube.bed.apply(pdb("web-pdb", min_available=1))
    _, outcome = await task

    assert outcome is not None and outcome["outcome"] == "success", outcome
    [step] = outcome["steps"]
    assert step["attempts"] >= 4 and step["verified"] is True
    evictions = cluster.kube.bed.log.find("POST", EVICTIONS)
    assert [e.status for e in evictions] == [429] * (len(evictions) - 1) + [201]
    assert {e.path.rsplit("/", 2)[1] for e in evictions} == {victim}
    assert evictions[-1].json["deleteOptions"] == {"preconditions": {"uid": uid}}
    assert cluster.kube.bed.log.find("DELETE") == []
    assert cluster.find("v1", "pods", victim) is None


async def test_an_eviction_still_blocked_at_the_timeout_says_so(cluster: Cluster) -> None:
    cluster.settings(action_timeout=0.6)
    cluster.kube.bed.apply(deployment())
    cluster.kube.bed.apply(pdb("web-pdb", min_available=2))
    victim = cluster.pods()[0]
    _, outcome = await cluster.act(await cluster.unready(victim),
                                   "[kubernetes.evict: {retry_every: 100ms, grace_period: 30s}]")

    assert outcome is not None and outcome["outcome"] == "timeout"
    assert "still blocked by PodDisruptionBudget web-pdb" in outcome["error"]
    assert "needs 2 healthy pods" in outcome["error"]
    evictions = cluster.kube.bed.log.find("POST", EVICTIONS)
    # Steadily every 100 ms, not ever more slowly (a doubling backoff makes 4 in 600 ms).
    assert len(evictions) >= 5 and {e.status for e in evictions} == {429}
    assert evictions[0].json["deleteOptions"]["gracePeriodSeconds"] == 30
    assert cluster.kube.bed.log.find("DELETE") == []
    assert cluster.find("v1", "pods", victim) is not None


NODE_OWNER = {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "uid-node-1",
              "controller": True}
DAEMONSET_OWNER = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                   "uid": "uid-agent", "controller": True}


@pytest.mark.parametrize(("pod", "refused_for"), [
    (bare_pod("solo"), "no controller owns pod default/solo: once removed it is gone for good"),
    (bare_pod("static-node-1", owner=NODE_OWNER, annotations={MIRROR: "abc"}),
     "is the mirror of a static pod"),
    (bare_pod("agent-x1", owner=DAEMONSET_OWNER),
     "is controlled by DaemonSet agent: it would come straight back"),
], ids=["unowned", "mirror", "daemonset"])
async def test_evict_refuses_what_kubectl_drain_refuses(cluster: Cluster, pod: Obj,
                                                        refused_for: str) -> None:
    cluster.kube.bed.apply(pod)
    name = pod["metadata"]["name"]
    record, outcome = await cluster.act(await cluster.unready(name), "[kubernetes.evict: {}]")

    assert outcome is None and record["decision"] == "suppressed"
    assert record["suppressed_by"] == "preflight" and refused_for in record["reason"]
    assert record["reason"].startswith("kubernetes.evict: ")
    assert cluster.writes() == []


async def test_an_unowned_pod_is_evicted_only_when_the_rule_allows_it(cluster: Cluster) -> None:
    cluster.kube.bed.apply(bare_pod("solo"))
    event = await cluster.unready("solo")
    record, _ = await cluster.act(event, "[kubernetes.evict: {}]")
    assert record["decision"] == "suppressed" and "allow_unowned: true" in record["reason"]
    assert cluster.writes() == []

    _, outcome = await cluster.act(event, "[kubernetes.evict: {allow_unowned: true}]")
    assert outcome is not None and outcome["outcome"] == "success"
    assert [(r.method, r.status) for r in cluster.writes()] == [("POST", 201)]
    assert cluster.find("v1", "pods", "solo") is None


async def test_a_pod_ready_again_is_not_evicted(cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    victim = cluster.pods()[0]
    event = await cluster.unready(victim)
    cluster.kube.bed.controller.set_ready("default", victim, True)
    record, outcome = await cluster.act(event, "[kubernetes.evict: {}]")
    assert outcome is None and record["suppressed_by"] == "superseded"
    assert "Ready again" in record["reason"]
    assert cluster.writes() == []


async def test_a_forbidden_eviction_fails_at_once_naming_verb_and_resource(
        cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    victim = cluster.pods()[0]
    cluster.kube.bed.faults.add("status", path=EVICTIONS, code=403, count=10)
    _, outcome = await cluster.act(await cluster.unready(victim), "[kubernetes.evict: {}]")

    assert outcome is not None and outcome["outcome"] == "failed"
    assert "create pods/eviction: forbidden (RBAC: grant create on pods/eviction" in (
        outcome["error"])
    assert f'pods "{victim}" is forbidden' in outcome["error"]
    assert len(cluster.kube.bed.log.find("POST", EVICTIONS)) == 1


async def test_the_pod_the_rule_saw_is_the_only_one_removed(cluster: Cluster) -> None:
    """The uid precondition: a pod recreated under the same name is not evicted or deleted,
    even when nothing else stood in the way (no guards at all here)."""
    cluster.kube.bed.apply(bare_pod("solo"))
    event = await cluster.unready("solo")
    pods = cluster.kube.bed.kind("v1", "pods")
    cluster.kube.bed.store.delete(pods, "default", "solo")
    cluster.kube.bed.store.create(pods, "default", bare_pod("solo"))  # a new uid
    cluster.executor.guards = []
    for action in ("kubernetes.evict", "kubernetes.delete_pod"):
        _, outcome = await cluster.act(event, f"[{action}: {{allow_unowned: true}}]")
        assert outcome is not None and outcome["outcome"] == "failed", outcome
        assert "is not the pod the rule saw" in outcome["error"]
        assert "Precondition failed: UID in precondition" in outcome["error"]
    assert [r.status for r in cluster.writes()] == [409, 409]
    assert cluster.find("v1", "pods", "solo") is not None


async def test_delete_pod_deletes_the_pod_it_saw_with_its_grace_period(
        cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    victim = cluster.pods()[0]
    event = await cluster.unready(victim)
    _, outcome = await cluster.act(event, "[kubernetes.delete_pod: {grace_period: 1500ms}]")

    assert outcome is not None and outcome["outcome"] == "success"
    assert outcome["steps"][0]["verified"] is True
    [delete] = cluster.kube.bed.log.find("DELETE")
    assert delete.path == f"/api/v1/namespaces/default/pods/{victim}"
    assert delete.json == {"apiVersion": "v1", "kind": "DeleteOptions",
                           "preconditions": {"uid": event.subject.id}, "gracePeriodSeconds": 2}
    assert cluster.find("v1", "pods", victim) is None
    assert len(cluster.pods()) == 2  # its ReplicaSet replaced it


async def test_an_unowned_pod_is_not_deleted(cluster: Cluster) -> None:
    cluster.kube.bed.apply(bare_pod("solo"))
    record, outcome = await cluster.act(await cluster.unready("solo"),
                                        "[kubernetes.delete_pod: {}]")
    assert outcome is None and record["suppressed_by"] == "preflight"
    assert "no controller owns pod default/solo" in record["reason"]
    assert cluster.kube.bed.log.find("DELETE") == []
    assert cluster.find("v1", "pods", "solo") is not None


async def test_quarantine_labels_each_pod_and_creates_one_policy_for_both(
        cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    first, second = cluster.pods()
    details = []
    for pod in (first, second):
        _, outcome = await cluster.act(await cluster.unready(pod), "[kubernetes.quarantine: {}]")
        assert outcome is not None and outcome["outcome"] == "success", outcome
        assert outcome["steps"][0]["verified"] is True
        details.append(outcome["steps"][0]["details"])

    [policy] = cluster.store_list("networking.k8s.io/v1", "networkpolicies")
    name = policy["metadata"]["name"]
    assert policy["metadata"]["labels"] == {MANAGED_BY: "remedyd"}
    assert policy["spec"] == {"podSelector": {"matchLabels": {"remedyd.io/quarantine": "true"}},
                              "policyTypes": ["Ingress", "Egress"]}
    assert [d["network_policy"] for d in details] == [
        {"namespace": "default", "name": name, "created": True},
        {"namespace": "default", "name": name, "created": False}]
    assert [d["undo"] for d in details] == [
        {"remove_pod_label": "remedyd.io/quarantine", "delete_network_policy": name},
        {"remove_pod_label": "remedyd.io/quarantine", "delete_network_policy": None}]
    for pod in (first, second):
        found = cluster.find("v1", "pods", pod)
        assert found is not None
        assert found["metadata"]["labels"]["remedyd.io/quarantine"] == "true"
    assert [(r.method, r.status) for r in cluster.writes()
            if r.path.startswith(POLICIES)] == [("POST", 201), ("POST", 409)]
    patches = cluster.kube.bed.log.find("PATCH", "/pods/")
    assert {p.content_type for p in patches} == {"application/merge-patch+json"}
    assert patches[0].json == {"metadata": {"labels": {"remedyd.io/quarantine": "true"}}}

    # Quarantined already: nothing more to do.
    record, _ = await cluster.act(await cluster.event("unready", first),
                                  "[kubernetes.quarantine: {}]")
    assert record["suppressed_by"] == "preflight" and "already quarantined" in record["reason"]


async def test_quarantine_refuses_a_policy_of_that_name_it_does_not_own(
        cluster: Cluster) -> None:
    cluster.kube.bed.apply(deployment())
    victim = cluster.pods()[0]
    event = await cluster.unready(victim)
    # Find the name remedyd uses by letting it create the policy elsewhere first.
    cluster.kube.bed.apply(deployment("other", replicas=1))
    other = cluster.pods("other")[0]
    cluster.kube.bed.controller.set_ready("default", other, False)
    await cluster.act(await cluster.event("unready", other), "[kubernetes.quarantine: {}]")
    [policy] = cluster.store_list("networking.k8s.io/v1", "networkpolicies")
    policy["metadata"]["labels"] = {}
    policy["spec"]["podSelector"] = {"matchLabels": {"app": "db"}}
    cluster.kube.bed.apply(policy)

    _, outcome = await cluster.act(event, "[kubernetes.quarantine: {}]")
    assert outcome is not None and outcome["outcome"] == "failed"
    assert f"NetworkPolicy default/{policy['metadata']['name']} already exists and is not " \
           f"labelled {MANAGED_BY}=remedyd" in outcome["error"]
    found = cluster.find("v1", "pods", victim)
    assert found is not None and "remedyd.io/quarantine" not in found["metadata"]["labels"]


async def test_quarantine_refuses_a_host_network_pod(cluster: Cluster) -> None:
    pod = bare_pod("hostnet", owner=DAEMONSET_OWNER)
    pod["spec"]["hostNetwork"] = True
    cluster.kube.bed.apply(pod)
    record, _ = await cluster.act(await cluster.unready("hostnet"),
                                  "[kubernetes.quarantine: {}]")
    assert record["suppressed_by"] == "preflight"
    assert "uses the host network: a NetworkPolicy cannot isolate it" in record["reason"]
    assert cluster.writes() == []


def test_a_zero_grace_period_is_refused_when_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: fix\n    source: kubernetes\n"
                    "    when: event.action == \"unready\"\n"
                    "    actions: [kubernetes.delete_pod: {grace_period: 0s}]\n")
    _, errors = load_ruleset([path], CATALOG)
    assert len(errors) == 1 and "rule 'fix'" in str(errors[0])
    assert "grace_period must be at least 1s (0 would force-delete" in str(errors[0])
