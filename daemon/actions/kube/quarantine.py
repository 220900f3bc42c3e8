"""The deny-all NetworkPolicy a quarantine label switches on: one per namespace and label
value, created on first use and recognised as remedyd's own afterwards."""

from __future__ import annotations

import hashlib
from typing import Any

from daemon.actions.kube.base import api_error
from daemon.clients.kubernetes import WRITE_RESOURCES, KubeClient, KubeError, KubeStatusError
from daemon.core.errors import PermanentError

POLICIES = WRITE_RESOURCES["networkpolicies"]
MANAGED_BY = "app.kubernetes.io/managed-by"
# Which incident created the policy: a retried attempt still knows the policy is its own.
CREATED_BY = "remedyd.io/created-by-incident"
SELECTS = "remedyd.io/quarantine-selector"
_DENY_ALL = ["Ingress", "Egress"]


class QuarantinePolicy:
    def __init__(self, client: KubeClient, namespace: str, label: str, value: str) -> None:
        if not label:
            # An empty podSelector selects every pod of the namespace: never that.
            raise PermanentError(f"quarantine in {namespace}: no label to select the pod by")
        self.client, self.namespace, self.label, self.value = client, namespace, label, value
        # A label key holds "/" and "." and may be long: a digest keeps the name valid.
        digest = hashlib.sha256(f"{label}={value}".encode()).hexdigest()[:10]
        self.name = f"remedyd-quarantine-{digest}"
        self.where = f"{namespace}/{self.name}"

    def body(self, incident: str) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {MANAGED_BY: "remedyd"},
                         "annotations": {SELECTS: f"{self.label}={self.value}",
                                         CREATED_BY: incident}},
            # Both policy types and no rule: nothing in, nothing out.
            "spec": {"podSelector": {"matchLabels": {self.label: self.value}},
                     "policyTypes": list(_DENY_ALL)},
        }

    async def ensure(self, incident: str) -> bool:
        """Create the policy, or accept the existing one if it is ours and denies all;
        whether `incident` created it."""
        try:
            await self.client.create(POLICIES, self.namespace, self.body(incident))
            return True
        except KubeStatusError as exc:
            if exc.code != 409 or exc.reason != "AlreadyExists":
                raise api_error(exc, f"create NetworkPolicy {self.where}") from None
        except KubeError as exc:
            raise api_error(exc, f"create NetworkPolicy {self.where}") from None
        existing = await self._get()
        problem = self._not_ours(existing)
        if problem:
            raise PermanentError(f"NetworkPolicy {self.where} already exists and {problem}; "
                                 "not quarantining with a policy remedyd does not own")
        annotations = ((existing or {}).get("metadata") or {}).get("annotations") or {}
        return bool(annotations.get(CREATED_BY) == incident)

    async def is_ours(self) -> bool:
        return not self._not_ours(await self._get())

    async def _get(self) -> dict[str, Any] | None:
        try:
            return await self.client.get(POLICIES, self.namespace, self.name)
        except KubeError as exc:
            raise api_error(exc, f"read NetworkPolicy {self.where}") from None

    def _not_ours(self, policy: dict[str, Any] | None) -> str:
        """What makes `policy` not remedyd's deny-all for this label ("" when it is)."""
        if policy is None:
            return "is gone again"
        metadata = policy.get("metadata") or {}
        spec = policy.get("spec") or {}
        if (metadata.get("labels") or {}).get(MANAGED_BY) != "remedyd":
            return f"is not labelled {MANAGED_BY}=remedyd"
        if spec.get("podSelector") != {"matchLabels": {self.label: self.value}}:
            return f"selects {spec.get('podSelector')}, not {self.label}={self.value}"
        if sorted(spec.get("policyTypes") or ()) != sorted(_DENY_ALL) or spec.get(
                "ingress") or spec.get("egress"):
            return "does not deny all ingress and egress"
        return ""
