"""The `leader` guard: of several replicas, only the one holding the Lease acts.

Every replica watches everything (cluster mode) and decides alike, so each decision a
follower makes is one the leader makes too: the follower's is audited as suppressed by
`leader`, notifications included. A follower that notified would page a human once per
replica for every incident; its notification adds nothing the leader's does not say.

Node mode (a DaemonSet): each agent owns its node's pods. A decision whose changing
actions all act on a pod (evict, delete_pod, quarantine, label/annotate of a pod), or
that only notifies about a pod, runs on the agent of the pod's node, leader or not, and
on no other agent (the leader also watches other nodes' pods, for the next case).
Anything else (rollback, rollout_restart, scale, pause_rollout, cordon/uncordon, or a
notification about a Deployment or a Node, which every agent sees) runs on the leader
only, so two agents seeing one crash-looping Deployment roll it back once.

What every replica sees alike is not only the `kubernetes` source: a security finding
about a Kubernetes object, a KPI answer (every replica asks the same Prometheus) and a
probe (the same URLs) are decided by every replica too, so they are the leader's alone
(pod-scoped security findings: the pod's agent's), and page once. What one replica sees
alone acts there: a Docker host's own containers, and a webhook, which reaches the leader
(a follower hands what a Service delivered to it over: daemon/http/handover.py).
"""

from __future__ import annotations

from typing import Protocol

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.actions.params import ACTIONS
from daemon.core.decisions import Decision

KUBE = "kubernetes"
POD = "kubernetes/pod"
# Event sources every replica hears the same events from.
SHARED_SOURCES = frozenset({KUBE, "kpi", "probe"})


class Leadership(Protocol):
    @property
    def acting(self) -> bool: ...

    @property
    def holder(self) -> str: ...

    @property
    def identity(self) -> str: ...


class LeaderGuard(BaseGuard):
    name = "leader"
    transient = True

    def __init__(self, leadership: Leadership, node_name: str | None = None) -> None:
        self.leadership = leadership
        self.node_name = node_name  # None: cluster mode

    async def check(self, ctx: GuardContext) -> GuardResult:
        decision = ctx.decision
        names = [spec.name for spec in ctx.plan]
        if not _seen_by_every_replica(decision) and not any(n.startswith(f"{KUBE}.")
                                                            for n in names):
            return self.ok()  # a Docker host's own containers, a webhook it was given
        if self.node_name is not None and _pod_scoped(decision, names):
            node = _node_of(decision)
            if node == self.node_name:
                return self.ok()
            if node:
                return self.refuse(f"the pod is on node {node}: its own node agent acts on "
                                   "it")
            # Not scheduled yet: no node agent owns it; the leader does.
        if self.leadership.acting:
            return self.ok()
        holder = self.leadership.holder
        if holder and holder == self.leadership.identity:
            return self.refuse("not the leader (the lease is ours, but it was not renewed "
                               "within renew_deadline, or the state is not restored yet)")
        return self.refuse("not the leader" + (f" ({holder} holds the lease)"
                                               if holder else " (no one holds the lease)"))


def _seen_by_every_replica(decision: Decision) -> bool:
    event = decision.event
    return event.source in SHARED_SOURCES or event.subject.source == KUBE


def _pod_scoped(decision: Decision, names: list[str]) -> bool:
    """Whether every changing action acts on the pod the event is about (and there is
    one): then the pod's own node agent acts, notifications alike."""
    if f"{KUBE}/{decision.event.subject.kind}" != POD:
        return False
    for name in names:
        info = ACTIONS.get(name)
        if info is None or not info.mutating:
            continue
        if (info.acts_on or POD) != POD:
            return False
    return True


def _node_of(decision: Decision) -> str:
    pod = decision.event.object or {}
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, dict) else None
    return node if isinstance(node, str) else ""
