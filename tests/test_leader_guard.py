"""The leader guard on its own: which decisions a follower (or another node's agent) leaves
to the leader, by what every replica sees alike. The replicas themselves are in
test_kube_leader.py and test_security_kube_e2e.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from daemon.actions.guards import GuardContext
from daemon.actions.kube.leader_guard import LeaderGuard
from daemon.actions.params import ACTIONS
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.core.rules import ActionSpec, Rule


@dataclass
class Lease:
    acting: bool
    holder: str = "other"
    identity: str = "me"


def event(source: str, subject: Ref, obj: dict[str, Any] | None = None) -> Event:
    return Event(source=source, kind=subject.kind, action="observed", subject=subject,
                 id="e1", occurred_at=0.0, observed_at=0.0, object=obj)


DEPLOYMENT = Ref("kubernetes", "deployment", "web", "u1", "lakehouse")
POD = Ref("kubernetes", "pod", "web-1", "u2", "lakehouse")
CONTAINER = Ref("docker", "container", "web", "c1")
ALERT = Ref("webhook", "alert", "HighLatency")


def on_node(node: str) -> dict[str, Any]:
    return {"kind": "Pod", "spec": {"nodeName": node}}


async def verdict(ev: Event, *actions: str, node: str | None = None,
                  acting: bool = False) -> str:
    plan = tuple(ActionSpec(name=name, params={}) for name in actions)
    # The guard reads the event, never the rule: any valid rule carries the plan.
    rule = Rule(name="r", source="docker", when="true", actions=list(plan))
    decision = Decision("i1", rule, ev, ev.subject, plan, 0.0)
    ctx = GuardContext(decision=decision, now=0.0, actions={}, plan=plan)
    assert all(name in ACTIONS for name in actions)
    return (await LeaderGuard(Lease(acting), node).check(ctx)).verdict


@pytest.mark.parametrize(("ev", "actions"), [
    # Every replica watches the cluster, asks Prometheus, runs the probes: one page.
    (event("security", DEPLOYMENT), ("notify.webhook",)),
    (event("kubernetes", DEPLOYMENT), ("notify.webhook",)),
    (event("kpi", Ref("kpi", "query", "error-rate")), ("notify.webhook",)),
    (event("probe", Ref("probe", "probe", "minio")), ("notify.webhook",)),
    (event("kpi", Ref("kpi", "query", "error-rate")), ("kubernetes.rollout_restart",)),
])
async def test_a_follower_leaves_what_every_replica_sees_to_the_leader(
        ev: Event, actions: tuple[str, ...]) -> None:
    assert await verdict(ev, *actions) == "refuse"
    assert await verdict(ev, *actions, acting=True) == "ok"


@pytest.mark.parametrize(("ev", "actions"), [
    # Only this replica sees them: its own Docker host, a webhook delivered to it.
    (event("docker", CONTAINER), ("docker.restart",)),
    (event("security", CONTAINER), ("notify.webhook",)),
    (event("webhook", ALERT), ("notify.webhook",)),
])
async def test_what_only_this_replica_sees_it_acts_on_leader_or_not(
        ev: Event, actions: tuple[str, ...]) -> None:
    assert await verdict(ev, *actions) == "ok"


async def test_a_pod_finding_is_its_node_agents_in_node_mode() -> None:
    finding = event("security", POD, on_node("node-1"))
    assert await verdict(finding, "notify.webhook", node="node-1") == "ok"
    # Not the leader's either: the agent of node-1 pages.
    assert await verdict(finding, "notify.webhook", node="node-2", acting=True) == "refuse"
    # A Deployment's finding, which every agent sees: the leader's.
    assert await verdict(event("security", DEPLOYMENT), "notify.webhook",
                         node="node-1") == "refuse"
    assert await verdict(event("security", DEPLOYMENT), "notify.webhook", node="node-2",
                         acting=True) == "ok"
