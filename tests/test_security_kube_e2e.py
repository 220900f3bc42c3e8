"""Kubernetes security posture against the test bed: the posture tap hands the source's
cache changes to the tracker (what it hands over, what it skips, with which origin),
and remedyd itself, with the security rules, finds a Deployment patched to privileged
(with the field diff), a binding to cluster-admin, a namespace's last NetworkPolicy
deleted, drift made while its watch was down, and stops finding what was accepted."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.clients.kubernetes import KubeClient
from daemon.core.events import Event, JSONValue, Ref
from daemon.sources.kube_posture import KubePosture
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.kube.server import KubeApiServer
from tests.test_kube_rollback import until

Obj = dict[str, Any]
FAST = Tuning(stall_timeout=1.5, watch_timeout=1, backoff_initial=0.05, backoff_max=0.2)
KINDS = ["pods", "deployments", "replicasets", "namespaces", "networkpolicies",
         "clusterrolebindings"]
NETWORKING = "networking.k8s.io/v1"
RBAC = "rbac.authorization.k8s.io/v1"


def web(privileged: bool = False) -> Obj:
    container: Obj = {"name": "web", "image": "example/web:1.0"}
    if privileged:
        container["securityContext"] = {"privileged": True}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [container]}}}}


def bare_pod(name: str = "debug") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": "node-1", "hostNetwork": True,
                     "containers": [{"name": "sh", "image": "busybox:1.36"}]},
            "status": {"phase": "Running"}}


def policy(name: str = "deny-all", namespace: str = "shop") -> Obj:
    return {"apiVersion": NETWORKING, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def admins() -> Obj:
    return {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "ops-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "shop"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"}}


class Recorder:
    """A tracker that records what the tap hands it."""

    def __init__(self) -> None:
        self.seen_by: list[tuple[str, str, str, Obj | None]] = []
        self.gone_by: list[Ref] = []

    def seen_of(self, kind: str, name: str) -> list[tuple[str, Obj | None]]:
        return [(origin, view) for k, n, origin, view in self.seen_by if (k, n) == (kind, name)]

    def seen(self, platform: str, obj: Any, *, origin: str,
             view: dict[str, JSONValue] | None = None) -> Event | None:
        assert platform == "kubernetes"
        self.seen_by.append((obj["kind"], obj["metadata"]["name"], origin,
                             dict(view) if view is not None else None))
        return None

    def gone(self, subject: Ref) -> None:
        self.gone_by.append(subject)


@pytest_asyncio.fixture
async def tapped(kube: KubeApiServer, kubeconfig: Path
                 ) -> AsyncIterator[tuple[KubernetesSource, Recorder]]:
    """The Kubernetes source over the test bed with the posture tap on it, listed."""
    kube.bed.add_node("node-1")
    kube.bed.apply(web())
    kube.bed.apply(bare_pod())
    kube.bed.apply(policy())
    recorder = Recorder()
    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, lambda event: None, Metrics(CollectorRegistry()), KINDS,
                              tuning=FAST)
    tap = KubePosture(source, recorder)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.synced and recorder.seen_of("Namespace", "shop"),
                    "the listing, handed over")
        yield source, recorder
        assert tap.counts["errors"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_the_tap_hands_over_what_is_checked_once_and_skips_replicas(
        kube: KubeApiServer, tapped: tuple[KubernetesSource, Recorder]) -> None:
    source, recorder = tapped
    # The Deployment (its template) and the bare Pod; not the Deployment's two Pods,
    # nor its ReplicaSet.
    assert recorder.seen_of("Deployment", "web") == [("list", None)]
    assert recorder.seen_of("Pod", "debug") == [("list", None)]
    assert [n for k, n, _, _ in recorder.seen_by if k == "Pod"] == ["debug"]
    assert "ReplicaSet" not in {kind for kind, _, _, _ in recorder.seen_by}
    assert len(list(source.cache.objects("Pod"))) == 3
    # The namespace waited for the NetworkPolicies' listing: one sighting, with the count.
    [(origin, view)] = recorder.seen_of("Namespace", "shop")
    assert origin == "list" and view is not None and view["networkPolicies"] == 1
    [(_, default)] = recorder.seen_of("Namespace", "default")
    assert default is not None and default["networkPolicies"] == 0

    # A Pod's status moving (the spec shared with the cached one) hands nothing over;
    # the Deployment's spec changing does, as live.
    before = len(recorder.seen_by)
    replica = next(p for p in source.cache.objects("Pod") if p["metadata"]["name"] != "debug")
    kube.bed.controller.set_ready("shop", replica["metadata"]["name"], False)
    pods = kube.bed.kind("v1", "pods")
    status = copy.deepcopy(kube.bed.store.get(pods, "shop", "debug"))
    status["status"]["phase"] = "Succeeded"
    kube.bed.store.update(pods, "shop", "debug", status, subresource="status")
    kube.bed.apply(web(privileged=True))
    await until(lambda: len(recorder.seen_of("Deployment", "web")) >= 2, "the patched Deployment")
    assert recorder.seen_of("Deployment", "web")[1] == ("live", None)
    await until(lambda: source.cache.get("Pod", "shop", "debug")["status"]["phase"]
                == "Succeeded", "the status update cached")
    # (The Deployment again for its new revision annotation: the tracker finds its view
    # unchanged.) Not the Pods: neither the status updates nor the new revision's Pods.
    assert {(k, n) for k, n, _, _ in recorder.seen_by[before:]} == {("Deployment", "web")}

    # Deleting the bare Pod ends it; deleting a Deployment's replica (never handed over)
    # does not.
    [replica, *_] = [p for p in kube.bed.store.list(pods) if p["metadata"]["name"] != "debug"]
    kube.bed.store.delete(pods, "shop", replica["metadata"]["name"])
    kube.bed.store.delete(pods, "shop", "debug")
    await until(lambda: recorder.gone_by, "the bare Pod gone")
    await until(lambda: source.cache.get("Pod", "shop", "debug") is None, "deleted")
    assert [(r.kind, r.name) for r in recorder.gone_by] == [("pod", "debug")]


async def test_a_namespace_is_handed_over_again_when_its_last_policy_goes(
        kube: KubeApiServer, tapped: tuple[KubernetesSource, Recorder]) -> None:
    _, recorder = tapped
    policies = kube.bed.kind(NETWORKING, "networkpolicies")
    kube.bed.apply(policy("allow-dns"))
    await until(lambda: len(recorder.seen_of("Namespace", "shop")) == 2, "2 policies")
    kube.bed.store.delete(policies, "shop", "allow-dns")
    kube.bed.store.delete(policies, "shop", "deny-all")
    loop = asyncio.get_running_loop()
    deleted = loop.time()
    await until(lambda: recorder.seen_of("Namespace", "shop")[-1][1]["networkPolicies"] == 0,
                "the count at 0", 1.0)
    assert loop.time() - deleted < 1.0
    counts = [view["networkPolicies"] for _, view in recorder.seen_of("Namespace", "shop")]
    assert counts[:2] == [1, 2] and counts[-1] == 0 and set(counts) <= {0, 1, 2}
    assert all(origin == "live" for origin, _ in recorder.seen_of("Namespace", "shop")[1:])


async def test_changes_made_while_the_watch_was_down_are_handed_over_from_the_relist(
        kube: KubeApiServer, tapped: tuple[KubernetesSource, Recorder]) -> None:
    source, recorder = tapped
    # The next Deployments watch stalls (remedyd is cut off); meanwhile the Deployment
    # turns privileged and the server forgets the history remedyd would resume from.
    stall = kube.bed.faults.add("stall", path="/deployments", watch=True, count=1)
    await until(lambda: stall.hits == 1, "the stalled watch", 5)
    kube.bed.apply(web(privileged=True))
    kube.bed.store.compact()
    await until(lambda: len(recorder.seen_of("Deployment", "web")) >= 2, "the drift relisted")
    assert {origin for origin, _ in recorder.seen_of("Deployment", "web")[1:]} == {"list"}
    assert source.cache.get("Deployment", "shop", "web")["spec"]["template"]["spec"][
        "containers"][0]["securityContext"] == {"privileged": True}
    lists = kube.bed.log.find("GET", "/deployments$", watch=False)
    assert len(lists) == 2
