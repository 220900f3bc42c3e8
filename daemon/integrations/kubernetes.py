"""Kubernetes: list-then-watch informers over the API server as a source, actions on the
objects it caches, and the guard that holds them until the cache has listed.
kubernetes_asyncio is imported only when Kubernetes is on."""

from __future__ import annotations

from daemon.actions.params import ACTIONS
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch, tri_state
from daemon.integrations.kube_leadership import plug_leadership
from daemon.integrations.kube_state import plug_shared_state
from daemon.kube.resources import RESOURCES
from daemon.settings import KubeKind, Settings

# What the security checks read beyond the default kinds: namespaces and their
# NetworkPolicies, RBAC objects, ServiceAccounts.
SECURITY_KINDS: tuple[KubeKind, ...] = (
    "namespaces", "networkpolicies", "roles", "clusterroles", "rolebindings",
    "clusterrolebindings", "serviceaccounts")


def watched_kinds(settings: Settings) -> list[KubeKind]:
    """`[kubernetes] kinds`, and the security kinds too while `[security]` is on ("auto"
    is on wherever Kubernetes is): what the source watches and `remedyd rbac` grants.

    With `namespaces` named, only the namespaced ones: a namespace-scoped remedyd (the
    sidecar) holds a Role, which cannot grant cluster-scoped kinds, and would never list
    them (nor be ready)."""
    kube = settings.kubernetes
    kinds = list(kube.kinds)
    if settings.security.enabled is False:
        return kinds
    return kinds + [kind for kind in SECURITY_KINDS if kind not in kinds and (
        not kube.namespaces or RESOURCES[kind].namespaced)]


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
                         f"{where}, watching {', '.join(watched_kinds(self.settings))}",
                         "no in-cluster service account, no KUBECONFIG and no ~/.kube/config",
                         surprising=False)

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.guards import Guard
        from daemon.actions.kube.catalog import kube_actions
        from daemon.actions.kube.guards import CacheSyncedGuard, blast_radius_guards
        from daemon.clients.kubernetes import KubeClient
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
        kinds = watched_kinds(self.settings)
        source = KubernetesSource(client, ctx.emit, ctx.metrics, list(kinds),
                                  kube.namespaces, kube.label_selector,
                                  Tuning(stall_timeout=kube.stall_timeout), cache=cache,
                                  node_name=node)
        # The security integration (built after this one) taps the source's changes.
        ctx.provided["kubernetes.source"] = source
        ctx.provided["kubernetes.client"] = client
        watched = frozenset(RESOURCES[kind].kind for kind in kinds)
        guards: list[tuple[Guard, str]] = [(CacheSyncedGuard(cache, watched), "target")]
        guards.extend(blast_radius_guards(cache, source, kube.blast_radius, ctx.resubmit))
        plugged = Plugged(sources=[source], actions=kube_actions(client, cache), guards=guards)
        if (state := plug_shared_state(client, self.settings, ctx)) is not None:
            # Before the first action: on start (with leader election, on each term).
            plugged.before_acting.append(state.restore_shared_state)
        # Leader election and node mode: the leader guard, the elector (which takes over
        # the before-acting hooks, run per term).
        elector = plug_leadership(plugged, client, source, self.settings, ctx.metrics, node)
        if elector is not None:
            # The webhooks (built after this one) hand what a follower gets to the leader.
            ctx.provided["kubernetes.leadership"] = elector
            # On the way out, after the executor drained and before the client closes
            # (the stack unwinds in reverse): the next leader need not wait for expiry.
            ctx.stack.push_async_callback(elector.release)
        return plugged
