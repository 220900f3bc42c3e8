"""kubernetes.cordon / uncordon and kubernetes.label / annotate through the real Executor, on
decisions made from real transitions on the test bed; what they send is compared with what
the real kubectl sends for the same change."""

from __future__ import annotations

from tests.kube.faults import Request
from tests.kube.plugin import KubectlRunner
from tests.kubeactions import Cluster, deployment
from tests.kubeactions import cluster as cluster  # the fixture


def node_patches(cluster: Cluster, node: str) -> list[Request]:
    return cluster.kube.bed.log.find("PATCH", f"/api/v1/nodes/{node}$")


def unschedulable(cluster: Cluster, node: str) -> bool:
    found = cluster.find("v1", "nodes", node, namespace=None)
    assert found is not None
    return bool(found["spec"].get("unschedulable"))


async def kubectl_ok(kubectl: KubectlRunner, *args: str) -> None:
    done = await kubectl(*args)
    assert done.returncode == 0, done.stderr


async def test_cordon_and_uncordon_send_what_kubectl_sends(cluster: Cluster,
                                                          kubectl: KubectlRunner) -> None:
    cluster.kube.bed.apply(deployment(replicas=1))
    [pod] = cluster.pods()
    found = cluster.find("v1", "pods", pod)
    assert found is not None
    node = found["spec"]["nodeName"]
    other = "node-2" if node == "node-1" else "node-1"
    event = await cluster.unready(pod)

    await kubectl_ok(kubectl, "cordon", other)
    _, outcome = await cluster.act(event, "[kubernetes.cordon: {}]")
    assert outcome is not None and outcome["outcome"] == "success"
    assert outcome["target"]["kind"] == "node" and outcome["target"]["name"] == node
    assert outcome["steps"][0]["verified"] is True
    [theirs], [ours] = node_patches(cluster, other), node_patches(cluster, node)
    assert (ours.content_type, ours.json) == (theirs.content_type, theirs.json)
    assert unschedulable(cluster, node)

    await kubectl_ok(kubectl, "uncordon", other)
    _, outcome = await cluster.act(event, "[kubernetes.uncordon: {}]")
    assert outcome is not None and outcome["outcome"] == "success"
    theirs, ours = node_patches(cluster, other)[-1], node_patches(cluster, node)[-1]
    assert (ours.content_type, ours.json) == (theirs.content_type, theirs.json)
    assert ours.json == {"spec": {"unschedulable": None}}
    assert not unschedulable(cluster, node)


async def test_cordon_refuses_a_cordoned_node_and_uncordon_an_open_one(
        cluster: Cluster) -> None:
    cluster.kube.bed.add_node("node-3", ready=False)
    event = await cluster.event("not_ready", "node-3", kind="node")

    record, _ = await cluster.act(event, "[kubernetes.uncordon: {}]")
    assert (record["decision"], record["suppressed_by"]) == ("suppressed", "preflight")
    assert record["reason"] == "kubernetes.uncordon: node node-3 is not cordoned"

    _, outcome = await cluster.act(event, "[kubernetes.cordon: {}]")
    assert outcome is not None and outcome["outcome"] == "success"
    record, _ = await cluster.act(event, "[kubernetes.cordon: {}]")
    assert record["reason"] == "kubernetes.cordon: node node-3 is already cordoned"
    assert len(node_patches(cluster, "node-3")) == 1


async def test_a_forbidden_cordon_fails_at_once_naming_verb_and_resource(
        cluster: Cluster) -> None:
    cluster.kube.bed.add_node("node-3", ready=False)
    event = await cluster.event("not_ready", "node-3", kind="node")
    cluster.kube.bed.faults.add("status", method="PATCH", path="/nodes/node-3$", code=403,
                                count=10)
    _, outcome = await cluster.act(event, "[kubernetes.cordon: {}]")

    assert outcome is not None and outcome["outcome"] == "failed"
    assert "patch nodes: forbidden (RBAC: grant patch on nodes" in outcome["error"]
    assert 'cannot patch resource "nodes" in API group "" at the cluster scope' in (
        outcome["error"])
    assert len(node_patches(cluster, "node-3")) == 1
    assert not unschedulable(cluster, "node-3")


async def test_label_sets_and_removes_on_the_subject_as_kubectl_label_does(
        cluster: Cluster, kubectl: KubectlRunner) -> None:
    cluster.kube.bed.add_node("node-3", ready=False)
    await kubectl_ok(kubectl, "label", "node", "node-1", "team=infra", "zone=a")
    await kubectl_ok(kubectl, "label", "node", "node-3", "zone=a")
    event = await cluster.event("not_ready", "node-3", kind="node")

    await kubectl_ok(kubectl, "label", "node", "node-1", "health=bad", "zone-")
    _, outcome = await cluster.act(
        event, "[kubernetes.label: {set: {health: bad}, remove: [zone]}]")
    assert outcome is not None and outcome["outcome"] == "success"
    assert outcome["steps"][0]["verified"] is True
    theirs, ours = node_patches(cluster, "node-1")[-1], node_patches(cluster, "node-3")[-1]
    assert (ours.content_type, ours.json) == (theirs.content_type, theirs.json)
    found = cluster.find("v1", "nodes", "node-3", namespace=None)
    assert found is not None and found["metadata"]["labels"]["health"] == "bad"
    assert "zone" not in found["metadata"]["labels"]

    # Already so: nothing to change, nothing sent.
    sent = len(cluster.writes())
    record, _ = await cluster.act(
        event, "[kubernetes.label: {set: {health: bad}, remove: [zone]}]")
    assert record["suppressed_by"] == "preflight"
    assert "node node-3 already has these labels: nothing to change" in record["reason"]
    assert len(cluster.writes()) == sent


async def test_annotate_a_deployment_and_a_pod(cluster: Cluster,
                                               kubectl: KubectlRunner) -> None:
    cluster.kube.bed.apply(deployment(replicas=1))
    cluster.kube.bed.apply(deployment("other", replicas=1))
    cluster.kube.bed.controller.exceed_progress_deadline("default", "web")
    event = await cluster.event("progress_deadline_exceeded", "web", kind="deployment")
    _, outcome = await cluster.act(
        event, "[kubernetes.annotate: {set: {remedyd.io/stuck: \"since the deadline\"}}]")
    assert outcome is not None and outcome["outcome"] == "success"
    found = cluster.find("apps/v1", "deployments", "web")
    assert found is not None
    assert found["metadata"]["annotations"]["remedyd.io/stuck"] == "since the deadline"
    await kubectl_ok(kubectl, "annotate", "deployment", "other",
                     "remedyd.io/stuck=since the deadline")
    [ours] = cluster.kube.bed.log.find("PATCH", "/deployments/web$")
    [theirs] = cluster.kube.bed.log.find("PATCH", "/deployments/other$")
    assert (ours.content_type, ours.json) == (theirs.content_type, theirs.json)

    [pod] = cluster.pods()
    _, outcome = await cluster.act(await cluster.unready(pod),
                                   "[kubernetes.annotate: {set: {remedyd.io/seen: unready}}]")
    assert outcome is not None and outcome["outcome"] == "success"
    [patch] = cluster.kube.bed.log.find("PATCH", f"/pods/{pod}$")
    assert patch.json == {"metadata": {"annotations": {"remedyd.io/seen": "unready"}}}
