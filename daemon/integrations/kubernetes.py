"""Kubernetes: list-then-watch informers over the API server as a source, actions on the
objects it caches, and the guard that holds them until the cache has listed.
kubernetes_asyncio is imported only when Kubernetes is on."""

from __future__ import annotations

from daemon.actions.params import ACTIONS
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch, tri_state
from daemon.integrations.kube_leadership import plug_leadership
from daemon.integrations.kube_state import plug_shared_state


class KubernetesIntegration(Integration):
    name = "kubernetes"
    event_sources = ("kubernetes",)
    action_names = tuple(name for name in ACTIONS if name.startswith("kubernetes."))

    def enabled(self) -> Switch:
        kube = self.settings.kubernetes
        on = kube.is_enabled()
        where = ("" if not on else "in-cluster service account" if kube.in_cluster()
                 else f"kubeconfig {kube.resolved_kubeconfig()}")
        return tri_state("kubernetes", kube.enabled, on,
                         f"{where}, watching {', '.join(kube.kinds)}",
                         "no in-cluster service account, no KUBECONFIG and no ~/.kube/config",
                         surprising=False)

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.guards import Guard
        from daemon.actions.kube.catalog import kube_actions
        from daemon.actions.kube.guards import CacheSyncedGuard, blast_radius_guards
        from daemon.clients.kubernetes import RESOURCES, KubeClient
        from daemon.kube.cache import Cache
        from daemon.sources.kubernetes import KubernetesSource, Tuning

        kube = self.settings.kubernetes
        node = kube.resolved_node_name() if kube.mode == "node" else None
        electing = kube.leader_election_on()
        identity = kube.leader_election.resolved_identity() if electing else None
        client = KubeClient(kube.resolved_kubeconfig(), kube.context, kube.request_timeout,
                            identity=identity)
        ctx.stack.push_async_callback(client.close)
        # One cache: the source fills it, actions resolve their targets from it.
        cache = Cache()
        source = KubernetesSource(client, ctx.emit, ctx.metrics, list(kube.kinds),
                                  kube.namespaces, kube.label_selector,
                                  Tuning(stall_timeout=kube.stall_timeout), cache=cache,
                                  node_name=node)
        watched = frozenset(RESOURCES[kind].kind for kind in kube.kinds)
        guards: list[tuple[Guard, str]] = [(CacheSyncedGuard(cache, watched), "target")]
        guards.extend(blast_radius_guards(cache, source, kube.blast_radius, ctx.resubmit))
        plugged = Plugged(sources=[source], actions=kube_actions(client, cache), guards=guards)
        if (state := plug_shared_state(client, self.settings, ctx)) is not None:
            # Before the first action: on start (with leader election, on each term).
            plugged.before_acting.append(state.restore_shared_state)
        # Leader election and node mode: the leader guard, the elector (which takes over
        # the before-acting hooks, run per term).
        plug_leadership(plugged, client, source, self.settings, ctx.metrics, node)
        return plugged
