"""Wiring of leader election and node mode into the Kubernetes integration: the elector
as a supervised root task, the `leader` guard right after `audit`, and what the source
does when this replica starts or stops leading. Client modules are imported inside, so
a daemon with Kubernetes off loads none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.settings import Settings
from daemon.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from daemon.clients.kubernetes import KubeClient
    from daemon.integrations.base import Plugged
    from daemon.sources.kube_leader import LeaderElector
    from daemon.sources.kubernetes import KubernetesSource


class _Alone:
    """No election (one replica): it is the leader."""

    acting = True
    holder = identity = ""


def plug_leadership(plugged: Plugged, client: KubeClient, source: KubernetesSource,
                    settings: Settings, metrics: Metrics,
                    node: str | None) -> LeaderElector | None:
    from daemon.actions.kube.leader_guard import LeaderGuard
    from daemon.kube.leader import Election, Timings
    from daemon.sources.kube_leader import LeaderElector

    kube = settings.kubernetes
    # Right after `audit` (the first guard): cache_synced goes before target, this before it.
    before = "cache_synced"
    if not kube.leader_election_on():
        if node is not None:  # a lone node agent still acts on its own node's pods only
            source.lead(True)
            plugged.guards.append((LeaderGuard(_Alone(), node), before))
        return None
    election_settings = kube.leader_election
    election = Election(election_settings.resolved_identity(), election_settings.lease_name,
                        election_settings.resolved_namespace(),
                        Timings(election_settings.lease_duration,
                                election_settings.renew_deadline,
                                election_settings.retry_period),
                        election_settings.resolved_advertise_url(settings.server.port))
    elector = LeaderElector(client, election, metrics, kube.request_timeout)

    def acting() -> None:
        source.lead(True)
        # Incidents this replica saw as a follower (and refused) are still pending.
        source.resync()

    # The hooks (restoring shared state) run before each term's first action: the old
    # leader may have acted since the start. Node agents act on their own pods from the
    # start, so there they run on start too.
    for hook in plugged.before_acting:
        elector.add_before_acting(hook)
    if node is None:
        plugged.before_acting.clear()
    elector.add_on_acting(acting)
    elector.add_on_stopped(lambda: source.lead(False))
    plugged.guards.append((LeaderGuard(elector, node), before))
    plugged.sources.append(elector)
    return elector
