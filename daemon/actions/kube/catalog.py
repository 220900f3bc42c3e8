"""Every Kubernetes action, built on one client and the source's cache."""

from __future__ import annotations

from daemon.actions.base import Action
from daemon.actions.kube import metadata, nodes, pods, rollback, workloads
from daemon.actions.kube.base import KubeAction
from daemon.clients.kubernetes import KubeClient
from daemon.kube.cache import Cache

CLASSES: tuple[type[KubeAction], ...] = (
    *pods.CLASSES, *workloads.CLASSES, *rollback.CLASSES, *nodes.CLASSES, *metadata.CLASSES)


def kube_actions(client: KubeClient, cache: Cache) -> list[Action]:
    return [cls(client, cache) for cls in CLASSES]
