"""The API resources remedyd lists, watches and writes: group/version, plural, kind, scope.

Kept apart from the client so that `remedyd check` and `remedyd rbac` can name them on a
machine without the kubernetes extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    plural: str
    group_version: str  # "v1" or "GROUP/VERSION"
    kind: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        """The API group RBAC rules name ("" for the core group)."""
        return self.group_version.rpartition("/")[0]

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


_RBAC = "rbac.authorization.k8s.io/v1"
_NETWORK_POLICIES = Resource("networkpolicies", "networking.k8s.io/v1", "NetworkPolicy")

# The `[kubernetes] kinds` names. Events are events.k8s.io/v1 (what controllers write).
RESOURCES: dict[str, Resource] = {
    "pods": Resource("pods", "v1", "Pod"),
    "deployments": Resource("deployments", "apps/v1", "Deployment"),
    "replicasets": Resource("replicasets", "apps/v1", "ReplicaSet"),
    "events": Resource("events", "events.k8s.io/v1", "Event"),
    "nodes": Resource("nodes", "v1", "Node", namespaced=False),
    # What security-drift checks read.
    "namespaces": Resource("namespaces", "v1", "Namespace", namespaced=False),
    "networkpolicies": _NETWORK_POLICIES,
    "roles": Resource("roles", _RBAC, "Role"),
    "clusterroles": Resource("clusterroles", _RBAC, "ClusterRole", namespaced=False),
    "rolebindings": Resource("rolebindings", _RBAC, "RoleBinding"),
    "clusterrolebindings": Resource("clusterrolebindings", _RBAC, "ClusterRoleBinding",
                                    namespaced=False),
    "serviceaccounts": Resource("serviceaccounts", "v1", "ServiceAccount"),
}
# What actions write to, whether or not it is watched.
WRITE_RESOURCES: dict[str, Resource] = {
    "poddisruptionbudgets": Resource("poddisruptionbudgets", "policy/v1",
                                     "PodDisruptionBudget"),
    "networkpolicies": _NETWORK_POLICIES,
}
