"""The blast-radius guard: never act on more than `max_workload_share` of a workload's pods,
nor on more than `max_namespace_pods` pods of one namespace, within `window`.

Counted are distinct pods that pod actions (evict, delete_pod, quarantine) were taken on,
across every rule, from the decisions' intents: acting on one pod twice counts it once, a
refused decision not at all. The share is of the workload's pods in the cache now (not
being deleted), rounded down, and one pod is always allowed, so a workload of three with
25% may still lose one. What was counted is kept in the decision record, so a restart
(executor.restore) counts it again.
"""

from __future__ import annotations

import math
from collections import deque

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult, Spend
from daemon.actions.kube.podscope import Limits, pod_actions, scope_of
from daemon.kube.cache import Cache

_Window = deque[tuple[float, str]]  # (when, pod key), oldest first
SWEEP_ABOVE = 1000


class BlastRadiusGuard(BaseGuard):
    name = "blast_radius"

    def __init__(self, cache: Cache, limits: Limits) -> None:
        self.cache, self.limits = cache, limits
        self._by_workload: dict[str, _Window] = {}
        self._by_namespace: dict[str, _Window] = {}
        # The longest window any rule counted over: entries older than it are dropped.
        self._horizon = limits.window

    async def check(self, ctx: GuardContext) -> GuardResult:
        if not pod_actions(ctx):
            return self.ok()
        limits = self.limits.for_rule(ctx.decision.rule)
        target = ctx.decision.target
        scope = scope_of(self.cache, target)
        if isinstance(scope, str):
            return self.refuse(scope)
        window, pod = limits.window, target.key
        within = f"within {window:g}s"
        done = self._recent(self._by_namespace, scope.namespace, ctx.now, window) - {pod}
        if len(done) >= limits.max_namespace_pods:
            return self.refuse(f"{len(done)} pods of namespace {scope.namespace} were acted on "
                               f"{within}; at most {limits.max_namespace_pods} "
                               "(max_namespace_pods)")
        keep = {"pod": pod, "namespace": scope.namespace, "workload": "", "window": window}
        if scope.workload is None:
            return GuardResult(self.name, "ok", f"{len(done) + 1} of at most "
                               f"{limits.max_namespace_pods} pods of namespace "
                               f"{scope.namespace} {within}; no workload owns it", keep=keep)
        total = len(scope.pods)
        allowed = max(1, math.floor(limits.max_workload_share * total + 1e-9))
        done = self._recent(self._by_workload, scope.workload.uid, ctx.now, window) - {pod}
        share = f"{limits.max_workload_share:.0%} of its {total} pods"
        if len(done) + 1 > allowed:
            return self.refuse(f"{len(done)} of the {total} pods of {scope.describe()} were "
                               f"acted on {within}; one more would exceed {share} "
                               f"(max_workload_share: {allowed} pod(s))")
        keep["workload"] = scope.workload.uid
        return GuardResult(self.name, "ok", f"pod {len(done) + 1} of at most {allowed} "
                           f"({share}) of {scope.describe()} {within}", keep=keep)

    def commit(self, spend: Spend) -> None:
        kept = spend.kept.get(self.name)
        if spend.escalation or not kept:
            return
        pod, namespace = str(kept.get("pod") or spend.target), str(kept.get("namespace") or "")
        window = kept.get("window")
        if isinstance(window, (int, float)) and window > self._horizon:
            self._horizon = float(window)
        for book, key in ((self._by_namespace, namespace),
                          (self._by_workload, str(kept.get("workload") or ""))):
            if key:
                book.setdefault(key, deque()).append((spend.at, pod))
                # Workloads and namespaces acted on once and never again go too.
                for stale in list(book) if len(book) > SWEEP_ABOVE else (key,):
                    self._prune(book, stale, spend.at)

    def _recent(self, book: dict[str, _Window], key: str, now: float,
                window: float) -> set[str]:
        self._prune(book, key, now)
        return {pod for at, pod in book.get(key, ()) if now - at < window}

    def _prune(self, book: dict[str, _Window], key: str, now: float) -> None:
        entries = book.get(key)
        if entries is None:
            return
        while entries and now - entries[0][0] >= self._horizon:
            entries.popleft()
        if not entries:
            del book[key]
