"""The short-circuit (Medik8s' maxUnhealthy, Cluster API's MachineHealthCheck): when more
than `max_unhealthy_share` of a workload's pods are unhealthy at once, the cause is most
likely shared (a dependency down, a bad node pool), not the pods, and removing them one by
one only turns a partial outage into a full one.

Per-pod actions on such a workload are refused. The first decision in a window escalates
instead: one notification saying how many of how many pods are unhealthy and that
remedyd is holding off. The others in that window are refused, naming that incident.
"""

from __future__ import annotations

import math

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult, Spend
from daemon.actions.kube.podscope import Limits, pod_actions, scope_of
from daemon.core.rules import ActionSpec
from daemon.kube.cache import Cache
from daemon.kube.health import unhealthy


class UnhealthyShareGuard(BaseGuard):
    name = "unhealthy_share"

    def __init__(self, cache: Cache, limits: Limits) -> None:
        self.cache, self.limits = cache, limits
        # workload uid -> (when it was short-circuited, the incident that said so)
        self._open: dict[str, tuple[float, str]] = {}
        self._horizon = limits.window  # the longest window a rule short-circuited for

    async def check(self, ctx: GuardContext) -> GuardResult:
        if not pod_actions(ctx):
            return self.ok()
        limits = self.limits.for_rule(ctx.decision.rule)
        scope = scope_of(self.cache, ctx.decision.target)
        if isinstance(scope, str):
            return self.refuse(scope)
        if scope.workload is None:
            return self.ok()
        total = len(scope.pods)
        bad = sum(1 for pod in scope.pods if unhealthy(pod))
        # Rounded down, as Cluster API scales maxUnhealthy; but one unhealthy pod is never
        # a shared cause, so a workload of two may still have its one bad pod fixed.
        if bad <= max(1, math.floor(limits.max_unhealthy_share * total + 1e-9)):
            return self.ok()
        what = (f"{bad} of {total} pods of {scope.describe()} are unhealthy at once (more "
                f"than {limits.max_unhealthy_share:.0%})")
        opened = self._open.get(scope.workload.uid)
        if opened is not None and ctx.now - opened[0] < limits.window:
            return self.refuse(f"{what}: short-circuited by incident {opened[1]}; no pod "
                               "action on this workload until fewer are")
        message = (f"remedyd is holding off: {what}, which points to a shared cause rather "
                   f"than to the pods; no pod of it is evicted, deleted or quarantined while "
                   f"that lasts (this is said once per {limits.window:g}s)")
        return GuardResult(self.name, "escalate", what,
                           (ActionSpec(name="notify.webhook", params={"message": message}),),
                           keep={"workload": scope.workload.uid,
                                 "incident": ctx.decision.incident_id,
                                 "window": limits.window})

    def commit(self, spend: Spend) -> None:
        kept = spend.kept.get(self.name)
        if not spend.escalation or not kept or not kept.get("workload"):
            return
        window = kept.get("window")
        if isinstance(window, (int, float)):
            self._horizon = max(self._horizon, float(window))
        for uid in [u for u, (at, _) in self._open.items() if spend.at - at >= self._horizon]:
            del self._open[uid]
        self._open[str(kept["workload"])] = (spend.at, str(kept.get("incident") or ""))
