"""kubernetes.rollout_restart, kubernetes.scale and kubernetes.pause_rollout through the real
Executor, on decisions made from the transitions a KubernetesSource sees on the test bed;
what they send is compared with what the real kubectl sends for the same Deployment."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from daemon.actions.kube.base import KubeAction
from daemon.actions.kube.workloads import RESTARTED_AT, REVISION
from daemon.core.events import Event
from daemon.engine.ruleset import load_ruleset
from tests.kube.faults import Request
from tests.kube.plugin import KubectlRunner
from tests.kubeactions import Cluster, Obj, deployment, until
from tests.kubeactions import cluster as cluster  # the fixture
from tests.rulekit import CATALOG

WEB = "/apis/apps/v1/namespaces/default/deployments/web"


@pytest_asyncio.fixture
async def web(cluster: Cluster) -> Cluster:
    """The cluster with Deployment web (2 replicas) rolled out and in the source's cache,
    so that its pods' transitions name their revision."""
    cluster.kube.bed.apply(deployment())
    action = cluster.executor.actions["kubernetes.scale"]
    assert isinstance(action, KubeAction)
    cache = action.cache
    await until(lambda: len(list(cache.objects("Pod"))) == 2 and cache.get(
        "Deployment", "default", "web") is not None and any(cache.objects("ReplicaSet")),
        "the Deployment, its ReplicaSet and pods cached")
    return cluster


def the_deployment(cluster: Cluster) -> Obj:
    found = cluster.find("apps/v1", "deployments", "web")
    assert found is not None
    return found


def current_pod(cluster: Cluster) -> str:
    """A pod of the Deployment's current ReplicaSet."""
    current = the_deployment(cluster)["metadata"]["annotations"][REVISION]
    [rs] = [rs for rs in cluster.store_list("apps/v1", "replicasets")
            if rs["metadata"]["annotations"][REVISION] == current]
    return next(p["metadata"]["name"] for p in cluster.store_list("v1", "pods")
                if p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"])


async def crashloop(cluster: Cluster) -> Event:
    pod = current_pod(cluster)
    cluster.kube.bed.controller.crash_loop("default", pod, restart_count=4)
    return await cluster.event("crashloop", pod)


def requests(cluster: Cluster, since: int) -> list[Request]:
    """Requests to the Deployment (not the source's lists and watches) since `since`."""
    return [r for r in cluster.kube.bed.log.entries[since:] if r.path.startswith(WEB)]


def new_revisions(cluster: Cluster, revision: int) -> list[Event]:
    return [e for e in cluster.events
            if e.action == "new_revision" and e.attributes.get("revision") == revision]


def mark(cluster: Cluster) -> int:
    return len(cluster.kube.bed.log.entries)


def shape(request: Request, erase: Callable[[Obj], None] = lambda body: None) -> tuple[
        str, str, str, Any]:
    body = request.json
    erase(body)
    return request.method, request.path, request.content_type, body


def erase_stamp(body: Obj) -> None:
    annotations = body["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", annotations[RESTARTED_AT])
    annotations[RESTARTED_AT] = "<now>"


# ============================================================ rollout_restart


async def test_rollout_restart_from_a_pod_event_sends_what_kubectl_sends(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await crashloop(web)
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.rollout_restart: {}]")
    # Acted on the Deployment the crash-looping pod belongs to.
    assert record["decision"] == "act", record
    assert record["target"]["kind"] == "deployment" and record["target"]["name"] == "web"
    assert record["subject"]["kind"] == "pod"
    assert outcome is not None and outcome["outcome"] == "success", outcome
    [step] = outcome["steps"]
    assert step["verified"] is True
    ours = [r for r in requests(web, since) if r.mutating]
    assert len(ours) == 1 and web.kube.bed.log.mutations()[-1] is ours[0]
    stamp = ours[0].json["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert step["details"]["restartedAt"] == stamp
    # The controller rolled over to a new ReplicaSet carrying the stamp.
    d = the_deployment(web)
    assert d["metadata"]["annotations"][REVISION] == "2"
    assert d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == stamp

    # kubectl refuses a restart within the second of the last one (the same stamp).
    await asyncio.sleep(1.01 - time.time() % 1)
    since = mark(web)
    done = await kubectl("rollout", "restart", "deployment/web")
    assert done.returncode == 0, done.stderr
    [theirs] = [r for r in requests(web, since) if r.mutating]
    assert shape(ours[0], erase_stamp) == shape(theirs, erase_stamp)


async def test_rollout_restart_refuses_a_paused_deployment_as_kubectl_does(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await crashloop(web)
    assert (await kubectl("rollout", "pause", "deployment/web")).returncode == 0
    refused = await kubectl("rollout", "restart", "deployment/web")
    assert refused.returncode == 1 and "can't restart paused deployment" in refused.stderr
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.rollout_restart: {}]")
    assert outcome is None
    assert record["decision"] == "suppressed" and record["suppressed_by"] == "target"
    assert "default/web is paused" in record["reason"] and "rollout resume" in record["reason"]
    assert [r.method for r in requests(web, since)] == ["GET"]  # observe, nothing else


async def test_a_restart_decided_before_an_operator_restarted_is_superseded(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await crashloop(web)
    assert event.attributes["revision"] == 1
    decision = web.decide(event, "[kubernetes.rollout_restart: {}]")
    assert (await kubectl("rollout", "restart", "deployment/web")).returncode == 0
    # The crash-looping pod is gone by the time the decision is handled.
    await web.event("deleted", event.subject.name)
    since = mark(web)
    record, outcome = await web.handle(decision)
    assert outcome is None and record["suppressed_by"] == "superseded", record["guards"]
    assert "revision 1" in record["reason"] and "revision 2 now" in record["reason"]
    assert not [r for r in requests(web, since) if r.mutating]


async def test_a_restart_within_the_second_of_the_last_is_refused_as_kubectl_does(
        web: Cluster, kubectl: KubectlRunner) -> None:
    """The same stamp again would change nothing: refused, not reported as a restart."""
    for _ in range(3):  # each try fits in one wall-clock second, or is tried again
        await asyncio.sleep(1.01 - time.time() % 1)
        second = int(time.time())
        assert (await kubectl("rollout", "restart", "deployment/web")).returncode == 0
        revision = int(the_deployment(web)["metadata"]["annotations"][REVISION])
        await until(lambda rev=revision: bool(new_revisions(web, rev)), f"revision {revision}")
        [event] = new_revisions(web, revision)
        again = await kubectl("rollout", "restart", "deployment/web")
        since = mark(web)
        record, outcome = await web.act(event, "[kubernetes.rollout_restart: {}]")
        if int(time.time()) == second:
            break
    assert again.returncode == 1 and "within the past second" in again.stderr
    assert outcome is None and record["suppressed_by"] == "target", record
    assert "restarted within this second already" in record["reason"]
    assert not [r for r in requests(web, since) if r.mutating]


# ====================================================================== scale


async def test_scale_to_a_count_patches_the_scale_subresource_as_kubectl_does(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await web.unready(current_pod(web))
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.scale: {replicas: 3}]")
    assert outcome is not None and outcome["outcome"] == "success", (record, outcome)
    [step] = outcome["steps"]
    assert step["details"] == {"deployment": "default/web", "from_replicas": 2,
                               "to_replicas": 3, "sent": True}
    assert step["verified"] is True
    ours = requests(web, since)
    # observe, read the scale, patch it, verify.
    assert [(r.method, r.path.removeprefix(WEB)) for r in ours] == [
        ("GET", ""), ("GET", "/scale"), ("PATCH", "/scale"), ("GET", "/scale")]
    assert the_deployment(web)["spec"]["replicas"] == 3
    assert len(web.kube.bed.store.list(web.kube.bed.kind("v1", "pods"))) == 3

    since = mark(web)
    done = await kubectl("scale", "deployment/web", "--replicas=4")
    assert done.returncode == 0, done.stderr
    [theirs] = [r for r in requests(web, since) if r.mutating]
    assert shape(ours[2]) == shape(theirs, lambda body: body["spec"].update(replicas=3))


async def test_scale_by_a_delta_moves_from_the_count_now_within_bounds(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await crashloop(web)
    # The count moved after the event: the decision still runs, from the count it finds.
    assert (await kubectl("scale", "deployment/web", "--replicas=3")).returncode == 0
    version = the_deployment(web)["metadata"]["resourceVersion"]
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.scale: {delta: 5, max: 4}]")
    assert outcome is not None and outcome["outcome"] == "success", (record, outcome)
    assert outcome["steps"][0]["details"]["from_replicas"] == 3
    assert outcome["steps"][0]["details"]["to_replicas"] == 4
    [patch] = [r for r in requests(web, since) if r.mutating]
    # A delta is relative to what was read: the write is conditional on that version.
    assert patch.json == {"metadata": {"resourceVersion": version}, "spec": {"replicas": 4}}
    assert patch.content_type == "application/merge-patch+json"
    assert the_deployment(web)["spec"]["replicas"] == 4


@pytest.mark.parametrize("params", ["{replicas: 2}", "{delta: -1, min: 2}"])
async def test_scale_to_the_count_it_has_is_refused_as_nothing_to_do(
        web: Cluster, params: str) -> None:
    event = await crashloop(web)
    since = mark(web)
    record, outcome = await web.act(event, f"[kubernetes.scale: {params}]")
    assert outcome is None and record["suppressed_by"] == "target", record
    assert "nothing to do" in record["reason"] and "already has 2 replicas" in record["reason"]
    assert not [r for r in requests(web, since) if r.mutating]


async def test_a_conflict_on_scale_is_retried_from_a_fresh_read(web: Cluster) -> None:
    event = await crashloop(web)
    web.kube.bed.faults.add("status", method="PATCH", path="/deployments/web/scale$", code=409)
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.scale: {delta: 1}]")
    assert outcome is not None and outcome["outcome"] == "success", (record, outcome)
    assert outcome["steps"][0]["attempts"] == 2
    ours = requests(web, since)
    assert [(r.method, r.path.removeprefix(WEB), r.status) for r in ours[1:5]] == [
        ("GET", "/scale", 200), ("PATCH", "/scale", 409),
        ("GET", "/scale", 200), ("PATCH", "/scale", 200)]
    assert the_deployment(web)["spec"]["replicas"] == 3  # moved once, not twice


async def test_scale_parameters_are_checked_when_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    for params, message in (("{replicas: 200}", "replicas (200) is outside [min, max]"),
                            ("{delta: 0}", "delta 0 changes nothing"),
                            ("{replicas: 2, delta: 1}", "exactly one of replicas")):
        path.write_text("rules:\n  - name: grow\n    source: kubernetes\n"
                        "    when: event.action == 'unready'\n"
                        f"    actions: [kubernetes.scale: {params}]\n")
        _, errors = load_ruleset([path], CATALOG)
        assert len(errors) == 1 and message in str(errors[0]), errors
        assert "grow" in str(errors[0]) and "kubernetes.scale" in str(errors[0])


# ============================================================== pause_rollout

async def roll_out(cluster: Cluster, kubectl: KubectlRunner, image: str) -> Event:
    done = await kubectl("set", "image", "deployment/web", f"web={image}")
    assert done.returncode == 0, done.stderr
    return await cluster.event("new_revision", "web", kind="deployment")


async def test_pause_rollout_from_a_new_revision_sends_what_kubectl_sends(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await roll_out(web, kubectl, "example/web:2")
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.pause_rollout: {}]")
    assert outcome is not None and outcome["outcome"] == "success", (record, outcome)
    assert outcome["steps"][0]["verified"] is True
    assert outcome["steps"][0]["details"] == {"deployment": "default/web", "revision": 2}
    [ours] = [r for r in requests(web, since) if r.mutating]
    assert the_deployment(web)["spec"]["paused"] is True

    assert (await kubectl("rollout", "resume", "deployment/web")).returncode == 0
    since = mark(web)
    assert (await kubectl("rollout", "pause", "deployment/web")).returncode == 0
    [theirs] = [r for r in requests(web, since) if r.mutating]
    assert shape(ours) == shape(theirs)

    # Paused already: kubectl says so, and so does the refusal.
    again = await kubectl("rollout", "pause", "deployment/web")
    assert again.returncode == 1 and "is already paused" in again.stderr
    record, outcome = await web.act(event, "[kubernetes.pause_rollout: {}]")
    assert outcome is None and record["suppressed_by"] == "target", record
    assert record["reason"] == ("kubernetes.pause_rollout: deployment default/web is "
                                "already paused")


async def test_a_pause_decided_on_a_revision_rolled_back_since_is_superseded(
        web: Cluster, kubectl: KubectlRunner) -> None:
    event = await roll_out(web, kubectl, "example/web:2")
    assert (await kubectl("rollout", "undo", "deployment/web")).returncode == 0
    since = mark(web)
    record, outcome = await web.act(event, "[kubernetes.pause_rollout: {}]")
    assert outcome is None and record["suppressed_by"] == "superseded", record
    assert "revision 2" in record["reason"] and "revision 3 now" in record["reason"]
    assert not [r for r in requests(web, since) if r.mutating]
    assert not the_deployment(web)["spec"].get("paused")
