"""What RBAC sees of a request: kube-apiserver's RequestInfo resolver
(k8s.io/apiserver/pkg/endpoints/request/requestinfo.go), in Python.

The authorizer matches rules against these fields, so a request maps to exactly the
(verb, apiGroup, resource[/subresource]) a ClusterRole has to grant for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

API_PREFIXES = ("api", "apis")
GROUPLESS_PREFIXES = ("api",)
# /api/v1/watch/... and /api/v1/proxy/... name their verb in the path.
SPECIAL_VERBS = ("proxy", "watch")
SPECIAL_VERBS_NO_SUBRESOURCES = ("proxy",)
# /api/v1/namespaces/NAME/status is the Namespace's subresource, not a resource "status".
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    resource_request: bool
    verb: str
    path: str
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def rbac_resource(self) -> str:
        """How a rule names it: `pods`, `pods/eviction`."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        if not self.resource_request:
            return f"{self.verb} {self.path} (non-resource URL)"
        # As `kubectl describe clusterrole` names it: deployments.apps/scale.
        where = f"{self.resource}.{self.api_group}" if self.api_group else self.resource
        where += f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {where}" + (f" in {self.namespace}" if self.namespace else "")


def resolve(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    non_resource = RequestInfo(False, method.lower(), path)
    parts = path.strip("/").split("/") if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in GROUPLESS_PREFIXES:
        # The prefix is consumed: "do we have four parts" in the Go source.
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            return non_resource  # the Go resolver errors; such a request is refused
        verb, parts = parts[0], parts[1:]
    else:
        verb = METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in SPECIAL_VERBS_NO_SUBRESOURCES \
        else ""
    if not name and verb == "get":
        # ListOptions' watch: any value but "0" or "false" (any case) is true.
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch.lower() not in ("false", "0") else "list"
        name = _exact_name(query.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(True, verb, path, group, version, namespace, resource, subresource,
                       name)


def _exact_name(selector: str) -> str:
    """`metadata.name=x` in a field selector names the object, as RequiresExactMatch does."""
    for term in selector.split(","):
        for operator in ("==", "="):
            key, found, value = term.partition(operator)
            if found and key.strip() == "metadata.name" and "!" not in key:
                return value.strip()
    return ""
