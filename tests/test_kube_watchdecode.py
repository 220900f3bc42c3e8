"""Watch lines decoded straight into trimmed objects (daemon.kube.watchdecode) cache
exactly what decoding the line and trimming it caches: the same values, JSON types, key
order and interned strings, update after update, and odd lines take the old path."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.kube.cache import Cache, Change
from daemon.kube.watchdecode import Trimmed, decoder

FIXTURES = Path(__file__).parent / "kube" / "fixtures"
KINDS = {"pod": "Pod", "replicaset": "ReplicaSet", "deployment": "Deployment",
         "node": "Node", "event-core": "Event", "event-v1": "Event"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def line(obj: Any, event_type: str = "MODIFIED") -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode()


def fast(obj: Any, event_type: str = "MODIFIED") -> Trimmed:
    found = decoder(obj["kind"])
    assert found is not None
    event = found(line(obj, event_type))
    assert event is not None, "the fast path refused a plain watch line"
    return event


class Pair:
    """Two caches fed the same watch lines: one decodes them trimmed, one trims them."""

    def __init__(self) -> None:
        self.fast, self.slow = Cache(), Cache()

    def apply(self, obj: dict[str, Any], event_type: str = "MODIFIED") -> Change | None:
        got = self.fast.apply_trimmed(fast(obj, event_type))
        want = self.slow.apply(event_type, json.loads(line(obj, event_type))["object"])
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert (got.kind, got.synthetic, got.initial) == (want.kind, want.synthetic,
                                                              want.initial)
            same(got.old, want.old)
            same(got.new, want.new)
        return got


def same(got: Any, want: Any, path: str = "$") -> None:
    """Equal, of the same types throughout, keys in the same order, short strings the
    same interned objects."""
    assert type(got) is type(want), path
    if isinstance(got, dict):
        assert list(got) == list(want), path
        for key in got:
            assert key is sys.intern(key), f"{path}.{key}: key not interned"
            same(got[key], want[key], f"{path}.{key}")
    elif isinstance(got, list):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(got, str) and len(got) <= 64:
        assert got is want, f"{path}: {got!r} not interned"
    else:
        assert got == want, path


def bump(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["resourceVersion"] = str(rv)
    return obj


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_watched_kind_caches_what_trimming_caches(name: str) -> None:
    obj = load(name)
    obj.setdefault("kind", KINDS[name])
    pair = Pair()
    pair.apply(obj, "ADDED")
    pair.apply(bump(obj, 900_001))
    pair.apply(bump(obj, 900_002), "DELETED")


def test_a_pods_updates_share_what_did_not_change_and_show_what_did() -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    noise = bump(pod, 900_001)
    noise["metadata"]["managedFields"][0]["time"] = "2024-05-02T11:00:00Z"
    first = pair.apply(noise)
    assert first is not None and first.old is not None and first.new is not None
    assert first.new["spec"] is first.old["spec"]
    assert first.new["status"] is first.old["status"]
    restarted = bump(noise, 900_002)
    status = restarted["status"]["containerStatuses"][0]
    status["restartCount"] += 1
    status["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                          "finishedAt": "2024-05-02T11:01:00Z"}}
    second = pair.apply(restarted)
    assert second is not None and second.new is not None and second.old is not None
    assert second.new["spec"] is second.old["spec"]
    assert second.new["status"]["containerStatuses"][0]["lastState"]["terminated"][
        "reason"] == "OOMKilled"
    assert second.old["status"]["containerStatuses"][0]["restartCount"] == (
        status["restartCount"] - 1)


@pytest.mark.parametrize("path, value", [
    (("status", "containerStatuses", 0, "ready"), 1),  # true -> 1: equal in Python
    (("status", "containerStatuses", 0, "restartCount"), 2.0),
    (("spec", "containers", 0, "securityContext"),
     {"allowPrivilegeEscalation": 0, "readOnlyRootFilesystem": 1, "runAsNonRoot": 1}),
    (("metadata", "labels"), None),  # the labels again, in another key order
])
def test_a_value_equal_in_python_but_not_in_json_is_not_taken_from_the_cache(
        path: tuple[Any, ...], value: Any) -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    changed = bump(pod, 900_001)
    *parents, last = path
    holder = changed
    for part in parents:
        holder = holder[part]
    if value is None:
        value = dict(reversed(list(holder[last].items())))
    elif isinstance(holder[last], bool | int) and not isinstance(value, dict):
        value = type(value)(holder[last])
    holder[last] = value
    pair.apply(changed)


def test_a_relisted_object_is_not_rebuilt_from_what_an_older_watch_event_said() -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    pair.apply(bump(pod, 900_001))
    relisted = bump(pod, 900_002)
    relisted["status"]["phase"] = "Failed"
    for cache in (pair.fast, pair.slow):
        cache.replace("Pod", [copy.deepcopy(relisted)])
    # The same status text as the watch event before the relist: not what is cached now.
    change = pair.apply(bump(pod, 900_003))
    assert change is not None and change.new is not None
    assert change.new["status"]["phase"] == pod["status"]["phase"]


@pytest.mark.parametrize("mutate", [
    lambda p: p.update(status=None),
    lambda p: p.update(status="weird"),
    lambda p: p["spec"].update(containers=[1, "x", [{"name": "a", "env": []}]]),
    lambda p: p["status"].update(conditions={"type": "Ready", "status": "True", "x": 1}),
    lambda p: p["metadata"].update(labels=None, annotations=[1, 2]),
    lambda p: p["metadata"]["annotations"].update({
        "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
])
def test_odd_shapes_cache_what_trimming_caches(mutate: Any) -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    odd = bump(pod, 900_001)
    mutate(odd)
    pair.apply(odd)
    pair.apply(bump(pod, 900_002))


@pytest.mark.parametrize("raw", [
    b'{"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}}',
    b'{"type": "ERROR", "object": {"kind": "Status", "code": 410, "metadata": {}}}',
    b'{"type": "MODIFIED", "object": {"kind": "Node", "metadata": {"name": "n"}}}',
    b'{"type": "MODIFIED", "object": {"metadata": {"name": "p"}}}',
    b'{"type": "MODIFIED", "object": {"kind": "Pod", "metadata": {"name": ""}}}',
    b'{"type": "MODIFIED", "object": {"kind": "Pod", "metadata": null}}',
    b'{"type": "MODIFIED", "object": []}',
    b'{"type": "MODIFIED"}',
    b'{"type": "MODIFIED", "object": {"kind": "Pod"',
    b'[1, 2]',
])
def test_anything_but_a_plain_event_of_the_watched_kind_takes_the_old_path(
        raw: bytes) -> None:
    pods = decoder("Pod")
    assert pods is not None
    assert pods(raw) is None


def test_a_pods_host_ports_and_secret_env_names_cache_what_trimming_caches() -> None:
    from tests.test_kube_cache import exposed_pod

    pod = exposed_pod()
    pair = Pair()
    got = pair.apply(pod, "ADDED")
    assert got is not None and got.new is not None
    assert got.new["spec"]["containers"][0]["env"] == [
        {"name": "DB_PASSWORD", "value": ""}, {"name": "api_Key", "value": ""}]
    # The secret moves to valueFrom; the host port goes: both leave the cache.
    fixed = bump(pod, 900_001)
    app = fixed["spec"]["containers"][0]
    app["ports"] = app["ports"][:1]
    app["env"] = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "db", "key": "password"}}}]
    got = pair.apply(fixed)
    assert got is not None and got.new is not None
    assert set(got.new["spec"]["containers"][0]) == {"name", "image", "securityContext"}
    pair.apply(bump(pod, 900_002))


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(env={"name": "PASSWORD", "value": "x"}),
    lambda c: c.update(env=[{"name": 7, "value": "x"}, "PASSWORD=x", None]),
    lambda c: c.update(env=[{"name": "PASSWORD", "value": None}]),
    lambda c: c.update(ports=[{"hostPort": 0}, {"hostPort": False}, {"hostPort": "80"}]),
    lambda c: c.update(ports=[[{"hostPort": 80}]]),
    lambda c: c.update(ports=None, env=[]),
])
def test_odd_env_and_ports_cache_what_trimming_caches(mutate: Any) -> None:
    from tests.test_kube_cache import exposed_pod

    pod = exposed_pod()
    pair = Pair()
    pair.apply(pod, "ADDED")
    odd = bump(pod, 900_001)
    mutate(odd["spec"]["containers"][0])
    got = pair.apply(odd)
    assert got is not None and got.new is not None
    assert "x" not in json.dumps(got.new["spec"]["containers"][0].get("env"))


@pytest.mark.parametrize("volumes", [
    [{"name": "x", "nfs": "weird"}, "not-a-volume", {"name": "y", "hostPath": None}],
    [{"name": "share", "nfs": {"server": "nfs.example", "path": "/x"}},
     {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
    {"name": "not-a-list"},
])
def test_odd_volumes_cache_what_trimming_caches(volumes: Any) -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    odd = bump(pod, 900_001)
    odd["spec"]["volumes"] = volumes
    pair.apply(odd)


@pytest.mark.parametrize("container", [
    {"startupProbe": {"tcpSocket": {"host": "10.0.0.9", "port": 22}},
     "lifecycle": {"postStart": {"httpGet": {"host": "h", "port": 80}},
                   "preStop": {"exec": {"command": ["true"]}}}},
    {"livenessProbe": {"httpGet": {"host": "", "port": 80}}, "lifecycle": {"preStop": {}}},
    {"readinessProbe": [{"httpGet": {"host": "h"}}], "lifecycle": "weird"},
    {"livenessProbe": {"httpGet": "weird", "tcpSocket": {"host": 7}}},
])
def test_probe_hosts_cache_what_trimming_caches(container: Any) -> None:
    pod = load("pod")
    pair = Pair()
    pair.apply(pod, "ADDED")
    odd = bump(pod, 900_001)
    odd["spec"]["containers"][0].update(container)
    pair.apply(odd)
    pair.apply(bump(pod, 900_002))
