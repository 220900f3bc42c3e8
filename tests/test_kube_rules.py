"""The bundled rules/kubernetes.yaml on real transitions: which incident each one makes,
and when (the engine on fake time)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from daemon.actions.params import ACTIONS
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import load_ruleset
from daemon.kube.cache import Cache
from tests.test_kube_cache import cached_chain
from tests.test_kube_transitions import (
    BACKOFF,
    RUNNING,
    app,
    condition,
    edited,
    terminated,
    watched,
    with_node,
)

RULES = Path(__file__).resolve().parent.parent / "rules" / "kubernetes.yaml"
# The fixtures' ReplicaSet was created at 09:14:07 on that day.
RS_CREATED = dt.datetime.fromisoformat("2024-05-02T09:14:07Z").timestamp()


def engine() -> Evaluator:
    ruleset, errors = load_ruleset([RULES], ACTIONS)
    assert not errors, errors
    return Evaluator(ruleset)


def decide(evaluator: Evaluator, events: list[Event], now: float) -> list[Decision]:
    return [d for e in events for d in evaluator.evaluate(e, now)]


def crash_looping(cache: Cache, observed_at: float) -> list[Event]:
    from daemon.kube.transitions import transitions

    after = edited("pod", "500", app(3, BACKOFF, terminated("Error", "2024-05-02T09:33:30Z")))
    change = cache.apply("MODIFIED", after)
    assert change is not None
    return transitions(cache, change, observed_at)


def test_a_crash_loop_minutes_after_a_rollout_rolls_the_deployment_back() -> None:
    evaluator = engine()
    [decision] = decide(evaluator, crash_looping(with_node(cached_chain()), RS_CREATED + 120),
                        RS_CREATED + 120)
    assert decision.rule.name == "kube-rollback-crashloop-after-rollout"
    assert [a.name for a in decision.actions] == ["kubernetes.rollback", "notify.webhook"]


def test_a_crash_loop_of_an_old_revision_only_notifies() -> None:
    evaluator = engine()
    later = RS_CREATED + 3600
    [decision] = decide(evaluator, crash_looping(with_node(cached_chain()), later), later)
    assert decision.rule.name == "kube-notify-crashloop"


def test_unready_for_five_minutes_evicts_once_and_ready_again_ends_the_wait() -> None:
    evaluator = engine()
    cache = with_node(cached_chain())
    lost = edited("pod", "500", condition("Ready", "False", "ContainersNotReady"))
    assert decide(evaluator, watched(cache, lost), 1000.0) == []
    assert evaluator.due(1299.0) == []
    [decision] = evaluator.due(1300.0)
    assert (decision.rule.name, decision.actions[0].name) == (
        "kube-evict-unready", "kubernetes.evict")

    def readiness(rv: str, status: str, since: str) -> list[Event]:
        return watched(cache, edited("pod", rv, condition("Ready", status, since=since)))

    readiness("501", "True", "2024-05-02T09:36:00Z")
    assert decide(evaluator, readiness("502", "False", "2024-05-02T09:37:00Z"), 2000.0) == []
    assert evaluator.next_due() == 2300.0
    decide(evaluator, readiness("503", "True", "2024-05-02T09:38:00Z"), 2100.0)
    assert evaluator.next_due() is None and evaluator.due(10_000.0) == []


def test_a_node_not_ready_notifies_and_the_cordon_rule_is_dry_run() -> None:
    evaluator = engine()
    cache = with_node(cached_chain())
    down = edited("node", "500", condition("Ready", "Unknown", "NodeStatusUnknown"))
    [decision] = decide(evaluator, watched(cache, down), 0.0)
    assert decision.rule.name == "kube-notify-node-not-ready"
    [cordon] = evaluator.due(300.0)
    assert cordon.rule.name == "kube-cordon-not-ready-node" and cordon.rule.dry_run


def test_an_oom_kill_notifies() -> None:
    evaluator = engine()
    cache = with_node(cached_chain())
    oom = edited("pod", "500", app(1, RUNNING, terminated("OOMKilled", "2024-05-02T09:33:59Z")))
    decisions = decide(evaluator, watched(cache, oom), 0.0)
    assert [d.rule.name for d in decisions] == ["kube-notify-oom"]
