"""Kubernetes objects trimmed and cached: what rules and actions read survives trimming,
a relist yields the updates and deletes it implies once, owners are found by uid."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from daemon.core.events import Ref
from daemon.kube.cache import Cache, Change
from daemon.kube.owners import pods_of, resolve_target, workload
from daemon.kube.trim import LAST_APPLIED, TrimError, trim

FIXTURES = Path(__file__).parent / "kube" / "fixtures"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def variant(fixture: str, rv: str, **metadata: Any) -> dict[str, Any]:
    """A fixture with another resourceVersion (and metadata fields, e.g. name/uid)."""
    obj = copy.deepcopy(load(fixture))
    obj["metadata"].update(resourceVersion=rv, **metadata)
    return obj


def at(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def cached_chain() -> Cache:
    """The fixtures' Deployment, its ReplicaSet and its Pod, listed once."""
    cache = Cache()
    cache.replace("Deployment", [load("deployment")])
    cache.replace("ReplicaSet", [load("replicaset")])
    cache.replace("Pod", [load("pod")])
    return cache


# -- trimming ---------------------------------------------------------------------------------

KEPT = {
    "pod": ["metadata.ownerReferences.0.uid", "metadata.labels.pod-template-hash",
            "spec.nodeName", "spec.containers.1.image", "spec.containers.0.securityContext",
            "spec.volumes.1.hostPath.path", "spec.volumes.2.projected", "status.phase",
            "status.conditions.1.status",
            "status.containerStatuses.0.restartCount", "status.containerStatuses.0.state",
            "status.containerStatuses.0.lastState", "status.containerStatuses.1.ready",
            "status.containerStatuses.1.started"],
    "replicaset": ["metadata.annotations.deployment.kubernetes.io/revision",
                   "metadata.ownerReferences.0.uid", "metadata.labels.pod-template-hash",
                   "metadata.creationTimestamp", "spec.selector", "spec.replicas",
                   "status.readyReplicas"],
    "deployment": ["metadata.annotations.team", "metadata.generation", "spec.template",
                   "spec.replicas", "status.conditions.1.reason"],
    "node": ["metadata.name", "status.conditions.3.status", "status.conditions.3.reason"],
    "event-v1": ["regarding.uid", "regarding.fieldPath", "note", "reason", "type",
                 "deprecatedCount", "eventTime"],
    "event-core": ["involvedObject.name", "message", "count", "lastTimestamp", "reason"],
}
DROPPED = {
    "pod": ["spec.containers.0.env", "spec.containers.0.livenessProbe",
            "spec.containers.0.resources", "spec.tolerations",
            "spec.volumes.2.projected.sources",
            "status.podIP"],
    # Nothing reads a cached ReplicaSet's template: a rollback lists them fresh.
    "replicaset": ["spec.template"],
    "deployment": [f"metadata.annotations.{LAST_APPLIED}"],
    "node": ["status.images", "status.nodeInfo", "status.conditions.0.lastHeartbeatTime"],
    "event-v1": [],
    "event-core": [],
}


def _has(obj: dict[str, Any], path: str) -> bool:
    # Annotation keys hold dots: try the longest key first.
    head, _, rest = path.partition(".")
    if isinstance(obj, list):
        return int(head) < len(obj) and (not rest or _has(obj[int(head)], rest))
    if path in obj:
        return True
    return head in obj and bool(rest) and _has(obj[head], rest)


@pytest.mark.parametrize("name", sorted(KEPT))
def test_trimming_keeps_what_rules_read_and_drops_managed_fields(name: str) -> None:
    raw = load(name)
    trimmed = trim(raw)
    assert "managedFields" in raw["metadata"] and "managedFields" not in trimmed["metadata"]
    for path in KEPT[name]:
        assert _has(trimmed, path), f"{name}: {path} was trimmed away"
    for path in DROPPED[name]:
        assert _has(raw, path) and not _has(trimmed, path), f"{name}: {path} kept"
    assert json.loads(json.dumps(trimmed)) == trimmed


def test_a_trimmed_pod_is_a_third_of_its_json() -> None:
    raw = load("pod")
    before = len(json.dumps(raw, separators=(",", ":")))
    after = len(json.dumps(trim(raw), separators=(",", ":")))
    print(f"pod fixture: {before} B -> {after} B trimmed ({1 - after / before:.0%} less)")
    assert after < before * 0.4


@pytest.mark.parametrize(("obj", "message"), [
    ([1, 2], "got list"),
    ({"kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}}, "Secret shop/db"),
    ({"kind": "Pod", "metadata": {"namespace": "shop"}}, "metadata.name"),
    ({"kind": "Pod"}, "Pod None: metadata.name"),
])
def test_an_object_remedyd_cannot_keep_is_refused_naming_it(obj: Any, message: str) -> None:
    with pytest.raises(TrimError, match=message):
        trim(obj)


def test_a_watch_event_of_an_unknown_type_is_refused_naming_the_object() -> None:
    with pytest.raises(TrimError, match="Pod shop/checkout-7c9d8f6b5d-x2x7q: unknown watch"):
        Cache().apply("BOOKMARKED", load("pod"))


# -- the cache: resync and relist --------------------------------------------------------------

def test_the_same_object_again_changes_nothing() -> None:
    cache = Cache()
    first = cache.apply("ADDED", load("pod"))
    assert first is not None and first.old is None
    assert cache.apply("MODIFIED", load("pod")) is None
    assert cache.replace("Pod", [load("pod")]) == []
    updated = cache.apply("MODIFIED", variant("pod", "48300"))
    assert updated is not None and updated.old == first.new


def test_a_relist_yields_each_update_and_delete_it_missed_once() -> None:
    cache = Cache()
    a = variant("pod", "10", name="a", uid="uid-a")
    b = variant("pod", "11", name="b", uid="uid-b")
    listed = cache.replace("Pod", [a, b])
    assert [(c.initial, c.synthetic) for c in listed] == [(True, False)] * 2
    assert cache.synced("Pod") and not cache.synced("Node")

    # While the watch was down: a was updated, b deleted, c created.
    a2 = variant("pod", "20", name="a", uid="uid-a")
    c = variant("pod", "21", name="c", uid="uid-c")
    relist = cache.replace("Pod", [a2, c])
    seen = sorted((ch.old["metadata"]["name"] if ch.old else "-",
                   ch.new["metadata"]["name"] if ch.new else "-") for ch in relist)
    assert seen == [("-", "c"), ("a", "a"), ("b", "-")]
    assert all(ch.synthetic and not ch.initial for ch in relist)
    assert cache.get("Pod", "shop", "b") is None and cache.by_uid("uid-b") is None
    assert cache.replace("Pod", [a2, c]) == []  # the next relist: nothing new


def test_an_object_recreated_under_its_name_is_a_delete_and_a_create() -> None:
    cache = Cache()
    cache.replace("Pod", [variant("pod", "10", uid="old-uid")])
    changes = cache.replace("Pod", [variant("pod", "30", uid="new-uid")])
    assert [(ch.old is None, ch.new is None) for ch in changes] == [(False, True), (True, False)]
    watched = cache.apply("ADDED", variant("pod", "40", uid="newer-uid"))
    assert watched == Change("Pod", None, cache.get("Pod", "shop", "checkout-7c9d8f6b5d-x2x7q"))


def test_a_list_item_without_kind_is_taken_as_the_listed_kind() -> None:
    item = load("node")
    del item["kind"]
    [change] = Cache().replace("Node", [item])
    assert change.new is not None and change.new["kind"] == "Node"
    with pytest.raises(TrimError, match="Pod shop/checkout-7c9d8f6b5d-x2x7q: listed as a Node"):
        Cache().replace("Node", [load("pod")])


# -- owners and targets ------------------------------------------------------------------------

def test_a_pods_owner_chain_leads_to_its_deployment() -> None:
    cache = cached_chain()
    pod = cache.get("Pod", "shop", "checkout-7c9d8f6b5d-x2x7q")
    assert pod is not None
    top = workload(cache, pod)
    assert top is not None and (top.kind, top.name) == ("Deployment", "checkout")
    deployment = cache.get("Deployment", "shop", "checkout")
    assert deployment is not None
    assert [p["metadata"]["name"] for p in pods_of(cache, deployment)] == [
        "checkout-7c9d8f6b5d-x2x7q"]


POD = Ref("kubernetes", "pod", "checkout-7c9d8f6b5d-x2x7q",
          "e3a1f9c2-6b7d-4c5e-8f9a-0b1c2d3e4f50", "shop")


def test_a_rollback_target_is_the_pods_deployment() -> None:
    target = resolve_target(cached_chain(), POD, "deployment")
    assert target == Ref("kubernetes", "deployment", "checkout",
                         "0c2a8e4f-1d3b-4a5c-9e7f-6a8b0c2d4e6f", "shop")
    assert resolve_target(cached_chain(), POD, "pod") == POD


def test_a_broken_owner_chain_resolves_to_no_target() -> None:
    no_rs = Cache()
    no_rs.replace("Deployment", [load("deployment")])
    no_rs.replace("Pod", [load("pod")])
    assert resolve_target(no_rs, POD, "deployment") is None

    # The Deployment was deleted and created again under its name: not the Pod's owner.
    recreated = cached_chain()
    recreated.replace("Deployment", [variant("deployment", "90", uid="another-uid")])
    assert resolve_target(recreated, POD, "deployment") is None
    assert pods_of(recreated, recreated.get("Deployment", "shop", "checkout") or {}) == []

    # The subject is gone, or another Pod now bears its name.
    assert resolve_target(Cache(), POD, "deployment") is None
    other = cached_chain()
    other.replace("Pod", [variant("pod", "91", uid="another-pod")])
    assert resolve_target(other, POD, "deployment") is None
    assert resolve_target(cached_chain(), POD, "statefulset") is None


def test_listed_items_get_the_kind_and_api_version_of_their_list() -> None:
    raw = copy.deepcopy(load("deployment"))
    del raw["kind"], raw["apiVersion"]  # as a list's items come
    cache = Cache()
    cache.replace("Deployment", [raw], "apps/v1")
    cached = cache.get("Deployment", raw["metadata"]["namespace"], raw["metadata"]["name"])
    assert cached is not None and (cached["kind"], cached["apiVersion"]) == (
        "Deployment", "apps/v1")


# -- what the security checks read of a Pod ----------------------------------------------------

def exposed_pod() -> dict[str, Any]:
    """The fixture Pod with a host port, literal and referenced secrets in env, an
    ephemeral container (kubectl debug) and the token automount switched on."""
    pod = load("pod")
    app = pod["spec"]["containers"][0]
    app["ports"] = [{"containerPort": 8080, "name": "http", "protocol": "TCP"},
                    {"containerPort": 9090, "hostPort": 9090, "name": "metrics",
                     "protocol": "TCP"}]
    app["env"] = [{"name": "LOG_LEVEL", "value": "info"},
                  {"name": "DB_PASSWORD", "value": "hunter2"},
                  {"name": "api_Key", "value": "sk-live-0123"},
                  {"name": "SESSION_SECRET",
                   "valueFrom": {"secretKeyRef": {"name": "app", "key": "session"}}}]
    pod["spec"]["ephemeralContainers"] = [{
        "name": "debugger-x7k2p", "image": "busybox:1.36", "stdin": True, "tty": True,
        "targetContainerName": "app", "terminationMessagePolicy": "File",
        "securityContext": {"privileged": True},
        "env": [{"name": "TOKEN", "value": "abc"}]}]
    pod["spec"]["automountServiceAccountToken"] = True
    return pod


def test_a_pod_keeps_host_ports_secret_looking_env_names_and_ephemeral_containers() -> None:
    trimmed = trim(exposed_pod())
    spec = trimmed["spec"]
    app = spec["containers"][0]
    assert app["ports"] == [{"containerPort": 9090, "hostPort": 9090, "protocol": "TCP"}]
    assert app["env"] == [{"name": "DB_PASSWORD", "value": ""}, {"name": "api_Key", "value": ""}]
    assert spec["ephemeralContainers"] == [{
        "name": "debugger-x7k2p", "image": "busybox:1.36",
        "securityContext": {"privileged": True}, "env": [{"name": "TOKEN", "value": ""}]}]
    assert spec["automountServiceAccountToken"] is True


def test_no_secret_value_is_cached() -> None:
    cache = Cache()
    cache.replace("Pod", [exposed_pod()])
    text = json.dumps(list(cache.objects("Pod")))
    for secret in ("hunter2", "sk-live-0123", '"abc"', "info"):
        assert secret not in text


def test_a_pod_without_host_ports_or_secrets_in_env_does_not_grow() -> None:
    pod = load("pod")
    assert all("hostPort" not in p for c in pod["spec"]["containers"]
               for p in c.get("ports", ()))
    trimmed = trim(pod)
    for container in trimmed["spec"]["containers"]:
        assert set(container) <= {"name", "image", "securityContext"}
    assert "ephemeralContainers" not in trimmed["spec"]


# -- one copy of what the replicas of a listing have in common -------------------------------

def replicas(count: int) -> list[dict[str, Any]]:
    """Pods of one ReplicaSet, as listed: each with its own name, uid and token volume."""
    out = []
    for i in range(count):
        pod = variant("pod", str(900 + i), name=f"web-{i}", uid=f"uid-{i}")
        pod["spec"]["volumes"][2]["name"] = f"kube-api-access-{i:05x}"
        out.append(pod)
    return out


def test_the_replicas_of_a_listing_share_their_equal_parts_and_stay_what_trim_makes() -> None:
    from daemon.kube.cache import trim_listed
    from daemon.kube.trim import Canon

    raws = replicas(3)
    canon = Canon()
    listed = [trim_listed(copy.deepcopy(raw), "Pod", "v1", canon) for raw in raws]
    assert listed == [trim(raw) for raw in raws]
    first, second, _ = listed
    for path in ("spec.containers", "spec.securityContext", "metadata.labels",
                 "metadata.ownerReferences", "spec.volumes.0", "spec.volumes.1"):
        assert at(first, path) is at(second, path), path
    # Each its own: the volume list (a token volume of its own), status, name.
    assert first["spec"]["volumes"] is not second["spec"]["volumes"]
    assert at(first, "spec.volumes.2") != at(second, "spec.volumes.2")
    assert first["status"] is not second["status"]
    # Cached, then updated by a watch event: the update keeps what it did not change.
    from daemon.kube.watchdecode import decoder

    cache = Cache()
    cache.replace("Pod", listed, trimmed=True)
    update = variant("pod", "999", name="web-0", uid="uid-0")
    update["spec"]["volumes"][2]["name"] = "kube-api-access-00000"
    update["status"]["phase"] = "Failed"
    pods = decoder("Pod")
    assert pods is not None
    event = pods(json.dumps({"type": "MODIFIED", "object": update}).encode())
    assert event is not None
    change = cache.apply_trimmed(event)
    assert change is not None and change.new is not None
    assert change.new["spec"]["containers"] is second["spec"]["containers"]
    assert change.new["status"]["phase"] == "Failed"


def test_values_equal_in_python_but_not_in_json_are_not_shared() -> None:
    from daemon.kube.cache import trim_listed
    from daemon.kube.trim import Canon

    raws = replicas(3)
    for raw, user in zip(raws, (1, 1.0, True), strict=True):
        raw["spec"]["securityContext"] = {"runAsUser": user}
    canon = Canon()
    listed = [trim_listed(raw, "Pod", "v1", canon) for raw in raws]
    got = [pod["spec"]["securityContext"]["runAsUser"] for pod in listed]
    assert [type(value) for value in got] == [int, float, bool]


def test_a_pods_volume_kinds_are_kept_without_what_they_mount() -> None:
    from daemon.security.events import view_of

    pod = load("pod")
    pod["spec"]["volumes"].append({"name": "share", "nfs": {"server": "nfs.example",
                                                           "path": "/exports"}})
    trimmed = trim(pod)
    assert trimmed["spec"]["volumes"][-1] == {"name": "share", "nfs": {}}
    assert trimmed["spec"]["volumes"][0] == {"name": "config", "configMap": {}}
    # What the checks read of them is what they read of the Pod as the API gives it.
    for key in ("volumeTypes", "hostPathVolumes"):
        assert view_of("kubernetes", trimmed)["pod"][key] == (
            view_of("kubernetes", pod)["pod"][key]), key


def test_probes_and_hooks_are_kept_only_for_the_host_they_send_to() -> None:
    from daemon.security.events import view_of

    pod = load("pod")
    app = pod["spec"]["containers"][0]
    app["startupProbe"] = {"tcpSocket": {"host": "10.0.0.9", "port": 22}, "periodSeconds": 5}
    app["lifecycle"] = {"postStart": {"httpGet": {"host": "metadata.internal", "path": "/",
                                                  "port": 80}},
                        "preStop": {"exec": {"command": ["sleep", "5"]}}}
    trimmed = trim(pod)["spec"]["containers"][0]
    assert "livenessProbe" not in trimmed and "readinessProbe" not in trimmed  # no host
    assert trimmed["startupProbe"] == {"tcpSocket": {"host": "10.0.0.9"}}
    assert trimmed["lifecycle"] == {"postStart": {"httpGet": {"host": "metadata.internal"}}}
    assert [c["probeHosts"] for c in view_of("kubernetes", trim(pod))["containers"]] == [
        c["probeHosts"] for c in view_of("kubernetes", pod)["containers"]]
