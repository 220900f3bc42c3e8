"""The live state `remedyd scan` evaluates: every Docker container (inspected) and the
Kubernetes objects the checks read, listed once through the daemon's own clients."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daemon.settings import DockerSettings, KubernetesSettings

# The kinds listed, in this order; ReplicaSets are listed to know which Pods belong to
# a listed Deployment.
KUBE_KINDS = ("namespaces", "networkpolicies", "deployments", "replicasets", "pods",
              "roles", "clusterroles", "rolebindings", "clusterrolebindings",
              "serviceaccounts")
# Inspecting is one request per container: a few at once, not hundreds.
INSPECT_CONCURRENCY = 8


class Unreachable(Exception):
    """The platform could not be read at all; the message says what was tried."""


@dataclass(slots=True)
class LiveState:
    platform: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    # Namespace name -> NetworkPolicies in it (Kubernetes; empty when they could not be
    # listed, so a Namespace's count stays unknown rather than wrongly 0).
    network_policies: Counter[str] | None = None
    warnings: list[str] = field(default_factory=list)
    # Objects left out because their controller is scanned (a Deployment's Pods).
    controlled: int = 0


async def docker_state(settings: DockerSettings) -> LiveState:
    """Every container, running or not, as `docker inspect` shows it."""
    from daemon.clients.docker import DockerClient

    url = settings.resolved_url()
    state = LiveState("docker")
    async with DockerClient(url, settings.request_timeout) as client:
        try:
            listed = await client.list_containers()
        except Exception as exc:  # aiodocker, aiohttp and the OS each raise their own
            raise Unreachable(f"docker engine at {url}: {_reason(exc)}") from None
        limit = asyncio.Semaphore(INSPECT_CONCURRENCY)

        async def inspect(container_id: str) -> dict[str, Any] | None:
            async with limit:
                try:
                    return await client.inspect(container_id)
                except Exception as exc:  # gone since the listing: nothing to check
                    state.warnings.append(f"docker: container {container_id[:12]}: "
                                          f"{_reason(exc)}; skipped")
                    return None

        ids = [str(item.get("Id") or "") for item in listed]
        inspected = await asyncio.gather(*(inspect(i) for i in ids if i))
    state.objects = [obj for obj in inspected if obj is not None]
    return state


async def kube_state(settings: KubernetesSettings) -> LiveState:
    """The checked kinds in `[kubernetes] namespaces` (all when empty), each item with
    the kind and apiVersion a list leaves out."""
    from daemon.clients.kubernetes import (
        RESOURCES,
        KubeClient,
        KubeError,
        KubeStatusError,
    )

    where = settings.resolved_kubeconfig() or "in-cluster service account"
    client = KubeClient(settings.resolved_kubeconfig(), settings.context,
                        settings.request_timeout)
    state = LiveState("kubernetes")
    listed: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []
    try:
        for plural in KUBE_KINDS:
            resource = RESOURCES[plural]
            namespaces: Iterable[str | None] = (
                settings.namespaces if settings.namespaces and resource.namespaced else [None])
            items: list[dict[str, Any]] = []
            try:
                for namespace in namespaces:
                    page, _ = await client.list(resource, namespace, None)
                    items.extend(page)
            except KubeStatusError as exc:
                # One kind refused (RBAC): the others are still worth reporting.
                state.warnings.append(f"kubernetes: {exc.describe()}; {plural} not scanned")
                failures.append(plural)
                continue
            except (TimeoutError, KubeError, OSError) as exc:
                raise Unreachable(f"kubernetes API ({where}): {_reason(exc)}") from None
            for item in items:
                item.setdefault("kind", resource.kind)
                item.setdefault("apiVersion", resource.group_version)
            listed[plural] = items
    finally:
        await client.close()
    if len(failures) == len(KUBE_KINDS):
        raise Unreachable(f"kubernetes API ({where}): every list was refused: "
                          f"{state.warnings[0]}")
    if "networkpolicies" in listed:
        state.network_policies = Counter(
            str((item.get("metadata") or {}).get("namespace") or "")
            for item in listed["networkpolicies"])
    skip = _controlled(listed.get("deployments", []), listed.get("replicasets", []),
                       listed.get("pods", []))
    for plural in KUBE_KINDS:
        for item in listed.get(plural, []):
            if _uid(item) in skip:
                state.controlled += 1
                continue
            state.objects.append(item)
    return state


def _controlled(deployments: list[dict[str, Any]], replicasets: list[dict[str, Any]],
                pods: list[dict[str, Any]]) -> set[str]:
    """The uids of ReplicaSets controlled by a listed Deployment, and of the Pods those
    control: their pod template is the Deployment's, reported once, on the Deployment."""
    owners = {_uid(d) for d in deployments} - {""}
    sets = {_uid(rs) for rs in replicasets if _controller(rs) in owners} - {""}
    return sets | {_uid(pod) for pod in pods if _controller(pod) in sets}


def _controller(obj: dict[str, Any]) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
