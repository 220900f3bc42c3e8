"""Cache changes -> the Events rules match: each real transition once, with its owner
workload named; an object seen again (resync, relist, remedyd restarted) fires nothing new."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from daemon.core.events import Event
from daemon.kube.cache import Cache, Change
from daemon.kube.transitions import transitions
from tests.test_kube_cache import cached_chain, load

NOW = 1714642500.0  # 2024-05-02T09:35:00Z
Obj = dict[str, Any]
APP_ID = "containerd://aaa1"


def edited(name: str, rv: str, *edits: Callable[[Obj], None]) -> Obj:
    obj = copy.deepcopy(load(name))
    obj["metadata"]["resourceVersion"] = rv
    for edit in edits:
        edit(obj)
    return obj


def condition(kind: str, status: str, reason: str = "", since: str = "2024-05-02T09:33:00Z"
              ) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        for cond in obj["status"]["conditions"]:
            if cond["type"] == kind:
                cond.update(status=status, reason=reason, lastTransitionTime=since,
                            message=f"{kind} is {status}")
    return edit


def app(restarts: int, state: Obj, last: Obj | None = None) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        obj["status"]["containerStatuses"][0].update(
            restartCount=restarts, state=state, lastState=last or {}, ready="running" in state)
    return edit


def terminated(reason: str, finished: str, exit_code: int = 1) -> Obj:
    return {"terminated": {"reason": reason, "exitCode": exit_code, "containerID": APP_ID,
                           "startedAt": "2024-05-02T09:32:00Z", "finishedAt": finished}}


RUNNING = {"running": {"startedAt": "2024-05-02T09:34:00Z"}}
BACKOFF = {"waiting": {"reason": "CrashLoopBackOff",
                       "message": "back-off 20s restarting failed container=app"}}


def pending_unschedulable(obj: Obj) -> None:
    obj["spec"].pop("nodeName")
    obj["status"] = {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "lastTransitionTime": "2024-05-02T09:33:00Z", "lastProbeTime": None,
        "message": "0/3 nodes are available: 3 Insufficient memory."}]}


def new_revision(obj: Obj) -> None:
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "8"
    obj["metadata"]["generation"] = 10
    app_container = obj["spec"]["template"]["spec"]["containers"][0]
    app_container["image"] = "registry.example/shop/checkout:1.43.0"


def watched(cache: Cache, raw: Obj, event_type: str = "MODIFIED") -> list[Event]:
    change = cache.apply(event_type, raw)
    return transitions(cache, change, NOW) if change else []


# (what happened, kind fixture, the object after, action, attributes the event must carry)
CASES: list[tuple[str, str, Obj, str, dict[str, Any]]] = [
    ("container restarted", "pod", edited("pod", "500", app(1, RUNNING)), "restarted",
     {"container": "app", "restartCount": 1, "previousRestartCount": 0}),
    ("crash loop entered", "pod",
     edited("pod", "500", app(3, BACKOFF, terminated("Error", "2024-05-02T09:33:30Z"))),
     "crashloop", {"container": "app", "restartCount": 3, "reason": "CrashLoopBackOff",
                   "lastReason": "Error", "exitCode": 1}),
    ("OOM killed", "pod",
     edited("pod", "500", app(1, RUNNING, terminated("OOMKilled", "2024-05-02T09:33:59Z", 137))),
     "oom_killed", {"container": "app", "reason": "OOMKilled", "exitCode": 137,
                    "finishedAt": "2024-05-02T09:33:59Z"}),
    ("readiness lost", "pod",
     edited("pod", "500", condition("Ready", "False", "ContainersNotReady")),
     "unready", {"since": "2024-05-02T09:33:00Z", "unreadySeconds": 120.0,
                 "reason": "ContainersNotReady", "phase": "Running"}),
    ("unschedulable", "pod", edited("pod", "500", pending_unschedulable), "unschedulable",
     {"reason": "Unschedulable", "phase": "Pending",
      "message": "0/3 nodes are available: 3 Insufficient memory."}),
    ("new revision", "deployment", edited("deployment", "500", new_revision), "new_revision",
     {"revision": 8, "previousRevision": 7,
      "images": ["registry.example/shop/checkout:1.43.0", "registry.example/envoy:v1.30.1"]}),
    ("progress deadline", "deployment",
     edited("deployment", "500", condition("Progressing", "False", "ProgressDeadlineExceeded")),
     "progress_deadline_exceeded", {"reason": "ProgressDeadlineExceeded", "revision": 7}),
    ("node not ready", "node", edited("node", "500", condition("Ready", "Unknown",
                                                               "NodeStatusUnknown")),
     "not_ready", {"status": "Unknown", "reason": "NodeStatusUnknown",
                   "since": "2024-05-02T09:33:00Z"}),
]
POD_OWNERS = {"owner_kind": "ReplicaSet", "owner_name": "checkout-7c9d8f6b5d",
              "workload_kind": "Deployment", "workload_name": "checkout", "revision": 7,
              "namespace": "shop"}


def with_node(cache: Cache) -> Cache:
    cache.replace("Node", [load("node")])
    return cache


@pytest.mark.parametrize(("what", "fixture", "after", "action", "attributes"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_transition_fires_once_with_its_owner_and_object(
        what: str, fixture: str, after: Obj, action: str, attributes: dict[str, Any]) -> None:
    cache = with_node(cached_chain())
    [event] = [e for e in watched(cache, after) if e.action == action]
    kind = load(fixture)["kind"].lower()
    assert (event.source, event.kind, event.subject.kind) == ("kubernetes", kind, kind)
    assert event.subject.id == load(fixture)["metadata"]["uid"]
    assert event.subject.namespace == load(fixture)["metadata"].get("namespace", "")
    assert {k: event.attributes.get(k) for k in attributes} == attributes
    if kind == "pod":
        assert {k: event.attributes.get(k) for k in POD_OWNERS} == POD_OWNERS
    assert json.loads(json.dumps(dict(event.attributes))) == dict(event.attributes)
    assert event.object is not None and "managedFields" not in event.object["metadata"]
    assert not event.synthetic

    # The same object again (a resync), then a relist of it, then an unrelated update.
    assert watched(cache, after) == []
    assert [transitions(cache, c, NOW) for c in cache.replace(load(fixture)["kind"], [after])] == []
    touched = copy.deepcopy(after)
    touched["metadata"]["resourceVersion"] = "501"
    touched["metadata"]["labels"]["touched"] = "yes"
    assert watched(cache, touched) == []


def test_an_unchanged_object_fires_nothing() -> None:
    cache = with_node(cached_chain())
    for name in ("pod", "deployment", "node"):
        assert watched(cache, edited(name, "600")) == []


def test_crash_loop_restart_and_oom_of_one_update_fire_together() -> None:
    cache = cached_chain()
    after = edited("pod", "500", app(1, BACKOFF, terminated("OOMKilled", "2024-05-02T09:33:59Z")))
    assert sorted(e.action for e in watched(cache, after)) == ["crashloop", "oom_killed",
                                                               "restarted"]


def test_each_crash_loop_cycle_is_a_new_transition_and_ids_name_it() -> None:
    cache = cached_chain()
    first = watched(cache, edited("pod", "500", app(1, BACKOFF)))
    watched(cache, edited("pod", "501", app(2, RUNNING)))
    second = watched(cache, edited("pod", "502", app(2, BACKOFF)))
    crashloops = [e for e in [*first, *second] if e.action == "crashloop"]
    assert [e.attributes["restartCount"] for e in crashloops] == [1, 2]
    assert len({e.id for e in crashloops}) == 2


# -- first listing, relist, restart of remedyd -------------------------------------------------

def test_the_first_listing_fires_states_not_history() -> None:
    cache = Cache()
    cache.replace("ReplicaSet", [load("replicaset")])
    history = edited("pod", "500",
                     app(12, RUNNING, terminated("OOMKilled", "2024-04-30T01:00:00Z")))
    looping = edited("pod", "501", app(4, BACKOFF), lambda o: o["metadata"].update(
        name="looping", uid="uid-looping"))
    changes = cache.replace("Pod", [history, looping])
    events = [e for c in changes for e in transitions(cache, c, NOW)]
    assert [(e.subject.name, e.action) for e in events] == [("looping", "crashloop")]
    assert not events[0].synthetic


def test_a_restart_missed_while_disconnected_fires_once_after_the_relist() -> None:
    cache = cached_chain()
    after = edited("pod", "700", app(1, RUNNING, terminated("Error", "2024-05-02T09:33:00Z")))
    relisted = [e for c in cache.replace("Pod", [after]) for e in transitions(cache, c, NOW)]
    assert [(e.action, e.synthetic) for e in relisted] == [("restarted", True)]
    again = [e for c in cache.replace("Pod", [after]) for e in transitions(cache, c, NOW)]
    assert again == []


def test_a_pod_created_while_disconnected_brings_its_restarts() -> None:
    cache = cached_chain()
    fresh = edited("pod", "710", app(2, RUNNING, terminated("OOMKilled", "2024-05-02T09:33:00Z")),
                   lambda o: o["metadata"].update(name="fresh", uid="uid-fresh"))
    changes = cache.replace("Pod", [load("pod"), fresh])
    events = [e for c in changes for e in transitions(cache, c, NOW)]
    assert sorted(e.action for e in events) == ["oom_killed", "restarted"]
    assert all(e.subject.name == "fresh" and e.synthetic for e in events)


def test_a_state_seen_again_after_remedyd_restarts_has_the_same_id() -> None:
    looping = edited("pod", "800", app(3, BACKOFF))
    # By the watch, before the restart (which also saw the restarts happen).
    [before] = [e for e in watched(cached_chain(), looping) if e.action == "crashloop"]
    later = edited("pod", "805", app(3, BACKOFF), lambda o: o["metadata"]["labels"].update(x="y"))
    restarted = Cache()
    restarted.replace("ReplicaSet", [load("replicaset")])
    [after] = [e for c in restarted.replace("Pod", [later]) for e in transitions(restarted, c, NOW)]
    assert before.action == after.action == "crashloop"
    assert before.id == after.id


# -- probe failures from Events ---------------------------------------------------------------

@pytest.mark.parametrize(("fixture", "probe", "count"), [
    ("event-v1", "readiness", 4), ("event-core", "liveness", 7)])
def test_a_probe_failure_event_is_a_pod_event(fixture: str, probe: str, count: int) -> None:
    cache = cached_chain()
    cache.replace("Event", [])
    [event] = watched(cache, load(fixture), "ADDED")
    assert (event.kind, event.action, event.subject.name) == (
        "pod", "probe_failed", "checkout-7c9d8f6b5d-x2x7q")
    assert event.subject.id == "e3a1f9c2-6b7d-4c5e-8f9a-0b1c2d3e4f50"
    assert {k: event.attributes[k] for k in ("probe", "container", "count")} == {
        "probe": probe, "container": "app", "count": count}
    assert event.attributes["workload_name"] == "checkout"
    assert event.object is not None and event.object["kind"] == "Pod"

    repeated = copy.deepcopy(load(fixture))
    repeated["metadata"]["resourceVersion"] = "900"
    assert watched(cache, repeated) == []  # updated, yet no new failure counted
    counter = "deprecatedCount" if fixture == "event-v1" else "count"
    repeated[counter] = count + 1
    repeated["metadata"]["resourceVersion"] = "901"
    [again] = watched(cache, repeated)
    assert again.attributes["count"] == count + 1 and again.id != event.id


def test_old_events_on_the_first_listing_are_history() -> None:
    cache = cached_chain()
    changes = cache.replace("Event", [load("event-v1"), load("event-core")])
    assert [e for c in changes for e in transitions(cache, c, NOW)] == []


def test_a_deleted_object_fires_only_deleted_which_ends_what_waited_on_it() -> None:
    cache = cached_chain()
    change = cache.apply("DELETED", load("pod"))
    assert change == Change("Pod", change.old if change else None, None)
    assert change is not None
    [event] = transitions(cache, change, NOW)
    assert (event.kind, event.action, event.resolves) == ("pod", "deleted", ("*",))
    assert event.subject.id == load("pod")["metadata"]["uid"]
    assert cache.apply("DELETED", load("pod")) is None  # a second delete: nothing


def test_a_pod_that_never_became_ready_is_unready_and_readiness_ends_it() -> None:
    cache = with_node(cached_chain())
    created = edited("pod", "1", condition("Ready", "False", "ContainersNotReady"))
    created["metadata"]["uid"] = "uid-new-pod"
    cache.apply("DELETED", load("pod"))
    [unready] = [e for e in watched(cache, created, "ADDED") if e.action == "unready"]
    assert unready.attributes["reason"] == "ContainersNotReady"
    back = edited("pod", "2", condition("Ready", "True", since="2024-05-02T09:34:30Z"))
    back["metadata"]["uid"] = "uid-new-pod"
    [ready] = [e for e in watched(cache, back) if e.action == "ready"]
    assert ready.resolves == ("unready",)
    assert ready.attributes["unreadySeconds"] == 90.0


def test_pod_events_say_how_old_their_revision_is() -> None:
    cache = with_node(cached_chain())
    after = edited("pod", "500", app(1, RUNNING))
    [event] = [e for e in watched(cache, after) if e.action == "restarted"]
    created = cache.get("ReplicaSet", "shop", "checkout-7c9d8f6b5d")
    assert created is not None
    stamp = created["metadata"]["creationTimestamp"]
    import datetime as dt
    expected = NOW - dt.datetime.fromisoformat(stamp).timestamp()
    assert event.attributes["revisionAgeSeconds"] == round(expected, 3)
