"""Kubernetes security posture against the test bed: the posture tap hands the source's
cache changes to the tracker (what it hands over, what it skips, with which origin),
and remedyd itself, with the security rules, finds a Deployment patched to privileged
(with the field diff), a binding to cluster-admin, a namespace's last NetworkPolicy
deleted, drift made while its watch was down, and stops finding what was accepted."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import shutil
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.clients.kubernetes import KubeClient
from daemon.core.events import Event, JSONValue, Ref
from daemon.sources.kube_posture import KubePosture
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.harness import DaemonProcess
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


def stateful_pod() -> Obj:
    """A Pod of a StatefulSet: a kind remedyd does not watch, so the Pod is checked."""
    pod = bare_pod("db-0")
    pod["metadata"]["ownerReferences"] = [{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "uid-sts-db",
        "controller": True, "blockOwnerDeletion": True}]
    return pod


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
    kube.bed.apply(stateful_pod())
    kube.bed.apply(policy())
    recorder = Recorder()
    async with running_tap(kubeconfig, recorder) as (source, tap, _):
        await until(lambda: source.synced and recorder.seen_of("Namespace", "shop"),
                    "the listing, handed over")
        yield source, recorder
        assert tap.counts["errors"] == 0


@contextlib.asynccontextmanager
async def running_tap(kubeconfig: Path, recorder: Recorder
                      ) -> AsyncIterator[tuple[KubernetesSource, KubePosture, asyncio.Task[None]]]:
    """The Kubernetes source over the test bed, running, with the posture tap on it."""
    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, lambda event: None, Metrics(CollectorRegistry()), KINDS,
                              tuning=FAST)
    tap = KubePosture(source, recorder)
    task = asyncio.create_task(source.run())
    try:
        yield source, tap, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_the_tap_hands_over_what_is_checked_once_and_skips_replicas(
        kube: KubeApiServer, tapped: tuple[KubernetesSource, Recorder]) -> None:
    source, recorder = tapped
    # The Deployment (its template), the bare Pod and the StatefulSet's; not the
    # Deployment's two Pods, nor its ReplicaSet.
    assert recorder.seen_of("Deployment", "web") == [("list", None)]
    assert recorder.seen_of("Pod", "debug") == [("list", None)]
    assert sorted(n for k, n, _, _ in recorder.seen_by if k == "Pod") == ["db-0", "debug"]
    assert "ReplicaSet" not in {kind for kind, _, _, _ in recorder.seen_by}
    assert len(list(source.cache.objects("Pod"))) == 4
    # The namespace waited for the NetworkPolicies' listing: never handed over with an
    # unknown or a wrong count (again, the same, when a NetworkPolicy change held behind
    # the Pods comes out: the tracker finds it unchanged).
    assert {(origin, view["networkPolicies"]) for origin, view in  # type: ignore[index]
            recorder.seen_of("Namespace", "shop")} == {("list", 1)}
    assert {view["networkPolicies"] for _, view in  # type: ignore[index]
            recorder.seen_of("Namespace", "default")} == {0}

    # A Pod's status moving (the spec shared with the cached one) hands nothing over;
    # the Deployment's spec changing does, as live.
    before = len(recorder.seen_by)
    replica = next(p for p in source.cache.objects("Pod")
                   if p["metadata"]["name"] not in ("debug", "db-0"))
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
    [replica, *_] = [p for p in kube.bed.store.list(pods)
                     if p["metadata"]["name"] not in ("debug", "db-0")]
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
    await until(lambda: recorder.seen_of("Namespace", "shop")[-1][1]["networkPolicies"] == 2,
                "2 policies")
    assert recorder.seen_of("Namespace", "shop")[-1][0] == "live"
    kube.bed.store.delete(policies, "shop", "allow-dns")
    kube.bed.store.delete(policies, "shop", "deny-all")
    loop = asyncio.get_running_loop()
    deleted = loop.time()
    await until(lambda: recorder.seen_of("Namespace", "shop")[-1][1]["networkPolicies"] == 0,
                "the count at 0", 1.0)
    assert loop.time() - deleted < 1.0
    counts = [view["networkPolicies"] for _, view in recorder.seen_of("Namespace", "shop")]
    assert counts[-1] == 0 and set(counts) == {0, 1, 2}


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


class Failing(Recorder):
    """A tracker with a bug for one object."""

    def seen(self, platform: str, obj: Any, *, origin: str,
             view: dict[str, JSONValue] | None = None) -> Event | None:
        if obj["metadata"]["name"] in ("debug", "shop"):
            raise RuntimeError("tracker bug")
        return super().seen(platform, obj, origin=origin, view=view)


async def test_a_failing_tracker_costs_that_object_only(kube: KubeApiServer,
                                                       kubeconfig: Path) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(bare_pod())
    kube.bed.apply(web())
    kube.bed.apply(policy())
    recorder = Failing()
    async with running_tap(kubeconfig, recorder) as (source, tap, task):
        await until(lambda: source.synced and recorder.seen_of("Namespace", "default"),
                    "the listing")
        kube.bed.apply(web(privileged=True))
        await until(lambda: len(recorder.seen_of("Deployment", "web")) >= 2, "the update")
        assert tap.counts["errors"] == 2  # the Pod and the namespace shop
        assert not task.done()


# -- remedyd itself, with the security rules ---------------------------------------------

SECURITY_RULES = Path(__file__).resolve().parent.parent / "rules" / "security.yaml"
TOKEN = "s3cr3t-test-token"
# Opt-in: a privileged Deployment named miner is scaled to zero, a bare privileged Pod or
# one on the host's network quarantined (under the guards).
SCALE_RULE = """\
rules:
  - name: scale-privileged-miner
    source: security
    when: >-
      event.kind == "deployment" && event.attributes.name == "miner"
      && event.attributes.containers.exists(c, c.privileged)
    security: {id: LOCAL-MINER, severity: critical, control: "local policy",
               remediation: "Do not run it."}
    actions:
      - kubernetes.scale: {replicas: 0}
  - name: quarantine-exposed-pods
    source: security
    when: >-
      event.kind == "pod" && (event.attributes.pod.hostNetwork
      || event.attributes.containers.exists(c, c.privileged))
    security: {id: LOCAL-EXPOSED-POD, severity: high, control: "local policy",
               remediation: "Use the Pod network, drop privileged."}
    actions:
      - kubernetes.quarantine: {}
"""


def miner() -> Obj:
    obj = web(privileged=True)
    obj["metadata"] = {"name": "miner", "namespace": "shop", "labels": {"app": "miner"}}
    obj["spec"]["selector"] = {"matchLabels": {"app": "miner"}}
    obj["spec"]["template"]["metadata"] = {"labels": {"app": "miner"}}
    return obj


def findings(daemon: DaemonProcess) -> dict[tuple[str, str], dict[str, Any]]:
    """The daemon's current findings, by (object, check)."""
    answer = daemon.get("/api/v1/security/findings")
    assert answer is not None and answer[0] == 200, answer
    return {(f["object"], f["check"]): f for f in json.loads(answer[1])["findings"]}


def accept(daemon: DaemonProcess, key: str, *checks: str) -> dict[str, Any]:
    request = urllib.request.Request(
        daemon.url + "/api/v1/security/accept", method="POST",
        data=json.dumps({"object": key, "checks": list(checks), "reason": "approved change",
                         "by": "test"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


async def found(daemon: DaemonProcess, key: str, check: str, limit: float = 5.0
                ) -> tuple[dict[str, Any], float]:
    """The finding once the daemon has it, and how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(int(limit / 0.02)):
        current = await asyncio.to_thread(findings, daemon)
        if (key, check) in current:
            return current[(key, check)], loop.time() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {check} finding for {key} within {limit}s: "
                         f"{sorted(current)}")


async def gone(daemon: DaemonProcess, key: str, check: str, limit: float = 5.0) -> None:
    await until(lambda: (key, check) not in findings(daemon), f"{check} on {key} resolved",
                limit)


@pytest.fixture
def posture_daemon(tmp_path: Path, kubeconfig: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path / "d", SCALE_RULE, extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig), "stall_timeout": "2s",
                       "kinds": ["pods", "deployments", "replicasets"]},
        "security": {"enabled": True, "baseline": str(tmp_path / "d" / "baseline.json")},
        "server": {"api_token": TOKEN}})
    shutil.copy(SECURITY_RULES, daemon.rules_dir / "security.yaml")
    yield daemon
    daemon.stop()


WEB = "kubernetes/deployment/shop/web"
SHOP = "kubernetes/namespace/shop"


async def test_drift_bindings_and_a_namespaces_last_policy_are_found_live_and_accepted(
        kube: KubeApiServer, posture_daemon: DaemonProcess) -> None:
    daemon = posture_daemon
    kube.bed.add_node("node-1")
    kube.bed.apply(web())
    kube.bed.apply(policy())
    await asyncio.to_thread(daemon.start)
    await until(lambda: daemon.get("/api/v1/security/findings") is not None, "the API")
    assert (SHOP, "CIS-K8S-5-3-2") not in findings(daemon)
    assert not [k for k in findings(daemon) if k[1] == "DRIFT-BASELINE"]

    # Patched to privileged: the drift (field by field) and the check, within a second.
    kube.bed.apply(web(privileged=True))
    drift, took = await found(daemon, WEB, "DRIFT-BASELINE")
    assert took < 1.0, took
    assert {"field": "containers[web].privileged", "before": False, "after": True} in (
        drift["drift"]), drift["drift"]
    privileged, _ = await found(daemon, WEB, "PSS-B-PRIVILEGED")
    assert privileged["subject"]["kind"] == "deployment" and privileged["control"]
    [record] = [r for r in daemon.audit("drift") if r.get("key") == WEB]
    assert record["origin"] == "live"

    # A ServiceAccount bound to cluster-admin.
    kube.bed.apply(admins())
    _, took = await found(daemon, "kubernetes/clusterrolebinding/ops-admin", "CIS-K8S-5-1-1")
    assert took < 1.0, took

    # The namespace's last NetworkPolicy deleted.
    kube.bed.store.delete(kube.bed.kind(NETWORKING, "networkpolicies"), "shop", "deny-all")
    _, took = await found(daemon, SHOP, "CIS-K8S-5-3-2")
    assert took < 1.0, took

    # Accepted into the baseline: the drift ends; the check still holds until waived.
    assert await asyncio.to_thread(accept, daemon, WEB)
    await gone(daemon, WEB, "DRIFT-BASELINE")
    assert (WEB, "PSS-B-PRIVILEGED") in findings(daemon)
    await asyncio.to_thread(accept, daemon, WEB, "PSS-B-PRIVILEGED")
    await gone(daemon, WEB, "PSS-B-PRIVILEGED")
    accepted = daemon.audit("baseline")
    assert [(r["key"], r["checks"], r["by"]) for r in accepted] == [
        (WEB, [], "test"), (WEB, ["PSS-B-PRIVILEGED"], "test")]
    # A policy back in the namespace resolves its finding.
    kube.bed.apply(policy("default-deny"))
    await gone(daemon, SHOP, "CIS-K8S-5-3-2", 1.0)


async def test_drift_made_while_the_watch_was_down_is_found_on_the_relist(
        kube: KubeApiServer, posture_daemon: DaemonProcess) -> None:
    daemon = posture_daemon
    kube.bed.add_node("node-1")
    kube.bed.apply(web())
    # remedyd's first Deployments watch breaks at its first event, the next one hangs
    # (remedyd gives up on it after its stall_timeout) while the Deployment turns
    # privileged and the server forgets the history remedyd would resume from.
    kube.bed.faults.add("drop", path="/deployments", watch=True)
    stall = kube.bed.faults.add("stall", path="/deployments", watch=True)
    await asyncio.to_thread(daemon.start)
    await until(lambda: daemon.get("/api/v1/security/findings") is not None, "the API")
    kube.bed.apply({**web(), "metadata": {**web()["metadata"], "annotations": {"a": "b"}}})
    await until(lambda: stall.hits == 1, "the stalled watch")
    kube.bed.apply(web(privileged=True))
    kube.bed.store.compact()
    drift, _ = await found(daemon, WEB, "DRIFT-BASELINE", 10.0)
    assert {"field": "containers[web].privileged", "before": False, "after": True} in (
        drift["drift"])
    [record] = [r for r in daemon.audit("drift") if r.get("key") == WEB]
    assert record["origin"] == "list"
    assert len(kube.bed.log.find("GET", "/deployments$", watch=False)) == 2


async def test_opt_in_rules_scale_a_privileged_deployment_and_quarantine_a_pod(
        kube: KubeApiServer, posture_daemon: DaemonProcess) -> None:
    daemon = posture_daemon
    kube.bed.add_node("node-1")
    kube.bed.apply(web())
    await asyncio.to_thread(daemon.start)
    kube.bed.apply(miner())
    patch = await kube.bed.log.wait_for("PATCH", "/deployments/miner/scale$", limit=10)
    assert patch.json == {"spec": {"replicas": 0}}
    await until(lambda: [o for o in daemon.audit("outcome")
                         if o["rule"] == "scale-privileged-miner"], "the outcome")
    [outcome] = [o for o in daemon.audit("outcome") if o["rule"] == "scale-privileged-miner"]
    assert outcome["outcome"] == "success", outcome
    assert outcome["target"]["name"] == "miner"
    # The hardened Deployment beside it is left alone.
    assert not kube.bed.log.find("PATCH", "/deployments/web")

    # A bare privileged Pod: labelled and isolated by a deny-all policy. One on the
    # host's network is left as it is: no NetworkPolicy isolates it (the action's
    # preflight says so, audited).
    kube.bed.apply(bare_pod())
    shell = bare_pod("shell")
    shell["spec"].update(hostNetwork=False, containers=[
        {"name": "sh", "image": "busybox:1.36", "securityContext": {"privileged": True}}])
    kube.bed.apply(shell)
    label = await kube.bed.log.wait_for("PATCH", "/namespaces/shop/pods/shell$", limit=10)
    assert "remedyd.io/quarantine" in json.dumps(label.json)
    assert kube.bed.log.find("POST", "/namespaces/shop/networkpolicies$")
    await until(lambda: [o for o in daemon.audit("outcome")
                         if o["rule"] == "quarantine-exposed-pods"], "the quarantine")
    [refused] = [d for d in daemon.audit("decision") if d["rule"] == "quarantine-exposed-pods"
                 and d["target"]["name"] == "debug"]
    assert refused["outcome"] == "suppressed" and "host network" in refused["reason"]
    assert not kube.bed.log.find("PATCH", "/pods/debug$")


async def test_of_two_replicas_only_the_leader_pages_about_a_kubernetes_finding(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    """Both replicas watch the cluster and find the same privileged Deployment; one page."""
    from tests.harness import WebhookSink
    from tests.test_kube_leader import FAST, one_leader

    kube.bed.add_node("node-1")
    kube.bed.apply(web())
    kube.bed.apply(policy())
    with WebhookSink() as sink:
        daemons = [DaemonProcess(tmp_path / name, "rules: []\n", extra={
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig),
                           "kinds": ["pods", "deployments", "replicasets"]},
            "kubernetes.leader_election": {**FAST, "identity": name},
            "security": {"enabled": True, "baseline": str(tmp_path / name / "baseline.json")},
            "notify": {"webhook_url": sink.url}}) for name in ("a", "b")]
        for daemon in daemons:
            shutil.copy(SECURITY_RULES, daemon.rules_dir / "security.yaml")
        try:
            await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons))
            leader, follower = await one_leader(*daemons)
            kube.bed.apply(web(privileged=True))

            def decided(daemon: DaemonProcess) -> list[dict[str, Any]]:
                return [d for d in daemon.audit("decision")
                        if d["rule"] == "pss-baseline-privileged"
                        and d["target"]["name"] == "web"]

            # Both decide; only then is "the follower sent nothing" a settled fact.
            await until(lambda: decided(leader) and decided(follower), "both replicas' "
                        "decisions on the privileged Deployment", 10)
            await until(lambda: [b for b in sink.bodies if b["rule"] == "pss-baseline-privileged"],
                        "the leader's notification", 10)
            assert {d["decision"] for d in decided(leader)} == {"act"}
            assert {(d["decision"], d.get("suppressed_by")) for d in decided(follower)} == {
                ("suppressed", "leader")}
            pages = [(b["rule"], b["target"]["name"]) for b in sink.bodies]
            assert pages.count(("pss-baseline-privileged", "web")) == 1
            # Every finding of the pack pages once, not once per replica.
            assert len(pages) == len(set(pages)), sorted(pages)
            assert not [d for d in follower.audit("decision") if d["decision"] == "act"]
        finally:
            await asyncio.gather(*(asyncio.to_thread(d.stop) for d in daemons))
