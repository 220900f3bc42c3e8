"""The partition guard: no Kubernetes action while the cache it resolves through may be
behind the API server, and the decisions it held back judged again once it caught up.

While the API server is unreachable, or a kind's watch has not re-synced after a gap (a
410 relist pending, a broken stream not yet watching again, lists failing), the cache
may show a pod crash-looping that has long recovered, or miss the one that replaced it.
Acting on that is acting blind. Such decisions are refused (audited, as every guard's
refusal) and parked; when the source reports the kind in sync again they go back to the
executor, whose guards judge them afresh: `superseded` drops those the relist made stale.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.actions.kube.base import KubeAction
from daemon.core.decisions import Decision

log = logging.getLogger("remedyd.kubernetes.partition")

# Decisions parked at most; beyond, the oldest is dropped (its refusal is audited already).
PARKED_MAX = 1000


class KindHealth(Protocol):
    def in_sync(self, kind: str) -> tuple[bool, str]: ...

    def on_resync(self, callback: Callable[[str], object]) -> None: ...


class PartitionGuard(BaseGuard):
    name = "partition"
    transient = True

    def __init__(self, health: KindHealth,
                 resubmit: Callable[[Decision], object] | None) -> None:
        self.health, self.resubmit = health, resubmit
        # incident id -> (decision, the kinds it waits for)
        self.parked: OrderedDict[str, tuple[Decision, tuple[str, ...]]] = OrderedDict()
        health.on_resync(self.resynced)

    async def check(self, ctx: GuardContext) -> GuardResult:
        kinds: list[str] = []
        for spec in ctx.plan:
            action = ctx.actions.get(spec.name)
            if isinstance(action, KubeAction) and action.mutating:
                kinds.extend(k for k in action.cache_kinds(ctx.decision.event) if k not in kinds)
        for kind in kinds:
            synced, why = self.health.in_sync(kind)
            if not synced:
                resumes = self._park(ctx.decision, tuple(kinds))
                return self.refuse(f"the {kind} watch has not re-synced with the API server "
                                   f"({why}); paused" + (", judged again once it has"
                                                         if resumes else ""))
        return self.ok()

    def _park(self, decision: Decision, kinds: tuple[str, ...]) -> bool:
        if self.resubmit is None:
            return False
        self.parked.pop(decision.incident_id, None)
        self.parked[decision.incident_id] = (decision, kinds)
        while len(self.parked) > PARKED_MAX:
            dropped, _ = self.parked.popitem(last=False)
            log.warning("more than %d decisions paused by a partition: incident %s will not "
                        "be judged again", PARKED_MAX, dropped)
        return True

    def resynced(self, kind: str) -> None:
        """The source's hook: `kind` is in sync again; resubmit what no longer waits."""
        if self.resubmit is None:
            return
        ready = [incident for incident, (_, kinds) in self.parked.items()
                 if kind in kinds and all(self.health.in_sync(k)[0] for k in kinds)]
        if ready:
            log.info("the %s watch re-synced: judging %d paused decision(s) again", kind,
                     len(ready))
        for incident in ready:
            decision, _ = self.parked.pop(incident)
            self.resubmit(decision)
