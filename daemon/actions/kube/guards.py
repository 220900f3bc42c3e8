"""The guard the Kubernetes integration adds to the executor's chain."""

from __future__ import annotations

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.actions.kube.base import KubeAction
from daemon.kube.cache import Cache


class CacheSyncedGuard(BaseGuard):
    """No Kubernetes action before the kinds it resolves its target from have listed once:
    until then the cache cannot tell a missing owner from one not yet seen."""

    name = "cache_synced"

    def __init__(self, cache: Cache, watched: frozenset[str]) -> None:
        self.cache, self.watched = cache, watched

    async def check(self, ctx: GuardContext) -> GuardResult:
        for spec in ctx.plan:
            action = ctx.actions.get(spec.name)
            if not isinstance(action, KubeAction):
                continue
            for kind in action.cache_kinds(ctx.decision.event):
                if kind not in self.watched:
                    return self.refuse(f"{spec.name} needs the {kind} cache, but [kubernetes] "
                                       f"kinds does not watch {kind}s")
                if not self.cache.synced(kind):
                    return self.refuse(f"the {kind} cache has not listed yet")
        return self.ok()
