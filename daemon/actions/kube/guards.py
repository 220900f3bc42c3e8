"""The guards the Kubernetes integration adds to the executor's chain."""

from __future__ import annotations

from collections.abc import Callable

from daemon.actions.guards import BaseGuard, Guard, GuardContext, GuardResult
from daemon.actions.kube.base import KubeAction
from daemon.actions.kube.blast import BlastRadiusGuard
from daemon.actions.kube.partition import KindHealth, PartitionGuard
from daemon.actions.kube.podscope import Limits
from daemon.actions.kube.shortcircuit import UnhealthyShareGuard
from daemon.core.decisions import Decision
from daemon.kube.cache import Cache
from daemon.settings import BlastRadiusSettings


class CacheSyncedGuard(BaseGuard):
    """No Kubernetes action before the kinds it resolves its target from have listed once:
    until then the cache cannot tell a missing owner from one not yet seen."""

    name = "cache_synced"
    transient = True

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


def blast_radius_guards(cache: Cache, health: KindHealth, settings: BlastRadiusSettings,
                        resubmit: Callable[[Decision], object] | None
                        ) -> list[tuple[Guard, str]]:
    """The partition guard right after cache_synced (nothing reads the API server for a
    kind out of sync), then the short-circuit and the blast radius before preflight; with
    the guard each goes before."""
    limits = Limits(settings.max_workload_share, settings.max_namespace_pods,
                    settings.window, settings.max_unhealthy_share)
    return [(PartitionGuard(health, resubmit), "target"),
            (UnhealthyShareGuard(cache, limits), "preflight"),
            (BlastRadiusGuard(cache, limits), "preflight")]
