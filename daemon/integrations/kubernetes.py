"""Kubernetes: list-then-watch informers over the API server as a source.
kubernetes_asyncio is imported only when Kubernetes is on. Actions come separately."""

from __future__ import annotations

from daemon.integrations.base import BuildContext, Integration, Plugged, Switch, tri_state


class KubernetesIntegration(Integration):
    name = "kubernetes"
    event_sources = ("kubernetes",)
    action_names = ()

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
        from daemon.clients.kubernetes import KubeClient
        from daemon.sources.kubernetes import KubernetesSource, Tuning

        kube = self.settings.kubernetes
        client = KubeClient(kube.resolved_kubeconfig(), kube.context, kube.request_timeout)
        ctx.stack.push_async_callback(client.close)
        source = KubernetesSource(client, ctx.emit, ctx.metrics, list(kube.kinds),
                                  kube.namespaces, kube.label_selector,
                                  Tuning(stall_timeout=kube.stall_timeout))
        return Plugged(sources=[source])
