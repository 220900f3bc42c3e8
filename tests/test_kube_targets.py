"""Kubernetes decisions are aimed at what their actions act on: a crash-looping Pod's
rollback at its Deployment, so several Pods of one Deployment share one incident, one
cooldown and one budget; a chain the cache cannot follow, or a cache that has not listed,
refuses rather than guesses."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.kube.base import KubeAction
from daemon.actions.kube.guards import CacheSyncedGuard
from daemon.actions.params import ACTIONS
from daemon.audit import AuditLog
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import load_ruleset
from daemon.kube.cache import Cache
from daemon.kube.transitions import transitions
from daemon.telemetry.metrics import Metrics
from tests.test_kube_cache import load
from tests.test_kube_transitions import BACKOFF, app, terminated

pytestmark = pytest.mark.looptime
WATCHED = frozenset({"Pod", "ReplicaSet", "Deployment", "Node"})


class Recorder(KubeAction):
    """A Deployment action that acts on nothing: it records its targets, and reads the
    target from the cache instead of the API server."""

    name = "kubernetes.pause_rollout"

    def __init__(self, cache: Cache) -> None:
        super().__init__(None, cache)  # type: ignore[arg-type]
        self.targets: list[Ref] = []

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        kind = {"deployment": "Deployment", "node": "Node", "pod": "Pod"}[target.kind]
        return self.cache.get(kind, target.namespace, target.name)

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        self.targets.append(decision.target)
        return {}


class NodeRecorder(Recorder):
    name = "kubernetes.cordon"


RULE = """
rules:
  - name: pause-crashing
    source: kubernetes
    when: event.kind == "pod" && event.action == "crashloop"
    cooldown: 10m
    actions: [{action}: {{}}]
"""


def pod(name: str) -> dict[str, Any]:
    obj = copy.deepcopy(load("pod"))
    obj["metadata"].update(name=name, uid=f"uid-{name}", resourceVersion="1")
    return obj


def crash(cache: Cache, name: str) -> list[Event]:
    obj = pod(name)
    obj["metadata"]["resourceVersion"] = "2"
    app(3, BACKOFF, terminated("Error", "2024-05-02T09:33:30Z"))(obj)
    change = cache.apply("MODIFIED", obj)
    assert change is not None
    return transitions(cache, change, 0.0)


def cache_of(*kinds: str) -> Cache:
    cache = Cache()
    for kind, fixture in (("Node", "node"), ("Deployment", "deployment"),
                          ("ReplicaSet", "replicaset")):
        if kind in kinds:
            cache.replace(kind, [load(fixture)])
    cache.replace("Pod", [pod(f"checkout-{i}") for i in range(3)])
    return cache


def build(tmp_path: Path, cache: Cache, action: Recorder, **settings: Any
          ) -> tuple[Executor, Evaluator]:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.open()
    executor = Executor({action.name: action}, audit, Metrics(), ExecutorSettings(**settings),
                        clock=asyncio.get_running_loop().time)
    executor.insert_guard(CacheSyncedGuard(cache, WATCHED), "target")
    path = tmp_path / "rules.yaml"
    path.write_text(RULE.format(action=action.name))
    ruleset, errors = load_ruleset([path], ACTIONS)
    assert not errors, errors
    return executor, Evaluator(ruleset)


async def run_all(executor: Executor, evaluator: Evaluator, events: list[Event]) -> None:
    tasks = [executor.submit(d) for e in events for d in evaluator.evaluate(e, 0.0)]
    await asyncio.gather(*(t for t in tasks if t is not None))


def audited(executor: Executor, kind: str) -> list[dict[str, Any]]:
    return [r for r in executor.audit.tail(1000) if r["kind"] == kind]


@pytest.mark.parametrize("coalesce_window", [5.0, 0.0], ids=["coalesced", "cooldown"])
async def test_three_crash_looping_pods_of_one_deployment_are_one_action_on_it(
        tmp_path: Path, coalesce_window: float) -> None:
    cache = cache_of("Node", "Deployment", "ReplicaSet")
    action = Recorder(cache)
    executor, evaluator = build(tmp_path, cache, action, coalesce_window=coalesce_window)
    await run_all(executor, evaluator, [e for i in range(3) for e in crash(cache, f"checkout-{i}")])
    await executor.drain(1.0)

    deployment = load("deployment")["metadata"]
    assert [(t.kind, t.name, t.id) for t in action.targets] == [
        ("deployment", deployment["name"], deployment["uid"])]
    decisions = audited(executor, "decision")
    assert {d["target"]["name"] for d in decisions} == {deployment["name"]}
    assert decisions[0]["subject"]["name"] == "checkout-0"
    if coalesce_window:
        [coalesced] = audited(executor, "coalesced")
        assert coalesced["count"] == 2
    else:
        assert [d.get("suppressed_by") for d in decisions] == [None, "cooldown", "cooldown"]


async def test_a_chain_the_cache_cannot_follow_refuses_instead_of_guessing(
        tmp_path: Path) -> None:
    cache = cache_of("Node", "Deployment")  # the ReplicaSet between them is not cached
    cache.replace("ReplicaSet", [])
    action = Recorder(cache)
    executor, evaluator = build(tmp_path, cache, action)
    await run_all(executor, evaluator, crash(cache, "checkout-0"))
    [decision] = audited(executor, "decision")
    assert decision["suppressed_by"] == "target"
    assert "no deployment found for pod shop/checkout-0" in decision["reason"]
    assert action.targets == []


async def test_no_action_before_the_kinds_it_resolves_through_have_listed(
        tmp_path: Path) -> None:
    cache = cache_of("Node", "ReplicaSet")  # Deployments never listed
    action = Recorder(cache)
    executor, evaluator = build(tmp_path, cache, action)
    await run_all(executor, evaluator, crash(cache, "checkout-0"))
    [decision] = audited(executor, "decision")
    assert decision["suppressed_by"] == "cache_synced"
    assert decision["reason"] == "the Deployment cache has not listed yet"
    assert [g["guard"] for g in decision["guards"]][:2] == ["audit", "cache_synced"]


async def test_a_node_action_from_a_pod_event_acts_on_the_pods_node(tmp_path: Path) -> None:
    cache = cache_of("Node", "Deployment", "ReplicaSet")
    action = NodeRecorder(cache)
    executor, evaluator = build(tmp_path, cache, action)
    await run_all(executor, evaluator, crash(cache, "checkout-1"))
    node = load("node")["metadata"]
    assert [(t.kind, t.name) for t in action.targets] == [("node", node["name"])]
    assert ACTIONS[action.name].acts_on == "kubernetes/node"
