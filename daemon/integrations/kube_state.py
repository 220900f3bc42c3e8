"""Wiring of the shared state (`[kubernetes.state] store = "configmap"`) into the
Kubernetes integration: written from the executor's decision and outcome hooks, restored
before acting. Under `store = "audit"` (and under systemd or Docker) the audit-log restore
alone stands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.core.decisions import Decision
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.actions.kube.sharedstate import SharedState
    from daemon.clients.kubernetes import KubeClient
    from daemon.integrations.base import BuildContext


def plug_shared_state(client: KubeClient, settings: Settings,
                      ctx: BuildContext) -> SharedState | None:
    """The store, hooked to the executor; the caller runs its `restore_shared_state`
    before the first action (on start, or on each acquisition of the lease)."""
    from daemon.actions.kube.sharedstate import SharedState

    kube = settings.kubernetes
    if kube.state.store != "configmap" or ctx.executor is None or ctx.restore is None:
        return None
    namespace = kube.state.configmap_namespace or kube.leader_election.resolved_namespace()
    global_windows = (settings.safety.max_actions_per, settings.notify.max_notifications_per)

    def windows(decision: Decision) -> float:
        """How long the decision counts for a guard: its longest window."""
        rule = decision.rule
        return max(rule.cooldown, rule.budget.per if rule.budget else 0.0, *global_windows)

    state = SharedState(client, kube.state.configmap_name, namespace, ctx.restore, windows)
    ctx.executor.on_decision.append(state.on_decision)
    ctx.executor.on_outcome.append(state.on_outcome)
    ctx.stack.push_async_callback(state.close)
    return state
