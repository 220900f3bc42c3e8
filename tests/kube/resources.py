"""The kinds the test bed serves, with the discovery facts kubectl reads."""

from __future__ import annotations

from dataclasses import dataclass

READ_VERBS = ("get", "list", "watch")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    # Kinds whose spec edits bump metadata.generation (the others keep generation at 1).
    has_spec: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """`pods`, `deployments.apps`: how real error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def prefix(self) -> str:
        return f"/apis/{self.api_version}" if self.group else "/api/v1"


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Pod", "pods", True, ("po",), status_subresource=True),
    Kind("", "v1", "Node", "nodes", False, ("no",), status_subresource=True),
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",), status_subresource=True),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), has_spec=False),
    Kind("", "v1", "Event", "events", True, ("ev",), has_spec=False),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",), has_spec=False),
    Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), status_subresource=True),
    Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), status_subresource=True),
    Kind("events.k8s.io", "v1", "Event", "events", True, ("ev",), has_spec=False),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",),
         status_subresource=True),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, has_spec=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False,
         has_spec=False),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", True, has_spec=False),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, has_spec=False),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", True),
)

BY_PATH: dict[tuple[str, str], Kind] = {(k.api_version, k.plural): k for k in KINDS}


def kind_for(api_version: str, plural: str) -> Kind | None:
    return BY_PATH.get((api_version, plural))


def group_versions() -> list[str]:
    seen: list[str] = []
    for k in KINDS:
        if k.group and k.api_version not in seen:
            seen.append(k.api_version)
    return seen


def resource_list(group_version: str) -> dict[str, object] | None:
    """The APIResourceList of /api/v1 or /apis/GROUP/VERSION."""
    kinds = [k for k in KINDS if k.api_version == group_version]
    if not kinds:
        return None
    resources: list[dict[str, object]] = []
    for k in kinds:
        resources.append({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": list(ALL_VERBS), "shortNames": list(k.short_names),
        })
        if k.status_subresource:
            resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced":
                              k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]})
        if k.kind in ("Deployment", "ReplicaSet"):
            resources.append({"name": f"{k.plural}/scale", "singularName": "", "namespaced": True,
                              "group": "autoscaling", "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
        if k.kind == "Pod":
            # kubectl drain looks for this entry before it tries evictions.
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                              "group": "policy", "version": "v1", "kind": "Eviction",
                              "verbs": ["create"]})
    if group_version in ("apps/v1",):
        for r in resources:
            if r["name"] in ("deployments", "replicasets"):
                r["categories"] = ["all"]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}
