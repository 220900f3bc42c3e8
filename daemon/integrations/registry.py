"""Every integration the daemon knows, in the order they are built."""

from __future__ import annotations

from daemon.engine.lint import Available
from daemon.integrations.base import Integration
from daemon.integrations.docker import DockerIntegration
from daemon.integrations.kpi import KpiIntegration
from daemon.integrations.kubernetes import KubernetesIntegration
from daemon.integrations.notify import NotifyIntegration
from daemon.integrations.probes import ProbesIntegration
from daemon.integrations.security import SecurityIntegration
from daemon.integrations.webhooks import SilencesIntegration, WebhooksIntegration
from daemon.settings import Settings

INTEGRATIONS: tuple[type[Integration], ...] = (NotifyIntegration, DockerIntegration,
                                                 KubernetesIntegration, ProbesIntegration)
INTEGRATIONS += (KpiIntegration,)  # source: kpi rules, unless: and recheck gates
INTEGRATIONS += (WebhooksIntegration, SilencesIntegration)  # inbound webhooks, silences
# After Docker and Kubernetes: it taps their sources.
INTEGRATIONS += (SecurityIntegration,)


def available(settings: Settings) -> Available:
    """What the rules can count on here: the sources and actions of enabled integrations.

    `remedyd check` and the daemon both ask this, so they cannot disagree.
    """
    sources: set[str] = set()
    actions: set[str] = set()
    for cls in INTEGRATIONS:
        integration = cls(settings)
        if integration.enabled().on:
            sources.update(cls.event_sources)
            actions.update(cls.action_names)
    return Available(sources=frozenset(sources), actions=frozenset(actions),
                     webhook_url=settings.notify.webhook_url,
                     prometheus=settings.prometheus.url is not None,
                     alertmanager=settings.alertmanager.url is not None)
